/**
 * The retry decision, shared by the proxy's forwarder and (later) the SDK: may this failed
 * attempt be tried again, and after how long?
 *
 * A retry needs all of: a failure the policy retries (a condition in `on`, or a status in
 * `statuses`); a method that may be sent again (idempotent, or `nonIdempotent` set; a connect
 * failure or a peer's refusal never reached an app, and a gRPC status condition is retried for
 * any method: UNAVAILABLE is in the default `on`, as Istio's default retry policy has it, since
 * gRPC's UNAVAILABLE says the server did not act on the call); the body kept, if there is
 * one; fewer than `maxRetries` retries so far; time before the deadline for the backoff; and a
 * retry from the budget, which is taken last so that a refusal for another reason costs none.
 * The backoff is exponential with full jitter: uniform in [0, min(max, base * 2^n)).
 */
import { GRPC_RETRY_CONDITIONS, type RetryCondition, type RetryPolicy } from '../api/traffic.js';
import type { RetryBudget } from './retry-budget.js';

/**
 * Conditions retried whatever the method: the request never reached an app (a connect failure, a
 * peer's refusal), or a gRPC status the route opted into (gRPC has one method, POST; its own
 * retry policy, retryableStatusCodes, does not look at idempotency either).
 */
const ANY_METHOD: ReadonlySet<RetryReason> = new Set<RetryReason>(['connect-failure', 'refused-stream', ...GRPC_RETRY_CONDITIONS]);

/** Methods that may be sent again (RFC 9110 §9.2.2), by name: the HTTP/2 driver's and the SDK's. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);

export type RetryReason = RetryCondition | 'status';

export interface RetryAttempt {
  /** Retries made so far for this request. */
  readonly retries: number;
  readonly idempotent: boolean;
  readonly hasBody: boolean;
  /** The body was kept for a retry (it fitted retries.maxBodyBytes). */
  readonly bodyKept: boolean;
  /** Milliseconds left before the request's deadline; Infinity without one. */
  readonly timeLeftMs: number;
}

/** Why a retry was not made (for x-skein-explain and error details); null when it was. */
export type NoRetry = 'not-retried' | 'method' | 'body' | 'max-retries' | 'deadline' | 'budget';

/**
 * The backoff before the retry (ms, ≥ 0), or the reason there is none. Takes a retry from
 * `budget` only when everything else allows it.
 */
export function retryDelay(p: RetryPolicy, reason: RetryReason, status: number, a: RetryAttempt, budget: RetryBudget, rng: () => number = Math.random): number | NoRetry {
  if (reason === 'status' ? !p.statuses.includes(status) : !p.on.includes(reason)) return 'not-retried';
  if (!ANY_METHOD.has(reason) && !a.idempotent && !p.nonIdempotent) return 'method';
  if (a.hasBody && !a.bodyKept) return 'body';
  if (a.retries >= p.maxRetries) return 'max-retries';
  let r = rng();
  if (!(r >= 0)) r = 0;
  if (r >= 1) r = 1 - Number.EPSILON;
  const delay = Math.floor(r * Math.min(p.backoffMaxMs, p.backoffBaseMs * 2 ** a.retries));
  if (delay >= a.timeLeftMs) return 'deadline';
  if (!budget.tryWithdraw()) return 'budget';
  return delay;
}
