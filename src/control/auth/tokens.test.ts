import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { MemoryStore } from '../store/store.js';
import { parseTokenRequest } from '../../api/auth.js';
import { TokenStore, hashToken, newToken } from './tokens.js';

const ADMIN = newToken('admin');

async function open(store = new MemoryStore(), clock = new ManualClock()) {
  return { store, clock, tokens: await TokenStore.open({ store, clock, adminToken: ADMIN }) };
}

test('a new token: its scope prefix and 256 random bits in base64url', () => {
  const t = newToken('automation');
  assert.match(t, /^skein_aut_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(t.slice('skein_aut_'.length), 'base64url').length, 32);
  assert.notEqual(newToken('automation'), t);
});

test('the admin token verifies as admin; a token that was never minted does not', async () => {
  const { tokens } = await open();
  assert.deepEqual(tokens.verify(ADMIN), { ok: true, principal: { name: 'admin', scope: 'admin', services: null } });
  assert.deepEqual(tokens.verify(newToken('admin')), { ok: false, reason: 'the token is not known (never minted, or revoked)' });
  const bad = tokens.verify('letmein');
  assert.equal(bad.ok, false);
  assert.match((bad as { reason: string }).reason, /malformed/);
});

test('a minted token is stored as a hash only, survives a reopen of the store, and is revoked', async () => {
  const { store, tokens } = await open();
  const { token, record } = await tokens.mint(parseTokenRequest({ scope: 'proxy', name: 'edge-1', services: ['web', 'api', 'web'] }));
  assert.match(token, /^skein_prx_/);
  assert.deepEqual(record.services, ['api', 'web']);
  const stored = await store.load();
  assert.deepEqual(stored.map(([k]) => k), ['tok/edge-1']);
  const value = (stored[0] as [string, string])[1];
  assert.ok(!value.includes(token.slice(10)), 'the secret is not stored');
  assert.equal(JSON.parse(value).hash, hashToken(token));

  const again = await TokenStore.open({ store, clock: new ManualClock(), adminToken: ADMIN });
  assert.deepEqual(again.verify(token), { ok: true, principal: { name: 'edge-1', scope: 'proxy', services: ['api', 'web'] } });
  assert.deepEqual(again.list().map((t) => [t.name, t.scope]), [['admin', 'admin'], ['edge-1', 'proxy']]);

  await again.revoke('edge-1');
  assert.deepEqual(again.verify(token), { ok: false, reason: 'the token is not known (never minted, or revoked)' });
  assert.deepEqual(await store.load(), []);
});

test('a token with a ttl expires on the clock', async () => {
  const { tokens, clock } = await open();
  const { token, record } = await tokens.mint(parseTokenRequest({ scope: 'read', name: 'ci-read', ttl: '10m' }));
  assert.equal(record.expiresAt, new Date(clock.now() + 600_000).toISOString());
  clock.advance(599_999);
  assert.equal(tokens.verify(token).ok, true);
  clock.advance(1);
  assert.deepEqual(tokens.verify(token), { ok: false, reason: `the token "ci-read" expired at ${record.expiresAt}` });
});

test('names are unique, the admin token is neither minted nor revoked through the API', async () => {
  const { tokens } = await open();
  await tokens.mint(parseTokenRequest({ scope: 'read', name: 'x' }));
  await assert.rejects(tokens.mint(parseTokenRequest({ scope: 'tap', name: 'x' })), (e: SkeinError) => e.code === 'SKEIN_E_CONFLICT' && e.field === 'name');
  await assert.rejects(tokens.revoke('admin'), (e: SkeinError) => e.code === 'SKEIN_E_VALIDATION' && /admin\.token/.test(e.message));
  await assert.rejects(tokens.revoke('nope'), (e: SkeinError) => e.code === 'SKEIN_E_NOT_FOUND');
});

test('POST /v1/tokens bodies: each mistake names its field', () => {
  const cases: Array<[unknown, string, RegExp]> = [
    [[], 'body', /object/],
    [{ scope: 'admin', name: 'a' }, 'scope', /cannot be minted/],
    [{ scope: 'root', name: 'a' }, 'scope', /"automation", "proxy", "read" or "tap"/],
    [{ scope: 'read', name: 'Bad_Name' }, 'name', /DNS label/],
    [{ scope: 'read', name: 'admin' }, 'name', /admin token/],
    [{ scope: 'proxy', name: 'p' }, 'services', /required/],
    [{ scope: 'proxy', name: 'p', services: [] }, 'services', /1 to 1000/],
    [{ scope: 'proxy', name: 'p', services: ['ok', 'NO'] }, 'services[1]', /DNS label/],
    [{ scope: 'read', name: 'r', services: ['web'] }, 'services', /proxy tokens only/],
    [{ scope: 'read', name: 'r', ttl: '0s' }, 'ttl', /from 1s/],
    [{ scope: 'read', name: 'r', ttl: 5 }, 'ttl', /duration/],
    [{ scope: 'read', name: 'r', owner: 'me' }, 'owner', /not a known field/],
  ];
  for (const [body, field, message] of cases) {
    assert.throws(() => parseTokenRequest(body), (e: SkeinError) => e.code === 'SKEIN_E_VALIDATION' && e.field === field && message.test(e.message), JSON.stringify(body));
  }
});
