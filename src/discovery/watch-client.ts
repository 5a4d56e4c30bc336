/**
 * The data plane's view of the registry: a resumable client of the control plane's watch stream
 * (`GET /v1/watch`, NDJSON; see docs/concepts.md#the-watch-stream).
 *
 * - `WatchState` is the pure part: it applies watch messages (snapshot, add, update, remove,
 *   service, ping) to one immutable `EndpointSet` per service and records the revision. Only
 *   healthy instances are endpoints: an `update` to unhealthy removes the endpoint, one back to
 *   healthy adds it again.
 * - `LineSplitter` and `parseWatchMessage` turn chunks of the stream into checked messages.
 * - `WatchClient` owns the connection: it subscribes, reconnects after a disconnect with
 *   exponential backoff (full jitter) and `since=<revision>`, so the control plane replays only
 *   what was missed (or sends a fresh snapshot when its history does not reach back, e.g. after
 *   a restart), declares the stream dead when nothing (pings included) arrives for the liveness
 *   timeout, and keeps the last endpoint sets while the control plane is away. With several
 *   control-plane replicas (`ControlReplicas`) a lost stream, or a replica that does not answer
 *   within the connect timeout, moves to the next replica at once (once round them, then with the
 *   backoff); `restore` seeds the state from a persisted snapshot (static stability).
 *
 * Dependency arrows point down (discovery -> api -> core): the wire shapes are declared here
 * rather than imported from control/; a type test checks the publisher's messages still fit.
 *
 * Why one file of ~860 lines: the pure watch state and the resumable stream client that feeds
 * it (reconnects, resume by revision, liveness) are tested and read together; the state alone
 * is a third of it.
 */
import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Service } from '../api/types.js';
import { Backoff, type BackoffOptions, type BackoffPolicy, type Rng } from '../core/backoff.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { WATCH_DEFAULTS, type Revision, type WireInstance, type WatchMessage } from '../api/wire.js';
import { ControlReplicas } from './control-replicas.js';
import { EndpointSet, endpointKey, makeEndpoint, type Endpoint } from './endpoint.js';

// ---------------------------------------------------------------------------------------------
// Wire shapes (the control plane's `WireInstance` and `WatchMessage`)
// ---------------------------------------------------------------------------------------------

export type { Revision, WireInstance, WatchMessage } from '../api/wire.js';

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

export type WatchErrorKind =
  /** The connection could not be opened or broke (refused, reset, DNS). */
  | 'network'
  /** The control plane answered with a status other than 200. */
  | 'http'
  /** The stream ended (the control plane closed it: shutdown, overflow of our queue). */
  | 'ended'
  /** A line is not a well-formed watch message (or is longer than `maxLineBytes`). */
  | 'malformed'
  /** Nothing arrived (not even a ping) for `livenessTimeoutMs`. */
  | 'liveness'
  /** `dropConnection()` was called. */
  | 'dropped';

/** Why the stream was lost; passed to `onError` and the `disconnected` event. */
export class WatchStreamError extends Error {
  constructor(
    readonly kind: WatchErrorKind,
    message: string,
    opts: { cause?: unknown; status?: number } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'WatchStreamError';
    this.status = opts.status;
  }

