/**
 * Certificates of the mesh: the CA's root and intermediate, workload key pairs and CSRs, leaf
 * X.509-SVIDs, and the identity a peer's certificate proves. ECDSA P-256 with SHA-256 throughout.
 * Certificates and CSRs are built and read with @peculiar/x509 (no ASN.1 here); keys are made,
 * imported and checked with node:crypto. Pure: no sockets, no files; time is passed in (`now`).
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, generateKeyPair as generateNodeKeyPair, randomBytes, webcrypto, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { promisify } from 'node:util';
import { CA_DEFAULTS } from '../api/ca.js';
import { SkeinError } from '../core/errors.js';
import { parseSpiffeId, trustDomainId, type SpiffeId } from './spiffe.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const OPENSSL_P256 = 'prime256v1';

/** A certificate that signs others: the root or an intermediate, with its key. */
export interface Issuer {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /**
   * The certificates between this one and the root, this one's issuer first, excluding both
   * (empty for a root and for an intermediate signed by the root).
   */
  chainPem: string[];
  /** The self-signed root this issuer chains to (its own certificate when it is the root). */
  rootPem: string;
  notBefore: Date;
  notAfter: Date;
  /** Hex. */
  serial: string;
}

/** A workload certificate (X.509-SVID) as issued. */
export interface Leaf {
  certPem: string;
  /** The issuer's certificate and the ones above it, up to and excluding the root. */
  chainPem: string[];
  notBefore: Date;
  notAfter: Date;
  serial: string;
  identity: string;
}

export interface KeyPair {
  /** PKCS#8 PEM: what `tls.createSecureContext({ key })` and createCsr take. Never leaves the proxy. */
  privateKeyPem: string;
  /** SPKI PEM. */
  publicKeyPem: string;
}

interface Lifetime {
  now: Date;
  lifetimeMs: number;
}

const genKeyPair = promisify(generateNodeKeyPair);

/** A new ECDSA P-256 key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const { privateKey, publicKey } = await genKeyPair('ec', { namedCurve: OPENSSL_P256 });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** A PKCS#8 PEM EC P-256 private key as a node KeyObject; `what` names it in errors. */
function privateKeyObject(pem: string, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CA', `${what} is not a PEM private key: ${(e as Error).message}`, { field: what, cause: e });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== OPENSSL_P256) {
    throw new SkeinError('SKEIN_E_BAD_CA', `${what} is a ${key.asymmetricKeyType ?? 'unknown'}${key.asymmetricKeyDetails?.namedCurve ? ` ${key.asymmetricKeyDetails.namedCurve}` : ''} key; the mesh uses ECDSA P-256 (prime256v1) keys`, { field: what });
  }
  return key;
}

async function keysOf(pem: string, what: string): Promise<CryptoKeyPair> {
  const key = privateKeyObject(pem, what);
  return {
    privateKey: key.toCryptoKey(EC, false, ['sign']) as unknown as CryptoKey,
    publicKey: createPublicKey(key).toCryptoKey(EC, true, ['verify']) as unknown as CryptoKey,
  };
}

async function newKeys(): Promise<{ pem: string; keys: CryptoKeyPair }> {
  const { privateKeyPem } = await generateKeyPair();
  return { pem: privateKeyPem, keys: await keysOf(privateKeyPem, 'the new key') };
}

/** A random positive 128-bit serial number, hex (@peculiar/x509 adds the sign octet when needed). */
function randomSerial(): string {
  const b = randomBytes(16);
  if (b.every((x) => x === 0)) b[15] = 1;
  return b.toString('hex');
}

const iso = (d: Date) => d.toISOString();
/** PEM text ending in a newline, so that PEMs can be concatenated (a certificate and its chain). */
const pemOf = (c: { toString(format: 'pem'): string }) => `${c.toString('pem').trimEnd()}\n`;

/** The trust domain named by a CA certificate's `spiffe://<td>` URI SAN, or null. */
export function caTrustDomain(certPem: string): string | null {
  const cert = new x509.X509Certificate(certPem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const n of san?.names.items ?? []) {
    if (n.type !== 'url') continue;
    try {
      const id = parseSpiffeId(n.value);
      if (id.path === '') return id.trustDomain;
    } catch {
      /* not a trust domain ID */
    }
  }
  return null;
}

function caExtensions(td: string, pathLength: number | undefined, publicKey: CryptoKey): Promise<x509.Extension[]> {
  return x509.SubjectKeyIdentifierExtension.create(publicKey).then((ski) => [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(td) }]),
    ski,
  ]);
}

