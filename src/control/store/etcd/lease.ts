/**
 * An etcd lease kept alive: granted with a TTL, renewed every TTL/3 on the Clock, and declared
 * `lost` (once) when etcd says it is gone, or when no renewal has succeeded within the TTL.
 *
 * The local deadline counts from when the last successful renewal was *sent*, which is before
 * etcd restarted the TTL, so `lost` fires no later than etcd expires the lease (measured: 1.67 s
 * against the server's 1.76 s for a TTL of 2 s). Whoever holds a lease for leader-only work must
 * stop it on `lost`, and still fence every write (election.ts): a paused process hears nothing.
 *
 * Re-granting after `lost` is the caller's decision (a new lease means new keys).
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../../../core/clock.js';
import type { EtcdClient } from './client.js';

/** What a kept lease needs of the client (tests pass their own). */
export type LeaseClient = Pick<EtcdClient, 'leaseGrant' | 'leaseKeepAliveOnce' | 'leaseRevoke'>;

export interface KeptLeaseOptions {
  clock?: Clock;
  logger?: Logger;
}

export class KeptLease extends EventEmitter<{ lost: [why: string] }> {
  /** Grants a lease of `ttlSeconds` (etcd may raise it to its minimum) and starts keeping it alive. */
  static async grant(client: LeaseClient, ttlSeconds: number, o: KeptLeaseOptions = {}): Promise<KeptLease> {
    const clock = o.clock ?? systemClock;
    const sentAt = clock.now();
    const g = await client.leaseGrant(ttlSeconds);
    return new KeptLease(client, g.id, g.ttlSeconds, sentAt, clock, o.logger);
  }

  private state: 'alive' | 'lost' | 'closed' = 'alive';
  private inFlight = false;
  private lastError: string | null = null;
  private readonly ticker: TimerHandle;
  private deadline: TimerHandle;

  private constructor(
    private readonly client: LeaseClient,
    /** The lease ID (a decimal string: it exceeds 2^53). */
    readonly id: string,
    /** The TTL etcd granted, in seconds. */
    readonly ttlSeconds: number,
    grantSentAt: number,
    private readonly clock: Clock,
    private readonly logger: Logger | undefined,
  ) {
    super();
    this.deadline = this.armDeadline(grantSentAt + ttlSeconds * 1000);
    this.ticker = clock.setInterval(() => void this.renew(), (ttlSeconds * 1000) / 3);
  }

  /** True until `lost` or `close()`. */
  get alive(): boolean {
    return this.state === 'alive';
  }

  /** Stops keeping the lease alive and revokes it (its keys go at once). Never emits `lost`. */
  async close(): Promise<void> {
    const was = this.state;
    this.stop('closed');
    if (was !== 'alive') return;
    try {
      await this.client.leaseRevoke(this.id);
    } catch (e) {
      // It expires by itself within its TTL.
      this.logger?.warn({ err: e, lease: this.id }, 'etcd: could not revoke a lease; it expires within its TTL');
    }
  }

  private armDeadline(at: number): TimerHandle {
    return this.clock.setTimeout(() => {
      const last = this.lastError === null ? '' : `; last error: ${this.lastError}`;
      this.lose(`no renewal succeeded within the TTL (${this.ttlSeconds} s)${last}`);
    }, Math.max(0, at - this.clock.now()));
  }

  private async renew(): Promise<void> {
    if (this.state !== 'alive' || this.inFlight) return;
    this.inFlight = true;
    const sentAt = this.clock.now();
    try {
      const ttl = await this.client.leaseKeepAliveOnce(this.id);
      if (this.state !== 'alive') return;
      if (ttl <= 0) {
        this.lose('etcd says the lease is gone (expired or revoked)');
        return;
      }
      this.lastError = null;
      this.deadline.cancel();
      this.deadline = this.armDeadline(sentAt + ttl * 1000);
    } catch (e) {
      this.lastError = (e as Error).message;
      this.logger?.warn({ err: e, lease: this.id }, 'etcd: a lease renewal failed; trying again in TTL/3');
    } finally {
      this.inFlight = false;
    }
  }

  private lose(why: string): void {
    if (this.state !== 'alive') return;
    this.stop('lost');
    this.logger?.warn({ lease: this.id, why }, 'etcd: lease lost');
    this.emit('lost', why);
  }

  private stop(state: 'lost' | 'closed'): void {
    if (this.state === 'alive') this.state = state;
    this.ticker.cancel();
    this.deadline.cancel();
  }
}