  /** The HTTP status, for kind `http`. */
  readonly status: number | undefined;
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isRev = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function malformed(what: string): WatchStreamError {
  return new WatchStreamError('malformed', `malformed watch message: ${what}`);
}

function checkInstance(v: unknown, where: string): WireInstance {
  if (!isObj(v)) throw malformed(`${where} is not an object`);
  for (const f of ['id', 'service', 'address', 'status'] as const) {
    if (typeof v[f] !== 'string') throw malformed(`${where}.${f} is not a string`);
  }
  if (typeof v['port'] !== 'number') throw malformed(`${where}.port is not a number`);
  // The rest (weight, zone, version, labels) is checked by makeEndpoint; a bad value there makes
  // the instance unusable as an endpoint, not the stream unreadable.
  return v as unknown as WireInstance;
}

/**
 * Parses one NDJSON line into a checked watch message. Returns null for a message of a type this
 * client does not know (a newer control plane may send more): it is skipped, not an error.
 * Throws WatchStreamError(kind `malformed`) for anything else that does not fit.
 */
export function parseWatchMessage(line: string): WatchMessage | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new WatchStreamError('malformed', `malformed watch message: not JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isObj(v)) throw malformed('not an object');
  if (typeof v['type'] !== 'string') throw malformed('"type" is not a string');
  if (!isRev(v['revision'])) throw malformed('"revision" is not a non-negative integer');
  switch (v['type']) {
    case 'ping':
      return v as unknown as WatchMessage;
    case 'snapshot': {
      if (v['service'] !== null && typeof v['service'] !== 'string') throw malformed('snapshot "service" is neither a string nor null');
      const instances = v['instances'];
      const services = v['services'];
      if (!Array.isArray(instances)) throw malformed('snapshot "instances" is not an array');
      if (!Array.isArray(services)) throw malformed('snapshot "services" is not an array');
      instances.forEach((i, n) => checkInstance(i, `instances[${n}]`));
      services.forEach((s: unknown, n) => {
        if (!isObj(s) || typeof s['name'] !== 'string' || !(s['definition'] === null || isObj(s['definition']))) throw malformed(`services[${n}] is not {name, definition}`);
      });
      return v as unknown as WatchMessage;
    }
    case 'add':
    case 'update':
    case 'remove':
      if (typeof v['service'] !== 'string') throw malformed(`${v['type']} "service" is not a string`);
      checkInstance(v['instance'], 'instance');
      return v as unknown as WatchMessage;
    case 'service':
      if (typeof v['service'] !== 'string') throw malformed('service "service" is not a string');
      if (!(v['definition'] === null || isObj(v['definition']))) throw malformed('service "definition" is neither an object nor null');
      return v as unknown as WatchMessage;
    default:
      return null;
  }
}

/**
 * Splits a stream of text chunks into lines. A line may arrive split across any number of chunks;
 * `\r\n` is accepted; empty lines are dropped. A partial line longer than `maxLineLength`
 * characters throws WatchStreamError(`malformed`) instead of buffering without bound.
 */
export class LineSplitter {
  private buf = '';

  constructor(readonly maxLineLength = 256 * 1024 * 1024) {}

  /** Characters held of a line not yet complete. */
  get buffered(): number {
    return this.buf.length;
  }

  push(chunk: string): string[] {
    const out: string[] = [];
    let start: number;
    let i = chunk.indexOf('\n');
    if (i < 0) {
      this.buf += chunk;
    } else {
      let first = this.buf + chunk.slice(0, i);
      this.buf = '';
      for (;;) {
        const line = first.endsWith('\r') ? first.slice(0, -1) : first;
        if (line !== '') out.push(line);
        start = i + 1;
        i = chunk.indexOf('\n', start);
        if (i < 0) break;
        first = chunk.slice(start, i);
      }
      this.buf = chunk.slice(start);
    }
    if (this.buf.length > this.maxLineLength) {
      this.buf = '';
      throw malformed(`a line is longer than ${this.maxLineLength} characters`);
    }
    return out;
  }

  reset(): void {
    this.buf = '';
  }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

interface ServiceState {
  /** The healthy, usable instances. */
  set: EndpointSet;
  /** Every instance the stream reported (any status), by id: the service exists while non-empty. */
  members: Map<string, WireInstance>;
  definition: Service | null;
}

/** What one message changed. */
export interface Applied {
  /** The message type, or `stale` for a diff at or below the current revision (ignored). */
  kind: WatchMessage['type'] | 'stale';
  /** Services whose endpoint set changed, with the new set, in the order they changed. */
  sets: Array<[service: string, set: EndpointSet]>;
  /** Services whose definition changed. */
  definitions: Array<[service: string, definition: Service | null]>;
  /** Instances that could not be made into endpoints (left out of the sets). */
  invalid: Array<{ key: string; error: Error }>;
}

/**
 * The endpoint sets a watch stream describes, built by applying its messages in order. Pure:
 * no I/O, no timers. The same object survives reconnections: it is what a client serves from
 * while the control plane is away.
 */
export class WatchState {
  private readonly byService = new Map<string, ServiceState>();
  private rev: Revision | null = null;

  /** The revision of the last message applied; null before the first. Pass it as `since`. */
  get revision(): Revision | null {
    return this.rev;
  }

  /** The healthy endpoints of a service (the empty set for a service never seen). */
  endpoints(service: string): EndpointSet {
    return this.byService.get(service)?.set ?? EndpointSet.empty();
  }

  /** The definition of a service, or null (none, or unknown). */
  definition(service: string): Service | null {
    return this.byService.get(service)?.definition ?? null;
  }

  /** Whether a service exists (registered instances, healthy or not, or a definition). */
  knows(service: string): boolean {
    const s = this.byService.get(service);
    return s !== undefined && (s.members.size > 0 || s.definition !== null);
  }

  /** Services that exist (registered instances, healthy or not, or a definition), sorted. */
  services(): string[] {
    const out: string[] = [];
    for (const [name, s] of this.byService) if (s.members.size > 0 || s.definition !== null) out.push(name);
    return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /**
   * The whole state as one snapshot message (every instance as last reported, in any status, and
   * every definition), at the current revision: applied to a new WatchState it gives this one
   * back. What the proxy persists for static stability (src/proxy/state-file.ts).
   */
  toSnapshot(): Extract<WatchMessage, { type: 'snapshot' }> {
    const instances: WireInstance[] = [];
    const services: Array<{ name: string; definition: Service | null }> = [];
    for (const name of [...this.byService.keys()].sort()) {
      const s = this.byService.get(name) as ServiceState;
      instances.push(...s.members.values());
      if (s.definition !== null) services.push({ name, definition: s.definition });
    }
    return { type: 'snapshot', revision: this.rev ?? 0, service: null, instances, services };
  }

  apply(msg: WatchMessage): Applied {
    const applied: Applied = { kind: msg.type, sets: [], definitions: [], invalid: [] };
    switch (msg.type) {
      case 'ping':
        // Every message with a revision at or below the ping's has been sent before it on this
        // stream (one queue per subscriber), so resuming from the ping's revision misses nothing
        // and, for a one-service watch, skips other services' history.
        if (this.rev === null || msg.revision > this.rev) this.rev = msg.revision;
        return applied;
      case 'snapshot':
        this.applySnapshot(msg, applied);
        this.rev = msg.revision; // may go down: a restarted control plane may have lost a tail
        return applied;
      default:
        if (this.rev !== null && msg.revision <= this.rev) {
          applied.kind = 'stale';
          return applied;
        }
        if (msg.type === 'service') {
          const s = this.get(msg.service);
          s.definition = msg.definition;
          applied.definitions.push([msg.service, msg.definition]);
        } else {
          this.applyInstance(msg.type, msg.instance, applied);
        }
        this.rev = msg.revision;
        return applied;
    }
  }

  private get(service: string): ServiceState {
    let s = this.byService.get(service);
    if (s === undefined) this.byService.set(service, (s = { set: EndpointSet.empty(), members: new Map(), definition: null }));
    return s;
  }

  private setTo(service: string, s: ServiceState, next: EndpointSet, applied: Applied): void {
    if (next === s.set) return;
    s.set = next;
    applied.sets.push([service, next]);
  }

  /** The endpoint of a healthy, valid instance; null otherwise (invalid ones are reported). */
  private endpointOf(i: WireInstance, applied: Applied): Endpoint | null {
    if (i.status !== 'healthy') return null;
    try {
      return makeEndpoint(i);
    } catch (e) {
      applied.invalid.push({ key: endpointKey(i.service, i.id), error: e as Error });
      return null;
    }
  }

  private applyInstance(type: 'add' | 'update' | 'remove', i: WireInstance, applied: Applied): void {
    const s = this.get(i.service);
    const key = endpointKey(i.service, i.id);
    if (type === 'remove') {
      s.members.delete(i.id);
      this.setTo(i.service, s, s.set.apply({ type: 'remove', keys: [key] }), applied);
      return;
    }
    s.members.set(i.id, i);
    const e = this.endpointOf(i, applied);
    const next = e === null ? s.set.apply({ type: 'remove', keys: [key] }) : s.set.apply({ type: 'add', endpoints: [e] });
    this.setTo(i.service, s, next, applied);
  }

  private applySnapshot(msg: Extract<WatchMessage, { type: 'snapshot' }>, applied: Applied): void {
    const healthy = new Map<string, Endpoint[]>();
    const members = new Map<string, Map<string, WireInstance>>();
    const definitions = new Map<string, Service | null>();
    for (const d of msg.services) definitions.set(d.name, d.definition);
    for (const i of msg.instances) {
      // A one-service snapshot holds only that service; anything else is not ours to apply.
      if (msg.service !== null && i.service !== msg.service) continue;
      let m = members.get(i.service);
      if (m === undefined) members.set(i.service, (m = new Map()));
      m.set(i.id, i);
      const e = this.endpointOf(i, applied);
      if (e === null) continue;
      let list = healthy.get(i.service);
      if (list === undefined) healthy.set(i.service, (list = []));
      list.push(e);
    }
    // The services the snapshot speaks for: all of them (and so every one we knew), or one.
    const scope = new Set<string>();
    if (msg.service === null) {
      for (const name of this.byService.keys()) scope.add(name);
      for (const name of definitions.keys()) scope.add(name);
      for (const name of members.keys()) scope.add(name);
    } else {
      scope.add(msg.service);
    }
    for (const name of scope) {
      const s = this.get(name);
      s.members = members.get(name) ?? new Map();
      const def = definitions.get(name) ?? null;
      if (def !== s.definition) {
        // Compared by reference: a definition that came again in a snapshot is reported again.
        if (!(def === null && s.definition === null)) applied.definitions.push([name, def]);
        s.definition = def;
      }
      this.setTo(name, s, s.set.apply({ type: 'reset', endpoints: healthy.get(name) ?? [] }), applied);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

export interface WatchTransportHandlers {
  /** The response's status line arrived (called at most once, before any data). */
  response(status: number): void;
  /** A chunk of the body, decoded as UTF-8 (a character is never split across chunks). */
  data(chunk: string): void;
  /** The exchange is over: null when the body ended, the error otherwise. Called once, last. */
  end(error: Error | null): void;
}

/** Opens `GET url` with `headers` besides the transport's own; nothing is delivered after `close()`. */
export type WatchTransport = (url: URL, handlers: WatchTransportHandlers, headers?: Readonly<Record<string, string>>) => { close(): void };

/** The default transport: one node:http(s) request on its own connection (no pool). */
export const httpTransport: WatchTransport = (url, h, headers = {}) => {
  let done = false;
  const finish = (err: Error | null) => {
    if (done) return;
    done = true;
    h.end(err);
  };
  const mod = url.protocol === 'https:' ? https : http;
  const req = mod.get(url, { agent: false, headers: { ...headers, accept: 'application/x-ndjson' } }, (res) => {
    if (done) {
      res.destroy();
      return;
    }
    res.setEncoding('utf8');
    h.response(res.statusCode ?? 0);
    res.on('data', (chunk: string) => {
      if (!done) h.data(chunk);
    });
    res.on('end', () => finish(null));
    res.on('error', (e) => finish(e));
    res.on('close', () => finish(null));
  });
  req.on('error', (e) => finish(e));
  req.on('close', () => finish(null));
  return {
    close() {
      done = true;
      req.destroy();
    },
  };
};

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/** The part of a pino logger the client uses. */
export interface WatchLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface WatchClientOptions {
  /** The control plane's base URL, e.g. `http://127.0.0.1:7400` (one replica; or `control`). */
  controlUrl?: string;
  /**
   * The control-plane replicas, shared with the proxy's other callers: the stream is opened on the
   * current one, and a lost stream moves to the next (control-replicas.ts). Overrides `controlUrl`.
   */
  control?: ControlReplicas;
  /** One service, or null / absent for all services. */
  service?: string | null;
  clock: Clock;
  /** A policy, or options for the default exponential full-jitter backoff (100 ms .. 10 s). */
  backoff?: BackoffPolicy | BackoffOptions;
  /** Randomness for the default backoff's jitter (ignored when `backoff` is a policy). */
  rng?: Rng;
  /** The stream is dead when nothing arrives for this long. Default WATCH_DEFAULTS.livenessMs (45 s, 3 server pings). */
  livenessTimeoutMs?: number;
  /** A replica that has not answered a new stream's request (its status line) in this long is left for the next. Default 5 s. */
  connectTimeoutMs?: number;
  /** The longest line accepted, in characters (a snapshot is one line). Default 256 Mi. */
  maxLineLength?: number;
  /** Called each time the stream is lost, before the reconnection is scheduled. */
  onError?: (err: WatchStreamError) => void;
  logger?: WatchLogger;
  /** How to open the stream; tests pass their own. Default `httpTransport`. */
  transport?: WatchTransport;
}

export type WatchClientStatus = 'idle' | 'connecting' | 'connected' | 'waiting' | 'stopped';

export interface WatchClientStats {
  /** Connection attempts. */
  attempts: number;
  /** Attempts that got a 200 response. */
  connects: number;
  /** Streams lost (any reason). */
  disconnects: number;
  /** Snapshots received (the first one, then one per reconnection the history could not serve). */
  snapshots: number;
  /** Messages received, pings included. */
  messages: number;
  /** Malformed lines (each one loses the stream). */
  malformed: number;
  /** Streams declared dead by the liveness timeout. */
  livenessTimeouts: number;
  /** Instances that could not be made into endpoints (left out). */
  invalidInstances: number;
}

export interface WatchClientEvents {
  /**
   * A service's endpoint set changed (the set is the new immutable snapshot). Each one is the
   * previous one with one change applied, so a listener that kept the previous set learns what
   * changed with `set.changesSince(previous)` instead of comparing whole sets.
   */
  update: [service: string, set: EndpointSet];
  /** A service's definition changed (null: removed). */
  service: [service: string, definition: Service | null];
  /** A snapshot was applied. */
  snapshot: [revision: Revision];
  /** The stream is open (status 200). */
  connected: [];
  /** An open stream was lost; the sets stay as they were. */
  disconnected: [err: WatchStreamError];
  /** A message changed the state (a snapshot, or a diff that was not stale), or `restore` did: persist it. */
  changed: [revision: Revision];
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** A stream that lived this long counts as a success: the next failure may hop to another replica at once again. */
const HOP_RESET_MS = 1_000;

function isPolicy(b: BackoffPolicy | BackoffOptions): b is BackoffPolicy {
  return typeof (b as BackoffPolicy).next === 'function' && typeof (b as BackoffPolicy).reset === 'function';
}

export class WatchClient extends EventEmitter<WatchClientEvents> {
  readonly service: string | null;
  /** The replicas the stream is opened on (the proxy shares them with its other callers). */
  readonly replicas: ControlReplicas;
  readonly stats: WatchClientStats = { attempts: 0, connects: 0, disconnects: 0, snapshots: 0, messages: 0, malformed: 0, livenessTimeouts: 0, invalidInstances: 0 };

