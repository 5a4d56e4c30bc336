/**
 * The etcd store (`skein control --store etcd --etcd URL,...`; docs/operations.md): several
 * control-plane replicas share one etcd cluster, each serving reads, writes and watches.
 *
 * Layout, under the prefix (default `skein/`):
 *
 *   svc/<service>          a Service resource (the registry's)
 *   inst/<service>/<id>    an instance record; its revisions are the key's (the registry's)
 *   hb/<service>/<id>      a TTL instance's heartbeat, bound to an etcd lease of its TTL
 *   proxies/<id>           a proxy's announcement, bound to a lease of the directory's TTL
 *   tok/<name>             a minted API token (its hash)
 *   ca/...                 the CA's root, issuer, rotation and join tokens
 *   leader                 the election key of the replica that runs the once-only duties
 *
 * Each replica reads everything once (`open`), then follows one watch on the prefix from the
 * next revision: registry keys go to the registry (`applyChanges`, or `reset` after a
 * compaction), heartbeat keys to the leader's health manager, token keys to the token store.
 * Writes go to etcd as transactions (`registryLog`); the elected leader's writes (health
 * status) are fenced on its election key (election.ts).
 *
 * The elected replica runs the duties that must run once: health checks, TTL expiry (etcd's
 * leases are the TTLs: a new leader loses none) and compaction of etcd's history every
 * `compactEveryMs` to the revision it saw one period earlier (what Kubernetes' API server does),
 * so a watch that was away for less than a period resumes without a re-list.
 */
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import type { HealthStatus } from '../../api/types.js';
import type { Guard, Registry, RegistryLog, Revision, StoredChange } from '../registry/registry.js';
import { keyOf, type HealthManager, type HeartbeatReport, type Heartbeats } from '../health/manager.js';
import type { Store, StoreOp } from './store.js';
import { EtcdClient, type Compare, type KeyValue, type TxnOp, type WatchEvent } from './etcd/client.js';
import { Election } from './etcd/election.js';
import { ETCD_DEFAULTS } from '../../api/etcd.js';

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  readonly prefix?: string;
  /** This replica's name in the election key (for people: who leads). */
  readonly replica: string;
  readonly clock: Clock;
  readonly logger?: Logger;
  readonly electionTtlSeconds?: number;
  readonly compactEveryMs?: number;
  /** Passed to the client (tests shorten it with etcd's progress notifications). */
  readonly watchIdleMs?: number;
}

/** What the watch feeds besides the registry. */
export interface EtcdFollowers {
  readonly registry: Registry;
  /** The leader's health manager (null while this replica does not lead). */
  health(): HealthManager | null;
  /** A key of the tokens or the CA changed (`tok/`, `ca/`): its value, or null when deleted. */
  kv?(key: string, value: string | null): void;
  /** A proxy announced itself (its announcement), or its lease ran out (null). */
  proxy?(id: string, value: string | null): void;
  /** After a compaction: every proxy the store holds now (the others are gone). */
  proxiesReset?(present: ReadonlyArray<[string, string]>): void;
  /** The watch broke (`why`; it is being resumed) or is watching again (null). */
  connection?(broken: string | null): void;
}

const HB = 'hb/';
const PROXIES = 'proxies/';
/** The election key (relative to the prefix): it holds the leader's `ElectionHolder`. */
const LEADER = 'leader';

/** What the election key holds: who leads, and where the other replicas reach it (null: unknown). */
export interface ElectionHolder {
  readonly replica: string;
  readonly url: string | null;
}

/** The election key's value; a bare name (what replicas before this format wrote) has no URL. */
export function parseHolder(value: string): ElectionHolder {
  try {
    const v = JSON.parse(value) as Partial<ElectionHolder>;
    if (typeof v === 'object' && v !== null && typeof v.replica === 'string') return { replica: v.replica, url: typeof v.url === 'string' ? v.url : null };
  } catch {
    // a bare name
  }
  return { replica: value, url: null };
}

/** Where a shared proxy directory keeps the announcements (src/control/proxies.ts). */
export interface SharedProxies {
  announce(id: string, value: string, ttlMs: number): Promise<void>;
  withdraw(id: string): Promise<void>;
}
const hbKey = (service: string, id: string) => `${HB}${service}/${id}`;

