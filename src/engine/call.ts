/**
 * One call: a request's lifecycle from admission to its answer, as decisions, whatever the
 * protocol. A driver (the HTTP/1 forwarder today; HTTP/2, TCP and the SDK later) moves the bytes;
 * the call decides:
 *
 *   start ──► [fault delay] ──► attempt: pick an endpoint (not one already tried, when another
 *   is left), arm the attempt's timer (per-try timeout or the overall deadline, whichever is
 *   first), `driver.send(attempt)` ──► the driver reports what happened:
 *     connected ........................ the balancer counts the request at the endpoint
 *     established ...................... an opaque stream (TCP) is up: it is the answer (a success
 *                                        for the endpoint), nothing is retried from now on
 *     responseHead(status) ............. "deliver" it, or "discard" it (a retryable 5xx: read to
 *                                        its end and dropped, then `discarded()`)
 *     connectFailed / reset / timeout .. retry (after a backoff with full jitter, within the
 *                                        retry budget and the deadline) or `driver.fail(error)`
 *     responseComplete ................. the call is over
 *     clientGone ....................... the call is over; an unanswered breaker probe counts
 *
 * The call owns what guards each failure case: breaker start/record (and the half-open probe a
 * client abandons), retry-budget deposits and withdrawals, per-try and overall deadlines, the
 * in-flight count (limits.maxRequests), the tried endpoints, the body kept for a retry, the
 * `x-skein-explain` summary and the error details. Every outcome of an attempt is recorded once,
 * as evidence for the breakers and outlier detection (`TrafficState.record`; see docs/traffic.md,
 * "What counts against an instance"): a status, or 0 for a mesh failure (no response, or a peer
 * proxy that refused the request because its app is unreachable).
 *
 * Nothing here does I/O: time and timers come from a Clock, randomness from an Rng. Drivers report
 * outcomes after `send` returns, never from inside it (except `connected`).
 *
 * Why one file of ~800 lines: it is one state machine, and every guard in it (who records an
 * attempt, who releases the in-flight count, which timer runs) is only right together with the
 * others; split, the transitions could no longer be read in one place.
 */
import type { Direction } from '../api/stats.js';
import type { RoutePolicy } from '../api/traffic.js';
import { NOOP_COMPLETION, type Completion } from '../balance/balancer.js';
import type { HashInput } from '../balance/hash-key.js';
import type { Rng } from '../core/backoff.js';
import { MAX_TIMER_MS, type Clock, type TimerHandle } from '../core/clock.js';
import { ERROR_CODES, type ErrorCode } from '../core/errors.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { retryDelay, type RetryReason } from '../resilience/retry.js';
import { grpcAsHttp, grpcRetryCondition } from './grpc.js';
import type { AttemptTrace, HopTrace } from './observe.js';
import type { Hold } from './cold-start.js';
import { noEndpoint, type Destination, type Refusal } from './service-client.js';
import { choiceDetails, choiceText, type BackendChoice } from './split.js';

/** Counters a call reports to (the proxy's metrics implement them). */
export interface CallCounters {
  /** A retry was sent (`reason`: a retry condition or "status"). */
  retry(service: string, reason: string): void;
  /** The retry budget refused a retry. */
  retryBudgetExhausted(service: string): void;
}

/** What a call needs to know of its request. */
export interface CallRequest {
  readonly direction: Direction;
  readonly route: RoutePolicy;
  /** GET, HEAD, PUT, DELETE, OPTIONS, TRACE (RFC 9110 §9.2.2): may be sent again. */
  readonly idempotent: boolean;
  readonly hasBody: boolean;
  /** A protocol upgrade (never retried: the tunnel belongs to the first answer). */
  readonly upgrade: boolean;
  /** Time until the response head, all attempts and backoff included; 0: none. */
  readonly timeoutMs: number;
  /** A fault-injection delay before the first attempt (admission's). */
  readonly delayMs: number;
  /** What a hashing balancer reads of the request. */
  readonly hash: HashInput;
  /** The request's trace span (tracing on): a child span per attempt. */
  readonly hop: HopTrace | null;
  /**
   * A gRPC request: its outcome is its grpc-status (src/engine/grpc.ts), in the response head
   * (Trailers-Only) or in the trailers (`responseComplete`). Absent: false.
   */
  readonly grpc?: boolean;
}

