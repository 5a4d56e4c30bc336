/**
 * What tracing costs a proxy per request (src/telemetry/trace.ts): a hop span, an attempt span
 * and their two ends, with incoming context in the three forms the proxy meets (traceparent,
 * none, b3), for requests not sampled (propagated only) and sampled (recorded and exported to an
 * OTLP collector in another process, so that its JSON parsing is not counted here). The two run
 * side by side, alternating rounds, and the ratio of sampled to unsampled is printed.
 *
 *   npm run build && node dist/bench/tracing.js [--requests 100000] [--rounds 3]
 *
 * 100 requests a millisecond, as a busy proxy sees them, with the event loop turning between
 * (the exporter runs in those turns). "In the request path" is the time inside the tracer calls;
 * "CPU in all" is the process's CPU time per request, export included. (This was a test of the
 * unit suite that asserted nothing; tests never assert speed.)
 */
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createProxyTracer } from '../src/telemetry/trace.js';
import { machine, printResult, round, runMain, table, track, warnIfBusy } from './lib.js';

const { values: argv } = parseArgs({ options: { requests: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(argv.requests);
const ROUNDS = Number(argv.rounds);

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const ATTRS = { workload: 'web-1', service: 'checkout', route: 'default', method: 'GET', path: '/cart/42' };
const EP = { id: 'checkout-7', address: '127.0.0.1', port: 8081 };

const CASES = [
  { label: 'not sampled (propagated only)', ratio: 0, incoming: [{ traceparent: `00-${TRACE}-${SPAN}-00` }, {}, { b3: `${TRACE}-${SPAN}-0` }] },
  { label: 'sampled (recorded and exported)', ratio: 1, incoming: [{ traceparent: `00-${TRACE}-${SPAN}-01` }, {}, { b3: `${TRACE}-${SPAN}-1` }] },
] as const;

/** An OTLP/HTTP JSON collector that counts spans; answers its span count to any IPC message. */
const COLLECTOR = `
import { createServer } from 'node:http';
let spans = 0;
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    for (const rs of JSON.parse(Buffer.concat(chunks).toString()).resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans += (ss.spans ?? []).length;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', () => process.send({ spans }));
process.on('disconnect', () => process.exit(0));
`;

interface Measured {
  pathUs: number;
  cpuUs: number;
  exported: number;
}

async function main(): Promise<void> {
  const info = machine();
  warnIfBusy(info);
  const child = track(fork('-', [], { execArgv: ['--input-type=module', '-e', COLLECTOR], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve((m as { port: number }).port)));
  const received = () =>
    new Promise<number>((resolve) => {
      child.once('message', (m) => resolve((m as { spans: number }).spans));
      child.send('count');
    });
  const endpoint = `http://127.0.0.1:${port}/v1/traces`;

  /** One round of `n` requests with one tracer: time in the calls, CPU in all, spans exported. */
  const measure = async (c: (typeof CASES)[number], n: number): Promise<Measured> => {
    const tracer = createProxyTracer({ endpoint, serviceName: 'bench', sampleRatio: c.ratio, exportIntervalMs: 1000 });
    const before = await received();
    const cpu0 = process.cpuUsage();
    let busy = 0;
    for (let done = 0; done < n; done += 100) {
      const t0 = performance.now();
      for (let i = 0; i < 100; i++) {
        const hop = tracer.hop('outbound', c.incoming[i % 3]!, ATTRS);
        const a = hop.attempt(1, EP);
        if (a.headers.length === 0) throw new Error('no trace headers');
        a.end(200, null);
        hop.end(200, null);
      }
      busy += performance.now() - t0;
      await new Promise((r) => setTimeout(r, 1));
    }
    await tracer.flush();
    const cpu = process.cpuUsage(cpu0);
    // Exported spans still on their way to the collector: wait a little for them (not timed).
    const deadline = Date.now() + 5000;
    let exported = (await received()) - before;
    while (c.ratio > 0 && exported < 2 * n && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      exported = (await received()) - before;
    }
    await tracer.shutdown();
    return { pathUs: (busy * 1000) / n, cpuUs: (cpu.user + cpu.system) / n, exported };
  };

  for (const c of CASES) await measure(c, N / 5); // warm up
  const runs = new Map<string, Measured[]>(CASES.map((c) => [c.label, []]));
  for (let r = 0; r < ROUNDS; r++) for (const c of CASES) runs.get(c.label)!.push(await measure(c, N));
  child.kill();

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rows = CASES.map((c) => {
    const m = runs.get(c.label)!;
    return { label: c.label, pathUs: median(m.map((x) => x.pathUs)), cpuUs: median(m.map((x) => x.cpuUs)), exported: Math.min(...m.map((x) => x.exported)) };
  });
  const [off, on] = rows as [(typeof rows)[number], (typeof rows)[number]];
  process.stdout.write(`tracing cost on ${info.cpus} x ${info.cpuModel}, node ${info.node}: ${N} requests a round, ${ROUNDS} rounds alternating, medians\n`);
  table(
    'per request (hop + attempt + 2 x end)',
    ['request', 'us in the request path', 'us of CPU in all', 'spans exported (fewest of the rounds)'],
    rows.map((r) => [r.label, round(r.pathUs, 2), round(r.cpuUs, 2), `${r.exported} of ${r.label.startsWith('sampled') ? 2 * N : 0}`]),
  );
  process.stdout.write(`sampled / not sampled: ${(on.pathUs / off.pathUs).toFixed(2)}x in the request path, ${(on.cpuUs / off.cpuUs).toFixed(2)}x CPU in all\n`);
  printResult('tracing', {
    requests: N,
    rounds: ROUNDS,
    notSampled: { pathUs: round(off.pathUs, 2), cpuUs: round(off.cpuUs, 2) },
    sampled: { pathUs: round(on.pathUs, 2), cpuUs: round(on.cpuUs, 2), exported: on.exported, of: 2 * N },
    ratio: { path: round(on.pathUs / off.pathUs, 2), cpu: round(on.cpuUs / off.cpuUs, 2) },
  });
}

runMain(main);
