/**
 * One mesh request of the SDK: the undici driver of the engine's Call (src/engine/call.ts), as the
 * HTTP/1 exchange is the proxy's. The Call decides every attempt, retry, deadline and error; this
 * file only moves the request and its response between the app's undici handler and an undici Pool
 * per endpoint:
 *
 *   app's handler ◄── MeshRequest ◄──decisions── Call (engine)
 *                        │  ▲
 *                   send ▼  │ outcomes (connected, head, reset, ...)
 *                      Pool of the endpoint (undici)
 *
 * What the app sees is what a caller of the proxy sees: the app's response (its status, headers
 * and body), or the proxy error the Call decided (the status, `x-skein-error`, the JSON body, and
 * `x-skein-explain` when asked), as a response: never a thrown error, except when the app itself
 * aborted or the response was cut after its head (as a proxy would cut the connection).
 */
import { IDEMPOTENT_METHODS } from '../resilience/retry.js';
import { Buffer } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { normalizePath } from '../authz/normalize.js';
import type { Rng } from '../core/backoff.js';
import type { Clock } from '../core/clock.js';
import { ERROR_CODES, SkeinError, type ErrorCode } from '../core/errors.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { admit, badDeadline, connectSettled, deadlineMs, deadlineOf, isRefusal, reserveConnection, type AdmissionCounters } from '../engine/admission.js';
import { errorBody, errorHead, refusedByPeer } from '../engine/answer.js';
import type { Mirrors, Shadow } from '../engine/mirror.js';
import { SdkShadow } from './shadow.js';
import { Call, localExplanation, type Attempt, type CallCounters, type CallDriver, type CallFailure, type CallRequest } from '../engine/call.js';
import type { Refusal, ServiceClient } from '../engine/service-client.js';
import type { NotRouted } from './mesh.js';
import type { RoutePolicy } from '../api/traffic.js';
import type { TlsRefusal } from '../api/mtls.js';
import { isSecretHeader, REDACTED } from '../api/tap.js';
import { TAP_BODIES, TAP_HEADERS, type TapSink } from '../engine/observe.js';
import { TapCapture } from '../telemetry/tap.js';

type Handler = Dispatcher.DispatchHandler;
type Controller = Dispatcher.DispatchController;
type Headers = Record<string, string | string[] | undefined>;

/** What a request of the SDK needs of its dispatcher. */
export interface RequestContext {
  /** The calling workload (a per-caller rate limit counts against it). */
  readonly workload: string;
  /** The calling service: sent as x-skein-caller; null: none. */
  readonly service: string | null;
  readonly clock: Clock;
  readonly rng: Rng;
  readonly counters: CallCounters & AdmissionCounters;
  /** Copies of requests to their routes' mirrors (src/engine/mirror.ts). */
  readonly mirrors: Mirrors;
  /** The pool of connections to `e`, or why there is none (mTLS strict and no certificate to present). */
  pool(e: Endpoint): (Dispatcher & { readonly stats: { readonly free: number } }) | Refusal;
  /** A connection to `e` the mTLS check refused (counted, logged). */
  tlsRefused?(e: Endpoint, err: SdkTlsRefused): void;
  /** One call per finished request (metrics). */
  finished(r: FinishedRequest): void;
  /** The open taps (`skein tap`): asked once per request, told of it when it finishes only if they want it. */
  readonly tap: TapSink;
}

/** A finished request, as the metrics count it (the proxy's ListenerMetrics.record). */
export interface FinishedRequest {
  readonly service: string;
  readonly route: string | null;
  readonly endpoint: Endpoint | null;
  readonly status: number;
  /** An answer the mesh made itself (x-skein-error), or null. */
  readonly code: ErrorCode | null;
  readonly seconds: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
}

/**
 * A connection the mTLS check refused, with the proxy's reason (TLS_REFUSALS): what the SDK's
 * connector (tls.ts) fails a connect with. Here, not in tls.ts, so that telling it apart does not
 * load the mTLS modules.
 */
export class SdkTlsRefused extends Error {
  constructor(
    readonly reason: TlsRefusal,
    detail: string,
  ) {
    super(detail);
  }
}

/** Headers the mesh owns: what the app sent of them is read, never forwarded. */
const OWN = new Set(['x-skein-timeout-ms', 'x-skein-explain', 'x-skein-caller', 'x-skein-client-id', 'host']);
const EMPTY: readonly Buffer[] = [];

