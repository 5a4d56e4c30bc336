/**
 * Distributed tracing for the proxy: W3C trace context and B3 propagation (pure parse/format
 * functions), and an `OtlpTracer`, the engine's `Tracer` (src/engine/observe.ts): one span per
 * proxy hop and one child span per attempt to an endpoint, exported with the OpenTelemetry SDK
 * (BatchSpanProcessor with a bounded queue, OTLP/HTTP JSON exporter). Off by default: the proxy only calls this module when a trace
 * endpoint is configured (`--trace-otlp URL`). See docs/tracing.md.
 *
 * Hot path: `hop` + `attempt` + two `end`s run per request. They allocate the SDK's span objects
 * and a few small ones (a parent context, the header pairs), but make no closures of their own.
 *
 * Why one file of ~700 lines: the propagation formats (W3C, B3 single and multi) and the tracer
 * that chooses between them on every hop are one concept; about half of it is the parsers'
 * strict rules, each with its reference.
 */
import {
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  createContextKey,
  createTraceState,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type SpanOptions,
  type Tracer as OtelTracer,
  type TraceState,
} from '@opentelemetry/api';
import {
  BatchSpanProcessor,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type ReadableSpan,
  type Sampler,
  type SamplingResult,
  type SpanExporter,
} from '@opentelemetry/sdk-trace';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_URL_PATH,
} from '@opentelemetry/semantic-conventions';
import type { Direction } from '../api/stats.js';
import type { AttemptTrace, HeaderPair, HopAttributes, HopTrace, TraceEndpoint, Tracer, TraceHeaders } from '../engine/observe.js';
import { VERSION } from '../version.js';

// ---------------------------------------------------------------------------------------------
// W3C trace context (https://www.w3.org/TR/trace-context/)
// ---------------------------------------------------------------------------------------------

/** A parsed `traceparent`: ids in lowercase hex, `traceFlags` the flags byte (bit 0: sampled). */
export interface TraceparentContext {
  readonly traceId: string;
  readonly spanId: string;
  readonly traceFlags: number;
}

/** Whether `s[from, to)` is all lowercase hex digits. */
function isLowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** Whether `s[from, to)` is all '0'. */
function isZeros(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) !== 0x30) return false;
  return true;
}

