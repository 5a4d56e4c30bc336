/**
 * Helpers for the tests that run a whole mesh with `skein up FILE` as a child process (up,
 * dashboard, monitor-cli, prometheus): start it and read the addresses it prints, stop it with
 * Ctrl-C, and send paced traffic through it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, SKEIN_BIN, api, tempDir } from './helpers.js';

/** The demo shop: a Node frontend calling two Python services and a gRPC service (reviews) by name through the mesh. */
export const SHOP = join(ROOT, 'examples', 'shop', 'shop.yaml');
/** The shop's services, in the order the API lists them. */
export const SHOP_SERVICES: readonly string[] = ['frontend', 'product-service', 'reviews', 'user-service'];
/** A page of the shop's frontend (it calls user-service, product-service and reviews). */
export const SHOP_PAGE = '/api/page?user_id=1&product_id=2';

/** The port of "host:port" (or of "http://host:port"). */
export const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

/** The addresses `skein up` prints when the matching listener is on. */
export type UpAddress = 'admin' | 'outbound' | 'dashboard';

export interface UpProcess {
  child: ChildProcess;
  /** The control plane's base URL, as printed (e.g. http://127.0.0.1:12345). */
  control: string;
  /** host:port of the proxy admin server, as printed; null when it is off. */
  admin: string | null;
  /** host:port of the outbound listener for callers outside the mesh, as printed; null when it is off. */
  outbound: string | null;
  /** The dashboard's URL, as printed (the last "dashboard:" line before "mesh is up"). */
  dashboard: string | null;
  /** The line that names the control plane (and the admin server and the outbound listener). */
  header: string;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Replica pids whose process groups stop() kills once skein up exited (only if it could not stop them). */
  pids: Set<number>;
  /** The last lines of stdout and stderr, for failure messages. */
  logs(): string;
  /** Ctrl-C (or `signal`), SIGKILL after 20 s; then kills what is left of the replicas in `pids`. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface UpOptions<K extends UpAddress> {
  /** Killed if the mesh is not up by then (default 60 s). */
  timeoutMs?: number;
  /** Addresses that must have been printed (an assertion fails otherwise); typed as strings then. */
  expect?: readonly K[];
}

/**
 * Runs `skein up FILE ...args` and resolves once it printed "mesh is up" (rejects with its output
 * if it exits first). The addresses come from what it printed.
 */
export async function startUp<K extends UpAddress = never>(file: string, args: string[], opts: UpOptions<K> = {}): Promise<UpProcess & { [P in K]: string }> {
  const child = spawn(process.execPath, [SKEIN_BIN, 'up', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const logs = () => `stdout:\n${stdout.slice(-60).join('\n')}\nstderr:\n${stderr.slice(-60).join('\n')}`;
  let header: string | null = null;
  let dashboard: string | null = null;
  let isUp = false;
  const up = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      stdout.push(line);
      if (isUp) return;
      if (header === null && /control plane at /.test(line)) header = line;
      const d = /dashboard: (http:\/\/\S+)/.exec(line);
      if (d !== null) dashboard = d[1] as string;
      if (line.includes('mesh is up')) {
        isUp = true;
        resolve();
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => stderr.push(line));
    void exited.then((e) => reject(new Error(`skein up exited (${e.code ?? e.signal}) before the mesh was up\n${logs()}`)));
  });
  // Too slow: Ctrl-C first (skein up stops the replicas it started), SIGKILL only if that hangs.
  let killer: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    child.kill('SIGINT');
    killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    void exited.then(() => clearTimeout(killer));
  }, opts.timeoutMs ?? 60_000);
  try {
    await up;
  } finally {
    clearTimeout(timer);
  }
  const h = header as string | null;
  assert.ok(h !== null, `skein up printed no "control plane at" line\n${logs()}`);
  const control = /control plane at (http:\/\/[^,\s]+)/.exec(h)?.[1];
  assert.ok(control, `skein up printed the control plane's address: ${h}\n${logs()}`);
  const printed: Record<UpAddress, string | null> = {
    admin: /proxy admin at http:\/\/([^,\s]+)/.exec(h)?.[1] ?? null,
    outbound: /outbound proxy at http:\/\/([^,\s]+)/.exec(h)?.[1] ?? null,
    dashboard,
  };
  const missing = (opts.expect ?? []).filter((k) => printed[k] === null);
  assert.deepEqual(missing, [], `skein up names the control plane and its ${(opts.expect ?? []).join(', ')} address(es): ${h}\n${logs()}`);
  const pids = new Set<number>();
  return {
    child,
    control,
    ...printed,
    header: h,
    stdout,
    stderr,
    exited,
    pids,
    logs,
    async stop(signal: NodeJS.Signals = 'SIGINT') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      }
      // Only if skein up could not stop them: each replica leads its own process group.
      for (const pid of pids) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone, as it should be */
        }
      }
    },
  } as UpProcess & { [P in K]: string };
}

export interface ShopOptions<K extends UpAddress> extends UpOptions<K> {
  /** `--outbound 127.0.0.1:0` (default) or `--outbound off`. */
  outbound?: boolean;
}

/**
 * `skein up examples/shop/shop.yaml` on OS-chosen ports (`--http 127.0.0.1:0 --dns off --outbound
 * 127.0.0.1:0 --admin 127.0.0.1:0`), once "mesh is up" was printed: with the frontend's service
 * port, and the replicas' pids in `pids` (stop() kills what skein up leaves behind).
 */
