/**
 * Simulated hosts for multi-host tests: network namespaces joined by a bridge (issue 15 §3).
 *
 *   const net = await Topology.create({ hosts: ['a', 'b', 'c'] });
 *   const child = net.spawn('b', process.execPath, ['server.js']);   // runs inside host b
 *   await fetch(`http://${net.address('b')}:${port}/`);               // from the test process
 *   await net.partition('b'); ... await net.heal('b');
 *   await net.close();                                                // in a finally / after()
 *
 * Layout. One namespace per host (`skein-<pid>-<n>-<host>`, `lo` up), each with a veth pair:
 * `eth0` inside, the other end (`sk-X.Y-<i>`) on a bridge (`sk-X.Y`) in the ROOT namespace.
 * Host i gets 10.X.Y.i/24 in a subnet of 10.64.0.0/10 that no route of the machine uses; the
 * bridge itself has 10.X.Y.254 (`net.bridgeAddress`), so the test process is a host on the
 * network too. Why the root namespace and not a bridge namespace of its own: tests drive the mesh
 * from the test process (HTTP clients, the etcd client, assertions on what a caller sees), and
 * with the bridge here those run in-process instead of as child processes relaying results. The
 * price is that links live in the root namespace for the test's duration; `close()`, an exit
 * hook and a sweep of leftovers of dead test processes at `create()` remove them. The root
 * namespace does not forward (ip_forward stays as it is, 0 on CI) and the namespaces have no
 * default route: traffic stays on the bridge.
 *
 * What reaches what (checked by test/netns.test.ts):
 * - a process in a host reaches every other host and the bridge address, never 127.0.0.1 of the
 *   root namespace: each namespace has its own loopback. A server in the test process that hosts
 *   must reach listens on `net.bridgeAddress` (port 0), not on 127.0.0.1;
 * - the test process reaches every host's address through the bridge.
 * So lay a test out as: etcd members, control-plane replicas and workload proxies each in their
 * own host, listening on `net.address(host)` (each namespace has its own port space, but take
 * ports from the OS all the same); the test process as the operator and load generator on the
 * bridge; a fault on one path as a LossyProxy (test/lossy-proxy.ts) spawned in a host, listening
 * on that host's address and forwarding to another host, with the client pointed at the proxy.
 *
 * Faults: `partition(host)` takes the bridge end of the host's veth down (the host loses every
 * peer, the test process included; packets vanish, no reset). `cut(a, b)` is a pairwise silent cut
 * without iptables: each side gets a permanent neighbour (ARP) entry for the other's address
 * pointing at a MAC nobody has, so frames between them are flooded and dropped by every port,
 * while both still reach everyone else. Delay and loss need a proxy on the path: the kernel here
 * has no netem qdisc.
 *
 * In a test, `Topology.usable(t)` first: on a machine without namespaces it fails with the
 * reason, unless SKEIN_NO_NETNS=1 is set, which skips with the reason printed.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { TestContext } from 'node:test';
import { SkeinError } from '../src/core/errors.js';
import { run, waitFor } from './helpers.js';

/** A MAC address no interface has (locally administered): the target of a cut's neighbour entries. */
const NOWHERE_MAC = '02:00:00:00:00:00';
/** Host addresses .1 to .253; .254 is the bridge. */
const MAX_HOSTS = 253;
const HOST_NAME = /^[a-z][a-z0-9]{0,15}$/;
/** Subnets 10.64.0.0/24 to 10.127.255.0/24: 16384 candidates. */
const SUBNET_BASE = 64;
const SUBNET_COUNT = 64 * 256;
const OWNER_ALIAS = 'skein-test owner=';
const NS_NAME = /^skein-(\d+)-\d+-[a-z0-9]+$/;

export interface TopologyOptions {
  /** Host names: lowercase letters and digits, starting with a letter, at most 16 characters. */
  readonly hosts: readonly string[];
}

interface Host {
  readonly name: string;
  readonly ns: string;
  /** The root-namespace end of the host's veth pair, on the bridge. */
  readonly link: string;
  readonly address: string;
}

type IpResult = { code: number | null; stdout: string; stderr: string };

async function ip(...args: string[]): Promise<string> {
  const r: IpResult = await run('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function ipSync(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
}

function trySync(fn: () => unknown): void {
  try {
    fn();
  } catch {
    /* best effort: already gone, or nothing more can be done */
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killQuietly(pid: number): void {
  trySync(() => process.kill(pid, 'SIGKILL'));
}

function pidsIn(ns: string): number[] {
  try {
    return ipSync('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The first address of an IPv4 prefix as a number, and its length; null for `default` or IPv6. */
function prefixOf(dst: string): { net: number; len: number } | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(dst);
  if (m === null) return null;
  const n = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  return { net: n, len: m[5] === undefined ? 32 : Number(m[5]) };
}

function overlaps(a: { net: number; len: number }, b: { net: number; len: number }): boolean {
  const len = Math.min(a.len, b.len);
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  return ((a.net & mask) >>> 0) === ((b.net & mask) >>> 0);
}

let seq = 0;
let availability: string | null | undefined;
const live = new Set<Topology>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const t of live) t.closeSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const t of live) t.closeSync();
      process.kill(process.pid, sig);
    });
  }
}

