/**
 * The control plane's tokens: the admin token (a file in the data dir) and the tokens it mints
 * (in the store under `tok/<name>`, so they survive a restart; the registry ignores those keys).
 * Only a SHA-256 hash of each token is kept; a presented token is hashed and looked up by its
 * hash, and the hashes compared in constant time. Expiry is read from the injected Clock.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { ADMIN_TOKEN_NAME, TOKEN_LIMITS, TOKEN_PATTERN, TOKEN_PREFIX, TOKEN_SECRET_BYTES, type TokenRequest, type TokenScope, type WireToken } from '../../api/auth.js';
import type { Clock } from '../../core/clock.js';
import { SkeinError, isSkeinError } from '../../core/errors.js';
import { MemoryStore, type Store } from '../store/store.js';

const KEY_PREFIX = 'tok/';

/** Who a verified token says the caller is. */
export interface Principal {
  readonly name: string;
  readonly scope: TokenScope;
  /** proxy tokens: the services whose instances it may register. */
  readonly services: readonly string[] | null;
}

interface TokenRecord extends Principal {
  /** SHA-256 of the token, hex. */
  readonly hash: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

/** A new token: 256 random bits, base64url, after its scope's prefix. */
export function newToken(scope: TokenScope): string {
  return TOKEN_PREFIX[scope] + randomBytes(TOKEN_SECRET_BYTES).toString('base64url');
}

export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

/** Why a presented token was not accepted (the caller answers 401 with it). */
export type VerifyResult = { ok: true; principal: Principal } | { ok: false; reason: string };

export class TokenStore {
  private readonly byName = new Map<string, TokenRecord>();
  private readonly byHash = new Map<string, TokenRecord>();
  private readonly admin: TokenRecord;

  private constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    adminToken: string,
  ) {
    this.admin = { name: ADMIN_TOKEN_NAME, scope: 'admin', services: null, hash: hashToken(adminToken), createdAt: 0, expiresAt: null };
  }

  /** Loads the minted tokens from the store; `adminToken` is the one of the data dir's file. */
  static async open(opts: { store: Store; clock: Clock; adminToken: string }): Promise<TokenStore> {
    if (!TOKEN_PATTERN.test(opts.adminToken) || !opts.adminToken.startsWith(TOKEN_PREFIX.admin)) {
      throw new SkeinError('SKEIN_E_VALIDATION', `the admin token must look like ${TOKEN_PREFIX.admin}<43 base64url characters>`, { field: 'adminToken' });
    }
    const ts = new TokenStore(opts.store, opts.clock, opts.adminToken);
    for (const [key, value] of await opts.store.load()) {
      if (!key.startsWith(KEY_PREFIX)) continue;
      ts.add(JSON.parse(value) as TokenRecord);
    }
    return ts;
  }

  /** Tokens in memory only, with an admin token nobody was told: every write is refused until tokens are minted through it. */
  static inMemory(clock: Clock): TokenStore {
    return new TokenStore(new MemoryStore(), clock, newToken('admin'));
  }

  /** Another control-plane replica minted (`value`) or revoked (null) the token of `key` (the etcd store's watch). */
  applyStored(key: string, value: string | null): void {
    if (!key.startsWith(KEY_PREFIX)) return;
    const old = this.byName.get(key.slice(KEY_PREFIX.length));
    if (old !== undefined) {
      this.byName.delete(old.name);
      this.byHash.delete(old.hash);
    }
    if (value !== null) this.add(JSON.parse(value) as TokenRecord);
  }

  private add(r: TokenRecord): void {
    this.byName.set(r.name, r);
    this.byHash.set(r.hash, r);
  }

  /** Mints a token; resolves with it (the only time it is seen) once it is on disk. */
  async mint(req: TokenRequest): Promise<{ token: string; record: WireToken }> {
    if (this.byName.has(req.name)) throw new SkeinError('SKEIN_E_CONFLICT', `a token named "${req.name}" exists: revoke it first (DELETE /v1/tokens/${req.name}) or pick another name`, { field: 'name' });
    if (this.byName.size >= TOKEN_LIMITS.maxTokens) throw new SkeinError('SKEIN_E_VALIDATION', `the control plane keeps at most ${TOKEN_LIMITS.maxTokens} tokens: revoke some first`, { field: 'name' });
    const token = newToken(req.scope);
    const now = this.clock.now();
    const r: TokenRecord = { name: req.name, scope: req.scope, services: req.services, hash: hashToken(token), createdAt: now, expiresAt: req.ttlMs === null ? null : now + req.ttlMs };
    try {
      // Only if no other control-plane replica minted one of that name meanwhile (the etcd store).
      await this.store.commit([{ type: 'put', key: KEY_PREFIX + r.name, value: JSON.stringify(r), expect: null }]);
    } catch (e) {
      if (!isSkeinError(e) || e.code !== 'SKEIN_E_CONCURRENT_CHANGE') throw e;
      throw new SkeinError('SKEIN_E_CONFLICT', `a token named "${req.name}" was just minted through another control-plane replica: revoke it first or pick another name`, { field: 'name' });
    }
    this.add(r);
    return { token, record: wire(r) };
  }

  /** Revokes a minted token (the admin token is revoked by replacing its file and restarting). */
  async revoke(name: string): Promise<WireToken> {
    if (name === ADMIN_TOKEN_NAME) {
      throw new SkeinError('SKEIN_E_VALIDATION', 'the admin token cannot be revoked through the API: delete the data dir\'s admin.token and restart the control plane for a new one', { field: 'name' });
    }
    const r = this.byName.get(name);
    if (r === undefined) throw new SkeinError('SKEIN_E_NOT_FOUND', `no token named "${name.slice(0, 80)}"`, { field: 'name' });
    await this.store.commit([{ type: 'del', key: KEY_PREFIX + name }]);
    this.byName.delete(name);
    this.byHash.delete(r.hash);
    return wire(r);
  }

  /** Every token, the admin token first; no secrets, no hashes. */
  list(): WireToken[] {
    return [wire(this.admin), ...[...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map(wire)];
  }

  /** Who a presented token belongs to, or why it is refused. */
  verify(token: string): VerifyResult {
    if (!TOKEN_PATTERN.test(token)) return { ok: false, reason: 'the token is malformed (a Skein token looks like skein_<scope>_<43 characters>)' };
    const hash = hashToken(token);
    const r = equalHash(this.admin.hash, hash) ? this.admin : this.byHash.get(hash);
    // The map is keyed by the hash of the secret: its lookup time says nothing about the secret;
    // the comparison below is the one that decides, in constant time.
    if (r === undefined || !equalHash(r.hash, hash)) return { ok: false, reason: 'the token is not known (never minted, or revoked)' };
    if (r.expiresAt !== null && this.clock.now() >= r.expiresAt) return { ok: false, reason: `the token "${r.name}" expired at ${new Date(r.expiresAt).toISOString()}` };
    return { ok: true, principal: { name: r.name, scope: r.scope, services: r.services } };
  }
}

function equalHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

function wire(r: TokenRecord): WireToken {
  return {
    name: r.name,
    scope: r.scope,
    services: r.services,
    createdAt: r.name === ADMIN_TOKEN_NAME && r.scope === 'admin' ? null : new Date(r.createdAt).toISOString(),
    expiresAt: r.expiresAt === null ? null : new Date(r.expiresAt).toISOString(),
  };
}
