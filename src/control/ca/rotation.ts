/**
 * Root rotation's decisions, without I/O: where a rotation stands (kept in the store under
 * `ca/rotation`), what each announced proxy trusts and holds, and whether a step may be taken.
 *
 *   none --add--> added --switch--> switched --remove--> none
 *
 * - `add` (from `none`): the bundle becomes [old, new]; issuing stays on the old intermediate.
 * - `switch` (from `added`): only when every announced proxy's workloads trust the new root;
 *   issuing moves to the new intermediate (proxies renew at once: their leaf's issuer is no longer
 *   the current one).
 * - `remove` (from `switched`): only when every announced proxy's leaves chain to the new root;
 *   the old root leaves the bundle.
 *
 * `force` skips the proxies' condition (never the order of the steps). docs/security.md#rotation.
 */
import type { ProxyTrust, RotationPhase, RotationStep, WorkloadTls } from '../../api/ca.js';
import type { KnownProxy } from '../proxies.js';

/** What the store keeps of a rotation under way (JSON under `ca/rotation`). */
export type StoredRotation =
  | {
      phase: 'added';
      /** The new authority: its issuer (with `rootPem`, the new root) and the root's key when the CA holds it ('' otherwise). */
      next: { certPem: string; keyPem: string; chainPem: string[]; rootPem: string; rootKeyPem: string };
      addedAt: number;
    }
  | {
      phase: 'switched';
      /** The old root, still in the bundle until `remove`. */
      oldRootPem: string;
      addedAt: number;
      switchedAt: number;
    };

/** The step that follows a phase. */
export function nextStep(phase: RotationPhase): RotationStep {
  return phase === 'none' ? 'add' : phase === 'added' ? 'switch' : 'remove';
}

/** One announced proxy as the rotation sees it; `newRoot`: the new root's fingerprint (null: no rotation). */
export function proxyTrust(p: KnownProxy, newRoot: string | null): ProxyTrust {
  const workloads = p.workloads.filter((w): w is typeof w & { tls: WorkloadTls } => w.tls !== null).map((w) => ({ name: w.name, service: w.service, ...w.tls }));
  return {
    proxy: p.id,
    lastSeen: new Date(p.lastSeen).toISOString(),
    workloads,
    trustsNew: newRoot === null ? null : workloads.every((w) => w.roots.includes(newRoot)),
    onNew: newRoot === null ? null : workloads.every((w) => w.leafRoot === newRoot),
  };
}

const short = (fp: string) => fp.slice(0, 16);

/**
 * Why `step` may not be taken now (null: it may). `forceable`: whether `force` would override it
 * (the proxies' condition), as opposed to a step out of order.
 */
export function stepRefusal(step: RotationStep, phase: RotationPhase, newRoot: string | null, proxies: readonly ProxyTrust[]): { message: string; forceable: boolean } | null {
  const expected = nextStep(phase);
  if (step !== expected) {
    const where =
      phase === 'none' ? 'no root rotation is under way' : phase === 'added' ? 'a new root was added and issuing is still on the old one' : 'issuing is on the new root and the old one is still trusted';
    return { message: `cannot ${step} now: ${where}; the next step is \`skein ca rotate --step ${expected}\``, forceable: false };
  }
  if (step === 'add' || newRoot === null) return null;
  const lagging: string[] = [];
  for (const p of proxies) {
    for (const w of p.workloads) {
      if (step === 'switch' && !w.roots.includes(newRoot)) lagging.push(`${p.proxy} (${w.name}: trusts ${w.roots.map(short).join(', ') || 'nothing'})`);
      if (step === 'remove' && w.leafRoot !== newRoot) lagging.push(`${p.proxy} (${w.name}: its leaf chains to ${short(w.leafRoot)})`);
    }
  }
  if (lagging.length === 0) return null;
  const what = step === 'switch' ? `do not trust the new root ${short(newRoot)} yet` : `still hold leaves of the old root (the new root is ${short(newRoot)})`;
  const shown = lagging.slice(0, 10).join('; ') + (lagging.length > 10 ? `; and ${lagging.length - 10} more` : '');
  return {
    message: `cannot ${step}: ${lagging.length} workload(s) of announced proxies ${what}: ${shown}. Proxies pick up the change within their poll interval and announce it; \`skein ca status\` shows them. --force ${step === 'switch' ? 'switches anyway (their peers will refuse the new leaves)' : 'removes it anyway (their leaves will be refused)'}`,
    forceable: true,
  };
}
