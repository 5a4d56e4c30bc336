import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SkeinError } from '../../../core/errors.js';
import { checkLeaseId, decode, encode, int, parseKv, prefixEnd } from './wire.js';

const bytes = (b64: string) => [...Buffer.from(b64, 'base64')];

test('encode: standard, padded base64 of the UTF-8 bytes (the only form the gateway takes)', () => {
  assert.equal(encode('a'), 'YQ==');
  assert.equal(encode('ü/€'), 'w7wv4oKs');
  assert.equal(encode('\u{1F600}?'), '8J+YgD8='); // '+' and padding, not url-safe
  assert.equal(decode(encode('skein/服务/ü')), 'skein/服务/ü');
  assert.equal(decode(undefined), '', 'an omitted value is the empty string');
});

test('prefixEnd: the last byte + 1, counted on UTF-8 bytes, not UTF-16 units', () => {
  assert.equal(decode(prefixEnd('skein/svc/')), 'skein/svc0');
  assert.deepEqual(bytes(prefixEnd('é')), [0xc3, 0xaa]); // 'é' is C3 A9
  assert.deepEqual(bytes(prefixEnd('k/\u{1F600}')), [0x6b, 0x2f, 0xf0, 0x9f, 0x98, 0x81]);
  assert.deepEqual(bytes(prefixEnd('')), [0], 'the empty prefix selects every key');
});

test('parseKv: every omitted zero field is defaulted; lease IDs stay strings', () => {
  assert.deepEqual(parseKv({}), { key: '', value: '', createRevision: 0, modRevision: 0, version: 0, lease: null });
  assert.deepEqual(parseKv({ key: encode('k'), create_revision: '7', mod_revision: '9', version: '2', lease: '7587883112530339861' }), {
    key: 'k',
    value: '',
    createRevision: 7,
    modRevision: 9,
    version: 2,
    lease: '7587883112530339861', // Number() would give 7587883112530340000: another lease
  });
  assert.equal(parseKv({ lease: '0' }).lease, null);
});

test('int: omitted is 0; a value beyond 2^53 is refused, naming the field', () => {
  assert.equal(int(undefined, 'count'), 0);
  assert.equal(int('12', 'revision'), 12);
  assert.throws(() => int('9007199254740993', 'revision'), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_STORE' && /revision.*9007199254740993/.test(e.message));
});

test('checkLeaseId: a positive int64 as a decimal string, else SKEIN_E_VALIDATION naming the field', () => {
  assert.equal(checkLeaseId('7587883112530339861'), '7587883112530339861');
  for (const bad of ['0', '-1', '12a', '', '9223372036854775808', 7 as unknown as string]) {
    assert.throws(
      () => checkLeaseId(bad, 'success[0].lease'),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === 'success[0].lease',
      `refused: ${JSON.stringify(bad)}`,
    );
  }
});
