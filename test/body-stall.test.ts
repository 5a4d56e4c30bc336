/**
 * The Nagle / delayed-ACK stall (issue 11 §9): an app that writes a response's head and body in
 * two writes with Nagle's algorithm on makes every response on the proxy's pooled connection wait
 * ~40 ms for a delayed ACK. The proxy counts such responses, and five in a row from one endpoint
 * raise a `body-stall` event naming the service, the instance and the fix, which reaches the
 * control plane's event feed. An app that writes each response in one write raises nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { api, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { metricValue, scrapeMetrics, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
let cp: ControlProcess;
let proxy: ProxyProcess;

/** A keep-alive HTTP/1.1 app answering "hello"; `split`: head and body in two writes, Nagle on. */
async function app(split: boolean): Promise<number> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.setNoDelay(!split);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        buf = buf.slice(end + 4);
        const head = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n';
        if (split) {
          s.write(head);
          s.write('hello');
        } else s.write(`${head}hello`);
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return (srv.address() as { port: number }).port;
}

before(async () => {
  const dir = await tempDir('skein-stall-');
  cleanups.push(dir.remove);
  cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off', '--scrape-interval', '1s'] });
  cleanups.push(() => cp.stop());
  const nagle = await app(true);
  const tidy = await app(false);
  proxy = await startProxy({
    control: cp.http,
    workloads: [`name=nagle-1,service=nagle,inbound=127.0.0.1:0,app=127.0.0.1:${nagle}`, `name=tidy-1,service=tidy,inbound=127.0.0.1:0,app=127.0.0.1:${tidy}`],
  });
  cleanups.push(() => proxy.stop());
  await waitForProxyReady(proxy);
});

after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

/** `n` requests one after the other on one keep-alive connection to a workload's inbound listener. */
async function calls(workload: string, n: number): Promise<number[]> {
  const port = (proxy.workload(workload).inbound as { port: number }).port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const ms: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get({ port, agent, path: `/r${i}`, headers: { host: 'x' } }, (res) => {
            let b = '';
            res.on('data', (d: Buffer) => (b += d.toString()));
            res.on('end', () => resolve(b));
          })
          .on('error', reject);
      });
      assert.equal(body, 'hello');
      ms.push(performance.now() - t);
    }
  } finally {
    agent.destroy();
  }
  return ms;
}

const stalls = (text: string, service: string) => metricValue(text, 'skein_proxy_body_stalls_total', { direction: 'inbound', service }) ?? 0;

test('an app that writes head and body apart with Nagle on: its stalls are counted and a body-stall event names it and the fix', async () => {
  const ms = await calls('nagle-1', 12);
  const m = await scrapeMetrics(proxy);
  assert.ok(stalls(m, 'nagle') >= 5, `at least 5 of 12 responses stalled (the calls took ${ms.map((x) => x.toFixed(0)).join(', ')} ms); counted ${stalls(m, 'nagle')}`);
  const stats = (await api(proxy.admin, 'GET', '/stats')).body as { events: Array<{ type: string; service: string; instance: string; detail: string }> };
  const ev = stats.events.filter((e) => e.type === 'body-stall');
  assert.equal(ev.length, 1, `one body-stall event (at most one per endpoint every 5 minutes): ${JSON.stringify(stats.events)}`);
  assert.equal(ev[0]?.service, 'nagle');
  assert.equal(ev[0]?.instance, 'nagle-1');
  assert.match(ev[0]?.detail ?? '', /~\d+ ms after their heads/);
  assert.match(ev[0]?.detail ?? '', /TCP_NODELAY/);
  // The control plane's event feed (what `skein events` and the dashboard show) gets it with its next scrape.
  const feed = await waitFor(
    async () => {
      const r = await api(cp.http, 'GET', '/v1/events?type=body-stall');
      const list = (r.body as { events: Array<{ service: string; id: string; message: string }> }).events;
      return list.length > 0 ? list : null;
    },
    { timeoutMs: 15_000, what: 'the body-stall event in the control plane feed' },
  );
  assert.ok(feed !== null);
  assert.equal(feed[0]?.service, 'nagle');
  assert.equal(feed[0]?.id, 'nagle-1');
  assert.match(feed[0]?.message ?? '', /nagle-1 of nagle: .*Nagle's algorithm/);
});

test('an app that writes each response in one write: nothing counted, no event', async () => {
  await calls('tidy-1', 12);
  const m = await scrapeMetrics(proxy);
  assert.equal(stalls(m, 'tidy'), 0);
  const stats = (await api(proxy.admin, 'GET', '/stats')).body as { events: Array<{ type: string; service: string }> };
  assert.deepEqual(stats.events.filter((e) => e.type === 'body-stall' && e.service === 'tidy'), []);
});
