/**
 * What `skein up` runs: the services of a mesh file, each under a Supervisor, wired into the
 * mesh through the proxy and the control plane.
 *
 * Per service: an outbound listener (its replicas get it as HTTP_PROXY) and a "service port", an
 * outbound listener pinned to the service, for callers outside the mesh (a browser, curl).
 * Per replica, once its readiness probe passes: an inbound listener in front of it, registered
 * in the control plane as the instance's address. So a call from one service to another crosses
 * two proxy listeners: the caller's outbound and the callee's inbound.
 *
 * Stopping a replica (scale down, Ctrl-C): deregister it, wait until the proxy no longer routes
 * to it, drain its inbound listener (requests in flight finish), then SIGTERM. A replica that
 * crashed is deregistered and restarted with backoff by its supervisor.
 */
import type { FastifyInstance } from 'fastify';
import { type MeshFile, type MeshService, replicaInstance, serviceCwd, startOrder } from '../api/mesh.js';
import { SkeinError } from '../core/errors.js';
import { OUTSIDE_CALLER } from '../api/names.js';
import { endpointKey } from '../discovery/endpoint.js';
import type { Proxy } from '../proxy/proxy.js';
import { type OutputSink, Supervisor, type SupervisorEvent } from './supervisor.js';

export interface MeshRunnerOptions {
  readonly mesh: MeshFile;
  /** Path of the mesh file (relative `cwd`s start from its directory). */
  readonly file: string;
  /** The control plane's base URL. */
  readonly controlUrl: string;
  /** The token the runtime writes with (skein up: the admin token; automation would do). */
  readonly token?: string;
  readonly proxy: Proxy;
  /** Host of every listener and replica. Default 127.0.0.1. */
  readonly host?: string;
  readonly output?: OutputSink;
  /** One line per lifecycle event, for people. */
  readonly say?: (line: string) => void;
  /** How long to wait for each service to be ready before starting its dependents. Default: its readiness deadline x 3. */
  readonly startTimeoutMs?: number;
  /** Scaling and replica lifecycle for the mesh event feed (type "scale"). */
  readonly onMeshEvent?: (e: { time: number; type: 'scale'; service: string; id: string | null; message: string; [field: string]: unknown }) => void;
}

export interface ServiceStatus {
  readonly name: string;
  readonly replicas: number;
  readonly ready: number;
  readonly outbound: string | null;
  readonly servicePort: string | null;
  readonly instances: ReadonlyArray<{ id: string; state: string; pid: number | null; appPort: number | null; restarts: number }>;
}

interface Running {
  readonly svc: MeshService;
  readonly sup: Supervisor;
  readonly outbound: string;
  readonly servicePort: string;
}

async function api(base: string, token: string | undefined, method: string, path: string, body?: unknown): Promise<void> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const init: RequestInit = { method, headers };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  if (!res.ok && !(method === 'DELETE' && res.status === 404)) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { message?: string }).message ?? text;
    } catch {
      /* not JSON */
    }
    throw new SkeinError('SKEIN_E_INTERNAL', `${method} ${path}: ${res.status} ${msg}`);
  }
}

export class MeshRunner {
  private readonly running = new Map<string, Running>();
  private readonly host: string;
  private readonly say: (line: string) => void;
  private stopping: Promise<void> | null = null;

  constructor(private readonly o: MeshRunnerOptions) {
    this.host = o.host ?? '127.0.0.1';
    this.say = o.say ?? (() => undefined);
  }

  get name(): string {
    return this.o.mesh.name;
  }

