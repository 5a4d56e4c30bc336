/**
 * Where the admin token is kept on the control plane's host.
 *
 * - `<data-dir>/admin.token` (mode 0600): created at first start, read at every start after, so
 *   the admin token survives restarts. Deleting it and restarting makes a new one.
 * - The local copy, `<runtime dir>/control-<port>.token` (mode 0600 in a 0700 directory of the
 *   user's own: `$XDG_RUNTIME_DIR/skein`, else `<tmpdir>/skein-<uid>`), written at every start
 *   (also with `--data-dir none`, where it is the only copy) and removed at shutdown: the `skein`
 *   CLI of the same user on the same host finds it by the control plane's port, whatever its
 *   working directory and data dir. It is read only for a control plane on a loopback address.
 */
import { chmod, lstat, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_TOKEN_FILE, TOKEN_PATTERN, TOKEN_PREFIX } from '../../api/auth.js';
import { SkeinError } from '../../core/errors.js';
import { newToken } from './tokens.js';

/** Writes `text` to `path` (mode 0600) through a temporary file and a rename, synced. */
async function writeSecret(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** The data dir's admin token: read when the file exists (refused if others may read it), else created. */
export async function loadOrCreateAdminToken(dataDir: string): Promise<{ token: string; path: string; created: boolean }> {
  const path = join(dataDir, ADMIN_TOKEN_FILE);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  let text: string | null = null;
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      throw new SkeinError('SKEIN_E_FILE', `${path} may be read by other users (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): chmod 600 it, or delete it (and restart) for a new admin token`, { field: path });
    }
    text = (await readFile(path, 'utf8')).trim();
  } catch (e) {
    if (e instanceof SkeinError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new SkeinError('SKEIN_E_FILE', `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: path });
  }
  if (text !== null) {
    if (!TOKEN_PATTERN.test(text) || !text.startsWith(TOKEN_PREFIX.admin)) {
      throw new SkeinError('SKEIN_E_FILE', `${path} does not hold an admin token (${TOKEN_PREFIX.admin}<43 characters>): delete it (and restart) for a new one`, { field: path });
    }
    return { token: text, path, created: false };
  }
  const token = newToken('admin');
  await writeSecret(path, `${token}\n`);
  return { token, path, created: true };
}

/** The directory of this user's local token copies. */
export function localTokenDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_RUNTIME_DIR'];
  return xdg !== undefined && xdg !== '' ? join(xdg, 'skein') : join(tmpdir(), `skein-${process.getuid?.() ?? 'user'}`);
}

export const localTokenPath = (port: number, env: NodeJS.ProcessEnv = process.env): string => join(localTokenDir(env), `control-${port}.token`);

/** A directory that is ours alone: created 0700, or refused when someone else owns it or may read it. */
async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) throw new Error(`${dir} is not a directory of this user`);
  if ((st.mode & 0o077) !== 0) await chmod(dir, 0o700);
}

/** Writes the local copy for the control plane on `port`; returns its path. */
export async function writeLocalToken(port: number, token: string): Promise<string> {
  const path = localTokenPath(port);
  await privateDir(localTokenDir());
  await writeSecret(path, `${token}\n`);
  return path;
}

/** The local copy for the control plane on `port`, or null (none, or not a token). */
export async function readLocalToken(port: number, env: NodeJS.ProcessEnv = process.env): Promise<string | null> {
  try {
    const text = (await readFile(localTokenPath(port, env), 'utf8')).trim();
    return TOKEN_PATTERN.test(text) ? text : null;
  } catch {
    return null;
  }
}

/** Removes a local copy, if it still holds this token (a newer control plane on the port keeps its own). */
export async function removeLocalToken(path: string, token: string): Promise<void> {
  try {
    if ((await readFile(path, 'utf8')).trim() === token) await rm(path, { force: true });
  } catch {
    /* already gone */
  }
}
