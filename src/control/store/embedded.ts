/**
 * The embedded store: LevelDB (classic-level) under the data dir, written with group commit.
 * Commits that arrive while a batch is being synced are gathered into the next batch, which is
 * written with one fsync (`sync: true`); each commit's promise resolves only after its batch is
 * on disk, so an acknowledged write survives `kill -9` and power loss.
 */
import { mkdir } from 'node:fs/promises';
import { ClassicLevel } from 'classic-level';
import { SkeinError } from '../../core/errors.js';
import type { Store, StoreOp } from './store.js';

interface Pending {
  ops: StoreOp[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class EmbeddedStore implements Store {
  readonly kind = 'embedded';
  private readonly db: ClassicLevel<string, string>;
  private queue: Pending[] = [];
  private writing = false;
  private closed = false;
  /** Number of fsynced batches and of commits they carried (for metrics and benchmarks). */
  batches = 0;
  commits = 0;

  private constructor(readonly dir: string) {
    this.db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  }

  static async open(dir: string): Promise<EmbeddedStore> {
    await mkdir(dir, { recursive: true });
    const s = new EmbeddedStore(dir);
    try {
      await s.db.open();
    } catch (e) {
      const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message;
      const locked = /lock/i.test(cause);
      throw new SkeinError(
        'SKEIN_E_STORE',
        locked ? `data dir ${dir} is in use by another control plane` : `cannot open the store in ${dir}: ${cause}`,
        { cause: e },
      );
    }
    return s;
  }

  async load(): Promise<Array<[string, string]>> {
    const out: Array<[string, string]> = [];
    for await (const [k, v] of this.db.iterator()) out.push([k, v]);
    return out;
  }

  commit(ops: StoreOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new SkeinError('SKEIN_E_STORE', 'the store is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, resolve, reject });
      if (!this.writing) this.flush();
    });
  }

  private flush(): void {
    this.writing = true;
    // Let the commits of the current tick join the batch.
    setImmediate(() => {
      const batch = this.queue;
      this.queue = [];
      const ops = batch.flatMap((p) => p.ops);
      this.db.batch(ops, { sync: true }).then(
        () => {
          this.batches++;
          this.commits += batch.length;
          for (const p of batch) p.resolve();
          this.next();
        },
        (e: unknown) => {
          const err = new SkeinError('SKEIN_E_STORE', `store write failed: ${(e as Error).message}`, { cause: e });
          for (const p of batch) p.reject(err);
          this.next();
        },
      );
    });
  }

  private next(): void {
    if (this.queue.length > 0) this.flush();
    else this.writing = false;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (this.writing) await new Promise((r) => setImmediate(r));
    this.closed = true;
    await this.db.close();
  }
}
