/**
 * Message heads as raw bytes. `HeadCollector` gathers llhttp's span callbacks (URL, header
 * names, header values) as offsets into the head, across as many chunks as the head arrives in,
 * and hands back the head as one Buffer with a table of header ranges. Nothing is decoded here
 * that the proxy does not look at: `classify` tells the few header names that matter by their
 * bytes, and the rewriters copy every other header line through as it came.
 */
import type { ParserCallbacks } from './llhttp.js';

/** Header names the proxy acts on. */
export const enum H {
  Other = 0,
  Host,
  Connection,
  KeepAlive,
  ProxyConnection,
  ProxyAuthorization,
  TE,
  Upgrade,
  XForwardedFor,
  XForwardedProto,
  XRequestId,
  TransferEncoding,
  ContentLength,
  XSkeinError,
  XSkeinTimeout,
  XSkeinExplain,
  XSkeinCaller,
  XSkeinClientId,
  XSkeinErrorOrigin,
  /** Trace context (W3C and B3): replaced per attempt while tracing is on. */
  Traceparent,
  Tracestate,
  B3,
  XB3TraceId,
  XB3SpanId,
  XB3ParentSpanId,
  XB3Sampled,
  XB3Flags,
}

const NAMES: ReadonlyArray<readonly [string, H]> = [
  ['host', H.Host],
  ['connection', H.Connection],
  ['keep-alive', H.KeepAlive],
  ['proxy-connection', H.ProxyConnection],
  ['proxy-authorization', H.ProxyAuthorization],
  ['te', H.TE],
  ['upgrade', H.Upgrade],
  ['x-forwarded-for', H.XForwardedFor],
  ['x-forwarded-proto', H.XForwardedProto],
  ['x-request-id', H.XRequestId],
  ['transfer-encoding', H.TransferEncoding],
  ['content-length', H.ContentLength],
  ['x-skein-error', H.XSkeinError],
  ['x-skein-timeout-ms', H.XSkeinTimeout],
  ['x-skein-explain', H.XSkeinExplain],
  ['x-skein-caller', H.XSkeinCaller],
  ['x-skein-client-id', H.XSkeinClientId],
  ['x-skein-error-origin', H.XSkeinErrorOrigin],
  ['traceparent', H.Traceparent],
  ['tracestate', H.Tracestate],
  ['b3', H.B3],
  ['x-b3-traceid', H.XB3TraceId],
  ['x-b3-spanid', H.XB3SpanId],
  ['x-b3-parentspanid', H.XB3ParentSpanId],
  ['x-b3-sampled', H.XB3Sampled],
  ['x-b3-flags', H.XB3Flags],
];

/** By length: the names of that length, as byte arrays. */
const BY_LENGTH: Array<Array<readonly [Uint8Array, H]>> = [];
for (const [name, h] of NAMES) {
  (BY_LENGTH[name.length] ??= []).push([Buffer.from(name, 'latin1'), h]);
}

/**
 * Case-insensitive match of a header name (an HTTP token, as llhttp checked) against a lowercase
 * name of letters and '-'. `c | 0x20` lowercases letters; of token characters only letters map
 * onto letters, and only '-' onto '-'.
 */
export function nameEquals(buf: Buffer, start: number, end: number, lower: Uint8Array): boolean {
  if (end - start !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    if ((buf[start + i]! | 0x20) !== lower[i]) return false;
  }
  return true;
}

export function classify(buf: Buffer, start: number, end: number): H {
  const cands = BY_LENGTH[end - start];
  if (cands === undefined) return H.Other;
  for (const [bytes, h] of cands) if (nameEquals(buf, start, end, bytes)) return h;
  return H.Other;
}

/** Most header lines a head may have. */
export const MAX_HEADERS = 256;

/**
 * Collects one head. Positions are in "head coordinates": bytes from the start of the message.
 * `fields[4i..4i+3]` = name start, name end, value start, value end of header i.
 */
