/**
 * A client of etcd 3.4 over its JSON gateway (`/v3/…`), with undici: the store Skein's control
 * plane stands on when it runs on several machines. Why the gateway and not the `etcd3` package:
 * docs/operations.md#running-on-etcd (hasleader, compaction, resume revisions and idle limits are
 * ours to control here; with `etcd3` they meant patching its private parts).
 *
 * Failing over: every call goes to one member and moves to the next one on a connection error,
 * on "no leader" (the `hasleader` metadata makes a member without a leader refuse at once) and,
 * for reads, on any "unavailable". A write that may have reached a member (the connection broke
 * or timed out after sending, or etcd said "unavailable" after taking it) is NOT retried: it
 * rejects with SKEIN_E_STORE saying its outcome is unknown (`details.outcome: 'unknown'`); the
 * caller reads back. A refusal by etcd (bad request, compacted revision, …) rejects with
 * SKEIN_E_STORE and `details.grpcCode` (11: the revision was compacted, or is in the future).
 */
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import { ETCD_DEFAULTS } from '../../../api/etcd.js';
import { systemClock, type Clock } from '../../../core/clock.js';
import { SkeinError } from '../../../core/errors.js';
import { PrefixWatch, gatewayMessage, type WatchHandlers } from './watch.js';
import {
  checkKey,
  checkLeaseId,
  checkRevision,
  encode,
  headerRevision,
  id,
  int,
  parseKv,
  prefixEnd,
  type KeyValue,
  type WireHeader,
  type WireKv,
} from './wire.js';

export type { KeyValue } from './wire.js';
export type { WatchEvent, WatchHandlers } from './watch.js';

export type Compare = { key: string; target: 'create' | 'mod' | 'version' | 'value'; op: '=' | '!=' | '<' | '>'; value: number | string };
export type TxnOp = { type: 'put'; key: string; value: string; lease?: string } | { type: 'del'; key: string; prefix?: boolean } | { type: 'get'; key: string; prefix?: boolean };
export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** per op of the branch taken: kvs of a get, deleted count of a del */
  results: Array<{ kvs?: KeyValue[]; deleted?: number; prevKv?: KeyValue | null }>;
}

export interface EtcdClientOptions {
  /** Client URLs of the members, e.g. http://10.0.0.1:2379. */
  endpoints: string[];
  /** One call on one member, answer included. Default ETCD_DEFAULTS.requestTimeoutMs. */
  requestTimeoutMs?: number;
  /** A watch that hears nothing for this long is resumed on another member. Default ETCD_DEFAULTS.watchIdleMs. */
  watchIdleMs?: number;
  logger?: Logger;
  clock?: Clock;
}

/** What a failed call carries in `SkeinError.details`. */
export interface EtcdErrorDetails {
  /** `unknown`: a write may or may not have been applied. `refused`: etcd did not apply it. */
  outcome: 'unknown' | 'refused';
  endpoint?: string;
  httpStatus?: number;
  /** The gRPC code etcd gave (3 invalid argument, 5 not found, 11 compacted/future revision, 14 unavailable). */
  grpcCode?: number;
  /** Why each member tried failed, when none could serve the call. */
  tried?: string[];
}

/** One lease renewal on one member: ~3 ms when the member has a leader. */
export const KEEPALIVE_TIMEOUT_MS = 500;

/** Connection errors raised before a request could be sent: safe to send it to another member. */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
/** gRPC codes of "this member cannot serve now": Canceled, DeadlineExceeded, Unavailable. */
const UNAVAILABLE = new Set([1, 4, 14]);

type Outcome<T> = { ok: true; value: T; endpoint: string } | { ok: false; kind: 'not-sent' | 'after-send' | 'final'; why: string; httpStatus?: number; grpcCode?: number };
type Failure = Extract<Outcome<unknown>, { ok: false }>;

