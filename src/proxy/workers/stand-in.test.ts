/**
 * ProxyWorkers over real worker threads running stand-in scripts that speak the real protocol
 * (workers/protocol.ts), with real certificates and Identities:
 *
 * - as skein up's proxy (MeshProxy): a workload goes to worker 0 first and to the others on the
 *   port it bound; a worker that cannot add it makes every worker remove it, and the caller gets
 *   that worker's SkeinError (code and field kept across the thread); in-flight counts are
 *   summed; an endpoint is gone when it is gone from every worker;
 * - TLS session-ticket keys: every worker starts with the main thread's keys, a shared-keys
 *   Identities makes none of its own when a root leaves the bundle (it takes the main thread's:
 *   setTicketKeys builds every context again), and a rotation reaches every worker before the
 *   trust poll's answer that told one of them about it.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { createRoot, issueLeaf, type Issuer } from '../../identity/certs.js';
import { workloadId } from '../../identity/spiffe.js';
import type { CaInfo, IssuedCertificate } from '../../api/ca.js';
import { systemClock } from '../../core/clock.js';
import { Identities, type CertificateSource } from '../../identity/mtls/identities.js';
import { ProxyWorkers } from '../workers.js';
import { isSkeinError } from '../../core/errors.js';

/** What a stand-in worker is started with (it reads only its index and keys). */
const INIT = { id: '', logLevel: 'silent', workloads: [], control: null, token: null, domain: 'skein', requestMetrics: true, authzDefault: 'allow', limits: {}, accessLog: null, auditLog: null, trace: null, mtls: null } as const;

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
const KEYS_WORKER = `
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
    const heard: Array<{ worker: number; init?: string | null; got?: string; keys?: string; roots?: number }> = [];
    const pool = await ProxyWorkers.start({
      count: 2,
      clock: systemClock,
      entry: new URL(`data:text/javascript,${encodeURIComponent(KEYS_WORKER)}`),
      init: { ...INIT, id: 'keys-test' },
      ca: { source: src, trustDomain: TD },
      onColdStart: (line) => heard.push(JSON.parse(line)),
    });
    try {
      await waitFor(() => heard.filter((h) => 'init' in h).length === 2, { what: 'both workers to report their keys' });
      const inits = heard.filter((h) => 'init' in h).map((h) => h.init);
      const first = inits[0] as string;
      assert.match(first, /^[0-9a-f]{96}$/, 'WorkerInit carries 48 bytes of ticket keys');
      assert.deepEqual(inits, [first, first], 'both workers start with the main thread\'s keys');

      // Root B leaves the bundle; worker 0's trust poll goes through the main thread.
      bundle.now = info([rootA]);
      let untap = pool.tap({} as never, () => undefined);
      await waitFor(() => heard.some((h) => h.got === 'ca-reply') && heard.filter((h) => h.got === 'ticket-keys').length === 2, { what: `the answer and the keys: ${JSON.stringify(heard)}` });
      untap();
      const sent = heard.filter((h) => h.got === 'ticket-keys');
      const rotated = sent[0]?.keys as string;
      assert.notEqual(rotated, first, 'the main thread rotated its keys (root B left)');
      const w0 = heard.filter((h) => h.worker === 0 && h.got !== undefined).map((h) => h.got);
      assert.deepEqual(w0, ['ticket-keys', 'ca-reply'], 'worker 0 got the new keys before the answer naming the new bundle');
      assert.deepEqual(sent.map((h) => [h.worker, h.keys]).sort(), [[0, rotated], [1, rotated]], 'every worker got the new keys');
      assert.equal(heard.find((h) => h.got === 'ca-reply')?.roots, 1);

      // Nothing changed since: the next answer sends no keys again.
      untap = pool.tap({} as never, () => undefined);
      await waitFor(() => heard.filter((h) => h.got === 'ca-reply').length === 2, { what: 'the second answer' });
      untap();
      assert.equal(heard.filter((h) => h.got === 'ticket-keys').length, 2);
    } finally {
      await pool.stop(0);
    }
  });
});

/**
 * Worker 0 binds port 0 as 4321; worker 1 refuses workloads named "bad" (address in use) and has
 * 2 requests in flight to "web" (worker 0: 3); "gone" answers false on worker 1; only worker 1 still
 * picks web-2, and only worker 1 is not ready. Every question is reported as a cold-start line.
 */
const MESH_WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
const i = workerData.index;
const say = (what) => parentPort.postMessage({ type: 'cold-start', service: JSON.stringify({ worker: i, ...what }) });
const reply = (id, value) => parentPort.postMessage({ type: 'reply', id, ok: true, value });
parentPort.on('message', (m) => {
  if (m.type !== 'ask') return;
  if (m.what === 'add') {
    say({ add: m.spec.name, port: m.spec.inbound.port });
    if (i === 1 && m.spec.name === 'bad') return parentPort.postMessage({ type: 'reply', id: m.id, ok: false, error: 'bad inbound listener: cannot listen on 127.0.0.1:4321: EADDRINUSE', code: 'SKEIN_E_ADDRESS_IN_USE', field: 'inbound' });
    return reply(m.id, { name: m.spec.name, service: m.spec.name, outbound: null, inbound: '127.0.0.1:' + (m.spec.inbound.port || 4321), app: '127.0.0.1:9', pin: null });
  }
  if (m.what === 'remove') { say({ remove: m.name, graceMs: m.graceMs }); return reply(m.id, null); }
  if (m.what === 'in-flight') return reply(m.id, m.service === 'web' ? (i === 0 ? 3 : 2) : null);
  if (m.what === 'gone') return reply(m.id, i === 0 || m.key !== 'web/web-2');
  if (m.what === 'picks') return reply(m.id, i === 1 && m.key === 'web-2');
  if (m.what === 'readiness') return reply(m.id, { ready: i === 0, source: 'live', stateSavedAt: null });
  if (m.what === 'stop') { reply(m.id, null); parentPort.close(); }
});
parentPort.postMessage({ type: 'ready', workloads: [] });
`;

