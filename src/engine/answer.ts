/**
 * What every driver says the same way when the mesh answers a request itself (the proxy's
 * listeners, the SDK's dispatcher): the JSON body of a proxy error, and which answers of a peer's
 * inbound proxy mean the request never reached its app. Framing (HTTP/1 bytes, an undici
 * response, gRPC trailers) is the driver's; the words are here.
 */
import { INBOUND_PROXY_LABEL } from '../api/names.js';
import type { Direction } from '../api/stats.js';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';
import type { Endpoint } from '../discovery/endpoint.js';

/**
 * The body of a proxy error: `{ code, message, requestId?, details? }` and a newline, anything
 * beyond ASCII escaped (so that its length in latin1 is its byte count).
 */
export function errorBody(code: ErrorCode, message: string, requestId?: string, details?: unknown): string {
  const o: Record<string, unknown> = { code, message };
  if (requestId !== undefined) o['requestId'] = requestId;
  if (details !== undefined) o['details'] = details;
  return JSON.stringify(o).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n';
}

/** What an answer the mesh makes itself carries besides its body and framing: its status and headers. */
export interface ErrorHead {
  readonly status: number;
  /** In order: x-skein-error, x-skein-error-origin, x-request-id, retry-after, x-skein-explain (those that apply). */
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

/**
 * The status and headers of a proxy error, the same in every driver: `x-skein-error` names the
 * code, `x-skein-error-origin` the side that answered (a caller's proxy reads "inbound" as its
 * peer's: `refusedByPeer`), `retry-after` the rate limit's wait in whole seconds (rounded up),
 * `x-skein-explain` the explanation when the client asked for one.
 */
export function errorHead(code: ErrorCode, origin: Direction | null, o: { status?: number | undefined; requestId?: string | undefined; retryAfterMs?: number | undefined; explanation?: string | null | undefined } = {}): ErrorHead {
  const headers: Array<readonly [string, string]> = [['x-skein-error', code]];
  if (origin !== null) headers.push(['x-skein-error-origin', origin]);
  if (o.requestId !== undefined) headers.push(['x-request-id', o.requestId]);
  if (o.retryAfterMs !== undefined) headers.push(['retry-after', String(Math.ceil(o.retryAfterMs / 1000))]);
  if (o.explanation != null) headers.push(['x-skein-explain', o.explanation]);
  return { status: o.status ?? ERROR_CODES[code].status, headers };
}

/**
 * A peer's inbound proxy answered itself that the request never reached its app (its
 * `x-skein-error` and `x-skein-error-origin: inbound`): the evidence against the endpoint is a
 * mesh failure (0), not the status (see docs/traffic.md). Only such an endpoint's answers count:
 * it must be registered as an inbound proxy (INBOUND_PROXY_LABEL); an app registered without one,
 * or one that relays such an error, did see the request.
 */
export function refusedByPeer(e: Endpoint | null, peerOrigin: string | undefined, peerError: string | undefined): boolean {
  return peerOrigin === 'inbound' && (peerError === 'SKEIN_E_UPSTREAM_CONNECT' || peerError === 'SKEIN_E_PROXY_DRAINING') && e !== null && e.labels[INBOUND_PROXY_LABEL] === 'true';
}
