/**
 * The SDK's metrics: the proxy's per-request families and engine counters, with their names,
 * labels and buckets (one definition: src/telemetry/request-metrics.ts), the request families
 * with one more label, `plane="sdk"`. Served as the proxy's admin serves them, `/metrics`
 * (Prometheus or OpenMetrics) and `/stats` (the JSON the control plane scrapes for the golden
 * signals and `skein stat`), by a server the SDK starts (`metrics: { listen }`) or by a handler
 * the app mounts (`metricsHandler()`). Its taps too: `/tap` (the control plane relays them to
 * `skein tap`) and `/debug/taps`, the proxy's (src/telemetry/tap.ts), answered only to this host.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseStatsQuery, type StatsSnapshot } from '../api/stats.js';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';
import { fromThisHost, TapHub, TapServer } from '../telemetry/tap.js';
import { exposition } from '../telemetry/exposition.js';
import { Registry } from '../telemetry/prom.js';
import { EngineCounters, ListenerStats, requestFamilies, StatsEventFeed, statsSnapshot, type SeriesStats } from '../telemetry/request-metrics.js';
import type { FinishedRequest } from './request.js';

export class SdkMetrics {
  readonly registry = new Registry();
  private readonly series: SeriesStats[] = [];
  private readonly listener: ListenerStats;
  private readonly startedAt = Date.now();
  private readonly feed = new StatsEventFeed();
  /** The engine's counters and traffic events (the proxy's families). */
  readonly engine: EngineCounters;
  /** The open taps: each request asks them whether to keep a record (request.ts). */
  readonly tap = new TapHub();
  private readonly taps: TapServer;

  constructor(
    /** Names the SDK to the control plane (its /stats, `skein stat`). */
    readonly id: string,
    workload: string,
    /** The calling service: the source of every series (null: unknown). */
    private readonly source: string | null,
  ) {
    const r = this.registry;
    this.listener = new ListenerStats(this.series, workload, 'outbound');
    requestFamilies(r, this.series, 'sdk');
    this.engine = new EngineCounters(r, this.feed);
    this.taps = new TapServer(id, { owner: 'this SDK' });
  }

  // ---- what requests and the engine report ----

  finished(f: FinishedRequest): void {
    if (f.code !== null) this.engine.proxyError('outbound', f.code);
    const e = f.endpoint;
    const failed = f.status === 0 || f.status >= 500 || f.code !== null;
    this.listener.record(this.source, f.service, f.route, e?.id ?? null, f.status, failed, f.seconds, f.requestBytes, f.responseBytes, false, e?.version ?? null);
  }

  // ---- what is served ----

  /** Every series' totals since the SDK started, and the events after `sinceSeq` (the proxy's /stats). */
  snapshot(sinceSeq = 0): StatsSnapshot {
    return statsSnapshot(this.id, this.startedAt, this.series, this.feed, sinceSeq);
  }

  exposition(accept?: string): Promise<{ contentType: string; text: string }> {
    return exposition(this.registry, accept);
  }

  /**
   * A request handler for node:http (or anything with its request and response): `/metrics`,
   * `/stats[?since=N]`, `/live`, and to this host only `/tap` and `/debug/taps`; anything else
   * 404. The app mounts it, or `metrics.listen` starts a server with it.
   */
  handler(): (req: IncomingMessage, res: ServerResponse) => void {
    const refuse = (res: ServerResponse, code: ErrorCode, message: string, field?: string) =>
      res.writeHead(ERROR_CODES[code].status, { 'content-type': 'application/json', 'x-skein-error': code }).end(JSON.stringify({ code, message, ...(field === undefined ? {} : { field }) }));
    return (req, res) => {
      const url = new URL(req.url ?? '/', 'http://sdk');
      if (url.pathname === '/tap' || url.pathname === '/debug/taps') {
        // Taps show headers and bodies: like a proxy's admin bound beyond loopback, the SDK answers them only to this host (the app may serve this handler to anyone).
        if (!fromThisHost(req)) {
          refuse(res, 'SKEIN_E_ADMIN_LOCAL_ONLY', `${url.pathname} is answered only on this host: taps show headers, bodies and the mesh`);
          return;
        }
        if (url.pathname === '/debug/taps') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.taps.streams.stats(), null, 2) + '\n');
          return;
        }
        const refused = this.taps.serve(url, req, res, (filter, send) => this.tap.subscribe(filter, send));
        if (refused !== null) refuse(res, refused.code, refused.message, refused.field);
        return;
      }
      if (url.pathname === '/metrics') {
        this.exposition(req.headers.accept).then(
          (m) => res.writeHead(200, { 'content-type': m.contentType }).end(m.text),
          (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
        );
        return;
      }
      if (url.pathname === '/stats') {
        // Checked as the proxy's admin server checks it.
        const q = parseStatsQuery(url.searchParams);
        if ('error' in q) {
          refuse(res, 'SKEIN_E_BAD_QUERY', q.error, q.field);
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.snapshot(q.since)));
        return;
      }
      if (url.pathname === '/live') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics, /stats, /live, /tap and /debug/taps are served here\n');
    };
  }
}
