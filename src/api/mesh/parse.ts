/**
 * Mesh file text -> the frozen MeshFile, or one SkeinError that names the file, the service and
 * the field: `shop.yaml: service "user-service": replicas must be <= 100`. Schema errors are
 * worded by the translator every input shares (validate.ts); this file checks what the schema
 * cannot (durations in range, reserved variables, dependencies).
 */
import { parseHostPort } from '../../core/address.js';
import { formatDuration } from '../../core/duration.js';
import { SkeinError } from '../../core/errors.js';
import { buildBalancer } from '../balancer.js';
import { buildAuthorization } from '../authz/build.js';
import { durationAt, MAX_DURATION_MS } from '../duration.js';
import { DNS_LABEL_PATTERN, ENV_NAME_PATTERN } from '../names.js';
import { buildTraffic, checkSubsetsKnown, frozenCopy, pickTraffic, type RawMirror } from '../traffic.js';
import { check, fieldPath, patternMessage, type FieldProblem, type SchemaProblem } from '../validate.js';
import { yamlDocuments } from '../yaml.js';
import { MESH_DEFAULTS, type MeshFile, type MeshReadiness, type MeshRestart, type MeshService } from './model.js';
import { buildRollout } from './rollout.js';
import { buildCanary } from '../canary.js';
import { buildAutoscale } from './autoscale.js';
import { MAX_REPLICAS, MeshFileSchema, RESERVED_ENV, type RawMeshFile, type RawMeshService } from './schema.js';

/** A problem in the file: `service` is set when it lies inside one service. */
export interface MeshProblem extends FieldProblem {
  service?: string;
}

