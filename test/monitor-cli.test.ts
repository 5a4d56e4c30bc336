/**
 * The monitoring commands, end to end: `skein stat`, `skein top`, `skein tap`, `skein events` and
 * `skein dashboard` (the real CLI, as child processes) against the demo shop run by `skein up`
 * (examples/shop/shop.yaml: a Node frontend calling two Python services through the mesh) with
 * traffic sent through the frontend's service port. Then the mistakes people make: a window the
 * control plane does not keep, a service that does not exist, an unreachable control plane.
 * First, the formatting helpers on their own (no processes).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SKEIN_BIN, api, closedPort, skein, tempDir, waitFor } from './helpers.js';
import { SHOP_PAGE as PAGE, SHOP_SERVICES, Pacer, getStatus, startShop, type UpProcess } from './mesh-helpers.js';
import {
  browserOpener,
  busiest,
  fmtMs,
  fmtRps,
  fmtSuccess,
  formatTap,
  redactTap,
  statServiceText,
  statTable,
  topFrame,
  windowFlag,
  type MeshSignals,
  type TapLine,
} from '../src/cli/monitor.js';

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** A CLI run whose output can be read while it runs. */
interface LiveCli {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function liveCli(args: string[], env: NodeJS.ProcessEnv = {}): LiveCli {
  const child = spawn(process.execPath, [SKEIN_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
  void exited.then(() => clearTimeout(t));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** The rows of a table printed by the CLI (the first table whose header starts with `header`), cells split on runs of spaces. */
function tableRows(text: string, header: string): string[][] {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => l.startsWith(header));
  assert.ok(at >= 0, `a table starting with "${header}" in:\n${text}`);
  const out: string[][] = [];
  for (const l of lines.slice(at + 1)) {
    if (l.trim() === '') break;
    out.push(l.trim().split(/\s{2,}/));
  }
  return out;
}

/** Those rows by their first cell (the last one wins). */
function rows(text: string, header: string): Map<string, string[]> {
  return new Map(tableRows(text, header).map((r) => [r[0] as string, r]));
}

// ---------------------------------------------------------------------------------------------
// Formatting, without processes
// ---------------------------------------------------------------------------------------------

const lat = (p50: number | null, p95: number | null, p99: number | null) => ({ p50, p95, p99 });

describe('monitoring output, formatted', () => {
  test('numbers: RPS, success as a percentage, milliseconds; null (no requests) is "-"', () => {
    assert.deepEqual([fmtRps(0), fmtRps(0.345), fmtRps(12.55), fmtRps(1234.4), fmtRps(null)], ['0', '0.34', '12.6', '1234', '-']);
    assert.deepEqual([fmtSuccess(1), fmtSuccess(0.99123), fmtSuccess(0), fmtSuccess(null)], ['100.00%', '99.12%', '0.00%', '-']);
    assert.deepEqual([fmtMs(0.4217), fmtMs(3.14), fmtMs(120.4), fmtMs(null), fmtMs(undefined)], ['0.42', '3.1', '120', '-', '-']);
  });

  test('--window accepts the windows the control plane keeps, and names them otherwise', () => {
    for (const w of ['10s', '1m', '5m', '15m']) assert.equal(windowFlag(w), w);
    assert.throws(() => windowFlag('7m'), (e: any) => e.code === 'SKEIN_E_USAGE' && /10s, 1m, 5m, 15m/.test(e.message) && e.field === '--window');
  });

  test('the stat table: healthy/total instances, "-" where there were no requests', () => {
    const text = statTable([
      { service: 'web', rps: 12.5, successRate: 0.995, latencyMs: lat(3.1, 9, 20.12), requests: 750, failures: 4, instances: [{ id: 'web-1', status: 'healthy', address: '127.0.0.1:1', rps: 12.5, successRate: 1, latencyMs: lat(1, 2, 3), requests: 1, failures: 0 }, { id: 'web-2', status: 'unhealthy', address: null, rps: 0, successRate: null, latencyMs: lat(null, null, null), requests: 0, failures: 0 }] },
      { service: 'idle', rps: 0, successRate: null, latencyMs: lat(null, null, null), requests: 0, failures: 0, instances: [] },
    ]);
    const r = rows(text, 'SERVICE');
    assert.match(text, /^SERVICE\s+INSTANCES\s+RPS\s+SUCCESS\s+P50\(ms\)\s+P95\(ms\)\s+P99\(ms\)\n/);
    assert.deepEqual(r.get('web'), ['web', '1/2', '12.5', '99.50%', '3.1', '9.0', '20.1']);
    assert.deepEqual(r.get('idle'), ['idle', '0/0', '0', '-', '-', '-', '-']);
  });

  test('stat of one service: its instances, edges and routes', () => {
    const none = lat(null, null, null);
    const text = statServiceText({
      service: 'web', rps: 1, successRate: 1, latencyMs: lat(1, 2, 3), requests: 60, failures: 0,
      instances: [{ id: 'web-1', status: 'healthy', address: '127.0.0.1:5000', rps: 1, successRate: 1, latencyMs: lat(1, 2, 3), requests: 60, failures: 0 }],
      edges: [{ source: 'web', destination: 'db', rps: 2, successRate: 0.5, latencyMs: lat(1, 2, 3), requests: 120, failures: 60 }],
      routes: [{ service: 'web', route: 'default', direction: 'inbound', rps: 1, successRate: null, latencyMs: none, requests: 0, failures: 0 }],
    });
    assert.deepEqual(rows(text, 'INSTANCE').get('web-1'), ['web-1', 'healthy', '127.0.0.1:5000', '1.00', '100.00%', '1.0', '2.0', '3.0']);
    assert.deepEqual(rows(text, 'FROM').get('web'), ['web', 'db', '-', '2.00', '50.00%', '1.0', '2.0', '3.0']);
    assert.deepEqual(rows(text, 'ROUTE').get('default'), ['default', 'inbound', '1.00', '-', '-', '-', '-']);
  });

  test('top: only routes and edges with traffic, busiest first, at most --limit of each', () => {
    const s = (rps: number, requests = Math.round(rps * 10)) => ({ rps, successRate: 1, latencyMs: lat(1, 2, 3), requests, failures: 0 });
    const sig: MeshSignals = {
      window: '10s', time: '2026-11-25T05:00:00.000Z', scrapeIntervalMs: 2000, services: [],
      routes: [{ service: 'a', route: 'r1', direction: 'inbound', ...s(1) }, { service: 'b', route: 'r2', direction: 'inbound', ...s(5) }, { service: 'c', route: 'r3', direction: 'outbound', ...s(0) }],
      edges: [{ source: 'a', destination: 'b', ...s(3) }, { source: 'b', destination: 'c', mtls: 'all', mtlsRequests: 70, ...s(7) }],
    };
    const b = busiest(sig, 10);
    assert.deepEqual(b.routes.map((r) => r.route), ['r2', 'r1']);
    assert.deepEqual(b.edges.map((e) => e.source), ['b', 'a']);
    assert.deepEqual(busiest(sig, 1).edges.map((e) => e.source), ['b']);
    const frame = topFrame(sig, { limit: 10, control: 'http://127.0.0.1:7400' });
    assert.match(frame, /window 10s/);
    assert.deepEqual(rows(frame, 'FROM').get('b'), ['b', 'c', 'all', '7.00', '100.00%', '1.0', '2.0', '3.0', '70']);
    assert.match(topFrame({ ...sig, routes: [], edges: [] }, { limit: 5, control: 'x' }), /no traffic in the last 10s/);
  });

  test('tap lines: one line per request, secrets redacted again, terminal escapes neutralised', () => {
    const line: TapLine = {
      time: '2026-11-25T05:00:00.123Z', direction: 'inbound', source: 'frontend', destination: 'users', method: 'GET', path: '/user?id=1\x1b[2J', status: 200, latencyMs: 3.14159, instance: 'users-1', error: null,
      requestHeaders: { Authorization: 'Bearer secret', cookie: ['a=1', 'b=2'], accept: 'application/json' },
      responseHeaders: { 'set-cookie': 'session=s3cr3t', 'content-type': 'application/json' },
      requestBody: '', responseBody: '{"ok":true}\n',
    };
    const safe = redactTap(line);
    assert.equal(safe.requestHeaders?.['Authorization'], '[redacted]');
    assert.deepEqual(safe.requestHeaders?.['cookie'], ['[redacted]', '[redacted]']);
    assert.equal(safe.responseHeaders?.['set-cookie'], '[redacted]');
    assert.equal(safe.requestHeaders?.['accept'], 'application/json');
    const text = formatTap(safe);
    assert.doesNotMatch(text, /secret|s3cr3t/);
    assert.ok(!text.includes('\x1b'), 'no raw escape character');
    const [first] = text.split('\n');
    assert.equal(first, '05:00:00.123  in   frontend -> users @users-1  GET /user?id=1\\x1b[2J  200  3.1ms');
    assert.match(text, /^ {4}> Authorization: \[redacted\]$/m);
    assert.match(text, /^ {4}< body: "\{\\"ok\\":true\}\\n"$/m);
    assert.match(formatTap({ ...line, status: 0, error: 'SKEIN_E_UPSTREAM_TIMEOUT', requestHeaders: undefined, responseHeaders: undefined, requestBody: undefined, responseBody: undefined } as TapLine), / {2}--- SKEIN_E_UPSTREAM_TIMEOUT {2}3\.1ms\n$/);
    const stream: TapLine = { time: '2026-11-25T05:00:00.123Z', direction: 'outbound', source: 'web', destination: 'db', method: 'TCP', path: '', status: 200, latencyMs: 1.84, instance: 'db-1', error: null, durationMs: 5230.5, receivedBytes: 512, sentBytes: 20480 };
    assert.equal(formatTap(stream), '05:00:00.123  out  web -> db @db-1  TCP   200  1.8ms  lived 5231ms, 512 B in, 20480 B out\n');
  });

  test('dashboard --open: xdg-open only with a graphical session', () => {
    assert.deepEqual(browserOpener('linux', { DISPLAY: ':0' }), { cmd: 'xdg-open', args: [] });
    assert.ok('reason' in browserOpener('linux', {}));
    assert.equal((browserOpener('darwin', {}) as { cmd: string }).cmd, 'open');
  });
});

// ---------------------------------------------------------------------------------------------
// Bad input, before any request
// ---------------------------------------------------------------------------------------------

describe('monitoring commands refuse bad input before any request', () => {
  let nowhere: string;
  before(async () => {
    nowhere = `http://127.0.0.1:${await closedPort()}`;
  });

  test('--window 7m: a usage error naming the windows, exit 2 (the unreachable control plane is never asked)', async () => {
    for (const args of [['stat', '--window', '7m'], ['stat', 'frontend', '--window', '7m'], ['top', '--once', '--window', '7m']]) {
      const r = await skein([...args, '-c', nowhere]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /--window must be one of 10s, 1m, 5m, 15m, got "7m" \[SKEIN_E_USAGE\]/);
      assert.equal(r.stdout, '');
    }
  });

  test('malformed numbers and durations name the flag', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['tap', 'frontend', '--limit', 'lots'], /--limit must be an integer/],
      [['tap', 'frontend', '--max-time', 'soon'], /--max-time must be a duration/],
      [['top', '--interval', 'often'], /--interval must be a duration/],
      [['top', '--once', '--interval', '10ms'], /--interval must be at least 100ms/],
      [['top', '--count', '0'], /--count must be an integer from 1/],
      [['top', '--count', 'twice'], /--count must be an integer from 1/],
      [['top', '--once', '--count', '3'], /--once and --count 3 contradict each other/],
      [['top', '--limit', '0'], /--limit must be an integer from 1/],
      [['tap', 'frontend', '--limit', '0'], /--limit must be an integer from 1/],
    ];
    for (const [args, re] of cases) {
      const r = await skein([...args, '-c', nowhere]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '');
    }
    // Flags a command does not have, and a missing SERVICE: commander's message, a non-zero exit.
    for (const [args, re] of [[['top', '--bogus'], /unknown option '--bogus'/], [['stat', '--bogus'], /unknown option '--bogus'/], [['tap'], /missing required argument 'service'/]] as const) {
      const r = await skein([...args, '-c', nowhere]);
      assert.notEqual(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '');
    }
  });

