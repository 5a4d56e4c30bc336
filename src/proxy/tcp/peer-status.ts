/**
 * The status an inbound proxy answers a TCP stream from a peer proxy with, before any byte of its
 * app: the one definition of the wire format (docs/protocols.md, "Raw TCP", "Between proxies").
 *
 * On an mTLS stream between proxies that negotiated ALPN `skein-mesh/2` (MESH_ALPN_STATUS: both
 * ends are proxies of the mesh, and of a release that has the status; with `skein-mesh/1`, an
 * older peer, there is none), the callee's inbound proxy connects to its app and then writes,
 * first on the stream:
 *
 *   0x06 (ACK)                 its app took the connection; the app's bytes follow
 *   0x15 (NAK) <error line>    refused: `errorBody(code, message)` of src/engine/answer.ts (one
 *                              JSON line, ASCII, at most MAX_REFUSAL bytes), then it closes
 *
 * The caller's outbound proxy reads that status before it calls the stream established: an app
 * that is down behind a live proxy is a failed attempt (retried on another endpoint, evidence for
 * breakers and outlier detection), as a peer's refusal is in HTTP. Neither side waits for the
 * client's or the app's bytes: the status follows the inbound proxy's connect to its app at once,
 * so a server that speaks first is heard as soon as it speaks. Plaintext streams carry no status.
 */
import type { ErrorCode } from '../../core/errors.js';
import { ERROR_CODES } from '../../core/errors.js';
import { errorBody } from '../../engine/answer.js';

export const APP_CONNECTED = 0x06;
export const APP_REFUSED = 0x15;
/** The longest refusal (its NAK byte and JSON line) a caller reads; a longer one is malformed. */
export const MAX_REFUSAL = 2048;

const CONNECTED = Buffer.from([APP_CONNECTED]);

/** What the inbound proxy writes when its app took the connection. */
export function connectedStatus(): Buffer {
  return CONNECTED;
}

/** What the inbound proxy writes when it refuses the stream (then it closes). */
export function refusedStatus(code: ErrorCode, message: string): Buffer {
  // 300 characters: escaped (\uXXXX, six bytes each at worst) the line stays within MAX_REFUSAL.
  const line = errorBody(code, message.length > 300 ? `${message.slice(0, 300)}...` : message);
  return Buffer.concat([Buffer.from([APP_REFUSED]), Buffer.from(line, 'latin1')]);
}

/** What a caller read of the status so far. */
export type PeerStatus =
  | { readonly kind: 'more' }
  /** `rest`: the app's first bytes that came with the status (empty: none yet). */
  | { readonly kind: 'connected'; readonly rest: Buffer }
  | { readonly kind: 'refused'; readonly code: ErrorCode; readonly message: string }
  | { readonly kind: 'malformed'; readonly reason: string };

const MORE: PeerStatus = Object.freeze({ kind: 'more' });

/** Reads the status off the first bytes of a stream from the inbound proxy (the caller's side). */
export class PeerStatusReader {
  private got: Buffer | null = null;

  push(chunk: Buffer): PeerStatus {
    const b = this.got === null ? chunk : Buffer.concat([this.got, chunk]);
    this.got = null;
    if (b.length === 0) return MORE;
    if (b[0] === APP_CONNECTED) return { kind: 'connected', rest: b.subarray(1) };
    if (b[0] !== APP_REFUSED) return { kind: 'malformed', reason: `the inbound proxy's status byte is 0x${b[0]!.toString(16).padStart(2, '0')} (not ACK 0x06 or NAK 0x15)` };
    const nl = b.indexOf(0x0a);
    if (nl < 0) {
      if (b.length >= MAX_REFUSAL) return { kind: 'malformed', reason: `the inbound proxy's refusal is longer than ${MAX_REFUSAL} bytes` };
      this.got = b;
      return MORE;
    }
    try {
      const o = JSON.parse(b.subarray(1, nl).toString('latin1')) as { code?: unknown; message?: unknown };
      if (typeof o.code === 'string' && Object.hasOwn(ERROR_CODES, o.code)) return { kind: 'refused', code: o.code as ErrorCode, message: typeof o.message === 'string' ? o.message : '' };
    } catch {
      // Not JSON: malformed below.
    }
    return { kind: 'malformed', reason: "the inbound proxy's refusal is not a JSON error line with a SKEIN_E_* code" };
  }
}