/**
 * Removes what earlier test processes left behind when they died before cleaning up (SIGKILL, a
 * crash): namespaces named after a process that no longer runs, and links carrying the owner
 * alias of such a process. Only names this module makes are touched.
 */
function sweepLeftovers(): void {
  let names: string[] = [];
  trySync(() => {
    names = (JSON.parse(ipSync('-j', 'netns', 'list') || '[]') as { name: string }[]).map((n) => n.name);
  });
  for (const name of names) {
    const m = NS_NAME.exec(name);
    if (m === null || alive(Number(m[1]))) continue;
    for (const pid of pidsIn(name)) killQuietly(pid);
    trySync(() => ipSync('netns', 'del', name));
  }
  let links: { ifname: string; ifalias?: string }[] = [];
  trySync(() => {
    links = JSON.parse(ipSync('-j', 'link', 'show') || '[]') as { ifname: string; ifalias?: string }[];
  });
  for (const l of links) {
    if (l.ifalias?.startsWith(OWNER_ALIAS) !== true) continue;
    const owner = Number(l.ifalias.slice(OWNER_ALIAS.length));
    if (!alive(owner)) trySync(() => ipSync('link', 'del', l.ifname));
  }
}

function validateHosts(hosts: unknown): readonly string[] {
  if (!Array.isArray(hosts) || hosts.length === 0) {
    throw new SkeinError('SKEIN_E_VALIDATION', 'Topology.create: hosts must be a non-empty array of host names', { field: 'hosts' });
  }
  if (hosts.length > MAX_HOSTS) {
    throw new SkeinError('SKEIN_E_VALIDATION', `Topology.create: ${hosts.length} hosts is more than the ${MAX_HOSTS} a /24 holds besides the bridge`, { field: 'hosts' });
  }
  const seen = new Set<string>();
  hosts.forEach((h: unknown, i) => {
    if (typeof h !== 'string' || !HOST_NAME.test(h)) {
      throw new SkeinError('SKEIN_E_VALIDATION', `Topology.create: host name ${JSON.stringify(h)} is not lowercase letters and digits starting with a letter (at most 16)`, { field: `hosts[${i}]` });
    }
    if (seen.has(h)) throw new SkeinError('SKEIN_E_VALIDATION', `Topology.create: host name "${h}" appears twice`, { field: `hosts[${i}]` });
    seen.add(h);
  });
  return hosts as string[];
}

export class Topology {
  /** The namespaces' hosts, in the order given. */
  readonly hosts: readonly string[];
  /** e.g. 10.77.4.0/24 */
  readonly subnet: string;
  /** The root namespace's (the test process's) address on the bridge: 10.X.Y.254. */
  readonly bridgeAddress: string;
  /** The bridge's interface name in the root namespace. */
  readonly bridge: string;
  private readonly byName = new Map<string, Host>();
  private readonly children = new Set<ChildProcess>();
  private readonly cuts = new Set<string>();
  private closed = false;
  private closing: Promise<void> | null = null;

  private constructor(hosts: Host[], subnet: string, bridge: string, bridgeAddress: string) {
    for (const h of hosts) this.byName.set(h.name, h);
    this.hosts = hosts.map((h) => h.name);
    this.subnet = subnet;
    this.bridge = bridge;
    this.bridgeAddress = bridgeAddress;
  }

  /**
   * Null when namespaces can be made here, else why not (not root, no `ip`, a namespace, bridge
   * or veth refused). Probes once per process by making and removing a namespace with a veth.
   */
  static available(): string | null {
    if (availability !== undefined) return availability;
    availability = probe();
    return availability;
  }

  /**
   * For a test: true when it can run. Otherwise it fails with the reason, or, when
   * SKEIN_NO_NETNS=1 says this machine is known not to allow namespaces, skips with it (the
   * reporter prints the reason next to the test) and returns false.
   */
  static usable(t: TestContext): boolean {
    if (process.env.SKEIN_NO_NETNS === '1') {
      t.skip(`multi-host test not run: SKEIN_NO_NETNS=1 (${Topology.available() ?? 'namespaces would work here'})`);
      return false;
    }
    const why = Topology.available();
    if (why === null) return true;
    throw new Error(`network namespaces are not available here: ${why}. Run the tests as root with iproute2, or set SKEIN_NO_NETNS=1 to skip the multi-host tests on this machine.`);
  }

