/**
 * The golden signals' memory: the control plane's scraper hands every proxy's `GET /stats`
 * snapshot (cumulative counters since the proxy started, src/api/stats.ts) to a SignalStore, which turns
 * it into the traffic of one scrape interval (the delta from the proxy's previous snapshot) and
 * adds that to a time slot. Two rings of slots: one slot per scrape interval for the last 5
 * minutes (the windows 10s, 1m and 5m, and their charts: a point per interval), and one slot per
 * 30 s for 15 minutes (the 15m window and its chart), so memory and the cost of a query stay
 * proportionate: a key costs 150 + 30 slots at most, not 450.
 *
 * Aggregates are kept by
 *   - service  (per direction: a service's own numbers come from its inbound series, falling back
 *              to the outbound series naming it when it has no inbound traffic in the window),
 *   - instance (per direction and service),
 *   - edge     (source -> service: from outbound series; inbound series with a known source are a
 *              fallback for pairs no outbound series reports, e.g. a proxyless caller; inbound
 *              series from source "unknown" never make edges),
 *   - route    (service, route, direction),
 *   - authz    (service, outcome, policy: the authorization decisions of the proxies' inbound
 *              listeners, from the snapshot's `authz` counts),
 *   - version  (service, version, direction: outbound series carry the version of the endpoint
 *              that answered, inbound series the version of the app behind the listener; what a
 *              canary's analysis reads, `versions()`).
 * Each aggregate also counts its requests whose hop between proxies was mTLS (`mtls`); an edge
 * reports it as the share of its requests that were mTLS.
 *
 * Restarts: a proxy with a new `proxy.startedAt`, or any counter lower than in its previous
 * snapshot, has restarted, and its whole snapshot counts as new traffic, spread over the slots
 * since it started (as the traffic after missed scrapes is spread over the slots it spanned). The first snapshot of a
 * proxy the store has not seen counts fully only when the proxy started less than one scrape
 * interval before it (`at - startedAt`, both read on the proxy's clock); otherwise it only sets
 * the baseline, since we cannot tell when its counters grew.
 *
 * Bounds: series keys (one per service, instance, edge and route and direction) with no traffic
 * for 15 minutes are dropped; at most `maxKeys` of them exist at once (new ones past the cap are
 * refused and counted); a proxy not heard from for 15 minutes is forgotten.
 *
 * Why one file of ~820 lines: the slot rings, the deltas from cumulative snapshots and the
 * window queries share one memory layout, and each part is only right against the others'.
 */
