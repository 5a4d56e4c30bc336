/**
 * The messages between `skein proxy --workers N`'s main thread (src/proxy/workers.ts) and each of
 * its worker threads (worker.ts): plain data, structured-cloned over the worker's MessagePort.
 */
import type { AuthzDefault } from '../../api/authz/schema.js';
import type { StatsSnapshot } from '../../api/stats.js';
import type { TapRecord } from '../../api/tap.js';
import type { Limits } from '../http1/types.js';
import type { ListenerConnections, WorkloadInfo, WorkloadSpec } from '../proxy.js';
import type { TapFilter } from '../tap.js';
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
}

/** Questions the main thread asks a worker; each gets one `reply` with the same id. */
export type WorkerQuestion =
  | { readonly type: 'ask'; readonly id: number; readonly what: 'readiness' | 'metrics' | 'debug' | 'facts' }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'stats'; readonly since: number }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'picks'; readonly service: string; readonly key: string }
  | { readonly type: 'ask'; readonly id: number; readonly what: 'stop'; readonly graceMs: number };

export type MainMessage =
  | WorkerQuestion
  | { readonly type: 'tap'; readonly tap: number; readonly filter: TapFilter }
  | { readonly type: 'untap'; readonly tap: number }
  | { readonly type: 'ca-reply'; readonly id: number; readonly ok: true; readonly value: CaAnswer }
  | { readonly type: 'ca-reply'; readonly id: number; readonly ok: false; readonly error: string };

/** A worker's own facts for /debug/endpoints: its connections and requests. */
export interface WorkerFacts {
  readonly connections: readonly ListenerConnections[];
  /** Requests finished (the sum of its /stats series). */
  readonly requests: number;
}

export type WorkerAnswer = Readiness | StatsSnapshot | object | boolean | WorkerFacts | null;

export type WorkerMessage =
  | { readonly type: 'ready'; readonly workloads: readonly WorkloadInfo[] }
  | { readonly type: 'failed'; readonly code: string; readonly message: string; readonly field: string | null }
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly value: WorkerAnswer }
  | { readonly type: 'reply'; readonly id: number; readonly ok: false; readonly error: string }
  | { readonly type: 'tap-record'; readonly tap: number; readonly record: TapRecord }
  | { readonly type: 'cold-start'; readonly service: string }
  | { readonly type: 'ca'; readonly id: number; readonly question: CaQuestion };

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

  /** The reply to question `id` (a value, or an error's message); one for no question is ignored. */
  settle(id: number, reply: { ok: true; value: T } | { ok: false; error: string }): void {
    const w = this.waiting.get(id);
    this.waiting.delete(id);
    if (reply.ok) w?.resolve(reply.value);
    else w?.reject(new Error(reply.error));
  }

  /** Every question still waiting fails with `why` (the other side is gone). */
  failAll(why: string): void {
    for (const w of this.waiting.values()) w.reject(new Error(why));
    this.waiting.clear();
  }
}