export class HeadCollector {
  /** Bytes of the head in earlier chunks. */
  base = 0;
  private pieces: Buffer[] = [];
  urlStart = -1;
  urlEnd = -1;
  count = 0;
  readonly fields = new Int32Array(MAX_HEADERS * 4);
  /** 1: the last span was a name, 2: a value. */
  private last = 0;
  /** Too many headers (MAX_HEADERS): the head is refused with 431. */
  overflow = false;

  begin(): void {
    this.base = 0;
    this.pieces.length = 0;
    this.urlStart = this.urlEnd = -1;
    this.count = 0;
    this.last = 0;
    this.overflow = false;
  }

  url(start: number, end: number): void {
    const s = this.base + start;
    if (this.urlStart >= 0 && this.urlEnd === s) this.urlEnd = this.base + end;
    else {
      this.urlStart = s;
      this.urlEnd = this.base + end;
    }
  }

  field(start: number, end: number): void {
    const s = this.base + start;
    const f = this.fields;
    if (this.last === 1 && this.count > 0 && f[(this.count - 1) * 4 + 1] === s) {
      f[(this.count - 1) * 4 + 1] = this.base + end;
      return;
    }
    if (this.count >= MAX_HEADERS) {
      this.overflow = true;
      return;
    }
    const i = this.count++ * 4;
    f[i] = s;
    f[i + 1] = this.base + end;
    f[i + 2] = -1;
    f[i + 3] = -1;
    this.last = 1;
  }

  value(start: number, end: number): void {
    if (this.count === 0 || this.overflow) return;
    const i = (this.count - 1) * 4;
    const f = this.fields;
    const s = this.base + start;
    if (this.last === 2 && f[i + 3] === s) f[i + 3] = this.base + end;
    else {
      f[i + 2] = s;
      f[i + 3] = this.base + end;
    }
    this.last = 2;
  }

  /** The whole of `chunk` belongs to the head (which is not complete yet). */
  consumed(chunk: Buffer): void {
    this.pieces.push(chunk);
    this.base += chunk.length;
  }

  /** The head ends at `end` in `chunk`: returns it as one buffer. */
  complete(chunk: Buffer, end: number): Buffer {
    const tail = chunk.subarray(0, end);
    if (this.pieces.length === 0) return tail;
    const head = Buffer.concat([...this.pieces, tail]);
    this.pieces.length = 0;
    return head;
  }

  /** Start of header line i (its name), or of the blank line after the last header. */
  lineStart(head: Buffer, i: number): number {
    return i < this.count ? this.fields[i * 4]! : head.length - 2;
  }

  /** Value of header i as a string (latin1, as HTTP header bytes are). */
  valueOf(head: Buffer, i: number): string {
    const s = this.fields[i * 4 + 2]!;
    return s < 0 ? '' : head.toString('latin1', s, this.fields[i * 4 + 3]!);
  }

  nameOf(head: Buffer, i: number): string {
    return head.toString('latin1', this.fields[i * 4]!, this.fields[i * 4 + 1]!);
  }

  /** The value of the first header with this lowercase name (several joined with ", "), or undefined. */
  find(head: Buffer, lower: Uint8Array): string | undefined {
    let out: string | undefined;
    for (let i = 0; i < this.count; i++) {
      const o = i * 4;
      if (nameEquals(head, this.fields[o]!, this.fields[o + 1]!, lower)) {
        const v = this.valueOf(head, i);
        out = out === undefined ? v : `${out}, ${v}`;
      }
    }
    return out;
  }
}

const runStart = new Int32Array(MAX_HEADERS + 1);
const runEnd = new Int32Array(MAX_HEADERS + 1);
let runCount = 0;

/**
 * Finds the runs of header lines of `src` from `from` on that are not marked in `drop` (up to the
 * blank line, excluded), for `copyRuns`; returns their length in bytes. Synchronous scratch: the
 * runs hold until the next call.
 */
function planRuns(src: Buffer, h: HeadCollector, drop: Uint8Array, from: number): number {
  const f = h.fields;
  let runs = 0;
  let run = from;
  let len = 0;
  for (let i = 0; i < h.count; i++) {
    const start = f[i * 4]!;
    if (drop[i] === 1) {
      if (run >= 0 && start > run) {
        runStart[runs] = run;
        runEnd[runs++] = start;
        len += start - run;
      }
      run = -1;
    } else if (run < 0) run = start;
  }
  const end = src.length - 2;
  if (run >= 0 && end > run) {
    runStart[runs] = run;
    runEnd[runs++] = end;
    len += end - run;
  }
  runCount = runs;
  return len;
}