  /** Builds the namespaces, the bridge and a veth per host. Everything is removed if a step fails. */
  static async create(opts: TopologyOptions): Promise<Topology> {
    const names = validateHosts(opts?.hosts);
    const why = Topology.available();
    if (why !== null) throw new Error(`Topology.create: network namespaces are not available here: ${why}`);
    installExitHooks();
    sweepLeftovers();
    const n = ++seq;
    const { x, y, bridge } = await claimSubnet(n);
    const prefix = `10.${x}.${y}`;
    const hosts = names.map((name, i) => ({ name, ns: `skein-${process.pid}-${n}-${name}`, link: `${bridge}-${i + 1}`, address: `${prefix}.${i + 1}` }));
    const topo = new Topology(hosts, `${prefix}.0/24`, bridge, `${prefix}.254`);
    live.add(topo);
    try {
      await ip('link', 'set', 'dev', bridge, 'alias', `${OWNER_ALIAS}${process.pid}`);
      await ip('addr', 'add', `${topo.bridgeAddress}/24`, 'dev', bridge);
      await ip('link', 'set', bridge, 'up');
      for (const h of hosts) {
        await ip('netns', 'add', h.ns);
        await ip('link', 'add', h.link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
        await ip('link', 'set', 'dev', h.link, 'alias', `${OWNER_ALIAS}${process.pid}`);
        await ip('link', 'set', h.link, 'master', bridge, 'up');
        await ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
        await ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
        await ip('-n', h.ns, 'link', 'set', 'lo', 'up');
      }
    } catch (e) {
      await topo.close();
      throw e;
    }
    return topo;
  }

  /** The host's IPv4 address, e.g. 10.77.4.2. */
  address(host: string): string {
    return this.host(host).address;
  }

  /** The host's namespace name (for `ip netns exec` / `ip -n` by hand). */
  namespace(host: string): string {
    return this.host(host).ns;
  }

  /** The bridge end of the host's veth pair, in the root namespace (what `partition` takes down). */
  link(host: string): string {
    return this.host(host).link;
  }

  /**
   * Starts `cmd args` inside the host (`ip netns exec`, which execs: `child.pid` is the program's
   * own pid, so signals reach it directly). `close()` kills it, and anything it started in the
   * namespace, if it is still running.
   */
  spawn(host: string, cmd: string, args: readonly string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const ns = this.host(host).ns;
    if (this.closed) throw new Error(`Topology.spawn: the topology is closed (host "${host}")`);
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts);
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    child.once('error', () => this.children.delete(child));
    return child;
  }

  /** Runs a command inside the host to completion (e.g. `ss -ltn`): exit code and output. */
  exec(host: string, cmd: string, args: readonly string[] = [], opts: { timeoutMs?: number; input?: string } = {}): Promise<IpResult> {
    return run('ip', ['netns', 'exec', this.host(host).ns, cmd, ...args], opts);
  }

  /** Cuts the host off from every other host and from the test process (its link goes down). */
  async partition(host: string): Promise<void> {
    await ip('link', 'set', this.host(host).link, 'down');
  }

  /** Brings the host's link back up and waits until the bridge forwards on it again. */
  async heal(host: string): Promise<void> {
    const link = this.host(host).link;
    await ip('link', 'set', link, 'up');
    await waitFor(async () => (JSON.parse(await ip('-j', 'link', 'show', 'dev', link)) as { operstate: string }[])[0]?.operstate === 'UP', {
      timeoutMs: 5_000,
      what: `${link} (host ${host}) to come up`,
    });
  }

  /**
   * A silent cut between two hosts only (both directions): neither reaches the other, both still
   * reach everyone else. Done with permanent neighbour entries to a MAC nobody has, not iptables.
   */
  async cut(a: string, b: string): Promise<void> {
    const [ha, hb] = this.pair(a, b, 'cut');
    await ip('-n', ha.ns, 'neigh', 'replace', hb.address, 'lladdr', NOWHERE_MAC, 'nud', 'permanent', 'dev', 'eth0');
    await ip('-n', hb.ns, 'neigh', 'replace', ha.address, 'lladdr', NOWHERE_MAC, 'nud', 'permanent', 'dev', 'eth0');
    this.cuts.add([a, b].sort().join(' '));
  }

