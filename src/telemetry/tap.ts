/**
 * Live request taps (`skein tap`): a tap names a service and gets every request a data plane (a
 * proxy, or the SDK) finishes to or from it, as it finishes. Off the request path while nobody
 * taps: the driver asks `wants()` once per request, which is a size check.
 *
 * Each tap's lines go out through a `TapStream` (the control plane's relay uses them too): at most
 * `bufferBytes` wait for a reader (a line that does not fit is dropped and counted, and the reader
 * is told how many it missed), at most `maxTaps` are open, and one whose reader took nothing for
 * `stallTimeoutMs` while lines waited is ended and counted, so its slot and its buffer come back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import type { ErrorCode } from '../core/errors.js';
import { isLoopbackAddress } from '../core/loopback-host.js';
import { DNS_LABEL_PATTERN } from '../api/names.js';
import { PROXY_TAP_LIMITS, redactHeaders, type TapLimits, type TapRecord } from '../api/tap.js';
import { TAP_BODIES, TAP_BODY_BYTES, TAP_HEADERS, TAP_ON, type TapSink } from '../engine/observe.js';

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

/** Body bytes for a tap, up to TAP_BODY_BYTES per direction. */
export class TapCapture {
  private parts: Buffer[] = [];
  private have = 0;
  add(data: Buffer): void {
    if (this.have >= TAP_BODY_BYTES) return;
    const take = data.subarray(0, TAP_BODY_BYTES - this.have);
    this.parts.push(Buffer.from(take));
    this.have += take.length;
  }
  text(): string {
    return Buffer.concat(this.parts).toString('utf8');
  }
}

/** Whether a peer is this host: a loopback address, or the very address the server listens on. */
export function fromThisHost(req: IncomingMessage): boolean {
  const peer = req.socket.remoteAddress ?? '';
  return isLoopbackAddress(peer) || peer === req.socket.localAddress;
}

const SERVICE = new RegExp(DNS_LABEL_PATTERN);

function flag(url: URL, name: string): boolean | null {
  const v = url.searchParams.get(name);
  if (v === null || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true' || v === '') return true;
  return null;
}

/** A tap its server did not open: the admin server answers it (the code's status, `x-skein-error`, a JSON body). */
export interface TapRefusal {
  readonly code: ErrorCode;
  readonly message: string;
  readonly field?: string;
}

export interface TapServerOptions {
  /** Bounds of the taps (default PROXY_TAP_LIMITS). */
  readonly limits?: Partial<TapLimits>;
  /** Header names (lower case) whose values taps hide, beyond the defaults (`--tap-redact`). */
  readonly redact?: readonly string[];
  readonly clock?: Clock;
  /** Names the data plane in the refusal of one tap too many ("this proxy", "this SDK"). */
  readonly owner: string;
  /** How its limit is set, said in that refusal (" (--max-taps)"); default none. */
  readonly limitHint?: string;
}

/**
 * A data plane's taps as its admin server serves them, `GET /tap` and `GET /debug/taps` (the
 * proxy's admin, src/proxy/admin.ts, and the SDK's, src/sdk/metrics.ts): one query, one set of
 * limits, one redaction.
 */
export class TapServer {
  readonly streams: TapStreams;
  private readonly redact: ReadonlySet<string>;

  constructor(
    /** The data plane's id: each line's `proxy`. */
    private readonly id: string,
    private readonly o: TapServerOptions,
  ) {
    this.streams = new TapStreams({
      limits: { ...PROXY_TAP_LIMITS, ...o.limits },
      missedLine: (n) => JSON.stringify({ missed: n, proxy: id, time: new Date().toISOString() }),
      ...(o.clock === undefined ? {} : { clock: o.clock }),
    });
    this.redact = new Set(o.redact ?? []);
  }

  /** A tap line: ISO time, the data plane's id, and the configured headers redacted too (the driver redacted the defaults). */
  private line(r: TapRecord): string {
    const line = { ...r, time: new Date(r.time).toISOString(), proxy: this.id };
    if (r.requestHeaders !== undefined) line.requestHeaders = redactHeaders(r.requestHeaders, this.redact) as Record<string, string>;
    if (r.responseHeaders !== undefined) line.responseHeaders = redactHeaders(r.responseHeaders, this.redact) as Record<string, string>;
    return JSON.stringify(line);
  }

  /**
   * GET /tap?service=S[&headers=1][&bodies=1]: one JSON line per finished request to or from S
   * (what `subscribe` sends), until the client leaves; or why not, for the caller to answer.
   */
  serve(url: URL, req: IncomingMessage, res: ServerResponse, subscribe: (filter: TapFilter, send: (r: TapRecord) => void) => () => void): TapRefusal | null {
    let unknown: string | null = null;
    for (const k of url.searchParams.keys()) if (unknown === null && k !== 'service' && k !== 'headers' && k !== 'bodies') unknown = `unknown query parameter "${k}" (allowed: service, headers, bodies)`;
    const service = url.searchParams.get('service');
    const headers = flag(url, 'headers');
    const bodies = flag(url, 'bodies');
    if (unknown !== null) return { code: 'SKEIN_E_BAD_QUERY', message: unknown };
    if (service === null || !SERVICE.test(service)) return { code: 'SKEIN_E_BAD_QUERY', message: 'service must be a service name (a DNS label)', field: 'service' };
    if (headers === null) return { code: 'SKEIN_E_BAD_QUERY', message: 'headers must be 1 or 0', field: 'headers' };
    if (bodies === null) return { code: 'SKEIN_E_BAD_QUERY', message: 'bodies must be 1 or 0', field: 'bodies' };
    const stream = this.streams.start({ service, headers, bodies }, res);
    if (stream === null) {
      return { code: 'SKEIN_E_TOO_MANY_TAPS', message: `${this.o.owner} already has ${this.streams.limits.maxTaps} taps open, the most it allows${this.o.limitHint ?? ''}; GET /debug/taps lists them` };
    }
    res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-cache, no-store' });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    // A tap that cannot keep up misses requests (and is told how many) rather than growing the data plane's memory.
    const unsubscribe = subscribe({ service, headers, bodies }, (r) => stream.write(() => this.line(r)));
    const stop = () => {
      unsubscribe();
      stream.close();
    };
    req.once('close', stop);
    res.once('close', stop);
    return null;
  }
}
