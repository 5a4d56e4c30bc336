import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ERR, HttpParser, LLHTTP_DIR, LLHTTP_FUNCTIONS, ParserType, type ParserCallbacks } from './llhttp.js';

const require = createRequire(import.meta.url);

test('undici, whose private llhttp build the proxy loads, is installed at the exact version package.json pins', () => {
  const root = join(dirname(require.resolve('undici')));
  const installed = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };
  const pinned = pkg.dependencies['undici'];
  assert.match(pinned ?? '', /^\d+\.\d+\.\d+$/, 'package.json pins undici to one exact version (its lib/llhttp is not a public export)');
  assert.equal(installed, pinned);
  assert.equal(LLHTTP_DIR, join(root, 'lib', 'llhttp'));
});

test('the build exports every function the proxy calls, and parses a request', () => {
  // @types/node 20 does not declare WebAssembly.
  const WA = (globalThis as unknown as { WebAssembly: { Module: { new (b: Buffer): object; exports(m: object): Array<{ name: string }> } } }).WebAssembly;
  const names = new Set(WA.Module.exports(new WA.Module(require(join(LLHTTP_DIR, 'llhttp-wasm.js')) as Buffer)).map((e) => e.name));
  assert.deepEqual(LLHTTP_FUNCTIONS.filter((f) => !names.has(f)), []);
  let url = '';
  let done = false;
  const bytes = Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\n\r\n', 'latin1');
  const cb: ParserCallbacks = {
    onMessageBegin: () => 0,
    onUrl: (s, e) => ((url = bytes.toString('latin1', s, e)), 0),
    onHeaderField: () => 0,
    onHeaderValue: () => 0,
    onHeadersComplete: () => 0,
    onBody: () => 0,
    onMessageComplete: () => ((done = true), 0),
  };
  const p = new HttpParser(ParserType.Request, cb);
  assert.equal(p.execute(bytes), ERR.OK);
  assert.equal(url, '/x');
  assert.ok(done);
  assert.equal(p.method, 1, 'GET');
  p.destroy();
});

test('reset starts a parser over after a head (the next response parses from its first byte); a bad head is still refused', () => {
  const calls: string[] = [];
  const cb: ParserCallbacks = {
    onMessageBegin: () => (calls.push('begin'), 0),
    onUrl: () => (calls.push('url'), 0),
    onHeaderField: () => (calls.push('field'), 0),
    onHeaderValue: () => (calls.push('value'), 0),
    onHeadersComplete: (status) => (calls.push(`head ${status}`), ERR.PAUSED),
    onBody: (s, e) => (calls.push(`body ${e - s}`), 0),
    onMessageComplete: () => (calls.push('done'), ERR.PAUSED),
  };
  const p = new HttpParser(ParserType.Response, cb);
  const ok = Buffer.from('HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\n\r\nabc', 'latin1');
  assert.equal(p.execute(ok), ERR.PAUSED);
  assert.equal(p.errorOffset, ok.length - 3, 'paused at the end of the head');
  assert.deepEqual(calls, ['begin', 'field', 'value', 'field', 'value', 'head 200']);
  // The body is not given to llhttp: reset, and the next response parses from its first byte.
  p.reset();
  calls.length = 0;
  assert.equal(p.execute(Buffer.from('HTTP/1.1 404 No\r\nA: b\r\n\r\n', 'latin1')), ERR.PAUSED);
  assert.deepEqual(calls, ['begin', 'field', 'value', 'head 404']);
  p.reset();
  assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', 'latin1')), ERR.INVALID_HEADER_TOKEN, 'llhttp still refuses a bad head');
  p.destroy();
});
