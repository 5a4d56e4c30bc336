/**
 * A real etcd cluster for tests: N members on 127.0.0.1 with ports the OS picks, in a temp data
 * dir that `close()` removes. Tests that need etcd and cannot find it fail (scripts/setup.sh
 * installs Debian's etcd-server); they never skip.
 *
 * Ports: all 2N are bound at once on port 0 (so the OS hands out different ones), read, closed and
 * passed to etcd. Another process may take one in between: etcd then exits at once with "address
 * already in use", and the whole start is tried again with new ports (up to 3 times). Port 0 cannot
 * be given to etcd itself: a member would advertise `:0` to its peers.
 *
 * Stopping: members are stopped one after the other (SIGTERM to all at once takes 7 s: the leader
 * hands over to a member that is itself stopping). `kill()` (SIGKILL) is fine at the end of a test.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdMember {
  name: string;
  clientUrl: string;
  /** The pid of the running process (of the last start). */
  pid: number;
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL (kill -9), and waits for the exit. */
  kill(): Promise<void>;
  /** SIGSTOP: the process is frozen (no answer, no error: a silent member). */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Starts a stopped or killed member again on its data dir, and waits until it is healthy. */
  start(): Promise<void>;
  readonly running: boolean;
}

export interface EtcdCluster {
  endpoints: string[];
  members: EtcdMember[];
  dir: string;
  /** The index of the member the running members agree leads (polls until they do, up to 10 s). */
  leader(): Promise<number>;
  /** Compacts the history up to the current revision; resolves with that revision. */
  compact(): Promise<number>;
  close(): Promise<void>;
}

export interface EtcdClusterOptions {
  members?: number;
  /** etcd's --experimental-watch-progress-notify-interval, in ms. Default 1,000. */
  progressNotifyMs?: number;
  /** Where the temp data dir is made. Default the OS temp dir. */
  dir?: string;
  /**
   * Members on simulated hosts (test/netns.ts): member i listens on `address(i)`, ports 2379 and
   * 2380 (each host has its own port space), and is started by `spawn(i, ...)`. Default: every
   * member on 127.0.0.1, ports from the OS.
   */
  placement?: { address(i: number): string; spawn(i: number, cmd: string, args: string[], opts: SpawnOptions): ChildProcess };
}

/** The etcd binary, or a loud failure naming how to get it. */
export function etcdBinary(): string {
  const r = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) {
    throw new Error(`etcd is not installed (or does not run: ${r.error?.message ?? r.stderr}); run scripts/setup.sh, or apt-get install etcd-server`);
  }
  return 'etcd';
}

