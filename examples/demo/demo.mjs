#!/usr/bin/env node
// The registry demo: starts `skein control`, three user-service and two product-service
// instances (small HTTP servers), registers them with HTTP health checks, and shows how to
// find them over the API, the CLI and DNS. Ctrl-C stops everything.
//
//   SKEIN_HTTP=127.0.0.1:7400 SKEIN_DNS=127.0.0.1:7453 node examples/demo/demo.mjs
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(root, 'bin', 'skein.js');
const httpAddr = process.env.SKEIN_HTTP ?? '127.0.0.1:7400';
const dnsAddr = process.env.SKEIN_DNS ?? '127.0.0.1:7453';
const dataDir = process.env.SKEIN_DATA_DIR ?? join(root, '.skein', 'demo');

const control = spawn(process.execPath, [bin, 'control', '--data-dir', dataDir, '--http', httpAddr, '--dns', dnsAddr], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const ready = new Promise((resolve, reject) => {
  createInterface({ input: control.stdout }).on('line', (line) => {
    try {
      const j = JSON.parse(line);
      if (j.msg === 'control plane ready') resolve(j);
      else if (j.msg === 'instance status changed') console.log(`  event: ${j.service}/${j.id} ${j.from} -> ${j.to} (${j.reason})`);
    } catch {
      /* not a log line */
    }
  });
  control.once('exit', (code) => reject(new Error(`skein control exited with code ${code}`)));
});

function instanceServer(service, id) {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/health') return res.end('{"ok":true}');
      res.end(JSON.stringify({ service, instance: id, path: req.url }));
    });
    server.listen(0, '127.0.0.1', () => resolve({ service, id, server, port: server.address().port }));
  });
}

function skein(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args, '--control', `http://${httpAddr}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
}

let instances = [];
async function shutdown(code) {
  for (const i of instances) i.server.close();
  control.kill('SIGTERM');
  await new Promise((r) => (control.exitCode !== null ? r() : control.once('exit', r)));
  process.exit(code);
}
process.once('SIGINT', () => void shutdown(0));
process.once('SIGTERM', () => void shutdown(0));

try {
  await ready;
  instances = await Promise.all([
    instanceServer('user-service', 'user-1'),
    instanceServer('user-service', 'user-2'),
    instanceServer('user-service', 'user-3'),
    instanceServer('product-service', 'product-1'),
    instanceServer('product-service', 'product-2'),
  ]);
  const applied = await skein(['apply', '-f', join(root, 'examples', 'demo', 'services.yaml')]);
  if (applied.code !== 0) throw new Error('skein apply failed');
  for (const i of instances) {
    const r = await skein(['register', i.service, i.id, '--address', '127.0.0.1', '--port', String(i.port), '--zone', 'local']);
    if (r.code !== 0) throw new Error(`registering ${i.id} failed`);
  }
  // The HTTP checks run at once; wait until every instance is healthy.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await (await fetch(`http://${httpAddr}/v1/services`)).json();
    if (r.services.reduce((n, s) => n + s.healthy, 0) === instances.length) break;
    if (Date.now() > deadline) throw new Error('instances did not become healthy');
    await new Promise((r2) => setTimeout(r2, 100));
  }
  console.log((await skein(['services'])).out);
  console.log((await skein(['endpoints', 'user-service'])).out);
  const [dnsHost, dnsPort] = [dnsAddr.slice(0, dnsAddr.lastIndexOf(':')), dnsAddr.slice(dnsAddr.lastIndexOf(':') + 1)];
  console.log(`Skein control plane is running with the demo services registered.

  API:     curl http://${httpAddr}/v1/services/user-service/instances
  CLI:     npx skein endpoints user-service --all
           npx skein watch user-service
  DNS:     dig @${dnsHost} -p ${dnsPort} user-service.service.skein +short
           dig @${dnsHost} -p ${dnsPort} user-service.service.skein SRV
  Metrics: curl http://${httpAddr}/metrics

Press Ctrl-C to stop everything.`);
} catch (e) {
  console.error(`demo: ${e.message}`);
  await shutdown(1);
}
