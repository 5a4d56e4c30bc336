/**
 * A proxy authenticates to the control plane with its certificate (issue 13 §5): the control
 * plane's mTLS listener serves the same API as its HTTP listener, and a verified mesh certificate
 * stands for a token of scope "proxy" bound to its workload's service. A real `skein control`, a
 * real `skein proxy` given only a join token (no API token), and raw node:https clients with real
 * certificates for the refusals.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { request } from 'node:https';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { mintJoinToken, startProxy, waitForProxyReady } from './proxy-helpers.js';
import { createCsr, createIntermediate, createRoot, generateKeyPair, issueLeaf } from '../src/identity/certs.js';

const DAY = 86_400_000;
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

let cp: ControlProcess;
let auditFile: string;
let info: { renewUrl: string; roots: string[]; trustDomain: string };
/** A leaf for "web" from the mesh CA, with its key. */
let web: { key: string; cert: string };

interface Reply {
  status: number;
  body: any;
}

/** A call on the mTLS listener, presenting `client` (or no certificate). */
function overMtls(method: string, path: string, client: { key: string; cert: string } | null, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const u = new URL(info.renewUrl);
  const payload = body === undefined ? null : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, path, method, ca: info.roots, ...(client ?? {}), agent: false,
        // The Host of another name: the server's certificate is still checked against the roots.
        ...(headers['host'] === undefined ? {} : { servername: 'localhost' }), headers: { ...headers, ...(payload === null ? {} : { 'content-type': 'application/json' }) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text === '' ? null : JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(payload ?? undefined);
  });
}