/** Sorts an etcd error (HTTP status, gRPC code, message) into: another member may serve it, or not. */
function classify(endpoint: string, httpStatus: number, grpcCode: number | undefined, message: string): Failure {
  const why = `${endpoint}: etcd: ${message}`;
  // Refused before anything was proposed: the hasleader check, or load shedding.
  if (/no leader|too many requests/.test(message)) return { ok: false, kind: 'not-sent', why, httpStatus, grpcCode };
  if (httpStatus === 503 || (grpcCode !== undefined && UNAVAILABLE.has(grpcCode))) return { ok: false, kind: 'after-send', why, httpStatus, grpcCode };
  return { ok: false, kind: 'final', why, httpStatus, grpcCode };
}

interface Call {
  path: string;
  body: unknown;
  /** A write is not sent again once it may have been applied. */
  write: boolean;
  /** Send `hasleader` (default): a member without a leader refuses at once. */
  hasLeader?: boolean;
  /** Only this member (no fail-over). */
  endpoint?: string;
  /** This call's time on one member (default the request timeout). */
  timeoutMs?: number;
  /** The body of a 200 answer to the value (or a failure, for a stream's error line). */
  parse?: (text: string, endpoint: string) => unknown;
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  private readonly requestTimeoutMs: number;
  private readonly watchIdleMs: number;
  private readonly logger: Logger | undefined;
  private readonly clock: Clock;
  private readonly agent: Agent;
  private current = 0;
  private closed = false;
  private readonly watches = new Set<PrefixWatch>();

  constructor(o: EtcdClientOptions) {
    if (!Array.isArray(o.endpoints) || o.endpoints.length === 0) {
      throw new SkeinError('SKEIN_E_VALIDATION', 'etcd: endpoints: give at least one member URL (http://HOST:PORT)', { field: 'endpoints' });
    }
    this.endpoints = o.endpoints.map((e, i) => checkEndpoint(e, `endpoints[${i}]`));
    this.requestTimeoutMs = positive(o.requestTimeoutMs ?? ETCD_DEFAULTS.requestTimeoutMs, 'requestTimeoutMs');
    this.watchIdleMs = positive(o.watchIdleMs ?? ETCD_DEFAULTS.watchIdleMs, 'watchIdleMs');
    this.logger = o.logger;
    this.clock = o.clock ?? systemClock;
    // A connect that times out sent nothing, so it may go to another member: keep it well inside
    // the request timeout, which (after sending) makes a write's outcome unknown.
    this.agent = new Agent({ connect: { timeout: Math.max(100, Math.min(3_000, Math.floor(this.requestTimeoutMs / 2))) }, keepAliveTimeout: 30_000 });
  }

  async range(key: string, o: { prefix?: boolean; revision?: number; limit?: number; keysOnly?: boolean } = {}): Promise<{ kvs: KeyValue[]; revision: number; more: boolean; count: number }> {
    const body: Record<string, unknown> = { key: encode(checkKey(key)) };
    if (o.prefix) body.range_end = prefixEnd(key);
    if (o.revision !== undefined && o.revision !== 0) body.revision = String(checkRevision(o.revision, 'revision', 1));
    if (o.limit !== undefined && o.limit !== 0) body.limit = String(checkRevision(o.limit, 'limit', 1));
    if (o.keysOnly) body.keys_only = true;
    const j = (await this.call({ path: '/v3/kv/range', body, write: false })) as { header?: WireHeader; kvs?: WireKv[]; more?: boolean; count?: string };
    return { kvs: (j.kvs ?? []).map(parseKv), revision: headerRevision(j.header), more: j.more === true, count: int(j.count, 'count') };
  }

