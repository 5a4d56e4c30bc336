/**
 * What a driver (the HTTP/1 forwarder today; HTTP/2, TCP and the SDK later) tells the observers
 * of a request: the tracer (spans per hop and attempt, implemented in src/telemetry/trace.ts)
 * and the taps (`skein tap`, implemented in src/telemetry/tap.ts). Contracts only: no I/O, no
 * protocol. The tap record itself is a wire format and lives in src/api/tap.ts.
 */
import type { Direction } from '../api/stats.js';
import type { TapRecord } from '../api/tap.js';

// ---------------------------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------------------------

/**
 * The trace context headers a request came with (tracing on), names in camelCase. A second
 * value of a single-valued header is joined with "," by the driver, which no parser accepts:
 * the hop then starts a new trace.
 */
export interface TraceHeaders {
  traceparent?: string;
  tracestate?: string;
  b3?: string;
  xB3TraceId?: string;
  xB3SpanId?: string;
  xB3ParentSpanId?: string;
  xB3Sampled?: string;
  xB3Flags?: string;
}

/** What a hop span records of its request. */
export interface HopAttributes {
  /** The proxy's workload. */
  readonly workload: string;
  readonly service: string;
  readonly route: string;
  readonly method: string;
  /** The request target; the tracer keeps the path only (no query or fragment). */
  readonly path: string;
  /** The calling service, when known (inbound: x-skein-caller). */
  readonly caller?: string;
}

/** The endpoint an attempt goes to, as a span records it. */
export interface TraceEndpoint {
  readonly id: string;
  readonly address: string;
  readonly port: number;
}

/** Makes the spans of requests. */
export interface Tracer {
  /**
   * A span for one proxy hop: kind SERVER inbound, INTERNAL outbound (its attempts are the
   * CLIENT spans). A child of the incoming context when there is a valid one, else the root of
   * a new trace. Never throws: malformed trace headers only mean a new trace.
   */
  hop(direction: Direction, incoming: TraceHeaders, attrs: HopAttributes): HopTrace;
}

/** One proxy hop of a trace. */
export interface HopTrace {
  /** A child span for attempt `n` (1, 2, ...) to an endpoint. */
  attempt(n: number, endpoint: TraceEndpoint): AttemptTrace;
  /** Ends the hop: `status` the response status (0: none), `error` an error code or message. Once; later calls are ignored. */
  end(status: number, error?: string | null): void;
}

/** A header to send upstream: a lowercase name and its value. */
export type HeaderPair = readonly [name: string, value: string];

/** One attempt of a hop. */
export interface AttemptTrace {
  /**
   * The trace context headers for the attempt's upstream request, so that the next hop is its
   * child: `traceparent` (always), `tracestate` (when the request had a valid one), `b3` and/or
   * `x-b3-*` (when the request came with that form). Names are lowercase tokens and values were
   * validated by the tracer (no CR, LF or other control characters), so a driver may write
   * them as they are in whatever framing its protocol uses.
   */
  readonly headers: readonly HeaderPair[];
  /** Ends the attempt, as `HopTrace.end`. */
  end(status: number, error?: string | null): void;
}

// ---------------------------------------------------------------------------------------------
// Taps
// ---------------------------------------------------------------------------------------------

/** What taps want of a request, as bits: nothing (0), the summary (TAP_ON), headers, bodies. */
export const TAP_ON = 1;
export const TAP_HEADERS = 2;
export const TAP_BODIES = 4;
/** Body bytes a tap shows at most, per direction. */
export const TAP_BODY_BYTES = 4096;

/** Where a driver sends the records of tapped requests. */
export interface TapSink {
  /** TAP_* bits: what the taps that match this request want (0: none; the common case). */
  wants(source: string | null, service: string | null): number;
  publish(r: TapRecord): void;
}