/** n different free ports, bound at once and released. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen({ port: 0, host, exclusive: true }, resolve);
      });
    }
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL'); // a crashed test leaves no etcd behind
});

export async function startEtcdCluster(o: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const etcd = etcdBinary();
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(etcd, o);
    } catch (e) {
      if (attempt >= 3 || !/address already in use/.test((e as Error).message)) throw e;
    }
  }
}

async function startOnce(etcd: string, o: EtcdClusterOptions): Promise<EtcdCluster> {
  const n = o.members ?? 3;
  const dir = await mkdtemp(join(o.dir ?? tmpdir(), 'skein-etcd-'));
  const placed = o.placement;
  const ports = placed === undefined ? await freePorts(2 * n) : Array.from({ length: 2 * n }, (_, k) => (k % 2 === 0 ? 2379 : 2380));
  const addr = (i: number) => placed?.address(i) ?? '127.0.0.1';
  const specs = Array.from({ length: n }, (_, i) => ({
    name: `m${i}`,
    client: `http://${addr(i)}:${ports[2 * i]}`,
    peer: `http://${addr(i)}:${ports[2 * i + 1]}`,
    log: join(dir, `m${i}.log`),
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(',');
  const token = `skein-test-${process.pid}-${Date.now()}`;
  const procs: Array<{ proc: ChildProcess; exited: Promise<void>; running: boolean }> = [];

  const launch = (i: number) => {
    const s = specs[i]!;
    const fd = openSync(s.log + '.stderr', 'a');
    // prettier-ignore
    const args = [
      '--name', s.name, '--data-dir', join(dir, s.name),
      '--listen-client-urls', s.client, '--advertise-client-urls', s.client,
      '--listen-peer-urls', s.peer, '--initial-advertise-peer-urls', s.peer,
      '--initial-cluster', initialCluster, '--initial-cluster-token', token, '--initial-cluster-state', 'new',
      '--pre-vote=true', '--logger=zap', '--log-outputs', s.log,
      '--heartbeat-interval=100', '--election-timeout=1000',
      `--experimental-watch-progress-notify-interval=${o.progressNotifyMs ?? 1000}ms`,
    ];
    const proc = placed === undefined ? spawn(etcd, args, { stdio: ['ignore', fd, fd] }) : placed.spawn(i, etcd, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(proc);
    const entry = { proc, running: true, exited: new Promise<void>((resolve) => proc.once('exit', () => resolve())) };
    void entry.exited.then(() => {
      entry.running = false;
      live.delete(proc);
    });
    procs[i] = entry;
  };
  for (let i = 0; i < n; i++) launch(i);

  const signal = async (i: number, sig: NodeJS.Signals) => {
    const p = procs[i]!;
    if (!p.running) return;
    p.proc.kill(sig);
    await p.exited;
  };
  const members: EtcdMember[] = specs.map((s, i) => ({
    name: s.name,
    clientUrl: s.client,
    get pid() {
      return procs[i]!.proc.pid!;
    },
    get running() {
      return procs[i]!.running;
    },
    stop: async () => {
      const p = procs[i]!;
      if (!p.running) return;
      p.proc.kill('SIGCONT'); // a paused member cannot act on SIGTERM
      p.proc.kill('SIGTERM');
      const t = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
      await p.exited;
      clearTimeout(t);
    },
    kill: () => signal(i, 'SIGKILL'),
    pause: () => void procs[i]!.proc.kill('SIGSTOP'),
    resume: () => void procs[i]!.proc.kill('SIGCONT'),
    start: async () => {
      if (procs[i]!.running) return;
      launch(i);
      await waitHealthy(s.client, 20_000);
    },
  }));

  const cluster: EtcdCluster = {
    endpoints: specs.map((s) => s.client),
    members,
    dir,
    async leader() {
      const deadline = Date.now() + 10_000;
      let last = 'no member answered';
      while (Date.now() < deadline) {
        const seen = await Promise.all(
          specs.map(async (s, i) => {
            if (!procs[i]!.running) return null;
            try {
              const j = (await gateway(s.client, '/v3/maintenance/status', {}, 500)) as { leader?: string; header?: { member_id?: string } };
              return { i, leader: j.leader ?? '0', id: j.header?.member_id ?? '' };
            } catch (e) {
              last = `${s.name}: ${(e as Error).message}`;
              return null;
            }
          }),
        );
        const answered = seen.filter((x) => x !== null);
        const leaders = new Set(answered.map((x) => x.leader));
        const leaderId = [...leaders][0];
        const at = answered.find((x) => x.id === leaderId);
        if (leaders.size === 1 && leaderId !== '0' && at !== undefined) return at.i;
        last = `members disagree or have no leader: ${JSON.stringify(answered)}`;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`etcd cluster: no leader within 10 s (${last})`);
    },
    async compact() {
      const up = specs.find((_, i) => procs[i]!.running);
      if (up === undefined) throw new Error('etcd cluster: no member running to compact');
      const r = (await gateway(up.client, '/v3/kv/range', { key: Buffer.from('\0').toString('base64') }, 5000)) as { header?: { revision?: string } };
      const revision = Number(r.header?.revision ?? 0);
      await gateway(up.client, '/v3/kv/compaction', { revision: String(revision), physical: true }, 5000);
      return revision;
    },
    async close() {
      for (const m of members) await m.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };

  // Healthy members, or the first one to exit (with its log), whichever comes first.
  const died = Promise.race(
    procs.map((p, i) =>
      p.exited.then(async () => {
        const s = specs[i]!;
        const log = (await readFile(s.log, 'utf8').catch(() => '')) + (await readFile(s.log + '.stderr', 'utf8').catch(() => ''));
        throw new Error(`etcd member ${s.name} exited at start-up: ${(log.match(/.*address already in use.*/) ?? [log.slice(-600)])[0]}`);
      }),
    ),
  );
  try {
    await Promise.race([Promise.all(specs.map((s) => waitHealthy(s.client, 20_000))), died]);
  } catch (e) {
    for (const p of procs) p.proc.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  died.catch(() => {}); // a member killed later by the test is not a start-up failure
  return cluster;
}

/** One POST to the gateway (the harness does not use the client under test). */
async function gateway(url: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
  const r = await fetch(url + path, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
  const j = (await r.json()) as unknown;
  if (!r.ok) throw new Error(`${url}${path}: HTTP ${r.status}: ${JSON.stringify(j)}`);
  return j;
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url + '/health', { signal: AbortSignal.timeout(500) });
      const j = (await r.json()) as { health?: string };
      if (j.health === 'true') return;
      last = JSON.stringify(j);
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`etcd member ${url} not healthy within ${timeoutMs} ms: ${last}`);
}
