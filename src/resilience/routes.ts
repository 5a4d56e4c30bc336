/**
 * Route matching: which of a service's routes a request gets. Routes are tried most specific
 * first (as in the Gateway API's HTTPRoute precedence): an exact path before a path prefix,
 * a longer prefix before a shorter one, then routes that name methods, then routes with more
 * header matches; among equals, the order they were written in. The last route is always the
 * implicit `default`, which matches everything.
 *
 * Paths are compared in normalized form (src/core/path.ts: the driver normalizes the request's
 * path, and route paths are validated as normalized) and without regard to ASCII case.
 */
import type { RoutePolicy } from '../api/traffic.js';
import { pathKey } from '../core/path.js';

/** What matching needs of a request. */
export interface RouteInput {
  readonly method: string;
  /** The normalized path (src/core/path.ts); a query after it is ignored. */
  readonly path: string;
  /** A request header's value by lower-case name (several joined with ", "). */
  header(lowerName: string): string | undefined;
}

function rank(r: RoutePolicy): number[] {
  const m = r.match;
  return [m.path !== null ? 1 : 0, m.pathPrefix?.length ?? -1, m.methods !== null ? 1 : 0, m.headers.length];
}

/** A route and its path patterns as compared (case folded). */
interface Entry {
  readonly route: RoutePolicy;
  readonly path: string | null;
  readonly prefix: string | null;
}

function matches(e: Entry, method: string, path: string, req: RouteInput): boolean {
  const m = e.route.match;
  if (e.path !== null && path !== e.path) return false;
  if (e.prefix !== null && e.prefix !== '/') {
    const p = e.prefix;
    if (!path.startsWith(p) || (path.length > p.length && path.charCodeAt(p.length) !== 0x2f)) return false;
  }
  if (m.methods !== null && !m.methods.includes(method)) return false;
  for (const [name, value] of m.headers) if (req.header(name) !== value) return false;
  return true;
}

export class RouteTable {
  /** In match order; the default route last. */
  readonly routes: readonly RoutePolicy[];
  readonly fallback: RoutePolicy;
  private readonly entries: readonly Entry[];

  constructor(routes: readonly RoutePolicy[]) {
    const explicit = routes.slice(0, -1);
    const fallback = routes[routes.length - 1];
    if (fallback === undefined) throw new Error('RouteTable: the route list must end with the default route');
    const ranked = explicit.map((r, i) => ({ r, i, k: rank(r) }));
    ranked.sort((a, b) => {
      for (let j = 0; j < a.k.length; j++) if (a.k[j] !== b.k[j]) return (b.k[j] as number) - (a.k[j] as number);
      return a.i - b.i;
    });
    this.routes = [...ranked.map((x) => x.r), fallback];
    this.fallback = fallback;
    this.entries = ranked.map(({ r }) => ({
      route: r,
      path: r.match.path === null ? null : pathKey(r.match.path),
      prefix: r.match.pathPrefix === null ? null : pathKey(r.match.pathPrefix),
    }));
  }

  /** The route for a request (the default one when no other matches). */
  match(req: RouteInput): RoutePolicy {
    const es = this.entries;
    if (es.length === 0) return this.fallback;
    const q = req.path.indexOf('?');
    const path = pathKey(q < 0 ? req.path : req.path.slice(0, q));
    for (const e of es) if (matches(e, req.method, path, req)) return e.route;
    return this.fallback;
  }
}
