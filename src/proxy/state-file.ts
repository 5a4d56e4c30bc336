/**
 * Static stability: the proxy's last-known state in one file (`--state-dir DIR`, format in
 * src/api/proxy-state.ts). `StateWriter` writes it after changes (debounced; to a temporary file,
 * fsynced, renamed over the old one, mode 0600), `readState` reads and checks it at start:
 * a file that is not JSON, of another format, of another mesh (none of its control-plane URLs is
 * given to this proxy) or older than --state-max-age is refused with the reason, never half used.
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PROXY_STATE_FILE, PROXY_STATE_FORMAT, type ProxyStateFile } from '../api/proxy-state.js';
import type { Clock, TimerHandle } from '../core/clock.js';
import { formatDuration } from '../core/duration.js';
import { SkeinError } from '../core/errors.js';
import { parseWatchMessage } from '../discovery/watch-client.js';

export { PROXY_STATE_FILE, PROXY_STATE_FORMAT, type ProxyStateFile };

/** The state file's path in a --state-dir. */
export const statePath = (dir: string) => join(dir, PROXY_STATE_FILE);

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

function bad(path: string, what: string, cause?: unknown): SkeinError {
  return new SkeinError('SKEIN_E_PROXY_STATE', `the proxy state file ${path} ${what}`, { field: 'state', ...(cause === undefined ? {} : { cause }) });
}

/** Checks the text of a state file; throws SKEIN_E_PROXY_STATE naming the file and what is wrong. */
export function parseState(text: string, path: string): ProxyStateFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(path, `is corrupt: not JSON (${(e as Error).message})`, e);
  }
  if (!isObj(v)) throw bad(path, 'is corrupt: not a JSON object');
  if (v['format'] !== PROXY_STATE_FORMAT) throw bad(path, `is not a proxy state of this version: format ${JSON.stringify(v['format'])}, expected "${PROXY_STATE_FORMAT}"`);
  if (typeof v['savedAt'] !== 'string' || Number.isNaN(Date.parse(v['savedAt']))) throw bad(path, 'is corrupt: "savedAt" is not a time');
  if (!isStrings(v['control']) || v['control'].length === 0) throw bad(path, 'is corrupt: "control" is not a list of URLs');
  let watch;
  try {
    watch = parseWatchMessage(JSON.stringify(v['watch'] ?? null));
  } catch (e) {
    throw bad(path, `is corrupt: "watch" ${(e as Error).message}`, e);
  }
  if (watch === null || watch.type !== 'snapshot' || watch.service !== null) throw bad(path, 'is corrupt: "watch" is not a snapshot of every service');
  const tls = v['tls'];
  if (tls !== null) {
    const creds = isObj(tls) ? tls['credentials'] : undefined;
    const ok =
      isObj(tls) &&
      isObj(tls['ca']) &&
      typeof tls['ca']['trustDomain'] === 'string' &&
      Array.isArray(creds) &&
      creds.every((c: unknown) => isObj(c) && typeof c['service'] === 'string' && typeof c['keyPem'] === 'string' && typeof c['certPem'] === 'string' && isStrings(c['chainPem']) && isStrings(c['roots']));
    if (!ok) throw bad(path, 'is corrupt: "tls" is neither null nor {ca, credentials}');
  }
  return v as unknown as ProxyStateFile;
}

/**
 * Why a (well-formed) state must not be served, or null: it came from control planes this proxy is
 * not given (another mesh), or it is older than `maxAgeMs`.
 */
export function stateRefusal(state: ProxyStateFile, o: { control: readonly string[]; now: number; maxAgeMs: number; path: string }): string | null {
  if (!state.control.some((u) => o.control.includes(u))) {
    return `the proxy state file ${o.path} is of another mesh: it was saved from the control plane at ${state.control.join(', ')}, and this proxy is given ${o.control.join(', ')}`;
  }
  const age = o.now - Date.parse(state.savedAt);
  if (age > o.maxAgeMs) return `the proxy state file ${o.path} is too old to serve: saved at ${state.savedAt}, ${(age / 3_600_000).toFixed(1)} h ago, more than --state-max-age ${formatDuration(o.maxAgeMs)}`;
  return null;
}

/** What reading a --state-dir found. */
export type LoadedState = { readonly kind: 'none' } | { readonly kind: 'refused'; readonly reason: string } | { readonly kind: 'ok'; readonly state: ProxyStateFile };

/** Reads and checks the state file of `dir` (none: no file yet). Never throws for the file's content: a refusal says why. */
export async function readState(dir: string, o: { control: readonly string[]; now: number; maxAgeMs: number }): Promise<LoadedState> {
  const path = statePath(dir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    return { kind: 'refused', reason: `the proxy state file ${path} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  let state: ProxyStateFile;
  try {
    state = parseState(text, path);
  } catch (e) {
    return { kind: 'refused', reason: (e as Error).message };
  }
  const reason = stateRefusal(state, { ...o, path });
  return reason === null ? { kind: 'ok', state } : { kind: 'refused', reason };
}

/** Writes the state atomically: a temporary file in the same directory (0600), fsynced, renamed over the old one. */
export async function writeState(dir: string, state: ProxyStateFile): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = statePath(dir);
  const tmp = `${path}.${process.pid}.tmp`;
  const f = await open(tmp, 'w', 0o600);
  try {
    await f.writeFile(JSON.stringify(state));
    await f.sync();
  } finally {
    await f.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export interface StateWriterOptions {
  readonly dir: string;
  readonly clock: Clock;
  readonly debounceMs: number;
  /** The state to write now (null: nothing worth writing yet). */
  readonly collect: () => ProxyStateFile | null;
  readonly onError?: (e: Error) => void;
  readonly onWritten?: (state: ProxyStateFile) => void;
}

/** Writes the state after changes: at most one write per `debounceMs`, the last change always written, never two writes at once. */
export class StateWriter {
  private timer: TimerHandle | null = null;
  private writing: Promise<void> | null = null;
  private dirty = false;
  private stopped = false;

  constructor(private readonly o: StateWriterOptions) {}

  /** Something changed: write within `debounceMs`. */
  changed(): void {
    if (this.stopped) return;
    this.dirty = true;
    if (this.timer === null && this.writing === null) this.timer = this.o.clock.setTimeout(() => void this.flush(), this.o.debounceMs);
  }

  /** Writes now if anything changed (waits for a write under way first). */
  async flush(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    while (this.writing !== null) await this.writing;
    if (!this.dirty) return;
    this.dirty = false;
    const state = this.o.collect();
    if (state === null) return;
    this.writing = writeState(this.o.dir, state).then(
      () => this.o.onWritten?.(state),
      (e: unknown) => this.o.onError?.(e as Error),
    );
    try {
      await this.writing;
    } finally {
      this.writing = null;
    }
    // Changes that came during the write: the next one, after the debounce.
    if (this.dirty && !this.stopped && this.timer === null) this.timer = this.o.clock.setTimeout(() => void this.flush(), this.o.debounceMs);
  }

  /** Writes what is pending, and no more after. */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
  }
}
