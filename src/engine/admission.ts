/**
 * Admission: whether a routed request may start at all, before any endpoint is picked. In
 * order: the route's rate limit (either direction), fault injection (outbound: an abort answers
 * at once, a delay holds the request before its first attempt), and the service's limit on
 * requests in flight (outbound). Nothing here does I/O; the randomness of fault injection comes
 * from the caller (`Rng`), so tests can seed it.
 */
import type { Direction } from '../api/stats.js';
import type { RoutePolicy } from '../api/traffic.js';
import type { Rng } from '../core/backoff.js';
import { MAX_TIMER_MS } from '../core/clock.js';
import type { TrafficState } from '../resilience/traffic-state.js';
import type { Refusal } from './service-client.js';

/** Counters admission reports to (the proxy's metrics implement it). */
export interface AdmissionCounters {
  rateLimited(direction: Direction, service: string, route: string): void;
}

export interface Admitted {
  /** A fault-injection delay before the first attempt, in ms (0: none). */
  readonly delayMs: number;
}

const NO_DELAY: Admitted = Object.freeze({ delayMs: 0 });

/**
 * Whom a request counts against (a per-caller rate limit): outbound, the calling workload;
 * inbound, the caller's proxy's word for its service when it gave one, else the client's address.
 */
export function callerOf(direction: Direction, workload: string, claimed: string | null, client: string): string {
  return direction === 'outbound' ? workload : (claimed ?? client);
}

export function isRefusal(a: Admitted | Refusal): a is Refusal {
  return (a as Refusal).code !== undefined;
}

/**
 * Admits a request of `caller` to `route` of `traffic`'s service, or refuses it. `rng` draws the
 * fault-injection percentages (uniform in [0, 1)).
 */
export function admit(traffic: TrafficState, route: RoutePolicy, direction: Direction, caller: string, rng: Rng, counters: AdmissionCounters): Admitted | Refusal {
  const service = traffic.service;
  const wait = traffic.rateLimit(route, direction, caller);
  if (wait > 0) {
    counters.rateLimited(direction, service, route.name);
    const rl = route.rateLimit[direction];
    const per = rl?.perCaller === true ? ` per caller (${caller})` : '';
    return {
      code: 'SKEIN_E_RATE_LIMITED',
      message: `route "${route.name}" of "${service}" allows ${rl?.requestsPerSecond ?? 0} requests/s${per} (${direction})`,
      details: { service, route: route.name, direction, requestsPerSecond: rl?.requestsPerSecond, burst: rl?.burst, retryAfterMs: wait },
      retryAfterMs: wait,
    };
  }
  if (direction !== 'outbound') return NO_DELAY;
  let delayMs = 0;
  const fault = route.fault;
  if (fault !== null) {
    if (fault.abort !== null && rng() * 100 < fault.abort.percent) {
      return {
        code: 'SKEIN_E_FAULT_INJECTED',
        message: `route "${route.name}" of "${service}" injects an abort (status ${fault.abort.status}) into ${fault.abort.percent}% of requests`,
        status: fault.abort.status,
        details: { service, route: route.name },
      };
    }
    if (fault.delay !== null && rng() * 100 < fault.delay.percent) delayMs = fault.delay.ms;
  }
  const max = traffic.policy.limits.maxRequests;
  if (traffic.active >= max) {
    traffic.overflows++;
    return {
      code: 'SKEIN_E_UPSTREAM_OVERFLOW',
      message: `"${service}" has ${traffic.active} requests in flight (limits.maxRequests ${max})`,
      details: { service, route: route.name, inFlight: traffic.active, limit: max },
    };
  }
  return delayMs === 0 ? NO_DELAY : { delayMs };
}

/**
 * Whether an attempt may open a new connection to the service (outbound): its connection and
 * pending-request limits. The driver makes room first when it can (an idle connection to another
 * endpoint of the service, when `atConnectionLimit`), then asks.
 */
export function connectionRefusal(traffic: TrafficState): Refusal | null {
  const l = traffic.policy.limits;
  const open = traffic.connections.open;
  if (open < l.maxConnections && traffic.pending < l.maxPendingRequests) return null;
  traffic.overflows++;
  const what = open >= l.maxConnections ? `${open} connections (limits.maxConnections ${l.maxConnections})` : `${traffic.pending} requests waiting for a connection (limits.maxPendingRequests ${l.maxPendingRequests})`;
  return { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: `"${traffic.service}" has ${what}` };
}

