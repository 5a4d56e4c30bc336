import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SkeinError } from '../core/errors.js';
import { DEFAULT_NAMESPACE, parseSpiffeId, trustDomainFor, validTrustDomain, workloadId } from './spiffe.js';

const VALID: Array<[string, { trustDomain: string; path: string; namespace: string | null; service: string | null }]> = [
  ['spiffe://skein/ns/default/sa/web', { trustDomain: 'skein', path: '/ns/default/sa/web', namespace: 'default', service: 'web' }],
  ['spiffe://example.org', { trustDomain: 'example.org', path: '', namespace: null, service: null }],
  ['spiffe://a_b-c.9/x', { trustDomain: 'a_b-c.9', path: '/x', namespace: null, service: null }],
  ['spiffe://td/Mixed.Case_seg-1/..a/.b', { trustDomain: 'td', path: '/Mixed.Case_seg-1/..a/.b', namespace: null, service: null }],
  ['spiffe://td/ns/x/sa/y/extra', { trustDomain: 'td', path: '/ns/x/sa/y/extra', namespace: null, service: null }],
  [`spiffe://td/${'a'.repeat(2048 - 'spiffe://td/'.length)}`, { trustDomain: 'td', path: `/${'a'.repeat(2048 - 'spiffe://td/'.length)}`, namespace: null, service: null }],
];

// [input, a fragment the reason must contain]
const INVALID: Array<[string, string]> = [
  ['', 'does not start with "spiffe://"'],
  ['http://td/ns/a/sa/b', 'does not start with "spiffe://"'],
  ['SPIFFE://td/ns/a/sa/b', 'scheme must be "spiffe" in lowercase'],
  ['Spiffe://td/x', 'scheme must be "spiffe" in lowercase'],
  ['spiffe:/td/x', 'does not start with "spiffe://"'],
  ['spiffe://', 'the trust domain is empty'],
  ['spiffe:///ns/a/sa/b', 'the trust domain is empty'],
  ['spiffe://Example.org/x', 'an uppercase letter'],
  ['spiffe://td:8080/x', 'a port'],
  ['spiffe://user@td/x', 'userinfo'],
  ['spiffe://user:pw@td/x', 'a port'],
  ['spiffe://t%41d/x', 'percent-encoding'],
  ['spiffe://t d/x', 'the character " "'],
  [`spiffe://${'a'.repeat(256)}/x`, 'longer than 255 characters'],
  ['spiffe://td/', 'an empty path segment'],
  ['spiffe://td/ns/a/sa/b/', 'an empty path segment'],
  ['spiffe://td//ns/a', 'an empty path segment'],
  ['spiffe://td/ns//sa/b', 'an empty path segment'],
  ['spiffe://td/./x', 'a "." path segment'],
  ['spiffe://td/x/..', 'a ".." path segment'],
  ['spiffe://td/ns/../sa/b', 'a ".." path segment'],
  ['spiffe://td/ns/a%2Fb/sa/c', 'percent-encoding'],
  ['spiffe://td/ns/%61/sa/b', 'percent-encoding'],
  ['spiffe://td/ns/a/sa/b?x=1', 'a query'],
  ['spiffe://td/ns/a/sa/b#frag', 'a fragment'],
  ['spiffe://td?x', 'a query'],
  ['spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/a/sa/admin', 'the character ","'],
  ['spiffe://td/ns/a/sa/b c', 'the character " "'],
  ['spiffe://td/ns/a/sa/b\n', 'the character "\\n"'],
  ['spiffe://td/ns/a/sa/ü', 'the character "ü"'],
  ['spiffe://td/a\\b', 'the character "\\\\"'],
  [`spiffe://td/${'a'.repeat(2049 - 'spiffe://td/'.length)}`, 'longer than 2048 bytes'],
  [`spiffe://td/${'é'.repeat(1020)}`, 'longer than 2048 bytes'],
];

test('parseSpiffeId accepts valid SPIFFE IDs and reads Skein workload paths', () => {
  for (const [text, want] of VALID) {
    const id = parseSpiffeId(text);
    assert.deepEqual({ trustDomain: id.trustDomain, path: id.path, namespace: id.namespace, service: id.service }, want, text);
    assert.equal(id.uri, text);
  }
});

test('parseSpiffeId refuses every invalid form with SKEIN_E_BAD_IDENTITY and the reason', () => {
  for (const [text, reason] of INVALID) {
    assert.throws(
      () => parseSpiffeId(text),
      (e: unknown) => {
        assert.ok(e instanceof SkeinError, `${JSON.stringify(text)}: not a SkeinError`);
        assert.equal(e.code, 'SKEIN_E_BAD_IDENTITY');
        assert.equal(e.field, 'identity');
        assert.ok(e.message.includes(reason), `${JSON.stringify(text)}: "${e.message}" does not say ${JSON.stringify(reason)}`);
        return true;
      },
    );
  }
});

test('workloadId builds spiffe://<td>/ns/<ns>/sa/<service> and checks it', () => {
  assert.equal(workloadId('shop', DEFAULT_NAMESPACE, 'frontend'), 'spiffe://shop/ns/default/sa/frontend');
  assert.equal(DEFAULT_NAMESPACE, 'default');
  assert.throws(() => workloadId('Shop', 'default', 'web'), /uppercase letter/);
  assert.throws(() => workloadId('shop', 'default', 'a/../b'), /"\.\." path segment/);
  assert.throws(() => workloadId('shop', '', 'web'), /empty path segment/);
});

test('validTrustDomain: null when fine, else the reason', () => {
  assert.equal(validTrustDomain('skein'), null);
  assert.equal(validTrustDomain('prod.example.com'), null);
  assert.match(validTrustDomain('') ?? '', /empty/);
  assert.match(validTrustDomain('Prod') ?? '', /uppercase/);
  assert.match(validTrustDomain('a/b') ?? '', /"\/"/);
});

test('trustDomainFor: the mesh name, lowercased', () => {
  assert.equal(trustDomainFor('shop'), 'shop');
  assert.equal(trustDomainFor('skein'), 'skein');
  assert.equal(trustDomainFor('Shop'), 'shop');
  assert.throws(() => trustDomainFor('my mesh'), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_BAD_IDENTITY' && /"my mesh"/.test(e.message));
});
