/**
 * The tools of bench/control-store.ts against real sockets on 127.0.0.1: the watcher counts a
 * snapshot's bytes exactly however the stream is cut, and reads each later line's type and
 * revision; the pool opens at most `concurrency` at a time and names a watcher that fails; the
 * registration load sends each instance of the fleet once and counts refusals; a round of writes
 * waits for the last watcher, and says when one did not get the write in time.
 * Run: node --test dist/bench/control-store.test.js (the suite runs src/ and test/ only).
 */
import assert from 'node:assert/strict';
import http, { createServer, type Server, type ServerResponse } from 'node:http';
import { test } from 'node:test';
import { fleetInstance, openWatchers, registerFleet, Watcher, WriteRounds, type WatchLine } from './control-store-lib.js';

async function listen(s: Server): Promise<string> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}

function stop(s: Server): Promise<void> {
  s.closeAllConnections();
  return new Promise((r) => s.close(() => r()));
}

/** A snapshot line of about `bytes` bytes (newline included) at `revision`. */
function snapshotLine(revision: number, bytes: number): string {
  const head = `{"type":"snapshot","revision":${revision},"service":null,"instances":[],"services":[],"pad":"`;
  return head + 'x'.repeat(bytes - head.length - 3) + '"}\n';
}

test('a watcher counts the snapshot to its newline however the stream is cut, then reads each line', async () => {
  const snap = snapshotLine(41, 300_000);
  assert.equal(Buffer.byteLength(snap), 300_000);
  const after = '{"type":"add","revision":42,"service":"a","instance":{"id":"é"}}\n{"type":"ping","revision":42}\n{"type":"remove","revision":43,"service":"a"}\n';
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    void (async () => {
      // Cut inside the snapshot's head, at its newline, and inside a multi-byte character.
      const all = Buffer.from(snap + after);
      const cuts = [20, 70_000, 299_999, 300_000, 300_001, 300_000 + after.indexOf('é') + 1, all.length];
      let from = 0;
      for (const c of cuts) {
        res.write(all.subarray(from, c));
        from = c;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
  });
  const base = await listen(server);
  const agent = new http.Agent();
  const lines: WatchLine[] = [];
  let snapshots = 0;
  const w = new Watcher(
    0,
    (_w, line) => lines.push(line),
    () => snapshots++,
  );
  try {
    w.open(base, agent);
    const deadline = Date.now() + 5000;
    while (lines.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(w.snapshotBytes, 300_000);
    assert.equal(w.snapshotRevision, 41);
    assert.equal(snapshots, 1);
    assert.deepEqual(lines, [
      { type: 'add', revision: 42 },
      { type: 'ping', revision: 42 },
      { type: 'remove', revision: 43 },
    ]);
    assert.equal(w.messages, 2, 'pings are not messages');
  } finally {
    w.close();
    agent.destroy();
    await stop(server);
  }
});

test('a stream that does not start with a snapshot is an error naming the watcher', () => {
  const w = new Watcher(7);
  assert.throws(() => w.data(Buffer.from('{"type":"add","revision":3}\n')), /watcher 7: the stream did not start with a snapshot/);
});

test('the pool has at most `concurrency` watchers waiting for a snapshot, and all get one', async () => {
  const waiting: ServerResponse[] = [];
  let most = 0;
  const server = createServer((req, res) => {
    assert.equal(req.url, '/v1/watch?since=9');
    res.writeHead(200);
    res.flushHeaders();
    waiting.push(res);
    most = Math.max(most, waiting.length);
  });
  // Answers only once 4 are waiting (or the last 1), so a pool that opened more would be seen.
  let answered = 0;
  const timer = setInterval(() => {
    if (waiting.length < Math.min(4, 25 - answered)) return;
    for (const res of waiting.splice(0)) {
      answered++;
      res.write(snapshotLine(9, 200));
    }
  }, 5);
  const base = await listen(server);
  const agent = new http.Agent({ maxSockets: Infinity });
  const into: Watcher[] = [];
  try {
    const r = await openWatchers({ base, n: 25, concurrency: 4, since: 9, timeoutMs: 10_000, agent }, into);
    assert.equal(into.length, 25);
    assert.deepEqual(
      into.map((w) => [w.snapshotRevision, w.snapshotBytes]),
      Array.from({ length: 25 }, () => [9, 200]),
    );
    assert.equal(most, 4);
    assert.ok(r.ms > 0);
  } finally {
    clearInterval(timer);
    for (const w of into) w.close();
    agent.destroy();
    await stop(server);
  }
});

test('the pool rejects naming a watcher the control plane refused', async () => {
  let n = 0;
  const server = createServer((_req, res) => {
    if (n++ === 2) {
      res.writeHead(503);
      res.end();
      return;
    }
    res.writeHead(200);
    res.write(snapshotLine(1, 100));
  });
  const base = await listen(server);
  const agent = new http.Agent({ maxSockets: Infinity });
  const into: Watcher[] = [];
  try {
    await assert.rejects(openWatchers({ base, n: 5, concurrency: 1, timeoutMs: 10_000, agent }, into), /watcher 2 failed before its snapshot: HTTP 503 \(2\/5 had theirs\)/);
  } finally {
    for (const w of into) w.close();
    agent.destroy();
    await stop(server);
  }
});

test('the registration load sends each instance of the fleet once, with the token, and counts refusals', async () => {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      assert.equal(req.method, 'PUT');
      assert.equal(req.headers.authorization, 'Bearer t0k');
      assert.equal(JSON.parse(body).port, 8080);
      seen.push(req.url as string);
      res.statusCode = req.url === '/v1/services/svc-2/instances/i-7' ? 409 : 201;
      res.end('{}');
    });
  });
  const base = await listen(server);
  try {
    const r = await registerFleet({ base, token: 't0k', from: 3, count: 6, perService: 3, clients: 4 });
    assert.deepEqual(seen.sort(), ['/v1/services/svc-1/instances/i-3', '/v1/services/svc-1/instances/i-4', '/v1/services/svc-1/instances/i-5', '/v1/services/svc-2/instances/i-6', '/v1/services/svc-2/instances/i-7', '/v1/services/svc-2/instances/i-8']);
    assert.equal(r.instances, 5);
    assert.equal(r.errors, 1);
    assert.equal(r.firstError, 'svc-2/i-7: HTTP 409 {}');
    assert.equal(r.latencies.length, 5);
  } finally {
    await stop(server);
  }
});

