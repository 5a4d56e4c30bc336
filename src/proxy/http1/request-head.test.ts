import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestIds } from './request-head.js';

/** RFC 9562's layout with version 8 and the RFC's variant (10xx). */
const UUID_V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('request ids: UUIDv8-formatted, the random prefix drawn once, then a counter in the last 12 hex digits', () => {
  const ids = new RequestIds(Uint8Array.from([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc]));
  // Random hex 0123456789abcdeffedc: 8 digits, 4, the version 8 then 3, the variant (f & 3 | 8 = b) then 3.
  assert.equal(ids.next(), '01234567-89ab-8cde-bfed-000000000001');
  assert.equal(ids.next(), '01234567-89ab-8cde-bfed-000000000002');
  for (let i = 3; i <= 15; i++) ids.next();
  assert.equal(ids.next(), '01234567-89ab-8cde-bfed-000000000010', 'the counter carries in hex');
  for (let i = 17; i <= 0x1000; i++) ids.next();
  assert.equal(ids.next(), '01234567-89ab-8cde-bfed-000000001001');
});

test('request ids: the counter wraps after 2^48 ids without touching the prefix', () => {
  const ids = new RequestIds(new Uint8Array(10).fill(0xff));
  const internal = ids as unknown as { bytes: Buffer };
  internal.bytes.fill(0x66, 24); // the counter at ffffffffffff
  assert.equal(ids.next(), 'ffffffff-ffff-8fff-bfff-000000000000');
  assert.equal(ids.next(), 'ffffffff-ffff-8fff-bfff-000000000001');
});

test('request ids: every variant nibble is one of 8, 9, a, b; two processes draw different prefixes', () => {
  for (let v = 0; v < 16; v++) {
    const random = new Uint8Array(10);
    random[7] = v; // hex digit 15: the variant's source
    assert.match(new RequestIds(random).next(), UUID_V8);
  }
  const a = new RequestIds().next();
  const b = new RequestIds().next();
  assert.match(a, UUID_V8);
  assert.notEqual(a.slice(0, 24), b.slice(0, 24), 'each RequestIds draws its own 74 random bits');
  const seen = new Set<string>();
  const ids = new RequestIds();
  for (let i = 0; i < 10_000; i++) seen.add(ids.next());
  assert.equal(seen.size, 10_000);
});

test('request ids: fewer than 10 random bytes is refused', () => {
  assert.throws(() => new RequestIds(new Uint8Array(9)), /RequestIds needs 10 random bytes, got 9/);
});
