/**
 * The CA across control-plane replicas, on a manual Clock: two CertificateAuthority over one
 * in-memory store stand for two replicas. The store records each commit's ops in order, which is
 * what the etcd store's watch hands to the other replica (`applyStored`, key by key). Root
 * rotation steps taken through one reach the other; the issuer renewal duty replaces a worn
 * intermediate once, even when two replicas race; it does nothing during a rotation, for an
 * operator's CA, or without the root's key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import pino from 'pino';
import { ManualClock } from '../../core/clock.js';
import { MemoryStore, type StoreOp } from '../store/store.js';
import { CertificateAuthority, issuerCheckPeriodMs, rotationMeshEvent, type CaChange } from './ca.js';
import { CA_DEFAULTS, certFingerprint, type SecurityEvent } from '../../api/ca.js';
import { createCsr, createRoot, generateKeyPair } from '../../identity/certs.js';

const DAY = 86_400_000;

/** A MemoryStore that keeps every committed op, in order: what the other replicas' watch would carry. */
class WatchedStore extends MemoryStore {
  readonly log: StoreOp[] = [];
  commits = 0;
  override async commit(ops: StoreOp[]): Promise<void> {
    await super.commit(ops);
    this.commits++;
    this.log.push(...ops);
  }
}

interface Replica {
  ca: CertificateAuthority;
  events: SecurityEvent[];
  changes: CaChange[];
  logs: Array<{ level: number; msg: string; key?: string; err?: { message: string } }>;
  /** How many of the store's ops it has been fed. */
  seen: number;
}

async function replica(store: WatchedStore, clock: ManualClock, operator: Parameters<typeof CertificateAuthority.open>[0]['operator'] = null): Promise<Replica> {
  const logs: Replica['logs'] = [];
  const events: SecurityEvent[] = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as Replica['logs'][number]) });
  const ca = await CertificateAuthority.open({ store, clock, trustDomain: 'shop', leafLifetimeMs: 60_000, operator, logger, onSecurityEvent: (e) => events.push(e) });
  const changes: CaChange[] = [];
  ca.subscribe((c) => changes.push(c));
  return { ca, events, changes, logs, seen: store.log.length };
}

/** Hands `r` the ops committed since it was last fed, one key at a time (as the watch does); `upTo` stops early. */
function feed(store: WatchedStore, r: Replica, upTo = store.log.length): void {
  for (; r.seen < upTo; r.seen++) {
    const op = store.log[r.seen] as StoreOp;
    r.ca.applyStored(op.key, op.type === 'put' ? op.value : null);
  }
}

/** What a replica serves: the bundle, the issuer and the phase (GET /v1/ca). */
const served = (ca: CertificateAuthority) => ({ roots: [...ca.roots], issuer: ca.issuerCert.certPem, serial: ca.issuerCert.serial, phase: ca.rotationPhase, info: ca.info(null) });

async function leafRootOf(ca: CertificateAuthority): Promise<string> {
  const leaf = await ca.issue(ca.identityOf('web'), await createCsr((await generateKeyPair()).privateKeyPem));
  const top = new X509Certificate(leaf.chainPem.at(-1) as string);
  const root = ca.roots.find((r) => top.checkIssued(new X509Certificate(r)));
  assert.ok(root !== undefined, 'the leaf chains to a root of the bundle');
  return certFingerprint(root);
}

