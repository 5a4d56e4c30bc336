import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatHostPort, parseHostPort } from './address.js';
import { SkeinError } from './errors.js';

test('parseHostPort reads IPv4, names and bracketed IPv6', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:7400', '--http'), { host: '127.0.0.1', port: 7400 });
  assert.deepEqual(parseHostPort('localhost:80', '--http'), { host: 'localhost', port: 80 });
  assert.deepEqual(parseHostPort('[::1]:7453', '--dns'), { host: '::1', port: 7453 });
  assert.deepEqual(parseHostPort('[fe80::1:2]:1', '--dns'), { host: 'fe80::1:2', port: 1 });
  assert.deepEqual(parseHostPort('0.0.0.0:0', '--http'), { host: '0.0.0.0', port: 0 }, 'port 0: let the OS pick');
  assert.deepEqual(parseHostPort('127.0.0.1:65535', '--http'), { host: '127.0.0.1', port: 65535 });
});

function usageError(text: string, flag: string, match: RegExp): void {
  assert.throws(
    () => parseHostPort(text, flag),
    (e: unknown) => {
      assert.ok(e instanceof SkeinError);
      assert.equal(e.code, 'SKEIN_E_USAGE');
      assert.equal(e.field, flag);
      assert.match(e.message, match);
      return true;
    },
    text,
  );
}

test('parseHostPort rejects malformed input with SKEIN_E_USAGE naming the flag', () => {
  for (const bad of ['127.0.0.1', ':80', '127.0.0.1:', '127.0.0.1:65536', '127.0.0.1:99999', '127.0.0.1:123456', '::1:80', 'host:port', '[::1]', '[::1:80', '']) {
    usageError(bad, '--http', /--http must be HOST:PORT/);
  }
  usageError('nope', '--dns', /got "nope"/);
});

test('parseHostPort rejects brackets around something that is not IPv6', () => {
  usageError('[1.2.3.4]:80', '--dns', /--dns: "1.2.3.4" is not an IPv6 address/);
  usageError('[::::1::]:80', '--dns', /is not an IPv6 address/);
});

test('formatHostPort brackets IPv6 only', () => {
  assert.equal(formatHostPort('127.0.0.1', 80), '127.0.0.1:80');
  assert.equal(formatHostPort('localhost', 80), 'localhost:80');
  assert.equal(formatHostPort('::1', 7453), '[::1]:7453');
  const { host, port } = parseHostPort(formatHostPort('fe80::1', 9), '--x');
  assert.deepEqual({ host, port }, { host: 'fe80::1', port: 9 });
});
