/**
 * mTLS between proxies (issue 13, "Targets"): two hops, client -> proxy A -> proxy B -> app, with
 * keep-alive, side by side in one run:
 *
 *   skein-plain    two `skein proxy` processes, --mtls off (plaintext between them)
 *   skein-mtls     the same with --mtls strict and join tokens (TLS 1.3, client certificates)
 *   haproxy-plain  HAProxy A -> HAProxy B, plaintext
 *   haproxy-mtls   HAProxy B `bind ... ssl crt ... ca-file ... verify required`, HAProxy A
 *                  `server ... ssl crt ... ca-file ... verify required`, with leaves of the same
 *                  mesh CA as skein-mtls (ECDSA P-256, issued by its control plane for CSRs made
 *                  here with src/identity/certs.ts)
 *
 * plus `direct` (the app alone: the baseline of "added latency"). Each path is measured as
 * bench/proxy.ts measures one (bench/proxy-lib.ts): wrk at max rate for requests/s, closed-loop
 * latency and the CPU per request of BOTH proxies' process trees summed, then wrk paced to
 * --rps for p50/p99 at a fixed rate. Both proxies of a path share the proxy CPU; the load
 * generator, the app (nginx) and the control planes share the other.
 *
 * Then the cost of a new connection, with node:tls from this process (pinned to the load
 * generator's CPU) straight to each proxy B's inbound port, one request with `connection: close`
 * per connection: plaintext, a full TLS 1.3 handshake with a mesh certificate (one
 * SecureContext for all), and a resumed one (the session ticket of the previous connection;
 * `isSessionReused()` counted). B's CPU per connection is the server side, this thread's CPU
 * (`process.threadCpuUsage`) the client side; the handshake's own cost is the TLS figure minus
 * the plaintext one.
 *
 *   bash scripts/bench-proxy.sh --paths direct    # once: installs haproxy, nginx, wrk; builds
 *   node dist/bench/proxy-mtls.js [--duration 10s] [--latency-duration 10s] [--warmup 1s] [--quick]
 *                                 [--rounds 1] [--connections 32] [--rps 1000] [--latency-connections 10]
 *                                 [--handshakes 500] [--pin auto|off] [--latency-cpus same|split]
 *                                 [--proxy-log-level info] [--json results.json]
 *
 * Speed is printed, never asserted. Every process is stopped at the end (also on errors and
 * Ctrl-C) and the temp dir removed.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, createSecureContext, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { parseArgs } from 'node:util';
import { INBOUND_PROXY_LABEL } from '../src/api/names.js';
import { MESH_ALPN } from '../src/api/mtls.js';
import type { IssuedCertificate } from '../src/api/ca.js';
import { createCsr, generateKeyPair } from '../src/identity/certs.js';
import { api, machine, printResult, runMain, startControl, table, tempDir, warnIfBusy, type Control } from './lib.js';
import {
  BODY,
  dash,
  LOAD_ARGS,
  loadOptions,
  measure,
  pinning,
  portOf,
  posInt,
  r0,
  r1,
  r2,
  requireTools,
  roots,
  signed,
  startApp,
  startHaproxy,
  startSkeinProxy,
  stopControl,
  stopTree,
  summarizeAll,
  thousands,
  treeCpuSeconds,
  waitServing,
  writeWrkScripts,
  type LoadOptions,
  type LoadPath,
  type Measure,
  type Pinning,
  type Summary,
} from './proxy-lib.js';

const PATHS = ['direct', 'skein-plain', 'skein-mtls', 'haproxy-plain', 'haproxy-mtls'] as const;
type PathName = (typeof PATHS)[number];
const LABEL: Record<PathName, string> = {
  direct: 'direct (no proxy)',
  'skein-plain': 'skein A -> B, plaintext',
  'skein-mtls': 'skein A -> B, mTLS strict',
  'haproxy-plain': 'HAProxy A -> B, plaintext',
  'haproxy-mtls': 'HAProxy A -> B, mTLS',
};

/** Issue 13: mTLS adds at most 30% CPU per request to Skein's plaintext figure. */
const MTLS_CPU_TARGET = 1.3;

const { values: argv } = parseArgs({ options: { ...LOAD_ARGS, handshakes: { type: 'string', default: '500' } } });

