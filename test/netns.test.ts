/**
 * The simulated-hosts helper (test/netns.ts) and the lossy proxy (test/lossy-proxy.ts): three
 * hosts on a bridge, reachability, a partition and a pairwise cut and their healing, what a host
 * can and cannot reach in the root namespace, delay and blackholes on a proxied path, and a close
 * that leaves no namespace, link or process behind.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { ManualClock } from '../src/core/clock.js';
import { SkeinError } from '../src/core/errors.js';
import { waitFor } from './helpers.js';
import { Topology } from './netns.js';
import { LossyProxy } from './lossy-proxy.js';

/** An echo server: prints "<port> <pid>" once listening on argv[1]. */
const ECHO = `const s=require('net').createServer(c=>c.on('error',()=>{}).pipe(c));s.listen(0,process.argv[1],()=>console.log(s.address().port+' '+process.pid))`;
/** Reads {host,port,timeoutMs} lines; for each, connects, sends "ping" and prints how it went. */
const PROBER = `const net=require('net');require('readline').createInterface({input:process.stdin}).on('line',l=>{
const {host,port,timeoutMs}=JSON.parse(l);let done=false;const s=net.connect({host,port});
const fin=r=>{if(done)return;done=true;s.destroy();console.log(r)};
s.setTimeout(timeoutMs,()=>fin('timeout'));s.on('connect',()=>s.write('ping'));
s.on('data',d=>{if(String(d)==='ping')fin('ok')});s.on('error',e=>fin(e.code))})`;

/** Prints its port, then every datagram it receives, one a line. */
const UDP_SINK = `const u=require('dgram').createSocket('udp4');u.on('message',m=>console.log(String(m)));u.bind(0,process.argv[1],()=>console.log(u.address().port))`;
/** Sends argv[3] to argv[1]:argv[2] and exits. */
const UDP_SEND = `const u=require('dgram').createSocket('udp4');u.send(process.argv[3],Number(process.argv[2]),process.argv[1],e=>{u.close();if(e)throw e})`;

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.once('line', (l) => {
      rl.close();
      resolve(l);
    });
    child.once('exit', (code, sig) => reject(new Error(`exited before its first line (${sig ?? code})`)));
  });
}

/** Starts an echo server in `host` on its address; its port and the pid it reports itself. */
async function echoIn(net: Topology, host: string): Promise<{ child: ChildProcess; port: number; pid: number }> {
  const child = net.spawn(host, process.execPath, ['-e', ECHO, net.address(host)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [port, pid] = (await firstLine(child)).split(' ').map(Number);
  return { child, port: port as number, pid: pid as number };
}

/** A long-lived prober in `host`: `probe(addr, port)` -> 'ok' | 'timeout' | an errno code. */
function proberIn(net: Topology, host: string): { child: ChildProcess; probe: (addr: string, port: number, timeoutMs?: number) => Promise<string> } {
  const child = net.spawn(host, process.execPath, ['-e', PROBER], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => waiting.shift()?.(l));
  return {
    child,
    probe: (addr, port, timeoutMs = 800) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.stdin?.write(`${JSON.stringify({ host: addr, port, timeoutMs })}\n`);
      }),
  };
}

/** The same probe from the test process (the root namespace). */
function probeFromRoot(addr: string, port: number, timeoutMs = 800): Promise<string> {
  return new Promise((resolve) => {
    let done = false;
    const s = connect({ host: addr, port });
    const fin = (r: string) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(r);
    };
    s.setTimeout(timeoutMs, () => fin('timeout'));
    s.on('connect', () => s.write('ping'));
    s.on('data', (d) => String(d) === 'ping' && fin('ok'));
    s.on('error', (e: NodeJS.ErrnoException) => fin(e.code ?? e.message));
  });
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as { port: number }).port));
  });
}

/** Running: in /proc and not a zombie (a killed grandchild waits there for init to reap it). */
function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** A client socket that collects what it receives and how it ended. */
function client(host: string, port: number): Promise<{ s: Socket; got: () => string; error: () => string | null; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    let data = '';
    let err: string | null = null;
    const s = connect({ host, port });
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.on('data', (d) => (data += String(d)));
    s.on('error', (e: NodeJS.ErrnoException) => (err = e.code ?? e.message));
    s.once('connect', () => resolve({ s, got: () => data, error: () => err, closed }));
    s.once('error', reject);
  });
}