/** undici's header forms, as lower-case name / value pairs. */
export function headerPairs(h: Dispatcher.DispatchOptions['headers']): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (h == null) return out;
  const add = (k: string, v: unknown) => {
    if (v === undefined || v === null) return;
    if (Array.isArray(v)) for (const x of v) out.push([k.toLowerCase(), String(x)]);
    else out.push([k.toLowerCase(), String(v)]);
  };
  if (Array.isArray(h)) {
    if (h.length > 0 && typeof h[0] === 'string') for (let i = 0; i + 1 < h.length; i += 2) add(h[i] as string, h[i + 1]);
    else for (const [k, v] of h as unknown as Iterable<[string, unknown]>) add(k, v);
    return out;
  }
  if (typeof (h as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const [k, v] of h as Iterable<[string, unknown]>) add(k, v);
    return out;
  }
  for (const [k, v] of Object.entries(h as Record<string, unknown>)) add(k, v);
  return out;
}

/** The app's request body as bytes when it is at hand, or an async source to read. */
function bodyOf(b: unknown): Buffer | AsyncIterable<Uint8Array | string> | null {
  if (b === undefined || b === null) return null;
  if (typeof b === 'string') return Buffer.from(b);
  if (b instanceof Uint8Array) return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (typeof (b as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') return b as AsyncIterable<Uint8Array | string>;
  throw new SkeinError('SKEIN_E_SDK_UNSUPPORTED', `a mesh request's body must be a string, bytes, a stream or an async iterable (got ${Object.prototype.toString.call(b)})`);
}

/** The controller the app's handler gets: abort, pause and resume reach the current attempt. */
class AppController implements Controller {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  rawHeaders: Controller['rawHeaders'] = null;
  rawTrailers: Controller['rawTrailers'] = null;

  constructor(private readonly r: MeshRequest) {}

  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.r.appAborted(reason);
  }
  pause(): void {
    this.paused = true;
    this.r.upstream?.pause();
  }
  resume(): void {
    this.paused = false;
    this.r.upstream?.resume();
  }
}

/** One attempt's undici handler: its callbacks count only while it is the request's current attempt. */
class AttemptHandler implements Handler {
  ctrl: Controller | null = null;
  started = false;
  /** Counted in the service's pending requests (waiting for a connection). */
  pending = false;

  constructor(
    private readonly r: MeshRequest,
    readonly n: number,
  ) {}

  private get live(): boolean {
    return this.r.attempt === this;
  }

  onRequestStart(ctrl: Controller): void {
    this.ctrl = ctrl;
    this.r.unpend(this);
    if (!this.live) {
      ctrl.abort(new Error('attempt abandoned'));
      return;
    }
    this.started = true;
    this.r.started(this);
  }
  onResponseStart(ctrl: Controller, status: number, headers: Headers, message?: string): void {
    if (this.live) this.r.head(ctrl, status, headers, message);
    else ctrl.abort(new Error('attempt abandoned'));
  }
  onResponseData(_ctrl: Controller, chunk: Buffer): void {
    if (this.live) this.r.data(chunk);
  }
  onResponseEnd(ctrl: Controller, trailers: Headers): void {
    if (this.live) this.r.end(ctrl, trailers);
  }
  onResponseError(_ctrl: Controller, err: Error): void {
    this.r.unpend(this);
    if (this.live) this.r.error(this, err);
  }
}

/** Reads up to `max` bytes of a body source: the bytes, and the rest (null: it ended within them). */
async function readUpTo(src: AsyncIterable<Uint8Array | string>, max: number): Promise<{ chunks: Buffer[]; rest: AsyncIterator<Uint8Array | string> | null }> {
  const it = src[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let n = 0;
  while (n <= max) {
    const x = await it.next();
    if (x.done === true) return { chunks, rest: null };
    const b = typeof x.value === 'string' ? Buffer.from(x.value) : Buffer.from(x.value.buffer, x.value.byteOffset, x.value.byteLength);
    chunks.push(b);
    n += b.length;
  }
  return { chunks, rest: it };
}

/** `first`, then the rest of the source; `seen` gets each chunk of the rest (a tap's capture of the body). */
async function* concat(first: readonly Buffer[], rest: AsyncIterator<Uint8Array | string> | null, seen: TapCapture | null): AsyncGenerator<Uint8Array | string> {
  for (const b of first) yield b;
  if (rest === null) return;
  for (;;) {
    const x = await rest.next();
    if (x.done === true) return;
    seen?.add(typeof x.value === 'string' ? Buffer.from(x.value) : Buffer.from(x.value.buffer, x.value.byteOffset, x.value.byteLength));
    yield x.value;
  }
}

/** Headers as a tap shows them: lower-case names, a repeated header's values joined with ", ", secrets redacted. */
function tapHeaders(pairs: Iterable<readonly [string, string | readonly string[] | undefined]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    const name = k.toLowerCase();
    const value = isSecretHeader(name) ? REDACTED : typeof v === 'string' ? v : v.join(', ');
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  }
  return out;
}

export class MeshRequest implements CallDriver {
  readonly ctrl = new AppController(this);
  /** The current attempt (null: none out). */
  attempt: AttemptHandler | null = null;
  private call: Call | null = null;
  private dest!: ServiceClient;
  private route: RoutePolicy | null = null;
  private readonly t0 = performance.now();
  private readonly pairs: Array<[string, string]>;
  private readonly path: string;
  private readonly method: string;
  private requestId = '';
  private explain = false;
  private callerDeadline = -1;
  private badDeadline: string | null = null;
  private hasBody = false;
  /** The body of the first attempt (a retry sends what the Call kept). */
  private first: readonly Buffer[] = EMPTY;
  private rest: AsyncIterator<Uint8Array | string> | null = null;
  private requestBytes = 0;
  private responseBytes = 0;
  private status = 0;
  private discard = false;
  private done = false;
  /** What taps want of this request (TAP_* bits; 0, the common case: nothing is kept), and what they get of it. */
  private tapWants = 0;
  private tapRequestHeaders: Record<string, string> | null = null;
  private tapResponseHeaders: Record<string, string> | null = null;
  private tapRequestBody: TapCapture | null = null;
  private tapResponseBody: TapCapture | null = null;

  constructor(
    private readonly ctx: RequestContext,
    /** The service the origin names. */
    private readonly service: string,
    /** Its client, or why there is none (answered like the proxy's outbound listener). */
    private readonly target: ServiceClient | NotRouted,
    private readonly authority: string,
    private readonly opts: Dispatcher.DispatchOptions,
    private readonly handler: Handler,
  ) {
    this.method = opts.method.toUpperCase();
    this.pairs = [];
    for (const [k, v] of headerPairs(opts.headers)) {
      if (k === 'x-skein-timeout-ms') {
        const ms = deadlineMs(v);
        if (typeof ms === 'string') this.badDeadline ??= ms;
        else if (this.callerDeadline < 0 || ms < this.callerDeadline) this.callerDeadline = ms;
      } else if (k === 'x-skein-explain') this.explain = v === '1';
      else if (k === 'x-request-id' && this.requestId === '') this.requestId = v;
      if (!OWN.has(k)) this.pairs.push([k, v]);
    }
    this.path = opts.path;
  }

  // ---- what routes and hashing balancers read of the request ----

  header(lowerName: string): string | undefined {
    let v: string | undefined;
    for (const [k, x] of this.pairs) if (k === lowerName) v = v === undefined ? x : `${v}, ${x}`;
    return v;
  }
  get sourceAddress(): string | undefined {
    return undefined;
  }

  /** The current attempt's undici controller (back-pressure), once it started. */
  get upstream(): Controller | null {
    return this.attempt?.ctrl ?? null;
  }

  /** Routes, admits and starts the call (as the proxy's downstream does with a request head). */
  start(): void {
    this.handler.onRequestStart?.(this.ctrl, {});
    if (this.requestId === '') {
      this.requestId = randomUUID();
      this.pairs.push(['x-request-id', this.requestId]);
    }
    if (this.ctx.service !== null) this.pairs.push(['x-skein-caller', this.ctx.service]);
    this.pairs.push(['host', this.authority]);
    const wants = this.ctx.tap.wants(this.ctx.service, this.service);
    if (wants !== 0) {
      this.tapWants = wants;
      if ((wants & TAP_HEADERS) !== 0) this.tapRequestHeaders = tapHeaders(this.pairs);
      if ((wants & TAP_BODIES) !== 0) this.tapRequestBody = new TapCapture();
    }
    const target = this.target;
    if ('error' in target) {
      this.local(target.error, target.message, target.status);
      return;
    }
    this.dest = target;
    const p = normalizePath(this.path);
    if ('error' in p) {
      this.local('SKEIN_E_BAD_PATH', `request target "${this.path.slice(0, 100)}": ${p.error}`);
      return;
    }
    const route = this.dest.traffic.routes.match({ method: this.method, path: p.path, header: (n) => this.header(n) });
    this.route = route;
    if (this.badDeadline !== null) {
      this.refused(badDeadline(this.badDeadline));
      return;
    }
    const timeoutMs = deadlineOf(route, 'outbound', this.dest.service, this.callerDeadline);
    if (typeof timeoutMs !== 'number') {
      this.refused(timeoutMs);
      return;
    }
    let body: ReturnType<typeof bodyOf>;
    try {
      body = bodyOf(this.opts.body);
    } catch (e) {
      this.throwToApp(e as Error);
      return;
    }
    const admitted = admit(this.dest.traffic, route, 'outbound', this.ctx.workload, this.ctx.rng, this.ctx.counters);
    if (isRefusal(admitted)) {
      this.refused(admitted);
      return;
    }
    const req: CallRequest = {
      direction: 'outbound',
      route,
      idempotent: IDEMPOTENT_METHODS.has(this.method),
      hasBody: body !== null && !(Buffer.isBuffer(body) && body.length === 0),
      upgrade: false,
      timeoutMs,
      delayMs: admitted.delayMs,
      hash: this,
      hop: null,
    };
    this.hasBody = req.hasBody;
    const call = new Call(this.dest, req, this, this.ctx.clock, this.ctx.counters, this.ctx.rng);
    this.call = call;
    const dest = this.dest;
    // A copy takes its place once its request's body is in (a streamed one may never be).
    const copyOf = () => this.ctx.mirrors.shadow('outbound', dest, route, req.idempotent, false);
    if (body === null || Buffer.isBuffer(body)) {
      const shadow = copyOf();
      if (body !== null && body.length > 0) {
        this.first = [body];
        this.requestBytes = body.length;
        this.tapRequestBody?.add(body);
        call.requestBody(body);
        shadow?.requestBody(body);
      }
      call.requestComplete();
      call.start();
      if (shadow !== null) this.mirror(shadow);
      return;
    }
    // A streamed body: read what a retry may send again (route.retries.maxBodyBytes) before the
    // first attempt; past that, the rest streams (and the call will not retry).
    readUpTo(body, route.retries.maxBodyBytes).then(
      ({ chunks, rest }) => {
        if (this.done) return;
        const shadow = copyOf();
        this.first = chunks;
        this.rest = rest;
        for (const c of chunks) {
          this.requestBytes += c.length;
          this.tapRequestBody?.add(c);
          call.requestBody(c);
          // A body past retries.maxBodyBytes (there is a rest) drops the copy here.
          shadow?.requestBody(c);
        }
        if (rest === null) call.requestComplete();
        call.start();
        if (shadow !== null) this.mirror(shadow);
      },
      (e: Error) => this.throwToApp(e),
    );
  }

  /** The copy of a complete request (its body kept) goes to its mirror, once the request itself is on its way. */
  private mirror(shadow: Shadow): void {
    shadow.send(new SdkShadow(this.ctx, this.opts.method, this.path, this.pairs), this);
  }

  // ---- the call's decisions ----

  send(a: Attempt): Refusal | null {
    const pool = this.ctx.pool(a.endpoint);
    if ('code' in pool) return pool;
    const t = this.dest.traffic;
    const h = new AttemptHandler(this, a.n);
    if (pool.stats.free === 0) {
      // A new connection (or a wait for one): within the service's connection limits.
      const refused = reserveConnection(t);
      if (refused !== null) return refused;
      h.pending = true;
    }
    this.attempt = h;
    this.discard = false;
    const left = this.call?.timeLeftMs() ?? 0;
    const headers: string[] = [];
    for (const [k, v] of this.pairs) headers.push(k, v);
    if (left > 0) headers.push('x-skein-timeout-ms', String(left));
    let body: Buffer | AsyncIterable<Uint8Array | string> | null = null;
    if (a.n > 1 || a.fresh) body = a.body.length === 0 ? null : Buffer.concat(a.body as Uint8Array[]);
    else if (this.rest !== null) body = concat(this.first, this.rest, this.tapRequestBody);
    else if (this.first.length > 0) body = this.first.length === 1 ? (this.first[0] as Buffer) : Buffer.concat(this.first as Buffer[]);
    const o = this.opts;
    pool.dispatch(
      {
        path: this.path,
        method: o.method,
        headers,
        body: body as Dispatcher.DispatchOptions['body'],
        idempotent: IDEMPOTENT_METHODS.has(this.method),
        // Deadlines are the Call's: undici's own timers only guard against a peer that never answers.
        headersTimeout: 0,
        ...(o.bodyTimeout === undefined ? {} : { bodyTimeout: o.bodyTimeout }),
      },
      h,
    );
    return null;
  }

  abandon(): void {
    const h = this.attempt;
    this.attempt = null;
    this.discard = false;
    if (h === null) return;
    this.unpend(h);
    h.ctrl?.abort(new Error('attempt abandoned by the mesh'));
  }

  fail(f: CallFailure): void {
    this.attempt = null;
    this.answer(f.code, f.message, f.status, f.details, f.explanation, f.retryAfterMs);
  }

  // ---- what an attempt reports ----

  /** A pending attempt got its connection (or failed): no longer waiting for one. */
  unpend(h: AttemptHandler): void {
    if (!h.pending) return;
    h.pending = false;
    connectSettled(this.dest.traffic);
  }

  started(h: AttemptHandler): void {
    if (this.call?.connected() !== true) {
      this.attempt = null;
      h.ctrl?.abort(new Error('the call is over'));
    }
  }

  head(ctrl: Controller, status: number, headers: Headers, message?: string): void {
    const call = this.call;
    if (call === null || this.done) return;
    const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
    const peerRefused = refusedByPeer(call.endpoint, one(headers['x-skein-error-origin']), one(headers['x-skein-error']));
    if (call.responseHead(status, peerRefused) === 'discard') {
      this.discard = true;
      return;
    }
    this.status = status;
    const app = this.ctrl;
    let raw = ctrl.rawHeaders ?? null;
    const out: Headers = { ...headers };
    if (this.explain) {
      const x = call.explanation();
      out['x-skein-explain'] = x;
      if (Array.isArray(raw)) raw = [...(raw as string[]), 'x-skein-explain', x];
    }
    app.rawHeaders = raw;
    if ((this.tapWants & TAP_HEADERS) !== 0) this.tapResponseHeaders = tapHeaders(Object.entries(out));
    this.handler.onResponseStart?.(app, status, out, message);
  }

  data(chunk: Buffer): void {
    if (this.discard || this.done) return;
    this.responseBytes += chunk.length;
    if ((this.tapWants & TAP_BODIES) !== 0) (this.tapResponseBody ??= new TapCapture()).add(chunk);
    this.handler.onResponseData?.(this.ctrl, chunk);
  }

  end(ctrl: Controller, trailers: Headers): void {
    const call = this.call;
    if (call === null || this.done) return;
    if (this.discard) {
      this.discard = false;
      this.attempt = null;
      call.discarded();
      return;
    }
    this.attempt = null;
    call.responseComplete();
    this.finish(this.status, null);
    this.ctrl.rawTrailers = ctrl.rawTrailers ?? null;
    this.handler.onResponseEnd?.(this.ctrl, trailers);
  }

  error(h: AttemptHandler, err: Error): void {
    const call = this.call;
    if (call === null || this.done) return;
    const code = (err as { code?: string }).code;
    if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
      // The app's request cannot be sent at all: its mistake, thrown as undici would.
      call.clientGone();
      this.throwToApp(err);
      return;
    }
    this.attempt = null;
    if (this.discard) {
      // The dropped response was cut short: the retry goes ahead all the same.
      this.discard = false;
      call.discarded();
      return;
    }
    if (!h.started) {
      const tls = err instanceof SdkTlsRefused;
      if (tls && call.endpoint !== null) this.ctx.tlsRefused?.(call.endpoint, err);
      call.connectFailed(err.message, tls);
      return;
    }
    const answered = this.status > 0;
    if (call.reset('reset', err.message, false, answered)) {
      // Part of the response reached the app: it sees the cut, as a proxy's client would.
      this.finish(this.status, 'SKEIN_E_UPSTREAM_RESET');
      this.handler.onResponseError?.(this.ctrl, err);
    }
  }

  /** The app aborted: the call is over (an unanswered breaker probe counts), the attempt dropped. */
  appAborted(reason: Error): void {
    if (this.done) return;
    this.call?.clientGone();
    const h = this.attempt;
    this.attempt = null;
    if (h !== null) {
      this.unpend(h);
      h.ctrl?.abort(reason);
    }
    this.finish(0, null);
    queueMicrotask(() => this.handler.onResponseError?.(this.ctrl, reason));
  }

  // ---- answers the mesh makes itself ----

  private refused(r: Refusal): void {
    this.local(r.code, r.message, r.status, r.details, r.retryAfterMs);
  }

  /** An answer before any call (routing, deadline, admission). */
  private local(code: ErrorCode, message: string, status?: number, details?: Record<string, unknown>, retryAfterMs?: number): void {
    const explanation = localExplanation(this.route?.name ?? null, 'error' in this.target ? null : this.service, code);
    this.answer(code, message, status ?? ERROR_CODES[code].status, details, explanation, retryAfterMs);
  }

  /** Answers the app as the proxy would: the status, x-skein-error and the JSON body. */
  private answer(code: ErrorCode, message: string, status: number, details: Record<string, unknown> | undefined, explanation: string, retryAfterMs?: number): void {
    if (this.done) return;
    const body = Buffer.from(errorBody(code, message, this.requestId, details), 'latin1');
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(body.length) };
    for (const [name, value] of errorHead(code, 'outbound', { requestId: this.requestId, retryAfterMs, explanation: this.explain ? explanation : null }).headers) headers[name] = value;
    if ((this.tapWants & TAP_HEADERS) !== 0) this.tapResponseHeaders = tapHeaders(Object.entries(headers));
    if ((this.tapWants & TAP_BODIES) !== 0 && this.method !== 'HEAD') (this.tapResponseBody ??= new TapCapture()).add(body);
    this.finish(status, code);
    const h = this.handler;
    const c = this.ctrl;
    // fetch in undici 8 (Node 26's own) reads the controller's raw headers, not the object: both.
    c.rawHeaders = Object.entries(headers).flatMap(([k, v]) => [Buffer.from(k, 'latin1'), Buffer.from(v, 'latin1')]);
    h.onResponseStart?.(c, status, headers, '');
    if (this.method !== 'HEAD' && !c.aborted) h.onResponseData?.(c, body);
    if (!c.aborted) h.onResponseEnd?.(c, {});
  }

  private throwToApp(err: Error): void {
    if (this.done) return;
    this.finish(0, null);
    this.handler.onResponseError?.(this.ctrl, err);
  }

  private finish(status: number, code: ErrorCode | null): void {
    if (this.done) return;
    this.done = true;
    // The call's deadline timer is re-armed lazily: cancelled here, or it would hold the request until it fires.
    this.call?.dispose();
    const ms = performance.now() - this.t0;
    const endpoint = this.call?.endpoint ?? null;
    const route = this.route?.name ?? null;
    this.ctx.finished({
      service: this.service,
      route,
      endpoint,
      status,
      code,
      seconds: ms / 1000,
      requestBytes: this.hasBody ? this.requestBytes : 0,
      responseBytes: this.responseBytes,
    });
    if (this.tapWants !== 0) this.publishTap(status, code, route, endpoint, ms);
  }

  /** The tap record of the finished request, as the proxy's outbound listener writes one (src/proxy/http1/record.ts). */
  private publishTap(status: number, code: ErrorCode | null, route: string | null, endpoint: Endpoint | null, ms: number): void {
    const wants = this.tapWants;
    this.tapWants = 0;
    const p = normalizePath(this.path);
    const q = this.path.search(/[?#]/);
    this.ctx.tap.publish({
      time: Date.now(),
      direction: 'outbound',
      workload: this.ctx.workload,
      source: this.ctx.service,
      destination: this.service,
      route,
      method: this.method,
      path: 'error' in p ? (q < 0 ? this.path : this.path.slice(0, q)) : p.path,
      status,
      latencyMs: Math.round(ms * 1000) / 1000,
      instance: endpoint === null ? null : endpoint.id,
      requestId: this.requestId === '' ? null : this.requestId,
      error: code,
      ...((wants & TAP_HEADERS) !== 0 ? { requestHeaders: this.tapRequestHeaders ?? {}, responseHeaders: this.tapResponseHeaders ?? {} } : {}),
      ...((wants & TAP_BODIES) !== 0 ? { requestBody: this.tapRequestBody?.text() ?? '', responseBody: this.tapResponseBody?.text() ?? '' } : {}),
    });
    this.tapRequestHeaders = this.tapResponseHeaders = null;
    this.tapRequestBody = this.tapResponseBody = null;
  }
}
