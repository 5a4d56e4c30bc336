/**
 * Watch fan-out: S subscribers (default 1,000) hold an NDJSON watch stream
 * (`GET /v1/watch?service=X`) open to one control plane (its own process). Once every subscriber
 * has its snapshot, the benchmark registers K instances of X one at a time; for each it takes the
 * time from sending the PUT until the LAST subscriber has the event's revision (and waits for that
 * before the next PUT), and for every subscriber the time until it got the event.
 *
 * The subscribers live in this process (one socket each, node:http); the time of arrival is taken
 * first thing in each socket's data handler, so the figures include this process reading 1,000
 * sockets, which is what a real fleet of watchers would not share. They are an upper bound.
 *
 * Target (from the issue): last-subscriber p99 < 100 ms with 1,000 subscribers.
 *
 *   node dist/bench/watch-fanout.js [--subscribers 1000] [--events 200] [--instances 10]
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { api, machine, metric, percentile, printResult, procSample, cpuPercent, round, runMain, scrape, startControl, table, tempDir, waitUntil, warnIfBusy, max, otherCpuMeter } from './lib.js';

const { values: argv } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '1000' },
    events: { type: 'string', default: '200' },
    instances: { type: 'string', default: '10' },
    service: { type: 'string', default: 'fanout' },
  },
});
const SUBSCRIBERS = Number(argv.subscribers);
const EVENTS = Number(argv.events);
const INSTANCES = Number(argv.instances);
const SERVICE = argv.service;
const EVENT_TIMEOUT_MS = 10_000;
const TARGET_P99_MS = 100;

/** What the subscribers share: the event being waited for, and when its PUT was sent. */
interface Round {
  sentAt: number;
  /** Arrival time minus sentAt, per subscriber index; NaN until it arrives. */
  delays: Float64Array;
  got: number;
  revision: number | null;
  done: () => void;
}

let current: Round | null = null;
const ADD_PREFIX = '{"type":"add","revision":';

class Subscriber {
  private buf = '';
  snapshot = false;
  closed = false;
  unexpected = 0;
  private req: http.ClientRequest | null = null;

  constructor(
    readonly index: number,
    private readonly onSnapshot: () => void,
  ) {}