import { systemClock, type Clock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import type { Direction, StatsSeries, StatsSnapshot } from '../../api/stats.js';
import { AUTHZ_OUTCOMES, statsAuthzKey, statsSeriesKey, type AuthzOutcome, type StatsAuthz } from '../../api/stats.js';
import { noAuthzDecisions, WINDOWS, type Latency, type SeriesPoint, type SignalWindow, type WireAuthz } from '../../api/signals.js';
import { CONTROL_DEFAULTS } from '../../api/control.js';

// ---------------------------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------------------------

export { WINDOWS, type SignalWindow } from '../../api/signals.js';
export const WINDOW_MS: Readonly<Record<SignalWindow, number>> = Object.freeze({ '10s': 10_000, '1m': 60_000, '5m': 300_000, '15m': 900_000 });
export const DEFAULT_WINDOW: SignalWindow = '1m';
/** How long slots, idle keys and silent proxies are kept: the longest window. */
export const RETENTION_MS = 15 * 60_000;
/** Kept at the scrape interval: the windows up to 5m. */
export const FINE_MS = 5 * 60_000;
/** The slot of the 15m window and its chart. */
export const COARSE_MS = 30_000;
export const DEFAULT_INTERVAL_MS = CONTROL_DEFAULTS.scrapeIntervalMs;
export const DEFAULT_MAX_KEYS = 10_000;

export function isWindow(v: unknown): v is SignalWindow {
  return typeof v === 'string' && (WINDOWS as readonly string[]).includes(v);
}

/** The `window` query parameter: absent means 1m; anything but 10s, 1m, 5m, 15m is a 400 naming them. */
export function parseWindow(v: string | undefined): SignalWindow {
  if (v === undefined) return DEFAULT_WINDOW;
  if (isWindow(v)) return v;
  throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "window" must be one of ${WINDOWS.join(', ')} (got "${v.slice(0, 40)}")`, { field: 'window' });
}

// ---------------------------------------------------------------------------------------------
// The proxy's snapshot (GET /stats, src/api/stats.ts)
// ---------------------------------------------------------------------------------------------

export type { Direction, StatsEvent, StatsSeries, StatsSnapshot } from '../../api/stats.js';

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

export type { Latency, SeriesPoint, WireAuthz } from '../../api/signals.js';

/** The golden signals of one thing over one window. */
export interface Signals {
  /** Requests per second over the time the window covers. */
  rps: number;
  /** Fraction 0..1 of requests that did not fail; null without requests. */
  successRate: number | null;
  /** Milliseconds, interpolated within buckets like PromQL's histogram_quantile; null without requests. */
  latencyMs: Latency;
  requests: number;
  failures: number;
  requestBytes: number;
  responseBytes: number;
}

export interface ServiceWindow extends Signals {
  service: string;
  /** Whose series the numbers come from (null: no traffic in the window either way). */
  via: Direction | null;
  /** Instances seen in the traffic of `via` (those of inbound series when neither had traffic). */
  instances: Array<Signals & { id: string }>;
  /** Its inbound proxies' authorization decisions over the window (zeros: none counted). */
  authz: WireAuthz;
}

export interface EdgeWindow extends Signals {
  source: string;
  destination: string;
  via: Direction;
  /** Of `requests`, those whose hop between proxies was mTLS (as `via`'s proxies saw it). */
  mtls: number;
}

export interface RouteWindow extends Signals {
  service: string;
  route: string;
  direction: Direction;
}

export interface WindowView {
  window: SignalWindow;
  /** When the view was computed (the store's clock). */
  time: number;
  /** The time the rates are divided by: the window, or less while less data has been kept. */
  coveredMs: number;
  services: ServiceWindow[];
  edges: EdgeWindow[];
  routes: RouteWindow[];
  /** Every service's numbers (as chosen for `services`) summed. */
  mesh: Signals;
}

export interface SeriesView {
  service: string | null;
  window: SignalWindow;
  stepMs: number;
  points: SeriesPoint[];
}

export interface IngestResult {
  /** How the snapshot was taken: first sight of a long-running proxy, a normal delta, or all new (new or restarted proxy). */
  mode: 'baseline' | 'delta' | 'full';
  /** A proxy seen before came back with new counters. */
  restarted: boolean;
  /** Requests added to the slot. */
  requests: number;
}

export interface StoreStats {
  keys: number;
  proxies: number;
  /** Deltas of new keys refused because `maxKeys` keys existed. */
  droppedKeys: number;
  /** Requests left out of their service's signals because its series was refused. */
  droppedRequests: number;
  /** Keys dropped after 15 minutes without traffic. */
  expiredKeys: number;
  restarts: number;
}

// ---------------------------------------------------------------------------------------------
// Histogram math
// ---------------------------------------------------------------------------------------------

/**
 * The q-quantile of a histogram, as PromQL's histogram_quantile: `counts` per bucket (not
 * cumulative), `bounds` the finite upper bounds (counts has one more entry: +Inf). Linear
 * interpolation within the bucket the rank falls in; the lowest bucket starts at 0; a rank in the
 * +Inf bucket returns the highest finite bound. null when there are no observations.
 */
export function histogramQuantile(q: number, bounds: readonly number[], counts: readonly number[]): number | null {
  let total = 0;
  for (const c of counts) total += c;
  if (!(total > 0) || bounds.length === 0) return null;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < bounds.length; i++) {
    const c = counts[i] ?? 0;
    if (cum + c >= rank) {
      const upper = bounds[i]!;
      if (i === 0 && upper <= 0) return upper;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      if (c === 0) return lower;
      return lower + (upper - lower) * ((rank - cum) / c);
    }
    cum += c;
  }
  return bounds[bounds.length - 1]!;
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

interface Agg {
  requests: number;
  failures: number;
  counts: number[];
  latencySum: number;
  requestBytes: number;
  responseBytes: number;
  /** Of `requests`, those whose hop between proxies was mTLS. */
  mtls: number;
}

interface Slot {
  no: number;
  entries: Map<string, Agg>;
}

/** Slots numbered `no` (each `ratio` scrape intervals long), the newest `length` of them kept. */
class Ring {
  private readonly slots: Slot[];
  constructor(
    readonly ratio: number,
    length: number,
  ) {
    this.slots = Array.from({ length }, () => ({ no: Number.NEGATIVE_INFINITY, entries: new Map<string, Agg>() }));
  }

  /** The slot `no` if it holds data of `no`. */
  at(no: number): Slot | undefined {
    const s = this.slots[this.index(no)]!;
    return s.no === no ? s : undefined;
  }

  /** The slot for `no`, cleared if it held older data; null if `no` is too old to keep. */
  slotFor(no: number): Slot | null {
    const slot = this.slots[this.index(no)]!;
    if (slot.no === no) return slot;
    if (slot.no > no) return null;
    slot.no = no;
    slot.entries.clear();
    return slot;
  }

  private index(no: number): number {
    const n = this.slots.length;
    return ((no % n) + n) % n;
  }
}

interface Counters {
  requests: number;
  failures: number;
  counts: readonly number[];
  latencySum: number;
  requestBytes: number;
  responseBytes: number;
  mtls: number;
}

interface ProxyState {
  startedAt: number;
  lastIngest: number;
  series: Map<string, Counters>;
  /** Authorization decisions by `statsAuthzKey`. */
  authz: Map<string, number>;
}

/** `authz` keys: the service, then outcome and policy in `b`, apart by AUTHZ_SEP. */
type Dim = 'svc' | 'inst' | 'edge' | 'route' | 'authz' | 'ver';
const SEP = '\u0000';
const key = (dim: Dim, dir: Direction, a: string, b: string) => `${dim}${SEP}${dir}${SEP}${a}${SEP}${b}`;
function parseKey(k: string): { dim: Dim; dir: Direction; a: string; b: string } {
  const [dim, dir, a, b] = k.split(SEP) as [Dim, Direction, string, string];
  return { dim, dir, a, b };
}
const AUTHZ_SEP = '\u0001';

const QUANTILES = [0.5, 0.95, 0.99] as const;

function emptyAgg(buckets: number): Agg {
  return { requests: 0, failures: 0, counts: new Array<number>(buckets).fill(0), latencySum: 0, requestBytes: 0, responseBytes: 0, mtls: 0 };
}

function addInto(into: Agg, d: Agg): void {
  into.requests += d.requests;
  into.failures += d.failures;
  into.latencySum += d.latencySum;
  into.requestBytes += d.requestBytes;
  into.responseBytes += d.responseBytes;
  into.mtls += d.mtls;
  for (let i = 0; i < d.counts.length; i++) into.counts[i] = (into.counts[i] ?? 0) + (d.counts[i] ?? 0);
}

const round3 = (v: number) => Math.round(v * 1000) / 1000;

function addTo(slot: Slot, k: string, d: Agg, buckets: number): void {
  let a = slot.entries.get(k);
  if (a === undefined) slot.entries.set(k, (a = emptyAgg(buckets)));
  addInto(a, d);
}

/** Whole counts shared over `n` slots, oldest first; the remainders go to the newest ones. */
function share(v: number, n: number): number[] {
  const base = Math.floor(v / n);
  const extra = v - base * n;
  return Array.from({ length: n }, (_, j) => base + (j >= n - extra ? 1 : 0));
}

/** One delta as `n` consecutive slots' worth, for traffic that spanned them. */
function split(d: Agg, n: number): Agg[] {
  const requests = share(d.requests, n);
  const failures = share(d.failures, n);
  const requestBytes = share(d.requestBytes, n);
  const responseBytes = share(d.responseBytes, n);
  const mtls = share(d.mtls, n);
  const counts = d.counts.map((c) => share(c, n));
  return requests.map((r, j) => ({
    requests: r,
    failures: failures[j]!,
    counts: counts.map((c) => c[j]!),
    latencySum: d.latencySum / n,
    requestBytes: requestBytes[j]!,
    responseBytes: responseBytes[j]!,
    mtls: mtls[j]!,
  }));
}

export interface SignalStoreOptions {
  clock?: Clock;
  /** The scrape interval: one slot per interval. Default 2 s. */
  intervalMs?: number;
  /** At most this many series keys at once. Default 10,000. */
  maxKeys?: number;
}

export class SignalStore {
  readonly intervalMs: number;
  private readonly clock: Clock;
  private readonly maxKeys: number;
  /** One slot per scrape interval, for 5 minutes. Slot numbers count intervals from `origin`. */
  private readonly fine: Ring;
  /** One slot per COARSE_MS (whole intervals), for 15 minutes: slot `no` holds intervals `no * ratio ..`. */
  private readonly coarse: Ring;
  /** Slot numbers count intervals from `origin`, set half an interval before the first ingest so
   * scrape rounds land mid-slot and timer jitter does not push two rounds into one slot. */
  private origin: number | null = null;
  private firstSlot = 0;
  private lastSlot = 0;
  /** The slot of the last complete scrape round, once the scraper reports rounds (`roundDone`). */
  private doneSlot: number | null = null;
  /** Live keys and when each last had traffic. */
  private readonly keys = new Map<string, number>();
  /** How many live `svc` keys each service has (the services "seen in the signals"). */
  private readonly serviceRefs = new Map<string, number>();
  private readonly proxies = new Map<string, ProxyState>();
  private bounds: readonly number[] | null = null;
  private readonly bucketMaps = new Map<string, number[] | null>();
  private lastMaintain = Number.NEGATIVE_INFINITY;
  private counters = { droppedKeys: 0, droppedRequests: 0, expiredKeys: 0, restarts: 0 };

  constructor(opts: SignalStoreOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.intervalMs = Math.max(1, Math.round(opts.intervalMs ?? DEFAULT_INTERVAL_MS));
    this.maxKeys = Math.max(1, opts.maxKeys ?? DEFAULT_MAX_KEYS);
    this.fine = new Ring(1, Math.ceil(FINE_MS / this.intervalMs) + 2);
    const ratio = Math.max(1, Math.round(COARSE_MS / this.intervalMs));
    this.coarse = new Ring(ratio, Math.ceil(RETENTION_MS / (ratio * this.intervalMs)) + 2);
  }

  get stats(): StoreStats {
    return { keys: this.keys.size, proxies: this.proxies.size, ...this.counters };
  }

  /** The latency bucket bounds in use (seconds), from the first snapshot; null before it. */
  get latencyBounds(): readonly number[] | null {
    return this.bounds;
  }

  /** Services with live keys (traffic in the last 15 minutes), sorted. */
  seenServices(): string[] {
    this.maintain(this.clock.now());
    return [...this.serviceRefs.keys()].sort();
  }

  hasService(name: string): boolean {
    this.maintain(this.clock.now());
    return this.serviceRefs.has(name);
  }

  /** The scraper's round at `at` is complete: every proxy answered or timed out. */
  roundDone(at: number): void {
    if (this.origin === null) return;
    const no = this.slotNo(at);
    if (this.doneSlot === null || no > this.doneSlot) this.doneSlot = no;
  }

  /** Forgets a proxy's baseline: its next snapshot is treated as the first. */
  forgetProxy(id: string): boolean {
    return this.proxies.delete(id);
  }

  /**
   * Takes one proxy's snapshot: the traffic since its previous one goes into the slot of `at`
   * (default now; the scraper passes the start of its round so a round fills one slot).
   */
  ingest(snap: StatsSnapshot, at: number = this.clock.now()): IngestResult {
    if (this.origin === null) {
      this.origin = at - this.intervalMs / 2;
      this.firstSlot = this.slotNo(at);
      this.lastSlot = this.firstSlot;
    }
    this.maintain(at);
    if (this.bounds === null) this.bounds = [...snap.bounds];
    const map = this.bucketMap(snap.bounds);
    const id = snap.proxy.id;
    const prev = this.proxies.get(id);
    let mode: IngestResult['mode'];
    let restarted = false;
    if (prev === undefined) {
      mode = snap.at - snap.proxy.startedAt < this.intervalMs ? 'full' : 'baseline';
    } else if (prev.startedAt !== snap.proxy.startedAt || wentDown(prev.series, snap.series) || authzWentDown(prev.authz, snap.authz ?? [])) {
      mode = 'full';
      restarted = true;
      this.counters.restarts++;
    } else mode = 'delta';

    const series = new Map<string, Counters>();
    const no = this.slotNo(at);
    if (no > this.lastSlot) this.lastSlot = no;
    // The traffic happened since the previous snapshot (or since the proxy started): after missed
    // scrapes, or a restart some time ago, it is spread over the slots of that time rather than
    // piled into this one (which would show as a spike).
    const since = mode === 'delta' || restarted ? Math.max(prev?.lastIngest ?? at, restarted ? snap.proxy.startedAt : -Infinity) : snap.proxy.startedAt;
    const span = Math.max(1, Math.min(no - Math.max(this.slotNo(since), this.firstSlot - 1), Math.ceil(RETENTION_MS / this.intervalMs)));
    // Per part (oldest first), the fine and coarse slots it goes into (null: older than kept).
    const slots: Array<Array<Slot | null>> = [];
    for (let j = span - 1; j >= 0; j--) slots.push([this.fine.slotFor(no - j), this.coarse.slotFor(Math.floor((no - j) / this.coarse.ratio))]);
    let requests = 0;
    for (const s of snap.series) {
      const k = statsSeriesKey(s);
      const cur: Counters = { requests: s.requests, failures: s.failures, counts: s.latency.counts, latencySum: s.latency.sum, requestBytes: s.requestBytes, responseBytes: s.responseBytes, mtls: s.mtls ?? 0 };
      series.set(k, cur);
      if (mode === 'baseline') continue;
      const before = mode === 'delta' ? prev?.series.get(k) : undefined;
      const d = this.delta(cur, before, map);
      if (d.requests === 0 && d.requestBytes === 0 && d.responseBytes === 0) continue;
      requests += d.requests;
      const parts = span === 1 ? [d] : split(d, span);
      const keys = this.keysOf(s, d, at);
      parts.forEach((part, j) => {
        for (const slot of slots[j]!) if (slot !== null) for (const k of keys) addTo(slot, k, part, d.counts.length);
      });
    }
    // Authorization decisions: counted per service, outcome and policy, spread like the requests.
    const authz = new Map<string, number>();
    for (const a of snap.authz ?? []) {
      const k = statsAuthzKey(a);
      authz.set(k, a.count);
      if (mode === 'baseline') continue;
      const n = a.count - (mode === 'delta' ? (prev?.authz.get(k) ?? 0) : 0);
      if (n <= 0) continue;
      const d = emptyAgg(this.bucketCount());
      d.requests = n;
      const sk = key('authz', 'inbound', a.service, `${a.outcome}${AUTHZ_SEP}${a.policy}`);
      if (!this.touch(sk, at)) {
        this.counters.droppedKeys++;
        continue;
      }
      const parts = span === 1 ? [d] : split(d, span);
      parts.forEach((part, j) => {
        for (const slot of slots[j]!) if (slot !== null) addTo(slot, sk, part, d.counts.length);
      });
    }
    this.proxies.set(id, { startedAt: snap.proxy.startedAt, lastIngest: at, series, authz });
    return { mode, restarted, requests };
  }

  /** The signals of every service, instance, edge and route over one window. */
  window(w: SignalWindow): WindowView {
    const now = this.clock.now();
    this.maintain(now);
    const { slots, coveredMs } = this.range(WINDOW_MS[w], now);
    const sums = new Map<string, Agg>();
    const nb = this.bucketCount();
    for (const s of slots) {
      for (const [k, a] of s.entries) {
        let into = sums.get(k);
        if (into === undefined) sums.set(k, (into = emptyAgg(nb)));
        addInto(into, a);
      }
    }
    const zero = emptyAgg(nb);
    const all = new Set<string>([...this.keys.keys(), ...sums.keys()]);
    const svc = new Map<string, { in: Agg; out: Agg }>();
    const inst = new Map<string, Map<Direction, Map<string, Agg>>>();
    const edges = new Map<string, { source: string; destination: string; out: Agg | null; in: Agg | null }>();
    const routes: RouteWindow[] = [];
    const authz = new Map<string, WireAuthz>();
    const sig = (a: Agg) => this.signals(a, coveredMs);
    for (const k of all) {
      const { dim, dir, a, b } = parseKey(k);
      const agg = sums.get(k) ?? zero;
      if (dim === 'svc') {
        let e = svc.get(a);
        if (e === undefined) svc.set(a, (e = { in: zero, out: zero }));
        if (dir === 'inbound') e.in = agg;
        else e.out = agg;
      } else if (dim === 'inst') {
        let byDir = inst.get(a);
        if (byDir === undefined) inst.set(a, (byDir = new Map()));
        let m = byDir.get(dir);
        if (m === undefined) byDir.set(dir, (m = new Map()));
        m.set(b, agg);
      } else if (dim === 'edge') {
        const ek = `${a}${SEP}${b}`;
        let e = edges.get(ek);
        if (e === undefined) edges.set(ek, (e = { source: a, destination: b, out: null, in: null }));
        if (dir === 'outbound') e.out = agg;
        else e.in = agg;
      } else if (dim === 'authz') {
        let z = authz.get(a);
        if (z === undefined) authz.set(a, (z = noAuthzDecisions()));
        if (agg.requests === 0) continue;
        const at = b.indexOf(AUTHZ_SEP);
        const outcome = b.slice(0, at) as AuthzOutcome;
        z.byPolicy.push({ policy: b.slice(at + 1), outcome, requests: agg.requests });
        z[AUTHZ_FIELD[outcome]] += agg.requests;
      } else if (dim === 'route') {
        routes.push({ service: a, route: b, direction: dir, ...sig(agg) });
      }
    }
    for (const z of authz.values()) z.byPolicy.sort((x, y) => AUTHZ_OUTCOMES.indexOf(x.outcome) - AUTHZ_OUTCOMES.indexOf(y.outcome) || cmp(x.policy, y.policy));
    const mesh = emptyAgg(nb);
    const services: ServiceWindow[] = [];
    for (const [name, e] of svc) {
      const via: Direction | null = e.in.requests > 0 ? 'inbound' : e.out.requests > 0 ? 'outbound' : null;
      const chosen = via === 'outbound' ? e.out : e.in;
      addInto(mesh, chosen);
      const instances = [...(inst.get(name)?.get(via ?? 'inbound') ?? new Map<string, Agg>())]
        .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
        .map(([id, a]) => ({ id, ...sig(a) }));
      services.push({ service: name, via, ...sig(chosen), instances, authz: authz.get(name) ?? noAuthzDecisions() });
    }
    services.sort((x, y) => cmp(x.service, y.service));
    const edgeList: EdgeWindow[] = [];
    for (const e of edges.values()) {
      // The caller's outbound view when there is one; inbound (a known caller without an outbound
      // series for this pair, e.g. a proxyless client) only when that has traffic and outbound has none.
      const useIn = e.out === null || (e.out.requests === 0 && e.in !== null && e.in.requests > 0);
      const a = (useIn ? e.in : e.out) ?? zero;
      edgeList.push({ source: e.source, destination: e.destination, via: useIn ? 'inbound' : 'outbound', ...sig(a), mtls: a.mtls });
    }
    edgeList.sort((x, y) => cmp(x.source, y.source) || cmp(x.destination, y.destination));
    routes.sort((x, y) => cmp(x.service, y.service) || cmp(x.route, y.route) || cmp(x.direction, y.direction));
    return { window: w, time: now, coveredMs, services, edges: edgeList, routes, mesh: sig(mesh) };
  }

  /**
   * A service's signals per version, over the last `lastMs` (whole scrape intervals, at least one;
   * at most the 5 minutes kept per interval): what a canary's analysis compares. A version's
   * numbers come from its instances' inbound listeners when they had traffic (every attempt, as
   * the instances saw it: a failed attempt that a retry turned into a success elsewhere still
   * counts against the version that failed), else from its callers' outbound series (the version
   * of the endpoint that gave each request its answer). Versions without requests are left out;
   * "" is instances without a version.
   */
  versions(service: string, lastMs: number): Array<Signals & { version: string; via: Direction }> {
    const now = this.clock.now();
    this.maintain(now);
    const { slots, coveredMs } = this.range(Math.min(Math.max(lastMs, this.intervalMs), FINE_MS), now);
    const nb = this.bucketCount();
    const sums = { inbound: new Map<string, Agg>(), outbound: new Map<string, Agg>() };
    for (const dir of ['inbound', 'outbound'] as const) {
      const prefix = key('ver', dir, service, '');
      const into = sums[dir];
      for (const s of slots) {
        for (const [k, a] of s.entries) {
          if (!k.startsWith(prefix)) continue;
          const version = k.slice(prefix.length);
          let agg = into.get(version);
          if (agg === undefined) into.set(version, (agg = emptyAgg(nb)));
          addInto(agg, a);
        }
      }
    }
    const out: Array<Signals & { version: string; via: Direction }> = [];
    for (const version of new Set([...sums.inbound.keys(), ...sums.outbound.keys()])) {
      const inb = sums.inbound.get(version);
      const via: Direction = inb !== undefined && inb.requests > 0 ? 'inbound' : 'outbound';
      const a = via === 'inbound' ? inb : sums.outbound.get(version);
      if (a === undefined || a.requests === 0) continue;
      out.push({ version, via, ...this.signals(a, coveredMs) });
    }
    return out.sort((x, y) => cmp(x.version, y.version));
  }

  /**
   * One point per slot of the window (from the first scrape on: a scrape interval up to 5m, 30 s
   * for 15m) for one service, or for the
   * whole mesh (every service summed) when `service` is null. A service's direction (inbound, or
   * outbound as the fallback) is chosen once for the window, as in `window()`.
   */
  series(w: SignalWindow, service: string | null = null): SeriesView {
    const now = this.clock.now();
    this.maintain(now);
    const { ring, slots, nos, intervals } = this.range(WINDOW_MS[w], now);
    // The direction each service is read from, over the whole window.
    const inCount = new Map<string, number>();
    const outCount = new Map<string, number>();
    for (const s of slots) {
      for (const [k, a] of s.entries) {
        if (!k.startsWith(`svc${SEP}`)) continue;
        const { dir, a: name } = parseKey(k);
        if (service !== null && name !== service) continue;
        const m = dir === 'inbound' ? inCount : outCount;
        m.set(name, (m.get(name) ?? 0) + a.requests);
      }
    }
    const wanted = new Set<string>();
    for (const [name, n] of inCount) if (n > 0) wanted.add(key('svc', 'inbound', name, ''));
    for (const [name, n] of outCount) if (n > 0 && !((inCount.get(name) ?? 0) > 0)) wanted.add(key('svc', 'outbound', name, ''));
    const nb = this.bucketCount();
    const stepMs = ring.ratio * this.intervalMs;
    const points: SeriesPoint[] = [];
    const origin = this.origin ?? now;
    for (let i = 0; i < nos.length; i++) {
      const no = nos[i]!;
      const slot = ring.at(no);
      const sum = emptyAgg(nb);
      if (slot !== undefined) for (const k of wanted) {
        const a = slot.entries.get(k);
        if (a !== undefined) addInto(sum, a);
      }
      const l = this.latency(sum);
      points.push({
        time: Math.round(origin + no * stepMs + stepMs / 2),
        // A slot still filling (or the first, after the baseline) is divided by the time it covers.
        rps: round3(sum.requests / ((Math.max(1, intervals[i]!) * this.intervalMs) / 1000)),
        successRate: sum.requests > 0 ? (sum.requests - sum.failures) / sum.requests : null,
        p50: l.p50,
        p95: l.p95,
        p99: l.p99,
      });
    }
    return { service, window: w, stepMs, points };
  }

  // ---- internals ----

  private slotNo(t: number): number {
    return Math.floor((t - (this.origin ?? t)) / this.intervalMs);
  }

  /**
   * The slots of a window, ending with the last complete scrape round (with no scraper reporting
   * rounds: the slot of the latest ingest), or the one before the current slot when scrapes
   * stopped coming (so rates decay).
   * Windows up to 5m read the fine ring; 15m the coarse one (up to 30 s shorter, which
   * `coveredMs` counts). `nos` are the slot numbers of the ring read,
   * `intervals` how many scrape intervals of data each covers.
   */
  private range(windowMs: number, now: number): { ring: Ring; slots: Slot[]; nos: number[]; intervals: number[]; coveredMs: number } {
    const k = Math.max(1, Math.ceil(windowMs / this.intervalMs));
    const ring = windowMs > FINE_MS ? this.coarse : this.fine;
    if (this.origin === null) return { ring, slots: [], nos: [], intervals: [], coveredMs: k * this.intervalMs };
    const end = Math.max(this.doneSlot ?? this.lastSlot, this.slotNo(now) - 1);
    // The first slot holds the baselines: data starts after it.
    const dataFrom = this.firstSlot + 1;
    const r = ring.ratio;
    // From the first slot wholly inside the window (15m reads 14.5 to 15 minutes), or from the
    // first data when there is less.
    const start = end - k + 1 > this.firstSlot ? Math.ceil((end - k + 1) / r) : Math.floor(this.firstSlot / r);
    const slots: Slot[] = [];
    const nos: number[] = [];
    const intervals: number[] = [];
    let covered = 0;
    for (let no = start; no <= Math.floor(end / r); no++) {
      nos.push(no);
      const n = Math.max(0, Math.min(end, no * r + r - 1) - Math.max(dataFrom, no * r) + 1);
      intervals.push(n);
      covered += n;
      const sl = ring.at(no);
      if (sl !== undefined) slots.push(sl);
    }
    return { ring, slots, nos, intervals, coveredMs: Math.max(1, covered) * this.intervalMs };
  }

  private bucketCount(): number {
    return (this.bounds?.length ?? 0) + 1;
  }

  /** Maps a snapshot's bucket index onto ours when its bounds differ (each bucket goes to the first of ours whose bound is at least its own). */
  private bucketMap(bounds: readonly number[]): number[] | null {
    const mine = this.bounds as readonly number[];
    const sig = bounds.join(',');
    if (this.bucketMaps.has(sig)) return this.bucketMaps.get(sig) ?? null;
    let map: number[] | null = null;
    if (sig !== mine.join(',')) {
      map = [...bounds, Number.POSITIVE_INFINITY].map((ub) => {
        const j = mine.findIndex((b) => b >= ub);
        return j < 0 ? mine.length : j;
      });
    }
    if (this.bucketMaps.size < 16) this.bucketMaps.set(sig, map);
    return map;
  }

  private delta(cur: Counters, before: Counters | undefined, map: number[] | null): Agg {
    const d = emptyAgg(this.bucketCount());
    d.requests = cur.requests - (before?.requests ?? 0);
    d.failures = cur.failures - (before?.failures ?? 0);
    d.latencySum = Math.max(0, cur.latencySum - (before?.latencySum ?? 0));
    d.requestBytes = cur.requestBytes - (before?.requestBytes ?? 0);
    d.responseBytes = cur.responseBytes - (before?.responseBytes ?? 0);
    d.mtls = cur.mtls - (before?.mtls ?? 0);
    for (let i = 0; i < cur.counts.length; i++) {
      const v = (cur.counts[i] ?? 0) - (before?.counts[i] ?? 0);
      if (v === 0) continue;
      const j = map === null ? i : (map[i] ?? d.counts.length - 1);
      d.counts[j] = (d.counts[j] ?? 0) + v;
    }
    return d;
  }

  /** The keys a series' traffic counts under that are kept (new ones past the cap are refused and counted). */
  private keysOf(s: StatsSeries, d: Agg, at: number): string[] {
    // Refused before a service was known (no route, unknown name): no service's signals. They are
    // in the proxy's own metrics (service="", skein_proxy_errors_total).
    if (s.service === '') return [];
    const dir = s.direction;
    const keys = [key('svc', dir, s.service, ''), key('route', dir, s.service, s.route)];
    const instance = dir === 'inbound' ? s.instance || s.workload : s.instance;
    if (instance !== '') keys.push(key('inst', dir, s.service, instance));
    if (dir === 'outbound' || (s.source !== 'unknown' && s.source !== '')) keys.push(key('edge', dir, s.source, s.service));
    keys.push(key('ver', dir, s.service, s.version ?? ''));
    return keys.filter((k, i) => {
      if (this.touch(k, at)) return true;
      this.counters.droppedKeys++;
      // The requests are lost to the signals when their service's own series is refused.
      if (i === 0) this.counters.droppedRequests += d.requests;
      return false;
    });
  }

  private touch(k: string, at: number): boolean {
    const last = this.keys.get(k);
    if (last !== undefined) {
      if (at > last) this.keys.set(k, at);
      return true;
    }
    if (this.keys.size >= this.maxKeys) return false;
    this.keys.set(k, at);
    if (k.startsWith(`svc${SEP}`)) {
      const name = parseKey(k).a;
      this.serviceRefs.set(name, (this.serviceRefs.get(name) ?? 0) + 1);
    }
    return true;
  }

  /** Drops keys idle for 15 minutes and proxies silent as long (at most once per interval). */
  private maintain(now: number): void {
    if (now - this.lastMaintain < this.intervalMs) return;
    this.lastMaintain = now;
    const oldest = now - RETENTION_MS;
    for (const [k, last] of this.keys) {
      if (last >= oldest) continue;
      this.keys.delete(k);
      this.counters.expiredKeys++;
      if (k.startsWith(`svc${SEP}`)) {
        const name = parseKey(k).a;
        const n = (this.serviceRefs.get(name) ?? 1) - 1;
        if (n <= 0) this.serviceRefs.delete(name);
        else this.serviceRefs.set(name, n);
      }
    }
    for (const [id, p] of this.proxies) if (p.lastIngest < oldest) this.proxies.delete(id);
  }

  private latency(a: Agg): Latency {
    const bounds = this.bounds;
    if (bounds === null || a.requests <= 0) return { p50: null, p95: null, p99: null };
    const [p50, p95, p99] = QUANTILES.map((q) => {
      const v = histogramQuantile(q, bounds, a.counts);
      return v === null ? null : round3(v * 1000);
    }) as [number | null, number | null, number | null];
    return { p50, p95, p99 };
  }

  private signals(a: Agg, coveredMs: number): Signals {
    return {
      rps: round3(a.requests / (coveredMs / 1000)),
      successRate: a.requests > 0 ? (a.requests - a.failures) / a.requests : null,
      latencyMs: this.latency(a),
      requests: a.requests,
      failures: a.failures,
      requestBytes: a.requestBytes,
      responseBytes: a.responseBytes,
    };
  }
}

/** Which count of WireAuthz each outcome adds to. */
const AUTHZ_FIELD: Readonly<Record<AuthzOutcome, 'allowed' | 'denied' | 'dryRunDenied' | 'audited'>> = Object.freeze({ allow: 'allowed', deny: 'denied', 'dry-run-deny': 'dryRunDenied', audit: 'audited' });

/** Any authorization count lower than before: the proxy restarted. */
function authzWentDown(prev: Map<string, number>, authz: readonly StatsAuthz[]): boolean {
  return authz.some((a) => a.count < (prev.get(statsAuthzKey(a)) ?? 0));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Any counter of any series lower than before: the proxy restarted (or reset its counters). */
function wentDown(prev: Map<string, Counters>, series: readonly StatsSeries[]): boolean {
  for (const s of series) {
    const p = prev.get(statsSeriesKey(s));
    if (p === undefined) continue;
    if (s.requests < p.requests || s.failures < p.failures || s.requestBytes < p.requestBytes || s.responseBytes < p.responseBytes || (s.mtls ?? 0) < p.mtls) return true;
    for (let i = 0; i < s.latency.counts.length; i++) if ((s.latency.counts[i] ?? 0) < (p.counts[i] ?? 0)) return true;
  }
  return false;
}
