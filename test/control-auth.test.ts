/**
 * Control-plane tokens against a real `skein control` process: writes need a token of the right
 * scope, refusals name the scope needed (over HTTP and as the CLI's one line), proxy tokens only
 * for their services, revocation, the admin token file (0600, kept across a restart), listening
 * beyond loopback refused without --insecure-listen, and the API and a proxy's admin port seen
 * from another host (a network namespace).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { localTokenPath } from '../src/control/auth/token-files.js';
import { SKEIN_BIN, api, run, skein, startControl, tempDir, type ControlProcess } from './helpers.js';
import { startProxy } from './proxy-helpers.js';

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** A write sent with exactly these headers (api() would add the admin token to a write without one). */
const raw = async (base: string, method: string, path: string, body: unknown, headers: Record<string, string>) => {
  const res = await fetch(base + path, { method, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as any };
};

let dir: { path: string; remove: () => Promise<void> };
let cp: ControlProcess;
let admin: string;
const minted: Record<string, string> = {};

before(async () => {
  dir = await tempDir('skein-auth-');
  cp = await startControl({ dataDir: join(dir.path, 'data') });
  admin = (await readFile(join(dir.path, 'data', 'admin.token'), 'utf8')).trim();
  const mint = async (body: object) => {
    const r = await api(cp.http, 'POST', '/v1/tokens', body, bearer(admin));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { token: string; name: string; scope: string; services: string[] | null; expiresAt: string | null };
  };
  for (const b of [
    { scope: 'read', name: 'dash' },
    { scope: 'automation', name: 'ci' },
    { scope: 'proxy', name: 'edge-1', services: ['web'] },
    { scope: 'tap', name: 'debug' },
    { scope: 'read', name: 'temp' },
  ]) {
    const t = await mint(b);
    assert.equal(t.name, b.name);
    assert.match(t.token, new RegExp(`^skein_${{ read: 'rd', automation: 'aut', proxy: 'prx', tap: 'tap' }[b.scope]}_[A-Za-z0-9_-]{43}$`));
    minted[b.name] = t.token;
  }
});

after(async () => {
  await cp?.stop();
  await dir?.remove();
});

describe('the API', () => {
  test('a write with no token: 401 naming the scopes that would do', async () => {
    const r = await raw(cp.http, 'PUT', '/v1/services/web', {}, {});
    assert.equal(r.status, 401);
    assert.equal(r.headers.get('x-skein-error'), 'SKEIN_E_UNAUTHENTICATED');
    assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="skein", scope="automation admin"');
    assert.deepEqual(r.body, {
      code: 'SKEIN_E_UNAUTHENTICATED',
      message: 'PUT /v1/services/:service needs a token with scope "automation" or "admin": none was sent',
      details: { scopes: ['automation', 'admin'] },
    });
    // Nothing was written.
    assert.equal((await api(cp.http, 'GET', '/v1/services/web')).status, 404);
  });

  test('a token that is not "Bearer <token>", or not known: 401 saying so', async () => {
    const basic = await raw(cp.http, 'PUT', '/v1/services/web', {}, { authorization: `Basic ${admin}` });
    assert.equal(basic.status, 401);
    assert.match(basic.body.message, /the authorization header is not "Bearer <token>"$/);
    const unknown = await raw(cp.http, 'PUT', '/v1/services/web', {}, bearer(`skein_adm_${'A'.repeat(43)}`));
    assert.equal(unknown.status, 401);
    assert.equal(unknown.body.message, 'PUT /v1/services/:service needs a token with scope "automation" or "admin": the token is not known (never minted, or revoked)');
  });

  test('a read token writing: 403 naming its scope and the scopes needed', async () => {
    const r = await raw(cp.http, 'PUT', '/v1/services/web', {}, bearer(minted['dash'] as string));
    assert.equal(r.status, 403);
    assert.equal(r.headers.get('x-skein-error'), 'SKEIN_E_FORBIDDEN');
    assert.equal(r.body.message, 'the token "dash" has scope "read"; PUT /v1/services/:service needs a token with scope "automation" or "admin"');
    // Reads stay open on loopback, with a token or without.
    assert.equal((await api(cp.http, 'GET', '/v1/services')).status, 200);
  });

  test('automation applies services and routes, but cannot mint tokens', async () => {
    const ci = bearer(minted['ci'] as string);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/web', { ports: [{ name: 'http', port: 80 }] }, ci)).status, 201);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/web/routes/api', { match: { pathPrefix: '/api' } }, ci)).status, 201);
    const r = await raw(cp.http, 'POST', '/v1/tokens', { scope: 'read', name: 'sneaky' }, ci);
    assert.equal(r.status, 403);
    assert.equal(r.body.message, 'the token "ci" has scope "automation"; POST /v1/tokens needs a token with scope "admin"');
    assert.equal((await fetch(`${cp.http}/v1/tokens`, { headers: ci })).status, 403);
  });

  test('a proxy token registers instances of its services only, and announces its proxy', async () => {
    const p = bearer(minted['edge-1'] as string);
    const own = await raw(cp.http, 'PUT', '/v1/services/web/instances/web-1', { address: '127.0.0.1', port: 8080 }, p);
    assert.equal(own.status, 201, JSON.stringify(own.body));
    const other = await raw(cp.http, 'PUT', '/v1/services/db/instances/db-1', { address: '127.0.0.1', port: 5432 }, p);
    assert.equal(other.status, 403);
    assert.equal(other.body.message, 'the proxy token "edge-1" may change instances of "web" only, not of "db"');
    assert.equal((await raw(cp.http, 'DELETE', '/v1/services/db/instances/db-1', undefined, p)).status, 403);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/web', {}, p)).status, 403, 'not the service itself');
    assert.equal((await raw(cp.http, 'PUT', '/v1/proxies/edge-1', { admin: '127.0.0.1:4191', workloads: [] }, p)).status, 200);
    assert.equal((await raw(cp.http, 'PUT', '/v1/proxies/edge-2', { admin: '127.0.0.1:4192', workloads: [] }, bearer(minted['ci'] as string))).status, 403);
  });

  test('a tap with headers or bodies needs the tap scope, even on loopback', async () => {
    const path = '/v1/tap?service=web&headers=1&limit=1';
    const none = await fetch(cp.http + path);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { message: string }).message, 'GET /v1/tap with headers or bodies needs a token with scope "tap" or "admin": none was sent');
    assert.equal((await fetch(cp.http + path, { headers: bearer(minted['dash'] as string) })).status, 403);
    const ac = new AbortController();
    const ok = await fetch(cp.http + path, { headers: bearer(minted['debug'] as string), signal: ac.signal });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
    ac.abort();
  });

  test('GET /v1/tokens lists names and scopes, never a secret; a revoked token is refused', async () => {
    const list = await fetch(`${cp.http}/v1/tokens`, { headers: bearer(admin) });
    const text = await list.text();
    for (const t of [admin, ...Object.values(minted)]) assert.ok(!text.includes(t.slice(10)), 'no secret in the list');
    const names = (JSON.parse(text) as { tokens: Array<{ name: string; scope: string }> }).tokens.map((t) => `${t.name}:${t.scope}`);
    assert.deepEqual(names, ['admin:admin', 'ci:automation', 'dash:read', 'debug:tap', 'edge-1:proxy', 'temp:read']);
    assert.equal((await raw(cp.http, 'DELETE', '/v1/tokens/temp', undefined, bearer(admin))).status, 200);
    const r = await fetch(`${cp.http}/v1/tokens`, { headers: bearer(minted['temp'] as string) });
    assert.equal(r.status, 401);
    assert.match(((await r.json()) as { message: string }).message, /the token is not known \(never minted, or revoked\)$/);
  });
});

