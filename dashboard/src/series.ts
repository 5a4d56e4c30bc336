/**
 * The data behind a time-series chart: the last 5 minutes of GET /v1/signals/series (one point per
 * scrape round, stepMs apart), for one service or the whole mesh. The full window is fetched when a
 * view opens and again after every reconnection of the stream (the control plane may have
 * restarted and lost its history, so the answer replaces what we had); after every scrape round
 * (a new `signals` event) only the last 10 seconds are fetched and merged in by time. The charts
 * thus show the same per-step numbers as the API, not the stream's 10-second averages.
 *
 * Requests are never aborted (a newer request or a closed view just ignores the answer), so the
 * browser never logs a cancelled request.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, fetchSeries, type SeriesPoint } from './api';

export const SERIES_WINDOW_MS = 5 * 60_000;

export interface SeriesState {
  points: SeriesPoint[];
  error: string | null;
}

/** Merges `fresh` into `old` by time (fresh wins), keeps time order and the last SERIES_WINDOW_MS. */
export function mergePoints(old: readonly SeriesPoint[], fresh: readonly SeriesPoint[]): SeriesPoint[] {
  const byTime = new Map<number, SeriesPoint>();
  for (const p of old) byTime.set(p.time, p);
  for (const p of fresh) byTime.set(p.time, p);
  const all = [...byTime.values()].sort((a, b) => a.time - b.time);
  const newest = all.at(-1)?.time ?? 0;
  return all.filter((p) => p.time > newest - SERIES_WINDOW_MS);
}

/**
 * The series of `service` (null: the whole mesh). `epoch` is the stream's connection count (a
 * change re-fetches the whole window); `tick` changes after every scrape round (the `time` of the
 * latest `signals` event) and fetches the newest points.
 */
export function useSeries(service: string | null, epoch: number, tick: string | null): SeriesState {
  const [state, setState] = useState<SeriesState>({ points: [], error: null });
  /** The service and epoch whose whole window we hold (null: none yet). */
  const loaded = useRef<string | null>(null);
  const key = `${service ?? ''}\u0000${epoch}`;

  useEffect(() => {
    let current = true;
    const full = loaded.current !== key;
    fetchSeries(service, full ? '5m' : '10s').then(
      (r) => {
        if (!current) return;
        if (full) loaded.current = key;
        setState((s) => ({ points: mergePoints(full ? [] : s.points, r.points), error: null }));
      },
      (e: unknown) => {
        // A failed full fetch is tried again after the next scrape round.
        if (current && full) setState((s) => ({ ...s, error: e instanceof ApiError ? e.message : String(e) }));
      },
    );
    return () => {
      current = false;
    };
  }, [key, tick]);

  return state;
}
