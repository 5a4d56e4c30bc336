/**
 * mTLS between proxies over real sockets and real certificates: an inbound listener's TLS server
 * (InboundTlsServer) and an outbound connection's link (OutboundTls), with certificates from a CA
 * made here by src/identity (what the control plane's CA runs), and the refusals of section 6 of
 * the security issue: no client certificate, a foreign CA with the same SPIFFE ID, an expired
 * leaf, two URI SANs, a comma-injected SAN, another trust domain, the wrong server identity,
 * plaintext to a strict port; plus session resumption and a renewal that keeps open connections.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as tlsServer, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { createIntermediate, createRoot, generateKeyPair, issueLeaf, type Issuer } from '../../identity/certs.js';
import { workloadId } from '../../identity/spiffe.js';
import { makeEndpoint } from '../../discovery/endpoint.js';
import { INBOUND_PROXY_LABEL } from '../../api/names.js';
import { MESH_ALPN, type MtlsMode, type TlsRefusal } from '../../api/mtls.js';
import type { IssuedCertificate } from '../../api/ca.js';
import { ManualClock } from '../../core/clock.js';
import { Identities, pemBundle, type CertificateSource } from '../../identity/mtls/identities.js';
import { InboundTlsServer, type PeerIdentity } from './inbound.js';
import { OutboundTls, type UpstreamTls } from '../../identity/mtls/outbound.js';
import { checkPeer, type PeerCheck } from '../../identity/mtls/peer.js';

const TD = 'test.skein';
const DAY = 86_400_000;
const id = (service: string, td = TD) => workloadId(td, 'default', service);

let root: Issuer;
let inter: Issuer;
let foreign: Issuer;

/** A CA source as the control plane's is: issues for the service asked, over the CSR's key. */
function caSource(issuer: Issuer, lifetimeMs = DAY): CertificateSource & { renewals: number } {
  const toWire = async (service: string, csr: string): Promise<IssuedCertificate> => {
    const leaf = await issueLeaf(issuer, csr, id(service), { now: new Date(), lifetimeMs });
    return { certificate: leaf.certPem, chain: leaf.chainPem, roots: [issuer.rootPem], identity: leaf.identity, notBefore: leaf.notBefore.toISOString(), notAfter: leaf.notAfter.toISOString(), serial: leaf.serial };
  };
  const s = {
    renewals: 0,
    issue: (reqs: ReadonlyArray<{ service: string; csr: string }>) => Promise.all(reqs.map((r) => toWire(r.service, r.csr))),
    renew: async (cur: { service: string }, csr: string) => {
      s.renewals++;
      return toWire(cur.service, csr);
    },
  };
  return s;
}

/** A leaf the mesh CA would never issue, signed by `issuer`: any SANs, any validity. */
async function craftedLeaf(issuer: Issuer, uris: string[], opts: { notBefore?: Date; notAfter?: Date } = {}): Promise<{ key: string; cert: string }> {
  const kp = await generateKeyPair();
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const { createPrivateKey, createPublicKey } = await import('node:crypto');
  const ik = createPrivateKey(issuer.keyPem);
  const signingKey = ik.toCryptoKey(alg, false, ['sign']) as unknown as webcrypto.CryptoKey;
  const publicKey = createPublicKey(kp.publicKeyPem).toCryptoKey(alg, true, ['verify']) as unknown as webcrypto.CryptoKey;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a1b2c',
    issuer: new x509.X509Certificate(issuer.certPem).subjectName,
    subject: '',
    notBefore: opts.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + DAY),
    publicKey,
    signingKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(
        uris.map((u) => ({ type: 'url' as const, value: u })),
        true,
      ),
    ],
  });
  const chain = issuer.certPem === issuer.rootPem ? [] : [issuer.certPem, ...issuer.chainPem];
  return { key: kp.privateKeyPem, cert: pemBundle([cert.toString('pem'), ...chain]) };
}

const closers: Array<() => unknown> = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

before(async () => {
  const now = new Date();
  root = await createRoot(TD, { now, lifetimeMs: 365 * DAY });
  inter = await createIntermediate(root, { now, lifetimeMs: 30 * DAY });
  foreign = await createRoot(TD, { now, lifetimeMs: 365 * DAY });
});

