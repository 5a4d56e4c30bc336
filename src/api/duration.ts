/**
 * Durations in resource and mesh files: `Duration` (fields.ts) is the schema of the raw form, and
 * `durationAt` the one checker that turns the text into milliseconds within bounds, with the
 * same messages wherever a duration is written.
 */
import { formatDuration, parseDuration } from '../core/duration.js';
import type { Push } from './validate.js';

/** The longest duration any field takes unless it says otherwise. */
export const MAX_DURATION_MS = 24 * 3_600_000;

export const DURATION_EXAMPLES = '"500ms", "10s" or "1m30s"';

export interface DurationBounds {
  /** Inclusive, ms. Default 0. */
  readonly min?: number;
  /** Inclusive, ms. Default MAX_DURATION_MS (24h). */
  readonly max?: number;
}

/**
 * The duration `text` in ms, or `dflt` when it is absent (or not a duration). A problem is
 * pushed at `field` when the text is not a duration or lies outside the bounds; the value is
 * returned anyway, so later checks can name it.
 */
export function durationAt<D extends number | undefined>(text: string | undefined, dflt: D, field: string, push: Push, bounds: DurationBounds = {}): number | D {
  if (text === undefined) return dflt;
  const ms = parseDuration(text);
  if (ms === undefined) {
    push(field, `must be a duration such as ${DURATION_EXAMPLES}`);
    return dflt;
  }
  const min = bounds.min ?? 0;
  const max = bounds.max ?? MAX_DURATION_MS;
  if (ms < min) push(field, `must be at least ${formatDuration(min)}`);
  else if (ms > max) push(field, `must be at most ${formatDuration(max)}`);
  return ms;
}
