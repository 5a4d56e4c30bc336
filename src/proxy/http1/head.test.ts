import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HEAD_SLACK, HeadWriter } from './head.js';

test('HeadWriter: pieces written in place, whole numbers without strings, the buffer reused from head to head', () => {
  const w = new HeadWriter();
  w.start(40);
  assert.equal(w.buf.length, 1024, 'at least 1 KiB');
  const first = w.buf;
  w.text('GET');
  w.byte(0x20);
  w.text('/x');
  w.bytes(Buffer.from(' HTTP/1.1\r\n'));
  w.text('x-skein-timeout-ms: ');
  w.decimal(0);
  w.text(',');
  w.decimal(7);
  w.text(',');
  w.decimal(2_147_483_647);
  assert.equal(w.buf.toString('latin1', 0, w.pos), 'GET /x HTTP/1.1\r\nx-skein-timeout-ms: 0,7,2147483647');
  const view = w.buf.subarray(0, w.pos);
  assert.equal(w.owns(view), true);
  w.start(100);
  assert.equal(w.buf, first, 'the next head reuses the buffer');
  assert.equal(w.pos, 0);
  w.start(4000);
  assert.notEqual(w.buf, first, 'a larger head gets a larger buffer');
  assert.equal(w.buf.length, 8192, 'the next power of two with room for what each attempt adds');
  assert.ok(w.buf.length >= 4000 + HEAD_SLACK);
  assert.equal(w.owns(view), false, 'a view of the old buffer is no longer the writer\'s');
});

test('HeadWriter: a buffer handed off to a socket that queued it is never written again', () => {
  const w = new HeadWriter();
  w.start(10);
  w.text('queued head');
  const lent = w.buf.subarray(0, w.pos);
  w.handOff();
  assert.equal(w.owns(lent), false);
  w.start(10);
  w.text('next head!!');
  assert.equal(lent.toString('latin1'), 'queued head', 'the queued bytes are intact');
});
