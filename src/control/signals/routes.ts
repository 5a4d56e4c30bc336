/**
 * The golden signals on the control plane API (docs/api.md#golden-signals):
 *   GET /v1/signals?window=1m                  every service (registered or seen), edges, routes
 *   GET /v1/signals/services/{service}?window  one service, the edges in and out of it, its routes
 *   GET /v1/signals/series?service=S&window    one point per scrape interval, for charts
 *   GET /v1/signals/services/{service}/versions?last=30s
 *                                              per version of the instances that answered (a
 *                                              canary's analysis), over the last scrape intervals
 *   GET /v1/signals/stream                     SSE: `signals` on connect and after every scrape
 *                                              round, `mesh-event` for every new mesh event
 *   POST /v1/events                            a runtime elsewhere (skein up --join) reports an event
 * Instances' status and address come from the registry; instances seen only in traffic are
 * "unknown". Errors are thrown as SkeinError and answered by the API's error handler.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { SkeinError } from '../../core/errors.js';
import { systemClock, type Clock } from '../../core/clock.js';
import { formatHostPort } from '../../core/address.js';
import { formatDuration, parseDuration } from '../../core/duration.js';
import type { Registry } from '../registry/registry.js';
import { query, serviceParam } from '../server.js';
import { FINE_MS, parseWindow, WINDOW_MS, type EdgeWindow, type Signals, type SignalStore, type SignalWindow, type WindowView } from './windows.js';
import { isMeshEventType, MESH_EVENT_TYPES, type MeshEvent, type MeshEvents, type MeshEventType } from './events.js';
import type { Scraper } from './scraper.js';
import { mtlsShare, noAuthzDecisions, type MeshSignalsBody, type StreamSignalsBody, type WireEdge, type WireInstance, type WireService, type WireSignals } from '../../api/signals.js';

export interface SignalsRouteDeps {
  store: SignalStore;
  events: MeshEvents;
  scraper: Scraper;
  registry: Registry;
  /** For the stream's keep-alive timer. Default the system clock. */
  clock?: Clock;
  /** Default 15 s. */
  keepAliveMs?: number;
}

export type { MeshSignalsBody, WireAuthz, WireEdge, WireInstance, WireRoute, WireService, WireSignals } from '../../api/signals.js';

const NO_TRAFFIC: WireSignals = Object.freeze({ rps: 0, successRate: null, latencyMs: Object.freeze({ p50: null, p95: null, p99: null }), requests: 0, failures: 0 });

function wire(s: Signals): WireSignals {
  return { rps: s.rps, successRate: s.successRate, latencyMs: { ...s.latencyMs }, requests: s.requests, failures: s.failures };
}

function wireEdge(e: EdgeWindow): WireEdge {
  return { source: e.source, destination: e.destination, ...wire(e), mtls: mtlsShare(e.mtls, e.requests), mtlsRequests: e.mtls };
}

function zero(): WireSignals {
  return { ...NO_TRAFFIC, latencyMs: { ...NO_TRAFFIC.latencyMs } };
}

/** A service is known when the registry has it or it had traffic in the last 15 minutes. */
export function knownService(deps: Pick<SignalsRouteDeps, 'registry' | 'store'>, name: string): boolean {
  return deps.registry.hasService(name) || deps.store.hasService(name);
}

function serviceEntry(registry: Registry, view: WindowView, name: string): WireService {
  const v = view.services.find((s) => s.service === name);
  const traffic = new Map((v?.instances ?? []).map((i) => [i.id, i]));
  const instances: WireInstance[] = [];
  const registered = registry.service(name)?.instances;
  if (registered !== undefined) {
    for (const rec of [...registered.values()].sort((a, b) => (a.instance.id < b.instance.id ? -1 : 1))) {
      const t = traffic.get(rec.instance.id);
      traffic.delete(rec.instance.id);
      instances.push({ id: rec.instance.id, status: rec.status, address: formatHostPort(rec.instance.address, rec.instance.port), ...(t === undefined ? zero() : wire(t)) });
    }
  }
  for (const t of traffic.values()) instances.push({ id: t.id, status: 'unknown', address: null, ...wire(t) });
  instances.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { service: name, ...(v === undefined ? zero() : wire(v)), instances, authz: v?.authz ?? noAuthzDecisions() };
}

/** The body of `GET /v1/signals?window=W`. */
export function meshSignals(deps: Pick<SignalsRouteDeps, 'registry' | 'store'>, window: SignalWindow, view: WindowView = deps.store.window(window)): MeshSignalsBody {
  const names = new Set<string>([...deps.registry.listServices().map((s) => s.name), ...view.services.map((s) => s.service)]);
  return {
    window,
    time: new Date(view.time).toISOString(),
    scrapeIntervalMs: deps.store.intervalMs,
    services: [...names].sort().map((n) => serviceEntry(deps.registry, view, n)),
    edges: view.edges.map(wireEdge),
    routes: view.routes.map((r) => ({ service: r.service, route: r.route, direction: r.direction, ...wire(r) })),
  };
}

