import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SkeinError } from '../../core/errors.js';
import { EmbeddedStore } from './embedded.js';
import type { StoreOp } from './store.js';

const root = await mkdtemp(join(tmpdir(), 'skein-store-test-'));
const open: EmbeddedStore[] = [];
after(async () => {
  for (const s of open) await s.close();
  await rm(root, { recursive: true, force: true });
});

let n = 0;
async function fresh(): Promise<{ dir: string; store: EmbeddedStore }> {
  const dir = join(root, `db${++n}`, 'nested');
  const store = await EmbeddedStore.open(dir);
  open.push(store);
  return { dir, store };
}

test('a new store is empty; commit then load round-trips in key order', async () => {
  const { store } = await fresh();
  assert.equal(store.kind, 'embedded');
  assert.deepEqual(await store.load(), []);
  await store.commit([
    { type: 'put', key: 'inst/web/b', value: '{"x":2}' },
    { type: 'put', key: 'inst/web/a', value: '{"x":1}' },
    { type: 'put', key: 'meta/revision', value: '2' },
  ]);
  assert.deepEqual(await store.load(), [
    ['inst/web/a', '{"x":1}'],
    ['inst/web/b', '{"x":2}'],
    ['meta/revision', '2'],
  ]);
  assert.equal(store.batches, 1);
  assert.equal(store.commits, 1);
});

test('puts overwrite and deletes remove keys', async () => {
  const { store } = await fresh();
  await store.commit([
    { type: 'put', key: 'a', value: '1' },
    { type: 'put', key: 'b', value: '1' },
  ]);
  await store.commit([
    { type: 'put', key: 'a', value: '2' },
    { type: 'del', key: 'b' },
    { type: 'del', key: 'never-there' },
  ]);
  assert.deepEqual(await store.load(), [['a', '2']]);
});

test('concurrent commits are grouped into fewer batches, all resolved, in order', async () => {
  const { store } = await fresh();
  const N = 200;
  const settled: number[] = [];
  const commits: Array<Promise<void>> = [];
  for (let i = 0; i < N; i++) {
    commits.push(
      store
        .commit([
          { type: 'put', key: 'k', value: String(i) },
          { type: 'put', key: `k${String(i).padStart(3, '0')}`, value: String(i) },
        ])
        .then(() => {
          settled.push(i);
        }),
    );
  }
  await Promise.all(commits);
  assert.equal(settled.length, N, 'every commit resolved');
  assert.deepEqual(settled, [...settled].sort((a, b) => a - b), 'commits resolve in the order they were made');
  assert.equal(store.commits, N);
  assert.ok(store.batches >= 1 && store.batches < N, `expected fewer batches than commits, got ${store.batches}`);
  const data = new Map(await store.load());
  assert.equal(data.get('k'), String(N - 1), 'the last put of a key wins');
  assert.equal(data.size, N + 1);
});

test('commits made while a batch is being written go into a later batch', async () => {
  const { store } = await fresh();
  const first = store.commit([{ type: 'put', key: 'x', value: '1' }]);
  await new Promise((r) => setImmediate(r)); // the first batch is now being written
  const second = [store.commit([{ type: 'put', key: 'x', value: '2' }]), store.commit([{ type: 'put', key: 'y', value: '2' }])];
  await Promise.all([first, ...second]);
  assert.equal(store.commits, 3);
  assert.equal(store.batches, 2);
  assert.deepEqual(await store.load(), [['x', '2'], ['y', '2']]);
});

test('a commit resolves only once a batch holding its ops was written with sync: true (fsync)', async () => {
  // A spy on the LevelDB handle: kill -9 cannot tell a synced write from one left in the page
  // cache (the OS writes both), and an early acknowledgement from a quick write.
  const { store } = await fresh();
  type Batch = (ops: StoreOp[], opts: { sync?: boolean }) => Promise<void>;
  const db = (store as unknown as { db: { batch: Batch } }).db;
  const write = db.batch.bind(db);
  const writes: Array<{ keys: Set<string>; sync: unknown; written: boolean }> = [];
  db.batch = async (ops, opts) => {
    const w = { keys: new Set(ops.map((o) => o.key)), sync: opts?.sync, written: false };
    writes.push(w);
    await write(ops, opts);
    w.written = true;
  };
  const early: string[] = [];
  const commit = (key: string) =>
    store.commit([{ type: 'put', key, value: 'v' }]).then(() => {
      const w = writes.find((x) => x.keys.has(key));
      if (w?.written !== true || w.sync !== true) early.push(`${key}: ${w === undefined ? 'in no batch' : `sync ${String(w.sync)}, written ${w.written}`}`);
    });
  await Promise.all(Array.from({ length: 30 }, (_, i) => commit(`a${i}`)));
  await commit('b'); // alone in its batch
  await Promise.all([commit('c1'), new Promise((r) => setImmediate(r)).then(() => commit('c2'))]); // two batches
  assert.deepEqual(early, [], 'acknowledged before its batch was synced');
  assert.equal(writes.length, store.batches);
  assert.ok(writes.length >= 3 && writes.length < 33, `${writes.length} batches`);
});

test('data survives close and reopen', async () => {
  const { dir, store } = await fresh();
  await store.commit([{ type: 'put', key: 'svc/web', value: '{"name":"web"}' }]);
  const pending = store.commit([{ type: 'put', key: 'svc/api', value: '{"name":"api"}' }]);
  await store.close(); // waits for the write in flight
  await pending;
  await store.close(); // twice is harmless
  const again = await EmbeddedStore.open(dir);
  open.push(again);
  assert.deepEqual(await again.load(), [
    ['svc/api', '{"name":"api"}'],
    ['svc/web', '{"name":"web"}'],
  ]);
});

test('opening a directory that is already open fails with SKEIN_E_STORE "in use"', async () => {
  const { dir } = await fresh();
  await assert.rejects(EmbeddedStore.open(dir), (e: unknown) => {
    assert.ok(e instanceof SkeinError);
    assert.equal(e.code, 'SKEIN_E_STORE');
    assert.equal(e.status, 503);
    assert.match(e.message, /in use/);
    assert.ok(e.message.includes(dir), e.message);
    return true;
  });
});

test('commit after close is rejected with SKEIN_E_STORE', async () => {
  const { store } = await fresh();
  await store.close();
  await assert.rejects(store.commit([{ type: 'put', key: 'a', value: '1' }]), (e: unknown) => {
    assert.ok(e instanceof SkeinError);
    assert.equal(e.code, 'SKEIN_E_STORE');
    assert.match(e.message, /closed/);
    return true;
  });
});
