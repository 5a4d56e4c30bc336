/**
 * `skein up FILE --workers 2` as a child process: the mesh's proxy as two worker threads on the
 * same listeners (SO_REUSEPORT), with mTLS on (skein up's default). A one-service mesh (the
 * rollout fixture app) on ports from the OS: requests through the outbound listener by service
 * name cross both workers' outbound and the replicas' inbound listeners over mTLS; /metrics and
 * /stats on the one admin server sum the workers; one proxy is announced; `skein scale` up and
 * down adds and removes the replicas' inbound listeners in both workers under a steady load; and
 * a TLS session made with one worker resumes on the other (the workers share the main thread's
 * session-ticket keys).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { ROOT, api, skein, waitFor } from './helpers.js';
import { upFromText, portOf, type MeshUnderTest } from './mesh-helpers.js';
import { httpGet, Load, meshTlsRequest, metricValue, mintJoinToken, type MeshTlsExchange } from './proxy-helpers.js';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';

const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');
const MESH = [
  'kind: Mesh',
  'name: up-workers',
  'services:',
  '  web:',
  '    command: node',
  `    args: [${JSON.stringify(APP)}]`,
  '    env: { APP_VERSION: v1 }',
  '    version: v1',
  '    replicas: 1',
  '    readiness: { type: http, path: /health, interval: 100ms, deadline: 2s }',
  '',
].join('\n');

interface ListenerRow {
  workload: string;
  direction: 'inbound' | 'outbound';
  open: number;
  accepted: number;
}
interface WorkerRow {
  worker: number;
  connectionsAccepted: number;
  requests: number;
  listeners: ListenerRow[];
}

let mesh: MeshUnderTest;
let admin: string;
let outboundPort: number;

before(async () => {
  mesh = await upFromText('skein-up-workers-', MESH, ['--outbound', '127.0.0.1:0', '--workers', '2']);
  assert.ok(mesh.up.stdout.some((l) => l.includes('proxy: 2 worker threads')), mesh.up.logs());
  admin = `http://${mesh.up.admin as string}`;
  outboundPort = portOf(mesh.up.outbound as string);
});

after(async () => {
  await mesh?.stop();
});

async function workers(): Promise<WorkerRow[]> {
  const r = await api(admin, 'GET', '/debug/endpoints');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.workers as WorkerRow[];
}

/** Connections each worker accepted on `workload`'s `direction` listener (null: a worker has no such listener). */
const acceptedOn = (rows: WorkerRow[], workload: string, direction: 'inbound' | 'outbound') => rows.map((w) => w.listeners.find((l) => l.workload === workload && l.direction === direction)?.accepted ?? null);

/** The inbound address of each replica, as the proxy's workloads say (worker 0's view). */
async function inboundPorts(): Promise<Map<string, number>> {
  const r = await api(admin, 'GET', '/debug/endpoints');
  const ws = r.body.workloads as Array<{ name: string; service: string; inbound: string | null }>;
  return new Map(ws.filter((w) => w.service === 'web' && w.inbound !== null).map((w) => [w.name, portOf(w.inbound as string)]));
}

/**
 * The control plane's announced proxies once the one proxy announces exactly `names` (sorted). A
 * change of workloads is announced within a second, not at the 10 s renewal: 4 s is allowed.
 */
type Announced = Array<{ id: string; admin: string; workloads: Array<{ name: string }> }>;
async function announced(names: string[]): Promise<Announced> {
  let last: unknown;
  const found = await waitFor(
    async () => {
      const proxies = (await api(mesh.up.control, 'GET', '/v1/proxies')).body.proxies as Announced;
      last = proxies.map((p) => ({ id: p.id, workloads: p.workloads.map((w) => w.name).sort() }));
      return proxies.length === 1 && JSON.stringify(proxies[0]!.workloads.map((w) => w.name).sort()) === JSON.stringify(names) ? proxies : null;
    },
    { timeoutMs: 4000, what: `the proxy to announce ${names.join(', ')}` },
  ).catch((e: Error) => assert.fail(`${e.message}; announced: ${JSON.stringify(last)}`));
  return found as Announced;
}

