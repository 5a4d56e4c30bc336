/**
 * The process supervisor of one service: runs its replicas as child processes, tells the caller
 * when one is ready (to register it) and before one stops (to deregister it), restarts crashed
 * replicas with exponential backoff, and scales up and down.
 *
 * One replica's life:
 *
 *   assign a port -> spawn (env: SKEIN_SERVICE, SKEIN_INSTANCE_ID, SKEIN_VERSION, PORT) -> probe readiness
 *     -> onReady (register) -> running
 *     -> planned stop (scale down, stop()):  onStopping (deregister, awaited) -> SIGTERM
 *                                             -> SIGKILL after stopTimeout -> gone
 *     -> crash (exits on its own):            onExit (deregister) -> backoff -> spawn again
 *     -> not ready by the readiness deadline: SIGTERM/SIGKILL -> backoff -> spawn again
 *
 * Every onReady is followed by exactly one onStopping (planned stop) or onExit (crash) for the
 * same replica run; a replica that never became ready gets neither.
 *
 * Each child runs in its own process group (POSIX): the terminal's Ctrl-C reaches only Skein,
 * which then drains before it signals the children, and signals go to the whole group, so a
 * `sh -c` wrapper's children stop too. A replica counts as stopped when its whole group is gone.
 * The price: if Skein itself is SIGKILLed, its children live on (nothing can catch that);
 * `killAll()` is the synchronous last resort for an exit handler.
 *
 * Why one file of ~650 lines: a replica's life (start, ready, restart with backoff, drain, stop,
 * scale) is one state machine over a child process, and its transitions are read together.
 */
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Backoff, type Rng } from '../core/backoff.js';
import { systemClock, type Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { assignPort, type PortAllocator, type PortLease } from './ports.js';
import { probeOnce, sleep, waitUntilReady, type ReadinessProbe, type ReadinessTiming } from './readiness.js';

/** What the supervisor needs of a service; a MeshService (src/api/mesh.ts) has all of it. */
export interface SupervisedService {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Given to each replica as SKEIN_VERSION ("" or absent: none). */
  readonly version?: string;
  readonly port: { readonly env: string };
  readonly readiness: ReadinessTiming & { readonly type: 'http' | 'tcp'; readonly path: string };
  readonly restart: { readonly baseMs: number; readonly capMs: number; readonly resetAfterMs: number; readonly maxRestarts: number | null };
  readonly stopTimeoutMs: number;
}

export const MAX_SUPERVISED_REPLICAS = 100;

/** One run of a replica, as the hooks see it. */
export interface ReplicaInfo {
  readonly service: string;
  /** `<service>-<index>`; stays the same across restarts. */
  readonly id: string;
  /** 1-based. */
  readonly index: number;
  readonly address: string;
  readonly port: number;
  readonly pid: number;
  /** How many times this replica has been restarted before this run. */
  readonly restarts: number;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (e.g. "spawn foo ENOENT"). */
  readonly error?: string;
}

export type ReplicaState = 'waiting' | 'starting' | 'ready' | 'draining' | 'stopping' | 'backoff' | 'failed' | 'stopped';

export interface ReplicaStatus {
  readonly id: string;
  readonly index: number;
  readonly state: ReplicaState;
  readonly pid: number | null;
  readonly port: number | null;
  readonly restarts: number;
  /** When (clock ms) it last became ready; null while it is not ready. */
  readonly readySince: number | null;
}

interface EventBase {
  readonly service: string;
  readonly id: string;
}
export type SupervisorEvent =
  | (EventBase & { readonly type: 'started'; readonly pid: number; readonly port: number })
  | (EventBase & { readonly type: 'ready'; readonly pid: number; readonly port: number; readonly reason: string })
  | (EventBase & { readonly type: 'unready'; readonly pid: number; readonly reason: string })
  | (EventBase & { readonly type: 'stopping'; readonly pid: number })
  | (EventBase & { readonly type: 'killed'; readonly pid: number; readonly afterMs: number })
  | (EventBase & { readonly type: 'exited'; readonly pid: number | null; readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly expected: boolean; readonly uptimeMs: number; readonly error?: string })
  | (EventBase & { readonly type: 'restarting'; readonly delayMs: number; readonly attempt: number })
  | (EventBase & { readonly type: 'failed'; readonly restarts: number })
  | (EventBase & { readonly type: 'stopped' })
  | (EventBase & { readonly type: 'hook-error'; readonly hook: 'onReady' | 'onStopping' | 'onExit'; readonly error: unknown })
  | (EventBase & { readonly type: 'error'; readonly error: unknown });

/** How child processes are started, signalled and watched (injectable for unit tests). */
export interface ProcessControl {
  spawn(command: string, args: readonly string[], opts: { cwd: string | undefined; env: NodeJS.ProcessEnv }): ChildProcess;
  /** Sends `signal` to the child and everything in its process group; never throws. */
  signal(child: ChildProcess, signal: NodeJS.Signals): void;
  /** Whether anything of the child's process group is still running. */
  alive(child: ChildProcess): boolean;
}

const POSIX = process.platform !== 'win32';

export const processGroups: ProcessControl = {
  spawn(command, args, opts) {
    return nodeSpawn(command, [...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: POSIX });
  },
  signal(child, signal) {
    const pid = child.pid;
    if (pid === undefined) return;
    try {
      if (POSIX) process.kill(-pid, signal);
      else child.kill(signal);
    } catch {
      /* already gone */
    }
  },
  alive(child) {
    const pid = child.pid;
    if (pid === undefined) return false;
    if (!POSIX) return child.exitCode === null && child.signalCode === null;
    try {
      process.kill(-pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  },
};

export type OutputSink = (line: string, stream: 'stdout' | 'stderr', replica: { service: string; id: string }) => void;

const defaultSink: OutputSink = (line, stream) => {
  (stream === 'stderr' ? process.stderr : process.stdout).write(`${line}\n`);
};

type Hook<A extends unknown[]> = (...args: A) => void | Promise<void>;

export interface SupervisorOptions {
  service: SupervisedService;
  /** Replica ids are `<idPrefix>-<index>`. Default the service name (a rollout gives each revision its own). */
  idPrefix?: string;
  /** Working directory of the children (resolved by the caller). Default: this process's. */
  cwd?: string;
  /** The environment the children start from. Default process.env. */
  baseEnv?: NodeJS.ProcessEnv;
  /** Mesh-provided variables (HTTP_PROXY, the control plane address, ...): over baseEnv, under the service's own env. */
  extraEnv?: Readonly<Record<string, string>>;
  /**
   * Variables made anew for each start of a replica (its credentials: a join token is spent by its
   * first use), over extraEnv. A failure is a failed start (retried with backoff).
   */
  startEnv?: (replica: string) => Promise<Readonly<Record<string, string>>>;
  /** Address the children listen on and are probed at. Default 127.0.0.1. */
  host?: string;
  clock?: Clock;
  /** Random source of the backoff jitter. Default Math.random. */
  rng?: Rng;
  /** Receives every output line, already prefixed with `[service/id] `. Default: this process's stdout/stderr. */
  output?: OutputSink;
  /** A replica passed its readiness probe (register it). Awaited before the replica counts as ready. */
  onReady?: Hook<[ReplicaInfo]>;
  /** A ready replica is about to get SIGTERM (deregister it and let connections drain). Awaited. */
  onStopping?: Hook<[ReplicaInfo]>;
  /** A ready replica exited on its own (deregister it). Awaited before the restart is scheduled. */
  onExit?: Hook<[ReplicaInfo, ExitInfo]>;
  /** Lifecycle events, for logs. */
  onEvent?: (e: SupervisorEvent) => void;
  /** Advanced / tests. */
  processes?: ProcessControl;
  ports?: PortAllocator;
  probe?: ReadinessProbe;
  /** Poll period while waiting for a process group to vanish. Default 20 ms. */
  groupPollMs?: number;
}

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
}

/** Context the replicas share with their supervisor. */
interface Ctx {
  readonly svc: SupervisedService;
  readonly opts: SupervisorOptions;
  readonly clock: Clock;
  readonly host: string;
  readonly processes: ProcessControl;
  readonly ports: PortAllocator;
  readonly probe: ReadinessProbe;
  readonly output: OutputSink;
  readonly idPrefix: string;
  emit(e: SupervisorEvent): void;
  changed(): void;
}

type RunOutcome = { kind: 'stopped' } | { kind: 'crashed'; wasReady: boolean; uptimeMs: number };

function abortPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

class Replica {
  readonly id: string;
  state: ReplicaState = 'waiting';
  pid: number | null = null;
  port: number | null = null;
  restarts = 0;
  readySince: number | null = null;
  done: Promise<void> = Promise.resolve();
  private consecutive = 0;
  private readonly backoff: Backoff;
  private readonly stopCtl = new AbortController();
  private child: ChildProcess | null = null;

  constructor(
    private readonly ctx: Ctx,
    readonly index: number,
  ) {
    this.id = `${ctx.idPrefix}-${index}`;
    const r = ctx.svc.restart;
    this.backoff = new Backoff({ baseMs: Math.max(1, r.baseMs), capMs: Math.max(1, r.baseMs, r.capMs), rng: ctx.opts.rng });
  }

  get stopRequested(): boolean {
    return this.stopCtl.signal.aborted;
  }

  status(): ReplicaStatus {
    return { id: this.id, index: this.index, state: this.state, pid: this.pid, port: this.port, restarts: this.restarts, readySince: this.readySince };
  }

  /** Starts the loop once `after` (the previous holder of this index stopping) has settled. */
  run(after: Promise<void>): void {
    this.done = (async () => {
      await after;
      try {
        if (!this.stopRequested) await this.loop();
      } catch (e) {
        this.ctx.emit({ type: 'error', service: this.ctx.svc.name, id: this.id, error: e });
      } finally {
        this.pid = null;
        this.port = null;
        this.set('stopped');
        this.ctx.emit({ type: 'stopped', service: this.ctx.svc.name, id: this.id });
      }
    })();
  }

  /** Drains and stops; resolves when the process (group) is gone. */
  stop(): Promise<void> {
    this.stopCtl.abort();
    return this.done;
  }

  /** Synchronous last resort: SIGKILL the process group now. */
  kill(): void {
    if (this.child !== null) this.ctx.processes.signal(this.child, 'SIGKILL');
  }

  private set(state: ReplicaState): void {
    if (state === 'ready' && this.state !== 'ready') this.readySince = this.ctx.clock.now();
    else if (state !== 'ready') this.readySince = null;
    this.state = state;
    this.ctx.changed();
  }

  private async hook<A extends unknown[]>(name: 'onReady' | 'onStopping' | 'onExit', fn: Hook<A> | undefined, ...args: A): Promise<void> {
    if (fn === undefined) return;
    try {
      await fn(...args);
    } catch (error) {
      this.ctx.emit({ type: 'hook-error', service: this.ctx.svc.name, id: this.id, hook: name, error });
    }
  }

  private async loop(): Promise<void> {
    const { svc, clock } = this.ctx;
    for (;;) {
      const r = await this.once();
      if (r.kind === 'stopped' || this.stopRequested) return;
      if (r.wasReady && r.uptimeMs >= svc.restart.resetAfterMs) {
        this.backoff.reset();
        this.consecutive = 0;
      }
      const max = svc.restart.maxRestarts;
      if (max !== null && this.consecutive >= max) {
        this.set('failed');
        this.ctx.emit({ type: 'failed', service: svc.name, id: this.id, restarts: this.restarts });
        await abortPromise(this.stopCtl.signal);
        return;
      }
      this.consecutive++;
      const delayMs = this.backoff.next();
      this.set('backoff');
      this.ctx.emit({ type: 'restarting', service: svc.name, id: this.id, delayMs, attempt: this.consecutive });
      await sleep(clock, delayMs, this.stopCtl.signal);
      if (this.stopRequested) return;
      this.restarts++;
    }
  }

  /** One run of the process, from port assignment to its exit. */
  private async once(): Promise<RunOutcome> {
    const { svc, clock, opts, host } = this.ctx;
    this.set('starting');
    let lease: PortLease;
    try {
      lease = await this.ctx.ports(host);
    } catch (error) {
      this.ctx.emit({ type: 'error', service: svc.name, id: this.id, error });
      return { kind: 'crashed', wasReady: false, uptimeMs: 0 };
    }
    try {
      if (this.stopRequested) return { kind: 'stopped' };
      let startEnv: Readonly<Record<string, string>> = {};
      try {
        startEnv = (await opts.startEnv?.(this.id)) ?? {};
      } catch (error) {
        this.ctx.emit({ type: 'error', service: svc.name, id: this.id, error });
        return { kind: 'crashed', wasReady: false, uptimeMs: 0 };
      }
      if (this.stopRequested) return { kind: 'stopped' };
      const port = lease.port;
      this.port = port;
      const env: NodeJS.ProcessEnv = {
        ...(opts.baseEnv ?? process.env),
        ...(opts.extraEnv ?? {}),
        ...startEnv,
        ...svc.env,
        SKEIN_SERVICE: svc.name,
        SKEIN_INSTANCE_ID: this.id,
        SKEIN_VERSION: svc.version ?? '',
        [svc.port.env]: String(port),
      };
      const startedAt = clock.now();
      let child: ChildProcess;
      try {
        child = this.ctx.processes.spawn(svc.command, svc.args, { cwd: opts.cwd, env });
      } catch (e) {
        this.exited(null, { code: null, signal: null, error: (e as Error).message }, false, 0);
        return { kind: 'crashed', wasReady: false, uptimeMs: 0 };
      }
      this.child = child;
      const exit = new Promise<ExitInfo>((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.on('error', (e) => {
          if (child.pid === undefined) resolve({ code: null, signal: null, error: e.message });
        });
      });
      try {
        return await this.supervise(child, exit, port, startedAt);
      } catch (e) {
        // A bug of ours: leave no process behind, then report it.
        this.ctx.processes.signal(child, 'SIGKILL');
        await exit;
        throw e;
      } finally {
        this.child = null;
        this.pid = null;
      }
    } finally {
      lease.release();
      this.port = null;
    }
  }

  private async supervise(child: ChildProcess, exit: Promise<ExitInfo>, port: number, startedAt: number): Promise<RunOutcome> {
    const { svc, clock, host } = this.ctx;
    const pid = child.pid;
    if (pid === undefined) {
      const e = await exit;
      this.exited(null, e, false, 0);
      return { kind: 'crashed', wasReady: false, uptimeMs: 0 };
    }
    this.pid = pid;
    this.pipe(child);
    this.ctx.emit({ type: 'started', service: svc.name, id: this.id, pid, port });

    // Readiness, unless the process exits or a stop is requested first.
    const seen: { exit: ExitInfo | null } = { exit: null };
    const probeCtl = new AbortController();
    const stopSignal = this.stopCtl.signal;
    const onStop = () => probeCtl.abort();
    stopSignal.addEventListener('abort', onStop, { once: true });
    void exit.then((e) => {
      seen.exit = e;
      probeCtl.abort();
    });
    const readiness = await waitUntilReady(
      { type: svc.readiness.type, host, port, path: svc.readiness.path },
      svc.readiness,
      { clock, signal: probeCtl.signal, probe: this.ctx.probe },
    );
    stopSignal.removeEventListener('abort', onStop);

    if (seen.exit !== null) return this.crashed(child, seen.exit, null, startedAt);
    if (this.stopRequested) {
      await this.stopProcess(child, exit, null, startedAt);
      return { kind: 'stopped' };
    }
    if (!readiness.ready) {
      this.ctx.emit({ type: 'unready', service: svc.name, id: this.id, pid, reason: readiness.reason });
      this.set('stopping');
      await this.terminate(child, exit);
      this.exited(pid, await exit, false, clock.now() - startedAt);
      return { kind: 'crashed', wasReady: false, uptimeMs: clock.now() - startedAt };
    }

    const info: ReplicaInfo = { service: svc.name, id: this.id, index: this.index, address: host, port, pid, restarts: this.restarts };
    this.ctx.emit({ type: 'ready', service: svc.name, id: this.id, pid, port, reason: readiness.reason });
    await this.hook('onReady', this.ctx.opts.onReady, info);
    if (seen.exit === null && !this.stopRequested) this.set('ready');
    const which = await Promise.race([exit.then(() => 'exit' as const), abortPromise(stopSignal).then(() => 'stop' as const)]);
    // An exit (even one during onReady, or just as a stop was asked for) is a crash for the
    // hooks: onExit. The loop sees the stop request and does not restart.
    if (which === 'exit') return this.crashed(child, await exit, info, startedAt);
    await this.stopProcess(child, exit, info, startedAt);
    return { kind: 'stopped' };
  }

  /** The process exited on its own. */
  private async crashed(child: ChildProcess, e: ExitInfo, info: ReplicaInfo | null, startedAt: number): Promise<RunOutcome> {
    const uptimeMs = this.ctx.clock.now() - startedAt;
    this.set('stopping');
    this.exited(child.pid ?? null, e, false, uptimeMs);
    if (info !== null) await this.hook('onExit', this.ctx.opts.onExit, info, e);
    // The leader is gone; whatever it left in its group is stopped too.
    if (this.ctx.processes.alive(child)) {
      await this.terminate(child, Promise.resolve());
    }
    return { kind: 'crashed', wasReady: info !== null, uptimeMs };
  }

  /** A planned stop: drain (onStopping, awaited), then SIGTERM, then SIGKILL after stopTimeout. */
  private async stopProcess(child: ChildProcess, exit: Promise<ExitInfo>, info: ReplicaInfo | null, startedAt: number): Promise<void> {
    const pid = child.pid as number;
    if (info !== null) {
      this.set('draining');
      this.ctx.emit({ type: 'stopping', service: this.ctx.svc.name, id: this.id, pid });
      await this.hook('onStopping', this.ctx.opts.onStopping, info);
    }
    this.set('stopping');
    await this.terminate(child, exit);
    this.exited(pid, await exit, true, this.ctx.clock.now() - startedAt);
  }

  /** SIGTERM to the group, SIGKILL after stopTimeout; resolves when the leader exited and the group is gone. */
  private async terminate(child: ChildProcess, exit: Promise<unknown>): Promise<void> {
    const { processes, clock, svc } = this.ctx;
    const pid = child.pid as number;
    const timeoutMs = svc.stopTimeoutMs;
    const killed: { at: number | null } = { at: null };
    const kill = () => {
      killed.at = clock.now();
      processes.signal(child, 'SIGKILL');
      this.ctx.emit({ type: 'killed', service: svc.name, id: this.id, pid, afterMs: timeoutMs });
    };
    if (timeoutMs <= 0) kill();
    else processes.signal(child, 'SIGTERM');
    const timer = timeoutMs > 0 ? clock.setTimeout(kill, timeoutMs) : { cancel: () => undefined };
    try {
      await exit;
      const poll = this.ctx.opts.groupPollMs ?? 20;
      while (processes.alive(child)) {
        // After SIGKILL the kernel needs a moment; give up watching after 5 s (a process stuck in the kernel).
        if (killed.at !== null && clock.now() - killed.at > 5000) break;
        await sleep(clock, poll);
      }
    } finally {
      timer.cancel();
    }
  }

  private exited(pid: number | null, e: ExitInfo, expected: boolean, uptimeMs: number): void {
    const ev: SupervisorEvent = { type: 'exited', service: this.ctx.svc.name, id: this.id, pid, code: e.code, signal: e.signal, expected, uptimeMs };
    this.ctx.emit(e.error === undefined ? ev : { ...ev, error: e.error });
  }

  private pipe(child: ChildProcess): void {
    const prefix = `[${this.ctx.svc.name}/${this.id}] `;
    const who = { service: this.ctx.svc.name, id: this.id };
    for (const stream of ['stdout', 'stderr'] as const) {
      const input = child[stream];
      if (input === null) continue;
      const rl = createInterface({ input, crlfDelay: Infinity });
      rl.on('line', (line) => {
        try {
          this.ctx.output(prefix + line, stream, who);
        } catch {
          /* a broken sink must not take the supervisor down */
        }
      });
      input.on('error', () => rl.close());
    }
  }
}

/** Supervises the replicas of one service. */
export class Supervisor {
  readonly service: string;
  private readonly ctx: Ctx;
  private readonly replicas = new Map<number, Replica>();
  /** Replicas on their way out, by index: a new replica with the same index waits for them. */
  private readonly leaving = new Map<number, Promise<void>>();
  /** Every replica whose loop has not ended, leaving ones included (for killAll). */
  private readonly live = new Set<Replica>();
  /**
   * A ref'd handle held while any replica lives: Clock timers may be unref'd (systemClock's
   * are), and a backoff delay or a stop timeout must not let the process exit under us.
   */
  private keepAlive: NodeJS.Timeout | null = null;
  private desired = 0;
  private started = false;
  private stopping: Promise<void> | null = null;
  private waiters: Waiter[] = [];
  private listeners = new Set<(e: SupervisorEvent) => void>();

  constructor(opts: SupervisorOptions) {
    const svc = opts.service;
    this.service = svc.name;
    if (opts.onEvent !== undefined) this.listeners.add(opts.onEvent);
    this.ctx = {
      svc,
      opts,
      clock: opts.clock ?? systemClock,
      host: opts.host ?? '127.0.0.1',
      processes: opts.processes ?? processGroups,
      ports: opts.ports ?? assignPort,
      probe: opts.probe ?? probeOnce,
      output: opts.output ?? defaultSink,
      idPrefix: opts.idPrefix ?? svc.name,
      emit: (e) => {
        for (const l of this.listeners) {
          try {
            l(e);
          } catch {
            /* a listener's problem */
          }
        }
      },
      changed: () => this.settleWaiters(),
    };
  }

  /** Adds an event listener; returns a function that removes it. */
  on(listener: (e: SupervisorEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The number of replicas asked for. */
  get replicaCount(): number {
    return this.desired;
  }

  /** Replicas that are ready now (registered, when onReady registers). */
  get readyCount(): number {
    let n = 0;
    for (const r of this.replicas.values()) if (r.state === 'ready') n++;
    return n;
  }

  /** The current replicas (not those being scaled away), by index. */
  list(): ReplicaStatus[] {
    return [...this.replicas.values()].sort((a, b) => a.index - b.index).map((r) => r.status());
  }

  /** The replicas being scaled away whose process has not exited yet (draining or stopping), by index. */
  leavingList(): ReplicaStatus[] {
    return [...this.live].filter((r) => ![...this.replicas.values()].includes(r)).sort((a, b) => a.index - b.index).map((r) => r.status());
  }

  /** Starts `replicas` replicas. Returns once they are launched; see whenAllReady(). */
  start(replicas: number): void {
    if (this.started) throw new SkeinError('SKEIN_E_CONFLICT', `supervisor of "${this.service}" was already started`);
    this.apply(replicas);
  }

  /**
   * Changes the number of replicas. New ones start at once, each with the lowest free index
   * (ids fill up from `<service>-1`); surplus ones are drained and stopped, those not ready first
   * (as a Kubernetes ReplicaSet does), then the highest-numbered; replicas that were given up
   * (maxRestarts) start afresh. Resolves when the surplus replicas are gone (not when the new ones
   * are ready).
   */
  async scale(n: number): Promise<void> {
    const removed = this.apply(n);
    await Promise.all(removed.map((r) => r.done));
  }

  /** Validates n, starts and stops replicas; returns the ones being stopped. */
  private apply(n: number): Replica[] {
    if (!Number.isInteger(n) || n < 0 || n > MAX_SUPERVISED_REPLICAS) {
      throw new SkeinError('SKEIN_E_VALIDATION', `replicas of "${this.service}" must be an integer from 0 to ${MAX_SUPERVISED_REPLICAS}, not ${String(n)}`, { field: 'replicas' });
    }
    if (this.stopping !== null) throw new SkeinError('SKEIN_E_SHUTTING_DOWN', `supervisor of "${this.service}" is stopping`);
    this.started = true;
    this.desired = n;
    const removed: Replica[] = [];
    const retire = (index: number) => {
      const r = this.replicas.get(index) as Replica;
      this.replicas.delete(index);
      removed.push(r);
      const gone = r.stop().finally(() => {
        if (this.leaving.get(index) === gone) this.leaving.delete(index);
      });
      this.leaving.set(index, gone);
    };
    // Replicas given up (maxRestarts), which a scale command starts afresh; then the surplus,
    // those not ready first (a rollout counts on the ready ones staying), highest-numbered first.
    for (const [index, r] of [...this.replicas]) if (r.state === 'failed') retire(index);
    const surplus = [...this.replicas.values()].sort((a, b) => Number(a.state === 'ready') - Number(b.state === 'ready') || b.index - a.index);
    for (const r of surplus.slice(0, Math.max(0, this.replicas.size - n))) retire(r.index);
    for (let index = 1; this.replicas.size < n; index++) {
      if (this.replicas.has(index)) continue;
      const r = new Replica(this.ctx, index);
      this.replicas.set(index, r);
      this.live.add(r);
      this.keepAlive ??= setInterval(() => undefined, 1 << 30);
      r.run(this.leaving.get(index) ?? Promise.resolve());
      void r.done.then(() => {
        this.live.delete(r);
        if (this.live.size === 0 && this.keepAlive !== null) {
          clearInterval(this.keepAlive);
          this.keepAlive = null;
        }
      });
    }
    this.settleWaiters();
    return removed;
  }

  /**
   * Resolves when every replica asked for is ready at the same time (at once for 0 replicas).
   * Rejects when one gives up (maxRestarts) or the supervisor stops first. No timeout of its
   * own: race it with one.
   */
  whenAllReady(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.settleWaiters();
    });
  }

  /**
   * Drains and stops every replica (onStopping awaited, then SIGTERM, then SIGKILL after
   * stopTimeout), in parallel. Resolves only when every child process (group) has exited.
   * Idempotent; the supervisor cannot be started again.
   */
  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.desired = 0;
    const all = [...this.replicas.values()];
    this.replicas.clear();
    this.settleWaiters();
    this.stopping = Promise.all([...all.map((r) => r.stop()), ...this.leaving.values()]).then(() => undefined);
    return this.stopping;
  }

  /** Synchronous last resort (for a process 'exit' handler): SIGKILL every child's process group. */
  killAll(): void {
    for (const r of this.live) r.kill();
  }

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    let error: Error | null = null;
    if (this.stopping !== null) error = new Error(`supervisor of "${this.service}" stopped before all replicas were ready`);
    else {
      const failed = [...this.replicas.values()].find((r) => r.state === 'failed');
      if (failed !== undefined) error = new Error(`replica ${failed.id} gave up after ${failed.restarts} restart(s)`);
    }
    if (error === null && (this.replicas.size !== this.desired || this.readyCount !== this.desired)) return;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) {
      if (error === null) w.resolve();
      else w.reject(error);
    }
  }
}