test('fleet instances: service by index, distinct addresses', () => {
  assert.deepEqual(
    [0, 9, 10, 65_793].map((k) => {
      const i = fleetInstance(k, 10);
      return [i.service, i.id, JSON.parse(i.body).address];
    }),
    [
      ['svc-0', 'i-0', '10.0.0.0'],
      ['svc-0', 'i-9', '10.0.0.9'],
      ['svc-1', 'i-10', '10.0.0.10'],
      ['svc-6579', 'i-65793', '10.1.1.1'],
    ],
  );
});

test('a round of writes ends when the last watcher has the add, and times each watcher from the send', async () => {
  const rounds = new WriteRounds(3, 5_000);
  const ws = [0, 1, 2].map((i) => new Watcher(i));
  const add = (i: number, revision: number, at: number) => rounds.line(ws[i] as Watcher, { type: 'add', revision }, at);
  let sent = 0;
  const r = await rounds.round(async () => {
    sent = performance.now();
    add(0, 7, sent + 2); // before the write is acknowledged
    setTimeout(() => {
      add(1, 7, sent + 5);
      rounds.line(ws[1] as Watcher, { type: 'ping', revision: 7 }, sent + 6);
      add(2, 7, sent + 9);
    }, 20);
    return 7;
  });
  assert.deepEqual(r, { ok: true, got: 3, revision: 7 });
  assert.equal(rounds.last.length, 1);
  assert.ok(Math.abs((rounds.last[0] as number) - 9) < 1, `last ${rounds.last[0]} ms, expected ~9`);
  assert.deepEqual(
    rounds.each.map((d) => Math.round(d)),
    [2, 5, 9],
  );
  assert.equal(rounds.timeouts, 0);
  assert.equal(rounds.outOfOrder, 0);
  // An event at an older revision on a stream is out of order.
  add(2, 6, sent + 20);
  assert.equal(rounds.outOfOrder, 1);
});

test('a round times out when a watcher never has the write, and an event at another revision is an error', async () => {
  const rounds = new WriteRounds(2, 50);
  const ws = [new Watcher(0), new Watcher(1)];
  const r = await rounds.round(async () => {
    rounds.line(ws[0] as Watcher, { type: 'add', revision: 3 }, performance.now());
    return 3;
  });
  assert.deepEqual(r, { ok: false, got: 1, revision: 3 });
  assert.equal(rounds.timeouts, 1);
  assert.equal(rounds.last.length, 0, 'a round that timed out is not a latency');
  await assert.rejects(
    rounds.round(async () => {
      rounds.line(ws[0] as Watcher, { type: 'add', revision: 10 }, performance.now());
      return 11;
    }),
    /the watchers' event has revision 10, the write 11/,
  );
});
