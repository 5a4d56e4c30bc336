/**
 * The proxy's access log (`skein proxy --access-log FILE`): one JSON line per finished request,
 * from a real proxy process, for answers of the app, of the proxy itself, and of the inbound
 * listener; the query string and header values never reach the log.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { api, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { httpGet, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

let cp: ControlProcess;
let dir: { path: string; remove: () => Promise<void> };
let app: http.Server;
let P: ProxyProcess;
let log: string;
let outPort: number;
let inPort: number;

async function lines(): Promise<any[]> {
  const text = await readFile(log, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as unknown);
}

before(async () => {
  dir = await tempDir('skein-access-');
  cp = await startControl({ dataDir: 'none', args: ['--dns', 'off'] });
  app = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(`hello ${req.url}`));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  const appPort = (app.address() as { port: number }).port;
  log = join(dir.path, 'access.log');
  P = await startProxy({
    control: cp.http,
    workloads: ['name=web-1,service=web,outbound=127.0.0.1:0', `name=api-1,service=api,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`],
    args: ['--access-log', log],
  });
  await waitForProxyReady(P);
  outPort = (P.workload('web-1').outbound as { port: number }).port;
  inPort = (P.workload('api-1').inbound as { port: number }).port;
  await registerInstance(cp.http, 'api', 'api-1', inPort);
  await waitFor(async () => (await httpGet(outPort, '/ready', { headers: { host: 'api' } })).status === 200, { timeoutMs: 10_000, what: 'the proxy to route to api' });
});

after(async () => {
  await P?.stop();
  await new Promise<void>((r) => (app ? app.close(() => r()) : r()));
  await cp?.stop();
  await dir?.remove();
});

describe('access log', () => {
  test('one line per request on each listener it crossed, with what was decided, and nothing secret', async () => {
    const r = await httpGet(outPort, '/orders/42?token=s3cr3t', { headers: { host: 'api', authorization: 'Bearer hunter2', 'x-request-id': 'rid-access-1' } });
    assert.equal(r.status, 200);
    const missing = await httpGet(outPort, '/x', { headers: { host: 'nosuch', 'x-request-id': 'rid-access-2' } });
    assert.equal(missing.status, 503);
    // The log is written asynchronously: poll until both requests' lines are there (the first crossed two listeners).
    const mine = async () => (await lines()).filter((l) => l.requestId === 'rid-access-1' || l.requestId === 'rid-access-2');
    await waitFor(async () => (await mine()).length >= 3, { timeoutMs: 10_000, what: 'three access-log lines' });
    const all = await mine();
    const out = all.find((l) => l.requestId === 'rid-access-1' && l.direction === 'outbound');
    const inb = all.find((l) => l.requestId === 'rid-access-1' && l.direction === 'inbound');
    const err = all.find((l) => l.requestId === 'rid-access-2');
    assert.ok(out && inb && err, JSON.stringify(all));
    assert.equal(out.msg, 'access');
    assert.match(out.time, /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual(
      [out.workload, out.method, out.path, out.service, out.route, out.status, out.attempts, out.error, out.caller],
      ['web-1', 'GET', '/orders/42', 'api', 'default', 200, 1, null, 'web'],
    );
    assert.match(out.upstream, /^api-1 127\.0\.0\.1:\d+$/);
    assert.equal(typeof out.durationMs, 'number');
    assert.deepEqual([inb.workload, inb.caller, inb.status, inb.service], ['api-1', 'web', 200, 'api'], 'the inbound line names the caller its proxy sent');
    assert.deepEqual([err.status, err.error, err.service, err.upstream], [503, 'SKEIN_E_UNKNOWN_SERVICE', null, null]);
    const text = await readFile(log, 'utf8');
    assert.ok(!text.includes('s3cr3t'), 'the query string is not logged');
    assert.ok(!text.includes('hunter2'), 'header values are not logged');
  });

  test('durationMs is in milliseconds: a route\'s injected 300 ms show on the outbound line, not on the inbound one', async () => {
    const put = await api(cp.http, 'PUT', '/v1/services/api', { routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, fault: { delay: { duration: '300ms', percent: 100 } } }] });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    await waitFor(async () => {
      const t0 = Date.now();
      return (await httpGet(outPort, '/slow/warm', { headers: { host: 'api' } })).status === 200 && Date.now() - t0 >= 300;
    }, { timeoutMs: 10_000, what: 'the delay of route "slow" to reach the proxy' });
    const r = await httpGet(outPort, '/slow/1', { headers: { host: 'api', 'x-request-id': 'rid-slow-1' } });
    assert.equal(r.status, 200);
    const mine = async () => (await lines()).filter((l) => l.requestId === 'rid-slow-1');
    await waitFor(async () => (await mine()).length >= 2, { timeoutMs: 10_000, what: 'both access-log lines of the delayed request' });
    const all = await mine();
    const out = all.find((l) => l.direction === 'outbound');
    const inb = all.find((l) => l.direction === 'inbound');
    assert.equal(out?.route, 'slow', JSON.stringify(all));
    assert.ok(out.durationMs >= 300 && out.durationMs < 1000, `outbound durationMs ${out.durationMs}: the 300 ms delay and the app's answer`);
    assert.ok(inb.durationMs < 300, `inbound durationMs ${inb.durationMs}: the app answers at once, the delay was before`);
  });

  test('--access-log to a place that cannot be written: one clear line and exit 1', async () => {
    const r = await skein(['proxy', '--admin', 'off', '--no-control', '--workload', 'name=w,inbound=127.0.0.1:0,app=127.0.0.1:9', '--access-log', join(dir.path, 'no', 'such', 'dir', 'a.log')], { timeoutMs: 15_000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /--access-log: cannot write .*a\.log: ENOENT/);
    assert.match(r.stderr, /SKEIN_E_FILE/);
  });
});
