/**
 * A joined host's own mesh API (`skein up FILE --join URL --http HOST:PORT`): a real `skein
 * control` (data dir in a temp dir: its admin token is there) and a real `skein up --join` running
 * one service (test/fixtures/rollout-app.mjs), driven with the real CLI against the joined host's
 * API: `skein scale` makes 2 instances healthy in the shared control plane's registry, `skein
 * rollout` completes on that host, requests without the token get 401, `--http` beyond loopback
 * without --insecure-listen is refused naming the flag, bad input gets the embedded API's errors.
 * Also the autoscaler's signal reads failing over between control-plane replicas.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, api, closedPort, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { startUp, type UpProcess } from './mesh-helpers.js';
import { HttpAutoscaleSignals } from '../src/runtime/autoscale-signals.js';
import { ControlReplicas } from '../src/discovery/control-replicas.js';
import { systemClock } from '../src/core/clock.js';
import { readLocalToken } from '../src/control/auth/token-files.js';

const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');

function meshFile(version: string, replicas: number): string {
  return [
    'kind: Mesh',
    'name: join-api',
    'services:',
    '  web:',
    '    command: node',
    `    args: [${JSON.stringify(APP)}]`,
    `    env: { APP_VERSION: ${version} }`,
    `    version: ${version}`,
    `    replicas: ${replicas}`,
    '    readiness: { type: http, path: /health, interval: 100ms, deadline: 2s }',
    '    rollout: { progressDeadline: 20s }',
    '',
  ].join('\n');
}

interface WireInstance {
  id: string;
  address: string;
  version: string;
  status: string;
}
interface MeshStatus {
  name: string;
  services: Array<{ name: string; replicas: number; ready: number; instances: Array<{ id: string; state: string; version?: string }> }>;
}

describe('skein up --join serves its runtime on --http', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let control: ControlProcess;
  let up: UpProcess;
  let token: string;
  let hostApi: string;
  let file: string;
  const auth = () => ({ authorization: `Bearer ${token}` });
  /** The shared control plane's view of web: every instance, by id. */
  const registered = async () => ((await api(control.http, 'GET', '/v1/services/web/instances?all=true', undefined, auth())).body.instances as WireInstance[]).sort((a, b) => a.id.localeCompare(b.id));
  const meshStatus = async () => (await api(hostApi, 'GET', '/v1/mesh', undefined, auth())).body as MeshStatus;

  before(async () => {
    dir = await tempDir('skein-join-api-');
    control = await startControl({ dataDir: join(dir.path, 'data') });
    token = (await readFile(join(dir.path, 'data', 'admin.token'), 'utf8')).trim();
    file = join(dir.path, 'mesh.yaml');
    await writeFile(file, meshFile('v1', 1));
    up = await startUp(file, ['--join', control.http, '--token', token, '--http', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
    const m = /this host's mesh API at (http:\/\/[^,\s]+)/.exec(up.header);
    assert.ok(m !== null, `skein up --join names its mesh API: ${up.header}\n${up.logs()}`);
    hostApi = m[1] as string;
    assert.equal(up.control, control.http, 'the header names the shared control plane');
  });
  after(async () => {
    await up?.stop();
    await control?.stop();
    await dir?.remove();
  });

  test('skein scale web 2 through the joined host: 2 instances healthy in the shared registry, the same ids', async () => {
    // No --token and no SKEIN_TOKEN: the CLI finds the token the host left for its port.
    const r = await skein(['scale', 'web', '2', '-c', hostApi, '-o', 'json'], { env: { SKEIN_TOKEN: '' }, timeoutMs: 60_000 });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}\n${up.logs()}`);
    const scaled = JSON.parse(r.stdout) as MeshStatus['services'][number];
    assert.equal(scaled.replicas, 2);
    assert.equal(scaled.ready, 2);
    const ids = scaled.instances.map((i) => i.id).sort();
    assert.equal(ids.length, 2);
    const reg = await waitFor(async () => {
      const list = await registered();
      return list.length === 2 && list.every((i) => i.status === 'healthy') ? list : null;
    }, { what: '2 healthy instances of web in the shared registry', timeoutMs: 15_000 }) as WireInstance[];
    assert.deepEqual(reg.map((i) => i.id), ids, 'the registry holds the runtime\'s instances');
    assert.deepEqual(reg.map((i) => [i.address, i.version]), [['127.0.0.1', 'v1'], ['127.0.0.1', 'v1']]);
  });

  test('the joined host\'s runtime reports its events to the shared control plane\'s feed; a bad event is refused naming the field', async () => {
    // The scale-up of the test before: its event, posted by the host, in the shared feed.
    const scaled = await waitFor(async () => {
      const evs = (await api(control.http, 'GET', '/v1/events?service=web&type=scale', undefined, auth())).body.events as Array<{ type: string; service: string; message: string; change?: string }>;
      return evs.find((e) => /scaled from 1 to 2 replicas/.test(e.message)) ?? null;
    }, { what: 'the host\'s scale event in the shared feed', timeoutMs: 10_000 }) as { type: string; service: string };
    assert.deepEqual([scaled.type, scaled.service], ['scale', 'web']);
    const post = (body: unknown, headers = auth()) => api(control.http, 'POST', '/v1/events', body, headers);
    const cases: Array<[unknown, string, RegExp]> = [
      [{ type: 'health', service: 'web', message: 'm' }, 'type', /^type must be one of scale, rollout, canary, autoscale/],
      [{ type: 'scale', service: 'Not A Service', message: 'm' }, 'service', /service/],
      [{ type: 'scale', service: 'web', message: '' }, 'message', /^message must be a text of 1 to 1000 characters$/],
      [{ type: 'scale', service: 'web', message: 'm', time: '2020-01-01T00:00:00Z' }, 'time', /^time is set by the control plane/],
      [{ type: 'scale', service: 'web', message: 'm', blob: 'x'.repeat(20_000) }, 'body', /^an event is at most 16384 bytes of JSON, got 2\d{4}$/],
      [['scale'], 'body', /must be a JSON object/],
    ];
    for (const [body, field, message] of cases) {
      const r = await post(body);
      assert.deepEqual([r.status, r.body.code, r.body.field], [400, 'SKEIN_E_VALIDATION', field], JSON.stringify(body).slice(0, 80));
      assert.match(r.body.message as string, message);
    }
    const unknown = await post({ type: 'scale', service: 'nosuch', message: 'm' });
    assert.deepEqual([unknown.status, unknown.body.code, unknown.body.field], [404, 'SKEIN_E_UNKNOWN_SERVICE', 'service']);
    // A read token may not post.
    const reader = await api(control.http, 'POST', '/v1/tokens', { name: 'events-reader', scope: 'read' }, auth());
    const refused = await post({ type: 'scale', service: 'web', message: 'm' }, { authorization: `Bearer ${reader.body.token as string}` });
    assert.deepEqual([refused.status, refused.body.code], [403, 'SKEIN_E_FORBIDDEN']);
    const ok = await post({ type: 'rollout', service: 'web', id: null, message: 'by hand', change: 'rollout-note' });
    assert.equal(ok.status, 201);
    assert.deepEqual([ok.body.event.type, ok.body.event.service, ok.body.event.message, ok.body.event.change], ['rollout', 'web', 'by hand', 'rollout-note']);
  });

  test('skein rollout of web completes on the joined host; the registry follows', async () => {
    await writeFile(file, meshFile('v2', 2));
    const applied = await skein(['rollout', 'apply', '-f', file, '-c', hostApi, '--token', token], { timeoutMs: 30_000 });
    assert.equal(applied.code, 0, `${applied.stdout}${applied.stderr}`);
    assert.match(applied.stdout, /web\s+2\s+rolling out \(.*version.*changed\)/);
    const status = await skein(['rollout', 'status', 'web', '--wait', '--timeout', '60s', '-c', hostApi, '--token', token, '-o', 'json'], { timeoutMs: 90_000 });
    assert.equal(status.code, 0, `${status.stdout}${status.stderr}\n${up.logs()}`);
    const s = JSON.parse(status.stdout) as { revision: number; rollout: { phase: string; revision: number }; instances: Array<{ id: string; version: string; state: string }> };
    assert.equal(s.rollout.phase, 'complete');
    assert.equal(s.rollout.revision, 2);
    assert.deepEqual(s.instances.map((i) => i.version), ['v2', 'v2']);
    const ids = s.instances.map((i) => i.id).sort();
    const reg = await waitFor(async () => {
      const list = await registered();
      return list.length === 2 && list.every((i) => i.status === 'healthy' && i.version === 'v2') ? list : null;
    }, { what: 'the shared registry holds only v2 instances', timeoutMs: 15_000 }) as WireInstance[];
    assert.deepEqual(reg.map((i) => i.id), ids);
  });

  test('no token, a malformed header or another token: 401 SKEIN_E_UNAUTHENTICATED, reads included; /v1/health is open', async () => {
    const none = await api(hostApi, 'GET', '/v1/mesh');
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('x-skein-error'), 'SKEIN_E_UNAUTHENTICATED');
    assert.equal(none.body.code, 'SKEIN_E_UNAUTHENTICATED');
    assert.equal(none.body.message, "GET /v1/mesh on this host's mesh API needs the token this host joined with (skein up --join --token, or SKEIN_TOKEN): none was sent");
    assert.deepEqual(none.body.details, { scopes: ['admin'] });
    assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="skein", scope="admin"');
    const bad = await api(hostApi, 'PUT', '/v1/mesh/services/web/replicas', { replicas: 0 }, { authorization: 'Basic abc' });
    assert.equal(bad.status, 401);
    assert.match(bad.body.message, /the authorization header is not "Bearer <token>"$/);
    // A token of the shared control plane, but not the one this host joined with.
    const minted = await api(control.http, 'POST', '/v1/tokens', { name: 'other', scope: 'automation' }, auth());
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const other = await api(hostApi, 'PUT', '/v1/mesh/services/web/replicas', { replicas: 0 }, { authorization: `Bearer ${minted.body.token as string}` });
    assert.equal(other.status, 401);
    assert.match(other.body.message, /: the token is not the one this host joined with$/);
    const cli = await skein(['scale', 'web', '0', '-c', hostApi, '--token', minted.body.token as string]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /^skein: this command needs a token with scope "admin"; the token from --token was refused: .*: the token is not the one this host joined with \[SKEIN_E_UNAUTHENTICATED\]\n$/);
    // Nothing changed.
    assert.equal((await meshStatus()).services[0]?.replicas, 2);
    const health = await api(hostApi, 'GET', '/v1/health');
    assert.equal(health.status, 200);
    assert.equal(health.body.status, 'ok');
    assert.equal(health.body.mesh, 'join-api');
    assert.equal(health.body.started, true);
    assert.equal(health.body.control, control.http);
  });

  test('bad input gets the embedded API\'s errors: unknown service, replicas -1, an unknown field', async () => {
    const unknown = await api(hostApi, 'PUT', '/v1/mesh/services/nope/replicas', { replicas: 2 }, auth());
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.body, { code: 'SKEIN_E_UNKNOWN_SERVICE', message: 'mesh "join-api" has no service "nope"', field: 'service' });
    const minus = await api(hostApi, 'PUT', '/v1/mesh/services/web/replicas', { replicas: -1 }, auth());
    assert.equal(minus.status, 400);
    assert.deepEqual(minus.body, { code: 'SKEIN_E_VALIDATION', message: 'replicas must be an integer from 0 to 100, got -1', field: 'replicas' });
    const extra = await api(hostApi, 'PUT', '/v1/mesh/services/web/replicas', { replicas: 1, nope: true }, auth());
    assert.equal(extra.status, 400);
    assert.equal(extra.body.field, 'nope');
    const route = await api(hostApi, 'GET', '/v1/services', undefined, auth());
    assert.equal(route.status, 404);
    assert.equal(route.body.message, 'no route GET /v1/services');
    // The CLI: one line with the code, as against an embedded control plane (test/up.test.ts).
    const cli = await skein(['scale', 'nope', '2', '-c', hostApi, '--token', token]);
    assert.equal(cli.code, 1);
    assert.equal(cli.stdout, '');
    assert.equal(cli.stderr.trimEnd().split('\n').length, 1, cli.stderr);
    assert.match(cli.stderr, /SKEIN_E_UNKNOWN_SERVICE/);
    assert.match(cli.stderr, /no service "nope"/);
    assert.equal((await meshStatus()).services[0]?.replicas, 2, 'nothing changed');
  });

  test('--http beyond loopback without --insecure-listen is refused, naming the flag, before anything starts', async () => {
    const r = await skein(['up', file, '--join', control.http, '--token', token, '--http', '0.0.0.0:0', '--outbound', 'off', '--admin', 'off'], { timeoutMs: 30_000 });
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '', 'nothing started');
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /SKEIN_E_INSECURE_LISTEN/);
    assert.match(r.stderr, /--http/);
    assert.match(r.stderr, /--insecure-listen/);
    // The other flags of an embedded control plane are still refused with --join.
    const dns = await skein(['up', file, '--join', control.http, '--token', token, '--dns', '127.0.0.1:0'], { timeoutMs: 30_000 });
    assert.equal(dns.code, 2, dns.stderr);
    assert.match(dns.stderr, /--dns configures an embedded control plane/);
  });

  test('Ctrl-C: skein up --join exits 0, takes its instances out of the shared registry and its token copy away', async () => {
    const port = Number(new URL(hostApi).port);
    assert.equal(await readLocalToken(port), token, 'the CLI on this host finds the token by the API\'s port');
    await up.stop();
    assert.deepEqual(await up.exited, { code: 0, signal: null });
    assert.equal(await readLocalToken(port), null, 'the copy is removed');
    assert.deepEqual(await registered(), [], 'its instances are deregistered');
    const gone = await fetch(`${hostApi}/v1/health`).then(() => 'answered', (e: Error) => (e.cause as NodeJS.ErrnoException | undefined)?.code ?? e.message);
    assert.equal(gone, 'ECONNREFUSED');
  });
});

describe("the autoscaler's signals on a joined host", () => {
  test('read from the next control-plane replica when the one in use is down or answers 503, with the token', async () => {
    const seen: Array<{ url: string; auth: string | undefined }> = [];
    const unavailable = http.createServer((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"message":"no leader"}'));
    const good = http.createServer((req, res) => {
      seen.push({ url: req.url ?? '', auth: req.headers.authorization });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ versions: [{ rps: 3, latencyMs: { p99: 12 } }, { rps: 4.5, latencyMs: { p99: 30 } }] }));
    });
    await Promise.all([unavailable, good].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
    try {
      const down = `http://127.0.0.1:${await closedPort()}`;
      const u503 = `http://127.0.0.1:${(unavailable.address() as AddressInfo).port}`;
      const ok = `http://127.0.0.1:${(good.address() as AddressInfo).port}`;
      const replicas = new ControlReplicas([down, u503, ok], systemClock);
      const signals = new HttpAutoscaleSignals({ controlUrl: down, control: replicas, token: 'T', clock: systemClock, inFlight: () => null });
      assert.deepEqual(await signals.read('web', 'rps', 15_000), { value: 7.5 });
      assert.equal(replicas.current, ok, 'the replica that answered is the one in use');
      assert.deepEqual(await signals.read('web', 'p99', 15_000), { value: 30 });
      assert.deepEqual(seen, [
        { url: '/v1/signals/services/web/versions?last=15000ms', auth: 'Bearer T' },
        { url: '/v1/signals/services/web/versions?last=15000ms', auth: 'Bearer T' },
      ]);
      // Every replica unavailable: a missing metric, with the last answer's reason.
      const none = new HttpAutoscaleSignals({ controlUrl: down, control: new ControlReplicas([down, u503], systemClock), clock: systemClock, inFlight: () => null });
      assert.deepEqual(await none.read('web', 'rps', 15_000), { value: null, why: 'GET /v1/signals/services/web/versions?last=15000ms: 503 no leader' });
    } finally {
      await Promise.all([unavailable, good].map((s) => new Promise((r) => s.close(r))));
    }
  });
});
