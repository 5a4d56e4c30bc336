/**
 * Our exposition (exposition.ts) read by the real Prometheus (Debian's /usr/bin/prometheus and
 * promtool; scripts/setup.sh installs them): the same registry scraped in OpenMetrics (which
 * Prometheus asks for first) and in the text format, with label values and HELP that need
 * escaping, a histogram and a counter; what PromQL and the metadata API read back is what was set.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from './prom.js';
import { exposition } from './exposition.js';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const missing = !existsSync(PROMETHEUS) || !existsSync(PROMTOOL) ? 'Prometheus is not installed (scripts/setup.sh)' : false;

/** A label value with every character the formats escape, and some they do not. */
const TRICKY = 'C:\\dir "quoted"\nline two, é ✓ {x="y"}';
const HELP = 'Things counted: "quoted", a back\\slash and\na newline.';

function registry(): Registry {
  const r = new Registry();
  const c = r.counter({ name: 'skein_t_total', help: HELP, labelNames: ['v', 'empty'] });
  c.labels(TRICKY, '').inc(3);
  c.labels('plain', '').inc(1.5);
  const h = r.histogram({ name: 'skein_t_seconds', help: 'A histogram.', labelNames: ['route'], buckets: [0.01, 0.1, 1] });
  for (const v of [0.005, 0.05, 0.05, 0.5, 2]) h.labels('r"1').observe(v);
  r.gauge({ name: 'skein_t_level', help: 'A gauge.' }).set(-2.25);
  return r;
}

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Polls `fn` until it returns a value other than undefined, or fails after `ms` with `what`. */
async function until<T>(fn: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last === undefined ? '' : `: ${String(last)}`}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

test('promtool check metrics accepts the text format, escaping included, with nothing to lint', { skip: missing }, async () => {
  const text = await registry().metrics();
  const out = await new Promise<{ code: number; output: string }>((resolve) => {
    const child = execFile(PROMTOOL, ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), output: stdout + stderr }));
    child.stdin?.end(text);
  });
  assert.deepEqual(out, { code: 0, output: '' });
});

test('the real Prometheus scrapes OpenMetrics and the text format and reads back every value, label and HELP', { skip: missing, timeout: 90_000 }, async () => {
  const r = registry();
  const served: Array<{ path: string; accept: string; contentType: string }> = [];
  const app: Server = createServer((req, res) => {
    // /text answers the text format whatever Prometheus asks for; /metrics negotiates.
    const accept = req.url === '/text' ? undefined : req.headers.accept;
    exposition(r, accept).then(({ contentType, text }) => {
      served.push({ path: req.url ?? '', accept: req.headers.accept ?? '', contentType });
      res.writeHead(200, { 'content-type': contentType }).end(text);
    }, (e: unknown) => res.writeHead(500).end(String(e)));
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const target = `127.0.0.1:${(app.address() as AddressInfo).port}`;
  const dir = mkdtempSync(join(tmpdir(), 'skein-prom-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: om\n    static_configs: [{ targets: ['${target}'] }]\n  - job_name: text\n    metrics_path: /text\n    static_configs: [{ targets: ['${target}'] }]\n`,
  );
  const port = await freePort();
  const prom = spawn(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let logs = '';
  prom.stderr.on('data', (b: Buffer) => (logs += b.toString()));
  const exited = new Promise<void>((resolve) => prom.once('exit', () => resolve()));
  const api = async (path: string) => {
    const body = (await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as { status: string; data: any };
    assert.equal(body.status, 'success', path);
    return body.data;
  };
  const query = async (q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> => (await api(`/api/v1/query?query=${encodeURIComponent(q)}`)).result;
  try {
    // Both jobs scraped the registry at least once (every series there in both).
    const all = await until(async () => {
      const rows = await query('skein_t_total');
      return rows.length === 4 ? rows : undefined;
    }, 60_000, `both jobs scraped (Prometheus log: ${logs})`);
    for (const job of ['om', 'text']) {
      const rows = all.filter((x) => x.metric.job === job);
      assert.deepEqual(
        rows.map((x) => [x.metric.v, x.value[1], 'empty' in x.metric]).sort(),
        [
          [TRICKY, '3', false],
          ['plain', '1.5', false],
        ].sort(),
        `${job}: label values unescaped exactly; an empty label is no label`,
      );
      const one = async (q: string) => (await query(`${q}{job="${job}"}`)).map((x) => [x.metric.route ?? x.metric.le ?? '', x.value[1]]);
      assert.deepEqual(await one('skein_t_seconds_count'), [['r"1', '5']], job);
      assert.deepEqual(await one('skein_t_seconds_sum'), [['r"1', '2.605']], job);
      assert.deepEqual(
        (await query(`skein_t_seconds_bucket{job="${job}"}`)).map((x) => [x.metric.le, x.value[1]]).sort(),
        [
          ['+Inf', '5'],
          ['0.01', '1'],
          ['0.1', '3'],
          ['1', '4'],
        ],
        job,
      );
      assert.deepEqual(await one('skein_t_level'), [['', '-2.25']], job);
    }
    const targets = (await api('/api/v1/targets')).activeTargets as Array<{ labels: { job: string }; health: string; lastError: string }>;
    assert.deepEqual(targets.map((t) => [t.labels.job, t.health, t.lastError]).sort(), [
      ['om', 'up', ''],
      ['text', 'up', ''],
    ]);
    // The HELP text, unescaped, as each format names the family (OpenMetrics: without _total).
    const metadata = await until(async () => {
      const m = (await api('/api/v1/targets/metadata?metric=')) as Array<{ target: { job: string }; metric: string; type: string; help: string }>;
      const ours = m.filter((x) => x.metric.startsWith('skein_t'));
      return ours.length >= 6 ? ours : undefined;
    }, 20_000, 'the targets metadata');
    const meta = (job: string, metric: string) => metadata.find((x) => x.target.job === job && x.metric === metric);
    assert.deepEqual([meta('om', 'skein_t')?.type, meta('om', 'skein_t')?.help], ['counter', HELP]);
    assert.deepEqual([meta('text', 'skein_t_total')?.type, meta('text', 'skein_t_total')?.help], ['counter', HELP]);
    assert.equal(meta('om', 'skein_t_seconds')?.type, 'histogram');
    // Prometheus asked for OpenMetrics first and got it on /metrics; /text was the text format.
    const om = served.find((s) => s.path === '/metrics');
    assert.match(om?.accept ?? '', /^application\/openmetrics-text/);
    assert.equal(om?.contentType, 'application/openmetrics-text; version=1.0.0; charset=utf-8');
    assert.equal(served.find((s) => s.path === '/text')?.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  } finally {
    prom.kill('SIGTERM');
    const force = setTimeout(() => prom.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(force);
    await new Promise<void>((resolve) => app.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
});
