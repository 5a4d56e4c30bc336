/**
 * The control plane on etcd against the embedded store, side by side in one run (issue 15 §4;
 * docs/scaling.md). For each store, a real `skein control` process (with `--store etcd`, on a
 * real 3-member etcd cluster started on 127.0.0.1 with ports from the OS, test/etcd-cluster.ts):
 *
 *  1. start on an empty store (time to ready);
 *  2. register a fleet of S services x I instances with N concurrent clients (instances/s,
 *     latency, the control plane's and etcd's CPU, RSS; etcd's database size, and one read of
 *     the whole prefix through the gateway, what a replica does at start-up);
 *  3. open W full watch streams (`GET /v1/watch`, what each proxy opens), 100 waiting for their
 *     snapshot at a time (snapshot bytes, time, RSS);
 *  4. E writes one after the other, each a new instance: time from sending the PUT to each
 *     watcher and to the last of the W having its event;
 *  5. kill -9 the control plane, start it again on the same store (time to ready with the fleet),
 *     and reconnect all W watchers at once with `since=` their last revision, as proxies do: the
 *     time until every one has its new snapshot, and the control plane's RSS peak meanwhile.
 *
 * The watchers live in this process (one socket each); the shape is 10,000 services x 10
 * instances and 1,000 proxies: `--services 10000`. The default is 200 services (2,000 instances)
 * and 1,000 watchers, which a 2-core machine runs in about two minutes for both stores: the
 * snapshots cost instances x watchers (every watcher gets the whole mesh, twice: at first and
 * after the restart), ~80 s per store at 10,000 instances, and at 100,000 ~16 minutes of CPU and
 * 50 GB per store with 1,000 watchers, so that shape ran here with 50 (docs/scaling.md). Speed is
 * printed, never asserted.
 *
 *   node dist/bench/control-store.js [--services 200] [--per-service 10] [--watchers 1000]
 *        [--clients 64] [--events 100] [--herd 1000] [--stores embedded,etcd] [--timeout 300]
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { startEtcdCluster, type EtcdCluster } from '../test/etcd-cluster.js';
import { adminTokenOf, api, machine, max, otherCpuMeter, percentile, printResult, processCpuSeconds, procSample, round, runMain, startControl, table, tempDir, warnIfBusy, type Control } from './lib.js';
import { openWatchers, registerFleet, rssSampler, WriteRounds, type Watcher } from './control-store-lib.js';

const { values: argv } = parseArgs({
  options: {
    services: { type: 'string', default: '200' },
    'per-service': { type: 'string', default: '10' },
    watchers: { type: 'string', default: '1000' },
    clients: { type: 'string', default: '64' },
    events: { type: 'string', default: '100' },
    herd: { type: 'string', default: '' },
    stores: { type: 'string', default: 'embedded,etcd' },
    timeout: { type: 'string', default: '300' },
  },
});
const positiveInt = (name: string, v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${v}"`);
  return n;
};
const SERVICES = positiveInt('services', argv.services);
const PER_SERVICE = positiveInt('per-service', argv['per-service']);
const WATCHERS = positiveInt('watchers', argv.watchers);
const CLIENTS = positiveInt('clients', argv.clients);
const EVENTS = positiveInt('events', argv.events);
const HERD = argv.herd === '' ? WATCHERS : positiveInt('herd', argv.herd);
const TIMEOUT_MS = positiveInt('timeout', argv.timeout) * 1000;
const STORES = argv.stores.split(',').map((s) => {
  if (s !== 'embedded' && s !== 'etcd') throw new Error(`--stores: "${s}" is not embedded or etcd`);
  return s;
});
const FLEET = SERVICES * PER_SERVICE;
const EVENT_TIMEOUT_MS = 10_000;
const MiB = 2 ** 20;

interface StoreResult {
  store: 'embedded' | 'etcd';
  readyEmptyMs: number;
  register: { instances: number; errors: number; perSecond: number; p50Ms: number; p99Ms: number; controlCpuPercent: number; etcdCpuPercent: number | null; otherCpuPercent: number };
  rssMiB: { empty: number; registered: number; watchersPeak: number; watchers: number; restartedReady: number; herdPeak: number; herdAfter: number };
  /** etcd's account, and one read of the mesh's whole prefix (what a replica does at start-up) through the gateway. */
  etcd: { dbSizeMiB: number; dbInUseMiB: number; membersRssMiB: number; prefixReadMs: number; prefixReadMiB: number } | null;
  /** CPU ms per snapshot: the control plane's (building, encoding, writing) and this process's (reading). */
  snapshot: { bytes: number; bytesPerInstance: number; openAllMs: number; controlCpuMsEach: number; readerCpuMsEach: number };
  writeToWatchers: { events: number; timeouts: number; lastP50Ms: number; lastP99Ms: number; lastMaxMs: number; eachP50Ms: number; eachP99Ms: number; putP50Ms: number; putP99Ms: number; outOfOrder: number };
  restart: { readyMs: number; herdMs: number; herdSnapshotMiB: number; controlCpuMsEach: number;
    /** Re-snapshots older than the last acknowledged write (none expected), and how far past it the newest was (etcd: the election's keys move its revision too). */
    staleSnapshots: number;
    revisionsPastLastWrite: number;
  };
}

