/**
 * The proxy's Prometheus metrics (prom-client, its own registry). Per-request metrics are
 * recorded in plain counters of `RouteStats` objects, one per (workload, direction, service,
 * instance): the request path does no label hashing and no map lookups by string. prom-client
 * reads them when scraped (a metric object of ours registered in its registry) and does the
 * exposition.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ErrorCode } from '../core/errors.js';
import type { TrafficEvent, TrafficState } from '../resilience/traffic-state.js';
import type { Direction, EndpointStats, ForwarderCounters } from './http1/types.js';

export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface ProxyGauges {
  connections(): Array<{ workload: string; direction: Direction; open: number }>;
  idleUpstreams(): number;
  endpoints(): Array<{ service: string; count: number }>;
  watchConnected(): boolean;
  /** The resilience state of each destination service in use. */
  traffic(): Iterable<TrafficState>;
}

type Labels = Record<string, string>;

/** Requests to one destination instance from one listener. */
class RouteStats implements EndpointStats {
  readonly statuses = new Map<number, number>();
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length);
  sum = 0;
  count = 0;

  constructor(readonly labels: Labels) {}

  record(status: number, seconds: number): void {
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= LATENCY_BUCKETS[i]!) {
        this.buckets[i]!++;
        break;
      }
    }
  }
}

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** A metric prom-client's registry can expose: ours, read at scrape time. */
function scrapedMetric(name: string, help: string, type: 'counter' | 'histogram', values: () => MetricValue[]) {
  return {
    name,
    help,
    type,
    aggregator: 'sum' as const,
    get: async () => ({ name, help, type, aggregator: 'sum' as const, values: values() }),
    reset: () => undefined,
  };
}

export class ProxyMetrics implements ForwarderCounters {
  readonly registry = new Registry();
  private readonly routes: RouteStats[] = [];
  private readonly byKey = new Map<string, RouteStats>();
  private readonly errors: Counter<'direction' | 'code'>;
  private readonly connects: Counter<'result'>;
  private readonly retries: Counter<'service' | 'reason'>;
  private readonly budgetExhausted: Counter<'service'>;
  private readonly outlierEvents: Counter<'service' | 'event'>;
  private readonly breakerChanges: Counter<'service' | 'to'>;
  private readonly activeChecks: Counter<'service' | 'result'>;

