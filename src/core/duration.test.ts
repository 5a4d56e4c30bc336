import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DURATION_PATTERN, formatDuration, parseDuration } from './duration.js';

test('parseDuration reads single units', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration('0s'), 0);
});

test('parseDuration adds compound parts and fractions', () => {
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('1h1m1s1ms'), 3_661_001);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('0.5ms'), 1, 'rounds to whole milliseconds');
});

test('parseDuration rejects what is not a duration', () => {
  for (const bad of ['', '10', 's', '10 s', '-1s', '1d', '1.s', 'ms10', '10sx', ' 10s', '1e3ms']) {
    assert.equal(parseDuration(bad), undefined, JSON.stringify(bad));
  }
});

test('DURATION_PATTERN agrees with parseDuration', () => {
  const re = new RegExp(DURATION_PATTERN);
  for (const s of ['10s', '1m30s', '1.5h', '250ms']) assert.ok(re.test(s), s);
  for (const s of ['10', '1d', '', 'abc']) assert.ok(!re.test(s), s);
});

test('formatDuration picks the largest whole unit', () => {
  assert.equal(formatDuration(7_200_000), '2h');
  assert.equal(formatDuration(120_000), '2m');
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(1000), '1s');
  assert.equal(formatDuration(1500), '1500ms');
  assert.equal(formatDuration(0), '0ms');
});

test('formatDuration output parses back to the same value', () => {
  for (const ms of [0, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 5_400_000]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, String(ms));
  }
});
