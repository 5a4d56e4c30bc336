/**
 * `skein proxy` flags: every malformed one is refused at once with one line naming the flag (and
 * nothing listens), and `--no-control` runs inbound listeners without a control plane.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { skein } from './helpers.js';
import { httpGet, startProxy, type ProxyProcess } from './proxy-helpers.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

const refused: Array<[string, string[], RegExp]> = [
  ['a workload without a name', ['--workload', 'outbound=127.0.0.1:0'], /--workload: name= is required/],
  ['an unknown key', ['--workload', 'name=a,outbund=127.0.0.1:0'], /unknown key "outbund"/],
  ['a part that is not KEY=VALUE', ['--workload', 'name=a,127.0.0.1:0'], /is not KEY=VALUE/],
  ['a key given twice', ['--workload', 'name=a,name=b,outbound=127.0.0.1:0'], /"name" given twice/],
  ['inbound without app', ['--workload', 'name=a,inbound=127.0.0.1:0'], /inbound= and app= go together/],
  ['neither listener', ['--workload', 'name=a'], /give outbound=, or inbound= and app=/],
  ['a malformed address', ['--workload', 'name=a,outbound=localhost'], /--workload outbound must be HOST:PORT/],
  ['a name used twice', ['--workload', 'name=a,outbound=127.0.0.1:0', '--workload', 'name=a,outbound=127.0.0.1:0'], /the name "a" is used twice/],
  ['outbound without a control plane', ['--no-control', '--workload', 'name=a,outbound=127.0.0.1:0'], /--no-control: outbound listeners need a control plane/],
  ['a malformed duration', ['--header-timeout', 'soon'], /--header-timeout must be a duration/],
  ['a limit out of range', ['--max-head', '10'], /--max-head must be an integer from 1024/],
  ['an unknown protocol', ['--workload', 'name=a,outbound=127.0.0.1:0,pin=db,protocol=udp'], /protocol must be one of http, http2, grpc, tcp, got "udp"/],
  ['a tcp outbound listener that is not pinned', ['--workload', 'name=a,outbound=127.0.0.1:0,protocol=tcp'], /an outbound listener of protocol tcp carries streams to one service: give pin=SERVICE/],
  ['pin without an outbound listener', ['--workload', 'name=a,inbound=127.0.0.1:0,app=127.0.0.1:1,pin=db'], /pin= pins an outbound listener: give outbound= too/],
  ['a pin that is not a service name', ['--workload', 'name=a,outbound=127.0.0.1:0,pin=Db_1'], /pin must be a service name/],
];

for (const [name, args, message] of refused) {
  test(`refused: ${name}`, async () => {
    const r = await skein(['proxy', '--admin', 'off', ...args], { timeoutMs: 15_000 });
    assert.notEqual(r.code, 0, `exit code for ${args.join(' ')}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0] ?? '', message);
    assert.match(lines[0] ?? '', /SKEIN_E_USAGE/);
    assert.doesNotMatch(r.stdout, /proxy ready/);
  });
}

test('an address in use is refused with SKEIN_E_ADDRESS_IN_USE, naming the workload', async () => {
  const holder = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => holder.close(() => r())));
  const port = (holder.address() as AddressInfo).port;
  const r = await skein(['proxy', '--admin', 'off', '--no-control', '--workload', `name=web,inbound=127.0.0.1:${port},app=127.0.0.1:9`], { timeoutMs: 15_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /web inbound listener: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE.*SKEIN_E_ADDRESS_IN_USE/);
});

test('--no-control: an inbound listener forwards to its app without any control plane', async () => {
  const app = http.createServer((req, res) => {
    res.writeHead(200, { 'x-forwarded-for-seen': String(req.headers['x-forwarded-for']) });
    res.end(`app saw ${req.url}`);
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
  const appPort = (app.address() as AddressInfo).port;
  const p: ProxyProcess = await startProxy({ control: 'http://127.0.0.1:9', workloads: [`name=web,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], args: ['--no-control'] });
  cleanups.push(() => p.stop());
  const inbound = p.workload('web').inbound as { port: number };
  const r = await httpGet(inbound.port, '/hello?x=1', { headers: { host: 'web' } });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.body, 'app saw /hello?x=1');
  assert.equal(r.headers['x-forwarded-for-seen'], '127.0.0.1');
  const ready = await fetch(`${p.admin}/ready`);
  assert.equal(ready.status, 200, 'ready without a control plane: it needs no snapshot');
});

test('skein proxy starts itself with 4 MB semi-spaces, in the same process; a size the user gives wins', async () => {
  const { spawn } = await import('node:child_process');
  const { readFile } = await import('node:fs/promises');
  const { createInterface } = await import('node:readline');
  const { SKEIN_BIN } = await import('./helpers.js');
  const { parseProxyReady } = await import('./proxy-helpers.js');
  const app = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as AddressInfo).port;
  const run = async (env: NodeJS.ProcessEnv) => {
    const child = spawn(process.execPath, [SKEIN_BIN, 'proxy', '--no-control', '--admin', '127.0.0.1:0', '--workload', `name=a,service=a,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`, '--log-level', 'info', '--access-log', 'off'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    try {
      const ready = await new Promise<NonNullable<ReturnType<typeof parseProxyReady>>>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (l) => {
          const r = parseProxyReady(l);
          if (r !== null) resolve(r);
        });
        child.once('exit', (code) => reject(new Error(`skein proxy exited with ${code}`)));
      });
      const inbound = ready.workloads[0]!.inbound!.port;
      for (let i = 0; i < 300; i++) assert.equal((await httpGet(inbound, `/r${i}`)).status, 200);
      const metrics = (await httpGet(ready.admin.port, '/metrics')).body;
      const newSpace = Number(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\d+)$/m.exec(metrics)?.[1]);
      // The process spawned is the proxy (execve keeps the PID): its command line says how it runs.
      const cmdline = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0');
      return { newSpace, cmdline };
    } finally {
      child.kill('SIGKILL');
    }
  };
  try {
    const ours = await run({});
    assert.deepEqual(ours.cmdline.slice(0, 3), [process.execPath, '--max-semi-space-size=4', SKEIN_BIN]);
    // V8 grows the new space up to twice the semi-space as objects survive: after 300 requests it
    // is at the cap (8 MB) on Node 24 and at 7.25 MB on Node 26; beyond what 2 MB semi-spaces hold.
    const MB = 1024 * 1024;
    assert.ok(ours.newSpace > 4 * MB && ours.newSpace <= 8 * MB, `new space within two 4 MB semi-spaces and beyond two 2 MB ones: ${ours.newSpace / MB} MB`);
    const theirs = await run({ NODE_OPTIONS: '--max-semi-space-size=2' });
    assert.ok(!theirs.cmdline.includes('--max-semi-space-size=4'), theirs.cmdline.join(' '));
    assert.ok(theirs.newSpace <= 4 * MB, `within the two 2 MB semi-spaces NODE_OPTIONS asked for: ${theirs.newSpace / MB} MB`);
  } finally {
    await new Promise((r) => app.close(r));
  }
});