  private readonly clock: Clock;
  private readonly backoff: BackoffPolicy;
  private readonly livenessMs: number;
  private readonly connectTimeoutMs: number;
  private readonly maxLineLength: number;
  private readonly onError: ((err: WatchStreamError) => void) | undefined;
  private readonly logger: WatchLogger | undefined;
  private readonly transport: WatchTransport;
  private readonly state = new WatchState();

  private st: WatchClientStatus = 'idle';
  /** Bumped on every connect / fail / stop: callbacks of an older connection are ignored. */
  private gen = 0;
  private conn: { close(): void } | null = null;
  private retryTimer: TimerHandle | null = null;
  private liveTimer: TimerHandle | null = null;
  private lastActivity = 0;
  private contact: number | null = null;
  private failuresInARow = 0;
  /** Reconnections made at once to another replica since the last backoff (at most one round). */
  private hops = 0;
  /** The replica and the time of the current connection. */
  private connUrl = '';
  private connAt = 0;

  constructor(opts: WatchClientOptions) {
    super();
    if (opts.control === undefined && typeof opts.controlUrl !== 'string') throw new SkeinError('SKEIN_E_VALIDATION', 'watch client: give controlUrl or control', { field: 'controlUrl' });
    this.replicas = opts.control ?? new ControlReplicas([opts.controlUrl as string], opts.clock);
    const service = opts.service ?? null;
    if (service !== null && (typeof service !== 'string' || service === '')) {
      throw new SkeinError('SKEIN_E_VALIDATION', 'watch client: service must be a non-empty string or null', { field: 'service' });
    }
    const liveness = opts.livenessTimeoutMs ?? WATCH_DEFAULTS.livenessMs;
    if (!(Number.isFinite(liveness) && liveness > 0)) {
      throw new SkeinError('SKEIN_E_VALIDATION', `watch client: livenessTimeoutMs must be a positive number, not ${String(liveness)}`, { field: 'livenessTimeoutMs' });
    }
    const connectTimeout = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (!(Number.isFinite(connectTimeout) && connectTimeout > 0)) {
      throw new SkeinError('SKEIN_E_VALIDATION', `watch client: connectTimeoutMs must be a positive number, not ${String(connectTimeout)}`, { field: 'connectTimeoutMs' });
    }
    this.connectTimeoutMs = connectTimeout;
    this.service = service;
    this.clock = opts.clock;
    const b = opts.backoff;
    this.backoff = b !== undefined && isPolicy(b) ? b : new Backoff({ ...(opts.rng === undefined ? {} : { rng: opts.rng }), ...b });
    this.livenessMs = liveness;
    this.maxLineLength = opts.maxLineLength ?? 256 * 1024 * 1024;
    this.onError = opts.onError;
    this.logger = opts.logger;
    this.transport = opts.transport ?? httpTransport;
  }

