/**
 * Root rotation on a manual Clock: the CA (an in-memory store) with a directory of announced
 * proxies, each step's precondition, --force, out-of-order steps, a restart mid-rotation, and the
 * security events and subscribers each step reaches.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import pino from 'pino';
import { ManualClock } from '../../core/clock.js';
import { SkeinError } from '../../core/errors.js';
import { MemoryStore } from '../store/store.js';
import { CertificateAuthority, rotationMeshEvent, type CaChange } from './ca.js';
import { ProxyDirectory, PROXY_TTL_MS, parseAnnouncement } from '../proxies.js';
import { certFingerprint, type SecurityEvent } from '../../api/ca.js';
import { createCsr, createRoot, generateKeyPair } from '../../identity/certs.js';

const refused = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof SkeinError, String(e));
  assert.equal(e.code, 'SKEIN_E_CA_ROTATION', e.message);
  assert.equal(e.status, 409);
  assert.match(e.message, re);
  return true;
};

async function setup(clock = new ManualClock(), store = new MemoryStore()) {
  const events: SecurityEvent[] = [];
  const ca = await CertificateAuthority.open({ store, clock, trustDomain: 'shop', leafLifetimeMs: 60_000, operator: null, logger: pino({ level: 'silent' }), onSecurityEvent: (e) => events.push(e) });
  const changes: CaChange[] = [];
  ca.subscribe((c) => changes.push(c));
  return { clock, store, ca, events, changes, dir: new ProxyDirectory(clock) };
}

/** What a proxy announces of its workload `web-1`: the roots it trusts and the root its leaf chains to. */
function announce(dir: ProxyDirectory, id: string, roots: string[], leafRoot: string) {
  dir.put(id, parseAnnouncement({ admin: '127.0.0.1:9000', workloads: [{ name: 'web-1', service: 'web', inbound: null, outbound: '127.0.0.1:4140', tls: { roots, leafRoot, leafIssuer: 'ab12' } }] }));
}

const fps = (ca: CertificateAuthority) => ca.roots.map(certFingerprint);

async function leafRootOf(ca: CertificateAuthority): Promise<string> {
  const kp = await generateKeyPair();
  const leaf = await ca.issue(ca.identityOf('web'), await createCsr(kp.privateKeyPem));
  const top = new X509Certificate(leaf.chainPem.at(-1) as string);
  const root = ca.roots.find((r) => top.checkIssued(new X509Certificate(r)));
  assert.ok(root !== undefined, 'the leaf chains to a root of the bundle');
  return certFingerprint(root);
}

