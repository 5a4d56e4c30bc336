/**
 * The mesh file's domain form (what `skein up` runs: durations in ms, every default filled in)
 * and its defaults, written once.
 */
import type { BalancerPolicy, HashKey } from '../balancer.js';
import type { RawTraffic } from '../traffic.js';
import type { RawServiceAuthorization } from '../authz/schema.js';
import type { MtlsMode } from '../mtls.js';
import { DEFAULT_PROTOCOL, INSTANCE_DEFAULTS, type Protocol } from '../types.js';
import type { MeshRollout } from './rollout.js';
import type { CanaryPolicy } from '../canary.js';
import type { MeshAutoscale } from './autoscale.js';

export const MESH_DEFAULTS = Object.freeze({
  replicas: 1,
  portEnv: 'PORT',
  readiness: Object.freeze({ type: 'tcp' as const, path: '/health', intervalMs: 500, timeoutMs: 1000, initialDelayMs: 0, deadlineMs: 60_000 }),
  restart: Object.freeze({ baseMs: 1000, capMs: 30_000, resetAfterMs: 30_000 }),
  stopTimeoutMs: 10_000,
  weight: INSTANCE_DEFAULTS.weight,
  protocol: DEFAULT_PROTOCOL,
});

export interface MeshReadiness {
  readonly type: 'http' | 'tcp';
  /** http only ("/health" by default; kept for tcp so the shape is one). */
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly initialDelayMs: number;
  readonly deadlineMs: number;
}

export type MeshHashKey = HashKey;
export type MeshBalancer = BalancerPolicy;

export interface MeshRestart {
  readonly baseMs: number;
  readonly capMs: number;
  readonly resetAfterMs: number;
  /** null: no limit. */
  readonly maxRestarts: number | null;
}

export interface MeshService {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** As written (relative to the mesh file's directory); null: that directory. */
  readonly cwd: string | null;
  readonly env: Readonly<Record<string, string>>;
  readonly replicas: number;
  readonly port: { readonly env: string };
  readonly readiness: MeshReadiness;
  /** What its replicas speak on their port (the Service resource's `protocol`): tcp makes the proxies carry opaque streams. */
  readonly protocol: Protocol;
  readonly balancer: MeshBalancer;
  /** Traffic policy fields as written: sent with the Service resource. */
  readonly traffic: RawTraffic;
  /** Who may call the service (docs/authorization.md): its default and policies, as written; null: none given. */
  readonly authorization: RawServiceAuthorization | null;
  /** Its own mTLS mode, over the mesh's (null: the mesh's). */
  readonly mtlsMode: MtlsMode | null;
  readonly weight: number;
  readonly zone: string;
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly restart: MeshRestart;
  readonly stopTimeoutMs: number;
  /** How a change of its revision is rolled out (rollout.ts). */
  readonly rollout: MeshRollout;
  /** A new version rolls out as a canary (src/api/canary.ts, docs/deployments.md); null: a rolling update. */
  readonly canary: CanaryPolicy | null;
  /** Replicas follow its golden signals (autoscale.ts); absent: `replicas` is fixed. */
  readonly autoscale?: MeshAutoscale;
  readonly dependsOn: readonly string[];
}

export interface MeshControl {
  /** null: the `skein up` default. */
  readonly http: string | null;
  /** null: the `skein up` default; "off" disables DNS. */
  readonly dns: string | null;
  readonly domain: string | null;
}

export interface MeshFile {
  readonly name: string;
  readonly control: MeshControl;
  /** In file order. */
  readonly services: readonly MeshService[];
}
