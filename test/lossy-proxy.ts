/**
 * A TCP proxy that puts delay and loss on one path, for tests on simulated hosts (test/netns.ts):
 * the kernel here has no netem qdisc, so faults on a flow are made the way etcd's robustness tests
 * make them, by a proxy in the middle that the client dials instead of the server.
 *
 *   const p = await LossyProxy.startIn(net, 'a', { target: { host: net.address('b'), port } });
 *   // clients in other hosts (or the test process) dial p.host:p.port instead of b
 *   await p.setDelay(200);   // every chunk, each direction, 200 ms later (order kept)
 *   await p.blackhole();     // connections are accepted, nothing is forwarded; reads stop
 *   await p.restore();       // what was held goes through, as after a healed partition
 *   await p.close();
 *
 * `LossyProxy.start` runs one in this process (the root namespace, or with a ManualClock in a unit
 * test); `LossyProxy.startIn` spawns this file in a host's namespace, listening on its address,
 * and drives it over stdin/stdout with the same methods.
 *
 * Faults: `delayMs` holds each chunk read from either side that long before writing it to the
 * other; `dropProbability` resets both connections of a flow (RST) when a chunk arrives and the
 * injected random number falls under it; `dropConnections()` resets every flow now; `blackhole()`
 * is a silent partition of the proxied flows: new connections are accepted but not dialled on,
 * existing ones stop being read (TCP back-pressure fills up), queued data waits, nothing is closed.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { systemClock, type Clock, type TimerHandle } from '../src/core/clock.js';
import { SkeinError } from '../src/core/errors.js';
import type { Topology } from './netns.js';

/** Queued bytes per direction above which the proxy stops reading that side. */
const HIGH_WATER = 1 << 20;

export interface LossyProxyOptions {
  /** Where to forward each accepted connection. */
  readonly target: { readonly host: string; readonly port: number };
  /** Where to listen; 127.0.0.1 and an OS-chosen port unless given. */
  readonly listen?: { readonly host?: string; readonly port?: number };
  /** Delay of every chunk, each direction, in ms (default 0). */
  readonly delayMs?: number;
  /** Probability in [0, 1] that a chunk resets its flow instead of going through (default 0). */
  readonly dropProbability?: number;
  /** Injected randomness for `dropProbability` (default Math.random). */
  readonly random?: () => number;
  readonly clock?: Clock;
}

export interface LossyStats {
  /** Connections accepted. */
  readonly accepted: number;
  /** Flows reset by `dropProbability` or `dropConnections()`. */
  readonly dropped: number;
  /** Chunks read and not yet written on (held by a delay or a blackhole). */
  readonly queuedChunks: number;
  /** Bytes written on, both directions. */
  readonly forwardedBytes: number;
}

/** The controls shared by a proxy in this process and one in a namespace. */
export interface LossyPath {
  readonly host: string;
  readonly port: number;
  setDelay(ms: number): Promise<void>;
  setDropProbability(p: number): Promise<void>;
  blackhole(): Promise<void>;
  restore(): Promise<void>;
  dropConnections(): Promise<void>;
  stats(): Promise<LossyStats>;
  close(): Promise<void>;
}

function checkDelay(ms: unknown): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new SkeinError('SKEIN_E_VALIDATION', `LossyProxy: delayMs must be a finite number of ms >= 0, got ${JSON.stringify(ms)}`, { field: 'delayMs' });
  }
  return ms;
}

function checkProbability(p: unknown): number {
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
    throw new SkeinError('SKEIN_E_VALIDATION', `LossyProxy: dropProbability must be a number in [0, 1], got ${JSON.stringify(p)}`, { field: 'dropProbability' });
  }
  return p;
}

function checkTarget(t: unknown): { host: string; port: number } {
  const o = t as { host?: unknown; port?: unknown } | undefined;
  if (typeof o?.host !== 'string' || o.host === '' || !Number.isInteger(o.port) || (o.port as number) < 1 || (o.port as number) > 65535) {
    throw new SkeinError('SKEIN_E_VALIDATION', `LossyProxy: target must be { host, port } with a port in 1-65535, got ${JSON.stringify(t)}`, { field: 'target' });
  }
  return { host: o.host, port: o.port as number };
}

/** One direction of a flow: chunks read from `src`, each written to the other side at its time. */
class Lane {
  private readonly queue: { at: number; chunk: Buffer }[] = [];
  private bytes = 0;
  private lastAt = 0;
  private timer: TimerHandle | null = null;
  private srcEnded = false;
  private waitingDrain = false;
  dst: Socket | null = null;

  constructor(
    private readonly proxy: LossyProxy,
    private readonly flow: Flow,
    readonly src: Socket,
  ) {
    src.on('data', (chunk: Buffer) => this.push(chunk));
    src.on('end', () => {
      this.srcEnded = true;
      this.pump();
    });
  }

  get queued(): number {
    return this.queue.length;
  }