export class EtcdStore {
  readonly kind = 'etcd';
  readonly client: EtcdClient;
  readonly election: Election;
  readonly prefix: string;
  private readonly clock: Clock;
  private readonly logger: Logger | undefined;
  private watch: { close(): void } | null = null;
  /** Heartbeat keys that live in etcd (keyOf form). */
  private readonly beating = new Set<string>();
  /** The lease this replica holds per leased key (heartbeats, proxies), and the value it wrote (a new value is a new put). */
  private readonly leases = new Map<string, { lease: string; value: string }>();
  private compactTimer: TimerHandle | null = null;
  private closed = false;
  /** The other keys (tokens, the CA) as this replica last read them: after a compaction, those gone are deletes. */
  private readonly kvKeys = new Set<string>();
  /** Who holds the election key, as this replica last read it (null: nobody). */
  private holder: ElectionHolder | null = null;

  private constructor(private readonly o: EtcdStoreOptions) {
    this.prefix = o.prefix ?? ETCD_DEFAULTS.prefix;
    this.clock = o.clock;
    this.logger = o.logger;
    this.client = new EtcdClient({
      endpoints: [...o.endpoints],
      requestTimeoutMs: ETCD_DEFAULTS.requestTimeoutMs,
      clock: o.clock,
      ...(o.logger === undefined ? {} : { logger: o.logger }),
      ...(o.watchIdleMs === undefined ? {} : { watchIdleMs: o.watchIdleMs }),
    });
    this.election = new Election({
      client: this.client,
      key: `${this.prefix}leader`,
      value: o.replica,
      ttlSeconds: o.electionTtlSeconds ?? ETCD_DEFAULTS.electionTtlSeconds,
      clock: o.clock,
      ...(o.logger === undefined ? {} : { logger: o.logger }),
    });
  }