describe('the CLI', () => {
  test('finds the admin token on the control plane\'s host by itself', async () => {
    const r = await skein(['register', 'web', 'web-cli', '--address', '127.0.0.1', '--port', '8081', '--control', cp.http]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^registered web\/web-cli at 127\.0\.0\.1:8081/);
  });

  test('without a token: one line that says which token the command needs', async () => {
    const elsewhere = await tempDir('skein-auth-cwd-');
    try {
      const file = join(elsewhere.path, 'svc.yaml');
      await writeFile(file, 'apiVersion: skein/v1\nkind: Service\nname: shop\n');
      // No local copy of the admin token (another runtime dir), no data dir in the working directory.
      const env = { XDG_RUNTIME_DIR: elsewhere.path, SKEIN_TOKEN: '' };
      const r = await skein(['apply', '-f', file, '--control', cp.http], { env, cwd: elsewhere.path });
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'skein: this command needs a token with scope "automation" or "admin": pass --token, set SKEIN_TOKEN or run it on the control plane\'s host [SKEIN_E_UNAUTHENTICATED]\n');
      const ro = await skein(['apply', '-f', file, '--control', cp.http], { env: { ...env, SKEIN_TOKEN: minted['dash'] as string }, cwd: elsewhere.path });
      assert.equal(ro.code, 1);
      assert.equal(
        ro.stderr,
        'skein: this command needs a token with scope "automation" or "admin"; the token from SKEIN_TOKEN was refused: the token "dash" has scope "read"; PUT /v1/services/:service needs a token with scope "automation" or "admin" [SKEIN_E_FORBIDDEN]\n',
      );
      const ci = await skein(['apply', '-f', file, '--control', cp.http], { env: { ...env, SKEIN_TOKEN: minted['ci'] as string }, cwd: elsewhere.path });
      assert.equal(ci.code, 0, ci.stderr);
      assert.equal(ci.stdout, 'service/shop created\n');
    } finally {
      await elsewhere.remove();
    }
  });
});

