/**
 * The mesh file (`kind: Mesh`): what `skein up FILE` runs. One YAML (or JSON) document naming
 * the services of a mesh, each with the command that runs it, its replicas, environment,
 * readiness probe, balancer and restart policy. `parseMeshFile` turns the text into a frozen
 * MeshFile with every default filled in, or throws one SkeinError that names the file, the
 * service and the field: `shop.yaml: service "user-service": replicas must be <= 100`.
 *
 * Defaults and bounds are documented here (they reach `skein schema` through the TypeBox
 * descriptions) and in docs/mesh-file.md.
 */
import { dirname, resolve } from 'node:path';
import { buildTraffic, frozenCopy, pickTraffic, TrafficFields, type RawTraffic } from './traffic.js';
import { BALANCER_KINDS, BalancerSchema, buildBalancer, DEFAULT_BALANCER, HASHING_BALANCERS, HTTP_TOKEN_PATTERN, type BalancerKind, type BalancerPolicy, type HashKey } from './balancer.js';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { parseAllDocuments } from 'yaml';
import { parseHostPort } from '../core/address.js';
import { DURATION_PATTERN, parseDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';
import { API_VERSION, DNS_LABEL_PATTERN, InstanceFields, LABEL_KEY_PATTERN, type RawInstance } from './schema.js';
import type { FieldProblem } from './parse.js';
import { INBOUND_PROXY_LABEL } from './names.js';

// ---- schema ----

export { BALANCER_KINDS as MESH_BALANCER_KINDS, DEFAULT_BALANCER as MESH_DEFAULT_BALANCER, HASHING_BALANCERS };
export type MeshBalancerKind = BalancerKind;

export const MAX_REPLICAS = 100;
export const MAX_SERVICES = 200;
/** Names of environment variables: letters, digits and '_', not starting with a digit. */
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
/** Variables Skein sets in every replica; a service's `env` may not set them. */
export const RESERVED_ENV = ['SKEIN_SERVICE', 'SKEIN_INSTANCE_ID'] as const;
const DOMAIN_PATTERN = '^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$';

export const MESH_DEFAULTS = Object.freeze({
  replicas: 1,
  portEnv: 'PORT',
  readiness: Object.freeze({ path: '/health', intervalMs: 500, timeoutMs: 1000, initialDelayMs: 0, deadlineMs: 60_000 }),
  restart: Object.freeze({ baseMs: 1000, capMs: 30_000, resetAfterMs: 30_000 }),
  stopTimeoutMs: 10_000,
  weight: 1,
});

const MAX_DURATION_MS = 24 * 3_600_000;

const StringEnum = <T extends readonly string[]>(values: T, description: string) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });

const Duration = (description: string) =>
  Type.String({ pattern: DURATION_PATTERN, description: `${description} A duration such as "500ms", "10s", "1m".` });

/** A string in the file (numbers and booleans must be quoted in YAML: `"8080"`, `"true"`). */
const Str = (description: string, maxLength = 4096) => Type.String({ maxLength, description });

export const ReadinessSchema = Type.Object(
  {
    type: Type.Optional(StringEnum(['http', 'tcp'] as const, 'http: GET `path` and expect 2xx or 3xx; tcp: open a connection to the port. Default tcp.')),
    path: Type.Optional(Type.String({ pattern: '^/[\\x21-\\x7e]*$', maxLength: 1024, description: 'Path to GET (http only). Default "/health".' })),
    interval: Type.Optional(Duration('Time between probes until the first success. Default 500ms; 100ms..1h.')),
    timeout: Type.Optional(Duration('Time one probe may take. Default 1s; 1ms..1h.')),
    initialDelay: Type.Optional(Duration('Time after the start before the first probe. Default 0s; at most 1h.')),
    deadline: Type.Optional(
      Duration('Time from the start within which a probe must succeed; after it the replica is stopped and restarted (with backoff). Default 60s; 1s..24h.'),
    ),
  },
  {
    additionalProperties: false,
    description: 'When a replica counts as ready (and is registered). Default: a TCP connect to its port.',
  },
);

