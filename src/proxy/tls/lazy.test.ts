/**
 * A proxy loads the certificate modules (@peculiar/x509 and its ASN.1 schemas, through
 * src/identity/certs.ts) only with mTLS on, and Ajv only when it validates something: a real
 * `skein proxy` with an inbound workload, and a Proxy with mTLS, each in a process whose module
 * loads are recorded (node:module's registerHooks) and written out when it exits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';

const ROOT = join(import.meta.dirname, '..', '..', '..', '..');

/** Records the URL of every module loaded and writes them, one a line, to $LOADED_OUT at exit. */
const RECORDER = `import { registerHooks } from 'node:module';
import { writeFileSync } from 'node:fs';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
process.on('exit', () => writeFileSync(process.env.LOADED_OUT, loaded.join('\\n')));
`;

async function recorder(t: { after(fn: () => Promise<void>): void }): Promise<{ dir: string; hook: string; out: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'skein-lazy-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const hook = join(dir, 'recorder.mjs');
  await writeFile(hook, RECORDER);
  return { dir, hook, out: join(dir, 'loaded.txt') };
}

/** Runs `argv` with the recorder until `ready(line)` is true of a line of its stdout, then SIGTERM; the modules it loaded. */
async function loadedBy(rec: { hook: string; out: string }, argv: string[], ready: (line: string) => boolean): Promise<string[]> {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(rec.hook).href}`, LOADED_OUT: rec.out } });
  const lines: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
  try {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (l) => {
        lines.push(l);
        if (ready(l)) resolve();
      });
      createInterface({ input: child.stderr }).on('line', (l) => lines.push(l));
      void exited.then((code) => reject(new Error(`exited with ${code} before it was ready:\n${lines.join('\n')}`)));
    });
    child.kill('SIGTERM');
    assert.equal(await exited, 0, lines.join('\n'));
  } finally {
    clearTimeout(kill);
    child.kill('SIGKILL');
  }
  return (await readFile(rec.out, 'utf8')).split('\n');
}

const from = (loaded: string[], pkg: string) => loaded.filter((u) => u.includes(`/node_modules/${pkg}/`));

test('skein proxy with an inbound workload and mTLS off loads neither the certificate modules nor Ajv', async (t) => {
  const rec = await recorder(t);
  const app = createServer();
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => app.close(() => r())));
  const appPort = (app.address() as AddressInfo).port;
  const loaded = await loadedBy(
    rec,
    [join(ROOT, 'bin', 'skein.js'), 'proxy', '--no-control', '--admin', '127.0.0.1:0', '--workload', `name=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--log-level', 'info'],
    (l) => l.includes('"proxy ready"'),
  );
  // The recorder saw the proxy itself (so an empty list cannot pass) ...
  assert.ok(loaded.some((u) => u.endsWith('/dist/src/proxy/proxy.js')), `the proxy's module is not among the ${loaded.length} recorded`);
  assert.ok(loaded.some((u) => u.endsWith('/dist/src/identity/mtls/refusal.js')));
  // ... and none of these.
  assert.deepEqual(from(loaded, '@peculiar/x509'), []);
  assert.deepEqual(from(loaded, 'reflect-metadata'), []);
  assert.deepEqual(from(loaded, 'ajv'), []);
  assert.deepEqual(loaded.filter((u) => /\/dist\/src\/(identity\/certs|proxy\/tls\/(identities|inbound|outbound|peer))\.js$/.test(u)), []);
});

test('a Proxy with mTLS on loads the certificate modules before its first workload (tlsReady), and one with mTLS off never does', async (t) => {
  const rec = await recorder(t);
  const proxyUrl = pathToFileURL(join(ROOT, 'dist', 'src', 'proxy', 'proxy.js')).href;
  const script = (mode: string) => `
    process.once('SIGTERM', () => process.exit(0));
    const { Proxy } = await import(${JSON.stringify(proxyUrl)});
    const source = { info: () => new Promise(() => {}), issue: () => new Promise(() => {}) };
    const proxy = new Proxy({ controlUrl: null, mtls: ${mode === 'off' ? 'null' : `{ source, trustDomain: 'lazy.test', mode: '${mode}' }`} });
    const before = proxy.identities === null;
    const ids = await proxy.tlsReady();
    console.log(JSON.stringify({ before, after: ids === null ? null : ids.trustDomain }));
    await proxy.stop(0);
    setInterval(() => {}, 1000);
  `;
  let seen: { before: boolean; after: string | null } | null = null;
  const strict = await loadedBy(rec, ['--input-type=module', '-e', script('strict')], (l) => {
    seen = JSON.parse(l) as typeof seen;
    return true;
  });
  assert.deepEqual(seen, { before: true, after: 'lazy.test' });
  assert.equal(from(strict, '@peculiar/x509').length > 0, true, 'mTLS on: @peculiar/x509 is loaded');
  assert.ok(strict.some((u) => u.endsWith('/dist/src/identity/mtls/identities.js')));

  const off = await loadedBy(rec, ['--input-type=module', '-e', script('off')], (l) => {
    seen = JSON.parse(l) as typeof seen;
    return true;
  });
  assert.deepEqual(seen, { before: true, after: null });
  assert.ok(off.some((u) => u.endsWith('/dist/src/proxy/proxy.js')));
  assert.deepEqual(from(off, '@peculiar/x509'), []);
});
