/**
 * Request-target normalization before authorization, like Istio's `DECODE_AND_MERGE_SLASHES`
 * with Envoy's `normalize_path`, plus `;` parameters handled the Tomcat way. The result is both
 * the path policies are matched against and the path the proxy forwards: the app never sees a
 * spelling of a path that the policy did not see (docs/authorization.md#path-normalization).
 *
 * In order:
 * 1. a raw control character (0x00-0x1f, 0x7f) anywhere, or `%00` anywhere: refused (400);
 * 2. the fragment (`#...`) is dropped;
 * 3. an absolute-form target (`http://host:port/p?q`) is reduced to its path and query; anything
 *    else that does not start with `/` (or `\`) is refused (`*`, `host:port`);
 * 4. the query (`?...`) is split off and kept as it is;
 * 5. in the path: `%2F`/`%2f` and `%5C`/`%5c` become `/`, a raw `\` becomes `/`, percent-encoded
 *    unreserved characters (ALPHA DIGIT - . _ ~) are decoded, every other `%HH` is kept with its
 *    hex in uppercase; a malformed `%` is refused;
 * 6. each segment loses its `;` parameters (`/admin;x=1` -> `/admin`, `..;` -> `..`), which
 *    is why `/x/..;/admin` and `/..;/admin` cannot slip past a rule on `/admin`;
 * 7. empty segments (`//`) are merged and `.`/`..` segments resolved (RFC 3986 5.2.4; never
 *    above the root). A trailing `/` is kept.
 *
 * Paths stay case-sensitive (`/ADMIN` is another path than `/admin`, as for every HTTP server
 * that serves files or routes by path); hosts are compared case-insensitively elsewhere.
 */

export type NormalizedTarget = {
  /** The normalized path: what rules match and what is forwarded. */
  path: string;
  /** The query with its "?" ("" when there is none), unchanged: forward `path + query`. */
  query: string;
};

const ABSOLUTE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
/** Nothing in the path that step 5-7 would change: the common case returns without work. */
const NEEDS_WORK = /[%\\;]|\/\.{0,2}(?:\/|$)/;
const HEX = /^[0-9A-Fa-f]{2}$/;

function isUnreserved(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

/** Steps 5-7 on a path that starts with "/". */
function normalizeSegments(path: string): string | { error: string } {
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const ch = path[i] as string;
    if (ch === '%') {
      const hh = path.slice(i + 1, i + 3);
      if (!HEX.test(hh)) return { error: `malformed percent-encoding "%${hh}" at position ${i} of the path` };
      const c = parseInt(hh, 16);
      if (c === 0x2f || c === 0x5c) decoded += '/';
      else if (isUnreserved(c)) decoded += String.fromCharCode(c);
      else decoded += `%${hh.toUpperCase()}`;
      i += 2;
    } else decoded += ch === '\\' ? '/' : ch;
  }
  const segs = decoded.split('/');
  const out: string[] = [];
  let trailing = false;
  // segs[0] is the empty string before the leading "/".
  for (let k = 1; k < segs.length; k++) {
    let seg = segs[k] as string;
    const semi = seg.indexOf(';');
    if (semi >= 0) seg = seg.slice(0, semi);
    const last = k === segs.length - 1;
    if (seg === '' || seg === '.') trailing = last;
    else if (seg === '..') {
      out.pop();
      trailing = last;
    } else {
      out.push(seg);
      trailing = false;
    }
  }
  return out.length === 0 ? '/' : `/${out.join('/')}${trailing ? '/' : ''}`;
}

/**
 * The normalized path and the query of a request target (the second word of the request line,
 * or `:path`), or why it is refused: the caller answers 400 (SKEIN_E_BAD_PATH) and forwards
 * nothing.
 */
export function normalizePath(raw: string): NormalizedTarget | { error: string } {
  if (raw.length === 0) return { error: 'the request target is empty' };
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return { error: `the request target contains a control character (0x${c.toString(16).padStart(2, '0')}) at position ${i}` };
  }
  const nul = raw.indexOf('%00');
  if (nul >= 0) return { error: `the request target contains an encoded NUL (%00) at position ${nul}` };
  const hash = raw.indexOf('#');
  let t = hash < 0 ? raw : raw.slice(0, hash);
  // A leading "\" is a "/" (step 5), as everywhere else in the path.
  if (!t.startsWith('/') && !t.startsWith('\\')) {
    const m = ABSOLUTE.exec(t);
    if (m === null) return { error: `the request target must be a path starting with "/" or an absolute URL such as http://host/path (got "${raw.slice(0, 64)}")` };
    const rest = t.slice(m[0].length);
    const end = rest.search(/[/?]/);
    t = end < 0 ? '/' : rest[end] === '?' ? `/${rest.slice(end)}` : rest.slice(end);
  }
  const q = t.indexOf('?');
  const path = q < 0 ? t : t.slice(0, q);
  const query = q < 0 ? '' : t.slice(q);
  if (!NEEDS_WORK.test(path)) return { path, query };
  const n = normalizeSegments(path);
  return typeof n === 'string' ? { path: n, query } : n;
}
