/**
 * The `skein` CLI against a running control plane: every registry command in table and JSON
 * output, apply / validate / schema, and the errors people hit (bad flags, an unreachable
 * control plane, bad files) as one line and a non-zero exit code.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { SKEIN_BIN, api, closedPort, run, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';

let cp: ControlProcess;
let dir: { path: string; remove: () => Promise<void> };
let files: string;
let C: string[];

before(async () => {
  dir = await tempDir('skein-cli-');
  files = join(dir.path, 'files');
  await import('node:fs/promises').then((fs) => fs.mkdir(files));
  cp = await startControl({ dataDir: join(dir.path, 'data') });
  C = ['--control', cp.http];
});

after(async () => {
  try {
    await cp?.stop();
  } finally {
    await dir?.remove();
  }
});

/** Runs the CLI expecting success; returns stdout. */
async function ok(args: string[]): Promise<string> {
  const r = await skein(args);
  assert.equal(r.code, 0, `skein ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.stderr, '', 'nothing on stderr');
  return r.stdout;
}

/** Runs the CLI expecting failure: one line on stderr, nothing on stdout. */
async function fails(args: string[], code?: number): Promise<string> {
  const r = await skein(args);
  assert.notEqual(r.code, 0, `skein ${args.join(' ')} should fail; stdout: ${r.stdout}`);
  assert.notEqual(r.code, null, 'it exits by itself');
  if (code !== undefined) assert.equal(r.code, code, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.ok((lines[0] as string).length > 10);
  return lines[0] as string;
}

const rows = (out: string) => out.trimEnd().split('\n').map((l) => l.trim().split(/\s{2,}/));

describe('registry commands', () => {
  test('register (table and json output), unchanged and updated', async () => {
    const out = await ok(['register', 'web', 'web-1', '--address', '127.0.0.1', '--port', '8080', '--weight', '3', '--zone', 'z1', '--label', 'team=a', '--label', 'tier=front', ...C]);
    assert.match(out, /^registered web\/web-1 at 127\.0\.0\.1:8080 \(healthy, revision \d+\)\n$/);
    const i = (await api(cp.http, 'GET', '/v1/services/web/instances/web-1')).body.instance;
    assert.deepEqual([i.address, i.port, i.weight, i.zone, i.labels], ['127.0.0.1', 8080, 3, 'z1', { team: 'a', tier: 'front' }]);
    assert.ok(out.includes(`revision ${i.revision})`));

    const again = await ok(['register', 'web', 'web-1', '--address', '127.0.0.1', '--port', '8080', '--weight', '3', '--zone', 'z1', '--label', 'team=a', '--label', 'tier=front', ...C]);
    assert.match(again, /^unchanged web\/web-1 /);
    assert.equal((await api(cp.http, 'PUT', '/v1/services/web/instances/web-1', { address: '127.0.0.1', port: 8080, weight: 5, zone: 'z1', labels: { team: 'a', tier: 'front' } })).body.changed, true);

    const json = JSON.parse(await ok(['register', 'web', 'web-2', '--address', '10.0.0.2', '--port', '9090', '--check', 'ttl', '--ttl', '30s', '-o', 'json', ...C]));
    assert.equal(json.created, true);
    assert.equal(json.instance.id, 'web-2');
    assert.equal(json.instance.address, '10.0.0.2');
    assert.equal(json.instance.port, 9090);
    assert.equal(json.instance.check, 'ttl');
    assert.equal(json.instance.status, 'healthy');
    assert.equal(typeof json.revision, 'number');
  });

  test('heartbeat', async () => {
    const out = await ok(['heartbeat', 'web', 'web-2', ...C]);
    assert.match(out, /^web\/web-2 healthy; next heartbeat due within (29|30)s\n$/);
    const json = JSON.parse(await ok(['heartbeat', 'web', 'web-2', '--status', 'unhealthy', '--reason', 'maintenance window', '-o', 'json', ...C]));
    assert.equal(json.instance.status, 'unhealthy');
    assert.equal(json.instance.reason, 'maintenance window');
    assert.ok(json.ttlRemainingMs > 25_000);
    const line = await fails(['heartbeat', 'web', 'web-1', ...C], 1);
    assert.match(line, /^skein: .*not a ttl check.*\[SKEIN_E_NO_TTL_CHECK\]$/);
  });

  test('services', async () => {
    const out = await ok(['services', ...C]);
    const t = rows(out);
    assert.deepEqual(t[0], ['SERVICE', 'HEALTHY', 'INSTANCES', 'REVISION']);
    const rev = (await api(cp.http, 'GET', '/v1/services')).body.services[0].revision;
    assert.deepEqual(t.slice(1), [['web', '1', '2', String(rev)]]);
    const json = JSON.parse(await ok(['services', '-o', 'json', ...C]));
    assert.deepEqual(json.services.map((s: any) => [s.name, s.healthy, s.instances]), [['web', 1, 2]]);
  });

  test('endpoints: healthy ones, --all with status and reason', async () => {
    const t = rows(await ok(['endpoints', 'web', ...C]));
    assert.deepEqual(t[0], ['ID', 'ADDRESS', 'WEIGHT', 'ZONE', 'VERSION', 'STATUS', 'SINCE', 'REASON']);
    assert.equal(t.length, 2, 'the unhealthy instance is not listed');
    assert.deepEqual(t[1]?.slice(0, 6), ['web-1', '127.0.0.1:8080', '5', 'z1', '-', 'healthy']);
    assert.match(t[1]?.[6] as string, /^\d+s$/);
    assert.equal(t[1]?.[7], 'no health check');

    const all = rows(await ok(['endpoints', 'web', '--all', ...C]));
    assert.equal(all.length, 3);
    assert.deepEqual(all[2]?.slice(0, 6), ['web-2', '10.0.0.2:9090', '1', '-', '-', 'unhealthy']);
    assert.equal(all[2]?.[7], 'maintenance window');

    const json = JSON.parse(await ok(['endpoints', 'web', '-a', '-o', 'json', ...C]));
    assert.equal(json.service, 'web');
    assert.deepEqual(json.instances.map((i: any) => [i.id, i.status]), [['web-1', 'healthy'], ['web-2', 'unhealthy']]);
  });

  test('events', async () => {
    const out = await ok(['events', 'web', ...C]);
    const t = rows(out);
    assert.deepEqual(t[0], ['TIME', 'TYPE', 'SERVICE', 'INSTANCE', 'MESSAGE']);
    assert.ok(t.some((r) => r[1] === 'health' && r[3] === 'web-1' && r[4] === 'web-1 registered as healthy: no health check'));
    assert.ok(t.some((r) => r[1] === 'health' && r[3] === 'web-2' && r[4] === 'web-2 is unhealthy (was healthy): maintenance window'));
    assert.match(await fails(['events', '--type', 'nope', ...C], 1), /"type" must be a comma-separated list of health, eject, return, breaker, active-check, panic, body-stall, certificate, mtls-refused, cold-start, scale, rollout, canary, autoscale, proxy.*\[SKEIN_E_BAD_QUERY\]$/);
    assert.match(await fails(['events', 'nosuch', ...C], 1), /service "nosuch" is not registered.*\[SKEIN_E_UNKNOWN_SERVICE\]$/);
    assert.match(await fails(['events', '--limit', 'abc', ...C], 2), /--limit must be an integer from 1 to 1000, got "abc"/);
    assert.match(await ok(['events', 'web', '--type', 'scale', ...C]), /^no scale events of web\n$/);
    for (const r of t.slice(1)) assert.match(r[0] as string, /^\d{4}-\d\d-\d\dT/);
    const json = JSON.parse(await ok(['events', '--limit', '1', '-o', 'json', ...C]));
    assert.equal(json.events.length, 1);
    assert.deepEqual([json.events[0].id, json.events[0].from, json.events[0].to, json.events[0].reason], ['web-2', 'healthy', 'unhealthy', 'maintenance window']);
  });

  test('deregister', async () => {
    const out = await ok(['deregister', 'web', 'web-2', ...C]);
    assert.match(out, /^deregistered web\/web-2 \(revision \d+\)\n$/);
    assert.equal((await api(cp.http, 'GET', '/v1/services/web/instances/web-2')).status, 404);
    assert.match(await fails(['deregister', 'web', 'web-2', ...C], 1), /instance "web-2" of service "web" is not registered \(id\) \[SKEIN_E_UNKNOWN_INSTANCE\]$/);
  });

  test('watch --count N: a snapshot, then the changes', async () => {
    await api(cp.http, 'PUT', '/v1/services/shopw/instances/w-1', { address: '10.0.0.1', port: 80 });
    const subs = (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers;
    const running = skein(['watch', 'shopw', '--count', '3', '-o', 'json', ...C], { timeoutMs: 20_000 });
    await waitFor(async () => (await api(cp.http, 'GET', '/v1/health')).body.watchSubscribers > subs, { what: 'the CLI to subscribe' });
    const add = await api(cp.http, 'PUT', '/v1/services/shopw/instances/w-2', { address: '10.0.0.2', port: 81 });
    const del = await api(cp.http, 'DELETE', '/v1/services/shopw/instances/w-1');
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    const msgs = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(
      msgs.map((m) => [m.type, m.revision]),
      [
        ['snapshot', add.body.revision - 1],
        ['add', add.body.revision],
        ['remove', del.body.revision],
      ],
    );
    assert.deepEqual(msgs[0].instances.map((i: any) => i.id), ['w-1']);

    // Table output, resuming with --since: exactly the changes after it.
    const t = await ok(['watch', 'shopw', '--since', String(add.body.revision - 1), '--count', '2', ...C]);
    assert.deepEqual(t.trimEnd().split('\n'), [
      `[${add.body.revision}] add    shopw/w-2 10.0.0.2:81 healthy`,
      `[${del.body.revision}] remove shopw/w-1 10.0.0.1:80 healthy`,
    ]);
    const snap = await ok(['watch', 'shopw', '--count', '1', ...C]);
    assert.deepEqual(snap.trimEnd().split('\n'), [`[${del.body.revision}] snapshot of shopw: 1 instance(s)`, '    shopw/w-2 10.0.0.2:81 healthy']);
    assert.match(await fails(['watch', '--count', '0', ...C], 2), /name a service, or pass --all-services/);
  });
});

describe('resource files', () => {
  const good = `# a service and two instances
apiVersion: skein/v1
kind: Service
name: shop
labels: { owner: team-a }
defaults:
  weight: 4
  zone: eu-1
---
kind: Instance
service: shop
id: shop-1
address: 10.0.3.1
port: 8080
---
- kind: Instance
  service: shop
  id: shop-2
  address: 10.0.3.2
  port: 8081
  weight: 1
`;
  const bad = `kind: Service
name: cart
---
kind: Instance
service: cart
id: cart-1
address: 10.0.4.1
port: 70000
`;

  test('validate: a good file, a bad one (one line naming file, resource and field), nothing started', async () => {
    const g = join(files, 'good.yaml');
    const b = join(files, 'bad.yaml');
    await writeFile(g, good);
    await writeFile(b, bad);
    const rev = (await api(cp.http, 'GET', '/v1/health')).body.revision;
    assert.equal(await ok(['validate', g]), `${g}: 3 resource(s) valid\n`);
    const line = await fails(['validate', b]);
    assert.ok(line.includes(b), `names the file: ${line}`);
    assert.match(line, /resource \[1\] Instance/, 'names the resource');
    assert.match(line, /"cart-1"/);
    assert.match(line, /\bport\b/, 'names the field');
    assert.match(line, /SKEIN_E_VALIDATION/);
    // Unknown fields and YAML syntax errors too.
    const b2 = join(files, 'unknown.yaml');
    await writeFile(b2, 'kind: Instance\nservice: cart\nid: c\naddress: 10.0.0.1\nport: 80\ncheck: { type: tcp, colour: red }\n');
    assert.match(await fails(['validate', b2]), /unknown\.yaml: resource \[0\] Instance "c".*check\.colour/);
    const b3 = join(files, 'broken.yaml');
    await writeFile(b3, 'kind: Instance\n  port: [80\n');
    assert.match(await fails(['validate', b3]), /broken\.yaml.*SKEIN_E_BAD_YAML/);
    // Validating touched nothing.
    assert.equal((await api(cp.http, 'GET', '/v1/health')).body.revision, rev);
  });

  test('apply -f: services first, their defaults applied; re-apply is unchanged; a bad file changes nothing', async () => {
    const g = join(files, 'apply.yaml');
    await writeFile(g, good);
    const out = await ok(['apply', '-f', g, ...C]);
    assert.equal(out, 'service/shop created\ninstance/shop/shop-1 created\ninstance/shop/shop-2 created\n');
    const s1 = (await api(cp.http, 'GET', '/v1/services/shop/instances/shop-1')).body.instance;
    assert.deepEqual([s1.address, s1.port, s1.weight, s1.zone], ['10.0.3.1', 8080, 4, 'eu-1']);
    const s2 = (await api(cp.http, 'GET', '/v1/services/shop/instances/shop-2')).body.instance;
    assert.deepEqual([s2.weight, s2.zone], [1, 'eu-1']);
    assert.deepEqual((await api(cp.http, 'GET', '/v1/services/shop')).body.definition.labels, { owner: 'team-a' });

    const json = JSON.parse(await ok(['apply', '-f', g, '-o', 'json', ...C]));
    assert.deepEqual(json.applied.map((x: any) => x.result), ['unchanged', 'unchanged', 'unchanged']);

    // From standard input, with one change.
    const changed = good.replace('port: 8081', 'port: 8082');
    const r = await skein(['apply', '-f', '-', ...C], { input: changed });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'service/shop unchanged\ninstance/shop/shop-1 unchanged\ninstance/shop/shop-2 updated\n');

    const b = join(files, 'bad-apply.yaml');
    await writeFile(b, bad);
    const before = await api(cp.http, 'GET', '/v1/health');
    const line = await fails(['apply', '-f', b, ...C], 1);
    assert.ok(line.includes(b));
    assert.match(line, /resource \[1\] Instance/);
    const afterH = await api(cp.http, 'GET', '/v1/health');
    assert.equal(afterH.body.revision, before.body.revision, 'a bad file changes nothing (not even its good Service)');
    assert.equal((await api(cp.http, 'GET', '/v1/services/cart')).status, 404);
  });

  test('apply -f: Routes after their Service, into its routes; a Route for a service that does not exist is refused', async () => {
    const f = join(files, 'routes.yaml');
    await writeFile(
      f,
      [
        'kind: Route',
        'service: orders',
        'name: checkout',
        'match: { pathPrefix: /checkout, methods: [POST] }',
        'timeouts: { request: 30s }',
        'retries: { nonIdempotent: true }',
        '---',
        'kind: Service',
        'name: orders',
        'timeouts: { request: 10s, perTry: 2s }',
        '',
      ].join('\n'),
    );
    assert.equal(await ok(['apply', '-f', f, ...C]), 'service/orders created\nroute/orders/checkout created\n');
    const def = (await api(cp.http, 'GET', '/v1/services/orders')).body.definition;
    assert.deepEqual(def.traffic.routes.map((r: { name: string }) => r.name), ['checkout', 'default']);
    assert.equal(def.traffic.routes[0].requestTimeoutMs, 30_000);
    assert.equal(def.traffic.routes[0].perTryTimeoutMs, 2000, "the service's per-try timeout, inherited");
    assert.equal(def.traffic.routes[0].retries.nonIdempotent, true);

    const orphan = join(files, 'orphan-route.yaml');
    await writeFile(orphan, 'kind: Route\nservice: nosuch\nname: a\nmatch: { path: /a }\n');
    const line = await fails(['apply', '-f', orphan, ...C], 1);
    assert.match(line, /nosuch/);
    assert.match(line, /SKEIN_E_UNKNOWN_SERVICE/);
    const bad = join(files, 'bad-route.yaml');
    await writeFile(bad, 'kind: Route\nservice: orders\nname: a\nretries: { on: [sometimes] }\n');
    const badLine = await fails(['validate', bad], 1);
    assert.match(badLine, /resource \[0\] Route "a"/);
    assert.match(badLine, /retries\.on\[0\]/);
  });

  test('schema: valid JSON Schema that accepts good resources and refuses bad ones', async () => {
    const schema = JSON.parse(await ok(['schema']));
    // Ajv for the draft the schema declares (draft-07 by default, 2020-12 with its own class).
    assert.match(schema.$schema, /^https?:\/\/json-schema\.org\/(draft-07\/schema#|draft\/2020-12\/schema)$/);
    const ajv = schema.$schema.includes('2020-12') ? new Ajv2020({ strict: false }) : new Ajv({ strict: false });
    assert.equal(ajv.validateSchema(schema), true, JSON.stringify(ajv.errors));
    const validate = ajv.compile(schema);
    assert.equal(validate({ kind: 'Service', name: 'shop', defaults: { weight: 2 } }), true, JSON.stringify(validate.errors));
    assert.equal(validate([{ kind: 'Instance', service: 'shop', id: 's-1', address: '10.0.0.1', port: 80, check: { type: 'http', path: '/health' } }]), true, JSON.stringify(validate.errors));
    assert.equal(validate({ kind: 'Instance', service: 'shop', id: 's-1', address: '10.0.0.1', port: 70000 }), false);
    assert.equal(validate({ kind: 'Instance', service: 'shop', id: 's-1', address: '10.0.0.1', port: 80, colour: 'red' }), false);
    assert.equal(validate({ kind: 'Service', name: 'User_Service' }), false);
    assert.equal(validate({ kind: 'Deployment', name: 'x' }), false);
  });
});

describe('errors and help', () => {
  test('an older Node: one line naming the version needed, exit code 1, nothing else loaded', async () => {
    const NEED = /^skein: needs Node\.js 24 or newer, this is v20\.11\.0\. In a clone of Skein, `npm ci` installs one: run `npx skein \.\.\.`, `npm test` or `npm run demo`\.\n$/;
    // The version the check reads, as Node 20 reports it (any Node can run this).
    const fake = `Object.defineProperty(process.versions, 'node', { value: '20.11.0' }); await import(${JSON.stringify(SKEIN_BIN)});`;
    const r = await run(process.execPath, ['--input-type=module', '-e', fake]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, NEED);
    assert.equal(r.stdout, '');
    // A real Node 20, where the machine has one (Debian 12's /usr/bin/node): the same line.
    const old = await run('/usr/bin/node', ['--version']).catch(() => null);
    if (old !== null && /^v(1\d|2[0-3])\./.test(old.stdout)) {
      const real = await run('/usr/bin/node', [SKEIN_BIN, 'services']);
      assert.equal(real.code, 1);
      assert.match(real.stderr, new RegExp(`^skein: needs Node\\.js 24 or newer, this is ${old.stdout.trim().replace(/\./g, '\\.')}\\.`));
    }
  });

  test('a wrong flag: one clear line and a non-zero exit', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['services', '--bogus', ...C], 2, /^error: unknown option '--bogus'$/],
      [['register', 'web', 'x', '--address', '10.0.0.1', '--port', 'eighty', ...C], 2, /^skein: --port must be an integer, got "eighty" \[SKEIN_E_USAGE\]$/],
      [['register', 'web', 'x', '--port', '80', ...C], 2, /required option '--address <ip>' not specified/],
      [['frobnicate'], 2, /unknown command 'frobnicate'/],
      [['register', 'web', 'x', '--address', '10.0.0.1', '--port', '80', '--ttl', '5s', ...C], 2, /--ttl need --check/],
      [['register', 'web', 'x', '--address', '10.0.0.1', '--port', '0', ...C], 1, /port must be >= 1.*\[SKEIN_E_VALIDATION\]/],
    ];
    await Promise.all(cases.map(async ([args, code, re]) => assert.match(await fails(args, code), re)));
    assert.equal((await api(cp.http, 'GET', '/v1/services/web/instances/x')).status, 404, 'nothing was registered');
  });

  test('an unreachable control plane: one line saying "cannot reach", exit code 1', async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}`;
    const cmds = [
      ['services'],
      ['register', 'web', 'x', '--address', '10.0.0.1', '--port', '80'],
      ['watch', 'web', '--count', '1'],
    ];
    await Promise.all(
      cmds.map(async (c) => {
        const line = await fails([...c, '--control', url], 1);
        assert.match(line, /cannot reach the control plane/, `${c[0]}: ${line}`);
        assert.ok(line.includes(`127.0.0.1:${port}`), line);
      }),
    );
    // SKEIN_CONTROL works like --control.
    const r = await skein(['services'], { env: { SKEIN_CONTROL: url } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the control plane at http:\/\/127\.0\.0\.1:\d+/);
  });

  test('--help works on every command', async () => {
    const commands = ['control', 'register', 'deregister', 'heartbeat', 'apply', 'services', 'endpoints', 'watch', 'events', 'schema', 'validate'];
    const root = await skein(['--help']);
    assert.equal(root.code, 0);
    for (const c of commands) assert.match(root.stdout, new RegExp(`^  ${c}\\b`, 'm'), `root help lists ${c}`);
    await Promise.all(
      commands.map(async (c) => {
        const r = await skein([c, '--help']);
        assert.equal(r.code, 0, `${c} --help: ${r.stderr}`);
        assert.match(r.stdout, new RegExp(`^Usage: skein ${c}\\b`), c);
        assert.match(r.stdout, /-h, --help/);
      }),
    );
  });
});
