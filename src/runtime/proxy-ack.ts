/**
 * Before a replica gets SIGTERM, every proxy that could send it a request must have stopped
 * picking it: the control plane's announced proxies (GET /v1/proxies) are asked through their
 * admin server's /picks (open to other hosts: a mesh across hosts drains the same way) until the
 * replica is gone from their view of the service, and
 * the runtime's own proxy is watched in-process. Each has PROXY_ACK_CAP_MS to acknowledge; one
 * that does not (unreachable, cut off from the control plane) is named and the drain goes on.
 */
import { systemClock, type Clock } from '../core/clock.js';
import { sleep } from './readiness.js';

/** How long the drain waits for every proxy to stop picking a replica (docs/deployments.md). */
export const PROXY_ACK_CAP_MS = 10_000;
const POLL_MS = 50;

export interface ProxyAckOptions {
  /** The announced proxies (the control plane's GET /v1/proxies, through whichever replica answers). */
  proxies(): Promise<Array<{ id: string; admin: string }>>;
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

/** Whether the proxy whose admin server is at `admin` still picks endpoint `id` of `service`. */
async function stillPicks(admin: string, service: string, id: string, signal: AbortSignal): Promise<boolean> {
  const url = `http://${admin}/picks?service=${encodeURIComponent(service)}&id=${encodeURIComponent(id)}`;
  const res = await fetch(url, { signal });
  if (!res.ok) throw new Error(`${res.status} from ${url}`);
  return ((await res.json()) as { picks?: boolean }).picks !== false;
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
      others = (await o.proxies()).filter((p) => p.id !== o.local.id);
    } catch (e) {
      missing.push({ proxy: '(the control plane\'s list)', reason: `GET /v1/proxies failed: ${(e as Error).message}` });
    }
    const remote = async (p: { id: string; admin: string }) => {
      let last = 'no answer yet';
      while (!ctl.signal.aborted) {
        try {
          if (!(await stillPicks(p.admin, o.service, o.id, ctl.signal))) {
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
