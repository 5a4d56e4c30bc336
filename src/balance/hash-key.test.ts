import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isSkeinError } from '../core/errors.js';
import { compileHashKey, cookieValue, hashInputOf, hashKeyOf, normalizeSourceAddress, type HashKeySpec, type HeaderValue } from './hash-key.js';

const both = (spec: HashKeySpec, plain: { headers?: Record<string, HeaderValue>; sourceAddress?: string }) => {
  const req = hashInputOf(plain.headers ?? {}, plain.sourceAddress);
  const v = hashKeyOf(spec, req);
  assert.equal(compileHashKey(spec)(req), v, 'compiled and plain agree');
  return v;
};

test('header: by lowercase name; repeated values joined; absent or empty -> no key', () => {
  const spec = { type: 'header', name: 'X-User' } as const;
  assert.equal(both(spec, { headers: { 'x-user': 'alice' } }), 'alice');
  assert.equal(both(spec, { headers: { 'x-user': ['a', 'b'] } }), 'a, b');
  assert.equal(both(spec, { headers: { 'x-user': ['a'] } }), 'a');
  assert.equal(both(spec, { headers: { 'x-user': '' } }), undefined);
  assert.equal(both(spec, { headers: { 'x-user': [] } }), undefined);
  assert.equal(both(spec, { headers: {} }), undefined);
  assert.equal(both(spec, {}), undefined);
});

test('cookie: the named cookie, exact name, quotes and blanks stripped', () => {
  const spec = { type: 'cookie', name: 'sid' } as const;
  assert.equal(both(spec, { headers: { cookie: 'a=1; sid=abc; b=2' } }), 'abc');
  assert.equal(both(spec, { headers: { cookie: 'xsid=no; sidx=no;sid=yes' } }), 'yes');
  assert.equal(both(spec, { headers: { cookie: 'sid="quoted"' } }), 'quoted');
  assert.equal(both(spec, { headers: { cookie: ' sid = spaced ;' } }), 'spaced');
  assert.equal(both(spec, { headers: { cookie: 'SID=case' } }), undefined, 'cookie names are case-sensitive');
  assert.equal(both(spec, { headers: { cookie: 'sid=' } }), undefined);
  assert.equal(both(spec, { headers: { cookie: 'flag; sid=v=with=eq' } }), 'v=with=eq');
  assert.equal(both(spec, { headers: { cookie: ['a=1', 'sid=second'] } }), 'second', 'HTTP/2 may split cookies over headers');
  assert.equal(both(spec, { headers: { cookie: 'sid=first; sid=dup' } }), 'first');
  assert.equal(both(spec, { headers: {} }), undefined);
  assert.equal(cookieValue(';;; ;', 'sid'), undefined);
});

test('source-address: no port, IPv4-mapped IPv6 as IPv4', () => {
  const spec = { type: 'source-address' } as const;
  assert.equal(both(spec, { sourceAddress: '10.1.2.3' }), '10.1.2.3');
  assert.equal(both(spec, { sourceAddress: '::ffff:10.1.2.3' }), '10.1.2.3');
  assert.equal(both(spec, { sourceAddress: '::FFFF:10.1.2.3' }), '10.1.2.3');
  assert.equal(both(spec, { sourceAddress: 'fd00::1' }), 'fd00::1');
  assert.equal(both(spec, {}), undefined);
  assert.equal(normalizeSourceAddress(''), undefined);
});

test('malformed specs are validation errors', () => {
  for (const [spec, field] of [
    [{ type: 'header', name: '' }, 'hashKey.name'],
    [{ type: 'cookie' }, 'hashKey.name'],
    [{ type: 'query', name: 'x' }, 'hashKey.type'],
    [null, 'hashKey'],
  ] as const) {
    assert.throws(
      () => compileHashKey(spec as unknown as HashKeySpec),
      (e: unknown) => isSkeinError(e) && e.code === 'SKEIN_E_VALIDATION' && e.field === field,
    );
  }
});
