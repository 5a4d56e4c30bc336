/**
 * `skein proxy --workers N`: one proxy on every core. The main thread keeps what there is one of
 * per proxy (the admin server, the announcer, the control-plane replicas it announces to) and
 * starts N worker threads (workers/worker.ts), each a full Proxy with the same workloads, whose
 * listeners bind with SO_REUSEPORT on the same ports: the kernel spreads new connections among
 * them. A port 0 is resolved by worker 0, which binds first; the others bind the port it got.
 * Each worker watches the control plane itself (N watch streams per host).
 *
 * `ProxyWorkers` is the admin server's view of them all (admin.ts's `AdminView`): `/metrics` is
 * every worker's registry summed (telemetry/prom.ts `aggregate`: counters, gauges and histograms
 * summed unless their aggregator says otherwise; `process_*` taken from one worker, as every
 * thread reads the same process); `/stats` sums the series by key
 * and merges the workers' events under one sequence this thread assigns, so a scraper's
 * `since=` keeps working; taps get every worker's lines; `/ready` is every worker ready,
 * `/picks` any worker picks; `/debug/endpoints` is worker 0's view plus each worker's connections
 * and requests. A worker that exits on its own is reported (`onExit`): the proxy stops.
 *
 * It is also `skein up --workers N`'s proxy (mesh-proxy.ts's `MeshProxy`): the runtime adds and
 * removes workloads as services start, scale and stop, each in every worker (worker 0 first, for a
 * port 0). With mTLS every worker shares the main thread's TLS session-ticket keys, so a client
 * resumes its session whichever worker the kernel hands its next connection to (workers/ca.ts).
 */
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { parseHostPort } from '../core/address.js';
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { STATS_MAX_EVENTS, statsAuthzKey, statsSeriesKey, type StatsAuthz, type StatsEvent, type StatsSeries, type StatsSnapshot } from '../api/stats.js';
import type { TapRecord } from '../api/tap.js';
import { exposition } from '../telemetry/exposition.js';
import { aggregate, type Family } from '../telemetry/prom.js';
import type { AdminView, Readiness } from './admin.js';
import type { WorkloadInfo, WorkloadSpec } from './proxy.js';
import type { TapFilter } from '../telemetry/tap.js';
import { answerCa } from './workers/ca.js';
import type { CertificateSource, ControlCall, Identities } from '../identity/mtls/identities.js';
import type { MeshProxy } from './mesh-proxy.js';
import { failedReply, Pending, replyError, WORKERS_BOUNDS, type MainMessage, type WorkerAnswer, type WorkerFacts, type WorkerInit, type WorkerMessage, type WorkerQuestion } from './workers/protocol.js';



// ---- summing (pure) ----

type MutableSeries = { -readonly [K in keyof StatsSeries]: StatsSeries[K] } & { statuses: Record<string, number>; latency: { counts: number[]; sum: number } };

/** The workers' series summed by key (listener, source, destination, route, instance, version): what one proxy would have counted. */
export function sumSeries(snapshots: readonly Pick<StatsSnapshot, 'series'>[]): StatsSeries[] {
  const byKey = new Map<string, MutableSeries>();
  for (const snap of snapshots) {
    for (const s of snap.series) {
      const k = statsSeriesKey(s);
      const a = byKey.get(k);
      if (a === undefined) {
        byKey.set(k, { ...s, version: s.version ?? '', statuses: { ...s.statuses }, latency: { counts: [...s.latency.counts], sum: s.latency.sum }, mtls: s.mtls ?? 0 });
        continue;
      }
      a.requests += s.requests;
      a.failures += s.failures;
      for (const [status, n] of Object.entries(s.statuses ?? {})) a.statuses[status] = (a.statuses[status] ?? 0) + n;
      s.latency.counts.forEach((n, i) => (a.latency.counts[i] = (a.latency.counts[i] ?? 0) + n));
      a.latency.sum += s.latency.sum;
      a.requestBytes += s.requestBytes;
      a.responseBytes += s.responseBytes;
      a.mtls = (a.mtls ?? 0) + (s.mtls ?? 0);
    }
  }
  return [...byKey.values()];
}