  /** Starts every service, each after the ones it depends on are ready. */
  async start(): Promise<void> {
    for (const svc of startOrder(this.o.mesh)) {
      if (this.stopping !== null) return;
      await this.startService(svc);
      const timeout = this.o.startTimeoutMs ?? svc.readiness.deadlineMs * 3;
      const r = this.running.get(svc.name) as Running;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          r.sup.whenAllReady(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new SkeinError('SKEIN_E_INTERNAL', `service "${svc.name}" was not ready within ${timeout} ms`)), timeout);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  private async startService(svc: MeshService): Promise<void> {
    const { proxy, controlUrl, token } = this.o;
    const p = svc.balancer;
    await api(controlUrl, token, 'PUT', `/v1/services/${svc.name}`, {
      balancer: p.hashKey === null ? { kind: p.kind } : { kind: p.kind, hashKey: p.hashKey },
      ...svc.traffic,
      ...(svc.authorization === null ? {} : { authorization: svc.authorization }),
      ...(svc.mtlsMode === null ? {} : { mtls: { mode: svc.mtlsMode } }),
    });
    const out = await proxy.addWorkload({ name: svc.name, outbound: { host: this.host, port: 0 } });
    // The service port is for callers from outside the mesh (a browser, curl): they call as
    // OUTSIDE_CALLER, like the mesh's own outbound listener, never as the service itself.
    const pinned = await proxy.addWorkload({ name: `${svc.name}-service-port`, service: OUTSIDE_CALLER, outbound: { host: this.host, port: 0 }, pin: svc.name });
    const outbound = out.outbound as string;
    const sup = new Supervisor({
      service: svc,
      cwd: serviceCwd(this.o.file, svc),
      host: this.host,
      extraEnv: { HTTP_PROXY: `http://${outbound}`, http_proxy: `http://${outbound}`, SKEIN_OUTBOUND: outbound, SKEIN_CONTROL: controlUrl },
      ...(this.o.output === undefined ? {} : { output: this.o.output }),
      onReady: async (r) => {
        const inb = await proxy.addWorkload({ name: r.id, service: svc.name, inbound: { host: this.host, port: 0 }, app: { host: r.address, port: r.port } });
        const inboundPort = Number((inb.inbound as string).split(':').pop());
        const inst = replicaInstance(svc, { id: r.id, address: this.host, port: inboundPort });
        // The control plane checks the app itself, on its own port: the inbound listener in front of
        // it takes only its mesh peers' mTLS (Linkerd's kubelet probes go to the app port too).
        const check =
          svc.readiness.type === 'http'
            ? { type: 'http', path: svc.readiness.path, port: r.port, interval: '5s', initialState: 'healthy' }
            : { type: 'tcp', port: r.port, interval: '5s', initialState: 'healthy' };
        try {
          await api(controlUrl, token, 'PUT', `/v1/services/${svc.name}/instances/${r.id}`, { ...inst, check });
        } catch (e) {
          await proxy.removeWorkload(r.id, 0);
          throw e;
        }
      },
      onStopping: async (r) => {
        await api(controlUrl, token, 'DELETE', `/v1/services/${svc.name}/instances/${r.id}`);
        // Callers stop picking it once the proxy has seen the deregistration.
        await proxy.whenEndpointGone(svc.name, endpointKey(svc.name, r.id), 2000);
        await proxy.removeWorkload(r.id, svc.stopTimeoutMs);
      },
      onExit: async (r) => {
        // Close its inbound listener first: callers then get a refused connection, which their
        // proxies retry on another replica, instead of a 502 from a listener with no app.
        await proxy.removeWorkload(r.id, 0);
        await api(controlUrl, token, 'DELETE', `/v1/services/${svc.name}/instances/${r.id}`);
      },
      onEvent: (e) => this.event(e),
    });
    this.running.set(svc.name, { svc, sup, outbound, servicePort: pinned.outbound as string });
    sup.start(svc.replicas);
  }

  private meshEvent(service: string, id: string | null, message: string, fields: Record<string, unknown>): void {
    try {
      this.o.onMeshEvent?.({ time: Date.now(), type: 'scale', service, id, message, ...fields });
    } catch {
      /* the feed's trouble is not the runtime's */
    }
  }

  private event(e: SupervisorEvent): void {
    const service = e.service;
    switch (e.type) {
      case 'ready':
        this.say(`${e.id} ready (pid ${e.pid}, port ${e.port})`);
        break;
      case 'exited': {
        if (e.expected) break;
        const why = e.error ?? (e.signal !== null ? `signal ${e.signal}` : `code ${e.code}`);
        this.say(`${e.id} exited unexpectedly (${why}) after ${Math.round(e.uptimeMs)} ms`);
        this.meshEvent(service, e.id, `${e.id} exited unexpectedly (${why})`, { change: 'crash' });
        break;
      }
      case 'restarting':
        this.say(`${e.id} restarting in ${Math.round(e.delayMs)} ms (restart ${e.attempt})`);
        this.meshEvent(service, e.id, `${e.id} restarting (restart ${e.attempt})`, { change: 'restart', attempt: e.attempt });
        break;
      case 'failed':
        this.say(`${e.id} gave up after ${e.restarts} restarts`);
        this.meshEvent(service, e.id, `${e.id} gave up after ${e.restarts} restarts`, { change: 'failed', restarts: e.restarts });
        break;
      case 'hook-error':
        this.say(`${e.id}: ${e.hook} failed: ${(e.error as Error).message}`);
        break;
      case 'error':
        this.say(`${e.id}: ${(e.error as Error).message}`);
        break;
      default:
        break;
    }
  }

  status(): ServiceStatus[] {
    return this.o.mesh.services.map((svc) => {
      const r = this.running.get(svc.name);
      const list = r?.sup.list() ?? [];
      return {
        name: svc.name,
        replicas: list.length,
        ready: r?.sup.readyCount ?? 0,
        outbound: r?.outbound ?? null,
        servicePort: r?.servicePort ?? null,
        instances: list.map((x) => ({ id: x.id, state: x.state, pid: x.pid, appPort: x.port, restarts: x.restarts })),
      };
    });
  }

  /** Changes a service's replicas; resolves when the surplus ones are gone (new ones start at once). */
  async scale(service: string, replicas: number): Promise<void> {
    const r = this.running.get(service);
    if (r === undefined) {
      const known = this.o.mesh.services.some((s) => s.name === service);
      throw new SkeinError(known ? 'SKEIN_E_SHUTTING_DOWN' : 'SKEIN_E_UNKNOWN_SERVICE', known ? `service "${service}" is not running` : `mesh "${this.name}" has no service "${service}"`, { field: 'service' });
    }
    if (!Number.isInteger(replicas) || replicas < 0 || replicas > 100) {
      throw new SkeinError('SKEIN_E_VALIDATION', `replicas must be an integer from 0 to 100, got ${JSON.stringify(replicas)}`, { field: 'replicas' });
    }
    this.say(`scaling ${service} to ${replicas}`);
    const from = r.sup.list().length;
    this.meshEvent(service, null, `${service} scaled from ${from} to ${replicas} replicas`, { change: 'replicas', from, to: replicas });
    await r.sup.scale(replicas);
  }

  /** Stops services in the reverse of the start order, each drained before its dependencies. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const svc of startOrder(this.o.mesh).reverse()) {
        const r = this.running.get(svc.name);
        if (r === undefined) continue;
        await r.sup.stop();
        await this.o.proxy.removeWorkload(`${svc.name}-service-port`, 1000);
        await this.o.proxy.removeWorkload(svc.name, 1000);
        this.running.delete(svc.name);
      }
    })();
    return this.stopping;
  }

  /** Synchronous last resort: SIGKILL every replica. */
  killAll(): void {
    for (const r of this.running.values()) r.sup.killAll();
  }
}

/** The runtime's routes on the control plane API: GET /v1/mesh, PUT /v1/mesh/services/:service/replicas. */
export function meshRoutes(runner: () => MeshRunner | null): (app: FastifyInstance) => void {
  return (app) => {
    const need = (): MeshRunner => {
      const r = runner();
      if (r === null) throw new SkeinError('SKEIN_E_SHUTTING_DOWN', 'the mesh is still starting');
      return r;
    };
    app.get('/v1/mesh', async () => {
      const r = need();
      return { name: r.name, services: r.status() };
    });
    app.put<{ Params: { service: string } }>('/v1/mesh/services/:service/replicas', async (req, reply) => {
      const r = need();
      const body = req.body as { replicas?: unknown } | null;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new SkeinError('SKEIN_E_VALIDATION', 'body must be {"replicas": N}', { field: 'body' });
      const extra = Object.keys(body).filter((k) => k !== 'replicas');
      if (extra.length > 0) throw new SkeinError('SKEIN_E_VALIDATION', `${extra[0]} is not a known field (the body is {"replicas": N})`, { field: extra[0] as string });
      if (typeof body.replicas !== 'number') throw new SkeinError('SKEIN_E_VALIDATION', 'replicas is required and must be an integer from 0 to 100', { field: 'replicas' });
      // Validates and starts at once; the surplus replicas drain in the background.
      const done = r.scale(req.params.service, body.replicas);
      await Promise.race([done, new Promise((res) => setImmediate(res))]);
      done.catch(() => undefined);
      reply.code(202);
      return { service: req.params.service, replicas: body.replicas, services: r.status().filter((s) => s.name === req.params.service) };
    });
  };
}
