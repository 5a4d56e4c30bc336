/**
 * A request head, read and checked, then rewritten for the upstream. This is the request side of
 * the smuggling defences (docs/proxy.md, "Strict framing"); the response side is
 * response-head.ts, and the rules both share (hop-by-hop headers, what Connection may name) are in
 * head.ts. Every refusal here is a 400 before a byte of the request reaches an upstream.
 *
 * - The request line must be METHOD SP target SP HTTP/1.x with single spaces (llhttp accepts runs).
 * - HTTP/1.0 and 1.1 only; an HTTP/1.0 request may not have Transfer-Encoding.
 * - Connection may not name Content-Length, Transfer-Encoding or Host; what it names is dropped.
 * - One Host header (exactly one in HTTP/1.1), a valid host[:port]; an absolute-form target's
 *   authority wins over Host, which is replaced.
 * - The target is normalized (src/core/path.ts): routes match what the app gets.
 */
import { randomBytes } from 'node:crypto';
import { CLIENT_ID_HEADER } from '../../api/mtls.js';
import { deadlineMs } from '../../engine/admission.js';
import { normalizePath } from '../../authz/normalize.js';
import type { TraceHeaders } from '../../engine/observe.js';
import { classify, connectionNames, dropNamed, forbiddenConnectionOption, H, hopByHop, type HeadCollector, type HeadWriter } from './head.js';
import { METHOD_CONNECT, type HttpParser } from './llhttp.js';

/** What the forwarder needs of a request head, beyond its bytes. */
/** A target whose path cannot be normalized safely (SKEIN_E_BAD_PATH): nothing is forwarded. */
export interface PathRefusal {
  readonly pathError: string;
}

export interface RequestHead {
  readonly method: string;
  /** The normalized target (path and query), or "*". */
  readonly path: string;
  /** Index of x-skein-caller when the listener takes the caller's proxy's word for it (mTLS off); -1: none. */
  readonly callerAt: number;
  /** The normalized path without the query: what authorization policies match. */
  readonly pathOnly: string;
  /** host[:port] from an absolute-form target or the Host header; null without either. */
  readonly authority: string | null;
  /** The target was absolute-form (http://authority/path): the Host line is replaced. */
  readonly absolute: boolean;
  readonly hasBody: boolean;
  readonly http11: boolean;
  /** Index of the Upgrade header line of an upgrade request; -1: none. */
  readonly upgradeAt: number;
  /** The X-Forwarded-For chain so far (its lines are dropped: the proxy appends the client). */
  readonly xff: string | undefined;
  /** The client sent X-Forwarded-Proto. */
  readonly xfp: boolean;
  /** Index of the X-Request-Id line; -1: none (the proxy makes one). */
  readonly requestIdAt: number;
  /** The client asked for x-skein-explain (outbound). */
  readonly explain: boolean;
  /** The smallest x-skein-timeout-ms in ms; -1: none. */
  readonly deadlineMs: number;
  /** The text of an x-skein-timeout-ms that is not a number (answered with 400 once routed). */
  readonly badDeadline: string | null;
  /** The trace context headers (tracing on; their lines are dropped: each attempt sends its own). */
  readonly trace: TraceHeaders | null;
}

/**
 * A RequestHead whose fields are filled in for each request (a client connection keeps one): every
 * field set, always in the same order, so that the object keeps one shape.
 */
export class RequestHeadState implements RequestHead {
  method = '';
  path = '';
  callerAt = -1;
  pathOnly = '';
  authority: string | null = null;
  absolute = false;
  hasBody = false;
  http11 = true;
  upgradeAt = -1;
  xff: string | undefined = undefined;
  xfp = false;
  requestIdAt = -1;
  explain = false;
  deadlineMs = -1;
  badDeadline: string | null = null;
  trace: TraceHeaders | null = null;
}

/** The usual methods by llhttp's number, as constant strings (a request's method bytes are checked against them). */
const METHOD_NAMES: ReadonlyArray<readonly [string, Uint8Array]> = ['DELETE', 'GET', 'HEAD', 'POST', 'PUT', 'CONNECT', 'OPTIONS', 'TRACE'].map((m) => [m, Buffer.from(m, 'latin1')] as const);

