/**
 * Leader election on one etcd key, with fencing (issue 15 §1: duties that must run once).
 *
 * - `campaign()` creates the key, bound to a kept lease, with a transaction that succeeds only if
 *   the key does not exist (compare create_revision = 0). If another candidate holds it, it watches
 *   the key and tries again once it is deleted (its holder resigned, or its lease expired).
 * - The key's create_revision is the fencing token: a new leader creates the key anew, so its
 *   token is larger. `fenced(ops)` is a transaction that applies only while the key still has the
 *   token we won with; etcd decides, not our local view. A leader that was paused past its TTL
 *   (GC, SIGSTOP) and still believes it leads is refused there (etcd's locks alone do not
 *   guarantee mutual exclusion: Jepsen, etcd 3.4.3).
 * - `deposed` (once per term) when the lease is lost, the key is deleted or re-created, or a
 *   fenced write finds the token gone. Standing again is the caller's decision: `campaign()`.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../../../core/clock.js';
import { SkeinError } from '../../../core/errors.js';
import type { Compare, EtcdClient, EtcdErrorDetails, TxnOp, TxnResult } from './client.js';
import { KeptLease } from './lease.js';
import type { KeyValue } from './wire.js';

export interface ElectionOptions {
  client: EtcdClient;
  /** The election key, e.g. `skein/leader/duties`. */
  key: string;
  /** What the key holds while we lead (who we are and where: see `describe`). */
  value: string;
  /** The lease TTL: how long a dead leader keeps the key. */
  ttlSeconds: number;
  clock?: Clock;
  logger?: Logger;
}

export class Election extends EventEmitter<{ elected: [token: number]; deposed: [why: string] }> {
  private readonly client: EtcdClient;
  readonly key: string;
  private value: string;
  private readonly ttlSeconds: number;
  private readonly clock: Clock;
  private readonly logger: Logger | undefined;

  private lease: KeptLease | null = null;
  private watch: { close(): void } | null = null;
  private campaigning: Promise<void> | null = null;
  private resigned = false;
  /** Wakes a campaign waiting for the key to go (on resign). */
  private wake: (() => void) | null = null;
  private current: number | null = null;
  /** The token of the last term won: fenced writes carry it even after we hear we were deposed. */
  private lastToken: number | null = null;

  constructor(o: ElectionOptions) {
    super();
    this.client = o.client;
    this.key = o.key;
    this.value = o.value;
    this.ttlSeconds = o.ttlSeconds;
    this.clock = o.clock ?? systemClock;
    this.logger = o.logger;
  }

  /** What the key will hold from the next campaign on (e.g. once this replica knows its URL). */
  describe(value: string): void {
    this.value = value;
  }

  /** True while we hold the key (as far as we know: fence every write). */
  get leader(): boolean {
    return this.current !== null;
  }

  /** The fencing token of the current term (the key's create_revision), or null when not leading. */
  get token(): number | null {
    return this.current;
  }

  /** Resolves once elected (at once if leading); rejects if `resign()` is called meanwhile. */
  campaign(): Promise<void> {
    if (this.current !== null) return Promise.resolve();
    this.resigned = false;
    this.campaigning ??= this.run().finally(() => {
      this.campaigning = null;
    });
    return this.campaigning;
  }

  /**
   * A transaction that applies `ops` only while the election key has our token (and `extraCompares`
   * hold). Resolves `succeeded: false` when only an extra compare failed; rejects with SKEIN_E_STORE
   * "fenced: no longer the leader" when the token is gone.
   */
  async fenced(ops: TxnOp[], extraCompares: Compare[] = []): Promise<TxnResult> {
    const token = this.lastToken;
    if (token === null) throw this.fencedError(null, 'never elected');
    const t = await this.client.txn({
      compare: [{ key: this.key, target: 'create', op: '=', value: token }, ...extraCompares],
      success: ops,
      failure: [{ type: 'get', key: this.key }],
    });
    if (t.succeeded) return t;
    const holder = t.results[0]?.kvs?.[0];
    if (holder?.createRevision === token) return { succeeded: false, revision: t.revision, results: [] };
    const why = holder === undefined ? 'the election key is gone' : `the election key was created again at revision ${holder.createRevision}`;
    this.depose(`a fenced write was refused: ${why}`);
    throw this.fencedError(holder ?? null, why, token);
  }

  /** Gives up leadership (the lease is revoked, so the key goes at once) or stops a campaign. */
  async resign(): Promise<void> {
    this.resigned = true;
    this.wake?.();
    const lease = this.lease;
    this.lease = null;
    this.depose('resigned');
    await lease?.close();
  }

