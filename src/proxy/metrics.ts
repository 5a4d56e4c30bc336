/**
 * The proxy's metrics (src/telemetry/prom.ts, its own registry). Per-request numbers are kept in
 * plain counters of `SeriesStats` objects, one per (listener, source, service, route, instance):
 * the request path adds to numbers in an object found by one map lookup (its latency buckets a
 * preallocated Float64Array), and the registry reads them when scraped; exposition.ts writes the
 * Prometheus text format or OpenMetrics. The same counters are served as JSON (`snapshot`) for
 * the control plane's golden signals.
 *
 * Cardinality is bounded: no paths, no request ids; route names come from configuration,
 * services, instances and versions from the registry, and the sources one inbound listener keeps
 * apart are capped (`MAX_SOURCES`, the rest are "other"). The `version` of the endpoint that
 * answered (outbound) adds no series to /stats (an instance has one version) and multiplies the
 * Prometheus series only by the versions of a service running at once (two during a canary).
 */
import type { TlsRefusal } from '../api/mtls.js';
import type { AuthzDecision } from '../engine/authorization.js';
import type { TrafficEvent, TrafficState } from '../resilience/traffic-state.js';
import type { ForwarderCounters, ListenerMetrics } from './http1/types.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { StallDetector, isStall } from './http1/stall.js';
import type { AuthzOutcome, Direction, StatsAuthz, StatsEvent, StatsSnapshot } from '../api/stats.js';
import { exposition } from '../telemetry/exposition.js';
import { Registry, type Aggregator, type Counter, type Gauge, type Histogram, type Sample } from '../telemetry/prom.js';
import { EngineCounters, ListenerStats, requestFamilies, instanceOf, StatsEventFeed, statsSnapshot, type SeriesStats } from '../telemetry/request-metrics.js';
import type { TcpCounters, TcpSeries } from './tcp/types.js';

/** Defined with the per-request metrics the SDK shares (src/telemetry/request-metrics.ts). */
export { MAX_SERIES, MAX_SOURCES } from '../telemetry/request-metrics.js';
import { processMetrics } from '../telemetry/process-metrics.js';

export interface ProxyGauges {
  connections(): Array<{ workload: string; direction: Direction; open: number }>;
  idleUpstreams(): number;
  endpoints(): Array<{ service: string; count: number }>;
  watchConnected(): boolean;
  /** The resilience state of each destination service in use. */
  traffic(): Iterable<TrafficState>;
  /** The certificates the proxy holds (mTLS on). */
  certificates(): Array<{ service: string; identity: string; notAfter: number }>;
}

/** A refused mTLS connection raises an event at most this often per peer and reason. */
const TLS_EVENT_EVERY_MS = 60_000;

export interface ProxyEvent extends StatsEvent {
  readonly type: 'eject' | 'return' | 'breaker' | 'active-check' | 'panic' | 'body-stall' | 'certificate' | 'mtls-refused' | 'cold-start';
}

/** Samples with one series each: of two with the same labels, the last (as a gauge set twice keeps). */
function lastBySeries(samples: Sample[]): Sample[] {
  if (samples.length < 2) return samples;
  const byKey = new Map<string, Sample>();
  for (const s of samples) byKey.set(s.labels.join('\u0000'), s);
  return byKey.size === samples.length ? samples : [...byKey.values()];
}

/**
 * The proxy's metrics: the engine's counters and traffic events (EngineCounters, shared with the
 * SDK), the per-request families, and what only a proxy has (connections, TLS, authorization,
 * stalls, active checks, cold starts, TCP streams).
 */
