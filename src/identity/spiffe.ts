/**
 * SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md), parsed strictly:
 * `spiffe://<trust domain><path>`. Skein's workload identities are
 * `spiffe://<trust domain>/ns/<namespace>/sa/<service>`, with the namespace `default` until Skein
 * has namespaces. No URL parser is used on purpose: WHATWG URL normalizes (dot segments, case,
 * percent-encoding), and an identity must be compared exactly as it is written.
 */
import { SkeinError } from '../core/errors.js';

export interface SpiffeId {
  readonly uri: string;
  readonly trustDomain: string;
  /** '' for a trust domain's own ID (`spiffe://example.org`), else `/seg/seg...`. */
  readonly path: string;
  /** Set when the path is `/ns/<namespace>/sa/<service>`. */
  readonly namespace: string | null;
  readonly service: string | null;
}

/** Every workload's namespace until Skein has namespaces. */
export const DEFAULT_NAMESPACE = 'default';
/** The SPIFFE-ID spec's limit on a whole ID, bytes. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** The SPIFFE-ID spec's limit on a trust domain name, characters. */
export const MAX_TRUST_DOMAIN_LENGTH = 255;

const SCHEME = 'spiffe://';
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** null when `td` is a valid trust domain name, else why not. */
export function validTrustDomain(td: string): string | null {
  if (td === '') return 'the trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_LENGTH) return `the trust domain is longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`;
  if (!TRUST_DOMAIN.test(td)) {
    const bad = [...td].find((c) => !/[a-z0-9._-]/.test(c)) ?? '';
    const what = /[A-Z]/.test(bad) ? 'an uppercase letter' : bad === ':' ? 'a port' : bad === '@' ? 'userinfo' : bad === '%' ? 'percent-encoding' : `the character ${JSON.stringify(bad)}`;
    return `the trust domain "${td}" has ${what} (only a-z, 0-9, ".", "-" and "_" are allowed)`;
  }
  return null;
}

/** Why `segment` (one path segment) is not allowed, or null. */
function segmentProblem(segment: string): string | null {
  if (segment === '') return 'an empty path segment (a "//" or a trailing "/")';
  if (segment === '.' || segment === '..') return `a "${segment}" path segment`;
  if (!SEGMENT.test(segment)) {
    const bad = [...segment].find((c) => !/[A-Za-z0-9._-]/.test(c)) ?? '';
    const what = bad === '%' ? 'percent-encoding' : bad === '?' ? 'a query' : bad === '#' ? 'a fragment' : `the character ${JSON.stringify(bad)}`;
    return `${what} in the path segment "${segment}" (only A-Z, a-z, 0-9, ".", "-" and "_" are allowed)`;
  }
  return null;
}

const fail = (text: string, reason: string): never => {
  const shown = text.length > 120 ? `${text.slice(0, 120)}...` : text;
  throw new SkeinError('SKEIN_E_BAD_IDENTITY', `"${shown}" is not a SPIFFE ID: ${reason}`, { field: 'identity' });
};

/** Parses a SPIFFE ID strictly; throws SKEIN_E_BAD_IDENTITY naming what is wrong. */
export function parseSpiffeId(text: string): SpiffeId {
  if (typeof text !== 'string') return fail(String(text), 'it is not a string');
  if (Buffer.byteLength(text, 'utf8') > MAX_SPIFFE_ID_BYTES) return fail(text, `it is longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (!text.startsWith(SCHEME)) {
    if (text.toLowerCase().startsWith(SCHEME)) return fail(text, 'the scheme must be "spiffe" in lowercase');
    return fail(text, 'it does not start with "spiffe://"');
  }
  const rest = text.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  // Query and fragment are named as such wherever they sit.
  if (text.includes('?')) return fail(text, 'it has a query ("?")');
  if (text.includes('#')) return fail(text, 'it has a fragment ("#")');
  const tdProblem = validTrustDomain(trustDomain);
  if (tdProblem !== null) return fail(text, tdProblem);
  const segments = path === '' ? [] : path.slice(1).split('/');
  for (const s of segments) {
    const p = segmentProblem(s);
    if (p !== null) return fail(text, p);
  }
  const workload = segments.length === 4 && segments[0] === 'ns' && segments[2] === 'sa';
  return Object.freeze({
    uri: text,
    trustDomain,
    path,
    namespace: workload ? (segments[1] as string) : null,
    service: workload ? (segments[3] as string) : null,
  });
}

/** The SPIFFE ID of a workload: `spiffe://<td>/ns/<namespace>/sa/<service>` (checked). */
export function workloadId(trustDomain: string, namespace: string, service: string): string {
  return parseSpiffeId(`${SCHEME}${trustDomain}/ns/${namespace}/sa/${service}`).uri;
}

/** The SPIFFE ID of a trust domain itself (`spiffe://<td>`), the URI SAN of its CA certificates. */
export function trustDomainId(trustDomain: string): string {
  return parseSpiffeId(`${SCHEME}${trustDomain}`).uri;
}

/**
 * The default trust domain of a mesh: its name, lowercased. Mesh names are DNS labels, which are
 * valid trust domains; `skein control` without `--trust-domain` uses `trustDomainFor('skein')`,
 * that is `skein`. Throws SKEIN_E_BAD_IDENTITY when the name makes no trust domain.
 */
export function trustDomainFor(meshName: string): string {
  const td = meshName.toLowerCase();
  const problem = validTrustDomain(td);
  if (problem !== null) throw new SkeinError('SKEIN_E_BAD_IDENTITY', `the mesh name "${meshName}" makes no trust domain: ${problem}`, { field: 'trustDomain' });
  return td;
}
