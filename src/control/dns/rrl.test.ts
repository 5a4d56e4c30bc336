import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { ResponseRateLimiter, sourceNetwork, type RateVerdict } from './rrl.js';

test('sourceNetwork: IPv4 /24, IPv6 /56 (written out in full), IPv4-mapped as IPv4', () => {
  assert.equal(sourceNetwork('192.0.2.77'), '192.0.2');
  assert.equal(sourceNetwork('::ffff:192.0.2.77'), '192.0.2');
  assert.equal(sourceNetwork('2001:db8:1:2ff::1'), '20010db8000102');
  assert.equal(sourceNetwork('2001:db8:1:200::9'), '20010db8000102', 'same /56');
  assert.notEqual(sourceNetwork('2001:db8:1:300::1'), sourceNetwork('2001:db8:1:200::1'));
  assert.equal(sourceNetwork('::1'), '00000000000000');
  assert.equal(sourceNetwork('fe80::1%eth0'), 'fe800000000000');
});

test('per source: the burst, then the rate; beyond it every slip-th response slips, the others drop', () => {
  const clock = new ManualClock();
  const rrl = new ResponseRateLimiter({ responsesPerSecond: 10, burst: 5, slip: 3, maxSources: 100 }, clock);
  const run = (address: string, n: number) => Array.from({ length: n }, () => rrl.check(address));
  const first = run('10.0.0.1', 11);
  assert.deepEqual(first, ['send', 'send', 'send', 'send', 'send', 'drop', 'drop', 'slip', 'drop', 'drop', 'slip'] satisfies RateVerdict[]);
  assert.deepEqual(run('10.0.0.200', 1), ['drop'], 'the same /24 shares the bucket');
  assert.deepEqual(run('10.0.1.1', 5), Array<RateVerdict>(5).fill('send'), 'another /24 has its own');
  clock.advance(100); // one token at 10/s
  assert.deepEqual(run('10.0.0.1', 2), ['send', 'drop']);
  assert.deepEqual([rrl.dropped, rrl.slipped], [6, 2]);
});

test('slip 0 drops every limited response; the table of sources is bounded', () => {
  const clock = new ManualClock();
  const rrl = new ResponseRateLimiter({ responsesPerSecond: 1, burst: 1, slip: 0, maxSources: 3 }, clock);
  assert.deepEqual([rrl.check('10.0.0.1'), rrl.check('10.0.0.1'), rrl.check('10.0.0.1')], ['send', 'drop', 'drop']);
  for (let i = 1; i <= 10; i++) rrl.check(`10.0.${i}.1`);
  assert.equal(rrl.trackedSources, 3);
  // 10.0.0.0/24 was forgotten: it starts again with a full bucket.
  assert.equal(rrl.check('10.0.0.1'), 'send');
});
