import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auditRecord } from '../api/audit.js';
import { auditRow, matches, parseAuditLine } from './audit.js';

const deny = auditRecord('authz', Date.UTC(2026, 0, 1, 12), { decision: 'deny', service: 'users', policy: 'no-admin', rule: 0, method: 'GET', rawPath: '//admin', path: '/admin', sourceIdentity: 'spiffe://skein/ns/default/sa/web', reason: 'denied' });
const write = auditRecord('security', Date.UTC(2026, 0, 1, 11), { event: 'control-write', actor: 'ci', scope: 'automation', sourceAddress: '10.0.0.1', method: 'PUT', rawPath: '/v1/services/users' });

test('filters: decision, kind, service and since, all of them at once', () => {
  assert.equal(matches(deny, { decision: 'deny' }), true);
  assert.equal(matches(deny, { decision: 'audit' }), false);
  assert.equal(matches(write, { decision: 'deny' }), false);
  assert.equal(matches(write, { kind: 'security' }), true);
  assert.equal(matches(deny, { kind: 'security' }), false);
  assert.equal(matches(deny, { service: 'users' }), true);
  assert.equal(matches(write, { service: 'users' }), false);
  assert.equal(matches(deny, { since: Date.UTC(2026, 0, 1, 12) }), true);
  assert.equal(matches(write, { since: Date.UTC(2026, 0, 1, 12) }), false);
  assert.equal(matches(deny, { decision: 'deny', kind: 'authz', service: 'users', since: 0 }), true);
});

test('lines that are not audit records are told apart (null), not thrown on', () => {
  assert.deepEqual(parseAuditLine(JSON.stringify(deny)), deny);
  assert.equal(parseAuditLine('{"time":"x","kind":"access"}'), null);
  assert.equal(parseAuditLine('{"msg":"access"}'), null);
  assert.equal(parseAuditLine('{"time":"2026'), null);
  assert.equal(parseAuditLine('null'), null);
});

test('a row shows the source, the actor, the raw and the normalized path, the policy and rule', () => {
  assert.deepEqual(auditRow(deny), ['2026-01-01T12:00:00.000Z', 'deny', 'users', 'spiffe://skein/ns/default/sa/web', '', 'GET //admin -> /admin', 'no-admin rule 0', 'denied']);
  assert.deepEqual(auditRow(write), ['2026-01-01T11:00:00.000Z', 'control-write', '', '10.0.0.1', 'ci (automation)', 'PUT /v1/services/users', '', '']);
  assert.equal(auditRow({ ...deny, reason: 'a\u001b[31mred' })[7], 'a\\x1b[31mred', 'escapes out of what a terminal shows');
});
