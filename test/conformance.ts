/**
 * The conformance table: scenarios every data plane of Skein must answer alike (DESIGN.md, "One
 * engine, several drivers"). Each scenario sets a service up (its policy and instances) against
 * real HTTP backends, sends requests through a data plane and reduces what came back to an
 * outcome (statuses, x-skein-error codes, which replica answered, attempts). test/conformance.test.ts
 * runs the one table against the proxy (a `skein proxy` child, its outbound listener) and the SDK
 * (a MeshDispatcher in the test process), and expects the same outcome from both.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/**
 * A backend: answers by path (with the request's body, or its id when there is none). `/ok` 200; `/status/N` N; `/fail-first` 503 to the first attempt of
 * a request (by x-request-id, over all backends), 200 after; `/hang` never; `/slow/MS` 200 after MS;
 * `/deadline` 200 with the x-skein-timeout-ms it got; `/headers` its request headers as JSON; `/health` 200, 503 while
 * `unhealthy` (its other answers go on). `down` makes every answer a 503. Each answer
 * says who gave it (`x-backend`) and which attempt of its request it was (`x-attempt`).
 */
export interface Backend {
  readonly id: string;
  readonly port: number;
  down: boolean;
  /** Never answers (until closed). */
  hang: boolean;
  /** Fails its health checks (GET /health: 503) and answers everything else. */
  unhealthy: boolean;
  /** Requests other than health checks. */
  hits: number;
  /** The Host (and method) of each of them: "GET svc", in order. */
  readonly seen: string[];
  close(): Promise<void>;
}

const attempts = new Map<string, number>();

export async function startBackend(id: string): Promise<Backend> {
  const hanging = new Set<http.ServerResponse>();
  const b = { id, port: 0, down: false, hang: false, unhealthy: false, hits: 0, seen: [] as string[], close: async () => {} } as Backend;
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(b.unhealthy || b.down ? 503 : 200).end();
      return;
    }
    b.hits++;
    b.seen.push(`${req.method} ${req.headers.host ?? ''}`);
    const rid = String(req.headers['x-request-id'] ?? '');
    const n = (attempts.get(rid) ?? 0) + 1;
    attempts.set(rid, n);
    res.setHeader('x-backend', id);
    res.setHeader('x-attempt', String(n));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const answer = (status: number, body?: string) =>
      req.on('end', () => {
        const got = Buffer.concat(chunks).toString();
        res.writeHead(status, { 'content-type': 'text/plain' }).end(body ?? (got === '' ? `${id}\n` : got));
      });
    if (b.down) return answer(503);
    if (b.hang) {
      hanging.add(res);
      return;
    }
    if (path === '/ok') return answer(200);
    if (path.startsWith('/status/')) return answer(Number(path.slice(8)));
    if (path === '/fail-first') return answer(n === 1 ? 503 : 200);
    if (path === '/headers') return answer(200, JSON.stringify(req.headers));
    if (path === '/deadline') return answer(200, String(req.headers['x-skein-timeout-ms'] ?? ''));
    if (path.startsWith('/slow/')) {
      setTimeout(() => res.writeHead(200).end(`${id}\n`), Number(path.slice(6)));
      return;
    }
    if (path === '/hang') {
      hanging.add(res);
      return;
    }
    return answer(404);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  (b as { port: number }).port = (server.address() as AddressInfo).port;
  b.close = async () => {
    for (const r of hanging) r.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return b;
}

// ---------------------------------------------------------------------------------------------
// Data planes and scenarios
// ---------------------------------------------------------------------------------------------

export interface Reply {
  readonly status: number;
  /** x-skein-error, or null (the app's answer). */
  readonly error: string | null;
  /** The backend that answered (x-backend), or null. */
  readonly backend: string | null;
  /** Which attempt of the request the answer was (x-attempt), 0: none. */
  readonly attempt: number;
  readonly explain: string | null;
  readonly retryAfter: string | null;
  readonly body: string;
  readonly ms: number;
}