/** A schema problem, split at its service when it lies inside one. */
function meshProblem(p: SchemaProblem): MeshProblem {
  const segs = p.path;
  if (segs[0] === 'services' && segs.length >= 2) {
    const rest = fieldPath(segs.slice(2));
    return { service: segs[1] as string, field: rest === '' ? '(service)' : rest, message: p.message };
  }
  return { field: p.field, message: p.message };
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

const HOUR_MS = 3_600_000;

function buildService(name: string, raw: RawMeshService, problems: MeshProblem[]): MeshService {
  const push = (field: string, message: string) => problems.push({ service: name, field, message });
  const dur = (text: string | undefined, def: number, min: number, max: number, field: string) => durationAt(text, def, field, push, { min, max });

  const env: Record<string, string> = {};
  const portEnv = raw.port?.env ?? MESH_DEFAULTS.portEnv;
  const envRe = new RegExp(ENV_NAME_PATTERN);
  for (const [k, v] of Object.entries(raw.env ?? {})) {
    if (!envRe.test(k)) push(`env.${k}`, patternMessage(ENV_NAME_PATTERN));
    else if ((RESERVED_ENV as readonly string[]).includes(k)) push(`env.${k}`, 'is set by Skein (the service name, the instance id or the version) and cannot be set here');
    else if (k === portEnv) push(`env.${k}`, `is set by Skein to the assigned port (see port.env) and cannot be set here`);
    env[k] = v;
  }
  if ((RESERVED_ENV as readonly string[]).includes(portEnv)) push('port.env', `must not be ${portEnv}, which Skein sets itself`);

  const r = raw.readiness ?? {};
  const D = MESH_DEFAULTS.readiness;
  const type = r.type ?? MESH_DEFAULTS.readiness.type;
  if (type === 'tcp' && r.path !== undefined) push('readiness.path', 'applies to http readiness only');
  const readiness: MeshReadiness = Object.freeze({
    type,
    path: r.path ?? D.path,
    intervalMs: dur(r.interval, D.intervalMs, 100, HOUR_MS, 'readiness.interval'),
    timeoutMs: dur(r.timeout, D.timeoutMs, 1, HOUR_MS, 'readiness.timeout'),
    initialDelayMs: dur(r.initialDelay, D.initialDelayMs, 0, HOUR_MS, 'readiness.initialDelay'),
    deadlineMs: dur(r.deadline, D.deadlineMs, 1000, MAX_DURATION_MS, 'readiness.deadline'),
  });
  if (readiness.initialDelayMs >= readiness.deadlineMs && r.initialDelay !== undefined) {
    push('readiness.initialDelay', `must be shorter than readiness.deadline (${formatDuration(readiness.deadlineMs)})`);
  }

  const balancer = buildBalancer(raw.balancer, push);
  if (raw.authorization !== undefined) buildAuthorization(raw.authorization, push);
  const traffic = pickTraffic(raw as Record<string, unknown>);
  buildTraffic(traffic, push);
  // A split names versions the mesh file runs (a canary's revisions will add theirs).
  checkSubsetsKnown(traffic, [{ version: raw.version ?? '', labels: raw.labels ?? {} }], push);

  const rs = raw.restart ?? {};
  const RD = MESH_DEFAULTS.restart;
  const baseMs = dur(rs.backoff?.base, RD.baseMs, 10, HOUR_MS, 'restart.backoff.base');
  const capMs = dur(rs.backoff?.cap, Math.max(RD.capMs, baseMs), 10, MAX_DURATION_MS, 'restart.backoff.cap');
  if (capMs < baseMs && rs.backoff?.cap !== undefined) push('restart.backoff.cap', `must be at least restart.backoff.base (${formatDuration(baseMs)})`);
  const restart: MeshRestart = Object.freeze({
    baseMs,
    capMs: Math.max(capMs, baseMs),
    resetAfterMs: dur(rs.resetAfter, RD.resetAfterMs, 1000, MAX_DURATION_MS, 'restart.resetAfter'),
    maxRestarts: rs.maxRestarts ?? null,
  });

  // Autoscaled: replicas is where it starts (default min, and 1 with min 0, as Knative's initial scale), within min..max.
  const autoscale = buildAutoscale(raw.autoscale, push, MAX_REPLICAS);
  if (autoscale !== null && raw.replicas !== undefined && (raw.replicas < autoscale.min || raw.replicas > autoscale.max)) {
    push('replicas', `must be within autoscale.min..autoscale.max (${autoscale.min}..${autoscale.max}) when the service autoscales, not ${raw.replicas}`);
  }

  return Object.freeze({
    name,
    command: raw.command,
    args: Object.freeze([...(raw.args ?? [])]),
    cwd: raw.cwd ?? null,
    env: Object.freeze(env),
    replicas: raw.replicas ?? (autoscale == null ? MESH_DEFAULTS.replicas : Math.max(1, autoscale.min)),
    port: Object.freeze({ env: portEnv }),
    readiness,
    protocol: raw.protocol ?? MESH_DEFAULTS.protocol,
    balancer,
    traffic: frozenCopy(traffic),
    authorization: raw.authorization === undefined ? null : frozenCopy(raw.authorization),
    mtlsMode: raw.mtls?.mode ?? null,
    weight: raw.weight ?? MESH_DEFAULTS.weight,
    zone: raw.zone ?? '',
    version: raw.version ?? '',
    labels: Object.freeze({ ...(raw.labels ?? {}) }),
    restart,
    stopTimeoutMs: dur(raw.stopTimeout, MESH_DEFAULTS.stopTimeoutMs, 0, 10 * 60_000, 'stopTimeout'),
    rollout: buildRollout(raw.rollout, push),
    canary: raw.canary === undefined ? null : buildCanary(raw.canary, push),
    ...(autoscale === null ? {} : { autoscale }),
    dependsOn: Object.freeze([...(raw.dependsOn ?? [])]),
  });
}

/** A mirror names a service of the file (all of them are known here: another is a typo). */
function checkMirrors(services: readonly MeshService[], problems: MeshProblem[]): void {
  const names = new Set(services.map((s) => s.name));
  for (const s of services) {
    const t = s.traffic;
    const check = (m: RawMirror | undefined, at: string) => {
      if (m?.service !== undefined && !names.has(m.service)) problems.push({ service: s.name, field: `${at}.service`, message: `names unknown service "${m.service}" (the file's: ${[...names].join(', ')})` });
    };
    check(t.mirror, 'mirror');
    t.routes?.forEach((r, i) => check(r.mirror, `routes[${i}].mirror`));
  }
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
  const schemaProblems = check(MeshFileSchema, raw);
  if (schemaProblems.length > 0) throw meshError(fileName, schemaProblems.map(meshProblem));
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
  if (problems.length === 0) checkMirrors(services, problems);
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
  const values = yamlDocuments(text, fileName);
  if (values.length === 0) throw meshError(fileName, [{ field: '(root)', message: 'is empty; a mesh file has apiVersion, kind: Mesh, name and services' }]);
  if (values.length > 1) throw meshError(fileName, [{ field: '(root)', message: `holds ${values.length} documents; a mesh file is one` }]);
  return parseMesh(values[0], fileName);
}
