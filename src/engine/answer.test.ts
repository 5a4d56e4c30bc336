import { test } from 'node:test';
import assert from 'node:assert/strict';
import { INBOUND_PROXY_LABEL } from '../api/names.js';
import { makeEndpoint } from '../discovery/endpoint.js';
import { errorBody, errorHead, refusedByPeer } from './answer.js';

test('errorBody: code, message, then requestId and details when given; non-ASCII escaped so latin1 length is the byte count', () => {
  assert.equal(errorBody('SKEIN_E_NO_ROUTE', 'no service'), '{"code":"SKEIN_E_NO_ROUTE","message":"no service"}\n');
  const b = errorBody('SKEIN_E_UPSTREAM_TIMEOUT', 'naïve “quote”', 'r-1', { timeoutMs: 5 });
  assert.equal(b, '{"code":"SKEIN_E_UPSTREAM_TIMEOUT","message":"na\\u00efve \\u201cquote\\u201d","requestId":"r-1","details":{"timeoutMs":5}}\n');
  assert.equal(Buffer.byteLength(b, 'latin1'), b.length);
  assert.deepEqual(JSON.parse(b).message, 'naïve “quote”');
});

test('refusedByPeer: only an inbound proxy\'s own connect or draining answer, from an endpoint registered as one', () => {
  const proxy = makeEndpoint({ service: 's', id: 's-1', address: '127.0.0.1', port: 1, labels: { [INBOUND_PROXY_LABEL]: 'true' } });
  const app = makeEndpoint({ service: 's', id: 's-2', address: '127.0.0.1', port: 2 });
  assert.equal(refusedByPeer(proxy, 'inbound', 'SKEIN_E_UPSTREAM_CONNECT'), true);
  assert.equal(refusedByPeer(proxy, 'inbound', 'SKEIN_E_PROXY_DRAINING'), true);
  assert.equal(refusedByPeer(proxy, 'inbound', 'SKEIN_E_UPSTREAM_TIMEOUT'), false, 'the app may have seen it');
  assert.equal(refusedByPeer(proxy, 'outbound', 'SKEIN_E_UPSTREAM_CONNECT'), false, 'relayed from further on');
  assert.equal(refusedByPeer(proxy, undefined, 'SKEIN_E_UPSTREAM_CONNECT'), false);
  assert.equal(refusedByPeer(app, 'inbound', 'SKEIN_E_UPSTREAM_CONNECT'), false, 'not registered as an inbound proxy');
  assert.equal(refusedByPeer(null, 'inbound', 'SKEIN_E_UPSTREAM_CONNECT'), false);
});

test("a proxy error's status and headers, one list for every driver: the code's status unless given, retry-after in whole seconds rounded up, explain only when asked", () => {
  assert.deepEqual(errorHead('SKEIN_E_RATE_LIMITED', 'outbound', { requestId: 'r-1', retryAfterMs: 1001, explanation: 'route=default' }), {
    status: 429,
    headers: [
      ['x-skein-error', 'SKEIN_E_RATE_LIMITED'],
      ['x-skein-error-origin', 'outbound'],
      ['x-request-id', 'r-1'],
      ['retry-after', '2'],
      ['x-skein-explain', 'route=default'],
    ],
  });
  assert.deepEqual(errorHead('SKEIN_E_UPSTREAM_CONNECT', null, { status: 503, explanation: null }), { status: 503, headers: [['x-skein-error', 'SKEIN_E_UPSTREAM_CONNECT']] });
});