test('bad input is refused with the field named', async () => {
  await assert.rejects(Topology.create({ hosts: [] }), (e: SkeinError) => e.code === 'SKEIN_E_VALIDATION' && e.field === 'hosts');
  await assert.rejects(Topology.create({ hosts: ['a', 'B c'] }), (e: SkeinError) => e.field === 'hosts[1]' && e.message === 'Topology.create: host name "B c" is not lowercase letters and digits starting with a letter (at most 16)');
  await assert.rejects(Topology.create({ hosts: ['a', 'b', 'a'] }), (e: SkeinError) => e.field === 'hosts[2]' && e.message === 'Topology.create: host name "a" appears twice');
  await assert.rejects(LossyProxy.start({ target: { host: '127.0.0.1', port: 0 } }), (e: SkeinError) => e.field === 'target');
  await assert.rejects(LossyProxy.start({ target: { host: '127.0.0.1', port: 80 }, delayMs: -1 }), (e: SkeinError) => e.field === 'delayMs' && e.message === 'LossyProxy: delayMs must be a finite number of ms >= 0, got -1');
  await assert.rejects(LossyProxy.start({ target: { host: '127.0.0.1', port: 80 }, dropProbability: 1.5 }), (e: SkeinError) => e.field === 'dropProbability');
});

test('SKEIN_NO_NETNS=1 skips a multi-host test with the reason; without it an unusable machine fails', () => {
  const saved = process.env.SKEIN_NO_NETNS;
  const skipped: string[] = [];
  const fake = { skip: (m: string) => skipped.push(m) } as unknown as TestContext;
  try {
    process.env.SKEIN_NO_NETNS = '1';
    assert.equal(Topology.usable(fake), false);
    assert.equal(skipped.length, 1);
    assert.match(skipped[0] as string, /^multi-host test not run: SKEIN_NO_NETNS=1 \(.+\)$/);
    delete process.env.SKEIN_NO_NETNS;
    const why = Topology.available();
    if (why === null) assert.equal(Topology.usable(fake), true);
    else assert.throws(() => Topology.usable(fake), { message: `network namespaces are not available here: ${why}. Run the tests as root with iproute2, or set SKEIN_NO_NETNS=1 to skip the multi-host tests on this machine.` });
  } finally {
    if (saved === undefined) delete process.env.SKEIN_NO_NETNS;
    else process.env.SKEIN_NO_NETNS = saved;
  }
});

test('the lossy proxy holds each chunk for delayMs on the injected clock, and drops on the injected random', async () => {
  const echo = createServer((c) => c.on('error', () => undefined).pipe(c));
  const echoPort = await listen(echo, '127.0.0.1');
  const clock = new ManualClock();
  // one roll per chunk: the request and its echo pass (0.9 >= 0.5), the next chunk is dropped
  const rolls = [0.9, 0.9, 0.1];
  const proxy = await LossyProxy.start({ target: { host: '127.0.0.1', port: echoPort }, delayMs: 100, dropProbability: 0.5, clock, random: () => rolls.shift() ?? 0 });
  try {
    const c = await client(proxy.host, proxy.port);
    c.s.write('x');
    await waitFor(async () => (await proxy.stats()).queuedChunks === 1, { what: 'the request chunk held' });
    clock.advance(99);
    assert.equal((await proxy.stats()).forwardedBytes, 0, 'nothing forwarded 1 ms early');
    clock.advance(1);
    await waitFor(async () => (await proxy.stats()).forwardedBytes === 1 && (await proxy.stats()).queuedChunks === 1, { what: 'the echo held on its way back' });
    assert.equal(c.got(), '');
    clock.advance(100);
    await waitFor(() => c.got() === 'x', { what: 'the echo' });
    assert.equal((await proxy.stats()).dropped, 0);
    // the next chunk rolls 0.1, under the drop probability of 0.5: the flow is reset
    c.s.write('y');
    await c.closed;
    assert.equal(c.error(), 'ECONNRESET');
    assert.deepEqual(await proxy.stats(), { accepted: 1, dropped: 1, queuedChunks: 0, forwardedBytes: 2 });
    assert.deepEqual(rolls, []);
  } finally {
    await proxy.close();
    echo.close();
  }
});

