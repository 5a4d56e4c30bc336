/**
 * A clock for timeouts that need no precision (idle connections, header timeouts): the value of
 * performance.now() refreshed every 100 ms, so the request path reads a variable instead of the
 * clock. Latency is still measured with performance.now().
 */
import { performance } from 'node:perf_hooks';

const RESOLUTION_MS = 100;
let now = performance.now();
let timer: NodeJS.Timeout | null = null;

/** Milliseconds (performance.now() scale), at most RESOLUTION_MS old. */
export function coarseNow(): number {
  if (timer === null) {
    now = performance.now();
    timer = setInterval(() => {
      now = performance.now();
    }, RESOLUTION_MS);
    timer.unref();
  }
  return now;
}
