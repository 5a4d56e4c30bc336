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
});

/** `--etcd` URLs: http(s)://host:port, at least one; the error names the flag. */
export function parseEtcdEndpoints(text: string, flag = '--etcd'): string[] {
  const urls = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (urls.length === 0) throw new SkeinError('SKEIN_E_USAGE', `${flag} needs the client URLs of the etcd members, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379`, { field: flag });
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${u}" is not a URL (http://HOST:PORT)`, { field: flag });
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '' || url.pathname !== '/' || url.search !== '') {
      throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${u}" must be http://HOST:PORT or https://HOST:PORT (an etcd member's client URL, no path)`, { field: flag });
    }
  }
  return urls.map((u) => u.replace(/\/$/, ''));
}

