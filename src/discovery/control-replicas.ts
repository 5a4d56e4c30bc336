/**
 * Which control-plane replica a proxy talks to (`skein proxy --control URL[,URL...]`). Every caller
 * that reaches the control plane (the watch stream, announcements, the CA, the cold-start wake)
 * asks this one object for the current replica and tells it when that replica failed; it is the
 * only place that decides to move on, so two callers that saw the same failure move once, not
 * twice. The watch asks only when it (re)connects: an open stream stays on its replica while that
 * replica answers its pings, even after another caller's failure moved `current` on (measured in
 * test/multihost.test.ts: a replica cut off from etcd answers heartbeats and announcements with
 * 503, and keeps every watch stream).
 *
 * The rule: stay on the current replica while it answers; when it fails, move to the next URL in
 * the order given (round robin). Replicas on etcd share revisions, so a watch resumed on another
 * replica with `since=` loses nothing (docs/proxy.md#control-plane-failover).
 */
import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';

/** What `/debug/endpoints` says of one replica. */
export interface ReplicaReport {
  readonly url: string;
  readonly inUse: boolean;
  /** Failures since the last success. */
  readonly failures: number;
  /** ISO time of the last answer from it; null: none yet. */
  readonly lastOk: string | null;
  readonly lastError: string | null;
  readonly lastErrorAt: string | null;
}

interface ReplicaState {
  failures: number;
  lastOk: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
}

export interface ControlReplicasEvents {
  /** The current replica changed (`reason`: why the previous one was left). */
  switch: [from: string, to: string, reason: string];
}

/** An answer that came but means "this replica cannot serve now": try another, keep it if none can. */
export type Unavailable<T> = (answer: T) => string | null;

/** A control-plane base URL without its trailing slashes; throws SKEIN_E_VALIDATION for anything but http(s). */
export function normalizeControlUrl(text: string, field = 'controlUrl'): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new SkeinError('SKEIN_E_VALIDATION', `${field}: "${text}" is not a URL (e.g. http://127.0.0.1:7400)`, { field });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new SkeinError('SKEIN_E_VALIDATION', `${field}: "${text}" must be http: or https:, not ${u.protocol}`, { field });
  return text.replace(/\/+$/, '');
}

export class ControlReplicas extends EventEmitter<ControlReplicasEvents> {
  readonly urls: readonly string[];
  private index = 0;
  private readonly states: ReplicaState[];
  /**
   * What every call sends besides its own headers: the proxy's token, when it has one. Reads from
   * beyond loopback need a token of any scope (docs/security.md): a proxy on another host than the
   * control plane presents it on its watch and CA reads too.
   */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    urls: readonly string[],
    private readonly clock: Clock,
    opts: { token?: string | null } = {},
  ) {
    super();
    const token = opts.token?.trim() ?? '';
    const headers: Record<string, string> = token === '' ? {} : { authorization: `Bearer ${token}` };
    this.headers = Object.freeze(headers);
    if (urls.length === 0) throw new SkeinError('SKEIN_E_VALIDATION', 'control replicas: give at least one control-plane URL', { field: 'controlUrl' });
    const normalized = urls.map((u) => normalizeControlUrl(u));
    const dup = normalized.find((u, i) => normalized.indexOf(u) !== i);
    if (dup !== undefined) throw new SkeinError('SKEIN_E_VALIDATION', `control replicas: ${dup} is given twice`, { field: 'controlUrl' });
    this.urls = Object.freeze(normalized);
    this.states = normalized.map(() => ({ failures: 0, lastOk: null, lastError: null, lastErrorAt: null }));
  }

  /** The replica in use. */
  get current(): string {
    return this.urls[this.index] as string;
  }

  /** The replicas in the order to try them: the current one first, then the next ones. */
  order(): string[] {
    return this.urls.map((_, i) => this.urls[(this.index + i) % this.urls.length] as string);
  }

  /** `url` answered. */
  ok(url: string): void {
    const s = this.states[this.urls.indexOf(url)];
    if (s === undefined) return;
    s.failures = 0;
    s.lastOk = this.clock.now();
  }

  /**
   * `url` failed (refused, broke, did not answer in time, answered "unavailable"). If it is the
   * current replica, the next one becomes current; a failure of a replica already left behind
   * moves nothing. Returns the current replica afterwards.
   */
  failed(url: string, reason: string): string {
    const i = this.urls.indexOf(url);
    const s = this.states[i];
    if (s === undefined) return this.current;
    s.failures++;
    s.lastError = reason;
    s.lastErrorAt = this.clock.now();
    if (i === this.index && this.urls.length > 1) {
      this.index = (i + 1) % this.urls.length;
      this.emit('switch', url, this.current, reason);
    }
    return this.current;
  }

  /**
   * One call to the control plane, on the current replica and, when it fails, on each other one
   * in turn. `fn` rejecting (refused, reset, timed out) or an answer `unavailable` names moves on;
   * the first other answer is returned. When every replica failed: the last "unavailable" answer
   * if there was one, else a rejection naming what each replica did. `signal` aborted: no more
   * tries, and the replica is not blamed.
   */
  async call<T>(fn: (url: string) => Promise<T>, opts: { unavailable?: Unavailable<T>; signal?: AbortSignal } = {}): Promise<T> {
    const tried: string[] = [];
    let lastAnswer: { value: T } | null = null;
    let lastError: unknown = null;
    const aborted = () => opts.signal?.aborted === true;
    for (const url of this.order()) {
      if (aborted()) break;
      let answer: T;
      try {
        answer = await fn(url);
      } catch (e) {
        if (aborted()) throw e;
        const reason = describe(e);
        this.failed(url, reason);
        tried.push(`${url}: ${reason}`);
        lastError = e;
        continue;
      }
      const why = opts.unavailable?.(answer) ?? null;
      if (why === null) {
        this.ok(url);
        return answer;
      }
      this.failed(url, why);
      tried.push(`${url}: ${why}`);
      lastAnswer = { value: answer };
    }
    if (lastAnswer !== null) return lastAnswer.value;
    if (tried.length === 1 && lastError instanceof Error) throw lastError;
    throw new Error(`no control-plane replica answered (${tried.join('; ') || 'aborted'})`, { cause: lastError });
  }

  /** Every replica, which one is in use, and what each last did. */
  report(): ReplicaReport[] {
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return this.urls.map((url, i) => {
      const s = this.states[i] as ReplicaState;
      return { url, inUse: i === this.index, failures: s.failures, lastOk: iso(s.lastOk), lastError: s.lastError, lastErrorAt: iso(s.lastErrorAt) };
    });
  }
}

/** A failure in a few words: its errno code or message, and its cause's. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const code = (e as NodeJS.ErrnoException).code;
  const cause = e.cause instanceof Error ? ((e.cause as NodeJS.ErrnoException).code ?? e.cause.message) : null;
  if (e.name === 'TimeoutError') return 'no answer in time';
  return [code ?? e.message, cause].filter((x) => x !== null && x !== undefined).join(': ');
}