/** An attempt the driver is to make. */
export interface Attempt {
  readonly endpoint: Endpoint;
  /** 1 for the first attempt. */
  readonly n: number;
  /** A pooled connection must not be used (the last one was stale). */
  readonly fresh: boolean;
  /** Request body bytes already received, to send before what follows (a retry's kept body). */
  readonly body: readonly Uint8Array[];
  /** The attempt's trace span: its context goes with the request. */
  readonly trace: AttemptTrace | null;
}

/** A call that ends in a proxy error: the driver answers the client with it. */
export interface CallFailure {
  readonly code: ErrorCode;
  readonly message: string;
  readonly status: number;
  /** The JSON error body's details: where it went, what was tried, the resilience state. */
  readonly details: Record<string, unknown>;
  /** The x-skein-explain summary. */
  readonly explanation: string;
  /** A rate limit's wait (the answer says when to come back). */
  readonly retryAfterMs?: number;
}

/** The I/O side of a call. */
export interface CallDriver {
  /** Sends the request to `a.endpoint`, or refuses when the service's connection limits say no. */
  send(a: Attempt): Refusal | null;
  /** Drops the current attempt's connection (its time ran out; a retry may follow). */
  abandon(): void;
  /** Answers the client with a proxy error; nothing of a response has reached it. */
  fail(f: CallFailure): void;
}

/** What the driver does with a response head. */
export type HeadVerdict = 'deliver' | 'discard';

const enum St {
  Idle,
  /** A fault-injection delay. */
  Delay,
  /** An attempt is out: waiting for a response head. */
  Attempt,
  /** A retryable response is being read to its end and dropped. */
  Discard,
  /** Waiting before a retry. */
  Backoff,
  /** No instance yet: held while the service wakes from zero (cold-start.ts). */
  Hold,
  /** The response head went to the client; its body (or a tunnel) follows. */
  Responding,
  Done,
}

const EMPTY: readonly Uint8Array[] = Object.freeze([]);

/**
 * What an established opaque stream (TCP) counts as: the endpoint took the connection, a success
 * for its breaker and outlier detection (TrafficState.record's 2xx row), and its call's status.
 */
export const STREAM_ESTABLISHED = 200;

/** Only printable ASCII in a header value. */
const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');

/** The x-skein-explain of a request the proxy answered before any attempt. */
export function localExplanation(route: string | null, service: string | null, code: ErrorCode): string {
  return printable(`route=${route ?? '-'}; service=${service ?? '-'}; attempts=0; answered by the proxy: ${code}`);
}

export class Call {
  private st = St.Idle;
  /** The endpoint of the current (or last) attempt. */
  endpoint: Endpoint | null = null;
  /** The current attempt's response status; 0: none yet. */
  status = 0;
  /** What the current attempt's outcome says about its endpoint: the status, or 0 (see the header). */
  private evidence = 0;
  /** A gRPC response was delivered without its grpc-status: its outcome waits for the trailers. */
  private grpcPending = false;
  retries = 0;
  /**
   * ms from the request leaving on its connection to its response head: the balancer's latency
   * sample. Connection set-up and the TLS handshake, earlier attempts and backoff are not the
   * endpoint's latency (a first request on a new mTLS connection would otherwise make a fast
   * endpoint look slow to peak-EWMA for tens of seconds).
   */
  latencyMs = 0;
  /** When the current attempt's request left (connected). */
  private sentAt = 0;
  /** When the current attempt was sent (its connection asked for): an opaque stream's latency sample runs from it. */
  private attemptAt = 0;
  /** clock.now() when the last response head came (`responseHead`): a driver times what follows from it. */
  respondedAt = 0;
  private tried: Endpoint[] | null = null;
  /** The backend of the route's split the request went to (its retries stay in it while they can); null: no split. */
  private backend: BackendChoice | null = null;
  private outcomes: string[] | null = null;
  /** The current attempt went out and its outcome is not recorded yet (a breaker may wait for it). */
  private owed = false;
  /** The request was counted in the retry budget (once, when its first attempt left). */
  private deposited = false;
  private budgetRefused = false;
  /** An endpoint was picked in panic mode (ejections and failing active checks ignored). */
  private panicked = false;
  /** A stale pooled connection was replaced once already. */
  private staleRetried = false;
  /** In traffic.active (outbound). */
  private counted = false;
  private completion: Completion = NOOP_COMPLETION;
  private trace: AttemptTrace | null = null;
  /** clock.now() at which the call's timer (a delay, backoff, hold or attempt timeout) is due; 0: none. */
  private due = 0;
  /**
   * The clock's timer, armed for `armedFor`. It is lazy: a timer cleared, or set to a later time,
   * stays armed, and when it fires for a time that is not due yet it is armed again for the rest
   * (see `setTimer`). A call reused for the next request of its connection (`reuse`) thus sets
   * no clock timer per request while each request's deadline is later than the last one's.
   */
  private timer: TimerHandle | null = null;
  private armedFor = 0;
  /** Held for a cold start now; `held`: it was (once at most), `heldMs` for how long. */
  private hold: Hold | null = null;
  private held = false;
  private heldAt = 0;
  private heldMs = 0;
  /** The attempt's timer is its per-try timeout (not the overall deadline). */
  private perTry = false;
  private t0!: number;
  /** clock.now() by which the response head must have come; 0: no deadline. */
  private deadline = 0;
  private retryDelayMs = 0;
  /** The request body so far, kept for a retry while it is small enough; null: not kept. */
  private kept: Uint8Array[] | null = null;
  private keptBytes = 0;
  private reqDone = false;
  private outbound!: boolean;
  private readonly fire = () => this.timerFired();

