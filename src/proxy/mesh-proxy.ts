/**
 * What `skein up`'s runtime (src/runtime/mesh-runner.ts) asks of the mesh's proxy as services
 * start, scale, roll out and stop. Two proxies answer it: a `Proxy` on the main thread
 * (`--workers 1`) and `ProxyWorkers` (`--workers N`: src/proxy/workers.ts), whose every worker
 * thread adds and removes the same listeners on the same ports.
 */
import type { WorkloadInfo, WorkloadSpec } from './proxy.js';

export interface MeshProxy {
  /** The proxy's id (its metrics, /stats, the control plane's /v1/proxies): one, whatever the workers. */
  readonly metrics: { readonly id: string };
  /**
   * Listens for a workload (a port 0 resolved: every worker binds the port the first one got);
   * rejects with the first error, nothing left listening.
   */
  addWorkload(spec: WorkloadSpec): Promise<WorkloadInfo>;
  /** Stops a workload's listeners, requests in flight finishing for up to `graceMs`. */
  removeWorkload(name: string, graceMs?: number): Promise<void>;
  /**
   * Requests in flight from the proxy's outbound listeners to `service` (the autoscaler's inFlight
   * metric); null when the proxy has no client for it. With workers: their sum, asked of each.
   */
  inFlight(service: string): number | null | Promise<number | null>;
  /**
   * Resolves once the proxy no longer routes `service` to the endpoint `key` (with workers: none of
   * them), or after `timeoutMs`; true when it is gone.
   */
  whenEndpointGone(service: string, key: string, timeoutMs: number): Promise<boolean>;
}
