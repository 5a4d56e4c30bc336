/** The proxy's active health checks: defined in src/engine/active-check.ts (moved down so that the SDK checks the same way). */
export * from '../engine/active-check.js';
