/** Domain objects: validated, defaulted, frozen. Durations are milliseconds. */
import type { BalancerPolicy } from './balancer.js';

export type Protocol = 'http' | 'http2' | 'grpc' | 'tcp';
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
}

export type Resource = ({ readonly kind: 'Service' } & Service) | ({ readonly kind: 'Instance' } & Instance);