/** etcd's own account of its database (one member's). */
async function etcdStatus(endpoint: string): Promise<{ dbSize: number; dbSizeInUse: number }> {
  const r = await fetch(`${endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' });
  const j = (await r.json()) as { dbSize?: string; dbSizeInUse?: string };
  return { dbSize: Number(j.dbSize ?? NaN), dbSizeInUse: Number(j.dbSizeInUse ?? NaN) };
}

const mib = (bytes: number) => round(bytes / MiB);

/** One range of everything under `prefix` through etcd's JSON gateway: its time and its size. */
async function readPrefix(endpoint: string, prefix: string): Promise<{ ms: number; bytes: number }> {
  const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
  const t0 = performance.now();
  const r = await fetch(`${endpoint}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from(prefix).toString('base64'), range_end: Buffer.from(end).toString('base64') }) });
  const text = await r.text();
  if (!r.ok) throw new Error(`reading ${prefix} from ${endpoint}: HTTP ${r.status} ${text.slice(0, 300)}`);
  return { ms: performance.now() - t0, bytes: Buffer.byteLength(text) };
}

/** CPU ms used since now by the process `pid` and by this one. */
function cpuSince(pid: number): () => { control: number; self: number } {
  const c0 = processCpuSeconds(pid);
  const s0 = process.cpuUsage();
  return () => {
    const s = process.cpuUsage(s0);
    return { control: (processCpuSeconds(pid) - c0) * 1000, self: (s.user + s.system) / 1000 };
  };
}

const rssNow = (pid: number): number | string => {
  try {
    return mib(procSample(pid).rssBytes);
  } catch {
    return '-';
  }
};

/** A failure while `cp` serves says whether it is still running, and its last lines. */
async function withControl<T>(cp: Control, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    await new Promise((r) => setTimeout(r, 500)); // its last words
    const state = cp.child.exitCode !== null || cp.child.signalCode !== null ? `exited (${cp.child.exitCode ?? cp.child.signalCode})` : 'still running';
    throw new Error(`${(e as Error).message}; the control plane ${state}, RSS ${rssNow(cp.pid)} MiB; its last lines:\n${cp.tail()}`, { cause: e });
  }
}

async function startTimed(dataDir: string, args: string[]): Promise<{ cp: Control; ms: number }> {
  const t0 = performance.now();
  const cp = await startControl({ dataDir, args, timeoutMs: TIMEOUT_MS });
  return { cp, ms: performance.now() - t0 };
}

/** What the phases share for one store. */
interface Run {
  store: 'embedded' | 'etcd';
  cluster: EtcdCluster | null;
  dataDir: string;
  args: string[];
  cp: Control;
  agent: http.Agent;
  watchers: Watcher[];
}

