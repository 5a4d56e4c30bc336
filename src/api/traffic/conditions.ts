/**
 * The traffic policy's enumerations, apart from the schema (schema.ts) so that the defaults
 * (policy.ts) can use them and the schema can describe its fields from the defaults without an
 * import cycle.
 */

/** Retry conditions besides status codes. */
export const RETRY_CONDITIONS = ['connect-failure', 'reset', 'refused-stream', 'per-try-timeout'] as const;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];
export const RATE_LIMIT_ALGORITHMS = ['token-bucket', 'gcra'] as const;
export type RateLimitAlgorithmName = (typeof RATE_LIMIT_ALGORITHMS)[number];
