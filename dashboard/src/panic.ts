/**
 * Which services are in panic mode now, from the mesh events: a proxy's `panic` event with
 * `state: "entered"` puts the service in panic as that proxy sees it, `"left"` takes it out, and a
 * proxy that restarted forgets its panics (it starts afresh and would say so again). A service is
 * in panic when at least one proxy has it so (docs/traffic.md#the-panic-threshold).
 */
import type { MeshEvent } from './api';

/** The event types this reads: what the dashboard fetches apart so that the feed's churn does not push them out. */
export const PANIC_EVENT_TYPES = ['panic', 'proxy'] as const;

/** By service: the `entered` events of the proxies that have it in panic now (oldest first). */
export function panicking(events: readonly MeshEvent[]): Map<string, MeshEvent[]> {
  const byProxy = new Map<string, Map<string, MeshEvent>>();
  for (const e of events) {
    const proxy = typeof e['proxy'] === 'string' ? e['proxy'] : '';
    if (e.type === 'proxy' && e['change'] === 'restart') byProxy.delete(proxy);
    if (e.type !== 'panic' || e.service === null) continue;
    let m = byProxy.get(proxy);
    if (m === undefined) byProxy.set(proxy, (m = new Map()));
    if (e['state'] === 'entered') m.set(e.service, e);
    else m.delete(e.service);
  }
  const out = new Map<string, MeshEvent[]>();
  for (const m of byProxy.values()) for (const [service, e] of m) out.set(service, [...(out.get(service) ?? []), e]);
  return out;
}
