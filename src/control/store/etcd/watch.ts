/**
 * One etcd watch on a prefix, kept open across members: the stream is a streaming POST to
 * `/v3/watch` answered with newline-delimited `{"result":…}` / `{"error":…}` lines.
 *
 * - `hasleader` (header `Grpc-Metadata-Hasleader: true`): a member cut off from the majority ends
 *   the stream (3–4 s) instead of staying silent.
 * - Progress notifications plus an idle limit (`idleMs`, on the Clock): a member we can no longer
 *   hear (a partition on our side) is given up after `idleMs` without a byte.
 * - After any break it resumes on the next member from the first revision not yet delivered, so no
 *   revision is skipped or repeated.
 * - A start revision that was compacted away: the prefix is re-listed, handed to `onReset`, and the
 *   watch goes on from the listing's revision + 1.
 */
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { Backoff } from '../../../core/backoff.js';
import type { Clock, TimerHandle } from '../../../core/clock.js';
import { LineSplitter } from '../../../discovery/watch-client.js';
import { encode, headerRevision, int, parseKv, prefixEnd, type KeyValue, type WireHeader, type WireKv } from './wire.js';

export type WatchEvent = { type: 'put'; kv: KeyValue } | { type: 'del'; key: string; modRevision: number };

export interface WatchHandlers {
  /** events of one revision batch, in order; `revision` is the header revision of the response */
  onEvents(events: WatchEvent[], revision: number): void;
  /** the start revision was compacted: the prefix re-listed at `revision` (the caller replaces its view), the watch goes on from revision+1 */
  onReset(kvs: KeyValue[], revision: number): void;
  /** progress: the cluster is at `revision` and nothing under the prefix changed (progress notifications) */
  onProgress?(revision: number): void;
  /** the stream broke and is being resumed (on another member), with why; connected again */
  onDisconnect?(why: string): void;
  onConnect?(endpoint: string): void;
}

/** What a watch needs from the client that owns it. */
export interface WatchTransport {
  readonly endpoints: readonly string[];
  /** The index of the member to try first. */
  preferred(): number;
  open(endpoint: string, body: string, signal: AbortSignal): Promise<Dispatcher.ResponseData>;
  /** A linearizable listing of the prefix (failing over like any read). */
  list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }>;
  readonly clock: Clock;
  readonly idleMs: number;
  readonly logger: Logger | undefined;
}

interface WireWatchResult {
  header?: WireHeader;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: Array<{ type?: string; kv?: WireKv }>;
}
type WireWatchLine = { result?: WireWatchResult; error?: { message?: string; grpc_code?: number } };

/** Returned by a stream that must be opened again at once on the same member (after a re-list). */
const RESYNC = Symbol('resync');

export class PrefixWatch {
  /** The first revision not yet delivered: where a new stream starts. */
  private next: number;
  private closed = false;
  private abort: AbortController | null = null;
  private sleeping: { timer: TimerHandle; wake: () => void } | null = null;
  private sawProgress = false;
  private warnedNoProgress = false;
  private readonly backoff = new Backoff({ baseMs: 100, capMs: 2000 });

  constructor(
    private readonly t: WatchTransport,
    private readonly prefix: string,
    fromRevision: number,
    private readonly h: WatchHandlers,
    private readonly onClosed: () => void,
  ) {
    this.next = fromRevision;
    void this.run();
  }

  /** The first revision the watch has not delivered yet. */
  get nextRevision(): number {
    return this.next;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort?.abort();
    if (this.sleeping) {
      this.sleeping.timer.cancel();
      this.sleeping.wake();
    }
    this.onClosed();
  }