/** Copies the runs `planRuns` found into `out` at `pos`; returns the position after them. */
function copyRuns(src: Buffer, out: Buffer, pos: number): number {
  for (let r = 0; r < runCount; r++) pos += src.copy(out, pos, runStart[r], runEnd[r]);
  return pos;
}

/**
 * A rewritten head as bytes: `prefix` (text), then the bytes of `src` from `from` on, minus the
 * header lines marked in `drop` (copied in runs, as they came), then `tail` (text that ends with
 * the blank line). No strings are made of the copied bytes.
 */
export function rewriteHead(src: Buffer, h: HeadCollector, drop: Uint8Array, from: number, prefix: string, tail: string): Buffer {
  const out = Buffer.allocUnsafe(prefix.length + planRuns(src, h, drop, from) + tail.length);
  const pos = copyRuns(src, out, prefix.length > 0 ? out.write(prefix, 0, 'latin1') : 0);
  out.write(tail, pos, 'latin1');
  return out;
}

/** Room a HeadWriter's buffer keeps after a head, for what each attempt adds (its deadline, trace context). */
export const HEAD_SLACK = 512;

/**
 * Writes heads into one buffer, reused from head to head (a client connection keeps one for the
 * heads it sends upstream), so that a head costs no string concatenation and no new buffer. The
 * buffer is lent: a view of it may be written to a socket, and when the socket keeps that view
 * (it could not send it at once) the writer must let the buffer go (`handOff`) and take a new one
 * for the next head.
 */
export class HeadWriter {
  buf: Buffer = EMPTY_BUFFER;
  pos = 0;

  /**
   * Starts a head of at most `max` bytes (plus HEAD_SLACK of room after it). The buffer is the
   * next power of two from 1 KiB that fits: a connection keeps ~1 KiB for the usual heads.
   */
  start(max: number): void {
    const need = max + HEAD_SLACK;
    if (this.buf.length < need) {
      let size = 1024;
      while (size < need) size *= 2;
      this.buf = Buffer.allocUnsafeSlow(size);
    }
    this.pos = 0;
  }

  byte(c: number): void {
    this.buf[this.pos++] = c;
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A whole number >= 0 in decimal (no string made). */
  decimal(n: number): void {
    let digits = 1;
    for (let v = n; v >= 10; v = Math.floor(v / 10)) digits++;
    let i = this.pos + digits;
    this.pos = i;
    let v = n;
    do {
      this.buf[--i] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    } while (v > 0);
  }

  /** Text as latin1 (header bytes): one byte per character. */
  text(s: string): void {
    this.pos += this.buf.write(s, this.pos, 'latin1');
  }

  /**
   * Finds the header lines of `src` that `drop` does not mark, from `from` on (as rewriteHead
   * copies them), and returns their length (for `start`); `copyPlanned` then writes them. Nothing
   * else may plan in between (module scratch: both are synchronous).
   */
  plan(src: Buffer, h: HeadCollector, drop: Uint8Array, from: number): number {
    return planRuns(src, h, drop, from);
  }

  copyPlanned(src: Buffer): void {
    this.pos = copyRuns(src, this.buf, this.pos);
  }

  /** Whether `view` is a view of the current buffer (still this writer's to write into). */
  owns(view: Uint8Array): boolean {
    return this.buf.length > 0 && view.buffer === this.buf.buffer;
  }

  /** The buffer now belongs to a socket that queued a view of it: the next head gets a new one. */
  handOff(): void {
    this.buf = EMPTY_BUFFER;
    this.pos = 0;
  }
}

const EMPTY_BUFFER = Buffer.alloc(0);

/** The span callbacks of a parser, collected into `head`; the rest is the subclass's. */
export abstract class HeadCallbacks implements ParserCallbacks {
  readonly head = new HeadCollector();

