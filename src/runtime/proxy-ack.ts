/**
 * Before a replica gets SIGTERM, every proxy that could send it a request must have stopped
 * picking it: the control plane's announced proxies (GET /v1/proxies) are asked through their
 * admin server's /debug/endpoints until the replica is gone from their view of the service, and
 * the runtime's own proxy is watched in-process. Each has PROXY_ACK_CAP_MS to acknowledge; one
 * that does not (unreachable, cut off from the control plane) is named and the drain goes on.
 */
import { systemClock, type Clock } from '../core/clock.js';
import { sleep } from './readiness.js';

/** How long the drain waits for every proxy to stop picking a replica (docs/deployments.md). */
export const PROXY_ACK_CAP_MS = 10_000;
const POLL_MS = 50;

export interface ProxyAckOptions {
  readonly controlUrl: string;
  readonly token?: string | undefined;
  readonly service: string;
  /** The replica's instance id. */
  readonly id: string;
  /** The runtime's own proxy: its id (skipped in the list) and how it says the endpoint is gone. */
  readonly local: { readonly id: string; whenGone(timeoutMs: number): Promise<boolean> };
  readonly capMs?: number;
  readonly clock?: Clock;
}

export interface ProxyAck {
  /** Proxy ids that acknowledged, the runtime's own first. */
  readonly acknowledged: string[];
  /** Proxy ids that did not within the cap, with why. */
  readonly missing: Array<{ proxy: string; reason: string }>;
  readonly waitedMs: number;
}

async function getJson(url: string, token: string | undefined, signal: AbortSignal): Promise<unknown> {
  const res = await fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal });
  if (!res.ok) throw new Error(`${res.status} from ${url}`);
  return res.json();
}

/** Whether a proxy's /debug/endpoints still lists endpoint `id` of `service`. */
function stillRoutes(debug: unknown, service: string, id: string): boolean {
  const services = (debug as { services?: Record<string, { endpoints?: Array<{ id?: string }> }> }).services ?? {};
  return (services[service]?.endpoints ?? []).some((e) => e.id === id);
}

/** Waits until every known proxy stopped picking the replica, or the cap. */
export async function awaitProxyAck(o: ProxyAckOptions): Promise<ProxyAck> {
  const clock = o.clock ?? systemClock;
  const cap = o.capMs ?? PROXY_ACK_CAP_MS;
  const start = clock.now();
  const ctl = new AbortController();
  const timer = clock.setTimeout(() => ctl.abort(), cap);
  const acknowledged: string[] = [];
  const missing: Array<{ proxy: string; reason: string }> = [];
  try {
    let others: Array<{ id: string; admin: string }> = [];
    try {
      const list = (await getJson(`${o.controlUrl}/v1/proxies`, o.token, ctl.signal)) as { proxies?: Array<{ id: string; admin: string }> };
      others = (list.proxies ?? []).filter((p) => p.id !== o.local.id);
    } catch (e) {
      missing.push({ proxy: '(the control plane\'s list)', reason: `GET /v1/proxies failed: ${(e as Error).message}` });
    }
    const remote = async (p: { id: string; admin: string }) => {
      let last = 'no answer yet';
      while (!ctl.signal.aborted) {
        try {
          if (!stillRoutes(await getJson(`http://${p.admin}/debug/endpoints`, undefined, ctl.signal), o.service, o.id)) {
            acknowledged.push(p.id);
            return;
          }
          last = 'still lists it';
        } catch (e) {
          last = (e as Error).message;
        }
        await sleep(clock, POLL_MS, ctl.signal);
      }
      missing.push({ proxy: p.id, reason: `${last} after ${cap} ms` });
    };
    const local = async () => {
      if (await o.local.whenGone(cap)) acknowledged.unshift(o.local.id);
      else missing.unshift({ proxy: o.local.id, reason: `still routes to it after ${cap} ms` });
    };
    await Promise.all([local(), ...others.map(remote)]);
  } finally {
    timer.cancel();
  }
  return { acknowledged, missing, waitedMs: clock.now() - start };
}