/** The workers' authorization counts summed by service, outcome and policy. */
export function sumAuthz(snapshots: readonly Pick<StatsSnapshot, 'authz'>[]): StatsAuthz[] {
  const byKey = new Map<string, StatsAuthz & { count: number }>();
  for (const snap of snapshots) {
    for (const c of snap.authz ?? []) {
      const k = statsAuthzKey(c);
      const a = byKey.get(k);
      if (a === undefined) byKey.set(k, { ...c });
      else a.count += c.count;
    }
  }
  return [...byKey.values()];
}

/**
 * The workers' events under one sequence: each worker's are taken once (after the last of its
 * sequence seen) and numbered here, so `GET /stats?since=SEQ` means the same for every worker.
 */
export class EventFeed {
  private readonly events: StatsEvent[] = [];
  private readonly seen: number[] = [];
  seq = 0;

  /** The worker's own sequence up to which its events were taken (what to ask it `since`). */
  after(worker: number): number {
    return this.seen[worker] ?? 0;
  }

  /** Takes a worker's events newer than those taken before; `upTo`: its eventSeq. */
  take(worker: number, events: readonly StatsEvent[], upTo: number): void {
    const after = this.after(worker);
    for (const e of events) if (e.seq > after) this.events.push({ ...e, seq: ++this.seq });
    if (this.events.length > STATS_MAX_EVENTS) this.events.splice(0, this.events.length - STATS_MAX_EVENTS);
    this.seen[worker] = Math.max(after, upTo);
  }

  since(seq: number): StatsEvent[] {
    return this.events.filter((e) => e.seq > seq);
  }
}

// ---- the worker threads ----

export interface ProxyWorkersOptions {
  /** Worker threads to start (2 to WORKERS_BOUNDS.max; 1 is a plain Proxy on the main thread). */
  readonly count: number;
  /** What each worker's Proxy is built from; `index` (and, with mTLS, the ticket keys: the main thread's identities') is set per worker. */
  readonly init: Omit<WorkerInit, 'index' | 'ticketKeys'>;
  readonly clock: Clock;
  readonly logger?: Logger;
  /** A worker held a request for a service scaled to zero. */
  readonly onColdStart?: (service: string) => void;
  /**
   * mTLS on: the mesh CA. The main thread holds identities of its own (a certificate of each
   * workload's service, renewed, with a trust poll), which answer the workers' certificate
   * requests (workers/ca.ts) and whose session-ticket keys every worker shares.
   */
  readonly ca?: { readonly source: CertificateSource; readonly trustDomain: string } | null;
  /** A worker exited while the proxy was not stopping (its code). */
  readonly onExit?: (worker: number, code: number) => void;
  /** How long a worker has to answer the admin server's question. Default 5000 ms. */
  readonly askTimeoutMs?: number;
  /** The worker script (tests); default workers/worker.js beside this file. */
  readonly entry?: URL;
}

/** One worker thread and the questions waiting for its answers. */
class WorkerThread {
  private readonly pending = new Pending<WorkerAnswer>();
  readonly exited: Promise<number>;

  constructor(
    readonly index: number,
    readonly worker: Worker,
    private readonly clock: Clock,
    private readonly timeoutMs: number,
  ) {
    this.exited = new Promise((resolve) => worker.once('exit', resolve));
    void this.exited.then(() => this.pending.failAll(`proxy worker ${index} exited`));
  }

  answered(m: Extract<WorkerMessage, { type: 'reply' }>): void {
    this.pending.settle(m.id, m.ok ? m : { ...m, error: `proxy worker ${this.index}: ${m.error}` });
  }

  ask<T extends WorkerAnswer>(q: WorkerQuestion extends infer Q ? (Q extends WorkerQuestion ? Omit<Q, 'id' | 'type'> : never) : never, timeoutMs = this.timeoutMs): Promise<T> {
    const { id, answer } = this.pending.add();
    const timer = this.clock.setTimeout(() => this.pending.settle(id, { ok: false, error: `proxy worker ${this.index} did not answer "${q.what}" within ${timeoutMs} ms` }), timeoutMs);
    this.post({ ...q, type: 'ask', id } as MainMessage);
    return answer.finally(() => timer.cancel()) as Promise<T>;
  }

  post(m: MainMessage): void {
    this.worker.postMessage(m);
  }
}

