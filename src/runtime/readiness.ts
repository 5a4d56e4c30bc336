/**
 * Readiness of a freshly started process: probe it (HTTP GET expecting 2xx/3xx, or a TCP
 * connect) every interval until one probe succeeds or the deadline passes. Timers run on the
 * injected Clock; the probe itself is injectable so the loop is tested without sockets.
 */
import { request } from 'node:http';
import { connect } from 'node:net';
import type { Clock } from '../core/clock.js';

export interface ProbeTarget {
  readonly type: 'http' | 'tcp';
  readonly host: string;
  readonly port: number;
  /** http only. */
  readonly path: string;
}

export interface ProbeResult {
  readonly ok: boolean;
  /** "HTTP 200 from GET /health", "connect ECONNREFUSED", ... */
  readonly reason: string;
}

/** One probe attempt: resolves (never rejects) within about `timeoutMs`, or at once when aborted. */
export type ReadinessProbe = (target: ProbeTarget, timeoutMs: number, clock: Clock, signal?: AbortSignal) => Promise<ProbeResult>;

export interface ReadinessTiming {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly initialDelayMs: number;
  readonly deadlineMs: number;
}

export const probeOnce: ReadinessProbe = (target, timeoutMs, clock, signal) =>
  new Promise<ProbeResult>((resolve) => {
    let settled = false;
    let cleanup: () => void = () => undefined;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      signal?.removeEventListener('abort', onAbort);
      cleanup();
      resolve(r);
    };
    const onAbort = () => done({ ok: false, reason: 'aborted' });
    const what = target.type === 'http' ? `GET ${target.path}` : `TCP connect to port ${target.port}`;
    const timer = clock.setTimeout(() => done({ ok: false, reason: `${what} timed out after ${timeoutMs}ms` }), timeoutMs);
    if (signal?.aborted) return done({ ok: false, reason: 'aborted' });
    signal?.addEventListener('abort', onAbort, { once: true });

    if (target.type === 'tcp') {
      const sock = connect({ host: target.host, port: target.port });
      cleanup = () => sock.destroy();
      sock.once('connect', () => done({ ok: true, reason: `${what} succeeded` }));
      sock.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, reason: `${what}: ${e.code ?? e.message}` }));
      return;
    }
    const req = request(
      { host: target.host, port: target.port, method: 'GET', path: target.path, agent: false, headers: { 'user-agent': 'skein-readiness', connection: 'close' } },
      (res) => {
        const code = res.statusCode ?? 0;
        res.resume();
        const ok = code >= 200 && code < 400;
        done({ ok, reason: `HTTP ${code} from ${what}${ok ? '' : ' (expected 2xx or 3xx)'}` });
      },
    );
    cleanup = () => req.destroy();
    req.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, reason: `${what}: ${e.code ?? e.message}` }));
    req.end();
  });

/** Waits `ms` on `clock`; resolves early (never rejects) when `signal` aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const finish = () => {
      t.cancel();
      signal?.removeEventListener('abort', finish);
      resolve();
    };
    const t = clock.setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
  });
}

export type ReadinessOutcome = { readonly ready: true; readonly reason: string; readonly probes: number } | { readonly ready: false; readonly reason: string; readonly probes: number };

/**
 * Waits `initialDelayMs`, then probes every `intervalMs` (counted from the start of each probe)
 * until one succeeds. Gives up once `deadlineMs` (from the call) has passed: then `ready` is
 * false and `reason` carries the last probe's reason. When `signal` aborts, resolves at once with
 * ready false and reason "aborted".
 */
export async function waitUntilReady(
  target: ProbeTarget,
  timing: ReadinessTiming,
  opts: { clock: Clock; signal: AbortSignal; probe?: ReadinessProbe },
): Promise<ReadinessOutcome> {
  const { clock, signal } = opts;
  const probe = opts.probe ?? probeOnce;
  const deadline = clock.now() + timing.deadlineMs;
  let probes = 0;
  let last = 'no probe ran before the deadline';
  if (timing.initialDelayMs > 0) await sleep(clock, timing.initialDelayMs, signal);
  for (;;) {
    if (signal.aborted) return { ready: false, reason: 'aborted', probes };
    const startedAt = clock.now();
    if (startedAt >= deadline) return { ready: false, reason: `not ready within ${timing.deadlineMs}ms: ${last}`, probes };
    const timeout = Math.max(1, Math.min(timing.timeoutMs, deadline - startedAt));
    const r = await probe(target, timeout, clock, signal);
    probes++;
    if (signal.aborted) return { ready: false, reason: 'aborted', probes };
    if (r.ok) return { ready: true, reason: r.reason, probes };
    last = r.reason;
    const wait = Math.min(Math.max(0, startedAt + timing.intervalMs - clock.now()), Math.max(0, deadline - clock.now()));
    if (wait > 0) await sleep(clock, wait, signal);
  }
}