  onMessageBegin(): number {
    this.head.begin();
    return 0;
  }
  onUrl(s: number, e: number): number {
    this.head.url(s, e);
    return 0;
  }
  onHeaderField(s: number, e: number): number {
    this.head.field(s, e);
    return 0;
  }
  onHeaderValue(s: number, e: number): number {
    this.head.value(s, e);
    return 0;
  }
  abstract onHeadersComplete(statusCode: number, upgrade: boolean, keepAlive: boolean): number;
  abstract onBody(start: number, end: number): number;
  abstract onMessageComplete(): number;
}

/**
 * The hop-by-hop rule, one for requests and responses (RFC 9110 §7.6.1, RFC 9112 §9.6): whether a
 * header line of kind `h` stays on this hop. Connection and what it names (see `dropNamed`),
 * Keep-Alive, Proxy-Connection, Proxy-Authorization and TE never go on; Upgrade goes on only
 * with a message that carries the upgrade (a request asking for one the proxy carries, a 101).
 */
export function hopByHop(h: H, upgrading: boolean): boolean {
  switch (h) {
    case H.Connection:
    case H.KeepAlive:
    case H.ProxyConnection:
    case H.ProxyAuthorization:
    case H.TE:
      return true;
    case H.Upgrade:
      return !upgrading;
    default:
      return false;
  }
}

/** Marks in `drop` every header line whose name the Connection header listed (`names`, lower case). */
export function dropNamed(buf: Buffer, h: HeadCollector, drop: Uint8Array, names: readonly string[]): void {
  for (let i = 0; i < h.count; i++) if (names.includes(h.nameOf(buf, i).toLowerCase())) drop[i] = 1;
}

const PLAIN_CONNECTION = ['close', 'keep-alive', 'upgrade'].map((t) => Buffer.from(t, 'latin1'));

/**
 * The header names that Connection header `i` lists besides close, keep-alive and upgrade,
 * appended to `into` (made when there is one). A value that is just one of those three words,
 * the common case, is recognised by its bytes.
 */
export function connectionNames(buf: Buffer, h: HeadCollector, i: number, into: string[] | null): string[] | null {
  const vs = h.fields[i * 4 + 2]!;
  if (vs >= 0) {
    const ve = h.fields[i * 4 + 3]!;
    for (const plain of PLAIN_CONNECTION) if (nameEquals(buf, vs, ve, plain)) return into;
  }
  let out = into;
  for (const t of connectionTokens(h.valueOf(buf, i))) {
    if (t !== 'close' && t !== 'keep-alive' && t !== 'upgrade') (out ??= []).push(t);
  }
  return out;
}

/**
 * Header names a Connection header may not name: RFC 9110 §7.6.1 has a proxy remove the fields a
 * message's Connection header names, and removing these would take away how the message is framed
 * (Content-Length, Transfer-Encoding) or where it goes (Host) after the parser framed it by them:
 * the classic way to smuggle a request, or to swap responses. No legitimate sender names them
 * (they are meant for every recipient), so such a message is refused rather than repaired.
 */
const NEVER_HOP_BY_HOP = new Set(['content-length', 'transfer-encoding', 'host']);

/** The first name in `names` (from `connectionNames`) that a Connection header may not name, or null. */
export function forbiddenConnectionOption(names: readonly string[] | null): string | null {
  if (names === null) return null;
  for (const n of names) if (NEVER_HOP_BY_HOP.has(n)) return n;
  return null;
}

/**
 * Whether the mesh carries an Upgrade request's protocols (the value of its Upgrade header, a list
 * of protocol[/version]): any but h2c. An h2c tunnel would carry HTTP/2 requests that no rule of
 * the mesh sees (h2c smuggling); the proxy declines it, serving the request as HTTP/1.1.
 */
export function upgradeAllowed(value: string): boolean {
  for (const part of value.split(',')) {
    const p = part.trim().toLowerCase();
    const name = p.split('/', 1)[0] as string;
    if (name === 'h2c' || name === '') return false;
  }
  return true;
}

/** Lowercase tokens of Connection header values ("close", "keep-alive", "upgrade", header names). */
export function connectionTokens(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = part.trim().toLowerCase();
    if (t !== '') out.push(t);
  }
  return out;
}

