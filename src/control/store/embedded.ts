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

/**
 * Test only: `SKEIN_TEST_STORE_WRITE_DELAY_MS` holds every batch that long before it is written, so
 * that a test can kill the process between a commit and its write and see that nothing was
 * acknowledged before it was on disk (test/durability.test.ts). Read once per store, when it
 * opens; unset (0) in normal use, where a batch waits only for the commits of its tick.
 */
function testWriteDelayMs(): number {
  const ms = Number(process.env['SKEIN_TEST_STORE_WRITE_DELAY_MS'] ?? 0);
  if (!Number.isFinite(ms) || ms <= 0) return 0;
  // A stray variable must not quietly slow every write of a real control plane: said, and capped.
  const held = Math.min(ms, MAX_TEST_WRITE_DELAY_MS);
  process.emitWarning(`SKEIN_TEST_STORE_WRITE_DELAY_MS is set: every write to the store is held ${held} ms (a test setting; unset it)`);
  return held;
}

const MAX_TEST_WRITE_DELAY_MS = 5_000;

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
  private readonly writeDelayMs = testWriteDelayMs();
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
    const write = () => {
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
    };
    if (this.writeDelayMs > 0) setTimeout(write, this.writeDelayMs);
    else setImmediate(write);
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
