/**
 * Where `skein up`'s autoscalers read a service's metric:
 *
 *   rps, p99  the control plane's golden signals over the last `window`
 *             (GET /v1/signals/services/{s}/versions?last=W: whole scrape intervals, each version
 *             as its instances' inbound listeners saw it, every version summed; p99 is the
 *             highest of the versions').
 *   inFlight  the proxies report no in-flight gauge in /stats, but every caller of a `skein up`
 *             mesh (its services' outbound listeners and the service ports) is the runtime's own
 *             proxy: its requests in flight to the service, sampled at each decision and averaged
 *             over the samples of the window.
 *
 * A failed or refused read is a missing metric (which never scales down), with the reason. Joined
 * to a shared control plane (`skein up --join`), the read goes to the replica in use and, when it
 * fails or answers 502-504, to the next one (ControlReplicas).
 */
import type { AutoscaleMetric } from '../api/mesh/autoscale.js';
import type { Clock } from '../core/clock.js';
import type { ControlReplicas } from '../discovery/control-replicas.js';
import type { AutoscaleSignals, MetricReading } from './autoscale.js';

/** An answer of a control-plane replica that means "try another" (a gateway in front of it without a live one): for ControlReplicas.call. */
export const controlUnavailable = (r: { status: number }): string | null => (r.status >= 502 && r.status <= 504 ? `HTTP ${r.status}` : null);

export interface HttpAutoscaleSignalsOptions {
  readonly controlUrl: string;
  /** The control plane's replicas (skein up --join): reads fail over between them; `controlUrl` is then unused. */
  readonly control?: ControlReplicas | undefined;
  readonly token?: string | undefined;
  readonly clock: Clock;
  /** Requests in flight to `service` now (the runtime's proxy), null when it has no state for it. */
  inFlight(service: string): number | null | Promise<number | null>;
  /** Per read. Default 2 s. */
  readonly timeoutMs?: number;
}

interface VersionsBody {
  versions?: Array<{ rps?: number; requests?: number; latencyMs?: { p99?: number | null } }>;
  message?: string;
}

export class HttpAutoscaleSignals implements AutoscaleSignals {
  private readonly samples = new Map<string, Array<{ time: number; value: number }>>();

  constructor(private readonly o: HttpAutoscaleSignalsOptions) {}

  async read(service: string, metric: AutoscaleMetric, windowMs: number): Promise<MetricReading> {
    if (metric === 'inFlight') return this.inFlight(service, windowMs);
    const path = `/v1/signals/services/${encodeURIComponent(service)}/versions?last=${windowMs}ms`;
    let body: VersionsBody;
    try {
      const get = (base: string) =>
        fetch(base + path, {
          headers: this.o.token === undefined ? {} : { authorization: `Bearer ${this.o.token}` },
          signal: AbortSignal.timeout(this.o.timeoutMs ?? 2000),
        });
      const res = this.o.control === undefined ? await get(this.o.controlUrl) : await this.o.control.call(get, { unavailable: controlUnavailable });
      body = (await res.json()) as VersionsBody;
      if (!res.ok) return { value: null, why: `GET ${path}: ${res.status} ${body.message ?? ''}`.trim() };
    } catch (e) {
      return { value: null, why: `GET ${path}: ${(e as Error).message}` };
    }
    const versions = body.versions ?? [];
    if (metric === 'rps') return { value: versions.reduce((a, v) => a + (v.rps ?? 0), 0) };
    const p99s = versions.map((v) => v.latencyMs?.p99).filter((x): x is number => typeof x === 'number');
    return p99s.length === 0 ? { value: null, why: 'no requests in the window, so no p99' } : { value: Math.max(...p99s) };
  }

  private async inFlight(service: string, windowMs: number): Promise<MetricReading> {
    let n: number | null;
    try {
      n = await this.o.inFlight(service);
    } catch (e) {
      return { value: null, why: `the proxy's requests in flight: ${(e as Error).message}` };
    }
    const now = this.o.clock.now();
    const kept = (this.samples.get(service) ?? []).filter((s) => s.time > now - windowMs);
    if (n !== null) kept.push({ time: now, value: n });
    this.samples.set(service, kept);
    if (kept.length === 0) return { value: null, why: 'the proxy has no traffic state for the service yet' };
    return { value: kept.reduce((a, s) => a + s.value, 0) / kept.length };
  }
}
