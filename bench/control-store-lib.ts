/**
 * The tools of bench/control-store.ts, apart so bench/control-store.test.ts can test them against
 * real sockets: a watcher that reads a control plane's full watch stream (`GET /v1/watch`, what a
 * proxy opens) as raw bytes, a pool of them, an RSS sampler that keeps a process's peak, and the
 * registration load (N concurrent clients registering a fleet of services x instances).
 *
 * A watcher never keeps the snapshot: it counts its bytes up to the first newline and takes the
 * revision from its first bytes, so 1,000 watchers of a 30 MB snapshot cost this process only the
 * reading. After the snapshot, each line's type and revision are read from its first bytes.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { Pool } from 'undici';

const NL = 0x0a;
const HEAD = /^\{"type":"([a-z]+)","revision":(\d+)/;

/** What a watcher saw of one message after the snapshot. */
export interface WatchLine {
  type: string;
  revision: number;
}

/**
 * One NDJSON watch stream. `snapshotAt` is performance.now() when the snapshot's last byte
 * arrived; `snapshotBytes` its size with the newline.
 */
export class Watcher {
  snapshotAt: number | null = null;
  snapshotBytes = 0;
  snapshotRevision: number | null = null;
  closed = false;
  /** The HTTP status, or the connection error. */
  failure: string | null = null;
  /** Messages after the snapshot other than pings. */
  messages = 0;
  private head = '';
  private rest = '';
  private req: http.ClientRequest | null = null;

  constructor(
    readonly index: number,
    /** Called with each message after the snapshot (pings too), and the time its chunk arrived. */
    private readonly onLine: (w: Watcher, line: WatchLine, now: number) => void = () => {},
    private readonly onSnapshot: (w: Watcher) => void = () => {},
  ) {}

  open(base: string, agent: http.Agent, since: number | null = null): void {
    const u = new URL(base);
    const path = since === null ? '/v1/watch' : `/v1/watch?since=${since}`;
    this.req = http.get({ host: u.hostname, port: Number(u.port), path, agent, headers: { accept: 'application/x-ndjson' } }, (res) => {
      if (res.statusCode !== 200) {
        this.failure = `HTTP ${res.statusCode}`;
        this.closed = true;
        res.resume();
        return;
      }
      res.on('data', (chunk: Buffer) => this.data(chunk));
      res.on('close', () => (this.closed = true));
    });
    this.req.on('error', (e) => {
      this.failure ??= e.message;
      this.closed = true;
    });
  }

  close(): void {
    this.req?.destroy();
  }

  /** Exposed for the tests: feeds one chunk as if it came from the socket. */
  data(chunk: Buffer, now = performance.now()): void {
    let from = 0;
    if (this.snapshotAt === null) {
      if (this.head.length < 64) this.head += chunk.toString('latin1', 0, Math.min(chunk.length, 64 - this.head.length));
      const nl = chunk.indexOf(NL);
      if (nl < 0) {
        this.snapshotBytes += chunk.length;
        return;
      }
      this.snapshotBytes += nl + 1;
      const m = HEAD.exec(this.head);
      if (m === null || m[1] !== 'snapshot') throw new Error(`watcher ${this.index}: the stream did not start with a snapshot: ${this.head}`);
      this.snapshotRevision = Number(m[2]);
      this.snapshotAt = now;
      this.onSnapshot(this);
      from = nl + 1;
    }
    if (from >= chunk.length) return;
    this.rest += chunk.toString('utf8', from);
    let nl: number;
    while ((nl = this.rest.indexOf('\n')) >= 0) {
      const m = HEAD.exec(this.rest.slice(0, 64));
      this.rest = this.rest.slice(nl + 1);
      if (m === null) continue;
      const line = { type: m[1] as string, revision: Number(m[2]) };
      if (line.type !== 'ping') this.messages++;
      this.onLine(this, line, now);
    }
  }
}

/**
 * Opens `n` watchers on `base`, at most `concurrency` waiting for their snapshot at a time (n for
 * a herd). Resolves once every one has its snapshot, with the time that took; rejects on a
 * failure or after `timeoutMs`.
 */
export async function openWatchers(
  o: { base: string; n: number; concurrency: number; since?: number | null; timeoutMs: number; agent: http.Agent; onLine?: (w: Watcher, line: WatchLine, now: number) => void },
  into: Watcher[],
): Promise<{ ms: number }> {
  const t0 = performance.now();
  let next = 0;
  let done = 0;
  let wake: () => void = () => {};
  const opened: Watcher[] = [];
  const start = () => {
    while (next < o.n && next - done < o.concurrency) {
      const w = new Watcher(next++, o.onLine, () => {
        done++;
        start();
        if (done === o.n) wake();
      });
      opened.push(w);
      into.push(w);
      w.open(o.base, o.agent, o.since ?? null);
    }
  };
  const all = new Promise<void>((r) => (wake = r));
  start();
  const deadline = Date.now() + o.timeoutMs;
  while (done < o.n) {
    const failed = opened.find((w) => w.failure !== null || (w.closed && w.snapshotAt === null));
    if (failed !== undefined) throw new Error(`watcher ${failed.index} failed before its snapshot: ${failed.failure ?? 'stream closed'} (${done}/${o.n} had theirs)`);
    if (Date.now() > deadline) throw new Error(`only ${done} of ${o.n} watchers had their snapshot after ${o.timeoutMs} ms`);
    await Promise.race([all, new Promise((r) => setTimeout(r, 20))]);
  }
  return { ms: performance.now() - t0 };
}

