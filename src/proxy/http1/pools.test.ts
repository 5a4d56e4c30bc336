import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeEndpoint } from '../../discovery/endpoint.js';
import { Pools, type Upstream } from './upstream.js';

/** What Pool.release and take touch of an Upstream. */
function fakeUpstream(): Upstream & { closed: boolean } {
  const up = {
    socket: {
      destroyed: false,
      paused: false,
      resume() {
        this.paused = false;
      },
    },
    handler: null,
    reused: false,
    idleSince: 0,
    pool: null as unknown,
    closed: false,
    close() {
      this.closed = true;
      this.socket.destroyed = true;
    },
  };
  return up as unknown as Upstream & { closed: boolean };
}

const e = makeEndpoint({ service: 'svc', id: 'a', address: '127.0.0.1', port: 9 });

test('a connection released after its pool was swept away goes back to the pool of its address', () => {
  const pools = new Pools(8);
  const pool = pools.get(e);
  const up = fakeUpstream();
  up.pool = pool;
  // The request outlives the idle timeout: the sweep drops the (empty, unused) pool meanwhile.
  pools.sweep(10_000, 1000);
  assert.notEqual(pools.get(e), pool, 'the sweep dropped the pool: a new one is made for the address');
  const home = pools.get(e);
  pool.release(up, 10_001);
  assert.equal(up.pool, home, 'the connection now belongs to the live pool');
  assert.equal(home.idleCount, 1, 'and waits there, where the next request finds it');
  assert.equal(pools.idleConnections(), 1, 'it is counted');
  assert.equal(home.take(10_002), up);
});

test('with no pool left for the address, the swept pool is put back', () => {
  const pools = new Pools(8);
  const pool = pools.get(e);
  const up = fakeUpstream();
  up.pool = pool;
  pools.sweep(10_000, 1000);
  pool.release(up, 10_001);
  assert.equal(pools.get(e), pool, 'the old pool is the live one again');
  assert.equal(pools.idleConnections(), 1);
});

test('after closeAll, a released connection is closed instead of pooled; evictOne closes the oldest idle one', () => {
  const pools = new Pools(8);
  const pool = pools.get(e);
  const [a, b, c] = [fakeUpstream(), fakeUpstream(), fakeUpstream()];
  pool.release(a, 1);
  pool.release(b, 2);
  assert.equal(pool.evictOne(), true);
  assert.equal(a.closed, true, 'the oldest went');
  assert.equal(b.closed, false);
  pools.closeAll();
  assert.equal(b.closed, true);
  pool.release(c, 3);
  assert.equal(c.closed, true);
  assert.equal(pool.evictOne(), false, 'nothing idle left');
});

test("a connection paused by a slow client's back-pressure reads again once pooled (that client's drain may never come)", () => {
  const pools = new Pools(8);
  const pool = pools.get(e);
  const up = fakeUpstream();
  up.pool = pool;
  const socket = up.socket as unknown as { paused: boolean };
  socket.paused = true;
  pool.release(up, 1);
  assert.equal(socket.paused, false);
  assert.equal(pool.take(2), up);
});

test('the pool is found by the Endpoint object; an endpoint replaced by one with the same address shares it; swept pools are not handed out', () => {
  const pools = new Pools(8);
  const pool = pools.get(e);
  assert.equal(pools.get(e), pool, 'the same object: the same pool');
  assert.equal(pool.key, '127.0.0.1:9');
  // A new snapshot of the instance: another (frozen) object with the same address.
  const again = makeEndpoint({ service: 'svc', id: 'a', address: '127.0.0.1', port: 9, weight: 5 });
  assert.notEqual(again, e);
  assert.equal(pools.get(again), pool, 'the warm connections stay reachable');
  const moved = makeEndpoint({ service: 'svc', id: 'a', address: '127.0.0.1', port: 10 });
  assert.notEqual(pools.get(moved), pool, 'another port is another pool');
  assert.equal(pools.get(moved).key, '127.0.0.1:10');
  // mTLS: pools apart per identities, for the same Endpoint object.
  const secure = pools.get(e, 'spiffe://a spiffe://b');
  assert.notEqual(secure, pool);
  assert.equal(secure.key, '127.0.0.1:9 spiffe://a spiffe://b');
  assert.equal(pools.get(e, 'spiffe://a spiffe://b'), secure);
  assert.equal(pools.get(e), pool, 'and back to plaintext');
  // A sweep drops the unused pools: the object's remembered pool is not handed out again.
  assert.equal(pools.isLive(pool), true);
  pools.sweep(10_000, 1000);
  assert.equal(pools.isLive(pool), false);
  const fresh = pools.get(e);
  assert.notEqual(fresh, pool);
  assert.equal(pools.isLive(fresh), true);
  assert.equal(pools.get(again), fresh, 'the other object finds the new pool by its address');
  pools.closeAll();
  assert.equal(pools.isLive(fresh), false);
  assert.notEqual(pools.get(e), fresh);
});