/** The body of `GET /v1/signals/stream`'s `signals` event: the 10s signals and the mesh's totals. */
export function streamSignals(deps: Pick<SignalsRouteDeps, 'registry' | 'store'>): StreamSignalsBody {
  const view = deps.store.window('10s');
  return { ...meshSignals(deps, '10s', view), mesh: { rps: view.mesh.rps, successRate: view.mesh.successRate } };
}

function unknownService(name: string): SkeinError {
  return new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${name}" is not registered and has had no traffic in the last 15 minutes`, { field: 'service' });
}

export function signalsRoutes(app: FastifyInstance, deps: SignalsRouteDeps): void {
  const { store, events, scraper } = deps;
  const clock = deps.clock ?? systemClock;
  const keepAliveMs = deps.keepAliveMs ?? 15_000;
  const streams = new Set<FastifyReply['raw']>();
  // After a scrape round every stream gets the same body: computed once per round.
  let perRound: { round: number; text: string } | null = null;
  const signalsEvent = () => `event: signals\ndata: ${JSON.stringify(streamSignals(deps))}\n\n`;
  const roundEvent = () => {
    const round = scraper.counters.rounds;
    if (perRound?.round !== round) perRound = { round, text: signalsEvent() };
    return perRound.text;
  };

  app.get('/v1/signals', async (req) => {
    const q = query(req, ['window']);
    return meshSignals(deps, parseWindow(q['window']));
  });

  app.get<{ Params: { service: string } }>('/v1/signals/services/:service', async (req) => {
    const q = query(req, ['window']);
    const window = parseWindow(q['window']);
    const name = serviceParam(req.params.service);
    if (!knownService(deps, name)) throw unknownService(name);
    const view = store.window(window);
    return {
      window,
      time: new Date(view.time).toISOString(),
      scrapeIntervalMs: store.intervalMs,
      ...serviceEntry(deps.registry, view, name),
      edges: view.edges.filter((e) => e.source === name || e.destination === name).map(wireEdge),
      routes: view.routes.filter((r) => r.service === name).map((r) => ({ service: r.service, route: r.route, direction: r.direction, ...wire(r) })),
    };
  });

  app.get<{ Params: { service: string } }>('/v1/signals/services/:service/versions', async (req) => {
    const q = query(req, ['last']);
    const name = serviceParam(req.params.service);
    if (!knownService(deps, name)) throw unknownService(name);
    const lastMs = q['last'] === undefined ? WINDOW_MS['1m'] : parseDuration(q['last']);
    if (lastMs === undefined || lastMs < store.intervalMs || lastMs > FINE_MS) {
      throw new SkeinError('SKEIN_E_BAD_QUERY', `last must be a duration from the scrape interval (${formatDuration(store.intervalMs)}) to ${formatDuration(FINE_MS)}, got ${JSON.stringify(q['last'])}`, { field: 'last' });
    }
    return {
      service: name,
      lastMs,
      time: new Date(clock.now()).toISOString(),
      scrapeIntervalMs: store.intervalMs,
      versions: store.versions(name, lastMs).map((v) => ({ version: v.version, via: v.via, ...wire(v) })),
    };
  });

  app.get('/v1/signals/series', async (req) => {
    const q = query(req, ['service', 'window']);
    const window = parseWindow(q['window']);
    let service: string | null = null;
    if (q['service'] !== undefined && q['service'] !== '') {
      service = serviceParam(q['service']);
      if (!knownService(deps, service)) throw unknownService(service);
    }
    const s = store.series(window, service);
    return { service: s.service, window: s.window, stepMs: s.stepMs, points: s.points };
  });

  app.get('/v1/signals/stream', (req, reply) => {
    query(req, []);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-store',
      'x-accel-buffering': 'no',
    });
    raw.socket?.setNoDelay(true);
    streams.add(raw);
    // A client that does not read misses updates rather than growing the control plane's memory.
    const send = (text: string) => {
      if (!raw.destroyed && raw.writableLength < 1024 * 1024) raw.write(text);
    };
    send('retry: 1000\n\n');
    send(signalsEvent());
    const offScrape = scraper.onScrape(() => send(roundEvent()));
    const offEvents = events.subscribe((e: MeshEvent) => send(`event: mesh-event\ndata: ${JSON.stringify(e)}\n\n`));
    const keepAlive = clock.setInterval(() => send(': keep-alive\n\n'), keepAliveMs);
    raw.once('close', () => {
      offScrape();
      offEvents();
      keepAlive.cancel();
      streams.delete(raw);
    });
  });

  app.addHook('preClose', async () => {
    for (const raw of streams) raw.destroy();
  });
}