  constructor(
    private dest: Destination,
    private req: CallRequest,
    private readonly driver: CallDriver,
    private readonly clock: Clock,
    private readonly counters: CallCounters,
    private readonly rng: Rng = Math.random,
  ) {
    this.takeRequest(req);
  }

  /** What the call derives from its request when it starts serving it (new, or reused). */
  private takeRequest(req: CallRequest): void {
    this.req = req;
    this.outbound = req.direction === 'outbound';
    this.t0 = this.clock.now();
    this.kept = req.hasBody && this.outbound && req.route.retries.maxRetries > 0 ? [] : null;
  }

  /**
   * The same call object for another request (a driver keeps one per connection, so that a request
   * allocates no call): only once this call is done. `req` may be the object the last request
   * used, changed for this one. Returns false (nothing changed) when the call is not done.
   */
  reuse(dest: Destination, req: CallRequest): boolean {
    if (this.st !== St.Done) return false;
    this.dest = dest;
    this.st = St.Idle;
    this.endpoint = null;
    this.status = 0;
    this.evidence = 0;
    this.grpcPending = false;
    this.retries = 0;
    this.latencyMs = 0;
    this.sentAt = 0;
    this.attemptAt = 0;
    this.respondedAt = 0;
    this.tried = null;
    this.backend = null;
    this.outcomes = null;
    this.owed = false;
    this.deposited = false;
    this.budgetRefused = false;
    this.panicked = false;
    this.staleRetried = false;
    this.counted = false;
    this.completion = NOOP_COMPLETION;
    this.trace = null;
    this.due = 0;
    this.hold = null;
    this.held = false;
    this.heldAt = 0;
    this.heldMs = 0;
    this.perTry = false;
    this.deadline = 0;
    this.retryDelayMs = 0;
    this.keptBytes = 0;
    this.reqDone = false;
    this.takeRequest(req);
    return true;
  }

  /** The call will not be used again: its clock timer (lazy, see `timer`) is cancelled now. */
  dispose(): void {
    this.due = 0;
    const t = this.timer;
    if (t === null) return;
    this.timer = null;
    t.cancel();
  }

  /** The response head was delivered (a response, not a proxy error, is under way). */
  get responding(): boolean {
    return this.st === St.Responding;
  }

  get done(): boolean {
    return this.st === St.Done;
  }

  /** Attempts made: the failed ones, and the current one if it got an answer. */
  get attempts(): number {
    return (this.tried?.length ?? 0) + (this.status > 0 && this.st !== St.Discard ? 1 : 0);
  }

  /** ms left before the deadline (at least 1), for the request the attempt sends; 0: no deadline. */
  timeLeftMs(): number {
    return this.deadline === 0 ? 0 : Math.max(1, Math.floor(this.deadline - this.clock.now()));
  }

  /** Starts the call: the first attempt, or the fault delay before it. */
  start(): void {
    if (this.st !== St.Idle) return;
    if (this.outbound) {
      this.dest.traffic.active++;
      this.counted = true;
    }
    if (this.req.timeoutMs > 0) this.deadline = this.t0 + this.req.timeoutMs;
    if (this.req.delayMs > 0) {
      this.st = St.Delay;
      this.setTimer(this.req.delayMs);
      return;
    }
    this.attempt();
  }

  // ---- what the driver reports ----

  /** The attempt's connection is ready and the request leaves now. False: the call is over (keep the connection). */
  connected(): boolean {
    if (this.st !== St.Attempt || this.endpoint === null) return false;
    this.completion = this.dest.start(this.endpoint);
    this.sentAt = this.clock.now();
    return true;
  }