/*
 * A new connection's bookkeeping, the same for every driver that makes its own (outbound): the
 * attempt reserves it (`reserveConnection`: refused at the limits, else pending), the connection
 * takes a place in the service's open count when it is made (`joinConnections`), stops being
 * pending once it is up, failed or given up (`connectSettled`, once per reservation), and leaves
 * the open count when it closes (`leaveConnections`, once). Nothing here allocates: a driver calls
 * these per new connection, never per request on a pooled one.
 */

/** The service has `limits.maxConnections` open: a driver that keeps idle connections may close one to make room. */
export function atConnectionLimit(traffic: TrafficState): boolean {
  return traffic.connections.open >= traffic.policy.limits.maxConnections;
}

/** Reserves a new connection to the service: its refusal at the limits, or null (then pending until `connectSettled`). */
export function reserveConnection(traffic: TrafficState): Refusal | null {
  const refused = connectionRefusal(traffic);
  if (refused === null) traffic.pending++;
  return refused;
}

/** A reserved connection is up, failed, or given up: no longer pending. */
export function connectSettled(traffic: TrafficState): void {
  traffic.pending--;
}

/** One new connection's reservation, held until it settles (once): what a driver keeps of `reserveConnection`. */
export class ConnectReservation {
  private traffic: TrafficState | null = null;

  /** Reserves a new connection to the service: its refusal at the limits, or null (held until `settle`). */
  reserve(traffic: TrafficState): Refusal | null {
    const refused = reserveConnection(traffic);
    if (refused === null) this.traffic = traffic;
    return refused;
  }

  /** A connection is reserved and not settled yet (it is being made). */
  get held(): boolean {
    return this.traffic !== null;
  }

  /** The connection is up, failed, or given up: no longer pending (a second call does nothing). */
  settle(): void {
    if (this.traffic !== null) connectSettled(this.traffic);
    this.traffic = null;
  }
}

/** A service's open connections (TrafficState.connections), or null for a connection counted nowhere (inbound). */
export type ConnectionCount = { open: number } | null;

/** A new connection takes its place in `c`: returns `c`, for the connection to leave once. */
export function joinConnections(c: ConnectionCount): ConnectionCount {
  if (c !== null) c.open++;
  return c;
}

/** A connection leaves its place in `c` (null: it has none, or left already): returns null, its place now. */
export function leaveConnections(c: ConnectionCount): null {
  if (c !== null) c.open--;
  return null;
}

/**
 * The caller's deadline in an `x-skein-timeout-ms` value: ms (capped at what a timer holds, about
 * 24.8 days), or the text when it is not whole milliseconds. A list ("300, 200": the header
 * repeated, as HTTP/2 and fetch join it) is its smallest: every protocol reads a repeat the same.
 */
export function deadlineMs(text: string): number | string {
  if (WHOLE_MS.test(text)) return Math.min(Number(text), MAX_TIMER_MS);
  if (!text.includes(',')) return text;
  let min = -1;
  for (const part of text.split(',')) {
    const v = part.trim();
    if (!WHOLE_MS.test(v)) return text;
    const ms = Math.min(Number(v), MAX_TIMER_MS);
    if (min < 0 || ms < min) min = ms;
  }
  return min;
}
const WHOLE_MS = /^\d{1,20}$/;

/** The refusal of a request whose x-skein-timeout-ms (`text`) is not whole milliseconds. */
export function badDeadline(text: string): Refusal {
  return { code: 'SKEIN_E_BAD_REQUEST', message: `x-skein-timeout-ms must be a whole number of milliseconds, not "${text.slice(0, 40)}"` };
}

/**
 * A request's deadline, in ms until its response head (0: none): the route's request timeout
 * (outbound; inbound, the caller's proxy applied it) and what the caller has left of its own
 * deadline (`callerMs`, x-skein-timeout-ms in HTTP; -1: none), the smaller of the two. A caller
 * whose deadline is already spent (0) is refused.
 */
export function deadlineOf(route: RoutePolicy, direction: Direction, service: string, callerMs: number): number | Refusal {
  if (callerMs === 0) return { code: 'SKEIN_E_DEADLINE_EXCEEDED', message: `the request's deadline was spent before it reached the ${direction} proxy of "${service}"` };
  const own = direction === 'outbound' ? route.requestTimeoutMs : 0;
  if (callerMs < 0) return own;
  return own === 0 ? callerMs : Math.min(own, callerMs);
}
