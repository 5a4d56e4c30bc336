/**
 * Raw TCP through the mesh (issue 17 §2), end to end over mTLS: a caller's `skein proxy` (service
 * web) with a pinned outbound listener per tcp service, and a callee's `skein proxy` with an
 * inbound listener in front of each app. Apps are plain node:net servers: an echo, one that speaks
 * first (as MySQL does), one that answers only after the client's FIN, a 64 MiB sender, and a
 * silent one that never finishes a TLS handshake. Every stream goes client -> caller proxy ==mTLS==>
 * callee proxy -> app.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { api, closedPort, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, mintJoinToken, registerInstance, scrapeMetrics, startMeshProxy, type ProxyProcess } from './proxy-helpers.js';
import { connect as tlsConnect } from 'node:tls';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';
import { MESH_ALPN, MESH_ALPN_STATUS, MESH_ALPNS } from '../src/api/mtls.js';
import { upFromText } from './mesh-helpers.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let caller: ProxyProcess;
let callee: ProxyProcess;
/** The caller's access log (--access-log). */
let accessLogPath: string;
/** Connections each app accepted, by app name. */
const accepted: Record<string, number> = {};

async function listen(name: string, onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  accepted[name] = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted[name]!++;
    s.on('error', () => s.destroy());
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
  });
  return { server, port: (server.address() as { port: number }).port };
}

/** Echoes every byte and ends when the client ends. */
const echo = (tag: string) => (s: Socket) => {
  s.write(`${tag}:`);
  s.pipe(s);
};

/** What one client connection saw. */
interface Seen {
  data: Buffer;
  /** The proxy closed it cleanly (FIN), not with a reset. */
  ended: boolean;
  error: string | null;
  /** ms from connect to close. */
  ms: number;
}

/**
 * A client connection to `port`: writes `send` (if any), ends its side when `end`, and resolves
 * with everything it read once the connection is closed, or when `until` says it has enough.
 */