  /** Undoes `cut(a, b)`: the neighbour entries go and ARP finds the real addresses again. */
  async uncut(a: string, b: string): Promise<void> {
    const [ha, hb] = this.pair(a, b, 'uncut');
    const key = [a, b].sort().join(' ');
    if (!this.cuts.has(key)) throw new SkeinError('SKEIN_E_VALIDATION', `Topology.uncut: hosts "${a}" and "${b}" are not cut`, { field: 'hosts' });
    await ip('-n', ha.ns, 'neigh', 'del', hb.address, 'dev', 'eth0');
    await ip('-n', hb.ns, 'neigh', 'del', ha.address, 'dev', 'eth0');
    this.cuts.delete(key);
  }

  /**
   * Kills every process it spawned and everything else running in its namespaces (SIGKILL), then
   * removes the namespaces, the veths and the bridge. Safe to call twice and after a failed
   * `create`.
   */
  close(): Promise<void> {
    this.closing ??= this.closeAsync();
    return this.closing;
  }

  private async closeAsync(): Promise<void> {
    this.closed = true;
    const exits = [...this.children].map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once('exit', r))));
    for (const c of this.children) c.kill('SIGKILL');
    for (const h of this.byName.values()) for (const pid of pidsIn(h.ns)) killQuietly(pid);
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5_000).unref())]);
    await waitFor(() => [...this.byName.values()].every((h) => pidsIn(h.ns).length === 0), { timeoutMs: 5_000, what: 'the namespaces\' processes to exit' }).catch(() => undefined);
    this.closeSync();
  }

  /** The synchronous part of `close`, also run from the exit hook. */
  closeSync(): void {
    this.closed = true;
    for (const c of this.children) trySync(() => c.kill('SIGKILL'));
    for (const h of this.byName.values()) {
      for (const pid of pidsIn(h.ns)) killQuietly(pid);
      trySync(() => ipSync('netns', 'del', h.ns));
      trySync(() => ipSync('link', 'del', h.link));
    }
    trySync(() => ipSync('link', 'del', this.bridge));
    live.delete(this);
  }

  private host(name: string): Host {
    const h = this.byName.get(name);
    if (h === undefined) {
      throw new SkeinError('SKEIN_E_VALIDATION', `no host "${name}" in this topology (hosts: ${this.hosts.join(', ')})`, { field: 'host' });
    }
    return h;
  }

  private pair(a: string, b: string, what: string): [Host, Host] {
    if (a === b) throw new SkeinError('SKEIN_E_VALIDATION', `Topology.${what}: a host cannot be cut from itself ("${a}")`, { field: 'hosts' });
    return [this.host(a), this.host(b)];
  }
}

/**
 * Picks a /24 in 10.64.0.0/10 that overlaps no route of the root namespace and claims it by
 * creating the bridge named after it: interface names are unique, so two test processes racing
 * for one subnet cannot both get it.
 */
async function claimSubnet(n: number): Promise<{ x: number; y: number; bridge: string }> {
  const routes = (JSON.parse(await ip('-j', '-4', 'route', 'show', 'table', 'all')) as { dst: string }[])
    .map((r) => prefixOf(r.dst))
    .filter((p): p is { net: number; len: number } => p !== null && p.len > 0);
  const start = (process.pid * 97 + n * 13) % SUBNET_COUNT;
  for (let k = 0; k < 256; k++) {
    const idx = (start + k) % SUBNET_COUNT;
    const x = SUBNET_BASE + (idx >> 8);
    const y = idx & 255;
    const mine = prefixOf(`10.${x}.${y}.0/24`);
    if (mine === null || routes.some((r) => overlaps(r, mine))) continue;
    const bridge = `sk-${x}.${y}`;
    const r = await run('ip', ['link', 'add', 'name', bridge, 'type', 'bridge']);
    if (r.code === 0) return { x, y, bridge };
    if (!/exists/i.test(r.stderr)) throw new Error(`ip link add name ${bridge} type bridge failed: ${r.stderr.trim()}`);
  }
  throw new Error('Topology.create: no free /24 in 10.64.0.0/10 after 256 tries (leftover bridges sk-*?)');
}

function probe(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  const uid = process.getuid?.();
  if (uid !== 0) return `not root (uid ${uid}): creating namespaces and links needs root`;
  try {
    ipSync('-V');
  } catch (e) {
    return `the ip command (iproute2) cannot run: ${(e as Error).message}`;
  }
  const ns = `skein-${process.pid}-0-probe`;
  const link = `skprobe${process.pid % 1_000_000}`;
  try {
    ipSync('netns', 'add', ns);
    ipSync('link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ipSync('link', 'add', `${link}b`, 'type', 'bridge');
    return null;
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    return `making a namespace, a veth or a bridge was refused: ${err.stderr?.toString().trim() || err.message}`;
  } finally {
    trySync(() => ipSync('link', 'del', `${link}b`));
    trySync(() => ipSync('link', 'del', link));
    trySync(() => ipSync('netns', 'del', ns));
  }
}