/** The method of the request line at `start` (its bytes, as llhttp checked them, end at `end`). */
function methodOf(buf: Buffer, start: number, end: number, n: number): string {
  const known = METHOD_NAMES[n];
  if (known !== undefined) {
    const bytes = known[1];
    let same = end - start === bytes.length;
    for (let i = 0; same && i < bytes.length; i++) same = buf[start + i] === bytes[i];
    if (same) return known[0];
  }
  return buf.toString('latin1', start, end);
}

/** RFC 3986 host (reg-name or IP literal) with an optional port; no userinfo. */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?$/;

/** Authorities seen valid (a few names over and over: the regular expression runs once each). */
const validAuthorities = new Set<string>();

function validAuthority(a: string): boolean {
  if (validAuthorities.has(a)) return true;
  if (!AUTHORITY.test(a)) return false;
  if (validAuthorities.size >= 1024) validAuthorities.clear();
  validAuthorities.add(a);
  return true;
}

/** `http://authority/path`: [authority, path], or null when the target is not absolute http. */
function absoluteTarget(url: string): [string, string] | null {
  if (url.length < 8 || url.charCodeAt(0) === 0x2f) return null;
  if (url.slice(0, 7).toLowerCase() !== 'http://') return null;
  let end = 7;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 0x2f || c === 0x3f || c === 0x23) break;
    end++;
  }
  const authority = url.slice(7, end);
  let path = url.slice(end);
  if (path === '' || path.charCodeAt(0) !== 0x2f) path = `/${path}`;
  return [authority, path];
}

/** Where the request line starts: llhttp lets empty lines come before it (RFC 9112 §2.2). */
function requestLineStart(buf: Buffer): number {
  let i = 0;
  while (buf[i] === 0x0d || buf[i] === 0x0a) i++;
  return i;
}

/**
 * llhttp accepts runs of spaces between the parts of the request line; the parts must be split by
 * exactly one SP (RFC 9112 §3), or "POST  /x" would be read as the method "POST " and pass every
 * rule about POST.
 */
function strictRequestLine(buf: Buffer, methodStart: number, urlStart: number, urlEnd: number): boolean {
  return urlStart - methodStart >= 2 && buf[urlStart - 1] === 0x20 && buf[urlStart - 2] !== 0x20 && buf[urlEnd] === 0x20 && buf[urlEnd + 1] === 0x48;
}

/** A second value of a single-valued trace header is joined with ",", which no parser accepts: a request with two traceparents starts a new trace. */
const join2 = (a: string | undefined, b: string) => (a === undefined ? b : `${a},${b}`);

function traceHeader(t: TraceHeaders, h: H, value: string): void {
  if (h === H.Traceparent) t.traceparent = join2(t.traceparent, value);
  else if (h === H.Tracestate) t.tracestate = join2(t.tracestate, value);
  else if (h === H.B3) t.b3 = join2(t.b3, value);
  else if (h === H.XB3TraceId) t.xB3TraceId = value;
  else if (h === H.XB3SpanId) t.xB3SpanId = value;
  else if (h === H.XB3ParentSpanId) t.xB3ParentSpanId = value;
  else if (h === H.XB3Sampled) t.xB3Sampled = value;
  else if (h === H.XB3Flags) t.xB3Flags = value;
}

/**
 * Reads the head in `buf` (`head` holds its header table; `parser` has just completed it) and
 * marks in `drop` the header lines that do not go upstream. A string is the reason it is refused
 * (400). `upgrade`: llhttp saw an upgrade request.
 */
