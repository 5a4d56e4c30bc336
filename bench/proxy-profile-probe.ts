/**
 * Loaded with `node --import` into the `skein proxy` that bench/proxy-profile.ts profiles (through
 * NODE_OPTIONS; the proxy itself has no profiling flag). Idle until the benchmark sends SIGUSR2:
 * the first signal starts a window, the next one ends it, and so on. Over a window it records
 *
 *   - a CPU profile of the main thread (the inspector's sampling profiler, in-process), and
 *   - every garbage collection with the heap before and after it (v8.GCProfiler), from which the
 *     benchmark computes the bytes allocated in the window,
 *
 * and writes them to `$SKEIN_PROFILE_DIR/window-<n>.json` (written to a temporary name and renamed,
 * so that the file's existence means it is complete). For measuring only: nothing else changes.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { GCProfiler, getHeapStatistics } from 'node:v8';

/** What one window's file holds. */
export interface ProbeWindow {
  /** The inspector's Profiler.stop result (a Chrome .cpuprofile). */
  profile: unknown;
  /** v8.GCProfiler's stop() result: every GC with its heap statistics before and after. */
  gc: unknown;
  /** used_heap_size when the window started and ended (bytes). */
  usedAtStart: number;
  usedAtEnd: number;
}

const dir = process.env['SKEIN_PROFILE_DIR'];
const interval = Number(process.env['SKEIN_PROFILE_INTERVAL_US'] ?? '200');

if (dir !== undefined && dir !== '') {
  let n = 0;
  // The inspector session exists only during a window: outside them the proxy runs as it would.
  let open: { session: Session; gc: GCProfiler; usedAtStart: number } | null = null;
  process.on('SIGUSR2', () => {
    if (open === null) {
      const session = new Session();
      session.connect();
      session.post('Profiler.enable');
      session.post('Profiler.setSamplingInterval', { interval });
      session.post('Profiler.start');
      const gc = new GCProfiler();
      gc.start();
      open = { session, gc, usedAtStart: getHeapStatistics().used_heap_size };
      return;
    }
    const w = open;
    open = null;
    const gc = w.gc.stop();
    const usedAtEnd = getHeapStatistics().used_heap_size;
    const file = join(dir, `window-${n++}.json`);
    w.session.post('Profiler.stop', (err, res) => {
      w.session.disconnect();
      const out: ProbeWindow = { profile: err === null ? res.profile : { error: err.message }, gc, usedAtStart: w.usedAtStart, usedAtEnd };
      writeFileSync(`${file}.tmp`, JSON.stringify(out));
      renameSync(`${file}.tmp`, file);
    });
  });
}