test('three hosts on a bridge: reach, partition, heal, a pairwise cut; close leaves nothing behind', async (t) => {
  if (!Topology.usable(t)) return;
  const net = await Topology.create({ hosts: ['a', 'b', 'c'] });
  const names = { ns: net.hosts.map((h) => net.namespace(h)), links: [net.bridge, ...net.hosts.map((h) => net.link(h))] };
  const pids: number[] = [];
  const loopback = createServer((c) => c.on('error', () => undefined).end('ping'));
  const onBridge = createServer((c) => c.on('error', () => undefined).end('ping'));
  try {
    assert.match(net.subnet, /^10\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.0\/24$/);
    const prefix = net.subnet.slice(0, -'0/24'.length);
    assert.deepEqual(net.hosts.map((h) => net.address(h)), [`${prefix}1`, `${prefix}2`, `${prefix}3`]);
    assert.equal(net.bridgeAddress, `${prefix}254`);
    for (const n of [...names.ns, ...names.links]) assert.ok(n.length <= 15 || n.startsWith('skein-'), n);
    assert.throws(() => net.address('zz'), { message: 'no host "zz" in this topology (hosts: a, b, c)' });

    const ea = await echoIn(net, 'a');
    const b = await echoIn(net, 'b');
    const c = await echoIn(net, 'c');
    assert.equal(b.child.pid, b.pid, 'ip netns exec execs: the child is the program');
    const a = proberIn(net, 'a');
    const bp = proberIn(net, 'b');
    const cp = proberIn(net, 'c');
    pids.push(ea.pid, b.pid, c.pid, a.child.pid as number, bp.child.pid as number, cp.child.pid as number);
    assert.equal(await a.probe(net.address('b'), b.port), 'ok');
    assert.equal(await a.probe(net.address('c'), c.port), 'ok');
    assert.equal(await probeFromRoot(net.address('b'), b.port), 'ok', 'the test process reaches a host through the bridge');

    // A host has its own loopback: 127.0.0.1 of the root namespace is out of reach; the bridge address is not.
    const lo = await listen(loopback, '127.0.0.1');
    assert.equal(await a.probe('127.0.0.1', lo), 'ECONNREFUSED');
    const br = await listen(onBridge, net.bridgeAddress);
    assert.equal(await a.probe(net.bridgeAddress, br), 'ok');

    await net.partition('b');
    assert.ok(['timeout', 'EHOSTUNREACH'].includes(await a.probe(net.address('b'), b.port)), 'a -> b cut');
    assert.ok(['timeout', 'EHOSTUNREACH'].includes(await probeFromRoot(net.address('b'), b.port)), 'root -> b cut');
    assert.equal(await a.probe(net.address('c'), c.port), 'ok', 'a -> c still works');
    await net.heal('b');
    await waitFor(async () => (await a.probe(net.address('b'), b.port)) === 'ok', { what: 'a -> b after the heal', timeoutMs: 8_000 });

    await net.cut('a', 'b');
    assert.equal(await a.probe(net.address('b'), b.port), 'timeout', 'a -> b silently cut');
    assert.equal(await bp.probe(net.address('a'), ea.port), 'timeout', 'b -> a silently cut');
    // TCP needs both directions, so datagrams show that each direction is cut on its own.
    const udp = net.spawn('a', process.execPath, ['-e', UDP_SINK, net.address('a')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const heard: string[] = [];
    const rl = createInterface({ input: udp.stdout as NodeJS.ReadableStream });
    const udpPort = Number(await new Promise<string>((r) => rl.once('line', r)));
    rl.on('line', (l) => heard.push(l));
    pids.push(udp.pid as number);
    for (const from of ['b', 'c']) {
      const sent = await net.exec(from, process.execPath, ['-e', UDP_SEND, net.address('a'), String(udpPort), `from ${from}`]);
      assert.equal(sent.code, 0, sent.stderr);
    }
    await waitFor(() => heard.includes('from c'), { what: 'the datagram from c' });
    assert.deepEqual(heard, ['from c'], 'b -> a datagrams are dropped');
    assert.equal(await a.probe(net.address('c'), c.port), 'ok', 'a -> c untouched');
    assert.equal(await cp.probe(net.address('b'), b.port), 'ok', 'c -> b untouched');
    assert.equal(await probeFromRoot(net.address('b'), b.port), 'ok', 'root -> b untouched');
    await net.uncut('a', 'b');
    await waitFor(async () => (await a.probe(net.address('b'), b.port)) === 'ok', { what: 'a -> b after the uncut', timeoutMs: 8_000 });

    // A process started by a spawned one (not tracked by the topology) is killed by close() too.
    const sh = net.spawn('c', 'sh', ['-c', 'sleep 300 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
    pids.push(sh.pid as number, Number(await firstLine(sh)));
  } finally {
    loopback.close();
    onBridge.close();
    await net.close();
  }
  const nsLeft = execFileSync('ip', ['netns', 'list']).toString();
  for (const ns of names.ns) assert.ok(!nsLeft.includes(ns), `namespace ${ns} left behind`);
  const linksLeft = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show']).toString()) as { ifname: string }[]).map((l) => l.ifname);
  assert.deepEqual(linksLeft.filter((l) => names.links.includes(l)), []);
  assert.equal(pids.length, 9);
  assert.deepEqual(pids.filter(pidAlive), [], 'every process started in the namespaces is gone');
});

test('a lossy proxy in one host delays a path by the set amount and blackholes it', async (t) => {
  if (!Topology.usable(t)) return;
  const net = await Topology.create({ hosts: ['a', 'b'] });
  try {
    const b = await echoIn(net, 'b');
    const proxy = await LossyProxy.startIn(net, 'a', { target: { host: net.address('b'), port: b.port }, delayMs: 150 });
    assert.equal(proxy.host, net.address('a'));

    // From the test process through the proxy in a to the echo in b: 150 ms each way.
    const c1 = await client(proxy.host, proxy.port);
    const t0 = performance.now();
    c1.s.write('one');
    await waitFor(() => c1.got() === 'one', { what: 'the delayed echo', intervalMs: 5 });
    const rtt = performance.now() - t0;
    assert.ok(rtt >= 2 * 150 - 5, `round trip ${rtt.toFixed(1)} ms under 2 x 150 ms`);
    await proxy.setDelay(0);

    await proxy.blackhole();
    c1.s.write('two');
    const c2 = await client(proxy.host, proxy.port); // accepted all the same
    c2.s.write('three');
    await waitFor(async () => (await proxy.stats()).accepted === 2, { what: 'the second connection accepted' });
    // A window in which nothing may arrive: the silent partition of both flows.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual([c1.got(), c2.got(), c1.error(), c2.error()], ['one', '', null, null]);
    await proxy.restore();
    await waitFor(() => c1.got() === 'onetwo' && c2.got() === 'three', { what: 'what was held, delivered after restore' });

    await proxy.dropConnections();
    await Promise.all([c1.closed, c2.closed]);
    assert.deepEqual([c1.error(), c2.error()], ['ECONNRESET', 'ECONNRESET']);
    assert.equal((await proxy.stats()).dropped, 2);
    await proxy.close();
  } finally {
    await net.close();
  }
});

/** A child process that makes a topology and leaves without close(): what it printed, how it ended. */
async function abandon(how: 'exit' | 'SIGTERM' | 'SIGKILL'): Promise<{ ns: string[]; links: string[]; signal: string | null; code: number | null }> {
  const script = `import { Topology } from ${JSON.stringify(new URL('./netns.js', import.meta.url).href)};
    const net = await Topology.create({ hosts: ['x', 'y'] });
    net.spawn('x', 'sleep', ['300']);
    console.log(JSON.stringify({ ns: net.hosts.map((h) => net.namespace(h)), links: [net.bridge, ...net.hosts.map((h) => net.link(h))] }));
    if (process.argv[1] === 'exit') process.exit(3);
    setInterval(() => {}, 1000);`;
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, how], { stdio: ['ignore', 'pipe', 'inherit'] });
  const names = JSON.parse(await firstLine(child)) as { ns: string[]; links: string[] };
  const ended = new Promise<[number | null, string | null]>((r) => child.once('exit', (code, signal) => r([code, signal])));
  if (how !== 'exit') child.kill(how);
  const [code, signal] = await ended;
  return { ...names, code, signal };
}

function leftovers(names: { ns: string[]; links: string[] }): string[] {
  const ns = (JSON.parse(execFileSync('ip', ['-j', 'netns', 'list']).toString() || '[]') as { name: string }[]).map((n) => n.name);
  const links = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show']).toString()) as { ifname: string }[]).map((l) => l.ifname);
  return [...names.ns.filter((n) => ns.includes(n)), ...names.links.filter((l) => links.includes(l))];
}

test('a test process that exits or is terminated without close() still removes its topology', async (t) => {
  if (!Topology.usable(t)) return;
  const exited = await abandon('exit');
  assert.equal(exited.code, 3);
  assert.deepEqual(leftovers(exited), []);
  const termed = await abandon('SIGTERM');
  assert.equal(termed.signal, 'SIGTERM', 'the signal is raised again after the clean-up');
  assert.deepEqual(leftovers(termed), []);
});

test("a killed test process's leftovers are swept by the next Topology.create", async (t) => {
  if (!Topology.usable(t)) return;
  const killed = await abandon('SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal(leftovers(killed).length, 5, 'SIGKILL leaves 2 namespaces, 2 veths and the bridge');
  const net = await Topology.create({ hosts: ['a'] });
  try {
    assert.deepEqual(leftovers(killed), []);
  } finally {
    await net.close();
  }
});