  private async run(): Promise<void> {
    for (;;) {
      if (this.resigned) {
        // A lease granted while resign() ran would be kept alive for nothing.
        const lease = this.lease;
        this.lease = null;
        await lease?.close();
        throw new SkeinError('SKEIN_E_SHUTTING_DOWN', `election ${this.key}: the campaign was abandoned (resigned)`);
      }
      const lease = await this.ensureLease();
      let t: TxnResult;
      try {
        t = await this.client.txn({
          compare: [{ key: this.key, target: 'create', op: '=', value: 0 }],
          success: [{ type: 'put', key: this.key, value: this.value, lease: lease.id }],
          failure: [{ type: 'get', key: this.key }],
        });
      } catch (e) {
        // Outcome unknown or no member: the next attempt's failure branch shows whether we got it.
        this.logger?.warn({ err: e, key: this.key }, 'election: a campaign attempt failed; trying again');
        await this.sleep(1000);
        continue;
      }
      if (this.resigned) continue;
      const holder = t.results[0]?.kvs?.[0];
      if (t.succeeded) return this.elected(t.revision, lease, t.revision); // the put created the key
      if (holder === undefined) continue; // gone since: try again at once
      if (holder.lease === lease.id) return this.elected(holder.createRevision, lease, t.revision); // ours (a retried attempt)
      this.logger?.debug({ key: this.key, holder: holder.value }, 'election: the key is held; waiting for it to go');
      await this.waitForChange(holder, t.revision);
    }
  }

  private async ensureLease(): Promise<KeptLease> {
    if (this.lease?.alive) return this.lease;
    const lease = await KeptLease.grant(this.client, this.ttlSeconds, { clock: this.clock, ...(this.logger ? { logger: this.logger } : {}) });
    this.lease = lease;
    lease.once('lost', (why) => this.depose(`the lease was lost: ${why}`));
    return lease;
  }

  private elected(token: number, lease: KeptLease, revision: number): void {
    this.current = token;
    this.lastToken = token;
    const gone = (why: string) => this.depose(why);
    this.watch = this.client.watch(this.key, revision + 1, {
      onEvents: (events) => {
        for (const e of events) {
          if (e.type === 'del' && e.key === this.key) gone('the election key was deleted');
          else if (e.type === 'put' && e.kv.key === this.key && e.kv.createRevision !== token) gone(`the election key was created again at revision ${e.kv.createRevision}`);
        }
      },
      onReset: (kvs) => {
        const mine = kvs.find((kv) => kv.key === this.key);
        if (mine?.createRevision !== token) gone('the election key changed while the watch was away');
      },
    });
    this.logger?.info({ key: this.key, token, lease: lease.id }, 'election: elected');
    this.emit('elected', token);
  }

  private depose(why: string): void {
    if (this.current === null) return;
    this.current = null;
    this.watch?.close();
    this.watch = null;
    const lease = this.lease;
    this.lease = null;
    if (lease?.alive) void lease.close(); // the key (if still ours) goes with it
    this.logger?.warn({ key: this.key, why }, 'election: deposed');
    this.emit('deposed', why);
  }

  /** Waits until the key held by `holder` is deleted or replaced (or we resign, or our lease goes). */
  private waitForChange(holder: KeyValue, revision: number): Promise<void> {
    return new Promise((resolve) => {
      let w: { close(): void } | null = null;
      const done = () => {
        w?.close();
        this.lease?.off('lost', done);
        this.wake = null;
        resolve();
      };
      this.wake = done;
      this.lease?.once('lost', done);
      w = this.client.watch(this.key, revision + 1, {
        onEvents: (events) => {
          if (events.some((e) => (e.type === 'del' ? e.key : e.kv.key) === this.key)) done();
        },
        onReset: (kvs) => {
          if (kvs.find((kv) => kv.key === this.key)?.createRevision !== holder.createRevision) done();
        },
      });
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.clock.setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        t.cancel();
        this.wake = null;
        resolve();
      };
    });
  }

  private fencedError(holder: KeyValue | null, why: string, token?: number): SkeinError {
    const details: EtcdErrorDetails & { key: string; token: number | null; current: number | null } = {
      outcome: 'refused',
      key: this.key,
      token: token ?? null,
      current: holder?.createRevision ?? null,
    };
    return new SkeinError('SKEIN_E_STORE', `fenced: no longer the leader (${this.key}: ${why})`, { details });
  }
}