/** Samples a process's RSS every `everyMs` until stopped; keeps the peak. */
export function rssSampler(pid: number, everyMs = 50): { peak: () => number; last: () => number; stop: () => number } {
  let peak = 0;
  let last = 0;
  const read = () => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m !== null) {
        last = Number(m[1]) * 1024;
        peak = Math.max(peak, last);
      }
    } catch {
      /* the process is gone */
    }
  };
  read();
  const t = setInterval(read, everyMs);
  return {
    peak: () => peak,
    last: () => last,
    stop: () => {
      clearInterval(t);
      read();
      return peak;
    },
  };
}

/** The instance `k` of a fleet: service `svc-<k / perService>`, id `i-<k>`. */
export function fleetInstance(k: number, perService: number): { service: string; id: string; body: string } {
  const service = `svc-${Math.floor(k / perService)}`;
  return {
    service,
    id: `i-${k}`,
    body: JSON.stringify({ address: `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`, port: 8080, zone: 'zone-a', version: 'v1', labels: { app: service } }),
  };
}

export interface RegisterResult {
  instances: number;
  errors: number;
  firstError: string | null;
  seconds: number;
  /** Latency of each successful PUT, ms. */
  latencies: number[];
}

/**
 * Registers instances `from` .. `from + count - 1` of the fleet with `clients` concurrent
 * clients (an undici Pool of that many connections, no pipelining); each client takes the next
 * instance when its PUT is answered.
 */
export async function registerFleet(o: { base: string; token: string | null; from?: number; count: number; perService: number; clients: number }): Promise<RegisterResult> {
  const pool = new Pool(o.base, { connections: o.clients, pipelining: 1 });
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(o.token === null ? {} : { authorization: `Bearer ${o.token}` }) };
  const from = o.from ?? 0;
  const latencies: number[] = [];
  let k = from;
  let errors = 0;
  let firstError: string | null = null;
  const t0 = performance.now();
  const client = async () => {
    while (k < from + o.count) {
      const inst = fleetInstance(k++, o.perService);
      const t = performance.now();
      try {
        const res = await pool.request({ path: `/v1/services/${inst.service}/instances/${inst.id}`, method: 'PUT', headers, body: inst.body });
        const text = await res.body.text();
        if (res.statusCode === 201) latencies.push(performance.now() - t);
        else {
          errors++;
          firstError ??= `${inst.service}/${inst.id}: HTTP ${res.statusCode} ${text.slice(0, 300)}`;
        }
      } catch (e) {
        errors++;
        firstError ??= `${inst.service}/${inst.id}: ${(e as Error).message}`;
      }
    }
  };
  await Promise.all(Array.from({ length: o.clients }, client));
  const seconds = (performance.now() - t0) / 1000;
  await pool.close();
  return { instances: latencies.length, errors, firstError, seconds, latencies };
}

/**
 * Times writes to the watchers, one at a time: `line` is every watcher's onLine; `round(write)`
 * sends one write and resolves once every watcher has its `add` event, or after `timeoutMs`.
 * Also counts events out of revision order on any stream.
 */
export class WriteRounds {
  /** Per write: from sending it to the last watcher having its event, ms. */
  readonly last: number[] = [];
  /** Per write and watcher, ms. */
  readonly each: number[] = [];
  /** Per write: until the write itself was acknowledged, ms. */
  readonly writeMs: number[] = [];
  timeouts = 0;
  outOfOrder = 0;
  private current: { sentAt: number; delays: Float64Array; got: number; revision: number | null; done: () => void } | null = null;
  private readonly lastSeen = new Map<number, number>();

  constructor(
    private readonly watchers: number,
    private readonly timeoutMs: number,
  ) {}

  readonly line = (w: Watcher, line: WatchLine, now: number): void => {
    if (line.type === 'ping') return;
    if (line.revision <= (this.lastSeen.get(w.index) ?? 0)) this.outOfOrder++;
    this.lastSeen.set(w.index, line.revision);
    const r = this.current;
    if (r === null || line.type !== 'add') return;
    r.revision ??= line.revision;
    if (line.revision !== r.revision || !Number.isNaN(r.delays[w.index] as number)) return;
    r.delays[w.index] = now - r.sentAt;
    if (++r.got === r.delays.length) r.done();
  };

  /** One write (`write` resolves with the revision it was stored at). `ok` false: not every watcher had it in time. */
  async round(write: () => Promise<number>): Promise<{ ok: boolean; got: number; revision: number }> {
    let done!: () => void;
    const arrived = new Promise<void>((resolve) => (done = resolve));
    const r = { sentAt: performance.now(), delays: new Float64Array(this.watchers).fill(NaN), got: 0, revision: null as number | null, done };
    this.current = r;
    let timer: NodeJS.Timeout | undefined;
    try {
      const revision = await write();
      this.writeMs.push(performance.now() - r.sentAt);
      if (r.revision !== null && r.revision !== revision) throw new Error(`the watchers' event has revision ${r.revision}, the write ${revision}`);
      const ok = await Promise.race([arrived.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.timeoutMs)))]);
      if (!ok) this.timeouts++;
      else {
        this.last.push(Math.max(...r.delays));
        for (const d of r.delays) this.each.push(d);
      }
      return { ok, got: r.got, revision };
    } finally {
      clearTimeout(timer);
      this.current = null;
    }
  }
}
