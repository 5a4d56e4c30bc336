/**
 * The CA end to end: a real `skein control` process, join tokens and CSRs over its HTTP API, and
 * renewal over real mTLS (node:https) with real certificates, the negatives of issue 13 section 6.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { api, metricSample, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { createCsr, createIntermediate, createRoot, generateKeyPair, issueLeaf, peerIdentity, type KeyPair } from '../src/identity/certs.js';

const DAY = 86_400_000;
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function control(args: string[] = [], dataDir?: string): Promise<ControlProcess> {
  let dir = dataDir;
  if (dir === undefined) {
    const d = await tempDir('skein-ca-');
    cleanups.push(d.remove);
    dir = d.path;
  }
  const cp = await startControl({ dataDir: dir, args });
  cleanups.push(() => cp.stop());
  return cp;
}

async function mint(cp: ControlProcess, services: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const r = await api(cp.http, 'POST', '/v1/ca/tokens', { proxy: 'proxy-1', services, ...extra });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.token as string;
}

async function csrFor(): Promise<{ kp: KeyPair; csr: string }> {
  const kp = await generateKeyPair();
  return { kp, csr: await createCsr(kp.privateKeyPem) };
}

const issue = (cp: ControlProcess, token: string | null, body: unknown) => api(cp.http, 'POST', '/v1/ca/certificates', body, token === null ? {} : { authorization: `Bearer ${token}` });

interface Reply {
  status: number;
  body: any;
  error: string | undefined;
  serverCert: Buffer | null;
}

/** POST /v1/ca/renew over mTLS, presenting `client` (or no certificate). */
function renew(url: string, roots: string[], client: { key: string; cert: string } | null, body: unknown): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: '/v1/ca/renew',
        method: 'POST',
        ca: roots,
        ...(client ?? {}),
        agent: false,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          const serverCert = (res.socket as TLSSocket).getPeerCertificate?.()?.raw ?? null;
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), error: res.headers['x-skein-error'] as string | undefined, serverCert });
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** node:crypto checks the chain: leaf <- chain... <- one of the roots. */
function verifyChain(leafPem: string, chain: string[], roots: string[]): void {
  let child = new X509Certificate(leafPem);
  for (const p of chain) {
    const parent = new X509Certificate(p);
    assert.ok(child.checkIssued(parent) && child.verify(parent.publicKey), `${parent.subject} did not sign ${child.subject}`);
    child = parent;
  }
  assert.ok(roots.some((r) => child.checkIssued(new X509Certificate(r)) && child.verify(new X509Certificate(r).publicKey)), 'the chain does not reach a root');
}