  /**
   * The replica the stream is on while connected; otherwise the one it will next be opened on.
   * (Calls of the proxy's other parts, heartbeats and announcements, may have moved the replica
   * list on meanwhile: an open stream stays where it is until it ends.)
   */
  get controlUrl(): string {
    return this.st === 'connected' && this.connUrl !== '' ? this.connUrl : this.replicas.current;
  }

  // ---- the view ----

  /** The healthy endpoints of a service as last seen (the empty set for an unknown service). */
  endpoints(service: string): EndpointSet {
    return this.state.endpoints(service);
  }

  /** Known services (with instances in any status, or a definition), sorted. */
  services(): string[] {
    return this.state.services();
  }

  /** Whether a service exists as last seen (instances in any status, or a definition). */
  knows(service: string): boolean {
    return this.state.knows(service);
  }

  /** A service's definition as last seen, or null. */
  definition(service: string): Service | null {
    return this.state.definition(service);
  }

  /** The revision of the last message applied (null before the first): the next `since`. */
  get revision(): Revision | null {
    return this.state.revision;
  }

  /** True while a stream is open (status 200 received and not lost since). */
  get connected(): boolean {
    return this.st === 'connected';
  }

  get status(): WatchClientStatus {
    return this.st;
  }

  /** `clock.now()` when the last message (pings included) arrived; null before the first. */
  get lastContact(): number | null {
    return this.contact;
  }

