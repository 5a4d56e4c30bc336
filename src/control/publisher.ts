/**
 * The event publisher behind `GET /v1/watch`: each subscriber gets a snapshot (of one service or
 * of all), then add / update / remove / service diffs, each with its revision. `since=REV`
 * resumes from the history while it still holds REV; otherwise the subscriber gets a fresh
 * snapshot. Each subscriber has a bounded queue: one that falls too far behind is closed and the
 * overflow counted; it re-subscribes with `since`.
 */
import type { Clock, TimerHandle } from '../core/clock.js';
import type { InstanceRecord, Registry, RegistryEvent, Revision } from './registry/registry.js';
import type { Service } from '../api/types.js';
import { WATCH_DEFAULTS, type WatchMessage, type WireInstance } from '../api/wire.js';
import { CONTROL_DEFAULTS } from '../api/control.js';

export type { WatchMessage, WireInstance };

export type WatchFormat = 'ndjson' | 'sse';

/** Where a subscription writes: an HTTP response, in practice. */
export interface Sink {
  write(chunk: string): boolean;
  end(): void;
  destroy(): void;
  once(event: 'drain' | 'close', fn: () => void): unknown;
}

/** The JSON form of an instance record on the API and the watch stream. */
export function wireInstance(r: InstanceRecord): WireInstance {
  const i = r.instance;
  return {
    id: i.id,
    service: i.service,
    address: i.address,
    port: i.port,
    weight: i.weight,
    zone: i.zone,
    version: i.version,
    labels: i.labels,
    status: r.status,
    reason: r.reason,
    since: new Date(r.since).toISOString(),
    revision: r.modRevision,
    check: i.check?.type ?? null,
  };
}

interface Encoded {
  revision: Revision;
  service: string;
  ndjson?: string;
  sse?: string;
  message: WatchMessage;
}

function encode(m: WatchMessage, format: WatchFormat): string {
  const json = JSON.stringify(m);
  return format === 'ndjson' ? json + '\n' : `id: ${m.revision}\nevent: ${m.type}\ndata: ${json}\n\n`;
}

function encodedFor(e: Encoded, format: WatchFormat): string {
  if (format === 'ndjson') return (e.ndjson ??= encode(e.message, 'ndjson'));
  return (e.sse ??= encode(e.message, 'sse'));
}

/** Encoded snapshots kept at one revision (one per service watched, and the whole mesh). */
const MAX_CACHED_SNAPSHOTS = 256;

export interface PublisherOptions {
  registry: Registry;
  clock: Clock;
  /** Events kept for resuming with `since`. Default 10,000. */
  historySize?: number;
  /** Messages a subscriber may have queued (unwritten) before it is closed. Default 1,000. */
  maxQueue?: number;
  /** Interval of keep-alive pings. Default WATCH_DEFAULTS.pingIntervalMs (15 s); 0 turns them off. */
  pingIntervalMs?: number;
}

export interface SubscribeOptions {
  service: string | null;
  since: Revision | null;
  format: WatchFormat;
  sink: Sink;
}

export class Subscription {
  private queue: string[] = [];
  private blocked = false;
  closed = false;

  constructor(
    readonly service: string | null,
    readonly format: WatchFormat,
    private readonly sink: Sink,
    private readonly maxQueue: number,
    private readonly onOverflow: (s: Subscription) => void,
  ) {}

  /** Ends the stream once what is queued is written. */
  end(): void {
    this.closed = true;
    if (this.queue.length === 0) this.sink.end();
    else this.sink.destroy();
  }

  push(chunk: string): void {
    if (this.closed) return;
    if (this.blocked) {
      if (this.queue.length >= this.maxQueue) {
        this.closed = true;
        this.queue = [];
        this.onOverflow(this);
        this.sink.destroy();
        return;
      }
      this.queue.push(chunk);
      return;
    }
    if (!this.sink.write(chunk)) {
      this.blocked = true;
      this.sink.once('drain', () => this.drain());
    }
  }

  private drain(): void {
    this.blocked = false;
    const q = this.queue;
    this.queue = [];
    for (let i = 0; i < q.length; i++) {
      if (this.closed) return;
      if (!this.sink.write(q[i] as string)) {
        this.queue = q.slice(i + 1);
        this.blocked = true;
        this.sink.once('drain', () => this.drain());
        return;
      }
    }
  }
}