  /**
   * An opaque stream's connection is up (the TCP driver; after `connected()`): the stream is the
   * answer. The endpoint took the connection (STREAM_ESTABLISHED: a success for its breaker and
   * outlier detection), the attempt's timer stops, and nothing is retried from now on: bytes may
   * flow. The balancer's latency sample is the time to connect (a stream has no response head).
   * `responseComplete` ends the call when the stream closes. False: the call is over (close it).
   */
  established(): boolean {
    if (this.st !== St.Attempt || this.endpoint === null) return false;
    const now = this.clock.now();
    this.respondedAt = now;
    this.status = STREAM_ESTABLISHED;
    this.evidence = STREAM_ESTABLISHED;
    this.latencyMs = now - this.attemptAt;
    this.clearTimer();
    this.settle(this.evidence);
    this.st = St.Responding;
    return true;
  }

  /** Request body bytes arrived (kept for a retry while they fit `retries.maxBodyBytes`). */
  requestBody(chunk: Uint8Array): void {
    const k = this.kept;
    if (k === null) return;
    this.keptBytes += chunk.length;
    if (this.keptBytes > this.req.route.retries.maxBodyBytes) this.kept = null;
    else k.push(chunk);
  }

  /** The whole request is in. */
  requestComplete(): void {
    this.reqDone = true;
  }

  /**
   * A final response head (not 1xx other than 101). `peerRefused`: a peer Skein proxy answered
   * itself that the request never reached its app (see docs/traffic.md).
   */
  responseHead(status: number, peerRefused: boolean, grpcStatus = -1): HeadVerdict {
    const now = this.clock.now();
    this.respondedAt = now;
    if (this.st !== St.Attempt) return 'deliver';
    this.status = status;
    const grpc = grpcStatus >= 0 && status < 300;
    this.evidence = peerRefused ? 0 : grpc ? grpcAsHttp(grpcStatus) : status;
    this.latencyMs = now - this.sentAt;
    // A retry of a status needs the whole request in: its kept body cannot change while the
    // response is dropped.
    const cond: RetryReason | null = status >= 500 ? (peerRefused ? 'refused-stream' : 'status') : grpc ? grpcRetryCondition(grpcStatus) : null;
    if (cond !== null && this.outbound && (this.reqDone || !this.req.hasBody)) {
      const delay = this.retryDelayFor(cond, status);
      if (delay >= 0) {
        // The attempt's timer keeps running while the response is read and dropped.
        this.st = St.Discard;
        this.retryDelayMs = delay;
        return 'discard';
      }
    }
    this.clearTimer();
    // A gRPC response that is not Trailers-Only says how the call went in its trailers.
    if (this.req.grpc === true && !grpc && !peerRefused && status < 300) this.grpcPending = true;
    else this.settle(this.evidence);
    this.st = St.Responding;
    return 'deliver';
  }

  /**
   * The status the outcome of the call counts as (for metrics and the access log's failure
   * class): the response's, a gRPC status as the HTTP status it stands for (src/engine/grpc.ts),
   * 0 before any response.
   */
  get outcomeStatus(): number {
    return this.evidence === 0 ? this.status : this.evidence;
  }

  /** A response the call said to discard has been read to its end (or cut): the retry goes ahead. */
  discarded(): void {
    if (this.st !== St.Discard) return;
    this.endAttempt(this.evidence, `HTTP ${this.status}`);
    this.scheduleRetry(this.retryDelayMs);
  }

  /**
   * The attempt could not connect. `secure`: the connection was made but its mTLS handshake
   * failed or the peer was not who the registry says (retried like a connect failure; the error,
   * if it is the last, names the TLS reason).
   */
  connectFailed(reason: string, secure = false): void {
    if (this.st !== St.Attempt) return;
    this.endAttempt(0, `${secure ? 'mTLS refused' : 'connect failed'}: ${reason}`);
    if (this.retry('connect-failure', 0)) return;
    if (secure) this.fail({ code: 'SKEIN_E_UPSTREAM_TLS', message: `no mTLS connection to ${this.triedText()}` });
    else this.fail({ code: 'SKEIN_E_UPSTREAM_CONNECT', message: `could not connect to ${this.triedText()}` });
  }

