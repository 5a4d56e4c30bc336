/**
 * The conformance suite (issue 17): the one table of test/conformance.ts run against both data
 * planes, the proxy (`skein proxy`, a child process: requests to its outbound listener with the
 * service as Host) and the SDK (createMeshDispatcher in this process: undici requests to
 * `http://<service>/...`), against one real `skein control` and real HTTP backends. Each scenario
 * runs on the proxy, then on the SDK, on the same service (its definition put again before each
 * run); both outcomes must be equal, and equal to the scenario's expectation when it has one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { request, type Dispatcher } from 'undici';
import { api, closedPort, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { registerInstance, startProxy, waitForProxyReady, type HostPort, type ProxyProcess } from './proxy-helpers.js';
import { SCENARIOS, startBackend, type Backend, type Plane, type Reply, type Scenario, type SendOptions } from './conformance.js';
import { createMeshDispatcher, type MeshDispatcher } from '../src/sdk/index.js';

async function reply(res: Dispatcher.ResponseData, t0: number): Promise<Reply> {
  const body = await res.body.text();
  const h = res.headers;
  const one = (n: string) => {
    const v = h[n];
    return v === undefined ? null : Array.isArray(v) ? (v[0] ?? null) : v;
  };
  return {
    status: res.statusCode,
    error: one('x-skein-error'),
    backend: one('x-backend'),
    attempt: Number(one('x-attempt') ?? 0),
    explain: one('x-skein-explain'),
    retryAfter: one('retry-after'),
    body,
    ms: performance.now() - t0,
  };
}

const methodOf = (o: SendOptions) => (o.method ?? 'GET') as Dispatcher.HttpMethod;

function proxyPlane(p: ProxyProcess, outbound: number): Plane {
  return {
    name: 'proxy',
    async send(service, path, o = {}) {
      const t0 = performance.now();
      const res = await request(`http://127.0.0.1:${outbound}${path}`, { method: methodOf(o), headers: { ...o.headers, host: service }, body: o.body ?? null });
      return reply(res, t0);
    },
    async sees(service, endpoints, kind) {
      await waitFor(
        async () => {
          const d = (await api(p.admin, 'GET', '/debug/endpoints')).body as { services?: Record<string, { balancer?: { kind?: string }; endpoints: unknown[] }> };
          const s = d.services?.[service];
          return s !== undefined && s.balancer?.kind === kind && s.endpoints.length === endpoints;
        },
        { timeoutMs: 10_000, what: `the proxy to see ${service} (${endpoints} endpoints, ${kind})` },
      );
    },
  };
}

function sdkPlane(d: MeshDispatcher): Plane {
  return {
    name: 'sdk',
    async send(service, path, o = {}) {
      const t0 = performance.now();
      const res = await request(`http://${service}${path}`, { dispatcher: d, method: methodOf(o), headers: o.headers ?? {}, body: o.body ?? null });
      return reply(res, t0);
    },
    async sees(service, endpoints, kind) {
      await waitFor(() => d.mesh.watch.definition(service)?.balancer.kind === kind && d.mesh.endpoints(service).size === endpoints, {
        timeoutMs: 10_000,
        what: `the SDK to see ${service} (${endpoints} endpoints, ${kind})`,
      });
    },
  };
}

describe('conformance: the proxy and the SDK answer alike', () => {
  let control: ControlProcess;
  let dir: { remove(): Promise<void> };
  let proxy: ProxyProcess;
  let sdk: MeshDispatcher;
  let planes: Plane[];
  let controlStopped = false;
  const backends: Backend[] = [];

  before(async () => {
    const d = await tempDir('skein-conformance-');
    dir = d;
    control = await startControl({ dataDir: d.path, args: ['--dns', 'off'] });
    proxy = await startProxy({ control: control.http, workloads: ['name=client,outbound=127.0.0.1:0'] });
    await waitForProxyReady(proxy);
    sdk = createMeshDispatcher({ control: control.http, service: 'client' });
    await sdk.ready();
    planes = [proxyPlane(proxy, (proxy.workload('client').outbound as HostPort).port), sdkPlane(sdk)];
  });

  after(async () => {
    await sdk?.close();
    await proxy?.stop();
    if (!controlStopped) await control?.stop();
    for (const b of backends) await b.close();
    await dir?.remove();
  });

  const slug = (s: Scenario, i: number) => `c${i}-${s.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 40).replace(/-+$/, '')}`;

  SCENARIOS.forEach((s, i) => {
    test(s.name, async () => {
      const service = slug(s, i);
      const bs: Backend[] = [];
      const kinds = s.policy as { balancer?: { kind?: string } };
      const kind = kinds.balancer?.kind ?? 'peak-ewma';
      const define = async (policy: object) => {
        const r = await api(control.http, 'PUT', `/v1/services/${service}`, policy);
        assert.ok(r.status === 200 || r.status === 201, `PUT /v1/services/${service}: ${r.status} ${JSON.stringify(r.body)}`);
      };
      await define(s.policy);
      const version = (id: string) => /^(v\d+)-/.exec(id)?.[1];
      const register = async (id: string) => {
        const b = bs.find((x) => x.id === id);
        assert.ok(b !== undefined, `no backend ${id}`);
        const v = version(id);
        await registerInstance(control.http, service, id, b.port, v === undefined ? {} : { version: v });
      };
      const deregister = async (id: string) => {
        const r = await api(control.http, 'DELETE', `/v1/services/${service}/instances/${id}`);
        assert.ok(r.status === 200 || r.status === 204, `DELETE instance ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      };
      for (const id of s.backends) {
        if (id === 'closed') {
          await registerInstance(control.http, service, id, await closedPort());
          continue;
        }
        const b = await startBackend(id);
        bs.push(b);
        backends.push(b);
        if (s.registered !== false) await register(id);
      }
      const outcomes: Record<string, unknown> = {};
      const stopControl = async () => {
        if (controlStopped) return;
        controlStopped = true;
        await control.stop();
      };
      const registered = s.registered === false ? 0 : s.backends.length;
      if (s.last === true) for (const p of planes) await p.sees(service, registered, kind);
      for (const plane of planes) {
        for (const b of bs) {
          b.down = false;
          b.hang = false;
          b.unhealthy = false;
          b.hits = 0;
        }
        if (s.last !== true) {
          await define(s.policy);
          await plane.sees(service, registered, kind);
        }
        outcomes[plane.name] = await s.run({ plane, service, backends: bs, define, register, deregister, stopControl });
      }
      assert.deepEqual(outcomes['sdk'], outcomes['proxy'], `the SDK and the proxy differ:\nproxy: ${JSON.stringify(outcomes['proxy'])}\nsdk:   ${JSON.stringify(outcomes['sdk'])}`);
      if (s.expect !== undefined) assert.deepEqual(outcomes['proxy'], s.expect, `both planes, not what the scenario expects: ${JSON.stringify(outcomes['proxy'])}`);
    });
  });
});
