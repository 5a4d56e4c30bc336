#!/usr/bin/env node
// Runs the compiled tests with node's test runner.
//   unit:        dist/src/**/*.test.js   (beside the code), dist/bench/**/*.test.js (the benchmarks' own tools)
//   integration: dist/test/**/*.test.js  (real processes and sockets)
//   all:         both
// Extra arguments are passed to `node --test` (e.g. --test-name-pattern=dns).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const which = process.argv[2] ?? 'all';
const extra = process.argv.slice(3);
const roots = { unit: ['dist/src', 'dist/bench'], integration: ['dist/test'], all: ['dist/src', 'dist/bench', 'dist/test'] }[which];
if (roots === undefined) {
  console.error(`run-tests: unknown suite "${which}" (unit, integration or all)`);
  process.exit(2);
}

function find(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const files = roots.flatMap(find);
if (files.length === 0) {
  console.error('run-tests: no compiled tests found; run `npm run build` first');
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=240000', ...extra, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