function client(port: number, o: { send?: string | Buffer; end?: boolean; until?: (data: Buffer) => boolean; timeoutMs?: number } = {}): Promise<Seen> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = createConnection({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let ended = false;
    let error: string | null = null;
    const done = () => resolve({ data: Buffer.concat(chunks), ended, error, ms: performance.now() - t0 });
    s.setTimeout(o.timeoutMs ?? 10_000, () => {
      error = 'client timeout';
      s.destroy();
    });
    s.on('connect', () => {
      if (o.send !== undefined) s.write(o.send);
      if (o.end === true) s.end();
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (o.until?.(Buffer.concat(chunks)) === true) s.destroy();
    });
    s.on('end', () => {
      ended = true;
      s.end();
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', done);
  });
}

const port = (workload: string) => caller.workload(workload).outbound!.port;
const metrics = (p: ProxyProcess) => scrapeMetrics(p);

/** Resident memory of a process (bytes), from /proc. */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

const LABEL = { labels: { 'skein.io/inbound-proxy': 'true' } };
const BIG = 64 * 1024 * 1024;

before(async () => {
  const dir = await tempDir('skein-tcp-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());

  const apps = {
    'db-1': await listen('db-1', echo('db-1')),
    'db-2': await listen('db-2', echo('db-2')),
    'greet-1': await listen('greet-1', (s) => {
      s.write('220 greet ready\r\n');
      s.pipe(s);
    }),
    'half-1': await listen('half-1', (s) => {
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      // Answers only once the client has finished (its FIN): the answer must still get back.
      s.on('end', () => s.end(`got ${Buffer.concat(got).length} bytes: ${Buffer.concat(got).toString().toUpperCase()}`));
    }),
    'big-1': await listen('big-1', (s) => {
      const chunk = Buffer.alloc(256 * 1024, 0x61);
      let sent = 0;
      const pump = () => {
        while (sent < BIG) {
          sent += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    }),
    'lim-1': await listen('lim-1', echo('lim-1')),
    'idle-1': await listen('idle-1', echo('idle-1')),
    'meter-1': await listen('meter-1', echo('meter-1')),
    'stuck-1': await listen('stuck-1', echo('stuck-1')),
    'vault-1': await listen('vault-1', echo('vault-1')),
    'down-1': await listen('down-1', echo('down-1')),
    'obs-1': await listen('obs-1', echo('obs-1')),
  };
  // Live inbound listeners whose apps are down (nothing listens on their app ports).
  const appsDown = ['down-2', 'nope-1'];
  // Takes connections and never answers: a TLS handshake with it never completes.
  const silent = await listen('silent', () => undefined);

  const services: Record<string, object> = {
    db: { balancer: { kind: 'round-robin' } },
    greet: {},
    half: {},
    big: {},
    lim: { limits: { maxConnections: 2 } },
    idle: { timeouts: { tcpIdle: '400ms' } },
    meter: {},
    stuck: { balancer: { kind: 'round-robin' }, timeouts: { connect: '300ms' }, breaker: { enabled: false }, outlierDetection: { enabled: false } },
    void: { timeouts: { connect: '300ms' }, retries: { maxRetries: 0 } },
    vault: {},
    // Two replicas, one whose app is down behind a live proxy: ejected after 3 refusals in a row.
    down: { balancer: { kind: 'round-robin' }, outlierDetection: { consecutiveLocalOriginFailure: 3 }, breaker: { enabled: false }, panicThreshold: 0 },
    obs: {},
    nope: { retries: { maxRetries: 0 } },
  };
  for (const [name, def] of Object.entries(services)) {
    const r = await api(cp.http, 'PUT', `/v1/services/${name}`, { protocol: 'tcp', ...def });
    assert.ok([200, 201].includes(r.status), JSON.stringify(r.body));
  }
  // greet's listeners are not told their protocol: they take it from the service's definition.
  const inbound = Object.entries(apps).map(([id, a]) => `name=${id},service=${id.split('-')[0]},inbound=127.0.0.1:0,app=127.0.0.1:${a.port}${id === 'greet-1' ? '' : ',protocol=tcp'}`);
  for (const id of appsDown) inbound.push(`name=${id},service=${id.split('-')[0]},inbound=127.0.0.1:0,app=127.0.0.1:${await closedPort()},protocol=tcp`);
  callee = await startMeshProxy(cp.http, 'callee', [...new Set([...Object.keys(apps), ...appsDown].map((id) => id.split('-')[0] as string))], inbound);
  cleanups.push(() => callee.stop());
  caller = await startMeshProxy(
    cp.http,
    'caller',
    ['web'],
    [
      ...Object.keys(services).map((s) => `name=${s}-port,service=web,outbound=127.0.0.1:0,pin=${s}${s === 'greet' ? '' : ',protocol=tcp'}`),
      // The caller's HTTP_PROXY: CONNECT to a tcp service carries an opaque stream.
      'name=web-out,service=web,outbound=127.0.0.1:0',
    ],
    ['--access-log', (accessLogPath = join(dir.path, 'caller-access.log'))],
  );
  cleanups.push(() => caller.stop());
  // The apps-down replicas first: once a later one is routed to, the caller knows them too.
  for (const id of [...appsDown, ...Object.keys(apps)]) await registerInstance(cp.http, id.split('-')[0] as string, id, callee.workload(id).inbound!.port, LABEL);
  // A replica whose inbound listener is gone (its host died), and one that never finishes a handshake.
  await registerInstance(cp.http, 'db', 'db-3', await closedPort(), LABEL);
  await registerInstance(cp.http, 'stuck', 'stuck-2', silent.port, LABEL);
  await registerInstance(cp.http, 'void', 'void-1', silent.port, LABEL);
  await api(cp.http, 'PUT', '/v1/services/vault/policies/no-web', { action: 'DENY', rules: [{ from: { services: ['web'] } }] });
  // Until the caller routes to every service.
  for (const s of ['db', 'greet', 'meter', 'obs']) {
    await waitFor(async () => (await client(port(`${s}-port`), { send: 'x', until: (d) => d.toString().endsWith('x') || d.toString().includes('ready'), timeoutMs: 2000 })).error === null, { timeoutMs: 15_000, what: `${s} through the caller` });
  }
});

describe('raw TCP through two proxies with mTLS', { timeout: 120_000 }, () => {
  test('an echo: bytes both ways, per-connection balancing over the replicas, the hop between proxies is mTLS', async () => {
    const mtlsBefore = metricValue(await metrics(callee), 'skein_proxy_inbound_connections_total', { kind: 'mtls' }) ?? 0;
    const before = { one: accepted['db-1']!, two: accepted['db-2']! };
    const tags = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await client(port('db-port'), { send: `hello ${i}`, end: true });
      assert.equal(r.error, null);
      assert.equal(r.ended, true);
      const m = /^(db-\d):hello (\d)$/.exec(r.data.toString());
      assert.ok(m !== null, r.data.toString());
      assert.equal(m[2], String(i));
      tags.add(m[1] as string);
    }
    assert.deepEqual([...tags].sort(), ['db-1', 'db-2'], 'each connection picks its endpoint');
    assert.equal(accepted['db-1']! - before.one + accepted['db-2']! - before.two, 6);
    const mtls = metricValue(await metrics(callee), 'skein_proxy_inbound_connections_total', { kind: 'mtls' }) ?? 0;
    assert.ok(mtls - mtlsBefore >= 6, `every stream reached the callee over mTLS (${mtls - mtlsBefore})`);
  });

  test('a replica whose listener is gone: the connect is retried on another endpoint before any byte, and every connection succeeds', async () => {
    const retries = async () => metricValue(await metrics(caller), 'skein_proxy_retries_total', { service: 'db', reason: 'connect-failure' }) ?? 0;
    const r0 = await retries();
    // Round robin over three endpoints: six connections pick the dead one at least once (until it is ejected).
    for (let i = 0; i < 6; i++) {
      const r = await client(port('db-port'), { send: 'ping', end: true });
      assert.equal(r.error, null);
      assert.match(r.data.toString(), /^db-[12]:ping$/);
    }
    assert.ok((await retries()) - r0 >= 1, 'a connect failure was retried');
  });

  test('CONNECT to a tcp service through the HTTP outbound listener: answered 200, then one opaque stream (bytes sent with the CONNECT head included; a server that speaks first is heard)', async () => {
    const ok = 'HTTP/1.1 200 Connection Established\r\n\r\n';
    const greet = await client(port('web-out'), { send: 'CONNECT greet:3306 HTTP/1.1\r\nHost: greet:3306\r\n\r\n', until: (d) => d.toString().endsWith('ready\r\n'), timeoutMs: 5000 });
    assert.equal(greet.error, null);
    assert.equal(greet.data.toString(), `${ok}220 greet ready\r\n`);
    const before = accepted['db-1']! + accepted['db-2']!;
    const db = await client(port('web-out'), { send: 'CONNECT db.service.skein:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nping', until: (d) => d.toString().endsWith('ping'), timeoutMs: 5000 });
    assert.equal(db.error, null);
    assert.match(db.data.toString(), new RegExp(`^${ok.replace(/\r\n/g, '\\r\\n')}db-[12]:ping$`));
    assert.equal(accepted['db-1']! + accepted['db-2']! - before, 1, 'one stream to one replica');
  });

  test('a server that speaks first: its greeting reaches the client with nothing sent (no protocol detection waits for bytes)', async () => {
    const r = await client(port('greet-port'), { until: (d) => d.includes('\r\n'), timeoutMs: 5000 });
    assert.equal(r.error, null, 'the greeting came without the client sending a byte');
    assert.equal(r.data.toString(), '220 greet ready\r\n');
    // Below the callee's first-byte wait (headersTimeout, 10 s) by far: nothing waited for the client.
    assert.ok(r.ms < 3000, `${r.ms} ms`);
  });

  test('a peer proxy of an older release (ALPN skein-mesh/1 only) gets the app\'s bytes with no status before them; one that offers skein-mesh/2 gets the status first', async () => {
    const kp = await generateKeyPair();
    const r = await api(cp.http, 'POST', '/v1/ca/certificates', { service: 'web', csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${await mintJoinToken(cp.http, 'old-peer', ['web'])}` });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const leaf = { key: kp.privateKeyPem, cert: [r.body.certificate, ...r.body.chain].join(''), ca: r.body.roots as string[] };
    const first = (alpn: string[]) =>
      new Promise<{ alpn: string | false; bytes: Buffer }>((resolve, reject) => {
        const t = tlsConnect({ host: '127.0.0.1', port: callee.workload('greet-1').inbound!.port, ...leaf, ALPNProtocols: alpn, rejectUnauthorized: false, checkServerIdentity: () => undefined });
        let got = Buffer.alloc(0);
        t.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d]);
          if (got.includes('\r\n')) {
            resolve({ alpn: t.alpnProtocol ?? false, bytes: got });
            t.destroy();
          }
        });
        t.on('error', reject);
        t.setTimeout(5000, () => t.destroy(new Error('no greeting within 5 s')));
      });
    const old = await first([MESH_ALPN]);
    assert.equal(old.alpn, MESH_ALPN);
    assert.equal(old.bytes.toString('latin1'), '220 greet ready\r\n', 'no status byte for an older peer');
    const now = await first([...MESH_ALPNS]);
    assert.equal(now.alpn, MESH_ALPN_STATUS);
    assert.equal(now.bytes.toString('latin1'), '\x06220 greet ready\r\n', 'ACK, then the greeting');
  });

  test("half-close: the client's FIN reaches the app, and the app's answer still comes back", async () => {
    const r = await client(port('half-port'), { send: 'abc', end: true });
    assert.equal(r.error, null);
    assert.equal(r.data.toString(), 'got 3 bytes: ABC');
    assert.equal(r.ended, true);
  });

  test('connect timeout: an endpoint that never finishes its handshake is given up after timeouts.connect and the connection retried on the other', async () => {
    const before = accepted['silent']!;
    for (let i = 0; i < 4; i++) {
      const r = await client(port('stuck-port'), { send: 'ping', end: true });
      assert.equal(r.error, null);
      assert.equal(r.data.toString(), 'stuck-1:ping');
    }
    assert.ok(accepted['silent']! - before >= 1, 'the silent endpoint was tried');
    const text = await metrics(caller);
    assert.ok((metricValue(text, 'skein_proxy_retries_total', { service: 'stuck', reason: 'connect-failure' }) ?? 0) >= 1);
  });

  test('connect timeout with no other endpoint: the client is reset, and the error is logged and counted with its code', async () => {
    const r = await client(port('void-port'), { send: 'ping' });
    assert.equal(r.data.length, 0);
    assert.equal(r.error, 'ECONNRESET', 'a reset, not a clean close');
    assert.ok(r.ms >= 290, `given up after timeouts.connect (${r.ms} ms)`);
    await waitFor(async () => metricValue(await metrics(caller), 'skein_proxy_tcp_connections_total', { workload: 'void-port', service: 'void', result: 'SKEIN_E_UPSTREAM_CONNECT' }) === 1, { what: 'the failed stream counted' });
    const line = caller.logs.find((l) => l.includes('"code":"SKEIN_E_UPSTREAM_CONNECT"') && l.includes('void'));
    assert.ok(line !== undefined, caller.logs.slice(-5).join('\n'));
    assert.match(line, /TLS handshake timeout after 300 ms/);
    assert.equal(metricValue(await metrics(caller), 'skein_proxy_errors_total', { direction: 'outbound', code: 'SKEIN_E_UPSTREAM_CONNECT' }), 1);
  });

  test('idle timeout: a stream with no byte either way for timeouts.tcpIdle is closed', async () => {
    const r = await client(port('idle-port'), { send: 'hi' });
    assert.equal(r.error, null);
    assert.equal(r.data.toString(), 'idle-1:hi');
    assert.ok(r.ms >= 390 && r.ms < 5000, `closed after ${r.ms} ms`);
  });

  test('connection limits: the service allows 2 connections from the proxy; a third is reset with SKEIN_E_UPSTREAM_OVERFLOW while they are open', async () => {
    const open: Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = createConnection({ host: '127.0.0.1', port: port('lim-port') });
      open.push(s);
      await new Promise<void>((r) => s.once('data', () => r()));
    }
    const third = await client(port('lim-port'), { send: 'x' });
    assert.equal(third.error, 'ECONNRESET');
    assert.equal(third.data.length, 0);
    await waitFor(async () => metricValue(await metrics(caller), 'skein_proxy_tcp_connections_total', { service: 'lim', result: 'SKEIN_E_UPSTREAM_OVERFLOW' }) === 1, { what: 'the overflow counted' });
    for (const s of open) s.destroy();
    // Room again once they closed.
    await waitFor(async () => (await client(port('lim-port'), { send: 'y', end: true })).data.toString() === 'lim-1:y', { what: 'a connection after the others closed' });
  });

  test('authorization by service identity: a DENY for web resets its streams before the app sees them', async () => {
    const before = accepted['vault-1']!;
    const r = await client(port('vault-port'), { send: 'secret' });
    assert.equal(r.data.length, 0, 'closed without a byte');
    assert.equal(accepted['vault-1'], before, 'the app never got the connection');
    await waitFor(async () => (metricValue(await metrics(callee), 'skein_proxy_authz_decisions_total', { service: 'vault', outcome: 'deny', policy: 'no-web' }) ?? 0) >= 1, { what: 'the deny counted' });
    assert.ok(callee.logs.some((l) => l.includes('"code":"SKEIN_E_AUTHZ_DENIED"') && l.includes('no-web')));
  });

  test('metrics: bytes each way, the result and the duration of every stream, exact on both proxies', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await client(port('meter-port'), { send: 'x'.repeat(100 * (i + 1)), end: true });
      assert.equal(r.data.length, 'meter-1:'.length + 100 * (i + 1));
    }
    // Three readiness probes of the before() hook sent one byte each and read "meter-1:x".
    const streams = await waitFor(
      async () => {
        const text = await metrics(caller);
        const n = metricValue(text, 'skein_proxy_tcp_connections_total', { workload: 'meter-port', direction: 'outbound', service: 'meter', result: 'established' }) ?? 0;
        return metricValue(text, 'skein_proxy_tcp_connections_open', { workload: 'meter-port' }) === 0 ? n : null;
      },
      { what: 'every meter stream closed' },
    );
    assert.ok(streams !== null);
    const probes = streams - 3;
    assert.ok(probes >= 1);
    const text = await metrics(caller);
    const lb = { workload: 'meter-port', direction: 'outbound', service: 'meter' };
    assert.equal(metricValue(text, 'skein_proxy_tcp_received_bytes_total', lb), 600 + probes);
    assert.equal(metricValue(text, 'skein_proxy_tcp_sent_bytes_total', lb), 600 + 3 * 'meter-1:'.length + probes * 'meter-1:x'.length);
    assert.equal(metricValue(text, 'skein_proxy_tcp_connection_duration_seconds_count', lb), streams);
    const inText = await metrics(callee);
    const ib = { workload: 'meter-1', direction: 'inbound', service: 'meter' };
    await waitFor(async () => metricValue(await metrics(callee), 'skein_proxy_tcp_connections_total', { ...ib, result: 'established' }) === streams, { what: 'the callee counted as many streams' });
    assert.equal(metricValue(inText, 'skein_proxy_tcp_received_bytes_total', ib), 600 + probes);
  });

  test("an endpoint whose app is down behind a live proxy: the peer's refusal fails the attempt, which is retried on the other replica; every connection lands on the live one, and the down one is ejected", async () => {
    const m0 = await metrics(caller);
    const retried0 = metricValue(m0, 'skein_proxy_retries_total', { service: 'down', reason: 'refused-stream' }) ?? 0;
    const established0 = metricValue(m0, 'skein_proxy_tcp_connections_total', { workload: 'down-port', result: 'established' }) ?? 0;
    const before = accepted['down-1']!;
    for (let i = 0; i < 12; i++) {
      const r = await client(port('down-port'), { send: `ping ${i}`, end: true });
      assert.equal(r.error, null);
      assert.equal(r.data.toString(), `down-1:ping ${i}`, 'not a byte of the refusal reaches the client');
      assert.equal(r.ended, true);
    }
    assert.equal(accepted['down-1']! - before, 12, 'every connection reached the live app');
    await waitFor(async () => metricValue(await metrics(caller), 'skein_proxy_tcp_connections_total', { workload: 'down-port', result: 'established' }) === established0 + 12, { what: 'the 12 streams counted as established' });
    const text = await metrics(caller);
    // Round robin sends down-2 a connection every other one or so: refused by its inbound proxy
    // (its app is down) and retried on down-1, three times in a row, and then it is ejected.
    assert.equal((metricValue(text, 'skein_proxy_retries_total', { service: 'down', reason: 'refused-stream' }) ?? 0) - retried0, 3);
    assert.equal(metricValue(text, 'skein_proxy_outlier_events_total', { service: 'down', event: 'eject' }), 1);
    const stats = (await api(caller.admin, 'GET', '/stats')).body as { events: Array<{ type: string; service: string; instance: string }>; series: Array<{ workload: string; instance: string; requests: number; failures: number }> };
    assert.deepEqual(
      stats.events.filter((e) => e.service === 'down').map((e) => [e.type, e.instance]),
      [['eject', 'down-2']],
    );
    // The callee's inbound listener of down-2 refused each of them itself.
    const inText = await metrics(callee);
    assert.equal(metricValue(inText, 'skein_proxy_tcp_connections_total', { workload: 'down-2', direction: 'inbound', service: 'down', result: 'SKEIN_E_UPSTREAM_CONNECT' }), 3);
    // The caller's golden signals: 12 streams to down-1, all of them successes (the refusals were retried).
    const s1 = stats.series.filter((x) => x.workload === 'down-port');
    assert.deepEqual(s1.map((x) => [x.instance, x.requests, x.failures]), [['down-1', 12, 0]]);
  });

  test('a stream whose only endpoint has its app down: the client is reset, and the error names the peer proxy and its reason', async () => {
    const r = await client(port('nope-port'), { send: 'hello' });
    assert.equal(r.data.length, 0);
    assert.equal(r.error, 'ECONNRESET');
    await waitFor(() => caller.logs.some((l) => l.includes('"code":"SKEIN_E_UPSTREAM_CONNECT"') && l.includes('nope-1')), { what: "the caller's log line" });
    const line = caller.logs.find((l) => l.includes('"code":"SKEIN_E_UPSTREAM_CONNECT"') && l.includes('nope-1')) as string;
    assert.match(line, /the inbound proxy of nope-1 at 127\.0\.0\.1:\d+ refused the stream: could not connect to nope-1/);
    assert.equal(metricValue(await metrics(caller), 'skein_proxy_tcp_connections_total', { workload: 'nope-port', result: 'SKEIN_E_UPSTREAM_CONNECT' }), 1);
  });

  test("observability: a stream ends in one access-log line and one tap record, and counts in the golden signals as a request whose answer is its connection to the app", async () => {
    type Series = { workload: string; instance: string; route: string; source: string; requests: number; failures: number; statuses: Record<string, number>; mtls: number; latency: { counts: number[]; sum: number } };
    const series = async (workload: string) => ((await api(caller.admin, 'GET', '/stats')).body as { series: Series[] }).series.filter((x) => x.workload === workload);
    const [before] = await series('obs-port');
    const n0 = before?.requests ?? 0;
    const tapped = await fetch(`${caller.admin}/tap?service=obs`);
    assert.equal(tapped.status, 200);
    const reader = (tapped.body as ReadableStream<Uint8Array>).getReader();
    await waitFor(async () => ((await api(caller.admin, 'GET', '/debug/taps')).body as { open: number }).open === 1, { what: 'the tap open' });
    const r = await client(port('obs-port'), { send: 'hello', end: true });
    assert.equal(r.data.toString(), 'obs-1:hello');
    // The tap: one record when the stream closed.
    let text = '';
    while (!text.includes('\n')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    await reader.cancel();
    const t = JSON.parse(text.slice(0, text.indexOf('\n'))) as Record<string, unknown>;
    const obsPort = callee.workload('obs-1').inbound!.port;
    assert.deepEqual(
      { ...t, time: typeof t['time'], latencyMs: typeof t['latencyMs'], durationMs: typeof t['durationMs'], proxy: typeof t['proxy'] },
      { time: 'string', direction: 'outbound', workload: 'obs-port', source: 'web', destination: 'obs', route: 'default', method: 'TCP', path: '', status: 200, latencyMs: 'number', instance: 'obs-1', requestId: null, error: null, durationMs: 'number', receivedBytes: 5, sentBytes: 11, proxy: 'string' },
    );
    assert.ok((t['latencyMs'] as number) <= (t['durationMs'] as number), 'the time to connect is part of the stream\'s life');
    // The access log: one line, the request's fields that apply and the stream's own.
    const line = (await waitFor(
      () => {
        const lines = readFileSync(accessLogPath, 'utf8').split('\n').filter((l) => l.includes('"workload":"obs-port"') && l.includes('"receivedBytes":5,'));
        return lines.length === 1 ? (JSON.parse(lines[0] as string) as Record<string, unknown>) : null;
      },
      { what: 'the access-log line of the stream' },
    )) as Record<string, unknown>;
    assert.deepEqual(
      { ...line, time: typeof line['time'], durationMs: typeof line['durationMs'], connectMs: typeof line['connectMs'] },
      { msg: 'access', time: 'string', workload: 'obs-port', direction: 'outbound', client: '127.0.0.1', caller: 'web', method: 'TCP', path: '', service: 'obs', route: 'default', status: 200, durationMs: 'number', connectMs: 'number', upstream: `obs-1 127.0.0.1:${obsPort}`, attempts: 1, error: null, receivedBytes: 5, sentBytes: 11 },
    );
    assert.ok((line['connectMs'] as number) <= (line['durationMs'] as number));
    // The golden signals (/stats, what skein stat and the dashboard read): one more request, a 200 over mTLS.
    const [after] = await series('obs-port');
    assert.ok(after !== undefined);
    assert.deepEqual({ instance: after.instance, route: after.route, source: after.source, failures: after.failures }, { instance: 'obs-1', route: 'default', source: 'web', failures: 0 });
    assert.equal(after.requests - n0, 1);
    assert.deepEqual(after.statuses, { 200: after.requests });
    assert.equal(after.mtls, after.requests);
    assert.equal(after.latency.counts.reduce((a, b) => a + b, 0), after.requests);
    // A stream that failed (the test before: nope's only app is down) is a failed request with its code's status.
    const nope = await series('nope-port');
    assert.deepEqual(nope.map((x) => [x.instance, x.requests, x.failures, x.statuses]), [['nope-1', 1, 1, { 502: 1 }]]);
    const failed = readFileSync(accessLogPath, 'utf8').split('\n').filter((l) => l.includes('"workload":"nope-port"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      failed.map((l) => [l['status'], l['error'], l['connectMs'], l['attempts'], l['receivedBytes'], l['sentBytes']]),
      [[502, 'SKEIN_E_UPSTREAM_CONNECT', null, 1, 0, 0]],
    );
  });

  test("back-pressure: 64 MiB to a slow reader go through, neither proxy reading ahead of it by more than socket buffers", async () => {
    const pids = [caller.child.pid as number, callee.child.pid as number];
    const base = pids.map(rssOf);
    const peak = [...base];
    let got = 0;
    /** The most either proxy had read from its upstream beyond what the client had read. */
    const ahead = [0, 0];
    let sampling = true;
    const sample = async () => {
      while (sampling) {
        const seen = got;
        const [a, b] = await Promise.all([metrics(caller), metrics(callee)]);
        const read = [metricValue(a, 'skein_proxy_tcp_sent_bytes_total', { workload: 'big-port' }) ?? 0, metricValue(b, 'skein_proxy_tcp_sent_bytes_total', { workload: 'big-1' }) ?? 0];
        read.forEach((r, i) => (ahead[i] = Math.max(ahead[i] as number, r - seen)));
        pids.forEach((p, i) => (peak[i] = Math.max(peak[i] as number, rssOf(p))));
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const sampler = sample();
    const before = [metricValue(await metrics(caller), 'skein_proxy_tcp_sent_bytes_total', { workload: 'big-port' }) ?? 0];
    assert.equal(before[0], 0, 'the first stream of big-port');
    try {
      await new Promise<void>((resolve, reject) => {
        const s = createConnection({ host: '127.0.0.1', port: port('big-port') });
        s.on('data', (d: Buffer) => {
          got += d.length;
          // A slow reader: a pause after every read.
          s.pause();
          setTimeout(() => s.resume(), 2);
        });
        s.on('end', () => resolve());
        s.on('error', reject);
        s.setTimeout(60_000, () => reject(new Error(`stalled at ${got} bytes`)));
      });
    } finally {
      sampling = false;
      await sampler;
    }
    assert.equal(got, BIG);
    const mib = (n: number) => (n / 1048576).toFixed(1);
    // Socket buffers (the kernel's, a few MiB on loopback, and a stream's high-water mark) are all
    // a proxy may hold: without back-pressure either would read the 64 MiB as fast as the app sends.
    for (const a of ahead) assert.ok(a < 16 * 1048576, `read ahead of the client by ${mib(a)} MiB (caller, callee: ${ahead.map(mib).join(', ')})`);
    const growth = peak.map((p, i) => p - (base[i] as number));
    // RSS includes garbage not yet collected (the 64 MiB passed through in Buffers): bounded below the stream.
    for (const g of growth) assert.ok(g < BIG, `RSS grew ${mib(g)} MiB (caller, callee: ${growth.map(mib).join(', ')})`);
  });
});

describe('skein up: a service of protocol tcp', { timeout: 60_000 }, () => {
  test("its service port carries streams to its replicas over the mesh proxy's mTLS: a greeting first, then an echo, per-connection balancing", async () => {
    // It handles its sockets' errors, as a server must: the readiness probe (a TCP connect) closes
    // with the greeting unread, which resets the connection.
    const app = "require('node:net').createServer((s) => { s.on('error', () => s.destroy()); s.write(process.env.SKEIN_INSTANCE_ID + ' ready\\n'); s.pipe(s); }).listen(Number(process.env.PORT), '127.0.0.1')";
    const mesh = await upFromText('skein-up-tcp-', `kind: Mesh\nname: tcp\nservices:\n  db:\n    command: ${JSON.stringify(process.execPath)}\n    args: ["-e", ${JSON.stringify(app)}]\n    replicas: 2\n    protocol: tcp\n    balancer: { kind: round-robin }\n`);
    cleanups.push(() => mesh.stop());
    const def = await api(mesh.up.control, 'GET', '/v1/services/db');
    assert.equal(def.body.definition.protocol, 'tcp', 'the runtime put the Service resource with its protocol');
    const ids = new Set<string>();
    let seen: unknown = null;
    await waitFor(async () => (seen = (await api(mesh.up.control, 'GET', '/v1/services/db')).body).healthy === 2, { timeoutMs: 20_000, what: 'both replicas registered' }).catch((e: Error) =>
      assert.fail(`${e.message}: ${JSON.stringify(seen)}\n${mesh.up.logs()}`),
    );
    // Until the proxy routes to them (its view follows the registry within moments).
    let last: Seen | null = null;
    await waitFor(async () => (last = await client(mesh.port, { until: (d) => d.toString().endsWith(' ready\n'), timeoutMs: 2000 })).error === null && last.data.length > 0, { timeoutMs: 20_000, what: 'the service port to greet' }).catch((e: Error) =>
      assert.fail(`${e.message}: last ${JSON.stringify(last === null ? null : { ...last, data: (last as Seen).data.toString() })}\n${mesh.up.logs()}`),
    );
    /** One connection: the greeting comes with nothing sent, then the echo of what follows; the replica that answered. */
    const greet = async (): Promise<string> => {
      const greeting = await new Promise<string>((resolve, reject) => {
        const s = createConnection({ host: '127.0.0.1', port: mesh.port });
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString();
          // Nothing was sent: the greeting came first; then an echo of what follows it.
          if (got.endsWith(' ready\n')) s.write('ping');
          if (got.endsWith('ping')) {
            s.destroy();
            resolve(got);
          }
        });
        s.on('error', reject);
        // Closed before the echo (a replica whose app was not listening yet: the callee's proxy
        // closes the stream it had accepted): rejected, so waitFor tries again.
        s.on('close', () => reject(new Error(`closed before the echo (got ${JSON.stringify(got)})`)));
        s.setTimeout(5000, () => {
          s.destroy();
          reject(new Error(`no answer (got ${JSON.stringify(got)})`));
        });
      });
      const m = /^(db-\S+) ready\nping$/.exec(greeting);
      assert.ok(m !== null, greeting);
      return m[1] as string;
    };
    // The proxy's view follows the registry by a moment: connect until both replicas answered (round robin).
    await waitFor(
      async () => {
        ids.add(await greet());
        return ids.size === 2;
      },
      { timeoutMs: 10_000, what: `both replicas to take connections (so far: ${[...ids].join(', ')})` },
    );
    const text = await (await fetch(`http://${mesh.up.admin}/metrics`)).text();
    assert.ok((metricValue(text, 'skein_proxy_inbound_connections_total', { kind: 'mtls' }) ?? 0) >= 2, 'the hop to each replica was mTLS (skein up: strict)');
    assert.equal(metricValue(text, 'skein_proxy_tcp_connections_total', { workload: 'db-service-port', direction: 'outbound', service: 'db', result: 'SKEIN_E_UPSTREAM_CONNECT' }), undefined);
  });
});
