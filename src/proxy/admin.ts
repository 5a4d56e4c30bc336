/**
 * The proxy's admin server: `/live` (the process answers), `/ready` (the proxy can route: it has
 * had its first snapshot from the control plane), `/metrics` (Prometheus text, or OpenMetrics
 * when asked for), `/stats` (the same counters as JSON, for the control plane's golden signals),
 * `/picks?service=S&id=ID` (whether it still picks that endpoint: a drain waits on it),
 * `/tap` (finished requests as they happen, NDJSON), `/debug/taps` (the open taps and what they
 * dropped) and `/debug/endpoints` (what the proxy currently believes about each service). Not on
 * the request path: node:http. Bound to loopback, it answers only loopback `Host`s
 * (src/core/loopback-host.ts). Bound beyond loopback (a host of a mesh across hosts, where the
 * control plane's leader scrapes it), it answers `/live`, `/ready`, `/metrics` and `/stats` to
 * anyone who reaches it, like Linkerd's and Envoy's metrics ports, and its taps and `/debug`
 * endpoints only to this host (the peer is a loopback address, or the address it listens on),
 * unless `insecure` (`--insecure-admin`) opens them too: no TLS, no tokens, and taps show headers
 * and bodies.
 *
 * It answers from an `AdminView`: one Proxy's (`proxyView`), or, with `skein proxy --workers N`,
 * the sum of the worker threads' proxies (src/proxy/workers.ts): the routes are written once, here.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HostPort } from '../core/address.js';
import type { Clock } from '../core/clock.js';
import { ERROR_CODES, SkeinError, type ErrorCode } from '../core/errors.js';
import { foreignHost, isLoopbackAddress } from '../core/loopback-host.js';
import type { TapLimits, TapRecord } from '../api/tap.js';
import type { Proxy, ViewSource } from './proxy.js';
import { fromThisHost, TapServer, type TapFilter } from '../telemetry/tap.js';
import { endpointKey } from '../discovery/endpoint.js';
import { parseStatsQuery, type StatsSnapshot } from '../api/stats.js';

/** /ready's facts: whether the proxy can route, and where its view comes from. */
export interface Readiness {
  readonly ready: boolean;
  readonly source: ViewSource;
  /** While stale: when the persisted state served was saved (ISO). */
  readonly stateSavedAt: string | null;
}

/**
 * What the admin server answers from: one Proxy (`proxyView`), or the sum of the proxies of a
 * proxy's worker threads (src/proxy/workers.ts).
 */
export interface AdminView {
  /** The proxy's id (tap lines, /stats). */
  readonly id: string;
  readiness(): Promise<Readiness>;
  /** /metrics: the Prometheus text format, or OpenMetrics when `accept` asks for it. */
  exposition(accept: string | undefined): Promise<{ contentType: string; text: string }>;
  /** /stats: every series' totals, and the events after `since`. */
  stats(since: number): Promise<StatsSnapshot>;
  debugEndpoints(): Promise<object>;
  /** /picks: whether the proxy still routes `service` to the endpoint `key`. */
  picks(service: string, key: string): Promise<boolean>;
  /** A tap: `send` gets every finished request `filter` selects until the returned function is called. */
  tap(filter: TapFilter, send: (r: TapRecord) => void): () => void;
}

/** The admin view of one Proxy. */
export function proxyView(proxy: Proxy): AdminView {
  return {
    id: proxy.metrics.id,
    readiness: () => Promise.resolve({ ready: proxy.ready, source: proxy.viewSource, stateSavedAt: proxy.stateSavedAt }),
    exposition: (accept) => proxy.metrics.exposition(accept),
    stats: (since) => Promise.resolve(proxy.metrics.snapshot(since)),
    debugEndpoints: () => Promise.resolve(proxy.debugEndpoints()),
    picks: (service, key) => Promise.resolve(proxy.hasEndpoint(service, key)),
    tap: (filter, send) => proxy.tap.subscribe(filter, send),
  };
}

const SERVICE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** An answer the admin server makes itself: the code's status, `x-skein-error`, a JSON body. */
function refuse(res: ServerResponse, code: ErrorCode, message: string, field?: string): void {
  res.setHeader('x-skein-error', code);
  json(res, ERROR_CODES[code].status, { code, message, ...(field === undefined ? {} : { field }) });
}

function unknownParam(url: URL, allowed: string[]): string | null {
  for (const k of url.searchParams.keys()) if (!allowed.includes(k)) return `unknown query parameter "${k}" (allowed: ${allowed.join(', ')})`;
  return null;
}

export interface AdminServer {
  readonly address: string;
  close(): Promise<void>;
}

export interface AdminOptions {
  /** Bounds of the taps (default PROXY_TAP_LIMITS). */
  readonly tapLimits?: Partial<TapLimits>;
  /** Header names (lower case) whose values taps hide, beyond the defaults (`--tap-redact`). */
  readonly tapRedact?: readonly string[];
  readonly clock?: Clock;
  /** Beyond loopback, answer taps and /debug to other hosts too (`--insecure-admin`). Default false. */
  readonly insecure?: boolean;
}