export class ProxyMetrics extends EngineCounters implements ForwarderCounters, TcpCounters {
  /** Opaque TCP streams (src/proxy/tcp): their families, at the end of this file. */
  private readonly tcp: TcpMetrics;
  readonly registry: Registry;
  private readonly series: SeriesStats[] = [];
  private readonly listeners = new Map<string, ListenerStats>();
  private readonly startedAt = Date.now();
  private readonly activeChecks: Counter<'service' | 'result'>;
  private readonly coldStarts: Counter<'service'>;
  private readonly bodyStalls: Counter<'direction' | 'service'>;
  private readonly evictions: Counter<'workload' | 'direction' | 'state'>;
  private readonly tlsRefusals: Counter<'direction' | 'reason'>;
  private readonly inboundConnections: Counter<'kind'>;
  private readonly renewals: Counter<'result'>;
  /** The same counts for /stats: by service, outcome and policy. */
  private readonly authzCounts = new Map<string, { service: string; outcome: AuthzOutcome; policy: string; count: number }>();
  /** When each (peer, reason) last raised an mtls-refused event. */
  private readonly tlsEventAt = new Map<string, number>();
  private readonly stalls = new StallDetector();

  constructor(
    gauges: ProxyGauges,
    /** Names this proxy to the control plane. */
    readonly id: string = `proxy-${process.pid}`,
    /** Told of each event the proxy raises itself (not traffic events): the proxy logs them. */
    private readonly onEvent: (e: StatsEvent) => void = () => {},
    r = new Registry(),
    feed = new StatsEventFeed(),
  ) {
    super(r, feed);
    this.registry = r;
    processMetrics(r);
    const series = this.series;
    requestFamilies(r, series, null);
    this.bodyStalls = r.counter({
      name: 'skein_proxy_body_stalls_total',
      help: "Responses whose body came 38-80 ms after their head, in a separate read: the app's Nagle algorithm waiting for the proxy's delayed ACK. By listener direction and destination service.",
      labelNames: ['direction', 'service'],
    });
    this.evictions = r.counter({
      name: 'skein_proxy_connections_evicted_total',
      help: "Client connections a listener closed at its connection cap (limits.maxConnections) to make room for a new one, by workload, listener direction and what the closed one was doing: idle (between requests) or head (still sending its request head).",
      labelNames: ['workload', 'direction', 'state'],
    });
    this.tlsRefusals = r.counter({
      name: 'skein_proxy_tls_refusals_total',
      help: 'mTLS connections between proxies refused, by listener direction (outbound: this proxy refused the peer it called; inbound: a caller) and reason (no-certificate, expired, unknown-issuer, untrusted, bad-identity, trust-domain, wrong-identity, plaintext, no-identity, handshake).',
      labelNames: ['direction', 'reason'],
    });
    this.inboundConnections = r.counter({
      name: 'skein_proxy_inbound_connections_total',
      help: 'Connections inbound listeners accepted with mTLS on, by kind: mtls, or plaintext (permissive mode: what is left to migrate).',
      labelNames: ['kind'],
    });
    // The counts /stats serves too: one copy, read at scrape time.
    r.scraped<'service' | 'outcome' | 'policy'>(
      'counter',
      {
        name: 'skein_proxy_authz_decisions_total',
        help: "Authorization decisions of inbound listeners (services with policies or a deny default), by service, outcome (allow, deny, dry-run-deny: a dry-run policy would have denied, audit: an AUDIT policy matched) and the policy that decided or matched ('' for the default).",
        labelNames: ['service', 'outcome', 'policy'],
      },
      () => [...this.authzCounts.values()].map((c) => ({ labels: [c.service, c.outcome, c.policy], value: c.count })),
    );
    this.renewals = r.counter({
      name: 'skein_proxy_certificate_renewals_total',
      help: 'Certificate renewals, by result (ok, failed: retried with backoff while the old certificate is valid).',
      labelNames: ['result'],
    });
    r.scraped<'service' | 'identity'>(
      'gauge',
      // With workers, each holds its own certificate of the service: the first to expire.
      { name: 'skein_proxy_certificate_expiry_timestamp_seconds', help: 'When each certificate the proxy holds expires (Unix seconds), by service and SPIFFE ID.', labelNames: ['service', 'identity'], aggregator: 'min' },
      () => lastBySeries(gauges.certificates().map((c) => ({ labels: [c.service, c.identity], value: c.notAfter / 1000 }))),
    );
    this.activeChecks = r.counter({
      name: 'skein_proxy_active_check_transitions_total',
      help: "Endpoints turning healthy or unhealthy in the proxy's own active health checks, by destination service.",
      labelNames: ['service', 'result'],
    });
    // With workers: amounts summed (each worker's requests and connections are its own), the state
    // of endpoints each worker judges itself ('max': the worst worker's view; a sum would count an
    // endpoint once per worker).
    const perService = (name: string, help: string, read: (t: TrafficState) => number, aggregator: Aggregator = 'sum') =>
      r.scraped<'service'>('gauge', { name, help, labelNames: ['service'], aggregator }, () => lastBySeries([...gauges.traffic()].map((t) => ({ labels: [t.service], value: read(t) }))));
    perService('skein_proxy_requests_in_flight', 'Requests in flight to the destination service (limits.maxRequests counts these).', (t) => t.active);
    perService('skein_proxy_upstream_connections', "Open connections to the service's endpoints (limits.maxConnections counts these).", (t) => t.connections.open);
    perService('skein_proxy_retry_budget_available', 'Retries the retry budget would allow now.', (t) => t.budget.available);
    perService('skein_proxy_ejected_endpoints', 'Endpoints ejected by outlier detection now.', (t) => t.outlier?.ejectedCount ?? 0, 'max');
    perService(
      'skein_proxy_open_breakers',
      'Endpoints whose circuit breaker is open or half-open now.',
      (t) => {
        const c = t.breakers?.counts();
        return c === undefined ? 0 : c.open + c.halfOpen;
      },
      'max',
    );
    perService('skein_proxy_active_check_failing_endpoints', "Endpoints failing the proxy's own active health checks now.", (t) => t.down.size, 'max');
    perService(
      'skein_proxy_panicking',
      "1 while the service is in panic mode (as of its last pick): fewer than its panicThreshold share of instances may take traffic, so ejections and failing active checks are ignored; 0 otherwise. Summed over services: the services in panic.",
      (t) => (t.panicking ? 1 : 0),
      'max',
    );
    r.scraped<'service'>('counter', { name: 'skein_proxy_panic_total', help: 'Requests (attempts) given an instance in panic mode, by destination service.', labelNames: ['service'] }, () =>
      lastBySeries([...gauges.traffic()].map((t) => ({ labels: [t.service], value: t.panicPicks }))),
    );
    this.coldStarts = r.counter({
      name: 'skein_proxy_cold_start_wakes_total',
      help: 'Times the proxy held requests for a service scaled to zero and asked for it to be woken.',
      labelNames: ['service'],
    });
    r.scraped<'workload' | 'direction'>('gauge', { name: 'skein_proxy_connections_open', help: 'Client connections open, by workload and direction.', labelNames: ['workload', 'direction'] }, () =>
      lastBySeries(gauges.connections().map((c) => ({ labels: [c.workload, c.direction], value: c.open }))),
    );
    r.scraped('gauge', { name: 'skein_proxy_upstream_idle_connections', help: 'Pooled upstream connections waiting for a request.' }, () => [{ labels: [], value: gauges.idleUpstreams() }]);
    r.scraped<'service'>('gauge', { name: 'skein_proxy_endpoints', help: 'Healthy endpoints the proxy knows, by service.', labelNames: ['service'], aggregator: 'max' }, () =>
      lastBySeries(gauges.endpoints().map((e) => ({ labels: [e.service], value: e.count }))),
    );
    r.scraped('gauge', { name: 'skein_proxy_control_connected', help: '1 while the watch stream to the control plane is open (with workers: every worker\'s).', aggregator: 'min' }, () => [{ labels: [], value: gauges.watchConnected() ? 1 : 0 }]);
    this.tcp = new TcpMetrics(r);
  }

