/** The `backends` of a service and of its routes: what is accepted, what is refused and where. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SkeinError } from '../../core/errors.js';
import { parseResourceFile, parseRoute, parseService } from '../parse.js';
import { checkSubsetsKnown, inSubset } from './build.js';

/** The validation error of `fn`: its field and every problem. */
function refused(fn: () => unknown): { field: string; message: string; problems: Array<{ field: string; message: string }> } {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SkeinError, String(e));
    assert.equal(e.code, 'SKEIN_E_VALIDATION', e.message);
    return { field: e.field as string, message: e.message, problems: (e.details as Array<{ field: string; message: string }>) ?? [] };
  }
  assert.fail('expected SKEIN_E_VALIDATION');
}

const v = (version: string, weight?: number) => ({ subset: { version }, ...(weight === undefined ? {} : { weight }) });

test('a split on the service is the default route\'s and every route\'s that sets none; a route may set its own', () => {
  const s = parseService({
    name: 'web',
    backends: [v('v1', 90), v('v2', 10)],
    routes: [
      { name: 'slow', match: { pathPrefix: '/slow' }, timeouts: { request: '30s' } },
      { name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [v('v2')] },
      { name: 'gold', backends: [{ subset: { version: 'v2', tier: 'gold' }, weight: 0 }, { subset: { tier: 'plain' }, weight: 100 }] },
    ],
  });
  const byName = new Map(s.traffic.routes.map((r) => [r.name, r]));
  const split = [
    { subset: [['version', 'v1']], weight: 90, name: 'version=v1' },
    { subset: [['version', 'v2']], weight: 10, name: 'version=v2' },
  ];
  assert.deepEqual(byName.get('default')?.backends, split);
  assert.deepEqual(byName.get('slow')?.backends, split);
  assert.deepEqual(byName.get('canary')?.backends, [{ subset: [['version', 'v2']], weight: 100, name: 'version=v2' }]);
  // Subsets are sorted by key.
  assert.deepEqual(byName.get('gold')?.backends[0], { subset: [['tier', 'gold'], ['version', 'v2']], weight: 0, name: 'tier=gold,version=v2' });
  // No split: every instance.
  assert.deepEqual(parseService({ name: 'web' }).traffic.routes[0]?.backends, []);
  // As a Route resource, and in a file.
  assert.equal(parseRoute({ service: 'web', name: 'pin', match: { headers: { 'x-canary': '1' } }, backends: [v('v2')] }).raw['backends'] !== undefined, true);
  const file = parseResourceFile('kind: Route\nservice: web\nname: split\nbackends:\n  - { subset: { version: v1 }, weight: 95 }\n  - { subset: { version: v2 }, weight: 5 }\n', 'r.yaml');
  assert.equal(file.length, 1);
});

test('bad splits are refused with the field named: weights above 100, negative, not summing to 100, missing, an empty subset, duplicates, a bad label key', () => {
  const cases: Array<[object, string, RegExp]> = [
    [{ backends: [v('v1', 150), v('v2', -50)] }, 'backends[0].weight', /must be <= 100/],
    [{ backends: [v('v1', 110), v('v2', -10)] }, 'backends[0].weight', /must be <= 100/],
    [{ backends: [v('v1', 90), v('v2', 20)] }, 'backends', /weights must sum to 100, not 110 \(version=v1: 90, version=v2: 20\)/],
    [{ backends: [v('v1', 50)] }, 'backends', /weights must sum to 100, not 50/],
    [{ backends: [v('v1', 90), v('v2')] }, 'backends[1].weight', /is required when there are 2 backends/],
    [{ backends: [{ subset: {}, weight: 100 }] }, 'backends[0].subset', /must have at least 1 entry/],
    [{ backends: [v('v1', 50), v('v1', 50)] }, 'backends[1].subset', /duplicates the subset of backends\[0\] \(version=v1\)/],
    [{ backends: [{ subset: { 'bad key!': 'x' }, weight: 100 }] }, 'backends[0].subset.bad key!', /is not a label key/],
    [{ backends: [] }, 'backends', /must have at least 1 item/],
    [{ backends: [{ subset: { version: 'v1' }, weight: 100, extra: 1 }] }, 'backends[0].extra', /is not a known field/],
    [{ routes: [{ name: 'pin', backends: [v('v2', 99)] }] }, 'routes[0].backends', /weights must sum to 100, not 99/],
    [{ backends: [v('v1', 1.5), v('v2', 98.5)] }, 'backends[0].weight', /must be an integer/],
  ];
  for (const [body, field, message] of cases) {
    const e = refused(() => parseService({ name: 'web', ...body }));
    assert.equal(e.field, field, `${JSON.stringify(body)}: ${e.message}`);
    assert.match(e.message, message);
  }
  // A negative weight, alone.
  const neg = refused(() => parseService({ name: 'web', backends: [v('v1', 100), v('v2', -1)] }));
  assert.equal(neg.field, 'backends[1].weight');
  assert.match(neg.message, /must be >= 0/);
  // A Route resource: fields relative to the route.
  const r = refused(() => parseRoute({ service: 'web', name: 'pin', backends: [v('v2', 60), v('v2', 40)] }));
  assert.equal(r.field, 'backends[1].subset');
});

test('where the instances are known (a mesh file), a subset none of them is in is refused, naming it and the versions there are', () => {
  const problems: Array<{ field: string; message: string }> = [];
  const raw = { backends: [v('v1', 90), v('v2', 10)], routes: [{ name: 'pin', backends: [{ subset: { version: 'v1', tier: 'gold' } }] }] };
  checkSubsetsKnown(raw, [{ version: 'v1', labels: { tier: 'plain' } }], (field, message) => problems.push({ field, message }));
  assert.deepEqual(problems, [
    { field: 'backends[1].subset', message: 'names version=v2, which no instance of the service is in (their versions: "v1")' },
    { field: 'routes[0].backends[0].subset', message: 'names version=v1,tier=gold, which no instance of the service is in (their versions: "v1")' },
  ]);
  const none: string[] = [];
  checkSubsetsKnown(raw, [{ version: 'v1', labels: { tier: 'gold' } }, { version: 'v2', labels: {} }], (f) => none.push(f));
  assert.deepEqual(none, []);
  // "version" is the instance's version, not a label of that name; "" is an instance without one.
  assert.equal(inSubset([['version', 'v2']], { version: 'v1', labels: { version: 'v2' } }), false);
  assert.equal(inSubset([['version', '']], { version: '', labels: {} }), true);
});
