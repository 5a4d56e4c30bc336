/**
 * The scraper: every `intervalMs` it asks every known proxy for `GET /stats?since=SEQ` (src/api/stats.ts),
 * all at once, each with its own timeout, and hands each answer to the SignalStore as soon as
 * it arrives (a slow or dead proxy delays nobody else). The proxies' traffic events go into the
 * mesh event feed. A round's listeners (`onScrape`) hear of it when every proxy has answered or
 * timed out. Rounds never overlap: a tick that finds the previous round still running is skipped.
 */
import { systemClock, type Clock, type TimerHandle } from '../../core/clock.js';
import { RETENTION_MS, DEFAULT_INTERVAL_MS, type SignalStore, type StatsEvent, type StatsSeries, type StatsSnapshot } from './windows.js';
import { proxyEvent, type MeshEvents } from './events.js';
import { AUTHZ_OUTCOMES, type AuthzOutcome, type StatsAuthz } from '../../api/stats.js';

/** A proxy to scrape: its id and admin host:port (ProxyDirectory's entries fit). */
export interface ScrapeTarget {
  readonly id: string;
  readonly admin: string;
  readonly workloads?: ReadonlyArray<{ readonly service: string }>;
}

export interface ScrapeLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface ScraperOptions {
  store: SignalStore;
  events: MeshEvents;
  proxies: () => readonly ScrapeTarget[];
  clock?: Clock;
  /** Default 2 s. */
  intervalMs?: number;
  /** Per proxy and round. Default 3/4 of the interval, at most 1.5 s. */
  timeoutMs?: number;
  /** Failed scrapes in a row before a `proxy` event says the proxy stopped answering. Default 3. */
  unreachableAfter?: number;
  logger?: ScrapeLogger;
}

export interface ScrapeResult {
  id: string;
  admin: string;
  ok: boolean;
  /** Why it failed (timeout, HTTP status, connection error, malformed stats). */
  error?: string;
  /** Requests the snapshot added to the signals. */
  requests?: number;
}

export interface ScrapeRound {
  /** The round's start (its slot in the store). */
  at: number;
  durationMs: number;
  ok: number;
  failed: number;
  results: ScrapeResult[];
}

export interface ScrapeCounters {
  ok: number;
  failed: number;
  rounds: number;
  /** Ticks skipped because the previous round was still running. */
  skippedRounds: number;
}

export interface TargetStatus {
  id: string;
  admin: string;
  lastOk: number | null;
  lastError: string | null;
  consecutiveFailures: number;
}

interface TargetState {
  id: string;
  admin: string;
  since: number;
  startedAt: number | null;
  failures: number;
  unreachable: boolean;
  lastOk: number | null;
  lastError: string | null;
  lastListed: number;
}

/** The most a stats answer may be; a bigger one fails the scrape. */
export const MAX_STATS_BYTES = 32 * 1024 * 1024;

class StoppedError extends Error {}

export class Scraper {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  private readonly store: SignalStore;
  private readonly events: MeshEvents;
  private readonly proxies: () => readonly ScrapeTarget[];
  private readonly clock: Clock;
  private readonly logger: ScrapeLogger | null;
  private readonly unreachableAfter: number;
  private readonly targets = new Map<string, TargetState>();
  private readonly listeners = new Set<(r: ScrapeRound) => void>();
  private readonly inflight = new Set<AbortController>();
  private timer: TimerHandle | null = null;
  private running: Promise<ScrapeRound> | null = null;
  private epoch: number | null = null;
  private readonly count: ScrapeCounters = { ok: 0, failed: 0, rounds: 0, skippedRounds: 0 };

  constructor(opts: ScraperOptions) {
    this.store = opts.store;
    this.events = opts.events;
    this.proxies = opts.proxies;
    this.clock = opts.clock ?? systemClock;
    this.intervalMs = Math.max(1, opts.intervalMs ?? DEFAULT_INTERVAL_MS);
    this.timeoutMs = Math.max(1, opts.timeoutMs ?? Math.min(1500, Math.round(this.intervalMs * 0.75)));
    this.unreachableAfter = Math.max(1, opts.unreachableAfter ?? 3);
    this.logger = opts.logger ?? null;
  }

