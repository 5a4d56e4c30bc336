/** Prometheus exposition shared by the proxy and the control plane. */
import { Registry } from 'prom-client';

/**
 * The registry's exposition in the format the scraper asked for: OpenMetrics when its Accept
 * header names application/openmetrics-text, else the Prometheus text format. prom-client renames
 * counters (drops `_total`) in place while it writes OpenMetrics, so the names are put back after,
 * and one exposition runs at a time.
 */
export function exposition(registry: Registry, accept: string | undefined): Promise<{ contentType: string; text: string }> {
  const run = async () => {
    if (accept === undefined || !accept.includes('application/openmetrics-text')) return { contentType: registry.contentType, text: await registry.metrics() };
    const metrics = registry.getMetricsAsArray() as unknown as Array<{ name: string }>;
    const names = metrics.map((m) => m.name);
    registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE as never);
    try {
      return { contentType: registry.contentType, text: await registry.metrics() };
    } finally {
      registry.setContentType(Registry.PROMETHEUS_CONTENT_TYPE as never);
      metrics.forEach((m, i) => (m.name = names[i]!));
    }
  };
  const prev = expositions.get(registry) ?? Promise.resolve();
  const next = prev.then(run, run);
  expositions.set(registry, next.catch(() => undefined));
  return next;
}
const expositions = new WeakMap<Registry, Promise<unknown>>();
