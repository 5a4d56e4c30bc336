/**
 * The proxy's tracer, loaded only when tracing is on (`--trace-otlp`): used by `skein proxy`,
 * `skein up` and each worker thread of `skein proxy --workers N` (src/proxy/workers/worker.ts).
 */
import { SkeinError } from '../../core/errors.js';

/** The proxy's tracer (loaded only when tracing is on): spans per hop and attempt to an OTLP/HTTP collector. */
export async function startTracer(endpoint: string, sampleRatio: number, id: string, logger: { warn(obj: object, msg: string): void }) {
  const { createProxyTracer } = await import('../../telemetry/trace.js');
  // The OpenTelemetry SDKs' variable for the batch delay, honoured here too.
  const delay = process.env['OTEL_BSP_SCHEDULE_DELAY'];
  if (delay !== undefined && !(/^\d{1,6}$/.test(delay) && Number(delay) >= 1)) {
    throw new SkeinError('SKEIN_E_USAGE', `OTEL_BSP_SCHEDULE_DELAY must be a whole number of milliseconds from 1 to 999999, got "${delay.slice(0, 40)}"`, { field: 'OTEL_BSP_SCHEDULE_DELAY' });
  }
  return createProxyTracer({
    ...(delay === undefined ? {} : { exportIntervalMs: Number(delay) }),
    endpoint,
    serviceName: 'skein-proxy',
    sampleRatio,
    exportTimeoutMs: 2000,
    resource: { 'service.instance.id': id },
    onExportError: exportWarning(logger, endpoint),
  });
}

/** Export failures as warnings, at most one a minute (a collector that is down fails every batch). */
function exportWarning(logger: { warn(obj: object, msg: string): void }, endpoint: string): (e: Error) => void {
  let last = -Infinity;
  let missed = 0;
  return (e) => {
    const now = Date.now();
    if (now - last < 60_000) {
      missed++;
      return;
    }
    last = now;
    logger.warn({ endpoint, err: e.message, failuresSinceLastWarning: missed }, 'trace export failed');
    missed = 0;
  };
}