describe('skein token', () => {
  test('create prints the token once (stdout alone), list shows it without the secret, revoke makes it refused', async () => {
    const c = await skein(['token', 'create', '--scope', 'proxy', '--name', 'cli-proxy', '--service', 'web,api', '--control', cp.http]);
    assert.equal(c.code, 0, c.stderr);
    const token = c.stdout.trim();
    assert.match(token, /^skein_prx_[A-Za-z0-9_-]{43}$/);
    assert.equal(c.stderr, 'token "cli-proxy" (scope proxy: api, web), valid until revoked; it is not shown again\n');
    const reg = await api(cp.http, 'PUT', '/v1/services/web/instances/web-tok', { address: '127.0.0.1', port: 8090 }, { authorization: `Bearer ${token}` });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
    const l = await skein(['token', 'list', '--control', cp.http]);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /^cli-proxy\s+proxy\s+api,web\s+\S+\s+never$/m);
    assert.ok(!l.stdout.includes(token), 'no secret in the list');
    const rv = await skein(['token', 'revoke', 'cli-proxy', '--control', cp.http]);
    assert.equal(rv.code, 0, rv.stderr);
    assert.equal(rv.stdout, 'revoked cli-proxy (scope proxy)\n');
    const after = await api(cp.http, 'PUT', '/v1/services/web/instances/web-tok', { address: '127.0.0.1', port: 8090 }, { authorization: `Bearer ${token}` });
    assert.equal(after.status, 401, JSON.stringify(after.body));
    const bad = await skein(['token', 'create', '--scope', 'admin', '--name', 'x', '--control', cp.http]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /argument 'admin' is invalid/);
  });
});

