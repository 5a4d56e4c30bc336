/**
 * Traffic mirroring (issue 17 §3): "the primary's p99 does not move (within 10%) when the shadow
 * is slow (500 ms) or down". One run, side by side: a control plane, one `skein proxy` and
 * node:http backends, all child processes; this process is the load generator (bench/load.ts
 * `openLoop`: a fixed rate, latency from each request's scheduled start).
 *
 * The proxy has one pinned outbound listener per phase (`pin=<service>`), each to a service whose
 * one instance is the same primary backend; the services differ only in their `mirror`:
 *
 *   none  no mirror
 *   slow  mirror 100% to a service whose backend answers after --shadow-delay (500 ms)
 *   down  mirror 100% to a service whose one instance is a closed port (every copy: ECONNREFUSED)
 *   hang  mirror 100% to a service whose backend accepts and never answers, mirror timeout
 *         --hang-timeout (copies are abandoned at it)
 *
 * Every mirror keeps the default maxInFlight (TRAFFIC_DEFAULTS.mirror), so at 500 req/s the slow
 * and hang mirrors also run into the cap: requests past it are not copied (reason="limit").
 *
 * For each phase: the primary's p50, p99 and max, p99 over the "none" phase's, the proxy's CPU
 * (its process tree, from /proc) per primary request, counted from the phase's start until every
 * copy of it has ended (the proxy's own /metrics scrapes taken out), and the copies sent (ended,
 * by outcome) and dropped (by reason) from the proxy's skein_proxy_mirror_* series; sent + dropped
 * must equal the requests (every GET is to be copied). Rounds run the phases in turn, in reverse
 * order every other round; figures are medians over rounds (the copies' counts: means per round).
 *
 *   node dist/bench/mirror.js [--rate 500] [--duration 5s] [--rounds 3] [--shadow-delay 500] [--hang-timeout 1s]
 *                             [--phases none,slow,down,hang] [--profile DIR]
 *
 * --phases runs some of the phases ("none", the baseline, always); --profile writes a V8 CPU
 * profile of the proxy (all of the run) into DIR when it exits, to see where a phase's time goes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { TRAFFIC_DEFAULTS } from '../src/api/traffic.js';
import { api, machine, mean, otherCpuMeter, percentile, printResult, round, runMain, scrape, startControl, table, track, waitUntil, warnIfBusy, type Samples } from './lib.js';
import { openLoop, startOkBackend } from './load.js';
import { freePort, posInt, probe, seconds, startSkeinProxy, stopTree, treeCpuSeconds } from './proxy-lib.js';

const ALL_PHASES = ['none', 'slow', 'down', 'hang'] as const;
type PhaseName = (typeof ALL_PHASES)[number];

/** The command line, checked: a bad flag is one line naming it (exit 2), not a stack trace. */
const { rate, durationS, rounds, shadowDelayMs, hangTimeoutS, PHASES, profile } = (() => {
  try {
    const { values: v } = parseArgs({
      options: {
        rate: { type: 'string', default: '500' },
        duration: { type: 'string', default: '5s' },
        rounds: { type: 'string', default: '3' },
        'shadow-delay': { type: 'string', default: '500' },
        'hang-timeout': { type: 'string', default: '1s' },
        phases: { type: 'string', default: ALL_PHASES.join(',') },
        profile: { type: 'string' },
      },
    });
    const asked = v.phases.split(',').map((p) => p.trim());
    const unknown = asked.filter((p) => !(ALL_PHASES as readonly string[]).includes(p));
    if (unknown.length > 0) throw new Error(`--phases: unknown phase "${unknown[0]}" (known: ${ALL_PHASES.join(', ')})`);
    return {
      rate: posInt(v.rate, '--rate'),
      durationS: seconds(v.duration, '--duration'),
      rounds: posInt(v.rounds, '--rounds'),
      shadowDelayMs: posInt(v['shadow-delay'], '--shadow-delay', 0),
      hangTimeoutS: seconds(v['hang-timeout'], '--hang-timeout'),
      /** The phases run, in ALL_PHASES's order; "none" (the baseline) always. */
      PHASES: ALL_PHASES.filter((p) => p === 'none' || asked.includes(p)) as PhaseName[],
      profile: v.profile,
    };
  } catch (e) {
    process.stderr.write(`bench/mirror: ${(e as Error).message}\n`);
    process.exit(2);
  }
})();

/** A node:http server in a child process: answers `ok` after DELAY ms, or (HANG) never. */
const SHADOW = `
const http = require('node:http');
const delay = Number(process.env.DELAY);
const hang = process.env.HANG === '1';
const s = http.createServer((req, res) => {
  req.resume();
  if (hang) return;
  req.on('end', () => setTimeout(() => res.writeHead(200, { 'content-length': 2 }).end('ok'), delay));
});
s.keepAliveTimeout = 60000;
s.headersTimeout = 0;
s.requestTimeout = 0;
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
`;

