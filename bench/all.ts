/**
 * Runs the control-plane benchmarks one after the other, each in its own process (so one cannot
 * disturb the next), and prints a summary against the issue's targets. bench/dns.ts (the DNS
 * work) and bench/balancers.ts (the balancers) belong to other work; each is run when its
 * dist/bench/*.js exists, and reported missing otherwise.
 *
 *   npm run build && node dist/bench/all.js [--json results.json]
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, machine, table, track, warnIfBusy } from './lib.js';

const { values: argv } = parseArgs({ options: { json: { type: 'string' } } });

interface Outcome {
  name: string;
  code: number | null;
  seconds: number;
  result: Record<string, any> | null;
}

/** Runs one benchmark, passing its output through, and keeps its `{"bench": ...}` line. */
function runBench(name: string, file: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    process.stdout.write(`\n=== ${name} (${file}) ===\n`);
    const child = track(spawn(process.execPath, [join(ROOT, 'dist', 'bench', file)], { stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT }));
    let result: Record<string, any> | null = null;
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('{"bench":')) {
          try {
            result = JSON.parse(line) as Record<string, any>;
            // The heartbeat benchmark's per-window series is long: keep it out of the console.
            process.stdout.write(line.length > 2000 ? `${line.slice(0, 2000)}...\n` : `${line}\n`);
            continue;
          } catch {
            /* print as is */
          }
        }
        process.stdout.write(line + '\n');
      }
    });
    child.once('exit', (code) => resolve({ name, code, seconds: (performance.now() - t0) / 1000, result }));
  });
}

const info = machine();
warnIfBusy(info);
process.stdout.write(`skein control-plane benchmarks on ${info.cpus} x ${info.cpuModel}, node ${info.node}\n`);

const outcomes: Outcome[] = [];
outcomes.push(await runBench('registry writes', 'registry-writes.js'));
outcomes.push(await runBench('watch fan-out', 'watch-fanout.js'));
outcomes.push(await runBench('heartbeat load / event-loop lag', 'heartbeat-lag.js'));
for (const [name, file] of [
  ['DNS', 'dns.js'],
  ['balancers', 'balancers.js'],
  ['endpoint churn', 'endpoint-churn.js'],
] as const) {
  if (existsSync(join(ROOT, 'dist', 'bench', file))) outcomes.push(await runBench(name, file));
  else process.stdout.write(`\n=== ${name} ===\ndist/bench/${file} is missing: not run\n`);
}

const rows: Array<Array<string | number>> = [];
const byName = new Map(outcomes.map((o) => [o.name, o]));
const failed = (o: Outcome | undefined) => o === undefined || o.code !== 0 || o.result === null;
{
  const o = byName.get('registry writes');
  if (failed(o)) rows.push(['registry writes', 'FAILED', '-', '-']);
  else {
    const levels = o?.result?.['levels'] as Array<Record<string, any>>;
    const top = Math.max(...levels.map((l) => l['concurrency'] as number));
    const e = levels.find((l) => l['store'] === 'embedded' && l['concurrency'] === top);
    const m = levels.find((l) => l['store'] === 'memory' && l['concurrency'] === top);
    rows.push([
      `registry writes (${top} clients)`,
      `${e?.['writesPerSecond']}/s fsynced (p99 ${e?.['p99Ms']} ms, ${e?.['groupCommit']} commits/fsync), ${m?.['writesPerSecond']}/s in memory: ratio ${(e?.['writesPerSecond'] / m?.['writesPerSecond']).toFixed(2)}`,
      'measured only',
      '-',
    ]);
  }
}
{
  const o = byName.get('watch fan-out');
  if (failed(o)) rows.push(['watch fan-out', 'FAILED', 'p99 < 100 ms', 'FAILED']);
  else {
    const r = o?.result as Record<string, any>;
    rows.push([
      `watch fan-out (${r['subscribers']} subscribers)`,
      `last subscriber p50 ${r['lastSubscriberMs']['p50']}, p99 ${r['lastSubscriberMs']['p99']}, max ${r['lastSubscriberMs']['max']} ms; per subscriber p99 ${r['perSubscriberMs']['p99']} ms`,
      'p99 < 100 ms',
      r['meetsTarget'] ? 'met' : 'MISSED',
    ]);
  }
}
{
  const o = byName.get('heartbeat load / event-loop lag');
  if (failed(o)) rows.push(['heartbeat lag', 'FAILED', 'p99 < 50 ms', 'FAILED']);
  else {
    const r = o?.result as Record<string, any>;
    const hb = r['phases']['heartbeats'];
    rows.push([
      `event-loop lag (${r['instances']} instances)`,
      `lag p99 ${hb['lagP99Ms']} ms, max ${hb['lagMaxMs']} ms at ${r['heartbeat']['achievedRate']} heartbeats/s; CPU ${hb['cpuPercentMean']}%, RSS ${hb['rssMiBMax']} MiB; registered in ${r['registerSeconds']} s`,
      'p99 < 50 ms',
      String(r['verdict']),
    ]);
  }
}
{
  const o = byName.get('DNS');
  if (o === undefined) rows.push(['DNS', 'not run (dist/bench/dns.js missing)', '>= 0.5x BIND9', '-']);
  else if (o.code !== 0) rows.push(['DNS', `FAILED (exit ${o.code})`, '>= 0.5x BIND9', 'FAILED']);
  else {
    const r = o.result as Record<string, any>;
    const ratio = r['ratio'];
    rows.push(['DNS', typeof ratio === 'number' ? `Skein / BIND9 = ${ratio.toFixed(2)} (see its table above)` : 'see its table above', '>= 0.5x BIND9', typeof ratio === 'number' ? (ratio >= 0.5 ? 'met' : 'MISSED') : '-']);
  }
}
{
  const o = byName.get('balancers');
  if (o !== undefined) rows.push(['balancers', o.code === 0 ? 'see its table above' : `FAILED (exit ${o.code})`, 'measured only', '-']);
}
{
  const o = byName.get('endpoint churn');
  if (o !== undefined) {
    const r = (o.result?.['results'] ?? []) as Array<{ size: number; current: { changesPerSecond: number } }>;
    const figures = r.map((x) => `${x.current.changesPerSecond}/s at ${x.size}`).join(', ');
    rows.push(['endpoint churn (one proxy)', o.code === 0 ? `${figures} (see its table above)` : `FAILED (exit ${o.code})`, 'O(1) per change', '-']);
  }
}
table('Summary', ['benchmark', 'figures', 'target', 'verdict'], rows);
table('Runs', ['benchmark', 'exit', 'seconds'], outcomes.map((o) => [o.name, String(o.code), o.seconds]));
if (argv.json !== undefined) {
  writeFileSync(argv.json, JSON.stringify({ machine: info, results: outcomes.map((o) => ({ name: o.name, code: o.code, seconds: o.seconds, result: o.result })) }, null, 2) + '\n');
  process.stdout.write(`results written to ${argv.json}\n`);
}
process.exitCode = outcomes.some((o) => o.code !== 0) ? 1 : 0;
