/**
 * Noticing the Nagle / delayed-ACK stall. An app that writes a response's head and its body in two
 * writes, with Nagle's algorithm on (TCP_NODELAY off: Python's http.server, werkzeug, many
 * hand-written servers), has its second write held until the first is acknowledged; on a long-lived
 * keep-alive connection, such as the proxy's pooled ones, the proxy's kernel delays that ACK by its
 * delayed-ACK timer (40 ms on Linux). Every response then arrives as a head, ~40 ms of nothing, and
 * the body: the app answers in 1 ms and its callers wait 41. Clients that open a new connection per
 * request (curl) never see it, so it hides well.
 *
 * The forwarder reports how long after the head each response's first body bytes came (when they
 * did not come with it). A gap in the band below is a stall; STALLS_TO_WARN of them in a row from
 * one endpoint, each within STALL_RUN_MS of the last, is the pattern, and it is reported (once per
 * WARN_EVERY_MS per endpoint) as a `body-stall` event naming the service and the instance, with the
 * fix. Any other gap ends a run: a body that takes its time for its own reasons is not this.
 */

/** The delayed-ACK timer is 40 ms on Linux (TCP_DELACK_MIN); with slack for timer granularity and a loaded machine. */
export const STALL_MIN_MS = 38;
export const STALL_MAX_MS = 80;
export const STALLS_TO_WARN = 5;
export const STALL_RUN_MS = 10_000;
export const WARN_EVERY_MS = 5 * 60_000;
/** Endpoints followed at once (a few per service in practice); the table starts over past it. */
const MAX_FOLLOWED = 10_000;

export function isStall(gapMs: number): boolean {
  return gapMs >= STALL_MIN_MS && gapMs <= STALL_MAX_MS;
}

interface Run {
  count: number;
  last: number;
  warned: number;
}

export class StallDetector {
  private readonly runs = new Map<string, Run>();

  /**
   * A response of endpoint `key` whose first body bytes came `gapMs` after its head, at `now` (ms);
   * true when this completes the pattern and a warning is due.
   */
  observe(key: string, gapMs: number, now: number): boolean {
    let r = this.runs.get(key);
    if (!isStall(gapMs)) {
      if (r !== undefined) r.count = 0;
      return false;
    }
    if (r === undefined) {
      if (this.runs.size >= MAX_FOLLOWED) this.runs.clear();
      r = { count: 0, last: 0, warned: Number.NEGATIVE_INFINITY };
      this.runs.set(key, r);
    }
    r.count = now - r.last <= STALL_RUN_MS ? r.count + 1 : 1;
    r.last = now;
    if (r.count < STALLS_TO_WARN || now - r.warned < WARN_EVERY_MS) return false;
    r.warned = now;
    return true;
  }
}
