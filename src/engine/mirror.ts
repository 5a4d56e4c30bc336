/**
 * Traffic mirroring (shadowing), whatever the protocol: whether a request is copied to its route's
 * mirror (`Mirrors.shadow`), and the copy's life (`Shadow`): its body kept while it fits, its
 * endpoint, its timeout, its outcome. A driver only moves the copy's bytes (`ShadowDriver`).
 *
 *   request admitted ──► Mirrors.shadow: the route mirrors, the method may be copied, the share
 *   says yes, fewer than maxInFlight copies are out ──► Shadow (body bytes: `requestBody`, kept
 *   while they fit retries.maxBodyBytes) ──► `send` when the request is complete: an endpoint of
 *   the mirror service (or subset), `driver.send` ──► `answered(status)` or `failed(what)`, or the
 *   timeout abandons it (`driver.abort`).
 *
 * A copy is fire-and-forget: never retried, never answered to anyone, and never evidence against
 * anything: not the primary's (nor the shadow's) breakers or outlier detection, not the retry
 * budget, not the golden signals. Its outcome has its own series (MirrorCounters:
 * skein_proxy_mirror_requests_total, ..._request_duration_seconds, ..._dropped_total). Only
 * outbound requests are copied (the caller's side, like Envoy's and Istio's mirroring).
 */
import type { Direction } from '../api/stats.js';
import type { MirrorPolicy, RoutePolicy } from '../api/traffic.js';
import type { HashInput } from '../balance/hash-key.js';
import type { Rng } from '../core/backoff.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { grpcAsHttp } from './grpc.js';
import type { Destination, Refusal } from './service-client.js';

/** Why a request that was to be copied was not: the `reason` label of skein_proxy_mirror_dropped_total. */
export const MIRROR_DROP_REASONS = ['limit', 'body', 'incomplete', 'no_endpoint', 'refused', 'backoff'] as const;
export type MirrorDropReason = (typeof MIRROR_DROP_REASONS)[number];

/** Where mirror outcomes are counted (the data plane's metrics). */
export interface MirrorCounters {
  /** A copy ended: `status` 0 when it got no response (a failure, like a 5xx). */
  mirrored(service: string, mirror: string, subset: string, status: number, seconds: number): void;
  /** A copy was not sent, or not to its end. */
  mirrorDropped(service: string, mirror: string, subset: string, reason: MirrorDropReason): void;
}

/** The I/O of one copy. */
export interface ShadowDriver {
  /**
   * Sends the copy to `e`: `s.head` (the request's, with the copy's Host and time) and
   * `s.body`; reports `s.answered` or `s.failed`. A refusal (a connection limit, mTLS) drops it.
   */
  send(s: Shadow, e: Endpoint): Refusal | null;
  /** Drops the copy's connection: its time ran out (after `send`). True: the connection was never made (a connect that hangs counts as refused). */
  abort(): boolean;
}

/** The copy's Host: `suffix` appended to the host of `authority`, before its port ("users:80" -> "users-shadow:80"). */
export function shadowAuthority(authority: string, suffix: string): string {
  if (suffix === '') return authority;
  const colon = authority.lastIndexOf(':');
  // An IPv6 literal ("[::1]:80") has colons of its own: its port follows the "]".
  if (colon < 0 || authority.indexOf(']', colon) >= 0) return authority + suffix;
  return authority.slice(0, colon) + suffix + authority.slice(colon);
}

/**
 * A mirror endpoint that refused a connection is not tried again for this long, doubling with
 * each refusal up to the most (a dead shadow would otherwise cost a failed connect per copy: about
 * as much CPU as the request itself; see docs/benchmarks.md, "Traffic mirroring").
 */
export const MIRROR_CONNECT_BACKOFF = Object.freeze({ firstMs: 1_000, mostMs: 30_000 });

/** The mirrors of one data plane (a listener's, the SDK's): copies in flight per mirror policy. */
export class Mirrors {
  private readonly inFlight = new Map<MirrorPolicy, number>();
  /** Mirror endpoints that refused a connection (by key): skipped until `until`. */
  private readonly refusing = new Map<string, { until: number; backoffMs: number }>();