  /** Scrapes counted so far (for `skein_signals_scrapes_total{result="ok"|"failed"}`). */
  get counters(): Readonly<ScrapeCounters> {
    return { ...this.count };
  }

  get started(): boolean {
    return this.timer !== null;
  }

  /** Each known target's last scrape. */
  status(): TargetStatus[] {
    return [...this.targets.values()].map((t) => ({ id: t.id, admin: t.admin, lastOk: t.lastOk, lastError: t.lastError, consecutiveFailures: t.failures }));
  }

  /** Calls `fn` after every round; returns the unsubscribe function. */
  onScrape(fn: (r: ScrapeRound) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  /** Scrapes now and then every interval, on the grid of the first round (timers do not drift). */
  start(): void {
    if (this.timer !== null) return;
    const next = () => {
      const now = this.clock.now();
      const due = this.gridTime(now) + (this.gridTime(now) <= now ? this.intervalMs : 0);
      this.timer = this.clock.setTimeout(() => {
        next();
        this.tick();
      }, Math.max(1, due - now));
    };
    this.tick();
    next();
  }

  /** Stops the timer and cancels the fetches in flight (they are not counted as failed). */
  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    for (const ac of this.inflight) ac.abort(new StoppedError('the scraper stopped'));
    this.inflight.clear();
  }

  /** One round now (after the one running, if any); resolves when every proxy answered or timed out. */
  async scrapeNow(): Promise<ScrapeRound> {
    while (this.running !== null) await this.running.catch(() => undefined);
    return this.round();
  }

  private tick(): void {
    if (this.running !== null) {
      this.count.skippedRounds++;
      return;
    }
    void this.round().catch((e: unknown) => this.logger?.warn({ err: e }, 'signals scrape round failed'));
  }

