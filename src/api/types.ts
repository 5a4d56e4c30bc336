/** Domain objects: validated, defaulted, frozen. Durations are milliseconds. */
import type { BalancerPolicy } from './balancer.js';
import type { RawTraffic, TrafficPolicy } from './traffic.js';
import type { AuthorizationPolicyResource, ServiceAuthorization } from './authz/model.js';
import type { MtlsMode } from './mtls.js';

/** What a service's instances can speak (docs/protocols.md). */
export const PROTOCOLS = ['http', 'http2', 'grpc', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
/** What a service (or one of its ports) speaks when it does not say. */
export const DEFAULT_PROTOCOL: Protocol = 'http';
export type CheckType = 'http' | 'tcp' | 'ttl';
export type HealthStatus = 'healthy' | 'unhealthy';

export interface HealthCheck {
  readonly type: CheckType;
  readonly path: string;
  readonly method: 'GET' | 'HEAD';
  readonly expectedStatus: { readonly min: number; readonly max: number };
  /** null: the instance's own port. */
  readonly port: number | null;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** ttl checks only; 0 otherwise. */
  readonly ttlMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
  readonly initialState: HealthStatus;
  /** null: never deregister automatically. */
  readonly deregisterAfterMs: number | null;
}

export interface Instance {
  readonly id: string;
  readonly service: string;
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  readonly zone: string;
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly check: HealthCheck | null;
}

export interface ServicePort {
  readonly name: string;
  readonly port: number;
  readonly protocol: Protocol;
}

export interface ServiceDefaults {
  readonly weight?: number;
  readonly zone?: string;
  readonly version?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly check?: unknown;
}

export interface Service {
  readonly name: string;
  readonly ports: readonly ServicePort[];
  readonly labels: Readonly<Record<string, string>>;
  /** Kept in raw form: they are merged into an instance before it is parsed. */
  readonly defaults: ServiceDefaults;
  /** How callers pick among its instances (default peak-ewma). */
  readonly balancer: BalancerPolicy;
  /** Timeouts, retries, limits, breaker, outlier detection, rate limits and routes (defaults filled in). */
  readonly traffic: TrafficPolicy;
  /** The traffic fields as they were written (to store the service and show it back). */
  readonly trafficRaw: RawTraffic;
  /** Who may call it: its authorization policies and default (src/api/authz/model.ts). */
  readonly authorization: ServiceAuthorization;
  /** Its own mTLS mode, over the mesh's (null: the mesh's). */
  readonly mtlsMode: MtlsMode | null;
  /**
   * What its instances speak on the port they register: `protocol`, or its ports' when they all
   * declare the same one, or http (`serviceProtocol`). Absent in a definition from before it existed.
   */
  readonly protocol?: Protocol;
}

/** A Route resource: one route of a service, as written (it is checked with its service when applied). */
export interface Route {
  readonly service: string;
  readonly name: string;
  /** The route's fields as written (what goes into the service's `routes`). */
  readonly raw: Readonly<Record<string, unknown>>;
}

export type Resource =
  | ({ readonly kind: 'Service' } & Service)
  | ({ readonly kind: 'Instance' } & Instance)
  | ({ readonly kind: 'Route' } & Route)
  | ({ readonly kind: 'AuthorizationPolicy' } & AuthorizationPolicyResource);

/** "Service/web", "Instance/web/web-1", "Route/web/checkout", "AuthorizationPolicy/web/only-frontend". */
export function resourceKey(r: Resource): string {
  return r.kind === 'Service' ? `Service/${r.name}` : r.kind === 'Instance' ? `Instance/${r.service}/${r.id}` : `${r.kind}/${r.service}/${r.name}`;
}

/** Defaults of an instance (under the service's `defaults`, which come first). */
export const INSTANCE_DEFAULTS = Object.freeze({ weight: 1, zone: '', version: '' });

/** Defaults of a health check run by the control plane (http and tcp; ttl checks take only ttl). */
export const HEALTH_CHECK_DEFAULTS = Object.freeze({
  path: '/health',
  method: 'GET' as const,
  expectedStatus: Object.freeze({ min: 200, max: 399 }),
  intervalMs: 10_000,
  timeoutMs: 2_000,
  healthyThreshold: 1,
  unhealthyThreshold: 3,
  /** Status at registration: an http or tcp check runs at once; registering a ttl instance counts as a heartbeat. */
  initialState: Object.freeze({ probe: 'unhealthy' as HealthStatus, ttl: 'healthy' as HealthStatus }),
});