  private async run(): Promise<void> {
    let i = this.t.preferred();
    while (!this.closed) {
      const endpoint = this.t.endpoints[i % this.t.endpoints.length]!;
      const why = await this.stream(endpoint);
      if (this.closed) return;
      if (why === RESYNC) continue;
      this.t.logger?.debug({ endpoint, why, next: this.next }, 'etcd watch broke; resuming on the next member');
      this.call('onDisconnect', () => this.h.onDisconnect?.(why));
      i = (i + 1) % this.t.endpoints.length;
      await this.sleep(this.backoff.next());
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      const timer = this.t.clock.setTimeout(() => {
        this.sleeping = null;
        wake();
      }, ms);
      this.sleeping = { timer, wake };
    });
  }

  /** One stream on one member; resolves with why it ended (or RESYNC). Never rejects. */
  private async stream(endpoint: string): Promise<string | typeof RESYNC> {
    const ac = new AbortController();
    this.abort = ac;
    let idleFired = false;
    let idle: TimerHandle | null = null;
    const armIdle = () => {
      idle?.cancel();
      idle = this.t.clock.setTimeout(() => {
        idleFired = true;
        ac.abort();
      }, this.t.idleMs);
    };
    armIdle();
    const body = JSON.stringify({
      create_request: { key: encode(this.prefix), range_end: prefixEnd(this.prefix), start_revision: String(this.next), progress_notify: true },
    });
    try {
      const r = await this.t.open(endpoint, body, ac.signal);
      if (r.statusCode !== 200) {
        const text = await r.body.text();
        return `${endpoint} answered HTTP ${r.statusCode}: ${gatewayMessage(text)}`;
      }
      r.body.setEncoding('utf8');
      const lines = new LineSplitter(64 * 1024 * 1024);
      const read = async (chunk: string): Promise<string | typeof RESYNC | null> => {
        for (const line of lines.push(chunk)) {
          const end = await this.handle(endpoint, JSON.parse(line) as WireWatchLine);
          if (end !== null) return end;
          if (this.closed) return 'closed';
        }
        return null;
      };
      for await (const chunk of r.body as AsyncIterable<string>) {
        armIdle();
        const end = await read(chunk);
        if (end !== null) return end;
      }
      // The last line (etcd's error, "no leader") often comes without a newline.
      return (await read('\n')) ?? `${endpoint} ended the stream`;
    } catch (e) {
      if (idleFired) {
        if (!this.sawProgress && !this.warnedNoProgress) {
          this.warnedNoProgress = true;
          this.t.logger?.warn(
            { endpoint, idleMs: this.t.idleMs },
            'etcd watch: no progress notification within the idle limit; set etcd --experimental-watch-progress-notify-interval well below it (docs/operations.md)',
          );
        }
        return `nothing heard from ${endpoint} for ${this.t.idleMs} ms (the watch idle limit)`;
      }
      const err = e as Error & { code?: string };
      return `${endpoint}: ${err.code ? `${err.code} ` : ''}${err.message}`;
    } finally {
      (idle as TimerHandle | null)?.cancel();
      ac.abort(); // a canceled watch (compaction) leaves the HTTP stream open: close it
      if (this.abort === ac) this.abort = null;
    }
  }

  /** Handles one line; returns why the stream must end, or null to read on. */
  private async handle(endpoint: string, msg: WireWatchLine): Promise<string | typeof RESYNC | null> {
    if (msg.error !== undefined) return `${endpoint}: etcd: ${msg.error.message ?? JSON.stringify(msg.error)}`;
    const res = msg.result ?? {};
    const compacted = int(res.compact_revision, 'compact_revision');
    if (compacted > 0) {
      // Our start revision is gone: hand out a fresh listing and watch after it.
      this.t.logger?.info({ prefix: this.prefix, from: this.next, compacted }, 'etcd watch: start revision compacted; re-listing');
      const list = await this.t.list(this.prefix);
      if (this.closed) return 'closed';
      this.next = list.revision + 1;
      this.call('onReset', () => this.h.onReset(list.kvs, list.revision));
      return RESYNC;
    }
    if (res.canceled === true) return `${endpoint} canceled the watch: ${res.cancel_reason || 'no reason given'}`;
    if (res.created === true) {
      this.backoff.reset();
      this.call('onConnect', () => this.h.onConnect?.(endpoint));
      return null;
    }
    const revision = headerRevision(res.header);
    const events = res.events ?? [];
    if (events.length > 0) {
      const out: WatchEvent[] = events.map((e) => {
        const kv = parseKv(e.kv ?? {});
        return e.type === 'DELETE' ? { type: 'del', key: kv.key, modRevision: kv.modRevision } : { type: 'put', kv };
      });
      const last = out[out.length - 1]!;
      this.next = (last.type === 'put' ? last.kv.modRevision : last.modRevision) + 1;
      this.call('onEvents', () => this.h.onEvents(out, revision));
    } else if (revision > 0) {
      // A progress notification: everything up to `revision` has been sent.
      this.sawProgress = true;
      this.next = Math.max(this.next, revision + 1);
      this.call('onProgress', () => this.h.onProgress?.(revision));
    }
    return null;
  }

  /** Calls a handler; a handler that throws is logged, and the watch goes on. */
  private call(name: string, fn: () => void): void {
    if (this.closed) return;
    try {
      fn();
    } catch (e) {
      this.t.logger?.error({ err: e, handler: name, prefix: this.prefix }, 'etcd watch: a handler threw; the watch goes on');
    }
  }
}

/** etcd's message out of an error body (`{"error":…,"message":…,"code":…}` or a stream's `{"error":{…}}`). */
export function gatewayMessage(text: string): string {
  try {
    const j = JSON.parse(text) as { message?: string; error?: string | { message?: string } };
    if (typeof j.message === 'string') return j.message;
    if (typeof j.error === 'string') return j.error;
    if (j.error && typeof j.error.message === 'string') return j.error.message;
  } catch {
    // not JSON: say what came
  }
  return text.slice(0, 200) || 'an empty body';
}
