/**
 * What a gRPC status says about a call, for the engine's decisions (protocol-agnostic: the
 * HTTP/2 driver reads `grpc-status` and hands the number over). A gRPC failure travels in an
 * HTTP 200 response, so the status alone would count every failed RPC as a success: the call
 * weighs the grpc-status instead, as the HTTP status it stands for (Envoy's `grpcToHttpStatus`,
 * the inverse of gRPC's own HTTP-to-gRPC table), for metrics, breakers and outlier detection;
 * and a few codes are retry conditions a route may opt into (Envoy's `retry_on` names).
 */
import type { RetryCondition } from '../api/traffic.js';

/** gRPC status codes (grpc/doc/statuscodes.md). */
export const GRPC = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});

/** The HTTP status a gRPC status stands for, by code (index). */
const AS_HTTP = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

/**
 * The HTTP status a gRPC status counts as: 5xx (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
 * INTERNAL, UNAVAILABLE, DATA_LOSS) are failures of the instance; the others are the caller's.
 * A code outside 0..16 (or none where one was due: -1) is a malformed answer: 500.
 */
export function grpcAsHttp(code: number): number {
  return AS_HTTP[code] ?? 500;
}

/** The retry condition a gRPC status matches (a route retries it when its `retries.on` names it), or null. */
export function grpcRetryCondition(code: number): RetryCondition | null {
  switch (code) {
    case GRPC.CANCELLED:
      return 'cancelled';
    case GRPC.DEADLINE_EXCEEDED:
      return 'deadline-exceeded';
    case GRPC.RESOURCE_EXHAUSTED:
      return 'resource-exhausted';
    case GRPC.INTERNAL:
      return 'internal';
    case GRPC.UNAVAILABLE:
      return 'unavailable';
    default:
      return null;
  }
}