  constructor(gauges: ProxyGauges) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const routes = this.routes;
    this.registry.registerMetric(
      scrapedMetric('skein_proxy_requests_total', 'Requests the proxy finished, by destination service and instance and response status (0: no response).', 'counter', () =>
        routes.flatMap((r) => [...r.statuses].sort((a, b) => a[0] - b[0]).map(([status, n]) => ({ labels: { ...r.labels, status: String(status) }, value: n }))),
      ) as never,
    );
    this.registry.registerMetric(
      scrapedMetric('skein_proxy_request_duration_seconds', 'Time from the complete request head to the end of the response, by destination service and instance.', 'histogram', () =>
        routes.flatMap((r) => {
          if (r.count === 0) return [];
          const out: MetricValue[] = [];
          let cum = 0;
          LATENCY_BUCKETS.forEach((le, i) => {
            cum += r.buckets[i]!;
            out.push({ labels: { ...r.labels, le: String(le) }, value: cum, metricName: 'skein_proxy_request_duration_seconds_bucket' });
          });
          out.push({ labels: { ...r.labels, le: '+Inf' }, value: r.count, metricName: 'skein_proxy_request_duration_seconds_bucket' });
          out.push({ labels: r.labels, value: r.sum, metricName: 'skein_proxy_request_duration_seconds_sum' });
          out.push({ labels: r.labels, value: r.count, metricName: 'skein_proxy_request_duration_seconds_count' });
          return out;
        }),
      ) as never,
    );
    this.errors = new Counter({
      name: 'skein_proxy_errors_total',
      help: 'Responses the proxy made itself (x-skein-error), by code.',
      labelNames: ['direction', 'code'],
      registers,
    });
    this.connects = new Counter({
      name: 'skein_proxy_upstream_connects_total',
      help: 'New upstream connections, by result (ok, failed).',
      labelNames: ['result'],
      registers,
    });
    this.retries = new Counter({
      name: 'skein_proxy_retries_total',
      help: 'Retries sent, by destination service and reason (connect-failure, reset, refused-stream, per-try-timeout, status).',
      labelNames: ['service', 'reason'],
      registers,
    });
    this.budgetExhausted = new Counter({
      name: 'skein_proxy_retry_budget_exhausted_total',
      help: 'Retries the retry budget refused, by destination service.',
      labelNames: ['service'],
      registers,
    });
    this.outlierEvents = new Counter({
      name: 'skein_proxy_outlier_events_total',
      help: 'Outlier detection ejections and returns of endpoints, by destination service and event (eject, return).',
      labelNames: ['service', 'event'],
      registers,
    });
    this.breakerChanges = new Counter({
      name: 'skein_proxy_breaker_transitions_total',
      help: 'Circuit breaker state changes of endpoints, by destination service and new state (open, half-open, closed).',
      labelNames: ['service', 'to'],
      registers,
    });
    this.activeChecks = new Counter({
      name: 'skein_proxy_active_check_transitions_total',
      help: "Endpoints turning healthy or unhealthy in the proxy's own active health checks, by destination service.",
      labelNames: ['service', 'result'],
      registers,
    });
    const perService = (name: string, help: string, read: (t: TrafficState) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['service'],
        registers,
        collect() {
          this.reset();
          for (const t of gauges.traffic()) this.set({ service: t.service }, read(t));
        },
      });
    perService('skein_proxy_requests_in_flight', 'Requests in flight to the destination service (limits.maxRequests counts these).', (t) => t.active);
    perService('skein_proxy_upstream_connections', "Open connections to the service's endpoints (limits.maxConnections counts these).", (t) => t.connections.open);
    perService('skein_proxy_retry_budget_available', 'Retries the retry budget would allow now.', (t) => t.budget.available);
    perService('skein_proxy_ejected_endpoints', 'Endpoints ejected by outlier detection now.', (t) => t.outlier?.ejectedCount ?? 0);
    perService('skein_proxy_open_breakers', 'Endpoints whose circuit breaker is open or half-open now.', (t) => {
      const c = t.breakers?.counts();
      return c === undefined ? 0 : c.open + c.halfOpen;
    });
    perService('skein_proxy_active_check_failing_endpoints', "Endpoints failing the proxy's own active health checks now.", (t) => t.down.size);
    new Gauge({
      name: 'skein_proxy_connections_open',
      help: 'Client connections open, by workload and direction.',
      labelNames: ['workload', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const c of gauges.connections()) this.set({ workload: c.workload, direction: c.direction }, c.open);
      },
    });
    new Gauge({
      name: 'skein_proxy_upstream_idle_connections',
      help: 'Pooled upstream connections waiting for a request.',
      registers,
      collect() {
        this.set(gauges.idleUpstreams());
      },
    });
    new Gauge({
      name: 'skein_proxy_endpoints',
      help: 'Healthy endpoints the proxy knows, by service.',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const e of gauges.endpoints()) this.set({ service: e.service }, e.count);
      },
    });
    new Gauge({
      name: 'skein_proxy_control_connected',
      help: '1 while the watch stream to the control plane is open.',
      registers,
      collect() {
        this.set(gauges.watchConnected() ? 1 : 0);
      },
    });
  }

  /** The counters of one route; call once per (workload, direction, service, instance) and keep. */
  stats(workload: string, direction: Direction, service: string, instance: string): EndpointStats {
    // A workload that comes back under the same name (a restarted replica) keeps its series.
    const key = `${workload}\u0000${direction}\u0000${service}\u0000${instance}`;
    let r = this.byKey.get(key);
    if (r === undefined) {
      r = new RouteStats({ workload, direction, service, instance });
      this.byKey.set(key, r);
      this.routes.push(r);
    }
    return r;
  }

  proxyError(direction: Direction, code: ErrorCode): void {
    this.errors.labels(direction, code).inc();
  }

  upstreamConnect(ok: boolean): void {
    this.connects.labels(ok ? 'ok' : 'failed').inc();
  }

  retry(service: string, reason: string): void {
    this.retries.labels(service, reason).inc();
  }

  retryBudgetExhausted(service: string): void {
    this.budgetExhausted.labels(service).inc();
  }

  /** Ejections, returns, breaker and active-check changes. */
  trafficEvent(e: TrafficEvent): void {
    if (e.type === 'eject' || e.type === 'return') this.outlierEvents.labels(e.service, e.type).inc();
    else if (e.type === 'breaker') this.breakerChanges.labels(e.service, e.to).inc();
    else if (e.type === 'active-check') this.activeChecks.labels(e.service, e.healthy ? 'healthy' : 'unhealthy').inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
