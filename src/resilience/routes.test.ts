import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseService } from '../api/parse.js';
import { RouteTable, type RouteInput } from './routes.js';

function req(method: string, path: string, headers: Record<string, string> = {}): RouteInput {
  return { method, path, header: (n) => headers[n] };
}

function table(routes: object[]): RouteTable {
  return new RouteTable(parseService({ name: 'web', routes }).traffic.routes);
}

test('no routes: everything gets the default route', () => {
  const t = table([]);
  assert.equal(t.match(req('GET', '/')).name, 'default');
  assert.equal(t.match(req('POST', '/x?y=1')).name, 'default');
});

test('the most specific route wins whatever the order they were written in', () => {
  const t = table([
    { name: 'any', match: {} },
    { name: 'api', match: { pathPrefix: '/api' } },
    { name: 'api-v1', match: { pathPrefix: '/api/v1/' } },
    { name: 'api-post', match: { pathPrefix: '/api', methods: ['POST'] } },
    { name: 'api-post-tenant', match: { pathPrefix: '/api', methods: ['POST'], headers: { 'x-tenant': 'a' } } },
    { name: 'exact', match: { path: '/api/v1/health' } },
  ]);
  assert.deepEqual(
    t.routes.map((r) => r.name),
    ['exact', 'api-v1', 'api-post-tenant', 'api-post', 'api', 'any', 'default'],
  );
  assert.equal(t.match(req('GET', '/api/v1/health')).name, 'exact');
  assert.equal(t.match(req('GET', '/api/v1/health?full=1')).name, 'exact', 'the query is not part of the path');
  assert.equal(t.match(req('GET', '/api/v1/users')).name, 'api-v1');
  assert.equal(t.match(req('GET', '/api/v1')).name, 'api-v1', 'a trailing / of a prefix is not required');
  assert.equal(t.match(req('POST', '/api/x', { 'x-tenant': 'a' })).name, 'api-post-tenant');
  assert.equal(t.match(req('POST', '/api/x', { 'x-tenant': 'b' })).name, 'api-post');
  assert.equal(t.match(req('GET', '/api')).name, 'api');
  assert.equal(t.match(req('GET', '/apix')).name, 'any', 'a prefix matches at a / boundary only');
  assert.equal(t.match(req('GET', '/other')).name, 'any');
});

test('among equally specific routes the first written wins; no match falls to default', () => {
  const t = table([
    { name: 'first', match: { pathPrefix: '/a' } },
    { name: 'second', match: { pathPrefix: '/a' } },
  ]);
  assert.equal(t.match(req('GET', '/a/b')).name, 'first');
  assert.equal(t.match(req('GET', '/b')).name, 'default');
  const m = table([{ name: 'gets', match: { methods: ['GET', 'HEAD'] } }]);
  assert.equal(m.match(req('HEAD', '/')).name, 'gets');
  assert.equal(m.match(req('DELETE', '/')).name, 'default');
});

test('paths match without regard to ASCII case (the driver hands in the normalized path)', () => {
  const t = table([
    { name: 'admin', match: { pathPrefix: '/admin' } },
    { name: 'exact', match: { path: '/Health' } },
  ]);
  assert.equal(t.match(req('GET', '/ADMIN')).name, 'admin');
  assert.equal(t.match(req('GET', '/Admin/users?x=1')).name, 'admin');
  assert.equal(t.match(req('GET', '/administrator')).name, 'default');
  assert.equal(t.match(req('GET', '/health')).name, 'exact');
  assert.equal(t.match(req('GET', '/HEALTH')).name, 'exact');
});

test('a header pin: it wins over the routes of its own path or less, not over a route with a longer path (path before headers)', () => {
  const pin = { subset: { version: 'v2' } };
  const t = table([
    { name: 'api', match: { pathPrefix: '/api' }, timeouts: { request: '30s' } },
    { name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [pin] },
    { name: 'api-canary', match: { pathPrefix: '/api', headers: { 'x-canary': '1' } }, backends: [pin] },
  ]);
  assert.equal(t.match(req('GET', '/', { 'x-canary': '1' })).name, 'canary');
  assert.equal(t.match(req('GET', '/', { 'x-canary': '2' })).name, 'default', 'exact values only');
  assert.equal(t.match(req('GET', '/api/x', { 'x-canary': '1' })).name, 'api-canary', 'the pin repeated with the path wins');
  assert.equal(t.match(req('GET', '/api/x')).name, 'api');
  const bare = table([
    { name: 'api', match: { pathPrefix: '/api' } },
    { name: 'canary', match: { headers: { 'x-canary': '1' } }, backends: [pin] },
  ]);
  assert.equal(bare.match(req('GET', '/api/x', { 'x-canary': '1' })).name, 'api', 'a pin without a path loses to a route with one');
  assert.deepEqual(bare.match(req('GET', '/other', { 'x-canary': '1' })).backends.map((b) => b.name), ['version=v2']);
});
