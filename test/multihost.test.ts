/**
 * A mesh across hosts (issue 15 §3), on one machine: network namespaces joined by a bridge
 * (test/netns.ts). Hosts e1..e3 run the etcd members, cp1..cp3 the `skein control --store etcd`
 * replicas (cp<i> reaching e<i> first); w1 runs the shop's frontend and user-service, w2 its
 * product-service, each with `skein up FILE --join` (no control plane of their own); w3 runs a
 * standalone `skein proxy --state-dir` (mTLS strict, given cp3 first) with an outbound listener
 * only, a second way in to the shop. The test process is the operator and the load generator, on
 * the bridge: it calls the frontend through w1's outbound listener and through w3's, and every page
 * calls product-service on w2 through the hosts' proxies (mTLS between them); DNS of any replica
 * answers with the host's address. A ledger writer registers an instance every 100 ms through the
 * replicas in turn, the whole time, and keeps the acknowledged ones. The proxies' /debug
 * endpoints answer their own host only: the test reads them from inside the host (curl in the
 * namespace; w3's admin servers on its loopback, w1's and w2's on the host's address).
 *
 * Under steady paced load, in order:
 * - kill -9 the etcd leader: writes resume (the time is reported: the issue's bound is 3 s); no page fails;
 * - partition a minority etcd member (e3 cut from e1 and e2): the watch of the replica on it ends
 *   and resumes on another member: that replica sees every write made meanwhile; no page fails;
 * - kill -9 the control-plane replica the workload hosts use: they move to another; no page
 *   fails, and the instances stay healthy past their TTL (heartbeats go on);
 * - every control-plane replica down for 60 s (the issue's figure): no page fails; w3's proxy is
 *   killed (-9) and started again meanwhile, serves from its state file (its log and /ready say
 *   so), and no page through it fails but while it was down (counted apart); back up, it goes live
 *   again and the hosts report again;
 * - a compaction during a watch outage: cp3 cut off from every etcd member (every proxy's watch
 *   stream is on it; a second proxy on w3 is given cp3 alone); instances of a probe service
 *   registered, changed and deregistered through cp1, etcd compacted past them; cp3 meanwhile
 *   answers reads from its last view and writes with 503, and once cut off for 5 s ends its watch
 *   streams and refuses new ones (the proxies move on; the pinned one keeps its last view);
 *   healed, cp3 re-reads the store and its watchers get a fresh snapshot. Then every proxy's view
 *   (w1's, w2's and w3's two /debug/endpoints) against the store's: the probe service and the
 *   shop exactly, every ledger instance up to the compaction;
 * - partition w2: its instances leave the endpoint sets once the heartbeats' lease runs out (the time
 *   is reported: the issue's bound is TTL + 2 s; w1's
 *   frontend then gets SKEIN_E_NO_HEALTHY_ENDPOINT for product calls, passed on in its 502);
 *   when the link returns they come back without a restart;
 * - no acknowledged write of the ledger is lost (the ledger ran through every step above).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { ROOT, SKEIN_BIN, run, tempDir, waitFor } from './helpers.js';
import { Topology } from './netns.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';

const SHOP = join(ROOT, 'examples', 'shop');
const TTL_MS = 3000;
const PAGE = '/api/page?user_id=1&product_id=2';
/** The issue's "every control-plane replica down for 60 s". */
const ALL_REPLICAS_DOWN_MS = 60_000;
/** The admin server of w3's standalone proxy, on the host's own loopback (read with curl inside the host). */
const HOST_ADMIN = '127.0.0.1:4191';
/** The admin server of w3's second proxy, the one given cp3 only. */
const PINNED_ADMIN = '127.0.0.1:4192';
/** The probe service of the compaction step: registered, changed and deregistered while cp3 is cut off. */
const PROBE = 'compaction-probe';
/**
 * Why the views after the compaction are a known failure: a replica that re-reads the store after a
 * compaction (Registry.reset) emits the difference with each key's own revision, in key order, and
 * its removals at the listing's revision; a watcher drops every diff at or below the last revision
 * it applied (WatchState.apply), so the proxies whose watch is on that replica miss changes and keep
 * removed instances. Every proxy here is (their streams stay on cp3 while it answers their pings,
 * even those whose replica list moved on). Remove this once the publisher sends its subscribers a
 * snapshot after a reset.
 */

/** A skein process inside a host: its logs, ready once `ready(line)` says so. */
interface HostProcess {
  readonly child: ChildProcess;
  readonly logs: string[];
}

async function startIn(net: Topology, host: string, args: string[], ready: (line: string) => boolean, env: NodeJS.ProcessEnv = {}): Promise<HostProcess> {
  const child = net.spawn(host, process.execPath, [SKEIN_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const logs: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const onLine = (line: string) => {
      logs.push(line);
      if (ready(line)) resolve();
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', onLine);
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => logs.push(l));
    child.once('exit', (code) => reject(new Error(`skein ${args[0]} in ${host} exited with ${code} before it was ready:\n${logs.slice(-30).join('\n')}`)));
    setTimeout(() => reject(new Error(`skein ${args[0]} in ${host} not ready within 60 s:\n${logs.slice(-30).join('\n')}`)), 60_000).unref();
  });
  return { child, logs };
}

