/**
 * Supervisor logic with fake processes, ports and probes on a ManualClock: no process, socket or
 * sleep. test/supervisor.test.ts runs the same life cycle with real child processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ChildProcess } from 'node:child_process';
import { parseMeshFile } from '../api/mesh.js';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import type { PortAllocator } from './ports.js';
import type { ReadinessProbe } from './readiness.js';
import { Supervisor, type ExitInfo, type ProcessControl, type ReplicaInfo, type SupervisedService, type SupervisorEvent, type SupervisorOptions } from './supervisor.js';

class FakeChild extends EventEmitter {
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  exited = false;
  ignoreTerm = false;
  constructor(
    readonly pid: number | undefined,
    readonly env: NodeJS.ProcessEnv,
    readonly cwd: string | undefined,
  ) {
    super();
  }
  /** The process exits on its own. */
  exit(code: number | null, signal: NodeJS.Signals | null = null): void {
    if (this.exited) return;
    this.exited = true;
    this.stdout.end();
    this.stderr.end();
    this.emit('exit', code, signal);
  }
}

class FakeProcesses implements ProcessControl {
  children: FakeChild[] = [];
  nextPid = 1000;
  failSpawn = false;
  ignoreTerm = false;
  constructor(private readonly log: string[]) {}
  spawn(command: string, args: readonly string[], opts: { cwd: string | undefined; env: NodeJS.ProcessEnv }): ChildProcess {
    const c = new FakeChild(this.failSpawn ? undefined : this.nextPid++, opts.env, opts.cwd);
    c.ignoreTerm = this.ignoreTerm;
    this.children.push(c);
    this.log.push(`spawn ${command} ${args.join(' ')} ${c.pid ?? '-'}`);
    if (c.pid === undefined) setImmediate(() => c.emit('error', new Error(`spawn ${command} ENOENT`)));
    return c as unknown as ChildProcess;
  }
  signal(child: ChildProcess, signal: NodeJS.Signals): void {
    const c = child as unknown as FakeChild;
    this.log.push(`${signal} ${c.pid}`);
    if (signal === 'SIGKILL' || (signal === 'SIGTERM' && !c.ignoreTerm)) setImmediate(() => c.exit(null, signal));
  }
  alive(child: ChildProcess): boolean {
    return !(child as unknown as FakeChild).exited;
  }
  last(): FakeChild {
    return this.children[this.children.length - 1] as FakeChild;
  }
  running(): FakeChild[] {
    return this.children.filter((c) => c.pid !== undefined && !c.exited);
  }
}