export function readRequestHead(
  buf: Buffer,
  head: HeadCollector,
  parser: HttpParser,
  upgrade: boolean,
  outbound: boolean,
  tracing: boolean,
  drop: Uint8Array,
  /** Inbound in mTLS mode off: the x-skein-caller the caller's proxy sent names the caller (see callerAt). */
  claims = false,
  /** Where the result goes (a connection's, reused); a new one by default. */
  into: RequestHeadState = new RequestHeadState(),
): RequestHead | PathRefusal | string {
  if (parser.method === METHOD_CONNECT) return 'CONNECT is not supported: send plain http:// requests (the mesh encrypts between proxies)';
  const f = head.fields;
  const n = head.count;
  let host = -1;
  let hosts = 0;
  let xfp = false;
  let rid = -1;
  let xff: string | undefined;
  let hasBody = false;
  let transferEncoding = false;
  let named: string[] | null = null;
  let upgradeAt = -1;
  let deadline = -1;
  let badDeadline: string | null = null;
  let explain = false;
  let callerAt = -1;
  let trace: TraceHeaders | null = null;
  for (let i = 0; i < n; i++) {
    const o = i * 4;
    const h = classify(buf, f[o]!, f[o + 1]!);
    drop[i] = hopByHop(h, upgrade) ? 1 : 0;
    switch (h) {
      case H.Host:
        hosts++;
        host = i;
        break;
      case H.Connection:
        named = connectionNames(buf, head, i, named);
        break;
      case H.Upgrade:
        if (upgrade) upgradeAt = i;
        break;
      case H.XForwardedFor:
        drop[i] = 1;
        xff = xff === undefined ? head.valueOf(buf, i) : `${xff}, ${head.valueOf(buf, i)}`;
        break;
      case H.XForwardedProto:
        xfp = true;
        break;
      case H.XRequestId:
        rid = i;
        break;
      case H.TransferEncoding:
        hasBody = true;
        transferEncoding = true;
        break;
      case H.ContentLength:
        if (f[o + 3]! - f[o + 2]! !== 1 || buf[f[o + 2]!] !== 0x30) hasBody = true;
        break;
      case H.XSkeinTimeout:
        // The caller's remaining deadline: the proxy sends its own (what is left) on.
        drop[i] = 1;
        if (badDeadline === null) {
          const left = deadlineMs(head.valueOf(buf, i));
          if (typeof left === 'string') badDeadline = left;
          else if (deadline < 0 || left < deadline) deadline = left;
        }
        break;
      case H.XSkeinExplain:
        if (outbound) {
          drop[i] = 1;
          explain = head.valueOf(buf, i) === '1';
        }
        break;
      case H.XSkeinCaller:
        // Who calls is what the proxies say, never what a request claims: outbound, the proxy
        // names its workload; inbound with mTLS, the caller's verified certificate does. Only a
        // mesh without mTLS (mode off) takes the caller's proxy's word, for its metrics and logs.
        drop[i] = 1;
        if (claims) callerAt = i;
        break;
      case H.XSkeinClientId:
        drop[i] = 1;
        break;
      case H.Traceparent:
      case H.Tracestate:
      case H.B3:
      case H.XB3TraceId:
      case H.XB3SpanId:
      case H.XB3ParentSpanId:
      case H.XB3Sampled:
      case H.XB3Flags:
        if (tracing) {
          drop[i] = 1;
          traceHeader((trace ??= {}), h, head.valueOf(buf, i));
        }
        break;
      default:
        break;
    }
  }
  const framing = forbiddenConnectionOption(named);
  if (framing !== null) return `the Connection header names ${framing}, which is never hop-by-hop (RFC 9110 §7.6.1): removing it would unframe or misroute the request`;
  if (named !== null) {
    // Headers the client named in Connection are hop-by-hop, even the ones the proxy manages.
    dropNamed(buf, head, drop, named);
    if (named.includes('x-forwarded-for')) xff = undefined;
    if (named.includes('x-forwarded-proto')) xfp = false;
    if (rid >= 0 && drop[rid] === 1) rid = -1;
  }
  if (parser.httpMajor !== 1) return `HTTP/${parser.httpMajor}.${parser.httpMinor} is not supported (HTTP/1.0 and 1.1 are)`;
  const http11 = parser.httpMinor >= 1;
  // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
  if (!http11 && transferEncoding) return 'an HTTP/1.0 request may not have Transfer-Encoding (RFC 9112 §6.1)';
  const methodStart = requestLineStart(buf);
  if (!strictRequestLine(buf, methodStart, head.urlStart, head.urlEnd)) return 'the request line must be METHOD SP target SP HTTP/1.x, with single spaces (RFC 9112 §3)';
  const url = buf.toString('latin1', head.urlStart, head.urlEnd);
  const abs = absoluteTarget(url);
  let authority: string | null;
  let target: string;
  if (abs !== null) {
    [authority, target] = abs;
    if (host >= 0) drop[host] = 1;
  } else if (url.charCodeAt(0) === 0x2f || url === '*') {
    authority = host >= 0 ? head.valueOf(buf, host) : null;
    target = url;
  } else {
    return `request target "${url.slice(0, 100)}" is neither a path nor an http:// URL`;
  }
  let path = target;
  let pathOnly = target;
  if (target !== '*') {
    // Routes, policies and the app see the normalized path: what a policy matched is what the app gets.
    const p = normalizePath(target);
    if ('error' in p) return { pathError: `request target "${target.slice(0, 100)}": ${p.error}` };
    pathOnly = p.path;
    path = p.query === '' ? p.path : p.path + p.query;
  }
  if (hosts > 1) return 'more than one Host header';
  if (http11 && hosts === 0) return 'an HTTP/1.1 request must have a Host header';
  if (authority !== null && !validAuthority(authority)) return `"${authority.slice(0, 100)}" is not a valid host[:port]`;
  const r = into;
  r.method = methodOf(buf, methodStart, head.urlStart - 1, parser.method);
  r.path = path;
  r.callerAt = callerAt;
  r.pathOnly = pathOnly;
  r.authority = authority;
  r.absolute = abs !== null;
  r.hasBody = hasBody;
  r.http11 = http11;
  r.upgradeAt = upgradeAt;
  r.xff = xff;
  r.xfp = xfp;
  r.requestIdAt = rid;
  r.explain = explain;
  r.deadlineMs = deadline;
  r.badDeadline = badDeadline;
  r.trace = trace;
  return r;
}

