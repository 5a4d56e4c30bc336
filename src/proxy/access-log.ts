/**
 * The proxy's access log: one JSON line per request a listener finished (answered by an app, by
 * the proxy itself, or cut short by the client), written by pino through the asynchronous
 * destination of src/telemetry/line-writer.ts, so the request path only builds a small object.
 * Off by default (`skein proxy --access-log stdout|FILE`).
 *
 * What a line holds is bounded and safe to keep: the path without its query string (queries
 * carry tokens), no header values, no bodies.
 */
import pino, { type Logger } from 'pino';
import { openLineWriter } from '../telemetry/line-writer.js';

export interface AccessEntry {
  readonly workload: string;
  readonly direction: 'inbound' | 'outbound';
  /** The client's address (the app, outbound; the calling proxy, inbound). */
  readonly client: string;
  /** Outbound: the calling workload's service; inbound: the caller's x-skein-caller, when sent. */
  readonly caller: string | null;
  readonly method: string;
  /** Without the query string. */
  readonly path: string;
  readonly service: string | null;
  readonly route: string | null;
  /** 0: no response (the client went away). */
  readonly status: number;
  readonly durationMs: number;
  /** The endpoint of the last attempt: instance id and address. */
  readonly upstream: string | null;
  readonly attempts: number;
  /** The proxy's own error code, when it answered itself. */
  readonly error: string | null;
  readonly requestId: string | null;
}

/**
 * The line of an opaque TCP stream (src/proxy/tcp), written when it closes: the fields of a
 * request's line that apply (`method` "TCP", `path` ""; `status` 200 once it reached the app, else
 * the status of its `error`'s code, 0 when the client left first; `durationMs` its life from accept
 * to close), and what only a stream has: the time it took to reach the app and the bytes each way.
 */
export interface StreamAccessEntry extends Omit<AccessEntry, 'method' | 'path' | 'requestId'> {
  readonly method: 'TCP';
  readonly path: '';
  /** ms from accept to the app's connection (null: it never got one). */
  readonly connectMs: number | null;
  /** Bytes received from the client (sent on to the upstream). */
  readonly receivedBytes: number;
  /** Bytes sent to the client (from the upstream). */
  readonly sentBytes: number;
}

export interface AccessLog {
  write(e: AccessEntry | StreamAccessEntry): void;
  /** Resolves once every entry written before is written (later ones are dropped). */
  close(): Promise<void>;
}

/** `stdout` or a file path (appended to; created if missing). Throws SKEIN_E_FILE naming the path when it cannot be written. */
export function openAccessLog(target: string): AccessLog {
  const out = openLineWriter(target, '--access-log');
  const log: Logger = pino(
    {
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: () => ({ msg: 'access' }) },
    },
    out.destination,
  );
  return {
    write(e) {
      if (out.open) log.info(e);
    },
    close: () => out.close(),
  };
}

/** The path of a request target without its query string or fragment. */
export function pathOnly(target: string): string {
  let end = target.length;
  const q = target.indexOf('?');
  if (q >= 0) end = q;
  const h = target.indexOf('#');
  if (h >= 0 && h < end) end = h;
  return end === target.length ? target : target.slice(0, end);
}