export const RestartSchema = Type.Object(
  {
    backoff: Type.Optional(
      Type.Object(
        {
          base: Type.Optional(Duration('Ceiling of the first restart delay. Default 1s; 10ms..1h.')),
          cap: Type.Optional(Duration('Largest ceiling of a restart delay. Default 30s; at least base, at most 24h.')),
        },
        { additionalProperties: false, description: 'Exponential backoff with full jitter: the n-th delay is uniform in [0, min(cap, base * 2^n)).' },
      ),
    ),
    resetAfter: Type.Optional(Duration('A replica that stayed up this long starts its backoff (and its restart count) over. Default 30s; 1s..24h.')),
    maxRestarts: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'Consecutive restarts (without staying up `resetAfter`) before the replica is given up. Default: no limit. 0: never restart.' }),
    ),
  },
  { additionalProperties: false, description: 'What happens when a replica exits on its own.' },
);

export const MeshServiceSchema = Type.Object(
  {
    command: Type.String({ minLength: 1, maxLength: 4096, description: 'The program to run (required): a name looked up in PATH, or a path (relative paths start from `cwd`).' }),
    args: Type.Optional(Type.Array(Str('One argument.'), { maxItems: 1000, description: 'Arguments, passed as they are (no shell).' })),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Working directory, relative to the mesh file. Default the directory of the mesh file.' })),
    env: Type.Optional(
      Type.Record(Type.String(), Str('A value.', 65_536), {
        maxProperties: 1000,
        description: 'Extra environment variables (on top of the environment of `skein up` and the variables Skein sets). Values are strings.',
      }),
    ),
    replicas: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_REPLICAS, description: `How many copies run. Default 1; 0..${MAX_REPLICAS}.` })),
    port: Type.Optional(
      Type.Object(
        { env: Type.Optional(Type.String({ pattern: ENV_NAME_PATTERN, maxLength: 256, description: 'Name of the variable that carries the assigned port. Default PORT.' })) },
        { additionalProperties: false, description: 'How a replica learns the port Skein assigned it.' },
      ),
    ),
    readiness: Type.Optional(ReadinessSchema),
    balancer: Type.Optional(BalancerSchema),
    ...TrafficFields,
    weight: Type.Optional(InstanceFields.weight),
    zone: Type.Optional(InstanceFields.zone),
    version: Type.Optional(InstanceFields.version),
    labels: Type.Optional(
      Type.Record(Type.String(), Type.String({ maxLength: 256 }), {
        maxProperties: 64,
        description: 'Labels of every replica (at most 64; keys like DNS names, values up to 256 characters).',
      }),
    ),
    restart: Type.Optional(RestartSchema),
    stopTimeout: Type.Optional(Duration('Time a replica gets between SIGTERM and SIGKILL. Default 10s; at most 10m.')),
    dependsOn: Type.Optional(
      Type.Array(Type.String({ maxLength: 63 }), {
        maxItems: MAX_SERVICES,
        uniqueItems: true,
        description: 'Services of this mesh started (and ready) before this one. No cycles.',
      }),
    ),
  },
  { additionalProperties: false, description: 'One service of the mesh and how to run it.' },
);

export const MeshControlSchema = Type.Object(
  {
    http: Type.Optional(Type.String({ maxLength: 300, description: 'HOST:PORT of the control plane API. Default: the `skein up` default.' })),
    dns: Type.Optional(Type.String({ maxLength: 300, description: 'HOST:PORT of the DNS server, or "off". Default: the `skein up` default.' })),
    domain: Type.Optional(Type.String({ pattern: DOMAIN_PATTERN, description: 'DNS zone served: <service>.service.<domain>. Default "skein".' })),
  },
  { additionalProperties: false, description: 'The embedded control plane.' },
);

export const MeshFileSchema = Type.Object(
  {
    apiVersion: Type.Optional(Type.Literal(API_VERSION, { description: `Resource API version; "${API_VERSION}".` })),
    kind: Type.Literal('Mesh'),
    name: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Name of the mesh (a DNS label).' }),
    control: Type.Optional(MeshControlSchema),
    services: Type.Record(Type.String(), MeshServiceSchema, {
      minProperties: 1,
      maxProperties: MAX_SERVICES,
      description: 'The services, by name (each a DNS label).',
    }),
  },
  { additionalProperties: false, title: 'Mesh', description: 'A mesh file: what `skein up` runs.' },
);

export type RawMeshFile = Static<typeof MeshFileSchema>;
export type RawMeshService = Static<typeof MeshServiceSchema>;

