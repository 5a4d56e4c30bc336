/**
 * Taps that never read, against real processes (issue 11 §5, §7): a control plane, proxy A (an
 * outbound listener "client" and an inbound one in front of the app, instance web-1 of "web";
 * `--max-taps 4 --tap-redact x-customer-ref`) and proxy B (an outbound listener only,
 * `--tap-stall-timeout 1s`). A tap whose HTTP client never reads holds at most its buffer and
 * counts what it dropped; taps over the proxy's or the relay's cap are refused with
 * SKEIN_E_TOO_MANY_TAPS; a stalled tap is ended and counted; `skein tap --headers` shows the new
 * default redactions and the configured ones.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http, { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { SKEIN_BIN, adminTokenOf, api, mapLimit, skein, startControl, waitFor, type ControlProcess } from './helpers.js';
import { SHOP } from './mesh-helpers.js';
import { formatMissed, missedCount } from '../src/cli/monitor.js';
import { registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';
import { PROXY_TAP_LIMITS, RELAY_TAP_LIMITS } from '../src/api/tap.js';
import { forEachLine } from '../src/core/lines.js';

let cp: ControlProcess;
let a: ProxyProcess;
let b: ProxyProcess;
let app: Server;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const BODY = 'b'.repeat(4096);

/** The app: echoes the request body. */
function startApp(): Promise<Server> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

/** A POST of `body` to "web" through an outbound listener (node:http: fetch cannot set Host). */
function post(port: number, body: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/tapped', agent, headers: { host: 'web', 'content-length': Buffer.byteLength(body), ...headers }, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(body);
  });
}

const outPort = (p: ProxyProcess) => p.workload(p === a ? 'client' : 'client-b').outbound!.port;
const postMany = (p: ProxyProcess, n: number) => mapLimit(Array.from({ length: n }), 8, () => post(outPort(p), BODY));

/** A tap whose client never reads: the response is paused as soon as its head arrives. */
interface HeldTap {
  res: IncomingMessage;
  /** Resolves when the connection is closed (seen only once the client reads again: the FIN comes after the data). */
  closed: Promise<void>;
}

async function holdTap(url: string): Promise<HeldTap> {
  // A tap with headers or bodies needs a token of scope "tap" (or admin), even on loopback.
  const token = await adminTokenOf(new URL(url).origin);
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: token === null ? {} : { authorization: `Bearer ${token}` } }, (res) => {
      res.pause();
      res.on('error', () => undefined); // a tap cut by the server ends without its last chunk
      const closed = new Promise<void>((done) => res.socket.once('close', () => done()));
      resolve({ res, closed });
    });
    req.on('error', reject);
  });
}

/** Opens a tap and leaves at once: its status, `x-skein-error` and body (JSON when refused; '' when it streams). */
async function tryTap(url: string): Promise<{ status: number; error: string | null; body: any }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  const refused = res.status !== 200;
  const body = refused ? await res.json() : '';
  if (!refused) await res.body?.cancel();
  return { status: res.status, error: res.headers.get('x-skein-error'), body };
}

const debugTaps = async (p: ProxyProcess) => (await api(p.admin, 'GET', '/debug/taps')).body;

before(async () => {
  cp = await startControl({ dataDir: 'none', args: ['--dns', 'off'] });
  app = await startApp();
  const appPort = (app.address() as AddressInfo).port;
  a = await startProxy({
    control: cp.http,
    workloads: ['name=client,outbound=127.0.0.1:0', `name=web-1,service=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`],
    args: ['--id', 'tap-limits-a', '--max-taps', '4', '--tap-redact', 'x-customer-ref'],
  });
  b = await startProxy({ control: cp.http, workloads: ['name=client-b,outbound=127.0.0.1:0'], args: ['--id', 'tap-limits-b', '--tap-stall-timeout', '1s'] });
  await registerInstance(cp.http, 'web', 'web-1', a.workload('web-1').inbound!.port);
  await waitForProxyReady(a);
  await waitForProxyReady(b);
  await waitFor(async () => (await post(outPort(a), 'warm')) === 200 && (await post(outPort(b), 'warm')) === 200, { what: 'web reachable through both proxies' });
});

