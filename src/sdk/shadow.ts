/**
 * A mirrored copy's I/O from the SDK (the engine's `Shadow` decides the rest: src/engine/mirror.ts):
 * the request's method, path and headers with the mirror's Host and its own x-skein-timeout-ms,
 * and the kept body, dispatched on the pool of the mirror endpoint (mTLS as for any call to it);
 * the response is read to its end and dropped, its status reported.
 */
import { Buffer } from 'node:buffer';
import type { Dispatcher } from 'undici';
import type { Endpoint } from '../discovery/endpoint.js';
import type { Shadow, ShadowDriver } from '../engine/mirror.js';
import type { Refusal } from '../engine/service-client.js';
import { ConnectReservation } from '../engine/admission.js';
import type { RequestContext } from './request.js';

type Controller = Dispatcher.DispatchController;

/** One copy in flight from the SDK. */
export class SdkShadow implements ShadowDriver {
  private ctrl: Controller | null = null;
  private aborted = false;
  private shadow: Shadow | null = null;
  /** The new connection this copy reserved (pending until the request is written or fails). */
  private readonly reserved = new ConnectReservation();
  private status = 0;

  constructor(
    private readonly ctx: RequestContext,
    private readonly method: string,
    private readonly path: string,
    /** The request's header pairs (its Host among them). */
    private readonly pairs: ReadonlyArray<readonly [string, string]>,
  ) {}

  send(s: Shadow, e: Endpoint): Refusal | null {
    const pool = this.ctx.pool(e);
    if ('code' in pool) return pool;
    if (pool.stats.free === 0) {
      // A new connection (or a wait for one): within the mirror service's connection limits.
      const refused = this.reserved.reserve(s.dest.traffic);
      if (refused !== null) return refused;
    }
    this.shadow = s;
    const headers: string[] = [];
    for (const [k, v] of this.pairs) headers.push(k, k === 'host' ? s.authority(v) : v);
    headers.push('x-skein-timeout-ms', String(s.timeoutMs));
    const body = s.body.length === 0 ? null : Buffer.concat(s.body);
    pool.dispatch(
      // The engine's timer abandons the copy (`abort`); undici's own are a backstop, at the same time.
      { path: this.path, method: this.method, headers, body, headersTimeout: s.timeoutMs, bodyTimeout: s.timeoutMs },
      {
        onRequestStart: (ctrl: Controller) => {
          this.reserved.settle();
          this.ctrl = ctrl;
          // Abandoned while it waited for its connection: not sent at all.
          if (this.aborted) ctrl.abort(new Error('the mirrored copy ran out of time'));
        },
        onResponseStart: (_c: Controller, status: number) => {
          if (status >= 200) this.status = status;
        },
        onResponseData: () => undefined,
        onResponseEnd: () => this.over(true, false),
        onResponseError: () => {
          const connecting = this.reserved.held;
          this.reserved.settle();
          this.over(false, connecting && !this.aborted);
        },
      },
    );
    return null;
  }

  abort(): boolean {
    const connecting = this.reserved.held;
    this.reserved.settle();
    this.shadow = null;
    this.aborted = true;
    this.ctrl?.abort(new Error('the mirrored copy ran out of time'));
    return connecting;
  }

  private over(answered: boolean, connect: boolean): void {
    const s = this.shadow;
    this.shadow = null;
    if (s === null) return;
    if (answered) s.answered(this.status);
    else s.failed(connect);
  }
}