const refused = (port: number) =>
  new Promise<string>((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });

describe('skein up --workers 2', () => {
  test('40 requests by service name on fresh connections: all 200 over mTLS, both workers took some; /metrics and /stats sum them; one proxy announced', async () => {
    const before = await workers();
    assert.deepEqual(before.map((w) => w.worker), [0, 1], 'two workers reported');
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => httpGet(outboundPort, `/n/${i}`, { agent: new http.Agent({ keepAlive: false }), headers: { host: 'web' } })));
    assert.deepEqual([...new Set(answers.map((a) => a.status))], [200], answers.find((a) => a.status !== 200)?.body);
    assert.deepEqual([...new Set(answers.map((a) => JSON.parse(a.body).id))], ['web-1']);

    const rows = await workers();
    const took = acceptedOn(rows, 'local', 'outbound').map((n, i) => (n as number) - (acceptedOn(before, 'local', 'outbound')[i] as number));
    assert.equal(took[0]! + took[1]!, 40, `the outbound's connections per worker: ${took.join(' / ')}`);
    assert.ok(took[0]! > 0 && took[1]! > 0, `both workers took connections: ${took.join(' / ')}`);

    const text = await (await fetch(`${admin}/metrics`)).text();
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { direction: 'outbound', workload: 'local', service: 'web', status: '200' }), 40, '/metrics sums the workers\' outbound requests');
    assert.equal(metricValue(text, 'skein_proxy_requests_total', { direction: 'inbound', workload: 'web-1', service: 'web', status: '200' }), 40, '...and their inbound ones');
    // Every connection the replica's inbound listeners accepted (in either worker) was mTLS.
    const inbound = acceptedOn(rows, 'web-1', 'inbound') as number[];
    assert.ok(inbound[0]! + inbound[1]! >= 1);
    assert.equal(metricValue(text, 'skein_proxy_inbound_connections_total', { kind: 'mtls' }), inbound[0]! + inbound[1]!, `inbound connections per worker ${inbound.join(' / ')}, every one mTLS`);
    assert.equal(metricValue(text, 'skein_proxy_inbound_connections_total', { kind: 'plaintext' }) ?? 0, 0);

    const stats = await api(admin, 'GET', '/stats');
    const series = (stats.body.series as Array<{ service: string; direction: string; workload: string; requests: number; mtls: number; statuses: Record<string, number> }>).filter((s) => s.service === 'web' && s.direction === 'inbound');
    assert.equal(series.length, 1, `one inbound series, summed over the workers: ${JSON.stringify(series)}`);
    assert.equal(series[0]!.requests, 40);
    assert.equal(series[0]!.mtls, 40, 'every inbound request came over mTLS');
    assert.deepEqual(series[0]!.statuses, { '200': 40 });

    const proxies = await announced(['local', 'web', 'web-1', 'web-service-port']);
    assert.equal(proxies.length, 1, `one announced proxy: ${JSON.stringify(proxies.map((p) => p.id))}`);
    assert.equal(proxies[0]!.admin, mesh.up.admin);
  });

  test('a TLS session made with one worker resumes on the other (shared session-ticket keys)', async () => {
    const port = (await inboundPorts()).get('web-1') as number;
    // A mesh identity of our own, from the mesh's CA (a join token minted with the admin token).
    const kp = await generateKeyPair();
    const token = await mintJoinToken(mesh.up.control, 'resumption-test', ['web']);
    const issued = await api(mesh.up.control, 'POST', '/v1/ca/certificates', { service: 'web', csr: await createCsr(kp.privateKeyPem) }, { authorization: `Bearer ${token}` });
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const client = { key: kp.privateKeyPem, cert: [issued.body.certificate, ...issued.body.chain].join(''), roots: issued.body.roots as string[] };

    const before = acceptedOn(await workers(), 'web-1', 'inbound') as number[];
    const first = await meshTlsRequest(port, client, { host: 'web', path: '/resume' });
    assert.equal(first.status, 200);
    assert.equal(first.reused, false);
    assert.ok(first.session !== undefined, 'the server sent a session ticket');
    const again: MeshTlsExchange[] = [];
    for (let i = 0; i < 24; i++) again.push(await meshTlsRequest(port, client, { host: 'web', path: '/resume', session: first.session }));
    const took = (acceptedOn(await workers(), 'web-1', 'inbound') as number[]).map((n, i) => n - before[i]!);
    assert.equal(took[0]! + took[1]!, 25, `the replica's inbound connections per worker: ${took.join(' / ')}`);
    assert.ok(took[0]! > 0 && took[1]! > 0, `the kernel gave both workers some of the 25 connections: ${took.join(' / ')}`);
    assert.deepEqual(again.map((e) => e.status), again.map(() => 200));
    assert.deepEqual(again.map((e) => e.reused), again.map(() => true), `every later connection resumed the first one's session, whichever worker took it (workers ${took.join(' / ')})`);
  });

  test('skein scale web 3, then 1, under a steady load: both workers add and remove the inbound listeners; no request fails; a removed replica\'s port refuses', async () => {
    const load = new Load(outboundPort, '/scale', 4, (b: { id?: string }) => b?.id, { host: 'web' });
    try {
      await load.more(50);
      const up = await skein(['scale', 'web', '3', '-c', mesh.up.control], { timeoutMs: 60_000 });
      assert.equal(up.code, 0, up.stderr);
      let rows = await workers();
      for (const w of rows) {
        assert.deepEqual(w.listeners.filter((l) => l.direction === 'inbound').map((l) => l.workload).sort(), ['web-1', 'web-2', 'web-3'], `worker ${w.worker}'s inbound listeners`);
      }
      const ports = await inboundPorts();
      assert.equal(ports.size, 3);
      await announced(['local', 'web', 'web-1', 'web-2', 'web-3', 'web-service-port']);
      await waitFor(() => (load.servedBy.get('web-3') ?? 0) > 0 && (load.servedBy.get('web-2') ?? 0) > 0, { what: `the new replicas to serve: ${load.report()}`, timeoutMs: 20_000 });

      const down = await skein(['scale', 'web', '1', '-c', mesh.up.control], { timeoutMs: 60_000 });
      assert.equal(down.code, 0, down.stderr);
      await waitFor(async () => (await workers()).every((w) => w.listeners.filter((l) => l.direction === 'inbound').length === 1), { what: 'both workers to close the removed replicas\' listeners', timeoutMs: 30_000 });
      rows = await workers();
      const kept = rows.map((w) => w.listeners.filter((l) => l.direction === 'inbound').map((l) => l.workload));
      assert.deepEqual(kept[0], kept[1], 'both workers keep the same replica');
      const gone = [...ports].filter(([name]) => name !== kept[0]![0]);
      assert.equal(gone.length, 2);
      for (const [name, port] of gone) assert.equal(await refused(port), 'ECONNREFUSED', `${name}'s inbound port ${port} after the scale down`);
      await load.more(50);
    } finally {
      await load.stop();
    }
    assert.equal(load.failures.length, 0, load.report());
    assert.ok(load.ok >= 100, load.report());
  });
});


describe('skein up --workers values', () => {
  for (const value of ['0', 'x', '65']) {
    test(`--workers ${value}: refused before anything starts, naming the flag (the parser of skein proxy --workers)`, async () => {
      const r = await skein(['up', join(ROOT, 'examples', 'shop', 'shop.yaml'), '--http', '127.0.0.1:0', '--dns', 'off', '--workers', value], { timeoutMs: 15_000 });
      assert.equal(r.code, 2, `a usage error: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /SKEIN_E_USAGE/);
      assert.match(lines[0]!, new RegExp(`--workers must be "auto" or a whole number from 1 to 64, got "${value}"`));
      assert.equal(r.stdout, '', 'nothing started');
    });
  }
});
