/**
 * The proxy's Prometheus metrics (prom-client, its own registry). Per-request metrics are
 * recorded through `EndpointStats` objects that hold their label children, resolved once per
 * (workload, direction, service, instance): the hot path does no label lookups.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ErrorCode } from '../core/errors.js';
import type { Direction, EndpointStats, ForwarderCounters } from './http1/types.js';

export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface ProxyGauges {
  connections(): Array<{ workload: string; direction: Direction; open: number }>;
  idleUpstreams(): number;
  endpoints(): Array<{ service: string; count: number }>;
  watchConnected(): boolean;
}

export class ProxyMetrics implements ForwarderCounters {
  readonly registry = new Registry();
  private readonly requests: Counter<'workload' | 'direction' | 'service' | 'instance' | 'status'>;
  private readonly duration: Histogram<'workload' | 'direction' | 'service' | 'instance'>;
  private readonly errors: Counter<'direction' | 'code'>;
  private readonly connects: Counter<'result'>;

  constructor(gauges: ProxyGauges) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'skein_proxy_requests_total',
      help: 'Requests the proxy finished, by destination service and instance and response status (0: no response).',
      labelNames: ['workload', 'direction', 'service', 'instance', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'skein_proxy_request_duration_seconds',
      help: 'Time from the complete request head to the end of the response, by destination service and instance.',
      labelNames: ['workload', 'direction', 'service', 'instance'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
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

  stats(workload: string, direction: Direction, service: string, instance: string): EndpointStats {
    const hist = this.duration.labels(workload, direction, service, instance);
    const byStatus = new Map<number, { inc(): void }>();
    const requests = this.requests;
    return {
      record(status: number, seconds: number): void {
        let c = byStatus.get(status);
        if (c === undefined) {
          c = requests.labels(workload, direction, service, instance, String(status));
          byStatus.set(status, c);
        }
        c.inc();
        hist.observe(seconds);
      },
    };
  }

  proxyError(direction: Direction, code: ErrorCode): void {
    this.errors.labels(direction, code).inc();
  }

  upstreamConnect(ok: boolean): void {
    this.connects.labels(ok ? 'ok' : 'failed').inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
