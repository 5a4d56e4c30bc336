import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import pino from 'pino';
import { ManualClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { MemoryStore } from '../store/store.js';
import { JoinTokens, TOKEN_PREFIX } from './tokens.js';
import { CertificateAuthority } from './ca.js';
import type { SecurityEvent } from '../../api/ca.js';
import { createCsr, createIntermediate, createRoot, generateKeyPair } from '../../identity/certs.js';

const MIN = 60_000;
const code = (c: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof SkeinError, String(e));
  assert.equal(e.code, c, e.message);
  if (re !== undefined) assert.match(e.message, re);
  return true;
};

async function tokens(clock = new ManualClock(), store = new MemoryStore()) {
  return { clock, store, t: await JoinTokens.open(store, clock, await store.load()) };
}

test('a join token is 256 random bits in base64url, stored as its SHA-256 only', async () => {
  const { store, t } = await tokens();
  const { token, id, record } = await t.mint('proxy-1', ['web', 'api']);
  assert.match(token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(token, 'base64url').length, 32);
  const hash = createHash('sha256').update(token).digest('hex');
  assert.equal(id, hash.slice(0, 12));
  const kept = await store.load();
  assert.deepEqual(kept.map(([k]) => k), [TOKEN_PREFIX + hash]);
  assert.ok(!kept[0]?.[1].includes(token), 'the token itself is never stored');
  assert.deepEqual(JSON.parse(kept[0]?.[1] ?? ''), { proxy: 'proxy-1', services: ['web', 'api'], createdAt: 1_700_000_000_000, expiresAt: 1_700_000_000_000 + 10 * MIN, usedAt: null });
  assert.equal(record.expiresAt - record.createdAt, 10 * MIN);
  const other = await t.mint('proxy-1', ['web']);
  assert.notEqual(other.token, token);
});

test('a token is used once; a refused request leaves it unspent; two requests in flight cannot share it', async () => {
  const { t } = await tokens();
  const { token } = await t.mint('p', ['web', 'api']);
  const first = t.claim(token, ['web']);
  assert.throws(() => t.claim(token, ['web']), code('SKEIN_E_JOIN_TOKEN_USED', /by a request in flight/));
  first.release();
  const second = t.claim(token, ['web', 'api']);
  await second.spend();
  assert.throws(() => t.claim(token, ['web']), code('SKEIN_E_JOIN_TOKEN_USED', /already used at 2023-11-14T22:13:20.000Z/));
});

test('an expired token is refused at its expiry, on the injected clock', async () => {
  const { clock, t } = await tokens();
  const { token } = await t.mint('p', ['web'], 2 * MIN);
  clock.advance(2 * MIN - 1);
  t.claim(token, ['web']).release();
  clock.advance(1);
  assert.throws(() => t.claim(token, ['web']), code('SKEIN_E_JOIN_TOKEN_EXPIRED', /expired at 2023-11-14T22:15:20.000Z/));
});

test('a token is good only for the services it is bound to', async () => {
  const { t } = await tokens();
  const { token } = await t.mint('p', ['web']);
  assert.throws(() => t.claim(token, ['web', 'billing']), (e: unknown) => {
    code('SKEIN_E_JOIN_TOKEN_SERVICE', /bound to web, not to billing/)(e);
    assert.deepEqual((e as SkeinError).details, { token: (e as any).details.token, proxy: 'p', bound: ['web'], asked: ['billing'] });
    return true;
  });
  // The refusal did not spend it.
  t.claim(token, ['web']).release();
});

test('unknown and malformed tokens are refused alike', async () => {
  const { t } = await tokens();
  await t.mint('p', ['web']);
  assert.throws(() => t.claim('A'.repeat(43), ['web']), code('SKEIN_E_JOIN_TOKEN_UNKNOWN'));
  assert.throws(() => t.claim('', ['web']), code('SKEIN_E_JOIN_TOKEN_UNKNOWN'));
  assert.throws(() => t.claim('x'.repeat(5000), ['web']), code('SKEIN_E_JOIN_TOKEN_UNKNOWN'));
});

