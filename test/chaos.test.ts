/**
 * Chaos tests: three instances of one service behind one `skein proxy` (outbound listener, the
 * clients name the service in `Host`), a control plane, all as child processes on 127.0.0.1, and
 * a paced load of idempotent GETs (about 300 requests/s, many keep-alive connections, every
 * answer recorded). The instances are registered WITHOUT control-plane health checks: what keeps
 * the clients served is the proxy's own passive machinery (retries, retry budget, outlier
 * detection, breakers, limits), which is what is tested.
 *
 * a. `kill -9` of one instance: not one client request fails over the whole run, and from 1 s
 *    after the kill no request goes to the dead instance (no connection attempt to it, no request
 *    counted for it, it stays ejected).
 * b. `SIGSTOP` of one instance (per-try timeout 300 ms, request timeout 5 s): every request gets
 *    a 200 (before the proxy's deadline, or it would be a 504), and the stopped one is ejected.
 * c. one instance answers every request 500: it is ejected, and of the requests started after the
 *    ejection at least 99.9% succeed (a window of at least 1500 requests).
 * d. every instance answers 503 for 30 s: the upstream attempts (what the backends received)
 *    stay under 1.2 × the offered load + 10/s (the retry budget's promise; the breakers cut far
 *    more), then the instances heal and the service recovers by itself (no restart, no
 *    re-registration) within 25 s.
 * d2. the same for 15 s with breakers and outlier detection off, so that the retry budget is what
 *    limits: retries are made (at least the budget's floor), stay within its bound, and it refuses
 *    more than it allows (skein_proxy_retry_budget_exhausted_total); a second after the heal every
 *    request succeeds.
 * e. 5,000 concurrent requests, each on its own connection, against `limits.maxRequests: 1024`
 *    with the instances holding every request: exactly the excess is refused at once with
 *    503 SKEIN_E_UPSTREAM_OVERFLOW while the admitted 1,024 are still held (causality: the
 *    refusals are all in before anything is released), the proxy's RSS stays bounded, and after
 *    the release every admitted request gets its 200 and normal service resumes.
 *
 * In a, b and c the instance broken is the one carrying the most traffic at that moment (see
 * `busiest`). In e the 5,000 connections are opened at most 256 at a time (so that the proxy's
 * accept queue does not overflow into SYN retransmits) and all stay open until the end.
 *
 * The backend is test/fixtures/chaos-backend.mjs (modes ok / 500 / 503 / hold, and /_stats).
 * Each scenario has its own service name, its own three backends and its own proxy; they share
 * the control plane. Figures (failures, attempts against the bound, RSS, durations) are reported
 * with t.diagnostic.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { TRAFFIC_DEFAULTS } from '../src/api/traffic.js';
import { ROOT, api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { frameResponse, httpGet, metricValue, registerInstance, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

const BACKEND_SCRIPT = join(ROOT, 'test', 'fixtures', 'chaos-backend.mjs');
/** The steady load, requests per second. */
const RATE = 300;
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Backends (child processes running the fixture)
// ---------------------------------------------------------------------------------------------

interface Backend {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Sets the mode: ok, 500, 503 or hold. */
  mode(m: 'ok' | '500' | '503' | 'hold'): Promise<void>;
  /** Answers the held requests; how many there were. */
  release(): Promise<number>;
  /** Requests received (control endpoints excluded) and requests held now. */
  stats(): Promise<{ requests: number; held: number }>;
  /** Sends a signal (SIGKILL: resolves once the process is gone). */
  signal(sig: NodeJS.Signals): Promise<void>;
  /** SIGCONT (in case it was stopped), SIGKILL, and wait for the exit. */
  stop(): Promise<void>;
}