interface Options extends LoadOptions {
  rounds: number;
  handshakes: number;
}

function options(): Options {
  const handshakes = posInt(argv.handshakes, '--handshakes');
  return { ...loadOptions(argv, 'wrk'), handshakes: argv.quick ? Math.min(200, handshakes) : handshakes };
}

// ---------------------------------------------------------------- certificates of the mesh CA

/** A leaf of the mesh CA with its key, as a proxy holds it. */
interface MeshCert {
  identity: string;
  keyPem: string;
  /** The leaf, then its chain up to (excluding) the root. */
  certChainPem: string;
  rootsPem: string;
}

async function mintToken(control: Control, proxy: string, services: string[]): Promise<string> {
  const r = await api(control.url, 'POST', '/v1/ca/tokens', { proxy, services });
  if (r.status !== 201) throw new Error(`POST /v1/ca/tokens for ${proxy} (${services.join(', ')}): HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.token as string;
}

/**
 * Leaves for `services` from the control plane's CA, as a proxy gets them: a join token, a key
 * made here, a CSR, POST /v1/ca/certificates.
 */
async function meshCerts(control: Control, proxy: string, services: string[]): Promise<MeshCert[]> {
  const token = await mintToken(control, proxy, services);
  const keys = await Promise.all(services.map(() => generateKeyPair()));
  const requests = await Promise.all(services.map(async (service, i) => ({ service, csr: await createCsr((keys[i] as { privateKeyPem: string }).privateKeyPem) })));
  const r = await api(control.url, 'POST', '/v1/ca/certificates', { requests }, { authorization: `Bearer ${token}` });
  if (r.status !== 201) throw new Error(`POST /v1/ca/certificates for ${services.join(', ')}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  const pem = (blocks: string[]) => `${blocks.map((b) => b.trim()).join('\n')}\n`;
  return (r.body.certificates as IssuedCertificate[]).map((c, i) => ({
    identity: c.identity,
    keyPem: (keys[i] as { privateKeyPem: string }).privateKeyPem,
    certChainPem: pem([c.certificate, ...c.chain]),
    rootsPem: pem(c.roots),
  }));
}

// ---------------------------------------------------------------- the two-hop paths

interface Pair {
  /** Where the load generator calls: proxy A's listener. */
  port: number;
  a: ChildProcess;
  b: ChildProcess;
  /** Proxy B's listener that A calls (the handshakes are measured against it). */
  bPort: number;
}

/**
 * A control plane, proxy B serving service "bench" (the app) on an inbound listener registered as
 * a peer proxy's, and proxy A with an outbound listener for the workload "client": plaintext
 * (`--mtls off`) or mTLS strict (a join token each). Whatever starts is put in `started`.
 */
async function startSkeinPair(mtls: boolean, pin: Pinning, appPort: number, logLevel: string, started: { children: ChildProcess[]; controls: Control[] }): Promise<Pair & { control: Control }> {
  const control = await startControl({ dataDir: 'none' });
  roots.add(control.pid);
  started.controls.push(control);
  if (pin.backend !== null) execFileSync('taskset', ['-a', '-pc', String(pin.backend), String(control.pid)], { stdio: 'ignore' });
  const mode = mtls ? ['--mtls', 'strict', '--join-token'] : ['--mtls', 'off'];
  const token = async (proxy: string, service: string) => (mtls ? [await mintToken(control, proxy, [service])] : []);

  const b = await startSkeinProxy(pin.proxy, ['--control', control.url, '--id', 'bench-b', ...mode, ...(await token('bench-b', 'bench')), '--workload', `name=bench-1,service=bench,inbound=127.0.0.1:0,app=127.0.0.1:${appPort}`], logLevel);
  started.children.push(b.child);
  const inbound = b.workloads.find((w) => w.name === 'bench-1')?.inbound;
  if (inbound == null) throw new Error(`skein proxy B reported no inbound listener:\n${b.tail()}`);
  const bPort = portOf(inbound);
  const reg = await api(control.url, 'PUT', '/v1/services/bench/instances/bench-1', { address: '127.0.0.1', port: bPort, labels: { [INBOUND_PROXY_LABEL]: 'true' } });
  if (reg.status !== 201 && reg.status !== 200) throw new Error(`registering proxy B's inbound listener: HTTP ${reg.status} ${JSON.stringify(reg.body)}`);

  const a = await startSkeinProxy(pin.proxy, ['--control', control.url, '--id', 'bench-a', ...mode, ...(await token('bench-a', 'client')), '--workload', 'name=client-1,service=client,outbound=127.0.0.1:0'], logLevel);
  started.children.push(a.child);
  const outbound = a.workloads.find((w) => w.name === 'client-1')?.outbound;
  if (outbound == null) throw new Error(`skein proxy A reported no outbound listener:\n${a.tail()}`);
  const port = portOf(outbound);
  // A learns B's endpoint from the watch stream: poll until the two hops answer like the app.
  await waitServing(port, a.child, `skein proxy A -> B (${mtls ? 'mTLS' : 'plaintext'})`, () => `A:\n${a.tail()}\nB:\n${b.tail()}`, 30_000);
  return { port, a: a.child, b: b.child, bPort, control };
}

/** HAProxy B in front of the app and HAProxy A in front of B, with mTLS between them when `certs` are given. */
async function startHaproxyPair(dir: string, name: string, pin: Pinning, appPort: number, certs: { a: string; b: string; roots: string } | null, started: { children: ChildProcess[] }): Promise<Pair> {
  const tls = (crt: string) => (certs === null ? '' : ` ssl crt ${crt} ca-file ${certs.roots} verify required ssl-min-ver TLSv1.3`);
  const b = await startHaproxy(
    dir,
    `${name}-b`,
    pin.proxy,
    (port) => `frontend inbound
  bind 127.0.0.1:${port}${tls(certs?.b ?? '')}
  default_backend app

backend app
  http-reuse always
  server app1 127.0.0.1:${appPort}
`,
    certs === null ? 'serving' : 'listening',
  );
  started.children.push(b.child);
  const a = await startHaproxy(
    dir,
    `${name}-a`,
    pin.proxy,
    (port) => `frontend outbound
  bind 127.0.0.1:${port}
  default_backend peer

backend peer
  http-reuse always
  server b1 127.0.0.1:${b.port}${tls(certs?.a ?? '')}
`,
  );
  started.children.push(a.child);
  return { port: a.port, a: a.child, b: b.child, bPort: b.port };
}

// ---------------------------------------------------------------- new connections

type ConnMode = 'plaintext' | 'full' | 'resumed';

interface HandshakeRun {
  target: string;
  mode: ConnMode;
  connections: number;
  /** Connections whose session was resumed (`isSessionReused()`). */
  reused: number;
  /** Proxy B's CPU (its process tree) per connection: the server side. */
  serverCpuUs: number;
  /** This thread's CPU per connection: the client side. */
  clientCpuUs: number;
  /** Wall time per connection (connect, handshake, one request, close), sequential. */
  wallUs: number;
}

const REQUEST = 'GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n';

/** One connection, one request with `connection: close`, read to the end. */
function oneConnection(port: number, tls: ConnectionOptions | null, session: Buffer | undefined): Promise<{ status: number; body: string; reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = tls === null ? netConnect(port, '127.0.0.1') : tlsConnect({ host: '127.0.0.1', port, ...tls, ...(session === undefined ? {} : { session }) });
    // Without it the request waits behind the client's Finished for the peer's delayed ACK (~40 ms).
    socket.setNoDelay(true);
    let data = '';
    let latest: Buffer | undefined;
    let reused = false;
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer within 5 s from 127.0.0.1:${port}`)));
    socket.once(tls === null ? 'connect' : 'secureConnect', () => {
      // Asked now: once the socket is closed its TLS state is gone (isSessionReused() answers null).
      reused = tls !== null && (socket as TLSSocket).isSessionReused();
      socket.write(REQUEST);
    });
    socket.on('session', (s: Buffer) => (latest = s));
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (data += d));
    socket.once('error', reject);
    socket.once('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4), reused, session: latest });
    });
  });
}

/** `n` sequential connections to a proxy B (after a few not counted); CPU of both sides per connection. */
async function connections(target: string, port: number, bPid: number, tls: ConnectionOptions | null, mode: ConnMode, n: number): Promise<HandshakeRun> {
  let session: Buffer | undefined;
  const go = async () => {
    const r = await oneConnection(port, tls, mode === 'resumed' ? session : undefined);
    if (r.status !== 200 || !r.body.endsWith(BODY)) throw new Error(`${target} (${mode}): HTTP ${r.status} ${r.body.slice(0, 200)}`);
    if (r.session !== undefined) session = r.session;
    return r.reused;
  };
  for (let i = 0; i < Math.min(50, n); i++) await go(); // warm-up, and a session to resume
  const c0 = process.threadCpuUsage();
  const s0 = treeCpuSeconds(bPid);
  const t0 = performance.now();
  let reused = 0;
  for (let i = 0; i < n; i++) if (await go()) reused++;
  const wall = performance.now() - t0;
  const c1 = process.threadCpuUsage();
  const s1 = treeCpuSeconds(bPid);
  return {
    target,
    mode,
    connections: n,
    reused,
    serverCpuUs: ((s1 - s0) * 1e6) / n,
    clientCpuUs: (c1.user + c1.system - c0.user - c0.system) / n,
    wallUs: (wall * 1000) / n,
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = options();
  requireTools(['wrk', 'nginx', 'haproxy']);
  const info = machine();
  warnIfBusy(info);
  const pin = pinning(argv.pin);
  const dir = tempDir('skein-bench-mtls-');
  const say = (s: string) => process.stdout.write(s + '\n');
  say(`mTLS benchmark on ${info.cpus} x ${info.cpuModel}, node ${info.node}; ${pin.text} (both proxies of a path on it)`);
  say(`throughput: wrk -t1 -c${o.connections} -d${o.duration}s; latency: wrk at ${o.rps} req/s over ${o.latencyConnections} connections for ${o.latencyDuration}s; ${o.rounds} round(s); ${o.handshakes} new connections per handshake run`);
  const scripts = writeWrkScripts(dir.path, o);

  const started = { children: [] as ChildProcess[], controls: [] as Control[] };
  try {
    const app = await startApp(join(dir.path, 'app'), pin.backend, 'app nginx');
    started.children.push(app.child);

    const plain = await startSkeinPair(false, pin, app.port, argv['proxy-log-level'], started);
    const mtls = await startSkeinPair(true, pin, app.port, argv['proxy-log-level'], started);
    // HAProxy's and this process's certificates: leaves of skein-mtls's CA, as its proxies hold.
    const [hb, ha, client] = await meshCerts(mtls.control, 'bench-haproxy', ['bench', 'haproxy-client', 'client']) as [MeshCert, MeshCert, MeshCert];
    const file = (name: string, text: string) => {
      const p = join(dir.path, name);
      writeFileSync(p, text, { mode: 0o600 });
      return p;
    };
    const haCerts = { b: file('haproxy-b.pem', hb.certChainPem + hb.keyPem), a: file('haproxy-a.pem', ha.certChainPem + ha.keyPem), roots: file('roots.pem', hb.rootsPem) };
    const hPlain = await startHaproxyPair(dir.path, 'haproxy-plain', pin, app.port, null, started);
    const hMtls = await startHaproxyPair(dir.path, 'haproxy-mtls', pin, app.port, haCerts, started);
    say(`skein: plaintext A 127.0.0.1:${plain.port} -> B :${plain.bPort}; mTLS A :${mtls.port} -> B :${mtls.bPort}; HAProxy: plaintext A :${hPlain.port} -> B :${hPlain.bPort}; mTLS A :${hMtls.port} -> B :${hMtls.bPort}; certificates ${hb.identity}, ${ha.identity}, ${client.identity}`);

    const pidsOf = (p: Pair) => [p.a.pid as number, p.b.pid as number];
    const paths: Array<LoadPath<PathName>> = [
      { name: 'direct', port: app.port, pids: [] },
      { name: 'skein-plain', port: plain.port, pids: pidsOf(plain), controlPid: plain.control.pid },
      { name: 'skein-mtls', port: mtls.port, pids: pidsOf(mtls), controlPid: mtls.control.pid },
      { name: 'haproxy-plain', port: hPlain.port, pids: pidsOf(hPlain) },
      { name: 'haproxy-mtls', port: hMtls.port, pids: pidsOf(hMtls) },
    ];
    const ourRoots = () => [...roots];
    const all: Array<Measure<PathName>> = [];
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? [...paths] : [...paths].reverse();
      for (const p of order) {
        process.stdout.write(`round ${round + 1}/${o.rounds}: ${LABEL[p.name]} ... `);
        const m = await measure(p, round, { pin, backendPid: app.child.pid as number, ourRoots, scripts, o });
        all.push(m);
        say(`${Math.round(m.rps)} req/s, ${r1(m.proxyCpuUsPerReq)} µs CPU/req, p50 ${m.p50Us} µs, p99 ${m.p99Us} µs at ${o.rps} req/s${m.errors + m.fixedErrors > 0 ? `, ${m.errors + m.fixedErrors} errors` : ''}`);
      }
    }

    // New connections: this process on the load generator's CPU, B on the proxies' CPU.
    if (pin.client !== null) execFileSync('taskset', ['-a', '-pc', String(pin.client), String(process.pid)], { stdio: 'ignore' });
    const meshTls: ConnectionOptions = {
      secureContext: createSecureContext({ key: client.keyPem, cert: client.certChainPem, ca: client.rootsPem, minVersion: 'TLSv1.3' }),
      ALPNProtocols: [MESH_ALPN],
      rejectUnauthorized: true, // the chain to the mesh root; the name is a SPIFFE ID, not a host name
      checkServerIdentity: () => undefined,
    };
    const runs: HandshakeRun[] = [];
    for (const [target, pair, tls] of [
      ['skein B', mtls, meshTls],
      ['skein B', plain, null],
      ['HAProxy B', hMtls, meshTls],
      ['HAProxy B', hPlain, null],
    ] as const) {
      for (const mode of tls === null ? (['plaintext'] as const) : (['full', 'resumed'] as const)) {
        process.stdout.write(`new connections: ${target}, ${mode} ... `);
        const r = await connections(target, pair.bPort, pair.b.pid as number, tls, mode, o.handshakes);
        runs.push(r);
        say(`server ${r1(r.serverCpuUs)} µs, client ${r1(r.clientCpuUs)} µs CPU per connection${tls === null ? '' : `, ${r.reused}/${r.connections} resumed`}`);
      }
    }
    report(o, info, pin, all, runs);
  } finally {
    for (const c of started.children.reverse()) await stopTree(c, 10_000); // skein drains for up to 5 s
    for (const c of started.controls) await stopControl(c);
    dir.remove();
  }
}

// ---------------------------------------------------------------- reporting

function report(o: Options, info: ReturnType<typeof machine>, pin: Pinning, all: Array<Measure<PathName>>, runs: HandshakeRun[]): void {
  const sums = summarizeAll(all);
  const d = (name: PathName, v: string | number) => (name === 'direct' ? '-' : v);
  table(
    `Two hops (client -> A -> B -> app): wrk -t1 -c${o.connections} -d${o.duration}s (throughput, CPU of A + B, closed-loop latency), wrk at ${o.rps} req/s x ${o.latencyDuration}s (fixed rate); ${o.rounds > 1 ? `medians of ${o.rounds} rounds; ` : ''}${info.cpus} cores (${info.cpuModel}); ${pin.text}`,
    ['path', 'req/s', 'CPU µs/req (A+B)', 'CPU %', `µs/req @${o.rps}`, 'closed p50 µs', 'closed p99 µs', `p50 µs @${o.rps}`, `p99 µs @${o.rps}`, 'added p50', 'added p99', 'RSS MB (A+B)', 'other CPU %'],
    PATHS.map((name) => {
      const s = sums.get(name) as Summary;
      return [LABEL[name], r0(s.rps), d(name, r1(s.proxyCpuUsPerReq)), d(name, r0(s.proxyCpuPercent)), d(name, r1(s.proxyCpuUsPerReqFixed)), r0(s.closedP50Us), r0(s.closedP99Us), r0(s.p50Us), r0(s.p99Us), d(name, signed(s.addedP50Us)), d(name, signed(s.addedP99Us)), d(name, r1(s.peakRssMB)), `${r0(s.otherCpuPercent)} / ${r0(s.otherCpuPercentFixed)}`];
    }),
  );
  for (const [name, s] of sums) if (s.errors + s.fixedErrors > 0) process.stdout.write(`warning: ${LABEL[name]}: ${s.errors} errors (throughput), ${s.fixedErrors} (fixed rate)\n`);
  for (const [name, s] of sums) if (Math.abs(s.fixedRps - o.rps) / o.rps > 0.05) process.stdout.write(`note: ${LABEL[name]}: fixed-rate run achieved ${r0(s.fixedRps)} req/s (asked ${o.rps})\n`);

  const S = (name: PathName) => sums.get(name) as Summary;
  const ratio = (a: number, b: number) => (b > 0 ? a / b : NaN);
  const cpu = (n: PathName) => S(n).proxyCpuUsPerReq;
  const cpuFixed = (n: PathName) => S(n).proxyCpuUsPerReqFixed;
  const ratios = {
    skeinMtlsVsPlainCpu: ratio(cpu('skein-mtls'), cpu('skein-plain')),
    skeinMtlsVsPlainCpuFixed: ratio(cpuFixed('skein-mtls'), cpuFixed('skein-plain')),
    haproxyMtlsVsPlainCpu: ratio(cpu('haproxy-mtls'), cpu('haproxy-plain')),
    haproxyMtlsVsPlainCpuFixed: ratio(cpuFixed('haproxy-mtls'), cpuFixed('haproxy-plain')),
    skeinVsHaproxyPlainCpu: ratio(cpu('skein-plain'), cpu('haproxy-plain')),
    skeinVsHaproxyMtlsCpu: ratio(cpu('skein-mtls'), cpu('haproxy-mtls')),
    skeinVsHaproxyPlainCpuFixed: ratio(cpuFixed('skein-plain'), cpuFixed('haproxy-plain')),
    skeinVsHaproxyMtlsCpuFixed: ratio(cpuFixed('skein-mtls'), cpuFixed('haproxy-mtls')),
    skeinMtlsVsPlainRps: ratio(S('skein-mtls').rps, S('skein-plain').rps),
    haproxyMtlsVsPlainRps: ratio(S('haproxy-mtls').rps, S('haproxy-plain').rps),
  };
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const targets = {
    mtlsCpuOverhead: { value: ratios.skeinMtlsVsPlainCpu, target: MTLS_CPU_TARGET, met: ratios.skeinMtlsVsPlainCpu <= MTLS_CPU_TARGET },
    withinPlainRatioToHaproxy: { value: ratios.skeinVsHaproxyMtlsCpu, target: ratios.skeinVsHaproxyPlainCpu, met: ratios.skeinVsHaproxyMtlsCpu <= ratios.skeinVsHaproxyPlainCpu },
  };
  table('mTLS against plaintext, and Skein against HAProxy (CPU per request of A + B)', ['measure', 'max load', `${o.rps} req/s`, 'target', 'verdict'], [
    ['skein: mTLS / plaintext', dash(ratios.skeinMtlsVsPlainCpu, r2), dash(ratios.skeinMtlsVsPlainCpuFixed, r2), `<= ${MTLS_CPU_TARGET}`, verdict(targets.mtlsCpuOverhead.met)],
    ['HAProxy: mTLS / plaintext', dash(ratios.haproxyMtlsVsPlainCpu, r2), dash(ratios.haproxyMtlsVsPlainCpuFixed, r2), '-', '-'],
    ['skein / HAProxy, plaintext', dash(ratios.skeinVsHaproxyPlainCpu, r2), dash(ratios.skeinVsHaproxyPlainCpuFixed, r2), '-', '-'],
    ['skein / HAProxy, mTLS', dash(ratios.skeinVsHaproxyMtlsCpu, r2), dash(ratios.skeinVsHaproxyMtlsCpuFixed, r2), '<= the plaintext ratio', verdict(targets.withinPlainRatioToHaproxy.met)],
    ['requests/s, skein: mTLS / plaintext', dash(ratios.skeinMtlsVsPlainRps, r2), '', '-', '-'],
    ['requests/s, HAProxy: mTLS / plaintext', dash(ratios.haproxyMtlsVsPlainRps, r2), '', '-', '-'],
  ]);

  // New connections: the handshake's cost is the TLS figure minus the plaintext one of the same B.
  const plainOf = (target: string) => runs.find((r) => r.target === target && r.mode === 'plaintext');
  const hs = runs.map((r) => {
    const p = plainOf(r.target);
    return { ...r, serverHandshakeUs: r.mode === 'plaintext' || p === undefined ? NaN : r.serverCpuUs - p.serverCpuUs, clientHandshakeUs: r.mode === 'plaintext' || p === undefined ? NaN : r.clientCpuUs - p.clientCpuUs };
  });
  table(
    `New connections straight to proxy B, one request each (connection: close), ${o.handshakes} in sequence; node:tls client with a mesh certificate, one SecureContext`,
    ['proxy B', 'connection', 'resumed', 'server CPU µs/conn', 'client CPU µs/conn', 'server: handshake µs', 'client: handshake µs', 'wall µs/conn'],
    hs.map((r) => [r.target, r.mode === 'full' ? 'TLS 1.3, full handshake' : r.mode === 'resumed' ? 'TLS 1.3, resumed (ticket)' : 'plaintext', r.mode === 'plaintext' ? '-' : `${r.reused}/${r.connections}`, r1(r.serverCpuUs), r1(r.clientCpuUs), dash(r.serverHandshakeUs), dash(r.clientHandshakeUs), r0(r.wallUs)]),
  );
  const resumedRun = hs.find((r) => r.target === 'skein B' && r.mode === 'resumed');
  if (resumedRun !== undefined && resumedRun.reused !== resumedRun.connections) process.stdout.write(`warning: skein B resumed ${resumedRun.reused} of ${resumedRun.connections} sessions offered a ticket\n`);

  // Markdown for docs/benchmarks.md.
  const md = [
    '',
    'Markdown for docs/benchmarks.md:',
    '',
    `| path (two hops) | req/s (wrk -c${o.connections}) | CPU µs/req, A + B | at ${o.rps} req/s | closed-loop p50 / p99 µs | p50 / p99 µs at ${o.rps} req/s | added p50 / p99 µs |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...PATHS.map((name) => {
      const s = S(name);
      return `| ${LABEL[name]} | ${thousands(s.rps)} | ${d(name, dash(s.proxyCpuUsPerReq))} | ${d(name, dash(s.proxyCpuUsPerReqFixed))} | ${r0(s.closedP50Us)} / ${r0(s.closedP99Us)} | ${r0(s.p50Us)} / ${r0(s.p99Us)} | ${d(name, `${signed(s.addedP50Us)} / ${signed(s.addedP99Us)}`)} |`;
    }),
    '',
    '| ratio (CPU per request of A + B) | max load | at 1,000 req/s | target | verdict |',
    '| --- | ---: | ---: | --- | --- |',
    `| skein mTLS / skein plaintext | ${dash(ratios.skeinMtlsVsPlainCpu, r2)} | ${dash(ratios.skeinMtlsVsPlainCpuFixed, r2)} | <= ${MTLS_CPU_TARGET} | ${verdict(targets.mtlsCpuOverhead.met)} |`,
    `| HAProxy mTLS / HAProxy plaintext | ${dash(ratios.haproxyMtlsVsPlainCpu, r2)} | ${dash(ratios.haproxyMtlsVsPlainCpuFixed, r2)} | | |`,
    `| skein / HAProxy, plaintext | ${dash(ratios.skeinVsHaproxyPlainCpu, r2)} | ${dash(ratios.skeinVsHaproxyPlainCpuFixed, r2)} | | |`,
    `| skein / HAProxy, mTLS | ${dash(ratios.skeinVsHaproxyMtlsCpu, r2)} | ${dash(ratios.skeinVsHaproxyMtlsCpuFixed, r2)} | <= the plaintext ratio | ${verdict(targets.withinPlainRatioToHaproxy.met)} |`,
    '',
    '| proxy B | connection | resumed | server CPU µs/conn | client CPU µs/conn | handshake, server µs | handshake, client µs |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...hs.map((r) => `| ${r.target} | ${r.mode} | ${r.mode === 'plaintext' ? '-' : `${r.reused}/${r.connections}`} | ${dash(r.serverCpuUs)} | ${dash(r.clientCpuUs)} | ${dash(r.serverHandshakeUs)} | ${dash(r.clientHandshakeUs)} |`),
  ];
  process.stdout.write(md.join('\n') + '\n\n');

  const result = { machine: info, pinning: pin, options: o, summary: Object.fromEntries(sums), ratios, targets, handshakes: hs, runs: all };
  if (argv.json !== undefined) {
    writeFileSync(argv.json, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(`results written to ${argv.json}\n`);
  }
  printResult('proxy-mtls', result);
}

runMain(main);
