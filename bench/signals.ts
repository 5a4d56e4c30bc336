/**
 * What the control plane's golden signals cost (src/control/signals/windows.ts): memory per series
 * once the 15 minutes of history are full, the time to take one scrape round, and the time of
 * each window's query and chart, side by side (the 10s window is the reference).
 *
 *   npm run build && node --expose-gc dist/bench/signals.js [--services 200] [--instances 5] [--callers 2]
 *
 * A simulated clock drives the store: every 2 s "scrape round" one proxy snapshot with every series
 * grown, for 15 minutes (451 rounds), so every series has traffic in every slot: the worst case.
 * Series = services x instances x callers outbound series; the store keeps a service, a route, an
 * instance and an edge key for each.
 */
import { parseArgs } from 'node:util';
import { ManualClock } from '../src/core/clock.js';
import { SignalStore, WINDOWS, type StatsSeries } from '../src/control/signals/windows.js';
import { machine, round, table, warnIfBusy } from './lib.js';
import { LATENCY_BUCKETS } from '../src/api/stats.js';

const { values: argv } = parseArgs({
  options: { services: { type: 'string', default: '200' }, instances: { type: 'string', default: '5' }, callers: { type: 'string', default: '2' } },
});
const services = Number(argv.services);
const instances = Number(argv.instances);
const callers = Number(argv.callers);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc, to measure memory');

const BOUNDS = LATENCY_BUCKETS; // what the proxy reports
const info = machine();
warnIfBusy(info);

const series: Array<Omit<StatsSeries, 'latency'> & { requests: number; counts: number[]; sum: number }> = [];
for (let s = 0; s < services; s++) {
  for (let i = 0; i < instances; i++) {
    for (let c = 0; c < callers; c++) {
      series.push({ direction: 'outbound', workload: `caller-${c}`, source: `caller-${c}`, service: `svc-${s}`, route: 'default', instance: `svc-${s}-${i}`, requests: 0, failures: 0, requestBytes: 0, responseBytes: 0, counts: new Array<number>(BOUNDS.length + 1).fill(0), sum: 0 });
    }
  }
}

const clock = new ManualClock(1_800_000_000_000);
const store = new SignalStore({ clock, intervalMs: 2000 });
gc();
const heapBefore = process.memoryUsage().heapUsed;
const ingestMs: number[] = [];
for (let r = 0; r <= 450; r++) {
  for (const s of series) {
    s.requests += 3;
    s.counts[4]! += 2;
    s.counts[6]! += 1;
    s.sum += 0.03;
  }
  const snap = { proxy: { id: 'p1', startedAt: 1_700_000_000_000 }, at: clock.now(), bounds: BOUNDS, events: [], eventSeq: 0, series: series.map(({ counts, sum, ...rest }) => ({ ...rest, latency: { counts: [...counts], sum } })) };
  const t0 = performance.now();
  store.ingest(snap);
  store.roundDone(clock.now());
  ingestMs.push(performance.now() - t0);
  clock.advance(2000);
}
gc();
const heapMB = (process.memoryUsage().heapUsed - heapBefore) / 1e6;
const keys = store.stats.keys;

/** The median of `n` runs of `fn`, in ms. */
function time(fn: () => unknown, n = 5): number {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[Math.floor(n / 2)]!;
}
const queries = WINDOWS.map((w) => ({ w, window: time(() => store.window(w)), series: time(() => store.series(w, null)) }));
const ref = queries[0]!;
const sortedIngest = [...ingestMs].sort((a, b) => a - b);

table(
  `Golden signals: ${series.length} busy proxy series, ${keys} signal keys, 15 minutes of history (${info.cpus} cores, ${info.cpuModel})`,
  ['what', 'value'],
  [
    ['heap used by the store', `${round(heapMB, 0)} MB`],
    ['per signal key', `${round((heapMB * 1e6) / keys / 1024, 1)} KB`],
    ['one scrape round (ingest), median', `${round(sortedIngest[Math.floor(sortedIngest.length / 2)]!, 1)} ms`],
  ],
);
table(
  'Queries, every service (median of 5), and against the 10s window',
  ['window', 'GET /v1/signals ms', 'x 10s', 'chart of the mesh ms', 'x 10s'],
  queries.map((q) => [q.w, round(q.window, 1), round(q.window / ref.window, 2), round(q.series, 1), round(q.series / ref.series, 2)]),
);
process.stdout.write(`${JSON.stringify({ bench: 'signals', machine: info, series: series.length, keys, heapMB, queries })}\n`);