  /** The series of one listener; call once per listener and keep. */
  listener(workload: string, direction: Direction): ListenerMetrics {
    // A workload that comes back under the same name (a restarted replica) keeps its series.
    const key = `${workload}\u0000${direction}`;
    let l = this.listeners.get(key);
    if (l === undefined) this.listeners.set(key, (l = new ListenerStats(this.series, workload, direction)));
    return l;
  }

  bodyGap(direction: Direction, service: string, endpoint: Endpoint, gapMs: number): void {
    if (isStall(gapMs)) this.bodyStalls.labels(direction, service).inc();
    if (!this.stalls.observe(`${direction} ${endpoint.key}`, gapMs, Date.now())) return;
    const where = direction === 'inbound' ? `the app behind this inbound listener (${endpoint.address}:${endpoint.port})` : `${endpoint.id} (${endpoint.address}:${endpoint.port})`;
    const e = this.record(
      'body-stall',
      service,
      endpoint.id,
      `${where} sends its response bodies ~${Math.round(gapMs)} ms after their heads, response after response: it writes head and body separately with Nagle's algorithm on, and each body waits for a delayed ACK. Write each response in one write, or set TCP_NODELAY on its sockets (docs/proxy.md#responses-40-ms-late)`,
    );
    this.onEvent(e);
  }

