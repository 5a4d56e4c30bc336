/**
 * The request target as authorization sees it, and as the proxy then forwards it: the mesh's
 * one path normalization (src/core/path.ts: Istio's `DECODE_AND_MERGE_SLASHES`, also used by
 * routes) plus what a security decision needs on top, in the spirit of Envoy's
 * `normalize_path`. The app never sees a spelling of a path that the policy did not see
 * (docs/authorization.md#path-normalization).
 *
 * In order:
 * 1. a raw control character (0x00-0x1f, 0x7f) anywhere, or `%00` anywhere: refused (400);
 * 2. the fragment (`#...`) is dropped;
 * 3. an absolute-form target (`http://host:port/p?q`) is reduced to its path and query; anything
 *    else that does not start with `/` (or `\`) is refused (`*`, `host:port`);
 * 4. the query (`?...`) is split off and kept exactly as it came;
 * 5. src/core/path.ts: `\` and `%2F`/`%5C` become `/`, percent-encoded unreserved characters
 *    are decoded, other escapes get uppercase hex, `//` is merged, `.`/`..` resolved (never
 *    above the root); a malformed `%` is refused;
 * 6. every segment loses its `;` parameters, the Tomcat way (`/admin;x=1` -> `/admin`,
 *    `..;` -> `..`, then resolved again), so `/x/..;/admin` and `/..;/admin` are `/admin`.
 *    The parameters are not forwarded either: the path matched is the path forwarded.
 *
 * Letter case is kept (evaluate.ts says how each kind of policy compares it).
 */
import { normalizePath as normalizeSegments } from '../core/path.js';

export type NormalizedTarget = {
  /** The normalized path: what rules match and what is forwarded. */
  path: string;
  /** The query with its "?" ("" when there is none), unchanged: forward `path + query`. */
  query: string;
};

const ABSOLUTE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
const PARAMS = /;[^/]*/g;

/**
 * The normalized path and the query of a request target (the second word of the request line,
 * or `:path`), or why it is refused: the proxy answers 400 SKEIN_E_BAD_PATH and forwards nothing.
 */
export function normalizePath(raw: string): NormalizedTarget | { error: string } {
  if (raw.length === 0) return { error: 'the request target is empty' };
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return { error: `the request target contains a control character (0x${c.toString(16).padStart(2, '0')}) at offset ${i}` };
  }
  const nul = raw.indexOf('%00');
  if (nul >= 0) return { error: `the request target contains an encoded NUL (%00) at offset ${nul}` };
  const hash = raw.indexOf('#');
  let t = hash < 0 ? raw : raw.slice(0, hash);
  if (!t.startsWith('/') && !t.startsWith('\\')) {
    const m = ABSOLUTE.exec(t);
    if (m === null) return { error: `the request target must be a path starting with "/" or an absolute URL such as http://host/path (got "${raw.slice(0, 64)}")` };
    const rest = t.slice(m[0].length);
    const end = rest.search(/[/?\\]/);
    t = end < 0 ? '/' : rest[end] === '?' ? `/${rest.slice(end)}` : rest.slice(end);
  }
  const q = t.indexOf('?');
  const query = q < 0 ? '' : t.slice(q);
  // A leading "\" is a "/" like any other (core/path.ts step 1), so the path starts with "/".
  const rawPath = q < 0 ? t : t.slice(0, q);
  let path = normalizeSegments(rawPath.startsWith('\\') ? `/${rawPath.slice(1)}` : rawPath);
  if (typeof path !== 'string') return path;
  if (path.includes(';')) {
    // Decoded and resolved already, so ";" here is a parameter delimiter; dropping the
    // parameters may expose ".." segments ("..;"): resolve once more. No escapes are left to decode.
    path = normalizeSegments(path.replace(PARAMS, '')) as string;
  }
  return { path, query };
}