  /** Connects and reads everything under the prefix: the state at `revision`. */
  static async open(o: EtcdStoreOptions): Promise<{ store: EtcdStore; entries: StoredChange[]; revision: Revision }> {
    const prefix = o.prefix ?? ETCD_DEFAULTS.prefix;
    if (prefix === '' || !prefix.endsWith('/')) throw new SkeinError('SKEIN_E_USAGE', `--etcd-prefix must end with "/", got "${prefix}"`, { field: '--etcd-prefix' });
    const store = new EtcdStore(o);
    try {
      const r = await store.client.list(prefix);
      const entries = r.kvs.map((kv) => store.stored(kv));
      for (const e of entries) if (e.key.startsWith(HB)) store.beating.add(hbName(e.key));
      store.holder = heldBy(entries);
      for (const e of entries) if (isKvKey(e.key)) store.kvKeys.add(e.key);
      return { store, entries, revision: r.revision };
    } catch (e) {
      await store.client.close();
      throw new SkeinError('SKEIN_E_STORE', `cannot read the store from etcd at ${o.endpoints.join(', ')}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The proxies' announcements in a listing: [id, announcement]. */
  static proxiesIn(entries: readonly StoredChange[]): Array<[string, string]> {
    return entries.flatMap((e) => (e.type === 'put' && e.key.startsWith(PROXIES) ? [[e.key.slice(PROXIES.length), e.value] as [string, string]] : []));
  }

  private stored(kv: KeyValue): Extract<StoredChange, { type: 'put' }> {
    return { type: 'put', key: kv.key.slice(this.prefix.length), value: kv.value, createRevision: kv.createRevision, modRevision: kv.modRevision };
  }

  private op(op: StoreOp): TxnOp {
    return op.type === 'put' ? { type: 'put', key: this.prefix + op.key, value: op.value } : { type: 'del', key: this.prefix + op.key };
  }

  /** Where the registry writes: a transaction guarded by the revisions it read; fenced ones on the election. */
  registryLog(): RegistryLog {
    return {
      write: async (ops: StoreOp[], guards: readonly Guard[], fenced = false) => {
        const compare: Compare[] = guards.map((g) => ({ key: this.prefix + g.key, target: 'mod', op: '=', value: g.modRevision }));
        const success = ops.map((op) => this.op(op));
        const t = fenced ? await this.election.fenced(success, compare) : await this.client.txn({ compare, success });
        return { ok: t.succeeded, revision: t.revision };
      },
    };
  }

  /**
   * Keys that are not the registry's (tokens, the CA) as a plain Store: load reads them, commit
   * writes them in one transaction. Their changes by other replicas reach this one through the
   * watch (`EtcdFollowers.token`).
   */
  kv(): Store {
    return {
      kind: 'etcd',
      // Only the tokens' and the CA's keys (the registry's were read once by open: a fleet is large).
      load: async () => {
        const parts = await Promise.all(KV_PREFIXES.map((p) => this.client.range(this.prefix + p, { prefix: true })));
        return parts.flatMap((r) => r.kvs.map((kv) => [kv.key.slice(this.prefix.length), kv.value] as [string, string])).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      },
      commit: async (ops) => {
        const compare: Compare[] = [];
        for (const op of ops) {
          if (op.type !== 'put' || op.expect === undefined) continue;
          compare.push(op.expect === null ? { key: this.prefix + op.key, target: 'create', op: '=', value: 0 } : { key: this.prefix + op.key, target: 'value', op: '=', value: op.expect });
        }
        const t = await this.client.txn({ compare, success: ops.map((op) => this.op(op)) });
        if (!t.succeeded) throw new SkeinError('SKEIN_E_CONCURRENT_CHANGE', `${ops.map((o) => o.key).join(', ')} changed through another control-plane replica at the same time`);
      },
      close: async () => undefined,
    };
  }

  /** Heartbeats as leases: what the health manager of every replica sends a heartbeat to. */
  heartbeats(): Heartbeats {
    return {
      beat: (service, id, ttlMs, report) => this.beat(service, id, ttlMs, report),
      alive: () => this.beating,
    };
  }

  private async beat(service: string, id: string, ttlMs: number, report: HeartbeatReport): Promise<void> {
    await this.leased(hbKey(service, id), JSON.stringify({ status: report.status ?? 'healthy', reason: report.reason ?? null }), ttlMs);
  }

  /**
   * A key that lives while it is renewed (a heartbeat, a proxy's announcement), bound to an etcd
   * lease of `ttlMs`: the same value again only keeps the lease alive (no write, no revision); a
   * new value, or a lease that expired, is written with a new lease, and every replica hears of it.
   */
  private async leased(key: string, value: string, ttlMs: number): Promise<void> {
    const held = this.leases.get(key);
    if (held !== undefined && held.value === value && (await this.client.leaseKeepAliveOnce(held.lease)) > 0) return;
    const g = await this.client.leaseGrant(Math.max(1, Math.ceil(ttlMs / 1000)));
    await this.client.put(this.prefix + key, value, { lease: g.id });
    this.leases.set(key, { lease: g.id, value });
  }

  /** The proxies' announcements as leased keys (`proxies/<id>`): every replica knows every proxy. */
  proxyDirectory(): SharedProxies {
    return {
      announce: (id, value, ttlMs) => this.leased(`${PROXIES}${id}`, value, ttlMs),
      withdraw: async (id) => {
        this.leases.delete(`${PROXIES}${id}`);
        await this.client.delete(`${this.prefix}${PROXIES}${id}`);
      },
    };
  }

  /** Follows every change after `revision`, from every replica, into `f`. */
  follow(revision: Revision, f: EtcdFollowers): void {
    this.watch = this.client.watch(this.prefix, revision + 1, {
      onEvents: (events, rev) => this.apply(events, rev, f),
      onReset: (kvs, rev) => {
        const entries = kvs.map((kv) => this.stored(kv));
        const was = new Set(this.beating);
        this.beating.clear();
        for (const e of entries) if (e.key.startsWith(HB)) this.beating.add(hbName(e.key));
        this.holder = heldBy(entries);
        f.registry.reset(entries, rev);
        const health = f.health();
        for (const k of was) if (!this.beating.has(k)) health?.beatExpired(...splitName(k));
        f.proxiesReset?.(entries.filter((e) => e.key.startsWith(PROXIES)).map((e) => [e.key.slice(PROXIES.length), e.value]));
        // Tokens and CA keys: what is there now, and a delete for each one that went meanwhile (a revoked token, a rotation's end).
        const gone = new Set(this.kvKeys);
        this.kvKeys.clear();
        for (const e of entries) {
          if (!isKvKey(e.key)) continue;
          this.kvKeys.add(e.key);
          gone.delete(e.key);
          f.kv?.(e.key, e.value);
        }
        for (const key of gone) f.kv?.(key, null);
        this.logger?.warn({ revision: rev }, 'the store was compacted past this replica\'s watch: read it again');
      },
      onProgress: (rev) => f.registry.applyChanges([], rev),
      onDisconnect: (why) => {
        this.logger?.warn({ why }, 'the watch on etcd broke: resuming on another member');
        f.connection?.(why);
      },
      onConnect: () => f.connection?.(null),
    });
  }

  private apply(events: readonly WatchEvent[], revision: Revision, f: EtcdFollowers): void {
    const changes: StoredChange[] = [];
    const beats: Array<[string, HeartbeatReport | null]> = [];
    for (const e of events) {
      const key = (e.type === 'put' ? e.kv.key : e.key).slice(this.prefix.length);
      if (isRegistryKey(key)) {
        changes.push(e.type === 'put' ? this.stored(e.kv) : { type: 'del', key, modRevision: e.modRevision });
      } else if (key === LEADER) {
        this.holder = e.type === 'put' ? parseHolder(e.kv.value) : null;
      } else if (key.startsWith(PROXIES)) {
        f.proxy?.(key.slice(PROXIES.length), e.type === 'put' ? e.kv.value : null);
      } else if (key.startsWith(HB)) {
        const name = hbName(key);
        if (e.type === 'put') this.beating.add(name);
        else this.beating.delete(name);
        beats.push([name, e.type === 'put' ? parseReport(e.kv.value) : null]);
      } else {
        if (e.type === 'put') this.kvKeys.add(key);
        else this.kvKeys.delete(key);
        f.kv?.(key, e.type === 'put' ? e.kv.value : null);
      }
    }
    f.registry.applyChanges(changes, revision);
    const health = f.health();
    if (health === null) return;
    for (const [name, report] of beats) {
      const [service, id] = splitName(name);
      if (report === null) health.beatExpired(service, id);
      else health.beatSeen(service, id, report);
    }
  }

  /** Who leads, as the watch last said (null: nobody holds the election key now). */
  get leader(): ElectionHolder | null {
    return this.holder;
  }

  /**
   * Campaigns for the duties; `lead(true)` when elected, `lead(false)` when deposed (then it
   * campaigns again). Compaction runs while it leads. `url`: where the other replicas reach this
   * one (what they forward the leader's reads to), kept in the election key.
   */
  lead(url: string | null, onChange: (leading: boolean) => void): void {
    this.election.describe(JSON.stringify({ replica: this.o.replica, url } satisfies ElectionHolder));
    this.election.on('elected', (token) => {
      this.logger?.info({ token }, 'elected: this replica runs the health checks, TTL expiry and compaction');
      this.startCompaction();
      onChange(true);
    });
    this.election.on('deposed', (why) => {
      this.logger?.warn({ why }, 'no longer the leader');
      this.stopCompaction();
      onChange(false);
      if (!this.closed) this.campaign();
    });
    this.campaign();
  }

  private campaign(): void {
    this.election.campaign().catch((e: unknown) => {
      if (this.closed) return;
      this.logger?.warn({ err: (e as Error).message }, 'the campaign for the duties failed: trying again');
      this.clock.setTimeout(() => this.campaign(), 1000);
    });
  }

  private startCompaction(): void {
    const every = this.o.compactEveryMs ?? ETCD_DEFAULTS.compactEveryMs;
    let previous: Revision | null = null;
    this.compactTimer = this.clock.setInterval(() => {
      void (async () => {
        try {
          const s = await this.client.status();
          if (previous !== null && previous > 0) await this.client.compact(previous);
          previous = s.revision;
        } catch (e) {
          this.logger?.warn({ err: (e as Error).message }, 'compaction of the store failed (tried again next period)');
        }
      })();
    }, every);
  }

  private stopCompaction(): void {
    this.compactTimer?.cancel();
    this.compactTimer = null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopCompaction();
    this.watch?.close();
    await this.election.resign().catch(() => undefined);
    await this.client.close();
  }
}

function heldBy(entries: readonly StoredChange[]): ElectionHolder | null {
  const e = entries.find((x) => x.key === LEADER);
  return e?.type === 'put' ? parseHolder(e.value) : null;
}

/** A key of the tokens or the CA (what `EtcdFollowers.kv` hears of): none of the others. */
const isKvKey = (key: string) => !isRegistryKey(key) && !key.startsWith(HB) && !key.startsWith(PROXIES) && key !== LEADER;

const isRegistryKey = (key: string) => key.startsWith('svc/') || key.startsWith('inst/');
/** The keys of the tokens and the CA: what `kv()` holds. */
const KV_PREFIXES = ['tok/', 'ca/'] as const;

/** `hb/<service>/<id>` -> keyOf(service, id). */
function hbName(key: string): string {
  const rest = key.slice(HB.length);
  const slash = rest.indexOf('/');
  return keyOf(rest.slice(0, slash), rest.slice(slash + 1));
}

function splitName(name: string): [string, string] {
  const i = name.indexOf('\u0000');
  return [name.slice(0, i), name.slice(i + 1)];
}

function parseReport(value: string): HeartbeatReport {
  try {
    const v = JSON.parse(value) as { status?: HealthStatus; reason?: string | null };
    return { ...(v.status === undefined ? {} : { status: v.status }), ...(v.reason == null ? {} : { reason: v.reason }) };
  } catch {
    return {};
  }
}
