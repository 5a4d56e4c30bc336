/** Wire shapes of the v1 API shared by the control plane (which sends them) and its clients. */
import type { Service } from './types.js';

export type Revision = number;

const WATCH_PING_INTERVAL_MS = 15_000;

/** The watch stream's timing, one idea on both ends: the control plane's keep-alive and its clients' patience. */
export const WATCH_DEFAULTS = Object.freeze({
  /** The control plane sends every subscriber a ping (with the revision) this often, however quiet. */
  pingIntervalMs: WATCH_PING_INTERVAL_MS,
  /** A client declares its stream dead when nothing (pings included) arrives for this long: three pings missed. */
  livenessMs: 3 * WATCH_PING_INTERVAL_MS,
});

/** An instance as the API and the watch stream send it. */
export interface WireInstance {
  id: string;
  service: string;
  address: string;
  port: number;
  weight: number;
  zone: string;
  version: string;
  labels: Readonly<Record<string, string>>;
  status: string;
  reason: string;
  /** ISO 8601 time of the last status change. */
  since: string;
  revision: Revision;
  /** The check's type, or null without one. */
  check: string | null;
}

/** One message of `GET /v1/watch`. */
export type WatchMessage =
  | { type: 'snapshot'; revision: Revision; service: string | null; instances: WireInstance[]; services: Array<{ name: string; definition: Service | null }> }
  | { type: 'add' | 'update' | 'remove'; revision: Revision; service: string; instance: WireInstance }
  | { type: 'service'; revision: Revision; service: string; definition: Service | null }
  | { type: 'ping'; revision: Revision };
