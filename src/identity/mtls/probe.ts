/**
 * A data plane's active health-check probe (the I/O of the engine's ActiveChecker): an HTTP GET
 * or a TCP connect to the endpoint (discovery/probe.ts), over mTLS to a peer proxy when the caller
 * has a link to it: the caller's identity, the peer's checked as a request's would be. The proxy
 * and the SDK probe alike.
 */
import type { HealthCheck, Instance } from '../../api/types.js';
import type { Endpoint } from '../../discovery/endpoint.js';
import { probeHttp, probeTcp, type ProbeResult } from '../../discovery/probe.js';
import type { UpstreamTls } from './outbound.js';

/** How the caller reaches an endpoint: mTLS, plaintext (null), or refused (the reason's `message`). */
export type ProbeLink = (e: Endpoint) => UpstreamTls | { readonly message: string } | null;

/** The probe of a data plane whose links are `link` (null: plaintext to every endpoint). */
export function meshProbe(link: ProbeLink | null): (e: Endpoint, check: HealthCheck) => Promise<ProbeResult> {
  return (e, check) => {
    const inst = { address: e.address, port: e.port } as Instance;
    if (check.type !== 'http') return probeTcp(inst, check);
    const l = link?.(e) ?? null;
    if (l === null) return probeHttp(inst, check);
    if (!('options' in l)) return Promise.resolve({ ok: false, reason: l.message });
    return probeHttp(inst, check, {
      options: l.options(),
      verify: (s) => {
        const c = l.verify(s);
        return c.ok ? null : c.detail;
      },
    });
  };
}
