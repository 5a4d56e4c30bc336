/**
 * The dashboard's live data: one EventSource on GET /v1/signals/stream (a `signals` event on
 * connect and after every scrape round, a `mesh-event` for every new mesh event), plus the recent
 * events fetched once per connection. EventSource reconnects by itself after a network error; after
 * an HTTP error it gives up, so we open a new one with a backoff. A stream that goes quiet for too
 * long (no `signals` event) is treated as dead and reopened. Every (re)connection bumps `epoch`, which
 * tells views to re-fetch their initial data (the control plane may have restarted and lost it).
 */
import { apiUrl, fetchEvents, fetchSignals, ApiError, type MeshEvent, type MeshSignals } from './api';
import { PANIC_EVENT_TYPES } from './panic';

export type Connection = 'connecting' | 'live' | 'reconnecting';

export interface LiveState {
  connection: Connection;
  /** The latest 10s signals (kept while reconnecting, so the page shows the last numbers seen). */
  signals: MeshSignals | null;
  /** When the latest `signals` event arrived (ms, browser clock). */
  receivedAt: number | null;
  /** Newest last, at most MAX_EVENTS. */
  events: MeshEvent[];
  /** The `panic` and `proxy` events, kept apart (newest last, at most MAX_PANIC_EVENTS) so that other events do not push out a panic still on. */
  panicEvents: MeshEvent[];
  /** Bumped on every (re)connection. */
  epoch: number;
  /** Why the stream is down, when we know (an API error message). */
  problem: string | null;
}

export const MAX_EVENTS = 200;
export const MAX_PANIC_EVENTS = 1000;
const isPanicEvent = (e: MeshEvent) => (PANIC_EVENT_TYPES as readonly string[]).includes(e.type);
const MIN_STALE_MS = 30_000;
const MAX_BACKOFF_MS = 15_000;

const eventKey = (e: MeshEvent) => `${e.time}\u0000${e.type}\u0000${e.service ?? ''}\u0000${e.id ?? ''}\u0000${e.message}`;

/** Merges event lists (deduplicated, time order, newest last, the newest `max`). */
export function mergeEvents(a: readonly MeshEvent[], b: readonly MeshEvent[], max = MAX_EVENTS): MeshEvent[] {
  const seen = new Set<string>();
  const out: MeshEvent[] = [];
  for (const e of [...a, ...b]) {
    const k = eventKey(e);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(e);
  }
  out.sort((x, y) => Date.parse(x.time) - Date.parse(y.time));
  return out.length > max ? out.slice(out.length - max) : out;
}

export class LiveData {
  private state: LiveState = { connection: 'connecting', signals: null, receivedAt: null, events: [], panicEvents: [], epoch: 0, problem: null };
  private readonly listeners = new Set<(s: LiveState) => void>();
  private es: EventSource | null = null;
  private everLive = false;
  private backoffMs = 1000;
  private reopenTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  /** Bumped for every fetch of the recent events: an older answer is ignored (never aborted, so the browser logs no cancelled request). */
  private eventsFetch = 0;
  /** mesh-events received since the stream (re)opened. */
  private sinceOpen: MeshEvent[] = [];

  get current(): LiveState {
    return this.state;
  }

  subscribe(fn: (s: LiveState) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  start(): void {
    this.open();
    this.watchdog = setInterval(() => this.checkStale(), 5000);
  }

  stop(): void {
    this.es?.close();
    this.es = null;
    if (this.reopenTimer !== null) clearTimeout(this.reopenTimer);
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.eventsFetch++;
  }

  private set(patch: Partial<LiveState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of [...this.listeners]) l(this.state);
  }

  private open(): void {
    this.reopenTimer = null;
    const es = new EventSource(apiUrl('v1/signals/stream'));
    this.es = es;
    es.addEventListener('open', () => {
      if (this.es !== es) return;
      this.everLive = true;
      this.backoffMs = 1000;
      this.set({ connection: 'live', epoch: this.state.epoch + 1, problem: null, receivedAt: Date.now() });
      this.loadEvents();
    });
    es.addEventListener('signals', (m: MessageEvent<string>) => {
      if (this.es !== es) return;
      let body: MeshSignals;
      try {
        body = JSON.parse(m.data) as MeshSignals;
      } catch {
        return;
      }
      this.set({ signals: body, receivedAt: Date.now(), ...(this.state.connection === 'live' ? {} : { connection: 'live' as const }) });
    });
    es.addEventListener('mesh-event', (m: MessageEvent<string>) => {
      if (this.es !== es) return;
      try {
        const e = JSON.parse(m.data) as MeshEvent;
        this.sinceOpen.push(e);
        if (this.sinceOpen.length > MAX_EVENTS) this.sinceOpen.shift();
        this.set({ events: mergeEvents(this.state.events, [e]), ...(isPanicEvent(e) ? { panicEvents: mergeEvents(this.state.panicEvents, [e], MAX_PANIC_EVENTS) } : {}) });
      } catch {
        /* ignore a malformed event */
      }
    });
    es.addEventListener('error', () => {
      if (this.es !== es) return;
      this.set({ connection: this.everLive ? 'reconnecting' : 'connecting' });
      // CONNECTING: the browser retries by itself (the server sends `retry: 1000`).
      // CLOSED: an HTTP error or a wrong content type; it will not retry, so we do.
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        this.es = null;
        this.diagnose();
        this.scheduleReopen();
      }
    });
  }

  private scheduleReopen(): void {
    if (this.reopenTimer !== null) return;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.reopenTimer = setTimeout(() => this.open(), wait);
  }

  /** The stream is open but no signals came for a long while: reopen it. */
  private checkStale(): void {
    if (this.es === null || this.state.connection !== 'live' || this.state.receivedAt === null) return;
    const interval = this.state.signals?.scrapeIntervalMs ?? 2000;
    if (Date.now() - this.state.receivedAt > Math.max(MIN_STALE_MS, 10 * interval)) {
      this.es.close();
      this.es = null;
      this.set({ connection: 'reconnecting' });
      this.scheduleReopen();
    }
  }

  /** Asks the plain API why the stream failed, for the banner (the EventSource API does not tell). */
  private diagnose(): void {
    fetchSignals('10s').then(
      () => this.set({ problem: null }),
      (e: unknown) => this.set({ problem: e instanceof ApiError ? e.message : String(e) }),
    );
  }

  private loadEvents(): void {
    const mine = ++this.eventsFetch;
    this.sinceOpen = [];
    fetchEvents(50).then(
      (r) => {
        if (mine !== this.eventsFetch) return;
        // The fetched feed replaces what we had (a restarted control plane starts a new one); what
        // the stream delivered while the request was in flight is kept.
        this.set({ events: mergeEvents(r.events ?? [], this.sinceOpen) });
      },
      () => {
        /* the events panel keeps what it has */
      },
    );
    fetchEvents(MAX_PANIC_EVENTS, undefined, PANIC_EVENT_TYPES).then(
      (r) => {
        if (mine !== this.eventsFetch) return;
        this.set({ panicEvents: mergeEvents(r.events ?? [], this.sinceOpen.filter(isPanicEvent), MAX_PANIC_EVENTS) });
      },
      () => {
        /* the panic badges keep what they have */
      },
    );
  }
}