test('the CA: join tokens, CSRs, renewal over mTLS, and every refusal with its code; the root survives a restart', async () => {
  const cp = await control();
  const info = (await api(cp.http, 'GET', '/v1/ca')).body;
  assert.equal(info.trustDomain, 'skein');
  assert.equal(info.identity, 'spiffe://skein/ns/skein-system/sa/control');
  assert.equal(info.leafLifetimeMs, DAY);
  assert.equal(info.roots.length, 1);
  assert.match(info.renewUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.match(info.issuer.subject, /^CN=Skein intermediate CA skein/);

  // A token for two services, one request for both: two leaves, each its own identity.
  const token = await mint(cp, ['web', 'api']);
  const web = await csrFor();
  const apiKey = await csrFor();
  const body = { requests: [{ service: 'web', csr: web.csr }, { service: 'api', csr: apiKey.csr }] };
  const r = await issue(cp, token, body);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.certificates.length, 2);
  const [w, a] = r.body.certificates;
  assert.equal(w.identity, 'spiffe://skein/ns/default/sa/web');
  assert.equal(a.identity, 'spiffe://skein/ns/default/sa/api');
  assert.deepEqual(w.roots, info.roots);
  const wc = new X509Certificate(w.certificate);
  assert.equal(wc.subjectAltName, 'URI:spiffe://skein/ns/default/sa/web');
  assert.equal(wc.ca, false);
  assert.ok(wc.checkPrivateKey((await import('node:crypto')).createPrivateKey(web.kp.privateKeyPem)), 'the leaf is for the proxy\'s own key');
  assert.equal(Date.parse(w.notAfter) - Date.parse(w.notBefore), DAY + 20_000);
  assert.equal(new Date(wc.validTo).getTime(), Date.parse(w.notAfter));
  verifyChain(w.certificate, w.chain, info.roots);

  // Replaying the token: refused, whatever it asks for.
  const replay = await issue(cp, token, body);
  assert.equal(replay.status, 401);
  assert.equal(replay.headers.get('x-skein-error'), 'SKEIN_E_JOIN_TOKEN_USED');
  assert.match(replay.body.message, /already used at/);

  // No token, an unknown token.
  const none = await issue(cp, null, { service: 'web', csr: web.csr });
  assert.deepEqual([none.status, none.body.code], [401, 'SKEIN_E_JOIN_TOKEN_MISSING']);
  const unknown = await issue(cp, 'A'.repeat(43), { service: 'web', csr: web.csr });
  assert.deepEqual([unknown.status, unknown.body.code], [401, 'SKEIN_E_JOIN_TOKEN_UNKNOWN']);

  // A token used for another service: refused, and the token is not spent by the refusal.
  const webOnly = await mint(cp, ['web']);
  const other = await issue(cp, webOnly, { service: 'billing', csr: web.csr });
  assert.deepEqual([other.status, other.body.code], [403, 'SKEIN_E_JOIN_TOKEN_SERVICE']);
  assert.equal(other.body.message, 'the join token of proxy proxy-1 is bound to web, not to billing');

  // A CSR whose signature does not verify (A's key, signed by B).
  const x509 = await import('@peculiar/x509');
  const { createPrivateKey, createPublicKey } = await import('node:crypto');
  const ka = createPrivateKey((await generateKeyPair()).privateKeyPem);
  const kb = createPrivateKey((await generateKeyPair()).privateKeyPem);
  const ec = { name: 'ECDSA', namedCurve: 'P-256' };
  const forgedCsr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { publicKey: createPublicKey(ka).toCryptoKey(ec, true, ['verify']), privateKey: kb.toCryptoKey(ec, false, ['sign']) } as any,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as any,
  });
  const bad = await issue(cp, webOnly, { service: 'web', csr: forgedCsr.toString('pem') });
  assert.deepEqual([bad.status, bad.body.code], [400, 'SKEIN_E_BAD_CSR']);
  assert.match(bad.body.message, /signature does not verify/);
  // The same token, with a good CSR, still works: refusals do not spend it.
  const ok = await issue(cp, webOnly, { service: 'web', csr: web.csr });
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  assert.equal(ok.body.identity, 'spiffe://skein/ns/default/sa/web');
  assert.equal(ok.body.service, 'web');

  // An expired token (ttl 1s): polled with a service it is not bound to (refused, so never
  // spent) until the refusal turns into "expired", then the bound service is refused too.
  const short = await mint(cp, ['web'], { ttl: '1s' });
  await waitFor(async () => (await issue(cp, short, { service: 'zzz', csr: web.csr })).body.code === 'SKEIN_E_JOIN_TOKEN_EXPIRED', { timeoutMs: 5000, intervalMs: 100, what: 'the 1 s token to expire' });
  const expired = await issue(cp, short, { service: 'web', csr: web.csr });
  assert.deepEqual([expired.status, expired.body.code], [401, 'SKEIN_E_JOIN_TOKEN_EXPIRED']);

  // Renewal with the current leaf over mTLS: a new leaf for the same identity, from a server
  // that proves the control plane's identity.
  const client = { key: web.kp.privateKeyPem, cert: w.certificate + w.chain.join('') };
  const next = await csrFor();
  const renewed = await renew(info.renewUrl, info.roots, client, { csr: next.csr });
  assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
  assert.equal(renewed.body.identity, 'spiffe://skein/ns/default/sa/web');
  assert.notEqual(renewed.body.serial, w.serial);
  assert.ok(new X509Certificate(renewed.body.certificate).checkPrivateKey(createPrivateKey(next.kp.privateKeyPem)));
  verifyChain(renewed.body.certificate, renewed.body.chain, info.roots);
  const server = peerIdentity(renewed.serverCert as Buffer);
  assert.ok('identity' in server && server.identity === 'spiffe://skein/ns/skein-system/sa/control', JSON.stringify(server));
  // The renewal ignores what the CSR asks for: a CSR asking for "api" still gets "web".
  const greedy = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=api',
    keys: { publicKey: createPublicKey(ka).toCryptoKey(ec, true, ['verify']), privateKey: ka.toCryptoKey(ec, false, ['sign']) } as any,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as any,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://skein/ns/default/sa/api' }])],
  });
  const asked = await renew(info.renewUrl, info.roots, client, { csr: greedy.toString('pem') });
  assert.equal(asked.status, 201);
  assert.equal(new X509Certificate(asked.body.certificate).subjectAltName, 'URI:spiffe://skein/ns/default/sa/web');

  // Renewal without a client certificate.
  const anon = await renew(info.renewUrl, info.roots, null, { csr: next.csr });
  assert.deepEqual([anon.status, anon.error, anon.body.code], [401, 'SKEIN_E_CLIENT_CERT_REQUIRED', 'SKEIN_E_CLIENT_CERT_REQUIRED']);

  // A foreign CA presenting the same SPIFFE ID.
  const now = new Date();
  const foreignRoot = await createRoot('skein', { now, lifetimeMs: DAY });
  const foreignInter = await createIntermediate(foreignRoot, { now, lifetimeMs: DAY });
  const foreign = await issueLeaf(foreignInter, next.csr, 'spiffe://skein/ns/default/sa/web', { now, lifetimeMs: DAY });
  const impostor = await renew(info.renewUrl, info.roots, { key: next.kp.privateKeyPem, cert: foreign.certPem + foreign.chainPem.join('') }, { csr: next.csr });
  assert.deepEqual([impostor.status, impostor.body.code], [401, 'SKEIN_E_CLIENT_CERT_REFUSED']);
  assert.match(impostor.body.message, /UNABLE_TO_GET_ISSUER_CERT|does not chain to this mesh's roots/);

  // Bad bodies on the renewal route are named.
  const noCsr = await renew(info.renewUrl, info.roots, client, { csr: 'nope' });
  assert.deepEqual([noCsr.status, noCsr.body.code], [400, 'SKEIN_E_BAD_CSR']);

  // Metrics: issued by kind, refusals by reason.
  const metrics = await (await fetch(`${cp.http}/metrics`)).text();
  assert.equal(metricSample(metrics, 'skein_ca_certificates_issued_total{kind="join"}'), 3);
  assert.equal(metricSample(metrics, 'skein_ca_certificates_issued_total{kind="renew"}'), 2);
  assert.equal(metricSample(metrics, 'skein_ca_certificates_issued_total{kind="serving"}'), 1);
  assert.equal(metricSample(metrics, 'skein_ca_refusals_total{reason="SKEIN_E_JOIN_TOKEN_USED"}'), 1);
  assert.equal(metricSample(metrics, 'skein_ca_refusals_total{reason="SKEIN_E_CLIENT_CERT_REFUSED"}'), 1);
  assert.equal(metricSample(metrics, 'skein_ca_refusals_total{reason="SKEIN_E_CLIENT_CERT_REQUIRED"}'), 1);
  assert.equal(metricSample(metrics, 'skein_ca_issuer_expiry_timestamp_seconds'), Date.parse(info.issuer.notAfter) / 1000);
  // Security events are logged, the token never.
  const logged = cp.logs.filter((l) => l.includes('"security"')).map((l) => JSON.parse(l).security.type);
  assert.ok(logged.includes('token-minted') && logged.includes('token-used') && logged.includes('certificate-renewed') && logged.includes('token-refused'), logged.join(','));
  assert.ok(!cp.logs.some((l) => l.includes(token)), 'a join token appears in the log');

  // The CLI: skein ca status and skein ca token.
  const status = await skein(['ca', 'status', '--control', cp.http]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^trust domain {4}skein$/m);
  assert.match(status.stdout, new RegExp(`^mTLS listener {3}${info.renewUrl.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(status.stdout, /^leaf lifetime {3}24h$/m);
  assert.match(status.stdout, /^CN=Skein root CA skein, O=skein {2}[0-9a-f]+ {2}20\d\d-/m);
  const minted = await skein(['ca', 'token', '--control', cp.http, '--proxy', 'p9', '--service', 'web,api']);
  assert.equal(minted.code, 0, minted.stderr);
  assert.match(minted.stdout, /^[A-Za-z0-9_-]{43}\n$/);
  assert.match(minted.stderr, /join token for proxy p9 \(web, api\), single use, expires /);
  const badTtl = await skein(['ca', 'token', '--control', cp.http, '--proxy', 'p9', '--service', 'web', '--ttl', '2h']);
  assert.equal(badTtl.code, 1);
  assert.match(badTtl.stderr, /ttl must be a duration from 1s to 1h, got "2h" .*SKEIN_E_VALIDATION/);

  // A restart on the same data dir keeps the root and the intermediate; the old leaf still renews.
  assert.equal(await cp.stop(), 0);
  const again = await control([], cp.dataDir);
  const info2 = (await api(again.http, 'GET', '/v1/ca')).body;
  assert.deepEqual(info2.roots, info.roots);
  assert.equal(info2.issuer.serial, info.issuer.serial);
  const afterRestart = await renew(info2.renewUrl, info2.roots, client, { csr: next.csr });
  assert.equal(afterRestart.status, 201, JSON.stringify(afterRestart.body));
  // The spent token stays spent across the restart.
  const replay2 = await issue(again, token, body);
  assert.equal(replay2.body.code, 'SKEIN_E_JOIN_TOKEN_USED');
});

test('an operator-supplied root: an expired leaf of it cannot renew (CERT_HAS_EXPIRED)', async () => {
  const d = await tempDir('skein-ca-op-');
  cleanups.push(d.remove);
  const now = new Date();
  const root = await createRoot('shop', { now: new Date(now.getTime() - 2 * DAY), lifetimeMs: 365 * DAY });
  await writeFile(join(d.path, 'root.pem'), root.certPem);
  await writeFile(join(d.path, 'root.key'), root.keyPem, { mode: 0o600 });
  const cp = await control(['--trust-domain', 'shop', '--ca-cert', join(d.path, 'root.pem'), '--ca-key', join(d.path, 'root.key'), '--leaf-lifetime', '1m'], join(d.path, 'data'));
  const info = (await api(cp.http, 'GET', '/v1/ca')).body;
  assert.deepEqual(info.roots.map((p: string) => p.trim()), [root.certPem.trim()]);
  assert.equal(info.leafLifetimeMs, 60_000);
  // The CA's leaves live 1 minute.
  const token = await mint(cp, ['web']);
  const web = await csrFor();
  const r = await issue(cp, token, { service: 'web', csr: web.csr });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.identity, 'spiffe://shop/ns/default/sa/web');
  assert.equal(Date.parse(r.body.notAfter) - Date.parse(r.body.notBefore), 80_000);
  verifyChain(r.body.certificate, r.body.chain, info.roots);
  // A leaf of the same root (through another intermediate) that expired yesterday.
  const inter = await createIntermediate(root, { now: new Date(now.getTime() - 2 * DAY), lifetimeMs: 30 * DAY });
  const old = await issueLeaf(inter, web.csr, 'spiffe://shop/ns/default/sa/web', { now: new Date(now.getTime() - 2 * DAY), lifetimeMs: DAY });
  const refused = await renew(info.renewUrl, info.roots, { key: web.kp.privateKeyPem, cert: old.certPem + old.chainPem.join('') }, { csr: web.csr });
  assert.deepEqual([refused.status, refused.body.code], [401, 'SKEIN_E_CLIENT_CERT_REFUSED']);
  assert.match(refused.body.message, /CERT_HAS_EXPIRED/);
  // The same chain, not expired, renews (the refusal was the expiry, not the chain).
  const fresh = await issueLeaf(inter, web.csr, 'spiffe://shop/ns/default/sa/web', { now, lifetimeMs: DAY });
  const accepted = await renew(info.renewUrl, info.roots, { key: web.kp.privateKeyPem, cert: fresh.certPem + fresh.chainPem.join('') }, { csr: web.csr });
  assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
});

test('an operator intermediate that has expired: the control plane starts, and issuing is refused with SKEIN_E_CA_UNAVAILABLE', async () => {
  const d = await tempDir('skein-ca-exp-');
  cleanups.push(d.remove);
  const then = new Date(Date.now() - 10 * DAY);
  const root = await createRoot('skein', { now: then, lifetimeMs: 365 * DAY });
  const inter = await createIntermediate(root, { now: then, lifetimeMs: DAY });
  await writeFile(join(d.path, 'inter.pem'), inter.certPem);
  await writeFile(join(d.path, 'inter.key'), inter.keyPem, { mode: 0o600 });
  await writeFile(join(d.path, 'chain.pem'), root.certPem);
  const cp = await control(['--ca-cert', join(d.path, 'inter.pem'), '--ca-key', join(d.path, 'inter.key'), '--ca-chain', join(d.path, 'chain.pem')], join(d.path, 'data'));
  const info = (await api(cp.http, 'GET', '/v1/ca')).body;
  assert.equal(info.renewUrl, '');
  assert.equal(info.issuer.notAfter, inter.notAfter.toISOString());
  const token = await mint(cp, ['web']);
  const r = await issue(cp, token, { service: 'web', csr: (await csrFor()).csr });
  assert.deepEqual([r.status, r.headers.get('x-skein-error')], [503, 'SKEIN_E_CA_UNAVAILABLE']);
  assert.match(r.body.message, /expired at/);
  assert.ok(cp.logs.some((l) => l.includes('the mTLS listener is not started')));

  // Bad CA files are refused at start with a sentence naming what is wrong.
  const wrongKey = await skein(['control', '--data-dir', 'none', '--http', '127.0.0.1:0', '--dns', 'off', '--ca-cert', join(d.path, 'inter.pem'), '--ca-key', join(d.path, 'inter.pem')]);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stderr, /the CA key is not a PEM private key.*SKEIN_E_BAD_CA/);
  const noChain = await skein(['control', '--data-dir', 'none', '--http', '127.0.0.1:0', '--dns', 'off', '--ca-cert', join(d.path, 'inter.pem'), '--ca-key', join(d.path, 'inter.key')]);
  assert.equal(noChain.code, 1);
  assert.match(noChain.stderr, /does not end in a self-signed root.*SKEIN_E_BAD_CA/);
  const half = await skein(['control', '--data-dir', 'none', '--ca-cert', join(d.path, 'inter.pem')]);
  assert.equal(half.code, 2);
  assert.match(half.stderr, /--ca-cert and --ca-key go together/);
});