test('add, switch, remove: the bundle, the issuer and each precondition on the announced proxies', async () => {
  const { ca, dir, events, changes, clock } = await setup();
  const [old] = fps(ca) as [string];
  assert.equal(ca.rotationPhase, 'none');
  assert.equal(ca.info(null).rotation, 'none');
  assert.equal(ca.info(null).pollMs, 5000, 'a 1-minute leaf: the proxies poll every 5 s');
  announce(dir, 'proxy-a', [old], old);

  // Out of order: nothing to switch to or remove, and --force does not change that.
  await assert.rejects(ca.rotate('switch', { proxies: dir.list(), force: true }), refused(/no root rotation is under way; the next step is `skein ca rotate --step add`/));
  await assert.rejects(ca.rotate('remove', { proxies: dir.list() }), refused(/--step add/));

  const issuerBefore = ca.info(null).issuer.serial;
  const added = await ca.rotate('add', { proxies: dir.list(), source: '127.0.0.1' });
  const [, fresh] = fps(ca) as [string, string];
  assert.equal(ca.roots.length, 2);
  assert.equal(fps(ca)[0], old, 'the old root first');
  assert.notEqual(fresh, old);
  assert.equal(added.phase, 'added');
  assert.deepEqual(added.roots.map((r) => r.role), ['old', 'new']);
  assert.equal(ca.info(null).issuer.serial, issuerBefore, 'issuing stays on the old intermediate');
  assert.equal(ca.info(null).issuer.root, old);
  assert.equal(await leafRootOf(ca), old);
  assert.deepEqual(ca.wire(await ca.issue(ca.identityOf('web'), await createCsr((await generateKeyPair()).privateKeyPem))).roots, [...ca.roots], 'answers carry the bundle');
  await assert.rejects(ca.rotate('add', { proxies: dir.list() }), refused(/a new root was added and issuing is still on the old one; the next step is `skein ca rotate --step switch`/));

  // proxy-a trusts only the old root: switch is refused, naming it.
  await assert.rejects(ca.rotate('switch', { proxies: dir.list() }), refused(new RegExp(`1 workload\\(s\\) of announced proxies do not trust the new root ${fresh.slice(0, 16)} yet: proxy-a \\(web-1: trusts ${old.slice(0, 16)}\\).*--force`)));
  assert.equal(ca.rotationStatus(dir.list()).blocked?.includes('proxy-a'), true);
  assert.equal(ca.rotationStatus(dir.list()).proxies[0]?.trustsNew, false);
  announce(dir, 'proxy-a', [old, fresh], old);
  assert.equal(ca.rotationStatus(dir.list()).blocked, null);
  clock.advance(1000);
  const switched = await ca.rotate('switch', { proxies: dir.list() });
  assert.equal(switched.phase, 'switched');
  assert.equal(switched.switchedAt, new Date(clock.now()).toISOString());
  assert.equal(switched.oldLeavesExpireAt, new Date(clock.now() + 60_000).toISOString());
  assert.notEqual(ca.info(null).issuer.serial, issuerBefore, 'issuing moved to the new intermediate');
  assert.equal(ca.info(null).issuer.root, fresh);
  assert.equal(await leafRootOf(ca), fresh);
  assert.deepEqual(fps(ca), [old, fresh], 'both roots stay trusted until remove');

  // proxy-a still holds a leaf of the old root: remove is refused; once it renews, it is done.
  await assert.rejects(ca.rotate('remove', { proxies: dir.list() }), refused(/still hold leaves of the old root.*proxy-a \(web-1: its leaf chains to/));
  announce(dir, 'proxy-a', [old, fresh], fresh);
  const removed = await ca.rotate('remove', { proxies: dir.list() });
  assert.equal(removed.phase, 'none');
  assert.deepEqual(fps(ca), [fresh]);
  assert.deepEqual(removed.roots.map((r) => r.role), ['current']);

  assert.deepEqual(events.filter((e) => e.type === 'ca-rotation').map((e) => [e.step, e.forced, e.roots?.length]), [['add', false, 2], ['switch', false, 2], ['remove', false, 1]]);
  assert.equal(events.find((e) => e.type === 'ca-rotation')?.source, '127.0.0.1');
  assert.deepEqual(events.filter((e) => e.type === 'ca-rotation-refused').map((e) => [e.step, e.code]), [['switch', 'SKEIN_E_CA_ROTATION'], ['remove', 'SKEIN_E_CA_ROTATION'], ['add', 'SKEIN_E_CA_ROTATION'], ['switch', 'SKEIN_E_CA_ROTATION'], ['remove', 'SKEIN_E_CA_ROTATION']]);
  assert.deepEqual(changes.map((c) => c.step), ['add', 'switch', 'remove']);
  const me = rotationMeshEvent(changes[2] as CaChange);
  assert.equal(me.type, 'certificate');
  assert.match(me.message, new RegExp(`the old root left the trust bundle; trusted now: ${fresh.slice(0, 16)}$`));
});

test('--force overrides the proxies (and says so); a proxy that stops announcing no longer holds a step back', async () => {
  const { ca, dir, events, changes, clock } = await setup();
  const [old] = fps(ca) as [string];
  announce(dir, 'proxy-a', [old], old);
  await ca.rotate('add', { proxies: dir.list() });
  const forced = await ca.rotate('switch', { proxies: dir.list(), force: true });
  assert.equal(forced.phase, 'switched');
  assert.equal(changes.at(-1)?.forced, true);
  assert.equal(events.filter((e) => e.type === 'ca-rotation').at(-1)?.forced, true);
  // A step whose condition holds is not "forced", whatever the flag.
  await assert.rejects(ca.rotate('remove', { proxies: dir.list() }), refused(/proxy-a/));
  clock.advance(PROXY_TTL_MS - 1);
  assert.equal(dir.list().length, 1);
  await assert.rejects(ca.rotate('remove', { proxies: dir.list() }), refused(/proxy-a/));
  clock.advance(2);
  assert.equal(dir.list().length, 0, 'forgotten after the TTL');
  await ca.rotate('remove', { proxies: dir.list(), force: true });
  assert.equal(changes.at(-1)?.forced, false, 'nothing was overridden');
});

test('a restart mid-rotation continues where it was (the store keeps ca/rotation)', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const first = await setup(clock, store);
  await first.ca.rotate('add', { proxies: [] });
  const roots = fps(first.ca);
  const issuer = first.ca.info(null).issuer.serial;
  const again = await setup(clock, store);
  assert.equal(again.ca.rotationPhase, 'added');
  assert.deepEqual(fps(again.ca), roots);
  assert.equal(again.ca.info(null).issuer.serial, issuer);
  await again.ca.rotate('switch', { proxies: [] });
  const newIssuer = again.ca.info(null).issuer.serial;
  const third = await setup(clock, store);
  assert.equal(third.ca.rotationPhase, 'switched');
  assert.deepEqual(fps(third.ca), roots);
  assert.equal(third.ca.info(null).issuer.serial, newIssuer, 'the new intermediate, kept');
  assert.equal(third.ca.info(null).issuer.root, roots[1]);
  await third.ca.rotate('remove', { proxies: [] });
  const fourth = await setup(clock, store);
  assert.equal(fourth.ca.rotationPhase, 'none');
  assert.deepEqual(fps(fourth.ca), [roots[1]]);
  assert.equal(fourth.ca.info(null).issuer.serial, newIssuer);
});

