/**
 * Load balancer benchmark: picks per second of every balancer over 10 and 1,000 endpoints, side
 * by side in one run, as ratios to round robin. Three ways of picking:
 *
 *   pick        pick() alone (ring-hash and maglev get a request key, from 4096 prepared ones)
 *   gated       pick() with an availability gate that refuses 10% of the endpoints
 *   feedback    pick(), start(), end(): what the proxy does per request (load-aware balancers
 *               count in-flight requests and latency; the others return a shared no-op)
 *
 * plus the time `update()` takes: building a fresh balancer's state for a snapshot, and updating
 * it when one endpoint leaves. Each figure is
 * the median of `--rounds` rounds (default 5) of about `--ms` ms (default 200), the balancers
 * interleaved within a round. Speed is printed, never asserted.
 *
 *   npm run build && node dist/bench/balancers.js [--rounds 5] [--ms 200]
 */
import { parseArgs } from 'node:util';
import { EndpointSet, type Endpoint } from '../src/discovery/endpoint.js';
import { BALANCER_KINDS, createBalancer, createRng, type Balancer, type BalancerKind, type PickContext } from '../src/balance/index.js';
import { machine, printResult, round, runMain, table, warnIfBusy } from './lib.js';

const { values: argv } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, ms: { type: 'string', default: '200' } } });
const ROUNDS = Math.max(1, Number(argv.rounds));
const MS = Math.max(10, Number(argv.ms));
const SIZES = [10, 1000];
const MODES = ['pick', 'gated', 'feedback'] as const;
type Mode = (typeof MODES)[number];

function endpoints(n: number): EndpointSet {
  // Weights 1..4 so that the weighted structures (alias tables, SWRR cycles, rings) are not trivial.
  return EndpointSet.of(Array.from({ length: n }, (_, i) => ({ service: 'bench', id: `e${i}`, address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 8080, weight: 1 + (i % 4) })));
}

/** Sink for results so the JIT cannot drop the work. */
let sink = 0;

function contexts(kind: BalancerKind, mode: Mode, set: EndpointSet): PickContext[] {
  const rng = createRng(11);
  const hashed = kind === 'ring-hash' || kind === 'maglev';
  const blocked = new Set<Endpoint>(set.list().filter((_, i) => i % 10 === 3));
  const available = mode === 'gated' ? (e: Endpoint) => !blocked.has(e) : undefined;
  return Array.from({ length: 4096 }, () => ({ hash: hashed ? `session-${Math.floor(rng() * 2 ** 40).toString(36)}` : undefined, available }));
}

/** Picks per second for about MS ms. */
function measure(b: Balancer, mode: Mode, ctxs: readonly PickContext[]): number {
  const outcome = { latencyMs: 12, ok: true };
  let ops = 0;
  let i = 0;
  const t0 = performance.now();
  let elapsed: number;
  do {
    for (let k = 0; k < 10_000; k++) {
      const e = b.pick(ctxs[i]);
      i = (i + 1) & 4095;
      if (e === null) continue;
      sink += e.port;
      if (mode === 'feedback') b.start(e).end(outcome);
    }
    ops += 10_000;
    elapsed = performance.now() - t0;
  } while (elapsed < MS);
  return (ops / elapsed) * 1000;
}

/**
 * Median milliseconds of `update()`: with a whole new snapshot on a fresh balancer ("build"), and
 * then with the snapshot minus one endpoint ("one leaves", what endpoint churn costs).
 */
function updateMs(kind: BalancerKind, n: number): { build: number; leave: number } {
  const build: number[] = [];
  const leave: number[] = [];
  for (let r = 0; r < 5; r++) {
    const set = endpoints(n);
    const b = createBalancer(kind, { rng: createRng(r + 1) });
    let t0 = performance.now();
    b.update(set);
    build.push(performance.now() - t0);
    const smaller = set.apply({ type: 'remove', keys: [set.list()[r]!.key] });
    t0 = performance.now();
    b.update(smaller);
    leave.push(performance.now() - t0);
  }
  return { build: median(build), leave: median(leave) };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function main(): Promise<void> {
  const info = machine();
  warnIfBusy(info);
  process.stdout.write(`skein balancer benchmark on ${info.cpus} x ${info.cpuModel}, node ${info.node}: ${ROUNDS} rounds of ~${MS} ms per figure\n`);
  const results: Record<string, Record<string, Record<string, number>>> = {};
  for (const n of SIZES) {
    const set = endpoints(n);
    const runs = new Map<string, number[]>();
    const prepared = BALANCER_KINDS.map((kind) => {
      const b = createBalancer(kind, { rng: createRng(7) });
      b.update(set);
      return { kind, b, ctxs: Object.fromEntries(MODES.map((m) => [m, contexts(kind, m, set)])) as Record<Mode, PickContext[]> };
    });
    // Warm-up: every balancer and mode once, short.
    for (const p of prepared) for (const m of MODES) measure(p.b, m, p.ctxs[m]);
    for (let r = 0; r < ROUNDS; r++) {
      for (const m of MODES) {
        for (const p of prepared) {
          const key = `${p.kind}|${m}`;
          const list = runs.get(key) ?? [];
          list.push(measure(p.b, m, p.ctxs[m]));
          runs.set(key, list);
        }
      }
    }
    const perKind: Record<string, Record<string, number>> = {};
    for (const kind of BALANCER_KINDS) {
      const row: Record<string, number> = {};
      for (const m of MODES) row[m] = median(runs.get(`${kind}|${m}`) ?? [NaN]);
      const u = updateMs(kind, n);
      row['buildMs'] = u.build;
      row['leaveMs'] = u.leave;
      perKind[kind] = row;
    }
    results[String(n)] = perKind;
    const rr = perKind['round-robin'] as Record<string, number>;
    table(
      `${n} endpoints (weights 1..4): million picks per second, ratio to round robin; update() in ms`,
      ['balancer', 'pick M/s', 'x RR', 'gated M/s', 'x RR', 'feedback M/s', 'x RR', 'build ms', '1 leaves ms'],
      BALANCER_KINDS.map((kind) => {
        const row = perKind[kind] as Record<string, number>;
        return [
          kind,
          (row['pick'] as number) / 1e6,
          (row['pick'] as number) / (rr['pick'] as number),
          (row['gated'] as number) / 1e6,
          (row['gated'] as number) / (rr['gated'] as number),
          (row['feedback'] as number) / 1e6,
          (row['feedback'] as number) / (rr['feedback'] as number),
          row['buildMs'] as number,
          row['leaveMs'] as number,
        ];
      }),
    );
  }
  const rounded = Object.fromEntries(
    Object.entries(results).map(([n, kinds]) => [n, Object.fromEntries(Object.entries(kinds).map(([k, row]) => [k, Object.fromEntries(Object.entries(row).map(([m, v]) => [m, round(v, m.endsWith('Ms') ? 3 : 0)]))]))]),
  );
  printResult('balancers', { machine: info, rounds: ROUNDS, ms: MS, picksPerSecond: rounded, sink: sink % 2 });
}

runMain(main);
