import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, SkeinError } from './errors.js';

const docs = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');

test('every error code is documented in docs/errors.md with its status', () => {
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    const row = docs.split('\n').find((l) => l.startsWith(`| \`${code}\``));
    assert.ok(row, `${code} has no row in docs/errors.md`);
    assert.match(row, new RegExp(`\\|\\s*${status}\\s*\\|`), `${code}'s row does not give status ${status}`);
  }
});

test('docs/errors.md documents no code that does not exist', () => {
  const documented = [...docs.matchAll(/^\| `(SKEIN_E_[A-Z_]+)`/gm)].map((m) => m[1]);
  assert.ok(documented.length > 0);
  for (const code of documented) assert.ok(code !== undefined && code in ERROR_CODES, `${code} is documented but not in the code table`);
});

test('SkeinError carries code, status and field to JSON', () => {
  const e = new SkeinError('SKEIN_E_VALIDATION', 'port must be <= 65535', { field: 'port' });
  assert.equal(e.status, 400);
  assert.deepEqual(e.toJSON(), { code: 'SKEIN_E_VALIDATION', message: 'port must be <= 65535', field: 'port' });
});
