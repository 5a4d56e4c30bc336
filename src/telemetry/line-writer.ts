/**
 * Where the proxy's and the control plane's JSON-lines logs go (the access log, the audit log):
 * stdout or a file, appended to, through an asynchronous destination (pino's sonic-boom). A write
 * only appends to a buffer; the bytes go out after, so the request path never waits on the disk.
 */
import { closeSync, openSync } from 'node:fs';
import pino from 'pino';
import { SkeinError } from '../core/errors.js';

/** pino's asynchronous destination (sonic-boom). */
export type LineDestination = ReturnType<typeof pino.destination>;

export interface LineWriter {
  /** What a pino logger writes to (write through `open` guards: nothing after close). */
  readonly destination: LineDestination;
  /** False once closing: a line written then is dropped (a request that finishes during shutdown). */
  readonly open: boolean;
  /** Appends one line (with its newline). */
  write(line: string): void;
  /**
   * Resolves once every line written before is on its way to the disk (the file is fsynced and
   * closed; stdout stays open). sonic-boom's own `flush(cb)` calls back before a write in flight
   * has finished, so it cannot be what a close waits on.
   */
  close(): Promise<void>;
}

/**
 * `target`: "stdout" or a file path (appended to; created if missing; "off" is the caller's to
 * handle). `flag` names the option in the errors: an empty target is SKEIN_E_USAGE, a file that
 * cannot be opened for appending SKEIN_E_FILE naming the path, at once, not on the first write.
 */
export function openLineWriter(target: string, flag: string): LineWriter {
  if (target.trim() === '') throw new SkeinError('SKEIN_E_USAGE', `${flag}: give "stdout", a file path or "off"`, { field: flag });
  if (target !== 'stdout') {
    try {
      closeSync(openSync(target, 'a'));
    } catch (e) {
      throw new SkeinError('SKEIN_E_FILE', `${flag}: cannot write ${target}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: flag });
    }
  }
  const destination = pino.destination({ dest: target === 'stdout' ? 1 : target, sync: false });
  let closed: Promise<void> | null = null;
  return {
    destination,
    get open() {
      return closed === null;
    },
    write(line) {
      if (closed === null) destination.write(line);
    },
    close() {
      closed ??= new Promise((resolve) => {
        destination.once('close', () => resolve());
        // A failed fsync or close: nothing more can be done with the lines; the caller is stopping.
        destination.once('error', () => resolve());
        destination.end();
      });
      return closed;
    },
  };
}
