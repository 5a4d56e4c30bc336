/**
 * Extracting a request's hash key for ring-hash and maglev: a header, a cookie or the source
 * address. Pure functions over plain values; `compileHashKey` does the per-spec work once.
 *
 * - header: the header's value (names are matched lowercased, as node gives them); a repeated
 *   header's values are joined with ", " (what it means on the wire). Absent or empty: no key.
 * - cookie: the value of the first cookie with that name (case-sensitive, as cookies are) in the
 *   Cookie header(s), without surrounding double quotes. Absent or empty: no key.
 * - source-address: the client's IP address, without the port; an IPv4-mapped IPv6 address
 *   (::ffff:10.0.0.1) counts as the IPv4 address, so a client keeps its key whichever way it came.
 *
 * No key (undefined): ring-hash and maglev then pick a random endpoint (weighted).
 */
import { SkeinError } from '../core/errors.js';

export type HashKeySpec = { readonly type: 'header'; readonly name: string } | { readonly type: 'cookie'; readonly name: string } | { readonly type: 'source-address' };

export type HeaderValue = string | readonly string[] | undefined;

export interface HashKeySource {
  /** Request headers with lowercase names (node's IncomingHttpHeaders fits). */
  readonly headers?: Readonly<Record<string, HeaderValue>>;
  readonly sourceAddress?: string | undefined;
}

export type HashKeyExtractor = (req: HashKeySource) => string | undefined;

function headerValue(v: HeaderValue): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (v.length === 0) return undefined;
  const joined = v.length === 1 ? v[0]! : v.join(', ');
  return joined === '' ? undefined : joined;
}

/** The value of cookie `name` in one Cookie header value, or undefined. */
export function cookieValue(header: string, name: string): string | undefined {
  let i = 0;
  const n = header.length;
  while (i < n) {
    // Skip separators and whitespace before a pair.
    let c = header.charCodeAt(i);
    while (i < n && (c === 0x3b || c === 0x20 || c === 0x09)) c = header.charCodeAt(++i);
    if (i >= n) break;
    let end = header.indexOf(';', i);
    if (end < 0) end = n;
    const eq = header.indexOf('=', i);
    if (eq >= 0 && eq < end) {
      let ne = eq;
      while (ne > i && (header.charCodeAt(ne - 1) === 0x20 || header.charCodeAt(ne - 1) === 0x09)) ne--;
      if (ne - i === name.length && header.startsWith(name, i)) {
        let vs = eq + 1;
        let ve = end;
        while (vs < ve && (header.charCodeAt(vs) === 0x20 || header.charCodeAt(vs) === 0x09)) vs++;
        while (ve > vs && (header.charCodeAt(ve - 1) === 0x20 || header.charCodeAt(ve - 1) === 0x09)) ve--;
        if (ve - vs >= 2 && header.charCodeAt(vs) === 0x22 && header.charCodeAt(ve - 1) === 0x22) {
          vs++;
          ve--;
        }
        return ve > vs ? header.slice(vs, ve) : undefined;
      }
    }
    i = end + 1;
  }
  return undefined;
}

/** The source address as a hash key: no port, IPv4-mapped IPv6 as plain IPv4. */
export function normalizeSourceAddress(address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined;
  if (address.length > 7 && address.charCodeAt(0) === 0x3a && /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address)) return address.slice(7);
  return address;
}

function cookieOf(h: HeaderValue, name: string): string | undefined {
  if (h === undefined) return undefined;
  if (typeof h === 'string') return cookieValue(h, name);
  for (const one of h) {
    const v = cookieValue(one, name);
    if (v !== undefined) return v;
  }
  return undefined;
}

function checkSpec(spec: HashKeySpec): void {
  if (spec === null || typeof spec !== 'object') throw new SkeinError('SKEIN_E_VALIDATION', 'hash key: the spec must be an object', { field: 'hashKey' });
  if (spec.type === 'header' || spec.type === 'cookie') {
    if (typeof spec.name !== 'string' || spec.name === '') throw new SkeinError('SKEIN_E_VALIDATION', `hash key: a ${spec.type} name must be a non-empty string`, { field: 'hashKey.name' });
  } else if (spec.type !== 'source-address') {
    throw new SkeinError('SKEIN_E_VALIDATION', `hash key: unknown type "${String((spec as { type: unknown }).type)}" (header, cookie or source-address)`, { field: 'hashKey.type' });
  }
}

/**
 * The hash key of one request under `spec`, or undefined when the request has none. Pure; the
 * spec is assumed valid (see `compileHashKey`, which checks it once and is what a proxy uses).
 */
export function hashKeyOf(spec: HashKeySpec, req: HashKeySource): string | undefined {
  switch (spec.type) {
    case 'header': {
      const headers = req.headers;
      if (headers === undefined) return undefined;
      const v = headers[spec.name];
      return headerValue(v !== undefined ? v : headers[spec.name.toLowerCase()]);
    }
    case 'cookie':
      return cookieOf(req.headers?.['cookie'], spec.name);
    case 'source-address':
      return normalizeSourceAddress(req.sourceAddress);
    default:
      return undefined;
  }
}

/** Checks a spec (SkeinError SKEIN_E_VALIDATION when malformed) and returns its extractor. */
export function compileHashKey(spec: HashKeySpec): HashKeyExtractor {
  checkSpec(spec);
  switch (spec.type) {
    case 'header': {
      const name = spec.name.toLowerCase();
      return (req) => headerValue(req.headers?.[name]);
    }
    case 'cookie': {
      const name = spec.name;
      return (req) => cookieOf(req.headers?.['cookie'], name);
    }
    default:
      return (req) => normalizeSourceAddress(req.sourceAddress);
  }
}
