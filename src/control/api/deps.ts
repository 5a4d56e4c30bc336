/** What the API's plugins are given: the control plane's parts. */
import type { Logger } from 'pino';
import type { Clock } from '../../core/clock.js';
import type { HealthManager } from '../health/manager.js';
import type { ControlMetrics } from '../metrics.js';
import type { Publisher } from '../publisher.js';
import type { Registry } from '../registry/registry.js';

export interface ApiDeps {
  registry: Registry;
  health: HealthManager;
  publisher: Publisher;
  metrics: ControlMetrics;
  clock: Clock;
  logger: Logger;
  version: string;
  startedAt: number;
  /** Extra facts for GET /v1/health (listen addresses, store kind). */
  info: () => Record<string, unknown>;
  /** Why this replica's view may be stale (it cannot follow its store), or null: watches are refused meanwhile. */
  stale?: () => string | null;
}
