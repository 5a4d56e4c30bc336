/**
 * The proxy's HTTP/2 settings (docs/protocols.md, "HTTP/2"): the schema, every default and bound,
 * written once. The HTTP/2 driver (src/proxy/http2) reads the parsed object; it has no constant
 * of its own.
 *
 * Why these defaults:
 * - maxConcurrentStreams 128 (100..256): Node's default is unlimited (2^32-1), which lets one
 *   client connection hold as many requests as it likes; RFC 9113 §6.5.2 recommends at least 100.
 * - maxHeaderListBytes: the HTTP/1 listener's maxHeadBytes (64 KiB), so a request too large for
 *   one protocol is too large for the other.
 * - streamWindowBytes 1 MiB, sessionWindowBytes 8 MiB: the 64 KiB default connection window caps
 *   a 20 ms round trip at about 3 MB/s; 8 MiB lets eight streams each fill their window.
 * - maxSessionMemoryMb 32: Node's default (10) makes a busy session refuse new streams
 *   (NGHTTP2_ENHANCE_YOUR_CALM) with 128 streams of 1 MiB windows in flight.
 * - maxResets 200 per resetWindowMs 1000: a client that resets more streams than that in a second
 *   (CVE-2023-44487, "rapid reset") gets GOAWAY (ENHANCE_YOUR_CALM) and its connection closes.
 * - enablePush false: the mesh never pushes.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Obj } from './fields.js';
import { PROXY_LIMITS_DEFAULTS } from './proxy-limits.js';
import { check, validationError } from './validate.js';

export interface Http2Settings {
  readonly maxConcurrentStreams: number;
  readonly maxHeaderListBytes: number;
  readonly maxSessionMemoryMb: number;
  readonly streamWindowBytes: number;
  readonly sessionWindowBytes: number;
  readonly maxResets: number;
  readonly resetWindowMs: number;
  readonly enablePush: false;
}

export const HTTP2_DEFAULTS: Http2Settings = Object.freeze({
  maxConcurrentStreams: 128,
  maxHeaderListBytes: PROXY_LIMITS_DEFAULTS.maxHeadBytes,
  maxSessionMemoryMb: 32,
  streamWindowBytes: 1024 * 1024,
  sessionWindowBytes: 8 * 1024 * 1024,
  maxResets: 200,
  resetWindowMs: 1000,
  enablePush: false,
});

const D = HTTP2_DEFAULTS;

export const Http2Schema = Obj(
  {
    maxConcurrentStreams: Type.Optional(Type.Integer({ minimum: 100, maximum: 256, description: `Streams a client (or an upstream session) may have open at once. Default ${D.maxConcurrentStreams}.` })),
    maxHeaderListBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 1024 * 1024, description: `Largest header list of a request or response (RFC 9113 SETTINGS_MAX_HEADER_LIST_SIZE). Default: the HTTP/1 listener's maxHeadBytes, ${D.maxHeaderListBytes}.` })),
    maxSessionMemoryMb: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024, description: `Memory one session may use (Node maxSessionMemory), in MB. Default ${D.maxSessionMemoryMb}.` })),
    streamWindowBytes: Type.Optional(Type.Integer({ minimum: 65_535, maximum: 2 ** 31 - 1, description: `Flow-control window of each stream (SETTINGS_INITIAL_WINDOW_SIZE). Default ${D.streamWindowBytes}.` })),
    sessionWindowBytes: Type.Optional(Type.Integer({ minimum: 65_535, maximum: 2 ** 31 - 1, description: `Flow-control window of a whole session (the connection). Default ${D.sessionWindowBytes}.` })),
    maxResets: Type.Optional(Type.Integer({ minimum: 10, maximum: 1000, description: `Streams a client may reset within resetWindowMs before it gets GOAWAY (rapid reset). Default ${D.maxResets}.` })),
    resetWindowMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000, description: `The window resets are counted in, in ms. Default ${D.resetWindowMs}.` })),
    enablePush: Type.Optional(Type.Literal(false, { description: 'Server push; always off. Default false.' })),
  },
  "The proxy's HTTP/2 settings (client sessions and upstream sessions alike).",
);
export type RawHttp2 = Static<typeof Http2Schema>;


/** The settings from their raw form (every default filled in); SKEIN_E_VALIDATION names a field out of bounds. */
export function parseHttp2(raw: unknown = {}, prefix = 'http2'): Http2Settings {
  const problems = check(Http2Schema, raw, prefix);
  if (problems.length > 0) throw validationError(problems, 'HTTP/2 settings');
  return Object.freeze({ ...HTTP2_DEFAULTS, ...(raw as RawHttp2), enablePush: false });
}
