/**
 * The measuring parts of bench/proxy-memory.ts: /proc/PID/status read right (this process's own,
 * against a buffer it holds), the load split into batches, and the verdicts against issue 16's
 * targets. Run: node --test dist/bench/proxy-memory.test.js
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadBatches, memoryVerdicts, parseProcStatus, parseWorkloadCounts, type MemoryRow } from './proxy-memory.js';

const STATUS = `Name:\tnode
VmPeak:\t 1234568 kB
VmHWM:\t  108512 kB
VmRSS:\t   86260 kB
RssAnon:\t   33704 kB
RssFile:\t   52556 kB
RssShmem:\t       0 kB
`;

test("/proc/PID/status: VmRSS, VmHWM, RssAnon and RssFile in kB (not VmPeak, the address space's peak)", () => {
  assert.deepEqual(parseProcStatus(STATUS), { rssKb: 86260, hwmKb: 108512, anonKb: 33704, fileKb: 52556 });
  assert.throws(() => parseProcStatus(STATUS.replace(/^RssFile.*$/m, '')), /no "RssFile: N kB" line/);
});

test("this process's own status: 64 MiB touched show in VmRSS and RssAnon, and the peak follows", () => {
  const before = parseProcStatus(readFileSync('/proc/self/status', 'utf8'));
  const held = Buffer.alloc(64 * 1024 * 1024, 1);
  const after = parseProcStatus(readFileSync('/proc/self/status', 'utf8'));
  assert.equal(held[held.length - 1], 1);
  assert.ok(after.rssKb - before.rssKb >= 60 * 1024, `VmRSS grew by ${after.rssKb - before.rssKb} kB`);
  assert.ok(after.anonKb - before.anonKb >= 60 * 1024, `RssAnon grew by ${after.anonKb - before.anonKb} kB`);
  assert.ok(after.hwmKb >= after.rssKb, `VmHWM ${after.hwmKb} kB, VmRSS ${after.rssKb} kB`);
});

test('load batches: at most --concurrent workloads at once, about --connections connections in every batch, every workload once', () => {
  assert.deepEqual(loadBatches(1, 8, 32), [[{ index: 0, connections: 32 }]]);
  const ten = loadBatches(10, 8, 32);
  assert.deepEqual(
    ten.map((b) => b.map((w) => w.connections)),
    [[4, 4, 4, 4, 4, 4, 4, 4], [16, 16]],
  );
  assert.deepEqual(ten.flat().map((w) => w.index), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // More workloads at once than connections: one connection each, never zero.
  assert.deepEqual(loadBatches(3, 8, 2), [[{ index: 0, connections: 1 }, { index: 1, connections: 1 }, { index: 2, connections: 1 }]]);
  assert.equal(loadBatches(50, 8, 32).length, 7);
  assert.throws(() => loadBatches(0, 8, 32), /workloads must be a whole number of at least 1, got 0/);
  assert.throws(() => loadBatches(5, 0, 32), /--concurrent must be a whole number of at least 1, got 0/);
});

const row = (path: MemoryRow['path'], workloads: number, restMb: number, peakMb: number): MemoryRow => ({ path, workloads, restMb, peakMb, afterMb: peakMb, restAnonMb: 0, restFileMb: 0, requests: 1, errors: 0 });

test("verdicts: one workload's peak against 70 MB, the increment per further workload against the same path's one-workload peak", () => {
  const v = memoryVerdicts([row('inbound', 1, 60, 70), row('inbound', 10, 70, 88), row('inbound', 50, 80, 169), row('mesh', 1, 90, 70.5), row('mesh', 11, 95, 90.5)]);
  assert.deepEqual(
    v.map((x) => [x.path, x.workloads, x.target, x.ok, x.perWorkloadPeakMb, x.perWorkloadRestMb]),
    [
      ['inbound', 1, 'peak <= 70 MB', true, null, null],
      ['inbound', 10, '<= +2 MB per workload', true, 2, 10 / 9],
      ['inbound', 50, '<= +2 MB per workload', false, 99 / 49, 20 / 49],
      ['mesh', 1, 'peak <= 70 MB', false, null, null],
      ['mesh', 11, '<= +2 MB per workload', true, 2, 0.5],
    ],
  );
  assert.throws(() => memoryVerdicts([row('mesh', 10, 1, 1)]), /mesh with 10 workloads: no run with 1 workload on that path to compare with/);
});

test('--workloads: distinct whole numbers, ascending; a bad one named', () => {
  assert.deepEqual(parseWorkloadCounts('50, 1,10,10'), [1, 10, 50]);
  assert.throws(() => parseWorkloadCounts('1,ten'), /--workloads: "ten" is not a whole number from 1 to 500/);
  assert.throws(() => parseWorkloadCounts('0'), /"0" is not a whole number/);
  assert.throws(() => parseWorkloadCounts('1,501'), /"501" is not/);
});