/** Polls `ok` until it holds (real time: crypto runs on the thread pool), failing after 5 s. */
async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`not within 5 s: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Past 90% of the intermediate's life (its lifetime is a year): worn. */
const wearOut = (clock: ManualClock) => clock.advance(Math.ceil(CA_DEFAULTS.renewNowFraction * CA_DEFAULTS.intermediateLifetimeMs) + DAY);

test('add, switch, remove through one replica: the other, fed the changed keys, serves the same bundle, issuer and phase, and tells its subscribers', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const a = await replica(store, clock);
  const b = await replica(store, clock);
  assert.deepEqual(served(b.ca), served(a.ca), 'one mesh CA');
  const [old] = a.ca.roots.map(certFingerprint) as [string];

  await a.ca.rotate('add', { proxies: [] });
  const commits = store.commits;
  feed(store, a); // its own echo
  feed(store, b);
  assert.deepEqual(served(b.ca), served(a.ca));
  assert.equal(b.ca.rotationPhase, 'added');
  assert.equal(b.ca.roots.length, 2);
  const fresh = certFingerprint(b.ca.roots[1] as string);
  assert.deepEqual(b.changes.map((c) => [c.step, c.remote, c.forced]), [['add', true, false]]);
  assert.deepEqual(b.changes[0]?.roots, [old, fresh]);
  assert.match(b.changes[0]?.message ?? '', new RegExp(`^root rotation: new root ${fresh.slice(0, 16)} added to the trust bundle; .* \\(taken through another control-plane replica\\)$`));
  assert.equal(await leafRootOf(b.ca), old, 'issuing stays on the old root after add');

  // The switch writes three keys in one commit; the watch hands them over one by one: until the
  // last one, the keys disagree and the replica keeps serving what it had.
  clock.advance(1000);
  await a.ca.rotate('switch', { proxies: [] });
  feed(store, a);
  const before = served(b.ca);
  feed(store, b, store.log.length - 1);
  assert.deepEqual(served(b.ca), before, 'ca/root and ca/issuer without ca/rotation: nothing taken yet');
  assert.equal(b.changes.length, 1);
  feed(store, b);
  assert.deepEqual(served(b.ca), served(a.ca));
  assert.equal(b.ca.rotationPhase, 'switched');
  assert.notEqual(b.ca.issuerCert.serial, before.serial);
  assert.equal(await leafRootOf(b.ca), fresh, 'after switch the other replica issues from the new root');
  assert.deepEqual(b.changes.map((c) => c.step), ['add', 'switch']);
  assert.equal(b.changes[1]?.issuerSerial, a.ca.issuerCert.serial);
  assert.equal(b.ca.rotationStatus([]).switchedAt, new Date(clock.now()).toISOString());

  await a.ca.rotate('remove', { proxies: [] });
  feed(store, a);
  feed(store, b);
  assert.deepEqual(served(b.ca), served(a.ca));
  assert.deepEqual(b.ca.roots.map(certFingerprint), [fresh]);
  assert.deepEqual(b.changes.map((c) => [c.step, c.remote]), [['add', true], ['switch', true], ['remove', true]]);
  const me = rotationMeshEvent(b.changes[2] as CaChange);
  assert.equal(me.remote, true);
  assert.equal(me.type, 'certificate');

  // Nothing applied from the watch is written again; a replica's own echo is a no-op for it.
  assert.equal(store.commits, commits + 2, 'only the switch and the remove, both through a');
  assert.deepEqual(a.changes.map((c) => [c.step, c.remote]), [['add', false], ['switch', false], ['remove', false]]);
  // The security events are the taking replica's: the other only logs.
  assert.equal(a.events.filter((e) => e.type === 'ca-rotation').length, 3);
  assert.equal(b.events.filter((e) => e.type === 'ca-rotation').length, 0);
  // The steps go on through b, which a follows in turn.
  await b.ca.rotate('add', { proxies: [] });
  feed(store, a);
  assert.equal(a.ca.rotationPhase, 'added');
  assert.deepEqual(served(a.ca), served(b.ca));
});

test('a step refused because another replica took one meanwhile (the write holds over what it read)', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const a = await replica(store, clock);
  const b = await replica(store, clock);
  await a.ca.rotate('add', { proxies: [] });
  // b has not heard of it: its own add would overwrite a's new root; the store refuses it.
  await assert.rejects(b.ca.rotate('add', { proxies: [] }), { code: 'SKEIN_E_CONCURRENT_CHANGE', message: 'ca/rotation changed since it was read' });
  assert.equal(b.ca.rotationPhase, 'none', 'nothing taken in memory either');
  feed(store, b);
  assert.deepEqual(served(b.ca), served(a.ca));
});

test('a bad value from the store is logged naming the key and ignored; it never throws into the watch', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const b = await replica(store, clock);
  const before = served(b.ca);
  const cases: Array<[string, string | null, RegExp]> = [
    ['ca/rotation', 'not json', /^ca\/rotation in the store is not JSON/],
    ['ca/rotation', JSON.stringify({ phase: 'sideways', addedAt: 1 }), /^ca\/rotation in the store: /],
    ['ca/issuer', JSON.stringify({ certPem: 'x', keyPem: 'y', chainPem: [], rootPem: 'z' }), /^ca\/issuer in the store holds a certificate that cannot be read/],
    ['ca/issuer', JSON.stringify({ certPem: 'x' }), /^ca\/issuer in the store: /],
    ['ca/rotation', JSON.stringify({ phase: 'switched', oldRootPem: 'not a certificate', addedAt: 1, switchedAt: 2 }), /^ca\/rotation in the store holds a certificate that cannot be read/],
    ['ca/root', null, /^ca\/root was deleted from the store$/],
  ];
  const other = await createRoot('bank', { now: new Date(clock.now()), lifetimeMs: DAY });
  cases.push(['ca/root', JSON.stringify({ certPem: other.certPem, keyPem: other.keyPem }), /^the CA kept in the store is for trust domain "bank", not "shop"$/]);
  for (const [key, value, message] of cases) {
    b.logs.length = 0;
    assert.doesNotThrow(() => b.ca.applyStored(key, value));
    const logged = b.logs.find((l) => l.msg.startsWith('a CA key changed in the store cannot be used'));
    assert.ok(logged !== undefined, `${key}=${value}: logged`);
    assert.equal(logged.level, 50, 'at error');
    assert.equal(logged.key, key);
    assert.match(logged.err?.message ?? '', message);
  }
  assert.deepEqual(served(b.ca), before);
  assert.deepEqual(b.changes, []);
  // Keys that are not the CA's own (join tokens: JoinTokens') are not its business.
  b.ca.applyStored('ca/tokens/abc', 'whatever');
  assert.deepEqual(b.logs.filter((l) => l.level >= 50 && l.msg.startsWith('a CA key')).length, 1);
});

test('the issuer renewal duty replaces a worn intermediate once, at the first check past 90% of its life; the other replica takes it from the watch', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const a = await replica(store, clock);
  const b = await replica(store, clock);
  const first = a.ca.issuerCert;
  const period = issuerCheckPeriodMs(first);
  assert.equal(period, CA_DEFAULTS.issuerCheckMs, 'a year-long intermediate: every hour');
  const wornAt = first.notBefore.getTime() + CA_DEFAULTS.renewNowFraction * (first.notAfter.getTime() - first.notBefore.getTime());
  a.ca.startIssuerRenewal();
  const commits = store.commits;
  // Check by check (each check schedules the next when it is done).
  while (a.ca.issuerCert.serial === first.serial && clock.now() < wornAt + 2 * period) {
    clock.advance(period);
    await new Promise((r) => setImmediate(r));
  }
  await until(() => a.ca.issuerCert.serial !== first.serial, 'the worn intermediate replaced');
  const renewed = a.ca.issuerCert;
  const checkedAt = renewed.notBefore.getTime() + CA_DEFAULTS.backdateMs;
  assert.ok(checkedAt >= wornAt && checkedAt < wornAt + period, `at the first check past 90% (${(checkedAt - wornAt) / 1000} s past it)`);
  assert.equal(renewed.notAfter.getTime(), checkedAt + CA_DEFAULTS.intermediateLifetimeMs);
  assert.equal(store.commits, commits + 1, 'one write');
  assert.deepEqual(a.ca.roots, b.ca.roots, 'under the same root');
  assert.deepEqual(a.events.filter((e) => e.kind === 'intermediate').map((e) => [e.type, e.serial, e.notAfter]), [['certificate-issued', renewed.serial, renewed.notAfter.toISOString()]]);
  assert.match(a.events.find((e) => e.kind === 'intermediate')?.reason ?? '', new RegExp(`serial ${renewed.serial} replaces ${first.serial}`));
  assert.deepEqual(a.changes.map((c) => [c.step, c.remote, c.issuerSerial]), [['renew-issuer', false, renewed.serial]]);
  const leaf = await a.ca.issue(a.ca.identityOf('web'), await createCsr((await generateKeyPair()).privateKeyPem));
  assert.equal(new X509Certificate(leaf.certPem).issuer, new X509Certificate(renewed.certPem).subject);
  assert.ok(new X509Certificate(leaf.certPem).checkIssued(new X509Certificate(renewed.certPem)));

  feed(store, b);
  assert.deepEqual(served(b.ca), served(a.ca));
  assert.deepEqual(b.changes.map((c) => [c.step, c.remote]), [['renew-issuer', true]]);
  assert.equal(b.events.length, 0, 'b replaced nothing');

  // Later checks find it fresh; stopped, the duty leaves no timer behind.
  clock.advance(10 * period);
  await new Promise((r) => setImmediate(r));
  assert.equal(store.commits, commits + 1);
  const pending = clock.pending;
  a.ca.stopIssuerRenewal();
  assert.equal(clock.pending, pending - 1);
});

test('two replicas racing to replace a worn intermediate: one wins, the other takes the winner\'s', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const a = await replica(store, clock);
  const b = await replica(store, clock);
  const first = a.ca.issuerCert.serial;
  wearOut(clock);
  const won = await Promise.all([a.ca.renewIssuerIfWorn(), b.ca.renewIssuerIfWorn()]);
  assert.deepEqual(won.sort(), [false, true]);
  const [winner, loser] = a.ca.issuerCert.serial !== first ? [a, b] : [b, a];
  assert.equal(loser.ca.issuerCert.serial, first, 'the loser keeps its issuer until the watch brings the winner\'s');
  assert.ok(loser.logs.some((l) => l.msg === 'another control-plane replica replaced the worn CA intermediate first: taking theirs from the store'));
  assert.equal([...a.events, ...b.events].filter((e) => e.kind === 'intermediate').length, 1);
  feed(store, loser);
  assert.deepEqual(served(loser.ca), served(winner.ca));
  assert.deepEqual(loser.changes.map((c) => [c.step, c.remote]), [['renew-issuer', true]]);
  const stored = new Map(await store.load());
  assert.equal(JSON.parse(stored.get('ca/issuer') as string).certPem, winner.ca.issuerCert.certPem);
  assert.equal(store.log.filter((o) => o.key === 'ca/issuer').length, 2, 'the first and the winner\'s');
});

test('a replica whose watch is behind reads the store before replacing: it takes the other\'s intermediate instead of replacing it again', async () => {
  const store = new WatchedStore();
  const clock = new ManualClock();
  const a = await replica(store, clock);
  const b = await replica(store, clock);
  wearOut(clock);
  assert.equal(await a.ca.renewIssuerIfWorn(), true);
  const commits = store.commits;
  assert.equal(await b.ca.renewIssuerIfWorn(), false);
  assert.equal(store.commits, commits, 'no second write');
  assert.deepEqual(served(b.ca), served(a.ca));
  assert.deepEqual(b.changes.map((c) => [c.step, c.remote]), [['renew-issuer', true]]);
  feed(store, b);
  assert.equal(b.changes.length, 1, 'the late echo of what it read is a no-op');
});

/** Wears the intermediate out and checks: nothing replaced, nothing written, no event. */
async function wornButKept(store: WatchedStore, clock: ManualClock, a: Replica): Promise<void> {
  const serial = a.ca.issuerCert.serial;
  const commits = store.commits;
  wearOut(clock);
  assert.equal(await a.ca.renewIssuerIfWorn(), false);
  a.ca.startIssuerRenewal();
  await new Promise((r) => setImmediate(r));
  a.ca.stopIssuerRenewal();
  assert.equal(a.ca.issuerCert.serial, serial);
  assert.equal(store.commits, commits);
  assert.equal(a.events.filter((e) => e.kind === 'intermediate').length, 0);
}

test('the duty does nothing during a root rotation, for an operator\'s CA, or when the root\'s key is not held', async () => {
  const clock = new ManualClock();
  // During a rotation (added): issuing stays on the old intermediate, worn or not.
  {
    const store = new WatchedStore();
    const a = await replica(store, clock);
    await a.ca.rotate('add', { proxies: [] });
    await wornButKept(store, clock, a);
  }
  // An operator's root: its files are the CA's state.
  {
    const store = new WatchedStore();
    const root = await createRoot('shop', { now: new Date(clock.now()), lifetimeMs: 3650 * DAY });
    const a = await replica(store, clock, { certPem: root.certPem, keyPem: root.keyPem, chainPem: [] });
    await wornButKept(store, clock, a);
    // Nor does it follow the store: the files are.
    a.ca.applyStored('ca/rotation', JSON.stringify({ phase: 'switched', oldRootPem: root.certPem, addedAt: 0, switchedAt: 0 }));
    assert.equal(a.ca.rotationPhase, 'none');
  }
  // A root given to `rotate --step add` without its key: its intermediate cannot be replaced here.
  {
    const store = new WatchedStore();
    const a = await replica(store, clock);
    const given = await createRoot('shop', { now: new Date(clock.now()), lifetimeMs: 3650 * DAY });
    await a.ca.rotate('add', { proxies: [], operator: { certPem: given.certPem, keyPem: given.keyPem, chainPem: [] } });
    await a.ca.rotate('switch', { proxies: [] });
    await a.ca.rotate('remove', { proxies: [] });
    await wornButKept(store, clock, a);
    assert.ok(a.logs.some((l) => l.level === 50 && /the root it chains to was given without keeping its key: rotate to a new root/.test(l.msg)));
  }
});
