/**
 * gRPC on the wire, as the HTTP/2 driver reads and writes it: whether a request is gRPC, the
 * `grpc-timeout` header (read, and written with the time left), and the proxy's own errors as
 * gRPC errors (`grpc-status` + `grpc-message`, Trailers-Only). What a grpc-status means for the
 * call (failure, retry) is the engine's: src/engine/grpc.ts.
 */
import { MAX_TIMER_MS } from '../../core/clock.js';
import type { ErrorCode } from '../../core/errors.js';
import { GRPC } from '../../engine/grpc.js';

/** A request is gRPC when its content-type is application/grpc (or application/grpc+proto, ...). */
export function isGrpc(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.startsWith('application/grpc');
}

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * A grpc-timeout value ("1*8DIGIT unit", units H M S m u n) in whole ms (at least 1 for a positive
 * timeout; 0 for "0x"), capped at what a timer holds; null when malformed.
 */
export function parseGrpcTimeout(v: string): number | null {
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (m === null) return null;
  const n = Number(m[1]);
  if (n === 0) return 0;
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(n * (UNIT_MS[m[2]!] ?? 1))));
}

/** `ms` as a grpc-timeout value (milliseconds while they fit 8 digits, else seconds). */
export function formatGrpcTimeout(ms: number): string {
  return ms < 1e8 ? `${Math.max(1, Math.floor(ms))}m` : `${Math.ceil(ms / 1000)}S`;
}

/** grpc-message: percent-encoded outside printable ASCII, and '%' itself (gRPC over HTTP/2 spec). */
export function grpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/**
 * The gRPC status of a proxy error: a deadline is DEADLINE_EXCEEDED, a rate limit
 * RESOURCE_EXHAUSTED, an authorization refusal PERMISSION_DENIED; the rest by their HTTP status
 * as gRPC maps HTTP (grpc/doc/http-grpc-status-mapping.md: 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, 400 INTERNAL, else UNKNOWN).
 */
export function grpcStatusOf(code: ErrorCode, status: number): number {
  switch (code) {
    case 'SKEIN_E_UPSTREAM_TIMEOUT':
    case 'SKEIN_E_DEADLINE_EXCEEDED':
      return GRPC.DEADLINE_EXCEEDED;
    case 'SKEIN_E_RATE_LIMITED':
      return GRPC.RESOURCE_EXHAUSTED;
    case 'SKEIN_E_AUTHZ_DENIED':
      return GRPC.PERMISSION_DENIED;
    default:
      break;
  }
  switch (status) {
    case 400:
      return GRPC.INTERNAL;
    case 401:
      return GRPC.UNAUTHENTICATED;
    case 403:
      return GRPC.PERMISSION_DENIED;
    case 404:
      return GRPC.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC.UNAVAILABLE;
    default:
      return GRPC.UNKNOWN;
  }
}
