import { test } from 'node:test';
import assert from 'node:assert/strict';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, webcrypto, X509Certificate } from 'node:crypto';
import { SkeinError } from '../core/errors.js';
import { createCsr, createIntermediate, createRoot, generateKeyPair, issueLeaf, loadIssuer, peerIdentity, type Issuer } from './certs.js';
import { renewalDelayMs } from './renewal.js';

const T0 = new Date('2030-01-01T00:00:00.000Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const ID = 'spiffe://shop/ns/default/sa/web';

let cached: { root: Issuer; inter: Issuer } | null = null;
async function ca() {
  if (cached === null) {
    const root = await createRoot('shop', { now: T0, lifetimeMs: 3650 * DAY });
    const inter = await createIntermediate(root, { now: T0, lifetimeMs: 365 * DAY });
    cached = { root, inter };
  }
  return cached;
}

const code = (c: string, re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof SkeinError, `not a SkeinError: ${String(e)}`);
  assert.equal(e.code, c, e.message);
  if (re !== undefined) assert.match(e.message, re);
  return true;
};

const ecKeys = async (pem: string): Promise<CryptoKeyPair> => {
  const k = createPrivateKey(pem);
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  return { privateKey: k.toCryptoKey(alg, false, ['sign']), publicKey: createPublicKey(k).toCryptoKey(alg, true, ['verify']) } as unknown as CryptoKeyPair;
};
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A certificate with arbitrary SANs signed by `issuer` (what a misbehaving CA could make). */
async function forged(issuer: Issuer, names: x509.JsonGeneralNames | null, opts: { ca?: boolean } = {}): Promise<Buffer> {
  const subject = await generateKeyPair();
  const subjectKeys = await ecKeys(subject.privateKeyPem);
  const issuerKeys = await ecKeys(issuer.keyPem);
  const exts: x509.Extension[] = [new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true)];
  if (names !== null) exts.push(new x509.SubjectAlternativeNameExtension(names, true));
  const cert = await x509.X509CertificateGenerator.create({
    issuer: new x509.X509Certificate(issuer.certPem).subjectName,
    notBefore: T0,
    notAfter: new Date(T0.getTime() + HOUR),
    publicKey: subjectKeys.publicKey as any,
    signingKey: issuerKeys.privateKey as any,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as any,
    extensions: exts,
  });
  return Buffer.from(cert.rawData);
}