  /**
   * Every key under `prefix` at one revision, read in pages of `pageSize` keys: a fleet's listing
   * is more than one answer should carry (the per-call timeout covers the whole body; etcd's
   * answers have size limits). Pages after the first are read at the first one's revision, so the
   * listing is one consistent snapshot; if that revision is compacted away meanwhile, it starts over.
   */
  async list(prefix: string, pageSize: number = ETCD_DEFAULTS.pageSize): Promise<{ kvs: KeyValue[]; revision: number }> {
    const end = prefixEnd(checkKey(prefix));
    for (let attempt = 1; ; attempt++) {
      const kvs: KeyValue[] = [];
      let revision = 0;
      let from = prefix;
      try {
        for (;;) {
          const body: Record<string, unknown> = { key: encode(from), range_end: end, limit: String(checkRevision(pageSize, 'pageSize', 1)) };
          if (revision !== 0) body.revision = String(revision);
          const j = (await this.call({ path: '/v3/kv/range', body, write: false })) as { header?: WireHeader; kvs?: WireKv[]; more?: boolean };
          const page = (j.kvs ?? []).map(parseKv);
          if (revision === 0) revision = headerRevision(j.header);
          kvs.push(...page);
          if (j.more !== true || page.length === 0) return { kvs, revision };
          from = `${(page[page.length - 1] as KeyValue).key}\u0000`;
        }
      } catch (e) {
        const compacted = (e as SkeinError).details !== undefined && ((e as SkeinError).details as EtcdErrorDetails).grpcCode === 11;
        if (!compacted || attempt >= 3) throw e;
      }
    }
  }

  async put(key: string, value: string, o: { lease?: string; prevKv?: boolean } = {}): Promise<{ revision: number; prevKv: KeyValue | null }> {
    const body: Record<string, unknown> = { key: encode(checkKey(key)), value: encode(checkValue(value)) };
    if (o.lease !== undefined) body.lease = checkLeaseId(o.lease);
    if (o.prevKv) body.prev_kv = true;
    const j = (await this.call({ path: '/v3/kv/put', body, write: true })) as { header?: WireHeader; prev_kv?: WireKv };
    return { revision: headerRevision(j.header), prevKv: j.prev_kv ? parseKv(j.prev_kv) : null };
  }

  async delete(key: string, o: { prefix?: boolean } = {}): Promise<{ revision: number; deleted: number }> {
    const body: Record<string, unknown> = { key: encode(checkKey(key)) };
    if (o.prefix) body.range_end = prefixEnd(key);
    const j = (await this.call({ path: '/v3/kv/deleterange', body, write: true })) as { header?: WireHeader; deleted?: string };
    return { revision: headerRevision(j.header), deleted: int(j.deleted, 'deleted') };
  }

  async txn(t: { compare: Compare[]; success: TxnOp[]; failure?: TxnOp[] }): Promise<TxnResult> {
    const body = {
      compare: t.compare.map((c, i) => wireCompare(c, `compare[${i}]`)),
      success: t.success.map((op, i) => wireOp(op, `success[${i}]`)),
      failure: (t.failure ?? []).map((op, i) => wireOp(op, `failure[${i}]`)),
    };
    const j = (await this.call({ path: '/v3/kv/txn', body, write: true })) as { header?: WireHeader; succeeded?: boolean; responses?: WireTxnResponse[] };
    return {
      succeeded: j.succeeded === true, // left out when false
      revision: headerRevision(j.header),
      results: (j.responses ?? []).map((r) => {
        if (r.response_range) return { kvs: (r.response_range.kvs ?? []).map(parseKv) };
        if (r.response_delete_range) return { deleted: int(r.response_delete_range.deleted, 'deleted') };
        return { prevKv: r.response_put?.prev_kv ? parseKv(r.response_put.prev_kv) : null };
      }),
    };
  }

  /** Compacts the history up to `revision`; resolves once it is physically done. */
  async compact(revision: number): Promise<void> {
    try {
      await this.call({ path: '/v3/kv/compaction', body: { revision: String(checkRevision(revision, 'revision', 1)), physical: true }, write: false });
    } catch (e) {
      // Already compacted that far (by us, on a retry, or by another replica): done.
      if (e instanceof SkeinError && /required revision has been compacted/.test(e.message)) return;
      throw e;
    }
  }

