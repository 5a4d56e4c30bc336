/**
 * The mesh CA across two `skein control --store etcd` replicas on a real etcd (loopback, ports
 * from the OS): a root rotation taken through replica a reaches replica b through the store's
 * watch, without a restart. After `add`, b's GET /v1/ca carries the new root; after `switch`, a
 * certificate b issues chains to the new root and b's mTLS listener presents a certificate of
 * the new root; after `remove`, b trusts the new root alone. Each step is a mesh event on b
 * marked as taken through another replica.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';
import { certFingerprint, type CaInfo } from '../src/api/ca.js';

const caInfo = async (cp: ControlProcess): Promise<CaInfo> => (await api(cp.http, 'GET', '/v1/ca')).body as CaInfo;
const fps = (info: CaInfo) => info.roots.map(certFingerprint);
/** Polls b's GET /v1/ca until its rotation is at `phase`. */
const phaseOn = (cp: ControlProcess, phase: CaInfo['rotation'], what: string): Promise<CaInfo> =>
  waitFor<CaInfo | null>(async () => {
    const i = await caInfo(cp);
    return i.rotation === phase ? i : null;
  }, { what }) as Promise<CaInfo>;

/** Whether `pem`'s chain (leaf first) leads to `rootPem`: each certificate signed by the next, the last by the root. */
function chainsTo(chain: readonly string[], rootPem: string): boolean {
  const certs = [...chain, rootPem].map((p) => new X509Certificate(p));
  return certs.every((c, i) => i === certs.length - 1 || (c.checkIssued(certs[i + 1] as X509Certificate) && c.verify((certs[i + 1] as X509Certificate).publicKey)));
}

/** Whether a TLS handshake with the mTLS listener at `url` succeeds when trusting `rootPem` alone (no client certificate). */
function listenerTrustedBy(url: string, rootPem: string): Promise<{ ok: boolean; why: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: [rootPem], servername: 'localhost', minVersion: 'TLSv1.3' });
    s.setTimeout(5000, () => s.destroy(new Error('no handshake within 5 s')));
    s.once('secureConnect', () => {
      s.end();
      resolve({ ok: true, why: 'trusted' });
    });
    s.once('error', (e) => resolve({ ok: false, why: e.message }));
  });
}

describe('the mesh CA on two replicas over etcd: rotation steps taken through one reach the other', () => {
  let cluster: EtcdCluster;
  let dir: { path: string; remove: () => Promise<void> };
  let a: ControlProcess;
  let b: ControlProcess;

  before(async () => {
    cluster = await startEtcdCluster({ members: 1 });
    dir = await tempDir('skein-ca-replicas-');
    const args = (name: string) => ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--replica', name, '--leaf-lifetime', '1m'];
    a = await startControl({ dataDir: join(dir.path, 'a'), args: args('a') });
    // One admin token for the mesh: b gets a copy of a's.
    await mkdir(join(dir.path, 'b'), { recursive: true });
    await copyFile(join(dir.path, 'a', 'admin.token'), join(dir.path, 'b', 'admin.token'));
    b = await startControl({ dataDir: join(dir.path, 'b'), args: args('b') });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await cluster?.close();
    await dir?.remove();
  });

  test('add, switch, remove through a: b serves the bundle, issues from the new intermediate and its mTLS listener moves to it', async () => {
    const start = await caInfo(b);
    assert.deepEqual(fps(start), fps(await caInfo(a)), 'one mesh CA');
    const oldRoot = start.roots[0] as string;
    assert.notEqual(start.renewUrl, '');
    assert.deepEqual(await listenerTrustedBy(start.renewUrl, oldRoot), { ok: true, why: 'trusted' });

    const added = await api(a.http, 'POST', '/v1/ca/rotate', { step: 'add' });
    assert.equal(added.status, 200, JSON.stringify(added.body));
    const afterAdd = await phaseOn(b, 'added', 'the add on b (GET /v1/ca)');
    assert.deepEqual(fps(afterAdd), fps(await caInfo(a)));
    assert.equal(afterAdd.roots.length, 2);
    const newRoot = afterAdd.roots[1] as string;
    assert.equal(afterAdd.issuer.root, certFingerprint(oldRoot), 'issuing stays on the old root');

    const switched = await api(a.http, 'POST', '/v1/ca/rotate', { step: 'switch' });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    const afterSwitch = await phaseOn(b, 'switched', 'the switch on b (GET /v1/ca)');
    assert.equal(afterSwitch.issuer.root, certFingerprint(newRoot));
    assert.equal(afterSwitch.issuer.serial, (await caInfo(a)).issuer.serial);
    assert.deepEqual(fps(afterSwitch), fps(afterAdd), 'both roots trusted until remove');

    // A certificate issued by b (a join token minted on b) chains to the new root, not the old.
    const minted = await api(b.http, 'POST', '/v1/ca/tokens', { proxy: 'tester', services: ['web'] });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const kp = await generateKeyPair();
    const issued = await api(b.http, 'POST', '/v1/ca/certificates', { service: 'web', csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${minted.body.token as string}` });
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const chain = [issued.body.certificate as string, ...(issued.body.chain as string[])];
    assert.equal(chainsTo(chain, newRoot), true, 'the leaf chains to the new root');
    assert.equal(chainsTo(chain, oldRoot), false);
    assert.deepEqual((issued.body.roots as string[]).map(certFingerprint), fps(afterSwitch), 'the answer carries the bundle');

    // b's mTLS listener was issued a certificate by the new intermediate (it is issued asynchronously: poll).
    await waitFor(async () => (await listenerTrustedBy(afterSwitch.renewUrl, newRoot)).ok, { what: "b's mTLS listener presenting a certificate of the new root" });
    const byOld = await listenerTrustedBy(afterSwitch.renewUrl, oldRoot);
    assert.equal(byOld.ok, false, 'no longer a certificate of the old root');

    const removed = await api(a.http, 'POST', '/v1/ca/rotate', { step: 'remove' });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    const afterRemove = await phaseOn(b, 'none', 'the remove on b (GET /v1/ca)');
    assert.deepEqual(fps(afterRemove), [certFingerprint(newRoot)]);

    // The mesh event feed is the leader's (the other replica forwards its reads): each step is there
    // once, from whichever replica is asked, and says whether the leader took it or heard of it.
    const aLeads = ((await api(a.http, 'GET', '/v1/health')).body as { etcd: { leader: boolean } }).etcd.leader;
    const feed = async (cp: ControlProcess) => ((await api(cp.http, 'GET', '/v1/events?type=certificate')).body.events as Array<{ step: string; remote: boolean; message: string }>).map((e) => [e.step, e.remote, e.message.endsWith('(taken through another control-plane replica)')]).sort();
    const want = ['add', 'remove', 'switch'].map((step) => [step, !aLeads, !aLeads]);
    assert.deepEqual(await feed(b), want, `the feed through b (a leads: ${aLeads})`);
    assert.deepEqual(await feed(a), want, 'the same through a: each step once (its echo is not a change)');
  });
});
