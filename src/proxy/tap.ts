/**
 * Live request taps (`skein tap`): a tap names a service and gets every request the proxy
 * finishes to or from it, as it finishes. Off the request path while nobody taps: the forwarder
 * asks `wants()` once per request, which is a size check.
 *
 * Each tap's lines go out through a `TapStream` (the control plane's relay uses them too): at most
 * `bufferBytes` wait for a reader (a line that does not fit is dropped and counted, and the reader
 * is told how many it missed), at most `maxTaps` are open, and one whose reader took nothing for
 * `stallTimeoutMs` while lines waited is ended and counted, so its slot and its buffer come back.
 */
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import type { TapLimits, TapRecord } from '../api/tap.js';
import { TAP_BODIES, TAP_HEADERS, TAP_ON, type TapSink } from '../engine/observe.js';

export interface TapFilter {
  /** Requests to or from this service. */
  readonly service: string;
  readonly headers: boolean;
  readonly bodies: boolean;
}

interface Subscriber {
  readonly filter: TapFilter;
  readonly send: (r: TapRecord) => void;
}

export class TapHub implements TapSink {
  private readonly subs = new Set<Subscriber>();

  get size(): number {
    return this.subs.size;
  }

  wants(source: string | null, service: string | null): number {
    if (this.subs.size === 0) return 0;
    let bits = 0;
    for (const s of this.subs) {
      const f = s.filter;
      if (f.service !== service && f.service !== source) continue;
      bits |= TAP_ON | (f.headers ? TAP_HEADERS : 0) | (f.bodies ? TAP_BODIES : 0);
    }
    return bits;
  }

  publish(r: TapRecord): void {
    for (const s of this.subs) {
      const f = s.filter;
      if (f.service !== r.destination && f.service !== r.source) continue;
      // Each tap gets only what it asked for, whatever another tap of the request wanted.
      let out = r;
      if ((!f.headers && r.requestHeaders !== undefined) || (!f.bodies && r.requestBody !== undefined)) {
        const { requestHeaders, responseHeaders, requestBody, responseBody, ...rest } = r;
        out = { ...rest, ...(f.headers ? { requestHeaders, responseHeaders } : {}), ...(f.bodies ? { requestBody, responseBody } : {}) } as TapRecord;
      }
      s.send(out);
    }
  }

  /** Starts a tap; call the returned function to stop it. */
  subscribe(filter: TapFilter, send: (r: TapRecord) => void): () => void {
    const s: Subscriber = { filter, send };
    this.subs.add(s);
    return () => this.subs.delete(s);
  }
}

/** Where a tap's lines go: an HTTP response (node:http), written to as NDJSON. */
export interface TapOutput {
  write(chunk: string): boolean;
  /** Bytes written but not yet taken by the socket. */
  readonly writableLength: number;
  destroy(): void;
}

export interface TapInfo {
  readonly service: string;
  readonly headers: boolean;
  readonly bodies: boolean;
}

/** Chunked transfer encoding's framing of one write (hex size and two CRLFs), counted against the bound. */
const FRAMING = 16;

/** One open tap's output: bounded, and watched for a reader that stopped reading. */
export class TapStream {
  lines = 0;
  dropped = 0;
  /** Dropped lines the reader has not been told about yet. */
  private unreported = 0;
  /** The output's backlog when last looked at, and when it last went down (or was empty). */
  private backlog = 0;
  private progressAt: number;
  /** The shortest line sent so far: when even that would not fit, a record is dropped unserialized. */
  private shortest = 0;

  constructor(
    private readonly owner: TapStreams,
    readonly info: TapInfo,
    private readonly out: TapOutput,
    readonly openedAt: number,
  ) {
    this.progressAt = openedAt;
  }

  get bufferedBytes(): number {
    return this.out.writableLength;
  }