export class Publisher {
  private readonly registry: Registry;
  private readonly historySize: number;
  private readonly maxQueue: number;
  private readonly history: Encoded[] = [];
  private head = 0; // ring start
  /** Lowest `since` that can be resumed: nothing after it is missing from the history. */
  private floor: Revision;
  private readonly byService = new Map<string, Set<Subscription>>();
  private readonly everything = new Set<Subscription>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly pingTimer: TimerHandle | null;
  private readonly unsubscribe: () => void;
  private readonly unsubscribeReset: () => void;
  overflows = 0;
  /** Times every subscriber got a fresh snapshot because the registry was read again (a reset). */
  resyncs = 0;
  snapshotsSent = 0;
  /** Snapshots built and encoded (fewer than sent: subscribers at one revision share one). */
  snapshotsBuilt = 0;
  resumes = 0;
  /**
   * The last encoded snapshot per (format, service or all), with its revision: a herd of
   * subscribers reconnecting at once (a replica restarted) costs one build and encoding, not one
   * per subscriber (3-5 µs per instance each: 0.4 s at 100,000 instances; docs/scaling.md).
   */
  private readonly snapshots = new Map<string, { revision: Revision; text: string }>();

  constructor(opts: PublisherOptions) {
    this.registry = opts.registry;
    this.historySize = opts.historySize ?? CONTROL_DEFAULTS.historySize;
    this.maxQueue = opts.maxQueue ?? CONTROL_DEFAULTS.maxQueue;
    // The history starts empty, so nothing before the current revision can be replayed. After a
    // restart a REV from before it always gets a snapshot: it may even name a change that was
    // emitted but never made durable (see since()).
    this.floor = opts.registry.revision + 1;
    this.unsubscribe = opts.registry.onChange((e) => this.publish(e));
    this.unsubscribeReset = opts.registry.onReset((rev) => this.resync(rev));
    const ping = opts.pingIntervalMs ?? WATCH_DEFAULTS.pingIntervalMs;
    this.pingTimer = ping > 0 ? opts.clock.setInterval(() => this.ping(), ping) : null;
  }

  get subscriberCount(): number {
    let n = this.everything.size;
    for (const s of this.byService.values()) n += s.size;
    return n;
  }

  close(): void {
    this.pingTimer?.cancel();
    this.unsubscribe();
    this.unsubscribeReset();
    for (const s of this.allSubs()) s.closed = true;
    for (const set of this.waiters.values()) for (const w of set) w();
    this.waiters.clear();
  }

  /** Starts a subscription: a snapshot or the missed history first, then live diffs. */
  subscribe(opts: SubscribeOptions): Subscription {
    const sub = new Subscription(opts.service, opts.format, opts.sink, this.maxQueue, () => {
      this.overflows++;
      this.remove(sub);
    });
    const missed = opts.since === null ? null : this.since(opts.since);
    if (missed === null) {
      this.snapshotsSent++;
      sub.push(this.encodedSnapshot(opts.service, opts.format));
    } else {
      this.resumes++;
      for (const e of missed) if (opts.service === null || e.service === opts.service) sub.push(encodedFor(e, opts.format));
    }
    // Overflowed while catching up: already destroyed and counted; registering it would leak it.
    if (sub.closed) return sub;
    if (opts.service === null) this.everything.add(sub);
    else {
      let set = this.byService.get(opts.service);
      if (set === undefined) this.byService.set(opts.service, (set = new Set()));
      set.add(sub);
    }
    opts.sink.once('close', () => this.remove(sub));
    return sub;
  }

  private encodedSnapshot(service: string | null, format: WatchFormat): string {
    const key = `${format}\u0000${service ?? ''}`;
    const revision = this.registry.revision;
    const hit = this.snapshots.get(key);
    if (hit !== undefined && hit.revision === revision) return hit.text;
    this.snapshotsBuilt++;
    const text = encode(this.snapshot(service), format);
    // Stale entries are worth nothing: keep the cache to the revision at hand.
    for (const [k, v] of this.snapshots) if (v.revision !== revision) this.snapshots.delete(k);
    if (this.snapshots.size >= MAX_CACHED_SNAPSHOTS) this.snapshots.clear();
    this.snapshots.set(key, { revision, text });
    return text;
  }

