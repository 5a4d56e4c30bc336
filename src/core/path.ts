/**
 * Request path normalization: the one form in which the mesh compares paths (route matching
 * today, authorization policies next), and the form the proxy forwards, so that the app sees the
 * path its policy was decided on. Without it `/admin` is missed by `//admin`, `/./admin`,
 * `/%61dmin` or `/x/../admin`, all of which an app resolves to `/admin`.
 *
 * The steps (Istio's DECODE_AND_MERGE_SLASHES, built on RFC 3986 §6.2.2):
 * 1. `\` becomes `/` (many frameworks and file systems treat them alike);
 * 2. percent-encoded unreserved characters (ALPHA, DIGIT, `-._~`) and slashes (`%2F`, `%5C`) are
 *    decoded; every other escape keeps its encoding with upper-case hex digits (`%3a` -> `%3A`);
 *    a `%` not followed by two hex digits makes the path invalid;
 * 3. runs of `/` become one;
 * 4. `.` and `..` segments are resolved (RFC 3986 §5.2.4); `..` never climbs above the root.
 * The query (from the first `?`) is left exactly as it came. Letter case is kept: comparisons
 * ignore ASCII case instead (`pathKey`), since many apps route `/Admin` like `/admin`.
 */

const HEX = '0123456789ABCDEF';

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function unreserved(c: number): boolean {
  const l = c | 0x20;
  return (l >= 0x61 && l <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

/** Whether the path needs any step at all: the common path has no `%`, `\`, `//` or dot segment. */
function needsWork(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 0x25 || c === 0x5c) return true;
    if (c === 0x2f && i + 1 < p.length) {
      const n = p.charCodeAt(i + 1);
      if (n === 0x2f) return true;
      if (n === 0x2e) {
        // "/." followed by the end, "/" or "." (".." then the end or "/") is a dot segment.
        const a = i + 2 < p.length ? p.charCodeAt(i + 2) : 0x2f;
        if (a === 0x2f) return true;
        if (a === 0x2e && (i + 3 >= p.length || p.charCodeAt(i + 3) === 0x2f)) return true;
      }
    }
  }
  return false;
}

/** Steps 1 and 2: backslashes and escapes. */
function decode(p: string): string | { error: string } {
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 0x5c) {
      out += '/';
      continue;
    }
    if (c !== 0x25) {
      out += p[i];
      continue;
    }
    const h = i + 2 < p.length ? hexValue(p.charCodeAt(i + 1)) : -1;
    const l = h < 0 ? -1 : hexValue(p.charCodeAt(i + 2));
    if (l < 0) return { error: `"${p.slice(i, i + 3)}" at offset ${i} of the path is not a percent-encoded byte (% and two hex digits)` };
    const b = h * 16 + l;
    if (unreserved(b)) out += String.fromCharCode(b);
    else if (b === 0x2f || b === 0x5c) out += '/';
    else out += `%${HEX[h]}${HEX[l]}`;
    i += 2;
  }
  return out;
}

/** Steps 3 and 4: one `/` between segments, dot segments resolved. `p` starts with `/`. */
function resolve(p: string): string {
  const segs: string[] = [];
  const parts = p.split('/');
  // parts[0] is '' (the leading slash); a trailing '' keeps a trailing slash.
  for (let i = 1; i < parts.length; i++) {
    const s = parts[i] as string;
    const last = i === parts.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..') segs.pop();
      if (last) segs.push('');
      continue;
    }
    if (s === '' && !last) continue;
    segs.push(s);
  }
  return `/${segs.join('/')}`;
}

/** The normalized path of a path (no query); `path` starts with `/`. */
export function normalizePath(path: string): string | { error: string } {
  if (!needsWork(path)) return path;
  const d = decode(path);
  if (typeof d !== 'string') return d;
  return resolve(d);
}

/** An origin-form request target with its path normalized and its query as it came (the same string when nothing changes). */
export function normalizeTarget(target: string): string | { error: string } {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const n = normalizePath(path);
  if (typeof n !== 'string' || n === path) return typeof n === 'string' ? target : n;
  return q < 0 ? n : n + target.slice(q);
}

/** What normalized paths are compared by: ASCII case folded. */
export function pathKey(normalized: string): string {
  return normalized.toLowerCase();
}
