/**
 * The traffic policy of a service (in the Service resource and in mesh files): timeouts, retries
 * with a budget, connection limits, the failure-accrual breaker, outlier detection, active
 * health checks from the proxy, rate limits and routes (with fault injection). Callers' proxies
 * apply it on their outbound path; the service's own proxy applies the inbound rate limits.
 *
 * One concept per file, under traffic/: schema.ts is the raw (file/wire) form, policy.ts the
 * domain form and every default (TRAFFIC_DEFAULTS), build.ts the builder from one to the other.
 * This module is their public face. docs/resources.md documents each field and default.
 */
export * from './traffic/schema.js';
export * from './traffic/policy.js';
export * from './traffic/build.js';
