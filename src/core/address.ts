/** HOST:PORT parsing for flags such as --http 127.0.0.1:7400 or --dns [::1]:7453. */
import { isIP } from 'node:net';
import { SkeinError } from './errors.js';

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(text: string, flag: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || !(port >= 0 && port <= 65535)) {
    throw new SkeinError('SKEIN_E_USAGE', `${flag} must be HOST:PORT (e.g. 127.0.0.1:7400 or [::1]:7400), got "${text}"`, { field: flag });
  }
  if (m[1] !== undefined && isIP(host) !== 6) throw new SkeinError('SKEIN_E_USAGE', `${flag}: "${host}" is not an IPv6 address`, { field: flag });
  return { host, port };
}

export function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A socket's peer address as people write it: an IPv4-mapped IPv6 address ("::ffff:10.0.0.1") as its IPv4; "unknown" when there is none (the socket closed). */
export function plainAddress(a: string | undefined): string {
  if (a === undefined) return 'unknown';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
