/**
 * The control plane's public API as the dashboard reads it (docs/api.md; the golden signals and
 * the mesh event feed). Paths are resolved against the page: the dashboard is served at
 * <control>/dashboard/, so "../v1/..." is the control plane's /v1/... (and a reverse proxy that
 * mounts the control plane under a prefix keeps working).
 */

// The golden signals' JSON: the control plane's own definitions (src/api/signals.ts).
import type { Latency, MeshSignalsBody, SeriesBody, SeriesPoint, WireAuthz, WireEdge, WireInstance, WireRoute, WireService, WireSignals } from '../../src/api/signals';
// The deployment routes' JSON: the runtime's own definitions (type-only: nothing of the runtime is bundled).
import type { AutoscaleView } from '../../src/runtime/autoscale';
import type { CanaryStatus } from '../../src/runtime/canary';
import type { RolloutStatus } from '../../src/runtime/rollout';
import type { ServiceRuntime } from '../../src/runtime/service-runtime';

export type { Latency, SeriesPoint };
export type AuthzDecisions = WireAuthz;
export type Signals = WireSignals;
export type InstanceSignals = WireInstance;
export type ServiceSignals = WireService;
export type EdgeSignals = WireEdge;
export type RouteSignals = WireRoute;
/** GET /v1/signals, and the `signals` event of the stream (which adds `mesh`). */
export type MeshSignals = MeshSignalsBody & { mesh?: { rps: number; successRate: number | null } };
export type Series = SeriesBody;

/** One entry of GET /v1/events and of the stream's `mesh-event`. */
export interface MeshEvent {
  time: string;
  type: string;
  service: string | null;
  id: string | null;
  message: string;
  [field: string]: unknown;
}

/** A route as defined on the service (GET /v1/services/{service}/routes). */
export interface RouteDefinition {
  name: string;
  [field: string]: unknown;
}

/** An error the API answered with ({code, message, field?}), or a network failure. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * Beyond loopback the API needs a read token (docs/security.md#control-plane-tokens): the dashboard is opened
 * as `.../dashboard/#token=skein_rd_...`. The token is kept in sessionStorage (this tab only),
 * taken out of the address bar, sent as `authorization` on fetches and as the `skein_token`
 * cookie, which is what the live stream (an EventSource, which cannot set headers) can send; the
 * control plane honours the cookie for reads only.
 */
const TOKEN_KEY = 'skein.token';

function adoptToken(): string | null {
  const m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m !== null) {
    sessionStorage.setItem(TOKEN_KEY, m[1] as string);
    history.replaceState(null, '', `${location.pathname}${location.search}#/`);
  }
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t !== null) document.cookie = `skein_token=${t}; path=/; SameSite=Strict`;
  return t;
}

const token = typeof window === 'undefined' ? null : adoptToken();

/** The absolute URL of an API path such as "v1/signals". */
export function apiUrl(path: string): string {
  return new URL(`../${path.replace(/^\//, '')}`, document.baseURI).toString();
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { headers: { accept: 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) }, cache: 'no-store', ...(signal === undefined ? {} : { signal }) });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError(0, 'NETWORK', 'cannot reach the control plane');
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const b = body as { code?: unknown; message?: unknown } | null;
    const code = typeof b?.code === 'string' ? b.code : `HTTP_${res.status}`;
    const message = typeof b?.message === 'string' ? b.message : `HTTP ${res.status} from ${path}`;
    throw new ApiError(res.status, code, message);
  }
  return body as T;
}

/** The newest `limit` mesh events (of `types` only, when given). */
export const fetchEvents = (limit = 50, signal?: AbortSignal, types?: readonly string[]) =>
  getJson<{ events: MeshEvent[] }>(`v1/events?limit=${limit}${types === undefined ? '' : `&type=${types.join(',')}`}`, signal);

/** The series of one service, or of the whole mesh (service null). */
export const fetchSeries = (service: string | null, window = '5m', signal?: AbortSignal) =>
  getJson<Series>(`v1/signals/series?${service === null ? '' : `service=${encodeURIComponent(service)}&`}window=${window}`, signal);

export const fetchRouteDefinitions = (service: string, signal?: AbortSignal) =>
  getJson<{ routes: RouteDefinition[] }>(`v1/services/${encodeURIComponent(service)}/routes`, signal);

/** One service over a window: its entry (with its authorization decisions) and the edges in and out of it. */
export const fetchServiceSignals = (service: string, window: string, signal?: AbortSignal) =>
  getJson<ServiceSignals & { window: string; edges: EdgeSignals[] }>(`v1/signals/services/${encodeURIComponent(service)}?window=${window}`, signal);

export const fetchSignals = (window = '10s', signal?: AbortSignal) => getJson<MeshSignals>(`v1/signals?window=${window}`, signal);

// ---- deployments: the routes `skein up` adds (docs/deployments.md); a bare `skein control` answers 404 ----

/** GET /v1/mesh: the services `skein up` runs (the fields the dashboard reads). */
export interface MeshBody {
  name: string;
  services: Array<{ name: string; desired: number; replicas: number; ready: number; revision: number; rollout: string | null; autoscale: AutoscaleView | null }>;
}

/** A rollout's status with its canary's typed (src/runtime/canary.ts). */
export type RolloutView = RolloutStatus;

/** GET /v1/mesh/services/{s}/rollout: the revision, its rollout, the replicas of every revision. */
export type RolloutBody = { service: string; rollout: RolloutView | null } & Omit<ReturnType<ServiceRuntime['rolloutStatus']>, 'rollout'> & ReturnType<ServiceRuntime['replicaStatus']>;

/** GET /v1/mesh/services/{s}/revisions. */
export type RevisionView = ReturnType<ServiceRuntime['revisions']>[number];

/** One version's numbers of GET /v1/signals/services/{s}/versions (src/control/signals/routes.ts). */
export type VersionSignals = WireSignals & { version: string; via: 'inbound' | 'outbound' };

export type { AutoscaleView, CanaryStatus };

export const fetchMesh = (signal?: AbortSignal) => getJson<MeshBody>('v1/mesh', signal);

export const fetchRollout = (service: string) => getJson<RolloutBody>(`v1/mesh/services/${encodeURIComponent(service)}/rollout`);

export const fetchRevisions = (service: string) => getJson<{ revisions: RevisionView[] }>(`v1/mesh/services/${encodeURIComponent(service)}/revisions`);

/** A service's numbers per version over the last `lastMs` (at least a scrape interval). */
export const fetchVersionSignals = (service: string, lastMs: number) =>
  getJson<{ lastMs: number; versions: VersionSignals[] }>(`v1/signals/services/${encodeURIComponent(service)}/versions?last=${lastMs}ms`);

/** The newest `limit` events of one service, of `types`. */
export const fetchServiceEvents = (service: string, types: readonly string[], limit: number) =>
  getJson<{ events: MeshEvent[] }>(`v1/events?service=${encodeURIComponent(service)}&type=${types.join(',')}&limit=${limit}`);
