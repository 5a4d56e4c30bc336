import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auditLine, auditRecord, caAuditRecord } from './audit.js';

test('a record has every field, in order, null when not given; a line is its JSON and a newline', () => {
  const r = auditRecord('security', Date.UTC(2026, 0, 2, 3, 4, 5, 6), { event: 'control-write', actor: 'ci', scope: 'automation', port: 0 });
  assert.deepEqual(Object.keys(r), ['time', 'kind', 'event', 'decision', 'mode', 'policy', 'rule', 'reason', 'code', 'sourceIdentity', 'sourceAddress', 'tls', 'tlsError', 'destinationIdentity', 'service', 'port', 'method', 'rawPath', 'path', 'requestId', 'revision', 'actor', 'scope', 'details']);
  assert.equal(r.time, '2026-01-02T03:04:05.006Z');
  assert.equal(r.port, 0, 'a zero is kept, not turned into null');
  assert.equal(r.decision, null);
  assert.equal(auditLine(r), `${JSON.stringify(r)}\n`);
  assert.equal(auditLine(r).split('\n').length, 2);
});

test("the CA's events: join tokens named apart from API tokens, the identity as the destination, no token in clear", () => {
  const r = caAuditRecord({ type: 'token-refused', time: '2026-01-02T03:04:05.000Z', code: 'SKEIN_E_JOIN_TOKEN_USED', reason: 'the join token was used already', proxy: 'p1', token: 'abcdef012345', source: '10.0.0.9', identity: 'spiffe://skein/ns/default/sa/web' });
  assert.equal(r.time, '2026-01-02T03:04:05.000Z');
  assert.deepEqual(
    { event: r.event, kind: r.kind, code: r.code, reason: r.reason, sourceAddress: r.sourceAddress, destinationIdentity: r.destinationIdentity, details: r.details },
    { event: 'join-token-refused', kind: 'security', code: 'SKEIN_E_JOIN_TOKEN_USED', reason: 'the join token was used already', sourceAddress: '10.0.0.9', destinationIdentity: 'spiffe://skein/ns/default/sa/web', details: { proxy: 'p1', token: 'abcdef012345' } },
  );
  assert.equal(caAuditRecord({ type: 'certificate-issued', time: '2026-01-02T03:04:05.000Z' }).details, null);
});
