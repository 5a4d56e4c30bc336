/**
 * Two `skein control --store etcd` replicas on a real 3-member etcd cluster (loopback, ports from
 * the OS): what one accepts, the other lists, watches and resolves by DNS, at etcd's revisions;
 * tokens minted on one work on the other; one replica is elected and runs the health checks, and
 * when it is killed the other takes them over; TTL heartbeats reach the leader through either
 * replica and expire by etcd's lease; bad flags are refused with the flag named.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { adminTokenOf, api, closedPort, openWatch, run, skein, startControl, tempDir, waitFor, type ControlProcess, type StreamMessage } from './helpers.js';
import { httpGet, metricValue, registerInstance, startProxy, waitForProxyReady } from './proxy-helpers.js';
import { startEtcdCluster, type EtcdCluster } from './etcd-cluster.js';

interface Health {
  revision: number;
  store: string;
  etcd?: { leader: boolean; prefix: string; replica: string; leaderReplica: string | null; leaderUrl: string | null };
}

const health = async (cp: ControlProcess): Promise<Health> => (await api(cp.http, 'GET', '/v1/health')).body as Health;

describe('skein control on etcd: two replicas, one store', () => {
  let cluster: EtcdCluster;
  let dir: { path: string; remove: () => Promise<void> };
  let a: ControlProcess;
  let b: ControlProcess;
  const args = () => ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--dns', '127.0.0.1:0'];

  before(async () => {
    cluster = await startEtcdCluster({ members: 3 });
    dir = await tempDir('skein-control-etcd-');
    a = await startControl({ dataDir: join(dir.path, 'a'), args: [...args(), '--replica', 'a'] });
    // One admin token for the mesh: the second replica gets a copy of the first's.
    await mkdir(join(dir.path, 'b'), { recursive: true });
    await copyFile(join(dir.path, 'a', 'admin.token'), join(dir.path, 'b', 'admin.token'));
    b = await startControl({ dataDir: join(dir.path, 'b'), args: [...args(), '--replica', 'b'] });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await cluster?.close();
    await dir?.remove();
  });

  test('a registration on one replica is listed, watched and resolved by DNS on the other, at etcd\'s revision', async () => {
    assert.equal((await health(a)).store, 'etcd');
    const watch = await openWatch(b.http, '/v1/watch?service=web');
    try {
      const put = await api(a.http, 'PUT', '/v1/services/web/instances/w1', { address: '127.0.0.2', port: 8080 });
      assert.equal(put.status, 201, JSON.stringify(put.body));
      const rev = put.body.revision as number;
      const seen = (await waitFor(() => watch.messages.find((m) => m.type === 'add') ?? null, { what: 'the add on the other replica\'s watch' })) as StreamMessage;
      assert.equal(seen.instance.id, 'w1');
      assert.equal(seen.revision, rev, 'the watch on the other replica carries the same (etcd) revision');
      const listed = await api(b.http, 'GET', '/v1/services/web/instances');
      assert.deepEqual(
        listed.body.instances.map((i: { id: string; address: string; revision: number }) => [i.id, i.address, i.revision]),
        [['w1', '127.0.0.2', rev]],
      );
      const dig = await run('dig', ['+short', '-p', String(b.dnsPort), '@127.0.0.1', 'web.service.skein', 'A']);
      assert.equal(dig.stdout.trim(), '127.0.0.2');
      // A write on b is read back at once on b (read your writes), and seen by a.
      const del = await api(b.http, 'DELETE', '/v1/services/web/instances/w1');
      assert.equal(del.status, 200);
      // The service had only that instance: it is gone (404) at once on b, and soon on a.
      assert.equal((await api(b.http, 'GET', '/v1/services/web/instances')).status, 404);
      await waitFor(async () => (await api(a.http, 'GET', '/v1/services/web/instances')).status === 404, { what: 'the deregistration on a' });
    } finally {
      watch.close();
    }
  });

  test('a token minted on one replica is accepted by the other; revoked there, refused on both', async () => {
    const minted = await api(a.http, 'POST', '/v1/tokens', { scope: 'automation', name: 'ci' });
    assert.equal(minted.status, 201);
    const auth = { authorization: `Bearer ${minted.body.token as string}` };
    await waitFor(async () => (await api(b.http, 'PUT', '/v1/services/api', {}, auth)).status === 201 || false, { what: 'the token accepted by b' });
    assert.equal((await api(b.http, 'DELETE', '/v1/tokens/ci')).status, 200);
    await waitFor(async () => (await api(a.http, 'PUT', '/v1/services/api', { labels: { x: '1' } }, auth)).status === 401, { what: 'the revoked token refused by a' });
  });

  test('a proxy announced to one replica is known to the other; withdrawn there, gone from both', async () => {
    const body = { admin: '127.0.0.1:4191', workloads: [{ name: 'web-1', service: 'web', inbound: '127.0.0.1:4143', outbound: null }] };
    const put = await api(a.http, 'PUT', '/v1/proxies/edge-1', body);
    assert.equal(put.status, 200, JSON.stringify(put.body));
    await waitFor(async () => ((await api(b.http, 'GET', '/v1/proxies')).body.proxies as Array<{ id: string; admin: string }>).some((p) => p.id === 'edge-1' && p.admin === '127.0.0.1:4191'), { what: 'edge-1 listed by b' });
    assert.equal((await api(b.http, 'DELETE', '/v1/proxies/edge-1')).status, 200);
    await waitFor(async () => !((await api(a.http, 'GET', '/v1/proxies')).body.proxies as Array<{ id: string }>).some((p) => p.id === 'edge-1'), { what: 'edge-1 gone from a' });
  });

  test('one replica leads and probes; a TTL heartbeat through either replica keeps an instance healthy; the lease expires it', async () => {
    // Exactly one leader (polled: a term may be changing hands as the test starts).
    await waitFor(async () => (await Promise.all([health(a), health(b)])).filter((h) => h.etcd?.leader === true).length === 1, { what: 'exactly one leader' });
    const dead = await closedPort();
    await api(a.http, 'PUT', '/v1/services/probed/instances/p1', { address: '127.0.0.1', port: dead, check: { type: 'tcp', interval: '200ms', unhealthyThreshold: 1 } });
    await waitFor(async () => (await api(b.http, 'GET', '/v1/services/probed/instances?all=true')).body.instances[0]?.status === 'unhealthy', { what: 'p1 unhealthy' });
    const probes = async (cp: ControlProcess) => {
      const text = await (await fetch(`${cp.http}/metrics`)).text();
      return Number(/skein_health_checks_total\{[^}]*result="fail"[^}]*\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    const [pa, pb] = await Promise.all([probes(a), probes(b)]);
    assert.equal((pa > 0) !== (pb > 0), true, `only the leader probes (a: ${pa}, b: ${pb})`);

    await api(a.http, 'PUT', '/v1/services/beat/instances/t1', { address: '127.0.0.1', port: 9, check: { type: 'ttl', ttl: '2s' } });
    for (let i = 0; i < 4; i++) {
      const cp = i % 2 === 0 ? a : b;
      const r = await api(cp.http, 'PUT', '/v1/services/beat/instances/t1/heartbeat', {});
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await new Promise((r) => setTimeout(r, 700));
      const st = (await api(b.http, 'GET', '/v1/services/beat/instances?all=true')).body.instances[0];
      assert.equal(st.status, 'healthy', `after heartbeat ${i + 1}: ${st.reason}`);
    }
    // No more heartbeats: etcd expires the lease; the leader marks it unhealthy, every replica sees it.
    await waitFor(async () => (await api(a.http, 'GET', '/v1/services/beat/instances?all=true')).body.instances[0]?.status === 'unhealthy', { timeoutMs: 10_000, what: 't1 expired' });
    const t1 = (await api(b.http, 'GET', '/v1/services/beat/instances?all=true')).body.instances[0];
    assert.equal(t1.reason, 'TTL expired: no heartbeat within 2000ms');
  });

  test('only the leader scrapes the proxies; the other replica forwards reads of the golden signals and the events to it', async () => {
    await waitFor(async () => (await Promise.all([health(a), health(b)])).filter((h) => h.etcd?.leader === true).length === 1, { what: 'exactly one leader' });
    const [leader, follower] = (await health(a)).etcd?.leader === true ? [a, b] : [b, a];
    const leaderName = leader === a ? 'a' : 'b';
    const token = await adminTokenOf(a.http);
    const fh = await health(follower);
    assert.equal(fh.etcd?.leaderReplica, leaderName);
    assert.equal(fh.etcd?.leaderUrl, leader.http, 'the leader says where it is reached');
    // A real proxy with one workload, announced to the follower (the directory is shared).
    const app: Server = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const proxy = await startProxy({
      control: follower.http,
      workloads: ['name=client,outbound=127.0.0.1:0', `name=sig-1,service=sig,inbound=127.0.0.1:0,app=127.0.0.1:${(app.address() as AddressInfo).port}`],
      args: ['--id', 'etcd-signals-proxy'],
    });
    try {
      await registerInstance(follower.http, 'sig', 'sig-1', proxy.workload('sig-1').inbound!.port);
      await waitForProxyReady(proxy);
      const out = proxy.workload('client').outbound!.port;
      await waitFor(async () => (await httpGet(out, 'http://sig/warm')).status === 200, { what: 'sig through the proxy' });
      const signals = async (cp: ControlProcess) => {
        const r = await fetch(`${cp.http}/v1/signals/services/sig?window=15m`, { headers: { authorization: `Bearer ${token}` } });
        return { status: r.status, servedBy: r.headers.get('x-skein-served-by'), body: (await r.json()) as { service: string; requests?: number } };
      };
      // The leader has scraped the proxy twice: what it counts from now on is every request (a
      // proxy first scraped some seconds after it started is taken as a baseline, busy machines).
      const scrapes = async (cp: ControlProcess) => metricValue(await (await fetch(`${cp.http}/metrics`)).text(), 'skein_signals_scrapes_total', { result: 'ok' }) ?? 0;
      await waitFor(async () => (await scrapes(leader)) >= 2, { timeoutMs: 20_000, what: 'two scrapes of the proxy by the leader' });
      const before = (await signals(follower)).body.requests ?? 0;
      for (let i = 0; i < 12; i++) assert.equal((await httpGet(out, `http://sig/r/${i}`)).status, 200);
      await waitFor(async () => (await signals(follower)).body.requests === before + 12, { timeoutMs: 20_000, what: `the 12 requests (on top of ${before}) in the signals read through the follower` });
      const [viaFollower, fromLeader] = await Promise.all([signals(follower), signals(leader)]);
      assert.deepEqual([viaFollower.status, viaFollower.servedBy], [200, leaderName], 'the follower forwarded the read to the leader');
      assert.deepEqual([fromLeader.servedBy, fromLeader.body.requests], [leaderName, before + 12]);
      // Only the leader scraped: the follower's scraper never ran.
      const [ls, fs] = await Promise.all([scrapes(leader), scrapes(follower)]);
      assert.ok(ls >= 1, `the leader scraped (${ls} scrapes)`);
      assert.equal(fs, 0, 'the follower scraped nothing');
      // The event feed and the event stream go to the leader too.
      const ev = await fetch(`${follower.http}/v1/events?service=sig`, { headers: { authorization: `Bearer ${token}` } });
      assert.deepEqual([ev.status, ev.headers.get('x-skein-served-by')], [200, leaderName]);
      assert.ok(((await ev.json()) as { events: Array<{ type: string; service: string }> }).events.some((e) => e.type === 'health' && e.service === 'sig'), 'sig-1 became healthy: in the feed');
      const ac = new AbortController();
      const stream = await fetch(`${follower.http}/v1/signals/stream`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
      assert.deepEqual([stream.status, stream.headers.get('content-type'), stream.headers.get('x-skein-served-by')], [200, 'text/event-stream; charset=utf-8', leaderName]);
      const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
      let text = '';
      while (!text.includes('event: signals')) text += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      assert.match(text, /^retry: 1000\n\n/);
      // Bad input is the leader's answer, passed back as it is.
      const bad = await fetch(`${follower.http}/v1/signals?window=2m`, { headers: { authorization: `Bearer ${token}` } });
      assert.deepEqual([bad.status, bad.headers.get('x-skein-error')], [400, 'SKEIN_E_BAD_QUERY']);
      // An event a runtime elsewhere posts through the follower lands in the leader's feed.
      const posted = await fetch(`${follower.http}/v1/events`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'scale', service: 'sig', message: 'sig scaled from 1 to 2 replicas (posted)' }) });
      assert.deepEqual([posted.status, posted.headers.get('x-skein-served-by')], [201, leaderName]);
      const feed = (await api(leader.http, 'GET', '/v1/events?service=sig&type=scale')).body.events as Array<{ message: string }>;
      assert.deepEqual(feed.map((e) => e.message), ['sig scaled from 1 to 2 replicas (posted)']);
      // A read the follower allows (from loopback, no token) is forwarded with the follower's own credentials.
      const anon = await fetch(`${follower.http}/v1/signals`);
      assert.deepEqual([anon.status, anon.headers.get('x-skein-served-by')], [200, leaderName]);
    } finally {
      await proxy.stop();
      await new Promise((r) => app.close(r));
    }
  });

  test('kill -9 the leading replica: the other is elected and probes; reads and writes go on through it', async () => {
    const leaderIsA = (await health(a)).etcd?.leader === true;
    const [gone, stays] = leaderIsA ? [a, b] : [b, a];
    const token = await adminTokenOf(stays.http);
    await gone.stop('SIGKILL');
    // Until its election key's lease runs out, the dead replica is still the leader on record: a
    // read the survivor cannot forward is a clear 503, not a hang.
    const orphan = await fetch(`${stays.http}/v1/signals`, { headers: { authorization: `Bearer ${token}` } });
    const orphanBody = (await orphan.json()) as { code: string; message: string };
    assert.deepEqual([orphan.status, orphanBody.code], [503, 'SKEIN_E_NO_LEADER']);
    assert.match(orphanBody.message, new RegExp(`^/v1/signals is answered by the elected control-plane replica .*: the leader, ${leaderIsA ? 'a' : 'b'} at ${gone.http.replace(/[.]/g, '\\.')}, did not answer: `));
    await waitFor(async () => (await health(stays)).etcd?.leader === true, { timeoutMs: 15_000, what: 'the other replica elected' });
    const own = await fetch(`${stays.http}/v1/signals`, { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual([own.status, own.headers.get('x-skein-served-by')], [200, leaderIsA ? 'b' : 'a'], 'the new leader answers itself');
    const r = await api(stays.http, 'PUT', '/v1/services/after/instances/x1', { address: '127.0.0.1', port: await closedPort(), check: { type: 'tcp', interval: '200ms', unhealthyThreshold: 1 } });
    assert.equal(r.status, 201);
    await waitFor(async () => (await api(stays.http, 'GET', '/v1/services/after/instances?all=true')).body.instances[0]?.status === 'unhealthy', { what: 'x1 probed by the new leader' });
  });
});

test('bad flags: --store etcd without --etcd, a bad URL, --etcd without the etcd store', async () => {
  const dir = await tempDir('skein-etcd-flags-');
  try {
    const cases: Array<[string[], number, RegExp]> = [
      [['--store', 'etcd'], 2, /--store etcd needs --etcd URL\[,URL\.\.\.\]/],
      [['--store', 'etcd', '--etcd', 'localhost:2379'], 2, /--etcd: "localhost:2379" must be http:\/\/HOST:PORT or https:\/\/HOST:PORT/],
      [['--etcd', 'http://127.0.0.1:2379'], 2, /--etcd applies with --store etcd only/],
      [['--store', 'etcd', '--etcd', `http://127.0.0.1:${await closedPort()}`], 1, /cannot read the store from etcd at http:\/\/127\.0\.0\.1:\d+/],
    ];
    for (const [flags, code, message] of cases) {
      const r = await skein(['control', '--data-dir', dir.path, '--http', '127.0.0.1:0', '--dns', 'off', ...flags], { timeoutMs: 20_000 });
      assert.equal(r.code, code, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  } finally {
    await dir.remove();
  }
});

test('a replica that slept through a compaction of what it missed reads the store again, and its view equals the store', async () => {
  const cluster = await startEtcdCluster({ members: 3 });
  const dir = await tempDir('skein-etcd-compact-');
  let a: ControlProcess | null = null;
  let b: ControlProcess | null = null;
  try {
    const endpoints = cluster.endpoints.join(',');
    a = await startControl({ dataDir: join(dir.path, 'a'), args: ['--store', 'etcd', '--etcd', [...cluster.endpoints].reverse().join(','), '--dns', 'off'] });
    await mkdir(join(dir.path, 'b'), { recursive: true });
    await copyFile(join(dir.path, 'a', 'admin.token'), join(dir.path, 'b', 'admin.token'));
    // b watches through the first member (its preferred one).
    b = await startControl({ dataDir: join(dir.path, 'b'), args: ['--store', 'etcd', '--etcd', endpoints, '--dns', 'off'] });
    await api(a.http, 'PUT', '/v1/services/web/instances/old', { address: '127.0.0.1', port: 1 });
    await api(a.http, 'PUT', '/v1/services/web/instances/kept', { address: '127.0.0.1', port: 2 });
    await waitFor(async () => (await api(b!.http, 'GET', '/v1/services/web/instances')).body.instances?.length === 2, { what: 'b has both' });
    // A token b knows, revoked while b sleeps: gone from the store by the time b reads it again.
    const minted = await api(a.http, 'POST', '/v1/tokens', { name: 'revoked-while-away', scope: 'automation' });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const revokedAuth = { authorization: `Bearer ${minted.body.token as string}` };
    await waitFor(async () => (await api(b!.http, 'PUT', '/v1/services/probe-token', {}, revokedAuth)).status === 201, { what: 'the token accepted by b' });
    const bRev = (await health(b)).revision;

    b.child.kill('SIGSTOP');
    // b's member goes first (nothing more reaches b's stream): its watch must resume elsewhere,
    // from a revision that will no longer exist.
    await cluster.members[0]!.kill();
    await api(a.http, 'PUT', '/v1/services/web/instances/new', { address: '127.0.0.1', port: 3 });
    await api(a.http, 'DELETE', '/v1/services/web/instances/old');
    await api(a.http, 'PUT', '/v1/services/web', { labels: { v: '2' } });
    assert.equal((await api(a.http, 'DELETE', '/v1/tokens/revoked-while-away')).status, 200);
    const compacted = await cluster.compact();
    assert.ok(compacted > bRev + 1, 'what b missed is compacted away');
    b.child.kill('SIGCONT');

    const view = async (cp: ControlProcess) => {
      const inst = (await api(cp.http, 'GET', '/v1/services/web/instances')).body.instances as Array<{ id: string; revision: number }>;
      const svc = (await api(cp.http, 'GET', '/v1/services/web')).body;
      return JSON.stringify({ inst: inst.map((i) => [i.id, i.revision]), labels: svc.labels ?? svc.service?.labels });
    };
    const want = await view(a);
    await waitFor(async () => (await view(b!)) === want, { timeoutMs: 20_000, what: `b's view to equal the store's: ${want}` });
    assert.ok(b.logs.some((l) => l.includes("the store was compacted past this replica's watch")), 'b says it read the store again');
    // What went from the store while b was away is gone from b too: the revoked token is refused.
    const refused = await api(b.http, 'PUT', '/v1/services/probe-token', {}, revokedAuth);
    assert.deepEqual([refused.status, refused.body.code], [401, 'SKEIN_E_UNAUTHENTICATED']);
  } finally {
    b?.child.kill('SIGCONT');
    await b?.stop();
    await a?.stop();
    await cluster.close();
    await dir.remove();
  }
});

test('two replicas started at the same moment on an empty store make one mesh CA (one root, one issuer) and one token of a name', async () => {
  const cluster = await startEtcdCluster({ members: 3 });
  const dir = await tempDir('skein-etcd-first-');
  let pair: ControlProcess[] = [];
  try {
    const args = ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--dns', 'off'];
    pair = await Promise.all(['a', 'b'].map((n) => startControl({ dataDir: join(dir.path, n), args: [...args, '--replica', n] })));
    const [ca, cb] = await Promise.all(pair.map(async (cp) => (await api(cp.http, 'GET', '/v1/ca')).body as { roots: string[]; issuer: { serial: string } }));
    assert.equal(ca!.roots.length, 1);
    assert.deepEqual(ca!.roots, cb!.roots, 'one root for the mesh');
    assert.equal(ca!.issuer.serial, cb!.issuer.serial, 'one issuer');
    // The same token name minted through both at once: one of them is told it exists.
    const minted = await Promise.all(pair.map((cp) => api(cp.http, 'POST', '/v1/tokens', { scope: 'read', name: 'twice' })));
    assert.deepEqual(minted.map((m) => m.status).sort(), [201, 409], JSON.stringify(minted.map((m) => m.body)));
  } finally {
    for (const cp of pair) await cp.stop();
    await cluster.close();
    await dir.remove();
  }
});