/** The specs with the addresses worker 0 bound (ports 0 resolved), for the other workers. */
function boundSpecs(specs: readonly WorkloadSpec[], infos: readonly WorkloadInfo[]): WorkloadSpec[] {
  return specs.map((s) => {
    const info = infos.find((i) => i.name === s.name);
    if (info === undefined) throw new SkeinError('SKEIN_E_INTERNAL', `proxy worker 0 did not report workload "${s.name}"`);
    return {
      ...s,
      outbound: info.outbound === null ? null : parseHostPort(info.outbound, `${s.name} outbound`),
      inbound: info.inbound === null ? null : parseHostPort(info.inbound, `${s.name} inbound`),
    };
  });
}

/** How long a worker has to add a workload (with mTLS: a certificate from the CA through the main thread first). */
const ADD_TIMEOUT_MS = 30_000;

/** The proxy's worker threads, seen by the admin server and by skein up's runtime as one proxy. */
export class ProxyWorkers implements AdminView, MeshProxy {
  readonly id: string;
  readonly metrics: { readonly id: string };
  /** The ticket keys the workers were last sent (the main thread's identities'). */
  private sentKeys: Buffer | null = null;
  /** mTLS on: the main thread's identities (they prove the workers' certificates); null: off. */
  private ids: Identities | null = null;
  private readonly startedAt: number;
  private readonly feed = new EventFeed();
  private readonly taps = new Map<number, (r: TapRecord) => void>();
  private nextTap = 0;
  private statsChain: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private readonly threads: WorkerThread[] = [];
  private infos: readonly WorkloadInfo[] = [];

  private constructor(private readonly o: ProxyWorkersOptions) {
    this.id = o.init.id;
    this.metrics = { id: this.id };
    this.startedAt = o.clock.now();
  }

  /**
   * mTLS on: the main thread's identities, with a certificate of each of `services` (the
   * certificate modules load only here: a plaintext proxy does without them). Its own trust poll
   * rotating the ticket keys reaches every worker at once.
   */
  private async identities(services: readonly string[]): Promise<void> {
    const ca = this.o.ca;
    if (ca == null) return;
    const { Identities } = await import('../identity/mtls/identities.js');
    const ids = new Identities({
      source: ca.source,
      trustDomain: ca.trustDomain,
      clock: this.o.clock,
      ticketKeys: randomBytes(48),
      onEvent: (e) => {
        this.o.logger?.[e.type === 'renewal-failed' || e.type === 'trust-poll-failed' ? 'warn' : 'info']({ event: e }, "main thread certificate (proves the workers')");
        if (e.type === 'trust') this.shareTicketKeys();
      },
    });
    this.ids = ids;
    this.sentKeys = ids.ticketKeys;
    await ids.obtain(services);
  }

