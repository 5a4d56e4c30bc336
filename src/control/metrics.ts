/** The control plane's Prometheus metrics (its own registry: src/telemetry/prom.ts). */
import { Registry as PromRegistry, type Counter, type Histogram } from '../telemetry/prom.js';
import { processMetrics } from '../telemetry/process-metrics.js';
import type { Registry } from './registry/registry.js';
import type { Publisher } from './publisher.js';
import type { HealthManager } from './health/manager.js';
import type { Store } from './store/store.js';
import type { HealthCheck } from '../api/types.js';
import type { SecurityEvent } from '../api/ca.js';

export class ControlMetrics {
  readonly registry = new PromRegistry();
  private readonly apiHistogram: Histogram<'method' | 'route' | 'status'>;
  private readonly healthChecks: Counter<'type' | 'result'>;
  private readonly healthTransitionCounter: Counter<'to'>;

  constructor() {
    processMetrics(this.registry, { eventLoopResolutionMs: 10 });
    this.apiHistogram = this.registry.histogram({
      name: 'skein_api_request_duration_seconds',
      help: 'Latency of control-plane API requests, by route pattern (never the raw path).',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    });
    this.healthChecks = this.registry.counter({
      name: 'skein_health_checks_total',
      help: 'Health check probes run by the control plane, by check type and result.',
      labelNames: ['type', 'result'],
    });
    this.healthTransitionCounter = this.registry.counter({
      name: 'skein_health_transitions_total',
      help: 'Instance status changes (including the initial status at registration), by new status.',
      labelNames: ['to'],
    });
  }

  /** One API request's latency, by method, route pattern and status. */
  apiRequest(method: string, route: string, status: number, seconds: number): void {
    this.apiHistogram.labels(method, route, String(status)).observe(seconds);
  }

  /** An instance's status changed (or was set at registration). */
  healthTransition(to: string): void {
    this.healthTransitionCounter.labels(to).inc();
  }

  /** Gauges read at scrape time from the live objects. */
  observe(parts: { registry: Registry; publisher: Publisher; health: HealthManager; store: Store & { batches?: number; commits?: number } }): void {
    const { registry, publisher, health, store } = parts;
    const gauge = this.gauge.bind(this);
    gauge('skein_registry_services', 'Services known to the registry.', () => registry.serviceCount);
    this.registry.scraped<'status'>('gauge', { name: 'skein_registry_instances', help: 'Registered instances, by status.', labelNames: ['status'] }, () => [
      { labels: ['healthy'], value: registry.healthyCount },
      { labels: ['unhealthy'], value: registry.instanceCount - registry.healthyCount },
    ]);
    gauge('skein_registry_revision', 'Current registry revision.', () => registry.revision);
    gauge('skein_watch_subscribers', 'Open watch streams.', () => publisher.subscriberCount);
    gauge('skein_health_ttl_instances', 'Instances with a TTL check being tracked.', () => health.ttlTracked);
    gauge('skein_health_probed_instances', 'Instances with an HTTP or TCP check being probed.', () => health.probing);
    const total = this.total.bind(this);
    total('skein_heartbeats_total', 'TTL heartbeats received since start.', () => health.heartbeats);
    total('skein_store_batches_total', 'Fsynced store batches since start (group commit).', () => store.batches ?? 0);
    total('skein_store_commits_total', 'Store commits since start; commits / batches is the group-commit factor.', () => store.commits ?? 0);
    total('skein_watch_overflows_total', 'Watch streams closed because their subscriber fell too far behind.', () => publisher.overflows);
    total('skein_watch_snapshots_total', 'Watch subscriptions that started with a snapshot.', () => publisher.snapshotsSent);
    total('skein_watch_resumes_total', 'Watch subscriptions resumed from the history with since=REV.', () => publisher.resumes);
  }

  /** A total a live object keeps, exposed as a counter. */
  private total(name: string, help: string, read: () => number): void {
    this.registry.scraped('counter', { name, help }, () => [{ labels: [], value: read() }]);
  }

  /** A number a live object keeps, exposed as a gauge. */
  private gauge(name: string, help: string, read: () => number): void {
    this.registry.scraped('gauge', { name, help }, () => [{ labels: [], value: read() }]);
  }

  observeProxies(proxies: { readonly size: number }): void {
    this.gauge('skein_proxies_known', 'Proxies that announced themselves and renewed within the TTL.', () => proxies.size);
  }

  observeSignals(
    scraper: { readonly counters: { ok: number; failed: number; rounds: number; skippedRounds: number } },
    events: { readonly total: number; readonly subscriberCount: number },
    store: { readonly stats: { keys: number; droppedKeys: number; droppedRequests: number; expiredKeys: number; restarts: number } },
  ): void {
    this.gauge('skein_signals_series', 'Golden-signal series kept (services, instances, edges and routes by direction), up to the cap.', () => store.stats.keys);
    this.total('skein_signals_dropped_series_total', 'Updates of new golden-signal series refused because the series cap was reached.', () => store.stats.droppedKeys);
    this.total('skein_signals_dropped_requests_total', 'Requests left out of their service\'s golden signals because its series was past the cap.', () => store.stats.droppedRequests);
    this.total('skein_signals_expired_series_total', 'Golden-signal series dropped after 15 minutes without traffic.', () => store.stats.expiredKeys);
    this.total('skein_signals_proxy_restarts_total', 'Proxy restarts the scraper noticed (counters that started again).', () => store.stats.restarts);
    this.registry.scraped<'result'>('counter', { name: 'skein_signals_scrapes_total', help: "Scrapes of proxies' /stats for the golden signals, by result (ok, failed).", labelNames: ['result'] }, () => [
      { labels: ['ok'], value: scraper.counters.ok },
      { labels: ['failed'], value: scraper.counters.failed },
    ]);
    this.total('skein_signals_rounds_skipped_total', 'Scrape rounds skipped because the previous round was still running.', () => scraper.counters.skippedRounds);
    this.total('skein_mesh_events_total', 'Mesh events added to the event feed (health, ejections, breakers, scaling, proxies).', () => events.total);
    this.gauge('skein_signals_stream_subscribers', 'Open event-feed subscriptions (dashboard streams).', () => events.subscriberCount);
  }

  /** The CA's metrics: counted from its security events; the issuer's expiry read at scrape time. */
  observeCa(issuerNotAfter: () => number): (e: SecurityEvent) => void {
    const issued = this.registry.counter({
      name: 'skein_ca_certificates_issued_total',
      help: 'Certificates the CA issued, by kind (join: with a join token, renew: over mTLS, serving: its own mTLS listener, intermediate: a worn issuing certificate replaced).',
      labelNames: ['kind'],
    });
    const refusals = this.registry.counter({
      name: 'skein_ca_refusals_total',
      help: 'Certificate and join-token requests the CA refused, by reason (the error code).',
      labelNames: ['reason'],
    });
    this.gauge('skein_ca_issuer_expiry_timestamp_seconds', "When the CA's issuer (the intermediate) expires, seconds since the epoch.", () => issuerNotAfter() / 1000);
    return (e) => {
      if ((e.type === 'certificate-issued' || e.type === 'certificate-renewed') && e.kind !== undefined) issued.labels(e.kind).inc();
      else if (e.type.endsWith('-refused')) refusals.labels(e.code ?? 'unknown').inc();
    };
  }

  checkResult(check: HealthCheck, ok: boolean): void {
    this.healthChecks.labels(check.type, ok ? 'pass' : 'fail').inc();
  }
}