export interface SendOptions {
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/** A data plane under test: sends a request to a service, as its app would. */
export interface Plane {
  readonly name: 'proxy' | 'sdk';
  send(service: string, path: string, o?: SendOptions): Promise<Reply>;
  /** Resolves once the plane sees `service` with `endpoints` instances and the given balancer kind. */
  sees(service: string, endpoints: number, kind: string): Promise<void>;
}

/** What a scenario's run is given. */
export interface Run {
  readonly plane: Plane;
  readonly service: string;
  readonly backends: readonly Backend[];
  /** PUT the service's definition again (a policy change). */
  define(policy: object): Promise<void>;
  /** Registers a backend of the scenario as an instance (a scenario with `registered: false` starts with none). */
  register(id: string): Promise<void>;
  /** Deregisters an instance. */
  deregister(id: string): Promise<void>;
  /** The control plane: stopped once by the last scenario. */
  stopControl(): Promise<void>;
}

export interface Scenario {
  readonly name: string;
  /**
   * Backends (their ids are the instance ids); "closed" registers an instance at a closed port;
   * `v1-a` is registered with version `v1` (a name with a dash after a `v<N>` prefix).
   */
  readonly backends: readonly string[];
  /** false: the backends start, but none is registered (a service scaled to zero); each plane's run leaves none registered. */
  readonly registered?: boolean;
  readonly policy: object;
  /** Sends requests and reduces the replies to an outcome; checks of its own may assert. */
  run(r: Run): Promise<unknown>;
  /** What both planes must return. */
  readonly expect?: unknown;
  /** Leaves the control plane stopped (runs last). */
  readonly last?: boolean;
}

const QUIET = { breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 0 } };
const RR = { balancer: { kind: 'round-robin' } };

