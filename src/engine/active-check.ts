/**
 * Active health checks run by a caller's proxy (a service's `activeHealthCheck`): every endpoint
 * of the service the proxy sends to is probed (HTTP GET or TCP connect) on an interval, and one
 * that fails `unhealthyThreshold` times in a row gets no traffic from this proxy until it passes
 * `healthyThreshold` times, even while the control plane still lists it (a network path that
 * only this caller cannot use, say). Endpoints start healthy: the control plane vouched for them.
 *
 * The engine's own HealthChecker, for every data plane (the proxy's and the SDK's: each gives a
 * ServiceClient a factory of them). It decides (when to probe, what a run of results means); the
 * probe itself is the data plane's I/O (`EndpointProbe`: src/identity/mtls/probe.ts, over the
 * caller's mTLS link to a peer proxy when there is one).
 */
import type { ActiveCheckPolicy } from '../api/traffic.js';
import type { HealthCheck } from '../api/types.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import type { ProbeResult } from '../discovery/probe.js';
import type { HealthChecker } from './service-client.js';
import type { TrafficState } from '../resilience/traffic-state.js';

/** One probe of an endpoint (`check.type`: http or tcp), by the data plane that checks. */
export type EndpointProbe = (e: Endpoint, check: HealthCheck) => Promise<ProbeResult>;

interface Target {
  endpoint: Endpoint;
  timer: TimerHandle;
  passes: number;
  fails: number;
  running: boolean;
}

export class ActiveChecker implements HealthChecker {
  private readonly targets = new Map<string, Target>();
  /** The set last given to `update`. */
  private set = EndpointSet.empty();
  private readonly check: HealthCheck;
  private stopped = false;

  constructor(
    private readonly traffic: TrafficState,
    readonly policy: ActiveCheckPolicy,
    private readonly clock: Clock,
    /** The probe (the caller's I/O). */
    private readonly probeOnce: EndpointProbe,
  ) {
    this.check = {
      type: policy.type,
      path: policy.path,
      method: 'GET',
      expectedStatus: { min: 200, max: 399 },
      port: null,
      intervalMs: policy.intervalMs,
      timeoutMs: policy.timeoutMs,
      ttlMs: 0,
      healthyThreshold: policy.healthyThreshold,
      unhealthyThreshold: policy.unhealthyThreshold,
      initialState: 'healthy',
      deregisterAfterMs: null,
    };
  }

  /**
   * Follows the endpoint set: new endpoints (or new addresses) are probed at once, gone ones
   * forgotten. A set made from the last one by one change costs O(changes) (issue 11 §6).
   */
  update(set: EndpointSet): void {
    if (this.stopped) return;
    const prev = this.set;
    this.set = set;
    const changes = set.changesSince(prev);
    if (changes !== null) {
      for (const e of changes.removed) this.forget(e.key);
      for (const e of changes.upserted) this.follow(e);
      return;
    }
    for (const e of set.list()) this.follow(e);
    for (const k of this.targets.keys()) if (!set.has(k)) this.forget(k);
  }

  /** Probes `e` from now on, unless it is probed already at this address. */
  private follow(e: Endpoint): void {
    const t = this.targets.get(e.key);
    if (t !== undefined && t.endpoint.address === e.address && t.endpoint.port === e.port) return;
    t?.timer.cancel();
    const target: Target = { endpoint: e, timer: this.clock.setInterval(() => void this.probe(target), this.policy.intervalMs), passes: 0, fails: 0, running: false };
    this.targets.set(e.key, target);
    void this.probe(target);
  }

  private forget(key: string): void {
    this.targets.get(key)?.timer.cancel();
    this.targets.delete(key);
  }

  private async probe(t: Target): Promise<void> {
    if (t.running || this.stopped) return;
    t.running = true;
    const r = await this.probeOnce(t.endpoint, this.check);
    t.running = false;
    if (this.stopped || this.targets.get(t.endpoint.key) !== t) return;
    if (r.ok) {
      t.fails = 0;
      t.passes++;
      if (t.passes >= this.policy.healthyThreshold) this.traffic.setActiveHealth(t.endpoint.key, true, r.reason);
    } else {
      t.passes = 0;
      t.fails++;
      if (t.fails >= this.policy.unhealthyThreshold) this.traffic.setActiveHealth(t.endpoint.key, false, r.reason);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.targets.values()) t.timer.cancel();
    this.targets.clear();
  }
}
