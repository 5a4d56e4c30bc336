/**
 * A service's revision history in `skein up`: the last REVISION_HISTORY_LIMIT revisions, in
 * memory only (a restarted `skein up` starts again at revision 1 from its file). As in
 * Kubernetes, rolling out a revision that is in the history (an undo, an automatic rollback, a
 * file changed back) moves it to the top with the next number: numbers only grow.
 */
import { REVISION_HISTORY_LIMIT, revisionHash, revisionSpec, type MeshService, type RevisionSpec } from '../api/mesh.js';
import { SkeinError } from '../core/errors.js';

export interface Revision {
  readonly number: number;
  readonly hash: string;
  /** When it was recorded (ms since the epoch). */
  readonly time: number;
  /** Why: "skein up", "apply: version, env.COLOR", "undo to revision 2", "rollback: progress deadline exceeded". */
  readonly cause: string;
  /** The revision fields the replicas of this revision are started and registered with. */
  readonly spec: RevisionSpec;
}

export class RevisionHistory {
  private readonly entries: Revision[] = [];
  private last = 0;

  constructor(private readonly limit = REVISION_HISTORY_LIMIT) {}

  /** Records `svc`'s revision as the newest (moving it up when its hash is in the history). */
  record(svc: RevisionSpec, cause: string, time: number): Revision {
    const hash = revisionHash(svc);
    const i = this.entries.findIndex((e) => e.hash === hash);
    if (i >= 0) this.entries.splice(i, 1);
    const r: Revision = Object.freeze({ number: ++this.last, hash, time, cause, spec: Object.freeze(revisionSpec(svc)) });
    this.entries.push(r);
    if (this.entries.length > this.limit) this.entries.splice(0, this.entries.length - this.limit);
    return r;
  }

  /** Oldest first. */
  list(): readonly Revision[] {
    return [...this.entries];
  }

  get latest(): Revision {
    return this.entries[this.entries.length - 1] as Revision;
  }

  byHash(hash: string): Revision | undefined {
    return this.entries.find((e) => e.hash === hash);
  }

  /** Revision `n`, or (no n) the one before the latest; a clear error naming `toRevision` otherwise. */
  undoTarget(service: string, n?: number): Revision {
    if (n === undefined) {
      const prev = this.entries[this.entries.length - 2];
      if (prev === undefined) throw new SkeinError('SKEIN_E_NOT_FOUND', `service "${service}" has no revision before ${this.latest.number} to go back to`, { field: 'toRevision' });
      return prev;
    }
    const r = this.entries.find((e) => e.number === n);
    if (r === undefined) {
      const have = this.entries.map((e) => e.number).join(', ');
      throw new SkeinError('SKEIN_E_NOT_FOUND', `service "${service}" has no revision ${n} (it keeps the last ${this.limit}: ${have})`, { field: 'toRevision' });
    }
    return r;
  }
}

/** The service as revision `r` runs it: its revision fields over the service's current spec. */
export function withRevision(svc: MeshService, r: Revision): MeshService {
  return Object.freeze({ ...svc, ...r.spec });
}