  async leaseGrant(ttlSeconds: number): Promise<{ id: string; ttlSeconds: number }> {
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new SkeinError('SKEIN_E_VALIDATION', `ttlSeconds: a lease TTL is a whole number of seconds >= 1, not ${String(ttlSeconds)}`, { field: 'ttlSeconds' });
    }
    const j = (await this.call({ path: '/v3/lease/grant', body: { TTL: String(ttlSeconds) }, write: true })) as { ID?: string; TTL?: string; error?: string };
    const leaseId = id(j.ID);
    if (leaseId === null || (j.error !== undefined && j.error !== '')) throw new SkeinError('SKEIN_E_STORE', `etcd: lease grant failed: ${j.error || 'no lease ID in the answer'}`, { details: { outcome: 'refused' } satisfies EtcdErrorDetails });
    // etcd raises a TTL below its minimum (1.5 x the election timeout, rounded up).
    return { id: leaseId, ttlSeconds: int(j.TTL, 'TTL') };
  }

  /** One renewal; resolves with the TTL left (seconds), 0 when the lease is gone (expired or revoked). */
  async leaseKeepAliveOnce(leaseId: string): Promise<number> {
    // A bidi stream in gRPC; over the gateway one POST with one request is one renewal. Renewing
    // again is harmless, so a member that does not answer soon (cut off from its leader, which it
    // does not know yet: hasleader cannot tell) is left for the next at once: a lease's TTL may be
    // a few seconds, and a renewal stuck for the whole request timeout would let it run out.
    const j = (await this.call({
      path: '/v3/lease/keepalive',
      body: { ID: checkLeaseId(leaseId) },
      write: false,
      timeoutMs: Math.min(KEEPALIVE_TIMEOUT_MS, this.requestTimeoutMs),
      parse: (text, endpoint) => {
        const line = JSON.parse(text.split('\n')[0] ?? '{}') as { result?: { TTL?: string }; error?: { message?: string; grpc_code?: number; http_code?: number } };
        if (line.error) return classify(endpoint, line.error.http_code ?? 0, line.error.grpc_code, line.error.message ?? JSON.stringify(line.error));
        return line.result ?? {};
      },
    })) as { TTL?: string };
    return int(j.TTL, 'TTL');
  }

  /** Revokes the lease (its keys are deleted); resolves too when it is already gone. */
  async leaseRevoke(leaseId: string): Promise<void> {
    try {
      await this.call({ path: '/v3/lease/revoke', body: { ID: checkLeaseId(leaseId) }, write: false });
    } catch (e) {
      if (e instanceof SkeinError && (e.details as EtcdErrorDetails | undefined)?.grpcCode === 5) return; // requested lease not found
      throw e;
    }
  }

  /** watches a prefix from `fromRevision` (inclusive), with hasleader, progress notifications and an idle limit; reconnects and resumes by itself */
  watch(prefix: string, fromRevision: number, h: WatchHandlers): { close(): void } {
    this.checkOpen();
    checkRevision(fromRevision, 'fromRevision', 1);
    const w: PrefixWatch = new PrefixWatch(
      {
        endpoints: this.endpoints,
        preferred: () => this.current,
        open: (endpoint, body, signal) => this.open(endpoint, '/v3/watch', body, signal, true),
        list: (p) => this.list(p),
        clock: this.clock,
        idleMs: this.watchIdleMs,
        logger: this.logger,
      },
      prefix,
      fromRevision,
      h,
      () => this.watches.delete(w),
    );
    this.watches.add(w);
    return { close: () => w.close() };
  }

  /** the member answering and the cluster's leader, raft term, revision (POST /v3/maintenance/status; the gateway takes no GET) */
  async status(endpoint?: string): Promise<{ endpoint: string; leader: string; memberId: string; revision: number; raftTerm: number; dbSize: number }> {
    let answered = '';
    const j = (await this.call({
      path: '/v3/maintenance/status',
      body: {},
      write: false,
      hasLeader: false, // a member without a leader still says so
      ...(endpoint === undefined ? {} : { endpoint: checkEndpoint(endpoint, 'endpoint') }),
      parse: (text, ep) => {
        answered = ep;
        return JSON.parse(text);
      },
    })) as { header?: WireHeader; leader?: string; raftTerm?: string; dbSize?: string };
    return {
      endpoint: answered,
      leader: id(j.leader) ?? '', // '' while the member knows no leader
      memberId: id(j.header?.member_id) ?? '',
      revision: headerRevision(j.header),
      raftTerm: int(j.raftTerm, 'raftTerm'),
      dbSize: int(j.dbSize, 'dbSize'),
    };
  }

  /** Closes every watch and the connections; calls after this reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    await this.agent.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new SkeinError('SKEIN_E_STORE', 'etcd: the client is closed', { details: { outcome: 'refused' } satisfies EtcdErrorDetails });
  }

  private open(endpoint: string, path: string, body: string, signal: AbortSignal, hasLeader: boolean): Promise<Dispatcher.ResponseData> {
    return request(endpoint + path, {
      method: 'POST',
      body,
      signal,
      dispatcher: this.agent,
      headers: { 'content-type': 'application/json', ...(hasLeader ? { 'grpc-metadata-hasleader': 'true' } : {}) },
      // Our own timers (on the Clock) end calls and idle watches.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  /** One call on one member, within the request timeout. */
  private async attempt(endpoint: string, c: Call): Promise<Outcome<unknown>> {
    const ac = new AbortController();
    let timedOut = false;
    const timeoutMs = c.timeoutMs ?? this.requestTimeoutMs;
    const timer = this.clock.setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    try {
      const r = await this.open(endpoint, c.path, JSON.stringify(c.body), ac.signal, c.hasLeader !== false);
      const text = await r.body.text();
      if (r.statusCode !== 200) {
        let code: number | undefined;
        try {
          code = (JSON.parse(text) as { code?: number }).code;
        } catch {
          // not etcd's JSON error: the status says enough
        }
        return classify(endpoint, r.statusCode, code, gatewayMessage(text));
      }
      const value = c.parse ? c.parse(text, endpoint) : JSON.parse(text);
      if (isFailure(value)) return value;
      return { ok: true, value, endpoint };
    } catch (e) {
      const err = e as Error & { code?: string; cause?: { code?: string } };
      const code = err.code ?? err.cause?.code;
      if (timedOut) return { ok: false, kind: 'after-send', why: `${endpoint}: no answer within ${timeoutMs} ms` };
      if (code !== undefined && NOT_SENT.has(code)) return { ok: false, kind: 'not-sent', why: `${endpoint}: ${code} ${err.message}` };
      if (e instanceof SyntaxError) return { ok: false, kind: 'final', why: `${endpoint}: etcd's answer is not JSON: ${err.message}` };
      return { ok: false, kind: 'after-send', why: `${endpoint}: ${code ? `${code} ` : ''}${err.message}` };
    } finally {
      timer.cancel();
    }
  }

  /** A call that fails over between members (see the top of the file for which failures move on). */
  private async call(c: Call): Promise<unknown> {
    this.checkOpen();
    const tried: string[] = [];
    const order = c.endpoint !== undefined ? [c.endpoint] : this.endpoints.map((_, k) => this.endpoints[(this.current + k) % this.endpoints.length]!);
    for (const endpoint of order) {
      const r = await this.attempt(endpoint, c);
      if (r.ok) return r.value;
      const details: EtcdErrorDetails = { outcome: 'refused', endpoint, ...(r.httpStatus === undefined ? {} : { httpStatus: r.httpStatus }), ...(r.grpcCode === undefined ? {} : { grpcCode: r.grpcCode }) };
      if (r.kind === 'final') throw new SkeinError('SKEIN_E_STORE', `etcd refused ${c.path}: ${r.why}`, { details });
      if (r.kind === 'after-send' && c.write) {
        throw new SkeinError('SKEIN_E_STORE', `etcd: the outcome of ${c.path} is unknown (it may or may not have been applied; read back to know): ${r.why}`, {
          details: { ...details, outcome: 'unknown' },
        });
      }
      tried.push(r.why);
      this.logger?.debug({ path: c.path, why: r.why }, 'etcd: trying the next member');
      if (c.endpoint === undefined) this.current = (this.endpoints.indexOf(endpoint) + 1) % this.endpoints.length;
    }
    throw new SkeinError('SKEIN_E_STORE', `etcd: no member could serve ${c.path} (${tried.join('; ')})`, { details: { outcome: 'refused', tried } satisfies EtcdErrorDetails });
  }
}