  /** The snapshot message of one service (or of all when null). */
  snapshot(service: string | null): WatchMessage {
    const instances: WireInstance[] = [];
    const services: Array<{ name: string; definition: Service | null }> = [];
    if (service === null) {
      for (const s of this.registry.listServices()) services.push({ name: s.name, definition: s.definition });
      for (const r of this.registry.allInstances()) instances.push(wireInstance(r));
    } else if (this.registry.hasService(service)) {
      services.push({ name: service, definition: this.registry.service(service)?.definition ?? null });
      for (const r of this.registry.listInstances(service, { all: true })) instances.push(wireInstance(r));
    }
    return { type: 'snapshot', revision: this.registry.revision, service, instances, services };
  }

  /**
   * Resolves when the service (or anything, when null) changes past `index`, or after `waitMs`.
   * This is the long-poll form for clients that cannot stream.
   */
  waitForChange(service: string | null, index: Revision, waitMs: number, clock: Clock): Promise<void> {
    const current = service === null ? this.registry.revision : this.registry.serviceRevision(service);
    if (current > index || index > this.registry.revision) return Promise.resolve();
    return new Promise((resolve) => {
      const key = service ?? '*';
      let set = this.waiters.get(key);
      if (set === undefined) this.waiters.set(key, (set = new Set()));
      const done = () => {
        timer.cancel();
        set.delete(done);
        if (set.size === 0) this.waiters.delete(key);
        resolve();
      };
      const timer = clock.setTimeout(done, waitMs);
      set.add(done);
    });
  }

  /** The history after `since`, or null when it does not reach back that far. */
  private since(since: Revision): Encoded[] | null {
    const current = this.registry.revision;
    // since <= startRevision: from before this process, where the history does not reach.
    if (since > current || since <= this.registry.startRevision || since < this.floor - 1) return null;
    const out: Encoded[] = [];
    const n = this.history.length;
    for (let i = 0; i < n; i++) {
      const e = this.history[(this.head + i) % n] as Encoded;
      if (e.revision > since) out.push(e);
    }
    return out;
  }

  private publish(e: RegistryEvent): void {
    // A reset's differences come out of revision order, which a client would drop as stale: it gets a snapshot at its end (resync).
    if (this.registry.resetting) return;
    const message: WatchMessage =
      e.type === 'service'
        ? { type: 'service', revision: e.revision, service: e.service, definition: e.definition }
        : { type: e.type, revision: e.revision, service: e.service, instance: wireInstance(e.record) };
    const enc: Encoded = { revision: e.revision, service: e.service, message };
    if (this.history.length < this.historySize) this.history.push(enc);
    else {
      const evicted = this.history[this.head] as Encoded;
      this.floor = evicted.revision + 1;
      this.history[this.head] = enc;
      this.head = (this.head + 1) % this.historySize;
    }
    const subs = this.byService.get(e.service);
    if (subs !== undefined) for (const s of subs) s.push(encodedFor(enc, s.format));
    for (const s of this.everything) s.push(encodedFor(enc, s.format));
    for (const key of [e.service, '*']) {
      const w = this.waiters.get(key);
      if (w !== undefined) for (const fn of [...w]) fn();
    }
  }

  /** Ends every open stream (its client reconnects, to another replica if this one refuses). */
  endAll(): void {
    for (const s of [...this.allSubs()]) {
      this.remove(s);
      s.end();
    }
  }

  /**
   * The registry was read again (after a compaction): the history no longer tells how to get from
   * an older revision to this one, so resuming from it gets a snapshot, and every subscriber gets
   * a fresh snapshot of what it watches now (subscribers at one scope share one encoding).
   */
  private resync(revision: Revision): void {
    this.resyncs++;
    this.history.length = 0;
    this.head = 0;
    this.floor = revision + 1;
    for (const s of this.allSubs()) {
      this.snapshotsSent++;
      s.push(this.encodedSnapshot(s.service, s.format));
    }
    for (const set of [...this.waiters.values()]) for (const fn of [...set]) fn();
  }

  private ping(): void {
    const rev = this.registry.revision;
    const nd = JSON.stringify({ type: 'ping', revision: rev }) + '\n';
    for (const s of this.allSubs()) s.push(s.format === 'ndjson' ? nd : ': ping\n\n');
  }

  private *allSubs(): IterableIterator<Subscription> {
    yield* this.everything;
    for (const set of this.byService.values()) yield* set;
  }

  private remove(sub: Subscription): void {
    sub.closed = true;
    if (sub.service === null) this.everything.delete(sub);
    else {
      const set = this.byService.get(sub.service);
      set?.delete(sub);
      if (set !== undefined && set.size === 0) this.byService.delete(sub.service);
    }
  }
}
