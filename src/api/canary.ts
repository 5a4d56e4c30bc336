/**
 * A service's canary strategy (Flagger's model, docs/deployments.md): how a new revision's traffic
 * grows beside the stable one, what its analysis checks each interval, and when it is promoted or
 * rolled back. The schema (mesh files), every default (CANARY_DEFAULTS) and the parsed policy
 * live here; the analysis itself is src/runtime/canary-analysis.ts.
 */
import { Type, type Static } from '@sinclair/typebox';
import { formatDuration } from '../core/duration.js';
import { Duration, Enum, Obj, Percent } from './fields.js';
import { durationAt } from './duration.js';
import type { Push } from './validate.js';

/** Webhooks, as Flagger calls them (docs/deployments.md, "Webhooks"). */
export const WEBHOOK_TYPES = ['pre-rollout', 'rollout', 'confirm-promotion', 'post-rollout', 'rollback'] as const;
export type WebhookType = (typeof WEBHOOK_TYPES)[number];

/** Flagger's defaults where they make sense; intervals down to 1 s for tests and demos. */
export const CANARY_DEFAULTS = Object.freeze({
  intervalMs: 60_000,
  minIntervalMs: 1000,
  maxIntervalMs: 3_600_000,
  stepWeight: 10,
  maxWeight: 50,
  threshold: 5,
  /** Success rate of the canary's requests, percent, at least. */
  minSuccessRate: 99,
  /** p99 latency of the canary's requests, at most. */
  maxP99Ms: 500,
  /** Requests to the canary in an interval below which it cannot be judged (a failed check). */
  minRequests: 10,
  /** Error rate of the canary in one interval, percent, above which it is rolled back at once. */
  abortErrorRate: 50,
  webhookTimeoutMs: 10_000,
  maxWebhooks: 20,
});

const WebhookSchema = Obj(
  {
    name: Type.String({ minLength: 1, maxLength: 63, pattern: '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$', description: 'Names the webhook in events and `skein rollout status`.' }),
    type: Enum(WEBHOOK_TYPES, 'When it is called (docs/deployments.md, "Webhooks").'),
    url: Type.String({ minLength: 1, maxLength: 2048, description: 'An http:// or https:// URL; the analysis POSTs a JSON body to it.' }),
    timeout: Type.Optional(Duration(`How long the webhook may take; longer is a failure. Default ${formatDuration(CANARY_DEFAULTS.webhookTimeoutMs)}.`)),
    metadata: Type.Optional(Type.Record(Type.String({ maxLength: 63 }), Type.String({ maxLength: 1024 }), { description: 'Sent as `metadata` in the body.' })),
  },
  'An HTTP hook the analysis calls: 2xx passes.',
);

export const CanarySchema = Obj(
  {
    interval: Type.Optional(Duration(`Time between analysis steps. Default ${formatDuration(CANARY_DEFAULTS.intervalMs)}; at least ${formatDuration(CANARY_DEFAULTS.minIntervalMs)}.`)),
    stepWeight: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Weight added to the canary at each passed step, percent. Default ${CANARY_DEFAULTS.stepWeight}.` })),
    maxWeight: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Weight after which the canary is promoted, percent. Default ${CANARY_DEFAULTS.maxWeight}.` })),
    threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Failed checks (cumulative) at which the canary is rolled back. Default ${CANARY_DEFAULTS.threshold}.` })),
    successRate: Type.Optional(Percent(`The canary's success rate over an interval must be at least this. Default ${CANARY_DEFAULTS.minSuccessRate}.`)),
    p99: Type.Optional(Duration(`The canary's p99 latency over an interval must be at most this. Default ${formatDuration(CANARY_DEFAULTS.maxP99Ms)}.`)),
    minRequests: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: `Requests the canary needs in an interval to be judged; fewer is a failed check. Default ${CANARY_DEFAULTS.minRequests}.` })),
    abortErrorRate: Type.Optional(Percent(`An interval with more errors than this (percent of the canary's requests) rolls it back at once. Default ${CANARY_DEFAULTS.abortErrorRate}.`)),
    webhooks: Type.Optional(Type.Array(WebhookSchema, { maxItems: CANARY_DEFAULTS.maxWebhooks, description: 'HTTP hooks of the analysis.' })),
  },
  'Roll a new revision out as a canary: traffic shifts to it in steps while its own golden signals stay within bounds; rolled back by itself when they do not.',
);

export type RawCanary = Static<typeof CanarySchema>;

export interface Webhook {
  readonly name: string;
  readonly type: WebhookType;
  readonly url: string;
  readonly timeoutMs: number;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface CanaryPolicy {
  readonly intervalMs: number;
  readonly stepWeight: number;
  readonly maxWeight: number;
  readonly threshold: number;
  /** 0..1 */
  readonly minSuccessRate: number;
  readonly maxP99Ms: number;
  readonly minRequests: number;
  /** 0..1 */
  readonly abortErrorRate: number;
  readonly webhooks: readonly Webhook[];
}

/**
 * Checks what the schema cannot and returns the frozen policy; `push(field, message)` collects
 * problems, fields relative to `canary`.
 */
export function buildCanary(raw: RawCanary, push: Push): CanaryPolicy {
  const D = CANARY_DEFAULTS;
  const intervalMs = durationAt(raw.interval, D.intervalMs, 'canary.interval', push, { min: D.minIntervalMs, max: D.maxIntervalMs });
  const maxP99Ms = durationAt(raw.p99, D.maxP99Ms, 'canary.p99', push, { min: 1 });
  const stepWeight = raw.stepWeight ?? D.stepWeight;
  const maxWeight = raw.maxWeight ?? D.maxWeight;
  if (stepWeight > maxWeight) push('canary.stepWeight', `must be at most maxWeight (${maxWeight})`);
  const names = new Set<string>();
  const webhooks = (raw.webhooks ?? []).map((w, i): Webhook => {
    const at = `canary.webhooks[${i}]`;
    if (names.has(w.name)) push(`${at}.name`, `"${w.name}" names two webhooks`);
    names.add(w.name);
    let url: URL | null = null;
    try {
      url = new URL(w.url);
    } catch {
      push(`${at}.url`, `must be an http:// or https:// URL, not ${JSON.stringify(w.url.slice(0, 80))}`);
    }
    if (url !== null && url.protocol !== 'http:' && url.protocol !== 'https:') push(`${at}.url`, `must be an http:// or https:// URL, not ${url.protocol}`);
    const timeoutMs = durationAt(w.timeout, D.webhookTimeoutMs, `${at}.timeout`, push, { min: 1, max: 60_000 });
    return Object.freeze({ name: w.name, type: w.type, url: w.url, timeoutMs, metadata: Object.freeze({ ...(w.metadata ?? {}) }) });
  });
  return Object.freeze({
    intervalMs,
    stepWeight,
    maxWeight,
    threshold: raw.threshold ?? D.threshold,
    minSuccessRate: (raw.successRate ?? D.minSuccessRate) / 100,
    maxP99Ms,
    minRequests: raw.minRequests ?? D.minRequests,
    abortErrorRate: (raw.abortErrorRate ?? D.abortErrorRate) / 100,
    webhooks: Object.freeze(webhooks),
  });
}