  constructor(
    private readonly counters: MirrorCounters,
    private readonly clock: Clock,
    private readonly rng: Rng,
    /** The Destination of a mirror service (null: not known). */
    private readonly resolve: (service: string) => Destination | null,
  ) {}

  /**
   * A copy of an admitted request to its route's mirror, or null: the route mirrors nothing, the
   * request is inbound, an upgrade, of a method the mirror does not copy, or not in its share;
   * or too many copies are out (dropped and counted).
   */
  shadow(direction: Direction, dest: Destination, route: RoutePolicy, idempotent: boolean, upgrade: boolean): Shadow | null {
    const m = route.mirror;
    if (m === null || direction !== 'outbound' || upgrade) return null;
    if (!idempotent && !m.nonIdempotent) return null;
    if (m.percent < 100 && this.rng() * 100 >= m.percent) return null;
    const target = m.service ?? dest.service;
    const subset = m.subset?.name ?? '';
    const n = this.inFlight.get(m) ?? 0;
    if (n >= m.maxInFlight) {
      this.counters.mirrorDropped(dest.service, target, subset, 'limit');
      return null;
    }
    const to = target === dest.service ? dest : this.resolve(target);
    if (to === null) {
      this.counters.mirrorDropped(dest.service, target, subset, 'no_endpoint');
      return null;
    }
    this.inFlight.set(m, n + 1);
    return new Shadow(this, m, dest.service, to, route.retries.maxBodyBytes);
  }

  /** A copy is over (sent to its end or dropped): its place is free. */
  release(m: MirrorPolicy): void {
    const n = (this.inFlight.get(m) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(m);
    else this.inFlight.set(m, n);
  }

  /** Whether copies skip `e` now: it refused a connection a moment ago. */
  skips(e: Endpoint): boolean {
    const r = this.refusing.get(e.key);
    return r !== undefined && this.clock.now() < r.until;
  }

  /** A copy's connection to `e` was refused (or timed out): `e` is skipped for a while, longer each time. */
  connectFailed(e: Endpoint): void {
    const now = this.clock.now();
    const r = this.refusing.get(e.key);
    const backoffMs = r === undefined ? MIRROR_CONNECT_BACKOFF.firstMs : Math.min(r.backoffMs * 2, MIRROR_CONNECT_BACKOFF.mostMs);
    if (r === undefined && this.refusing.size >= 1024) for (const [k, v] of this.refusing) if (v.until + MIRROR_CONNECT_BACKOFF.mostMs < now) this.refusing.delete(k);
    this.refusing.set(e.key, { until: now + backoffMs, backoffMs });
  }

  /** A copy reached `e`: it is tried as any other from now on. */
  reached(e: Endpoint): void {
    if (this.refusing.size > 0) this.refusing.delete(e.key);
  }

  /** Copies in flight now, all mirrors together. */
  get active(): number {
    let n = 0;
    for (const v of this.inFlight.values()) n += v;
    return n;
  }

  /** @internal */ get c(): MirrorCounters {
    return this.counters;
  }
  /** @internal */ get time(): Clock {
    return this.clock;
  }
}

const enum St {
  /** Taking the request's body. */
  Body,
  /** Sent: waiting for its response to end. */
  Sent,
  Done,
}

/** One copy of a request. */
export class Shadow {
  /** The request body so far (while it fits). */
  readonly body: Uint8Array[] = [];
  private bytes = 0;
  private st = St.Body;
  private driver: ShadowDriver | null = null;
  private timer: TimerHandle | null = null;
  private startedAt = 0;
  /** Where it was sent. */
  private endpoint: Endpoint | null = null;

  constructor(
    private readonly owner: Mirrors,
    readonly policy: MirrorPolicy,
    /** The primary request's service. */
    readonly service: string,
    /** The mirror service. */
    readonly dest: Destination,
    private readonly maxBodyBytes: number,
  ) {}

  /** The copy's Host, from the request's authority. */
  authority(original: string): string {
    return shadowAuthority(original, this.policy.hostSuffix);
  }

