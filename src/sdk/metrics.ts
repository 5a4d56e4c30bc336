/** The SDK's metrics (placeholder while the dispatcher is built; see step 3). */
import type { Direction } from '../api/stats.js';
import type { TrafficEvent } from '../resilience/traffic-state.js';
import type { FinishedRequest } from './request.js';
import type { MeshView } from './mesh.js';

export class SdkMetrics {
  constructor(
    readonly workload: string,
    private readonly mesh: () => MeshView,
  ) {}
  retry(_service: string, _reason: string): void {}
  retryBudgetExhausted(_service: string): void {}
  rateLimited(_direction: Direction, _service: string, _route: string): void {}
  trafficEvent(_e: TrafficEvent): void {}
  upstreamConnect(_ok: boolean): void {}
  finished(_r: FinishedRequest): void {}
}