  /** An mTLS connection was refused: counted, and an event (at most once a minute per peer and reason). */
  tlsRefused(direction: Direction, reason: TlsRefusal, detail: string, endpoint: Endpoint | null, peer = ''): void {
    this.tlsRefusals.labels(direction, reason).inc();
    const who = endpoint === null ? peer : endpoint.key;
    const key = `${direction} ${who} ${reason}`;
    const now = Date.now();
    const last = this.tlsEventAt.get(key);
    if (last !== undefined && now - last < TLS_EVENT_EVERY_MS) return;
    if (this.tlsEventAt.size >= 10_000) this.tlsEventAt.clear();
    this.tlsEventAt.set(key, now);
    const what = direction === 'outbound' ? `this proxy refused ${endpoint === null ? 'a peer' : `${endpoint.id} (${endpoint.address}:${endpoint.port})`}` : `an inbound listener refused a caller at ${peer}`;
    this.onEvent(this.record('mtls-refused', endpoint?.service ?? '', endpoint?.id ?? '', `${what} [${reason}]: ${detail}`));
  }

  authz(service: string, d: AuthzDecision): void {
    this.countAuthz(service, d.allowed ? 'allow' : 'deny', d.policy ?? '');
    if (d.dryRunDenied !== null) this.countAuthz(service, 'dry-run-deny', d.dryRunDenied.policy);
    for (const a of d.audited) this.countAuthz(service, 'audit', a.policy);
  }

  private countAuthz(service: string, outcome: AuthzOutcome, policy: string): void {
    const k = `${service}\u0000${outcome}\u0000${policy}`;
    const c = this.authzCounts.get(k);
    if (c === undefined) this.authzCounts.set(k, { service, outcome, policy, count: 1 });
    else c.count++;
  }

  inboundConnection(kind: 'mtls' | 'plaintext'): void {
    this.inboundConnections.labels(kind).inc();
  }

  /** A certificate was issued, renewed, or failed to renew (`ok` false). */
  certificate(service: string, ok: boolean, detail: string, renewal: boolean): void {
    if (renewal) this.renewals.labels(ok ? 'ok' : 'failed').inc();
    this.onEvent(this.record('certificate', service, '', detail));
  }

  /** Adds an event to /stats's feed (the last STATS_MAX_EVENTS). */
  private record(type: ProxyEvent['type'], service: string, instance: string, detail: string): StatsEvent {
    return this.feed.add(type, service, instance, detail);
  }

  /** A listener at its connection cap closed an idle or half-sent connection for a new one. */
  connectionEvicted(workload: string, direction: Direction, state: 'idle' | 'head'): void {
    this.evictions.labels(workload, direction, state).inc();
  }