  /**
   * An opaque stream's peer inbound proxy refused it with its own error `code` before any byte
   * (the TCP driver reads the peer's status: src/proxy/tcp/peer-status.ts). `meshFailure`
   * (`refusedByPeer`: its app unreachable, or it is draining): no app saw the stream, a mesh
   * failure (evidence 0) retried as `refused-stream`, as in HTTP; any other refusal (authorization,
   * a rate limit) is the peer's answer: its status is the evidence, and the call fails with it.
   */
  streamRefused(code: ErrorCode, message: string, meshFailure: boolean): void {
    if (this.st !== St.Attempt) return;
    this.endAttempt(meshFailure ? 0 : ERROR_CODES[code].status, `refused by its inbound proxy: ${code}`);
    if (meshFailure && this.retry('refused-stream', 0)) return;
    this.fail({ code, message });
  }

  /**
   * The attempt's connection closed or sent a malformed response. `reused`: it had served an
   * earlier request (it may have been stale). `answered`: bytes of the response reached the
   * client. Returns true when the client's response is cut short (the driver must let the client
   * see it: close its connection).
   */
  reset(kind: 'reset' | 'protocol', reason: string, reused: boolean, answered: boolean): boolean {
    const e = this.endpoint;
    if ((this.st !== St.Attempt && this.st !== St.Discard && this.st !== St.Responding) || e === null) return false;
    if (this.st === St.Discard) {
      // The dropped response was cut short: the retry goes ahead all the same.
      this.discarded();
      return false;
    }
    if (this.st === St.Responding) {
      if (answered) {
        this.st = St.Done;
        if (this.grpcPending) {
          // The gRPC outcome was to come in the trailers: a response cut before them is a failure.
          this.grpcPending = false;
          this.evidence = 0;
          this.settle(0);
        }
        this.completion.end({ latencyMs: this.clock.now() - this.sentAt, ok: false });
        this.completion = NOOP_COMPLETION;
        this.release();
        this.endTrace(this.status, 'SKEIN_E_UPSTREAM_RESET');
        return true;
      }
      // The head never left: the client can still get a proper answer (a retry, or an error).
      this.st = St.Attempt;
    }
    if (kind === 'reset' && this.status === 0 && reused && !this.req.hasBody && this.req.idempotent && !this.staleRetried) {
      // A pooled connection the server had closed as we sent: the request got no byte of answer
      // and has no body, so sending it again on a fresh connection is safe (and is not a failure
      // of the endpoint).
      this.completion.end({ latencyMs: this.clock.now() - this.sentAt, ok: false });
      this.completion = NOOP_COMPLETION;
      this.staleRetried = true;
      const r = this.driver.send({ endpoint: e, n: (this.tried?.length ?? 0) + 1, fresh: true, body: EMPTY, trace: this.trace });
      if (r !== null) this.fail(r);
      return false;
    }
    this.clearTimer();
    this.endAttempt(0, kind === 'protocol' ? `malformed response: ${reason}` : `connection closed before a complete response (${reason})`);
    if (kind !== 'protocol' && this.retry('reset', 0)) return false;
    if (kind === 'protocol') this.fail({ code: 'SKEIN_E_UPSTREAM_PROTOCOL', message: `${e.key} at ${e.address}:${e.port}: ${reason}` });
    else this.fail({ code: 'SKEIN_E_UPSTREAM_RESET', message: `${e.key} at ${e.address}:${e.port} closed the connection before a complete response (${reason})` });
    return false;
  }

  /**
   * The response (or the tunnel after a 101) is over. `grpcStatus`: a gRPC response's, from its
   * trailers (-1: it had none, a malformed answer).
   */
  responseComplete(grpcStatus?: number): void {
    if (this.st !== St.Responding) return;
    this.st = St.Done;
    this.release();
    if (this.grpcPending) {
      this.grpcPending = false;
      this.evidence = grpcAsHttp(grpcStatus ?? -1);
      this.settle(this.evidence);
    }
    this.completion.end({ latencyMs: this.latencyMs, ok: (this.evidence === 0 ? this.status : this.evidence) < 500 });
    this.completion = NOOP_COMPLETION;
    this.endTrace(this.status, null);
  }

  /** The client went away mid-call. An unanswered breaker probe counts as a failure (its breaker must not wait forever). */
  clientGone(): void {
    if (this.st === St.Done) return;
    this.st = St.Done;
    this.settleAbandoned();
    this.release();
    this.completion.end({ latencyMs: this.clock.now() - this.sentAt, ok: true });
    this.completion = NOOP_COMPLETION;
    this.endTrace(0, null);
  }

  // ---- attempts ----

