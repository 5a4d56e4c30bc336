/**
 * The supervisor with real child processes (small node scripts written to a temp dir), real
 * ports and real signals, on the system clock. No fixed sleeps: everything polls with waitFor.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { join } from 'node:path';
import { systemClock } from '../src/core/clock.js';
import { probeOnce } from '../src/runtime/readiness.js';
import { Supervisor, type ExitInfo, type ReplicaInfo, type SupervisedService, type SupervisorEvent, type SupervisorOptions } from '../src/runtime/supervisor.js';
import { closedPort, tempDir, waitFor } from './helpers.js';

let dir: { path: string; remove: () => Promise<void> };
const supervisors: Supervisor[] = [];

// An HTTP server on $PORT: /health, /whoami, /crash; says when it gets SIGTERM, then exits.
const SERVER = `
import { createServer } from 'node:http';
const port = Number(process.env.PORT ?? process.env.LISTEN_PORT);
const srv = createServer((req, res) => {
  if (req.url === '/crash') { res.end('bye'); setImmediate(() => process.exit(7)); return; }
  if (req.url === '/whoami') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ pid: process.pid, port, service: process.env.SKEIN_SERVICE, id: process.env.SKEIN_INSTANCE_ID,
      proxy: process.env.HTTP_PROXY ?? null, greeting: process.env.GREETING ?? null }));
    return;
  }
  res.end('ok');
});
srv.listen(port, '127.0.0.1', () => console.log('listening on ' + port));
process.on('SIGTERM', () => {
  console.log('got SIGTERM ' + process.pid);
  srv.close(() => process.exit(0));
  srv.closeAllConnections();
});
`;

// Like SERVER, but it shrugs SIGTERM off: only SIGKILL stops it.
const STUBBORN = `
import { createServer } from 'node:http';
createServer((req, res) => res.end('ok')).listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
`;

// Runs forever and writes its pid to a file: the grandchild of a shell wrapper.
const SLEEPER = `
import { writeFileSync } from 'node:fs';
writeFileSync(process.argv[2], String(process.pid));
setInterval(() => {}, 1000);
`;

before(async () => {
  dir = await tempDir('skein-supervisor-');
  await writeFile(join(dir.path, 'server.mjs'), SERVER);
  await writeFile(join(dir.path, 'stubborn.mjs'), STUBBORN);
  await writeFile(join(dir.path, 'sleeper.mjs'), SLEEPER);
});

after(async () => {
  for (const s of supervisors) s.killAll();
  await Promise.all(supervisors.map((s) => s.stop()));
  await dir.remove();
});

/** True once the process is gone: kill(pid, 0) throws ESRCH (a zombie awaiting its reaper counts as gone). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? false;
  } catch {
    return false;
  }
}

function spec(overrides: Partial<SupervisedService> = {}): SupervisedService {
  return {
    name: 'web',
    command: process.execPath,
    args: ['server.mjs'],
    env: { GREETING: 'hello' },
    port: { env: 'PORT' },
    readiness: { type: 'http', path: '/health', intervalMs: 50, timeoutMs: 1000, initialDelayMs: 0, deadlineMs: 20_000 },
    restart: { baseMs: 50, capMs: 200, resetAfterMs: 30_000, maxRestarts: null },
    stopTimeoutMs: 5000,
    ...overrides,
  };
}

interface Recorder {
  sup: Supervisor;
  order: string[];
  ready: ReplicaInfo[];
  exits: Array<[ReplicaInfo, ExitInfo]>;
  events: SupervisorEvent[];
  lines: string[];
}

function supervise(svc: Partial<SupervisedService> = {}, opts: Partial<SupervisorOptions> = {}): Recorder {
  const r: Omit<Recorder, 'sup'> = { order: [], ready: [], exits: [], events: [], lines: [] };
  const sup = new Supervisor({
    service: spec(svc),
    cwd: dir.path,
    extraEnv: { HTTP_PROXY: 'http://127.0.0.1:4140' },
    output: (line) => {
      r.lines.push(line);
      r.order.push(`line ${line}`);
    },
    onReady: (i) => {
      r.ready.push(i);
      r.order.push(`onReady ${i.id}`);
    },
    onStopping: (i) => {
      r.order.push(`onStopping ${i.id} ${gone(i.pid) ? 'dead' : 'alive'}`);
    },
    onExit: (i, e) => {
      r.exits.push([i, e]);
      r.order.push(`onExit ${i.id}`);
    },
    onEvent: (e) => r.events.push(e),
    ...opts,
  });
  supervisors.push(sup);
  return { sup, ...r };
}

async function whoami(port: number): Promise<{ pid: number; port: number; service: string; id: string; proxy: string | null; greeting: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}/whoami`);
  return (await res.json()) as { pid: number; port: number; service: string; id: string; proxy: string | null; greeting: string | null };
}

test('replicas start on distinct ports with their env, become ready, and stop() leaves no process', async () => {
  const r = supervise();
  r.sup.start(3);
  await waitFor(() => r.sup.readyCount === 3, { what: '3 ready replicas', timeoutMs: 20_000 });
  await r.sup.whenAllReady();
  const ports = r.ready.map((i) => i.port);
  assert.equal(new Set(ports).size, 3, `distinct ports: ${ports.join(', ')}`);
  assert.deepEqual(r.ready.map((i) => i.id).sort(), ['web-1', 'web-2', 'web-3']);
  for (const i of r.ready) {
    assert.equal(i.address, '127.0.0.1');
    const me = await whoami(i.port);
    assert.deepEqual(me, { pid: i.pid, port: i.port, service: 'web', id: i.id, proxy: 'http://127.0.0.1:4140', greeting: 'hello' });
  }
  assert.ok(r.lines.includes(`[web/web-1] listening on ${r.ready.find((i) => i.id === 'web-1')?.port}`), r.lines.join('\n'));
  const pids = r.ready.map((i) => i.pid);
  await r.sup.stop();
  for (const pid of pids) assert.ok(gone(pid), `pid ${pid} still running`);
  assert.equal(r.order.filter((l) => l.startsWith('onStopping')).length, 3);
  assert.ok(r.order.filter((l) => l.startsWith('onStopping')).every((l) => l.endsWith('alive')), 'drained while still running');
  assert.deepEqual(r.events.filter((e) => e.type === 'stopped').map((e) => e.id).sort(), ['web-1', 'web-2', 'web-3']);
});

test('a crashed replica: onExit, then restarted with a new pid and port', async () => {
  const r = supervise();
  r.sup.start(1);
  await r.sup.whenAllReady();
  const first = r.ready[0] as ReplicaInfo;
  await fetch(`http://127.0.0.1:${first.port}/crash`).then((res) => res.text());
  await waitFor(() => r.ready.length === 2, { what: 'the restarted replica', timeoutMs: 20_000 });
  const second = r.ready[1] as ReplicaInfo;
  assert.equal(r.exits.length, 1);
  assert.equal(r.exits[0]?.[0].pid, first.pid);
  assert.equal(r.exits[0]?.[1].code, 7);
  assert.equal(second.id, 'web-1');
  assert.notEqual(second.pid, first.pid);
  assert.equal(second.restarts, 1);
  assert.ok(gone(first.pid));
  assert.equal((await whoami(second.port)).pid, second.pid);
  const kinds = r.events.map((e) => e.type);
  assert.ok(kinds.indexOf('exited') < kinds.indexOf('restarting'), kinds.join(' '));
  await r.sup.stop();
  assert.ok(gone(second.pid));
});

test('scale up, then down: the highest replicas drain (onStopping) before they get SIGTERM', async () => {
  const r = supervise();
  r.sup.start(1);
  await r.sup.whenAllReady();
  await r.sup.scale(3);
  await r.sup.whenAllReady();
  assert.deepEqual(r.sup.list().map((s) => s.id), ['web-1', 'web-2', 'web-3']);
  const byId = new Map(r.ready.map((i) => [i.id, i]));
  await r.sup.scale(1);
  assert.deepEqual(r.sup.list().map((s) => s.id), ['web-1']);
  for (const id of ['web-2', 'web-3']) {
    const pid = (byId.get(id) as ReplicaInfo).pid;
    const drained = r.order.indexOf(`onStopping ${id} alive`);
    const termed = r.order.indexOf(`line [web/${id}] got SIGTERM ${pid}`);
    assert.ok(drained >= 0 && termed >= 0, r.order.join('\n'));
    assert.ok(drained < termed, `${id}: onStopping before SIGTERM\n${r.order.join('\n')}`);
    assert.ok(gone(pid), `${id} (pid ${pid}) gone once scale() resolved`);
  }
  assert.ok(!r.order.includes('onStopping web-1 alive'));
  const one = byId.get('web-1') as ReplicaInfo;
  assert.ok(!gone(one.pid));
  assert.equal((await whoami(one.port)).id, 'web-1');
  await r.sup.stop();
  assert.ok(gone(one.pid));
});

test('a child that ignores SIGTERM is SIGKILLed after stopTimeout', async () => {
  const r = supervise({ args: ['stubborn.mjs'], readiness: { type: 'tcp', path: '/health', intervalMs: 50, timeoutMs: 1000, initialDelayMs: 0, deadlineMs: 20_000 }, stopTimeoutMs: 500 });
  r.sup.start(1);
  await r.sup.whenAllReady();
  const pid = (r.ready[0] as ReplicaInfo).pid;
  const t0 = Date.now();
  await r.sup.stop();
  const elapsed = Date.now() - t0;
  assert.ok(gone(pid));
  assert.ok(r.lines.includes('[web/web-1] ignoring SIGTERM'), r.lines.join('\n'));
  const killed = r.events.find((e) => e.type === 'killed');
  assert.ok(killed !== undefined, 'a killed event');
  const exited = r.events.find((e) => e.type === 'exited');
  assert.equal(exited?.type === 'exited' ? exited.signal : undefined, 'SIGKILL');
  assert.ok(elapsed >= 450, `SIGKILL came only after the stop timeout (${elapsed}ms)`);
});

test('the whole process group stops: a shell wrapper\'s children too', async () => {
  const pidFile = join(dir.path, 'grandchild.pid');
  const r = supervise({
    command: 'sh',
    args: ['-c', `"${process.execPath}" sleeper.mjs "${pidFile}" & exec "${process.execPath}" server.mjs`],
  });
  r.sup.start(1);
  await r.sup.whenAllReady();
  const grandchild = await waitFor(() => Number(readFileSync(pidFile, 'utf8')) || 0, { what: 'the grandchild pid' });
  assert.ok(!gone(grandchild));
  await r.sup.stop();
  assert.ok(gone((r.ready[0] as ReplicaInfo).pid));
  assert.ok(gone(grandchild), `grandchild ${grandchild} left behind`);
});

test('a replica that crashes on start is given up after maxRestarts; nothing is left', async () => {
  const r = supervise({ args: ['-e', 'process.exit(3)'], restart: { baseMs: 10, capMs: 20, resetAfterMs: 30_000, maxRestarts: 2 } });
  r.sup.start(1);
  await assert.rejects(r.sup.whenAllReady(), /gave up after 2 restart/);
  const exited = r.events.filter((e): e is Extract<SupervisorEvent, { type: 'exited' }> => e.type === 'exited');
  assert.deepEqual(exited.map((e) => e.code), [3, 3, 3]);
  assert.deepEqual(r.exits, [], 'never ready, so no onExit');
  await r.sup.stop();
  for (const e of exited) assert.ok(e.pid !== null && gone(e.pid));
});

test('probeOnce: HTTP 2xx/3xx pass, others and refused connections fail; TCP connects', async () => {
  const srv: Server = createServer((req, res) => {
    res.statusCode = req.url === '/ok' ? 200 : req.url === '/moved' ? 301 : 503;
    res.end();
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  const tcp = createTcpServer((s) => s.destroy());
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const tcpPort = (tcp.address() as { port: number }).port;
  try {
    const http = (path: string, p = port) => probeOnce({ type: 'http', host: '127.0.0.1', port: p, path }, 2000, systemClock);
    assert.deepEqual(await http('/ok'), { ok: true, reason: 'HTTP 200 from GET /ok' });
    assert.equal((await http('/moved')).ok, true);
    assert.deepEqual(await http('/down'), { ok: false, reason: 'HTTP 503 from GET /down (expected 2xx or 3xx)' });
    const closed = await closedPort();
    assert.deepEqual(await http('/ok', closed), { ok: false, reason: 'GET /ok: ECONNREFUSED' });
    assert.deepEqual(await probeOnce({ type: 'tcp', host: '127.0.0.1', port: tcpPort, path: '/' }, 2000, systemClock), { ok: true, reason: `TCP connect to port ${tcpPort} succeeded` });
    assert.equal((await probeOnce({ type: 'tcp', host: '127.0.0.1', port: closed, path: '/' }, 2000, systemClock)).ok, false);
  } finally {
    srv.close();
    tcp.close();
  }
});
