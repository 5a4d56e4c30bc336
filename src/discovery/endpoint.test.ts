import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EndpointSet, endpointKey, makeEndpoint, sameEndpoint, type EndpointInput } from './endpoint.js';
import { parseInstance } from '../api/parse.js';
import { isSkeinError } from '../core/errors.js';

const ep = (id: string, extra: Partial<EndpointInput> = {}): EndpointInput => ({ service: 'web', id, address: `10.0.0.${id.length}`, port: 8080, ...extra });

function validationField(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    assert.ok(isSkeinError(e), `expected a SkeinError, got ${String(e)}`);
    assert.equal(e.code, 'SKEIN_E_VALIDATION');
    return e.field;
  }
  assert.fail('expected a validation error');
}

test('makeEndpoint fills defaults, derives the key and freezes', () => {
  const e = makeEndpoint({ service: 'web', id: 'a', address: '10.0.0.1', port: 80 });
  assert.deepEqual({ ...e, labels: { ...e.labels } }, { key: 'web/a', service: 'web', id: 'a', address: '10.0.0.1', port: 80, weight: 1, zone: '', version: '', labels: {} });
  assert.equal(endpointKey('web', 'a'), 'web/a');
  assert.ok(Object.isFrozen(e));
  assert.ok(Object.isFrozen(e.labels));
  assert.equal(makeEndpoint(e), e, 'an endpoint made already is returned as is');
  const labels = { tier: 'gold' };
  const f = makeEndpoint({ ...ep('b'), labels });
  labels.tier = 'changed';
  assert.equal(f.labels['tier'], 'gold', 'labels are copied');
});

test('makeEndpoint rejects malformed fields, naming them', () => {
  assert.equal(validationField(() => makeEndpoint(ep('a', { port: 0 }))), 'port');
  assert.equal(validationField(() => makeEndpoint(ep('a', { port: 70000 }))), 'port');
  assert.equal(validationField(() => makeEndpoint(ep('a', { weight: -1 }))), 'weight');
  assert.equal(validationField(() => makeEndpoint(ep('a', { weight: 1.5 }))), 'weight');
  assert.equal(validationField(() => makeEndpoint(ep('a', { weight: NaN }))), 'weight');
  assert.equal(validationField(() => makeEndpoint(ep(''))), 'id');
  assert.equal(validationField(() => makeEndpoint({ ...ep('a'), service: '' })), 'service');
  assert.equal(validationField(() => makeEndpoint({ ...ep('a'), address: '' })), 'address');
  assert.equal(validationField(() => makeEndpoint({ ...ep('a'), key: 'other' })), 'key');
  assert.equal(validationField(() => makeEndpoint({ ...ep('a'), labels: { x: 1 as unknown as string } })), 'labels.x');
  assert.equal(makeEndpoint({ ...ep('a'), key: 'web/a' }).key, 'web/a');
  assert.equal(makeEndpoint(ep('a', { weight: 0 })).weight, 0, 'weight 0 (drained) is valid');
});

test('an API Instance is an EndpointInput', () => {
  const inst = parseInstance({ service: 'web', id: 'i1', address: '10.1.2.3', port: 9000, weight: 3, zone: 'z1', labels: { a: 'b' } });
  const e = makeEndpoint(inst);
  assert.equal(e.key, 'web/i1');
  assert.equal(e.weight, 3);
  assert.equal(e.zone, 'z1');
  assert.deepEqual({ ...e.labels }, { a: 'b' });
});

test('the empty set', () => {
  const s = EndpointSet.empty();
  assert.equal(s.size, 0);
  assert.equal(s.version, 0);
  assert.deepEqual(s.list(), []);
  assert.equal(s.get('web/a'), undefined);
  assert.equal(EndpointSet.empty(), s);
});

test('reset: exactly the given endpoints, ordered by key (code units, not locale), last duplicate wins', () => {
  const s = EndpointSet.empty().apply({ type: 'reset', endpoints: [ep('b'), ep('a'), ep('B'), ep('a', { port: 1 })] });
  assert.deepEqual(
    s.list().map((e) => e.key),
    ['web/B', 'web/a', 'web/b'],
  );
  assert.equal(s.get('web/a')?.port, 1);
  assert.equal(s.size, 3);
  assert.equal(s.version, 1);
  assert.ok(s.has('web/b'));
  assert.ok(Object.isFrozen(s.list()));
  const t = s.apply({ type: 'reset', endpoints: [ep('c')] });
  assert.deepEqual(
    t.list().map((e) => e.key),
    ['web/c'],
  );
  assert.equal(t.version, 2);
});