describe('the admin token file', () => {
  test('is mode 0600 (and its local copy too), and survives a restart with the minted tokens', async () => {
    const file = join(dir.path, 'data', 'admin.token');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const local = localTokenPath(cp.httpPort);
    assert.equal((await stat(local)).mode & 0o777, 0o600);
    assert.equal((await readFile(local, 'utf8')).trim(), admin);
    const ready = cp.logs.map((l) => JSON.parse(l.startsWith('{') ? l : '{}') as { msg?: string; adminToken?: string }).find((j) => j.msg === 'control plane ready');
    assert.equal(ready?.adminToken, file, 'the log says where the admin token is');
    assert.ok(!cp.logs.join('\n').includes(admin), 'and never prints the token itself');

    await cp.stop();
    await assert.rejects(stat(local), { code: 'ENOENT' }, 'the local copy is removed at shutdown');
    cp = await startControl({ dataDir: join(dir.path, 'data') });
    assert.equal((await readFile(file, 'utf8')).trim(), admin);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/after-restart', {}, bearer(admin))).status, 201);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/after-restart-2', {}, bearer(minted['ci'] as string))).status, 201);
    assert.equal((await raw(cp.http, 'PUT', '/v1/services/x', {}, bearer(minted['temp'] as string))).status, 401, 'revoked stays revoked');
  });

  test('readable by others: the control plane does not start, and says why', async () => {
    const data = join(dir.path, 'loose');
    await mkdir(data);
    await writeFile(join(data, 'admin.token'), `skein_adm_${'B'.repeat(43)}\n`);
    await chmod(join(data, 'admin.token'), 0o644);
    const r = await run(process.execPath, [SKEIN_BIN, 'control', '--data-dir', data, '--http', '127.0.0.1:0', '--dns', 'off']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^skein: ${join(data, 'admin.token')} may be read by other users \\(mode 0644\\): chmod 600 it, or delete it \\(and restart\\) for a new admin token \\[SKEIN_E_FILE\\]\\n$`));
  });
});

test('--data-dir none with nowhere to write the admin token: refused at start (nobody could ever write)', async () => {
  const notADir = join(dir.path, 'runtime-file');
  await writeFile(notADir, '');
  const r = await skein(['control', '--data-dir', 'none', '--http', '127.0.0.1:0', '--dns', 'off'], { env: { XDG_RUNTIME_DIR: notADir } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^skein: cannot write the admin token's local copy \(.+\); with --data-dir none it is the only copy: give a --data-dir, or set XDG_RUNTIME_DIR to a directory of your own \[SKEIN_E_FILE\]\n$/);
});

test('listening beyond loopback without TLS is refused unless --insecure-listen', async () => {
  const r = await skein(['control', '--data-dir', 'none', '--http', '0.0.0.0:0', '--dns', 'off']);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    'skein: the HTTP API (--http) would listen on 0.0.0.0, beyond loopback, without TLS: tokens would cross the network in clear. Listen on 127.0.0.1 (with a TLS-terminating proxy in front for other hosts), or pass --insecure-listen on a network you trust [SKEIN_E_INSECURE_LISTEN]\n',
  );
});

const canNetns = process.getuid?.() === 0 && (() => {
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('from another host (a network namespace)', { skip: canNetns ? false : 'needs root and iproute2' }, () => {
  const n = process.pid % 200;
  const ns = `skein-auth-${process.pid}`;
  const [hostIf, nsIf] = [`skah${process.pid % 100000}`, `skan${process.pid % 100000}`];
  const hostIp = `10.213.${n}.1`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  let far: ControlProcess | null = null;
  let farDir: { path: string; remove: () => Promise<void> } | null = null;

  before(() => {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostIp}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `10.213.${n}.2/30`, 'dev', nsIf);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  });

  after(async () => {
    await far?.stop();
    await farDir?.remove();
    try {
      ip('link', 'del', hostIf);
    } catch {
      /* gone with the namespace */
    }
    ip('netns', 'del', ns);
  });

  /** An HTTP request from inside the namespace (curl): status and body. */
  const fromNs = async (method: string, url: string, headers: Record<string, string> = {}) => {
    const args = ['netns', 'exec', ns, 'curl', '-sS', '-m', '5', '-o', '-', '-w', '\n%{http_code}', '-X', method, url];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    if (method !== 'GET') args.push('-H', 'content-type: application/json', '--data', '{}');
    const r = await run('ip', args);
    const cut = r.stdout.lastIndexOf('\n');
    return { code: r.code, status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut), stderr: r.stderr };
  };

  test('a write without a token is refused with 401; reads need a token; a proxy admin port on loopback is not reachable', async () => {
    farDir = await tempDir('skein-auth-far-');
    far = await startControl({ dataDir: farDir.path, args: ['--http', `${hostIp}:0`, '--insecure-listen'] });
    assert.equal(far.http, `http://${hostIp}:${far.httpPort}`);
    const farAdmin = (await readFile(join(farDir.path, 'admin.token'), 'utf8')).trim();

    const write = await fromNs('PUT', `${far.http}/v1/services/web`);
    assert.equal(write.status, 401, write.stderr);
    assert.equal(JSON.parse(write.body).message, 'PUT /v1/services/:service needs a token with scope "automation" or "admin": none was sent');
    const read = await fromNs('GET', `${far.http}/v1/services`);
    assert.equal(read.status, 401);
    assert.equal(JSON.parse(read.body).message, 'GET /v1/services from beyond loopback needs a token with scope "read", "tap", "proxy", "automation" or "admin", or a mesh certificate on the control plane\'s mTLS listener: none was sent');
    const mint = await api(far.http, 'POST', '/v1/tokens', { scope: 'read', name: 'dash' }, bearer(farAdmin));
    assert.equal(mint.status, 201);
    assert.equal((await fromNs('GET', `${far.http}/v1/services`, bearer(mint.body.token))).status, 200);
    assert.equal((await fromNs('PUT', `${far.http}/v1/services/web`, bearer(mint.body.token))).status, 403);
    assert.equal((await fromNs('PUT', `${far.http}/v1/services/web`, bearer(farAdmin))).status, 201);

    const proxy = await startProxy({ control: far.http, workloads: ['name=client,outbound=127.0.0.1:0'], env: { SKEIN_TOKEN: farAdmin } });
    try {
      const adminPort = proxy.adminPort;
      assert.equal((await fetch(`${proxy.admin}/live`)).status, 200, 'reachable on loopback');
      const r = await fromNs('GET', `http://${hostIp}:${adminPort}/live`);
      assert.equal(r.status, 0);
      assert.match(r.stderr, /Failed to connect|Connection refused|Couldn't connect/);
    } finally {
      await proxy.stop();
    }
  });
});
