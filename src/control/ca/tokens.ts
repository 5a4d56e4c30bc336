/**
 * Join tokens: how a proxy proves, once, which services it serves. A token is 256 random bits
 * (base64url) shown once; the store keeps only its SHA-256 hash with the proxy id, the services it
 * is bound to and its expiry (10 minutes by default, on the injected Clock), so tokens survive a
 * restart and a leaked data dir leaks no usable token. A token is spent by the first request that
 * is issued certificates; a refused request (a bad CSR, a service it is not bound to) leaves it
 * unspent. Spent and expired tokens are kept for CA_DEFAULTS.tokenRetainMs past their expiry, so
 * that a replay is told "already used" rather than "unknown", then forgotten.
 */
import { createHash, randomBytes } from 'node:crypto';
import { CA_DEFAULTS } from '../../api/ca.js';
import type { Clock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import type { Store } from '../store/store.js';

export const TOKEN_PREFIX = 'ca/tokens/';

export interface TokenRecord {
  readonly proxy: string;
  readonly services: readonly string[];
  /** ms since the epoch. */
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly usedAt: number | null;
}

/** A token checked and held for one request: spend it once certificates are issued, or release it. */
export interface TokenClaim {
  /** The first 12 hex digits of the token's hash: names it in logs and events (never the token). */
  readonly id: string;
  readonly record: TokenRecord;
  spend(): Promise<void>;
  release(): void;
}

const hashOf = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export class JoinTokens {
  private readonly byHash = new Map<string, TokenRecord>();
  /** Hashes held by a request in flight (so two requests cannot spend one token). */
  private readonly held = new Set<string>();

  private constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /** The tokens kept in the store (`ca/tokens/<sha256>`). */
  static async open(store: Store, clock: Clock, entries: Array<[string, string]>): Promise<JoinTokens> {
    const t = new JoinTokens(store, clock);
    for (const [key, value] of entries) {
      if (!key.startsWith(TOKEN_PREFIX)) continue;
      t.byHash.set(key.slice(TOKEN_PREFIX.length), JSON.parse(value) as TokenRecord);
    }
    return t;
  }

  get size(): number {
    return this.byHash.size;
  }

  /** A new token for `proxy`, bound to `services`; the token itself is returned once and never stored. */
  async mint(proxy: string, services: readonly string[], ttlMs: number = CA_DEFAULTS.tokenTtlMs): Promise<{ token: string; id: string; record: TokenRecord }> {
    const token = randomBytes(CA_DEFAULTS.tokenBits / 8).toString('base64url');
    const hash = hashOf(token);
    const now = this.clock.now();
    const record: TokenRecord = { proxy, services: [...services], createdAt: now, expiresAt: now + ttlMs, usedAt: null };
    const forget = [...this.byHash.entries()].filter(([h, r]) => r.expiresAt + CA_DEFAULTS.tokenRetainMs <= now && !this.held.has(h)).map(([h]) => h);
    this.byHash.set(hash, record);
    for (const h of forget) this.byHash.delete(h);
    await this.store.commit([{ type: 'put', key: TOKEN_PREFIX + hash, value: JSON.stringify(record) }, ...forget.map((h) => ({ type: 'del' as const, key: TOKEN_PREFIX + h }))]);
    return { token, id: hash.slice(0, 12), record };
  }

  /**
   * Checks `token` for a request for `services` and holds it: unknown, already spent, held by a
   * request in flight, expired, or not bound to one of the services are refused, each with its code.
   */
  claim(token: string, services: readonly string[]): TokenClaim {
    const hash = hashOf(token);
    const id = hash.slice(0, 12);
    const record = TOKEN_SHAPE.test(token) ? this.byHash.get(hash) : undefined;
    if (record === undefined) throw new SkeinError('SKEIN_E_JOIN_TOKEN_UNKNOWN', 'the join token is not one this control plane minted (or it expired long ago): mint a new one with `skein ca token`', { details: { token: id } });
    if (record.usedAt !== null || this.held.has(hash)) {
      const when = record.usedAt === null ? 'by a request in flight' : `at ${new Date(record.usedAt).toISOString()}`;
      throw new SkeinError('SKEIN_E_JOIN_TOKEN_USED', `the join token was already used ${when}: a join token is used once (proxy ${record.proxy} renews with its certificate)`, { details: { token: id, proxy: record.proxy } });
    }
    const now = this.clock.now();
    if (now >= record.expiresAt) {
      throw new SkeinError('SKEIN_E_JOIN_TOKEN_EXPIRED', `the join token expired at ${new Date(record.expiresAt).toISOString()}: mint a new one with \`skein ca token\``, { details: { token: id, proxy: record.proxy } });
    }
    const foreign = services.filter((s) => !record.services.includes(s));
    if (foreign.length > 0) {
      throw new SkeinError('SKEIN_E_JOIN_TOKEN_SERVICE', `the join token of proxy ${record.proxy} is bound to ${record.services.join(', ')}, not to ${foreign.join(', ')}`, {
        field: 'service',
        details: { token: id, proxy: record.proxy, bound: record.services, asked: foreign },
      });
    }
    this.held.add(hash);
    let done = false;
    return {
      id,
      record,
      spend: async () => {
        if (done) return;
        done = true;
        const spent: TokenRecord = { ...record, usedAt: this.clock.now() };
        this.byHash.set(hash, spent);
        try {
          // Only while it is unspent in the store: another replica may spend it at the same time.
          await this.store.commit([{ type: 'put', key: TOKEN_PREFIX + hash, value: JSON.stringify(spent), expect: JSON.stringify(record) }]);
        } catch (e) {
          if ((e as SkeinError).code !== 'SKEIN_E_CONCURRENT_CHANGE') throw e;
          throw new SkeinError('SKEIN_E_JOIN_TOKEN_USED', 'the join token was used at the same moment through another control-plane replica: a join token is used once', { details: { token: id, proxy: record.proxy } });
        } finally {
          this.held.delete(hash);
        }
      },
      release: () => {
        if (done) return;
        done = true;
        this.held.delete(hash);
      },
    };
  }

  /** Another control-plane replica minted, spent (`value`) or forgot (null) the join token of `key` (the etcd store's watch). */
  applyStored(key: string, value: string | null): void {
    if (!key.startsWith(TOKEN_PREFIX)) return;
    const hash = key.slice(TOKEN_PREFIX.length);
    if (value === null) this.byHash.delete(hash);
    else this.byHash.set(hash, JSON.parse(value) as TokenRecord);
  }

  /** The token's record by its hash (tests and status). */
  peek(token: string): TokenRecord | undefined {
    return this.byHash.get(hashOf(token));
  }
}