/**
 * `GET /v1/events?service=&limit=&type=` served from the mesh event feed (docs/api.md#events). The control
 * plane adds it beside `signalsRoutes`; it replaced the registry-only health event list.
 */
export function meshEventsRoute(app: FastifyInstance, deps: Pick<SignalsRouteDeps, 'registry' | 'store' | 'events' | 'clock'>): void {
  app.get('/v1/events', async (req) => {
    const q = query(req, ['service', 'limit', 'type']);
    const service = q['service'] === undefined || q['service'] === '' ? undefined : serviceParam(q['service']);
    let limit = 100;
    if (q['limit'] !== undefined) {
      if (!/^\d{1,5}$/.test(q['limit']) || Number(q['limit']) < 1 || Number(q['limit']) > 1000) {
        throw new SkeinError('SKEIN_E_BAD_QUERY', 'query parameter "limit" must be an integer from 1 to 1000', { field: 'limit' });
      }
      limit = Number(q['limit']);
    }
    let types: MeshEventType[] | undefined;
    if (q['type'] !== undefined && q['type'] !== '') {
      types = q['type'].split(',').map((t) => {
        if (!isMeshEventType(t)) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "type" must be a comma-separated list of ${MESH_EVENT_TYPES.join(', ')} (got "${t.slice(0, 40)}")`, { field: 'type' });
        return t;
      });
    }
    if (service !== undefined && !knownService(deps, service) && deps.events.recent({ service, limit: 1 }).length === 0) throw unknownService(service);
    const opts: { service?: string; limit: number; types?: MeshEventType[] } = { limit };
    if (service !== undefined) opts.service = service;
    if (types !== undefined) opts.types = types;
    return { events: deps.events.recent(opts) };
  });

  // A runtime that is not in this process (`skein up --join` on another host) reports its events.
  app.post('/v1/events', async (req, reply) => {
    const e = postedEvent(req.body);
    // A runtime reports on services it runs, which are registered (a typo is not a new service).
    if (!knownService(deps, e.service)) throw unknownService(e.service);
    const event = deps.events.add({ ...e.fields, time: (deps.clock ?? systemClock).now(), type: e.type, service: e.service, id: e.id, message: e.message });
    return reply.code(201).send({ event });
  });
}

/** The mesh events a runtime elsewhere may post (what `MeshRunner` emits). */
export const POSTED_EVENT_TYPES = ['scale', 'rollout', 'canary', 'autoscale'] as const satisfies readonly MeshEventType[];
const RESERVED = ['time', 'type', 'service', 'id', 'message'];
const MAX_POSTED_BYTES = 16 * 1024;

/** Checks a posted event {type, service, id?, message, ...fields}; errors name the field. */
export function postedEvent(body: unknown): { type: MeshEventType; service: string; id: string | null; message: string; fields: Record<string, unknown> } {
  const bad = (message: string, field: string) => new SkeinError('SKEIN_E_VALIDATION', message, { field });
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('the body must be a JSON object {type, service, id, message, ...fields}', 'body');
  const o = body as Record<string, unknown>;
  const size = Buffer.byteLength(JSON.stringify(o));
  if (size > MAX_POSTED_BYTES) throw bad(`an event is at most ${MAX_POSTED_BYTES} bytes of JSON, got ${size}`, 'body');
  const type = o['type'];
  if (typeof type !== 'string' || !(POSTED_EVENT_TYPES as readonly string[]).includes(type)) throw bad(`type must be one of ${POSTED_EVENT_TYPES.join(', ')} (the runtime's events), got ${JSON.stringify(type)?.slice(0, 40)}`, 'type');
  if (typeof o['service'] !== 'string') throw bad('service must be a service name', 'service');
  const service = serviceParam(o['service']);
  const id = o['id'] ?? null;
  if (id !== null && (typeof id !== 'string' || id === '' || id.length > 256)) throw bad('id must be an instance id (1 to 256 characters) or null', 'id');
  const message = o['message'];
  if (typeof message !== 'string' || message.trim() === '' || message.length > 1000) throw bad('message must be a text of 1 to 1000 characters', 'message');
  if (o['time'] !== undefined) throw bad('time is set by the control plane when it takes the event: leave it out', 'time');
  const fields = Object.fromEntries(Object.entries(o).filter(([k]) => !RESERVED.includes(k)));
  return { type: type as MeshEventType, service, id, message, fields };
}
