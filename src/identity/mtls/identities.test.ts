/**
 * The proxy's side of root rotation on a manual Clock, with a CA made here (src/identity): the
 * trust poll, a new bundle (contexts rebuilt, every leaf renewed, the announcement following the
 * renewal), a new issuer (renewed at once), a removed root (ticket keys and session epoch), and a
 * renewal answer with other roots (polled at once).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createIntermediate, createRoot, issueLeaf, type Issuer } from '../certs.js';
import { workloadId } from '../spiffe.js';
import { ManualClock } from '../../core/clock.js';
import { certFingerprint, type CaInfo, type IssuedCertificate } from '../../api/ca.js';
import { Identities, type CertificateSource, type IdentityEvent } from './identities.js';

const TD = 'test.skein';
const DAY = 86_400_000;

async function authority(): Promise<Issuer> {
  const now = new Date();
  return createIntermediate(await createRoot(TD, { now, lifetimeMs: 10 * DAY }), { now, lifetimeMs: 5 * DAY, trustDomain: TD });
}

/** A CA whose issuer and bundle the test changes; counts what the proxy asks. */
function fakeCa(issuer: Issuer) {
  const ca = {
    issuer,
    roots: [issuer.rootPem],
    infos: 0,
    renewals: 0,
    wire: async (service: string, csr: string): Promise<IssuedCertificate> => {
      const leaf = await issueLeaf(ca.issuer, csr, workloadId(TD, 'default', service), { now: new Date(), lifetimeMs: DAY });
      return { certificate: leaf.certPem, chain: leaf.chainPem, roots: [...ca.roots], identity: leaf.identity, notBefore: leaf.notBefore.toISOString(), notAfter: leaf.notAfter.toISOString(), serial: leaf.serial };
    },
    info: (): Pick<CaInfo, 'roots' | 'issuer' | 'pollMs'> => ({ roots: [...ca.roots], issuer: { subject: '', notBefore: '', notAfter: '', serial: ca.issuer.serial, root: certFingerprint(ca.issuer.rootPem) }, pollMs: 5000 }),
  };
  const source: CertificateSource = {
    issue: (reqs) => Promise.all(reqs.map((r) => ca.wire(r.service, r.csr))),
    renew: async (cur, csr) => {
      ca.renewals++;
      return ca.wire(cur.service, csr);
    },
    info: async () => {
      ca.infos++;
      return ca.info() as CaInfo;
    },
  };
  return { ca, source };
}

/** Lets the promises of a renewal or a poll settle (key generation runs on the thread pool). */
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a new bundle, a new issuer, a removed root: what the proxy rebuilds, renews, announces and forgets', async () => {
  const old = await authority();
  const next = await authority();
  const { ca, source } = fakeCa(old);
  const clock = new ManualClock(Date.now());
  const events: IdentityEvent[] = [];
  const ids = new Identities({ source, trustDomain: TD, clock, ticketKeys: Buffer.alloc(48, 1), rng: () => 0.5, onEvent: (e) => events.push(e) });
  await ids.obtain(['web', 'api']);
  const oldFp = certFingerprint(old.rootPem);
  const newFp = certFingerprint(next.rootPem);
  assert.deepEqual(ids.report('web'), { roots: [oldFp], leafRoot: oldFp, leafIssuer: old.serial });
  assert.equal(ids.report('nope'), null);

  // The poll: at once, then every pollMs of the answer. Nothing changed: nothing renewed.
  ids.startTrustPolling();
  await until(() => ca.infos === 1, 'the first poll');
  await new Promise((r) => setImmediate(r));
  assert.equal(ca.renewals, 0);
  clock.advance(4999);
  assert.equal(ca.infos, 1);
  clock.advance(1);
  await until(() => ca.infos === 2, 'the second poll, 5 s later');

  // add: the bundle is [old, new]. Contexts are rebuilt at once, every leaf renewed; the report follows the renewal.
  ca.roots = [old.rootPem, next.rootPem];
  const ctxBefore = ids.credential('web')?.context;
  const serialBefore = ids.credential('web')?.serial;
  ids.trust(ca.info());
  assert.notEqual(ids.credential('web')?.context, ctxBefore, 'a new context with the new bundle');
  assert.equal(ids.credential('web')?.serial, serialBefore, 'the same leaf until the renewal answers');
  assert.deepEqual(ids.credential('web')?.roots, [old.rootPem, next.rootPem]);
  assert.deepEqual(ids.report('web')?.roots, [oldFp], 'announced once the renewal installed it');
  assert.deepEqual(events.filter((e) => e.type === 'trust'), [{ type: 'trust', roots: [oldFp, newFp], removed: [] }]);
  await until(() => ids.report('web')?.roots.length === 2 && ids.report('api')?.roots.length === 2, 'both renewed');
  assert.equal(ca.renewals, 2);
  assert.deepEqual(ids.report('web'), { roots: [oldFp, newFp], leafRoot: oldFp, leafIssuer: old.serial });
  assert.equal(ids.sessionEpoch, 0);
  assert.deepEqual(ids.ticketKeys, Buffer.alloc(48, 1), 'adding a root keeps the ticket keys');

  // switch: the CA issues from the new intermediate; the proxy renews each leaf of another issuer, once.
  ca.issuer = next;
  ids.trust(ca.info());
  ids.trust(ca.info());
  await until(() => ids.report('web')?.leafRoot === newFp && ids.report('api')?.leafRoot === newFp, 'renewed onto the new root');
  assert.equal(ca.renewals, 4, 'one renewal per leaf, however often asked');
  assert.equal(ids.report('web')?.leafIssuer, next.serial);
  ids.trust(ca.info());
  await new Promise((r) => setImmediate(r));
  assert.equal(ca.renewals, 4, 'leaves of the current issuer are not renewed');

  // remove: the old root leaves; ticket keys rotate and the session epoch goes up.
  ca.roots = [next.rootPem];
  ids.trust(ca.info());
  assert.equal(ids.sessionEpoch, 1);
  assert.notDeepEqual(ids.ticketKeys, Buffer.alloc(48, 1));
  assert.deepEqual(events.filter((e) => e.type === 'trust').at(-1), { type: 'trust', roots: [newFp], removed: [oldFp] });
  await until(() => ids.report('web')?.roots.length === 1 && ids.report('api')?.roots.length === 1, 'renewed after the removal');
  assert.deepEqual(ids.report('web')?.roots, [newFp]);

  // A renewal whose answer carries other roots makes the proxy ask at once (not at the next poll).
  const polls = ca.infos;
  ca.roots = [next.rootPem, old.rootPem];
  await ids.renew('web');
  await until(() => ca.infos === polls + 1, 'a poll right after the renewal');
  ids.stop();
});

