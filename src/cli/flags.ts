/** Parsers of numeric and duration flags, with errors that name the flag. */
import { parseDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';

export function durationFlag(flag: string, min?: number, max?: number) {
  return (v: string): number => {
    const ms = parseDuration(v);
    if (ms === undefined) throw new SkeinError('SKEIN_E_USAGE', `${flag} must be a duration such as 15s, got "${v}"`, { field: flag });
    if ((min !== undefined && ms < min) || (max !== undefined && ms > max)) {
      throw new SkeinError('SKEIN_E_USAGE', `${flag} must be from ${min ?? 0} ms to ${max ?? Infinity} ms, got "${v}"`, { field: flag });
    }
    return ms;
  };
}

export function intFlag(flag: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw new SkeinError('SKEIN_E_USAGE', `${flag} must be an integer from ${min} to ${max}, got "${v}"`, { field: flag });
    return n;
  };
}

/** A repeatable flag of comma-separated values (`--service a,b --service c`): all of them, in order. */
export function listFlag(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter((s) => s !== '')];
}
