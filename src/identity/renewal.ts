/**
 * When to renew a certificate: at a random point between 50% and 70% of its lifetime (jitter, so
 * that proxies started together do not renew together), at once when past 90% of it. Pure: the
 * caller's Clock gives `now` and schedules the delay; `rng` is injected for tests.
 */
import { CA_DEFAULTS } from '../api/ca.js';

/** Milliseconds from `now` until the certificate valid from `notBefore` to `notAfter` (ms since the epoch) should be renewed. */
export function renewalDelayMs(notBefore: number, notAfter: number, now: number, rng: () => number): number {
  const lifetime = notAfter - notBefore;
  if (!(lifetime > 0)) return 0;
  if (now >= notBefore + CA_DEFAULTS.renewNowFraction * lifetime) return 0;
  const r = Math.min(1, Math.max(0, rng()));
  const fraction = CA_DEFAULTS.renewFromFraction + r * (CA_DEFAULTS.renewToFraction - CA_DEFAULTS.renewFromFraction);
  return Math.max(0, Math.round(notBefore + fraction * lifetime - now));
}
