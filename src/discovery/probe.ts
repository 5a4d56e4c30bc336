/** The probes behind HTTP and TCP health checks (the control plane's, and a proxy's own active checks): one attempt each, bounded by the check's timeout. */
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import type { HealthCheck, Instance } from '../api/types.js';

export interface ProbeResult {
  ok: boolean;
  /** Human-readable outcome, kept as the status reason: "HTTP 200 from GET /health", "connect ECONNREFUSED". */
  reason: string;
}

export type Probe = (instance: Instance, check: HealthCheck) => Promise<ProbeResult>;

export const probe: Probe = (instance, check) =>
  check.type === 'http' ? probeHttp(instance, check) : probeTcp(instance, check);

/** A probe over TLS (a proxy's active check of a peer proxy): the connection's options, and its check of the peer (null: accepted, else why not). */
export interface ProbeTls {
  readonly options: ConnectionOptions;
  verify(socket: TLSSocket): string | null;
}

export function probeHttp(instance: Instance, check: HealthCheck, tls: ProbeTls | null = null): Promise<ProbeResult> {
  const port = check.port ?? instance.port;
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = (tls === null ? request : httpsRequest)(
      {
        host: instance.address,
        port,
        method: check.method,
        path: check.path,
        agent: false,
        ...(tls === null ? {} : tls.options),
        headers: { 'user-agent': 'skein-health-check', connection: 'close' },
      },
      (res) => {
        const code = res.statusCode ?? 0;
        res.resume();
        const ok = code >= check.expectedStatus.min && code <= check.expectedStatus.max;
        done({ ok, reason: `HTTP ${code} from ${check.method} ${check.path}` + (ok ? '' : ` (expected ${check.expectedStatus.min}-${check.expectedStatus.max})`) });
      },
    );
    const timer = setTimeout(() => done({ ok: false, reason: `${check.method} ${check.path} timed out after ${check.timeoutMs}ms` }), check.timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, reason: `${check.method} ${check.path}: ${e.code ?? e.message}` }));
    if (tls !== null) {
      req.once('socket', (s) => {
        (s as TLSSocket).once('secureConnect', () => {
          const refused = tls.verify(s as TLSSocket);
          if (refused !== null) done({ ok: false, reason: `${check.method} ${check.path}: mTLS refused: ${refused}` });
        });
      });
    }
    req.end();
  });
}

export function probeTcp(instance: Instance, check: HealthCheck): Promise<ProbeResult> {
  const port = check.port ?? instance.port;
  return new Promise((resolve) => {
    let settled = false;
    const sock = connect({ host: instance.address, port });
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, reason: `TCP connect to port ${port} timed out after ${check.timeoutMs}ms` }), check.timeoutMs);
    sock.once('connect', () => done({ ok: true, reason: `TCP connect to port ${port} succeeded` }));
    sock.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, reason: `TCP connect to port ${port}: ${e.code ?? e.message}` }));
  });
}
