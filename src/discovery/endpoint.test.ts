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