async function startShadow(env: Record<string, string>): Promise<{ child: ChildProcess; port: number }> {
  const child = track(spawn(process.execPath, ['-e', SHADOW], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (l) => resolve(Number(l)));
    child.once('exit', (c) => reject(new Error(`the shadow backend exited with ${c}`)));
  });
  return { child, port };
}

const LABEL: Record<PhaseName, string> = {
  none: '1. no mirror',
  slow: `2. shadow slow (${shadowDelayMs} ms)`,
  down: '3. shadow down (closed port)',
  hang: `4. shadow never answers (timeout ${hangTimeoutS} s)`,
};

/** What the proxy's skein_proxy_mirror_* series say of one mirror service. */
interface MirrorCount {
  /** Copies that ended with a response (any status). */
  answered: number;
  /** Copies that ended without one (status 0: connect failure, reset, timeout). */
  failed: number;
  /** Requests not copied, by reason. */
  dropped: Record<string, number>;
}

const labelOf = (key: string, name: string): string | undefined => new RegExp(`[{,]${name}="([^"]*)"`).exec(key)?.[1];

function mirrorCount(s: Samples, mirror: string): MirrorCount {
  const out: MirrorCount = { answered: 0, failed: 0, dropped: {} };
  for (const [key, v] of s) {
    if (labelOf(key, 'mirror') !== mirror) continue;
    if (key.startsWith('skein_proxy_mirror_requests_total{')) {
      if (labelOf(key, 'status') === '0') out.failed += v;
      else out.answered += v;
    } else if (key.startsWith('skein_proxy_mirror_dropped_total{')) {
      const reason = labelOf(key, 'reason') ?? '?';
      out.dropped[reason] = (out.dropped[reason] ?? 0) + v;
    }
  }
  return out;
}

function minus(a: MirrorCount, b: MirrorCount): MirrorCount {
  const dropped: Record<string, number> = {};
  for (const [r, n] of Object.entries(a.dropped)) if (n - (b.dropped[r] ?? 0) > 0) dropped[r] = n - (b.dropped[r] ?? 0);
  return { answered: a.answered - b.answered, failed: a.failed - b.failed, dropped };
}

const total = (c: MirrorCount): number => c.answered + c.failed + Object.values(c.dropped).reduce((x, y) => x + y, 0);

interface PhaseResult {
  p50: number;
  p99: number;
  max: number;
  errors: number;
  /** The generator's own lateness (its event loop), p99 ms. */
  lateP99: number;
  proxyUsPerRequest: number;
  /** CPU of everything else on the machine during the phase, % of one core. */
  otherCpuPercent: number;
  copies: MirrorCount;
  /** ms from the end of the load until every copy had ended. */
  settleMs: number;
}