  /** Ejections, returns, breaker, active-check and panic changes: counted, and kept for the control plane. */
  override trafficEvent(e: TrafficEvent): boolean {
    if (super.trafficEvent(e)) return true;
    if (e.type === 'cold-start') {
      this.coldStarts.labels(e.service).inc();
      this.record('cold-start', e.service, '', `scaled to zero: holding ${e.waiting} request${e.waiting === 1 ? '' : 's'}, asked for it to be woken`);
    } else if (e.type === 'active-check') {
      this.activeChecks.labels(e.service, e.healthy ? 'healthy' : 'unhealthy').inc();
      this.record('active-check', e.service, instanceOf(e.endpoint), `${e.healthy ? 'healthy' : 'unhealthy'}: ${e.reason}`);
    } else return false;
    return true;
  }


  /** Every series' totals since the proxy started, and the traffic events after `sinceSeq`. */
  snapshot(sinceSeq = 0): StatsSnapshot {
    return statsSnapshot(this.id, this.startedAt, this.series, this.feed, sinceSeq, [...this.authzCounts.values()].map((c): StatsAuthz => ({ ...c })));
  }

  /** The Prometheus text format, or OpenMetrics when `accept` asks for it. */
  exposition(accept?: string): Promise<{ contentType: string; text: string }> {
    return exposition(this.registry, accept);
  }

  // ---- opaque TCP streams (issue 17) ----

  tcpOpened(workload: string, direction: Direction, service: string): TcpSeries {
    return this.tcp.opened(workload, direction, service);
  }
}

/** Durations of TCP streams, in seconds: from a quick exchange to a long-lived database connection. */
export const TCP_DURATION_BUCKETS: readonly number[] = Object.freeze([0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 21_600, 86_400]);

/** The families of opaque TCP streams (src/proxy/tcp/stream.ts), by workload, listener direction and service. */
class TcpMetrics {
  private readonly connections: Counter<'workload' | 'direction' | 'service' | 'result'>;
  private readonly open: Gauge<'workload' | 'direction' | 'service'>;
  private readonly received: Counter<'workload' | 'direction' | 'service'>;
  private readonly sent: Counter<'workload' | 'direction' | 'service'>;
  private readonly duration: Histogram<'workload' | 'direction' | 'service'>;

  constructor(r: Registry) {
    const labelNames = ['workload', 'direction', 'service'] as const;
    this.connections = r.counter({
      name: 'skein_proxy_tcp_connections_total',
      help: 'TCP streams (services with protocol tcp) closed, by workload, listener direction, service (outbound: the destination; inbound: the one served) and result: established (it reached an endpoint), or the SKEIN_E_* code it failed with (there is no response to carry it: the client was reset and the proxy logged it).',
      labelNames: [...labelNames, 'result'],
    });
    this.open = r.gauge({ name: 'skein_proxy_tcp_connections_open', help: 'TCP streams open now (connecting or established), by workload, listener direction and service.', labelNames: [...labelNames] });
    this.received = r.counter({ name: 'skein_proxy_tcp_received_bytes_total', help: 'Bytes TCP streams received from their clients (and sent on to the endpoint), by workload, listener direction and service.', labelNames: [...labelNames] });
    this.sent = r.counter({ name: 'skein_proxy_tcp_sent_bytes_total', help: "Bytes TCP streams sent to their clients (the endpoint's), by workload, listener direction and service.", labelNames: [...labelNames] });
    this.duration = r.histogram({ name: 'skein_proxy_tcp_connection_duration_seconds', help: 'Life of TCP streams, from accept to close (failed ones too), by workload, listener direction and service.', labelNames: [...labelNames], buckets: TCP_DURATION_BUCKETS });
  }

  opened(workload: string, direction: Direction, service: string): TcpSeries {
    const open = this.open.labels(workload, direction, service);
    const received = this.received.labels(workload, direction, service);
    const sent = this.sent.labels(workload, direction, service);
    open.inc();
    let closed = false;
    return {
      received: (n) => received.inc(n),
      sent: (n) => sent.inc(n),
      closed: (result, seconds) => {
        if (closed) return;
        closed = true;
        open.dec();
        this.connections.labels(workload, direction, service, result).inc();
        this.duration.labels(workload, direction, service).observe(seconds);
      },
    };
  }
}