  private push(chunk: Buffer): void {
    if (this.proxy.dropProbability > 0 && this.proxy.random() < this.proxy.dropProbability) {
      this.proxy.reset(this.flow);
      return;
    }
    const at = Math.max(this.proxy.clock.now() + this.proxy.delayMs, this.lastAt);
    this.lastAt = at;
    this.queue.push({ at, chunk });
    this.bytes += chunk.length;
    this.pump();
  }

  /** Writes what is due, schedules the next, and reads from `src` only when there is room. */
  pump(): void {
    const dst = this.dst;
    if (!this.proxy.blackholed && dst !== null && !dst.destroyed) {
      const now = this.proxy.clock.now();
      while (this.queue.length > 0 && (this.queue[0] as { at: number }).at <= now) {
        const { chunk } = this.queue.shift() as { chunk: Buffer };
        this.bytes -= chunk.length;
        this.proxy.forwarded(chunk.length);
        if (!dst.write(chunk) && !this.waitingDrain) {
          this.waitingDrain = true;
          dst.once('drain', () => {
            this.waitingDrain = false;
            this.pump();
          });
        }
      }
      const head = this.queue[0];
      if (head !== undefined && this.timer === null) {
        this.timer = this.proxy.clock.setTimeout(() => {
          this.timer = null;
          this.pump();
        }, Math.max(1, head.at - now));
      }
      if (this.queue.length === 0 && this.srcEnded && !dst.writableEnded) dst.end();
    }
    const read = !this.proxy.blackholed && !this.waitingDrain && this.bytes < HIGH_WATER;
    if (read && this.src.isPaused()) this.src.resume();
    else if (!read && !this.src.isPaused()) this.src.pause();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }
}

class Flow {
  readonly toUpstream: Lane;
  toClient: Lane | null = null;
  upstream: Socket | null = null;

  constructor(
    private readonly proxy: LossyProxy,
    readonly client: Socket,
  ) {
    this.toUpstream = new Lane(proxy, this, client);
    client.on('error', () => proxy.forget(this));
    client.on('close', () => this.upstream?.destroyed !== false && proxy.forget(this));
  }

  dial(target: { host: string; port: number }): void {
    const up = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    this.upstream = up;
    this.toUpstream.dst = up;
    const back = new Lane(this.proxy, this, up);
    back.dst = this.client;
    this.toClient = back;
    up.on('error', () => this.proxy.forget(this));
    up.on('close', () => this.client.destroyed && this.proxy.forget(this));
    this.toUpstream.pump();
  }

  pump(): void {
    this.toUpstream.pump();
    this.toClient?.pump();
  }

  destroy(): void {
    this.toUpstream.stop();
    this.toClient?.stop();
    if (!this.client.destroyed) this.client.resetAndDestroy();
    if (this.upstream !== null && !this.upstream.destroyed) this.upstream.resetAndDestroy();
  }
}

export class LossyProxy implements LossyPath {
  delayMs: number;
  dropProbability: number;
  blackholed = false;
  readonly random: () => number;
  readonly clock: Clock;
  private readonly target: { host: string; port: number };
  private readonly server: Server;
  private readonly flows = new Set<Flow>();
  private counts = { accepted: 0, dropped: 0, forwardedBytes: 0 };
  private listenHost = '';
  private listenPort = 0;

  private constructor(opts: LossyProxyOptions) {
    this.target = checkTarget(opts.target);
    this.delayMs = checkDelay(opts.delayMs ?? 0);
    this.dropProbability = checkProbability(opts.dropProbability ?? 0);
    this.random = opts.random ?? Math.random;
    this.clock = opts.clock ?? systemClock;
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.accept(socket));
  }

  /** Starts a proxy in this process (this network namespace). */
  static async start(opts: LossyProxyOptions): Promise<LossyProxy> {
    const p = new LossyProxy(opts);
    const host = opts.listen?.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(opts.listen?.port ?? 0, host, () => resolve());
    });
    p.listenHost = host;
    p.listenPort = (p.server.address() as { port: number }).port;
    return p;
  }

  /**
   * Starts a proxy inside a host of the topology, listening on the host's address (port from the
   * OS unless `listen.port`). `random` and `clock` cannot cross the process boundary.
   */
  static async startIn(net: Topology, host: string, opts: Omit<LossyProxyOptions, 'random' | 'clock' | 'listen'> & { listen?: { port?: number } }): Promise<LossyPath> {
    const spec: LossyProxyOptions = {
      target: checkTarget(opts.target),
      listen: { host: net.address(host), port: opts.listen?.port ?? 0 },
      delayMs: checkDelay(opts.delayMs ?? 0),
      dropProbability: checkProbability(opts.dropProbability ?? 0),
    };
    const child = net.spawn(host, process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'pipe'] });
    return RemoteLossyProxy.attach(child, host);
  }

  get host(): string {
    return this.listenHost;
  }

  get port(): number {
    return this.listenPort;
  }

  async setDelay(ms: number): Promise<void> {
    this.delayMs = checkDelay(ms);
  }

  async setDropProbability(p: number): Promise<void> {
    this.dropProbability = checkProbability(p);
  }

  async blackhole(): Promise<void> {
    this.blackholed = true;
    for (const f of this.flows) f.pump();
  }

  async restore(): Promise<void> {
    this.blackholed = false;
    for (const f of this.flows) {
      if (f.upstream === null) f.dial(this.target);
      f.pump();
    }
  }

  async dropConnections(): Promise<void> {
    for (const f of [...this.flows]) this.reset(f);
  }

  async stats(): Promise<LossyStats> {
    let queuedChunks = 0;
    for (const f of this.flows) queuedChunks += f.toUpstream.queued + (f.toClient?.queued ?? 0);
    return { ...this.counts, queuedChunks };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const f of [...this.flows]) {
      f.destroy();
      this.flows.delete(f);
    }
    await closed;
  }

  /** @internal */
  reset(flow: Flow): void {
    if (!this.flows.delete(flow)) return;
    this.counts.dropped++;
    flow.destroy();
  }

  /** @internal A flow that ended by itself (both sides closed, or one failed: the other is reset). */
  forget(flow: Flow): void {
    flow.destroy();
    this.flows.delete(flow);
  }

  /** @internal */
  forwarded(bytes: number): void {
    this.counts.forwardedBytes += bytes;
  }

  private accept(socket: Socket): void {
    this.counts.accepted++;
    const flow = new Flow(this, socket);
    this.flows.add(flow);
    if (!this.blackholed) flow.dial(this.target);
    flow.pump();
  }
}

