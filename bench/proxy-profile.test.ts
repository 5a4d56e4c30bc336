/**
 * The measuring parts of bench/proxy-profile.ts: strace's summary read right, the CPU profile's
 * self time put in the right buckets and divided by the requests, and the probe's allocation
 * figure checked against a process that allocates a known amount.
 * Run: node --test dist/bench/proxy-profile.test.js
 */
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ROOT, waitUntil } from './lib.js';
import { allocatedBytes, bucketOf, parseStraceSummary, summarizeProfile } from './proxy-profile.js';

const hasStrace = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v strace'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test("strace -c's table: calls and errors by syscall, the total row left out", { skip: hasStrace ? false : 'strace is not installed' }, () => {
  // A real run: three echo builtins are three write calls.
  const dir = mkdtempSync(join(tmpdir(), 'skein-strace-'));
  try {
    const out = join(dir, 'summary.txt');
    execFileSync('strace', ['-c', '-f', '-o', out, 'sh', '-c', 'echo a; echo b; echo c'], { stdio: 'ignore' });
    const calls = parseStraceSummary(readFileSync(out, 'utf8'));
    assert.deepEqual(calls.get('write'), { calls: 3, errors: 0 });
    assert.equal(calls.has('total'), false);
    assert.ok(calls.size >= 5, `the other syscalls of a shell's start are there too: ${[...calls.keys()].join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a row without an errors column, and with one', () => {
  const text = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 87.70    0.118314        1219        97        10 futex
  3.60    0.004853           9       507           writev
------ ----------- ----------- --------- --------- ----------------
100.00    0.134904          98       604        10 total
`;
  assert.deepEqual([...parseStraceSummary(text)], [
    ['futex', { calls: 97, errors: 10 }],
    ['writev', { calls: 507, errors: 0 }],
  ]);
});

test('self time by bucket and by function, per request; idle time is not busy time', () => {
  const file = (p: string) => pathToFileURL(join(ROOT, 'dist', p)).href;
  const frame = (functionName: string, url: string, lineNumber = 0) => ({ functionName, url, lineNumber, columnNumber: 0 });
  const nodes = [
    { id: 1, callFrame: frame('(root)', '') },
    { id: 2, callFrame: frame('(idle)', '') },
    { id: 3, callFrame: frame('(program)', '') },
    { id: 4, callFrame: frame('writeBuffer', '') },
    { id: 5, callFrame: frame('onStreamRead', 'node:internal/stream_base_commons', 165) },
    { id: 6, callFrame: frame('$llhttp__internal__run', 'wasm://wasm/00034eea') },
    { id: 7, callFrame: frame('feed', file('src/proxy/http1/upstream.js')) },
    { id: 8, callFrame: frame('admit', file('src/engine/admission.js')) },
    { id: 9, callFrame: frame('(garbage collector)', '') },
  ];
  // Sample i is charged the gap after it (timeDeltas[i + 1]); the last one gets none.
  const samples = [2, 4, 4, 7, 6, 5, 3, 8, 9, 2];
  const timeDeltas = [0, 1000, 300, 300, 100, 50, 50, 40, 30, 20];
  const s = summarizeProfile({ nodes, samples, timeDeltas }, 10);
  const got = Object.fromEntries(s.buckets.map((b) => [b.bucket, b.us]));
  assert.deepEqual(got, {
    'native functions called from JS (bindings, V8 builtins)': 60, // two samples of 300 µs over 10 requests
    'skein: src/proxy/http1': 10,
    'llhttp (WebAssembly)': 5,
    'node JS: net, stream_base_commons': 5,
    'native, outside any JS frame (libuv, Node C++, syscalls)': 4,
    'skein: src/engine': 3,
    'GC (main thread)': 2,
  });
  assert.equal(s.busyUs, 89); // the idle samples (1000 µs, and the last one's 0) left out
  assert.equal(s.top[0]?.fn, 'writeBuffer');
  assert.equal(s.top[0]?.where, '(native)');
  assert.ok(Math.abs((s.top[0]?.percent ?? 0) - (600 / 890) * 100) < 1e-9);
  assert.equal(s.top.find((t) => t.fn === 'onStreamRead')?.where, 'node:internal/stream_base_commons:166');
  assert.equal(bucketOf(frame('x', 'file:///somewhere/node_modules/prom-client/lib/counter.js')), 'dependency: prom-client');
  assert.equal(bucketOf(frame('push', 'node:internal/streams/readable')), 'node JS: streams');
});

test('bytes allocated: what each GC found minus what the one before left, plus the growth after the last', () => {
  const gc = (before: number, after: number) => ({ gcType: 'Scavenge', cost: 100, beforeGC: { heapStatistics: { usedHeapSize: before } }, afterGC: { heapStatistics: { usedHeapSize: after } } });
  // 10 MB at the start; allocate to 26, collect to 11; allocate to 27, collect to 12; end at 15.
  assert.equal(allocatedBytes(10e6, 15e6, [gc(26e6, 11e6), gc(27e6, 12e6)]), 16e6 + 16e6 + 3e6);
  assert.equal(allocatedBytes(10e6, 12e6, []), 2e6);
});

test('the probe, loaded into a process that allocates a known amount, reports it and a CPU profile', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-probe-'));
  // After SIGUSR2 (the probe's start) it makes 128 strings of 512 KiB (one byte per character, on
  // V8's heap: below the size where Node makes external strings), kept alive; the second SIGUSR2
  // ends the window.
  const app = `
    const keep = [];
    let n = 0;
    process.on('SIGUSR2', () => {
      if (++n === 1) setTimeout(() => { for (let i = 0; i < 128; i++) keep.push(Buffer.alloc(1 << 19, 97 + (i % 26)).toString('latin1')); process.stdout.write('allocated\\n'); }, 10);
    });
    setInterval(() => {}, 1000);
    process.stdout.write('ready\\n');`;
  const child = spawn(process.execPath, ['--import', join(ROOT, 'dist', 'bench', 'proxy-profile-probe.js'), '--input-type=module', '-e', app], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, SKEIN_PROFILE_DIR: dir, SKEIN_PROFILE_INTERVAL_US: '100' },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitUntil(() => out.includes('ready'), 10_000, 'the app to start');
    child.kill('SIGUSR2');
    await waitUntil(() => out.includes('allocated'), 10_000, 'the app to allocate');
    child.kill('SIGUSR2');
    const file = join(dir, 'window-0.json');
    await waitUntil(() => existsSync(file), 10_000, "the probe's window file");
    const w = JSON.parse(readFileSync(file, 'utf8')) as { profile: { samples: number[] }; gc: { statistics: Parameters<typeof allocatedBytes>[2] }; usedAtStart: number; usedAtEnd: number };
    const bytes = allocatedBytes(w.usedAtStart, w.usedAtEnd, w.gc.statistics);
    const MB = 1 << 20;
    // V8's heap statistics count large objects within a few per cent (64 MiB read as 63.8 here).
    assert.ok(Math.abs(bytes - 64 * MB) < 0.05 * 64 * MB, `allocated ${bytes} bytes, expected 64 MiB within 5%`);
    assert.ok(w.profile.samples.length > 0, 'the CPU profile has samples');
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
