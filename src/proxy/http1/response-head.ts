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
 */
import { INBOUND_PROXY_LABEL } from '../../api/names.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { classify, connectionNames, dropNamed, forbiddenConnectionOption, H, hopByHop, rewriteHead, type HeadCollector, MAX_HEADERS } from './head.js';

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

/**
 * Peer-proxy errors that say the request never reached an app: safe to send elsewhere, and
 * evidence against the endpoint rather than an app's answer. Only a Skein inbound listener's own
 * answers count: the endpoint must be registered as one (INBOUND_PROXY_LABEL), and the answer
 * must say it is its own (`x-skein-error-origin: inbound`, which an inbound listener removes from
 * its app's responses). An app registered without an inbound proxy, or one that relays such an
 * error, did see the request.
 */
export function refusedByPeer(e: Endpoint | null, r: ResponseHead): boolean {
  return r.peerOrigin === 'inbound' && (r.peerError === 'SKEIN_E_UPSTREAM_CONNECT' || r.peerError === 'SKEIN_E_PROXY_DRAINING') && e !== null && e.labels[INBOUND_PROXY_LABEL] === 'true';
}