export async function startShop<K extends UpAddress = never>(opts: ShopOptions<K> = {}): Promise<UpProcess & { [P in K]: string } & { frontendPort: number }> {
  const args = ['--http', '127.0.0.1:0', '--dns', 'off', '--outbound', opts.outbound === false ? 'off' : '127.0.0.1:0', '--admin', '127.0.0.1:0'];
  const up = await startUp(SHOP, args, opts);
  try {
    const m = await api(up.control, 'GET', '/v1/mesh');
    assert.equal(m.status, 200, `GET /v1/mesh: ${m.status} ${JSON.stringify(m.body)}`);
    const services = m.body.services as Array<{ name: string; servicePort: string | null; instances: Array<{ pid: number | null }> }>;
    for (const s of services) for (const i of s.instances) if (i.pid !== null) up.pids.add(i.pid);
    const fe = services.find((s) => s.name === 'frontend');
    assert.ok(fe?.servicePort, `the frontend has a service port: ${JSON.stringify(m.body)}`);
    return Object.assign(up, { frontendPort: portOf(fe.servicePort) });
  } catch (e) {
    await up.stop();
    throw e;
  }
}

/** GET 127.0.0.1:port + path over `agent`; resolves with the status (0 when it failed). */
export function getStatus(port: number, path: string, agent: http.Agent, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** What a paced GET got: its status (0: no answer), its body, and its x-skein-error. */
interface Answer {
  readonly status: number;
  readonly body: string;
  readonly error: string;
}

function getAnswer(port: number, path: string, agent: http.Agent, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, error: String(res.headers['x-skein-error'] ?? '') }));
      res.on('error', (e) => resolve({ status: 0, body: `response error ${e.message}`, error: '' }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: `connection error ${e.message}`, error: '' }));
    req.end();
  });
}

/**
 * Sends GETs to 127.0.0.1:port + path at a fixed pace (fire and forget, keep-alive) until stopped;
 * counts what was sent and answered 200, and when each request was sent; keeps every other answer
 * (`bad`, when in `badAt`), and with `tallyOf` counts a field of the 200s' JSON bodies (the version
 * that answered, say). A pacer that fell behind (a busy machine) catches up.
 */
export class Pacer {
  sent = 0;
  ok = 0;
  /** When each request was sent (ms). */
  readonly times: number[] = [];
  /** Every answer that was not a 200: `HTTP 500 <x-skein-error> <body>`, or the connection's error. */
  readonly bad: string[] = [];
  /** When each bad answer came (ms). */
  readonly badAt: number[] = [];
  /** The 200s by `tallyOf` of their JSON body. */
  readonly tallies = new Map<string, number>();
  readonly startedAt = Date.now();
  stoppedAt = 0;
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly agent: http.Agent;

  constructor(port: number, path: string, perSecond: number, opts: { headers?: Record<string, string>; maxSockets?: number; tallyOf?: (body: any) => string | undefined } = {}) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16 });
    this.agent = agent;
    this.done = (async () => {
      const inflight = new Set<Promise<void>>();
      while (!this.stopped) {
        const p: Promise<void> = getAnswer(port, path, agent, opts.headers ?? {}).then((a) => {
          inflight.delete(p);
          if (a.status !== 200) {
            this.bad.push(a.status === 0 ? a.body : `HTTP ${a.status} ${a.error} ${a.body.slice(0, 200)}`);
            this.badAt.push(Date.now());
            return;
          }
          this.ok++;
          if (opts.tallyOf === undefined) return;
          let key: string | undefined;
          try {
            key = opts.tallyOf(JSON.parse(a.body));
          } catch {
            key = undefined;
          }
          if (key !== undefined) this.tallies.set(key, (this.tallies.get(key) ?? 0) + 1);
        });
        inflight.add(p);
        this.sent++;
        this.times.push(Date.now());
        const next = this.startedAt + (this.sent * 1000) / perSecond;
        await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      }
      this.stoppedAt = Date.now();
      await Promise.all(inflight);
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    this.agent.destroy();
  }
}

/** A `skein up` of a mesh file written to a temp dir (the tests that change it while it runs). */
export interface MeshUnderTest {
  readonly up: UpProcess;
  /** The mesh file `skein up` runs; write a changed one here and `skein apply -f` it. */
  readonly file: string;
  /** The service port of the mesh's first service. */
  readonly port: number;
  /** GET /v1/mesh's entry of `service` (its replicas' pids are stopped with skein up, whatever happens). */
  service<T extends { instances: ReadonlyArray<{ pid: number | null }> }>(service: string): Promise<T>;
  /** Stops skein up and removes the temp dir. */
  stop(): Promise<void>;
}

/** Writes `text` to a temp dir and runs `skein up` on it (loopback, ports from the OS, no DNS, no outbound listener). */
export async function upFromText(prefix: string, text: string, args: string[] = []): Promise<MeshUnderTest> {
  const dir = await tempDir(prefix);
  const file = join(dir.path, 'mesh.yaml');
  await writeFile(file, text);
  const up = await startUp(file, ['--http', '127.0.0.1:0', '--dns', 'off', '--outbound', 'off', '--admin', '127.0.0.1:0', ...args]);
  const m = await api(up.control, 'GET', '/v1/mesh');
  const port = portOf((m.body.services as Array<{ servicePort: string }>)[0]?.servicePort as string);
  return {
    up,
    file,
    port,
    service: async <T extends { instances: ReadonlyArray<{ pid: number | null }> }>(name: string): Promise<T> => {
      const r = await api(up.control, 'GET', '/v1/mesh');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const s = (r.body.services as Array<T & { name: string }>).find((x) => x.name === name);
      assert.ok(s !== undefined, `the mesh runs no service "${name}"`);
      for (const i of s.instances) if (i.pid !== null) up.pids.add(i.pid);
      return s;
    },
    stop: async () => {
      await up.stop();
      await dir.remove();
    },
  };
}