/** 2. The fleet, registered by CLIENTS clients. */
async function registerPhase(run: Run): Promise<Pick<StoreResult, 'register' | 'etcd'> & { rssRegistered: number }> {
  const { cp, cluster } = run;
  process.stdout.write(`registering ${FLEET.toLocaleString('en-US')} instances (${SERVICES} services x ${PER_SERVICE}) with ${CLIENTS} clients...\n`);
  const etcdPids = cluster?.members.map((m) => m.pid) ?? [];
  const etcdCpu = () => etcdPids.reduce((n, p) => n + processCpuSeconds(p), 0);
  const cpu0 = processCpuSeconds(cp.pid);
  const etcd0 = etcdCpu();
  const others = otherCpuMeter([cp.pid, process.pid, ...etcdPids]);
  const reg = await registerFleet({ base: cp.url, token: await adminTokenOf(cp.url), count: FLEET, perService: PER_SERVICE, clients: CLIENTS });
  const otherCpuPercent = others.stop();
  const controlCpuPercent = ((processCpuSeconds(cp.pid) - cpu0) / reg.seconds) * 100;
  const etcdCpuPercent = cluster === null ? null : round(((etcdCpu() - etcd0) / reg.seconds) * 100);
  if (reg.errors > 0) throw new Error(`${reg.errors} registrations failed; the first: ${reg.firstError}`);
  const rssRegistered = procSample(cp.pid).rssBytes;
  let etcd: StoreResult['etcd'] = null;
  if (cluster !== null) {
    const s = await etcdStatus(cluster.endpoints[0] as string);
    const read = await readPrefix(cluster.endpoints[0] as string, 'skein/');
    etcd = { dbSizeMiB: mib(s.dbSize), dbInUseMiB: mib(s.dbSizeInUse), membersRssMiB: mib(cluster.members.reduce((n, m) => n + procSample(m.pid).rssBytes, 0)), prefixReadMs: round(read.ms), prefixReadMiB: mib(read.bytes) };
  }
  process.stdout.write(`registered in ${round(reg.seconds)} s (${round(reg.instances / reg.seconds)}/s)\n`);
  const register = {
    instances: reg.instances,
    errors: reg.errors,
    perSecond: round(reg.instances / reg.seconds),
    p50Ms: round(percentile(reg.latencies, 50)),
    p99Ms: round(percentile(reg.latencies, 99)),
    controlCpuPercent: round(controlCpuPercent),
    etcdCpuPercent,
    otherCpuPercent: round(otherCpuPercent),
  };
  return { register, etcd, rssRegistered };
}