/** GET `path` of `service` through an outbound proxy at host:port; the status and the body. */
function viaProxy(host: string, port: number, service: string, path: string, agent: http.Agent): Promise<{ status: number; body: string; error: string | null }> {
  return new Promise((resolve) => {
    const req = http.request({ host, port, method: 'GET', path: `http://${service}${path}`, agent, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, error: typeof res.headers['x-skein-error'] === 'string' ? res.headers['x-skein-error'] : null }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: e.message, error: 'connection' }));
    req.end();
  });
}

/** A span of time (performance.now()) in which a proxy was down: pages that overlap it are counted apart. */
interface Window {
  from: number;
  to: number;
}

/** Paced pages through an outbound listener, every result kept (when it was sent, when it ended). */
class Load {
  readonly results: Array<{ sent: number; at: number; status: number; error: string | null }> = [];
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

  constructor(host: string, port: number, perSecond: number) {
    const gap = 1000 / perSecond;
    this.done = (async () => {
      const inflight = new Set<Promise<void>>();
      let next = performance.now();
      while (!this.stopped) {
        const sent = performance.now();
        const p = viaProxy(host, port, 'frontend', PAGE, this.agent).then((r) => {
          this.results.push({ sent, at: performance.now(), status: r.status, error: r.error });
          inflight.delete(p);
        });
        inflight.add(p);
        next += gap;
        await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
      }
      await Promise.all(inflight);
    })();
  }

  /** Pages that did not get a 200 since `from`, but those that overlap one of the `down` windows. */
  failures(from = 0, down: readonly Window[] = []): Array<{ status: number; error: string | null }> {
    return this.results.filter((r) => r.at >= from && r.status !== 200 && !overlaps(r, down)).map((r) => ({ status: r.status, error: r.error }));
  }

  /** The pages that overlap one of the `down` windows: how many, and how many of them failed. */
  during(down: readonly Window[]): { pages: number; failed: number } {
    const in_ = this.results.filter((r) => overlaps(r, down));
    return { pages: in_.length, failed: in_.filter((r) => r.status !== 200).length };
  }

  /** Pages answered 200 that were sent at or after `from`. */
  okSince(from: number): number {
    return this.results.filter((r) => r.sent >= from && r.status === 200).length;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    this.agent.destroy();
  }
}

const overlaps = (r: { sent: number; at: number }, down: readonly Window[]) => down.some((w) => r.sent <= w.to && r.at >= w.from);

const meshFile = (services: string[]) =>
  [
    'kind: Mesh',
    'name: shop',
    'services:',
    ...services.flatMap((s) => {
      const [cmd, script] = s === 'frontend' ? ['node', 'frontend.mjs'] : ['python3', `${s.replace('-', '_')}.py`];
      return [
        `  ${s}:`,
        `    command: ${cmd}`,
        `    args: [${JSON.stringify(join(SHOP, script as string))}]`,
        `    cwd: ${JSON.stringify(SHOP)}`,
        '    env: { PYTHONUNBUFFERED: "1" }',
        '    replicas: 1',
        '    readiness: { type: http, path: /health, interval: 100ms }',
      ];
    }),
    '',
  ].join('\n');