  private round(): Promise<ScrapeRound> {
    const p = this.runRound().finally(() => {
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
  }

  /**
   * A round's time on a fixed grid (the first round's time plus whole intervals): timers run a
   * little late each time, and a round's slot must not drift into the next one's.
   */
  private gridTime(now: number): number {
    if (this.epoch === null) this.epoch = now;
    return this.epoch + Math.round((now - this.epoch) / this.intervalMs) * this.intervalMs;
  }

  private async runRound(): Promise<ScrapeRound> {
    const started = this.clock.now();
    const at = this.gridTime(started);
    const seen = new Set<string>();
    const list: ScrapeTarget[] = [];
    for (const t of this.proxies()) {
      if (seen.has(t.id)) continue;
      seen.add(t.id);
      list.push(t);
    }
    const results = await Promise.all(list.map((t) => this.scrapeOne(t, at)));
    // Windows end at a complete round, not on a slot some proxies have not filled yet.
    this.store.roundDone(at);
    // Forget what we knew of proxies not listed for 15 minutes.
    for (const [id, st] of this.targets) if (!seen.has(id) && at - st.lastListed > RETENTION_MS) this.targets.delete(id);
    const counted = results.filter((r) => r.error !== 'stopped');
    const round: ScrapeRound = {
      at,
      durationMs: this.clock.now() - started,
      ok: counted.filter((r) => r.ok).length,
      failed: counted.filter((r) => !r.ok).length,
      results,
    };
    this.count.rounds++;
    for (const l of [...this.listeners]) {
      try {
        l(round);
      } catch (e) {
        this.logger?.warn({ err: e }, 'a signals scrape listener failed');
      }
    }
    return round;
  }

  private async scrapeOne(t: ScrapeTarget, at: number): Promise<ScrapeResult> {
    let st = this.targets.get(t.id);
    if (st === undefined || st.admin !== t.admin) {
      // A proxy at a new admin address is asked for everything again (its events included).
      st = { id: t.id, admin: t.admin, since: 0, startedAt: st?.startedAt ?? null, failures: 0, unreachable: false, lastOk: null, lastError: null, lastListed: at };
      this.targets.set(t.id, st);
    }
    st.lastListed = at;
    const ac = new AbortController();
    this.inflight.add(ac);
    const timer = this.clock.setTimeout(() => ac.abort(new Error(`timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
    const service = t.workloads?.[0]?.service ?? null;
    try {
      const firstContact = st.startedAt === null;
      let since = st.since;
      let snap = await fetchStats(t.admin, since, ac.signal);
      if (since > 0 && (snap.proxy.startedAt !== st.startedAt || snap.eventSeq < since)) {
        // It restarted: its events up to our old `since` were filtered out. Ask again from the start.
        since = 0;
        snap = await fetchStats(t.admin, since, ac.signal);
      }
      const result = this.store.ingest(snap, at);
      // On first contact only the events of the last 15 minutes: older ones are history, not news.
      const oldest = snap.at - RETENTION_MS;
      const events = snap.events.filter((e) => e.seq > since && (!firstContact || e.time >= oldest));
      st.since = snap.eventSeq;
      st.startedAt = snap.proxy.startedAt;
      st.lastOk = at;
      st.lastError = null;
      st.failures = 0;
      this.count.ok++;
      if (st.unreachable) {
        st.unreachable = false;
        this.proxyEvent(t, service, 'reachable', `proxy ${t.id} answers stats scrapes again`);
      }
      if (result.restarted) this.proxyEvent(t, service, 'restart', `proxy ${t.id} restarted (its counters started again)`);
      for (const e of events) {
        const me = proxyEvent(t.id, e);
        if (me !== null) this.events.add(me);
      }
      return { id: t.id, admin: t.admin, ok: true, requests: result.requests };
    } catch (e) {
      const reason = ac.signal.aborted ? ac.signal.reason : e;
      if (reason instanceof StoppedError) return { id: t.id, admin: t.admin, ok: false, error: 'stopped' };
      const error = describe(reason);
      st.lastError = error;
      st.failures++;
      this.count.failed++;
      if (!st.unreachable && st.failures >= this.unreachableAfter) {
        st.unreachable = true;
        this.logger?.warn({ proxy: t.id, admin: t.admin, error }, 'proxy does not answer stats scrapes');
        this.proxyEvent(t, service, 'unreachable', `proxy ${t.id} does not answer stats scrapes: ${error}`);
      }
      return { id: t.id, admin: t.admin, ok: false, error };
    } finally {
      timer.cancel();
      this.inflight.delete(ac);
    }
  }

  private proxyEvent(t: ScrapeTarget, service: string | null, change: string, message: string): void {
    const services = [...new Set((t.workloads ?? []).map((w) => w.service))];
    this.events.add({ time: this.clock.now(), type: 'proxy', service, id: null, proxy: t.id, admin: t.admin, change, services, message });
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const code = (cause as { code?: string } | undefined)?.code;
    if (code !== undefined) return `${e.message}: ${code}`;
    return e.message;
  }
  return String(e);
}

async function fetchStats(admin: string, since: number, signal: AbortSignal): Promise<StatsSnapshot> {
  const res = await fetch(`http://${admin}/stats?since=${since}`, { signal, headers: { accept: 'application/json' } });
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`HTTP ${res.status} from /stats`);
  }
  const text = await readCapped(res, MAX_STATS_BYTES);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new Error(`stats are not JSON: ${(e as Error).message}`, { cause: e });
  }
  return parseStats(body);
}

async function readCapped(res: Response, max: number): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let size = 0;
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`stats are larger than ${max} bytes`);
    }
    text += dec.decode(value, { stream: true });
  }
  return text + dec.decode();
}

// ---------------------------------------------------------------------------------------------
// Checking a proxy's answer
// ---------------------------------------------------------------------------------------------

function bad(path: string, what: string): never {
  throw new Error(`malformed stats: ${path} ${what}`);
}

function obj(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(path, 'must be an object');
  return v as Record<string, unknown>;
}

function num(v: unknown, path: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) bad(path, `must be a number of at least ${min}`);
  return v;
}

function str(v: unknown, path: string): string {
  if (typeof v !== 'string' || v.length > 1024 || v.includes('\u0000')) bad(path, 'must be a string (at most 1024 characters)');
  return v;
}

