/**
 * The DNS-rebinding guard of the servers meant for this machine (the proxy's admin port, the
 * control plane's API and dashboard). A web page can make the browser resolve a name of its own
 * to 127.0.0.1 and then read what these servers answer, as the same origin; its requests carry
 * its own name as `Host`. So a server bound to a loopback address answers only requests whose
 * `Host` is a loopback name or address: `localhost` (and `*.localhost`, which browsers keep on
 * this machine), 127.0.0.0/8 or `[::1]`, any port. A request without `Host` (HTTP/1.0) passes:
 * browsers always send one. A server bound to any other address (0.0.0.0, a LAN address) is
 * meant to be reached by other names and accepts any `Host`.
 */
import { isIP } from 'node:net';

/** 127.0.0.0/8, ::1, and 127.x written as an IPv4-mapped IPv6 address. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase();
  if (isIP(a) === 4) return a.startsWith('127.');
  if (isIP(a) !== 6) return false;
  if (a.startsWith('::ffff:')) return isLoopbackAddress(a.slice(7));
  return /^(0{0,4}:){2,7}0{0,3}1$/.test(a);
}

/** The host of a `Host` value: without port and brackets, lower case, no trailing dot; null when malformed. */
function hostOf(value: string): string | null {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:[\]\s]+))(?::\d{1,5})?$/.exec(value.toLowerCase());
  if (m === null) return null;
  const host = (m[1] ?? m[2]) as string;
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

/** Whether a `Host` value names this machine by a loopback name or address. */
/**
 * Why a server without TLS must not listen on `host` (beyond loopback), or null when it may:
 * `what` names it, `flag` is the option that forces it.
 */
export function beyondLoopback(host: string, what: string, flag: string, risk: string): string | null {
  if (host === 'localhost' || isLoopbackAddress(host)) return null;
  return `${what} would listen on ${host}, beyond loopback, without TLS: ${risk}. Listen on 127.0.0.1 (with a TLS-terminating proxy in front for other hosts), or pass ${flag} on a network you trust`;
}

export function isLoopbackHost(value: string): boolean {
  const host = hostOf(value);
  if (host === null) return false;
  return host === 'localhost' || host.endsWith('.localhost') || isLoopbackAddress(host);
}

/**
 * Null when a server listening on `bound` (its address; null: not listening) may answer a request
 * with this `Host`; otherwise the sentence to refuse it with.
 */
export function foreignHost(bound: string | null, host: string | undefined): string | null {
  if (bound === null || host === undefined || !isLoopbackAddress(bound) || isLoopbackHost(host)) return null;
  return (
    `Host ${JSON.stringify(host.slice(0, 100))} is not this machine: a server listening on a loopback address answers ` +
    'only requests for localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding); listen on another address to be reached by other names'
  );
}
