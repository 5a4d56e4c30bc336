/**
 * The etcd store's settings and flags, written once (the store itself: src/control/store/etcd-store.ts;
 * docs/operations.md). Kept apart from the store so that the CLI parses flags without loading it.
 */
import { SkeinError } from '../core/errors.js';

export const ETCD_DEFAULTS = Object.freeze({
  prefix: 'skein/',
  /** How long a dead leader keeps the duties before another replica takes them. */
  electionTtlSeconds: 5,
  /** etcd's history is compacted to the revision seen one period earlier. */
  compactEveryMs: 5 * 60_000,
  /**
   * One call to one member. A write forwarded to a leader that just died hangs until this runs
   * out (etcd itself waits much longer), then its outcome is unknown and a guarded write is sent
   * again: it bounds how long writes stall when etcd loses its leader (a new one takes ~1.5 s).
   */
  requestTimeoutMs: 2_000,
  /**
   * A watch that hears nothing (events or progress notifications) for this long is given up and
   * resumed on another member. Keep etcd's --experimental-watch-progress-notify-interval at a
   * third of it or less (docs/operations.md).
   */
  watchIdleMs: 10_000,
  /** Keys per page of a listing: ~250 bytes an instance makes pages of ~250 KB, far under etcd's limits. */
  pageSize: 1000,
  /**
   * A replica whose watch on etcd has been down this long (cut off from the members, or from
   * their majority) ends its watch streams and refuses new ones (503): its proxies move to a
   * replica that still follows the store instead of being held on a stale view. Longer than an
   * etcd leader election (~1.5 s) and a watch's resumption on another member.
   */
  cutOffAfterMs: 5_000,
});

/**
 * A flag's comma-separated base URLs (etcd members for --etcd, control-plane replicas for --join
 * and --control): http(s)://HOST:PORT, at least one; `what` names them in the errors.
 */
export function parseBaseUrls(text: string, flag: string, what: string, example: string): string[] {
  const urls = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (urls.length === 0) throw new SkeinError('SKEIN_E_USAGE', `${flag} needs ${what}, e.g. ${example}`, { field: flag });
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${u}" is not a URL (http://HOST:PORT)`, { field: flag });
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '' || url.pathname !== '/' || url.search !== '') {
      throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${u}" must be http://HOST:PORT or https://HOST:PORT (no path)`, { field: flag });
    }
  }
  return urls.map((u) => u.replace(/\/$/, ''));
}

/** `--etcd` URLs: the client URLs of the etcd members. */
export function parseEtcdEndpoints(text: string, flag = '--etcd'): string[] {
  return parseBaseUrls(text, flag, 'the client URLs of the etcd members', 'http://10.0.0.1:2379,http://10.0.0.2:2379');
}
