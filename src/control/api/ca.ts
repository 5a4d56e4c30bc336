/**
 * The CA on the HTTP API: GET /v1/ca (public: trust domain, roots, renew URL), POST
 * /v1/ca/tokens (mint a join token; a write: `authorize` decides), POST /v1/ca/certificates
 * (leaves for a proxy's services, with a join token), GET /v1/ca/rotation and POST
 * /v1/ca/rotate (root rotation steps; a write: admin, and `authorize`), POST /v1/ca/renew (a new
 * leaf for the identity of the client certificate: only on the mTLS listener,
 * control/ca/mtls-listener.ts). docs/security.md describes the routes.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { CA_DEFAULTS, CA_RENEW_PATH, ROTATION_STEPS, type CertificateRequest, type IssuedCertificate, type MintTokenResponse, type RotationStep } from '../../api/ca.js';
import { DNS_LABEL_PATTERN, PROXY_ID, patternMessage } from '../../api/names.js';
import { formatDuration, parseDuration } from '../../core/duration.js';
import { SkeinError, isSkeinError } from '../../core/errors.js';
import type { CertificateAuthority, OperatorCa } from '../ca/ca.js';
import { clientIdentity } from '../ca/client-cert.js';
import { proxyDirectoryOf, type KnownProxy } from '../proxies.js';
import type { TokenClaim } from '../ca/tokens.js';
import { query } from './params.js';

/** What a CA write route does, for `authorize`. */
export type CaAction = 'ca.token.create' | 'ca.rotate';

/**
 * Decides whether the caller may do `action`; throws a SkeinError to refuse. Every CA route that
 * changes something calls it first. Today the API has no caller identities (every local caller
 * is an admin), so the default allows; the API-token work plugs its scope check in here.
 */
export type CaAuthorize = (req: FastifyRequest, action: CaAction) => void | Promise<void>;

export interface CaRoutesOptions {
  ca: CertificateAuthority;
  /** The mTLS listener's URL, once it listens (null: none, e.g. while the issuer is invalid). */
  renewUrl: () => string | null;
  authorize?: CaAuthorize;
  /** The announced proxies (rotation preconditions). Default: the directory `proxyRoutes` registered on the app. */
  proxies?: () => readonly KnownProxy[];
}

const labelRe = new RegExp(DNS_LABEL_PATTERN);

function fail(message: string, field: string): never {
  throw new SkeinError('SKEIN_E_VALIDATION', message, { field });
}

function objectBody(body: unknown, fields: string[]): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail(`the body must be an object {${fields.join(', ')}}`, 'body');
  for (const k of Object.keys(body)) if (!fields.includes(k)) fail(`${k} is not a known field (${fields.join(', ')})`, k);
  return body as Record<string, unknown>;
}

function serviceName(v: unknown, field: string): string {
  if (typeof v !== 'string' || !labelRe.test(v)) fail(`${field} ${patternMessage(DNS_LABEL_PATTERN)}, got ${JSON.stringify(v)}`, field);
  return v;
}

/** Checks a POST /v1/ca/tokens body. */
export function parseMintRequest(body: unknown): { proxy: string; services: string[]; ttlMs: number } {
  const b = objectBody(body, ['proxy', 'services', 'ttl']);
  const proxy = b['proxy'];
  if (typeof proxy !== 'string' || !PROXY_ID.test(proxy)) fail(`proxy must be a proxy id (letters, digits, ".", "_" and "-", 1-128 characters), got ${JSON.stringify(proxy)}`, 'proxy');
  const raw = b['services'];
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > CA_DEFAULTS.maxTokenServices) fail(`services must be a list of 1 to ${CA_DEFAULTS.maxTokenServices} service names`, 'services');
  const services = raw.map((s, i) => serviceName(s, `services[${i}]`));
  const dup = services.find((s, i) => services.indexOf(s) !== i);
  if (dup !== undefined) fail(`services names ${dup} twice`, 'services');
  let ttlMs: number = CA_DEFAULTS.tokenTtlMs;
  if (b['ttl'] !== undefined) {
    const t = typeof b['ttl'] === 'string' ? parseDuration(b['ttl']) : undefined;
    if (t === undefined || t < CA_DEFAULTS.minTokenTtlMs || t > CA_DEFAULTS.maxTokenTtlMs) {
      fail(`ttl must be a duration from ${formatDuration(CA_DEFAULTS.minTokenTtlMs)} to ${formatDuration(CA_DEFAULTS.maxTokenTtlMs)}, got ${JSON.stringify(b['ttl'])}`, 'ttl');
    }
    ttlMs = t;
  }
  return { proxy, services, ttlMs };
}