function arr(v: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(v) || v.length > max) bad(path, `must be an array of at most ${max}`);
  return v;
}

/** Checks a `GET /stats` body (src/api/stats.ts); throws naming the first bad field. */
export function parseStats(body: unknown): StatsSnapshot {
  const b = obj(body, 'body');
  const proxy = obj(b['proxy'], 'proxy');
  const id = str(proxy['id'], 'proxy.id');
  if (id === '') bad('proxy.id', 'must not be empty');
  const startedAt = num(proxy['startedAt'], 'proxy.startedAt');
  const at = num(b['at'], 'at');
  const bounds = arr(b['bounds'], 'bounds', 64).map((x, i) => num(x, `bounds[${i}]`, Number.NEGATIVE_INFINITY));
  if (bounds.length === 0) bad('bounds', 'must not be empty');
  for (let i = 1; i < bounds.length; i++) if (!(bounds[i]! > bounds[i - 1]!)) bad(`bounds[${i}]`, 'must be greater than the bound before it');
  const series = arr(b['series'], 'series', 200_000).map((raw, i): StatsSeries => {
    const p = `series[${i}]`;
    const s = obj(raw, p);
    const direction = s['direction'];
    if (direction !== 'inbound' && direction !== 'outbound') bad(`${p}.direction`, 'must be inbound or outbound');
    const latency = obj(s['latency'], `${p}.latency`);
    const counts = arr(latency['counts'], `${p}.latency.counts`, 65).map((c, j) => num(c, `${p}.latency.counts[${j}]`));
    if (counts.length !== bounds.length + 1) bad(`${p}.latency.counts`, `must have ${bounds.length + 1} entries (one per bound and +Inf)`);
    const requests = num(s['requests'], `${p}.requests`);
    const failures = num(s['failures'], `${p}.failures`);
    const mtls = num(s['mtls'] ?? 0, `${p}.mtls`);
    if (mtls > requests) bad(`${p}.mtls`, `must be at most requests (${requests})`);
    return {
      direction,
      workload: str(s['workload'], `${p}.workload`),
      source: str(s['source'], `${p}.source`),
      service: str(s['service'], `${p}.service`),
      route: str(s['route'], `${p}.route`),
      instance: str(s['instance'], `${p}.instance`),
      ...(s['version'] === undefined ? {} : { version: str(s['version'], `${p}.version`) }),
      requests,
      failures,
      latency: { counts, sum: num(latency['sum'] ?? 0, `${p}.latency.sum`) },
      requestBytes: num(s['requestBytes'] ?? 0, `${p}.requestBytes`),
      responseBytes: num(s['responseBytes'] ?? 0, `${p}.responseBytes`),
      mtls,
    };
  });
  const authz = arr(b['authz'] ?? [], 'authz', 10_000).map((raw, i): StatsAuthz => {
    const p = `authz[${i}]`;
    const a = obj(raw, p);
    const outcome = a['outcome'];
    if (!(AUTHZ_OUTCOMES as readonly unknown[]).includes(outcome)) bad(`${p}.outcome`, `must be one of ${AUTHZ_OUTCOMES.join(', ')}`);
    return { service: str(a['service'], `${p}.service`), outcome: outcome as AuthzOutcome, policy: str(a['policy'], `${p}.policy`), count: num(a['count'], `${p}.count`) };
  });
  const events = arr(b['events'] ?? [], 'events', 100_000).map((raw, i): StatsEvent => {
    const p = `events[${i}]`;
    const e = obj(raw, p);
    return {
      seq: num(e['seq'], `${p}.seq`),
      time: num(e['time'], `${p}.time`),
      type: str(e['type'], `${p}.type`),
      service: str(e['service'], `${p}.service`),
      instance: str(e['instance'] ?? '', `${p}.instance`),
      detail: str(e['detail'] ?? '', `${p}.detail`),
    };
  });
  const eventSeq = num(b['eventSeq'] ?? 0, 'eventSeq');
  return { proxy: { id, startedAt }, at, bounds, series, authz, events, eventSeq };
}
