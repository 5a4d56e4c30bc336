/**
 * TLS session-ticket keys with `--workers N`: every worker starts with the main thread's keys, a
 * shared-keys Identities makes none of its own when a root leaves the bundle (it takes the main
 * thread's: setTicketKeys builds every context again), and a rotation reaches every worker before
 * the trust poll's answer that told one of them about it. Real worker threads (a stand-in script
 * that reports what it receives over the real protocol), real certificates and Identities.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { createRoot, issueLeaf, type Issuer } from '../../identity/certs.js';
import { workloadId } from '../../identity/spiffe.js';
import type { CaInfo, IssuedCertificate } from '../../api/ca.js';
import { systemClock } from '../../core/clock.js';
import { Identities, type CertificateSource } from '../tls/identities.js';
import { ProxyWorkers } from '../workers.js';

const TD = 'keys.skein';

/** Polls `ok` every 10 ms until it holds; fails after 10 s saying `what`. */
async function waitFor(ok: () => boolean, o: { what: string }): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${o.what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
const DAY = 86_400_000;
let rootA: Issuer;
let rootB: Issuer;

before(async () => {
  const now = new Date();
  rootA = await createRoot(TD, { now, lifetimeMs: 30 * DAY });
  rootB = await createRoot(TD, { now, lifetimeMs: 30 * DAY });
});

const info = (roots: Issuer[]): CaInfo => ({
  trustDomain: TD,
  roots: roots.map((r) => r.certPem),
  renewUrl: '',
  identity: `spiffe://${TD}/control`,
  leafLifetimeMs: DAY,
  issuer: { subject: '', notBefore: '', notAfter: '', serial: 'ab', root: '' },
  rotation: 'idle' as CaInfo['rotation'],
  pollMs: 60_000,
});

/** A CA issuing under root A, whose trust bundle answer is `bundle` (changed by the test). */
function source(bundle: { now: CaInfo }): CertificateSource {
  const issue = async (service: string, csr: string): Promise<IssuedCertificate> => {
    const leaf = await issueLeaf(rootA, csr, workloadId(TD, 'default', service), { now: new Date(), lifetimeMs: DAY });
    return { certificate: leaf.certPem, chain: leaf.chainPem, roots: bundle.now.roots, identity: leaf.identity, notBefore: leaf.notBefore.toISOString(), notAfter: leaf.notAfter.toISOString(), serial: leaf.serial };
  };
  return {
    issue: (reqs) => Promise.all(reqs.map((r) => issue(r.service, r.csr))),
    renew: (cur, csr) => issue(cur.service, csr),
    info: async () => bundle.now,
  };
}

describe('Identities: own and shared session-ticket keys', () => {
  test('own keys: a root that leaves makes new ones; shared keys: only setTicketKeys changes them, and every context is built again', async () => {
    const bundle = { now: info([rootA, rootB]) };
    const own = new Identities({ source: source(bundle), trustDomain: TD, clock: systemClock, ticketKeys: randomBytes(48) });
    const keys = randomBytes(48);
    const shared = new Identities({ source: source(bundle), trustDomain: TD, clock: systemClock, ticketKeys: keys, ticketKeysShared: true });
    try {
      await own.obtain(['web']);
      await shared.obtain(['web']);
      const ownBefore = own.ticketKeys;
      const ctx = shared.credential('web')?.context;
      own.trust(info([rootA]));
      shared.trust(info([rootA]));
      assert.notDeepEqual(own.ticketKeys, ownBefore, 'own keys: new ones when root B left');
      assert.equal(own.sessionEpoch, 1);
      assert.deepEqual(shared.ticketKeys, keys, 'shared keys: kept until the main thread sends new ones');
      assert.equal(shared.sessionEpoch, 1, 'shared keys: the outbound side still forgets its tickets');
      const next = randomBytes(48);
      const ctxAfterTrust = shared.credential('web')?.context;
      assert.notEqual(ctxAfterTrust, ctx);
      shared.setTicketKeys(next);
      assert.deepEqual(shared.ticketKeys, next);
      assert.notEqual(shared.credential('web')?.context, ctxAfterTrust, 'a new context (an inbound listener swaps to it at its next connection)');
      assert.throws(() => shared.setTicketKeys(randomBytes(32)), /48 bytes, got 32/);
    } finally {
      own.stop();
      shared.stop();
    }
  });
});

/** A stand-in worker: reports (as cold-start messages) its initial keys and every message it receives; on a tap, worker 0 asks for the trust bundle. */
const FAKE_WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
const hex = (u) => Buffer.from(u).toString('hex');
const say = (what) => parentPort.postMessage({ type: 'cold-start', service: JSON.stringify({ worker: workerData.index, ...what }) });
parentPort.on('message', (m) => {
  if (m.type === 'ticket-keys') say({ got: 'ticket-keys', keys: hex(m.keys) });
  else if (m.type === 'ca-reply') say({ got: 'ca-reply', ok: m.ok, roots: m.ok ? m.value.roots.length : null });
  else if (m.type === 'tap' && workerData.index === 0) parentPort.postMessage({ type: 'ca', id: 1, question: { op: 'info', fresh: true } });
  else if (m.type === 'ask' && m.what === 'stop') { parentPort.postMessage({ type: 'reply', id: m.id, ok: true, value: null }); parentPort.close(); }
});
say({ init: workerData.ticketKeys === null ? null : hex(workerData.ticketKeys) });
parentPort.postMessage({ type: 'ready', workloads: [] });
`;

describe('ProxyWorkers: the main thread\'s ticket keys', () => {
  test('every worker starts with them; a rotation reaches every worker, before the answer that tells one of them a root left', async () => {
    const bundle = { now: info([rootA, rootB]) };
    const src = source(bundle);
    const ids = new Identities({ source: src, trustDomain: TD, clock: systemClock, ticketKeys: randomBytes(48) });
    await ids.obtain(['web']);
    const heard: Array<{ worker: number; init?: string | null; got?: string; keys?: string; roots?: number }> = [];
    const pool = await ProxyWorkers.start({
      count: 2,
      clock: systemClock,
      entry: new URL(`data:text/javascript,${encodeURIComponent(FAKE_WORKER)}`),
      init: { id: 'keys-test', logLevel: 'silent', workloads: [], control: null, token: null, domain: 'skein', requestMetrics: true, authzDefault: 'allow', limits: {}, accessLog: null, auditLog: null, trace: null, mtls: null },
      ca: { source: src, identities: ids },
      onColdStart: (line) => heard.push(JSON.parse(line)),
    });
    try {
      const first = ids.ticketKeys.toString('hex');
      await waitFor(() => heard.filter((h) => 'init' in h).length === 2, { what: 'both workers to report their keys' });
      assert.deepEqual(heard.filter((h) => 'init' in h).map((h) => [h.worker, h.init]).sort(), [[0, first], [1, first]], 'WorkerInit carries the main thread\'s keys');

      // Root B leaves the bundle; worker 0's trust poll goes through the main thread.
      bundle.now = info([rootA]);
      const untap = pool.tap({} as never, () => undefined);
      await waitFor(() => heard.some((h) => h.got === 'ca-reply') && heard.filter((h) => h.got === 'ticket-keys').length === 2, { what: `the answer and the keys: ${JSON.stringify(heard)}` });
      untap();
      const rotated = ids.ticketKeys.toString('hex');
      assert.notEqual(rotated, first, 'the main thread rotated its keys (root B left)');
      const w0 = heard.filter((h) => h.worker === 0 && h.got !== undefined).map((h) => h.got);
      assert.deepEqual(w0, ['ticket-keys', 'ca-reply'], 'worker 0 got the new keys before the answer naming the new bundle');
      assert.deepEqual(heard.filter((h) => h.got === 'ticket-keys').map((h) => [h.worker, h.keys]).sort(), [[0, rotated], [1, rotated]], 'every worker got the new keys');
      assert.equal(heard.find((h) => h.got === 'ca-reply')?.roots, 1);

      // Nothing changed since: no keys are sent again.
      pool.shareTicketKeys();
      assert.equal(heard.filter((h) => h.got === 'ticket-keys').length, 2);
    } finally {
      await pool.stop(0);
      ids.stop();
    }
  });
});