after(async () => {
  agent.destroy();
  await a?.stop();
  await b?.stop();
  await cp?.stop();
  await new Promise((r) => app?.close(r));
});

describe('a tap that never reads', { timeout: 120_000 }, () => {
  test('holds at most its buffer on the proxy: 1,200 POSTs of 4 KiB later the rest was dropped and counted, and the reader is told', async () => {
    const held = await holdTap(`${a.admin}/tap?service=web&headers=1&bodies=1`);
    await waitFor(async () => (await debugTaps(a)).open === 1, { what: 'the tap open on proxy A' });
    const statuses = await postMany(a, 1200);
    assert.ok(statuses.every((s) => s === 200));
    const stats = await waitFor(async () => {
      const s = await debugTaps(a);
      return s.taps[0]?.dropped > 0 ? s : undefined;
    }, { what: 'dropped lines counted' });
    const t = stats.taps[0];
    assert.deepEqual({ service: t.service, headers: t.headers, bodies: t.bodies }, { service: 'web', headers: true, bodies: true });
    assert.equal(stats.limits.bufferBytes, PROXY_TAP_LIMITS.bufferBytes);
    assert.ok(t.bufferedBytes > 0, 'the tap is backlogged');
    assert.ok(t.bufferedBytes <= PROXY_TAP_LIMITS.bufferBytes, `${t.bufferedBytes} bytes wait, at most ${PROXY_TAP_LIMITS.bufferBytes}`);
    // 2,400 lines (a line per listener crossed) of ~9 KiB: far more than the buffer and the kernel's socket buffers.
    assert.ok(t.dropped > 1000, `dropped ${t.dropped} of 2,400 lines`);
    assert.equal(t.lines + t.dropped, 2400, 'every line either sent or counted as dropped');
    assert.ok(stats.dropped >= t.dropped);
    // The reader catches up: before the next line it is told how many it missed.
    const lines: any[] = [];
    let buf = '';
    held.res.setEncoding('utf8');
    held.res.on('data', (c: string) => {
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    });
    held.res.resume();
    await waitFor(async () => {
      await post(outPort(a), 'after');
      return lines.some((l) => l.missed !== undefined);
    }, { what: 'a missed line once the reader reads again' });
    const missed = lines.find((l) => l.missed !== undefined);
    assert.deepEqual(Object.keys(missed).sort(), ['missed', 'proxy', 'time']);
    assert.equal(missed.proxy, 'tap-limits-a');
    assert.ok(missed.missed >= t.dropped, `${missed.missed} missed`);
    held.res.destroy();
    await waitFor(async () => (await debugTaps(a)).open === 0, { what: 'the tap closed' });
  });

  test('through the control plane: the relay holds at most its buffer and counts what it dropped', async () => {
    const held = await holdTap(`${cp.http}/v1/tap?service=web&headers=1&bodies=1`);
    // The relay opens its taps on the proxies a moment after the request.
    await waitFor(async () => (await debugTaps(a)).open === 1, { what: 'the relay tapping proxy A' });
    await postMany(a, 1200);
    const stats = await waitFor(async () => {
      const s = (await api(cp.http, 'GET', '/v1/taps')).body;
      return s.taps[0]?.dropped > 0 ? s : undefined;
    }, { what: 'the relay counting dropped lines' });
    const t = stats.taps[0];
    assert.equal(stats.limits.bufferBytes, RELAY_TAP_LIMITS.bufferBytes);
    assert.ok(t.bufferedBytes > 0 && t.bufferedBytes <= RELAY_TAP_LIMITS.bufferBytes, `${t.bufferedBytes} bytes wait in the relay`);
    assert.ok(t.dropped > 0);
    // The proxy's own tap (read by the relay) kept up: nothing dropped there.
    assert.equal((await debugTaps(a)).taps[0]?.dropped, 0);
    held.res.destroy();
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/taps')).body.open === 0 && (await debugTaps(a)).open === 0, { what: 'the relay and its proxy taps closed' });
  });

  test('is ended after the stall timeout, and counted; its slot comes back', async () => {
    const held = await holdTap(`${b.admin}/tap?service=web&headers=1&bodies=1`);
    await waitFor(async () => (await debugTaps(b)).open === 1, { what: 'the tap open on proxy B' });
    // Fill the kernel's socket buffers until bytes wait in the proxy, then stop sending.
    await waitFor(async () => {
      await mapLimit(Array.from({ length: 50 }), 8, () => post(outPort(b), BODY));
      return (await debugTaps(b)).taps[0]?.bufferedBytes > 0;
    }, { timeoutMs: 30_000, what: 'bytes waiting for the reader in proxy B' });
    await waitFor(async () => (await debugTaps(b)).stalled === 1, { timeoutMs: 10_000, what: 'the stalled tap ended (1 s stall timeout)' });
    const stats = await debugTaps(b);
    assert.equal(stats.open, 0);
    assert.equal(stats.limits.stallTimeoutMs, 1000);
    // The connection was cut: once the client reads what the kernel holds, it ends, mid-stream.
    let complete = false;
    held.res.once('end', () => (complete = true));
    held.res.resume();
    await held.closed;
    assert.equal(complete, false, 'cut, not ended as a complete response');
  });
  // A quiet tap (nothing waiting) is never ended: src/telemetry/tap.test.ts shows it on a manual clock.
});