test('root and intermediate: CA constraints, key usage, SPIFFE SAN, chain verified by node:crypto', async () => {
  const { root, inter } = await ca();
  const r = new x509.X509Certificate(root.certPem);
  const i = new x509.X509Certificate(inter.certPem);
  for (const [c, pathLength] of [[r, undefined], [i, 0]] as const) {
    const bc = c.getExtension(x509.BasicConstraintsExtension);
    assert.equal(bc?.ca, true);
    assert.equal(bc?.critical, true);
    assert.equal(bc?.pathLength, pathLength);
    const ku = c.getExtension(x509.KeyUsagesExtension);
    assert.equal(ku?.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(ku?.critical, true);
    assert.deepEqual(c.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON(), [{ type: 'url', value: 'spiffe://shop' }]);
    assert.equal((c.signatureAlgorithm as any).name, 'ECDSA');
    assert.equal((c.signatureAlgorithm as any).hash.name, 'SHA-256');
  }
  assert.equal(r.subject, 'CN=Skein root CA shop, O=shop');
  assert.equal(i.subject, 'CN=Skein intermediate CA shop, O=shop');
  assert.equal(root.rootPem, root.certPem);
  assert.equal(inter.rootPem, root.certPem);
  assert.deepEqual(inter.chainPem, []);
  assert.equal(root.notAfter.getTime(), T0.getTime() + 3650 * DAY);
  assert.equal(inter.notAfter.getTime(), T0.getTime() + 365 * DAY);
  const nr = new X509Certificate(root.certPem);
  const ni = new X509Certificate(inter.certPem);
  assert.ok(nr.checkIssued(nr) && nr.verify(nr.publicKey), 'the root is self-signed');
  assert.ok(ni.checkIssued(nr) && ni.verify(nr.publicKey), 'the root signed the intermediate');
  assert.equal(createPrivateKey(inter.keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

test('an intermediate expires with its root at the latest', async () => {
  const root = await createRoot('shop', { now: T0, lifetimeMs: 2 * HOUR });
  const inter = await createIntermediate(root, { now: T0, lifetimeMs: 365 * DAY });
  assert.equal(inter.notAfter.getTime(), T0.getTime() + 2 * HOUR);
  await assert.rejects(createIntermediate(root, { now: new Date(T0.getTime() + 3 * HOUR), lifetimeMs: HOUR }), code('SKEIN_E_CA_UNAVAILABLE', /expired at 2030-01-01T02:00:00.000Z/));
});

test('a leaf: exactly the identity SAN, cA=false, digitalSignature critical, server+client auth, back-dated, verified up to the root', async () => {
  const { root, inter } = await ca();
  const kp = await generateKeyPair();
  const csr = await createCsr(kp.privateKeyPem);
  const leaf = await issueLeaf(inter, csr, ID, { now: T0, lifetimeMs: DAY });
  const c = new x509.X509Certificate(leaf.certPem);
  assert.deepEqual(c.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON(), [{ type: 'url', value: ID }]);
  assert.equal(c.getExtension(x509.SubjectAlternativeNameExtension)?.critical, true, 'the subject is empty, so the SAN is critical');
  assert.equal(c.subject, '');
  const bc = c.getExtension(x509.BasicConstraintsExtension);
  assert.equal(bc?.ca, false);
  assert.equal(bc?.critical, true);
  const ku = c.getExtension(x509.KeyUsagesExtension);
  assert.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature);
  assert.equal(ku?.critical, true);
  assert.deepEqual([...(c.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [])], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  assert.equal(c.notBefore.getTime(), T0.getTime() - 20_000);
  assert.equal(c.notAfter.getTime(), T0.getTime() + DAY);
  assert.equal(leaf.notAfter.getTime(), T0.getTime() + DAY);
  assert.equal(leaf.identity, ID);
  assert.equal(leaf.serial, c.serialNumber);
  assert.match(leaf.serial, /^[0-9a-f]{2,34}$/);
  assert.deepEqual(leaf.chainPem, [inter.certPem]);
  // The leaf's key is the proxy's key.
  const nl = new X509Certificate(leaf.certPem);
  assert.ok(nl.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(kp.privateKeyPem).export({ type: 'spki', format: 'der' })));
  assert.ok(nl.checkPrivateKey(createPrivateKey(kp.privateKeyPem)));
  // node:crypto verifies the chain leaf -> intermediate -> root.
  const ni = new X509Certificate(inter.certPem);
  const nr = new X509Certificate(root.certPem);
  assert.ok(nl.checkIssued(ni) && nl.verify(ni.publicKey));
  assert.ok(!nl.verify(nr.publicKey), 'the root did not sign the leaf');
  assert.ok(ni.checkIssued(nr) && ni.verify(nr.publicKey));
  assert.equal(nl.ca, false);
  assert.equal(nl.subjectAltName, `URI:${ID}`);
  // Two leaves never share a serial.
  const again = await issueLeaf(inter, csr, ID, { now: T0, lifetimeMs: DAY });
  assert.notEqual(again.serial, leaf.serial);
});

test('the CA ignores the subject and every SAN and extension the CSR asks for', async () => {
  const { inter } = await ca();
  const kp = await generateKeyPair();
  const keys = await ecKeys(kp.privateKeyPem);
  const greedy = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=admin, O=skein',
    keys: keys as any,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as any,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: 'spiffe://shop/ns/default/sa/admin' },
        { type: 'dns', value: 'evil.example' },
        { type: 'ip', value: '10.0.0.1' },
      ]),
      new x509.BasicConstraintsExtension(true, 5, true),
    ],
  });
  const leaf = await issueLeaf(inter, greedy.toString('pem'), ID, { now: T0, lifetimeMs: HOUR });
  const c = new x509.X509Certificate(leaf.certPem);
  assert.deepEqual(c.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON(), [{ type: 'url', value: ID }]);
  assert.equal(c.subject, '');
  assert.equal(c.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  assert.equal(new X509Certificate(leaf.certPem).subjectAltName, `URI:${ID}`);
});