function service(overrides: Partial<SupervisedService> = {}): SupervisedService {
  return {
    name: 'web',
    command: 'node',
    args: ['server.js'],
    env: { GREETING: 'hi', HTTP_PROXY: 'http://mine' },
    port: { env: 'PORT' },
    readiness: { type: 'http', path: '/health', intervalMs: 100, timeoutMs: 50, initialDelayMs: 0, deadlineMs: 1000 },
    restart: { baseMs: 100, capMs: 400, resetAfterMs: 30_000, maxRestarts: null },
    stopTimeoutMs: 500,
    ...overrides,
  };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

/** Runs event-loop turns until `cond` holds (no wall-clock waiting). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  assert.fail(`never happened: ${what}`);
}

function harness(opts: Partial<SupervisorOptions> & { svc?: Partial<SupervisedService>; rng?: () => number } = {}) {
  const log: string[] = [];
  const clock = new ManualClock(0);
  const procs = new FakeProcesses(log);
  let nextPort = 40_000;
  const ports: PortAllocator = async () => ({ port: nextPort++, release: () => undefined });
  const notReady = new Set<number>();
  const probe: ReadinessProbe = async (t) => (notReady.has(t.port) ? { ok: false, reason: 'connect ECONNREFUSED' } : { ok: true, reason: 'HTTP 200' });
  const events: SupervisorEvent[] = [];
  const ready: ReplicaInfo[] = [];
  const exits: Array<[ReplicaInfo, ExitInfo]> = [];
  const lines: string[] = [];
  const sup = new Supervisor({
    service: service(opts.svc),
    clock,
    rng: opts.rng ?? (() => 0.5),
    processes: procs,
    ports,
    probe,
    cwd: '/srv/web',
    baseEnv: { PATH: '/bin', HTTP_PROXY: 'http://base' },
    extraEnv: { HTTP_PROXY: 'http://mesh', SKEIN_CONTROL: 'http://127.0.0.1:7400' },
    output: (line, stream) => lines.push(`${stream} ${line}`),
    onReady: (i) => {
      log.push(`onReady ${i.id} ${i.pid}`);
      ready.push(i);
    },
    onStopping: (i) => {
      log.push(`onStopping ${i.id} ${i.pid}`);
    },
    onExit: (i, e) => {
      log.push(`onExit ${i.id} ${i.pid} ${e.code}`);
      exits.push([i, e]);
    },
    onEvent: (e) => events.push(e),
    ...opts,
  });
  const ofType = <T extends SupervisorEvent['type']>(type: T) => events.filter((e): e is Extract<SupervisorEvent, { type: T }> => e.type === type);
  return { sup, clock, procs, log, events, ofType, ready, exits, lines, notReady };
}

test('start: each replica gets a port, its env and an id; onReady once it is ready', async () => {
  const h = harness({ svc: { env: { GREETING: 'hi' } } });
  h.sup.start(2);
  await h.sup.whenAllReady();
  assert.equal(h.sup.readyCount, 2);
  assert.deepEqual(
    h.ready.map((r) => [r.id, r.index, r.address, r.port, r.restarts]),
    [
      ['web-1', 1, '127.0.0.1', 40_000, 0],
      ['web-2', 2, '127.0.0.1', 40_001, 0],
    ],
  );
  const env = h.procs.children[0]?.env ?? {};
  assert.equal(env['PORT'], '40000');
  assert.equal(env['SKEIN_SERVICE'], 'web');
  assert.equal(env['SKEIN_INSTANCE_ID'], 'web-1');
  assert.equal(env['GREETING'], 'hi');
  assert.equal(env['HTTP_PROXY'], 'http://mesh', 'mesh env over the base env');
  assert.equal(env['SKEIN_CONTROL'], 'http://127.0.0.1:7400');
  assert.equal(env['PATH'], '/bin');
  assert.equal(h.procs.children[0]?.cwd, '/srv/web');
  assert.deepEqual(
    h.sup.list().map((r) => [r.id, r.state, r.pid, r.port]),
    [
      ['web-1', 'ready', 1000, 40_000],
      ['web-2', 'ready', 1001, 40_001],
    ],
  );
  h.procs.children[0]?.stdout.write('hello\npartial');
  h.procs.children[0]?.stderr.write('oops\n');
  await settle();
  assert.deepEqual(h.lines, ['stdout [web/web-1] hello', 'stderr [web/web-1] oops']);
  await h.sup.stop();
});

test('the service env wins over the mesh env; the port variable can be renamed', async () => {
  const h = harness({ svc: { port: { env: 'LISTEN_PORT' } } });
  h.sup.start(1);
  await h.sup.whenAllReady();
  const env = h.procs.children[0]?.env ?? {};
  assert.equal(env['HTTP_PROXY'], 'http://mine');
  assert.equal(env['LISTEN_PORT'], '40000');
  assert.equal(env['PORT'], undefined);
  await h.sup.stop();
});

test('a crashed replica: onExit, then a restart after the backoff, with a new pid and port', async () => {
  const h = harness();
  h.sup.start(1);
  await h.sup.whenAllReady();
  const first = h.procs.last();
  first.exit(3);
  await until(() => h.ofType('restarting').length === 1, 'restarting');
  assert.deepEqual(h.exits.map(([i, e]) => [i.id, i.pid, e.code]), [['web-1', 1000, 3]]);
  const exited = h.ofType('exited')[0];
  assert.equal(exited?.expected, false);
  assert.equal(exited?.code, 3);
  assert.deepEqual(
    h.ofType('restarting').map((e) => [e.delayMs, e.attempt]),
    [[50, 1]],
    'full jitter: rng 0.5 of the first ceiling (base 100ms)',
  );
  assert.equal(h.sup.list()[0]?.state, 'backoff');
  assert.equal(h.procs.children.length, 1, 'nothing spawned before the delay');
  h.clock.advance(49);
  await settle();
  assert.equal(h.procs.children.length, 1);
  h.clock.advance(1);
  await until(() => h.ready.length === 2, 'second onReady');
  assert.deepEqual([h.ready[1]?.id, h.ready[1]?.pid, h.ready[1]?.port, h.ready[1]?.restarts], ['web-1', 1001, 40_001, 1]);
  assert.deepEqual(h.log.slice(0, 4), ['spawn node server.js 1000', 'onReady web-1 1000', 'onExit web-1 1000 3', 'spawn node server.js 1001']);
  await h.sup.stop();
});

test('consecutive failures back off exponentially up to the cap', async () => {
  const h = harness({ rng: () => 0.999 });
  h.sup.start(1);
  await h.sup.whenAllReady();
  for (let i = 0; i < 4; i++) {
    h.procs.last().exit(1);
    await until(() => h.ofType('restarting').length === i + 1, `restart ${i + 1}`);
    h.clock.advance(1000);
    await until(() => h.ready.length === i + 2, `ready ${i + 2}`);
  }
  assert.deepEqual(
    h.ofType('restarting').map((e) => [e.delayMs, e.attempt]),
    [
      [99, 1],
      [199, 2],
      [399, 3],
      [399, 4],
    ],
  );
  await h.sup.stop();
});

test('a replica that stayed up resetAfter starts its backoff over', async () => {
  const h = harness({ rng: () => 0.999, svc: { restart: { baseMs: 100, capMs: 400, resetAfterMs: 5000, maxRestarts: 2 } } });
  h.sup.start(1);
  await h.sup.whenAllReady();
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 1, 'restart 1');
  h.clock.advance(1000);
  await until(() => h.ready.length === 2, 'ready 2');
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 2, 'restart 2');
  h.clock.advance(1000);
  await until(() => h.ready.length === 3, 'ready 3');
  h.clock.advance(5000); // stays up
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 3, 'restart 3');
  assert.deepEqual(
    h.ofType('restarting').map((e) => [e.delayMs, e.attempt]),
    [
      [99, 1],
      [199, 2],
      [99, 1],
    ],
  );
  assert.equal(h.ofType('failed').length, 0, 'maxRestarts counts consecutive restarts only');
  await h.sup.stop();
});

test('maxRestarts: the replica is given up and whenAllReady rejects', async () => {
  const h = harness({ svc: { restart: { baseMs: 100, capMs: 400, resetAfterMs: 30_000, maxRestarts: 1 } } });
  h.sup.start(1);
  await h.sup.whenAllReady();
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 1, 'restart');
  h.clock.advance(1000);
  await until(() => h.ready.length === 2, 'ready again');
  const waiting = h.sup.whenAllReady();
  await waiting;
  h.procs.last().exit(1);
  await until(() => h.ofType('failed').length === 1, 'failed');
  assert.equal(h.sup.list()[0]?.state, 'failed');
  await assert.rejects(h.sup.whenAllReady(), /web-1 gave up after 1 restart/);
  h.clock.advance(60_000);
  await settle();
  assert.equal(h.procs.children.length, 2, 'no more restarts');
  await h.sup.scale(1); // a scale command starts it afresh
  await h.sup.whenAllReady();
  assert.deepEqual(h.sup.list().map((r) => [r.id, r.state, r.restarts]), [['web-1', 'ready', 0]]);
  assert.equal(h.procs.children.length, 3);
  await h.sup.stop();
  assert.deepEqual(h.ofType('stopped').map((e) => e.id), ['web-1', 'web-1']);
});

test('stop drains: onStopping before SIGTERM, SIGKILL after stopTimeout, resolves when the child is gone', async () => {
  const h = harness();
  h.procs.ignoreTerm = true;
  h.sup.start(1);
  await h.sup.whenAllReady();
  let stopped = false;
  const done = h.sup.stop().then(() => (stopped = true));
  await until(() => h.log.includes('SIGTERM 1000'), 'SIGTERM');
  assert.deepEqual(h.log, ['spawn node server.js 1000', 'onReady web-1 1000', 'onStopping web-1 1000', 'SIGTERM 1000']);
  h.clock.advance(499);
  await settle();
  assert.equal(stopped, false);
  assert.ok(!h.log.includes('SIGKILL 1000'));
  h.clock.advance(1);
  await done;
  assert.ok(h.log.includes('SIGKILL 1000'));
  assert.deepEqual(h.ofType('killed').map((e) => [e.id, e.afterMs]), [['web-1', 500]]);
  const exited = h.ofType('exited')[0];
  assert.deepEqual([exited?.expected, exited?.signal], [true, 'SIGKILL']);
  assert.deepEqual(h.exits, [], 'a planned stop is not an exit');
  assert.equal(h.procs.running().length, 0);
  assert.equal(h.clock.pending, 0, 'no timer left behind');
  await assert.rejects(h.sup.scale(1), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_SHUTTING_DOWN');
  assert.equal(await h.sup.stop(), undefined, 'stop is idempotent');
});

test('onStopping is awaited before SIGTERM', async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const h = harness({ onStopping: () => gate });
  h.sup.start(1);
  await h.sup.whenAllReady();
  const done = h.sup.stop();
  await settle();
  assert.equal(h.sup.list().length, 0);
  assert.ok(!h.log.some((l) => l.startsWith('SIGTERM')), 'no signal while draining');
  release();
  await done;
  assert.ok(h.log.includes('SIGTERM 1000'));
});

test('scale down stops the highest-numbered replicas; scale up fills the ids again', async () => {
  const h = harness();
  h.sup.start(3);
  await h.sup.whenAllReady();
  await h.sup.scale(1);
  assert.deepEqual(
    h.log.filter((l) => l.startsWith('onStopping')).sort(),
    ['onStopping web-2 1001', 'onStopping web-3 1002'],
  );
  assert.deepEqual(h.sup.list().map((r) => r.id), ['web-1']);
  assert.deepEqual(h.procs.running().map((c) => c.pid), [1000]);
  await h.sup.scale(3);
  await h.sup.whenAllReady();
  assert.deepEqual(h.sup.list().map((r) => [r.id, r.pid]), [
    ['web-1', 1000],
    ['web-2', 1003],
    ['web-3', 1004],
  ]);
  await h.sup.scale(0);
  assert.equal(h.procs.running().length, 0);
  await h.sup.whenAllReady(); // 0 of 0
  await h.sup.stop();
});

test('a replica scaled back up waits for its predecessor with the same id to be gone', async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const h = harness({ onStopping: (i) => (i.id === 'web-2' ? gate : undefined) });
  h.sup.start(2);
  await h.sup.whenAllReady();
  const down = h.sup.scale(1);
  await settle();
  const up = h.sup.scale(2);
  await settle();
  assert.equal(h.procs.children.length, 2, 'the new web-2 is not spawned while the old one drains');
  assert.equal(h.sup.list()[1]?.state, 'waiting');
  release();
  await down;
  await up;
  await h.sup.whenAllReady();
  assert.deepEqual(h.procs.running().map((c) => c.pid), [1000, 1002]);
  await h.sup.stop();
});

test('not ready by the deadline: stopped and restarted; no hooks', async () => {
  const h = harness();
  h.notReady.add(40_000);
  h.sup.start(1);
  await until(() => h.log.length === 1, 'spawn');
  for (let t = 0; t < 1000; t += 100) {
    await settle();
    h.clock.advance(100);
  }
  await until(() => h.ofType('unready').length === 1, 'unready');
  assert.match(h.ofType('unready')[0]?.reason ?? '', /^not ready within 1000ms: connect ECONNREFUSED$/);
  await until(() => h.ofType('restarting').length === 1, 'restarting');
  assert.ok(h.log.includes('SIGTERM 1000'));
  h.clock.advance(100);
  await h.sup.whenAllReady();
  assert.deepEqual(h.log, ['spawn node server.js 1000', 'SIGTERM 1000', 'spawn node server.js 1001', 'onReady web-1 1001']);
  await h.sup.stop();
});

test('a crash before readiness restarts without hooks', async () => {
  const h = harness();
  h.notReady.add(40_000);
  h.sup.start(1);
  await until(() => h.log.length === 1, 'spawn');
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 1, 'restarting');
  assert.deepEqual(h.exits, []);
  h.clock.advance(100);
  await h.sup.whenAllReady();
  assert.deepEqual(h.log, ['spawn node server.js 1000', 'spawn node server.js 1001', 'onReady web-1 1001']);
  await h.sup.stop();
});

test('a command that cannot be spawned is retried with backoff and reported', async () => {
  const h = harness();
  h.procs.failSpawn = true;
  h.sup.start(1);
  await until(() => h.ofType('restarting').length === 1, 'restarting');
  assert.match(h.ofType('exited')[0]?.error ?? '', /ENOENT/);
  h.procs.failSpawn = false;
  h.clock.advance(100);
  await h.sup.whenAllReady();
  await h.sup.stop();
});

test('stop during the backoff ends the replica at once', async () => {
  const h = harness();
  h.sup.start(1);
  await h.sup.whenAllReady();
  h.procs.last().exit(1);
  await until(() => h.ofType('restarting').length === 1, 'restarting');
  await h.sup.stop();
  assert.equal(h.procs.children.length, 1);
  assert.equal(h.clock.pending, 0);
  await assert.rejects(h.sup.whenAllReady(), /stopped/);
});

test('stop while starting: the unready child is terminated without hooks', async () => {
  const h = harness();
  h.notReady.add(40_000);
  h.sup.start(1);
  await until(() => h.log.length === 1, 'spawn');
  await h.sup.stop();
  assert.deepEqual(h.log, ['spawn node server.js 1000', 'SIGTERM 1000']);
  assert.equal(h.procs.running().length, 0);
});

test('hook failures are reported, not fatal', async () => {
  const h = harness({
    onReady: () => Promise.reject(new Error('control plane down')),
    onStopping: () => {
      throw new Error('deregister failed');
    },
  });
  h.sup.start(1);
  await h.sup.whenAllReady();
  await h.sup.stop();
  assert.deepEqual(
    h.ofType('hook-error').map((e) => [e.hook, (e.error as Error).message]),
    [
      ['onReady', 'control plane down'],
      ['onStopping', 'deregister failed'],
    ],
  );
  assert.ok(h.log.includes('SIGTERM 1000'));
});

test('bad replica counts and a second start are refused', async () => {
  const h = harness();
  for (const n of [-1, 1.5, 101, Number.NaN]) {
    await assert.rejects(h.sup.scale(n), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === 'replicas');
  }
  assert.throws(() => h.sup.start(101), /from 0 to 100/);
  h.sup.start(0);
  assert.throws(() => h.sup.start(1), /already started/);
  await h.sup.stop();
});

test('killAll sends SIGKILL to every live child at once', async () => {
  const h = harness();
  h.sup.start(2);
  await h.sup.whenAllReady();
  h.sup.killAll();
  assert.deepEqual(h.log.filter((l) => l.startsWith('SIGKILL')), ['SIGKILL 1000', 'SIGKILL 1001']);
  await h.sup.stop();
});

test('a parsed mesh service is what the supervisor takes', async () => {
  const mesh = parseMeshFile('kind: Mesh\nname: m\nservices:\n  api:\n    command: node\n    replicas: 2\n', 'm.yaml');
  const api = mesh.services[0]!;
  const svc: SupervisedService = api; // type-checks: a MeshService fits SupervisedService
  const h = harness({ service: svc });
  h.sup.start(api.replicas);
  await h.sup.whenAllReady();
  assert.deepEqual(h.sup.list().map((r) => r.id), ['api-1', 'api-2']);
  await h.sup.stop();
});