before(async () => {
  const dir = await tempDir('skein-control-mtls-');
  cleanups.push(dir.remove);
  auditFile = join(dir.path, 'audit.jsonl');
  cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off', '--audit-log', auditFile] });
  cleanups.push(() => cp.stop());
  info = (await api(cp.http, 'GET', '/v1/ca')).body;
  const kp = await generateKeyPair();
  const token = await mintJoinToken(cp.http, 'tester', ['web']);
  const r = await api(cp.http, 'POST', '/v1/ca/certificates', { service: 'web', csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${token}` });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  web = { key: kp.privateKeyPem, cert: [r.body.certificate, ...r.body.chain].join('') };
});

describe("the control plane's mTLS listener: a mesh certificate is a proxy's credential", () => {
  test('a skein proxy given only a join token announces itself with its certificate', async () => {
    const token = await mintJoinToken(cp.http, 'cert-only', ['users']);
    // No API token at all: SKEIN_TOKEN empty, no --token.
    const p = await startProxy({ control: cp.http, workloads: ['name=users-1,service=users,outbound=127.0.0.1:0'], args: ['--mtls', 'strict', '--join-token', token, '--id', 'cert-only'], env: { SKEIN_TOKEN: '' } });
    cleanups.push(() => p.stop());
    await waitForProxyReady(p);
    const listed = await waitFor(
      async () => {
        const r = await api(cp.http, 'GET', '/v1/proxies');
        return (r.body.proxies as Array<{ id: string; announcedBy: string | null; workloads: Array<{ service: string }> }>).find((x) => x.id === 'cert-only') ?? false;
      },
      { timeoutMs: 15_000, what: 'the proxy listed in GET /v1/proxies' },
    );
    assert.ok(listed !== false);
    assert.equal(listed.announcedBy, `spiffe://${info.trustDomain}/ns/default/sa/users`, 'announced with the certificate of its workload');
    assert.deepEqual(listed.workloads.map((w) => w.service), ['users']);
    assert.ok(!p.logs.some((l) => l.includes('could not announce')), p.logs.join('\n'));
    // Stopping it removes it (the DELETE goes over mTLS too).
    await p.stop();
    await waitFor(async () => !((await api(cp.http, 'GET', '/v1/proxies')).body.proxies as Array<{ id: string }>).some((x) => x.id === 'cert-only'), { timeoutMs: 5000, what: 'the stopped proxy gone from GET /v1/proxies' });
  });

  test("the certificate may register its own service's instances, not another's, and has no automation rights", async () => {
    const own = await overMtls('PUT', '/v1/services/web/instances/web-1', web, { address: '127.0.0.1', port: 9001 });
    assert.equal(own.status, 201, JSON.stringify(own.body));
    const listed = await api(cp.http, 'GET', '/v1/services/web/instances');
    assert.deepEqual((listed.body.instances as Array<{ id: string; port: number }>).map((i) => [i.id, i.port]), [['web-1', 9001]]);

    const other = await overMtls('PUT', '/v1/services/users/instances/u-1', web, { address: '127.0.0.1', port: 9002 });
    assert.equal(other.status, 403);
    assert.equal(other.body.code, 'SKEIN_E_FORBIDDEN');
    assert.equal(other.body.message, `the mesh certificate of spiffe://${info.trustDomain}/ns/default/sa/web may change instances of "web" only, not of "users"`);

    const define = await overMtls('PUT', '/v1/services/web', web, { name: 'web' });
    assert.equal(define.status, 403);
    assert.equal(define.body.message, `the mesh certificate of spiffe://${info.trustDomain}/ns/default/sa/web has scope "proxy"; PUT /v1/services/:service needs a token with scope "automation" or "admin"`);

    // The write is audited with the certificate as its actor.
    const lines = (await readFile(auditFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { event: string; actor: string | null; rawPath: string; scope: string | null });
    const write = lines.find((l) => l.event === 'control-write' && l.rawPath === '/v1/services/web/instances/web-1');
    assert.ok(write !== undefined, 'the registration is in the audit log');
    assert.deepEqual([write.actor, write.scope], [`spiffe://${info.trustDomain}/ns/default/sa/web`, 'proxy']);
    assert.ok(lines.some((l) => l.event === 'api-token-refused' && l.rawPath === '/v1/services/users/instances/u-1' && l.actor === `spiffe://${info.trustDomain}/ns/default/sa/web`));
  });

  test('without a certificate, or with one of a foreign CA, the mTLS listener refuses writes with the reason; reads from loopback stay open', async () => {
    const none = await overMtls('PUT', '/v1/proxies/nobody', null, { admin: '127.0.0.1:1', workloads: [] });
    assert.equal(none.status, 401);
    assert.equal(none.body.code, 'SKEIN_E_UNAUTHENTICATED');
    assert.equal(none.body.message, `PUT /v1/proxies/:id needs a token with scope "proxy" or "admin", or a mesh certificate on the control plane's mTLS listener: none was sent`);

    const now = new Date();
    const root = await createRoot(info.trustDomain, { now, lifetimeMs: DAY });
    const inter = await createIntermediate(root, { now, lifetimeMs: DAY });
    const kp = await generateKeyPair();
    const foreign = await issueLeaf(inter, await createCsr(kp.privateKeyPem), `spiffe://${info.trustDomain}/ns/default/sa/web`, { now, lifetimeMs: DAY });
    const impostor = await overMtls('PUT', '/v1/services/web/instances/web-2', { key: kp.privateKeyPem, cert: foreign.certPem + foreign.chainPem.join('') }, { address: '127.0.0.1', port: 9003 });
    assert.equal(impostor.status, 401);
    assert.equal(impostor.body.code, 'SKEIN_E_UNAUTHENTICATED');
    assert.match(impostor.body.message, /^PUT \/v1\/services\/:service\/instances\/:id needs a token .*: the client certificate was refused: UNABLE_TO_GET_ISSUER_CERT\w* \(it does not chain to this mesh's roots\)$/);
    assert.equal((await api(cp.http, 'GET', '/v1/services/web/instances')).body.instances.length, 1, 'nothing registered by the impostor');

    const read = await overMtls('GET', '/v1/ca', null);
    assert.equal(read.status, 200);
    assert.equal(read.body.renewUrl, info.renewUrl);
    // A proxy of another host names the listener by its address: no DNS-rebinding guard over TLS
    // (a rebound page cannot complete a handshake with the mesh's certificate); the HTTP API keeps it.
    const byName = await overMtls('GET', '/v1/ca', null, undefined, { host: 'control.example:7401' });
    assert.equal(byName.status, 200, JSON.stringify(byName.body));
    const plain = await new Promise<Reply>((resolve, reject) => {
      const u = new URL(cp.http);
      const req = httpRequest({ host: u.hostname, port: u.port, path: '/v1/ca', headers: { host: 'control.example:7400' }, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(plain.status, 421, JSON.stringify(plain.body));
    assert.equal(plain.body.code, 'SKEIN_E_FOREIGN_HOST');
  });

  test('renewal is only on the mTLS listener: the HTTP API answers SKEIN_E_CLIENT_CERT_REQUIRED naming where', async () => {
    const kp = await generateKeyPair();
    const r = await api(cp.http, 'POST', '/v1/ca/renew', { csr: await createCsr(kp.privateKeyPem) });
    assert.equal(r.status, 401);
    assert.equal(r.body.code, 'SKEIN_E_CLIENT_CERT_REQUIRED');
    assert.equal(r.body.message, "renewal needs a mesh certificate as the TLS client certificate, on the control plane's mTLS listener (GET /v1/ca: renewUrl), not on its HTTP API");
    const renewed = await overMtls('POST', '/v1/ca/renew', web, { csr: await createCsr(kp.privateKeyPem) });
    assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
    assert.equal(renewed.body.identity, `spiffe://${info.trustDomain}/ns/default/sa/web`);
  });
});
