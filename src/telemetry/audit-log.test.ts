import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditRecord } from '../api/audit.js';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import type { AuthzDecision } from '../engine/authorization.js';
import { ProxyAudit, authzRecords, openAuditLog, type AuthzFacts } from './audit-log.js';

const facts: AuthzFacts = {
  service: 'users',
  sourceIdentity: 'spiffe://skein/ns/default/sa/web',
  sourceAddress: '127.0.0.1',
  tls: 'mtls',
  destinationIdentity: 'spiffe://skein/ns/default/sa/users',
  port: 8443,
  method: 'GET',
  rawPath: '//admin',
  path: '/admin',
  requestId: 'r1',
  revision: 7,
};
const allow: AuthzDecision = { allowed: true, policy: null, rule: null, reason: 'no ALLOW policy applies to the service; its default is allow', dryRunDenied: null, audited: [] };

test('a plain allow writes nothing; a deny with a dry-run deny and two AUDIT matches writes four lines', () => {
  assert.deepEqual(authzRecords(allow, facts, 0), []);
  const d: AuthzDecision = { allowed: false, policy: 'no-admin', rule: 2, reason: 'denied by DENY policy "no-admin" rule 2', dryRunDenied: { policy: 'strict', rule: 0 }, audited: [{ policy: 'w1', rule: 0 }, { policy: 'w2', rule: 3 }] };
  const rs = authzRecords(d, facts, Date.UTC(2026, 0, 1));
  assert.deepEqual(
    rs.map((r) => [r.decision, r.mode, r.policy, r.rule, r.reason]),
    [
      ['deny', 'enforce', 'no-admin', 2, 'denied by DENY policy "no-admin" rule 2'],
      ['dry-run-deny', 'dry-run', 'strict', 0, 'dry-run DENY policy "strict" rule 0 would deny'],
      ['audit', 'audit', 'w1', 0, 'matched AUDIT policy "w1" rule 0'],
      ['audit', 'audit', 'w2', 3, 'matched AUDIT policy "w2" rule 3'],
    ],
  );
  for (const r of rs) {
    assert.deepEqual(
      { time: r.time, kind: r.kind, sourceIdentity: r.sourceIdentity, rawPath: r.rawPath, path: r.path, requestId: r.requestId, revision: r.revision, port: r.port },
      { time: '2026-01-01T00:00:00.000Z', kind: 'authz', sourceIdentity: facts.sourceIdentity, rawPath: '//admin', path: '/admin', requestId: 'r1', revision: 7, port: 8443 },
    );
  }
});

test('dry-run ALLOW policies that matched nothing: the policies named, no rule', () => {
  const [r] = authzRecords({ ...allow, dryRunDenied: { policy: 'a, b', rule: null } }, facts, 0);
  assert.deepEqual([r?.decision, r?.policy, r?.rule, r?.reason], ['dry-run-deny', 'a, b', null, 'no dry-run ALLOW policy matched (considered: a, b): would deny']);
});

test("ProxyAudit: its Clock's time, its revision, the served identity; facts are built only when there is a line", () => {
  const clock = new ManualClock(Date.UTC(2026, 5, 1));
  const out: AuditRecord[] = [];
  const a = new ProxyAudit({ write: (r) => out.push(r) }, clock, () => 42, (s) => `spiffe://td/ns/default/sa/${s}`);
  let built = 0;
  const f = () => {
    built++;
    const { revision: _r, destinationIdentity: _d, ...rest } = facts;
    return rest;
  };
  a.authz(allow, f);
  assert.equal(built, 0);
  assert.equal(out.length, 0);
  clock.advance(1500);
  a.authz({ ...allow, audited: [{ policy: 'w', rule: 0 }] }, f);
  assert.equal(built, 1);
  assert.deepEqual([out[0]?.time, out[0]?.revision, out[0]?.destinationIdentity], ['2026-06-01T00:00:01.500Z', 42, 'spiffe://td/ns/default/sa/users']);
  a.tlsRefused('inbound', 'expired', 'the certificate expired at X', '::ffff:10.1.2.3', 'users');
  assert.deepEqual(
    { event: out[1]?.event, code: out[1]?.code, tls: out[1]?.tls, tlsError: out[1]?.tlsError, sourceAddress: out[1]?.sourceAddress, service: out[1]?.service, reason: out[1]?.reason },
    { event: 'mtls-refused', code: 'expired', tls: 'mtls', tlsError: 'expired', sourceAddress: '10.1.2.3', service: 'users', reason: 'the peer certificate has expired (or is not yet valid): the certificate expired at X' },
  );
});

test('openAuditLog appends JSON lines to a file; a path it cannot write is SKEIN_E_FILE naming it, at once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'skein-audit-unit-'));
  try {
    const file = join(dir, 'audit.log');
    const log = openAuditLog(file);
    const [r] = authzRecords({ ...allow, audited: [{ policy: 'w', rule: 0 }] }, facts, 0);
    log.write(r!);
    log.write(r!);
    await log.close();
    const lines = (await readFile(file, 'utf8')).split('\n');
    assert.equal(lines.length, 3);
    assert.deepEqual(JSON.parse(lines[0]!), r);
    assert.equal(lines[2], '');
    // Close waits for every line, also the ones still being written (5,000 lines, ~2 MB: several
    // writes in flight); a line written after close is dropped, not thrown at the request path.
    const big = join(dir, 'big.log');
    const many = openAuditLog(big);
    for (let i = 0; i < 5000; i++) many.write(r!);
    const closing = many.close();
    many.write(r!);
    await closing;
    const written = (await readFile(big, 'utf8')).split('\n');
    assert.equal(written.length, 5001, 'every line before close, none after');
    assert.deepEqual(JSON.parse(written[4999]!), r);
    const bad = join(dir, 'no-such-dir', 'audit.log');
    assert.throws(() => openAuditLog(bad), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_FILE' && e.message === `--audit-log: cannot write ${bad}: ENOENT`);
    assert.throws(() => openAuditLog(' '), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_USAGE' && e.message === '--audit-log: give "stdout", a file path or "off"');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