  private attempt(): void {
    const e = this.dest.pick(this.req.hash, this.tried, this.req.route, this.backend);
    if (e !== null) this.backend = this.dest.chosen ?? null;
    if (this.dest.traffic.panicking) this.panicked = true;
    if (e === null) {
      // A service scaled to zero: the first attempt waits for an instance (once).
      const held = this.tried === null && !this.held ? (this.dest.hold?.(this.resume) ?? null) : null;
      if (held === null) this.fail(noEndpoint(this.dest));
      else if ('code' in held) this.fail(held);
      else this.holdFor(held);
      return;
    }
    const n = (this.tried?.length ?? 0) + 1;
    if (n > 1 && this.req.hasBody && this.kept === null) {
      // The body outgrew retries.maxBodyBytes during the backoff: never send a partial body.
      this.bodyNotKept();
      return;
    }
    this.st = St.Attempt;
    this.endpoint = e;
    this.status = 0;
    const hop = this.req.hop;
    if (hop !== null) this.trace = hop.attempt(n, e);
    this.attemptAt = this.clock.now();
    this.armAttemptTimer();
    const refused = this.driver.send({ endpoint: e, n, fresh: false, body: this.kept === null || n === 1 ? EMPTY : this.kept.slice(), trace: this.trace });
    if (refused !== null) {
      this.fail(refused);
      return;
    }
    // Only an attempt that goes out may be a breaker's probe (a refused one would hold it half-open).
    if (!this.outbound) return;
    this.dest.traffic.started(e.key);
    this.owed = true;
    if (!this.deposited) {
      // Only requests that are sent earn retries: refusals (breakers, limits) do not.
      this.deposited = true;
      this.dest.traffic.budget.deposit();
    }
  }

  private holdFor(h: Hold): void {
    this.st = St.Hold;
    this.hold = h;
    this.held = true;
    this.heldAt = this.clock.now();
    const now = this.heldAt;
    const until = this.deadline > 0 ? Math.min(this.deadline, now + h.timeoutMs) : now + h.timeoutMs;
    this.setTimer(until - now);
  }

  /** Instances arrived while the call was held: its first attempt goes ahead. */
  private readonly resume = (): void => {
    if (this.st !== St.Hold) return;
    this.unhold();
    this.clearTimer();
    this.attempt();
  };

  private unhold(): void {
    const h = this.hold;
    if (h === null) return;
    this.hold = null;
    h.cancel();
    this.heldMs = this.clock.now() - this.heldAt;
  }

  /** Records the current attempt's outcome for the breakers and outlier detection (once). */
  private settle(evidence: number): void {
    const e = this.endpoint;
    if (!this.owed || e === null) return;
    this.owed = false;
    this.dest.traffic.record(e.key, evidence);
  }

  /**
   * The call ends with its attempt's outcome still owed. A known status is the outcome; with none,
   * an attempt cut short says nothing about the endpoint, except that a breaker probe got no
   * answer, and its breaker must not wait for one forever.
   */
  private settleAbandoned(): void {
    const e = this.endpoint;
    if (!this.owed || e === null) return;
    if (this.status > 0) this.settle(this.evidence);
    else if (this.dest.traffic.breakers?.state(e.key) === 'half-open') this.settle(0);
    this.owed = false;
  }

  /** An attempt failed (`evidence` 0: no response) or its response is dropped for a retry. */
  private endAttempt(evidence: number, outcome: string): void {
    this.completion.end({ latencyMs: this.clock.now() - this.sentAt, ok: false });
    this.completion = NOOP_COMPLETION;
    this.endTrace(this.status, outcome);
    const e = this.endpoint;
    if (e === null) return;
    this.settle(evidence);
    (this.tried ??= []).push(e);
    (this.outcomes ??= []).push(outcome);
  }

  private endTrace(status: number, error: string | null): void {
    const t = this.trace;
    if (t === null) return;
    this.trace = null;
    t.end(status, error);
  }

  // ---- retries ----

  /** The delay before a retry, or -1 when this failure may not be retried. */
  private retryDelayFor(cond: RetryReason, status: number): number {
    if (!this.outbound || this.req.upgrade) return -1;
    const traffic = this.dest.traffic;
    const d = retryDelay(
      this.req.route.retries,
      cond,
      status,
      {
        retries: this.retries,
        idempotent: this.req.idempotent,
        hasBody: this.req.hasBody,
        bodyKept: this.kept !== null,
        timeLeftMs: this.deadline === 0 ? Number.POSITIVE_INFINITY : this.deadline - this.clock.now(),
      },
      traffic.budget,
      this.rng,
    );
    if (typeof d === 'string') {
      if (d === 'budget') {
        this.budgetRefused = true;
        this.counters.retryBudgetExhausted(this.dest.service);
      }
      return -1;
    }
    this.retries++;
    this.counters.retry(this.dest.service, cond);
    return d;
  }