  /** The time the copy gets, in ms (sent as its x-skein-timeout-ms). */
  get timeoutMs(): number {
    return this.policy.timeoutMs;
  }

  /** Whether the copy still takes body bytes (false: sent, or dropped). */
  get taking(): boolean {
    return this.st === St.Body;
  }

  /** Request body bytes: kept while the whole body fits retries.maxBodyBytes, else the copy is dropped. */
  requestBody(chunk: Uint8Array): void {
    if (this.st !== St.Body) return;
    this.bytes += chunk.length;
    if (this.bytes > this.maxBodyBytes) {
      this.body.length = 0;
      this.drop('body');
      return;
    }
    this.body.push(chunk);
  }

  /** The request did not come in whole (the client went away): the copy is not sent. */
  cancel(): void {
    if (this.st === St.Body) this.drop('incomplete');
  }

  /** The request is complete: the copy goes to an endpoint of the mirror (`hash`: what a hashing balancer reads). */
  send(driver: ShadowDriver, hash: HashInput): void {
    if (this.st !== St.Body) return;
    const d = this.dest;
    const sub = this.policy.subset;
    const e = sub === null ? d.pick(hash, null) : (d.pickIn?.(sub, hash) ?? null);
    if (e === null) {
      this.drop('no_endpoint');
      return;
    }
    if (this.owner.skips(e)) {
      this.drop('backoff');
      return;
    }
    this.endpoint = e;
    this.st = St.Sent;
    this.driver = driver;
    const clock = this.owner.time;
    this.startedAt = clock.now();
    // No balancer's start: a copy is no evidence for the mirror's balancer either (a copy that
    // times out would teach peak EWMA its timeout as the endpoint's latency).
    let refused: Refusal | null;
    try {
      refused = driver.send(this, e);
    } catch (err) {
      refused = { code: 'SKEIN_E_UPSTREAM_CONNECT', message: (err as Error).message };
    }
    if (refused !== null) {
      this.end();
      this.owner.c.mirrorDropped(this.service, d.service, this.subsetName, 'refused');
      return;
    }
    if (this.st === St.Sent) this.timer = clock.setTimeout(() => this.expire(), this.policy.timeoutMs);
  }

  /**
   * The copy's response ended with `status`; a gRPC call's `grpcStatus` (-1: none came) counts as
   * the HTTP status it stands for (grpc.ts), as the primary's does.
   */
  answered(status: number, grpcStatus?: number): void {
    if (this.st === St.Sent && this.endpoint !== null) this.owner.reached(this.endpoint);
    this.finish(grpcStatus === undefined || status !== 200 ? status : grpcAsHttp(grpcStatus));
  }

  /** The copy got no response: `connect`, its connection was never made (refused, timed out); else reset or a protocol error. */
  failed(connect = false): void {
    if (connect && this.st === St.Sent && this.endpoint !== null) this.owner.connectFailed(this.endpoint);
    this.finish(0);
  }

  private expire(): void {
    this.timer = null;
    if (this.st !== St.Sent) return;
    // A connect that outlived the copy's time (a black-holed shadow) is backed off as a refused one.
    if (this.driver?.abort() === true && this.endpoint !== null) this.owner.connectFailed(this.endpoint);
    this.finish(0);
  }

  private get subsetName(): string {
    return this.policy.subset?.name ?? '';
  }

  private finish(status: number): void {
    if (this.st !== St.Sent) return;
    const ms = this.owner.time.now() - this.startedAt;
    this.end();
    this.owner.c.mirrored(this.service, this.dest.service, this.subsetName, status, ms / 1000);
  }

  private drop(reason: 'body' | 'incomplete' | 'no_endpoint' | 'backoff'): void {
    this.end();
    this.owner.c.mirrorDropped(this.service, this.dest.service, this.subsetName, reason);
  }

  private end(): void {
    this.st = St.Done;
    this.driver = null;
    this.timer?.cancel();
    this.timer = null;
    this.owner.release(this.policy);
  }
}
