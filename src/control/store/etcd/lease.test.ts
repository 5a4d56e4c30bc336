/** KeptLease on a ManualClock with a scripted client: renewals every TTL/3, `lost` on time. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../../core/clock.js';
import { KeptLease, type LeaseClient } from './lease.js';

/** A client whose keep-alive answers come from `answer` (a TTL, or an Error to reject with). */
function fakeClient(answer: () => number | Error) {
  const calls = { keepAlive: 0, revoke: [] as string[] };
  const client: LeaseClient = {
    leaseGrant: async (ttlSeconds) => ({ id: '7587883112530339861', ttlSeconds }),
    leaseKeepAliveOnce: async () => {
      calls.keepAlive++;
      const a = answer();
      if (a instanceof Error) throw a;
      return a;
    },
    leaseRevoke: async (id) => void calls.revoke.push(id),
  };
  return { client, calls };
}

/** Moves the clock, letting the renewals' promises settle between steps. */
async function advance(clock: ManualClock, ms: number, step = 100): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    clock.advance(Math.min(step, ms - t));
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }
}

test('a lease whose renewals succeed is renewed every TTL/3 and never lost', async () => {
  const clock = new ManualClock(0);
  const { client, calls } = fakeClient(() => 3);
  const lease = await KeptLease.grant(client, 3, { clock });
  const lost: string[] = [];
  lease.on('lost', (why) => lost.push(why));
  assert.equal(lease.id, '7587883112530339861');
  await advance(clock, 999);
  assert.equal(calls.keepAlive, 0);
  await advance(clock, 1);
  assert.equal(calls.keepAlive, 1, 'the first renewal at TTL/3 = 1,000 ms');
  await advance(clock, 9_000);
  assert.equal(calls.keepAlive, 10);
  assert.deepEqual(lost, []);
  assert.equal(lease.alive, true);
  await lease.close();
  assert.deepEqual(calls.revoke, ['7587883112530339861']);
  assert.equal(clock.pending, 0, 'no timer left');
});

test('renewals that keep failing: lost exactly one TTL after the last successful send, naming the last error', async () => {
  const clock = new ManualClock(0);
  let fail = false;
  const { client } = fakeClient(() => (fail ? new Error('etcd: no member could serve /v3/lease/keepalive') : 3));
  const lease = await KeptLease.grant(client, 3, { clock });
  const lost: Array<[number, string]> = [];
  lease.on('lost', (why) => lost.push([clock.now(), why]));
  await advance(clock, 1000); // renewed at t=1000 (sent then): the deadline moves to 4000
  fail = true;
  await advance(clock, 2999);
  assert.deepEqual(lost, [], 'not before the deadline');
  await advance(clock, 1);
  assert.deepEqual(lost, [[4000, 'no renewal succeeded within the TTL (3 s); last error: etcd: no member could serve /v3/lease/keepalive']]);
  assert.equal(lease.alive, false);
  await advance(clock, 10_000);
  assert.equal(lost.length, 1, 'lost once');
  assert.equal(clock.pending, 0);
});

test('etcd answers TTL 0 (the lease expired or was revoked): lost at once; close() then revokes nothing', async () => {
  const clock = new ManualClock(0);
  const { client, calls } = fakeClient(() => 0);
  const lease = await KeptLease.grant(client, 6, { clock });
  const lost: Array<[number, string]> = [];
  lease.on('lost', (why) => lost.push([clock.now(), why]));
  await advance(clock, 2000);
  assert.deepEqual(lost, [[2000, 'etcd says the lease is gone (expired or revoked)']]);
  await lease.close();
  assert.deepEqual(calls.revoke, []);
});

test('close() stops renewing, revokes, and never emits lost', async () => {
  const clock = new ManualClock(0);
  const { client, calls } = fakeClient(() => new Error('down'));
  const lease = await KeptLease.grant(client, 3, { clock });
  let lost = 0;
  lease.on('lost', () => lost++);
  await lease.close();
  await advance(clock, 10_000);
  assert.equal(lost, 0);
  assert.equal(calls.keepAlive, 0);
  assert.deepEqual(calls.revoke, ['7587883112530339861']);
});