/** `s` without leading and trailing OWS (spaces and tabs). */
function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Parses a `traceparent` header value strictly (W3C Trace Context, level 1): version 00 is
 * exactly `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, with neither id all zeros. A higher version
 * (01 to fe) is parsed as the spec asks: the same first four fields, then either the end or a
 * dash (what follows is ignored). Version ff, uppercase hex, a wrong length or an all-zero id
 * give null: the caller starts a new trace. Leading and trailing spaces/tabs are allowed.
 */
export function parseTraceparent(value: string | undefined): TraceparentContext | null {
  if (value === undefined) return null;
  const v = trimOws(value);
  if (v.length < 55) return null;
  if (!isLowerHex(v, 0, 2)) return null;
  const version = v.slice(0, 2);
  if (version === 'ff') return null;
  if (version === '00' ? v.length !== 55 : v.length > 55 && v.charCodeAt(55) !== 0x2d) return null;
  if (v.charCodeAt(2) !== 0x2d || v.charCodeAt(35) !== 0x2d || v.charCodeAt(52) !== 0x2d) return null;
  if (!isLowerHex(v, 3, 35) || isZeros(v, 3, 35)) return null;
  if (!isLowerHex(v, 36, 52) || isZeros(v, 36, 52)) return null;
  if (!isLowerHex(v, 53, 55)) return null;
  return { traceId: v.slice(3, 35), spanId: v.slice(36, 52), traceFlags: parseInt(v.slice(53, 55), 16) };
}

/** Formats a version-00 `traceparent` value; ids must be lowercase hex (32 and 16 digits). */
export function formatTraceparent(traceId: string, spanId: string, traceFlags: number): string {
  const f = traceFlags & 0xff;
  return `00-${traceId}-${spanId}-${f < 16 ? '0' : ''}${f.toString(16)}`;
}

const TRACESTATE_KEY = /^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})$/;
const TRACESTATE_VALUE = /^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;
/** Most list members a `tracestate` may have (W3C). */
export const TRACESTATE_MAX_MEMBERS = 32;

/**
 * Validates a `tracestate` value (several headers joined with ","): returns it normalised
 * (members trimmed, empty members dropped, joined with ","), or null when it is absent, empty
 * or invalid (a bad key or value, a duplicate key, more than 32 members), so that an invalid
 * state is not passed on (the spec's SHOULD).
 */
export function parseTracestate(value: string | undefined): string | null {
  if (value === undefined) return null;
  const parts = value.split(',');
  let out = '';
  let keys: string[] | null = null;
  let count = 0;
  for (const part of parts) {
    const m = trimOws(part);
    if (m === '') continue;
    const eq = m.indexOf('=');
    if (eq <= 0) return null;
    const key = m.slice(0, eq);
    if (!TRACESTATE_KEY.test(key) || !TRACESTATE_VALUE.test(m.slice(eq + 1))) return null;
    if (keys === null) keys = [key];
    else if (keys.includes(key)) return null;
    else keys.push(key);
    if (++count > TRACESTATE_MAX_MEMBERS) return null;
    out = count === 1 ? m : `${out},${m}`;
  }
  return count === 0 ? null : out;
}

// ---------------------------------------------------------------------------------------------
// B3 (https://github.com/openzipkin/b3-propagation)
// ---------------------------------------------------------------------------------------------

/**
 * A parsed B3 context. `traceId` and `spanId` are null when the header carried only a sampling
 * decision (`b3: 0`, or `x-b3-sampled` alone). `traceId` is always 32 hex digits (a 64-bit id
 * is left-padded with zeros; `traceId64` says so, so that it goes on as 16 digits).
 * `sampled`: the caller's decision, or null when it deferred it. `debug` implies sampled.
 */
export interface B3Context {
  readonly traceId: string | null;
  readonly spanId: string | null;
  readonly parentSpanId: string | null;
  readonly sampled: boolean | null;
  readonly debug: boolean;
  readonly traceId64: boolean;
}

/** `s` lowercased when it is 16 (or `allow32`: 32) hex digits of either case and not all zero, else null. */
function b3Id(s: string, allow32: boolean): string | null {
  if (s.length !== 16 && !(allow32 && s.length === 32)) return null;
  let v = s;
  if (!isLowerHex(v, 0, v.length)) {
    v = v.toLowerCase();
    if (!isLowerHex(v, 0, v.length)) return null;
  }
  return isZeros(v, 0, v.length) ? null : v;
}

const PAD64 = '0000000000000000';

/**
 * Parses the single `b3` header: `{TraceId}-{SpanId}`, optionally `-{SamplingState}` and then
 * `-{ParentSpanId}`, or a lone sampling state (`0`, `1`, `d`). The trace id is 16 or 32 hex
 * digits, span ids 16; hex is accepted in either case (lowercased). Anything else, or an
 * all-zero id, gives null (the caller starts a new trace).
 */
export function parseB3(value: string | undefined): B3Context | null {
  if (value === undefined) return null;
  const v = trimOws(value);
  if (v.length === 1) {
    const s = samplingState(v);
    return s === undefined ? null : { traceId: null, spanId: null, parentSpanId: null, sampled: s === 'd' ? true : s, debug: s === 'd', traceId64: false };
  }
  const parts = v.split('-');
  if (parts.length < 2 || parts.length > 4) return null;
  const t = b3Id(parts[0]!, true);
  const span = b3Id(parts[1]!, false);
  if (t === null || span === null) return null;
  let sampled: boolean | null = null;
  let debug = false;
  if (parts.length >= 3) {
    const s = samplingState(parts[2]!);
    if (s === undefined) return null;
    debug = s === 'd';
    sampled = s === 'd' ? true : s;
  }
  let parent: string | null = null;
  if (parts.length === 4) {
    parent = b3Id(parts[3]!, false);
    if (parent === null) return null;
  }
  return { traceId: t.length === 16 ? PAD64 + t : t, spanId: span, parentSpanId: parent, sampled, debug, traceId64: t.length === 16 };
}

function samplingState(s: string): boolean | 'd' | undefined {
  return s === '1' ? true : s === '0' ? false : s === 'd' ? 'd' : undefined;
}

/** The multi-header B3 form, as header values (absent: undefined). */
export interface B3Headers {
  readonly traceId?: string | undefined;
  readonly spanId?: string | undefined;
  readonly parentSpanId?: string | undefined;
  readonly sampled?: string | undefined;
  readonly flags?: string | undefined;
}

/**
 * Parses the multi-header B3 form: `x-b3-traceid` (16 or 32 hex), `x-b3-spanid` (16 hex), optional
 * `x-b3-parentspanid`, `x-b3-sampled` (`1`/`0`, or the legacy `true`/`false`), `x-b3-flags`
 * (`1`: debug, which implies sampled). Only a sampling decision (no ids) gives a context with null
 * ids. Nothing at all, one id without the other, or any malformed value gives null.
 */
export function parseB3Multi(h: B3Headers): B3Context | null {
  let sampled: boolean | null = null;
  let debug = false;
  if (h.sampled !== undefined) {
    const s = trimOws(h.sampled).toLowerCase();
    if (s === '1' || s === 'true') sampled = true;
    else if (s === '0' || s === 'false') sampled = false;
    else return null;
  }
  if (h.flags !== undefined) {
    const f = trimOws(h.flags);
    if (f === '1') {
      debug = true;
      sampled = true;
    } else if (f !== '0') return null;
  }
  if (h.traceId === undefined && h.spanId === undefined) {
    if (h.sampled === undefined && h.flags === undefined) return null;
    return { traceId: null, spanId: null, parentSpanId: null, sampled, debug, traceId64: false };
  }
  if (h.traceId === undefined || h.spanId === undefined) return null;
  const t = b3Id(trimOws(h.traceId), true);
  const span = b3Id(trimOws(h.spanId), false);
  if (t === null || span === null) return null;
  let parent: string | null = null;
  if (h.parentSpanId !== undefined) {
    parent = b3Id(trimOws(h.parentSpanId), false);
    if (parent === null) return null;
  }
  return { traceId: t.length === 16 ? PAD64 + t : t, spanId: span, parentSpanId: parent, sampled, debug, traceId64: t.length === 16 };
}

/** What `formatB3` and `formatB3Multi` write. `traceId64`: write the trace id's low 64 bits only. */
export interface B3Out {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId?: string | null;
  readonly sampled: boolean;
  readonly debug?: boolean;
  readonly traceId64?: boolean;
}

/** The single `b3` header value: `{TraceId}-{SpanId}-{1|0|d}[-{ParentSpanId}]`. */
export function formatB3(c: B3Out): string {
  const t = c.traceId64 === true && c.traceId.length === 32 ? c.traceId.slice(16) : c.traceId;
  const s = c.debug === true ? 'd' : c.sampled ? '1' : '0';
  return c.parentSpanId == null ? `${t}-${c.spanId}-${s}` : `${t}-${c.spanId}-${s}-${c.parentSpanId}`;
}

/**
 * The multi-header form, as lowercase header names and values. Debug goes as `x-b3-flags: 1`
 * without `x-b3-sampled` (debug implies it, as the B3 spec asks).
 */
export function formatB3Multi(c: B3Out): Record<string, string> {
  const out: Record<string, string> = {
    'x-b3-traceid': c.traceId64 === true && c.traceId.length === 32 ? c.traceId.slice(16) : c.traceId,
    'x-b3-spanid': c.spanId,
  };
  if (c.parentSpanId != null) out['x-b3-parentspanid'] = c.parentSpanId;
  if (c.debug === true) out['x-b3-flags'] = '1';
  else out['x-b3-sampled'] = c.sampled ? '1' : '0';
  return out;
}

// ---------------------------------------------------------------------------------------------
// The incoming context of a request
// ---------------------------------------------------------------------------------------------

/**
 * What a hop continues from. `traceId`/`spanId` null: a new trace. `sampled`: the caller's
 * decision (null: none, this proxy decides with its sample ratio). `tracestate`: passed on (only
 * with a valid traceparent). `b3`/`b3Multi`: the request came with that B3 form, so the upstream
 * request gets it too (even when it was malformed and a new trace started).
 */
export interface IncomingContext {
  readonly traceId: string | null;
  readonly spanId: string | null;
  readonly sampled: boolean | null;
  readonly debug: boolean;
  readonly tracestate: string | null;
  readonly b3: boolean;
  readonly b3Multi: boolean;
  readonly traceId64: boolean;
}

const NONE: IncomingContext = Object.freeze({ traceId: null, spanId: null, sampled: null, debug: false, tracestate: null, b3: false, b3Multi: false, traceId64: false });

/**
 * Picks the context a hop continues: a valid `traceparent` first (with its `tracestate`), else a
 * valid single `b3`, else a valid multi-header B3; else a new trace (keeping a bare B3 sampling
 * decision). Never throws: malformed headers only mean a new trace.
 */
export function resolveIncoming(h: TraceHeaders): IncomingContext {
  const b3 = h.b3 !== undefined;
  const b3Multi = h.xB3TraceId !== undefined || h.xB3SpanId !== undefined || h.xB3ParentSpanId !== undefined || h.xB3Sampled !== undefined || h.xB3Flags !== undefined;
  if (h.traceparent === undefined && !b3 && !b3Multi) return NONE;
  const tp = parseTraceparent(h.traceparent);
  if (tp !== null) {
    // A B3 form with the same trace id in 64 bits (an earlier hop wrote both from a 64-bit B3 id)
    // keeps it 64-bit in B3, so that an app that sent a 64-bit id gets it back at every hop.
    const traceId64 = (b3 || b3Multi) && tp.traceId.startsWith(PAD64) && b3TraceId64(h) === tp.traceId;
    return { traceId: tp.traceId, spanId: tp.spanId, sampled: (tp.traceFlags & 1) === 1, debug: false, tracestate: parseTracestate(h.tracestate), b3, b3Multi, traceId64 };
  }
  let c = b3 ? parseB3(h.b3) : null;
  if (c === null || c.traceId === null) {
    const m = b3Multi ? parseB3Multi({ traceId: h.xB3TraceId, spanId: h.xB3SpanId, parentSpanId: h.xB3ParentSpanId, sampled: h.xB3Sampled, flags: h.xB3Flags }) : null;
    if (m !== null && (c === null || m.traceId !== null)) c = m;
  }
  if (c === null) return { traceId: null, spanId: null, sampled: null, debug: false, tracestate: null, b3, b3Multi, traceId64: false };
  return { traceId: c.traceId, spanId: c.spanId, sampled: c.sampled, debug: c.debug, tracestate: null, b3, b3Multi, traceId64: c.traceId !== null && c.traceId64 };
}

/** The (zero-padded) trace id of a valid 64-bit B3 context among the headers (single first), else null. */
function b3TraceId64(h: TraceHeaders): string | null {
  const c = h.b3 === undefined ? null : parseB3(h.b3);
  if (c !== null && c.traceId !== null) return c.traceId64 ? c.traceId : null;
  if (h.xB3TraceId === undefined) return null;
  const m = parseB3Multi({ traceId: h.xB3TraceId, spanId: h.xB3SpanId, parentSpanId: h.xB3ParentSpanId, sampled: h.xB3Sampled, flags: h.xB3Flags });
  return m !== null && m.traceId64 ? m.traceId : null;
}

// ---------------------------------------------------------------------------------------------
// The tracer
// ---------------------------------------------------------------------------------------------

export interface ProxyTracerOptions {
  /** OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces (http: or https:). */
  readonly endpoint: string;
  /** The resource's service.name (what Jaeger/Tempo list the spans under). */
  readonly serviceName: string;
  /** Share of new traces to sample, 0 to 1 (default 1). A caller's decision is always kept. */
  readonly sampleRatio?: number;
  /** Extra HTTP headers on each export (e.g. an API key). */
  readonly headers?: Record<string, string>;
  /** Most time one export (and `shutdown`) may take, in ms (default 10000). */
  readonly exportTimeoutMs?: number;
  /** Most finished spans waiting for export; more are dropped (default 2048). */
  readonly maxQueueSize?: number;
  /** Time between scheduled exports, in ms (default 5000); a full batch (512) goes at once. */
  readonly exportIntervalMs?: number;
  /** Extra resource attributes (e.g. service.instance.id). */
  readonly resource?: Record<string, string>;
  /** Called when an export fails (collector down, refused, timed out); must not throw. */
  readonly onExportError?: (error: Error) => void;
}

/** The engine's tracer, exporting to an OTLP/HTTP collector. */
export interface OtlpTracer extends Tracer {
  /** Exports what has ended so far (resolves, never rejects). */
  flush(): Promise<void>;
  /**
   * Flushes and stops; resolves (never rejects) within about `exportTimeoutMs`, also when the
   * collector is down. Spans ended afterwards are dropped. Idempotent.
   */
  shutdown(): Promise<void>;
}

const FORCE_SAMPLING = createContextKey('skein.trace.force-sampling');
const SAMPLE: SamplingResult = Object.freeze({ decision: SamplingDecision.RECORD_AND_SAMPLED });
const DROP: SamplingResult = Object.freeze({ decision: SamplingDecision.NOT_RECORD });
const NO_ATTRIBUTES: Attributes = Object.freeze({});
const NO_LINKS: Link[] = [];

/**
 * The API's context key of the current span, captured once through `trace.setSpan`, so that a
 * parent context can be a small object rather than the API's BaseContext (a Map and three
 * closures per context). Null if the API ever stops working that way: then `trace.setSpan` is used.
 */
const SPAN_KEY: symbol | null = (() => {
  let key: symbol | null = null;
  const spy: Context = {
    getValue: () => undefined,
    setValue: (k: symbol) => {
      key = k;
      return ROOT_CONTEXT;
    },
    deleteValue: () => ROOT_CONTEXT,
  };
  const probe = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
  trace.setSpan(spy, probe);
  if (key === null) return null;
  const k: symbol = key;
  return trace.getSpan({ ...spy, getValue: (x: symbol) => (x === k ? probe : undefined) }) === probe ? k : null;
})();

/** A context holding only a span (the parent of the next span). */
class SpanOnlyContext implements Context {
  constructor(private readonly span: Span) {}
  getValue(key: symbol): unknown {
    return key === SPAN_KEY ? this.span : undefined;
  }
  setValue(key: symbol, value: unknown): Context {
    return trace.setSpan(ROOT_CONTEXT, this.span).setValue(key, value);
  }
  deleteValue(key: symbol): Context {
    return key === SPAN_KEY ? ROOT_CONTEXT : this;
  }
}

/** A context whose span is `span`. */
function withSpan(span: Span): Context {
  return SPAN_KEY === null ? trace.setSpan(ROOT_CONTEXT, span) : new SpanOnlyContext(span);
}

const FORCED_SAMPLE = ROOT_CONTEXT.setValue(FORCE_SAMPLING, true);
const FORCED_DROP = ROOT_CONTEXT.setValue(FORCE_SAMPLING, false);

/**
 * ParentBased(TraceIdRatioBased(ratio)), plus a forced decision for a new trace (a bare B3
 * sampling state): a parent's sampled flag decides for its children, so an unsampled trace
 * stays unsampled (non-recording spans with new ids, flags 00) all the way down.
 */
class HopSampler implements Sampler {
  private readonly ratio: Sampler | null;
  constructor(readonly sampleRatio: number) {
    this.ratio = sampleRatio >= 1 || sampleRatio <= 0 ? null : new TraceIdRatioBasedSampler(sampleRatio);
  }
  shouldSample(context: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    const parent = trace.getSpanContext(context);
    if (parent !== undefined) return (parent.traceFlags & TraceFlags.SAMPLED) !== 0 ? SAMPLE : DROP;
    const forced = context.getValue(FORCE_SAMPLING);
    if (forced !== undefined) return forced === true ? SAMPLE : DROP;
    return this.decideNew(traceId, spanName, spanKind, attributes, links);
  }
  /** The decision for a new trace, or a trace whose caller deferred it (B3 without a sampling state). */
  decideNew(traceId: string, spanName = '', spanKind = SpanKind.SERVER, attributes = NO_ATTRIBUTES, links = NO_LINKS): SamplingResult {
    if (this.ratio === null) return this.sampleRatio >= 1 ? SAMPLE : DROP;
    return this.ratio.shouldSample(ROOT_CONTEXT, traceId, spanName, spanKind, attributes, links).decision === SamplingDecision.RECORD_AND_SAMPLED ? SAMPLE : DROP;
  }
  toString(): string {
    return `SkeinHopSampler{ratio=${this.sampleRatio}}`;
  }
}

/** A validated `tracestate` as the API's TraceState: serialises as it came, parses only if asked. */
class PassThroughTraceState implements TraceState {
  constructor(private readonly value: string) {}
  set(key: string, value: string): TraceState {
    return createTraceState(this.value).set(key, value);
  }
  unset(key: string): TraceState {
    return createTraceState(this.value).unset(key);
  }
  get(key: string): string | undefined {
    return createTraceState(this.value).get(key);
  }
  serialize(): string {
    return this.value;
  }
}

/** The exporter, telling `onExportError` about failed exports (one callback per batch, not per span). */
type ExportCallback = Parameters<SpanExporter['export']>[1];
class ReportingExporter implements SpanExporter {
  constructor(
    private readonly inner: SpanExporter,
    private readonly onError: (error: Error) => void,
  ) {}
  export(spans: ReadableSpan[], done: ExportCallback): void {
    this.inner.export(spans, (result) => {
      // ExportResultCode.SUCCESS is 0 (@opentelemetry/core).
      if (result.code !== 0) {
        try {
          this.onError(result.error ?? new Error('span export failed'));
        } catch {
          // the callback must not break the export pipeline
        }
      }
      done(result);
    });
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush === undefined ? Promise.resolve() : this.inner.forceFlush();
  }
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'QUERY']);
const SERVER: SpanOptions = Object.freeze({ kind: SpanKind.SERVER });
const INTERNAL: SpanOptions = Object.freeze({ kind: SpanKind.INTERNAL });
const CLIENT: SpanOptions = Object.freeze({ kind: SpanKind.CLIENT });
const SKEIN_CODE = /^SKEIN_E_[A-Z0-9_]+$/;
const QUERY_OR_FRAGMENT = /[?#]/;

/** Sets the outcome on a recording span and ends it: ERROR for 5xx, no response (0) or an error. */
function finish(span: Span, status: number, error: string | null | undefined): void {
  if (span.isRecording()) {
    if (status > 0) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    const failed = error != null && error !== '';
    if (failed || status >= 500 || status <= 0) {
      if (failed && SKEIN_CODE.test(error)) {
        span.setAttribute('skein.error_code', error);
        span.setAttribute(ATTR_ERROR_TYPE, error);
      } else {
        span.setAttribute(ATTR_ERROR_TYPE, status >= 500 ? String(status) : '_OTHER');
      }
      span.setStatus({ code: SpanStatusCode.ERROR, message: failed ? error : status <= 0 ? 'no response' : `HTTP ${status}` });
    }
  }
  span.end();
}

class Attempt implements AttemptTrace {
  private ended = false;
  constructor(
    private readonly span: Span,
    readonly headers: readonly HeaderPair[],
  ) {}
  end(status: number, error?: string | null): void {
    if (this.ended) return;
    this.ended = true;
    finish(this.span, status, error);
  }
}

class Hop implements HopTrace {
  private ended = false;
  /** The context with this hop's span, for its attempts (made at the first attempt). */
  private context: Context | null = null;
  constructor(
    private readonly tracer: OtelTracer,
    private readonly span: Span,
    private readonly method: string,
    private readonly service: string,
    private readonly incoming: IncomingContext,
  ) {}

  attempt(n: number, endpoint: TraceEndpoint): AttemptTrace {
    const context = (this.context ??= withSpan(this.span));
    const span = this.tracer.startSpan(`${this.method} ${this.service} attempt`, CLIENT, context);
    if (span.isRecording()) {
      span.setAttribute(ATTR_HTTP_REQUEST_METHOD, this.method === 'HTTP' ? '_OTHER' : this.method);
      span.setAttribute(ATTR_SERVER_ADDRESS, endpoint.address);
      span.setAttribute(ATTR_SERVER_PORT, endpoint.port);
      span.setAttribute('skein.service', this.service);
      span.setAttribute('skein.endpoint', endpoint.id);
      span.setAttribute('skein.attempt', n);
    }
    const sc = span.spanContext();
    const sampled = (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
    const inc = this.incoming;
    // Values are hex ids and a tracestate that parseTracestate validated: no CR, LF or controls.
    const headers: HeaderPair[] = [['traceparent', `00-${sc.traceId}-${sc.spanId}-${sampled ? '01' : '00'}`]];
    if (inc.tracestate !== null) headers.push(['tracestate', inc.tracestate]);
    if (inc.b3 || inc.b3Multi) {
      const t = inc.traceId64 ? sc.traceId.slice(16) : sc.traceId;
      const parent = this.span.spanContext().spanId;
      if (inc.b3) headers.push(['b3', `${t}-${sc.spanId}-${inc.debug ? 'd' : sampled ? '1' : '0'}-${parent}`]);
      if (inc.b3Multi) headers.push(['x-b3-traceid', t], ['x-b3-spanid', sc.spanId], ['x-b3-parentspanid', parent], inc.debug ? ['x-b3-flags', '1'] : ['x-b3-sampled', sampled ? '1' : '0']);
    }
    return new Attempt(span, headers);
  }

  end(status: number, error?: string | null): void {
    if (this.ended) return;
    this.ended = true;
    finish(this.span, status, error);
  }
}

class ExportingTracer implements OtlpTracer {
  private shutdownPromise: Promise<void> | null = null;
  constructor(
    private readonly provider: TracerProvider,
    private readonly tracer: OtelTracer,
    private readonly sampler: HopSampler,
    private readonly timeoutMs: number,
  ) {}

  hop(direction: Direction, incoming: TraceHeaders, attrs: HopAttributes): HopTrace {
    const inc = resolveIncoming(incoming);
    let parent: Context = ROOT_CONTEXT;
    if (inc.traceId !== null && inc.spanId !== null) {
      const sampled = inc.sampled ?? this.sampler.decideNew(inc.traceId) === SAMPLE;
      const sc: SpanContext = {
        traceId: inc.traceId,
        spanId: inc.spanId,
        traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
        isRemote: true,
        traceState: inc.tracestate === null ? undefined : new PassThroughTraceState(inc.tracestate),
      };
      parent = withSpan(trace.wrapSpanContext(sc));
    } else if (inc.sampled !== null) {
      parent = inc.sampled ? FORCED_SAMPLE : FORCED_DROP;
    }
    const known = KNOWN_METHODS.has(attrs.method);
    const method = known ? attrs.method : 'HTTP';
    const span = this.tracer.startSpan(`${method} ${attrs.service}`, direction === 'inbound' ? SERVER : INTERNAL, parent);
    if (span.isRecording()) {
      span.setAttribute(ATTR_HTTP_REQUEST_METHOD, known ? attrs.method : '_OTHER');
      if (!known) span.setAttribute(ATTR_HTTP_REQUEST_METHOD_ORIGINAL, attrs.method);
      const q = attrs.path.search(QUERY_OR_FRAGMENT);
      span.setAttribute(ATTR_URL_PATH, q < 0 ? attrs.path : attrs.path.slice(0, q));
      span.setAttribute('skein.direction', direction);
      span.setAttribute('skein.workload', attrs.workload);
      span.setAttribute('skein.service', attrs.service);
      span.setAttribute('skein.route', attrs.route);
      if (attrs.caller !== undefined) span.setAttribute('skein.caller', attrs.caller);
    }
    return new Hop(this.tracer, span, method, attrs.service, inc);
  }

  async flush(): Promise<void> {
    try {
      await this.provider.forceFlush({ timeoutMillis: this.timeoutMs + 1000 });
    } catch {
      // a failed export is reported through onExportError
    }
  }

  shutdown(): Promise<void> {
    return (this.shutdownPromise ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.timeoutMs + 1000);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.provider.shutdown().then(done, done);
    }));
  }
}


/** Defaults of `createProxyTracer`. */
export const TRACE_DEFAULTS = Object.freeze({ sampleRatio: 1, exportTimeoutMs: 10_000, maxQueueSize: 2048, exportIntervalMs: 5000, maxExportBatchSize: 512 });

/**
 * A tracer for the proxy, exporting to an OTLP/HTTP (JSON) endpoint through a BatchSpanProcessor
 * with a bounded queue: a dead or slow collector costs dropped spans, never blocked requests or
 * growing memory. Throws (TypeError/RangeError) on a bad endpoint or option.
 * `OTEL_EXPORTER_OTLP_*` environment variables (headers, compression, TLS certificates) still
 * apply to the exporter; the options here take precedence.
 */
export function createProxyTracer(opts: ProxyTracerOptions): OtlpTracer {
  let url: URL;
  try {
    url = new URL(opts.endpoint);
  } catch {
    throw new TypeError(`trace endpoint "${opts.endpoint}" is not a URL (e.g. http://127.0.0.1:4318/v1/traces)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`trace endpoint "${opts.endpoint}" must be an http: or https: URL`);
  if (typeof opts.serviceName !== 'string' || opts.serviceName === '') throw new TypeError('trace serviceName must be a non-empty string');
  const ratio = opts.sampleRatio ?? TRACE_DEFAULTS.sampleRatio;
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new RangeError(`trace sample ratio must be between 0 and 1, got ${ratio}`);
  const timeoutMs = positiveInt('exportTimeoutMs', opts.exportTimeoutMs, TRACE_DEFAULTS.exportTimeoutMs);
  const maxQueueSize = positiveInt('maxQueueSize', opts.maxQueueSize, TRACE_DEFAULTS.maxQueueSize);
  const intervalMs = positiveInt('exportIntervalMs', opts.exportIntervalMs, TRACE_DEFAULTS.exportIntervalMs);
  const batch = Math.min(TRACE_DEFAULTS.maxExportBatchSize, maxQueueSize);

  let exporter: SpanExporter = new OTLPTraceExporter({
    url: url.href,
    headers: { ...opts.headers },
    timeoutMillis: timeoutMs,
    // A flush or shutdown sends the whole queue at once, in batches.
    concurrencyLimit: Math.ceil(maxQueueSize / batch) + 1,
  });
  if (opts.onExportError !== undefined) exporter = new ReportingExporter(exporter, opts.onExportError);
  const processor = new BatchSpanProcessor({
    exporter,
    maxQueueSize,
    maxExportBatchSize: batch,
    scheduledDelayMillis: intervalMs,
    exportTimeoutMillis: timeoutMs,
  });
  const sampler = new HopSampler(ratio);
  const provider = new TracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ ...opts.resource, [ATTR_SERVICE_NAME]: opts.serviceName })),
    sampler,
    spanProcessors: [processor],
  });
  return new ExportingTracer(provider, provider.getTracer('skein-proxy', VERSION), sampler, timeoutMs);
}

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`trace ${name} must be a positive integer, got ${v}`);
  return v;
}