/** 3. The watchers, 100 waiting for their snapshot at a time; then 4. the writes, one at a time. */
async function watchPhase(run: Run): Promise<Pick<StoreResult, 'snapshot' | 'writeToWatchers'> & { rssPeak: number; rss: number; revision: number }> {
  const { cp } = run;
  const rounds = new WriteRounds(WATCHERS, EVENT_TIMEOUT_MS);
  const rss = rssSampler(cp.pid);
  const cpu = cpuSince(cp.pid);
  const opened = await withControl(cp, openWatchers({ base: cp.url, n: WATCHERS, concurrency: 100, timeoutMs: TIMEOUT_MS, agent: run.agent, onLine: rounds.line }, run.watchers));
  const rssPeak = rss.stop();
  const cost = cpu();
  const bytes = max(run.watchers.map((w) => w.snapshotBytes));
  process.stdout.write(`${WATCHERS} watchers have their snapshot (${mib(bytes)} MiB each) after ${round(opened.ms)} ms\n`);
  const rssNowBytes = procSample(cp.pid).rssBytes;

  let revision = 0;
  for (let k = 0; k < EVENTS; k++) {
    const service = `svc-${(k * 7919) % SERVICES}`;
    const r = await rounds.round(async () => {
      const res = await api(cp.url, 'PUT', `/v1/services/${service}/instances/ev-${k}`, { address: `10.200.${k >> 8}.${k & 255}`, port: 8080 });
      if (res.status !== 201) throw new Error(`register ${service}/ev-${k}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.revision as number;
    });
    revision = r.revision;
    if (!r.ok) {
      const closed = run.watchers.filter((w) => w.closed).length;
      process.stdout.write(`event ${k}: ${r.got}/${WATCHERS} watchers had it after ${EVENT_TIMEOUT_MS} ms (${closed} streams closed)\n`);
      if (closed > 0) break;
    }
  }
  return {
    snapshot: { bytes, bytesPerInstance: round(bytes / FLEET), openAllMs: round(opened.ms), controlCpuMsEach: round(cost.control / WATCHERS), readerCpuMsEach: round(cost.self / WATCHERS) },
    writeToWatchers: {
      events: rounds.last.length,
      timeouts: rounds.timeouts,
      lastP50Ms: round(percentile(rounds.last, 50)),
      lastP99Ms: round(percentile(rounds.last, 99)),
      lastMaxMs: round(percentile(rounds.last, 100)),
      eachP50Ms: round(percentile(rounds.each, 50)),
      eachP99Ms: round(percentile(rounds.each, 99)),
      putP50Ms: round(percentile(rounds.writeMs, 50)),
      putP99Ms: round(percentile(rounds.writeMs, 99)),
      outOfOrder: rounds.outOfOrder,
    },
    rssPeak,
    rss: rssNowBytes,
    revision,
  };
}

/** 5. kill -9, start again on the same store, every watcher reconnects at once with since=. */
async function restartPhase(run: Run, revision: number): Promise<Pick<StoreResult, 'restart'> & { rssReady: number; rssPeak: number; rssAfter: number }> {
  const gone = run.cp.child;
  const exited = new Promise((r) => gone.once('exit', r));
  gone.kill('SIGKILL');
  await exited;
  for (const w of run.watchers) w.close();
  run.watchers.length = 0;
  const again = await startTimed(run.dataDir, run.args);
  const cp = (run.cp = again.cp);
  const rssReady = procSample(cp.pid).rssBytes;
  const rss = rssSampler(cp.pid);
  const cpu = cpuSince(cp.pid);
  const herd = await withControl(cp, openWatchers({ base: cp.url, n: WATCHERS, concurrency: HERD, since: revision, timeoutMs: TIMEOUT_MS, agent: run.agent }, run.watchers));
  const rssPeak = rss.stop();
  const cost = cpu();
  process.stdout.write(`restarted: ready after ${round(again.ms)} ms; ${WATCHERS} watchers re-snapshotted after ${round(herd.ms)} ms\n`);
  return {
    restart: {
      readyMs: round(again.ms),
      herdMs: round(herd.ms),
      herdSnapshotMiB: mib(run.watchers.reduce((n, w) => n + w.snapshotBytes, 0)),
      controlCpuMsEach: round(cost.control / WATCHERS),
      staleSnapshots: run.watchers.filter((w) => (w.snapshotRevision ?? 0) < revision).length,
      revisionsPastLastWrite: max(run.watchers.map((w) => (w.snapshotRevision ?? 0) - revision)),
    },
    rssReady,
    rssPeak,
    rssAfter: procSample(cp.pid).rssBytes,
  };
}

async function runStore(store: 'embedded' | 'etcd'): Promise<StoreResult> {
  process.stdout.write(`\n--- ${store} store ---\n`);
  let cluster: EtcdCluster | null = null;
  const dir = tempDir(`skein-bench-store-${store}-`);
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const watchers: Watcher[] = [];
  let run: Run | null = null;
  try {
    if (store === 'etcd') {
      cluster = await startEtcdCluster({ members: 3, dir: dir.path });
      process.stdout.write(`etcd: 3 members at ${cluster.endpoints.join(', ')}\n`);
    }
    const args = cluster === null ? [] : ['--store', 'etcd', '--etcd', cluster.endpoints.join(','), '--replica', 'bench'];
    const dataDir = `${dir.path}/control`;
    const first = await startTimed(dataDir, args);
    run = { store, cluster, dataDir, args, cp: first.cp, agent, watchers };
    const rssEmpty = procSample(run.cp.pid).rssBytes;
    const reg = await registerPhase(run);
    const watch = await watchPhase(run);
    const restart = await restartPhase(run, watch.revision);
    return {
      store,
      readyEmptyMs: round(first.ms),
      register: reg.register,
      rssMiB: { empty: mib(rssEmpty), registered: mib(reg.rssRegistered), watchersPeak: mib(watch.rssPeak), watchers: mib(watch.rss), restartedReady: mib(restart.rssReady), herdPeak: mib(restart.rssPeak), herdAfter: mib(restart.rssAfter) },
      etcd: reg.etcd,
      snapshot: watch.snapshot,
      writeToWatchers: watch.writeToWatchers,
      restart: restart.restart,
    };
  } finally {
    for (const w of watchers) w.close();
    agent.destroy();
    if (run !== null) await run.cp.stop();
    await cluster?.close();
    dir.remove();
  }
}

runMain(async () => {
  const info = machine();
  warnIfBusy(info);
  process.stdout.write(
    `control-store: ${SERVICES.toLocaleString('en-US')} services x ${PER_SERVICE} instances, ${WATCHERS} full watch streams, ${CLIENTS} registering clients, ${EVENTS} writes to the watchers; stores: ${STORES.join(', ')}\n`,
  );
  const results: StoreResult[] = [];
  for (const s of STORES) results.push(await runStore(s));
  const e = results.find((r) => r.store === 'embedded');
  const d = results.find((r) => r.store === 'etcd');
  const cols = results.map((r) => r.store);
  const ratio = (f: (r: StoreResult) => number | null) => {
    const [a, b] = e !== undefined && d !== undefined ? [f(d), f(e)] : [null, null];
    return a === null || b === null ? '-' : round(a / b, 2);
  };
  const row = (name: string, f: (r: StoreResult) => number | null): Array<string | number> => [name, ...results.map((r) => f(r) ?? '-'), ...(e && d ? [ratio(f)] : [])];
  table(
    `The control plane on each store: ${FLEET.toLocaleString('en-US')} instances, ${WATCHERS} watchers, same run`,
    ['measure', ...cols, ...(e && d ? ['etcd / embedded'] : [])],
    [
      row('ready, empty store (ms)', (r) => r.readyEmptyMs),
      row(`registrations/s (${CLIENTS} clients)`, (r) => r.register.perSecond),
      row('registration p50 (ms)', (r) => r.register.p50Ms),
      row('registration p99 (ms)', (r) => r.register.p99Ms),
      row('control CPU while registering (%)', (r) => r.register.controlCpuPercent),
      row('etcd CPU while registering (%, 3 members)', (r) => r.register.etcdCpuPercent),
      row('RSS empty (MiB)', (r) => r.rssMiB.empty),
      row('RSS with the fleet (MiB)', (r) => r.rssMiB.registered),
      row(`RSS with ${WATCHERS} watchers (MiB)`, (r) => r.rssMiB.watchers),
      row('RSS peak while they opened (MiB)', (r) => r.rssMiB.watchersPeak),
      row('snapshot (bytes)', (r) => r.snapshot.bytes),
      row(`${WATCHERS} snapshots, 100 at a time (ms)`, (r) => r.snapshot.openAllMs),
      row('  control CPU per snapshot (ms)', (r) => r.snapshot.controlCpuMsEach),
      row('  reader CPU per snapshot (ms, this process)', (r) => r.snapshot.readerCpuMsEach),
      row('PUT -> last watcher p50 (ms)', (r) => r.writeToWatchers.lastP50Ms),
      row('PUT -> last watcher p99 (ms)', (r) => r.writeToWatchers.lastP99Ms),
      row('PUT -> each watcher p99 (ms)', (r) => r.writeToWatchers.eachP99Ms),
      row('PUT acknowledged p50 (ms)', (r) => r.writeToWatchers.putP50Ms),
      row('restart: ready with the fleet (ms)', (r) => r.restart.readyMs),
      row(`restart: ${WATCHERS} re-snapshots, ${HERD} at once (ms)`, (r) => r.restart.herdMs),
      row('  control CPU per re-snapshot (ms)', (r) => r.restart.controlCpuMsEach),
      row('restart: RSS ready (MiB)', (r) => r.rssMiB.restartedReady),
      row('restart: RSS peak in the herd (MiB)', (r) => r.rssMiB.herdPeak),
    ],
  );
  if (d?.etcd) {
    process.stdout.write(
      `etcd: database ${d.etcd.dbSizeMiB} MiB (${d.etcd.dbInUseMiB} MiB in use) for ${FLEET.toLocaleString('en-US')} instances; members' RSS ${d.etcd.membersRssMiB} MiB in all; one read of the whole prefix: ${d.etcd.prefixReadMiB} MiB of JSON in ${d.etcd.prefixReadMs} ms\n`,
    );
  }
  for (const r of results) {
    const w = r.writeToWatchers;
    if (w.timeouts > 0 || w.outOfOrder > 0 || r.restart.staleSnapshots > 0) {
      process.stdout.write(`${r.store}: ${w.timeouts} writes not seen by every watcher in ${EVENT_TIMEOUT_MS} ms, ${w.outOfOrder} events out of order, ${r.restart.staleSnapshots} re-snapshots older than the last acknowledged write\n`);
    }
  }
  printResult('control-store', { machine: info, services: SERVICES, perService: PER_SERVICE, instances: FLEET, watchers: WATCHERS, clients: CLIENTS, events: EVENTS, herd: HERD, results });
});
