/**
 * Helpers for the tests that run a whole mesh with `skein up FILE` as a child process (up,
 * dashboard, monitor-cli, prometheus): start it and read the addresses it prints, stop it with
 * Ctrl-C, and send paced traffic through it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, SKEIN_BIN, api } from './helpers.js';

/** The demo shop: a Node frontend calling two Python services by name through the mesh. */
export const SHOP = join(ROOT, 'examples', 'shop', 'shop.yaml');
/** The shop's services, in the order the API lists them. */
export const SHOP_SERVICES: readonly string[] = ['frontend', 'product-service', 'user-service'];
/** A page of the shop's frontend (it calls user-service and product-service). */
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

/**
 * Sends GETs to 127.0.0.1:port + path at a fixed pace (fire and forget, keep-alive) until stopped;
 * counts what was sent and answered 200, and when each request was sent. A pacer that fell behind
 * (a busy machine) catches up.
 */
export class Pacer {
  sent = 0;
  ok = 0;
  /** When each request was sent (ms). */
  readonly times: number[] = [];
  readonly startedAt = Date.now();
  stoppedAt = 0;
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly agent: http.Agent;

  constructor(port: number, path: string, perSecond: number, opts: { headers?: Record<string, string>; maxSockets?: number } = {}) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16 });
    this.agent = agent;
    this.done = (async () => {
      const inflight = new Set<Promise<void>>();
      while (!this.stopped) {
        const p: Promise<void> = getStatus(port, path, agent, opts.headers).then((s) => {
          if (s === 200) this.ok++;
          inflight.delete(p);
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

/** Steady keep-alive GETs at `perSecond`: statuses, connection errors and the versions that answered. */
export class Load {
  sent = 0;
  ok = 0;
  readonly bad: string[] = [];
  /** When each bad answer came (Date.now()). */
  readonly badAt: number[] = [];
  readonly versions = new Map<string, number>();
  private stopped = false;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  private readonly done: Promise<void>;

  constructor(port: number, perSecond: number) {
    const start = Date.now();
    this.done = (async () => {
      const inflight = new Set<Promise<void>>();
      while (!this.stopped) {
        const p = this.one(port).finally(() => inflight.delete(p));
        inflight.add(p);
        this.sent++;
        await new Promise((r) => setTimeout(r, Math.max(0, start + (this.sent * 1000) / perSecond - Date.now())));
      }
      await Promise.all(inflight);
    })();
  }

  private one(port: number): Promise<void> {
    return new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent: this.agent, timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode === 200) {
            this.ok++;
            const v = (JSON.parse(body) as { version: string }).version;
            this.versions.set(v, (this.versions.get(v) ?? 0) + 1);
          } else {
            this.bad.push(`HTTP ${res.statusCode} ${res.headers['x-skein-error'] ?? ''} ${body.slice(0, 200)}`);
            this.badAt.push(Date.now());
          }
          resolve();
        });
        res.on('error', (e) => {
          this.bad.push(`response error ${e.message}`);
          this.badAt.push(Date.now());
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => {
        this.bad.push(`connection error ${e.message}`);
        this.badAt.push(Date.now());
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    this.agent.destroy();
  }
}