async function startBackend(name: string): Promise<Backend> {
  // stdin is a pipe: the fixture exits when it closes, so it never outlives this process.
  const child = spawn(process.execPath, [BACKEND_SCRIPT, name, '--exit-with-stdin'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`backend ${name} did not report its port within 10 s: ${logs.join('\n')}`));
    }, 10_000);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      logs.push(line);
      try {
        const j = JSON.parse(line) as { port?: unknown };
        if (typeof j.port === 'number') {
          clearTimeout(timer);
          resolve(j.port);
        }
      } catch {
        /* not the port line */
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => logs.push(l));
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`backend ${name} exited before listening: ${logs.join('\n')}`));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  const control = async (path: string): Promise<any> => {
    const r = await api(base, 'GET', path);
    if (r.status !== 200) throw new Error(`backend ${name} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  return {
    name,
    port,
    child,
    mode: async (m) => {
      await control(`/_mode?m=${m}`);
    },
    release: async () => ((await control('/_release')) as { released: number }).released,
    stats: async () => {
      const s = (await control('/_stats')) as { requests: number; held: number };
      return { requests: s.requests, held: s.held };
    },
    signal: async (sig) => {
      child.kill(sig);
      if (sig === 'SIGKILL') await exited;
    },
    stop: async () => {
      if (gone()) return;
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A paced load: a fixed schedule of start times, many keep-alive connections, every answer kept
// ---------------------------------------------------------------------------------------------

interface Sample {
  seq: number;
  /** performance.now() ms: when the schedule says it starts. */
  scheduled: number;
  /** When it was written to a connection (NaN while queued for a free connection). */
  start: number;
  /** When its answer was complete, or it failed (NaN while in flight). */
  end: number;
  /** 0: no answer. */
  status: number;
  /** x-skein-error of the answer, if any. */
  error: string | null;
  /** The backend that answered (its JSON body's name), when a backend answered. */
  backend: string | null;
  /** For answers other than 200: the body (start of it) or what went wrong. */
  detail: string;
}

/** One keep-alive client connection, one request at a time, raw HTTP/1.1 over node:net. */
class ClientConn {
  readonly socket: Socket;
  private buf: Buffer = EMPTY;
  private cur: Sample | null = null;
  private timer: NodeJS.Timeout | null = null;
  private gone = false;
  private lastError: string | null = null;

  constructor(
    port: number,
    private readonly timeoutMs: number,
    private readonly onFree: (c: ClientConn) => void,
    private readonly onGone: (c: ClientConn) => void,
  ) {
    this.socket = createConnection({ host: '127.0.0.1', port });
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (e: NodeJS.ErrnoException) => {
      this.lastError = e.code ?? e.message;
    });
    this.socket.on('close', () => this.drop(`connection closed before a complete answer (${this.lastError ?? 'EOF'})`));
  }

  get usable(): boolean {
    return !this.gone;
  }

  send(s: Sample, bytes: Buffer): void {
    this.cur = s;
    s.start = performance.now();
    this.timer = setTimeout(() => this.drop(`no answer within ${this.timeoutMs} ms (client timeout)`), this.timeoutMs);
    this.socket.write(bytes);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    const s = this.cur;
    if (s === null) {
      this.drop('bytes arrived with no request outstanding');
      return;
    }
    let f: ReturnType<typeof frameResponse>;
    try {
      f = frameResponse(this.buf);
    } catch (e) {
      this.drop(`malformed answer: ${(e as Error).message}`);
      return;
    }
    if (f === null) return;
    this.buf = this.buf.subarray(f.consumed);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.cur = null;
    const r = f.response;
    s.end = performance.now();
    s.status = r.status;
    s.error = r.headers['x-skein-error'] ?? null;
    const body = r.body.toString('utf8');
    if (s.error === null) {
      try {
        const j = JSON.parse(body) as { name?: unknown };
        s.backend = typeof j.name === 'string' ? j.name : null;
      } catch {
        /* not a backend's answer */
      }
    }
    if (r.status !== 200) s.detail = body.slice(0, 400);
    if (/\bclose\b/i.test(r.headers.connection ?? '') || this.buf.length > 0) {
      this.drop('');
      return;
    }
    this.onFree(this);
  }

  /** The connection is done for: the request on it (if any) failed with `why`. */
  private drop(why: string): void {
    const s = this.cur;
    this.cur = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (s !== null) {
      s.end = performance.now();
      s.status = 0;
      s.detail = why;
    }
    if (this.gone) return;
    this.gone = true;
    this.socket.destroy();
    this.onGone(this);
  }

  destroy(): void {
    this.drop('the load was stopped');
  }
}

class PacedLoad {
  readonly samples: Sample[] = [];
  private readonly conns = new Set<ClientConn>();
  private idle: ClientConn[] = [];
  private readonly queue: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;
  private t0 = 0;
  private next = 0;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private readonly timeoutMs: number;

  constructor(
    private readonly port: number,
    private readonly service: string,
    private readonly rate: number,
    private readonly opts: { connections?: number; maxConnections?: number; timeoutMs?: number } = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  start(): void {
    this.t0 = performance.now();
    // Many connections from the start; free ones are taken oldest first, so all of them carry load.
    for (let i = 0; i < (this.opts.connections ?? 32); i++) this.idle.push(this.open());
    this.tick();
  }

  private open(): ClientConn {
    const c = new ClientConn(this.port, this.timeoutMs, (x) => this.onFree(x), (x) => this.onGone(x));
    this.conns.add(c);
    return c;
  }

  private bytes(seq: number): Buffer {
    return Buffer.from(`GET /chaos/${seq} HTTP/1.1\r\nHost: ${this.service}\r\n\r\n`, 'latin1');
  }

  private tick(): void {
    this.timer = null;
    if (this.stopping) return;
    const now = performance.now();
    for (;;) {
      const at = this.t0 + (this.next * 1000) / this.rate;
      if (at > now) {
        this.timer = setTimeout(() => this.tick(), Math.max(1, at - now));
        return;
      }
      const s: Sample = { seq: this.next, scheduled: at, start: Number.NaN, end: Number.NaN, status: 0, error: null, backend: null, detail: '' };
      this.next++;
      this.samples.push(s);
      this.dispatch(s);
    }
  }

  private dispatch(s: Sample): void {
    let c = this.idle.shift();
    while (c !== undefined && !c.usable) c = this.idle.shift();
    if (c === undefined) {
      if (this.conns.size >= (this.opts.maxConnections ?? 512)) {
        this.queue.push(s);
        return;
      }
      c = this.open();
    }
    c.send(s, this.bytes(s.seq));
  }

  private onFree(c: ClientConn): void {
    const s = this.queue.shift();
    if (s !== undefined) c.send(s, this.bytes(s.seq));
    else this.idle.push(c);
  }

  private onGone(c: ClientConn): void {
    this.conns.delete(c);
    const s = this.queue.shift();
    if (s !== undefined) this.dispatch(s);
  }

  /** Requests answered (or failed), among those started at or after `from`. */
  doneSince(from: number): number {
    let n = 0;
    for (let i = this.samples.length - 1; i >= 0; i--) {
      const s = this.samples[i] as Sample;
      if (s.scheduled < from - this.timeoutMs) break;
      if (s.start >= from && !Number.isNaN(s.end)) n++;
    }
    return n;
  }

  /** Waits until `n` requests started at or after `from` are done. */
  async waitDoneSince(from: number, n: number, timeoutMs = 20_000): Promise<void> {
    await waitFor(() => this.doneSince(from) >= n, { timeoutMs, intervalMs: 50, what: `${n} requests of the load started after t=${from.toFixed(0)} to be done (${this.doneSince(from)} so far)` });
  }

  /** Requests the backend `name` answered. */
  servedBy(name: string): number {
    let n = 0;
    for (const s of this.samples) if (s.backend === name) n++;
    return n;
  }

  /** Stops the schedule, lets the requests in flight finish, closes the connections. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      try {
        await waitFor(() => this.samples.every((s) => !Number.isNaN(s.end)), { timeoutMs: this.timeoutMs + 5_000, intervalMs: 20, what: 'the requests in flight of the load' });
      } finally {
        this.queue.length = 0;
        for (const c of [...this.conns]) c.destroy();
        this.idle = [];
      }
    })();
    return this.stopped;
  }
}

/** Counts by outcome and by backend, and the first failures: for assertion messages and reports. */
function describeSamples(samples: readonly Sample[], what = 'requests'): string {
  const outcomes = new Map<string, number>();
  const by = new Map<string, number>();
  const failures: Sample[] = [];
  for (const s of samples) {
    const k = s.status === 0 ? 'no answer' : `${s.status}${s.error === null ? '' : ` ${s.error}`}`;
    outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    if (s.backend !== null) by.set(s.backend, (by.get(s.backend) ?? 0) + 1);
    if (s.status !== 200) failures.push(s);
  }
  const first = failures
    .slice(0, 5)
    .map((s) => `  #${s.seq} started ${(s.start - (samples[0]?.start ?? 0)).toFixed(0)} ms in: ${s.status === 0 ? 'no answer' : s.status} ${s.error ?? ''} ${s.backend ?? ''} ${s.detail.slice(0, 300)}`)
    .join('\n');
  return `${samples.length} ${what}: ${JSON.stringify(Object.fromEntries(outcomes))}; answered by ${JSON.stringify(Object.fromEntries(by))}${failures.length > 0 ? `; first failures:\n${first}` : ''}`;
}

const ok = (s: Sample) => s.status === 200;
const done = (s: Sample) => !Number.isNaN(s.end);

// ---------------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------------

let control: ControlProcess;
const globalCleanups: Array<() => unknown> = [];

interface Scenario {
  service: string;
  backends: Backend[];
  /** Instance ids, and endpoint keys (`service/id`), in the order of `backends`. */
  ids: string[];
  keys: string[];
  proxy: ProxyProcess;
  /** The proxy's outbound listener. */
  port: number;
  stop(): Promise<void>;
}

/** Defines the service (with `policy`), starts three backends, registers them, starts a proxy that knows them. */
async function startScenario(service: string, policy: Record<string, unknown> | null): Promise<Scenario> {
  if (policy !== null) {
    const r = await api(control.http, 'PUT', `/v1/services/${service}`, policy);
    assert.ok(r.status === 200 || r.status === 201, `PUT /v1/services/${service}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => {});
  };
  try {
    const names = [1, 2, 3].map((i) => `${service}-${i}`);
    const backends: Backend[] = [];
    await Promise.all(
      names.map(async (n) => {
        const b = await startBackend(n);
        backends.push(b);
        // Backends stop first (stops run in reverse): nothing stays held while the proxy drains.
        stops.unshift(() => b.stop());
      }),
    );
    backends.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const b of backends) await registerInstance(control.http, service, b.name, b.port);
    const proxy = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    stops.unshift(() => proxy.stop());
    await waitForProxyReady(proxy);
    await waitFor(async () => ((await api(proxy.admin, 'GET', '/debug/endpoints')).body?.services?.[service]?.endpoints ?? []).length === 3, {
      what: `the proxy to know the 3 instances of ${service}`,
    });
    const port = (proxy.workload('client').outbound ?? assert.fail('the proxy reported no outbound listener')).port;
    return { service, backends, ids: names, keys: names.map((n) => `${service}/${n}`), proxy, port, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The proxy's traffic state for `service` (/debug/endpoints), or undefined before its first request. */
async function trafficOf(p: ProxyProcess, service: string): Promise<any> {
  const r = await api(p.admin, 'GET', '/debug/endpoints');
  assert.equal(r.status, 200, `GET ${p.admin}/debug/endpoints: ${r.status}`);
  return r.body?.services?.[service]?.traffic;
}

/** The outlier detector's view of one endpoint: { ejected, totalEjections, ... }. */
async function outlierOf(p: ProxyProcess, service: string, key: string): Promise<{ ejected: boolean; totalEjections: number; [k: string]: unknown } | undefined> {
  return (await trafficOf(p, service))?.outliers?.[key];
}

function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  return metricValue(text, name, labels) ?? 0;
}

/** VmRSS of a process, in MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) / 1024;
}

/** The soft limit of open files of this process (children inherit it). */
function openFilesLimit(): number {
  const m = /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m === null || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/** The last log lines of a proxy, for assertion messages. */
function logsOf(p: ProxyProcess, n = 15): string {
  return `\nproxy (pid ${p.child.pid}, exit ${p.child.exitCode ?? '-'}/${p.child.signalCode ?? '-'}) last logs:\n${p.logs.slice(-n).join('\n')}`;
}

/**
 * Waits until the load has had answers from each backend (the mesh works before the chaos). Only a
 * few each: peak-EWMA can leave an instance that started slow with a small share for a while.
 */
async function waitServedByAll(load: PacedLoad, backends: readonly Backend[], sc: Scenario): Promise<void> {
  try {
    await waitFor(() => backends.every((b) => load.servedBy(b.name) >= 5), { timeoutMs: 20_000, intervalMs: 50 });
  } catch {
    assert.fail(`not every backend answered 5 requests of the load: ${describeSamples(load.samples.filter(done))}${logsOf(sc.proxy)}`);
  }
}

const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/**
 * The index of the backend that answered the most requests of the load over the last second: the
 * instance the balancer currently prefers, whose failure hits the most requests. The scenarios
 * break that one. (An instance peak-EWMA already avoids gets few requests, so collecting the five
 * failures in a row that eject it can take over a second: killed, it would still get a connection
 * attempt now and then after the 1 s of scenario a. Seen in 3 of 30 runs with a fixed victim.)
 */
function busiest(load: PacedLoad, backends: readonly Backend[]): number {
  const since = performance.now() - 1_000;
  const counts = backends.map((b) => load.samples.filter((s) => s.start >= since && s.backend === b.name).length);
  return counts.indexOf(Math.max(...counts));
}

before(async () => {
  const dir = await tempDir('skein-chaos-');
  globalCleanups.push(dir.remove);
  control = await startControl({ dataDir: dir.path });
  globalCleanups.push(() => control.stop());
});

after(async () => {
  for (const c of globalCleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

describe('chaos: three instances behind one proxy under a steady load', () => {
  test('a. kill -9 of one instance: no client request fails; from 1 s after the kill no request goes to it', { timeout: 60_000 }, async (t: TestContext) => {
    const t0 = performance.now();
    const sc = await startScenario('chaos-kill', null);
    const load = new PacedLoad(sc.port, sc.service, RATE);
    try {
      load.start();
      await waitServedByAll(load, sc.backends, sc);
      const vi = busiest(load, sc.backends);
      const victim = sc.backends[vi] as Backend;
      const survivors = sc.backends.filter((_, i) => i !== vi);
      const [victimId, victimKey] = [sc.ids[vi] as string, sc.keys[vi] as string];
      const before = await scrapeMetrics(sc.proxy);

      const tKill = performance.now();
      const killedAt = Date.now();
      await victim.signal('SIGKILL');
      // The window starts 1 s after the kill, whatever the proxy did by then, and spans about 2 s of load.
      await waitFor(() => performance.now() >= tKill + 1_000, { timeoutMs: 5_000, what: '1 s after the kill' });
      const w0 = performance.now();
      const m0 = await scrapeMetrics(sc.proxy);
      const o0 = await outlierOf(sc.proxy, sc.service, victimKey);
      await load.waitDoneSince(w0, 2 * RATE);
      const m1 = await scrapeMetrics(sc.proxy);
      const o1 = await outlierOf(sc.proxy, sc.service, victimKey);
      const w1 = performance.now();
      await load.stop();

      const all = load.samples;
      const windowed = all.filter((s) => s.start >= w0 && s.start < w1);
      const delta = (name: string, labels: Record<string, string>) => metric(m1, name, labels) - metric(m0, name, labels);
      const failedConnects = delta('skein_proxy_upstream_connects_total', { result: 'failed' });
      const connectRetries = delta('skein_proxy_retries_total', { service: sc.service, reason: 'connect-failure' });
      const toVictim = delta('skein_proxy_requests_total', { service: sc.service, instance: victimId });
      const failedConnectsAll = metric(m1, 'skein_proxy_upstream_connects_total', { result: 'failed' }) - metric(before, 'skein_proxy_upstream_connects_total', { result: 'failed' });
      const retriesAll = metric(m1, 'skein_proxy_retries_total', { service: sc.service }) - metric(before, 'skein_proxy_retries_total', { service: sc.service });
      // When the proxy ejected it (its log line's time; the kill's time is from this process's clock).
      const ejectLine = sc.proxy.logs.find((l) => l.includes('outlier ejected') && l.includes(victimKey));
      const ejectedAfter = ejectLine === undefined ? Number.NaN : (JSON.parse(ejectLine) as { time: number }).time - killedAt;
      t.diagnostic(
        `a: killed ${victimId} (the busiest); ${describeSamples(all)}; ejected ${ejectedAfter} ms after the kill; ` +
          `from the kill: ${failedConnectsAll} failed connects, ${retriesAll} retries; window ${secs(w1 - w0)} from ${((w0 - tKill) / 1000).toFixed(2)} s after the kill: ` +
          `${windowed.length} requests, ${failedConnects} failed connects, ${connectRetries} connect-failure retries, ${toVictim} requests counted for ${victimId}; scenario ${secs(performance.now() - t0)}`,
      );

      assert.equal(all.filter((s) => !ok(s)).length, 0, `client requests failed: ${describeSamples(all)}${logsOf(sc.proxy)}`);
      // The kill was noticed the way the policy says: failed connects, retried elsewhere, an ejection.
      assert.ok(failedConnectsAll >= 1, `the proxy never failed to connect to the killed instance: ${failedConnectsAll}`);
      assert.ok(metric(m1, 'skein_proxy_outlier_events_total', { service: sc.service, event: 'eject' }) >= 1, `no ejection counted${logsOf(sc.proxy)}`);
      // From 1 s after the kill, nothing goes to the dead instance: no connection attempt (nothing
      // listens there, so every attempt to it is a failed connect), no request, no retry away from it.
      assert.ok(windowed.length >= RATE, `the window is too small to say anything: ${windowed.length} requests`);
      assert.equal(failedConnects, 0, `${failedConnects} connection attempts to the dead instance in the window (${secs(w1 - w0)} from 1 s after the kill; ejected ${ejectedAfter} ms after the kill)${logsOf(sc.proxy)}`);
      assert.equal(connectRetries, 0, `${connectRetries} connect-failure retries in the window`);
      assert.equal(toVictim, 0, `${toVictim} requests counted for ${victimId} in the window`);
      assert.ok(o0?.ejected === true && o1?.ejected === true, `${victimKey} is not ejected throughout the window (ejected ${ejectedAfter} ms after the kill): ${JSON.stringify(o0)} -> ${JSON.stringify(o1)}${logsOf(sc.proxy)}`);
      assert.equal(o1?.totalEjections, o0?.totalEjections, `${victimKey} came back and was ejected again during the window: ${JSON.stringify(o0)} -> ${JSON.stringify(o1)}`);
      const names = new Set(survivors.map((b) => b.name));
      assert.ok(
        windowed.every((s) => s.backend !== null && names.has(s.backend)),
        `requests in the window answered by something else than the survivors: ${describeSamples(windowed)}`,
      );
    } finally {
      await load.stop().catch(() => {});
      await sc.stop();
    }
  });

  test('b. SIGSTOP of one instance: requests still succeed within their timeout, the stopped one is ejected', { timeout: 90_000 }, async (t: TestContext) => {
    const t0 = performance.now();
    // Round robin: the stopped instance keeps getting its share of first attempts, so its five
    // local-origin failures in a row come within a second and the ejection is what is tested. Under
    // peak-EWMA (the default) it is shunned after its first per-try timeout and picked again only as
    // its estimate decays: requests succeed all the same, but the ejection then took from 3 s to more
    // than 40 s depending on the machine's load (it failed on a quiet machine).
    const sc = await startScenario('chaos-stop', { balancer: { kind: 'round-robin' }, timeouts: { perTry: '300ms', request: '5s' } });
    const load = new PacedLoad(sc.port, sc.service, RATE);
    let victim: Backend | null = null;
    try {
      load.start();
      await waitServedByAll(load, sc.backends, sc);
      const vi = busiest(load, sc.backends);
      victim = sc.backends[vi] as Backend;
      const victimName = victim.name;
      const policy = (await trafficOf(sc.proxy, sc.service))?.policy?.routes?.at(-1);
      assert.equal(policy?.perTryTimeoutMs, 300, `the policy in force is not the one set: ${JSON.stringify(policy)}`);
      const victimKey = sc.keys[vi] as string;
      const m0 = await scrapeMetrics(sc.proxy);

      const tStop = performance.now();
      await victim.signal('SIGSTOP');
      await waitFor(async () => (await outlierOf(sc.proxy, sc.service, victimKey))?.ejected === true, {
        timeoutMs: 40_000,
        intervalMs: 50,
        what: `${victimKey} to be ejected after SIGSTOP (${describeSamples(load.samples.filter((s) => s.start >= tStop && done(s)))})${logsOf(sc.proxy)}`,
      });
      const tEjected = performance.now();
      // After the ejection: a second of load, all of it on the other two.
      await load.waitDoneSince(tEjected, RATE);
      const m1 = await scrapeMetrics(sc.proxy);
      await load.stop();

      const all = load.samples;
      const afterStop = all.filter((s) => s.start >= tStop);
      const slowest = afterStop.reduce((m, s) => Math.max(m, s.end - s.start), 0);
      // Requests that waited out a per-try timeout (sent to the stopped instance first): when they started.
      const timedOut = afterStop.filter((s) => s.end - s.start >= 250).map((s) => `${(s.start - tStop).toFixed(0)}+${(s.end - s.start).toFixed(0)}`);
      const perTryRetries = metric(m1, 'skein_proxy_retries_total', { service: sc.service, reason: 'per-try-timeout' }) - metric(m0, 'skein_proxy_retries_total', { service: sc.service, reason: 'per-try-timeout' });
      const ejects = metric(m1, 'skein_proxy_outlier_events_total', { service: sc.service, event: 'eject' });
      const ejectLog = sc.proxy.logs.find((l) => l.includes('outlier ejected') && l.includes(victimKey));
      t.diagnostic(
        `b: stopped ${victimName} (the busiest); ${describeSamples(all)}; ejected ${(tEjected - tStop).toFixed(0)} ms after SIGSTOP; ${perTryRetries} per-try-timeout retries; ` +
          `slowest request after the stop ${slowest.toFixed(0)} ms (request timeout 5000 ms); requests that waited a per-try timeout (ms after the stop + duration): ${timedOut.join(' ')}; ${ejectLog ?? 'no eject log line'}; scenario ${secs(performance.now() - t0)}`,
      );

      // A 200 means the proxy answered before its 5 s deadline (after it, it answers 504 itself).
      assert.equal(all.filter((s) => !ok(s)).length, 0, `requests failed: ${describeSamples(all)}${logsOf(sc.proxy)}`);
      assert.ok(afterStop.length >= RATE, `too few requests after the stop: ${afterStop.length}`);
      assert.ok(ejects >= 1, `skein_proxy_outlier_events_total{service="${sc.service}",event="eject"} is ${ejects}${logsOf(sc.proxy)}`);
      assert.ok(perTryRetries >= 1, `no per-try-timeout retry: the stopped instance got no request? ${describeSamples(afterStop)}`);
      assert.ok(ejectLog !== undefined && /consecutive-local-origin-failure/.test(ejectLog), `no "outlier ejected" log line for ${victimKey} naming consecutive local-origin failures${logsOf(sc.proxy, 40)}`);
      assert.equal(all.filter((s) => s.start >= tStop && s.backend === victimName).length, 0, 'the stopped instance answered');
    } finally {
      await load.stop().catch(() => {});
      victim?.child.kill('SIGCONT');
      await sc.stop();
    }
  });

  test('c. one instance answering 500: it is ejected, then >= 99.9% of requests succeed', { timeout: 60_000 }, async (t: TestContext) => {
    const t0 = performance.now();
    const sc = await startScenario('chaos-500', null);
    const load = new PacedLoad(sc.port, sc.service, RATE);
    try {
      load.start();
      await waitServedByAll(load, sc.backends, sc);
      const vi = busiest(load, sc.backends);
      const victim = sc.backends[vi] as Backend;
      const victimKey = sc.keys[vi] as string;

      const tBad = performance.now();
      await victim.mode('500');
      await waitFor(async () => (await outlierOf(sc.proxy, sc.service, victimKey))?.ejected === true, {
        timeoutMs: 20_000,
        intervalMs: 50,
        what: `${victimKey} to be ejected for its 500s${logsOf(sc.proxy)}`,
      });
      const tEjected = performance.now();
      await load.waitDoneSince(tEjected, 1_500, 30_000);
      const m = await scrapeMetrics(sc.proxy);
      const stillEjected = (await outlierOf(sc.proxy, sc.service, victimKey))?.ejected;
      await load.stop();

      const all = load.samples;
      const beforeEjection = all.filter((s) => s.start >= tBad && s.start < tEjected);
      const windowed = all.filter((s) => s.start >= tEjected);
      const good = windowed.filter(ok).length;
      t.diagnostic(
        `c: ${victim.name} (the busiest) answers 500; before the ejection (${((tEjected - tBad) / 1000).toFixed(2)} s as seen by polling): ${describeSamples(beforeEjection)}; ` +
          `after: ${good}/${windowed.length} ok (${((100 * good) / windowed.length).toFixed(3)}%); ${describeSamples(windowed)}; scenario ${secs(performance.now() - t0)}`,
      );
      assert.ok(metric(m, 'skein_proxy_outlier_events_total', { service: sc.service, event: 'eject' }) >= 1, `no ejection counted${logsOf(sc.proxy)}`);
      assert.equal(stillEjected, true, `${victimKey} is no longer ejected at the end of the window`);
      assert.ok(windowed.length >= 1_500, `the window has only ${windowed.length} requests`);
      assert.ok(good >= 0.999 * windowed.length, `after the ejection only ${good} of ${windowed.length} succeeded: ${describeSamples(windowed)}${logsOf(sc.proxy)}`);
    } finally {
      await load.stop().catch(() => {});
      await sc.stop();
    }
  });

  test('d. every instance answering 503 for 30 s: attempts stay within the retry budget; the service recovers by itself', { timeout: 100_000 }, async (t: TestContext) => {
    const t0 = performance.now();
    const sc = await startScenario('chaos-503', null);
    const load = new PacedLoad(sc.port, sc.service, RATE);
    const received = async () => (await Promise.all(sc.backends.map((b) => b.stats()))).reduce((n, s) => n + s.requests, 0);
    try {
      load.start();
      await waitServedByAll(load, sc.backends, sc);
      const pid = sc.proxy.child.pid;

      const r0 = await received();
      const p0 = performance.now();
      await Promise.all(sc.backends.map((b) => b.mode('503')));
      // The outage lasts 30 s (a duration of the scenario, not a wait for something to happen).
      await waitFor(() => performance.now() >= p0 + 30_000, { timeoutMs: 35_000, intervalMs: 100, what: 'the end of the 30 s outage' });
      const r1 = await received();
      const p1 = performance.now();
      const mOutage = await scrapeMetrics(sc.proxy);
      const tHeal = performance.now();
      await Promise.all(sc.backends.map((b) => b.mode('ok')));

      // Recovered: 50 requests in a row (by schedule) started after the heal succeed.
      let tRecovered = Number.NaN;
      const recovered = () => {
        let run = 0;
        for (const s of load.samples) {
          if (s.start < tHeal || !done(s)) continue;
          run = ok(s) ? run + 1 : 0;
          if (run === 1) tRecovered = s.start;
          if (run >= 50) return true;
        }
        return false;
      };
      await waitFor(recovered, {
        timeoutMs: 25_000,
        intervalMs: 100,
        what: `the service to recover within 25 s of the heal (${describeSamples(load.samples.filter((s) => s.start >= tHeal && done(s)))})${logsOf(sc.proxy, 30)}`,
      });
      // And stays recovered for a second of load.
      const tCheck = performance.now();
      await load.waitDoneSince(tCheck, RATE);
      const m = await scrapeMetrics(sc.proxy);
      await load.stop();

      const offeredSamples = load.samples.filter((s) => s.start >= p0 && s.start < p1);
      const offered = offeredSamples.length;
      const attempts = r1 - r0;
      const period = (p1 - p0) / 1000;
      const bound = 1.2 * offered + 10 * period;
      const afterRecovery = load.samples.filter((s) => s.start >= tCheck);
      const retries = metric(mOutage, 'skein_proxy_retries_total', { service: sc.service });
      const refused = metric(mOutage, 'skein_proxy_retry_budget_exhausted_total', { service: sc.service });
      const opens = metric(mOutage, 'skein_proxy_breaker_transitions_total', { service: sc.service, to: 'open' });
      t.diagnostic(
        `d: outage ${period.toFixed(2)} s: offered ${offered} requests, upstream attempts ${attempts} (bound 1.2 × ${offered} + 10/s × ${period.toFixed(1)} s = ${bound.toFixed(0)}); ` +
          `retries ${retries}, budget refusals ${refused}, breaker openings ${opens}; clients saw ${describeSamples(offeredSamples)}; ` +
          `recovered ${((tRecovered - tHeal) / 1000).toFixed(2)} s after the heal (first of 50 successes in a row); after: ${describeSamples(afterRecovery)}; scenario ${secs(performance.now() - t0)}`,
      );

      assert.ok(offeredSamples.filter((s) => !ok(s)).length > offered / 2, `the outage did not reach the clients: ${describeSamples(offeredSamples)}`);
      assert.ok(attempts <= bound, `the backends received ${attempts} requests during the ${period.toFixed(1)} s outage; the bound is ${bound.toFixed(0)} (offered ${offered})${logsOf(sc.proxy)}`);
      assert.ok(tRecovered - tHeal <= 25_000, `recovered ${tRecovered - tHeal} ms after the heal`);
      assert.ok(afterRecovery.length >= RATE && afterRecovery.every(ok), `failures after the recovery: ${describeSamples(afterRecovery)}${logsOf(sc.proxy)}`);
      // No restart: the same proxy process did it all (and nothing re-registered the instances).
      assert.equal(sc.proxy.child.pid, pid);
      assert.equal(sc.proxy.child.exitCode, null, `the proxy exited${logsOf(sc.proxy)}`);
      assert.ok(metric(m, 'skein_proxy_endpoints', { service: sc.service }) === 3, 'the proxy does not list the 3 instances');
    } finally {
      await load.stop().catch(() => {});
      await sc.stop();
    }
  });

  test('d2. the same outage with breakers and outlier detection off: the retry budget alone bounds the retries, and refuses most', { timeout: 60_000 }, async (t: TestContext) => {
    // In d the breakers open within a second and the budget is never asked: this one proves the budget.
    const t0 = performance.now();
    const sc = await startScenario('chaos-503-budget', { breaker: { enabled: false }, outlierDetection: { enabled: false } });
    const load = new PacedLoad(sc.port, sc.service, RATE);
    try {
      load.start();
      await waitServedByAll(load, sc.backends, sc);
      const counters = (text: string) => ({
        retries: metric(text, 'skein_proxy_retries_total', { service: sc.service }),
        refused: metric(text, 'skein_proxy_retry_budget_exhausted_total', { service: sc.service }),
      });
      const c0 = counters(await scrapeMetrics(sc.proxy));
      const p0 = performance.now();
      await Promise.all(sc.backends.map((b) => b.mode('503')));
      // 15 s: longer than the budget's 10 s window (a duration of the scenario, not a wait for something).
      await waitFor(() => performance.now() >= p0 + 15_000, { timeoutMs: 20_000, intervalMs: 100, what: 'the end of the 15 s outage' });
      const c1 = counters(await scrapeMetrics(sc.proxy));
      const p1 = performance.now();
      await Promise.all(sc.backends.map((b) => b.mode('ok')));
      const tHeal = performance.now();
      await load.waitDoneSince(tHeal + 1000, RATE);
      await load.stop();

      const offeredSamples = load.samples.filter((s) => s.start >= p0 && s.start < p1);
      const period = (p1 - p0) / 1000;
      const retries = c1.retries - c0.retries;
      const refused = c1.refused - c0.refused;
      // The budget's promise (src/resilience/retry-budget.ts), from its creation (after t0):
      // retries <= ratio x requests + minRetriesPerSecond x elapsed seconds + one window's floor.
      // Requests: all the load sent before the scrape (the proxy counts them as they end).
      const { ratio, minRetriesPerSecond, windowMs } = TRAFFIC_DEFAULTS.budget;
      const sent = load.samples.filter((s) => s.start < p1).length;
      const bound = ratio * sent + minRetriesPerSecond * ((p1 - t0) / 1000) + (minRetriesPerSecond * windowMs) / 1000;
      t.diagnostic(
        `d2: outage ${period.toFixed(2)} s: offered ${offeredSamples.length} requests; retries ${retries} (${c1.retries} in all, bound ${bound.toFixed(0)} for ${sent} requests sent), ` +
          `budget refusals ${refused}; clients saw ${describeSamples(offeredSamples)}; after the heal: ${describeSamples(load.samples.filter((s) => s.start >= tHeal + 1000))}; scenario ${secs(performance.now() - t0)}`,
      );
      assert.ok(offeredSamples.filter((s) => !ok(s)).length > offeredSamples.length / 2, `the outage did not reach the clients: ${describeSamples(offeredSamples)}`);
      assert.ok(retries >= minRetriesPerSecond * period, `retries were made: ${retries} in ${period.toFixed(1)} s, at least the budget's floor of ${minRetriesPerSecond}/s${logsOf(sc.proxy)}`);
      assert.ok(c1.retries <= bound, `${c1.retries} retries for ${sent} requests: over the budget's bound of ${bound.toFixed(0)}${logsOf(sc.proxy)}`);
      assert.ok(refused > retries, `the budget refused ${refused} retries and allowed ${retries}: it is what limited them${logsOf(sc.proxy)}`);
      const healed = load.samples.filter((s) => s.start >= tHeal + 1000);
      assert.ok(healed.length >= RATE && healed.every(ok), `failures a second after the heal: ${describeSamples(healed)}${logsOf(sc.proxy)}`);
    } finally {
      await load.stop().catch(() => {});
      await sc.stop();
    }
  });

  test('e. 5,000 concurrent requests against maxRequests 1,024: exactly the excess is refused while the rest are held', { timeout: 120_000 }, async (t: TestContext) => {
    const t0 = performance.now();
    const N = 5_000;
    const LIMIT = 1_024;
    const nofile = openFilesLimit();
    // This process holds N client sockets; the proxy N client and LIMIT upstream sockets.
    assert.ok(nofile >= N + LIMIT + 2_000, `ulimit -n is ${nofile}: too low for ${N} concurrent connections (raise it to 8192 or more)`);
    // A request timeout far beyond the hold, so the admitted requests are answered by the backends, not by the deadline.
    const sc = await startScenario('chaos-overflow', { limits: { maxRequests: LIMIT }, timeouts: { request: '60s' } });
    const pid = sc.proxy.child.pid as number;
    const sockets: Socket[] = [];
    let rssTimer: NodeJS.Timeout | null = null;
    try {
      // A few requests first: the service is in use and its policy is in force.
      for (let i = 0; i < 6; i++) {
        const r = await httpGet(sc.port, `/warm/${i}`, { headers: { host: sc.service } });
        assert.equal(r.status, 200, `warm-up request: ${r.status} ${r.body}`);
      }
      const limits = (await trafficOf(sc.proxy, sc.service))?.policy?.limits;
      assert.equal(limits?.maxRequests, LIMIT, `the policy in force: ${JSON.stringify(limits)}`);
      await Promise.all(sc.backends.map((b) => b.mode('hold')));
      const rssBefore = rssMiB(pid);
      let rssPeak = rssBefore;
      rssTimer = setInterval(() => {
        try {
          rssPeak = Math.max(rssPeak, rssMiB(pid));
        } catch {
          /* the proxy is gone: the assertions say so */
        }
      }, 50);

      interface Reply {
        status: number;
        error: string | null;
        backend: string | null;
        body: string;
        /** The release had been asked for when it arrived. */
        afterRelease: boolean;
      }
      const replies: Array<Reply | null> = new Array<Reply | null>(N).fill(null);
      let answered = 0;
      let releaseAsked = false;
      // At most this many connections being established at once (the rest wait their turn), so
      // the proxy's accept queue does not overflow into SYN retransmits; they all stay open.
      let connecting = 0;
      const slotWaiters: Array<() => void> = [];
      const freeSlot = () => {
        connecting--;
        slotWaiters.shift()?.();
      };
      const fire = (i: number) => {
        const sock = createConnection({ host: '127.0.0.1', port: sc.port });
        sockets.push(sock);
        let buf: Buffer = EMPTY;
        let connected = false;
        const answer = (r: Omit<Reply, 'afterRelease'>) => {
          if (replies[i] !== null) return;
          replies[i] = { ...r, afterRelease: releaseAsked };
          answered++;
        };
        sock.once('connect', () => {
          connected = true;
          freeSlot();
          sock.write(`GET /burst/${i} HTTP/1.1\r\nHost: ${sc.service}\r\n\r\n`);
        });
        sock.on('data', (d: Buffer) => {
          buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
          let f: ReturnType<typeof frameResponse>;
          try {
            f = frameResponse(buf);
          } catch (e) {
            answer({ status: 0, error: null, backend: null, body: `malformed answer: ${(e as Error).message}` });
            return;
          }
          if (f === null) return;
          const body = f.response.body.toString('utf8');
          let backend: string | null = null;
          try {
            const j = JSON.parse(body) as { name?: unknown };
            backend = typeof j.name === 'string' ? j.name : null;
          } catch {
            /* not a backend's answer */
          }
          answer({ status: f.response.status, error: f.response.headers['x-skein-error'] ?? null, backend, body: body.slice(0, 300) });
        });
        sock.on('error', () => {});
        sock.on('close', () => {
          if (!connected) freeSlot();
          answer({ status: 0, error: null, backend: null, body: `connection closed (${connected ? 'after connecting' : 'connect failed'})` });
        });
      };
      const tBurst = performance.now();
      for (let i = 0; i < N; i++) {
        while (connecting >= 256) await new Promise<void>((r) => slotWaiters.push(r));
        connecting++;
        fire(i);
      }
      const held = async () => (await Promise.all(sc.backends.map((b) => b.stats()))).reduce((a, s) => ({ requests: a.requests + s.requests, held: a.held + s.held }), { requests: 0, held: 0 });
      let h = { requests: 0, held: 0 };
      // Every request accounted for: answered, or held by a backend.
      await waitFor(
        async () => {
          h = await held();
          return answered + h.held >= N;
        },
        { timeoutMs: 60_000, intervalMs: 100, what: `all ${N} requests to be answered or held (answered ${answered}, held ${h.held})${logsOf(sc.proxy)}` },
      );
      const tAllIn = performance.now();
      const m = await scrapeMetrics(sc.proxy);
      const inFlight = metric(m, 'skein_proxy_requests_in_flight', { service: sc.service });
      const refusedEarly = replies.filter((r): r is Reply => r !== null);
      const outcomes = new Map<string, number>();
      for (const r of refusedEarly) outcomes.set(`${r.status} ${r.error ?? r.backend ?? ''}`, (outcomes.get(`${r.status} ${r.error ?? r.backend ?? ''}`) ?? 0) + 1);
      const show = `${JSON.stringify(Object.fromEntries(outcomes))}; held by the backends ${h.held} (received ${h.requests}); in flight (proxy gauge) ${inFlight}; first odd answer: ${JSON.stringify(refusedEarly.find((r) => r.status !== 503 || r.error !== 'SKEIN_E_UPSTREAM_OVERFLOW') ?? null)}`;

      // Before anything is released: exactly the excess is refused, and the admitted ones are held.
      assert.equal(h.held, LIMIT, `the backends hold ${h.held} requests, not ${LIMIT}: ${show}${logsOf(sc.proxy)}`);
      assert.equal(h.requests - 6, LIMIT, `the backends received ${h.requests - 6} requests of the burst: ${show}`);
      assert.equal(inFlight, LIMIT, `the proxy counts ${inFlight} requests in flight: ${show}`);
      assert.equal(refusedEarly.length, N - LIMIT, `answers before the release: ${show}`);
      assert.ok(
        refusedEarly.every((r) => r.status === 503 && r.error === 'SKEIN_E_UPSTREAM_OVERFLOW'),
        `every answer before the release must be 503 SKEIN_E_UPSTREAM_OVERFLOW: ${show}`,
      );
      const sample = JSON.parse(refusedEarly[0]?.body ?? '{}') as { code?: string; details?: { limit?: number } };
      assert.equal(sample.code, 'SKEIN_E_UPSTREAM_OVERFLOW');
      assert.equal(sample.details?.limit, LIMIT);
      const rssHeld = rssMiB(pid);
      rssPeak = Math.max(rssPeak, rssHeld);

      // Release: every admitted request gets its 200.
      await Promise.all(sc.backends.map((b) => b.mode('ok')));
      releaseAsked = true;
      const tRelease = performance.now();
      const released = (await Promise.all(sc.backends.map((b) => b.release()))).reduce((a, n) => a + n, 0);
      await waitFor(() => answered >= N, { timeoutMs: 30_000, intervalMs: 50, what: `the ${LIMIT} admitted requests to be answered after the release (${answered - (N - LIMIT)} so far)${logsOf(sc.proxy)}` });
      const tAnswered = performance.now();
      const late = replies.filter((r): r is Reply => r !== null && r.afterRelease);
      const lateOk = late.filter((r) => r.status === 200 && r.backend !== null).length;
      assert.equal(released, LIMIT, `the backends released ${released} requests`);
      assert.equal(late.length, LIMIT, `${late.length} answers came after the release`);
      assert.equal(lateOk, LIMIT, `of the ${LIMIT} admitted requests ${lateOk} got a 200 from a backend; first other: ${JSON.stringify(late.find((r) => r.status !== 200))}`);

      // Normal service right after: the in-flight count is back to 0 and requests go through.
      for (const s of sockets) s.destroy();
      await waitFor(async () => metric(await scrapeMetrics(sc.proxy), 'skein_proxy_requests_in_flight', { service: sc.service }) === 0, { timeoutMs: 10_000, what: 'the in-flight gauge to drop to 0' });
      // Reported, not asserted: with nothing in flight every open upstream connection should be an idle,
      // reusable one (see the report: connections of requests that outlast the idle timeout are orphaned).
      const mAfter = await scrapeMetrics(sc.proxy);
      const upstreamOpen = metric(mAfter, 'skein_proxy_upstream_connections', { service: sc.service });
      const upstreamIdle = metric(mAfter, 'skein_proxy_upstream_idle_connections');
      const after = await Promise.all(Array.from({ length: 20 }, (_, i) => httpGet(sc.port, `/after/${i}`, { headers: { host: sc.service } })));
      const afterOk = after.filter((r) => r.status === 200).length;
      const rssAfter = rssMiB(pid);
      rssPeak = Math.max(rssPeak, rssAfter);
      clearInterval(rssTimer);
      rssTimer = null;
      t.diagnostic(
        `e: ${N} requests on ${N} connections: ${N - LIMIT} refused 503 SKEIN_E_UPSTREAM_OVERFLOW and ${h.held} held, all in ${secs(tAllIn - tBurst)}; ` +
          `${lateOk} got 200 after the release (${secs(tAnswered - tRelease)}); ${afterOk}/20 ok right after; upstream connections open ${upstreamOpen}, idle in the pools ${upstreamIdle}; ` +
          `proxy VmRSS before ${rssBefore.toFixed(1)} MiB, while held ${rssHeld.toFixed(1)} MiB, peak ${rssPeak.toFixed(1)} MiB, after ${rssAfter.toFixed(1)} MiB; ulimit -n ${nofile}; scenario ${secs(performance.now() - t0)}`,
      );
      assert.equal(afterOk, 20, `after the release: ${after.map((r) => `${r.status} ${r.body.slice(0, 200)}`).join('; ')}`);
      assert.ok(rssPeak < 400, `the proxy's RSS reached ${rssPeak.toFixed(1)} MiB`);
    } finally {
      if (rssTimer !== null) clearInterval(rssTimer);
      for (const s of sockets) s.destroy();
      await sc.stop();
    }
  });
});
