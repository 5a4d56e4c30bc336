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
 * Stopping a replica (scale down, a rollout, Ctrl-C): deregister it, wait until every proxy the
 * control plane knows (and the runtime's own) no longer picks it (proxy-ack.ts, capped), drain its
 * inbound listener (requests in flight finish, idle keep-alive connections close), then SIGTERM,
 * SIGKILL after its stopTimeout. A replica that crashed is deregistered and restarted with backoff
 * by its supervisor.
 *
 * Which revision runs how many replicas is each service's ServiceRuntime (service-runtime.ts);
 * `apply` takes a changed mesh file and hands each service its new spec. The API routes are in
 * mesh-routes.ts.
 */
import { type MeshFile, type MeshService, replicaInstance, serviceCwd, startOrder } from '../api/mesh.js';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import { probeOnce, type ProbeTarget } from './readiness.js';
import { ControlReplicas } from '../discovery/control-replicas.js';
import { SkeinError } from '../core/errors.js';
import { OUTSIDE_CALLER } from '../api/names.js';
import type { Protocol } from '../api/types.js';
import { endpointKey } from '../discovery/endpoint.js';
import type { MeshProxy } from '../proxy/mesh-proxy.js';
import { awaitProxyAck } from './proxy-ack.js';
import { Autoscaler, type AutoscaleSignals, type AutoscaleView } from './autoscale.js';
import { controlUnavailable, HttpAutoscaleSignals } from './autoscale-signals.js';
import { ServiceRuntime, type ApplyResult, type InstanceStatus } from './service-runtime.js';
import type { CanaryIo, CanarySplit } from './canary.js';
import type { WebhookOutcome } from './canary-analysis.js';
import type { Webhook } from '../api/canary.js';
import { CONTROL_DEFAULTS } from '../api/control.js';
import { type OutputSink, Supervisor, type SupervisorEvent } from './supervisor.js';

export interface MeshRunnerOptions {
  readonly mesh: MeshFile;
  /** Path of the mesh file (relative `cwd`s start from its directory). */
  readonly file: string;
  /** The control plane's base URL (the first replica's, with `control`). */
  readonly controlUrl: string;
  /** Several control-plane replicas (skein up --join): every call fails over between them. Absent: controlUrl alone. */
  readonly control?: ControlReplicas;
  /** The token the runtime writes with (skein up: the admin token; automation would do). */
  readonly token?: string;
  /**
   * What a replica of `service` needs to join the mesh without a proxy (the SDK, docs/sdk.md):
   * its credentials, made for each start (a join token is spent by its first use), given to it as
   * environment variables beside HTTP_PROXY. Absent: none.
   */
  readonly credentials?: (service: string, replica: string) => Promise<Readonly<Record<string, string>>>;
  /** The mesh's proxy: a Proxy, or `--workers N`'s ProxyWorkers (every worker gets each workload). */
  readonly proxy: MeshProxy;
  /** Host of every listener and replica. Default 127.0.0.1. */
  readonly host?: string;
  /**
   * Joined to a shared control plane (`skein up --join`): the address other hosts reach this
   * host's inbound listeners at. They bind it, and instances are registered with it. Default: host.
   */
  readonly advertise?: string;
  /**
   * Joined: the control plane may not reach the apps (they listen on loopback), so the runtime
   * checks each ready replica itself (its readiness probe) and reports it with TTL heartbeats
   * every ttl/3: a host cut off from the control plane stops heartbeating and its instances
   * expire. Null or absent: the control plane checks the apps itself.
   */
  readonly heartbeatTtlMs?: number | null;
  readonly output?: OutputSink;
  /** One line per lifecycle event, for people. */
  readonly say?: (line: string) => void;
  /** How long to wait for each service to be ready before starting its dependents. Default: its readiness deadline x 3. */
  readonly startTimeoutMs?: number;
  /** Timers of rollouts (minReady, progress deadlines) and of the drain. Default the system clock. */
  readonly clock?: Clock;
  /** The control plane's scrape interval: the shortest time a canary's signals are asked over. */
  readonly scrapeIntervalMs?: number;
  /** Scaling, rollouts and replica lifecycle for the mesh event feed (type "scale"). */
  /** Where autoscalers read the signals. Default: the control plane's API and the runtime's proxy (autoscale-signals.ts). */
  readonly autoscaleSignals?: AutoscaleSignals;
  readonly onMeshEvent?: (e: { time: number; type: 'scale' | 'rollout' | 'canary' | 'autoscale'; service: string; id: string | null; message: string; [field: string]: unknown }) => void;
}

export interface ServiceStatus {
  readonly name: string;
  /** Replicas asked for, across revisions (not those draining). */
  readonly replicas: number;
  readonly ready: number;
  /** The service's replicas setting. */
  readonly desired: number;
  /** Its latest revision's number, and whether a rollout is moving to it. */
  readonly revision: number;
  readonly rollout: string | null;
  readonly outbound: string | null;
  readonly servicePort: string | null;
  /** What the service speaks (its service port carries opaque TCP streams when tcp). */
  readonly protocol: Protocol;
  /** Every live replica: of every revision, draining ones included. */
  readonly instances: readonly InstanceStatus[];
  /** Its autoscaler's policy and last decision; null: not autoscaled. */
  readonly autoscale: AutoscaleView | null;
}

interface Running {
  readonly rt: ServiceRuntime;
  readonly autoscaler: Autoscaler;
  readonly outbound: string;
  readonly servicePort: string;
}

/** One exchange with one control-plane replica: its status and body (never thrown for an HTTP status). */
async function send(base: string, token: string | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const init: RequestInit = { method, headers, signal: AbortSignal.timeout(10_000) };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + path, init);
  return { status: res.status, text: await res.text() };
}