const pick = (r: Reply) => ({ status: r.status, error: r.error });
async function times(n: number, f: (i: number) => Promise<Reply>): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < n; i++) out.push(await f(i));
  return out;
}
/** `f`'s first value other than null, asked again until `ms` have passed (then null). */
async function until<T>(ms: number, f: () => Promise<T | null>): Promise<T | null> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== null || performance.now() > end) return v;
  }
}
/** A sequence of backends as letters in order of first appearance: "ABAB". */
function pattern(rs: readonly Reply[]): string {
  const seen = new Map<string, string>();
  return rs.map((r) => (r.backend === null ? '-' : (seen.get(r.backend) ?? seen.set(r.backend, String.fromCharCode(65 + seen.size)).get(r.backend)))).join('');
}
/** An explanation without what differs by design (which endpoint a random start picked, its port). */
const explainShape = (x: string | null) => (x ?? '').replace(/endpoint=[^;]*/, 'endpoint=*').replace(/127\.0\.0\.1:\d+/g, 'ADDR');

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'round-robin alternates over two replicas',
    backends: ['a', 'b'],
    policy: { ...RR, ...QUIET },
    run: async (r) => pattern(await times(6, () => r.plane.send(r.service, '/ok'))),
    expect: 'ABABAB',
  },
  {
    name: 'ring-hash (a fixed key) sends each key to the same replica on both planes',
    backends: ['a', 'b', 'c'],
    policy: { balancer: { kind: 'ring-hash', hashKey: { type: 'header', name: 'x-user' } }, ...QUIET },
    run: async (r) => {
      const out: Record<string, string | null> = {};
      for (const k of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8']) {
        const a = await r.plane.send(r.service, '/ok', { headers: { 'x-user': k } });
        const b = await r.plane.send(r.service, '/ok', { headers: { 'x-user': k } });
        assert.equal(a.backend, b.backend, `key ${k} went to one replica`);
        out[k] = a.backend;
      }
      return out;
    },
  },
  {
    name: 'a 503 is retried once (statuses [503]) and the second attempt answers',
    backends: ['a', 'b'],
    policy: { ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 2 } },
    run: async (r) => (await times(3, () => r.plane.send(r.service, '/fail-first'))).map((x) => ({ ...pick(x), attempt: x.attempt })),
    expect: [1, 2, 3].map(() => ({ status: 200, error: null, attempt: 2 })),
  },
  {
    name: 'the retry budget refuses a retry: the app\'s 503 is delivered and explained',
    backends: ['a'],
    policy: { ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 2, budget: { ratio: 0, minRetriesPerSecond: 0 } } },
    run: async (r) => {
      const x = await r.plane.send(r.service, '/status/503', { headers: { 'x-skein-explain': '1' } });
      return { ...pick(x), attempt: x.attempt, refused: (x.explain ?? '').includes('(a retry was refused by the budget)') };
    },
    expect: { status: 503, error: null, attempt: 1, refused: true },
  },
  {
    name: 'breakers open after consecutive failures: SKEIN_E_BREAKER_OPEN',
    backends: ['a', 'b'],
    policy: { ...RR, outlierDetection: { enabled: false }, retries: { maxRetries: 0 }, breaker: { consecutiveFailures: 2, backoff: { min: '10s', max: '20s' } } },
    run: async (r) => {
      const rs = await times(5, () => r.plane.send(r.service, '/status/503'));
      const last = JSON.parse(rs[4]?.body ?? '{}') as { details?: { breakers?: unknown } };
      return { replies: rs.map(pick), breakers: last.details?.breakers, hits: r.backends.map((b) => b.hits) };
    },
    expect: {
      replies: [...[1, 2, 3, 4].map(() => ({ status: 503, error: null })), { status: 503, error: 'SKEIN_E_BREAKER_OPEN' }],
      breakers: { open: 2, halfOpen: 0 },
      hits: [2, 2],
    },
  },
  {
    name: 'outlier detection ejects a failing replica: the rest go to the other',
    backends: ['bad', 'good'],
    policy: { ...RR, breaker: { enabled: false }, retries: { maxRetries: 0 }, outlierDetection: { consecutive5xx: 2, baseEjectionTime: '30s' } },
    run: async (r) => {
      (r.backends[0] as Backend).down = true;
      const rs = await times(8, () => r.plane.send(r.service, '/ok'));
      return { badHits: r.backends[0]?.hits, lastFour: rs.slice(4).map((x) => x.backend) };
    },
    expect: { badHits: 2, lastFour: ['good', 'good', 'good', 'good'] },
  },
  {
    name: 'panic threshold: with too few replicas left, the ejected one takes traffic again (explained)',
    backends: ['bad', 'good'],
    policy: { ...RR, breaker: { enabled: false }, retries: { maxRetries: 0 }, panicThreshold: 60, outlierDetection: { consecutive5xx: 2, baseEjectionTime: '30s' } },
    run: async (r) => {
      (r.backends[0] as Backend).down = true;
      const rs = await times(8, () => r.plane.send(r.service, '/ok', { headers: { 'x-skein-explain': '1' } }));
      const after = rs.slice(4);
      return { badAfterEjection: after.filter((x) => x.backend === 'bad').length, panicExplained: after.every((x) => (x.explain ?? '').includes('; panic (')) };
    },
    expect: { badAfterEjection: 2, panicExplained: true },
  },
  {
    name: 'deadlines: the route timeout answers 504, the caller\'s x-skein-timeout-ms lowers it and travels on',
    backends: ['a'],
    policy: { ...RR, ...QUIET, timeouts: { request: '300ms' } },
    run: async (r) => {
      const hang = await r.plane.send(r.service, '/hang');
      const caller = await r.plane.send(r.service, '/hang', { headers: { 'x-skein-timeout-ms': '100' } });
      const echo = await r.plane.send(r.service, '/deadline', { headers: { 'x-skein-timeout-ms': '200' } });
      const spent = await r.plane.send(r.service, '/ok', { headers: { 'x-skein-timeout-ms': '0' } });
      const bad = await r.plane.send(r.service, '/ok', { headers: { 'x-skein-timeout-ms': 'soon' } });
      assert.ok(hang.ms >= 290 && hang.ms < 2000, `the 300 ms timeout took ${hang.ms} ms`);
      assert.ok(caller.ms >= 95 && caller.ms < 290, `the caller's 100 ms took ${caller.ms} ms`);
      const left = Number(echo.body);
      assert.ok(left > 100 && left <= 200, `the backend got x-skein-timeout-ms ${echo.body}`);
      const body = JSON.parse(hang.body) as { code?: string; details?: { timeoutMs?: number } };
      return { hang: pick(hang), timeoutMs: body.details?.timeoutMs, caller: pick(caller), spent: pick(spent), bad: pick(bad) };
    },
    expect: {
      hang: { status: 504, error: 'SKEIN_E_UPSTREAM_TIMEOUT' },
      timeoutMs: 300,
      caller: { status: 504, error: 'SKEIN_E_UPSTREAM_TIMEOUT' },
      spent: { status: 504, error: 'SKEIN_E_DEADLINE_EXCEEDED' },
      bad: { status: 400, error: 'SKEIN_E_BAD_REQUEST' },
    },
  },
  {
    name: 'a per-try timeout gives up on a hung replica and retries on the other',
    backends: ['hung', 'a'],
    policy: { ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 1 }, timeouts: { perTry: '200ms' } },
    run: async (r) => {
      (r.backends[0] as Backend).hang = true;
      const rs = await times(4, () => r.plane.send(r.service, '/ok'));
      for (const x of rs) if (x.attempt === 2) assert.ok(x.ms >= 195, `a retried request took ${x.ms} ms (per-try 200 ms)`);
      return rs.map((x) => ({ ...pick(x), backend: x.backend }));
    },
    expect: [1, 2, 3, 4].map(() => ({ status: 200, error: null, backend: 'a' })),
  },
  {
    name: 'limits.maxRequests: a second request in flight is refused (SKEIN_E_UPSTREAM_OVERFLOW)',
    backends: ['a'],
    policy: { ...RR, ...QUIET, limits: { maxRequests: 1 } },
    run: async (r) => {
      const slow = r.plane.send(r.service, '/slow/400');
      await new Promise((res) => setTimeout(res, 100));
      const second = await r.plane.send(r.service, '/ok');
      return { slow: pick(await slow), second: pick(second) };
    },
    expect: { slow: { status: 200, error: null }, second: { status: 503, error: 'SKEIN_E_UPSTREAM_OVERFLOW' } },
  },
  {
    name: 'a route\'s rate limit answers 429 SKEIN_E_RATE_LIMITED with retry-after',
    backends: ['a'],
    policy: { ...RR, ...QUIET, routes: [{ name: 'limited', match: { pathPrefix: '/ok' }, rateLimit: { outbound: { requestsPerSecond: 0.5, burst: 2 } } }] },
    run: async (r) => {
      const rs = await times(3, () => r.plane.send(r.service, '/ok'));
      return { replies: rs.map(pick), retryAfter: rs[2]?.retryAfter };
    },
    expect: { replies: [{ status: 200, error: null }, { status: 200, error: null }, { status: 429, error: 'SKEIN_E_RATE_LIMITED' }], retryAfter: '2' },
  },
  {
    name: 'faults: an abort answers its status with SKEIN_E_FAULT_INJECTED, a delay holds the request',
    backends: ['a'],
    policy: {
      ...RR,
      ...QUIET,
      routes: [
        { name: 'aborted', match: { pathPrefix: '/status' }, fault: { abort: { status: 418, percent: 100 } } },
        { name: 'delayed', match: { pathPrefix: '/ok' }, fault: { delay: { duration: '200ms', percent: 100 } } },
      ],
    },
    run: async (r) => {
      const abort = await r.plane.send(r.service, '/status/200');
      const delay = await r.plane.send(r.service, '/ok');
      assert.ok(delay.ms >= 195, `the 200 ms delay took ${delay.ms} ms`);
      return { abort: pick(abort), hits: r.backends[0]?.hits, delay: pick(delay) };
    },
    expect: { abort: { status: 418, error: 'SKEIN_E_FAULT_INJECTED' }, hits: 1, delay: { status: 200, error: null } },
  },
  {
    name: 'explanations: x-skein-explain says the same on both planes',
    backends: ['a', 'b'],
    policy: { ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 1 } },
    run: async (r) => {
      const ok = await r.plane.send(r.service, '/ok', { headers: { 'x-skein-explain': '1' } });
      const retried = await r.plane.send(r.service, '/fail-first', { headers: { 'x-skein-explain': '1' } });
      return { ok: explainShape(ok.explain), retried: explainShape(retried.explain).replace(/failed=[a-z-]+/, 'failed=*') };
    },
  },
  {
    name: 'errors: an unknown service and one with no instance, with the same messages',
    backends: [],
    policy: { ...RR, ...QUIET },
    run: async (r) => {
      const unknown = await r.plane.send('no-such-service', '/ok');
      const none = await r.plane.send(r.service, '/ok');
      const msg = (x: Reply) => (JSON.parse(x.body) as { message?: string }).message;
      return { unknown: { ...pick(unknown), message: msg(unknown) }, none: { ...pick(none), message: msg(none) } };
    },
  },
  {
    name: 'connect failures: retried on another replica; with none left, SKEIN_E_UPSTREAM_CONNECT',
    backends: ['closed', 'a'],
    policy: { ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 1 } },
    run: async (r) => {
      const rs = await times(4, () => r.plane.send(r.service, '/ok'));
      await r.define({ ...RR, breaker: { enabled: false }, outlierDetection: { enabled: false }, retries: { maxRetries: 0 } });
      await new Promise((res) => setTimeout(res, 300));
      const once = await times(4, () => r.plane.send(r.service, '/ok'));
      return { retried: rs.map((x) => ({ ...pick(x), backend: x.backend })), errors: once.filter((x) => x.error === 'SKEIN_E_UPSTREAM_CONNECT').length };
    },
    expect: { retried: [1, 2, 3, 4].map(() => ({ status: 200, error: null, backend: 'a' })), errors: 2 },
  },
  {
    name: 'a policy change reaches the plane from the watch within 1 s',
    backends: ['a'],
    policy: { ...RR, ...QUIET },
    run: async (r) => {
      const before = await r.plane.send(r.service, '/ok');
      const t0 = performance.now();
      await r.define({ ...RR, ...QUIET, routes: [{ name: 'all', match: { pathPrefix: '/' }, fault: { abort: { status: 503, percent: 100 } } }] });
      let after: Reply = before;
      while (performance.now() - t0 < 1000 && after.error === null) after = await r.plane.send(r.service, '/ok');
      // Back to no fault (and seen to be), for the next plane's run: a service's PUT keeps the
      // routes it does not name, so the route stays, aborting 0%.
      await r.define({ ...RR, ...QUIET, routes: [{ name: 'all', match: { pathPrefix: '/' }, fault: { abort: { status: 503, percent: 0 } } }] });
      const t1 = performance.now();
      let back = after;
      while (performance.now() - t1 < 1000 && back.error !== null) back = await r.plane.send(r.service, '/ok');
      return { before: pick(before), after: pick(after), back: pick(back) };
    },
    expect: { before: { status: 200, error: null }, after: { status: 503, error: 'SKEIN_E_FAULT_INJECTED' }, back: { status: 200, error: null } },
  },
  {
    name: 'splits: 75/25 by version, each subset balanced on its own: the same sequence and counts on both planes',
    backends: ['v1-a', 'v1-b', 'v2-a'],
    policy: { ...RR, ...QUIET, backends: [{ subset: { version: 'v1' }, weight: 75 }, { subset: { version: 'v2' }, weight: 25 }] },
    run: async (r) => {
      const rs = await times(20, () => r.plane.send(r.service, '/ok'));
      const versions = rs.map((x) => (x.backend ?? '-').split('-')[0]).join('');
      const v1 = rs.filter((x) => x.backend?.startsWith('v1-')).map((x) => x.backend);
      return { versions, counts: { v1: v1.length, v2: rs.length - v1.length }, v1Replicas: new Set(v1).size, statuses: [...new Set(rs.map((x) => x.status))] };
    },
    expect: { versions: 'v1v1v2v1'.repeat(5), counts: { v1: 15, v2: 5 }, v1Replicas: 2, statuses: [200] },
  },
  {
    name: 'mirroring: each GET and PUT is copied to the v2 subset with its Host suffixed, a POST is not; the primary answers every one',
    backends: ['v1-a', 'v2-a'],
    policy: { ...RR, ...QUIET, backends: [{ subset: { version: 'v1' } }], mirror: { subset: { version: 'v2' } } },
    run: async (r) => {
      const [, v2] = r.backends as [Backend, Backend];
      const from = v2.seen.length;
      const rs = await times(6, () => r.plane.send(r.service, '/ok'));
      rs.push(await r.plane.send(r.service, '/ok', { method: 'PUT', body: 'put-body' }));
      rs.push(await r.plane.send(r.service, '/ok', { method: 'POST', body: 'post-body' }));
      // Copies leave as their requests do: wait for the 7th, then a moment for a stray 8th.
      await until(3000, async () => (v2.seen.length - from >= 7 ? true : null));
      await new Promise((res) => setTimeout(res, 100));
      return { primary: rs.map((x) => `${x.status} ${x.backend}`), copies: v2.seen.slice(from).map((x) => x.replace(r.service, 'SVC')) };
    },
    expect: { primary: [...Array(7).fill('200 v1-a'), '200 v1-a'], copies: [...Array(6).fill('GET SVC-shadow'), 'PUT SVC-shadow'] },
  },
  {
    name: 'mirroring: a silent mirror holds maxInFlight copies, the rest are not sent; its timeout frees the place for the next copy',
    backends: ['v1-a', 'v2-a'],
    policy: { ...RR, ...QUIET, backends: [{ subset: { version: 'v1' } }], mirror: { subset: { version: 'v2' }, maxInFlight: 1, timeout: '200ms' } },
    run: async (r) => {
      const [, v2] = r.backends as [Backend, Backend];
      v2.hang = true;
      const from = v2.seen.length;
      const rs = await times(3, () => r.plane.send(r.service, '/ok'));
      await until(2000, async () => (v2.seen.length - from >= 1 ? true : null));
      const held = v2.seen.length - from;
      // The held copy is abandoned at 200 ms: the next request's copy goes.
      const later = await until(3000, async () => {
        const x = await r.plane.send(r.service, '/ok');
        await new Promise((res) => setTimeout(res, 50));
        return v2.seen.length - from > held ? x : null;
      });
      v2.hang = false;
      return { primary: [...rs, ...(later === null ? [] : [later])].map((x) => `${x.status} ${x.backend}`), held, freed: later !== null };
    },
    expect: { primary: Array(4).fill('200 v1-a'), held: 1, freed: true },
  },
  {
    name: 'active health checks: a replica failing its checks gets no traffic, then takes it again once it passes',
    backends: ['sick', 'well'],
    policy: { ...RR, ...QUIET, activeHealthCheck: { type: 'http', path: '/health', interval: '100ms', unhealthyThreshold: 1, healthyThreshold: 1 } },
    run: async (r) => {
      const [sick, well] = r.backends as [Backend, Backend];
      // The first request makes the plane use the service (and start checking it).
      const first = await r.plane.send(r.service, '/ok');
      sick.unhealthy = true;
      // Until six requests in a row went to the healthy replica (the check's next round), within 3 s.
      const ejected = await until(3000, async () => {
        const rs = await times(6, () => r.plane.send(r.service, '/ok'));
        return rs.every((x) => x.backend === 'well') ? rs : null;
      });
      const sickHits = sick.hits;
      sick.unhealthy = false;
      const back = await until(3000, async () => {
        const rs = await times(4, () => r.plane.send(r.service, '/ok'));
        return rs.some((x) => x.backend === 'sick') ? rs : null;
      });
      return { first: pick(first), ejected: ejected?.map((x) => x.backend) ?? 'never', sickHitsWhileFailing: sick.hits - sickHits - (back?.filter((x) => x.backend === 'sick').length ?? 0), back: back === null ? 'never' : 'both', wellHits: well.hits > 0 };
    },
    expect: { first: { status: 200, error: null }, ejected: ['well', 'well', 'well', 'well', 'well', 'well'], sickHitsWhileFailing: 0, back: 'both', wellHits: true },
  },
  {
    name: 'cold start: a request to a service scaled to zero is held, then served by the instance that starts; none in time: SKEIN_E_COLD_START_TIMEOUT',
    backends: ['a'],
    registered: false,
    policy: { ...RR, ...QUIET, coldStart: { queue: 4, timeout: '1s' } },
    run: async (r) => {
      const held = r.plane.send(r.service, '/ok', { headers: { 'x-skein-explain': '1' } });
      await new Promise((res) => setTimeout(res, 300));
      await r.register('a');
      const served = await held;
      assert.ok(served.ms >= 290, `the held request took ${served.ms} ms`);
      await r.deregister('a');
      // The plane may still list the instance for a moment after its deregistration.
      const none = await until(3000, async () => {
        const x = await r.plane.send(r.service, '/ok');
        return x.status === 200 ? null : x;
      });
      assert.ok(none !== null && none.ms >= 990, `no instance: answered after ${none?.ms} ms (coldStart.timeout 1 s)`);
      return { served: { ...pick(served), backend: served.backend, held: /; held=\d+ms \(the service was scaled to zero/.test(served.explain ?? '') }, none: pick(none) };
    },
    expect: { served: { status: 200, error: null, backend: 'a', held: true }, none: { status: 503, error: 'SKEIN_E_COLD_START_TIMEOUT' } },
  },
  {
    name: 'the control plane away: requests are served from the last state seen',
    backends: ['a', 'b'],
    policy: { ...RR, ...QUIET },
    last: true,
    run: async (r) => {
      await r.stopControl();
      return pattern(await times(4, () => r.plane.send(r.service, '/ok')));
    },
    expect: 'ABAB',
  },
];