/** Checks a POST /v1/ca/certificates body: `{service, csr}` or `{requests: [{service, csr}, ...]}`. */
export function parseIssueRequest(body: unknown): { many: boolean; requests: CertificateRequest[] } {
  const b = objectBody(body, ['service', 'csr', 'requests']);
  const one = (r: Record<string, unknown>, at: string): CertificateRequest => {
    const service = serviceName(r['service'], `${at}service`);
    if (typeof r['csr'] !== 'string') fail(`${at}csr must be a PEM certificate request (a string)`, `${at}csr`);
    return { service, csr: r['csr'] };
  };
  if (b['requests'] !== undefined) {
    if (b['service'] !== undefined || b['csr'] !== undefined) fail('give either {service, csr} or {requests}, not both', 'requests');
    const raw = b['requests'];
    if (!Array.isArray(raw) || raw.length === 0 || raw.length > CA_DEFAULTS.maxTokenServices) fail(`requests must be a list of 1 to ${CA_DEFAULTS.maxTokenServices} {service, csr}`, 'requests');
    const requests = raw.map((r, i) => one(objectBody(r, ['service', 'csr']), `requests[${i}].`));
    const dup = requests.find((r, i) => requests.findIndex((x) => x.service === r.service) !== i);
    if (dup !== undefined) fail(`requests asks for ${dup.service} twice`, 'requests');
    return { many: true, requests };
  }
  return { many: false, requests: [one(b, '')] };
}

const PEM_CERT = /^\s*-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\s*$/;

/** Checks a POST /v1/ca/rotate body. */
export function parseRotateRequest(body: unknown): { step: RotationStep; force: boolean; operator: OperatorCa | null } {
  const b = objectBody(body, ['step', 'force', 'caCert', 'caKey', 'caChain']);
  const step = b['step'];
  if (typeof step !== 'string' || !(ROTATION_STEPS as readonly string[]).includes(step)) fail(`step must be one of ${ROTATION_STEPS.join(', ')}, got ${JSON.stringify(step)}`, 'step');
  if (b['force'] !== undefined && typeof b['force'] !== 'boolean') fail('force must be true or false', 'force');
  const cert = b['caCert'];
  const key = b['caKey'];
  if ((cert === undefined) !== (key === undefined)) fail('caCert and caKey go together (the new CA certificate and its key)', cert === undefined ? 'caCert' : 'caKey');
  if (cert !== undefined && (typeof cert !== 'string' || !PEM_CERT.test(cert))) fail('caCert must be one PEM certificate', 'caCert');
  if (key !== undefined && (typeof key !== 'string' || !key.includes('-----BEGIN'))) fail('caKey must be a PEM private key', 'caKey');
  const chain = b['caChain'] ?? [];
  if (!Array.isArray(chain) || chain.some((c) => typeof c !== 'string' || !PEM_CERT.test(c))) fail('caChain must be a list of PEM certificates', 'caChain');
  if (cert === undefined && chain.length > 0) fail('caChain needs caCert and caKey', 'caChain');
  const operator = cert === undefined ? null : { certPem: cert as string, keyPem: key as string, chainPem: chain as string[] };
  return { step: step as RotationStep, force: b['force'] === true, operator };
}

/** Checks a POST /v1/ca/renew body. */
function parseRenewBody(body: unknown): string {
  const b = objectBody(body, ['csr']);
  if (typeof b['csr'] !== 'string') fail('csr must be a PEM certificate request (a string)', 'csr');
  return b['csr'];
}

/** The join token of `authorization: Bearer <token>`. */
function bearer(req: FastifyRequest): string {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (m === null) {
    throw new SkeinError('SKEIN_E_JOIN_TOKEN_MISSING', h === undefined ? 'a join token is needed: send `authorization: Bearer <token>` (mint one with `skein ca token`)' : 'the authorization header must be `Bearer <join token>`');
  }
  return m[1] as string;
}

