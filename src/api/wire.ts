/** Wire shapes of the v1 API shared by the control plane (which sends them) and its clients. */
import type { Service } from './types.js';

export type Revision = number;

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
