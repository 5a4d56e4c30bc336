/**
 * The rolling update's arithmetic, without I/O or time: given how many replicas each revision's
 * replica set has and how many of them are available, how many each should have next. Kubernetes'
 * deployment controller (pkg/controller/deployment/rolling.go: reconcileNewReplicaSet,
 * reconcileOldReplicaSets, cleanupUnhealthyReplicas) with one difference: replicas still draining
 * count towards maxSurge, so the number of live processes never exceeds replicas + maxSurge.
 */

/** One replica set (the replicas of one revision). */
export interface SetCounts {
  /** Replicas it is asked to run (not those already leaving). */
  readonly replicas: number;
  /** Of those, ready for at least minReady. */
  readonly available: number;
}

export interface RolloutInput {
  /** The service's replicas. */
  readonly desired: number;
  /** maxSurge and maxUnavailable as counts (rolloutBounds). */
  readonly surge: number;
  readonly unavailable: number;
  /** The replica set of the revision being rolled out. */
  readonly next: SetCounts;
  /** The other replica sets, oldest first. */
  readonly old: readonly SetCounts[];
  /** Replicas of any set being drained and stopped whose process has not exited yet. */
  readonly leaving: number;
}

/** The replicas each set should have now. */
export interface RolloutStep {
  readonly next: number;
  readonly old: readonly number[];
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** One reconciliation: scale the new set up within maxSurge, the old ones down within maxUnavailable. */
export function planStep(s: RolloutInput): RolloutStep {
  const oldNow = s.old.map((o) => o.replicas);
  // The new set: up to `desired`, keeping every live process within desired + surge.
  let next = s.next.replicas;
  const maxTotal = s.desired + s.surge;
  const total = next + sum(oldNow) + s.leaving;
  if (next > s.desired) next = s.desired;
  else if (next < s.desired && total < maxTotal) next += Math.min(maxTotal - total, s.desired - next);

  const old = [...oldNow];
  if (sum(old) === 0) return { next, old };
  const minAvailable = s.desired - s.unavailable;
  const nextUnavailable = Math.max(0, next - s.next.available);
  let maxScaledDown = next + sum(old) - minAvailable - nextUnavailable;
  if (maxScaledDown <= 0) return { next, old };
  // Old replicas that are not available go first: removing them costs no availability (and a
  // set stuck with crashing replicas would otherwise block the rollout).
  s.old.forEach((o, i) => {
    const cut = Math.min(maxScaledDown, Math.max(0, (old[i] as number) - o.available));
    old[i] = (old[i] as number) - cut;
    maxScaledDown -= cut;
  });
  // Then available ones, as long as availability stays at desired - maxUnavailable.
  const available = s.next.available + sum(s.old.map((o) => o.available));
  let cut = Math.min(maxScaledDown, available - minAvailable);
  for (let i = 0; i < old.length && cut > 0; i++) {
    const c = Math.min(old[i] as number, cut);
    old[i] = (old[i] as number) - c;
    cut -= c;
  }
  return { next, old };
}

/** Whether the rollout is done: the new set runs `desired` available replicas and nothing else is left. */
export function rolloutDone(s: RolloutInput): boolean {
  return s.next.replicas === s.desired && s.next.available === s.desired && sum(s.old.map((o) => o.replicas)) === 0 && s.leaving === 0;
}

/**
 * The whole plan for replicas that become available at once and stop at once: [old, new] after
 * each step, from [from, 0]. What docs/deployments.md tabulates; the unit test checks it.
 */
export function planRollout(desired: number, surge: number, unavailable: number, from = desired): Array<[number, number]> {
  let old = from;
  let next = 0;
  const rows: Array<[number, number]> = [];
  for (let i = 0; i < 1000; i++) {
    const input = { desired, surge, unavailable, next: { replicas: next, available: next }, old: [{ replicas: old, available: old }], leaving: 0 };
    if (rolloutDone(input)) return rows;
    const step = planStep(input);
    next = step.next;
    old = step.old[0] as number;
    rows.push([old, next]);
  }
  throw new Error(`no plan converges for ${desired} replicas, surge ${surge}, unavailable ${unavailable}`);
}