describe('caps', { timeout: 60_000 }, () => {
  test('the proxy refuses a tap over --max-taps with 429 SKEIN_E_TOO_MANY_TAPS, and counts it', async () => {
    const held = await Promise.all(Array.from({ length: 4 }, () => holdTap(`${a.admin}/tap?service=web`)));
    const over = await tryTap(`${a.admin}/tap?service=web`);
    assert.equal(over.status, 429);
    assert.equal(over.error, 'SKEIN_E_TOO_MANY_TAPS');
    assert.equal(over.body.code, 'SKEIN_E_TOO_MANY_TAPS');
    assert.match(over.body.message, /4 taps open.*--max-taps/);
    const stats = await debugTaps(a);
    assert.equal(stats.open, 4);
    assert.ok(stats.refused >= 1);
    held[0]?.res.destroy();
    await waitFor(async () => (await tryTap(`${a.admin}/tap?service=web`)).status === 200, { what: 'a slot free again' });
    for (const h of held) h.res.destroy();
    await waitFor(async () => (await debugTaps(a)).open === 0, { what: 'every tap closed' });
  });

  test('the control plane refuses a relayed tap over its cap with 429 SKEIN_E_TOO_MANY_TAPS', async () => {
    const max = RELAY_TAP_LIMITS.maxTaps;
    const held = await Promise.all(Array.from({ length: max }, () => holdTap(`${cp.http}/v1/tap?service=web`)));
    try {
      const over = await tryTap(`${cp.http}/v1/tap?service=web`);
      assert.equal(over.status, 429);
      assert.equal(over.error, 'SKEIN_E_TOO_MANY_TAPS');
      assert.equal(over.body.code, 'SKEIN_E_TOO_MANY_TAPS');
      assert.match(over.body.message, new RegExp(`relays ${max} taps`));
      const stats = (await api(cp.http, 'GET', '/v1/taps')).body;
      assert.equal(stats.open, max);
      assert.equal(stats.refused, 1);
    } finally {
      for (const h of held) h.res.destroy();
    }
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/taps')).body.open === 0 && (await debugTaps(a)).open === 0, { what: 'every relayed tap closed, on the proxies too' });
  });
});