describe('a mesh across hosts: etcd on e1..e3, the control plane on cp1..cp3, the shop on w1 and w2, a standalone proxy on w3', { concurrency: false }, () => {
  let net: Topology;
  let dir: { path: string; remove: () => Promise<void> };
  let etcd: EtcdCluster;
  const controls: Array<HostProcess | null> = [null, null, null];
  let load: Load | null = null;
  /** Pages through w3's standalone proxy, and the windows in which that proxy was down (killed, starting). */
  let loadW3: Load | null = null;
  const w3Down: Window[] = [];
  let w3: HostProcess | null = null;
  let w3JoinToken = '';
  let pinned: HostProcess | null = null;
  /** The `skein up --join` processes of w1 and w2 (their logs). */
  const ups: Record<string, HostProcess> = {};
  /** What the compaction step leaves for the next test: the compacted revision and the proxies to read. */
  let compaction: { revision: number; proxies: Array<{ name: string; host: string; at: string }> } | null = null;
  const es = ['e1', 'e2', 'e3'];
  const cps = ['cp1', 'cp2', 'cp3'];
  const control = (i: number) => `http://${net.address(cps[i] as string)}:7400`;
  const controlUrls = () => cps.map((_, i) => control(i)).join(',');
  let admin = '';
  let outbound = { host: '', port: 0 };
  const auth = () => ({ authorization: `Bearer ${admin}` });
  const readyLine = (l: string) => l.includes('"control plane ready"');
  // cp<i> reaches its own member first (its watch lives there).
  const controlArgs = (i: number) => {
    const order = [i, ...[0, 1, 2].filter((j) => j !== i)].map((j) => etcd.endpoints[j]);
    return ['control', '--store', 'etcd', '--etcd', order.join(','), '--replica', cps[i] as string, '--data-dir', join(dir.path, cps[i] as string), '--http', `${net.address(cps[i] as string)}:7400`, '--insecure-listen', '--dns', `${net.address(cps[i] as string)}:8600`];
  };
  const startControlIn = async (i: number) => {
    controls[i] = await startIn(net, cps[i] as string, controlArgs(i), readyLine);
  };
  const kill9 = async (c: HostProcess | null) => {
    if (c === null || c.child.exitCode !== null || c.child.signalCode !== null) return;
    const gone = new Promise((r) => c.child.once('exit', r));
    c.child.kill('SIGKILL');
    await gone;
  };
  const killControl = async (i: number) => {
    const c = controls[i] ?? null;
    controls[i] = null;
    await kill9(c);
  };
  /**
   * w3's proxy: outbound only, mTLS strict (a join token for the identity "loadgen"; a restart is
   * given the spent token again and takes its certificates from the state), its state in
   * w3-state, cp3 first: the replica cut off from etcd in the compaction step.
   */
  const w3StateDir = () => join(dir.path, 'w3-state');
  const startW3 = async () => {
    const order = [2, 0, 1].map((i) => control(i)).join(',');
    w3 = await startIn(
      net,
      'w3',
      ['proxy', '--control', order, '--state-dir', w3StateDir(), '--workload', `name=loadgen,outbound=${net.address('w3')}:4140`, '--admin', HOST_ADMIN, '--mtls', 'strict', '--join-token', w3JoinToken, '--id', 'w3', '--log-level', 'info'],
      (l) => l.includes('"proxy ready"'),
      { SKEIN_TOKEN: admin },
    );
  };
  /** GET `path` of a host's proxy admin server (on the host's loopback), from inside the host. */
  const hostAdmin = async (host: string, path: string, at = HOST_ADMIN): Promise<{ status: number; body: Record<string, any> }> => {
    const r = await net.exec(host, 'curl', ['-sS', '--max-time', '5', '-w', '\n%{http_code}', `http://${at}${path}`], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`curl ${path} in ${host}: exit ${r.code}: ${r.stderr.trim()}`);
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)), body: JSON.parse(r.stdout.slice(0, cut)) as Record<string, any> };
  };
  const debugOf = async (host: string, at = HOST_ADMIN) =>
    (await hostAdmin(host, '/debug/endpoints', at)).body as {
      control: { url: string; connected: boolean; status: string; revision: number | null; stateSavedAt: string | null };
      services: Record<string, { endpoints: Array<{ id: string; address: string; port: number }> } | undefined>;
    };
  /** No page failed through w1, and none through w3 but while its proxy was down. */
  const noPageFailed = () => {
    assert.deepEqual(load!.failures(), [], 'no page through w1 failed');
    assert.deepEqual(loadW3!.failures(0, w3Down), [], 'no page through w3 failed (but while its proxy was down)');
  };
  const get = async (i: number, path: string) => (await fetch(`${control(i)}${path}`, { headers: auth(), signal: AbortSignal.timeout(5000) })).json() as Promise<Record<string, any>>;
  const healthy = async (i: number, service: string) => ((await get(i, `/v1/services/${service}/instances`)).instances as unknown[] | undefined)?.length ?? 0;

  /** The ledger: an instance registered every 100 ms through the replicas in turn; the acknowledged ones. */
  const acked: string[] = [];
  let ledgerStop = false;
  let ledger: Promise<void> = Promise.resolve();
  const runLedger = () => {
    ledger = (async () => {
      for (let n = 0; !ledgerStop; n++) {
        const id = `n${n}`;
        const res = await fetch(`${control(n % 3)}/v1/services/ledger/instances/${id}`, { method: 'PUT', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ address: '10.0.0.9', port: 1 + (n % 60000) }), signal: AbortSignal.timeout(5000) }).catch(() => null);
        if (res?.status === 201) acked.push(id);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  };

  before(async () => {
    // Each test says why it does not run (Topology.usable); without namespaces there is nothing to set up.
    if (Topology.available() !== null) return;
    net = await Topology.create({ hosts: [...es, ...cps, 'w1', 'w2', 'w3'] });
    dir = await tempDir('skein-multihost-');
    etcd = await startEtcdCluster({ members: 3, dir: dir.path, placement: { address: (i) => net.address(es[i] as string), spawn: (i, cmd, args, opts) => net.spawn(es[i] as string, cmd, args, opts) } });
    // The first replica makes the mesh's CA and admin token; the others get a copy of the token.
    await startControlIn(0);
    for (const i of [1, 2]) {
      await mkdir(join(dir.path, cps[i] as string), { recursive: true });
      await copyFile(join(dir.path, 'cp1', 'admin.token'), join(dir.path, cps[i] as string, 'admin.token'));
      await startControlIn(i);
    }
    admin = (await readFile(join(dir.path, 'cp1', 'admin.token'), 'utf8')).trim();
    const up = async (host: string, services: string[]) => {
      const file = join(dir.path, `${host}.yaml`);
      await writeFile(file, meshFile(services));
      const addr = net.address(host);
      return startIn(net, host, ['up', file, '--join', controlUrls(), '--advertise', addr, '--outbound', `${addr}:4140`, '--heartbeat-ttl', `${TTL_MS}ms`, '--log-level', 'warn'], (l) => l.includes('mesh is up'), { SKEIN_TOKEN: admin });
    };
    ups['w2'] = await up('w2', ['product-service']);
    ups['w1'] = await up('w1', ['user-service', 'frontend']);
    outbound = { host: net.address('w1'), port: 4140 };
    const minted = await fetch(`${control(0)}/v1/ca/tokens`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ proxy: 'w3', services: ['loadgen'] }) });
    assert.equal(minted.status, 201, 'a join token for w3\'s proxy');
    w3JoinToken = ((await minted.json()) as { token: string }).token;
    await startW3();
    // A second proxy on w3, given cp3 alone: it cannot move off cp3 (the compaction step needs a
    // proxy that stays on the replica cut off from etcd). Outbound only, on w3's loopback.
    pinned = await startIn(net, 'w3', ['proxy', '--control', control(2), '--workload', 'name=pinned,outbound=127.0.0.1:4141', '--admin', PINNED_ADMIN, '--mtls', 'off', '--id', 'w3-pinned', '--log-level', 'info'], (l) => l.includes('"proxy ready"'), { SKEIN_TOKEN: admin });
    runLedger();
  });

  after(async () => {
    ledgerStop = true;
    await ledger;
    await load?.stop();
    await loadW3?.stop();
    await net?.close();
    await etcd?.close();
    await dir?.remove();
  });

  test('a page on w1 is answered with product-service on w2, through both hosts\' proxies', async (t) => {
    if (!Topology.usable(t)) return;
    const agent = new http.Agent();
    const r = await waitFor(async () => {
      const x = await viaProxy(outbound.host, outbound.port, 'frontend', PAGE, agent);
      return x.status === 200 ? x : null;
    }, { timeoutMs: 20_000, what: 'a page through w1' });
    const page = JSON.parse((r as { body: string }).body) as { served_by: { frontend: string; user: string; product: string; reviews: string | null } };
    // The hosts run no reviews service: the frontend's gRPC call fails and the page goes on without it.
    assert.deepEqual(page.served_by, { frontend: 'frontend-1', user: 'user-service-1', product: 'product-service-1', reviews: null });
    // The registry says where product-service runs: w2's address.
    const inst = (await get(1, '/v1/services/product-service/instances')) as { instances: Array<{ address: string; status: string }> };
    assert.deepEqual(inst.instances.map((i) => [i.address, i.status]), [[net.address('w2'), 'healthy']]);
    // DNS of any replica answers with the host's address.
    const dig = await run('dig', ['+short', '+time=2', '-p', '8600', `@${net.address('cp3')}`, 'product-service.service.skein', 'A']);
    assert.equal(dig.stdout.trim(), net.address('w2'));
    // The same page through w3's standalone proxy (mTLS to w1's inbound with its "loadgen" identity).
    const viaW3 = await waitFor(async () => {
      const x = await viaProxy(net.address('w3'), 4140, 'frontend', PAGE, agent);
      return x.status === 200 ? x : null;
    }, { timeoutMs: 20_000, what: 'a page through w3' });
    assert.deepEqual((JSON.parse(viaW3!.body) as { served_by: unknown }).served_by, page.served_by);
    assert.equal((await debugOf('w3')).control.url, control(2), 'w3\'s proxy watches cp3, the first replica it was given');
    agent.destroy();
    load = new Load(outbound.host, outbound.port, 20);
    loadW3 = new Load(net.address('w3'), 4140, 10);
  });

  test('the elected replica scrapes every host\'s proxy; any replica answers the golden signals; other hosts get an admin server\'s metrics, not its taps', async (t) => {
    if (!Topology.usable(t)) return;
    const leaders = await Promise.all([0, 1, 2].map(async (i) => ((await get(i, '/v1/health')).etcd as { leader: boolean }).leader));
    assert.equal(leaders.filter(Boolean).length, 1, `one leader: ${JSON.stringify(leaders)}`);
    const leader = leaders.indexOf(true);
    const follower = (leader + 1) % 3;
    // product-service (on w2) as w2's proxy saw it, and the frontend -> product-service edge as w1's saw it.
    type Sig = { requests?: number; instances?: Array<{ id: string; address: string; requests: number }>; edges?: Array<{ source: string; destination: string; requests: number }> };
    let servedBy: string | null = null;
    const sig = (await waitFor(async () => {
      const r = await fetch(`${control(follower)}/v1/signals/services/product-service?window=15m`, { headers: auth(), signal: AbortSignal.timeout(5000) });
      servedBy = r.headers.get('x-skein-served-by');
      const body = (await r.json()) as Sig;
      const edge = body.edges?.find((e) => e.source === 'frontend' && e.destination === 'product-service');
      return r.status === 200 && (body.requests ?? 0) >= 20 && (edge?.requests ?? 0) >= 20 ? body : null;
    }, { timeoutMs: 20_000, intervalMs: 250, what: 'product-service\'s signals (w2\'s inbound, w1\'s edge) through a follower' })) as Sig;
    assert.equal(servedBy, cps[leader], 'the follower forwarded the read to the leader');
    assert.deepEqual(sig.instances?.map((i) => [i.id, i.address.split(':')[0]]), [['product-service-1', net.address('w2')]]);
    t.diagnostic(`through ${cps[follower]}, served by ${cps[leader]}: product-service ${sig.requests} requests, the frontend edge ${sig.edges?.find((e) => e.source === 'frontend')?.requests}`);
    // The operator's host is another host: w1's admin server answers its metrics and /picks, not its /debug or taps.
    const w1Admin = `http://${net.address('w1')}:4191`;
    const metrics = await fetch(`${w1Admin}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^skein_proxy_requests_total\{direction="outbound",workload="frontend",.*service="product-service".*\} \d+$/m);
    const picks = (await (await fetch(`${w1Admin}/picks?service=product-service&id=product-service-1`, { signal: AbortSignal.timeout(5000) })).json()) as { picks: boolean };
    assert.equal(picks.picks, true);
    for (const path of ['/debug/endpoints', '/tap?service=frontend']) {
      const r = await fetch(`${w1Admin}${path}`, { signal: AbortSignal.timeout(5000) });
      assert.deepEqual([r.status, r.headers.get('x-skein-error')], [403, 'SKEIN_E_ADMIN_LOCAL_ONLY'], path);
    }
  });

  test('kill -9 the etcd leader under load: writes resume (how soon is reported), no page fails', async (t) => {
    if (!Topology.usable(t)) return;
    await waitFor(() => load!.results.length >= 20, { what: '20 pages' });
    const leader = await etcd.leader();
    const killedAt = performance.now();
    await etcd.members[leader]!.kill();
    // A write through a control plane whose own member is alive.
    const other = cps.findIndex((_, i) => i !== leader);
    let resumedMs = -1;
    await waitFor(async () => {
      const res = await fetch(`${control(other)}/v1/services/probe-writes`, { method: 'PUT', headers: { ...auth(), 'content-type': 'application/json' }, body: '{}' }).catch(() => null);
      if (res?.ok !== true) return false;
      resumedMs = performance.now() - killedAt;
      return true;
    }, { timeoutMs: 15_000, intervalMs: 50, what: 'a write after the etcd leader died' });
    // A figure, not an assertion (tests do not assert speed): 2.0-2.1 s here, the issue's bound 3 s.
    t.diagnostic(`writes resumed ${Math.round(resumedMs)} ms after kill -9 of the etcd leader`);
    // The member comes back (same data dir): the cluster has three again for what follows.
    await etcd.members[leader]!.start();
    const count = load!.results.length;
    await waitFor(() => load!.results.length >= count + 40, { what: '40 more pages' });
    noPageFailed();
  });

  test('a minority etcd member cut off: the replica watching it resumes on another member and sees every write', async (t) => {
    if (!Topology.usable(t)) return;
    await net.cut('e3', 'e1');
    await net.cut('e3', 'e2');
    try {
      const before = acked.length;
      // Writes through cp1 meanwhile; cp3's watch was on e3.
      await waitFor(() => acked.length >= before + 20, { timeoutMs: 20_000, what: '20 acknowledged writes during the cut' });
      const want = new Set(acked.slice(0, before + 20));
      await waitFor(async () => {
        const have = new Set(((await get(2, '/v1/services/ledger/instances')).instances as Array<{ id: string }>).map((i) => i.id));
        return [...want].every((id) => have.has(id));
      }, { timeoutMs: 10_000, intervalMs: 200, what: 'cp3 (its member cut off) to list every acknowledged write' });
      assert.ok(controls[2]!.logs.some((l) => /the watch on etcd broke/.test(l)), 'cp3 says its watch moved');
    } finally {
      await net.uncut('e3', 'e1');
      await net.uncut('e3', 'e2');
    }
    noPageFailed();
  });

  test('kill -9 the replica the hosts use: they move on; no page fails, instances stay healthy past their TTL', async (t) => {
    if (!Topology.usable(t)) return;
    await killControl(0);
    // Longer than a new leader's election (the lease of the election key, 5 s) and two TTLs: the
    // hosts' heartbeats went to another replica, or their instances would have expired by now.
    await new Promise((r) => setTimeout(r, 5000 + TTL_MS * 2));
    assert.equal(await healthy(1, 'product-service'), 1);
    assert.equal(await healthy(2, 'frontend'), 1);
    await startControlIn(0);
    noPageFailed();
  });

  test(`every control-plane replica down for ${ALL_REPLICAS_DOWN_MS / 1000} s: no page fails; w3's proxy, killed and started again meanwhile, serves from its state file; back up, it goes live and the hosts report again`, async (t) => {
    if (!Topology.usable(t)) return;
    const from = performance.now();
    await Promise.all([0, 1, 2].map((i) => killControl(i)));
    await waitFor(async () => (await debugOf('w3')).control.connected === false, { timeoutMs: 20_000, intervalMs: 200, what: 'w3\'s proxy to lose every replica' });

    // kill -9 w3's proxy and start it again: no control plane answers.
    const down: Window = { from: performance.now(), to: Infinity };
    w3Down.push(down);
    await kill9(w3);
    const saved = JSON.parse(await readFile(join(w3StateDir(), 'proxy-state.json'), 'utf8')) as {
      savedAt: string;
      control: string[];
      watch: { instances: Array<{ service: string; id: string }> };
      tls: { credentials: Array<{ service: string }> } | null;
    };
    assert.deepEqual(saved.control, [2, 0, 1].map((i) => control(i)));
    assert.deepEqual(saved.watch.instances.filter((i) => i.service === 'frontend').map((i) => i.id), ['frontend-1']);
    assert.deepEqual(saved.tls?.credentials.map((c) => c.service), ['loadgen']);
    await startW3();
    const ready = await waitFor(async () => {
      const r = await hostAdmin('w3', '/ready');
      return r.status === 200 ? r.body : null;
    }, { timeoutMs: 20_000, intervalMs: 100, what: 'w3\'s restarted proxy ready' });
    down.to = performance.now();
    assert.equal(ready!.source, 'stale');
    assert.equal(ready!.stateSavedAt, saved.savedAt, 'it serves the state it found in the file');
    const logs = w3!.logs.map((l) => {
      try {
        return JSON.parse(l) as { msg?: string; found?: string };
      } catch {
        return { msg: l };
      }
    });
    assert.ok(logs.some((l) => l.msg === 'static stability: proxy state' && l.found === 'ok'), 'its log says it found the state file');
    assert.ok(logs.some((l) => l.msg?.includes('serving the persisted state (stale)')), 'its log says it serves the persisted state');
    assert.ok(logs.some((l) => l.msg?.includes('certificates restored from the proxy state')), 'its certificate came from the state');
    t.diagnostic(`w3's proxy down ${Math.round(down.to - down.from)} ms: kill -9, start, and the wait for a control plane before it serves its state`);
    await waitFor(() => loadW3!.okSince(down.to) >= 20, { timeoutMs: 10_000, what: '20 pages through w3 served from its state' });

    // The rest of the outage (the scenario's length, not a wait for a condition).
    await new Promise((r) => setTimeout(r, Math.max(0, from + ALL_REPLICAS_DOWN_MS - performance.now())));
    const outage = { from, to: performance.now() };
    const pages = load!.results.filter((x) => x.sent >= outage.from && x.at <= outage.to).length;
    const pagesW3 = loadW3!.results.filter((x) => x.sent >= down.to && x.at <= outage.to).length;
    t.diagnostic(`${Math.round((outage.to - outage.from) / 1000)} s with no control plane: ${pages} pages through w1, ${pagesW3} through w3 from its state file`);
    assert.ok(pages >= (ALL_REPLICAS_DOWN_MS / 1000) * 20 * 0.8, `${pages} pages through w1 during the outage`);

    // Back up, cp3 first (the replica w3's proxy was given first): it goes live there.
    await startControlIn(2);
    const liveAt = performance.now();
    await waitFor(async () => {
      const d = (await debugOf('w3')).control;
      return d.status === 'connected' && d.url === control(2) && d.stateSavedAt === null;
    }, { timeoutMs: 30_000, intervalMs: 200, what: 'w3\'s proxy live on cp3 again' });
    t.diagnostic(`w3's proxy live again ${Math.round(performance.now() - liveAt)} ms after cp3 came back`);
    assert.deepEqual((await hostAdmin('w3', '/ready')).body, { ready: true });
    for (const i of [0, 1]) await startControlIn(i);
    await waitFor(async () => (await healthy(1, 'product-service')) === 1 && (await healthy(1, 'frontend')) === 1, { timeoutMs: 20_000, what: 'the hosts\' instances healthy again' });
    const sent = loadW3!.results.length;
    await waitFor(() => loadW3!.results.length >= sent + 20, { what: '20 more pages through w3' });
    const whileDown = loadW3!.during(w3Down);
    t.diagnostic(`pages through w3 while its proxy was down: ${whileDown.failed} failed of ${whileDown.pages}`);
    noPageFailed();
  });

  test('a compaction during a watch outage: cp3 cut off from etcd while the registry changes and etcd is compacted; healed, it re-reads the store', async (t) => {
    if (!Topology.usable(t)) return;
    const proxies = [
      // skein up --join's admin server listens on the host's address (the leader scrapes it); its
      // /debug endpoints answer the host itself only: read from inside the host too.
      { name: 'w1', host: 'w1', at: `${net.address('w1')}:4191`, logs: ups['w1']!.logs },
      { name: 'w2', host: 'w2', at: `${net.address('w2')}:4191`, logs: ups['w2']!.logs },
      { name: 'w3', host: 'w3', at: HOST_ADMIN, logs: w3!.logs },
      { name: 'w3-pinned', host: 'w3', at: PINNED_ADMIN, logs: pinned!.logs },
    ];
    const instance = (i: number, method: 'PUT' | 'DELETE', id: string, port = 0) =>
      fetch(`${control(i)}/v1/services/${PROBE}/instances/${id}`, {
        method,
        headers: { ...auth(), 'content-type': 'application/json' },
        ...(method === 'PUT' ? { body: JSON.stringify({ address: net.address('w2'), port }) } : {}),
        signal: AbortSignal.timeout(5000),
      }).then((r) => assert.ok(r.ok, `${method} ${PROBE}/${id} through cp${i + 1}: ${r.status}`));
    type View = Array<[string, string, number]>;
    const sorted = (v: View) => v.sort((a, b) => a[0].localeCompare(b[0]));
    const proxyView = async (p: { host: string; at: string }) => sorted(((await debugOf(p.host, p.at)).services[PROBE]?.endpoints ?? []).map((e): [string, string, number] => [e.id, e.address, e.port]));
    const storeView = async (i: number) => sorted(((await get(i, `/v1/services/${PROBE}/instances`)).instances as Array<{ id: string; address: string; port: number }>).map((e): [string, string, number] => [e.id, e.address, e.port]));
    const replicaOf = async (p: { host: string; at: string }) => {
      const url = (await debugOf(p.host, p.at)).control.url;
      return `cp${cps.findIndex((_, i) => control(i) === url) + 1}`;
    };
    const moves = (logs: string[]) => logs.filter((l) => l.includes('moving to the next'));
    const w2 = net.address('w2');

    // Before: two instances every proxy sees.
    await instance(0, 'PUT', 'p0', 7000);
    await instance(0, 'PUT', 'p1', 7001);
    for (const p of proxies) await waitFor(async () => (await proxyView(p)).length === 2, { intervalMs: 100, what: `${p.name}'s proxy to see ${PROBE} p0 and p1` });
    // control.url of /debug/endpoints is the replica the proxy's watch stream is on (while connected).
    const before = await Promise.all(proxies.map(replicaOf));
    assert.equal(before[3], 'cp3', 'the pinned proxy watches cp3');
    const subscribersBefore = (await get(2, '/v1/health')).watchSubscribers as number;
    const movesBefore = proxies.map((p) => moves(p.logs).length);

    const broke = () => controls[2]!.logs.filter((l) => l.includes('the watch on etcd broke')).length;
    const reread = () => controls[2]!.logs.filter((l) => l.includes('compacted past this replica\'s watch')).length;
    const [brokeBefore, rereadBefore] = [broke(), reread()];
    const rereads = () => controls.map((c) => c!.logs.filter((l) => l.includes('compacted past this replica\'s watch')).length);
    const rereadsBefore = rereads();
    for (const e of es) await net.cut('cp3', e);
    const cutWall = Date.now();
    let compactedAt: number;
    try {
      // Through cp1 meanwhile: one removed, one moved to another port, two added, one of them removed again.
      await instance(0, 'DELETE', 'p0');
      await instance(0, 'PUT', 'p1', 7101);
      await instance(0, 'PUT', 'p2', 7102);
      await instance(0, 'PUT', 'p3', 7103);
      await instance(0, 'DELETE', 'p3');
      // cp3 gives its watch up (its idle limit): what it would have been sent is gone with the stream.
      const cutAt = performance.now();
      await waitFor(() => broke() > brokeBefore, { timeoutMs: 30_000, intervalMs: 100, what: 'cp3 to give up its watch on etcd' });
      t.diagnostic(`cp3's watch on etcd ended ${Math.round(performance.now() - cutAt)} ms after the cut`);
      // What cp3 answers meanwhile: reads from its last view, with a 200; writes with a 503.
      const [h3, h1] = [await get(2, '/v1/health'), await get(0, '/v1/health')];
      const stale = await storeView(2);
      t.diagnostic(`cut off, cp3 answers GET /v1/health with 200, revision ${h3.revision} (cp1: ${h1.revision}), and lists ${PROBE} as ${JSON.stringify(stale.map((e) => `${e[0]}:${e[2]}`))}`);
      assert.deepEqual(stale, [['p0', w2, 7000], ['p1', w2, 7001]], 'cp3 still answers reads, from its last view');
      // (Another service: a refused write may still reach etcd once the link is back, its outcome unknown.)
      const writeAt = performance.now();
      const write = await fetch(`${control(2)}/v1/services/cut-write-probe/instances/x`, { method: 'PUT', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ address: w2, port: 7109 }), signal: AbortSignal.timeout(20_000) });
      t.diagnostic(`a write through cp3 meanwhile: HTTP ${write.status} ${write.headers.get('x-skein-error') ?? ''} after ${Math.round(performance.now() - writeAt)} ms`);
      assert.equal(write.status, 503, 'a write through cp3 is refused while it reaches no etcd member');
      assert.equal(write.headers.get('x-skein-error'), 'SKEIN_E_STORE');
      // Cut off for 5 s (ETCD_DEFAULTS.cutOffAfterMs), cp3 ends its watch streams and refuses new
      // ones: the proxies move to a replica that follows the store; the pinned one keeps its view.
      await waitFor(async () => (await get(2, '/v1/health')).etcd?.following === false, { timeoutMs: 15_000, intervalMs: 100, what: 'cp3 to say it no longer follows etcd' });
      const refused = await fetch(`${control(2)}/v1/watch`, { headers: auth(), signal: AbortSignal.timeout(5000) });
      assert.deepEqual([refused.status, refused.headers.get('x-skein-error')], [503, 'SKEIN_E_STORE'], 'cp3 refuses a watch while cut off');
      assert.match(((await refused.json()) as { message: string }).message, /^this control-plane replica has not followed etcd for 5000 ms \(.*\): its view may be stale; watch through another control-plane replica$/);
      await waitFor(async () => ((await get(2, '/v1/health')).watchSubscribers as number) === 0, { timeoutMs: 10_000, intervalMs: 100, what: 'no watch stream left on cp3' });
      for (const p of proxies.slice(0, 3)) await waitFor(async () => (await replicaOf(p)) !== 'cp3', { timeoutMs: 15_000, intervalMs: 100, what: `${p.name}'s proxy to watch another replica than cp3` });
      await instance(0, 'PUT', 'p4', 7104);
      compactedAt = await etcd.compact();
      t.diagnostic(`etcd compacted at revision ${compactedAt}`);
      assert.equal(await replicaOf(proxies[3]!), 'cp3', 'the pinned proxy is still on cp3');
    } finally {
      for (const e of es) await net.uncut('cp3', e);
    }
    const healedAt = performance.now();
    const healWall = Date.now();
    await waitFor(() => reread() > rereadBefore, { timeoutMs: 30_000, intervalMs: 100, what: 'cp3 to re-read the store (its watch resumed past a compacted revision)' });
    t.diagnostic(`cp3 re-read the store ${Math.round(performance.now() - healedAt)} ms after the heal`);
    // Which replicas re-read the store: cp3, and any other whose watch was behind when etcd compacted.
    const rereadsAfter = rereads();
    t.diagnostic(`replicas that re-read the store after the compaction: ${cps.filter((_, i) => (rereadsAfter[i] ?? 0) > (rereadsBefore[i] ?? 0)).join(', ')}`);
    // Which proxies left cp3 during the cut, and why (a write of theirs got cp3's 503: heartbeats, announcements).
    const after_ = await Promise.all(proxies.map(replicaOf));
    t.diagnostic(`watch streams on cp3: ${subscribersBefore} before the cut, ${(await get(2, '/v1/health')).watchSubscribers as number} after the heal (cut off, it ended them and refused new ones until it followed etcd again)`);
    proxies.forEach((p, i) => {
      const why = moves(p.logs)
        .slice(movesBefore[i])
        .map((l) => JSON.parse(l) as { time: number; reason: string })
        .map((m) => `${m.reason} ${m.time - cutWall} ms after the cut`);
      t.diagnostic(`${p.name}'s proxy: control.url ${before[i]} before the cut, ${after_[i]} after${why.length === 0 ? '' : ` (its replica list moved: ${why.join('; ')}; the heal ${healWall - cutWall} ms after the cut)`}`);
    });
    const want = await storeView(0);
    assert.deepEqual(want, [['p1', w2, 7101], ['p2', w2, 7102], ['p4', w2, 7104]], 'the store has what was written through cp1');
    assert.deepEqual(await storeView(2), want, 'cp3 lists what the store has');
    assert.equal(await replicaOf(proxies[3]!), 'cp3', 'the pinned proxy watched cp3 through the re-read');
    compaction = { revision: compactedAt, proxies };
    noPageFailed();
  });

  test('after the compaction every proxy\'s view equals the store\'s: the probe service and the shop exactly, every ledger instance up to the compaction', async (t) => {
    if (!Topology.usable(t)) return;
    assert.ok(compaction !== null, 'the compaction step ran');
    const { revision, proxies } = compaction;
    type View = Array<[string, string, number]>;
    const view = (list: Array<{ id: string; address: string; port: number }>): View => list.map((e): [string, string, number] => [e.id, e.address, e.port]).sort((a, b) => a[0].localeCompare(b[0]));
    const store = async (service: string) => (await get(0, `/v1/services/${service}/instances`)).instances as Array<{ id: string; address: string; port: number; revision: number }>;
    const wrong: string[] = [];
    for (const p of proxies) {
      await waitFor(async () => ((await debugOf(p.host, p.at)).control.revision ?? 0) >= revision, { timeoutMs: 15_000, intervalMs: 100, what: `${p.name}'s proxy at revision ${revision}` });
      const d = await debugOf(p.host, p.at);
      // Nothing changes these after the compaction: the proxy's view is the store's, exactly.
      for (const s of [PROBE, 'frontend', 'user-service', 'product-service']) {
        const [mine, theirs] = [view(d.services[s]?.endpoints ?? []), view(await store(s))];
        if (JSON.stringify(mine) !== JSON.stringify(theirs)) wrong.push(`${p.name}'s proxy, ${s}: ${JSON.stringify(mine)}, the store ${JSON.stringify(theirs)}`);
      }
      // The ledger only grows: every instance the store had at the compaction, and none it does not have.
      const ledger = await store('ledger');
      const mine = new Set((d.services['ledger']?.endpoints ?? []).map((e) => e.id));
      const missing = ledger.filter((i) => i.revision <= revision && !mine.has(i.id)).map((i) => i.id);
      const extra = [...mine].filter((id) => !ledger.some((i) => i.id === id));
      if (missing.length + extra.length > 0) wrong.push(`${p.name}'s proxy, ledger: ${missing.length} missing (${missing.slice(0, 5).join(', ')}), ${extra.length} not in the store (${extra.slice(0, 5).join(', ')})`);
    }
    assert.deepEqual(wrong, []);
  });

  test('partition w2: its instance leaves the endpoint sets once its heartbeats\' lease runs out (how soon is reported); healed, it comes back without a restart', async (t) => {
    if (!Topology.usable(t)) return;
    await load?.stop();
    load = null;
    await loadW3?.stop();
    loadW3 = null;
    const agent = new http.Agent();
    const cutAt = performance.now();
    await net.partition('w2');
    // Its heartbeats stop: etcd expires their lease, the leader marks the instance unhealthy.
    await waitFor(async () => (await healthy(0, 'product-service')) === 0, { timeoutMs: TTL_MS + 10_000, intervalMs: 50, what: 'product-service unhealthy in the registry' });
    // A figure, not an assertion (tests do not assert speed): the issue's bound is TTL + 2 s.
    t.diagnostic(`w2's instance left the endpoint sets ${Math.round(performance.now() - cutAt)} ms after the partition (TTL ${TTL_MS} ms)`);
    // w1's proxy no longer has it: the frontend's product call is refused by the mesh, which it passes on.
    await waitFor(async () => (await viaProxy(outbound.host, outbound.port, 'frontend', PAGE, agent)).error === 'SKEIN_E_NO_HEALTHY_ENDPOINT', { timeoutMs: 10_000, intervalMs: 100, what: 'product-service gone from w1\'s proxy' });
    await net.heal('w2');
    await waitFor(async () => (await viaProxy(outbound.host, outbound.port, 'frontend', PAGE, agent)).status === 200, { timeoutMs: 15_000, intervalMs: 200, what: 'pages again after the heal' });
    assert.equal(await healthy(2, 'product-service'), 1);
    agent.destroy();
  });

  test('no acknowledged write was lost', async (t) => {
    if (!Topology.usable(t)) return;
    ledgerStop = true;
    await ledger;
    const have = new Set(((await get(1, '/v1/services/ledger/instances')).instances as Array<{ id: string }>).map((i) => i.id));
    const lost = acked.filter((id) => !have.has(id));
    t.diagnostic(`${acked.length} acknowledged writes, ${have.size} instances in the store`);
    assert.ok(acked.length >= 100, `${acked.length} writes acknowledged`);
    assert.deepEqual(lost, []);
  });
});