interface WireTxnResponse {
  response_range?: { kvs?: WireKv[] };
  response_put?: { prev_kv?: WireKv };
  response_delete_range?: { deleted?: string };
}

function isFailure(v: unknown): v is Failure {
  return typeof v === 'object' && v !== null && (v as { ok?: unknown }).ok === false && 'kind' in v;
}

const TARGETS = { create: ['CREATE', 'create_revision'], mod: ['MOD', 'mod_revision'], version: ['VERSION', 'version'], value: ['VALUE', 'value'] } as const;
const RESULTS = { '=': 'EQUAL', '!=': 'NOT_EQUAL', '<': 'LESS', '>': 'GREATER' } as const;

function wireCompare(c: Compare, field: string): Record<string, unknown> {
  const target = TARGETS[c.target];
  const result = RESULTS[c.op];
  if (target === undefined) throw new SkeinError('SKEIN_E_VALIDATION', `${field}.target: one of create, mod, version, value, not ${JSON.stringify(c.target)}`, { field: `${field}.target` });
  if (result === undefined) throw new SkeinError('SKEIN_E_VALIDATION', `${field}.op: one of =, !=, <, >, not ${JSON.stringify(c.op)}`, { field: `${field}.op` });
  const out: Record<string, unknown> = { key: encode(checkKey(c.key, `${field}.key`)), target: target[0], result };
  if (c.target === 'value') {
    if (typeof c.value !== 'string') throw new SkeinError('SKEIN_E_VALIDATION', `${field}.value: a value compare takes a string, not ${JSON.stringify(c.value)}`, { field: `${field}.value` });
    out.value = encode(c.value);
  } else {
    if (typeof c.value !== 'number') throw new SkeinError('SKEIN_E_VALIDATION', `${field}.value: a ${c.target} compare takes a number, not ${JSON.stringify(c.value)}`, { field: `${field}.value` });
    out[target[1]] = String(checkRevision(c.value, `${field}.value`));
  }
  return out;
}

