import { test } from 'node:test';
import assert from 'node:assert/strict';
import { foreignHost, isLoopbackAddress, isLoopbackHost } from './loopback-host.js';

test('loopback addresses: 127.0.0.0/8, ::1 in its spellings, 127.x mapped into IPv6', () => {
  for (const a of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) assert.ok(isLoopbackAddress(a), a);
  for (const a of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', '1::1', '::ffff:10.0.0.1', 'localhost', '']) assert.ok(!isLoopbackAddress(a), a);
});

test('loopback Host values: localhost and *.localhost, loopback addresses, with or without a port', () => {
  const ok = ['127.0.0.1:7400', '127.0.0.1', 'localhost:4191', 'LOCALHOST', 'localhost.', 'dash.localhost:80', '[::1]:7400', '[::1]', '127.9.9.9:1'];
  for (const h of ok) assert.ok(isLoopbackHost(h), h);
  const foreign = ['evil.example', 'evil.example:7400', 'localhost.evil.example', 'evil-localhost', '127.0.0.1.nip.io:7400', '0.0.0.0:7400', '[::]:7400', '10.1.2.3:80', '', 'localhost:80:80', '::1', 'localhost x'];
  for (const h of foreign) assert.ok(!isLoopbackHost(h), h);
});

test('foreignHost: only a server bound to loopback refuses, and says why', () => {
  assert.equal(foreignHost('127.0.0.1', '127.0.0.1:7400'), null);
  assert.equal(foreignHost('::1', 'localhost:7400'), null);
  assert.equal(foreignHost('0.0.0.0', 'evil.example'), null, 'bound to every address: any Host');
  assert.equal(foreignHost('10.0.0.5', 'evil.example'), null);
  assert.equal(foreignHost(null, 'evil.example'), null, 'not listening (fastify inject)');
  assert.equal(foreignHost('127.0.0.1', undefined), null, 'HTTP/1.0 without Host');
  const why = foreignHost('127.0.0.1', 'evil.example:7400');
  assert.match(why ?? '', /^Host "evil\.example:7400" is not this machine: .*DNS rebinding/);
  assert.ok((foreignHost('::1', 'x'.repeat(5000)) ?? '').length < 400, 'a long Host is cut in the message');
});