  open(host: string, port: number, agent: http.Agent): void {
    this.req = http.get({ host, port, path: `/v1/watch?service=${SERVICE}`, agent, headers: { accept: 'application/x-ndjson' } }, (res) => {
      if (res.statusCode !== 200) {
        this.closed = true;
        res.resume();
        return;
      }
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => this.data(chunk));
      res.on('close', () => (this.closed = true));
    });
    this.req.on('error', () => (this.closed = true));
  }

  close(): void {
    this.req?.destroy();
  }

  private data(chunk: string): void {
    const now = performance.now();
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.line(line, now);
    }
  }

  private line(line: string, now: number): void {
    if (!this.snapshot) {
      if (line.startsWith('{"type":"snapshot"')) {
        this.snapshot = true;
        this.onSnapshot();
      }
      return;
    }
    if (!line.startsWith(ADD_PREFIX)) return; // pings
    const r = current;
    if (r === null) {
      this.unexpected++;
      return;
    }
    const rev = Number(line.slice(ADD_PREFIX.length, line.indexOf(',', ADD_PREFIX.length)));
    if (r.revision === null) r.revision = rev;
    else if (r.revision !== rev) {
      this.unexpected++;
      return;
    }
    if (Number.isNaN(r.delays[this.index] as number)) {
      r.delays[this.index] = now - r.sentAt;
      if (++r.got === r.delays.length) r.done();
    }
  }
}

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  process.stdout.write(`watch-fanout: ${SUBSCRIBERS} NDJSON watch subscribers of one service, ${EVENTS} registrations one at a time\n`);
  const dir = tempDir('skein-bench-fanout-');
  const cp = await startControl({ dataDir: dir.path });
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const subs: Subscriber[] = [];
  try {
    const { hostname, port } = new URL(cp.url);
    for (let i = 0; i < INSTANCES; i++) {
      const r = await api(cp.url, 'PUT', `/v1/services/${SERVICE}/instances/base-${i}`, { address: `10.0.0.${i + 1}`, port: 8080 });
      if (r.status !== 201) throw new Error(`register base-${i}: ${r.status} ${JSON.stringify(r.body)}`);
    }

    // Open the subscribers in batches of 100, each batch once the previous one has its snapshots.
    const tOpen = performance.now();
    let snapshots = 0;
    for (let b = 0; b < SUBSCRIBERS; b += 100) {
      const n = Math.min(100, SUBSCRIBERS - b);
      for (let i = b; i < b + n; i++) {
        const s = new Subscriber(i, () => snapshots++);
        subs.push(s);
        s.open(hostname, Number(port), agent);
      }
      await waitUntil(() => snapshots >= b + n, 30_000, `snapshots of subscribers ${b}..${b + n - 1}`, 2);
    }
    const openMs = performance.now() - tOpen;
    const health = await api(cp.url, 'GET', '/v1/health');
    if (health.body.watchSubscribers !== SUBSCRIBERS) throw new Error(`control plane counts ${health.body.watchSubscribers} subscribers, not ${SUBSCRIBERS}`);

    const before = await scrape(cp.url);
    const cpu0 = procSample(cp.pid);
    const others = otherCpuMeter([cp.pid, process.pid]);
    const last: number[] = [];
    const all: number[] = [];
    const putMs: number[] = [];
    let timeouts = 0;
    const tRun = performance.now();
    for (let k = 0; k < EVENTS; k++) {
      let done!: () => void;
      const arrived = new Promise<void>((r) => (done = r));
      const rd: Round = { sentAt: performance.now(), delays: new Float64Array(SUBSCRIBERS).fill(NaN), got: 0, revision: null, done };
      current = rd;
      const res = await api(cp.url, 'PUT', `/v1/services/${SERVICE}/instances/ev-${k}`, { address: `10.1.${k >> 8}.${k & 255}`, port: 8080 });
      putMs.push(performance.now() - rd.sentAt);
      if (res.status !== 201) throw new Error(`register ev-${k}: ${res.status} ${JSON.stringify(res.body)}`);
      if (rd.revision !== null && rd.revision !== res.body.revision) throw new Error(`event revision ${rd.revision} is not the PUT's ${res.body.revision}`);
      let timer: NodeJS.Timeout | undefined;
      const ok = await Promise.race([arrived.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), EVENT_TIMEOUT_MS)))]);
      clearTimeout(timer);
      current = null;
      if (!ok) {
        timeouts++;
        const closed = subs.filter((s) => s.closed).length;
        process.stdout.write(`event ${k}: only ${rd.got}/${SUBSCRIBERS} subscribers got it within ${EVENT_TIMEOUT_MS} ms (${closed} streams closed)\n`);
        if (closed > 0) break;
        continue;
      }
      last.push(max(rd.delays));
      for (const d of rd.delays) all.push(d);
    }
    const runMs = performance.now() - tRun;
    const cpu1 = procSample(cp.pid);
    const otherCpuPercent = others.stop();
    const after = await scrape(cp.url);
    const overflows = metric(after.samples, 'skein_watch_overflows_total') - metric(before.samples, 'skein_watch_overflows_total');
    const unexpected = subs.reduce((n, s) => n + s.unexpected, 0);

    const result = {
      subscribers: SUBSCRIBERS,
      events: last.length,
      timeouts,
      overflows,
      unexpectedMessages: unexpected,
      openAllMs: round(openMs),
      lastSubscriberMs: { p50: round(percentile(last, 50)), p99: round(percentile(last, 99)), max: round(percentile(last, 100)) },
      perSubscriberMs: { p50: round(percentile(all, 50)), p99: round(percentile(all, 99)), max: round(percentile(all, 100)) },
      putAckMs: { p50: round(percentile(putMs, 50)), p99: round(percentile(putMs, 99)) },
      controlCpuPercent: round(cpuPercent(cpu0, cpu1)),
      controlRssMiB: round(cpu1.rssBytes / 2 ** 20),
      otherCpuPercent: round(otherCpuPercent),
      runSeconds: round(runMs / 1000),
      targetP99Ms: TARGET_P99_MS,
      meetsTarget: timeouts === 0 && percentile(last, 99) < TARGET_P99_MS,
    };
    table(
      `Watch fan-out: ${SUBSCRIBERS} subscribers, ${result.events} events (opened all streams with snapshots in ${result.openAllMs} ms)`,
      ['measure', 'p50 ms', 'p99 ms', 'max ms'],
      [
        ['PUT sent -> last subscriber has it', result.lastSubscriberMs.p50, result.lastSubscriberMs.p99, result.lastSubscriberMs.max],
        ['PUT sent -> each subscriber has it', result.perSubscriberMs.p50, result.perSubscriberMs.p99, result.perSubscriberMs.max],
        ['PUT sent -> PUT acknowledged (fsync)', result.putAckMs.p50, result.putAckMs.p99, '-'],
      ],
    );
    process.stdout.write(
      `target: last-subscriber p99 < ${TARGET_P99_MS} ms: ${result.meetsTarget ? 'met' : 'MISSED'}; timeouts ${timeouts}, overflows ${overflows}, control CPU ${result.controlCpuPercent}%, RSS ${result.controlRssMiB} MiB; other processes used ${result.otherCpuPercent}% CPU meanwhile\n`,
    );
    printResult('watch-fanout', { machine: info, ...result });
  } finally {
    for (const s of subs) s.close();
    agent.destroy();
    await cp.stop();
    dir.remove();
  }
});
