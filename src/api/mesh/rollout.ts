/**
 * A service's rollout policy in the mesh file (`rollout:`) and the rules that turn it into
 * numbers, written once: Kubernetes' RollingUpdate rules (maxSurge rounded up, maxUnavailable
 * rounded down, both 0 makes maxUnavailable 1), minReady and the progress deadline.
 * docs/deployments.md documents them.
 */
import { Type } from '@sinclair/typebox';
import { formatDuration } from '../../core/duration.js';
import { Duration } from '../fields.js';
import { durationAt } from '../duration.js';
import type { Push } from '../validate.js';

/** An absolute number of replicas, or a percentage of the desired replicas. */
export type RolloutAmount = { readonly percent: number } | { readonly count: number };

export interface MeshRollout {
  readonly maxSurge: RolloutAmount;
  readonly maxUnavailable: RolloutAmount;
  /** How long a new replica must stay ready before it counts as available (Kubernetes' minReadySeconds). */
  readonly minReadyMs: number;
  /** How long a rollout may go without progress before Skein rolls it back by itself. */
  readonly progressDeadlineMs: number;
}

export const ROLLOUT_DEFAULTS: MeshRollout = Object.freeze({
  maxSurge: Object.freeze({ percent: 25 }),
  maxUnavailable: Object.freeze({ percent: 25 }),
  minReadyMs: 0,
  progressDeadlineMs: 600_000,
});

/** How many revisions of a service `skein up` keeps (Kubernetes' revisionHistoryLimit default). */
export const REVISION_HISTORY_LIMIT = 10;

const MAX_MIN_READY_MS = 3_600_000;
const AMOUNT = /^(\d{1,3})%$/;

/** An amount as a mesh file writes it: 3, or "25%" (quoted: YAML needs it). */
function amountText(a: RolloutAmount): string {
  return 'percent' in a ? JSON.stringify(`${a.percent}%`) : String(a.count);
}

const Amount = (description: string) =>
  Type.Union([Type.Integer({ minimum: 0, maximum: 100 }), Type.String({ maxLength: 8 })], {
    description: `${description} A number of replicas (0..100) or a percentage of the replicas ("25%").`,
  });

export const RolloutSchema = Type.Object(
  {
    maxSurge: Type.Optional(Amount(`Replicas above \`replicas\` a rolling update may start (rounded up). Default ${amountText(ROLLOUT_DEFAULTS.maxSurge)}.`)),
    maxUnavailable: Type.Optional(Amount(`Replicas below \`replicas\` that may be unavailable during a rolling update (rounded down; when both are 0 it is 1). Default ${amountText(ROLLOUT_DEFAULTS.maxUnavailable)}.`)),
    minReady: Type.Optional(Duration(`Time a new replica stays ready before it counts as available. Default ${formatDuration(ROLLOUT_DEFAULTS.minReadyMs)}; at most ${formatDuration(MAX_MIN_READY_MS)}.`)),
    progressDeadline: Type.Optional(Duration(`Time a rolling update may go without progress before Skein rolls it back. Default ${formatDuration(ROLLOUT_DEFAULTS.progressDeadlineMs)}; 1s..24h, longer than minReady.`)),
  },
  { additionalProperties: false, description: 'How a changed service is rolled out (docs/deployments.md).' },
);

type RawAmount = number | string;
export interface RawRollout {
  maxSurge?: RawAmount;
  maxUnavailable?: RawAmount;
  minReady?: string;
  progressDeadline?: string;
}

function amountAt(raw: RawAmount | undefined, dflt: RolloutAmount, field: string, push: Push): RolloutAmount {
  if (raw === undefined) return dflt;
  if (typeof raw === 'number') return { count: raw };
  const m = AMOUNT.exec(raw);
  if (m === null || Number(m[1]) > 100) {
    push(field, `must be a number of replicas (0..100) or a percentage from "0%" to "100%", not ${JSON.stringify(raw)}`);
    return dflt;
  }
  return { percent: Number(m[1]) };
}

/** The raw `rollout:` of a service -> MeshRollout with every default; problems pushed at `rollout.<field>`. */
export function buildRollout(raw: RawRollout | undefined, push: Push): MeshRollout {
  if (raw === undefined) return ROLLOUT_DEFAULTS;
  const D = ROLLOUT_DEFAULTS;
  const minReadyMs = durationAt(raw.minReady, D.minReadyMs, 'rollout.minReady', push, { min: 0, max: MAX_MIN_READY_MS });
  const progressDeadlineMs = durationAt(raw.progressDeadline, D.progressDeadlineMs, 'rollout.progressDeadline', push, { min: 1000 });
  if (progressDeadlineMs <= minReadyMs) push('rollout.progressDeadline', `must be longer than rollout.minReady (${formatDuration(minReadyMs)})`);
  return Object.freeze({
    maxSurge: Object.freeze(amountAt(raw.maxSurge, D.maxSurge, 'rollout.maxSurge', push)),
    maxUnavailable: Object.freeze(amountAt(raw.maxUnavailable, D.maxUnavailable, 'rollout.maxUnavailable', push)),
    minReadyMs,
    progressDeadlineMs,
  });
}

/**
 * maxSurge and maxUnavailable as replica counts for `replicas` desired replicas, by Kubernetes'
 * rules: a percentage of maxSurge rounds up, of maxUnavailable down; when both come to 0,
 * maxUnavailable is 1 (a rollout must be able to move).
 */
export function rolloutBounds(replicas: number, r: Pick<MeshRollout, 'maxSurge' | 'maxUnavailable'>): { surge: number; unavailable: number } {
  const count = (a: RolloutAmount, round: (x: number) => number) => ('count' in a ? a.count : round((a.percent * replicas) / 100));
  const surge = count(r.maxSurge, Math.ceil);
  const unavailable = count(r.maxUnavailable, Math.floor);
  return surge === 0 && unavailable === 0 ? { surge, unavailable: 1 } : { surge, unavailable };
}

/** "25%" or "1", as written in a file. */
export function formatAmount(a: RolloutAmount): string {
  return 'count' in a ? String(a.count) : `${a.percent}%`;
}
