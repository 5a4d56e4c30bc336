/**
 * One feed of what happens in the mesh (docs/api.md#events): health changes from the registry, what the
 * proxies saw (ejections, returns, breakers, active checks, panic mode), scaling, proxies restarting or going
 * quiet. Bounded (the newest `capacity` events), kept in time order, newest last; subscribers
 * (the dashboard's stream) hear each event as it is added.
 */
import type { HealthEvent } from '../registry/registry.js';
import type { StatsEvent } from './windows.js';
import { parsePanicDetail } from '../../resilience/traffic-state.js';

export const MESH_EVENT_TYPES = ['health', 'eject', 'return', 'breaker', 'active-check', 'panic', 'body-stall', 'certificate', 'mtls-refused', 'cold-start', 'scale', 'rollout', 'canary', 'autoscale', 'proxy'] as const;
export type MeshEventType = (typeof MESH_EVENT_TYPES)[number];
export const DEFAULT_EVENT_CAPACITY = 1000;

export function isMeshEventType(v: unknown): v is MeshEventType {
  return typeof v === 'string' && (MESH_EVENT_TYPES as readonly string[]).includes(v);
}

/** An event as the API shows it: ISO time, type, service, instance id (or null), a sentence, and type-specific fields. */
export interface MeshEvent {
  readonly time: string;
  readonly type: MeshEventType;
  readonly service: string | null;
  readonly id: string | null;
  readonly message: string;
  readonly [field: string]: unknown;
}

/** What `add` takes: `time` as ms since the epoch, an ISO string or a Date. */
export interface MeshEventInput {
  time: number | string | Date;
  type: MeshEventType;
  service: string | null;
  id?: string | null;
  message: string;
  [field: string]: unknown;
}

interface Entry {
  ms: number;
  event: MeshEvent;
}

export interface RecentOptions {
  service?: string;
  /** At most this many (the newest). Default 100. */
  limit?: number;
  types?: readonly MeshEventType[];
}

export class MeshEvents {
  private readonly entries: Entry[] = [];
  private readonly listeners = new Set<(e: MeshEvent) => void>();
  private readonly capacity: number;
  private added = 0;

  constructor(opts: { capacity?: number } = {}) {
    this.capacity = Math.max(1, opts.capacity ?? DEFAULT_EVENT_CAPACITY);
  }

  get size(): number {
    return this.entries.length;
  }

  /** Events added since start (including those since pushed out of the feed). */
  get total(): number {
    return this.added;
  }