test('add with an operator-given root: an intermediate is made under it; a root already trusted or of another trust domain is refused', async () => {
  const { ca, clock } = await setup();
  const mine = await createRoot('shop', { now: new Date(clock.now()), lifetimeMs: 86_400_000 });
  const status = await ca.rotate('add', { proxies: [], operator: { certPem: mine.certPem, keyPem: mine.keyPem, chainPem: [] } });
  assert.equal(status.roots[1]?.fingerprint, certFingerprint(mine.certPem));
  await ca.rotate('switch', { proxies: [] });
  await ca.rotate('remove', { proxies: [] });
  assert.equal(await leafRootOf(ca), certFingerprint(mine.certPem));
  await assert.rejects(ca.rotate('add', { proxies: [], operator: { certPem: mine.certPem, keyPem: mine.keyPem, chainPem: [] } }), refused(/chains to a root the mesh trusts already/));
  const other = await createRoot('bank', { now: new Date(clock.now()), lifetimeMs: 86_400_000 });
  await assert.rejects(ca.rotate('add', { proxies: [], operator: { certPem: other.certPem, keyPem: other.keyPem, chainPem: [] } }), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_BAD_CA' && /trust domain "bank", not "shop"/.test(e.message));
  assert.equal(ca.rotationPhase, 'none');
});

test('an announcement with a malformed tls report is refused naming the field', () => {
  const bad = (tls: unknown) => () => parseAnnouncement({ admin: '127.0.0.1:9000', workloads: [{ name: 'web-1', service: 'web', tls }] });
  assert.throws(bad({ roots: ['xyz'], leafRoot: 'a'.repeat(64), leafIssuer: 'ab' }), /workloads\[0\]\.tls\.roots\[0\] must be a certificate's SHA-256 fingerprint/);
  assert.throws(bad({ roots: [], leafRoot: 'a'.repeat(64), leafIssuer: 'ab' }), /workloads\[0\]\.tls\.roots must be a list of 1 to 16/);
  assert.throws(bad({ roots: ['a'.repeat(64)], leafRoot: 'a'.repeat(64), leafIssuer: 'ab', extra: 1 }), /workloads\[0\]\.tls\.extra is not a known field/);
  assert.equal(parseAnnouncement({ admin: '127.0.0.1:9000', workloads: [{ name: 'web-1', service: 'web' }] }).workloads[0]?.tls, null);
});

test('two control planes opening one empty store at once make one mesh CA: the second to store its root takes the first one\'s', async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const open = () => CertificateAuthority.open({ store, clock, trustDomain: 'shop', leafLifetimeMs: 60_000, operator: null, logger: pino({ level: 'silent' }), onSecurityEvent: () => undefined });
  const [a, b] = await Promise.all([open(), open()]);
  assert.deepEqual(a.info(null).roots, b.info(null).roots);
  assert.equal(a.info(null).issuer.serial, b.info(null).issuer.serial);
  assert.equal((await store.load()).filter(([k]) => k === 'ca/root').length, 1);
});