function checkLifetime(opts: Lifetime, what: string): void {
  if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) throw new SkeinError('SKEIN_E_INTERNAL', `${what}: now is not a date`);
  if (!Number.isFinite(opts.lifetimeMs) || opts.lifetimeMs <= 0) throw new SkeinError('SKEIN_E_INTERNAL', `${what}: lifetimeMs must be a positive number, got ${opts.lifetimeMs}`);
}

/** Refuses (SKEIN_E_CA_UNAVAILABLE) when the issuer is not valid at `now`. */
export function assertIssuerValid(issuer: Pick<Issuer, 'notBefore' | 'notAfter' | 'serial'>, now: Date): void {
  if (now.getTime() >= issuer.notAfter.getTime()) {
    throw new SkeinError('SKEIN_E_CA_UNAVAILABLE', `the CA's issuer (serial ${issuer.serial}) expired at ${iso(issuer.notAfter)}; nothing is issued until it is replaced`);
  }
  if (now.getTime() < issuer.notBefore.getTime()) {
    throw new SkeinError('SKEIN_E_CA_UNAVAILABLE', `the CA's issuer (serial ${issuer.serial}) is not valid before ${iso(issuer.notBefore)}`);
  }
}

/** A self-signed root CA for the trust domain: CA:true, keyCertSign+cRLSign (critical), URI SAN `spiffe://<td>`. */
export async function createRoot(trustDomain: string, opts: Lifetime): Promise<Issuer> {
  checkLifetime(opts, 'createRoot');
  trustDomainId(trustDomain); // throws SKEIN_E_BAD_IDENTITY naming what is wrong
  const { pem, keys } = await newKeys();
  const notBefore = new Date(opts.now.getTime() - CA_DEFAULTS.backdateMs);
  const notAfter = new Date(opts.now.getTime() + opts.lifetimeMs);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=Skein root CA ${trustDomain}, O=${trustDomain}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING,
    extensions: await caExtensions(trustDomain, undefined, keys.publicKey),
  });
  const certPem = pemOf(cert);
  return { certPem, keyPem: pem, chainPem: [], rootPem: certPem, notBefore: cert.notBefore, notAfter: cert.notAfter, serial: cert.serialNumber };
}

/**
 * An intermediate CA signed by `root` (CA:true, pathLen 0), expiring at the root's expiry at the
 * latest. The trust domain is the root's `spiffe://<td>` SAN unless given.
 */