  /** Adds an event in time order (an older one goes before newer ones) and tells subscribers. */
  add(input: MeshEventInput): MeshEvent {
    const ms = toMs(input.time);
    const { time: _t, type, service, id, message, ...rest } = input;
    const event: MeshEvent = Object.freeze({ time: new Date(ms).toISOString(), type, service: service ?? null, id: id ?? null, message, ...rest });
    let at = this.entries.length;
    while (at > 0 && this.entries[at - 1]!.ms > ms) at--;
    this.entries.splice(at, 0, { ms, event });
    if (this.entries.length > this.capacity) this.entries.splice(0, this.entries.length - this.capacity);
    this.added++;
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch {
        /* one listener's failure is its own */
      }
    }
    return event;
  }

  /** The newest events, oldest first, filtered by service (also matching `services` lists) and types. */
  recent(opts: RecentOptions = {}): MeshEvent[] {
    const limit = Math.max(0, opts.limit ?? 100);
    if (limit === 0) return [];
    const types = opts.types === undefined || opts.types.length === 0 ? null : new Set(opts.types);
    const out: MeshEvent[] = [];
    for (let i = this.entries.length - 1; i >= 0 && out.length < limit; i--) {
      const e = this.entries[i]!.event;
      if (types !== null && !types.has(e.type)) continue;
      if (opts.service !== undefined && e.service !== opts.service && !(Array.isArray(e['services']) && e['services'].includes(opts.service))) continue;
      out.push(e);
    }
    return out.reverse();
  }

  /** Calls `fn` with every event added from now on; returns the unsubscribe function. */
  subscribe(fn: (e: MeshEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}

function toMs(t: number | string | Date): number {
  const ms = t instanceof Date ? t.getTime() : typeof t === 'string' ? Date.parse(t) : t;
  if (!Number.isFinite(ms)) throw new TypeError(`event time ${String(t)} is not a time`);
  return ms;
}

/** A registry health event as a mesh event (keeping `from`, `to`, `reason`, `revision`). */
export function healthEvent(e: HealthEvent): MeshEventInput {
  const message = e.from === 'new' ? `${e.id} registered as ${e.to}: ${e.reason}` : `${e.id} is ${e.to} (was ${e.from}): ${e.reason}`;
  return { time: e.time, type: 'health', service: e.service, id: e.id, message, from: e.from, to: e.to, reason: e.reason, revision: e.revision };
}

/** Splits "open: 5 consecutive failures" (or just "open") into its state and reason. */
function stateAndReason(detail: string): [string, string] {
  const i = detail.indexOf(':');
  return i < 0 ? [detail.trim(), ''] : [detail.slice(0, i).trim(), detail.slice(i + 1).trim()];
}

/**
 * A proxy's traffic event (src/api/stats.ts) as a mesh event, with the proxy's id and the raw `detail`;
 * null for a type the feed does not know.
 */
export function proxyEvent(proxy: string, e: StatsEvent): MeshEventInput | null {
  const who = e.instance === '' ? `an endpoint of ${e.service}` : e.instance;
  const base = { time: e.time, service: e.service, id: e.instance === '' ? null : e.instance, proxy, detail: e.detail };
  const tail = (reason: string) => (reason === '' ? '' : `: ${reason}`);
  switch (e.type) {
    case 'eject':
      return { ...base, type: 'eject', message: `${who} ejected${tail(e.detail)}` };
    case 'return':
      return { ...base, type: 'return', message: `${who} returned to the load balancer${tail(e.detail)}` };
    case 'breaker': {
      const [state, reason] = stateAndReason(e.detail);
      return { ...base, type: 'breaker', state, message: `${who} breaker ${state}${tail(reason)}` };
    }
    case 'active-check': {
      const [result, reason] = stateAndReason(e.detail);
      const verb = result === 'healthy' ? 'passes' : result === 'unhealthy' ? 'fails' : `is ${result} in`;
      return { ...base, type: 'active-check', result, message: `${who} ${verb} active health checks${tail(reason)}` };
    }
    case 'panic': {
      // The service as one proxy sees it: no instance.
      const p = parsePanicDetail(e.detail);
      const [state, reason] = stateAndReason(e.detail);
      const verb = state === 'entered' ? 'is in panic mode in' : state === 'left' ? 'left panic mode in' : `panic ${state} in`;
      const counts = p === null ? {} : { panicking: p.panicking, endpoints: p.endpoints, available: p.available, ejected: p.ejected, failingActiveChecks: p.failingActiveChecks, threshold: p.threshold };
      const then = p?.panicking === true ? ': requests go to every instance, ejected or failing active checks' : '';
      return { ...base, id: null, type: 'panic', state, ...counts, message: `${e.service} ${verb} proxy ${proxy}${tail(reason)}${then}` };
    }
    case 'body-stall':
      return { ...base, type: 'body-stall', message: `${who} of ${e.service}: ${e.detail}` };
    case 'certificate':
      return { ...base, id: null, type: 'certificate', message: `proxy ${proxy}: ${e.detail}` };
    case 'mtls-refused':
      return { ...base, type: 'mtls-refused', message: `proxy ${proxy}: ${e.detail}` };
    case 'cold-start':
      return { ...base, id: null, type: 'cold-start', message: `${e.service} ${e.detail} (proxy ${proxy})` };
    default:
      return null;
  }
}