  /** Starts worker 0, then the others on the ports it bound; rejects (every worker stopped) if one cannot start. */
  static async start(o: ProxyWorkersOptions): Promise<ProxyWorkers> {
    if (!Number.isInteger(o.count) || o.count < 2 || o.count > WORKERS_BOUNDS.max) {
      throw new SkeinError('SKEIN_E_USAGE', `--workers: worker threads are 2 to ${WORKERS_BOUNDS.max}, got ${o.count}`, { field: '--workers' });
    }
    const pool = new ProxyWorkers(o);
    try {
      await pool.identities(o.init.workloads.map((w) => w.service ?? w.name));
      pool.infos = await pool.spawn(0, o.init.workloads);
      const specs = boundSpecs(o.init.workloads, pool.infos);
      const rest = await Promise.allSettled(Array.from({ length: o.count - 1 }, (_, i) => pool.spawn(i + 1, specs)));
      const failed = rest.find((r) => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    } catch (e) {
      await pool.stop(0);
      throw e;
    }
    pool.ids?.startTrustPolling();
    return pool;
  }

  /** Starts worker `index` and resolves with its workloads once it listens (rejects with its error). */
  private spawn(index: number, workloads: readonly WorkloadSpec[]): Promise<readonly WorkloadInfo[]> {
    const keys = this.ids?.ticketKeys ?? null;
    const init: WorkerInit = { ...this.o.init, index, workloads, ticketKeys: keys === null ? null : new Uint8Array(keys) };
    const worker = new Worker(this.o.entry ?? new URL('./workers/worker.js', import.meta.url), { workerData: init, stdout: false, stderr: false });
    const t = new WorkerThread(index, worker, this.o.clock, this.o.askTimeoutMs ?? 5000);
    this.threads.push(t);
    return new Promise((resolve, reject) => {
      let started = false;
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'reply') t.answered(m);
        else if (m.type === 'tap-record') this.taps.get(m.tap)?.(m.record);
        else if (m.type === 'cold-start') this.o.onColdStart?.(m.service);
        else if (m.type === 'ca') {
          const ca = this.o.ca;
          const answer = ca == null || this.ids === null ? Promise.reject(new Error('mTLS is off in the main thread')) : answerCa(ca.source, this.ids, m.question);
          // Keys first: a worker learns of a root's removal only from an answer of this thread,
          // which applied it (and rotated the keys) before: no worker is left on the old keys.
          answer.then(
            (value) => {
              this.shareTicketKeys();
              t.post({ type: 'ca-reply', id: m.id, ok: true, value });
            },
            (e: unknown) => {
              this.shareTicketKeys();
              t.post({ type: 'ca-reply', id: m.id, ...failedReply(e) });
            },
          );
        }
        else if (m.type === 'ready') {
          started = true;
          resolve(m.workloads);
        } else if (m.type === 'failed') reject(replyError(m));
      });
      worker.on('error', (e) => {
        this.o.logger?.error({ worker: index, err: e }, 'proxy worker failed');
        if (!started) reject(e);
      });
      void t.exited.then((code) => {
        if (!started) reject(new SkeinError('SKEIN_E_INTERNAL', `proxy worker ${index} exited with ${code} before it listened`));
        else if (!this.stopping) this.o.onExit?.(index, code);
      });
    });
  }

  /**
   * Sends every worker the main thread's session-ticket keys if they changed since they were last
   * sent (a root left the trust bundle: Identities rotated them). Called before every answer to
   * a worker's CA question, and when the main thread's own trust poll rotates them.
   */
  private shareTicketKeys(): void {
    const keys = this.ids?.ticketKeys ?? null;
    if (keys === null || (this.sentKeys !== null && keys.equals(this.sentKeys))) return;
    this.sentKeys = keys;
    for (const t of this.threads) t.post({ type: 'ticket-keys', keys: new Uint8Array(keys) });
  }

  // ---- skein up's runtime (MeshProxy) ----

  /**
   * Adds a workload to every worker: worker 0 first (a port 0 is resolved), then the others on the
   * addresses it bound. A failure in any worker removes it from the others and rejects with the
   * first error. With mTLS, the main thread gets its certificate of the service first (it proves
   * the workers').
   */
  async addWorkload(spec: WorkloadSpec): Promise<WorkloadInfo> {
    if (this.stopping) throw new SkeinError('SKEIN_E_PROXY_DRAINING', 'the proxy is stopping');
    const [first, ...others] = this.threads;
    if (first === undefined) throw new SkeinError('SKEIN_E_INTERNAL', 'the proxy has no workers');
    await this.ids?.obtain([spec.service ?? spec.name]);
    const info = await first.ask<WorkloadInfo>({ what: 'add', spec }, ADD_TIMEOUT_MS);
    const bound = boundSpecs([spec], [info])[0] as WorkloadSpec;
    const rest = await Promise.allSettled(others.map((t) => t.ask<WorkloadInfo>({ what: 'add', spec: bound }, ADD_TIMEOUT_MS)));
    const failed = rest.find((r) => r.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(this.threads.map((t) => t.ask({ what: 'remove', name: spec.name, graceMs: 0 }).catch(() => undefined)));
      throw failed.reason;
    }
    this.infos = [...this.infos.filter((i) => i.name !== spec.name), info];
    return info;
  }

  /** Removes a workload from every worker (each drains its connections for up to `graceMs`). */
  async removeWorkload(name: string, graceMs = 5000): Promise<void> {
    this.infos = this.infos.filter((i) => i.name !== name);
    await this.askAll({ what: 'remove', name, graceMs }, graceMs + 5000);
  }

  /** The workers' requests in flight to `service`, summed (MeshProxy.inFlight); null when no worker has a client for it. */
  async inFlight(service: string): Promise<number | null> {
    const all = await this.askAll<number | null>({ what: 'in-flight', service });
    return all.every((n) => n === null) ? null : all.reduce<number>((a, n) => a + (n ?? 0), 0);
  }

  /** Resolves once no worker routes `service` to `key` (true), or after `timeoutMs` (false). */
  async whenEndpointGone(service: string, key: string, timeoutMs: number): Promise<boolean> {
    return (await this.askAll<boolean>({ what: 'gone', service, key, timeoutMs }, timeoutMs + 5000)).every((g) => g);
  }

  /** The workloads as worker 0 bound them (every worker listens on the same addresses); with mTLS, each one's certificate report. */
  workloadInfo(): WorkloadInfo[] {
    const ids = this.ids;
    return this.infos.map((w) => (ids === null ? w : { ...w, tls: ids.report(w.service) }));
  }

  /** The control plane's API with the main thread's certificate (announcements, wakes); null while it holds none (or mTLS is off). */
  controlCall(): ControlCall | null {
    return this.ids?.controlCall() ?? null;
  }

  get workers(): number {
    return this.threads.length;
  }

  private askAll<T extends WorkerAnswer>(q: Parameters<WorkerThread['ask']>[0], timeoutMs?: number): Promise<T[]> {
    return Promise.all(this.threads.map((t) => t.ask<T>(q, timeoutMs)));
  }

  async readiness(): Promise<Readiness> {
    const all = await this.askAll<Readiness>({ what: 'readiness' });
    const source = all.some((r) => r.source === 'none') ? 'none' : all.some((r) => r.source === 'stale') ? 'stale' : 'live';
    return { ready: all.every((r) => r.ready), source, stateSavedAt: all.find((r) => r.stateSavedAt !== null)?.stateSavedAt ?? null };
  }

  async exposition(accept: string | undefined): Promise<{ contentType: string; text: string }> {
    // Each family by its aggregator: process_* (telemetry/process-metrics.ts) from the first worker.
    const all = await this.askAll<Family[]>({ what: 'metrics' });
    return exposition(aggregate(all), accept);
  }

  /** One at a time: each takes the workers' new events once. */
  stats(since: number): Promise<StatsSnapshot> {
    const run = () => this.collectStats(since);
    const next = this.statsChain.then(run, run);
    this.statsChain = next.catch(() => undefined);
    return next;
  }

  private async collectStats(since: number): Promise<StatsSnapshot> {
    const snaps = await Promise.all(this.threads.map((t) => t.ask<StatsSnapshot>({ what: 'stats', since: this.feed.after(t.index) })));
    snaps.forEach((s, i) => this.feed.take(i, s.events, s.eventSeq));
    return {
      proxy: { id: this.id, startedAt: this.startedAt },
      at: this.o.clock.now(),
      bounds: snaps[0]?.bounds ?? [],
      series: sumSeries(snaps),
      authz: sumAuthz(snaps),
      events: this.feed.since(since),
      eventSeq: this.feed.seq,
    };
  }

  async debugEndpoints(): Promise<object> {
    const [view, facts] = await Promise.all([this.threads[0]?.ask<object>({ what: 'debug' }) ?? {}, this.askAll<WorkerFacts>({ what: 'facts' })]);
    return {
      ...view,
      workers: facts.map((f, i) => ({
        worker: i,
        connectionsAccepted: f.connections.reduce((n, c) => n + c.accepted, 0),
        connectionsOpen: f.connections.reduce((n, c) => n + c.open, 0),
        requests: f.requests,
        listeners: f.connections,
      })),
    };
  }

  async picks(service: string, key: string): Promise<boolean> {
    return (await this.askAll<boolean>({ what: 'picks', service, key })).some((p) => p);
  }

  tap(filter: TapFilter, send: (r: TapRecord) => void): () => void {
    const id = ++this.nextTap;
    this.taps.set(id, send);
    for (const t of this.threads) t.post({ type: 'tap', tap: id, filter });
    return () => {
      if (!this.taps.delete(id)) return;
      for (const t of this.threads) t.post({ type: 'untap', tap: id });
    };
  }

  /** Every worker drains (up to `graceMs`) and ends. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.threads.map(async (t) => {
        await t.ask({ what: 'stop', graceMs }, graceMs + 5000).catch((e: unknown) => this.o.logger?.warn({ worker: t.index, err: (e as Error).message }, 'proxy worker did not stop cleanly'));
        await t.worker.terminate();
      }),
    );
    this.ids?.stop();
  }
}
