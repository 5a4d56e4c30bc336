/** The control plane's Prometheus metrics (its own prom-client registry, never the global one). */
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';
import type { Registry } from './registry/registry.js';
import type { Publisher } from './publisher.js';
import type { HealthManager } from './health/manager.js';
import type { Store } from './store/store.js';
import type { HealthCheck } from '../api/types.js';
import type { SecurityEvent } from '../api/ca.js';

export class ControlMetrics {
  readonly registry = new PromRegistry();
  readonly apiDuration: Histogram<'method' | 'route' | 'status'>;
  readonly healthChecks: Counter<'type' | 'result'>;
  readonly healthTransitions: Counter<'to'>;

  constructor() {
    const register = [this.registry];
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    this.apiDuration = new Histogram({
      name: 'skein_api_request_duration_seconds',
      help: 'Latency of control-plane API requests, by route pattern (never the raw path).',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: register,
    });
    this.healthChecks = new Counter({
      name: 'skein_health_checks_total',
      help: 'Health check probes run by the control plane, by check type and result.',
      labelNames: ['type', 'result'],
      registers: register,
    });
    this.healthTransitions = new Counter({
      name: 'skein_health_transitions_total',
      help: 'Instance status changes (including the initial status at registration), by new status.',
      labelNames: ['to'],
      registers: register,
    });
  }

  /** Gauges read at scrape time from the live objects. */
  observe(parts: { registry: Registry; publisher: Publisher; health: HealthManager; store: Store & { batches?: number; commits?: number } }): void {
    const register = [this.registry];
    const { registry, publisher, health, store } = parts;
    new Gauge({ name: 'skein_registry_services', help: 'Services known to the registry.', registers: register, collect() { this.set(registry.serviceCount); } });
    new Gauge({
      name: 'skein_registry_instances',
      help: 'Registered instances, by status.',
      labelNames: ['status'],
      registers: register,
      collect() {
        this.set({ status: 'healthy' }, registry.healthyCount);
        this.set({ status: 'unhealthy' }, registry.instanceCount - registry.healthyCount);
      },
    });
    new Gauge({ name: 'skein_registry_revision', help: 'Current registry revision.', registers: register, collect() { this.set(registry.revision); } });
    new Gauge({ name: 'skein_watch_subscribers', help: 'Open watch streams.', registers: register, collect() { this.set(publisher.subscriberCount); } });
    new Gauge({ name: 'skein_health_ttl_instances', help: 'Instances with a TTL check being tracked.', registers: register, collect() { this.set(health.ttlTracked); } });
    new Gauge({ name: 'skein_health_probed_instances', help: 'Instances with an HTTP or TCP check being probed.', registers: register, collect() { this.set(health.probing); } });
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
    new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(read()); } });
  }

  observeProxies(proxies: { readonly size: number }): void {
    new Gauge({ name: 'skein_proxies_known', help: 'Proxies that announced themselves and renewed within the TTL.', registers: [this.registry], collect() { this.set(proxies.size); } });
  }

  observeSignals(
    scraper: { readonly counters: { ok: number; failed: number; rounds: number; skippedRounds: number } },
    events: { readonly total: number; readonly subscriberCount: number },
    store: { readonly stats: { keys: number; droppedKeys: number; droppedRequests: number; expiredKeys: number; restarts: number } },
  ): void {
    new Gauge({ name: 'skein_signals_series', help: 'Golden-signal series kept (services, instances, edges and routes by direction), up to the cap.', registers: [this.registry], collect() { this.set(store.stats.keys); } });
    this.total('skein_signals_dropped_series_total', 'Updates of new golden-signal series refused because the series cap was reached.', () => store.stats.droppedKeys);
    this.total('skein_signals_dropped_requests_total', 'Requests left out of their service\'s golden signals because its series was past the cap.', () => store.stats.droppedRequests);
    this.total('skein_signals_expired_series_total', 'Golden-signal series dropped after 15 minutes without traffic.', () => store.stats.expiredKeys);
    this.total('skein_signals_proxy_restarts_total', 'Proxy restarts the scraper noticed (counters that started again).', () => store.stats.restarts);
    new Counter({
      name: 'skein_signals_scrapes_total',
      help: 'Scrapes of proxies\' /stats for the golden signals, by result (ok, failed).',
      labelNames: ['result'],
      registers: [this.registry],
      collect() {
        const c = scraper.counters;
        this.reset();
        this.inc({ result: 'ok' }, c.ok);
        this.inc({ result: 'failed' }, c.failed);
      },
    });
    this.total('skein_signals_rounds_skipped_total', 'Scrape rounds skipped because the previous round was still running.', () => scraper.counters.skippedRounds);
    this.total('skein_mesh_events_total', 'Mesh events added to the event feed (health, ejections, breakers, scaling, proxies).', () => events.total);
    new Gauge({ name: 'skein_signals_stream_subscribers', help: 'Open event-feed subscriptions (dashboard streams).', registers: [this.registry], collect() { this.set(events.subscriberCount); } });
  }

  /** The CA's metrics: counted from its security events; the issuer's expiry read at scrape time. */
  observeCa(issuerNotAfter: () => number): (e: SecurityEvent) => void {
    const register = [this.registry];
    const issued = new Counter({
      name: 'skein_ca_certificates_issued_total',
      help: 'Certificates the CA issued, by kind (join: with a join token, renew: over mTLS, serving: its own mTLS listener, intermediate: a worn issuing certificate replaced).',
      labelNames: ['kind'],
      registers: register,
    });
    const refusals = new Counter({
      name: 'skein_ca_refusals_total',
      help: 'Certificate and join-token requests the CA refused, by reason (the error code).',
      labelNames: ['reason'],
      registers: register,
    });
    new Gauge({ name: 'skein_ca_issuer_expiry_timestamp_seconds', help: "When the CA's issuer (the intermediate) expires, seconds since the epoch.", registers: register, collect() { this.set(issuerNotAfter() / 1000); } });
    return (e) => {
      if ((e.type === 'certificate-issued' || e.type === 'certificate-renewed') && e.kind !== undefined) issued.inc({ kind: e.kind });
      else if (e.type.endsWith('-refused')) refusals.inc({ reason: e.code ?? 'unknown' });
    };
  }

  checkResult(check: HealthCheck, ok: boolean): void {
    this.healthChecks.inc({ type: check.type, result: ok ? 'pass' : 'fail' });
  }
}