test('restore(): certificates kept in the proxy state are held again without the CA; expired ones and other identities are left out; renewal goes on when the CA answers', async () => {
  const { ca, source } = fakeCa(await authority());
  const clock = new ManualClock(Date.now());
  const first = new Identities({ source, trustDomain: TD, clock, ticketKeys: Buffer.alloc(48, 1) });
  await first.obtain(['web', 'api']);
  const kept = first.list().map((c) => ({ service: c.service, keyPem: c.keyPem, certPem: c.certPem, chainPem: c.chainPem, roots: c.roots }));
  first.stop();
  const web = kept.find((c) => c.service === 'web');
  assert.ok(web !== undefined);
  // The CA is away: issuing and renewing fail.
  let away = true;
  const offline: CertificateSource = {
    issue: async (r) => (away ? Promise.reject(new Error('connect ECONNREFUSED')) : source.issue(r)),
    renew: async (cur, csr) => (away ? Promise.reject(new Error('connect ECONNREFUSED')) : source.renew(cur, csr)),
  };
  const events: IdentityEvent[] = [];
  const ids = new Identities({ source: offline, trustDomain: TD, clock, ticketKeys: Buffer.alloc(48, 2), onEvent: (e) => events.push(e) });
  const restored = ids.restore([...kept, { ...web, service: 'db' }]);
  assert.deepEqual(restored.sort(), ['api', 'web'], 'a certificate of another service\'s identity is left out');
  assert.equal(ids.credential('web')?.certPem, web.certPem);
  await ids.obtain(['web', 'api']); // held: the CA is not asked
  assert.equal(ca.renewals, 0);
  // Past its renewal point (at most 70% of a day): the renewal fails while the CA is away, then works.
  clock.advance(0.71 * DAY);
  await until(() => events.some((e) => e.type === 'renewal-failed'), 'a failed renewal');
  assert.equal(ids.credential('web')?.certPem, web.certPem, 'the kept certificate is used meanwhile');
  away = false;
  clock.advance(30_000);
  await until(() => ids.credential('web')?.certPem !== web.certPem && ids.credential('api')?.certPem !== kept.find((c) => c.service === 'api')?.certPem, 'renewed once the CA answers');
  ids.stop();
  // Expired: not restored.
  const later = new Identities({ source: offline, trustDomain: TD, clock: new ManualClock(Date.now() + 2 * DAY), ticketKeys: Buffer.alloc(48, 3) });
  assert.deepEqual(later.restore(kept), []);
  later.stop();
});
