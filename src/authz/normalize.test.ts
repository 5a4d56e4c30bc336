import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath } from './normalize.js';
import { rulePathProblem } from '../api/authz/build.js';

/** raw target -> [path, query], or a RegExp the error must match. */
const TABLE: Array<[string, [string, string] | RegExp]> = [
  ['/', ['/', '']],
  ['/user', ['/user', '']],
  ['/user/', ['/user/', '']],
  ['/user?id=7&x=%2F', ['/user', '?id=7&x=%2F']],
  ['/user?', ['/user', '?']],
  ['/a//b///c', ['/a/b/c', '']],
  ['//admin', ['/admin', '']],
  ['/a/./b/.', ['/a/b/', '']],
  ['/a/b/../c', ['/a/c', '']],
  ['/a/b/..', ['/a/', '']],
  ['/../../a', ['/a', '']],
  ['/..', ['/', '']],
  ['/a/%2e%2E/b', ['/b', '']],
  ['/%2e/a', ['/a', '']],
  ['/a%2Fb', ['/a/b', '']],
  ['/a%2fb', ['/a/b', '']],
  ['/a%5Cb', ['/a/b', '']],
  ['/a%5cb', ['/a/b', '']],
  ['/a\\b\\..\\c', ['/a/c', '']],
  ['\\admin', ['/admin', '']],
  ['/%41%7e%2D%5f%30', ['/A~-_0', '']],
  ['/a%20b%3b%2525', ['/a%20b%3B%2525', '']],
  ['/caf%c3%a9', ['/caf%C3%A9', '']],
  ['/a;jsessionid=1/b;v=2', ['/a/b', '']],
  ['/x/..;/admin', ['/admin', '']],
  ['/..;/admin', ['/admin', '']],
  ['/a/;x/b', ['/a/b', '']],
  ['/a#frag', ['/a', '']],
  ['/a?q=1#frag?x', ['/a', '?q=1']],
  ['http://svc/admin', ['/admin', '']],
  ['HTTPS://svc:8080/a/../b?q', ['/b', '?q']],
  ['http://svc', ['/', '']],
  ['http://svc?q=1', ['/', '?q=1']],
  ['/ADMIN', ['/ADMIN', '']],
  ['', /empty/],
  ['*', /must be a path starting with "\/"/],
  ['svc:80', /must be a path/],
  ['/admin%00', /encoded NUL \(%00\) at offset 6/],
  ['/a?x=%00', /encoded NUL/],
  ['/a\x00b', /control character \(0x00\) at offset 2/],
  ['/a\tb', /control character \(0x09\)/],
  ['/a\x7f', /control character \(0x7f\)/],
  ['/a%zz', /"%zz" at offset 2 of the path is not a percent-encoded byte/],
  ['/a%4', /"%4" at offset 2 of the path is not a percent-encoded byte/],
  ['/a;x%2F..%2Fadmin', ['/admin', '']],
  ['/a/%2e%2e;v=1/b', ['/b', '']],
  ['/a%3Bx/b', ['/a%3Bx/b', '']],
];

test('normalization table: each raw target -> normalized path and query, or refused with the reason', () => {
  for (const [raw, want] of TABLE) {
    const got = normalizePath(raw);
    if (want instanceof RegExp) {
      assert.ok('error' in got, `${JSON.stringify(raw)} should be refused, got ${JSON.stringify(got)}`);
      assert.match(got.error, want, JSON.stringify(raw));
    } else {
      assert.deepEqual(got, { path: want[0], query: want[1] }, JSON.stringify(raw));
    }
  }
});

test('normalizing is idempotent: a normalized path normalizes to itself', () => {
  for (const [raw, want] of TABLE) {
    if (want instanceof RegExp) continue;
    assert.deepEqual(normalizePath(want[0]), { path: want[0], query: '' }, `${JSON.stringify(raw)} -> ${want[0]}`);
  }
});

test('a rule path is accepted by the API exactly when it is already normalized (so it can match)', () => {
  const candidates = ['/admin', '/admin/', '/a%20b', '/', '/a/b/c', '//a', '/a/./b', '/a/../b', '/a;x', '/a\\b', '/a%2Fb', '/a%41', '/a%3b', '/a%3B', '/a?x', '/a#x', 'admin', '/a%zz', '/.', '/..'];
  for (const p of candidates) {
    const n = normalizePath(p);
    const normalized = !('error' in n) && n.path === p && n.query === '';
    assert.equal(rulePathProblem(p) === null, normalized, `${p}: rulePathProblem says ${String(rulePathProblem(p))}, normalizePath says ${JSON.stringify(n)}`);
  }
});
