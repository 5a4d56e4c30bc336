/**
 * The messages between `skein proxy --workers N`'s main thread (src/proxy/workers.ts) and each of
 * its worker threads (worker.ts): plain data, structured-cloned over the worker's MessagePort.
 */
import { ERROR_CODES, isSkeinError, SkeinError, type ErrorCode } from '../../core/errors.js';
import type { AuthzDefault } from '../../api/authz/schema.js';
import type { StatsSnapshot } from '../../api/stats.js';
import type { TapRecord } from '../../api/tap.js';
import type { Limits } from '../http1/types.js';
import type { ListenerConnections, WorkloadInfo, WorkloadSpec } from '../proxy.js';
import type { TapFilter } from '../../telemetry/tap.js';
import type { Readiness } from '../admin.js';
import type { CaInfo } from '../../api/ca.js';
import type { MtlsMode } from '../../api/mtls.js';
import type { CaAnswer, CaQuestion } from './ca.js';

/** `--workers`: from 1 (one proxy on the main thread, no worker threads) to 64. */
export const WORKERS_BOUNDS = { min: 1, max: 64 } as const;

/** What a worker builds its Proxy from (`workerData`). */
export interface WorkerInit {
  /** 0 binds first (ports 0 resolved); the others bind the ports it got, with SO_REUSEPORT too. */
  readonly index: number;
  /** The proxy's id: one announced proxy, whatever the number of workers. */
  readonly id: string;
  readonly logLevel: string;
  readonly workloads: readonly WorkloadSpec[];
  /** The control-plane replicas (each worker watches them itself); null: --no-control. */
  readonly control: readonly string[] | null;
  readonly token: string | null;
  readonly domain: string;
  readonly requestMetrics: boolean;
  readonly authzDefault: AuthzDefault;
  readonly limits: Partial<Limits>;
  /** --access-log / --audit-log targets, opened by each worker ("stdout" or a file appended to); null: off. */
  readonly accessLog: string | null;
  readonly auditLog: string | null;
  readonly trace: { readonly url: string; readonly sampleRatio: number } | null;
  /** mTLS on: the mesh's trust domain and mode; certificates come through the main thread (ca.ts). Null: off. */
  readonly mtls: { readonly trustDomain: string; readonly mode: MtlsMode; readonly info: CaInfo } | null;
  /**
   * mTLS on: the main thread's TLS session-ticket keys (48 bytes), so a session one worker made
   * resumes on another; rotated only by the main thread (`ticket-keys`). Null: mTLS off.
   */
  readonly ticketKeys: Uint8Array | null;
}

/** Questions the main thread asks a worker; each gets one `reply` with the same id. */
export type WorkerQuestion =
  | { readonly type: 'ask'; readonly id: number; readonly what: 'readiness' | 'metrics' | 'debug' | 'facts' }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'stats'; readonly since: number }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'picks'; readonly service: string; readonly key: string }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'stop'; readonly graceMs: number }
  // skein up's runtime (src/proxy/mesh-proxy.ts): workloads come and go while the proxy runs.
  | { readonly type: 'ask'; readonly id: number; readonly what: 'add'; readonly spec: WorkloadSpec }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'remove'; readonly name: string; readonly graceMs: number }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'in-flight'; readonly service: string }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'gone'; readonly service: string; readonly key: string; readonly timeoutMs: number };

export type MainMessage =
  | WorkerQuestion
  | { readonly type: 'tap'; readonly tap: number; readonly filter: TapFilter }
  | { readonly type: 'untap'; readonly tap: number }
  /** The main thread's session-ticket keys changed (a root left the trust bundle): every worker takes them. */
  | { readonly type: 'ticket-keys'; readonly keys: Uint8Array }
  | { readonly type: 'ca-reply'; readonly id: number; readonly ok: true; readonly value: CaAnswer }
  | ({ readonly type: 'ca-reply'; readonly id: number } & FailedReply);

/** A worker's own facts for /debug/endpoints: its connections and requests. */
export interface WorkerFacts {
  readonly connections: readonly ListenerConnections[];
  /** Requests finished (the sum of its /stats series). */
  readonly requests: number;
}

export type WorkerAnswer = Readiness | StatsSnapshot | object | boolean | WorkerFacts | WorkloadInfo | number | null;

/** A question that failed: its message, and the SkeinError's code and field when it was one. */
export interface FailedReply {
  readonly ok: false;
  readonly error: string;
  readonly code?: string;
  readonly field?: string | null;
}

export type WorkerMessage =
  | { readonly type: 'ready'; readonly workloads: readonly WorkloadInfo[] }
  /** The worker could not start (its error, a SkeinError again on the main thread: `replyError`). */
  | ({ readonly type: 'failed' } & FailedReply)
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly value: WorkerAnswer }
  | ({ readonly type: 'reply'; readonly id: number } & FailedReply)
  | { readonly type: 'tap-record'; readonly tap: number; readonly record: TapRecord }
  | { readonly type: 'cold-start'; readonly service: string }
  | { readonly type: 'ca'; readonly id: number; readonly question: CaQuestion };

/** An error as it crosses a MessagePort (a SkeinError keeps its code and field). */
export function failedReply(e: unknown): FailedReply {
  return isSkeinError(e) ? { ok: false, error: e.message, code: e.code, field: e.field ?? null } : { ok: false, error: (e as Error).message };
}

/** The error a FailedReply stands for: a SkeinError with its code and field, or an Error. */
export function replyError(r: FailedReply): Error {
  if (r.code === undefined) return new Error(r.error);
  const code: ErrorCode = r.code in ERROR_CODES ? (r.code as ErrorCode) : 'SKEIN_E_INTERNAL';
  return new SkeinError(code, r.error, r.field == null ? {} : { field: r.field });
}

/**
 * Questions sent over a MessagePort (either way: the admin server's to a worker, a worker's to the
 * main thread's CA), each waiting for the reply that carries its id.
 */
export class Pending<T> {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: T) => void; reject: (e: Error) => void }>();

  /** A new question: its id (send it along) and the promise of its answer. */
  add(): { id: number; answer: Promise<T> } {
    const id = ++this.next;
    const answer = new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    return { id, answer };
  }

  /** The reply to question `id` (a value, or an error: a SkeinError again when it was one); one for no question is ignored. */
  settle(id: number, reply: { ok: true; value: T } | FailedReply): void {
    const w = this.waiting.get(id);
    this.waiting.delete(id);
    if (reply.ok) w?.resolve(reply.value);
    else w?.reject(replyError(reply));
  }

  /** Every question still waiting fails with `why` (the other side is gone). */
  failAll(why: string): void {
    for (const w of this.waiting.values()) w.reject(new Error(why));
    this.waiting.clear();
  }
}
