/**
 * The traffic policy's enumerations, apart from the schema (schema.ts) so that the defaults
 * (policy.ts) can use them and the schema can describe its fields from the defaults without an
 * import cycle.
 */

/** Retry conditions besides status codes. */
export const RETRY_CONDITIONS = ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'] as const;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];
/** The retry conditions of gRPC responses (their grpc-status, src/engine/grpc.ts); the rest are the transport's. */
export const GRPC_RETRY_CONDITIONS = ['cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'] as const satisfies readonly RetryCondition[];
/** The conditions retried when a policy names none: every transport failure, and gRPC's UNAVAILABLE. */
export const DEFAULT_RETRY_CONDITIONS: readonly RetryCondition[] = Object.freeze(['connect-failure', 'reset', 'refused-stream', 'per-try-timeout', 'unavailable']);
export const RATE_LIMIT_ALGORITHMS = ['token-bucket', 'gcra'] as const;
export type RateLimitAlgorithmName = (typeof RATE_LIMIT_ALGORITHMS)[number];
