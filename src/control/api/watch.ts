/**
 * GET /v1/watch: the watch stream (snapshot, then diffs; NDJSON or SSE), resumable with
 * `since=` or Last-Event-ID. Open streams are ended when the API closes.
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { SkeinError } from '../../core/errors.js';
import type { WatchFormat } from '../publisher.js';
import type { ApiDeps } from './deps.js';
import { query, revQ, serviceParam } from './params.js';

export const watchRoutes: FastifyPluginAsync<ApiDeps> = async (app, { registry, publisher, stale }) => {
  const sinks = new Set<FastifyReply['raw']>();
  app.addHook('preClose', async () => {
    for (const raw of sinks) raw.destroy();
  });

  app.get('/v1/watch', (req, reply) => {
    const q = query(req, ['service', 'since', 'format']);
    const service = q['service'] === undefined || q['service'] === '' ? null : serviceParam(q['service']);
    let since = revQ(q, 'since');
    const lastEventId = req.headers['last-event-id'];
    if (since === null && typeof lastEventId === 'string' && /^\d{1,15}$/.test(lastEventId)) since = Number(lastEventId);
    const fmt = q['format'] ?? (String(req.headers.accept ?? '').includes('text/event-stream') ? 'sse' : 'ndjson');
    if (fmt !== 'ndjson' && fmt !== 'sse') throw new SkeinError('SKEIN_E_BAD_QUERY', 'query parameter "format" must be ndjson or sse', { field: 'format' });
    const format = fmt as WatchFormat;
    // A replica cut off from its store would hold a watcher on a stale view: send it to another.
    const why = stale?.() ?? null;
    if (why !== null) throw new SkeinError('SKEIN_E_STORE', `${why}; watch through another control-plane replica`);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': format === 'sse' ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
      'cache-control': 'no-cache, no-store',
      'x-skein-index': String(registry.revision),
      'x-accel-buffering': 'no',
    });
    raw.flushHeaders();
    raw.socket?.setNoDelay(true);
    sinks.add(raw);
    raw.once('close', () => sinks.delete(raw));
    publisher.subscribe({ service, since, format, sink: raw });
  });
};
