import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { waitUntilReady, type ProbeResult, type ReadinessProbe } from './readiness.js';

const target = { type: 'http' as const, host: '127.0.0.1', port: 1, path: '/health' };
const timing = { intervalMs: 500, timeoutMs: 100, initialDelayMs: 0, deadlineMs: 5000 };

/** Lets pending promise callbacks run (no wall-clock time passes on the ManualClock). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** A probe that answers from a script, recording the clock time of each call. */
function scripted(clock: ManualClock, answers: boolean[]): { probe: ReadinessProbe; calls: number[] } {
  const calls: number[] = [];
  const probe: ReadinessProbe = async () => {
    calls.push(clock.now());
    const ok = answers.shift() ?? false;
    return { ok, reason: ok ? 'HTTP 200' : 'connect ECONNREFUSED' } satisfies ProbeResult;
  };
  return { probe, calls };
}

test('probes every interval until one succeeds', async () => {
  const clock = new ManualClock(0);
  const { probe, calls } = scripted(clock, [false, false, true]);
  const p = waitUntilReady(target, timing, { clock, signal: new AbortController().signal, probe });
  await settle();
  clock.advance(500);
  await settle();
  clock.advance(500);
  const r = await p;
  assert.deepEqual(r, { ready: true, reason: 'HTTP 200', probes: 3 });
  assert.deepEqual(calls, [0, 500, 1000]);
});

test('waits the initial delay before the first probe', async () => {
  const clock = new ManualClock(0);
  const { probe, calls } = scripted(clock, [true]);
  const p = waitUntilReady(target, { ...timing, initialDelayMs: 300 }, { clock, signal: new AbortController().signal, probe });
  await settle();
  assert.deepEqual(calls, []);
  clock.advance(300);
  assert.equal((await p).ready, true);
  assert.deepEqual(calls, [300]);
});

test('gives up at the deadline with the last reason', async () => {
  const clock = new ManualClock(0);
  const { probe, calls } = scripted(clock, []);
  const p = waitUntilReady(target, { ...timing, deadlineMs: 1200 }, { clock, signal: new AbortController().signal, probe });
  for (let i = 0; i < 5; i++) {
    await settle();
    clock.advance(500);
  }
  const r = await p;
  assert.equal(r.ready, false);
  assert.equal(r.reason, 'not ready within 1200ms: connect ECONNREFUSED');
  assert.deepEqual(calls, [0, 500, 1000], 'no probe starts after the deadline');
});

test('a probe near the deadline gets only the time left as its timeout', async () => {
  const clock = new ManualClock(0);
  const timeouts: number[] = [];
  const probe: ReadinessProbe = async (_t, timeoutMs) => {
    timeouts.push(timeoutMs);
    return { ok: false, reason: 'no' };
  };
  const p = waitUntilReady(target, { intervalMs: 400, timeoutMs: 300, initialDelayMs: 0, deadlineMs: 1000 }, { clock, signal: new AbortController().signal, probe });
  for (let i = 0; i < 4; i++) {
    await settle();
    clock.advance(400);
  }
  await p;
  assert.deepEqual(timeouts, [300, 300, 200]);
});

test('an abort ends the wait at once', async () => {
  const clock = new ManualClock(0);
  const { probe } = scripted(clock, []);
  const ctl = new AbortController();
  const p = waitUntilReady(target, timing, { clock, signal: ctl.signal, probe });
  await settle();
  ctl.abort();
  assert.deepEqual(await p, { ready: false, reason: 'aborted', probes: 1 });
  assert.equal(clock.pending, 0, 'no timer left behind');
});
