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
 *
 * With several control-plane replicas, a step taken through one reaches the others as changed
 * `ca/` keys (the store's watch): `caChangeBetween` names the step a replica sees in them.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { certFingerprint, type ProxyTrust, type RotationPhase, type RotationStep, type WorkloadTls } from '../../api/ca.js';
import { SkeinError } from '../../core/errors.js';
import { check } from '../../api/validate.js';
import type { KnownProxy } from '../proxies.js';

/** A PEM field of a stored CA record. */
export const StoredPem = Type.String({ minLength: 1 });
const Pem = StoredPem;
const Ms = Type.Number({ minimum: 0 });
const StoredRotationSchema = Type.Union([
  Type.Object(
    {
      phase: Type.Literal('added'),
      /** The new authority: its issuer (with `rootPem`, the new root) and the root's key when the CA holds it ('' otherwise). */
      next: Type.Object({ certPem: Pem, keyPem: Pem, chainPem: Type.Array(Pem), rootPem: Pem, rootKeyPem: Type.String() }, { additionalProperties: false }),
      addedAt: Ms,
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      phase: Type.Literal('switched'),
      /** The old root, still in the bundle until `remove`. */
      oldRootPem: Pem,
      addedAt: Ms,
      switchedAt: Ms,
    },
    { additionalProperties: false },
  ),
]);

/** What the store keeps of a rotation under way (JSON under `ca/rotation`). */
export type StoredRotation = Static<typeof StoredRotationSchema>;

/** Parses the JSON of a CA record stored under `key` (`ca/root`, ...) against `schema`; SKEIN_E_BAD_CA naming the key and what is wrong. */
export function parseStored<S extends TSchema>(key: string, schema: S, raw: string): Static<S> {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CA', `${key} in the store is not JSON: ${(e as Error).message}`, { field: key });
  }
  const first = check(schema, v)[0];
  if (first !== undefined) throw new SkeinError('SKEIN_E_BAD_CA', `${key} in the store: ${first.field} ${first.message}`, { field: key });
  return v as Static<S>;
}

/** Parses a stored `ca/rotation`, and reads the certificates it holds. */
export function parseStoredRotation(raw: string): StoredRotation {
  const r = parseStored('ca/rotation', StoredRotationSchema, raw);
  try {
    for (const pem of r.phase === 'added' ? [r.next.certPem, r.next.rootPem] : [r.oldRootPem]) certFingerprint(pem);
  } catch (e) {
    throw new SkeinError('SKEIN_E_BAD_CA', `ca/rotation in the store holds a certificate that cannot be read: ${(e as Error).message}`, { field: 'ca/rotation', cause: e });
  }
  return r;
}

/** A change of the trust bundle or the issuer: a rotation step, or the intermediate replaced under the same root (`renew-issuer`). */
export type CaChangeStep = RotationStep | 'renew-issuer';

/** What a change is judged by: the issuer (its serial, the PEM of its root) and the rotation as stored. */
export interface CaState {
  readonly issuerSerial: string;
  readonly issuerRootPem: string;
  readonly rotation: StoredRotation | null;
}

const sameCert = (a: string, b: string) => a.trim() === b.trim() || certFingerprint(a) === certFingerprint(b);

/**
 * Whether a state read from the store can be what the CA holds: its rotation agrees with its
 * issuer (after `add` the new root is not the issuer's, after `switch` the old one is not). A step
 * that writes several keys reaches another replica key by key; in between the keys disagree.
 */
export function consistentState(s: CaState): boolean {
  const r = s.rotation;
  if (r === null) return true;
  return r.phase === 'added' ? !sameCert(r.next.rootPem, s.issuerRootPem) : !sameCert(r.oldRootPem, s.issuerRootPem);
}

/**
 * The step that leads from `before` to `after` (null: nothing a subscriber would see changed).
 * Issuing under another root is `switch` whatever else changed (a replica that missed steps): the
 * mTLS listener's certificate must then be issued again.
 */
export function caChangeBetween(before: CaState, after: CaState): CaChangeStep | null {
  if (!sameCert(before.issuerRootPem, after.issuerRootPem)) return 'switch';
  const b = before.rotation;
  const a = after.rotation;
  if (a === null) return b === null ? (before.issuerSerial === after.issuerSerial ? null : 'renew-issuer') : 'remove';
  if (a.phase === 'added') return b?.phase === 'added' && sameCert(b.next.rootPem, a.next.rootPem) ? (before.issuerSerial === after.issuerSerial ? null : 'renew-issuer') : 'add';
  if (b?.phase === 'switched' && sameCert(b.oldRootPem, a.oldRootPem)) return before.issuerSerial === after.issuerSerial ? null : 'renew-issuer';
  return 'switch';
}

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