test('add: new keys join, a known key is replaced; the old snapshot is unchanged', () => {
  const s1 = EndpointSet.of([ep('a'), ep('b')]);
  const s2 = s1.apply({ type: 'add', endpoints: [ep('c'), ep('a', { weight: 5 })] });
  assert.notEqual(s2, s1);
  assert.equal(s2.version, s1.version + 1);
  assert.deepEqual(
    s2.list().map((e) => `${e.key}:${e.weight}`),
    ['web/a:5', 'web/b:1', 'web/c:1'],
  );
  assert.deepEqual(
    s1.list().map((e) => `${e.key}:${e.weight}`),
    ['web/a:1', 'web/b:1'],
    'immutable',
  );
  assert.equal(s1.get('web/a')?.weight, 1);
  assert.equal(s1.get('web/c'), undefined);
  assert.throws(() => (s1.list() as unknown as unknown[]).push(ep('x')));
});

test('remove: the named keys go; unknown keys are ignored', () => {
  const s1 = EndpointSet.of([ep('a'), ep('b'), ep('c')]);
  const s2 = s1.apply({ type: 'remove', keys: ['web/b', 'web/nope'] });
  assert.deepEqual(
    s2.list().map((e) => e.key),
    ['web/a', 'web/c'],
  );
  assert.equal(s2.version, s1.version + 1);
  assert.equal(s1.size, 3, 'immutable');
  assert.equal(s2.apply({ type: 'remove', keys: ['web/b'] }), s2, 'removing nothing returns the same set');
  assert.equal(s2.apply({ type: 'remove', keys: ['web/a', 'web/c'] }).size, 0);
});

test('updates that change nothing return the same snapshot (same version)', () => {
  const s = EndpointSet.of([ep('a', { labels: { x: '1' } }), ep('b')]);
  assert.equal(s.apply({ type: 'add', endpoints: [ep('a', { labels: { x: '1' } })] }), s);
  assert.equal(s.apply({ type: 'reset', endpoints: [ep('b'), ep('a', { labels: { x: '1' } })] }), s);
  assert.notEqual(s.apply({ type: 'add', endpoints: [ep('a', { labels: { x: '2' } })] }), s);
  assert.notEqual(s.apply({ type: 'reset', endpoints: [ep('a', { labels: { x: '1' } })] }), s);
  assert.notEqual(s.apply({ type: 'add', endpoints: [ep('a', { labels: { x: '1' }, zone: 'z' })] }), s);
});

test('an invalid endpoint in an update throws and leaves the set as it was', () => {
  const s = EndpointSet.of([ep('a')]);
  assert.equal(validationField(() => s.apply({ type: 'add', endpoints: [ep('b'), ep('c', { port: -1 })] })), 'port');
  assert.equal(s.size, 1);
  assert.equal(validationField(() => s.apply({ type: 'nope' } as never)), 'type');
});

test('sameEndpoint compares every field', () => {
  const a = makeEndpoint(ep('a', { labels: { k: 'v' } }));
  assert.ok(sameEndpoint(a, makeEndpoint(ep('a', { labels: { k: 'v' } }))));
  assert.ok(!sameEndpoint(a, makeEndpoint(ep('a', { labels: { k: 'w' } }))));
  assert.ok(!sameEndpoint(a, makeEndpoint(ep('a', { labels: { k: 'v', j: 'v' } }))));
  assert.ok(!sameEndpoint(a, makeEndpoint(ep('a', { labels: { k: 'v' }, version: 'v2' }))));
  assert.ok(!sameEndpoint(a, makeEndpoint(ep('a', { labels: { k: 'v' }, address: '10.9.9.9' }))));
});