/** Medians over rounds (nearest-rank 50th percentile). */
const median = (xs: number[]): number => percentile(xs, 50);

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  const control = await startControl({ dataDir: 'none' });
  const primary = await startOkBackend();
  track(primary.child);
  const slow = await startShadow({ DELAY: String(shadowDelayMs) });
  const hang = await startShadow({ HANG: '1' });
  const closed = await freePort();
  const put = async (path: string, body: object): Promise<void> => {
    const r = await api(control.url, 'PUT', path, body);
    if (r.status !== 200 && r.status !== 201) throw new Error(`PUT ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  const shadowPort: Record<Exclude<PhaseName, 'none'>, number> = { slow: slow.port, down: closed, hang: hang.port };
  const mirrorOf: Record<PhaseName, object | null> = {
    none: null,
    slow: { service: 'shadow-slow' },
    down: { service: 'shadow-down' },
    hang: { service: 'shadow-hang', timeout: `${hangTimeoutS}s` },
  };
  for (const [phase, port] of Object.entries(shadowPort)) {
    await put(`/v1/services/shadow-${phase}`, {});
    await put(`/v1/services/shadow-${phase}/instances/shadow-${phase}-1`, { address: '127.0.0.1', port });
  }
  for (const phase of PHASES) {
    const m = mirrorOf[phase];
    await put(`/v1/services/app-${phase}`, m === null ? {} : { mirror: m });
    await put(`/v1/services/app-${phase}/instances/app-${phase}-1`, { address: '127.0.0.1', port: primary.port });
  }
  const proxy = await startSkeinProxy(
    null,
    ['--control', control.url, ...PHASES.flatMap((p) => ['--workload', `name=bench-${p},outbound=127.0.0.1:0,pin=app-${p}`])],
    'info',
    // --profile DIR: a V8 CPU profile of the proxy, written when it exits (the whole run).
    profile === undefined ? {} : { NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --cpu-prof --cpu-prof-dir=${profile}`.trim() },
  );
  const proxyPid = proxy.child.pid as number;
  const portOf = new Map<PhaseName, number>();
  for (const w of proxy.workloads) portOf.set(w.name.slice('bench-'.length) as PhaseName, Number(w.outbound?.split(':').pop()));
  const metricsUrl = `http://${proxy.admin}`;
  /** The proxy's CPU spent answering our own scrapes, taken out of its CPU per request. */
  let scrapeCpu = 0;
  const proxyMetrics = async (): Promise<Samples> => {
    const c0 = treeCpuSeconds(proxyPid);
    const { samples } = await scrape(metricsUrl);
    scrapeCpu += treeCpuSeconds(proxyPid) - c0;
    return samples;
  };

  // Ready: each listener answers 200 from the primary, and each mirror has counted a copy.
  for (const phase of PHASES) {
    const port = portOf.get(phase) as number;
    await waitUntil(
      async () => {
        const r = await probe(port).catch(() => ({ status: 0 }));
        if (r.status !== 200) return false;
        return phase === 'none' || total(mirrorCount(await proxyMetrics(), `shadow-${phase}`)) > 0;
      },
      30_000,
      `the proxy to serve app-${phase}${phase === 'none' ? '' : ` and copy to shadow-${phase}`} on 127.0.0.1:${port}`,
      100,
    );
  }

  const ourPids = [process.pid, proxyPid, control.pid, primary.child.pid as number, slow.child.pid as number, hang.child.pid as number];
  async function runPhase(phase: PhaseName, secs: number): Promise<PhaseResult> {
    const port = portOf.get(phase) as number;
    const mirror = `shadow-${phase}`;
    const before = mirrorCount(await proxyMetrics(), mirror);
    const other = otherCpuMeter(ourPids);
    scrapeCpu = 0;
    const cpu0 = treeCpuSeconds(proxyPid);
    const ol = await openLoop(port, rate, secs);
    const loadEnd = performance.now();
    const n = ol.latency.length;
    // Every copy of the phase ends (answered, failed, abandoned) or was dropped: sent + dropped = requests.
    let copies = minus(before, before);
    if (phase !== 'none') {
      await waitUntil(
        async () => {
          copies = minus(mirrorCount(await proxyMetrics(), mirror), before);
          return total(copies) >= n;
        },
        hangTimeoutS * 1000 + shadowDelayMs + 30_000,
        `the ${n} copies of phase "${phase}" to end or be dropped`,
        100,
      );
    }
    const settleMs = performance.now() - loadEnd;
    const proxyCpu = treeCpuSeconds(proxyPid) - cpu0 - scrapeCpu;
    const otherCpuPercent = other.stop();
    return {
      p50: percentile(ol.latency, 50),
      p99: percentile(ol.latency, 99),
      max: percentile(ol.latency, 100),
      errors: ol.errors,
      lateP99: percentile(ol.lateness, 99),
      proxyUsPerRequest: (proxyCpu * 1e6) / n,
      otherCpuPercent,
      copies,
      settleMs,
    };
  }

  // Warm-up (connections, JIT): one second of each phase.
  for (const phase of PHASES) await runPhase(phase, 1);
  const results = new Map<PhaseName, PhaseResult[]>(PHASES.map((p) => [p, []]));
  for (let r = 0; r < rounds; r++) {
    for (const phase of r % 2 === 0 ? PHASES : [...PHASES].reverse()) results.get(phase)?.push(await runPhase(phase, durationS));
  }

  const n = rate * durationS;
  const baseRounds = results.get('none') as PhaseResult[];
  const base = median(baseRounds.map((x) => x.p99));
  const baseCpu = median(baseRounds.map((x) => x.proxyUsPerRequest));
  const summary = PHASES.map((phase) => {
    const rs = results.get(phase) as PhaseResult[];
    const ratios = rs.map((x, i) => x.p99 / (baseRounds[i] as PhaseResult).p99);
    const m = (f: (x: PhaseResult) => number) => median(rs.map(f));
    const dropped: Record<string, number> = {};
    for (const x of rs) for (const [k, v] of Object.entries(x.copies.dropped)) dropped[k] = (dropped[k] ?? 0) + v / rs.length;
    const p99 = m((x) => x.p99);
    return {
      phase,
      p50Ms: round(m((x) => x.p50), 2),
      p99Ms: round(p99, 2),
      maxMs: round(m((x) => x.max), 1),
      p99Ratio: round(p99 / base, 3),
      p99PerRoundMs: rs.map((x) => round(x.p99, 2)),
      /** Each round's p99 over the same round's "none" p99 (paired: drift of the machine cancels). */
      p99RatioPerRound: ratios.map((r) => round(r, 2)),
      p99RatioPairedMedian: round(median(ratios), 3),
      errors: rs.reduce((a, x) => a + x.errors, 0),
      generatorLateP99Ms: round(m((x) => x.lateP99), 2),
      proxyUsPerRequest: round(m((x) => x.proxyUsPerRequest), 1),
      proxyUsOverNoMirror: round(m((x) => x.proxyUsPerRequest) - baseCpu, 1),
      otherCpuPercent: round(m((x) => x.otherCpuPercent), 0),
      copiesAnswered: round(mean(rs.map((x) => x.copies.answered)), 0),
      copiesFailed: round(mean(rs.map((x) => x.copies.failed)), 0),
      droppedMeanPerRound: Object.fromEntries(Object.entries(dropped).map(([k, v]) => [k, round(v, 0)])),
      settleMs: round(m((x) => x.settleMs), 0),
    };
  });
  const maxInFlight = TRAFFIC_DEFAULTS.mirror.maxInFlight;
  table(
    `Traffic mirroring: GET at ${rate} req/s through the proxy's outbound listener, ${durationS} s x ${rounds} rounds per phase (medians), ` +
      `${n} requests per phase (copies: means per round), maxInFlight ${maxInFlight}; load average ${info.loadavg1} on ${info.cpus} cores`,
    ['phase', 'p50 ms', 'p99 ms', 'max ms', 'p99 / no mirror', 'proxy CPU µs/req', 'over no mirror', 'copies answered', 'copies failed', 'not copied (reason)', 'other CPU %'],
    summary.map((s) => [
      LABEL[s.phase],
      s.p50Ms,
      s.p99Ms,
      s.maxMs,
      s.p99Ratio,
      s.proxyUsPerRequest,
      s.phase === 'none' ? '-' : s.proxyUsOverNoMirror,
      s.phase === 'none' ? '-' : s.copiesAnswered,
      s.phase === 'none' ? '-' : s.copiesFailed,
      Object.entries(s.droppedMeanPerRound)
        .map(([k, v]) => `${v} (${k})`)
        .join(', ') || (s.phase === 'none' ? '-' : '0'),
      s.otherCpuPercent,
    ]),
  );
  process.stdout.write(`p99 per round, ms: ${summary.map((s) => `${s.phase} [${s.p99PerRoundMs.join(', ')}]`).join('; ')}\n`);
  process.stdout.write(
    `p99 / the same round's no-mirror p99: ${summary
      .filter((s) => s.phase !== 'none')
      .map((s) => `${s.phase} [${s.p99RatioPerRound.join(', ')}] median ${s.p99RatioPairedMedian}`)
      .join('; ')}\n`,
  );
  const errors = summary.reduce((a, s) => a + s.errors, 0);
  if (errors > 0) process.stdout.write(`note: ${errors} primary requests failed (not 200)\n`);
  const mirrored = summary.filter((s) => s.phase !== 'none');
  const worst = mirrored.length === 0 ? null : Math.max(...mirrored.map((s) => s.p99Ratio));
  // How far the baseline's own p99 moves between its rounds: a 10% verdict means little past it.
  const baseSpread = round(Math.max(...baseRounds.map((x) => x.p99)) / Math.min(...baseRounds.map((x) => x.p99)), 2);
  if (worst !== null) {
    process.stdout.write(
      `target: the primary's p99 within 10% of no mirror's with a slow, dead or silent shadow: worst ratio ${worst} -> ${worst <= 1.1 ? 'met' : 'MISSED'}` +
        (rounds < 2
          ? ' (one round: nothing shows how much the no-mirror p99 moves by itself; run --rounds 3 or more)\n'
          : ` (the no-mirror p99 itself ranged x${baseSpread} between its rounds${baseSpread > 1.1 ? ': noise beyond the 10% the target asks; re-run on a quiet machine' : ''})\n`),
    );
  }
  const loadEnd = machine().loadavg1;
  process.stdout.write(`1-minute load average: ${info.loadavg1} at the start, ${loadEnd} at the end (${info.cpus} cores)\n`);
  printResult('mirror', { rate, durationS, rounds, shadowDelayMs, hangTimeoutS, maxInFlight, loadavg1: info.loadavg1, loadavg1End: loadEnd, cpus: info.cpus, worstP99Ratio: worst, baselineP99Spread: baseSpread, meetsTarget: worst === null ? null : worst <= 1.1, phases: summary });
  await stopTree(proxy.child);
  await control.stop();
});