  /**
   * Serves from a persisted snapshot (static stability, src/proxy/state-file.ts) until the control
   * plane answers: applied like a snapshot from the stream (every listener hears of it), and the
   * next connection resumes from its revision. Only before the first message: returns false (and
   * applies nothing) once the client has a state of its own.
   */
  restore(snapshot: Extract<WatchMessage, { type: 'snapshot' }>): boolean {
    if (this.state.revision !== null) return false;
    this.applyMessage(snapshot);
    return true;
  }

  /** The whole state as one snapshot message (what the proxy persists). */
  snapshot(): Extract<WatchMessage, { type: 'snapshot' }> {
    return this.state.toSnapshot();
  }

  /** The URL the next connection will open. */
  url(): URL {
    const params = new URLSearchParams();
    if (this.service !== null) params.set('service', this.service);
    const rev = this.state.revision;
    if (rev !== null) params.set('since', String(rev));
    const q = params.toString();
    return new URL(`${this.replicas.current}/v1/watch${q === '' ? '' : `?${q}`}`);
  }

  // ---- lifecycle ----

  /** Connects (idempotent). After `stop()`, `start()` resumes from the last revision. */
  start(): void {
    if (this.st !== 'idle' && this.st !== 'stopped') return;
    this.connect();
  }

  /** Closes the stream and cancels every timer; the sets stay readable. */
  stop(): void {
    if (this.st === 'stopped' || this.st === 'idle') {
      this.st = 'stopped';
      return;
    }
    this.gen++;
    this.st = 'stopped';
    this.teardown();
    this.retryTimer?.cancel();
    this.retryTimer = null;
    this.logger?.debug({ revision: this.state.revision }, 'watch stopped');
  }