export function caRoutes(app: FastifyInstance, o: CaRoutesOptions): void {
  const { ca } = o;
  const authorize: CaAuthorize = o.authorize ?? (() => {});
  const proxies = o.proxies ?? (() => proxyDirectoryOf(app)?.list() ?? []);

  app.get('/v1/ca', async (req) => {
    query(req, []);
    return ca.info(o.renewUrl());
  });

  app.get('/v1/ca/rotation', async (req) => {
    query(req, []);
    return ca.rotationStatus(proxies());
  });

  app.post('/v1/ca/rotate', async (req) => {
    query(req, []);
    await authorize(req, 'ca.rotate');
    const { step, force, operator } = parseRotateRequest(req.body);
    return ca.rotate(step, { force, operator, proxies: proxies(), source: req.ip });
  });

  app.post('/v1/ca/tokens', async (req, reply) => {
    query(req, []);
    await authorize(req, 'ca.token.create');
    const { proxy, services, ttlMs } = parseMintRequest(req.body);
    const { token, id, record } = await ca.tokens.mint(proxy, services, ttlMs);
    ca.securityEvent({ type: 'token-minted', proxy, services, token: id, source: req.ip });
    const res: MintTokenResponse = { token, proxy, services, expiresAt: new Date(record.expiresAt).toISOString() };
    return reply.code(201).header('cache-control', 'no-store').send(res);
  });

  app.post('/v1/ca/certificates', async (req, reply) => {
    query(req, []);
    let claim: TokenClaim | null = null;
    let stage: 'token' | 'certificate' = 'token';
    try {
      const token = bearer(req);
      stage = 'certificate';
      const { many, requests } = parseIssueRequest(req.body);
      stage = 'token';
      claim = ca.tokens.claim(token, requests.map((r) => r.service));
      stage = 'certificate';
      ca.assertCanIssue();
      await ca.checkCsrs(requests.map((r) => r.csr));
      const leaves = [];
      for (const r of requests) leaves.push({ service: r.service, leaf: await ca.issue(ca.identityOf(r.service), r.csr) });
      await claim.spend();
      ca.securityEvent({ type: 'token-used', proxy: claim.record.proxy, services: requests.map((r) => r.service), token: claim.id, source: req.ip });
      for (const { leaf } of leaves) {
        ca.securityEvent({ type: 'certificate-issued', kind: 'join', identity: leaf.identity, proxy: claim.record.proxy, serial: leaf.serial, notAfter: leaf.notAfter.toISOString(), token: claim.id, source: req.ip });
      }
      const wire: IssuedCertificate[] = leaves.map(({ service, leaf }) => ca.wire(leaf, service));
      return reply.code(201).header('cache-control', 'no-store').send(many ? { certificates: wire } : wire[0]);
    } catch (e) {
      claim?.release();
      if (isSkeinError(e)) {
        const proxy = claim?.record.proxy;
        ca.refused(stage === 'token' ? 'token-refused' : 'certificate-refused', e, { kind: 'join', source: req.ip, ...(proxy === undefined ? {} : { proxy }), ...(claim === null ? {} : { token: claim.id }) });
      }
      throw e;
    }
  });

  app.post(CA_RENEW_PATH, async (req, reply) => {
    query(req, []);
    const source = req.ip;
    let identity: string | undefined;
    try {
      const id = clientIdentity(req.raw.socket, ca.trustDomain, 'renewal');
      identity = id.uri;
      const csr = parseRenewBody(req.body);
      ca.assertCanIssue();
      const leaf = await ca.issue(identity, csr);
      ca.securityEvent({ type: 'certificate-renewed', kind: 'renew', identity, serial: leaf.serial, notAfter: leaf.notAfter.toISOString(), source });
      return reply.code(201).header('cache-control', 'no-store').send(ca.wire(leaf, id.service ?? undefined));
    } catch (e) {
      if (isSkeinError(e)) ca.refused('certificate-refused', e, { kind: 'renew', ...(identity === undefined ? {} : { identity }), source });
      throw e;
    }
  });
}