async function pool(heard: Array<Record<string, unknown>>): Promise<ProxyWorkers> {
  return ProxyWorkers.start({
    count: 2,
    clock: systemClock,
    entry: new URL(`data:text/javascript,${encodeURIComponent(MESH_WORKER)}`),
    init: { ...INIT, id: 'mesh-test' },
    onColdStart: (line) => heard.push(JSON.parse(line)),
  });
}

describe('ProxyWorkers as skein up\'s proxy', () => {
  test('a workload: worker 0 first (port 0 resolved), the others on its port; one that fails in a worker is removed from all, with that worker\'s error', async () => {
    const heard: Array<Record<string, unknown>> = [];
    const p = await pool(heard);
    try {
      const info = await p.addWorkload({ name: 'good', inbound: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: 9 } });
      assert.equal(info.inbound, '127.0.0.1:4321');
      await waitFor(() => heard.filter((h) => h['add'] === 'good').length === 2, { what: 'both adds reported' });
      assert.deepEqual(heard.filter((h) => h['add'] === 'good').map((h) => [h['worker'], h['port']]), [[0, 0], [1, 4321]], 'worker 0 bound port 0 first; worker 1 the port it got');
      assert.deepEqual(p.workloadInfo().map((w) => w.name), ['good']);

      const err = await p.addWorkload({ name: 'bad', inbound: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: 9 } }).then(
        () => assert.fail('adding "bad" resolved'),
        (e: unknown) => e,
      );
      assert.ok(isSkeinError(err), String(err));
      assert.equal(err.code, 'SKEIN_E_ADDRESS_IN_USE');
      assert.equal(err.field, 'inbound');
      assert.match(err.message, /^proxy worker 1: bad inbound listener: cannot listen on 127\.0\.0\.1:4321: EADDRINUSE$/);
      await waitFor(() => heard.filter((h) => h['remove'] === 'bad').length === 2, { what: 'both removes reported' });
      assert.deepEqual(heard.filter((h) => h['remove'] === 'bad').map((h) => [h['worker'], h['graceMs']]).sort(), [[0, 0], [1, 0]], 'every worker removed it at once');
      assert.deepEqual(p.workloadInfo().map((w) => w.name), ['good'], 'the failed workload is not listed');

      await p.removeWorkload('good', 250);
      assert.deepEqual(heard.filter((h) => h['remove'] === 'good').map((h) => [h['worker'], h['graceMs']]).sort(), [[0, 250], [1, 250]]);
      assert.deepEqual(p.workloadInfo(), []);
    } finally {
      await p.stop(0);
    }
  });

  test('in flight: the workers\' sum (null when no worker has a client); an endpoint is gone only when gone from every worker', async () => {
    const p = await pool([]);
    try {
      assert.equal(await p.inFlight('web'), 5, 'the sum 3 + 2');
      assert.equal(await p.inFlight('other'), null, 'every worker: null');
      assert.equal(await p.whenEndpointGone('web', 'web/web-1', 100), true);
      assert.equal(await p.whenEndpointGone('web', 'web/web-2', 100), false, 'worker 1 still routes to web-2');
      assert.equal(p.metrics.id, 'mesh-test');
      assert.equal(await p.picks('web', 'web-2'), true, 'one worker still routing to web-2 is enough (drains wait for all)');
      assert.equal(await p.picks('web', 'web-1'), false);
      assert.equal((await p.readiness()).ready, false, 'ready only when every worker is');
    } finally {
      await p.stop(0);
    }
  });
});

describe('ProxyWorkers: a worker that cannot start', () => {
  test('start() rejects with the worker\'s SkeinError (its code and field kept across the port), and no worker is left running', async () => {
    const FAILING = `
import { parentPort, workerData } from 'node:worker_threads';
if (workerData.index === 1) parentPort.postMessage({ type: 'failed', ok: false, error: 'web-1 inbound listener: cannot listen on 127.0.0.1:9: EACCES', code: 'SKEIN_E_ADDRESS_IN_USE', field: 'inbound' });
else parentPort.postMessage({ type: 'ready', workloads: [] });
parentPort.on('message', (m) => { if (m.type === 'ask' && m.what === 'stop') { parentPort.postMessage({ type: 'reply', id: m.id, ok: true, value: null }); parentPort.close(); } });
`;
    const err = await ProxyWorkers.start({ count: 2, clock: systemClock, entry: new URL(`data:text/javascript,${encodeURIComponent(FAILING)}`), init: { ...INIT, id: 'failing' } }).then(
      () => assert.fail('start() resolved'),
      (e: unknown) => e,
    );
    assert.ok(isSkeinError(err), `a SkeinError: ${String(err)}`);
    assert.deepEqual([err.code, err.field, err.message], ['SKEIN_E_ADDRESS_IN_USE', 'inbound', 'web-1 inbound listener: cannot listen on 127.0.0.1:9: EACCES']);
  });
});
