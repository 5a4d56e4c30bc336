import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { TapStreams, type TapOutput } from './tap.js';

/** An output whose reader takes bytes only when told to (`read`). */
class FakeOutput implements TapOutput {
  chunks: string[] = [];
  writableLength = 0;
  destroyed = false;
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    this.writableLength += Buffer.byteLength(chunk);
    return true;
  }
  read(bytes: number): void {
    this.writableLength = Math.max(0, this.writableLength - bytes);
  }
  destroy(): void {
    this.destroyed = true;
  }
}

const info = { service: 'web', headers: false, bodies: false };
const limits = { maxTaps: 2, bufferBytes: 1000, stallTimeoutMs: 10_000 };

test('a tap keeps at most bufferBytes waiting: the rest is dropped, counted, and the reader told how many', () => {
  const streams = new TapStreams({ limits, clock: new ManualClock() });
  const out = new FakeOutput();
  const s = streams.start(info, out);
  assert.ok(s);
  const line = 'x'.repeat(99);
  let serialized = 0;
  for (let i = 0; i < 50; i++) s.write(() => (serialized++, line));
  assert.ok(out.writableLength <= limits.bufferBytes, `${out.writableLength} bytes waiting`);
  assert.equal(s.lines, 9, '9 lines of 100 bytes and their framing fit in 1000');
  assert.equal(s.dropped, 41);
  assert.equal(serialized, 9, 'a record is not serialized when even the shortest line sent would not fit');
  out.read(out.writableLength);
  s.write(line);
  assert.equal(out.chunks.at(-1), `{"missed":41}\n${line}\n`, 'the next line that fits says what was missed');
  s.write(line);
  assert.equal(out.chunks.at(-1), `${line}\n`, 'once');
  assert.deepEqual({ dropped: streams.stats().dropped, lines: streams.stats().taps[0]?.lines }, { dropped: 41, lines: 11 });
});

test('at most maxTaps are open; one more is refused and counted; a closed tap frees its slot', () => {
  const streams = new TapStreams({ limits, clock: new ManualClock() });
  const a = streams.start(info, new FakeOutput());
  assert.ok(a && streams.start(info, new FakeOutput()));
  assert.equal(streams.start(info, new FakeOutput()), null);
  assert.equal(streams.refused, 1);
  a.close();
  assert.ok(streams.start(info, new FakeOutput()));
  assert.deepEqual({ open: streams.size, opened: streams.opened }, { open: 2, opened: 3 });
});

test('a tap whose reader takes nothing for the stall timeout while bytes wait is ended; a slow reader is not', () => {
  const clock = new ManualClock();
  const streams = new TapStreams({ limits, clock });
  const stuck = new FakeOutput();
  const slow = new FakeOutput();
  const quiet = new FakeOutput();
  const s1 = streams.start(info, stuck);
  const s2 = streams.start(info, slow);
  assert.ok(s1 && s2);
  s1.write('a'.repeat(500));
  s2.write('b'.repeat(500));
  for (let t = 0; t < 9; t++) {
    clock.advance(1000);
    slow.read(10);
  }
  assert.equal(streams.size, 2, 'not yet: 9 s without reading');
  clock.advance(1000);
  slow.read(10);
  clock.advance(1000);
  assert.ok(stuck.destroyed, 'the stuck reader is cut off');
  assert.ok(!slow.destroyed, 'a reader that takes bytes keeps its tap');
  assert.equal(streams.stalled, 1);
  assert.equal(streams.size, 1);
  // A tap with nothing waiting is not stalled, however long its reader sleeps.
  assert.ok(streams.start(info, quiet));
  slow.read(1000);
  clock.advance(60_000);
  assert.equal(streams.size, 2);
  s2.close();
  assert.equal(clock.pending, 1, 'the timer runs while taps are open');
});

test('the timer stops with the last tap', () => {
  const clock = new ManualClock();
  const streams = new TapStreams({ limits, clock });
  const s = streams.start(info, new FakeOutput());
  assert.equal(clock.pending, 1);
  s?.close();
  assert.equal(clock.pending, 0);
});