/** The JSON of an answer; an error answer is thrown with its message (a DELETE of what is gone is not one). */
function answerOf<T>(a: { status: number; text: string }, method: string, path: string): T {
  if ((a.status < 200 || a.status > 299) && !(method === 'DELETE' && a.status === 404)) {
    let msg = a.text;
    try {
      msg = (JSON.parse(a.text) as { message?: string }).message ?? a.text;
    } catch {
      /* not JSON */
    }
    throw new SkeinError('SKEIN_E_INTERNAL', `${method} ${path}: ${a.status} ${msg}`);
  }
  return (a.text === '' ? undefined : JSON.parse(a.text)) as T;
}

/** A canary's webhook: POST its JSON body; 2xx within its timeout passes (Flagger's rule). */
async function callWebhook(w: Webhook, body: Record<string, unknown>): Promise<WebhookOutcome> {
  const started = performance.now();
  try {
    const res = await fetch(w.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(w.timeoutMs) });
    await res.arrayBuffer();
    return { name: w.name, type: w.type, ok: res.status >= 200 && res.status < 300, detail: `HTTP ${res.status} in ${Math.round(performance.now() - started)} ms` };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string } };
    const detail = err.name === 'TimeoutError' ? `no answer within ${w.timeoutMs} ms` : (err.cause?.code ?? err.message);
    return { name: w.name, type: w.type, ok: false, detail };
  }
}

export class MeshRunner {
  private readonly running = new Map<string, Running>();
  private readonly host: string;
  private readonly say: (line: string) => void;
  private stopping: Promise<void> | null = null;
  private mesh: MeshFile;
  private readonly clock: Clock;
  private readonly autoscaleSignals: AutoscaleSignals;
  private readonly advertise: string;
  /** Joined: the heartbeat timer of each registered replica. */
  private readonly beats = new Map<string, TimerHandle>();
  private readonly replicas: ControlReplicas;