interface Served {
  peer: PeerIdentity | null;
}

/** An inbound listener of service `users` in `mode`: answers `ok <caller identity>` on each connection. */
async function inbound(mode: MtlsMode, ids: Identities): Promise<{ port: number; served: Served[]; refused: Array<{ reason: TlsRefusal; detail: string }>; accepted: string[] }> {
  const served: Served[] = [];
  const refused: Array<{ reason: TlsRefusal; detail: string }> = [];
  const accepted: string[] = [];
  const tls = new InboundTlsServer(
    { mode: () => mode, service: 'users', identities: ids, handshakeTimeoutMs: 5000, onRefused: (reason, detail) => refused.push({ reason, detail }), onAccepted: (k) => accepted.push(k) },
    (s: Socket, peer) => {
      served.push({ peer });
      s.on('error', () => {});
      s.once('data', () => s.end(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok`));
    },
  );
  const server: Server = createServer((s) => tls.accept(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as { port: number }).port, served, refused, accepted };
}

async function identities(services: string[], source: CertificateSource = caSource(inter)): Promise<Identities> {
  const ids = new Identities({ source, trustDomain: TD, clock: new ManualClock(Date.now()), ticketKeys: Buffer.alloc(48, 7) });
  await ids.obtain(services);
  closers.push(() => ids.stop());
  return ids;
}

/** A TLS client: sends a request, returns what came back (or the error) and the socket. */
function call(port: number, opts: ConnectionOptions, link?: UpstreamTls): Promise<{ text: string; error: string | null; socket: TLSSocket; check: PeerCheck | null; serial: string | null; resumed: boolean }> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: [MESH_ALPN], rejectUnauthorized: false, checkServerIdentity: () => undefined, ...opts });
    let text = '';
    let error: string | null = null;
    let check: PeerCheck | null = null;
    let serial: string | null = null;
    let resumed = false;
    s.on('secureConnect', () => {
      check = link?.verify(s) ?? null;
      serial = s.getPeerCertificate().serialNumber ?? null;
      resumed = s.isSessionReused();
      s.write('GET / HTTP/1.1\r\nhost: users\r\n\r\n');
    });
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ text, error, socket: s, check, serial, resumed }));
  });
}

/** Polls `fn` until it gives a value other than null (every 10 ms, for up to 5 s). */
async function waitFor<T>(fn: () => T | null, what: string): Promise<T> {
  const until = Date.now() + 5000;
  for (;;) {
    const v = fn();
    if (v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const endpoint = (service: string, port: number) => makeEndpoint({ service, id: `${service}-1`, address: '127.0.0.1', port, labels: { [INBOUND_PROXY_LABEL]: 'true' } });

describe('mTLS between proxies (real TLS, real certificates)', () => {
  test('a caller with its mesh certificate is served, and the inbound side knows who it is', async () => {
    const server = await identities(['users']);
    const client = await identities(['web']);
    const ib = await inbound('strict', server);
    const link = new OutboundTls(client, () => 'strict').forEndpoint('web', endpoint('users', ib.port)) as UpstreamTls;
    const r = await call(ib.port, link.options(), link);
    assert.match(r.text, /^HTTP\/1\.1 200 OK/, r.text);
    assert.deepEqual(ib.served.at(-1)?.peer, { identity: id('web'), namespace: 'default', service: 'web' });
    assert.deepEqual(ib.accepted, ['mtls']);
    assert.deepEqual(r.check, { ok: true, identity: id('users'), namespace: 'default', service: 'users' }, 'the server is who the registry says');
  });

  test('the caller refuses a server that is not the identity its endpoint has (wrong-identity)', async () => {
    const server = await identities(['users']);
    const client = await identities(['web']);
    const ib = await inbound('strict', server);
    // The registry says this address serves "billing"; the proxy there is users'.
    const link = new OutboundTls(client, () => 'strict').forEndpoint('web', endpoint('billing', ib.port)) as UpstreamTls;
    const r = await call(ib.port, link.options(), link);
    const check = r.check as PeerCheck;
    assert.equal(check.ok, false);
    assert.equal(!check.ok && check.reason, 'wrong-identity');
    assert.match(!check.ok ? check.detail : '', new RegExp(`${id('users')}, expected ${id('billing')}`));
  });

  test('strict: plaintext is answered 403 SKEIN_E_MTLS_REQUIRED and counted; permissive: served as plaintext', async () => {
    const server = await identities(['users']);
    const strict = await inbound('strict', server);
    const plain = await new Promise<string>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port: strict.port });
      let t = '';
      s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: users\r\n\r\n'));
      s.on('data', (d: Buffer) => (t += d.toString('latin1')));
      s.on('close', () => resolve(t));
    });
    assert.match(plain, /^HTTP\/1\.1 403 /);
    assert.match(plain, /x-skein-error: SKEIN_E_MTLS_REQUIRED/);
    assert.deepEqual(strict.refused.map((r) => r.reason), ['plaintext']);
    assert.equal(strict.served.length, 0);
    const permissive = await inbound('permissive', server);
    const ok = await new Promise<string>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port: permissive.port });
      let t = '';
      s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: users\r\n\r\n'));
      s.on('data', (d: Buffer) => (t += d.toString('latin1')));
      s.on('close', () => resolve(t));
    });
    assert.match(ok, /^HTTP\/1\.1 200 OK/);
    assert.deepEqual(permissive.served.map((s) => s.peer), [null]);
    assert.deepEqual(permissive.accepted, ['plaintext']);
  });

  const refusals: Array<[string, () => Promise<ConnectionOptions>, TlsRefusal]> = [
    ['no client certificate', async () => ({}), 'no-certificate'],
    [
      'a foreign CA presenting the same SPIFFE ID',
      async () => {
        const l = await craftedLeaf(foreign, [id('web')]);
        return { key: l.key, cert: l.cert };
      },
      'unknown-issuer',
    ],
    [
      'an expired leaf of the mesh CA',
      async () => {
        const l = await craftedLeaf(inter, [id('web')], { notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) });
        return { key: l.key, cert: l.cert };
      },
      'expired',
    ],
    [
      'a leaf with two URI SANs',
      async () => {
        const l = await craftedLeaf(inter, [id('web'), id('admin')]);
        return { key: l.key, cert: l.cert };
      },
      'bad-identity',
    ],
    [
      'a comma-injected SAN',
      async () => {
        const l = await craftedLeaf(inter, [`${id('web')}, URI:${id('admin')}`]);
        return { key: l.key, cert: l.cert };
      },
      'bad-identity',
    ],
    [
      'another trust domain, signed by the mesh CA',
      async () => {
        const l = await craftedLeaf(inter, [id('web', 'other.skein')]);
        return { key: l.key, cert: l.cert };
      },
      'trust-domain',
    ],
    ['a TLS client that does not speak the mesh ALPN', async () => ({ ALPNProtocols: ['http/1.1'] }), 'handshake'],
  ];
  for (const [what, opts, reason] of refusals) {
    test(`refused with its reason: ${what} (${reason})`, async () => {
      const server = await identities(['users']);
      const ib = await inbound('strict', server);
      const r = await call(ib.port, { ca: [root.rootPem], ...(await opts()) });
      assert.equal(ib.served.length, 0, 'nothing served');
      assert.deepEqual(
        ib.refused.map((x) => x.reason),
        [reason],
        JSON.stringify(ib.refused),
      );
      if (reason !== 'handshake') {
        // After the handshake: the caller gets an answer that names why, not a bare reset.
        assert.match(r.text, /^HTTP\/1\.1 403 /, r.text);
        assert.match(r.text, /x-skein-error: SKEIN_E_MTLS_REFUSED/);
        assert.match(r.text, new RegExp(`"reason":"${reason}"`));
      } else assert.notEqual(r.error, null, 'the handshake failed');
    });
  }

  test('sessions resume (TLS 1.3 tickets), and a renewed certificate serves new connections while an open one goes on', async () => {
    const source = caSource(inter);
    const server = await identities(['users'], source);
    const client = await identities(['web']);
    const ib = await inbound('strict', server);
    const link = new OutboundTls(client, () => 'strict').forEndpoint('web', endpoint('users', ib.port)) as UpstreamTls;
    // A connection held open across the renewal.
    const held = tlsConnect({ host: '127.0.0.1', port: ib.port, ...link.options() });
    held.on('session', (s: Buffer) => link.remember(s));
    await new Promise<void>((r) => held.once('secureConnect', () => r()));
    assert.equal(link.verify(held).ok, true);
    await waitFor(() => (link.options().session === undefined ? null : true), 'a session ticket');
    const before = server.credential('users')?.serial;
    await server.renew('users');
    const renewed = server.credential('users');
    assert.equal(source.renewals, 1);
    assert.notEqual(renewed?.serial, before, 'a new certificate');
    // The open connection still works after the swap.
    const answer = await new Promise<string>((resolve) => {
      let t = '';
      held.on('data', (d: Buffer) => (t += d.toString('latin1')));
      held.on('close', () => resolve(t));
      held.write('GET / HTTP/1.1\r\nhost: users\r\n\r\n');
    });
    assert.match(answer, /^HTTP\/1\.1 200 OK/);
    // New connections see the new certificate, and resume the session from before.
    const r = await call(ib.port, link.options(), link);
    assert.match(r.text, /^HTTP\/1\.1 200 OK/);
    assert.equal(r.resumed, true, 'the session was resumed');
    assert.deepEqual(r.check, { ok: true, identity: id('users'), namespace: 'default', service: 'users' }, 'a resumed session is the peer its first handshake proved');
    // Without the session: a full handshake, and the renewed certificate.
    const fresh = await call(ib.port, { ...link.options(), session: undefined }, link);
    assert.equal(fresh.resumed, false);
    assert.equal(fresh.serial?.toLowerCase().replace(/^0+/, ''), renewed?.serial.toLowerCase().replace(/^0+/, ''));
  });

  test('checkPeer takes no certificate that does not chain to the trusted roots, whatever it says', async () => {
    const l = await craftedLeaf(foreign, [id('users')]);
    const ids = await identities(['web']);
    const fake = await new Promise<number>((resolve) => {
      const s = tlsServer({ key: l.key, cert: l.cert, ALPNProtocols: [MESH_ALPN] }, (t: TLSSocket) => t.end());
      s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port));
      closers.push(() => new Promise<void>((r) => s.close(() => r())));
    });
    const link = new OutboundTls(ids, () => 'strict').forEndpoint('web', endpoint('users', fake)) as UpstreamTls;
    const s = tlsConnect({ host: '127.0.0.1', port: fake, ...link.options() });
    s.on('error', () => {});
    await new Promise<void>((r) => s.once('secureConnect', () => r()));
    const c = checkPeer(s, TD, id('users'));
    s.destroy();
    assert.equal(!c.ok && c.reason, 'unknown-issuer');
  });

  test('which connections are mTLS: peer proxies only, by mode; strict without a certificate is refused', async () => {
    const ids = await identities(['web']);
    const strict = new OutboundTls(ids, () => 'strict');
    const app = makeEndpoint({ service: 'users', id: 'u', address: '127.0.0.1', port: 1 });
    assert.equal(strict.forEndpoint('web', app), null, 'an app registered without a proxy gets plaintext');
    assert.equal(new OutboundTls(ids, () => 'off').forEndpoint('web', endpoint('users', 1)), null);
    const noCert = strict.forEndpoint('nobody', endpoint('users', 1));
    assert.equal(noCert !== null && 'code' in noCert ? noCert.code : null, 'SKEIN_E_UPSTREAM_TLS');
    assert.equal(new OutboundTls(ids, () => 'permissive').forEndpoint('nobody', endpoint('users', 1)), null, 'permissive falls back to plaintext');
    const l = strict.forEndpoint('web', endpoint('users', 1)) as UpstreamTls;
    assert.equal(l.poolKey, `${id('web')} ${id('users')}`, 'pools are kept apart per caller identity and peer identity');
  });
});
