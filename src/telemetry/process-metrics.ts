/**
 * The process and Node.js metrics every Skein process exposes (the series prom-client's default
 * metrics had, with their names, types, labels and units: docs/metrics.md "Process"), read at
 * each collection. Numbers of the whole process (CPU, memory, file descriptors, start time,
 * version) aggregate as `first` over worker threads, which all read the same process; a
 * thread's own (heap, handles, GC, event loop) are summed, or averaged for the lag.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { constants as perfConstants, monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import type { Registry, Sample } from './prom.js';

export interface ProcessMetricsOptions {
  /** The event-loop delay sampling interval in ms (`monitorEventLoopDelay`'s resolution). Default 10. */
  readonly eventLoopResolutionMs?: number;
}

const GC_BUCKETS = [0.001, 0.01, 0.1, 1, 2, 5];
const GC_KINDS: Record<number, string> = {
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
const START_SECONDS = Math.round(Date.now() / 1000 - process.uptime());
const VERSION = process.version.slice(1).split('.');

/** VmRSS, VmSize and VmData of /proc/self/status, in bytes (null where there is no /proc). */
function procStatus(): { rss: number; size: number; data: number } | null {
  try {
    const text = readFileSync('/proc/self/status', 'latin1');
    const kb = (key: string) => {
      const m = new RegExp(`^${key}:\\s*(\\d+) kB`, 'm').exec(text);
      return m === null ? NaN : Number(m[1]) * 1024;
    };
    return { rss: kb('VmRSS'), size: kb('VmSize'), data: kb('VmData') };
  } catch {
    return null;
  }
}

function maxFds(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

function openFds(): number | null {
  try {
    return readdirSync('/proc/self/fd').length - 1; // the directory's own descriptor, closed again
  } catch {
    return null;
  }
}

/** How many of each name (the `type` label's series) and how many in all. */
function byType(names: Iterable<string>): { samples: Sample[]; total: number } {
  const counts = new Map<string, number>();
  let total = 0;
  for (const n of names) {
    counts.set(n, (counts.get(n) ?? 0) + 1);
    total++;
  }
  return { samples: [...counts].map(([type, n]) => ({ labels: [type], value: n })), total };
}

const one = (v: number | null | undefined): Sample[] => (v === null || v === undefined || Number.isNaN(v) ? [] : [{ labels: [], value: v }]);

type Internal = NodeJS.Process & { _getActiveHandles?: () => object[]; _getActiveRequests?: () => object[] };

/** Registers the process and Node.js metrics in `registry`. */
export function processMetrics(registry: Registry, o: ProcessMetricsOptions = {}): void {
  const lag = monitorEventLoopDelay({ resolution: o.eventLoopResolutionMs ?? 10 });
  lag.enable();
  // Read once per collection, then served to each metric.
  let cpu = process.cpuUsage();
  let status = procStatus();
  let memory = process.memoryUsage();
  let loopLag = 0;
  let delay = { min: 0, max: 0, mean: 0, stddev: 0, p50: 0, p90: 0, p99: 0 };
  let spaces = getHeapSpaceStatistics();
  const internal = process as Internal;
  const names = (list: object[] | undefined) => (list ?? []).map((h) => h.constructor.name);
  let active = { resources: byType([]), handles: byType([]), requests: byType([]) };
  const maxFiles = maxFds();
  registry.beforeCollect(async () => {
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve) => setImmediate(resolve));
    loopLag = Number(process.hrtime.bigint() - t0) / 1e9;
    cpu = process.cpuUsage();
    status = procStatus();
    memory = process.memoryUsage();
    const s = (ns: number) => (Number.isFinite(ns) ? ns / 1e9 : 0);
    delay = { min: s(lag.min), max: s(lag.max), mean: s(lag.mean), stddev: s(lag.stddev), p50: s(lag.percentile(50)), p90: s(lag.percentile(90)), p99: s(lag.percentile(99)) };
    lag.reset();
    spaces = getHeapSpaceStatistics();
    active = { resources: byType(process.getActiveResourcesInfo()), handles: byType(names(internal._getActiveHandles?.())), requests: byType(names(internal._getActiveRequests?.())) };
  });

  const whole = { aggregator: 'first' } as const;
  registry.scraped('counter', { name: 'process_cpu_user_seconds_total', help: 'Total user CPU time spent in seconds.', ...whole }, () => one(cpu.user / 1e6));
  registry.scraped('counter', { name: 'process_cpu_system_seconds_total', help: 'Total system CPU time spent in seconds.', ...whole }, () => one(cpu.system / 1e6));
  registry.scraped('counter', { name: 'process_cpu_seconds_total', help: 'Total user and system CPU time spent in seconds.', ...whole }, () => one((cpu.user + cpu.system) / 1e6));
  registry.scraped('gauge', { name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.', ...whole }, () => one(START_SECONDS));
  registry.scraped('gauge', { name: 'process_resident_memory_bytes', help: 'Resident memory size in bytes.', ...whole }, () => one(status?.rss));
  registry.scraped('gauge', { name: 'process_virtual_memory_bytes', help: 'Virtual memory size in bytes.', ...whole }, () => one(status?.size));
  registry.scraped('gauge', { name: 'process_heap_bytes', help: 'Process heap size in bytes.', ...whole }, () => one(status?.data));
  registry.scraped('gauge', { name: 'process_open_fds', help: 'Number of open file descriptors.', ...whole }, () => one(openFds()));
  registry.scraped('gauge', { name: 'process_max_fds', help: 'Maximum number of open file descriptors.', ...whole }, () => one(maxFiles));
  registry.scraped('gauge', { name: 'nodejs_eventloop_lag_seconds', help: 'Lag of event loop in seconds.', aggregator: 'average' }, () => one(loopLag));
  const delayGauge = (key: keyof typeof delay, name: string, help: string, aggregator: 'min' | 'max' | 'average') =>
    registry.scraped('gauge', { name, help, aggregator }, () => one(delay[key]));
  delayGauge('min', 'nodejs_eventloop_lag_min_seconds', 'The minimum recorded event loop delay.', 'min');
  delayGauge('max', 'nodejs_eventloop_lag_max_seconds', 'The maximum recorded event loop delay.', 'max');
  delayGauge('mean', 'nodejs_eventloop_lag_mean_seconds', 'The mean of the recorded event loop delays.', 'average');
  delayGauge('stddev', 'nodejs_eventloop_lag_stddev_seconds', 'The standard deviation of the recorded event loop delays.', 'average');
  delayGauge('p50', 'nodejs_eventloop_lag_p50_seconds', 'The 50th percentile of the recorded event loop delays.', 'average');
  delayGauge('p90', 'nodejs_eventloop_lag_p90_seconds', 'The 90th percentile of the recorded event loop delays.', 'average');
  delayGauge('p99', 'nodejs_eventloop_lag_p99_seconds', 'The 99th percentile of the recorded event loop delays.', 'average');

  const typed = (kind: keyof typeof active, help: string) => {
    const name = `nodejs_active_${kind}`;
    registry.scraped<'type'>('gauge', { name, help, labelNames: ['type'] }, () => active[kind].samples);
    registry.scraped('gauge', { name: `${name}_total`, help: `Total number of active ${kind}.` }, () => one(active[kind].total));
  };
  typed('resources', 'Number of active resources that are currently keeping the event loop alive, grouped by async resource type.');
  typed('handles', 'Number of active libuv handles grouped by handle type. Every handle type is C++ class name.');
  typed('requests', 'Number of active libuv requests grouped by request type. Every request type is C++ class name.');
  registry.scraped('gauge', { name: 'nodejs_heap_size_total_bytes', help: 'Process heap size from Node.js in bytes.' }, () => one(memory.heapTotal));
  registry.scraped('gauge', { name: 'nodejs_heap_size_used_bytes', help: 'Process heap size used from Node.js in bytes.' }, () => one(memory.heapUsed));
  registry.scraped('gauge', { name: 'nodejs_external_memory_bytes', help: 'Node.js external memory size in bytes.' }, () => one(memory.external));
  const space = (field: 'space_size' | 'space_used_size' | 'space_available_size', kind: string) =>
    registry.scraped<'space'>('gauge', { name: `nodejs_heap_space_size_${kind}_bytes`, help: `Process heap space size ${kind} from Node.js in bytes.`, labelNames: ['space'] }, () =>
      spaces.map((s) => ({ labels: [s.space_name.replace(/_space$/, '')], value: s[field] })),
    );
  space('space_size', 'total');
  space('space_used_size', 'used');
  space('space_available_size', 'available');
  registry.scraped<'version' | 'major' | 'minor' | 'patch'>('gauge', { name: 'nodejs_version_info', help: 'Node.js version info.', labelNames: ['version', 'major', 'minor', 'patch'], ...whole }, () => [
    { labels: [process.version, VERSION[0] ?? '', VERSION[1] ?? '', VERSION[2] ?? ''], value: 1 },
  ]);
  const gc = registry.histogram<'kind'>({
    name: 'nodejs_gc_duration_seconds',
    help: 'Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
    labelNames: ['kind'],
    buckets: GC_BUCKETS,
  });
  // Its cells kept by kind: an observation is an addition.
  const gcCells = new Map<number, ReturnType<typeof gc.labels>>();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = ((e as PerformanceEntry & { detail?: { kind?: number } }).detail)?.kind ?? -1;
      let c = gcCells.get(kind);
      if (c === undefined) gcCells.set(kind, (c = gc.labels(GC_KINDS[kind] ?? 'unknown')));
      c.observe(e.duration / 1000);
    }
  }).observe({ entryTypes: ['gc'] });
}
