/**
 * The proxy balances each service with the balancer its Service resource names, and follows a
 * change of it: ring hash on a header keeps a key on one instance, round robin cycles.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { api, startControl, tempDir, waitFor } from './helpers.js';
import { httpGet, registerInstance, startProxy, waitForProxyReady, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
let control = '';
let proxy: ProxyProcess;
let out = 0;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

async function backend(name: string): Promise<number> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'x-served-by': name, 'content-length': 2 });
    res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

async function servedBy(headers: Record<string, string> = {}): Promise<string> {
  const r = await httpGet(out, '/', { agent, headers: { host: 'shard', ...headers } });
  assert.equal(r.status, 200, r.body);
  return String(r.headers['x-served-by']);
}

async function balancerOf(kind: string): Promise<boolean> {
  const r = await fetch(`${proxy.admin}/debug/endpoints`);
  const body = (await r.json()) as { services: Record<string, { balancer: { kind: string }; endpoints: unknown[] }> };
  const s = body.services['shard'];
  return s !== undefined && s.balancer.kind === kind && s.endpoints.length === 3;
}

before(async () => {
  const dir = await tempDir('skein-balancing-');
  cleanups.push(dir.remove);
  const cp = await startControl({ dataDir: join(dir.path, 'data'), args: ['--dns', 'off'] });
  cleanups.push(() => cp.stop());
  control = cp.http;
  const def = await api(control, 'PUT', '/v1/services/shard', { balancer: { kind: 'ring-hash', hashKey: { type: 'header', name: 'x-user' } } });
  assert.ok(def.status === 200 || def.status === 201, JSON.stringify(def.body));
  for (const name of ['s1', 's2', 's3']) await registerInstance(control, 'shard', name, await backend(name));
  proxy = await startProxy({ control, workloads: ['name=client,outbound=127.0.0.1:0'] });
  cleanups.push(() => proxy.stop());
  out = (proxy.workload('client').outbound as { port: number }).port;
  await waitForProxyReady(proxy);
});

after(async () => {
  agent.destroy();
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

test('ring hash on a header: one key always reaches the same instance, keys spread over all', async () => {
  // The first request makes the proxy build the service's balancer from its resource.
  await waitFor(async () => (await servedBy({ 'x-user': 'warm-up' })) !== '' && (await balancerOf('ring-hash')), { timeoutMs: 10_000, what: 'a ring-hash balancer over 3 endpoints' });
  const owners = new Map<string, string>();
  for (let k = 0; k < 60; k++) owners.set(`user-${k}`, await servedBy({ 'x-user': `user-${k}` }));
  for (let round = 0; round < 3; round++) {
    for (const [key, owner] of owners) assert.equal(await servedBy({ 'x-user': key }), owner, `${key} stays on ${owner}`);
  }
  assert.equal(new Set(owners.values()).size, 3, `60 keys spread over the 3 instances: ${JSON.stringify([...owners])}`);
});

test('a changed Service resource changes the balancer: round robin then cycles over the instances', async () => {
  const def = await api(control, 'PUT', '/v1/services/shard', { balancer: { kind: 'round-robin' } });
  assert.equal(def.status, 200, JSON.stringify(def.body));
  await waitFor(() => balancerOf('round-robin'), { timeoutMs: 10_000, what: 'the proxy to switch to round robin' });
  const seen: string[] = [];
  for (let i = 0; i < 9; i++) seen.push(await servedBy({ 'x-user': 'same-key' }));
  // Round robin ignores the key: every window of 3 consecutive requests visits all 3 instances.
  for (let i = 0; i + 3 <= seen.length; i++) assert.equal(new Set(seen.slice(i, i + 3)).size, 3, `round robin: ${seen.join(',')}`);
});
