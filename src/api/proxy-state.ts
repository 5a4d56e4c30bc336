/**
 * The proxy's last-known state on disk (static stability, docs/proxy.md#static-stability): its
 * defaults and its format, written once. `skein proxy --state-dir DIR` keeps one file there.
 */
import type { CaInfo } from './ca.js';
import type { WatchMessage } from './wire.js';

export const PROXY_STATE_DEFAULTS = Object.freeze({
  /** State older than this is not served (Consul's agent cache keeps 3 days of results). */
  maxAgeMs: 72 * 3600_000,
  /** At start, how long the control plane has to answer before the persisted state is served. */
  waitMs: 3_000,
  /** Changes are written at most this often (the last one always is). */
  debounceMs: 500,
});

/** The file's name in --state-dir. */
export const PROXY_STATE_FILE = 'proxy-state.json';
export const PROXY_STATE_FORMAT = 'skein-proxy-state/1';

/** A certificate the proxy held, with its key (the file is 0600, its directory 0700). */
export interface PersistedCredential {
  readonly service: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly chainPem: readonly string[];
  readonly roots: readonly string[];
}

export interface ProxyStateFile {
  readonly format: typeof PROXY_STATE_FORMAT;
  /** ISO 8601: when the state was written (its age counts from here). */
  readonly savedAt: string;
  /** The control-plane replicas it came from: a proxy given none of them refuses it (another mesh). */
  readonly control: readonly string[];
  /** The watch stream's state: every instance and service definition (with its policies), at its revision. */
  readonly watch: Extract<WatchMessage, { type: 'snapshot' }>;
  /** With mTLS: what GET /v1/ca said, and the certificates held; null without. */
  readonly tls: { readonly ca: CaInfo; readonly credentials: readonly PersistedCredential[] } | null;
}