/** A LossyProxy running in another process (a namespace), driven by JSON lines on its stdin. */
class RemoteLossyProxy implements LossyPath {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly child: ChildProcess,
    readonly host: string,
    readonly port: number,
  ) {}

  static attach(child: ChildProcess, hostName: string): Promise<RemoteLossyProxy> {
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    return new Promise((resolve, reject) => {
      let proxy: RemoteLossyProxy | null = null;
      const exited = (code: number | null, signal: NodeJS.Signals | null) => {
        const err = new Error(`lossy proxy in host "${hostName}" exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`);
        if (proxy === null) reject(err);
        else for (const p of proxy.pending.values()) p.reject(err);
      };
      child.once('exit', exited);
      child.once('error', (e) => reject(e));
      lines.on('line', (line) => {
        const m = JSON.parse(line) as { listening?: { host: string; port: number }; id?: number; ok?: boolean; result?: unknown; error?: string };
        if (m.listening !== undefined) {
          proxy = new RemoteLossyProxy(child, m.listening.host, m.listening.port);
          resolve(proxy);
          return;
        }
        const p = proxy?.pending.get(m.id as number);
        if (p === undefined) return;
        proxy?.pending.delete(m.id as number);
        if (m.ok === true) p.resolve(m.result);
        else p.reject(new Error(m.error));
      });
    });
  }

  private call(op: string, value?: unknown): Promise<unknown> {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin?.write(`${JSON.stringify({ id, op, value })}\n`);
    });
  }

  async setDelay(ms: number): Promise<void> {
    await this.call('setDelay', checkDelay(ms));
  }

  async setDropProbability(p: number): Promise<void> {
    await this.call('setDropProbability', checkProbability(p));
  }

  async blackhole(): Promise<void> {
    await this.call('blackhole');
  }

  async restore(): Promise<void> {
    await this.call('restore');
  }

  async dropConnections(): Promise<void> {
    await this.call('dropConnections');
  }

  async stats(): Promise<LossyStats> {
    return (await this.call('stats')) as LossyStats;
  }

  /** Closes the proxy and waits for its process to exit. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin?.end();
    await exited;
  }
}

/** The child's side: `node lossy-proxy.js '<options as JSON>'`, commands on stdin, answers on stdout. */
async function main(): Promise<void> {
  const proxy = await LossyProxy.start(JSON.parse(process.argv[2] ?? '{}') as LossyProxyOptions);
  const ops: Record<string, (v: unknown) => Promise<unknown>> = {
    setDelay: (v) => proxy.setDelay(v as number),
    setDropProbability: (v) => proxy.setDropProbability(v as number),
    blackhole: () => proxy.blackhole(),
    restore: () => proxy.restore(),
    dropConnections: () => proxy.dropConnections(),
    stats: () => proxy.stats(),
  };
  process.stdout.write(`${JSON.stringify({ listening: { host: proxy.host, port: proxy.port } })}\n`);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const { id, op, value } = JSON.parse(line) as { id: number; op: string; value?: unknown };
    const fn = ops[op];
    (fn === undefined ? Promise.reject(new Error(`unknown op "${op}"`)) : fn(value)).then(
      (result) => process.stdout.write(`${JSON.stringify({ id, ok: true, result })}\n`),
      (e: Error) => process.stdout.write(`${JSON.stringify({ id, ok: false, error: e.message })}\n`),
    );
  });
  // The parent closing stdin (or dying) ends the proxy.
  lines.on('close', () => void proxy.close().then(() => process.exit(0)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: Error) => {
    process.stderr.write(`lossy proxy: ${e.message}\n`);
    process.exit(1);
  });
}