  /** Retries when allowed: true when a retry is under way. */
  private retry(cond: RetryReason, status: number): boolean {
    const delay = this.retryDelayFor(cond, status);
    if (delay < 0) return false;
    this.scheduleRetry(delay);
    return true;
  }

  private bodyNotKept(): void {
    this.fail({ code: 'SKEIN_E_UPSTREAM_RESET', message: `the request to "${this.dest.service}" could not be sent again: its body was not kept (more than retries.maxBodyBytes, ${this.req.route.retries.maxBodyBytes} bytes)` });
  }

  private scheduleRetry(delay: number): void {
    this.status = 0;
    if (this.req.hasBody && this.kept === null) {
      // A retry is decided only with the body kept so far; never send a partial body.
      this.bodyNotKept();
      return;
    }
    if (this.deadline > 0 && this.clock.now() + delay >= this.deadline) {
      this.timedOut();
      return;
    }
    if (delay > 0) {
      this.st = St.Backoff;
      this.setTimer(delay);
      return;
    }
    this.clearTimer();
    this.attempt();
  }

  // ---- timers ----

  /** The call's timer is due in `ms` (replacing any other time it was due). */
  private setTimer(ms: number, now = this.clock.now()): void {
    const due = now + Math.min(Math.max(0, ms), MAX_TIMER_MS);
    this.due = due;
    if (this.timer !== null) {
      // Armed for this time or earlier: it fires first, and is armed again for the rest.
      if (this.armedFor <= due) return;
      this.timer.cancel();
    }
    this.armedFor = due;
    this.timer = this.clock.setTimeout(this.fire, due - now);
  }

  private clearTimer(): void {
    this.due = 0;
  }

  private timerFired(): void {
    this.timer = null;
    const due = this.due;
    if (due === 0) return;
    if (due > this.armedFor) {
      // Set to a later time since it was armed: wait for the rest.
      const now = this.clock.now();
      this.armedFor = due;
      this.timer = this.clock.setTimeout(this.fire, Math.max(0, due - now));
      return;
    }
    // Fired for the time it was armed for: that time has come, whatever now() says (a Node timer
    // may fire up to a ms before the precise clock reaches it; see St.Discard in onTimer).
    this.due = 0;
    this.onTimer();
  }

  /** The attempt's timer: its per-try timeout or the overall deadline, whichever is first. */
  private armAttemptTimer(): void {
    const now = this.clock.now();
    let at = this.deadline;
    const pt = this.outbound ? this.req.route.perTryTimeoutMs : 0;
    this.perTry = pt > 0 && (at === 0 || now + pt < at);
    if (this.perTry) at = now + pt;
    if (at === 0) this.clearTimer();
    else this.setTimer(at - now, now);
  }

  private onTimer(): void {
    switch (this.st) {
      case St.Delay:
      case St.Backoff:
        if (this.deadline > 0 && this.clock.now() >= this.deadline) {
          this.timedOut();
          return;
        }
        this.attempt();
        return;
      case St.Hold: {
        const timeoutMs = this.hold?.timeoutMs ?? 0;
        this.unhold();
        // The deadline's timer is the deadline (see St.Discard).
        if (this.deadline > 0 && this.heldAt + timeoutMs >= this.deadline) {
          this.timedOut();
          return;
        }
        this.fail({
          code: 'SKEIN_E_COLD_START_TIMEOUT',
          message: `service "${this.dest.service}" is scaled to zero and no instance of it became ready within ${timeoutMs} ms (coldStart.timeout) while the request was held`,
        });
        return;
      }
      case St.Discard:
        // The dropped response's body did not end in time: give up on it, and retry if time is left.
        this.driver.abandon();
        this.endAttempt(this.evidence, `HTTP ${this.status} (its body did not end in time)`);
        // The overall deadline's timer is the deadline, whatever now() says: a Node timer may fire
        // up to a ms before the precise clock reaches its time, and a retry squeezed into that ms
        // would have its response head come after the deadline (delivered, body and all).
        if (!this.perTry) this.timedOut();
        else this.scheduleRetry(this.retryDelayMs);
        return;
      case St.Attempt: {
        // No response head in time: give up this attempt.
        const perTry = this.perTry;
        this.driver.abandon();
        const ms = perTry ? this.req.route.perTryTimeoutMs : this.req.timeoutMs;
        this.endAttempt(0, `no response within ${ms} ms`);
        if (perTry && this.retry('per-try-timeout', 0)) return;
        const e = this.endpoint;
        const at = e === null ? '' : ` (last: ${e.id} at ${e.address}:${e.port})`;
        this.fail({
          code: 'SKEIN_E_UPSTREAM_TIMEOUT',
          message: perTry ? `no response from "${this.dest.service}" within the per-try timeout of ${ms} ms${at}` : `no response from "${this.dest.service}" within ${ms} ms${at}`,
        });
        return;
      }
      default:
        return;
    }
  }

