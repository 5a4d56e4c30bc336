/** Path and query parameters of the API: checked once here, with errors naming the parameter. */
import type { FastifyRequest } from 'fastify';
import { BLOCKING_QUERY } from '../../api/control.js';
import { DNS_LABEL_PATTERN, INSTANCE_ID_PATTERN, patternMessage } from '../../api/names.js';
import { formatDuration, parseDuration } from '../../core/duration.js';
import { SkeinError } from '../../core/errors.js';
import type { Registry } from '../registry/registry.js';

const labelRe = new RegExp(DNS_LABEL_PATTERN);
const idRe = new RegExp(INSTANCE_ID_PATTERN);

export function serviceParam(v: string): string {
  if (!labelRe.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `service name "${v}" ${patternMessage(DNS_LABEL_PATTERN)}`, { field: 'service' });
  return v;
}

export function idParam(v: string): string {
  if (!idRe.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `instance id "${v}" ${patternMessage(INSTANCE_ID_PATTERN)}`, { field: 'id' });
  return v;
}

/** The name of a resource kept in its service's definition (`what`: "route", "policy"), a DNS label. */
function memberParam(v: string, what: string): string {
  if (!labelRe.test(v)) throw new SkeinError('SKEIN_E_VALIDATION', `${what} name "${v.slice(0, 80)}" ${patternMessage(DNS_LABEL_PATTERN)}`, { field: 'name' });
  return v;
}

export const routeParam = (v: string): string => memberParam(v, 'route');
export const policyParam = (v: string): string => memberParam(v, 'policy');

/**
 * The definition of service `name`, which holds its routes and policies (`what`: "routes",
 * "policies"): SKEIN_E_UNKNOWN_SERVICE when it has none.
 */
export function definitionOf(registry: Registry, name: string, what: string) {
  const def = registry.service(name)?.definition ?? null;
  if (def === null) throw new SkeinError('SKEIN_E_UNKNOWN_SERVICE', `service "${name}" has no definition: create the Service before its ${what}`, { field: 'service' });
  return def;
}

type Query = Record<string, string | string[] | undefined>;

/** Validates query parameters: only the allowed names, each at most once. */
export function query(req: FastifyRequest, allowed: string[]): Record<string, string> {
  const q = (req.query ?? {}) as Query;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(q)) {
    if (!allowed.includes(k)) {
      throw new SkeinError('SKEIN_E_BAD_QUERY', `unknown query parameter "${k}"${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`, { field: k });
    }
    if (Array.isArray(v)) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${k}" is given more than once`, { field: k });
    if (v !== undefined) out[k] = v;
  }
  return out;
}

export function boolQ(q: Record<string, string>, name: string): boolean {
  const v = q[name];
  if (v === undefined) return false;
  if (v === '' || v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${name}" must be true or false`, { field: name });
}

export function revQ(q: Record<string, string>, name: string): number | null {
  const v = q[name];
  if (v === undefined) return null;
  if (!/^\d{1,15}$/.test(v)) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "${name}" must be a non-negative integer revision`, { field: name });
  return Number(v);
}

/** `wait` of a blocking query, ms (BLOCKING_QUERY.defaultWaitMs without it). */
export function waitQ(q: Record<string, string>): number {
  const v = q['wait'];
  if (v === undefined) return BLOCKING_QUERY.defaultWaitMs;
  const ms = parseDuration(v);
  if (ms === undefined) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "wait" must be a duration such as "30s" (got "${v}")`, { field: 'wait' });
  if (ms > BLOCKING_QUERY.maxWaitMs) throw new SkeinError('SKEIN_E_BAD_QUERY', `query parameter "wait" must be at most ${formatDuration(BLOCKING_QUERY.maxWaitMs)}`, { field: 'wait' });
  return ms;
}
