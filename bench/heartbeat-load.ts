/**
 * The load generator of bench/heartbeat-lag.ts, run as its own process (forked with an IPC
 * channel, so its CPU is not the control plane's nor the measuring process's).
 *
 * 1. Registers `services x perService` instances with a TTL check, from `regConnections`
 *    concurrent clients, and reports {type: "registered"}.
 * 2. On {type: "go"}: sends heartbeats (`PUT .../heartbeat`, no body) at `rate` per second,
 *    paced by the clock, in registration order (instance n gets one every total/rate seconds),
 *    over an undici Pool; reports {type: "tick"} every second and {type: "done"} at the end.
 *    When the control plane does not keep up, at most `maxInflight` heartbeats are outstanding
 *    and the generator falls behind its schedule: the achieved rate is what it reports.
 */
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

const { values: a } = parseArgs({
  options: {
    url: { type: 'string' },
    services: { type: 'string', default: '100' },
    'per-service': { type: 'string', default: '1000' },
    ttl: { type: 'string', default: '30s' },
    rate: { type: 'string', default: '10000' },
    seconds: { type: 'string', default: '60' },
    connections: { type: 'string', default: '64' },
    pipelining: { type: 'string', default: '1' },
    'reg-connections': { type: 'string', default: '128' },
    'max-inflight': { type: 'string', default: '2000' },
  },
});
if (a.url === undefined || process.send === undefined) throw new Error('heartbeat-load runs as a child of bench/heartbeat-lag.js (--url is required)');
const URL_ = a.url;
const SERVICES = Number(a.services);
const PER = Number(a['per-service']);
const TOTAL = SERVICES * PER;
const RATE = Number(a.rate);
const SECONDS = Number(a.seconds);
const MAX_INFLIGHT = Number(a['max-inflight']);

const send = (m: Record<string, unknown>) =>
  new Promise<void>((resolve) => {
    if (process.send === undefined) resolve();
    else process.send(m, undefined, {}, () => resolve());
  });

/** Instance n: service hb-(n % SERVICES), id i-n. */
const pathOf = (n: number) => `/v1/services/hb-${n % SERVICES}/instances/i-${n}`;

function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((q / 100) * sorted.length))) - 1] as number;
}

async function register(): Promise<void> {
  const pool = new Pool(URL_, { connections: Number(a['reg-connections']), pipelining: 1 });
  let next = 0;
  let errors = 0;
  let firstError = '';
  const t0 = performance.now();
  const worker = async () => {
    for (;;) {
      const n = next++;
      if (n >= TOTAL) return;
      const body = JSON.stringify({
        address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`,
        port: 8080,
        zone: `zone-${n % 3}`,
        check: { type: 'ttl', ttl: a.ttl },
      });
      try {
        const res = await pool.request({ path: pathOf(n), method: 'PUT', headers: { 'content-type': 'application/json' }, body });
        const text = await res.body.text();
        if (res.statusCode !== 201) {
          errors++;
          firstError ||= `${res.statusCode} ${text.slice(0, 200)}`;
        }
      } catch (e) {
        errors++;
        firstError ||= (e as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: Number(a['reg-connections']) }, worker));
  await pool.close();
  await send({ type: 'registered', instances: TOTAL, ms: performance.now() - t0, errors, firstError });
}

async function heartbeat(): Promise<void> {
  const pool = new Pool(URL_, { connections: Number(a.connections), pipelining: Number(a.pipelining) });
  const paths = Array.from({ length: TOTAL }, (_, n) => `${pathOf(n)}/heartbeat`);
  let sent = 0;
  let ok = 0;
  let errors = 0;
  let firstError = '';
  let inflight = 0;
  let tickLat: number[] = [];
  const allLat = new Float64Array(Math.ceil(RATE * SECONDS * 1.1) + 1000);
  let nLat = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  let lastTick = { at: start, ok: 0, sent: 0 };
  let second = 0;

  const one = (n: number) => {
    inflight++;
    const t0 = performance.now();
    pool.request({ path: paths[n] as string, method: 'PUT' }).then(
      async (res) => {
        await res.body.dump();
        const d = performance.now() - t0;
        inflight--;
        if (res.statusCode === 200) {
          ok++;
          tickLat.push(d);
          if (nLat < allLat.length) allLat[nLat++] = d;
        } else {
          errors++;
          firstError ||= `status ${res.statusCode}`;
        }
      },
      (e: unknown) => {
        inflight--;
        errors++;
        firstError ||= (e as Error).message;
      },
    );
  };

  await new Promise<void>((resolve) => {
    const pace = setInterval(() => {
      const now = performance.now();
      const due = Math.floor(((Math.min(now, end) - start) * RATE) / 1000);
      while (sent < due && inflight < MAX_INFLIGHT) one(sent++ % TOTAL);
      if (now - lastTick.at >= 1000 || now >= end) {
        const secs = (now - lastTick.at) / 1000;
        const lat = Float64Array.from(tickLat).sort();
        tickLat = [];
        void send({
          type: 'tick',
          second: ++second,
          okPerSecond: (ok - lastTick.ok) / secs,
          sentPerSecond: (sent - lastTick.sent) / secs,
          behind: due - sent,
          inflight,
          p50Ms: pct(lat, 50),
          p99Ms: pct(lat, 99),
          errors,
        });
        lastTick = { at: now, ok, sent };
      }
      if (now >= end) {
        clearInterval(pace);
        resolve();
      }
    }, 2);
  });
  const sendEnd = performance.now();
  const drainDeadline = sendEnd + 10_000;
  while (inflight > 0 && performance.now() < drainDeadline) await new Promise((r) => setTimeout(r, 5));
  const lat = allLat.subarray(0, nLat).sort();
  await pool.destroy();
  await send({
    type: 'done',
    seconds: (sendEnd - start) / 1000,
    sent,
    ok,
    errors,
    firstError,
    targetRate: RATE,
    achievedRate: ok / ((sendEnd - start) / 1000),
    p50Ms: pct(lat, 50),
    p99Ms: pct(lat, 99),
    maxMs: pct(lat, 100),
    undrained: inflight,
  });
}

process.on('message', (m: { type?: string }) => {
  if (m.type === 'go') {
    heartbeat().then(
      () => process.exit(0),
      (e: unknown) => {
        void send({ type: 'error', message: (e as Error).stack ?? String(e) }).then(() => process.exit(1));
      },
    );
  }
});
// The parent going away ends the generator too.
process.on('disconnect', () => process.exit(0));

register().catch((e: unknown) => {
  void send({ type: 'error', message: (e as Error).stack ?? String(e) }).then(() => process.exit(1));
});