export async function createIntermediate(root: Issuer, opts: Lifetime & { trustDomain?: string }): Promise<Issuer> {
  checkLifetime(opts, 'createIntermediate');
  assertIssuerValid(root, opts.now);
  const td = opts.trustDomain ?? caTrustDomain(root.certPem);
  if (td === null) throw new SkeinError('SKEIN_E_BAD_CA', 'the root certificate names no trust domain (no spiffe://<trust-domain> URI SAN): give the trust domain');
  const rootCert = new x509.X509Certificate(root.certPem);
  const rootKeys = await keysOf(root.keyPem, 'the root key');
  const { pem, keys } = await newKeys();
  const notBefore = new Date(Math.max(opts.now.getTime() - CA_DEFAULTS.backdateMs, root.notBefore.getTime()));
  const notAfter = new Date(Math.min(opts.now.getTime() + opts.lifetimeMs, root.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=Skein intermediate CA ${td}, O=${td}`,
    issuer: rootCert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: SIGNING,
    extensions: [...(await caExtensions(td, 0, keys.publicKey)), await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey)],
  });
  const chainPem = root.certPem === root.rootPem ? [] : [root.certPem, ...root.chainPem];
  return { certPem: pemOf(cert), keyPem: pem, chainPem, rootPem: root.rootPem, notBefore: cert.notBefore, notAfter: cert.notAfter, serial: cert.serialNumber };
}

function parseCertPem(pem: string, what: string): NodeX509 {
  try {
    return new NodeX509(pem);
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CA', `${what} is not a PEM certificate: ${(e as Error).message}`, { field: what, cause: e });
  }
}

/** A certificate's subject on one line (node:crypto gives one RDN per line). */
const subjectOf = (c: NodeX509) => (c.subject ?? '').replace(/\n/g, ', ');
const selfSigned = (c: NodeX509) => c.checkIssued(c) && c.verify(c.publicKey);

/**
 * An operator-supplied root or intermediate. Checks that the certificate is a CA that may sign
 * certificates, that the key is its key (ECDSA P-256), and, for an intermediate, that `chainPem`
 * leads from it to a self-signed root (each one signed by the next; the root last).
 */
export async function loadIssuer(certPem: string, keyPem: string, chainPem: string[]): Promise<Issuer> {
  const cert = parseCertPem(certPem, 'the CA certificate');
  if (!cert.ca) throw new SkeinError('SKEIN_E_BAD_CA', `the CA certificate (subject "${subjectOf(cert)}") is not a CA certificate (basicConstraints cA is not true)`);
  const ku = new x509.X509Certificate(cert.raw).getExtension(x509.KeyUsagesExtension);
  if (ku !== null && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new SkeinError('SKEIN_E_BAD_CA', `the CA certificate (subject "${subjectOf(cert)}") may not sign certificates (its key usage lacks keyCertSign)`);
  }
  const key = privateKeyObject(keyPem, 'the CA key');
  const keySpki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const certSpki = cert.publicKey.export({ type: 'spki', format: 'der' });
  if (!keySpki.equals(certSpki)) throw new SkeinError('SKEIN_E_BAD_CA', `the CA key is not the key of the CA certificate (subject "${subjectOf(cert)}"): their public keys differ`);
  const chain = chainPem.map((p, i) => parseCertPem(p, `certificate ${i + 1} of the CA chain`));
  let rootPem: string;
  let above: string[];
  if (selfSigned(cert)) {
    rootPem = cert.toString();
    above = [];
  } else {
    let child = cert;
    for (const [i, c] of chain.entries()) {
      if (!child.checkIssued(c) || !child.verify(c.publicKey)) {
        throw new SkeinError('SKEIN_E_BAD_CA', `certificate ${i + 1} of the CA chain (subject "${subjectOf(c)}") did not sign "${subjectOf(child)}": give the chain from the issuer up to the root, in order`);
      }
      if (!c.ca) throw new SkeinError('SKEIN_E_BAD_CA', `certificate ${i + 1} of the CA chain (subject "${subjectOf(c)}") is not a CA certificate`);
      child = c;
    }
    const last = chain.at(-1);
    if (last === undefined || !selfSigned(last)) {
      throw new SkeinError('SKEIN_E_BAD_CA', `the CA chain does not end in a self-signed root (the CA certificate "${subjectOf(cert)}" is not self-signed, so its chain up to and including the root is needed)`);
    }
    rootPem = last.toString();
    above = chain.slice(0, -1).map((c) => c.toString());
  }
  const p = new x509.X509Certificate(cert.raw);
  return { certPem: cert.toString(), keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(), chainPem: above, rootPem, notBefore: p.notBefore, notAfter: p.notAfter, serial: p.serialNumber };
}

/** A PEM PKCS#10 CSR signed with the key; it names no subject and asks for no SAN (the CA decides). */
export async function createCsr(keyPemPkcs8: string): Promise<string> {
  const keys = await keysOf(keyPemPkcs8, 'the workload key');
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: SIGNING });
  return pemOf(csr);
}

/** The CSR parsed and its signature checked (SKEIN_E_BAD_CSR otherwise). */
async function checkedCsr(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----')) {
    throw new SkeinError('SKEIN_E_BAD_CSR', 'the CSR is not a PEM certificate request ("-----BEGIN CERTIFICATE REQUEST-----")', { field: 'csr' });
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CSR', `the CSR cannot be parsed: ${(e as Error).message}`, { field: 'csr', cause: e });
  }
  const alg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
    throw new SkeinError('SKEIN_E_BAD_CSR', `the CSR's key is ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''}; the mesh issues certificates for ECDSA P-256 keys only`, { field: 'csr' });
  }
  let ok: boolean;
  try {
    ok = await csr.verify();
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CSR', `the CSR's signature cannot be checked: ${(e as Error).message}`, { field: 'csr', cause: e });
  }
  if (!ok) throw new SkeinError('SKEIN_E_BAD_CSR', "the CSR's signature does not verify with its own public key (it was altered, or signed with another key)", { field: 'csr' });
  return csr;
}

/** Checks a CSR as issueLeaf would (parse, key type, signature) without issuing anything. */
export async function checkCsr(csrPem: string): Promise<void> {
  await checkedCsr(csrPem);
}

export interface LeafOptions extends Lifetime {
  /** More SANs besides the identity (only the control plane's own serving certificate has them). */
  dnsNames?: string[];
  ipAddresses?: string[];
}

/**
 * A leaf X.509-SVID for `identity` over the CSR's public key. The CSR's signature is checked;
 * its subject, SANs and extensions are ignored. The leaf has exactly one URI SAN (the identity),
 * cA=false, key usage digitalSignature (critical), EKU serverAuth+clientAuth, an empty subject
 * (so the SAN extension is critical), NotBefore 20 s back, NotAfter at `now + lifetimeMs` or the
 * issuer's expiry, whichever is first, and a random 128-bit serial.
 */
export async function issueLeaf(issuer: Issuer, csrPem: string, identity: string, opts: LeafOptions): Promise<Leaf> {
  checkLifetime(opts, 'issueLeaf');
  const id = parseSpiffeId(identity);
  if (id.path === '') throw new SkeinError('SKEIN_E_BAD_IDENTITY', `"${identity}" is a trust domain's ID, not a workload's: a leaf needs a path`, { field: 'identity' });
  assertIssuerValid(issuer, opts.now);
  const csr = await checkedCsr(csrPem);
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const issuerKeys = await keysOf(issuer.keyPem, 'the issuer key');
  const now = opts.now.getTime();
  const notBefore = new Date(Math.max(now - CA_DEFAULTS.backdateMs, issuer.notBefore.getTime()));
  const notAfter = new Date(Math.min(now + opts.lifetimeMs, issuer.notAfter.getTime()));
  const names: x509.JsonGeneralNames = [{ type: 'url', value: id.uri }];
  for (const d of opts.dnsNames ?? []) names.push({ type: 'dns', value: d });
  for (const ip of opts.ipAddresses ?? []) names.push({ type: 'ip', value: ip });
  const publicKey = await csr.publicKey.export();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    issuer: issuerCert.subjectName,
    notBefore,
    notAfter,
    publicKey,
    signingKey: issuerKeys.privateKey,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension(names, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuerKeys.publicKey),
    ],
  });
  const chainPem = issuer.certPem === issuer.rootPem ? [] : [issuer.certPem, ...issuer.chainPem];
  return { certPem: pemOf(cert), chainPem, notBefore: cert.notBefore, notAfter: cert.notAfter, serial: cert.serialNumber, identity: id.uri };
}

/**
 * The identity a peer's certificate (DER, as `socket.getPeerCertificate().raw` gives it) proves:
 * exactly one URI SAN, parsed strictly as a workload's SPIFFE ID, on a certificate that is not a
 * CA. Use it only on a chain the TLS stack verified (`socket.authorized`): it checks no signature.
 */
export function peerIdentity(der: Buffer | Uint8Array): { identity: string; id: SpiffeId } | { error: string } {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch (e) {
    return { error: `the peer certificate cannot be parsed: ${(e as Error).message}` };
  }
  let uris: string[];
  try {
    if (cert.getExtension(x509.BasicConstraintsExtension)?.ca === true) return { error: 'the peer certificate is a CA certificate, not a workload certificate' };
    const sans = cert.getExtensions(x509.SubjectAlternativeNameExtension);
    if (sans.length === 0) return { error: 'the peer certificate has no subject alternative name (a workload certificate has exactly one URI SAN)' };
    if (sans.length > 1) return { error: 'the peer certificate has more than one subject alternative name extension' };
    uris = (sans[0] as x509.SubjectAlternativeNameExtension).names.items.filter((n) => n.type === 'url').map((n) => n.value);
  } catch (e) {
    return { error: `the peer certificate's extensions cannot be read: ${(e as Error).message}` };
  }
  if (uris.length === 0) return { error: 'the peer certificate has no URI SAN (a workload certificate has exactly one)' };
  if (uris.length > 1) return { error: `the peer certificate has ${uris.length} URI SANs (${uris.map((u) => JSON.stringify(u.slice(0, 100))).join(', ')}); exactly one is allowed` };
  let id: SpiffeId;
  try {
    id = parseSpiffeId(uris[0] as string);
  } catch (e) {
    return { error: `the peer certificate's URI SAN ${(e as Error).message}` };
  }
  if (id.path === '') return { error: `the peer certificate's URI SAN "${id.uri}" is a trust domain's ID, not a workload's` };
  return { identity: id.uri, id };
}

/** What a certificate says about itself, for status pages and logs. */
export interface CertSummary {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  uris: string[];
}

export function describeCert(pem: string): CertSummary {
  const c = new x509.X509Certificate(pem);
  const san = c.getExtension(x509.SubjectAlternativeNameExtension);
  return {
    subject: c.subject,
    issuer: c.issuer,
    serial: c.serialNumber,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    uris: (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value),
  };
}