describe('redaction', { timeout: 60_000 }, () => {
  const headers = {
    authorization: 'Bearer secret-1',
    'x-api-key': 'secret-2',
    'api-key': 'secret-3',
    'x-auth-token': 'secret-4',
    'x-github-token': 'secret-5', // a token header no list names: the pattern
    'x-customer-ref': 'secret-6', // the proxy's --tap-redact
    'x-note': 'secret-7', // skein tap --redact
    'x-visible': 'shown',
  };

  test('the proxy redacts the defaults, token-like names and its --tap-redact names', async () => {
    const tap = await fetch(`${a.admin}/tap?service=web&headers=1`);
    let first: string | undefined;
    const reading = forEachLine(tap.body as ReadableStream<Uint8Array>, (l) => (first ??= l), () => first !== undefined);
    // The tap subscribes as its response starts: send until a line comes.
    await waitFor(async () => (await post(outPort(a), 'x', headers)) === 200 && first !== undefined, { intervalMs: 50, what: 'a tapped request' });
    await reading;
    const line = JSON.parse(first as string);
    for (const k of Object.keys(headers)) {
      if (k === 'x-visible' || k === 'x-note') continue;
      assert.equal(line.requestHeaders[k], '[redacted]', k);
    }
    assert.equal(line.requestHeaders['x-note'], 'secret-7', 'a name only the CLI was told about');
    assert.equal(line.requestHeaders['x-visible'], 'shown');
  });

  test('skein tap --headers --redact: every secret reads [redacted], in the table and in JSON', async () => {
    for (const format of ['table', 'json']) {
      const child = spawn(process.execPath, [SKEIN_BIN, 'tap', 'web', '--headers', '--redact', 'x-note', '--max-time', '30s', '-o', format, '-c', cp.http], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
      try {
        await waitFor(async () => {
          await post(outPort(a), 'x', headers);
          return out.includes('shown');
        }, { timeoutMs: 20_000, intervalMs: 100, what: `a tapped request in skein tap (${format}): ${out} ${err}` });
      } finally {
        child.kill('SIGINT');
      }
      assert.equal(await exited, 0, err);
      assert.doesNotMatch(out, /secret-\d/, out);
      if (format === 'table') {
        for (const k of Object.keys(headers)) if (k !== 'x-visible') assert.match(out, new RegExp(`^ {4}> ${k}: \\[redacted\\]$`, 'm'), k);
        assert.match(out, /^ {4}> x-visible: shown$/m);
      } else {
        const line = JSON.parse(out.split('\n')[0] as string);
        assert.equal(line.requestHeaders['x-note'], '[redacted]');
        assert.equal(line.requestHeaders['x-customer-ref'], '[redacted]');
      }
    }
  });
});

describe('flags and what the CLI prints', () => {
  test('bad redaction names and tap limits are usage errors naming the flag, before anything starts', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['proxy', '--control', 'http://127.0.0.1:1', '--admin', 'off', '--outbound', '127.0.0.1:0', '--tap-redact', 'bad name'], /--tap-redact: "bad name" is not a header name/],
      [['up', SHOP, '--tap-redact', 'x-ok,y z'], /--tap-redact: "y z" is not a header name/],
      [['tap', 'web', '--redact', 'a:b', '-c', cp.http], /--redact: "a:b" is not a header name/],
      [['proxy', '--max-taps', '0'], /--max-taps must be an integer from 1 to 1024/],
      [['proxy', '--tap-stall-timeout', '10ms'], /--tap-stall-timeout must be from 1000 ms/],
    ];
    for (const [args, re] of cases) {
      const r = await skein(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /\[SKEIN_E_USAGE\]/);
    }
  });

  test('a {"missed":N} line reads as requests not shown, naming who dropped them', () => {
    assert.equal(missedCount({ missed: 12, proxy: 'p-1' }), 12);
    assert.equal(missedCount({ method: 'GET', missed: 'x' }), null, 'a request line');
    assert.equal(formatMissed(12, { missed: 12, proxy: 'p-1' }), '-- 12 requests not shown: proxy p-1 dropped them, this tap fell behind\n');
    assert.equal(formatMissed(1, { missed: 1 }), '-- 1 request not shown: the control plane dropped them, this tap fell behind\n');
    assert.ok(!formatMissed(2, { proxy: 'p\x1b[2J' }).includes('\x1b'), 'a proxy id is printed safely');
  });
});
