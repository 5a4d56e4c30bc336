/**
 * With several replicas on etcd, one replica (the elected one) scrapes the proxies, so the golden
 * signals and the mesh event feed it derives live there alone. Every other replica forwards those
 * reads (GET /v1/signals..., /v1/events, the signals' event stream included) to it, after its
 * own access check, as itself (the replicas share the admin token): any replica answers them,
 * whatever the caller authenticated with (a token, the dashboard's cookie, a loopback read), the
 * way Consul's followers forward consistent reads to their leader.
 *
 * - So is `POST /v1/events`, a runtime elsewhere (`skein up --join`) reporting its events: the
 *   leader's feed is the one every replica shows.
 * - The leader's URL is in the election key (`ElectionHolder`, kept current by the store's watch).
 * - A read is forwarded once: one that arrives forwarded (`x-skein-forwarded-by`) at a replica
 *   that does not lead (the leadership moved meanwhile) is answered 503, never forwarded again.
 * - No leader, or one that does not answer within `timeoutMs`: 503 SKEIN_E_NO_LEADER naming why.
 * - The answer says who served it: `x-skein-served-by: <replica>`.
 */
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { SkeinError } from '../core/errors.js';
import { sendError } from './api/errors.js';
import type { ElectionHolder } from './store/etcd-store.js';

/** What only the leader can answer: reads (path prefixes), and the events a runtime elsewhere posts. */
export const LEADER_READS = ['/v1/signals', '/v1/events'] as const;
export const LEADER_WRITES = ['/v1/events'] as const;
export const FORWARDED_BY = 'x-skein-forwarded-by';
export const SERVED_BY = 'x-skein-served-by';
/** Headers of the leader's answer passed back as they are. */
const PASSED = ['content-type', 'cache-control', 'x-accel-buffering', 'x-skein-error', 'retry-after'];

export interface LeaderReadsOptions {
  /** This replica's name. */
  readonly replica: string;
  /** What this replica authenticates to the leader with (the admin token). */
  readonly credential: string;
  leading(): boolean;
  leader(): ElectionHolder | null;
  /** Until the leader's answer starts. Default 5 s. */
  readonly timeoutMs?: number;
}

const isLeaderRead = (path: string) => LEADER_READS.some((p) => path === p || path.startsWith(`${p}/`));
const forLeader = (method: string, path: string) => (method === 'GET' ? isLeaderRead(path) : method === 'POST' && (LEADER_WRITES as readonly string[]).includes(path));

export function forwardLeaderReads(app: FastifyInstance, o: LeaderReadsOptions): void {
  const timeoutMs = o.timeoutMs ?? 5000;
  // Registered after the access check (server.ts): what is not allowed here is not forwarded.
  app.addHook('onRequest', async (req, reply) => {
    if (!forLeader(req.method, req.url.split('?')[0] as string)) return;
    if (o.leading()) {
      // On the raw response: the event stream writes its head itself.
      reply.raw.setHeader(SERVED_BY, o.replica);
      return;
    }
    const noLeader = (why: string) => sendError(reply, new SkeinError('SKEIN_E_NO_LEADER', `${req.url.split('?')[0]} is answered by the elected control-plane replica (it alone scrapes the proxies): ${why}; try again in a few seconds`));
    const from = req.headers[FORWARDED_BY];
    if (from !== undefined) return noLeader(`replica ${String(from)} forwarded it to ${o.replica}, which does not lead (the leadership is changing hands)`);
    const holder = o.leader();
    if (holder === null) return noLeader('no replica leads now (one is being elected)');
    if (holder.url === null) return noLeader(`the leader, ${holder.replica}, did not say where it is reached (a replica of an older version)`);
    const ac = new AbortController();
    reply.raw.once('close', () => ac.abort());
    const headers: Record<string, string> = { [FORWARDED_BY]: o.replica, authorization: `Bearer ${o.credential}` };
    for (const h of ['accept', 'last-event-id', 'content-type', 'content-length']) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    let up: Awaited<ReturnType<typeof request>>;
    try {
      // A posted event's body is not read here yet (this hook runs before parsing): it flows on as it is.
      up = await request(`${holder.url}${req.url}`, { method: req.method as 'GET' | 'POST', headers, signal: ac.signal, headersTimeout: timeoutMs, bodyTimeout: 0, ...(req.method === 'POST' ? { body: req.raw } : {}) });
    } catch (e) {
      return noLeader(`the leader, ${holder.replica} at ${holder.url}, did not answer: ${(e as Error).message}`);
    }
    reply.code(up.statusCode).header(SERVED_BY, String(up.headers[SERVED_BY] ?? holder.replica));
    for (const h of PASSED) {
      const v = up.headers[h];
      if (typeof v === 'string') reply.header(h, v);
    }
    // A stream (the signals' event stream) flows as it comes; closing the caller's side closes it.
    return reply.send(up.body);
  });
}