test('tokens survive a restart over the same store; spent ones stay spent; old ones are forgotten after a day', async () => {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const a = await tokens(clock, store);
  const live = await a.t.mint('p', ['web']);
  const spent = await a.t.mint('p', ['api']);
  await a.t.claim(spent.token, ['api']).spend();
  const b = await tokens(clock, store);
  b.t.claim(live.token, ['web']).release();
  assert.throws(() => b.t.claim(spent.token, ['api']), code('SKEIN_E_JOIN_TOKEN_USED'));
  clock.advance(10 * MIN + 24 * 60 * MIN);
  await b.t.mint('q', ['web']);
  assert.equal(b.t.size, 1);
  assert.equal((await store.load()).length, 1);
  assert.throws(() => b.t.claim(spent.token, ['api']), code('SKEIN_E_JOIN_TOKEN_UNKNOWN'));
});

test('the CA keeps its root across a restart on the same store, and replaces a worn intermediate', async () => {
  const clock = new ManualClock(Date.parse('2030-01-01T00:00:00Z'));
  const store = new MemoryStore();
  const logger = pino({ level: 'silent' });
  const events: SecurityEvent[] = [];
  const open = () => CertificateAuthority.open({ store, clock, trustDomain: 'shop', leafLifetimeMs: 24 * 60 * MIN, operator: null, logger, onSecurityEvent: (e) => events.push(e) });
  const first = await open();
  const again = await open();
  assert.deepEqual(again.roots, first.roots);
  assert.equal(again.issuerCert.serial, first.issuerCert.serial);
  assert.deepEqual((await store.load()).map(([k]) => k), ['ca/issuer', 'ca/root']);
  // 330 days on (past 90% of the intermediate's year): a restart makes a new intermediate under the same root.
  clock.advance(330 * 24 * 60 * MIN);
  const later = await open();
  assert.deepEqual(later.roots, first.roots);
  assert.notEqual(later.issuerCert.serial, first.issuerCert.serial);
  await assert.rejects(CertificateAuthority.open({ store, clock, trustDomain: 'other', leafLifetimeMs: 60_000, operator: null, logger }), code('SKEIN_E_BAD_CA', /trust domain "shop", not "other"/));
  await assert.rejects(CertificateAuthority.open({ store, clock, trustDomain: 'shop', leafLifetimeMs: 59_999, operator: null, logger }), code('SKEIN_E_VALIDATION', /from 60000 ms/));
  // Issuing follows the injected clock: the leaf is back-dated 20 s and lives 24 h.
  const leaf = await later.issue(later.identityOf('web'), await createCsr((await generateKeyPair()).privateKeyPem));
  assert.equal(leaf.identity, 'spiffe://shop/ns/default/sa/web');
  assert.equal(leaf.notBefore.getTime(), clock.now() - 20_000);
  assert.equal(leaf.notAfter.getTime(), clock.now() + 24 * 60 * MIN);
  later.securityEvent({ type: 'token-minted', proxy: 'p' });
  assert.deepEqual(events.at(-1), { time: new Date(clock.now()).toISOString(), type: 'token-minted', proxy: 'p' });
});

test('an operator intermediate that has expired: the CA starts and refuses to issue (SKEIN_E_CA_UNAVAILABLE)', async () => {
  const clock = new ManualClock(Date.parse('2030-01-01T00:00:00Z'));
  const root = await createRoot('shop', { now: new Date(clock.now() - 10 * 24 * 60 * MIN), lifetimeMs: 365 * 24 * 60 * MIN });
  const inter = await createIntermediate(root, { now: new Date(clock.now() - 10 * 24 * 60 * MIN), lifetimeMs: 24 * 60 * MIN });
  const ca = await CertificateAuthority.open({ store: new MemoryStore(), clock, trustDomain: 'shop', leafLifetimeMs: 60_000, operator: { certPem: inter.certPem, keyPem: inter.keyPem, chainPem: [root.certPem] }, logger: pino({ level: 'silent' }) });
  assert.throws(() => ca.assertCanIssue(), code('SKEIN_E_CA_UNAVAILABLE', /expired at 2029-12-23T00:00:00.000Z/));
  await assert.rejects(ca.issue(ca.identityOf('web'), await createCsr((await generateKeyPair()).privateKeyPem)), code('SKEIN_E_CA_UNAVAILABLE'));
  // A foreign trust domain in the operator's certificate is named.
  await assert.rejects(
    CertificateAuthority.open({ store: new MemoryStore(), clock, trustDomain: 'skein', leafLifetimeMs: 60_000, operator: { certPem: root.certPem, keyPem: root.keyPem, chainPem: [] }, logger: pino({ level: 'silent' }) }),
    code('SKEIN_E_BAD_CA', /trust domain "shop".*--trust-domain shop/),
  );
});
