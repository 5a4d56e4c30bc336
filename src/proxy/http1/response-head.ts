/**
 * A response head from an upstream, read and checked (the response side of the smuggling
 * defences; the request side is request-head.ts), then rewritten for the client.
 *
 * - Connection may not name Content-Length, Transfer-Encoding or Host, and an HTTP/1.0 response
 *   may not have Transfer-Encoding: such a response is refused (the caller gets 502) and not a
 *   byte of it is forwarded.
 * - Hop-by-hop lines are dropped (head.ts), and what Connection names.
 * - Outbound, a peer Skein proxy's own error (`x-skein-error` with `x-skein-error-origin:
 *   inbound`) is noted; inbound, an app's `x-skein-error-origin` is dropped: an app's answer must
 *   not pass for the proxy's own.
 *
 * The header table of a response head is not collected from llhttp's callbacks but scanned here,
 * once, from the head llhttp validated (`scanResponseHead`).
 */
import { refusedByPeer as peerRefused } from '../../engine/answer.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { classify, connectionNames, dropNamed, forbiddenConnectionOption, H, hopByHop, rewriteHead, type HeadCollector, MAX_HEADERS, nameEquals } from './head.js';

const CONTENT_LENGTH = Buffer.from('content-length', 'latin1');
const TRANSFER_ENCODING = Buffer.from('transfer-encoding', 'latin1');
/** Longest Content-Length counted in JS: 15 digits stay below 2^53 (a longer one goes through llhttp). */
const MAX_COUNTED_DIGITS = 15;
const CR = 13;
const LF = 10;
const COLON = 58;
const SP = 32;
const HT = 9;

/**
 * Fills `h`'s header table from a response head that llhttp has validated, as llhttp's span
 * callbacks would have filled it (response-parse.test.ts compares the two on random heads). What
 * llhttp checked makes one pass enough: the head may start with empty lines, every line ends with
 * CRLF, a name is a token that ends at the first ':', no obs-fold. A value starts after the spaces
 * and tabs that follow the colon and ends at the CR (trailing whitespace included, as llhttp reports
 * it); an empty value is an empty range at the start of the next line. More than MAX_HEADERS lines:
 * the table keeps the first ones and `h.overflow` is set.
 *
 * Returns the body length that the head's Content-Length gives when the body can be counted
 * without llhttp (exactly one Content-Length, of at most 15 digits, and no Transfer-Encoding:
 * llhttp frames such a body by that length), else -1.
 */
export function scanResponseHead(buf: Buffer, h: HeadCollector): number {
  const f = h.fields;
  const end = buf.length - 2;
  let i = 0;
  // The bounds only matter for a head llhttp did not validate (never passed here).
  while (i < end && (buf[i] === CR || buf[i] === LF)) i++;
  while (i < end && buf[i] !== LF) i++;
  i++;
  let count = 0;
  let lengths = 0;
  let length = -1;
  let te = false;
  while (i < end) {
    const nameStart = i;
    while (i < end && buf[i] !== COLON) i++;
    const nameEnd = i++;
    while (i < end && (buf[i] === SP || buf[i] === HT)) i++;
    let valueStart = i;
    while (i < end && buf[i] !== CR) i++;
    let valueEnd = i;
    i += 2;
    if (valueStart === valueEnd) valueStart = valueEnd = i;
    if (count === MAX_HEADERS) {
      h.overflow = true;
      continue;
    }
    const o = count++ * 4;
    f[o] = nameStart;
    f[o + 1] = nameEnd;
    f[o + 2] = valueStart;
    f[o + 3] = valueEnd;
    const n = nameEnd - nameStart;
    if (n === 14 && nameEquals(buf, nameStart, nameEnd, CONTENT_LENGTH)) {
      lengths++;
      length = digits(buf, valueStart, valueEnd);
    } else if (n === 17 && nameEquals(buf, nameStart, nameEnd, TRANSFER_ENCODING)) te = true;
  }
  h.count = count;
  return lengths === 1 && !te ? length : -1;
}

/** A Content-Length value (digits, then maybe spaces and tabs) as a number; -1 when it is not one JS counts. */
function digits(buf: Buffer, start: number, end: number): number {
  let n = 0;
  let i = start;
  for (; i < end; i++) {
    const c = buf[i]! - 48;
    if (c < 0 || c > 9) break;
    n = n * 10 + c;
  }
  if (i === start || i - start > MAX_COUNTED_DIGITS) return -1;
  for (; i < end; i++) if (buf[i] !== SP && buf[i] !== HT) return -1;
  return n;
}

/** Scratch of `readResponseHead` (synchronous, so one for all). */
const drop = new Uint8Array(MAX_HEADERS);

export interface ResponseHead {
  readonly chunked: boolean;
  /** Names the Connection header listed (dropped too), or null. */
  readonly named: readonly string[] | null;
  /** A peer proxy's x-skein-error (outbound). */
  readonly peerError: string | undefined;
  /** Its x-skein-error-origin (outbound). */
  readonly peerOrigin: string | undefined;
}

/**
 * Reads the final response head in `buf` (`h` its header table). A string is why it is refused.
 * `outbound`: the caller's side (a peer proxy may answer); `http10Client`: the client spoke
 * HTTP/1.0 (no chunked framing for it); `http10Response`: the upstream answered HTTP/1.0.
 */
export function readResponseHead(buf: Buffer, h: HeadCollector, status: number, outbound: boolean, http10Client: boolean, http10Response: boolean): ResponseHead | string {
  const f = h.fields;
  let chunked = false;
  let named: string[] | null = null;
  let peerError: string | undefined;
  let peerOrigin: string | undefined;
  for (let i = 0; i < h.count; i++) {
    const o = i * 4;
    const kind = classify(buf, f[o]!, f[o + 1]!);
    drop[i] = hopByHop(kind, status === 101) ? 1 : 0;
    switch (kind) {
      case H.Connection:
        named = connectionNames(buf, h, i, named);
        break;
      case H.TransferEncoding:
        chunked = true;
        if (http10Client) drop[i] = 1;
        break;
      case H.XSkeinError:
        peerError = h.valueOf(buf, i);
        break;
      case H.XSkeinErrorOrigin:
        // Inbound, it can only be the app's, which must not pass for the proxy's own.
        if (outbound) peerOrigin = h.valueOf(buf, i);
        else drop[i] = 1;
        break;
      default:
        break;
    }
  }
  const framing = forbiddenConnectionOption(named);
  if (framing !== null) return `its Connection header names ${framing}, which is never hop-by-hop (RFC 9110 §7.6.1)`;
  if (chunked && http10Response) return 'an HTTP/1.0 response may not have Transfer-Encoding (RFC 9112 §6.1)';
  if (named !== null) dropNamed(buf, h, drop, named);
  return { chunked, named, peerError, peerOrigin };
}

/** The response head for the client: the upstream's lines minus the dropped ones, then `tail` (ends with the blank line). */
export function clientHead(buf: Buffer, h: HeadCollector, tail: string): Buffer {
  return rewriteHead(buf, h, drop, 0, '', tail);
}

/** Peer-proxy errors that say the request never reached an app (the decision: src/engine/answer.ts). */
export function refusedByPeer(e: Endpoint | null, r: ResponseHead): boolean {
  return peerRefused(e, r.peerOrigin, r.peerError);
}