const HEX = '0123456789abcdef';
/** Where the counter's 12 hex digits start in an id. */
const COUNTER_AT = 24;
const ID_LENGTH = 36;

/**
 * The x-request-id of a request that came without one. Ids are UUID-formatted, version 8 (RFC 9562
 * §5.8: a layout of the maker's own): 74 random bits drawn once per process (`random`, 10 bytes),
 * then a 48-bit counter in the last 12 hex digits,
 *
 *   rrrrrrrr-rrrr-8rrr-Vrrr-cccccccccccc    (V: 8, 9, a or b, the RFC 9562 variant)
 *
 * so ids are unique across proxies and restarts (the random part) and within a process (the
 * counter), and making one costs a counter step and a 36-byte string instead of a random UUID.
 * The ids of one process share their first 24 characters: an id says nothing secret and is not
 * meant to be unguessable.
 */
export class RequestIds {
  private readonly bytes = Buffer.alloc(ID_LENGTH);

  constructor(random: Uint8Array = randomBytes(10)) {
    if (random.length < 10) throw new RangeError(`RequestIds needs 10 random bytes, got ${random.length}`);
    let hex = '';
    for (let i = 0; i < 10; i++) hex += HEX[random[i]! >> 4]! + HEX[random[i]! & 15]!;
    const variant = HEX[8 | (parseInt(hex[15]!, 16) & 3)]!;
    const prefix = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(12, 15)}-${variant}${hex.slice(16, 19)}-`;
    this.bytes.write(prefix, 0, 'latin1');
    this.bytes.fill(0x30, COUNTER_AT);
  }

  /** The next id (the counter wraps after 2^48 ids). */
  next(): string {
    const b = this.bytes;
    // Increment the hex counter in place: usually only its last digit changes.
    for (let i = ID_LENGTH - 1; i >= COUNTER_AT; i--) {
      const c = b[i]!;
      if (c === 0x39) {
        b[i] = 0x61;
        break;
      }
      if (c !== 0x66) {
        b[i] = c + 1;
        break;
      }
      b[i] = 0x30;
    }
    return b.toString('latin1');
  }
}

/** The process's ids of requests that come without x-request-id: one sequence, every driver's (HTTP/1 and HTTP/2). */
export const requestIds = new RequestIds();

/** What the proxy adds to a request head (a client connection keeps one, filled in for each request). */
export interface Forwarding {
  /** The client's address (appended to X-Forwarded-For). */
  client: string;
  requestId: string;
  /** The calling service (x-skein-caller): outbound, the workload's; inbound, the verified peer's (null: unknown). */
  caller: string | null;
  /** Inbound: the caller's verified SPIFFE ID (x-skein-client-id); null: none (plaintext, or outbound). */
  clientId: string | null;
  /** The request upgrades (connection: upgrade goes with it). */
  upgrade: boolean;
  /**
   * Leave the head open (no final CRLF): each attempt adds its deadline and trace context, then
   * ends it (see Exchange.requestHead).
   */
  open: boolean;
}

const latin1 = (s: string) => Buffer.from(s, 'latin1');
const HTTP11 = latin1(' HTTP/1.1\r\n');
const HOST = latin1('host: ');
const XFF = latin1('x-forwarded-for: ');
const LIST = latin1(', ');
const CRLF = latin1('\r\n');
const XFP = latin1('x-forwarded-proto: http\r\n');
const RID = latin1('x-request-id: ');
const CALLER = latin1('x-skein-caller: ');
const CLIENT_ID = latin1(`${CLIENT_ID_HEADER}: `);
const CONNECTION_UPGRADE = latin1('connection: upgrade\r\n');

/**
 * The head for the upstream, written into `w` (a view of its buffer is returned): the request line
 * in origin form, the client's header lines minus the dropped ones (copied as bytes), then what
 * the proxy adds, piece by piece (no string is made).
 */
export function upstreamHead(buf: Buffer, head: HeadCollector, drop: Uint8Array, r: RequestHead, fw: Forwarding, w: HeadWriter): Buffer {
  // An upper bound of the head's length (latin1: a byte per character), for the writer's buffer.
  let max = r.method.length + 1 + r.path.length + HTTP11.length + w.plan(buf, head, drop, head.lineStart(buf, 0)) + CRLF.length;
  if (r.absolute) max += HOST.length + (r.authority?.length ?? 0) + CRLF.length;
  max += XFF.length + (r.xff === undefined ? 0 : r.xff.length + LIST.length) + fw.client.length + CRLF.length;
  if (!r.xfp) max += XFP.length;
  if (r.requestIdAt < 0) max += RID.length + fw.requestId.length + CRLF.length;
  if (fw.caller !== null) max += CALLER.length + fw.caller.length + CRLF.length;
  if (fw.clientId !== null) max += CLIENT_ID.length + fw.clientId.length + CRLF.length;
  if (fw.upgrade) max += CONNECTION_UPGRADE.length;
  w.start(max);
  w.text(r.method);
  w.byte(0x20);
  w.text(r.path);
  w.bytes(HTTP11);
  w.copyPlanned(buf);
  if (r.absolute) {
    w.bytes(HOST);
    w.text(r.authority ?? '');
    w.bytes(CRLF);
  }
  w.bytes(XFF);
  if (r.xff !== undefined) {
    w.text(r.xff);
    w.bytes(LIST);
  }
  w.text(fw.client);
  w.bytes(CRLF);
  if (!r.xfp) w.bytes(XFP);
  if (r.requestIdAt < 0) {
    w.bytes(RID);
    w.text(fw.requestId);
    w.bytes(CRLF);
  }
  if (fw.caller !== null) {
    w.bytes(CALLER);
    w.text(fw.caller);
    w.bytes(CRLF);
  }
  if (fw.clientId !== null) {
    w.bytes(CLIENT_ID);
    w.text(fw.clientId);
    w.bytes(CRLF);
  }
  if (fw.upgrade) w.bytes(CONNECTION_UPGRADE);
  if (!fw.open) w.bytes(CRLF);
  return w.buf.subarray(0, w.pos);
}