  test('an unreachable control plane: one line, SKEIN_E_CONTROL_UNREACHABLE, exit 1', async () => {
    for (const args of [['stat'], ['top', '--once'], ['tap', 'frontend', '--limit', '1'], ['dashboard'], ['events']]) {
      const r = await skein([...args, '-c', nowhere]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^skein: cannot reach the control plane at http:\/\/127\.0\.0\.1:\d+: .*\[SKEIN_E_CONTROL_UNREACHABLE\]\n$/);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Against the demo shop
// ---------------------------------------------------------------------------------------------

describe('skein stat, top, tap, events and dashboard on the demo shop', () => {
  let mesh: UpProcess & { frontendPort: number };
  let load: Pacer | undefined;
  const cli = (args: string[]) => skein([...args, '-c', mesh.control]);

  before(async () => {
    mesh = await startShop({ outbound: false });
    // A steady 10 pages a second through the frontend's service port: each page calls
    // user-service and product-service through the frontend's proxy.
    load = new Pacer(mesh.frontendPort, PAGE, 10, { maxSockets: 8 });
  });

  after(async () => {
    await load?.stop();
    await mesh?.stop();
  });

  test('skein stat: every shop service with RPS > 0, success and latency percentiles', async (t) => {
    // The control plane scrapes the proxies every 2 s: poll until the traffic shows.
    const sig = (await waitFor(
      async () => {
        const r = await cli(['stat', '--window', '10s', '-o', 'json']);
        if (r.code !== 0) throw new Error(r.stderr);
        const j = JSON.parse(r.stdout) as MeshSignals;
        const busy = SHOP_SERVICES.every((name) => (j.services.find((s) => s.service === name)?.rps ?? 0) > 0);
        return busy ? j : null;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: 'skein stat to show traffic on every shop service' },
    )) as MeshSignals;
    assert.equal(sig.window, '10s');
    assert.ok(load!.ok > 0, 'the load got answers');
    const r = await cli(['stat', '--window', '10s']);
    assert.equal(r.code, 0, r.stderr);
    t.diagnostic(`\n${r.stdout}`);
    assert.match(r.stdout, /^SERVICE\s+INSTANCES\s+RPS\s+SUCCESS\s+P50\(ms\)\s+P95\(ms\)\s+P99\(ms\)\n/);
    const table = rows(r.stdout, 'SERVICE');
    const instances: Record<string, string> = { frontend: '1/1', 'user-service': '2/2', 'product-service': '2/2', reviews: '2/2' };
    for (const name of SHOP_SERVICES) {
      const row = table.get(name);
      assert.ok(row, `a row for ${name}:\n${r.stdout}`);
      const [, inst, rps, success, p50, p95, p99] = row;
      assert.equal(inst, instances[name], `${name} instances healthy/total`);
      assert.ok(Number(rps) > 0, `${name} RPS > 0: ${row.join(' | ')}`);
      assert.match(success as string, /^\d+\.\d\d%$/);
      for (const p of [p50, p95, p99]) assert.ok(Number(p) > 0, `${name} latency percentiles are numbers: ${row.join(' | ')}`);
      assert.ok(Number(p50) <= Number(p95) && Number(p95) <= Number(p99), `${name}: p50 <= p95 <= p99: ${row.join(' | ')}`);
    }
    // The default window is 1m; every window the control plane keeps is asked for as given.
    const dflt = JSON.parse((await cli(['stat', '-o', 'json'])).stdout) as MeshSignals;
    assert.equal(dflt.window, '1m');
    for (const w of ['5m', '15m']) {
      const j = JSON.parse((await cli(['stat', '--window', w, '-o', 'json'])).stdout) as MeshSignals;
      assert.equal(j.window, w);
      assert.ok((j.services.find((s) => s.service === 'frontend')?.requests ?? 0) > 0, `frontend requests in ${w}: ${JSON.stringify(j.services)}`);
    }
  });

  test('skein stat frontend: the service, its instance, and its calls to user-service and product-service', async (t) => {
    const text = (await waitFor(
      async () => {
        const r = await cli(['stat', 'frontend', '--window', '10s']);
        if (r.code !== 0) throw new Error(r.stderr);
        const edges = r.stdout.includes('FROM') ? tableRows(r.stdout, 'FROM') : [];
        return edges.filter((e) => e[0] === 'frontend' && Number(e[3]) > 0).length >= 2 ? r.stdout : null;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: 'skein stat frontend to show its edges' },
    )) as string;
    t.diagnostic(`\n${text}`);
    const svc = rows(text, 'SERVICE').get('frontend');
    assert.ok(svc && Number(svc[2]) > 0, `frontend RPS > 0:\n${text}`);
    const inst = rows(text, 'INSTANCE').get('frontend-1');
    assert.ok(inst, `the instance frontend-1:\n${text}`);
    assert.equal(inst[1], 'healthy');
    const to = new Map([...text.matchAll(/^frontend\s+(\S+)\s+(all|some|none|-)\s+\d/gm)].map((m) => [m[1], m[2]]));
    assert.ok(to.has('user-service') && to.has('product-service'), `edges frontend -> user-service and -> product-service:\n${text}`);
    assert.equal(to.get('user-service'), 'all', `every call from the frontend to user-service was mTLS (the MTLS column):\n${text}`);
    const j = JSON.parse((await cli(['stat', 'frontend', '--window', '10s', '-o', 'json'])).stdout);
    assert.equal(j.service, 'frontend');
    assert.ok(Array.isArray(j.instances) && Array.isArray(j.edges) && Array.isArray(j.routes), JSON.stringify(j));
  });

  test('skein stat of an unknown service: the server\'s SKEIN_E_UNKNOWN_SERVICE, exit 1', async () => {
    const r = await cli(['stat', 'no-such-service']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^skein: .*no-such-service.*\[SKEIN_E_UNKNOWN_SERVICE\]\n$/);
    assert.equal(r.stdout, '');
  });

  test('skein top --once: the busiest routes and edges by RPS; --limit cuts each table', async (t) => {
    const text = (await waitFor(
      async () => {
        const r = await cli(['top', '--once']);
        if (r.code !== 0) throw new Error(r.stderr);
        return /^frontend\s+user-service\s/m.test(r.stdout) ? r.stdout : null;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: 'skein top to show the frontend -> user-service edge' },
    )) as string;
    t.diagnostic(`\n${text}`);
    assert.match(text, /window 10s/);
    const routes = tableRows(text, 'SERVICE');
    for (const name of SHOP_SERVICES) assert.ok(routes.some((r) => r[0] === name && Number(r[3]) > 0), `a busy route of ${name}:\n${text}`);
    const rps = routes.map((r) => Number(r[3]));
    assert.deepEqual(rps, [...rps].sort((a, b) => b - a), 'routes sorted by RPS, busiest first');
    const one = await cli(['top', '--once', '--limit', '1']);
    assert.equal(tableRows(one.stdout, 'SERVICE').length, 1, one.stdout);
    assert.equal(tableRows(one.stdout, 'FROM').length, 1, one.stdout);
    const j = JSON.parse((await cli(['top', '--once', '--window', '1m', '-o', 'json'])).stdout);
    assert.equal(j.window, '1m');
    assert.ok(j.routes.length > 0 && j.edges.length > 0, JSON.stringify(j));
    // Not a terminal: printed once even without --once.
    const piped = await cli(['top']);
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout.match(/^skein top /gm)?.length, 1, piped.stdout);
    // --count N: N frames, one every --interval, then exit.
    const twice = await cli(['top', '--count', '2', '--interval', '200ms']);
    assert.equal(twice.code, 0, twice.stderr);
    assert.equal(twice.stdout.match(/^skein top .*window 10s, every 0\.2s/gm)?.length, 2, twice.stdout);
    const lines = await cli(['top', '--count', '3', '--interval', '100ms', '-o', 'json']);
    assert.equal(lines.code, 0, lines.stderr);
    const frames = lines.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.equal(frames.length, 3, lines.stdout);
    for (const f of frames) assert.ok(f.window === '10s' && Array.isArray(f.routes) && Array.isArray(f.edges), JSON.stringify(f));
  });

  test('skein top on a terminal: the full screen, redrawn every --interval until q, then the terminal back', async () => {
    // `script` (util-linux) gives the CLI a pseudo-terminal; what we write to it is the keyboard.
    const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(SKEIN_BIN)} top --interval 200ms -c ${mesh.control}`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    try {
      await waitFor(() => (out.match(/skein top /g)?.length ?? 0) >= 3, { timeoutMs: 20_000, intervalMs: 50, what: `three frames on the terminal: ${JSON.stringify(out.slice(-500))}` });
      child.stdin.write('q');
      assert.equal(await exited, 0, out.slice(-500));
    } finally {
      clearTimeout(kill);
      child.kill('SIGKILL');
    }
    assert.ok(out.startsWith('\x1b[?1049h'), 'switches to the alternate screen first');
    assert.ok(out.includes('\x1b[H\x1b[2Jskein top '), 'each frame clears the screen');
    assert.ok(out.trimEnd().endsWith('\x1b[?25h\x1b[?1049l'), `gives the terminal back: ${JSON.stringify(out.slice(-100))}`);
    assert.match(out, /frontend\s+user-service\s/, 'the frames show the traffic');
  });

  test('skein tap frontend --limit 3: the requests sent while it runs, one line each', async () => {
    const tap = liveCli(['tap', 'frontend', '--limit', '3', '-c', mesh.control]);
    const code = await tap.exited;
    assert.equal(code, 0, tap.stderr());
    const lines = tap.stdout().trimEnd().split('\n');
    assert.equal(lines.length, 3, tap.stdout());
    for (const l of lines) {
      // time, direction, source -> destination, method, path, status, latency
      // (the reviews calls are gRPC: POST)
      assert.match(l, /^\d\d:\d\d:\d\d\.\d{3} {2}(in |out) {2}\S+ -> \S+( @\S+)? {2}(GET|POST) \/\S* {2}\d{3} {2}[\d.]+ms$/, l);
      assert.match(l, /frontend/);
      const [, from, to] = /(\S+) -> (\S+)/.exec(l) ?? [];
      assert.ok(['frontend', 'frontend-service-port', '-'].includes(from as string) && [...SHOP_SERVICES].includes(to as string), `source -> destination of a shop call: ${l}`);
    }
    // -o json: the raw NDJSON lines of contract E.
    const json = liveCli(['tap', 'frontend', '--limit', '2', '-o', 'json', '-c', mesh.control]);
    assert.equal(await json.exited, 0, json.stderr());
    const objs = json.stdout().trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.equal(objs.length, 2);
    for (const o of objs) {
      for (const k of ['time', 'proxy', 'direction', 'source', 'destination', 'method', 'path', 'status', 'latencyMs']) assert.ok(k in o, `${k} in ${JSON.stringify(o)}`);
      assert.ok(o.source === 'frontend' || o.destination === 'frontend', JSON.stringify(o));
      assert.equal(o.requestHeaders, undefined, 'no headers without --headers');
      assert.equal(o.responseHeaders, undefined, 'no headers without --headers');
      assert.ok(!('requestBody' in o) && !('responseBody' in o), `no bodies without --bodies: ${JSON.stringify(o)}`);
      assert.ok(SHOP_SERVICES.includes(o.destination), JSON.stringify(o));
      assert.equal(o.method, o.destination === 'reviews' ? 'POST' : 'GET');
      assert.ok(Number.isInteger(o.status) && o.status >= 100, JSON.stringify(o));
      assert.ok(typeof o.latencyMs === 'number' && o.latencyMs >= 0, JSON.stringify(o));
    }
  });

  test('skein tap --bodies: the bodies, and only when asked (no headers without --headers)', async () => {
    // The pages of the load pass through: wait for one answered by user-service.
    const isUser = (o: any) => o.destination === 'user-service' && o.path === '/user' && o.status === 200;
    const json = liveCli(['tap', 'user-service', '--bodies', '--max-time', '30s', '-o', 'json', '-c', mesh.control]);
    try {
      await waitFor(() => json.stdout().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)).find(isUser), { timeoutMs: 25_000, intervalMs: 100, what: `a /user call in the tap: ${json.stdout()} ${json.stderr()}` });
    } finally {
      json.child.kill('SIGINT');
    }
    assert.equal(await json.exited, 0, json.stderr());
    const o = json.stdout().trimEnd().split('\n').map((l) => JSON.parse(l)).find(isUser);
    assert.match(o.responseBody, /"user": \{"id": 1/, JSON.stringify(o));
    assert.equal(o.requestHeaders, undefined, JSON.stringify(o));
    // For people: the body as a JSON string under the request line.
    const table = liveCli(['tap', 'user-service', '--bodies', '--limit', '1', '-c', mesh.control]);
    assert.equal(await table.exited, 0, table.stderr());
    assert.match(table.stdout(), /^\d\d:\d\d:\d\d\.\d{3} {2}(in |out) {2}\S+ -> user-service @user-service-\d {2}GET \/\S* {2}\d{3} {2}[\d.]+ms\n {4}< body: ".*"\n$/, table.stdout());
  });

  test('skein tap --headers: an authorization header sent reads [redacted], never the secret; Ctrl-C stops it', async () => {
    // The tap shows the path without its query: the probe is marked by a header of its own.
    const probe = `tap-probe-${process.pid}`;
    for (const format of ['table', 'json'] as const) {
      const tap = liveCli(['tap', 'frontend', '--headers', '--max-time', '40s', '-o', format, '-c', mesh.control]);
      const agent = new http.Agent({ keepAlive: true });
      try {
        // The tap reaches the proxies a moment after it starts: send until a probe shows.
        await waitFor(
          async () => {
            await getStatus(mesh.frontendPort, '/health', agent, { authorization: 'Bearer secret', cookie: 'session=secret-cookie', 'x-tap-probe': probe });
            return tap.stdout().includes(probe);
          },
          { timeoutMs: 30_000, intervalMs: 100, what: `the probe in the tap output (${format}): ${tap.stdout()} ${tap.stderr()}` },
        );
      } finally {
        agent.destroy();
      }
      tap.child.kill('SIGINT');
      assert.equal(await tap.exited, 0, `Ctrl-C ends the tap cleanly: ${tap.stderr()}`);
      const out = tap.stdout();
      assert.doesNotMatch(out, /secret/, 'the secret never shows');
      if (format === 'table') {
        const block = out.split(/\n(?=\d\d:)/).find((b) => b.includes(probe)) as string;
        assert.match(block, /^ {4}> authorization: \[redacted\]$/m, block);
        assert.match(block, /^ {4}> cookie: \[redacted\]$/m, block);
        assert.match(block, new RegExp(`^ {4}> x-tap-probe: ${probe}$`, 'm'), block);
      } else {
        const o = out.trimEnd().split('\n').map((l) => JSON.parse(l)).find((x) => x.requestHeaders?.['x-tap-probe'] === probe);
        assert.equal(o.requestHeaders.authorization, '[redacted]', JSON.stringify(o));
        assert.equal(o.requestHeaders.cookie, '[redacted]', JSON.stringify(o));
        assert.ok(o.responseHeaders && typeof o.responseHeaders === 'object', JSON.stringify(o));
      }
    }
  });

  test('skein tap of an unknown service: SKEIN_E_UNKNOWN_SERVICE before any line, exit 1; --max-time ends a quiet tap', async () => {
    const r = await cli(['tap', 'no-such-service']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\[SKEIN_E_UNKNOWN_SERVICE\]/);
    // A registered service nobody calls: nothing on stdout, one line saying so, exit 0.
    const put = await api(mesh.control, 'PUT', '/v1/services/quiet-service', { name: 'quiet-service' });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.body));
    const quiet = await cli(['tap', 'quiet-service', '--max-time', '300ms']);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stdout, '');
    assert.equal(quiet.stderr, 'no requests to or from quiet-service seen\n');
  });

  test('skein events: the health events of the shop in a table; --type, SERVICE and -o json', async (t) => {
    const r = await cli(['events']);
    assert.equal(r.code, 0, r.stderr);
    t.diagnostic(`\n${r.stdout}`);
    assert.match(r.stdout, /^TIME\s+TYPE\s+SERVICE\s+INSTANCE\s+MESSAGE\n/);
    assert.match(r.stdout, /^\S+Z\s+health\s+frontend\s+frontend-1\s+\S/m, 'the health event of frontend-1');
    const typed = await cli(['events', '--type', 'health', '-o', 'json']);
    assert.equal(typed.code, 0, `events --type health: ${typed.stderr}`);
    const j = JSON.parse(typed.stdout);
    assert.ok(j.events.length > 0);
    for (const e of j.events) {
      assert.equal(e.type, 'health');
      assert.equal(typeof e.message, 'string');
    }
    const one = JSON.parse((await cli(['events', 'frontend', '-o', 'json'])).stdout);
    assert.ok(one.events.every((e: any) => e.service === 'frontend'));
    const bad = await cli(['events', '--type', 'nonsense']);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /\[SKEIN_E_BAD_QUERY\]/);
    assert.equal((await cli(['events', '--type', 'scale'])).stdout, 'no scale events\n');
  });

  test('skein events: scaling shows as scale events, next to the health events of the new replica', async (t) => {
    // One more user-service replica, then back to two (skein scale waits until it is done), once
    // the new one has served requests: the pages of the load, or the health checks.
    const served3 = async () => ((await api(mesh.control, 'GET', '/v1/signals/services/user-service?window=15m')).body.instances as any[]).find((i) => i.id === 'user-service-3')?.requests ?? 0;
    const up3 = await cli(['scale', 'user-service', '3']);
    assert.equal(up3.code, 0, `skein scale user-service 3: ${up3.stderr}`);
    const servedBefore = await waitFor(served3, { timeoutMs: 30_000, intervalMs: 250, what: 'user-service-3 to serve requests' });
    const down2 = await cli(['scale', 'user-service', '2']);
    assert.equal(down2.code, 0, `skein scale user-service 2: ${down2.stderr}`);
    const scale = await cli(['events', '--type', 'scale']);
    assert.equal(scale.code, 0, scale.stderr);
    t.diagnostic(`\n${scale.stdout}`);
    const rowsOf = tableRows(scale.stdout, 'TIME');
    assert.deepEqual(rowsOf.map((r) => r.slice(1)), [
      ['scale', 'user-service', '-', 'user-service scaled from 2 to 3 replicas'],
      ['scale', 'user-service', '-', 'user-service scaled from 3 to 2 replicas'],
    ]);
    // Several types at once (the API takes a comma-separated list), for one service.
    const mixed = JSON.parse((await cli(['events', 'user-service', '--type', 'scale,health', '-o', 'json'])).stdout);
    const types = new Set(mixed.events.map((e: any) => e.type));
    assert.ok(types.has('scale') && types.has('health') && types.size === 2, JSON.stringify(mixed));
    assert.ok(mixed.events.some((e: any) => e.type === 'health' && e.id === 'user-service-3'), 'the health event of the new replica');
    assert.ok(mixed.events.every((e: any) => e.service === 'user-service'));
    // --limit: the newest N, oldest first.
    const last = JSON.parse((await cli(['events', '--limit', '1', '--type', 'scale', '-o', 'json'])).stdout);
    assert.deepEqual(last.events.map((e: any) => e.message), ['user-service scaled from 3 to 2 replicas']);
    // The replica that went away is not counted among the service's instances; it is listed, as
    // "unknown", with the traffic it served in the window.
    const stat = await cli(['stat', '-w', '15m']);
    assert.equal(stat.code, 0, stat.stderr);
    assert.equal(rows(stat.stdout, 'SERVICE').get('user-service')?.[1], '2/2', stat.stdout);
    const one = JSON.parse((await cli(['stat', 'user-service', '-w', '15m', '-o', 'json'])).stdout);
    const gone = one.instances.find((i: any) => i.id === 'user-service-3');
    assert.equal(gone?.status, 'unknown', JSON.stringify(one.instances));
    assert.equal(gone.address, null, 'no longer registered: no address');
    assert.ok(gone.requests >= servedBefore, `user-service-3 served ${gone.requests} requests in the window, at least the ${servedBefore} seen before it went`);
  });

  test('skein dashboard: the URL once the control plane answers; --open says when it cannot open a browser', async () => {
    const r = await cli(['dashboard']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${mesh.control}/dashboard/\n`);
    const open = await skein(['dashboard', '--open', '-c', mesh.control], { env: { DISPLAY: '', WAYLAND_DISPLAY: '' } });
    assert.equal(open.code, 0, open.stderr);
    assert.equal(open.stdout, `${mesh.control}/dashboard/\n`);
    assert.match(open.stderr, /cannot open a browser: .*open http:\/\/.*\/dashboard\/ yourself/);
    const j = JSON.parse((await cli(['dashboard', '-o', 'json'])).stdout);
    assert.equal(j.url, `${mesh.control}/dashboard/`);
    // The dashboard really is there.
    const page = await fetch(j.url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  });

  test('skein dashboard --open: runs xdg-open with the URL and does not wait for the browser', async () => {
    // A stand-in xdg-open that records its argument and then lingers, as a browser would.
    const dir = await tempDir('skein-open-');
    const record = join(dir.path, 'opened');
    const recorded = async () => (await readFile(record, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
    try {
      const opener = join(dir.path, 'xdg-open');
      await writeFile(opener, `#!/bin/sh\necho "$$ $1" >> ${JSON.stringify(record)}\nexec sleep 60\n`, { mode: 0o755 });
      const env = { DISPLAY: ':99', WAYLAND_DISPLAY: '', PATH: `${dir.path}:${process.env['PATH'] ?? ''}` };
      const r = await skein(['dashboard', '--open', '-c', mesh.control], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${mesh.control}/dashboard/\n`);
      assert.equal(r.stderr, `opening ${mesh.control}/dashboard/ in a browser\n`);
      const lines = await waitFor(async () => {
        const l = await recorded();
        return l.length > 0 ? l : null;
      }, { timeoutMs: 10_000, what: 'the stand-in xdg-open to run' });
      const line = (lines as string[])[0] as string;
      assert.equal(line.slice(line.indexOf(' ') + 1), `${mesh.control}/dashboard/`);
      const j = JSON.parse((await skein(['dashboard', '--open', '-o', 'json', '-c', mesh.control], { env })).stdout);
      assert.equal(j.opened, true);
      // No xdg-open at all: said on stderr, still exit 0 with the URL.
      const none = await skein(['dashboard', '--open', '-c', mesh.control], { env: { DISPLAY: ':99', PATH: dir.path.replace(/$/, '-missing') } });
      assert.equal(none.code, 0, none.stderr);
      assert.match(none.stderr, /cannot open a browser: xdg-open could not run: ENOENT; open http:\/\/.*\/dashboard\/ yourself/);
    } finally {
      // The stand-ins lingering in `sleep`: each wrote its pid before exec.
      for (const l of await recorded()) {
        const pid = Number(l.split(' ')[0]);
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
      await dir.remove();
    }
  });
});
