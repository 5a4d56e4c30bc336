/**
 * The golden signals, wired: a SignalStore (windows over the proxies' counters), the mesh event
 * feed, the scraper that fills both, and the API routes. The control plane does
 *
 *   const signals = createSignals({ registry, proxies: () => proxies.list(), clock, logger });
 *   signals.routes(app);
 *   signals.start();            // and signals.stop() on close
 *
 * Registry health events go into the event feed from creation on (unless `feedHealthEvents` is
 * false); scaling events are the caller's to `events.add`.
 */
import type { FastifyInstance } from 'fastify';
import { systemClock, type Clock } from '../../core/clock.js';
import type { Registry } from '../registry/registry.js';
import { SignalStore, DEFAULT_INTERVAL_MS } from './windows.js';
import { MeshEvents, healthEvent } from './events.js';
import { Scraper, type ScrapeLogger, type ScrapeTarget } from './scraper.js';
import { signalsRoutes } from './routes.js';

export * from './windows.js';
export * from './events.js';
export * from './scraper.js';
export * from './routes.js';

export interface SignalsOptions {
  registry: Registry;
  proxies: () => readonly ScrapeTarget[];
  clock?: Clock;
  /** Scrape interval, and the step of the series. Default 2 s. */
  intervalMs?: number;
  /** Per proxy and round. Default 3/4 of the interval, at most 1.5 s. */
  timeoutMs?: number;
  /** At most this many series keys. Default 10,000. */
  maxKeys?: number;
  /** Events kept in the feed. Default 1,000. */
  eventCapacity?: number;
  /** Put the registry's health events into the feed. Default true. */
  feedHealthEvents?: boolean;
  logger?: ScrapeLogger;
}

export interface SkeinSignals {
  readonly store: SignalStore;
  readonly events: MeshEvents;
  readonly scraper: Scraper;
  /** Adds GET /v1/signals, /v1/signals/services/:service, /v1/signals/series, /v1/signals/stream. */
  routes(app: FastifyInstance): void;
  /** Starts scraping (again, after `pause`). */
  start(): void;
  /** Stops scraping, keeping what was scraped and the event feed (a replica no longer elected). */
  pause(): void;
  /** Stops scraping, cancelling fetches in flight, and feeding health events. */
  stop(): void;
}

export function createSignals(opts: SignalsOptions): SkeinSignals {
  const clock = opts.clock ?? systemClock;
  const intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
  const store = new SignalStore({ clock, intervalMs, ...(opts.maxKeys === undefined ? {} : { maxKeys: opts.maxKeys }) });
  const events = new MeshEvents(opts.eventCapacity === undefined ? {} : { capacity: opts.eventCapacity });
  const scraper = new Scraper({
    store,
    events,
    proxies: opts.proxies,
    clock,
    intervalMs,
    ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  // From creation on, so that nothing registered before the scraper starts is missed.
  let offHealth: (() => void) | null = opts.feedHealthEvents === false ? null : opts.registry.onHealthEvent((e) => events.add(healthEvent(e)));
  return {
    store,
    events,
    scraper,
    routes: (app) => signalsRoutes(app, { store, events, scraper, registry: opts.registry, clock }),
    start() {
      scraper.start();
    },
    pause() {
      scraper.stop();
    },
    stop() {
      offHealth?.();
      offHealth = null;
      scraper.stop();
    },
  };
}