  /** Drops the current connection as if it broke; the client reconnects after the backoff. */
  dropConnection(): void {
    if (this.st === 'connecting' || this.st === 'connected') this.fail(this.gen, new WatchStreamError('dropped', 'connection dropped on request'));
  }

  // ---- internals ----

  private connect(): void {
    const gen = ++this.gen;
    this.st = 'connecting';
    this.stats.attempts++;
    this.lastActivity = this.clock.now();
    const url = this.url();
    const base = this.replicas.current;
    this.connUrl = base;
    this.connAt = this.clock.now();
    const lines = new LineSplitter(this.maxLineLength);
    let status = 0;
    let errorBody = '';
    this.armLiveness(gen, Math.min(this.connectTimeoutMs, this.livenessMs));
    this.logger?.debug({ url: url.href }, 'watch connecting');
    let conn: { close(): void };
    try {
      conn = this.transport(url, {
        response: (s) => {
          if (gen !== this.gen) return;
          status = s;
          this.lastActivity = this.clock.now();
          if (s !== 200) return;
          this.st = 'connected';
          this.stats.connects++;
          this.logger?.info({ url: url.href, since: url.searchParams.get('since'), failures: this.failuresInARow }, 'watch connected');
          this.failuresInARow = 0;
          this.replicas.ok(base);
          this.emitSafely('connected');
        },
        data: (chunk) => {
          if (gen !== this.gen) return;
          this.lastActivity = this.clock.now();
          if (status !== 200) {
            if (errorBody.length < 4096) errorBody += chunk;
            return;
          }
          let got: string[];
          try {
            got = lines.push(chunk);
          } catch (e) {
            this.stats.malformed++;
            this.fail(gen, e as WatchStreamError);
            return;
          }
          for (const line of got) {
            this.onLine(gen, line);
            if (gen !== this.gen) return; // failed, stopped or dropped by a listener
          }
        },
        end: (err) => {
          if (gen !== this.gen) return;
          if (status !== 0 && status !== 200) {
            let detail = errorBody.trim().slice(0, 512);
            try {
              const b = JSON.parse(errorBody) as { code?: unknown; message?: unknown };
              if (typeof b.code === 'string') detail = `${b.code}: ${String(b.message)}`;
            } catch {
              /* not JSON: keep the text */
            }
            this.fail(gen, new WatchStreamError('http', `watch refused with HTTP ${status}${detail === '' ? '' : ` (${detail})`}`, { status }));
          } else if (err !== null && status === 0) {
            const code = (err as NodeJS.ErrnoException).code;
            this.fail(gen, new WatchStreamError('network', `cannot reach the control plane at ${base}: ${code ?? err.message}`, { cause: err }));
          } else if (err !== null) {
            this.fail(gen, new WatchStreamError('network', `watch stream broke: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
          } else {
            this.fail(gen, new WatchStreamError('ended', 'the control plane closed the watch stream'));
          }
        },
      }, this.replicas.headers);
    } catch (e) {
      this.fail(gen, new WatchStreamError('network', `cannot open the watch stream: ${(e as Error).message}`, { cause: e }));
      return;
    }
    // The transport may have failed synchronously: then this connection is already over.
    if (gen === this.gen) this.conn = conn;
    else conn.close();
  }

  private onLine(gen: number, line: string): void {
    let msg: WatchMessage | null;
    try {
      msg = parseWatchMessage(line);
    } catch (e) {
      this.stats.malformed++;
      this.fail(gen, e as WatchStreamError);
      return;
    }
    this.stats.messages++;
    this.contact = this.clock.now();
    this.backoff.reset();
    if (msg === null) return; // a type this client does not know
    this.applyMessage(msg);
  }

  /** Applies a message (from the stream, or a restored snapshot) and tells the listeners. */
  private applyMessage(msg: WatchMessage): void {
    const applied = this.state.apply(msg);
    for (const { key, error } of applied.invalid) {
      this.stats.invalidInstances++;
      this.logger?.warn({ key, err: error.message }, 'watch: instance left out (not a valid endpoint)');
    }
    if (msg.type === 'snapshot') {
      this.stats.snapshots++;
      this.logger?.debug({ revision: msg.revision, instances: msg.instances.length }, 'watch snapshot');
    }
    // The message is applied in full: every change it made is reported, even if a listener
    // stops the client half-way.
    for (const [service, def] of applied.definitions) this.emitSafely('service', service, def);
    for (const [service, set] of applied.sets) this.emitSafely('update', service, set);
    if (msg.type === 'snapshot') this.emitSafely('snapshot', msg.revision);
    if (applied.kind !== 'ping' && applied.kind !== 'stale') this.emitSafely('changed', msg.revision);
  }

  /** Emits without letting a listener's exception break the stream. */
  private emitSafely<K extends keyof WatchClientEvents>(event: K, ...args: WatchClientEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: WatchClientEvents[K]) => boolean)(event, ...args);
    } catch (e) {
      this.logger?.error({ err: e, event }, 'watch: a listener threw');
    }
  }

  private armLiveness(gen: number, ms: number): void {
    this.liveTimer?.cancel();
    this.liveTimer = this.clock.setTimeout(() => {
      this.liveTimer = null;
      if (gen !== this.gen) return;
      // One timer per connection, re-armed for what is left, instead of one per message. Until the
      // status line came, the (shorter) connect timeout applies: a replica that does not answer
      // is left for the next one soon.
      const idle = this.clock.now() - this.lastActivity;
      const limit = this.st === 'connecting' ? Math.min(this.connectTimeoutMs, this.livenessMs) : this.livenessMs;
      if (idle < limit) {
        this.armLiveness(gen, limit - idle);
        return;
      }
      this.stats.livenessTimeouts++;
      const what = this.st === 'connecting' ? `no answer from the control plane at ${this.connUrl} within ${idle} ms (connect timeout ${limit} ms)` : `nothing received from the control plane for ${idle} ms (liveness timeout ${limit} ms)`;
      this.fail(gen, new WatchStreamError('liveness', what));
    }, ms);
  }

  private teardown(): void {
    this.liveTimer?.cancel();
    this.liveTimer = null;
    const c = this.conn;
    this.conn = null;
    c?.close();
  }

  private fail(gen: number, err: WatchStreamError): void {
    if (gen !== this.gen || (this.st !== 'connecting' && this.st !== 'connected')) return;
    this.gen++;
    const wasConnected = this.st === 'connected';
    this.teardown();
    this.stats.disconnects++;
    this.failuresInARow++;
    // Another replica is tried at once (one round of them at most), then with the backoff. A
    // dropConnection() is not the replica's fault: it stays current.
    const from = this.connUrl;
    if (wasConnected && this.clock.now() - this.connAt >= HOP_RESET_MS) this.hops = 0;
    const to = err.kind === 'dropped' ? from : this.replicas.failed(from, err.message);
    let delay: number;
    if (to !== from && this.hops < this.replicas.urls.length - 1) {
      this.hops++;
      delay = 0;
    } else {
      this.hops = 0;
      delay = this.backoff.next();
    }
    this.st = 'waiting';
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      if (this.st === 'waiting') this.connect();
    }, delay);
    const fields = { kind: err.kind, err: err.message, control: from, next: to, revision: this.state.revision, retryInMs: delay, failures: this.failuresInARow };
    if (wasConnected || this.failuresInARow === 1) this.logger?.warn(fields, 'watch stream lost; serving the last known endpoints');
    else this.logger?.debug(fields, 'watch reconnect failed');
    try {
      this.onError?.(err);
    } catch (e) {
      this.logger?.error({ err: e }, 'watch: onError threw');
    }
    if (wasConnected) this.emitSafely('disconnected', err);
  }
}
