/**
 * Schema validation of every input Skein reads (API bodies, resource files, mesh files): one
 * Ajv, and one translator from its errors to field messages, so that the same mistake reads the
 * same wherever it is made. Messages are written for people editing YAML or JSON by hand: a
 * pattern is named by what it means ("must be a DNS label (...)"), not by its regular expression.
 */
import { createRequire } from 'node:module';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import type { TSchema } from '@sinclair/typebox';
import { SkeinError } from '../core/errors.js';
import { patternMessage, patternNoun } from './names.js';

export { patternMessage };

/** A problem with one field of the input: `field` is its path (`services.web.replicas`, `routes[0].name`). */
export interface FieldProblem {
  field: string;
  message: string;
}

/** Collects a problem: `field` is relative to what is being built. */
export type Push = (field: string, message: string) => void;

/** A problem found by the schema, with its path as segments (so callers can split it, e.g. by service). */
export interface SchemaProblem extends FieldProblem {
  readonly path: readonly string[];
}

/**
 * The one Ajv, made by the first validation: Ajv is ~60 modules and a few MB of memory that a
 * process which validates nothing (a proxy serving only inbound workloads) does without
 * (docs/benchmarks.md, "Memory after (issue 16)"). Ajv is CommonJS, so it is required
 * synchronously where it is first needed and `compiled` stays synchronous.
 */
let ajv: Ajv | null = null;
function theAjv(): Ajv {
  if (ajv === null) {
    const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
    ajv = new AjvClass({ allErrors: true, strict: true, strictRequired: false, verbose: true });
  }
  return ajv;
}
const cache = new WeakMap<TSchema, ValidateFunction>();

/** The compiled validator of a schema (compiled once). */
export function compiled(schema: TSchema): ValidateFunction {
  let v = cache.get(schema);
  if (v === undefined) {
    v = theAjv().compile(schema);
    cache.set(schema, v);
  }
  return v;
}

const TYPE_MESSAGES: Record<string, string> = {
  string: 'must be a string (quote numbers and booleans in YAML)',
  integer: 'must be an integer',
  number: 'must be a number',
  boolean: 'must be true or false',
  object: 'must be a mapping of fields',
  array: 'must be a list',
};

function segments(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** Path segments -> `a.b[0].c`. */
export function fieldPath(segs: readonly string[]): string {
  return segs.reduce((acc, s) => (/^\d+$/.test(s) && acc !== '' ? `${acc}[${s}]` : acc === '' ? s : `${acc}.${s}`), '');
}

/** `prefix` + `rest` as one field path (`a` + `b` = `a.b`, `a` + `[0]` = `a[0]`). */
export function joinPath(prefix: string, rest: string): string {
  if (rest === '') return prefix;
  if (prefix === '') return rest;
  return rest.startsWith('[') ? `${prefix}${rest}` : `${prefix}.${rest}`;
}

/** One message for one Ajv error, and the path it is about (a missing or unknown field's own). */
function translate(e: ErrorObject, all: readonly ErrorObject[]): { segs: string[]; message: string } | null {
  const segs = segments(e.instancePath);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      segs.push(String(p['additionalProperty']));
      const keyPatterns = Object.keys((e.parentSchema as { patternProperties?: object } | undefined)?.patternProperties ?? {});
      const noun = keyPatterns.length === 1 ? patternNoun(keyPatterns[0] as string) : undefined;
      return { segs, message: keyPatterns.length === 0 ? 'is not a known field' : noun === undefined ? `is not an allowed key (keys must match ${keyPatterns.join(' or ')})` : `is not ${noun}` };
    }
    case 'required':
      segs.push(String(p['missingProperty']));
      return { segs, message: 'is required' };
    case 'pattern':
      return { segs, message: patternMessage(String(p['pattern'])) };
    case 'const':
      // A branch of a union of literals: reported once, by its anyOf.
      if (all.some((o) => o.keyword === 'anyOf' && o.instancePath === e.instancePath)) return null;
      return { segs, message: `must be ${JSON.stringify(p['allowedValue'])}` };
    case 'anyOf': {
      const allowed = all.filter((o) => o.instancePath === e.instancePath && o.keyword === 'const').map((o) => JSON.stringify((o.params as { allowedValue: unknown }).allowedValue));
      return { segs, message: allowed.length > 0 ? `must be one of ${allowed.join(', ')}` : 'does not match any of the allowed forms' };
    }
    case 'enum':
      return { segs, message: `must be one of ${(p['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}` };
    case 'type': {
      // A union of literals also reports each branch's type: its anyOf says it all.
      if (all.some((o) => o.keyword === 'anyOf' && o.instancePath === e.instancePath)) return null;
      return { segs, message: TYPE_MESSAGES[String(p['type'])] ?? `must be of type ${String(p['type'])}` };
    }
    case 'uniqueItems':
      return { segs, message: `must not list the same value twice (items ${Math.min(Number(p['i']), Number(p['j']))} and ${Math.max(Number(p['i']), Number(p['j']))})` };
    case 'minProperties':
      return { segs, message: `must have at least ${String(p['limit'])} ${p['limit'] === 1 ? 'entry' : 'entries'}` };
    case 'maxProperties':
      return { segs, message: `must have at most ${String(p['limit'])} entries` };
    case 'minItems':
      return { segs, message: `must have at least ${String(p['limit'])} ${p['limit'] === 1 ? 'item' : 'items'}` };
    case 'maxItems':
      return { segs, message: `must have at most ${String(p['limit'])} items` };
    case 'propertyNames':
      return null; // reported by the nested pattern error
    default:
      return { segs, message: e.message ?? 'is invalid' };
  }
}

/**
 * Ajv's errors as field problems: one per field and kind of mistake, in the order found.
 * `prefix` is put before every field (a file's resource, say).
 */
export function schemaProblems(errors: readonly ErrorObject[], prefix = ''): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const t = translate(e, errors);
    if (t === null) continue;
    const field = joinPath(prefix, fieldPath(t.segs));
    const key = `${field}|${t.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ field: field === '' ? '(root)' : field, message: t.message, path: t.segs });
  }
  return out;
}

/** The schema's problems with `raw` (none: it fits). */
export function check(schema: TSchema, raw: unknown, prefix = ''): SchemaProblem[] {
  const v = compiled(schema);
  if (v(raw)) return [];
  return schemaProblems(v.errors ?? [], prefix);
}

/**
 * One SkeinError for every problem: the message names `what` and the first problem, `field` is
 * its path and `details` lists them all as `{ field, message }`.
 */
export function validationError(problems: readonly FieldProblem[], what: string): SkeinError {
  const first = problems[0] ?? { field: '(root)', message: 'is invalid' };
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  return new SkeinError('SKEIN_E_VALIDATION', `${what}: ${first.field} ${first.message}${more}`, {
    field: first.field,
    details: problems.map((p) => ({ field: p.field, message: p.message })),
  });
}
