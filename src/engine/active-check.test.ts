/** The proxy's own health checks follow the endpoint set one change at a time (issue 11 §6). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { ManualClock } from '../core/clock.js';
import { EndpointSet, type Endpoint } from '../discovery/endpoint.js';
import { listCalls } from '../discovery/test-helpers.js';
import { TrafficState } from '../resilience/traffic-state.js';
import { ActiveChecker } from './active-check.js';

/** A probe that passes on every port but `closed` (the checker's I/O, played: the engine does none). */
const probeOf = (closed: number) => (e: Endpoint) => Promise.resolve(e.port === closed ? { ok: false, reason: 'connection refused' } : { ok: true, reason: 'connected' });

async function until(fn: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!fn()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('a change of one endpoint starts or stops only its probes; the others keep their timers and counts', async () => {
  const port = 1000;
  const closed = { port: 1001 };
  const clock = new ManualClock();
  const policy = parseService({ name: 'svc', activeHealthCheck: { type: 'tcp', interval: '1s', unhealthyThreshold: 1 } }).traffic;
  const traffic = new TrafficState({ service: 'svc', policy, clock });
  const others = clock.pending; // the outlier detector's interval
  const checker = new ActiveChecker(traffic, policy.activeHealthCheck!, clock, probeOf(closed.port));
  try {
    const eps = Array.from({ length: 300 }, (_, i) => ({ service: 'svc', id: `e${i}`, address: '127.0.0.1', port }));
    const set = EndpointSet.of(eps);
    checker.update(set);
    const targets = (checker as unknown as { targets: Map<string, { timer: unknown; passes: number; running: boolean }> }).targets;
    assert.equal(targets.size, 300);
    assert.equal(clock.pending - others, 300, 'one interval timer per endpoint');
    await until(() => [...targets.values()].every((t) => t.passes === 1 && !t.running), 'the first probes');
    const before = new Map([...targets].map(([k, t]) => [k, t]));
    // One leaves, one joins (on a closed port: it fails), one moves.
    const s1 = set.apply({ type: 'remove', keys: ['svc/e0'] });
    const s2 = s1.apply({ type: 'add', endpoints: [{ service: 'svc', id: 'new', address: '127.0.0.1', port: closed.port }, { ...eps[1]!, port: closed.port }] });
    const lists = listCalls(() => {
      checker.update(s1);
      checker.update(s2);
    });
    assert.equal(lists, 0, 'O(changes): no whole list read');
    assert.equal(targets.size, 300);
    assert.equal(clock.pending - others, 300, 'the timers of the one that left and the one that moved were cancelled');
    for (const [k, t] of before) {
      if (k === 'svc/e0') assert.ok(!targets.has(k));
      else if (k === 'svc/e1') assert.notEqual(targets.get(k), t, 'a new address is probed afresh');
      else assert.equal(targets.get(k), t, `${k} kept its target (timer, counts)`);
    }
    await until(() => traffic.down.has('svc/new') && traffic.down.has('svc/e1'), 'the newcomer and the moved one to fail their first probe');
    assert.equal(traffic.down.size, 2);
  } finally {
    checker.stop();
    traffic.stop();
  }
});
