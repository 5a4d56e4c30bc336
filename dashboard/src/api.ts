/**
 * The control plane's public API as the dashboard reads it (docs/api.md; the golden signals and
 * the mesh event feed). Paths are resolved against the page: the dashboard is served at
 * <control>/dashboard/, so "../v1/..." is the control plane's /v1/... (and a reverse proxy that
 * mounts the control plane under a prefix keeps working).
 */

export interface Latency {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface Signals {
  /** Requests per second over the window. */
  rps: number;
  /** 0..1; null when there were no requests. */
  successRate: number | null;
  /** Milliseconds; null when there were no requests. */
  latencyMs: Latency;
  requests: number;
  failures: number;
}

export interface InstanceSignals extends Signals {
  id: string;
  /** The registry's status; "unknown" for an instance seen only in traffic. */
  status: string;
  address: string | null;
}

export interface ServiceSignals extends Signals {
  service: string;
  instances: InstanceSignals[];
}

export interface EdgeSignals extends Signals {
  source: string;
  destination: string;
}

export interface RouteSignals extends Signals {
  service: string;
  route: string;
  direction: string;
}

/** GET /v1/signals, and the `signals` event of the stream (which adds `mesh`). */
export interface MeshSignals {
  window: string;
  time: string;
  scrapeIntervalMs: number;
  services: ServiceSignals[];
  edges: EdgeSignals[];
  routes: RouteSignals[];
  mesh?: { rps: number; successRate: number | null };
}

export interface SeriesPoint {
  /** ms since the epoch. */
  time: number;
  rps: number;
  successRate: number | null;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** GET /v1/signals/series */
export interface Series {
  service: string | null;
  window: string;
  stepMs: number;
  points: SeriesPoint[];
}

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

/** The absolute URL of an API path such as "v1/signals". */
export function apiUrl(path: string): string {
  return new URL(`../${path.replace(/^\//, '')}`, document.baseURI).toString();
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { headers: { accept: 'application/json' }, cache: 'no-store', ...(signal === undefined ? {} : { signal }) });
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

export const fetchEvents = (limit = 50, signal?: AbortSignal) => getJson<{ events: MeshEvent[] }>(`v1/events?limit=${limit}`, signal);

/** The series of one service, or of the whole mesh (service null). */
export const fetchSeries = (service: string | null, window = '5m', signal?: AbortSignal) =>
  getJson<Series>(`v1/signals/series?${service === null ? '' : `service=${encodeURIComponent(service)}&`}window=${window}`, signal);

export const fetchRouteDefinitions = (service: string, signal?: AbortSignal) =>
  getJson<{ routes: RouteDefinition[] }>(`v1/services/${encodeURIComponent(service)}/routes`, signal);

export const fetchSignals = (window = '10s', signal?: AbortSignal) => getJson<MeshSignals>(`v1/signals?window=${window}`, signal);
