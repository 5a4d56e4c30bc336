/**
 * Taps (the proxy's admin `/tap`, the control plane's `/v1/tap`, `skein tap`): which header values
 * never leave a proxy, and the bounds that keep a tap nobody reads from holding memory. The one
 * definition of each; the proxy, the control plane's relay and the CLI read them from here.
 */
import { SkeinError } from '../core/errors.js';
import type { Direction } from './stats.js';

/**
 * What `skein tap` sees of one finished request: the line a proxy's admin `/tap` writes (as
 * JSON), the control plane's relay passes on and the CLI prints. Header values are redacted
 * (see `isSecretHeader`) before a record leaves the driver.
 */
export interface TapRecord {
  /** When the request finished, ms since the epoch. */
  readonly time: number;
  readonly direction: Direction;
  /** The proxy's workload whose listener saw the request. */
  readonly workload: string;
  /** The calling service (null: unknown). */
  readonly source: string | null;
  /** The destination service (null: the proxy answered before it knew one). */
  readonly destination: string | null;
  readonly route: string | null;
  readonly method: string;
  readonly path: string;
  /** The response status (0: none). */
  readonly status: number;
  readonly latencyMs: number;
  /** The endpoint's instance id (null: none was picked). */
  readonly instance: string | null;
  readonly requestId: string | null;
  /** The proxy's error code when it answered itself or the request failed. */
  readonly error: string | null;
  /**
   * An opaque TCP stream (`method` "TCP", `path` "", `latencyMs` its time to reach the app):
   * its life from accept to close, and the bytes received from and sent to its client.
   */
  readonly durationMs?: number;
  readonly receivedBytes?: number;
  readonly sentBytes?: number;
  /** Lowercase names; a repeated header's values joined with ", " (the tap asked for headers). */
  readonly requestHeaders?: Record<string, string>;
  readonly responseHeaders?: Record<string, string>;
  /** The first TAP_BODY_BYTES (src/engine/observe.ts) bytes of each body as UTF-8 text (the tap asked for bodies). */
  readonly requestBody?: string;
  readonly responseBody?: string;
}

export const REDACTED = '[redacted]';

/**
 * Headers whose values a tap never shows (the CLI redacts them again, in case): credentials,
 * cookies, and the API-key and token headers of common APIs and gateways. The forwarder checks
 * this set for every header of a tapped request; `isSecretHeader` adds the name patterns below.
 */
export const SECRET_HEADERS: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'api-key',
  'apikey',
  'x-auth-token',
  'x-access-token',
  'x-refresh-token',
  'x-id-token',
  'x-session-token',
  'x-csrf-token',
  'x-xsrf-token',
  'x-amz-security-token',
  'x-goog-api-key',
  'x-vault-token',
  'x-consul-token',
  'private-token',
]);

/**
 * Names that carry credentials by convention, whatever a vendor prefixes them with: a word
 * `token`, `secret`, `password`, `passwd`, `apikey`, `api-key`, `credential(s)`, `session` or
 * `auth` between dashes or underscores (x-github-token, x-shopify-access-token, x-session-id),
 * or a name ending in `authorization` or `cookie`.
 */
const SECRET_NAME = /(?:^|[-_])(?:token|secret|password|passwd|apikey|api[-_]key|credentials?|session|auth)(?:[-_]|$)|(?:authorization|cookie)$/;

/** Whether the value of header `lowerName` (lower case) is hidden from taps; `extra`: configured names. */
export function isSecretHeader(lowerName: string, extra?: ReadonlySet<string>): boolean {
  return SECRET_HEADERS.has(lowerName) || SECRET_NAME.test(lowerName) || (extra !== undefined && extra.has(lowerName));
}

/** `headers` with the values of secret headers (names in any case) replaced; the same object when none is. */
export function redactHeaders<V extends string | readonly string[]>(headers: Readonly<Record<string, V>>, extra?: ReadonlySet<string>): Record<string, V | string | string[]> {
  let out: Record<string, V | string | string[]> | null = null;
  for (const [name, value] of Object.entries(headers)) {
    if (!isSecretHeader(name.toLowerCase(), extra)) continue;
    out ??= { ...headers };
    out[name] = typeof value === 'string' ? REDACTED : value.map(() => REDACTED);
  }
  return out ?? headers;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]{1,256}$/;
const MAX_EXTRA = 64;

/**
 * Header names given on the command line (`--tap-redact x-tenant,x-signature`, repeatable):
 * lower-cased; each must be an HTTP token.
 */
export function parseHeaderNames(texts: readonly string[], flag: string): string[] {
  const out: string[] = [];
  for (const text of texts) {
    for (const part of text.split(',')) {
      const name = part.trim().toLowerCase();
      if (!TOKEN.test(name)) throw new SkeinError('SKEIN_E_USAGE', `${flag}: ${JSON.stringify(part.slice(0, 80))} is not a header name (letters, digits and !#$%&'*+.^_\`|~-)`, { field: flag });
      if (!out.includes(name)) out.push(name);
    }
  }
  if (out.length > MAX_EXTRA) throw new SkeinError('SKEIN_E_USAGE', `${flag}: at most ${MAX_EXTRA} header names, got ${out.length}`, { field: flag });
  return out;
}

/** What bounds a set of taps: a proxy's (admin `/tap`) or the control plane's relay (`/v1/tap`). */
export interface TapLimits {
  /** Most taps open at once; one more is refused with SKEIN_E_TOO_MANY_TAPS. */
  readonly maxTaps: number;
  /** Bytes a tap may have waiting for its reader; a line that does not fit is dropped and counted. */
  readonly bufferBytes: number;
  /** A tap whose reader took none of the bytes waiting for it for this long is ended (and counted). */
  readonly stallTimeoutMs: number;
}

/**
 * A proxy's taps. 32 taps of 256 KiB hold at most 8 MiB; the control plane's relay takes at most
 * 16 of them, so people can still tap a proxy directly while the relay is full.
 */
export const PROXY_TAP_LIMITS: TapLimits = Object.freeze({ maxTaps: 32, bufferBytes: 256 * 1024, stallTimeoutMs: 30_000 });
/** The control plane's relay: each of its taps is also a tap on every proxy. */
export const RELAY_TAP_LIMITS: TapLimits = Object.freeze({ maxTaps: 16, bufferBytes: 1024 * 1024, stallTimeoutMs: 30_000 });

/** Bounds of the flags that set a proxy's tap limits (`--max-taps`, `--tap-stall-timeout`). */
export const TAP_LIMIT_BOUNDS = Object.freeze({ maxTaps: [1, 1024], stallTimeoutMs: [1000, 3_600_000] } as const);
