/**
 * Registry writes: registrations per second through the HTTP API (`PUT
 * /v1/services/{s}/instances/{id}`) from C concurrent clients over an undici Pool with C
 * connections. With the embedded store every PUT is acknowledged only after its batch is fsynced
 * (group commit); the same load against `--data-dir none` (the in-memory store) in the same run
 * makes the cost of durability a ratio.
 *
 *   node dist/bench/registry-writes.js [--concurrency 1,16,64] [--seconds 4] [--warmup 1]
 */
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { machine, metric, percentile, printResult, round, runMain, scrape, startControl, table, tempDir, warnIfBusy, procSample, cpuPercent, sleep, otherCpuMeter } from './lib.js';

const { values: argv } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '1,16,64' },
    seconds: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '1' },
    services: { type: 'string', default: '10' },
  },
});
const LEVELS = argv.concurrency.split(',').map(Number);
const SECONDS = Number(argv.seconds);
const WARMUP = Number(argv.warmup);
const SERVICES = Number(argv.services);

interface LevelResult {
  store: 'embedded' | 'memory';
  concurrency: number;
  writes: number;
  errors: number;
  writesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Commits per fsynced batch (embedded store only). */
  groupCommit: number | null;
  batchesPerSecond: number | null;
  controlCpuPercent: number;
  /** CPU used by other processes on the machine meanwhile (percent of one core). */
  otherCpuPercent: number;
}

/**
 * Runs C client loops for warm-up + measured seconds, registering a new instance each time; only
 * writes started and finished inside the measured window count.
 */
function load(url: string, concurrency: number, runId: string): { lat: number[]; errors: () => number; finished: Promise<void> } {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1 });
  const lat: number[] = [];
  let errors = 0;
  let seq = 0;
  const measureFrom = performance.now() + WARMUP * 1000;
  const endAt = measureFrom + SECONDS * 1000;
  const client = async () => {
    while (performance.now() < endAt) {
      const n = seq++;
      const service = `writes-${n % SERVICES}`;
      const body = JSON.stringify({
        address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
        port: 8080,
        zone: 'zone-a',
        version: 'v1',
        labels: { app: service, run: runId },
      });
      const t0 = performance.now();
      try {
        const res = await pool.request({ path: `/v1/services/${service}/instances/${runId}-${n}`, method: 'PUT', headers: { 'content-type': 'application/json' }, body });
        await res.body.dump();
        const t1 = performance.now();
        if (res.statusCode !== 201) errors++;
        else if (t0 >= measureFrom && t1 <= endAt) lat.push(t1 - t0);
      } catch {
        errors++;
      }
    }
  };
  const finished = Promise.all(Array.from({ length: concurrency }, client)).then(() => pool.close());
  return { lat, errors: () => errors, finished };
}

async function runStore(store: 'embedded' | 'memory'): Promise<LevelResult[]> {
  const dir = store === 'embedded' ? tempDir('skein-bench-writes-') : null;
  const cp = await startControl({ dataDir: dir?.path ?? 'none' });
  const out: LevelResult[] = [];
  try {
    for (const c of LEVELS) {
      const run = load(cp.url, c, `c${c}`);
      // The "before" figures at the start of the measured window, the "after" ones at its end.
      await sleep(WARMUP * 1000);
      const before = await scrape(cp.url);
      const cpu0 = procSample(cp.pid);
      const others = otherCpuMeter([cp.pid, process.pid]);
      await sleep(SECONDS * 1000);
      const otherCpuPercent = others.stop();
      const after = await scrape(cp.url);
      const cpu1 = procSample(cp.pid);
      await run.finished;
      const batches = metric(after.samples, 'skein_store_batches_total') - metric(before.samples, 'skein_store_batches_total');
      const commits = metric(after.samples, 'skein_store_commits_total') - metric(before.samples, 'skein_store_commits_total');
      out.push({
        store,
        concurrency: c,
        writes: run.lat.length,
        errors: run.errors(),
        writesPerSecond: run.lat.length / SECONDS,
        p50Ms: percentile(run.lat, 50),
        p99Ms: percentile(run.lat, 99),
        maxMs: percentile(run.lat, 100),
        groupCommit: store === 'embedded' && batches > 0 ? commits / batches : null,
        batchesPerSecond: store === 'embedded' ? batches / SECONDS : null,
        controlCpuPercent: cpuPercent(cpu0, cpu1),
        otherCpuPercent,
      });
    }
  } finally {
    await cp.stop();
    dir?.remove();
  }
  return out;
}

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  process.stdout.write(`registry-writes: ${LEVELS.join('/')} concurrent clients, ${WARMUP}s warm-up + ${SECONDS}s measured per level, embedded (fsync) vs in-memory store\n`);
  const embedded = await runStore('embedded');
  const memory = await runStore('memory');
  const rows = [...embedded, ...memory];
  table(
    'Registrations through PUT /v1/services/{s}/instances/{id}',
    ['store', 'clients', 'writes/s', 'p50 ms', 'p99 ms', 'max ms', 'commits/fsync', 'fsyncs/s', 'control CPU %', 'other procs CPU %', 'errors'],
    rows.map((r) => [r.store, r.concurrency, r.writesPerSecond, r.p50Ms, r.p99Ms, r.maxMs, r.groupCommit ?? '-', r.batchesPerSecond ?? '-', r.controlCpuPercent, r.otherCpuPercent, r.errors]),
  );
  const ratios = LEVELS.map((c) => {
    const e = embedded.find((r) => r.concurrency === c) as LevelResult;
    const m = memory.find((r) => r.concurrency === c) as LevelResult;
    return { concurrency: c, durableOverMemory: e.writesPerSecond / m.writesPerSecond };
  });
  table('Cost of durability (embedded writes/s divided by in-memory writes/s, same run)', ['clients', 'ratio'], ratios.map((r) => [r.concurrency, r.durableOverMemory]));
  printResult('registry-writes', {
    machine: info,
    seconds: SECONDS,
    levels: rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]))),
    ratios: ratios.map((r) => ({ concurrency: r.concurrency, durableOverMemory: round(r.durableOverMemory, 3) })),
  });
});