/** JSON Schema of a mesh file (for editors: point yaml-language-server at it). */
export function meshFileJsonSchema(): object {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://skein.dev/schema/v1/mesh.json',
    ...(JSON.parse(JSON.stringify(MeshFileSchema)) as object),
  };
}

// ---- domain objects ----

export interface MeshReadiness {
  readonly type: 'http' | 'tcp';
  /** http only ("/health" by default; kept for tcp so the shape is one). */
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly initialDelayMs: number;
  readonly deadlineMs: number;
}

export type MeshHashKey = HashKey;
export type MeshBalancer = BalancerPolicy;

export interface MeshRestart {
  readonly baseMs: number;
  readonly capMs: number;
  readonly resetAfterMs: number;
  /** null: no limit. */
  readonly maxRestarts: number | null;
}

export interface MeshService {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** As written (relative to the mesh file's directory); null: that directory. */
  readonly cwd: string | null;
  readonly env: Readonly<Record<string, string>>;
  readonly replicas: number;
  readonly port: { readonly env: string };
  readonly readiness: MeshReadiness;
  readonly balancer: MeshBalancer;
  /** Traffic policy fields as written: sent with the Service resource. */
  readonly traffic: RawTraffic;
  readonly weight: number;
  readonly zone: string;
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly restart: MeshRestart;
  readonly stopTimeoutMs: number;
  readonly dependsOn: readonly string[];
}

export interface MeshControl {
  /** null: the `skein up` default. */
  readonly http: string | null;
  /** null: the `skein up` default; "off" disables DNS. */
  readonly dns: string | null;
  readonly domain: string | null;
}

export interface MeshFile {
  readonly name: string;
  readonly control: MeshControl;
  /** In file order. */
  readonly services: readonly MeshService[];
}

// ---- validation ----

const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
let validate: ValidateFunction | undefined;
function validator(): ValidateFunction {
  validate ??= ajv.compile(MeshFileSchema as TSchema);
  return validate;
}

/** A problem in the file: `service` is set when it lies inside one service. */
export interface MeshProblem extends FieldProblem {
  service?: string;
}

function segsOf(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function joinSegs(segs: readonly string[]): string {
  return segs.reduce((acc, s) => (/^\d+$/.test(s) && acc !== '' ? `${acc}[${s}]` : acc === '' ? s : `${acc}.${s}`), '');
}

function patternMessage(pattern: string): string {
  if (pattern === DURATION_PATTERN) return 'must be a duration such as "500ms", "10s" or "1m30s"';
  if (pattern === DNS_LABEL_PATTERN) return 'must be a DNS label (a-z, 0-9 and "-", 1-63 characters, no "-" at either end)';
  if (pattern === ENV_NAME_PATTERN) return 'must be an environment variable name (letters, digits and "_", not starting with a digit)';
  if (pattern === HTTP_TOKEN_PATTERN) return 'must be a header or cookie name (letters, digits and !#$%&\'*+.^_`|~-)';
  if (pattern === DOMAIN_PATTERN) return 'must be a DNS name such as "skein" or "mesh.internal"';
  return `must match ${pattern}`;
}

function problem(segs: readonly string[], message: string): MeshProblem {
  if (segs[0] === 'services' && segs.length >= 2) {
    const rest = joinSegs(segs.slice(2));
    return { service: segs[1] as string, field: rest === '' ? '(service)' : rest, message };
  }
  return { field: segs.length === 0 ? '(root)' : joinSegs(segs), message };
}

function ajvProblems(errors: readonly ErrorObject[]): MeshProblem[] {
  const out: MeshProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const segs = segsOf(e.instancePath);
    let message = e.message ?? 'is invalid';
    const p = e.params as Record<string, unknown>;
    switch (e.keyword) {
      case 'additionalProperties':
        segs.push(String(p['additionalProperty']));
        message = 'is not a known field';
        break;
      case 'required':
        segs.push(String(p['missingProperty']));
        message = 'is required';
        break;
      case 'pattern':
        message = patternMessage(String(p['pattern']));
        break;
      case 'const':
        message = `must be ${JSON.stringify(p['allowedValue'])}`;
        break;
      case 'enum':
        message = `must be one of ${(p['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
        break;
      case 'type':
        message = p['type'] === 'string' ? 'must be a string (quote numbers and booleans in YAML)' : `must be ${p['type'] === 'integer' ? 'an integer' : `of type ${String(p['type'])}`}`;
        break;
      case 'minProperties':
        if (segs.length === 1 && segs[0] === 'services') message = 'must name at least one service';
        break;
      case 'uniqueItems':
        message = 'must not name a service twice';
        break;
      default:
        break;
    }
    const pr = problem(segs, message);
    const key = `${pr.service ?? ''}|${pr.field}|${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(pr);
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fullField(p: MeshProblem): string {
  if (p.service === undefined) return p.field;
  return p.field === '(service)' ? `services.${p.service}` : `services.${p.service}.${p.field}`;
}

function describe(p: MeshProblem): string {
  if (p.service === undefined) return `${p.field} ${p.message}`;
  return p.field === '(service)' ? `service "${p.service}" ${p.message}` : `service "${p.service}": ${p.field} ${p.message}`;
}

/**
 * One SkeinError for all the problems of a file: the message names the file, the service and
 * the field of the first; `field` is its path in the file (`services.web.replicas`); `details`
 * lists every problem as `{ field, message }` (fields as full paths).
 */
export function meshError(fileName: string, problems: readonly MeshProblem[]): SkeinError {
  const first = problems[0] ?? { field: '(root)', message: 'is invalid' };
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  return new SkeinError('SKEIN_E_VALIDATION', `${fileName}: ${describe(first)}${more}`, {
    field: fullField(first),
    details: problems.map((p) => ({ field: fullField(p), message: p.message, ...(p.service === undefined ? {} : { service: p.service }) })),
  });
}

function duration(text: string | undefined, def: number, min: number, max: number, push: (message: string) => void): number {
  if (text === undefined) return def;
  const ms = parseDuration(text);
  if (ms === undefined) {
    push('must be a duration such as "500ms", "10s" or "1m30s"');
    return def;
  }
  if (ms < min) push(`must be at least ${fmt(min)}`);
  else if (ms > max) push(`must be at most ${fmt(max)}`);
  return ms;
}

function fmt(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

function buildService(name: string, raw: RawMeshService, problems: MeshProblem[]): MeshService {
  const push = (field: string, message: string) => problems.push({ service: name, field, message });
  const dur = (text: string | undefined, def: number, min: number, max: number, field: string) =>
    duration(text, def, min, max, (message) => push(field, message));

  const env: Record<string, string> = {};
  const portEnv = raw.port?.env ?? MESH_DEFAULTS.portEnv;
  const envRe = new RegExp(ENV_NAME_PATTERN);
  for (const [k, v] of Object.entries(raw.env ?? {})) {
    if (!envRe.test(k)) push(`env.${k}`, patternMessage(ENV_NAME_PATTERN));
    else if ((RESERVED_ENV as readonly string[]).includes(k)) push(`env.${k}`, 'is set by Skein (the service name or the instance id) and cannot be set here');
    else if (k === portEnv) push(`env.${k}`, `is set by Skein to the assigned port (see port.env) and cannot be set here`);
    env[k] = v;
  }
  if ((RESERVED_ENV as readonly string[]).includes(portEnv)) push('port.env', `must not be ${portEnv}, which Skein sets itself`);

  const labels: Record<string, string> = {};
  const labelRe = new RegExp(LABEL_KEY_PATTERN);
  for (const [k, v] of Object.entries(raw.labels ?? {})) {
    if (!labelRe.test(k)) push(`labels.${k}`, 'has a key that is not a label key (letters, digits, ".", "_", "/", "-"; up to 63 characters)');
    labels[k] = v;
  }

  const r = raw.readiness ?? {};
  const D = MESH_DEFAULTS.readiness;
  const type = r.type ?? 'tcp';
  if (type === 'tcp' && r.path !== undefined) push('readiness.path', 'applies to http readiness only');
  const readiness: MeshReadiness = Object.freeze({
    type,
    path: r.path ?? D.path,
    intervalMs: dur(r.interval, D.intervalMs, 100, 3_600_000, 'readiness.interval'),
    timeoutMs: dur(r.timeout, D.timeoutMs, 1, 3_600_000, 'readiness.timeout'),
    initialDelayMs: dur(r.initialDelay, D.initialDelayMs, 0, 3_600_000, 'readiness.initialDelay'),
    deadlineMs: dur(r.deadline, D.deadlineMs, 1000, MAX_DURATION_MS, 'readiness.deadline'),
  });
  if (readiness.initialDelayMs >= readiness.deadlineMs && r.initialDelay !== undefined) {
    push('readiness.initialDelay', `must be shorter than readiness.deadline (${fmt(readiness.deadlineMs)})`);
  }

  const balancer = buildBalancer(raw.balancer, push);
  const traffic = pickTraffic(raw as Record<string, unknown>);
  buildTraffic(traffic, push);

  const rs = raw.restart ?? {};
  const RD = MESH_DEFAULTS.restart;
  const baseMs = dur(rs.backoff?.base, RD.baseMs, 10, 3_600_000, 'restart.backoff.base');
  const capMs = dur(rs.backoff?.cap, Math.max(RD.capMs, baseMs), 10, MAX_DURATION_MS, 'restart.backoff.cap');
  if (capMs < baseMs && rs.backoff?.cap !== undefined) push('restart.backoff.cap', `must be at least restart.backoff.base (${fmt(baseMs)})`);
  const restart: MeshRestart = Object.freeze({
    baseMs,
    capMs: Math.max(capMs, baseMs),
    resetAfterMs: dur(rs.resetAfter, RD.resetAfterMs, 1000, MAX_DURATION_MS, 'restart.resetAfter'),
    maxRestarts: rs.maxRestarts ?? null,
  });

  return Object.freeze({
    name,
    command: raw.command,
    args: Object.freeze([...(raw.args ?? [])]),
    cwd: raw.cwd ?? null,
    env: Object.freeze(env),
    replicas: raw.replicas ?? MESH_DEFAULTS.replicas,
    port: Object.freeze({ env: portEnv }),
    readiness,
    balancer,
    traffic: frozenCopy(traffic),
    weight: raw.weight ?? MESH_DEFAULTS.weight,
    zone: raw.zone ?? '',
    version: raw.version ?? '',
    labels: Object.freeze(labels),
    restart,
    stopTimeoutMs: dur(raw.stopTimeout, MESH_DEFAULTS.stopTimeoutMs, 0, 600_000, 'stopTimeout'),
    dependsOn: Object.freeze([...(raw.dependsOn ?? [])]),
  });
}

function checkDependencies(services: readonly MeshService[], problems: MeshProblem[]): void {
  const names = new Set(services.map((s) => s.name));
  for (const s of services) {
    s.dependsOn.forEach((d, i) => {
      if (d === s.name) problems.push({ service: s.name, field: `dependsOn[${i}]`, message: 'names the service itself' });
      else if (!names.has(d)) problems.push({ service: s.name, field: `dependsOn[${i}]`, message: `names unknown service "${d}"` });
    });
  }
  if (problems.length > 0) return;
  // A cycle: depth-first search, reporting the first cycle found with its path.
  const state = new Map<string, 'visiting' | 'done'>();
  const byName = new Map(services.map((s) => [s.name, s]));
  const stack: string[] = [];
  const visit = (name: string): boolean => {
    const st = state.get(name);
    if (st === 'done') return false;
    if (st === 'visiting') {
      const cycle = [...stack.slice(stack.indexOf(name)), name];
      const from = cycle[cycle.length - 2] as string;
      const svc = byName.get(from) as MeshService;
      problems.push({ service: from, field: `dependsOn[${svc.dependsOn.indexOf(name)}]`, message: `makes a cycle: ${cycle.join(' -> ')}` });
      return true;
    }
    state.set(name, 'visiting');
    stack.push(name);
    for (const d of byName.get(name)?.dependsOn ?? []) if (visit(d)) return true;
    stack.pop();
    state.set(name, 'done');
    return false;
  };
  for (const s of services) if (visit(s.name)) return;
}

/** A parsed raw value (from YAML or JSON) -> MeshFile; errors name `fileName`. */
export function parseMesh(raw: unknown, fileName: string): MeshFile {
  if (!isPlainObject(raw)) throw meshError(fileName, [{ field: '(root)', message: 'must be a mapping (apiVersion, kind: Mesh, name, services)' }]);
  const v = validator();
  if (!v(raw)) throw meshError(fileName, ajvProblems(v.errors ?? []));
  const file = raw as RawMeshFile;
  const problems: MeshProblem[] = [];

  const c = file.control ?? {};
  for (const f of ['http', 'dns'] as const) {
    const text = c[f];
    if (text === undefined || (f === 'dns' && text === 'off')) continue;
    try {
      parseHostPort(text, `control.${f}`);
    } catch {
      problems.push({ field: `control.${f}`, message: `must be HOST:PORT (e.g. 127.0.0.1:7400 or [::1]:7400)${f === 'dns' ? ' or "off"' : ''}, not "${text}"` });
    }
  }

  const labelRe = new RegExp(DNS_LABEL_PATTERN);
  const services: MeshService[] = [];
  for (const [name, svc] of Object.entries(file.services)) {
    if (!labelRe.test(name)) {
      problems.push({ field: `services.${name}`, message: `names the service "${name}", which ${patternMessage(DNS_LABEL_PATTERN)}` });
      continue;
    }
    services.push(buildService(name, svc, problems));
  }
  if (problems.length === 0) checkDependencies(services, problems);
  if (problems.length > 0) throw meshError(fileName, problems);

  return Object.freeze({
    name: file.name,
    control: Object.freeze({ http: c.http ?? null, dns: c.dns ?? null, domain: c.domain ?? null }),
    services: Object.freeze(services),
  });
}

/**
 * Parses a mesh file's text (YAML, or JSON, which is YAML too): exactly one document. Throws
 * SKEIN_E_BAD_YAML for malformed text and SKEIN_E_VALIDATION for a file that does not fit the
 * schema; both messages start with `fileName`.
 */
export function parseMeshFile(text: string, fileName: string): MeshFile {
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const values: unknown[] = [];
  for (const doc of list) {
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      throw new SkeinError('SKEIN_E_BAD_YAML', `${fileName}: ${e?.message.split('\n')[0] ?? 'malformed YAML'}`, { field: fileName });
    }
    const v: unknown = doc.toJS({ maxAliasCount: 100 });
    if (v !== null && v !== undefined) values.push(v);
  }
  if (values.length === 0) throw meshError(fileName, [{ field: '(root)', message: 'is empty; a mesh file has apiVersion, kind: Mesh, name and services' }]);
  if (values.length > 1) throw meshError(fileName, [{ field: '(root)', message: `holds ${values.length} documents; a mesh file is one` }]);
  return parseMesh(values[0], fileName);
}

// ---- helpers for `skein up` ----

/**
 * The services in an order that starts every service after the ones it depends on; among
 * services free to start, file order. (parseMesh has already rejected cycles.)
 */
export function startOrder(mesh: MeshFile): MeshService[] {
  const done = new Set<string>();
  const out: MeshService[] = [];
  const left = [...mesh.services];
  while (left.length > 0) {
    const i = left.findIndex((s) => s.dependsOn.every((d) => done.has(d)));
    if (i < 0) throw new SkeinError('SKEIN_E_VALIDATION', `mesh "${mesh.name}": dependsOn has a cycle`, { field: 'dependsOn' });
    const [s] = left.splice(i, 1) as [MeshService];
    done.add(s.name);
    out.push(s);
  }
  return out;
}

/**
 * The working directory of a service's replicas: its `cwd` resolved against the directory of the
 * mesh file (the file's own directory when it has no `cwd`). A relative `command` such as
 * `./server` is then found from there too.
 */
export function serviceCwd(meshFilePath: string, service: Pick<MeshService, 'cwd'>): string {
  return resolve(dirname(resolve(meshFilePath)), service.cwd ?? '.');
}

/** The registration (`PUT /v1/services/{service}/instances/{id}` body) of one ready replica. */
export function replicaInstance(service: MeshService, replica: { id: string; address: string; port: number }): RawInstance {
  const inst: RawInstance = { id: replica.id, service: service.name, address: replica.address, port: replica.port, weight: service.weight };
  if (service.zone !== '') inst.zone = service.zone;
  if (service.version !== '') inst.version = service.version;
  // Every replica is registered at the inbound listener in front of it.
  inst.labels = { ...service.labels, [INBOUND_PROXY_LABEL]: 'true' };
  return inst;
}