/** What the admin server answers other hosts when it listens beyond loopback (without `insecure`). */
export const ADMIN_OPEN_PATHS: readonly string[] = ['/live', '/ready', '/metrics', '/stats', '/picks'];

/** An answer that failed: 500 SKEIN_E_INTERNAL naming why (a worker thread that did not answer, say). */
function failed(res: ServerResponse): (e: unknown) => void {
  return (e) => {
    if (!res.headersSent) json(res, 500, { code: 'SKEIN_E_INTERNAL', message: (e as Error).message });
    else res.destroy();
  };
}

export async function startAdmin(view: AdminView, at: HostPort, opts: AdminOptions = {}): Promise<AdminServer> {
  const taps = new TapServer(view.id, {
    ...(opts.tapLimits === undefined ? {} : { limits: opts.tapLimits }),
    ...(opts.tapRedact === undefined ? {} : { redact: opts.tapRedact }),
    ...(opts.clock === undefined ? {} : { clock: opts.clock }),
    owner: 'this proxy',
    limitHint: ' (--max-taps)',
  });
  let bound: string | null = null;
  let localOnly = false;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const foreign = foreignHost(bound, req.headers.host);
    if (foreign !== null) {
      refuse(res, 'SKEIN_E_FOREIGN_HOST', foreign, 'host');
      return;
    }
    if (localOnly && !ADMIN_OPEN_PATHS.includes(url.pathname) && !fromThisHost(req)) {
      refuse(res, 'SKEIN_E_ADMIN_LOCAL_ONLY', `${url.pathname} is answered only on this host: the admin server listens beyond loopback for ${ADMIN_OPEN_PATHS.join(', ')}; its taps and /debug endpoints show headers, bodies and the mesh (--insecure-admin opens them to other hosts)`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(res, 405, { code: 'SKEIN_E_NOT_FOUND', message: `${req.method} is not supported here; the admin endpoints take GET` });
      return;
    }
    switch (url.pathname) {
      case '/live':
        json(res, 200, { live: true });
        return;
      case '/ready':
        view.readiness().then((r) => {
          if (r.ready && r.source === 'stale') json(res, 200, { ready: true, source: 'stale', stateSavedAt: r.stateSavedAt, message: 'no control plane answers: serving the persisted state (--state-dir)' });
          else if (r.ready) json(res, 200, { ready: true });
          else json(res, 503, { ready: false, code: 'SKEIN_E_DISCOVERY_UNAVAILABLE', message: 'no snapshot from the control plane yet' });
        }, failed(res));
        return;
      case '/metrics':
        view.exposition(req.headers.accept).then(({ contentType, text }) => {
          res.writeHead(200, { 'content-type': contentType });
          res.end(text);
        }, failed(res));
        return;
      case '/debug/endpoints':
        view.debugEndpoints().then((d) => json(res, 200, d), failed(res));
        return;
      case '/stats': {
        const q = parseStatsQuery(url.searchParams);
        if ('error' in q) {
          refuse(res, 'SKEIN_E_BAD_QUERY', q.error, q.field);
          return;
        }
        view.stats(q.since).then((s) => json(res, 200, s), failed(res));
        return;
      }
      case '/picks': {
        // Whether this proxy still picks one endpoint: what a runtime draining it waits on (src/runtime/proxy-ack.ts).
        const service = url.searchParams.get('service') ?? '';
        const id = url.searchParams.get('id') ?? '';
        const unknown = unknownParam(url, ['service', 'id']);
        const [bad, field] =
          unknown !== null ? [unknown, undefined] : !SERVICE.test(service) ? ['service must be a service name', 'service'] : id === '' || id.length > 256 ? ['id must be an instance id (1 to 256 characters)', 'id'] : [null, undefined];
        if (bad !== null) {
          refuse(res, 'SKEIN_E_BAD_QUERY', bad, field);
          return;
        }
        view.picks(service, endpointKey(service, id)).then((picks) => json(res, 200, { service, id, picks }), failed(res));
        return;
      }
      case '/tap': {
        const refused = taps.serve(url, req, res, (filter, send) => view.tap(filter, send));
        if (refused !== null) refuse(res, refused.code, refused.message, refused.field);
        return;
      }
      case '/debug/taps':
        json(res, 200, taps.streams.stats());
        return;
      default:
        json(res, 404, { code: 'SKEIN_E_NOT_FOUND', message: `no admin endpoint ${url.pathname} (there are /live, /ready, /metrics, /stats, /picks, /tap, /debug/taps, /debug/endpoints)` });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new SkeinError('SKEIN_E_ADDRESS_IN_USE', `admin server: cannot listen on ${at.host}:${at.port}: ${e.code ?? e.message}`, { field: '--admin' })),
    );
    server.listen({ host: at.host, port: at.port }, () => resolve());
  });
  const a = server.address() as AddressInfo;
  bound = a.address;
  localOnly = opts.insecure !== true && !isLoopbackAddress(a.address);
  return {
    address: `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
