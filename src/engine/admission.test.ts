/**
 * connectionRefusal: the connection and pending-request limits an outbound attempt must pass before
 * it opens a connection; and a new connection's bookkeeping that every driver shares (reserve,
 * settle, join, leave).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { setOf } from '../balance/test-helpers.js';
import { ManualClock, MAX_TIMER_MS } from '../core/clock.js';
import { atConnectionLimit, badDeadline, ConnectReservation, connectionRefusal, connectSettled, deadlineMs, joinConnections, leaveConnections, reserveConnection } from './admission.js';
import { ServiceClient } from './service-client.js';

function traffic(limits: object) {
  const client = new ServiceClient('svc', parseService({ name: 'svc', limits }), setOf(2), new ManualClock(), () => {}, null);
  return client.traffic;
}

test('under both limits a new connection may open', () => {
  const t = traffic({ maxConnections: 2, maxPendingRequests: 2 });
  t.connections.open = 1;
  t.pending = 1;
  assert.equal(connectionRefusal(t), null);
  assert.equal(t.overflows, 0);
});

test('at maxConnections: SKEIN_E_UPSTREAM_OVERFLOW naming the open connections and the limit, counted as an overflow', () => {
  const t = traffic({ maxConnections: 2, maxPendingRequests: 5 });
  t.connections.open = 2;
  assert.deepEqual(connectionRefusal(t), { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: '"svc" has 2 connections (limits.maxConnections 2)' });
  assert.equal(t.overflows, 1);
});

test('at maxPendingRequests: SKEIN_E_UPSTREAM_OVERFLOW naming the requests waiting for a connection and the limit', () => {
  const t = traffic({ maxConnections: 5, maxPendingRequests: 3 });
  t.connections.open = 4;
  t.pending = 3;
  assert.deepEqual(connectionRefusal(t), { code: 'SKEIN_E_UPSTREAM_OVERFLOW', message: '"svc" has 3 requests waiting for a connection (limits.maxPendingRequests 3)' });
  assert.equal(t.overflows, 1);
});

test('both at their limit: the connections are named (the limit a new connection would break)', () => {
  const t = traffic({ maxConnections: 1, maxPendingRequests: 1 });
  t.connections.open = 1;
  t.pending = 1;
  assert.equal(connectionRefusal(t)?.message, '"svc" has 1 connections (limits.maxConnections 1)');
});

test('a connection reserved, made, settled and closed: pending and open counts go up and back down once each; a refusal counts nothing', () => {
  const t = traffic({ maxConnections: 2, maxPendingRequests: 5 });
  assert.equal(reserveConnection(t), null);
  assert.equal(t.pending, 1);
  let place = joinConnections(t.connections);
  assert.equal(t.connections.open, 1);
  assert.equal(atConnectionLimit(t), false);
  assert.equal(reserveConnection(t), null);
  joinConnections(t.connections);
  assert.equal(atConnectionLimit(t), true, 'two open of maxConnections 2: a driver may evict an idle one');
  assert.equal(reserveConnection(t)?.code, 'SKEIN_E_UPSTREAM_OVERFLOW');
  assert.deepEqual([t.pending, t.connections.open, t.overflows], [2, 2, 1], 'the refused reservation is not pending');
  connectSettled(t);
  connectSettled(t);
  assert.equal(t.pending, 0);
  place = leaveConnections(place);
  assert.equal(place, null);
  assert.equal(leaveConnections(place), null, 'leaving twice leaves once');
  assert.equal(t.connections.open, 1);
  assert.equal(joinConnections(null), null, 'an inbound connection is counted nowhere');
});

test('x-skein-timeout-ms: whole ms, capped at what a timer holds; a repeat (a list) is its smallest; anything else is the text, refused with one message', () => {
  assert.equal(deadlineMs('250'), 250);
  assert.equal(deadlineMs('0'), 0);
  assert.equal(deadlineMs('300, 200'), 200);
  assert.equal(deadlineMs('300,200,900'), 200);
  assert.equal(deadlineMs('99999999999999999999'), MAX_TIMER_MS);
  assert.equal(deadlineMs('1.5'), '1.5');
  assert.equal(deadlineMs('300, soon'), '300, soon');
  assert.equal(deadlineMs(''), '');
  assert.deepEqual(badDeadline('soon'), { code: 'SKEIN_E_BAD_REQUEST', message: 'x-skein-timeout-ms must be a whole number of milliseconds, not "soon"' });
});

test('a ConnectReservation holds one pending connection until it settles, once; at the limit it holds nothing', () => {
  const t = traffic({ maxConnections: 5, maxPendingRequests: 1 });
  const a = new ConnectReservation();
  assert.equal(a.reserve(t), null);
  assert.equal(a.held, true);
  assert.equal(t.pending, 1);
  const b = new ConnectReservation();
  assert.equal(b.reserve(t)?.code, 'SKEIN_E_UPSTREAM_OVERFLOW');
  assert.equal(b.held, false);
  a.settle();
  a.settle();
  assert.equal(t.pending, 0, 'settled once');
  assert.equal(a.held, false);
});