  // ---- the end ----

  /** The overall deadline passed with no response head to deliver. */
  private timedOut(): void {
    const why = this.st === St.Hold ? ` (it is scaled to zero: the request waited for an instance to start, and none became ready in time)` : '';
    this.fail({ code: 'SKEIN_E_UPSTREAM_TIMEOUT', message: `no response from "${this.dest.service}" within ${this.req.timeoutMs} ms${why}` });
  }

  /** Leaves the service's in-flight count and stops the timer (once). */
  private release(): void {
    this.clearTimer();
    this.unhold();
    if (this.counted) {
      this.counted = false;
      this.dest.traffic.active--;
    }
  }

  /** The call ends in a proxy error. */
  private fail(r: Refusal): void {
    if (this.st === St.Done) return;
    this.st = St.Done;
    this.settleAbandoned();
    this.release();
    this.completion.end({ latencyMs: this.clock.now() - this.sentAt, ok: false });
    this.completion = NOOP_COMPLETION;
    const status = r.status ?? ERROR_CODES[r.code].status;
    this.endTrace(status, r.code);
    this.driver.fail({
      code: r.code,
      message: r.message,
      status,
      details: r.details === undefined ? this.details() : { ...this.details(), ...r.details },
      explanation: this.explanation(),
      ...(r.retryAfterMs === undefined ? {} : { retryAfterMs: r.retryAfterMs }),
    });
  }

  private triedText(): string {
    const t = this.tried ?? [];
    return t.map((e, i) => `${e.id} at ${e.address}:${e.port} (${this.outcomes?.[i] ?? ''})`).join(', ');
  }

  /** What the call decided, for x-skein-explain: route, endpoint, attempts, budget. */
  explanation(): string {
    const e = this.endpoint;
    let s = `route=${this.req.route.name}; service=${this.dest.service}; `;
    if (this.backend !== null) s += `backend=${choiceText(this.backend)}; `;
    s += `endpoint=${e === null ? '-' : `${e.id} (${e.address}:${e.port})`}; attempts=${this.attempts}`;
    if (this.tried !== null) s += `; failed=${this.tried.map((t, i) => `${t.id}: ${this.outcomes?.[i] ?? ''}`).join(', ')}`;
    if (this.outbound) {
      s += `; budget=${this.dest.traffic.budget.available}`;
      if (this.budgetRefused) s += ' (a retry was refused by the budget)';
      if (this.panicked) s += '; panic (fewer instances available than the panic threshold: ejections and failed active checks ignored)';
    }
    if (this.deadline > 0) s += `; timeout=${this.req.timeoutMs}ms`;
    if (this.held) s += `; held=${Math.round(this.heldMs)}ms (the service was scaled to zero: waited for an instance to start)`;
    return printable(s);
  }

  /** The state behind a proxy error, for its JSON body. */
  private details(): Record<string, unknown> {
    const sum = this.outbound ? this.dest.traffic.summary() : null;
    return {
      service: this.dest.service,
      route: this.req.route.name,
      ...(this.backend === null ? {} : { backend: choiceDetails(this.backend) }),
      tried: (this.tried ?? []).map((e, i) => ({ endpoint: e.id, address: `${e.address}:${e.port}`, outcome: this.outcomes?.[i] ?? '' })),
      retries: this.retries,
      ...(sum === null
        ? {}
        : { budget: { available: sum.budget, refusedARetry: this.budgetRefused }, breakers: sum.breakers, ejected: sum.ejected, failingActiveChecks: sum.activeCheckFailing, panic: sum.panic }),
      ...(this.deadline > 0 ? { timeoutMs: this.req.timeoutMs } : {}),
      ...(this.held ? { coldStart: { heldMs: Math.round(this.heldMs) } } : {}),
    };
  }
}