  /**
   * Sends one NDJSON line (without its newline), or drops it when it would take the bytes waiting
   * over the bound. `line` may be a function, called only when there is room (a dropped record is
   * never serialized). Before the next line that fits, the reader gets `{"missed":N}`.
   */
  write(line: string | (() => string)): boolean {
    const bound = this.owner.limits.bufferBytes;
    this.look(this.owner.now());
    if (this.out.writableLength + this.shortest + FRAMING > bound) return this.drop();
    const text = typeof line === 'string' ? line : line();
    const missed = this.unreported > 0 ? this.owner.missedLine(this.unreported) + '\n' : '';
    const chunk = missed + text + '\n';
    const bytes = Buffer.byteLength(chunk);
    if (this.out.writableLength + bytes + FRAMING > bound) return this.drop();
    this.shortest = this.lines === 0 ? bytes : Math.min(this.shortest, bytes);
    this.out.write(chunk);
    this.unreported = 0;
    this.lines++;
    this.backlog = this.out.writableLength;
    return true;
  }

  private drop(): false {
    this.dropped++;
    this.unreported++;
    this.owner.droppedTotal++;
    return false;
  }

  /**
   * Notes whether the reader took bytes since the last look (the backlog went down or is empty);
   * true when it has taken none for the stall timeout while bytes waited.
   */
  look(now: number): boolean {
    const backlog = this.out.writableLength;
    if (backlog === 0 || backlog < this.backlog) this.progressAt = now;
    this.backlog = backlog;
    return backlog > 0 && now - this.progressAt >= this.owner.limits.stallTimeoutMs;
  }

  /** The tap is over (its reader left, or it was stopped): frees its slot. */
  close(): void {
    this.owner.remove(this);
  }

  /** Ends a tap whose reader stalled: the connection is dropped with what it buffered. */
  abort(): void {
    this.owner.remove(this);
    this.out.destroy();
  }
}

export interface TapStreamsOptions {
  readonly limits: TapLimits;
  readonly clock?: Clock;
  /** The line that tells a reader how many lines it missed (default `{"missed":N}`). */
  readonly missedLine?: (n: number) => string;
}

/** The open taps of one server (a proxy's admin, or the control plane's relay), under its limits. */
export class TapStreams {
  readonly limits: TapLimits;
  readonly missedLine: (n: number) => string;
  private readonly clock: Clock;
  private readonly open = new Set<TapStream>();
  private ticker: TimerHandle | null = null;
  opened = 0;
  refused = 0;
  stalled = 0;
  droppedTotal = 0;

  constructor(opts: TapStreamsOptions) {
    this.limits = opts.limits;
    this.clock = opts.clock ?? systemClock;
    this.missedLine = opts.missedLine ?? ((n) => JSON.stringify({ missed: n }));
  }

  get size(): number {
    return this.open.size;
  }

  now(): number {
    return this.clock.now();
  }

  /** A stream for a new tap over `out`, or null (counted) when `maxTaps` are open. */
  start(info: TapInfo, out: TapOutput): TapStream | null {
    if (this.open.size >= this.limits.maxTaps) {
      this.refused++;
      return null;
    }
    const s = new TapStream(this, info, out, this.clock.now());
    this.open.add(s);
    this.opened++;
    // One timer for all taps, only while there are some: a tap on a quiet service stalls too.
    this.ticker ??= this.clock.setInterval(() => this.tick(), Math.min(1000, Math.max(50, this.limits.stallTimeoutMs / 4)));
    return s;
  }

  remove(s: TapStream): void {
    if (!this.open.delete(s)) return;
    if (this.open.size === 0) {
      this.ticker?.cancel();
      this.ticker = null;
    }
  }

  /** Ends the taps whose readers stalled. */
  tick(): void {
    const now = this.clock.now();
    for (const s of [...this.open]) {
      if (!s.look(now)) continue;
      this.stalled++;
      s.abort();
    }
  }

  /** What `GET /debug/taps` (proxy) and `GET /v1/taps` (control plane) answer. */
  stats() {
    return {
      limits: this.limits,
      open: this.open.size,
      opened: this.opened,
      refused: this.refused,
      stalled: this.stalled,
      dropped: this.droppedTotal,
      taps: [...this.open].map((s) => ({
        ...s.info,
        since: new Date(s.openedAt).toISOString(),
        lines: s.lines,
        dropped: s.dropped,
        bufferedBytes: s.bufferedBytes,
      })),
    };
  }
}
