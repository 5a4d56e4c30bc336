/**
 * The DNS-rebinding guard (issue 11 §7), against real processes: a control plane on 127.0.0.1 and
 * a proxy whose admin server is on 127.0.0.1 answer 421 SKEIN_E_FOREIGN_HOST to a foreign Host
 * (API, dashboard, taps, metrics alike) and serve loopback names and addresses with any port; an
 * admin server bound to every address (0.0.0.0) accepts any Host, and starts without
 * --insecure-admin (then serving other hosts its metrics only); the CLI keeps working.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { skein, startControl, type ControlProcess } from './helpers.js';
import { startProxy, type ProxyProcess } from './proxy-helpers.js';

let cp: ControlProcess;
let proxy: ProxyProcess;
let open: ProxyProcess;

/** GET `path` from 127.0.0.1:`port` with this Host (node:http: fetch cannot set Host). */
function get(port: number, path: string, host: string): Promise<{ status: number; error: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host }, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      const done = () => resolve({ status: res.statusCode ?? 0, error: res.headers['x-skein-error'] as string | undefined, body });
      // A tap streams until the client leaves: its status is enough.
      if (res.statusCode === 200 && path.startsWith('/tap')) {
        res.destroy();
        return done();
      }
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', done);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
  });
}

before(async () => {
  cp = await startControl({ dataDir: 'none', args: ['--dns', 'off'] });
  proxy = await startProxy({ control: cp.http, workloads: ['name=client,outbound=127.0.0.1:0'], args: ['--id', 'host-check-proxy'] });
  // The same flag given twice: the last one wins (the helper passes --admin 127.0.0.1:0 first).
  open = await startProxy({ control: cp.http, workloads: ['name=client-2,outbound=127.0.0.1:0'], args: ['--id', 'host-check-open', '--admin', '0.0.0.0:0', '--insecure-admin'] });
});

after(async () => {
  await proxy?.stop();
  await open?.stop();
  await cp?.stop();
});

const FOREIGN = ['evil.example', 'evil.example:7400', 'localhost.evil.example', '127.0.0.1.nip.io'];
const loopback = (port: number) => [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'localhost', `127.0.0.2:${port}`];

describe('bound to loopback: only loopback Hosts', () => {
  test('the control plane answers 421 SKEIN_E_FOREIGN_HOST to a foreign Host, on every route', async () => {
    for (const path of ['/v1/health', '/v1/services', '/metrics', '/dashboard/', '/v1/tap?service=client', '/no-such-route']) {
      for (const host of FOREIGN) {
        const r = await get(cp.httpPort, path, host);
        assert.equal(r.status, 421, `${path} with Host ${host}`);
        assert.equal(r.error, 'SKEIN_E_FOREIGN_HOST');
        const body = JSON.parse(r.body);
        assert.equal(body.code, 'SKEIN_E_FOREIGN_HOST');
        assert.equal(body.field, 'host');
        assert.match(body.message, /is not this machine.*DNS rebinding/);
      }
    }
  });

  test('the control plane serves 127.0.0.1, localhost and [::1] Hosts, any port', async () => {
    for (const host of loopback(cp.httpPort)) {
      const r = await get(cp.httpPort, '/v1/health', host);
      assert.equal(r.status, 200, `Host ${host}: ${r.body}`);
      assert.equal(JSON.parse(r.body).status, 'ok');
    }
  });

  test("the proxy's admin server answers 421 SKEIN_E_FOREIGN_HOST to a foreign Host, and serves loopback ones", async () => {
    for (const path of ['/live', '/metrics', '/stats', '/debug/taps', '/tap?service=client']) {
      for (const host of FOREIGN) {
        const r = await get(proxy.adminPort, path, host);
        assert.equal(r.status, 421, `${path} with Host ${host}`);
        assert.equal(r.error, 'SKEIN_E_FOREIGN_HOST');
        assert.equal(JSON.parse(r.body).code, 'SKEIN_E_FOREIGN_HOST');
      }
      for (const host of loopback(proxy.adminPort)) assert.equal((await get(proxy.adminPort, path, host)).status, 200, `${path} with Host ${host}`);
    }
  });

  test('the CLI reaches the control plane as localhost and as 127.0.0.1', async () => {
    for (const base of [`http://localhost:${cp.httpPort}`, `http://127.0.0.1:${cp.httpPort}`]) {
      const r = await skein(['services', '-c', base, '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(Array.isArray(JSON.parse(r.stdout).services));
    }
  });
});

describe('bound to every address', () => {
  test('an admin server beyond loopback without --insecure-admin starts, and this host gets every endpoint (other hosts get the metrics only: test/multihost.test.ts)', async () => {
    const metricsOnly = await startProxy({ control: cp.http, workloads: ['name=client-3,outbound=127.0.0.1:0'], args: ['--id', 'host-check-metrics', '--admin', '0.0.0.0:0'] });
    try {
      for (const path of ['/metrics', '/stats', '/debug/endpoints', '/debug/taps']) {
        const r = await get(metricsOnly.adminPort, path, `127.0.0.1:${metricsOnly.adminPort}`);
        assert.equal(r.status, 200, `${path}: ${r.body.slice(0, 200)}`);
      }
    } finally {
      await metricsOnly.stop();
    }
  });

  test('an admin server on 0.0.0.0 (--insecure-admin) accepts any Host (it is meant to be reached by other names)', async () => {
    for (const host of [...FOREIGN, `127.0.0.1:${open.adminPort}`]) {
      const r = await get(open.adminPort, '/live', host);
      assert.equal(r.status, 200, `Host ${host}`);
    }
  });
});