test('random adds, replacements and removals match a plain map, and every older snapshot stays as it was', () => {
  let seed = 7;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const model = new Map<string, number>();
  let s = EndpointSet.empty();
  const history: Array<[EndpointSet, string]> = [];
  for (let step = 0; step < 3000; step++) {
    const id = `i${rnd(400)}`;
    const r = rnd(10);
    if (r < 6) {
      const weight = rnd(3);
      s = s.apply({ type: 'add', endpoints: [ep(id, { weight })] });
      model.set(`web/${id}`, weight);
    } else {
      s = s.apply({ type: 'remove', keys: [`web/${id}`] });
      model.delete(`web/${id}`);
    }
    if (step % 97 === 0) history.push([s, JSON.stringify(s.list().map((e) => [e.key, e.weight]))]);
  }
  const want = [...model].sort(([a], [b]) => (a < b ? -1 : 1));
  assert.deepEqual(
    s.list().map((e) => [e.key, e.weight]),
    want,
  );
  assert.equal(s.size, model.size);
  assert.equal(s.pickable, [...model.values()].filter((w) => w > 0).length);
  for (const [k, w] of model) assert.equal(s.get(k)?.weight, w);
  for (const [old, listed] of history) assert.equal(JSON.stringify(old.list().map((e) => [e.key, e.weight])), listed, 'an older snapshot is unchanged');
});

test('changesSince: what one apply changed, and null across lineages or more than one step', () => {
  const s1 = EndpointSet.of([ep('a'), ep('b'), ep('c', { weight: 0 })]);
  const s2 = s1.apply({ type: 'add', endpoints: [ep('d'), ep('a', { weight: 4 }), ep('b')] });
  const ch = s2.changesSince(s1);
  assert.deepEqual(
    ch?.upserted.map((e) => `${e.key}:${e.weight}`),
    ['web/d:1', 'web/a:4'],
    'b was given unchanged: not a change',
  );
  assert.deepEqual(ch?.removed, []);
  const s3 = s2.apply({ type: 'remove', keys: ['web/b', 'web/x'] });
  assert.deepEqual(
    s3.changesSince(s2)?.removed.map((e) => e.key),
    ['web/b'],
  );
  assert.equal(s3.changesSince(s1), null, 'two steps apart');
  assert.equal(s1.changesSince(s2), null, 'backwards');
  assert.equal(EndpointSet.of([ep('a'), ep('b'), ep('c', { weight: 0 })]).changesSince(s1), null, 'another lineage, even with the same content');
  assert.deepEqual(s1.changesSince(s1), { upserted: [], removed: [] });
  // A reset reports the difference too.
  const s4 = s3.apply({ type: 'reset', endpoints: [ep('a', { weight: 4 }), ep('e'), ep('c', { weight: 0, port: 9 })] });
  const r = s4.changesSince(s3);
  assert.deepEqual(
    r?.upserted.map((e) => e.key),
    ['web/c', 'web/e'],
  );
  assert.deepEqual(
    r?.removed.map((e) => e.key),
    ['web/d'],
  );
  assert.equal(s4.pickable, 2);
});

test('before: the endpoint with the greatest key below a key', () => {
  const s = EndpointSet.of([ep('b'), ep('d'), ep('f')]);
  assert.equal(s.before('web/a'), undefined);
  assert.equal(s.before('web/b'), undefined);
  assert.equal(s.before('web/c')?.key, 'web/b');
  assert.equal(s.before('web/d')?.key, 'web/b');
  assert.equal(s.before('web/z')?.key, 'web/f');
});

test('one change to a set of 50,000 copies a path, not the set: the tree stays shallow', () => {
  const s = EndpointSet.of(Array.from({ length: 50_000 }, (_, i) => ep(`i${i}`)));
  let t = s;
  for (let i = 0; i < 2000; i++) t = t.apply({ type: 'add', endpoints: [ep(`n${i}`)] }).apply({ type: 'remove', keys: [`web/i${i}`] });
  const depth = (n: { left: unknown; right: unknown } | null): number => (n === null ? 0 : 1 + Math.max(depth(n.left as never), depth(n.right as never)));
  const root = (t as unknown as { root: { left: unknown; right: unknown } }).root;
  const d = depth(root);
  assert.ok(d < 60, `depth ${d} for ${t.size} endpoints`);
  assert.equal(t.size, 50_000);
  assert.equal(s.get('web/i0')?.id, 'i0', 'the first snapshot still holds what it held');
  assert.equal(t.get('web/i0'), undefined);
});
