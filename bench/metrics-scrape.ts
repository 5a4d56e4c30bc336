/**
 * The CPU of one `/metrics` scrape of the proxy (issue 16, metrics without prom-client): a
 * ProxyMetrics with N per-request series (one listener, N destination services; each series is
 * requests_total, the latency histogram and the byte and mTLS counters) plus the process metrics,
 * exposed in the text format and in OpenMetrics, measured with process.cpuUsage() over many
 * scrapes. Two builds side by side: each round runs this build and the one under `--dist` (e.g.
 * a worktree of the previous commit) in child processes, alternating.
 *
 *   npm run build && node dist/bench/metrics-scrape.js [--series 50] [--scrapes 2000] [--rounds 4] [--dist /tmp/old/dist]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: argv } = parseArgs({
  options: {
    series: { type: 'string', default: '50' },
    scrapes: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '4' },
    dist: { type: 'string' },
    child: { type: 'string' },
  },
});

interface Metrics {
  listener(workload: string, direction: 'inbound' | 'outbound'): { record(...a: unknown[]): void };
  exposition(accept?: string): Promise<{ contentType: string; text: string }>;
}

/** In a child: µs of CPU per scrape in each format, and the bytes of one. */
async function measure(dist: string): Promise<void> {
  const { ProxyMetrics } = (await import(pathToFileURL(resolve(dist, 'src/proxy/metrics.js')).href)) as { ProxyMetrics: new (g: object) => Metrics };
  const gauges = { connections: () => [], idleUpstreams: () => 0, endpoints: () => [], watchConnected: () => true, traffic: () => [], certificates: () => [] };
  const m = new ProxyMetrics(gauges);
  const l = m.listener('web', 'outbound');
  const n = Number(argv.series);
  for (let i = 0; i < n; i++) for (let k = 0; k < 10; k++) l.record('web', `svc-${i}`, 'default', `svc-${i}-0`, k === 9 ? 503 : 200, k === 9, 0.001 * (k + 1), 100, 1000);
  const scrapes = Number(argv.scrapes);
  const out: Record<string, number> = {};
  for (const [format, accept] of [
    ['text', undefined],
    ['openmetrics', 'application/openmetrics-text; version=1.0.0'],
  ] as const) {
    for (let i = 0; i < 50; i++) await m.exposition(accept); // warm up
    const t0 = process.cpuUsage();
    let bytes = 0;
    for (let i = 0; i < scrapes; i++) bytes = (await m.exposition(accept)).text.length;
    const t = process.cpuUsage(t0);
    out[`${format}_us`] = (t.user + t.system) / scrapes;
    out[`${format}_bytes`] = bytes;
  }
  process.stdout.write(JSON.stringify(out));
}

if (argv.child !== undefined) {
  await measure(argv.child);
} else {
  const self = fileURLToPath(import.meta.url);
  const here = resolve(dirname(self), '..');
  const builds: Array<[string, string]> = [['new', here]];
  if (argv.dist !== undefined) builds.unshift(['old', resolve(argv.dist)]);
  const rounds = Number(argv.rounds);
  const rows: Array<Record<string, number>>[] = builds.map(() => []);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? builds.map((_, i) => i) : builds.map((_, i) => builds.length - 1 - i);
    for (const i of order) {
      const json = execFileSync(process.execPath, [self, '--child', builds[i]![1], '--series', argv.series!, '--scrapes', argv.scrapes!], { encoding: 'utf8' });
      rows[i]!.push(JSON.parse(json) as Record<string, number>);
    }
  }
  const f = (x: number) => x.toFixed(1);
  for (let r = 0; r < rounds; r++) {
    const cells = builds.map(([name], i) => `${name}: text ${f(rows[i]![r]!.text_us!)} µs (${rows[i]![r]!.text_bytes} B), OpenMetrics ${f(rows[i]![r]!.openmetrics_us!)} µs`);
    const ratio = builds.length === 2 ? `  new/old text ${(rows[1]![r]!.text_us! / rows[0]![r]!.text_us!).toFixed(2)}x, OpenMetrics ${(rows[1]![r]!.openmetrics_us! / rows[0]![r]!.openmetrics_us!).toFixed(2)}x` : '';
    console.log(`round ${r + 1}: ${cells.join(' | ')}${ratio}`);
  }
  console.log(JSON.stringify({ bench: 'metrics-scrape', series: Number(argv.series), scrapes: Number(argv.scrapes), builds: builds.map(([name, dist], i) => ({ name, dist, rounds: rows[i] })) }));
}
