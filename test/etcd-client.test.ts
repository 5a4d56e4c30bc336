/**
 * The etcd client against real 3-member etcd clusters (test/etcd-cluster.ts): CRUD, transactions,
 * watches across kill -9 and partitions, compaction, leases and elections. Needs Debian's etcd
 * (scripts/setup.sh installs it); without it these tests fail, they do not skip.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/core/clock.js';
import { SkeinError } from '../src/core/errors.js';
import { EtcdClient, type KeyValue, type WatchEvent } from '../src/control/store/etcd/client.js';
import { Election } from '../src/control/store/etcd/election.js';
import { KeptLease, type LeaseClient } from '../src/control/store/etcd/lease.js';
import { createServer, type Socket } from 'node:net';
import { freePorts, startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';
import { waitFor } from './helpers.js';

/** Records what a watch reports. */
function recorder() {
  const r = {
    events: [] as Array<WatchEvent & { at: number }>,
    resets: [] as Array<{ kvs: KeyValue[]; revision: number }>,
    connects: [] as string[],
    disconnects: [] as Array<{ why: string; at: number }>,
    handlers: {
      onEvents: (evs: WatchEvent[]) => {
        for (const e of evs) r.events.push({ ...e, at: Date.now() });
      },
      onReset: (kvs: KeyValue[], revision: number) => void r.resets.push({ kvs, revision }),
      onConnect: (ep: string) => void r.connects.push(ep),
      onDisconnect: (why: string) => void r.disconnects.push({ why, at: Date.now() }),
    },
  };
  return r;
}
const rev = (e: WatchEvent) => (e.type === 'put' ? e.kv.modRevision : e.modRevision);
const isStoreError = (re: RegExp) => (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_STORE' && re.test(e.message);

describe('etcd client on one cluster', () => {
  let cluster: EtcdCluster;
  let client: EtcdClient;
  before(async () => {
    cluster = await startEtcdCluster({ members: 3 });
    client = new EtcdClient({ endpoints: cluster.endpoints, watchIdleMs: 3000 });
  });
  after(async () => {
    await client?.close();
    await cluster?.close();
  });

  test('put, range by prefix (non-ASCII keys, on bytes), prevKv, keysOnly, limit, historic revision, delete by prefix', async () => {
    const a = await client.put('crud/svc/a', 'α');
    const u = await client.put('crud/svc/ü', 'ü-1');
    await client.put('crud/svc/服务', '{"port":8080}');
    await client.put('crud/svcX', 'not under the prefix');
    await client.put('crud/svc0', 'not under it either (the range end)');
    const again = await client.put('crud/svc/ü', 'ü-2', { prevKv: true });
    assert.equal(again.revision, u.revision + 4);
    assert.deepEqual(again.prevKv, { key: 'crud/svc/ü', value: 'ü-1', createRevision: u.revision, modRevision: u.revision, version: 1, lease: null });

    const r = await client.range('crud/svc/', { prefix: true });
    assert.equal(r.revision, again.revision);
    assert.equal(r.count, 3);
    assert.equal(r.more, false);
    assert.deepEqual(
      r.kvs.map((kv) => [kv.key, kv.value, kv.version]),
      [
        ['crud/svc/a', 'α', 1],
        ['crud/svc/ü', 'ü-2', 2], // ü is C3 BC, 服 is E6 9C 8D: byte order
        ['crud/svc/服务', '{"port":8080}', 1],
      ],
    );
    const page = await client.range('crud/svc/', { prefix: true, limit: 2, keysOnly: true });
    assert.deepEqual(page.kvs.map((kv) => [kv.key, kv.value]), [['crud/svc/a', ''], ['crud/svc/ü', '']]);
    assert.equal(page.more, true);
    assert.equal(page.count, 3);
    const old = await client.range('crud/svc/ü', { revision: u.revision });
    assert.equal(old.kvs[0]?.value, 'ü-1');
    const none = await client.range('crud/nothing/', { prefix: true });
    assert.deepEqual([none.kvs, none.count, none.more], [[], 0, false], 'an empty answer (no kvs, no count on the wire) is defaulted');

    const d = await client.delete('crud/svc/', { prefix: true });
    assert.equal(d.deleted, 3);
    assert.equal((await client.range('crud/', { prefix: true })).count, 2, 'crud/svcX and crud/svc0 stay');
    assert.deepEqual(await client.delete('crud/svc/a'), { revision: d.revision, deleted: 0 });
    assert.ok(a.revision > 1);
  });

  test('list: every key under a prefix, read in pages, in key order, at the revision of its first page', async () => {
    for (let i = 0; i < 25; i++) await client.put(`page/k${String(i).padStart(2, '0')}`, String(i));
    await client.put('pagez', 'not under the prefix');
    const all = await client.list('page/', 10);
    assert.deepEqual(all.kvs.map((kv) => kv.key), Array.from({ length: 25 }, (_, i) => `page/k${String(i).padStart(2, '0')}`));
    const one = await client.range('page/', { prefix: true });
    assert.equal(all.revision, one.revision, 'nothing was written in between: the same revision');
    assert.deepEqual(all.kvs, one.kvs);
  });

  test('bad input is refused before anything is sent, naming the field; etcd refusals carry the gRPC code', async () => {
    await assert.rejects(client.put('', 'v'), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === 'key');
    await assert.rejects(client.put('k', 'v', { lease: '12.5' }), (e: unknown) => e instanceof SkeinError && e.field === 'lease');
    await assert.rejects(
      client.txn({ compare: [{ key: 'k', target: 'mod', op: '=', value: 'x' }], success: [] }),
      (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_VALIDATION' && e.field === 'compare[0].value',
    );
    assert.throws(() => new EtcdClient({ endpoints: ['127.0.0.1:2379'] }), (e: unknown) => e instanceof SkeinError && e.field === 'endpoints[0]');
    const { revision } = await client.range('k');
    await assert.rejects(client.range('k', { revision: revision + 1000 }), (e: unknown) => isStoreError(/future revision/)(e) && (e as SkeinError & { details: { grpcCode: number } }).details.grpcCode === 11);
  });

  test('status: each member names itself, the leader, the raft term and the revision', async () => {
    const leader = await cluster.leader();
    const all = await Promise.all(cluster.endpoints.map((ep) => client.status(ep)));
    assert.deepEqual(all.map((s) => s.endpoint), cluster.endpoints);
    assert.equal(new Set(all.map((s) => s.memberId)).size, 3);
    assert.deepEqual(new Set(all.map((s) => s.leader)), new Set([all[leader]!.memberId]));
    for (const s of all) {
      assert.match(s.memberId, /^[1-9][0-9]*$/);
      assert.ok(s.raftTerm >= 2 && s.revision >= 1 && s.dbSize > 0, JSON.stringify(s));
    }
  });

  test('fail-over: a refused connection moves on (even for a write); a write cut off after sending is not sent again (outcome unknown), a read is', async () => {
    const [closedPort] = await freePorts(1);
    const viaDead = new EtcdClient({ endpoints: [`http://127.0.0.1:${closedPort}`, ...cluster.endpoints] });
    try {
      assert.ok((await viaDead.put('failover/refused', 'went to the next member')).revision > 0);
    } finally {
      await viaDead.close();
    }
    // A "member" that reads the request and drops the connection: the write may have been applied.
    const sockets = new Set<Socket>();
    let requests = 0;
    const dropper = createServer((sock) => {
      sockets.add(sock);
      sock.once('data', () => {
        requests++;
        sock.destroy();
      });
    });
    await new Promise<void>((r) => dropper.listen(0, '127.0.0.1', r));
    const viaDropper = new EtcdClient({ endpoints: [`http://127.0.0.1:${(dropper.address() as { port: number }).port}`, ...cluster.endpoints] });
    try {
      await assert.rejects(viaDropper.put('failover/unknown', 'x'), (e: unknown) => {
        assert.ok(isStoreError(/^etcd: the outcome of \/v3\/kv\/put is unknown \(it may or may not have been applied; read back to know\)/)(e), String(e));
        assert.equal((e as SkeinError).details && (e as SkeinError & { details: { outcome: string } }).details.outcome, 'unknown');
        return true;
      });
      assert.equal((await client.range('failover/unknown')).count, 0, 'not sent to another member');
      const r = await viaDropper.range('failover/refused');
      assert.equal(r.kvs[0]?.value, 'went to the next member', 'a read moves on to the next member');
      assert.equal(requests, 2);
    } finally {
      await viaDropper.close();
      for (const sock of sockets) sock.destroy();
      await new Promise((r) => dropper.close(r));
    }
  });

  test('txn: create-revision and mod-revision compares, both branches, results per op', async () => {
    const create = { compare: [{ key: 'txn/lock', target: 'create' as const, op: '=' as const, value: 0 }], success: [{ type: 'put' as const, key: 'txn/lock', value: 'one' }], failure: [{ type: 'get' as const, key: 'txn/lock' }] };
    const first = await client.txn(create);
    assert.deepEqual(first, { succeeded: true, revision: first.revision, results: [{ prevKv: null }] });
    const second = await client.txn(create);
    assert.equal(second.succeeded, false, 'a failed txn has no "succeeded" on the wire');
    assert.equal(second.results[0]?.kvs?.[0]?.value, 'one');
    assert.equal(second.results[0]?.kvs?.[0]?.createRevision, first.revision);

    // compare-and-swap on the mod revision
    const cas = (seen: number, value: string) =>
      client.txn({ compare: [{ key: 'txn/lock', target: 'mod', op: '=', value: seen }], success: [{ type: 'put', key: 'txn/lock', value }, { type: 'del', key: 'txn/other', prefix: true }, { type: 'get', key: 'txn/lock' }] });
    await client.put('txn/other/1', 'x');
    const swapped = await cas(first.revision, 'two');
    assert.equal(swapped.succeeded, true);
    assert.deepEqual(swapped.results.map((x) => x.deleted ?? x.kvs?.[0]?.value ?? 'put'), ['put', 1, 'two']);
    const stale = await cas(first.revision, 'three');
    assert.deepEqual([stale.succeeded, stale.results], [false, []]);
    const v = await client.txn({ compare: [{ key: 'txn/lock', target: 'value', op: '=', value: 'two' }, { key: 'txn/lock', target: 'version', op: '>', value: 1 }], success: [] });
    assert.equal(v.succeeded, true);
    assert.equal((await client.range('txn/lock')).kvs[0]?.value, 'two');
  });

  test('a watch resumed from a compacted revision gets onReset with the current keys, then goes on from there', async () => {
    await client.put('cmp/a', '1');
    await client.put('cmp/b', '1');
    const from = (await client.put('cmp/c', '1')).revision + 1; // the watch "was away" from here
    await client.put('cmp/a', '2');
    await client.delete('cmp/b');
    await client.put('cmp/d', '1');
    const compactedAt = await cluster.compact();
    const w = recorder();
    const watch = client.watch('cmp/', from, w.handlers);
    try {
      await waitFor(() => w.resets.length === 1, { what: 'onReset', timeoutMs: 5000 });
      const reset = w.resets[0]!;
      assert.ok(reset.revision >= compactedAt);
      assert.deepEqual(reset.kvs.map((kv) => [kv.key, kv.value]), [['cmp/a', '2'], ['cmp/c', '1'], ['cmp/d', '1']]);
      const next = await client.put('cmp/e', '1');
      await waitFor(() => w.events.length === 1, { what: 'the event after the reset', timeoutMs: 5000 });
      assert.equal(w.events[0]?.type, 'put');
      assert.equal(rev(w.events[0]!), next.revision);
      assert.equal(w.disconnects.length, 0, 'a re-list is not a disconnect');
    } finally {
      watch.close();
    }
    await client.compact(compactedAt); // compacting again as far is not an error
  });

  test('a lease whose keep-alives stop is lost within its TTL, and its keys vanish', async () => {
    let cut = false;
    const flaky: LeaseClient = {
      leaseGrant: (ttl) => client.leaseGrant(ttl),
      leaseRevoke: (id) => client.leaseRevoke(id),
      leaseKeepAliveOnce: (id) => (cut ? Promise.reject(new Error('cut off')) : client.leaseKeepAliveOnce(id)),
    };
    const lease = await KeptLease.grant(flaky, 2);
    assert.equal(lease.ttlSeconds, 2);
    assert.match(lease.id, /^[1-9][0-9]+$/);
    await client.put('lease/instance-1', 'up', { lease: lease.id });
    assert.equal((await client.range('lease/instance-1')).kvs[0]?.lease, lease.id, 'the ID comes back unrounded');
    let lostAt = 0;
    let why = '';
    lease.on('lost', (w) => {
      lostAt = Date.now();
      why = w;
    });
    await new Promise((r) => setTimeout(r, 2500)); // past the TTL: renewals (every 667 ms) keep it
    assert.equal(lease.alive, true);
    assert.equal((await client.range('lease/instance-1')).count, 1, 'renewed past its TTL');
    const cutAt = Date.now();
    cut = true;
    await waitFor(() => lostAt > 0, { what: 'lost', timeoutMs: 4000 });
    assert.ok(lostAt - cutAt <= 2000, `lost ${lostAt - cutAt} ms after the keep-alives stopped (TTL 2 s)`);
    assert.match(why, /^no renewal succeeded within the TTL \(2 s\); last error: cut off$/);
    await waitFor(async () => (await client.range('lease/instance-1')).count === 0, { what: 'the key to expire', timeoutMs: 5000 });
    assert.ok(Date.now() - cutAt < 4000);
    assert.equal(await client.leaseKeepAliveOnce(lease.id), 0, 'a dead lease renews to TTL 0');
    await client.leaseRevoke(lease.id); // already gone: not an error
    await lease.close();
  });

  test('election: the second candidate wins when the first one\'s lease is lost; the first one\'s fenced write is refused by etcd', async () => {
    // A's clock never moves: its lease is never renewed and it never notices on its own, like a
    // process paused past its TTL. etcd expires the lease; B takes over.
    const a = new Election({ client, key: 'elect/leader', value: 'replica-A', ttlSeconds: 2, clock: new ManualClock() });
    const b = new Election({ client, key: 'elect/leader', value: 'replica-B', ttlSeconds: 2 });
    const deposedA: string[] = [];
    a.on('deposed', (why) => deposedA.push(why));
    await a.campaign();
    assert.equal(a.leader, true);
    const tokenA = a.token!;
    const ok = await a.fenced([{ type: 'put', key: 'elect/state', value: 'by A' }]);
    assert.equal(ok.succeeded, true);
    const lost = await a.fenced([{ type: 'put', key: 'elect/state', value: 'x' }], [{ key: 'elect/state', target: 'value', op: '=', value: 'other' }]);
    assert.deepEqual(lost, { succeeded: false, revision: ok.revision, results: [] }, 'an extra compare that fails is not a lost election');

    const t0 = Date.now();
    let electedB = 0;
    b.on('elected', (token) => (electedB = token));
    await b.campaign();
    assert.equal(b.leader, true);
    assert.ok(Date.now() - t0 < 5000, `B elected ${Date.now() - t0} ms after campaigning (A's TTL 2 s)`);
    assert.ok(b.token! > tokenA);
    assert.equal(electedB, b.token);
    assert.equal((await client.range('elect/leader')).kvs[0]?.value, 'replica-B');

    await assert.rejects(a.fenced([{ type: 'put', key: 'elect/state', value: 'stale write by A' }]), (e: unknown) => {
      assert.ok(isStoreError(/^fenced: no longer the leader/)(e), String(e));
      assert.deepEqual((e as SkeinError).details, { outcome: 'refused', key: 'elect/leader', token: tokenA, current: b.token }, 'refused by etcd, which saw B\'s key');
      return true;
    });
    assert.equal(a.leader, false);
    assert.equal(deposedA.length, 1, `deposed once (${deposedA.join(' | ')})`);
    assert.equal((await b.fenced([{ type: 'put', key: 'elect/state', value: 'by B' }])).succeeded, true);
    assert.equal((await client.range('elect/state')).kvs[0]?.value, 'by B');

    // A third candidate waits for B's key; resigning abandons its campaign.
    const c = new Election({ client, key: 'elect/leader', value: 'replica-C', ttlSeconds: 2 });
    const waiting = c.campaign();
    waiting.catch(() => {}); // checked below, after resigning
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(c.leader, false);
    await c.resign();
    await assert.rejects(waiting, (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_SHUTTING_DOWN' && /campaign was abandoned/.test(e.message));
    assert.equal(b.leader, true);

    await b.resign();
    assert.equal(b.leader, false);
    assert.equal((await client.range('elect/leader')).count, 0, 'resigning revokes the lease: the key goes at once');
    await assert.rejects(b.fenced([{ type: 'put', key: 'elect/state', value: 'after resigning' }]), isStoreError(/^fenced: no longer the leader \(elect\/leader: the election key is gone\)/));
    await a.resign();
  });
});

describe('etcd client watches across failures', () => {
  test('a watch from a revision sees every acknowledged write in order across kill -9 of the member it is on', async (t) => {
    const cluster = await startEtcdCluster({ members: 3 });
    const watcher = new EtcdClient({ endpoints: cluster.endpoints, watchIdleMs: 3000 });
    const writer = new EtcdClient({ endpoints: [...cluster.endpoints].reverse(), requestTimeoutMs: 2000 });
    try {
      const from = (await writer.put('kill/start', '')).revision + 1;
      const w = recorder();
      const watch = watcher.watch('kill/w/', from, w.handlers);
      await waitFor(() => w.connects.length === 1, { what: 'the watch to connect' });
      const on = cluster.members.findIndex((m) => m.clientUrl === w.connects[0]);
      const acked: number[] = [];
      let unknown = 0;
      for (let i = 0; acked.length < 60; i++) {
        if (acked.length === 20 && cluster.members[on]!.running) await cluster.members[on]!.kill();
        try {
          acked.push((await writer.put(`kill/w/${String(i).padStart(4, '0')}`, `v${i}`)).revision);
        } catch (e) {
          assert.ok(isStoreError(/outcome of \/v3\/kv\/put is unknown|no member could serve/)(e), String(e));
          unknown++;
        }
        assert.ok(i < 200, `too many failed writes (${unknown})`);
      }
      const last = acked[acked.length - 1]!;
      await waitFor(() => w.events.some((e) => rev(e) === last), { what: 'the last acknowledged write in the watch', timeoutMs: 10_000 });
      watch.close();
      const seen = w.events.map(rev);
      assert.deepEqual(seen, [...seen].sort((x, y) => x - y), 'in revision order');
      assert.equal(new Set(seen).size, seen.length, 'no event twice');
      assert.deepEqual(acked.filter((r) => !seen.includes(r)), [], 'every acknowledged write seen');
      assert.ok(unknown <= 3, `${unknown} writes with an unknown outcome`);
      t.diagnostic(`kill -9: ${acked.length} writes acknowledged, ${unknown} unknown or refused, ${seen.length} events seen; ${w.disconnects.map((d) => d.why).join(' | ')}`);
      assert.ok(w.disconnects.length >= 1);
      assert.ok(w.connects.length >= 2 && w.connects.at(-1) !== cluster.endpoints[on], `resumed on another member: ${w.connects.join(', ')}`);
    } finally {
      await watcher.close();
      await writer.close();
      await cluster.close();
    }
  });

  test('a member cut off from the majority ends its watch within 5 s (hasleader); a silent member ends it at the idle limit; both resume with no gap', async (t) => {
    const cluster = await startEtcdCluster({ members: 3 });
    const [m0, m1, m2] = cluster.members as [(typeof cluster.members)[0], (typeof cluster.members)[0], (typeof cluster.members)[0]];
    // The watch starts on m0; the idle limit is long, so only hasleader can end it quickly.
    const watcher = new EtcdClient({ endpoints: cluster.endpoints, watchIdleMs: 30_000 });
    const writer = new EtcdClient({ endpoints: [m1.clientUrl, m2.clientUrl], requestTimeoutMs: 2000 });
    const acked: number[] = [];
    // A put whose outcome is unknown (the cluster was electing a leader: members were just paused or
    // resumed) is read back, as the client says to, and sent again only if it is not there.
    const put = async (key: string, value: string): Promise<number> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return (await writer.put(key, value)).revision;
        } catch (e) {
          if (!(e instanceof SkeinError) || (e.details as { outcome?: string } | undefined)?.outcome !== 'unknown' || attempt >= 5) throw e;
          await cluster.leader();
          const back = (await writer.range(key)).kvs[0];
          if (back?.value === value) return back.modRevision;
        }
      }
    };
    const write = async (n: number, tag: string) => {
      for (let i = 0; i < n; i++) acked.push(await put(`cut/${tag}/${i}`, tag));
    };
    try {
      const from = (await writer.put('cut', '')).revision + 1;
      const w = recorder();
      const watch = watcher.watch('cut/', from, w.handlers);
      await waitFor(() => w.connects.length === 1, { what: 'the watch to connect' });
      assert.equal(w.connects[0], m0.clientUrl);
      await write(5, 'before');

      const cutAt = Date.now();
      m1.pause();
      m2.pause();
      await waitFor(() => w.disconnects.length >= 1, { what: 'the watch on the cut-off member to end', timeoutMs: 15_000 });
      const endedMs = w.disconnects[0]!.at - cutAt;
      // hasleader ended it, not the idle limit (30 s): how soon is a figure (~4 s here; the bound 5 s).
      assert.ok(endedMs < 15_000, `ended ${endedMs} ms after the cut`);
      t.diagnostic(`cut off: the watch ended ${endedMs} ms after the cut (${w.disconnects[0]!.why})`);
      assert.match(w.disconnects[0]!.why, /no leader/);
      m1.resume();
      m2.resume();
      await write(5, 'after-heal');
      await waitFor(() => w.events.length === acked.length, { what: 'every write after the heal', timeoutMs: 10_000 });
      assert.notEqual(w.connects.at(-1), m0.clientUrl, 'resumed on another member');
      assert.deepEqual(w.events.map(rev), acked, 'every acknowledged write, in order, no gap, nothing twice');
      watch.close();

      // Now the member itself goes silent (a partition on our side): only the idle limit can tell.
      const idle = new EtcdClient({ endpoints: [m0.clientUrl, m1.clientUrl, m2.clientUrl], watchIdleMs: 3000 });
      try {
        await cluster.leader();
        const w2 = recorder();
        const from2 = acked.at(-1)! + 1;
        const watch2 = idle.watch('cut/', from2, w2.handlers);
        await waitFor(() => w2.connects.length === 1, { what: 'the second watch to connect' });
        assert.equal(w2.connects[0], m0.clientUrl);
        const silentAt = Date.now();
        m0.pause();
        const start = acked.length;
        await write(3, 'while-silent');
        await waitFor(() => w2.disconnects.length >= 1, { what: 'the idle limit', timeoutMs: 15_000 });
        const idleMs = w2.disconnects[0]!.at - silentAt;
        // Not before the idle limit; after it, as soon as the loaded machine gets to it.
        assert.ok(idleMs >= 2500 && idleMs <= 15_000, `ended ${idleMs} ms after the member went silent (idle limit 3,000 ms, progress every 1,000 ms)`);
        t.diagnostic(`silent member: the watch ended ${idleMs} ms after SIGSTOP`);
        assert.match(w2.disconnects[0]!.why, new RegExp(`^nothing heard from ${m0.clientUrl} for 3000 ms`));
        await waitFor(() => w2.events.length === acked.length - start, { what: 'the writes made while silent', timeoutMs: 5000 });
        assert.deepEqual(w2.events.map(rev), acked.slice(start));
        m0.resume();
        watch2.close();
      } finally {
        m0.resume();
        await idle.close();
      }
    } finally {
      await watcher.close();
      await writer.close();
      await cluster.close();
    }
  });
});
