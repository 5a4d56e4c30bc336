import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashBytes, hashKey, hashString } from './hash.js';
import { createRng } from './rng.js';
import { WeightedIndex } from './weighted-index.js';

test('murmur3 x86_32 matches published vectors', () => {
  assert.equal(hashString(''), 0);
  assert.equal(hashString('', 1), 0x514e28b7);
  assert.equal(hashString('', 0xffffffff), 0x81f16f39);
  assert.equal(hashString('The quick brown fox jumps over the lazy dog'), 0x2e4ff723);
  assert.equal(hashString('Hello, world!', 1234), 0xfaf6cdb3);
  assert.equal(hashBytes(Uint8Array.of(0x21, 0x43, 0x65, 0x87)), 0xf55b516b);
  assert.equal(hashBytes(Uint8Array.of(0x21, 0x43, 0x65)), 0x7e4a8634);
  assert.equal(hashBytes(Uint8Array.of(0x21, 0x43)), 0xa0f7b07a);
  assert.equal(hashBytes(Uint8Array.of(0x21)), 0x72661cf4);
});

test('strings hash as their UTF-8 bytes (lone surrogates as U+FFFD)', () => {
  for (const s of ['', 'a', 'ab', 'abc', 'abcd', 'abcde', 'é', 'ü€😀', 'テスト', 'a😀bc😀d', '\ud800x', 'x\udc00', '\ud83d']) {
    assert.equal(hashString(s, 7), hashBytes(Buffer.from(s), 7), JSON.stringify(s));
    assert.equal(hashKey(s), hashKey(Buffer.from(s)));
  }
});

test('similar keys spread over the whole 32-bit range', () => {
  const buckets = new Array<number>(16).fill(0);
  for (let i = 0; i < 16_000; i++) buckets[hashString(`user-${i}`) >>> 28]!++;
  for (const b of buckets) assert.ok(b > 850 && b < 1150, `bucket of ${b}`);
});

test('createRng is deterministic, in [0, 1), and roughly uniform', () => {
  const a = createRng(42);
  const b = createRng(42);
  const c = createRng(43);
  let sum = 0;
  let differs = false;
  for (let i = 0; i < 10_000; i++) {
    const x = a();
    assert.equal(x, b());
    if (x !== c()) differs = true;
    assert.ok(x >= 0 && x < 1);
    sum += x;
  }
  assert.ok(differs);
  assert.ok(Math.abs(sum / 10_000 - 0.5) < 0.01);
});

test('weighted indexes draw by weight, and keep doing so as weights change, grow and shrink', () => {
  const rng = createRng(1);
  const draw = (t: WeightedIndex, want: readonly number[]) => {
    const counts = want.map(() => 0);
    for (let i = 0; i < 200_000; i++) counts[t.sample(rng)]!++;
    const total = want.reduce((a, b) => a + b, 0);
    want.forEach((w, i) => assert.ok(Math.abs(counts[i]! / 200_000 - w / total) < 0.005, `${i}: ${counts[i]} for weight ${w}`));
  };
  const t = new WeightedIndex();
  for (const w of [5, 1, 1, 3]) t.push(w);
  assert.ok(!t.uniform);
  draw(t, [5, 1, 1, 3]);
  t.set(1, 0);
  t.set(3, 4);
  draw(t, [5, 0, 1, 4]);
  // Past the first capacity (16): the tree is rebuilt as it grows.
  for (let i = 0; i < 40; i++) t.push(1 + (i % 3));
  assert.equal(t.size, 44);
  draw(t, [5, 0, 1, 4, ...Array.from({ length: 40 }, (_, i) => 1 + (i % 3))]);
  for (let i = 0; i < 42; i++) t.pop();
  assert.equal(t.total, 5);
  draw(t, [5, 0]);
  const u = new WeightedIndex();
  for (const w of [2, 2, 2]) u.push(w);
  assert.ok(u.uniform);
  assert.equal(u.sample(() => 0.999999999), 2);
  const v = new WeightedIndex();
  v.push(1);
  v.push(3);
  assert.equal(v.sample(() => 0.9999999999999999), 1);
  v.clear();
  v.push(7);
  assert.equal(v.sample(() => 0.5), 0);
});
