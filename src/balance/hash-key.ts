/**
 * Extracting a request's hash key for ring-hash and maglev: a header, a cookie or the source
 * address. Pure functions over a request's `HashInput`; `compileHashKey` does the per-spec work once.
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

/**
 * What a hash key is taken from: the one request type of every driver (the HTTP/1 forwarder's
 * connection implements it without making strings of headers it is not asked for).
 */
export interface HashInput {
  /**
   * The value of a request header (lowercase name), a repeated header's values joined with ", "
   * (a split Cookie header with "; ", as RFC 9113 §8.2.3 rebuilds it); undefined when absent.
   */
  header(lowerName: string): string | undefined;
  /** The client's address (no port), undefined when unknown. */
  readonly sourceAddress: string | undefined;
}

export type HashKeyExtractor = (req: HashInput) => string | undefined;

/**
 * A `HashInput` over plain headers (lowercase names, as node's IncomingHttpHeaders): repeated
 * values joined with ", ", except cookies, joined with "; " (RFC 9113 §8.2.3: HTTP/2 may split
 * the Cookie header).
 */
export function hashInputOf(headers: Readonly<Record<string, HeaderValue>>, sourceAddress?: string): HashInput {
  return {
    header: (lowerName) => {
      const v = headers[lowerName];
      return v === undefined || typeof v === 'string' ? v : v.join(lowerName === 'cookie' ? '; ' : ', ');
    },
    sourceAddress,
  };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === '' ? undefined : v;
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

function cookieOf(h: string | undefined, name: string): string | undefined {
  return h === undefined ? undefined : cookieValue(h, name);
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
export function hashKeyOf(spec: HashKeySpec, req: HashInput): string | undefined {
  switch (spec.type) {
    case 'header':
      return nonEmpty(req.header(spec.name.toLowerCase()));
    case 'cookie':
      return cookieOf(req.header('cookie'), spec.name);
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
      return (req) => nonEmpty(req.header(name));
    }
    case 'cookie': {
      const name = spec.name;
      return (req) => cookieOf(req.header('cookie'), name);
    }
    default:
      return (req) => normalizeSourceAddress(req.sourceAddress);
  }
}