test('a CSR whose signature does not verify is refused with SKEIN_E_BAD_CSR', async () => {
  const { inter } = await ca();
  const a = await generateKeyPair();
  const b = await generateKeyPair();
  const ka = await ecKeys(a.privateKeyPem);
  const kb = await ecKeys(b.privateKeyPem);
  // A's public key, signed with B's key: someone asking for a certificate for a key they do not hold.
  const mixed = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { publicKey: ka.publicKey, privateKey: kb.privateKey } as any,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as any,
  });
  await assert.rejects(issueLeaf(inter, mixed.toString('pem'), ID, { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_CSR', /signature does not verify/));
  // A valid CSR with one bit of its signed part flipped.
  const good = new x509.Pkcs10CertificateRequest(await createCsr(a.privateKeyPem));
  const der = Buffer.from(good.rawData);
  const spki = Buffer.from(good.publicKey.rawData);
  const at = der.indexOf(spki) + spki.length - 5; // inside the public key point
  der[at] = (der[at] as number) ^ 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(issueLeaf(inter, tampered, ID, { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_CSR'));
  await assert.rejects(issueLeaf(inter, 'hello', ID, { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_CSR', /not a PEM certificate request/));
  await assert.rejects(issueLeaf(inter, '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----', ID, { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_CSR', /cannot be parsed/));
});

test('createCsr asks for nothing: no subject, no extension', async () => {
  const kp = await generateKeyPair();
  const csr = new x509.Pkcs10CertificateRequest(await createCsr(kp.privateKeyPem));
  assert.equal(csr.subject, '');
  assert.deepEqual(csr.extensions, []);
  assert.equal(await csr.verify(), true);
  await assert.rejects(createCsr('not a key'), code('SKEIN_E_BAD_CA', /not a PEM private key/));
});

test("a leaf's NotAfter is capped at the issuer's expiry", async () => {
  const root = await createRoot('shop', { now: T0, lifetimeMs: 10 * DAY });
  const inter = await createIntermediate(root, { now: T0, lifetimeMs: HOUR });
  const kp = await generateKeyPair();
  const leaf = await issueLeaf(inter, await createCsr(kp.privateKeyPem), ID, { now: new Date(T0.getTime() + 30 * 60_000), lifetimeMs: DAY });
  assert.equal(leaf.notAfter.getTime(), T0.getTime() + HOUR);
  assert.equal(leaf.notAfter.getTime(), inter.notAfter.getTime());
});

test('an issuer that is not valid now issues nothing (SKEIN_E_CA_UNAVAILABLE)', async () => {
  const { inter } = await ca();
  const csr = await createCsr((await generateKeyPair()).privateKeyPem);
  await assert.rejects(issueLeaf(inter, csr, ID, { now: inter.notAfter, lifetimeMs: HOUR }), code('SKEIN_E_CA_UNAVAILABLE', /expired at 2031-01-01T00:00:00.000Z/));
  await assert.rejects(issueLeaf(inter, csr, ID, { now: new Date(T0.getTime() - DAY), lifetimeMs: HOUR }), code('SKEIN_E_CA_UNAVAILABLE', /not valid before/));
  await assert.rejects(issueLeaf(inter, csr, 'spiffe://shop', { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_IDENTITY', /trust domain's ID/));
  await assert.rejects(issueLeaf(inter, csr, 'spiffe://shop/ns/default/sa/a b', { now: T0, lifetimeMs: HOUR }), code('SKEIN_E_BAD_IDENTITY'));
});

test('peerIdentity reads the one URI SAN of a leaf', async () => {
  const { inter } = await ca();
  const leaf = await issueLeaf(inter, await createCsr((await generateKeyPair()).privateKeyPem), ID, { now: T0, lifetimeMs: HOUR });
  const r = peerIdentity(new X509Certificate(leaf.certPem).raw);
  assert.ok('identity' in r);
  assert.equal(r.identity, ID);
  assert.equal(r.id.service, 'web');
  // DNS and IP SANs beside the URI SAN are fine (the control plane's serving certificate).
  const withDns = await forged(inter, [{ type: 'url', value: ID }, { type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }]);
  const d = peerIdentity(withDns);
  assert.ok('identity' in d, JSON.stringify(d));
  assert.equal(d.identity, ID);
});

test('peerIdentity refuses no SAN, two URI SANs, a comma-injected SAN, a malformed SAN, a CA and garbage, saying why', async () => {
  const { inter } = await ca();
  const cases: Array<[string, Buffer, RegExp]> = [
    ['no SAN at all', await forged(inter, null), /no subject alternative name/],
    ['only a DNS SAN', await forged(inter, [{ type: 'dns', value: 'web' }]), /no URI SAN/],
    ['two URI SANs', await forged(inter, [{ type: 'url', value: ID }, { type: 'url', value: 'spiffe://shop/ns/default/sa/admin' }]), /2 URI SANs.*exactly one is allowed/],
    ['a comma-injected SAN', await forged(inter, [{ type: 'url', value: `${ID}, URI:spiffe://shop/ns/default/sa/admin` }]), /the character ","/],
    ['an uppercase trust domain', await forged(inter, [{ type: 'url', value: 'spiffe://Shop/ns/default/sa/web' }]), /uppercase letter/],
    ['percent-encoding', await forged(inter, [{ type: 'url', value: 'spiffe://shop/ns/default/sa/w%65b' }]), /percent-encoding/],
    ['a trust domain ID', await forged(inter, [{ type: 'url', value: 'spiffe://shop' }]), /trust domain's ID, not a workload's/],
    ['an https URI', await forged(inter, [{ type: 'url', value: 'https://shop/ns/default/sa/web' }]), /does not start with "spiffe:\/\/"/],
    ['a CA certificate', await forged(inter, [{ type: 'url', value: ID }], { ca: true }), /is a CA certificate/],
    ['garbage', Buffer.from('not a certificate'), /cannot be parsed/],
  ];
  for (const [what, der, reason] of cases) {
    const r = peerIdentity(der);
    assert.ok('error' in r, `${what}: accepted as ${JSON.stringify(r)}`);
    assert.match(r.error, reason, what);
  }
});

test('loadIssuer takes an operator root or intermediate and says what is wrong with bad ones', async () => {
  const { root, inter } = await ca();
  const r = await loadIssuer(root.certPem, root.keyPem, []);
  assert.equal(r.rootPem.trim(), root.certPem.trim());
  assert.equal(r.serial, root.serial);
  assert.equal(r.notAfter.getTime(), root.notAfter.getTime());
  const i = await loadIssuer(inter.certPem, inter.keyPem, [root.certPem]);
  assert.equal(i.rootPem.trim(), root.certPem.trim());
  assert.deepEqual(i.chainPem, []);
  // A leaf issued by the loaded intermediate verifies against the root.
  const leaf = await issueLeaf(i, await createCsr((await generateKeyPair()).privateKeyPem), ID, { now: T0, lifetimeMs: HOUR });
  assert.ok(new X509Certificate(leaf.certPem).verify(new X509Certificate(inter.certPem).publicKey));
  // An intermediate under the loaded intermediate: its chain carries the one between.
  const sub = await createIntermediate(i, { now: T0, lifetimeMs: DAY });
  assert.deepEqual(sub.chainPem.map((p) => p.trim()), [inter.certPem.trim()]);
  const leaf2 = await issueLeaf(sub, await createCsr((await generateKeyPair()).privateKeyPem), ID, { now: T0, lifetimeMs: HOUR });
  assert.equal(leaf2.chainPem.length, 2);

  const other = await createRoot('other', { now: T0, lifetimeMs: DAY });
  await assert.rejects(loadIssuer(root.certPem, other.keyPem, []), code('SKEIN_E_BAD_CA', /public keys differ/));
  await assert.rejects(loadIssuer(inter.certPem, inter.keyPem, []), code('SKEIN_E_BAD_CA', /does not end in a self-signed root/));
  await assert.rejects(loadIssuer(inter.certPem, inter.keyPem, [other.certPem]), code('SKEIN_E_BAD_CA', /did not sign/));
  await assert.rejects(loadIssuer(leaf.certPem, inter.keyPem, [inter.certPem, root.certPem]), code('SKEIN_E_BAD_CA', /not a CA certificate/));
  await assert.rejects(loadIssuer('nope', root.keyPem, []), code('SKEIN_E_BAD_CA', /the CA certificate is not a PEM certificate/));
  const rsa = (await import('node:crypto')).generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await assert.rejects(loadIssuer(root.certPem, rsa, []), code('SKEIN_E_BAD_CA', /rsa key; the mesh uses ECDSA P-256/));
});

test('renewalDelayMs: between 50% and 70% of the lifetime, at once past 90%', () => {
  const nb = 1_000_000;
  const na = nb + 100_000;
  assert.equal(renewalDelayMs(nb, na, nb, () => 0), 50_000);
  assert.equal(renewalDelayMs(nb, na, nb, () => 1), 70_000);
  assert.equal(renewalDelayMs(nb, na, nb, () => 0.5), 60_000);
  assert.equal(renewalDelayMs(nb, na, nb + 10_000, () => 0), 40_000);
  // Past the chosen point but before 90%: at once.
  assert.equal(renewalDelayMs(nb, na, nb + 80_000, () => 0), 0);
  assert.equal(renewalDelayMs(nb, na, nb + 89_999, () => 1), 0);
  assert.equal(renewalDelayMs(nb, na, nb + 90_000, () => 0), 0);
  assert.equal(renewalDelayMs(nb, na, na + 1, () => 0.5), 0);
  // A 24 h leaf is renewed 12 h to 16.8 h after its NotBefore.
  assert.equal(renewalDelayMs(0, DAY, 0, () => 0), 12 * HOUR);
  assert.equal(renewalDelayMs(0, DAY, 0, () => 1), 16.8 * HOUR);
  assert.equal(renewalDelayMs(5, 5, 5, () => 0), 0);
});
