/**
 * Requests held for a service scaled to zero (docs/deployments.md#scale-to-zero): Knative's
 * activator, in every caller's proxy. When a service whose policy has `coldStart` has no
 * instance at all, a call is held here instead of failing, and the proxy asks the control plane
 * to wake the service (the `cold-start` traffic event: `skein up` starts a replica). When
 * instances arrive, every held call goes ahead, oldest first. The queue is bounded
 * (`coldStart.queue` per proxy and service) and each call's wait too (`coldStart.timeout`, or its
 * deadline): both end in an explainable error, never an unbounded wait.
 *
 * Nothing here does I/O: the wake is a callback, the time a Clock.
 */
import type { ColdStartPolicy } from '../api/traffic.js';
import type { Clock } from '../core/clock.js';
import type { Refusal } from './service-client.js';

/** A call held for a cold start: how long it may wait, and how it leaves the queue (timed out, client gone). */
export interface Hold {
  readonly timeoutMs: number;
  cancel(): void;
}

/** A wake asked for while calls are held is asked again, on a new held call, after this long. */
export const WAKE_AGAIN_MS = 1000;

export class ColdStartQueue {
  private readonly waiting = new Set<() => void>();
  private wokeAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly service: string,
    private readonly clock: Clock,
    /** Ask for the service to be woken; `waiting` calls are held. */
    private readonly wake: (waiting: number) => void,
  ) {}

  /** Calls held now. */
  get size(): number {
    return this.waiting.size;
  }

  /** Holds a call until `release` (then `resume` runs) or its Hold is cancelled; a refusal when the queue is full. */
  hold(policy: ColdStartPolicy, resume: () => void): Hold | Refusal {
    const n = this.waiting.size;
    if (n >= policy.queue) {
      return {
        code: 'SKEIN_E_COLD_START_QUEUE_FULL',
        message: `service "${this.service}" has no instance (it is scaled to zero) and this proxy already holds ${n} requests for it while one starts (coldStart.queue ${policy.queue})`,
        details: { coldStart: { queue: policy.queue, waiting: n } },
      };
    }
    this.waiting.add(resume);
    const now = this.clock.now();
    if (now - this.wokeAt >= WAKE_AGAIN_MS) {
      this.wokeAt = now;
      this.wake(this.waiting.size);
    }
    return { timeoutMs: policy.timeoutMs, cancel: () => this.waiting.delete(resume) };
  }

  /** Instances arrived (or the policy went away): every held call goes ahead, oldest first. */
  release(): void {
    if (this.waiting.size === 0) return;
    const all = [...this.waiting];
    this.waiting.clear();
    this.wokeAt = Number.NEGATIVE_INFINITY;
    for (const resume of all) resume();
  }
}
