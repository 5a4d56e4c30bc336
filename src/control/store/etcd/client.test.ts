/** EtcdClient's defaults, against a "member" that takes requests and never answers, on a ManualClock. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { ETCD_DEFAULTS } from '../../../api/etcd.js';
import { ManualClock } from '../../../core/clock.js';
import { SkeinError } from '../../../core/errors.js';
import { EtcdClient } from './client.js';

test('a call without requestTimeoutMs gives a silent member ETCD_DEFAULTS.requestTimeoutMs, not a ms more', async () => {
  const sockets = new Set<Socket>();
  let requests = 0;
  const silent = createServer((sock) => {
    sockets.add(sock);
    sock.once('data', () => requests++);
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const clock = new ManualClock(0);
  const client = new EtcdClient({ endpoints: [`http://127.0.0.1:${(silent.address() as { port: number }).port}`], clock });
  try {
    let settled: unknown = 'pending';
    void client.range('k').then(
      () => (settled = 'answered'),
      (e: unknown) => (settled = e),
    );
    const deadline = Date.now() + 5_000;
    while (requests === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(requests, 1, 'the request reached the member');
    clock.advance(ETCD_DEFAULTS.requestTimeoutMs - 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, 'pending', 'still waiting 1 ms before the timeout');
    clock.advance(1);
    const until = Date.now() + 5_000;
    while (settled === 'pending' && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    const e = settled as unknown;
    assert.ok(e instanceof SkeinError && e.code === 'SKEIN_E_STORE', String(e));
    assert.match(e.message, new RegExp(`no answer within ${ETCD_DEFAULTS.requestTimeoutMs} ms`));
  } finally {
    for (const s of sockets) s.destroy(); // a call still waiting fails now, so close() need not wait for it
    await client.close();
    await new Promise((r) => silent.close(r));
  }
});
