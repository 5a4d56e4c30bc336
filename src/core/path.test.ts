import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, normalizeTarget, pathKey } from './path.js';

/** [what comes in, what the mesh matches and forwards]: the table of docs/proxy.md. */
const TABLE: ReadonlyArray<readonly [string, string]> = [
  ['/', '/'],
  ['/admin', '/admin'],
  ['/admin/', '/admin/'],
  // runs of slashes
  ['//admin', '/admin'],
  ['/a//b///c', '/a/b/c'],
  ['/admin//', '/admin/'],
  // dot segments
  ['/./admin', '/admin'],
  ['/x/../admin', '/admin'],
  ['/a/b/../../admin', '/admin'],
  ['/../admin', '/admin'],
  ['/../../..', '/'],
  ['/a/.', '/a/'],
  ['/a/..', '/'],
  ['/a/./b/.', '/a/b/'],
  ['/.well-known/x', '/.well-known/x'],
  ['/a..b/c', '/a..b/c'],
  ['/...', '/...'],
  // escapes of unreserved characters are decoded, others keep (upper-case) encoding
  ['/%61dmin', '/admin'],
  ['/%62x', '/bx'],
  ['/%2e/admin', '/admin'],
  ['/%2E%2E/admin', '/admin'],
  ['/a/%2e%2e/admin', '/admin'],
  ['/%7euser', '/~user'],
  ['/a%20b', '/a%20b'],
  ['/a%3ab', '/a%3Ab'],
  ['/%C3%A9t%c3%a9', '/%C3%A9t%C3%A9'],
  ['/a%00b', '/a%00b'],
  // encoded and back slashes are slashes
  ['/a%2Fb', '/a/b'],
  ['/a%2f%2fb', '/a/b'],
  ['/a%5Cb', '/a/b'],
  ['/a\\b', '/a/b'],
  ['/\\admin', '/admin'],
  ['/x/%2e%2e%2fadmin', '/admin'],
  // case is kept (pathKey folds it for comparison)
  ['/ADMIN', '/ADMIN'],
];

test('normalizePath: the table', () => {
  for (const [input, want] of TABLE) assert.equal(normalizePath(input), want, `normalizePath(${JSON.stringify(input)})`);
});

test('normalizePath is idempotent over the table', () => {
  for (const [, want] of TABLE) assert.equal(normalizePath(want), want, `normalizePath(${JSON.stringify(want)})`);
});

test('a path that needs nothing comes back as the same string', () => {
  const p = '/api/v1/users/42';
  assert.equal(normalizePath(p), p);
});

test('a malformed escape is an error naming it and where', () => {
  for (const [input, bad, at] of [
    ['/a%zzb', '%zz', 2],
    ['/a%4', '%4', 2],
    ['/%', '%', 1],
    ['/a%g1', '%g1', 2],
  ] as const) {
    const r = normalizePath(input);
    assert.equal(typeof r, 'object', `${input} must be refused`);
    assert.match((r as { error: string }).error, new RegExp(`"${bad}" at offset ${at}`), input);
  }
});

test('normalizeTarget keeps the query exactly as it came', () => {
  assert.equal(normalizeTarget('//a/./b?x=/../%2e&y=%zz'), '/a/b?x=/../%2e&y=%zz');
  assert.equal(normalizeTarget('//a?'), '/a?');
  assert.equal(normalizeTarget('/a'), '/a');
  assert.deepEqual(normalizeTarget('/a%zz?x'), { error: '"%zz" at offset 2 of the path is not a percent-encoded byte (% and two hex digits)' });
});

test('pathKey folds ASCII case only', () => {
  assert.equal(pathKey('/ADMIN/Users'), '/admin/users');
  assert.equal(pathKey('/%C3%A9'), '/%c3%a9');
});
