/**
 * `GET /v1/tap?service=S`: the requests to and from a service, live, from every proxy that sees
 * them. The control plane opens a tap on each proxy it knows (their admin `/tap`, NDJSON), also
 * on proxies that announce themselves while the tap runs, and relays the lines as they come.
 * Header values of secret headers (src/api/tap.ts) never leave a proxy.
 *
 * Each relayed tap is bounded as a proxy's are (a `TapStream`: lines dropped and counted when its
 * reader falls behind, ended when the reader stalls), and at most RELAY_TAP_LIMITS.maxTaps are
 * open: each is a tap on every proxy too. `GET /v1/taps` lists them.
 */
import type { FastifyInstance } from 'fastify';
import { SkeinError } from '../core/errors.js';
import type { Clock } from '../core/clock.js';
import { RELAY_TAP_LIMITS, type TapLimits } from '../api/tap.js';
import { TapStreams } from '../telemetry/tap.js';
import type { ProxyDirectory } from './proxies.js';
import { forEachLine } from '../core/lines.js';
import { query, serviceParam } from './server.js';

const MAX_LIMIT = 100_000;

function boolParam(q: Record<string, string>, name: string): boolean {
  const v = q[name];
  if (v === undefined || v === '0' || v === 'false') return false;
  if (v === '' || v === '1' || v === 'true') return true;
  throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${name}" must be true or false`, { field: name });
}

function limitParam(q: Record<string, string>): number {
  if (q['limit'] === undefined) return Number.POSITIVE_INFINITY;
  if (!/^\d{1,6}$/.test(q['limit']) || Number(q['limit']) < 1 || Number(q['limit']) > MAX_LIMIT) {
    throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "limit" must be a whole number from 1 to ${MAX_LIMIT}`, { field: 'limit' });
  }
  return Number(q['limit']);
}

/** A proxy's line that says how many lines it dropped: relayed, not counted against `limit`. */
const isMissedLine = (text: string) => text.startsWith('{"missed":');

export interface TapRelayDeps {
  proxies: ProxyDirectory;
  knownService: (s: string) => boolean;
  rescanMs?: number;
  limits?: Partial<TapLimits>;
  clock?: Clock;
}

export function tapRoutes(app: FastifyInstance, deps: TapRelayDeps): void {
  const streams = new TapStreams({ limits: { ...RELAY_TAP_LIMITS, ...deps.limits }, ...(deps.clock === undefined ? {} : { clock: deps.clock }) });
  app.get('/v1/taps', async (req) => {
    query(req, []);
    return streams.stats();
  });
  app.get('/v1/tap', (req, reply) => {
    const q = query(req, ['service', 'headers', 'bodies', 'limit']);
    if (q['service'] === undefined) throw new SkeinError('SKEIN_E_BAD_QUERY', 'query parameter "service" is required: the service to tap', { field: 'service' });
    const service = serviceParam(q['service']);
    const headers = boolParam(q, 'headers');
    const bodies = boolParam(q, 'bodies');
    const limit = limitParam(q);
    if (!deps.knownService(service)) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${service}" is not registered and has had no traffic`, { field: 'service' });
    const raw = reply.raw;
    const stream = streams.start({ service, headers, bodies }, raw);
    if (stream === null) {
      throw new SkeinError('SKEIN_E_TOO_MANY_TAPS', `the control plane already relays ${streams.limits.maxTaps} taps, the most it allows (each is a tap on every proxy); GET /v1/taps lists them`);
    }

    reply.hijack();
    raw.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-cache, no-store', 'x-accel-buffering': 'no' });
    raw.flushHeaders();
    raw.socket?.setNoDelay(true);
    const taps = new Map<string, AbortController>();
    let sent = 0;
    let over = false;
    const end = () => {
      if (over) return;
      over = true;
      stream.close();
      clearInterval(rescan);
      for (const ac of taps.values()) ac.abort();
      taps.clear();
      raw.end();
    };
    const line = (text: string) => {
      if (over || text.trim() === '') return;
      // A client that does not read misses lines (and is told how many) rather than growing the control plane's memory.
      if (!stream.write(text) || isMissedLine(text)) return;
      sent++;
      if (sent >= limit) end();
    };
    const params = new URLSearchParams({ service, headers: headers ? '1' : '0', bodies: bodies ? '1' : '0' });
    const open = (id: string, admin: string) => {
      const ac = new AbortController();
      taps.set(id, ac);
      void (async () => {
        try {
          const res = await fetch(`http://${admin}/tap?${params}`, { signal: ac.signal });
          if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`);
          await forEachLine(res.body, line);
        } catch {
          /* the proxy went away, was stopped or has no tap to spare: the next rescan tries again if it is still known */
        } finally {
          if (taps.get(id) === ac) taps.delete(id);
        }
      })();
    };
    const scan = () => {
      for (const p of deps.proxies.list()) if (!taps.has(p.id)) open(p.id, p.admin);
    };
    const rescan = setInterval(scan, deps.rescanMs ?? 2000);
    rescan.unref();
    raw.once('close', end);
    scan();
  });
}
