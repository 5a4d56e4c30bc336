/**
 * The Store persists the registry. The registry keeps everything in memory; the store only has
 * to make changes durable before they are acknowledged, and give them back at start-up.
 */
import { SkeinError } from '../../core/errors.js';

export type StoreOp =
  /**
   * `expect`: the write holds only while the key still has this value, or, null, does not exist
   * (a one-use token spent, or a mesh CA created, by two control-plane replicas at once: only one
   * wins). The etcd store compares in its transaction, the memory store before it writes; both
   * reject with SKEIN_E_CONCURRENT_CHANGE. The embedded store has one writer, this process, whose
   * callers check before they write.
   */
  | { type: 'put'; key: string; value: string; expect?: string | null }
  | { type: 'del'; key: string };

export interface Store {
  /** Every stored key/value, in key order. */
  load(): Promise<Array<[string, string]>>;
  /** Applies the ops atomically; resolves once they are durable. Calls are applied in order. */
  commit(ops: StoreOp[]): Promise<void>;
  close(): Promise<void>;
  readonly kind: string;
}

/** A store that keeps nothing across restarts (for unit tests and `--data-dir none`). */
export class MemoryStore implements Store {
  readonly kind = 'memory';
  private readonly data = new Map<string, string>();

  async load(): Promise<Array<[string, string]>> {
    return [...this.data.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  async commit(ops: StoreOp[]): Promise<void> {
    for (const op of ops) {
      if (op.type !== 'put' || op.expect === undefined) continue;
      const now = this.data.get(op.key);
      if (op.expect === null ? now !== undefined : now !== op.expect) throw new SkeinError('SKEIN_E_CONCURRENT_CHANGE', `${op.key} changed since it was read`);
    }
    for (const op of ops) {
      if (op.type === 'put') this.data.set(op.key, op.value);
      else this.data.delete(op.key);
    }
  }

  async close(): Promise<void> {}
}