function wireOp(op: TxnOp, field: string): Record<string, unknown> {
  const key = encode(checkKey(op.key, `${field}.key`));
  switch (op.type) {
    case 'put':
      return { request_put: { key, value: encode(checkValue(op.value, `${field}.value`)), ...(op.lease === undefined ? {} : { lease: checkLeaseId(op.lease, `${field}.lease`) }) } };
    case 'del':
      return { request_delete_range: { key, ...(op.prefix ? { range_end: prefixEnd(op.key) } : {}) } };
    case 'get':
      return { request_range: { key, ...(op.prefix ? { range_end: prefixEnd(op.key) } : {}) } };
    default:
      throw new SkeinError('SKEIN_E_VALIDATION', `${field}.type: one of put, del, get, not ${JSON.stringify((op as { type: unknown }).type)}`, { field: `${field}.type` });
  }
}

function checkValue(v: string, field = 'value'): string {
  if (typeof v !== 'string') throw new SkeinError('SKEIN_E_VALIDATION', `${field}: a value is a string, not ${typeof v}`, { field });
  return v;
}

function checkEndpoint(e: string, field: string): string {
  let u: URL;
  try {
    u = new URL(e);
  } catch {
    throw new SkeinError('SKEIN_E_VALIDATION', `etcd: ${field}: not a URL: ${JSON.stringify(e)} (write http://HOST:PORT)`, { field });
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || (u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '') {
    throw new SkeinError('SKEIN_E_VALIDATION', `etcd: ${field}: a member's client URL is http(s)://HOST:PORT with no path, not ${JSON.stringify(e)}`, { field });
  }
  return u.origin;
}

function positive(n: number, field: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new SkeinError('SKEIN_E_VALIDATION', `etcd: ${field}: a positive number of ms, not ${String(n)}`, { field });
  return n;
}
