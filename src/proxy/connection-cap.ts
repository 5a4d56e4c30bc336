/**
 * A listener's connection cap (limits.maxConnections) that keeps serving active clients when idle
 * or slow ones fill it (issue 11 §8: at the 10,000-connection cap, reached by idle clients, calls
 * failed for ~16 s, because Node's `server.maxConnections` drops every new connection unseen).
 *
 * At the cap, a new connection makes room by closing the connection that has waited longest
 * without a request in progress: idle between requests, or still sending its request head (a slow
 * or stalled client), whichever has waited longer (`since`). Only when every connection is busy
 * with a request is the new one refused, with a 503 SKEIN_E_CONNECTION_LIMIT and a close.
 *
 * Cost: finding the longest-waiting connections is a scan of the listener's connections; one scan
 * queues the oldest `VICTIM_BATCH`, so a flood of new connections at the cap scans once per batch,
 * not per connection (each queued one is checked again when its turn comes: never a busy one). A
 * scan that finds every connection busy is not repeated within the same coarse-clock tick (100 ms).
 */
import type { Socket } from 'node:net';
import { coarseNow } from './http1/coarse-clock.js';

/** What the cap reads of a client connection (the forwarder's Downstream). */
export interface CappedConnection {
  /** Between requests. */
  readonly idle: boolean;
  /** A request head has started and is not complete. */
  readonly readingHead: boolean;
  /** When the current head started, or when the connection went idle (coarse clock). */
  readonly since: number;
  destroy(): void;
}

export type EvictedState = 'idle' | 'head';

/** Longest-waiting connections queued per scan. */
const VICTIM_BATCH = 64;
/** Refused connections still being answered; past this, new ones are dropped at once. */
const MAX_REFUSING = 64;
/** A refused connection is destroyed this long after its answer, if its client has not closed. */
const REFUSE_LINGER_MS = 1000;

export class ConnectionCap<C extends CappedConnection> {
  /** Closed to make room, until their socket is gone: not counted against the cap. */
  private readonly evicted = new Set<C>();
  /** Candidates, the longest-waiting last. */
  private victims: C[] = [];
  /** The coarse time of the last scan that found every connection busy. */
  private allBusyAt = -1;
  private refusing = 0;

  constructor(
    private readonly conns: ReadonlySet<C>,
    private readonly max: () => number,
    private readonly onEvict: (state: EvictedState) => void,
  ) {}

  /** Whether a new connection may be taken now: under the cap, or room was made. */
  admit(): boolean {
    if (this.conns.size - this.evicted.size < this.max()) return true;
    const c = this.victim();
    if (c === null) return false;
    this.evicted.add(c);
    this.onEvict(c.idle ? 'idle' : 'head');
    c.destroy();
    return true;
  }

  /** A connection's socket is gone. */
  closed(c: C): void {
    this.evicted.delete(c);
  }

  /**
   * Answers a connection that was not admitted and closes it. What it sent is read and dropped,
   * so that closing does not reset the connection before the client has read the answer.
   */
  refuse(socket: Socket, answer: string): void {
    if (this.refusing >= MAX_REFUSING) {
      socket.destroy();
      return;
    }
    this.refusing++;
    const timer = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
    timer.unref();
    socket.on('close', () => {
      this.refusing--;
      clearTimeout(timer);
    });
    socket.on('error', () => socket.destroy());
    socket.on('end', () => socket.destroy());
    socket.on('data', () => undefined);
    socket.end(answer, 'latin1');
  }

  /** The connection that has waited longest without a request in progress; null if none. */
  private victim(): C | null {
    for (;;) {
      const c = this.victims.pop();
      if (c === undefined) break;
      if (this.conns.has(c) && !this.evicted.has(c) && (c.idle || c.readingHead)) return c;
    }
    const now = coarseNow();
    if (this.allBusyAt === now) return null;
    const found: C[] = [];
    for (const c of this.conns) if (!this.evicted.has(c) && (c.idle || c.readingHead)) found.push(c);
    if (found.length === 0) {
      this.allBusyAt = now;
      return null;
    }
    found.sort((a, b) => b.since - a.since);
    this.victims = found.slice(Math.max(0, found.length - VICTIM_BATCH));
    return this.victims.pop() ?? null;
  }
}
