/**
 * The load generators of bench/proxy-ab.ts. The open loop counts latency from each request's
 * scheduled start, so a stall shows in every request scheduled during it, even when it is the
 * generator that fell behind (coordinated omission). Run: node --test dist/bench/load.test.js
 * (the suite runs src/ and test/ only).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { test } from 'node:test';
import { closedLoop, openLoop, startOkBackend } from './load.js';

async function listen(s: Server): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as { port: number }).port;
}

test('requests sent late by a stalled generator still count from their schedule', async () => {
  // The server is another process and always fast; at 200 requests/s the generator's own event
  // loop is held for 300 ms, 200 ms into the run. The ~60 requests due meanwhile go out late, all
  // at once, and answer quickly: measured from the send they look fine, measured from the
  // schedule (as they must be) the ~40 due in the first 200 ms of the stall took 100 ms or more.
  const { child: server, port } = await startOkBackend();
  try {
    setTimeout(() => {
      const until = performance.now() + 300;
      while (performance.now() < until) {
        /* the generator stalls */
      }
    }, 205);
    const r = await openLoop(port, 200, 2);
    assert.equal(r.errors, 0);
    assert.equal(r.latency.length, 400);
    const slow = Array.from(r.latency).filter((ms) => ms >= 100).length;
    assert.ok(slow >= 35, `${slow} requests took 100 ms or more from their scheduled start, expected 40 or more`);
    const sorted = Float64Array.from(r.latency).sort();
    assert.ok((sorted[395] as number) >= 100, `p99 ${sorted[395]} ms hides the stall`);
    assert.ok(Math.max(...r.lateness) >= 250, 'the generator reports how late it sent');
  } finally {
    server.kill('SIGKILL');
  }
});

test('the closed loop sends exactly n requests and counts non-200 answers as errors', async () => {
  let served = 0;
  const server = createServer((_req, res) => {
    served++;
    res.statusCode = served % 10 === 0 ? 503 : 200;
    res.end('x');
  });
  const port = await listen(server);
  try {
    const errors = await closedLoop(port, 500, 8);
    assert.equal(served, 500);
    assert.equal(errors, 50);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