  constructor(private readonly o: MeshRunnerOptions) {
    this.host = o.host ?? '127.0.0.1';
    this.advertise = o.advertise ?? this.host;
    this.replicas = o.control ?? new ControlReplicas([o.controlUrl], o.clock ?? systemClock);
    this.say = o.say ?? (() => undefined);
    this.mesh = o.mesh;
    this.clock = o.clock ?? systemClock;
    this.autoscaleSignals =
      o.autoscaleSignals ?? new HttpAutoscaleSignals({ controlUrl: o.controlUrl, control: this.replicas, token: o.token, clock: this.clock, inFlight: (s) => o.proxy.inFlight(s) });
  }

  get name(): string {
    return this.mesh.name;
  }

  /** A call to the control plane (the replica in use, or the next that answers); its JSON answer, an error answer thrown with its message. */
  private async api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const a = await this.replicas.call((url) => send(url, this.o.token, method, path, body), { unavailable: controlUnavailable });
    return answerOf<T>(a, method, path);
  }

  /** The mesh as it runs now (the last file applied). */
  get current(): MeshFile {
    return this.mesh;
  }

  /** Starts every service, each after the ones it depends on are ready. */
  async start(): Promise<void> {
    for (const svc of startOrder(this.mesh)) {
      if (this.stopping !== null) return;
      await this.startService(svc);
      const timeout = this.o.startTimeoutMs ?? svc.readiness.deadlineMs * 3;
      const r = this.running.get(svc.name) as Running;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          r.rt.whenAllReady(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new SkeinError('SKEIN_E_INTERNAL', `service "${svc.name}" was not ready within ${timeout} ms`)), timeout);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /**
   * The Service resource of `svc` (its balancer, traffic, authorization and mTLS policy); with a
   * canary's `split`, its backends share the traffic between the stable and canary versions.
   */
  private async putService(svc: MeshService, split: CanarySplit | null = null): Promise<void> {
    const p = svc.balancer;
    await this.api('PUT', `/v1/services/${svc.name}`, {
      balancer: p.hashKey === null ? { kind: p.kind } : { kind: p.kind, hashKey: p.hashKey },
      // Scaled to zero, callers' proxies hold its requests while it wakes (its own coldStart, if it has one, wins).
      ...(svc.autoscale?.min === 0 ? { coldStart: {} } : {}),
      ...svc.traffic,
      ...(split === null
        ? {}
        : {
            backends: [
              { subset: { version: split.stable }, weight: 100 - split.canaryWeight },
              { subset: { version: split.canary }, weight: split.canaryWeight },
            ],
          }),
      ...(svc.authorization === null ? {} : { authorization: svc.authorization }),
      ...(svc.mtlsMode === null ? {} : { mtls: { mode: svc.mtlsMode } }),
      protocol: svc.protocol,
    });
  }

  /** The mesh side of a service's canaries: its split, the canary's signals, webhooks. */
  private canaryIo(name: string): CanaryIo {
    return {
      setSplit: async (split) => this.putService((this.running.get(name)?.rt.spec ?? this.mesh.services.find((s) => s.name === name)) as MeshService, split),
      signals: async (version, ms) => {
        const last = Math.max(ms, this.o.scrapeIntervalMs ?? CONTROL_DEFAULTS.scrapeIntervalMs);
        const r = await this.api<{ versions: Array<{ version: string; requests: number; failures: number; latencyMs: { p99: number | null } }> }>('GET', `/v1/signals/services/${name}/versions?last=${last}ms`);
        const v = r.versions.find((x) => x.version === version);
        return v === undefined ? null : { requests: v.requests, failures: v.failures, p99Ms: v.latencyMs.p99 };
      },
      webhook: callWebhook,
    };
  }

  private async startService(svc: MeshService): Promise<void> {
    const { proxy } = this.o;
    await this.putService(svc);
    const out = await proxy.addWorkload({ name: svc.name, outbound: { host: this.host, port: 0 } });
    // The service port is for callers from outside the mesh (a browser, curl): they call as
    // OUTSIDE_CALLER, like the mesh's own outbound listener, never as the service itself.
    // A tcp service's port carries opaque streams to it (docs/protocols.md, "Raw TCP").
    const pinned = await proxy.addWorkload({ name: `${svc.name}-service-port`, service: OUTSIDE_CALLER, outbound: { host: this.host, port: 0 }, pin: svc.name, protocol: svc.protocol });
    const outbound = out.outbound as string;
    const rt = new ServiceRuntime({
      service: svc,
      clock: this.clock,
      makeSupervisor: (rev, idPrefix) => this.supervisor(rev, idPrefix, outbound),
      event: (message, fields) => this.meshEvent(svc.name, null, message, fields),
      canary: this.canaryIo(svc.name),
    });
    const autoscaler = new Autoscaler({ host: rt, signals: this.autoscaleSignals, clock: this.clock, event: (message, fields) => this.meshEvent(svc.name, null, message, fields) });
    this.running.set(svc.name, { rt, autoscaler, outbound, servicePort: pinned.outbound as string });
    rt.start();
    autoscaler.start();
  }

  /** A supervisor of one revision of a service, wired into the mesh: register when ready, drain before stopping. */
  private supervisor(svc: MeshService, idPrefix: string, outbound: string): Supervisor {
    const { proxy, controlUrl } = this.o;
    return new Supervisor({
      service: svc,
      idPrefix,
      cwd: serviceCwd(this.o.file, svc),
      host: this.host,
      extraEnv: { HTTP_PROXY: `http://${outbound}`, http_proxy: `http://${outbound}`, SKEIN_OUTBOUND: outbound, SKEIN_CONTROL: controlUrl },
      ...(this.o.credentials === undefined ? {} : { startEnv: (replica: string) => (this.o.credentials as NonNullable<MeshRunnerOptions['credentials']>)(svc.name, replica) }),
      ...(this.o.output === undefined ? {} : { output: this.o.output }),
      onReady: async (r) => {
        const inb = await proxy.addWorkload({ name: r.id, service: svc.name, inbound: { host: this.advertise, port: 0 }, app: { host: r.address, port: r.port }, version: svc.version, protocol: svc.protocol });
        const inboundPort = Number((inb.inbound as string).split(':').pop());
        // The replica is registered with its revision's version and labels: proxies report per version.
        const inst = replicaInstance(svc, { id: r.id, address: this.advertise, port: inboundPort });
        const ttl = this.o.heartbeatTtlMs ?? null;
        // The control plane checks the app itself, on its own port: the inbound listener in front of
        // it takes only its mesh peers' mTLS (Linkerd's kubelet probes go to the app port too).
        // Joined to a control plane elsewhere, the runtime checks it and sends heartbeats instead.
        const check =
          ttl !== null
            ? { type: 'ttl', ttl: `${ttl}ms`, initialState: 'healthy' }
            : svc.readiness.type === 'http'
              ? { type: 'http', path: svc.readiness.path, port: r.port, interval: '5s', initialState: 'healthy' }
              : { type: 'tcp', port: r.port, interval: '5s', initialState: 'healthy' };
        try {
          await this.api('PUT', `/v1/services/${svc.name}/instances/${r.id}`, { ...inst, check });
        } catch (e) {
          await proxy.removeWorkload(r.id, 0);
          throw e;
        }
        if (ttl !== null) this.heartbeat(svc, r.id, { type: svc.readiness.type, host: r.address, port: r.port, path: svc.readiness.path }, ttl);
      },
      onStopping: async (r) => {
        this.stopHeartbeat(r.id);
        await this.api('DELETE', `/v1/services/${svc.name}/instances/${r.id}`);
        // Every proxy must stop picking it before it is drained (capped: one that cannot answer is named).
        const key = endpointKey(svc.name, r.id);
        const ack = await awaitProxyAck({
          proxies: async () => (await this.api<{ proxies?: Array<{ id: string; admin: string }> }>('GET', '/v1/proxies')).proxies ?? [],
          service: svc.name,
          id: r.id,
          clock: this.clock,
          local: { id: proxy.metrics.id, whenGone: (ms) => proxy.whenEndpointGone(svc.name, key, ms) },
        });
        if (ack.missing.length > 0) {
          const who = ack.missing.map((m) => `${m.proxy} (${m.reason})`).join(', ');
          this.say(`${r.id}: drained without the acknowledgement of ${who}`);
          this.meshEvent(svc.name, r.id, `${r.id} drained without the acknowledgement of ${who}`, { change: 'drain-unacknowledged', proxies: ack.missing });
        }
        // Requests in flight finish, idle keep-alive connections close; then the supervisor sends SIGTERM.
        await proxy.removeWorkload(r.id, svc.stopTimeoutMs);
      },
      onExit: async (r) => {
        this.stopHeartbeat(r.id);
        // Close its inbound listener first: callers then get a refused connection, which their
        // proxies retry on another replica, instead of a 502 from a listener with no app.
        await proxy.removeWorkload(r.id, 0);
        await this.api('DELETE', `/v1/services/${svc.name}/instances/${r.id}`);
      },
      onEvent: (e) => this.event(e),
    });
  }

  /**
   * Joined: every ttl/3 the replica's readiness probe runs, and its result goes to the control
   * plane as a heartbeat (healthy, or unhealthy with the probe's reason). A heartbeat that cannot
   * be sent (the control plane is away, a partition) is not retried: the next one is.
   */
  private heartbeat(svc: MeshService, id: string, target: ProbeTarget, ttlMs: number): void {
    let busy = false;
    const beat = async () => {
      if (busy) return;
      busy = true;
      try {
        const p = await probeOnce(target, svc.readiness.timeoutMs, this.clock);
        if (!this.beats.has(id)) return;
        await this.api('PUT', `/v1/services/${svc.name}/instances/${id}/heartbeat`, p.ok ? {} : { status: 'unhealthy', reason: `readiness probe on this host: ${p.reason}` });
      } catch {
        /* the next beat tries again */
      } finally {
        busy = false;
      }
    };
    this.beats.set(id, this.clock.setInterval(() => void beat(), Math.max(100, Math.floor(ttlMs / 3))));
  }

  private stopHeartbeat(id: string): void {
    this.beats.get(id)?.cancel();
    this.beats.delete(id);
  }

  private meshEvent(service: string, id: string | null, message: string, fields: Record<string, unknown>): void {
    try {
      // A rollout's steps (change rollout-*) are rollout events, a canary's (canary-*) canary events,
      // the autoscaler's decisions (autoscale*) autoscale events; replicas coming and going are scale events.
      const change = typeof fields['change'] === 'string' ? fields['change'] : '';
      const type = change.startsWith('rollout') ? 'rollout' : change.startsWith('canary') ? 'canary' : change.startsWith('autoscale') ? 'autoscale' : 'scale';
      this.o.onMeshEvent?.({ time: Date.now(), type, service, id, message, ...fields });
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
    return this.mesh.services.map((svc) => {
      const r = this.running.get(svc.name);
      const reps = r?.rt.replicaStatus() ?? { replicas: 0, ready: 0, instances: [] };
      const ro = r?.rt.rolloutStatus();
      return {
        name: svc.name,
        replicas: reps.replicas,
        ready: reps.ready,
        desired: r?.rt.desired() ?? svc.replicas,
        revision: ro?.revision ?? 1,
        rollout: ro?.rollout?.phase ?? null,
        outbound: r?.outbound ?? null,
        servicePort: r?.servicePort ?? null,
        protocol: svc.protocol,
        instances: reps.instances,
        autoscale: r?.autoscaler.view() ?? null,
      };
    });
  }

  /** The runtime of a running service; a clear error naming `service` otherwise. */
  service(service: string): ServiceRuntime {
    const r = this.running.get(service);
    if (r === undefined) {
      const known = this.mesh.services.some((s) => s.name === service);
      throw new SkeinError(known ? 'SKEIN_E_SHUTTING_DOWN' : 'SKEIN_E_UNKNOWN_SERVICE', known ? `service "${service}" is not running` : `mesh "${this.name}" has no service "${service}"`, { field: 'service' });
    }
    return r.rt;
  }

  /**
   * A caller's proxy holds requests for `service` (cold-start.ts): its autoscaler starts a replica
   * if the service is scaled to zero. False when there was nothing to wake.
   */
  wake(service: string): boolean {
    this.service(service);
    return this.running.get(service)?.autoscaler.wake() ?? false;
  }

  /** Changes a service's replicas; resolves when the surplus ones are gone (new ones start at once). */
  async scale(service: string, replicas: number): Promise<void> {
    const rt = this.service(service);
    if (!Number.isInteger(replicas) || replicas < 0 || replicas > 100) {
      throw new SkeinError('SKEIN_E_VALIDATION', `replicas must be an integer from 0 to 100, got ${JSON.stringify(replicas)}`, { field: 'replicas' });
    }
    this.say(`scaling ${service} to ${replicas}`);
    const from = rt.desired();
    this.meshEvent(service, null, `${service} scaled from ${from} to ${replicas} replicas`, { change: 'replicas', from, to: replicas });
    await rt.scale(replicas);
  }

  /**
   * Applies a changed mesh file: each service whose revision fields changed is rolled out, one
   * whose replicas changed is scaled, one whose policy changed gets its Service resource again;
   * nothing else is touched. Everything is checked first: a file that names another mesh, other
   * services or another control section changes nothing.
   */
  async apply(next: MeshFile): Promise<ApplyResult[]> {
    if (this.stopping !== null) throw new SkeinError('SKEIN_E_SHUTTING_DOWN', 'the mesh is stopping');
    if (next.name !== this.mesh.name) throw new SkeinError('SKEIN_E_VALIDATION', `name: the file is mesh "${next.name}", this is mesh "${this.mesh.name}"`, { field: 'name' });
    if (JSON.stringify(next.control) !== JSON.stringify(this.mesh.control)) {
      throw new SkeinError('SKEIN_E_VALIDATION', 'control: the control plane\'s addresses cannot change while the mesh runs (restart skein up)', { field: 'control' });
    }
    const names = new Set(this.mesh.services.map((s) => s.name));
    for (const s of next.services) {
      if (!names.has(s.name)) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `services.${s.name}: mesh "${this.name}" runs no service "${s.name}" (adding a service needs a restart of skein up)`, { field: `services.${s.name}` });
    }
    for (const name of names) {
      if (!next.services.some((s) => s.name === name)) {
        throw new SkeinError('SKEIN_E_VALIDATION', `services.${name}: the file leaves out service "${name}", which runs (removing a service needs a restart of skein up)`, { field: `services.${name}` });
      }
    }
    for (const s of next.services) this.service(s.name);
    const policy = (s: MeshService) => JSON.stringify([s.balancer, s.traffic, s.authorization, s.mtlsMode, s.autoscale?.min === 0, s.protocol]);
    const results: ApplyResult[] = [];
    for (const svc of next.services) {
      const rt = this.service(svc.name);
      if (policy(svc) !== policy(rt.spec)) await this.putService(svc);
      const r = rt.apply(svc);
      if (r.replicas !== null) this.meshEvent(svc.name, null, `${svc.name} scaled from ${r.replicas.from} to ${r.replicas.to} replicas (apply)`, { change: 'replicas', from: r.replicas.from, to: r.replicas.to });
      results.push(r);
    }
    this.mesh = next;
    return results;
  }

  /** Stops services in the reverse of the start order, each drained before its dependencies. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const r of this.running.values()) r.autoscaler.stop();
      for (const svc of startOrder(this.mesh).reverse()) {
        const r = this.running.get(svc.name);
        if (r === undefined) continue;
        await r.rt.stop();
        await this.o.proxy.removeWorkload(`${svc.name}-service-port`, 1000);
        await this.o.proxy.removeWorkload(svc.name, 1000);
        this.running.delete(svc.name);
      }
    })();
    return this.stopping;
  }

  /** Synchronous last resort: SIGKILL every replica. */
  killAll(): void {
    for (const r of this.running.values()) r.rt.killAll();
  }
}
