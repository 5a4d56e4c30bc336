import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROXY_STATE_FORMAT, type ProxyStateFile } from '../api/proxy-state.js';
import { ManualClock } from '../core/clock.js';
import { SkeinError } from '../core/errors.js';
import { StateWriter, parseState, readState, statePath, writeState } from './state-file.js';

const A = 'http://10.0.0.1:7400';
const B = 'http://10.0.0.2:7400';
const HOUR = 3600_000;
const T0 = Date.parse('2026-12-01T00:00:00.000Z');

function state(over: Partial<ProxyStateFile> = {}): ProxyStateFile {
  return {
    format: PROXY_STATE_FORMAT,
    savedAt: new Date(T0).toISOString(),
    control: [A, B],
    watch: {
      type: 'snapshot',
      revision: 42,
      service: null,
      instances: [{ id: 'w1', service: 'web', address: '10.0.1.1', port: 8080, weight: 1, zone: '', version: '', labels: {}, status: 'healthy', reason: '', since: '2026-12-01T00:00:00.000Z', revision: 40, check: null }],
      services: [{ name: 'web', definition: null }],
    },
    tls: null,
    ...over,
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'skein-state-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const check = { control: [B, 'http://10.0.0.3:7400'], now: T0 + HOUR, maxAgeMs: 72 * HOUR };

describe('the proxy state file', () => {
  test('written atomically (0600 in a 0700 directory, no temporary file left) and read back as it was', async () => {
    await withDir(async (root) => {
      const dir = join(root, 'state');
      await writeState(dir, state());
      assert.equal((await stat(statePath(dir))).mode & 0o777, 0o600);
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      assert.deepEqual(await readdir(dir), ['proxy-state.json']);
      const r = await readState(dir, check);
      assert.equal(r.kind, 'ok');
      assert.deepEqual(r.kind === 'ok' ? r.state : null, state());
      // Written again: replaced whole.
      await writeState(dir, state({ savedAt: new Date(T0 + 1000).toISOString() }));
      assert.equal(JSON.parse(await readFile(statePath(dir), 'utf8')).savedAt, '2026-12-01T00:00:01.000Z');
    });
  });

  test('no file: none; corrupt, another format, another mesh, too old: refused with the reason', async () => {
    await withDir(async (dir) => {
      assert.deepEqual(await readState(dir, check), { kind: 'none' });
      const path = statePath(dir);
      const cases: Array<[string, string]> = [
        ['{"format": "skein-proxy-st', `the proxy state file ${path} is corrupt: not JSON`],
        ['[]', `the proxy state file ${path} is corrupt: not a JSON object`],
        [JSON.stringify({ ...state(), format: 'skein-proxy-state/0' }), `the proxy state file ${path} is not a proxy state of this version: format "skein-proxy-state/0", expected "skein-proxy-state/1"`],
        [JSON.stringify({ ...state(), savedAt: 'yesterday' }), 'is corrupt: "savedAt" is not a time'],
        [JSON.stringify({ ...state(), control: [] }), 'is corrupt: "control" is not a list of URLs'],
        [JSON.stringify({ ...state(), watch: { ...state().watch, instances: [{ id: 'x' }] } }), 'is corrupt: "watch" malformed watch message: instances[0].service is not a string'],
        [JSON.stringify({ ...state(), watch: { type: 'ping', revision: 3 } }), 'is corrupt: "watch" is not a snapshot of every service'],
        [JSON.stringify({ ...state(), tls: { ca: {} } }), 'is corrupt: "tls" is neither null nor {ca, credentials}'],
        [JSON.stringify(state({ control: ['http://10.9.9.9:7400'] })), `the proxy state file ${path} is of another mesh: it was saved from the control plane at http://10.9.9.9:7400, and this proxy is given ${B}, http://10.0.0.3:7400`],
        [JSON.stringify(state({ savedAt: new Date(T0 + HOUR - 73 * HOUR).toISOString() })), `the proxy state file ${path} is too old to serve: saved at 2026-11-28T00:00:00.000Z, 73.0 h ago, more than --state-max-age 72h`],
      ];
      for (const [text, reason] of cases) {
        await writeFile(path, text);
        const r = await readState(dir, check);
        assert.equal(r.kind, 'refused', text);
        assert.ok(r.kind === 'refused' && r.reason.includes(reason), `${text}\n${r.kind === 'refused' ? r.reason : ''}`);
      }
      // Exactly the maximum age is still served.
      await writeFile(path, JSON.stringify(state({ savedAt: new Date(T0 + HOUR - 72 * HOUR).toISOString() })));
      assert.equal((await readState(dir, check)).kind, 'ok');
    });
  });

  test('parseState throws SKEIN_E_PROXY_STATE naming the file', () => {
    assert.throws(() => parseState('nope', '/var/lib/skein/proxy/proxy-state.json'), (e: unknown) => e instanceof SkeinError && e.code === 'SKEIN_E_PROXY_STATE' && e.message.startsWith('the proxy state file /var/lib/skein/proxy/proxy-state.json is corrupt'));
  });

  test('StateWriter: changes within the debounce make one write, of the state at write time; stop() writes what is pending', async () => {
    await withDir(async (dir) => {
      const clock = new ManualClock(T0);
      let revision = 1;
      const written: number[] = [];
      const w = new StateWriter({ dir, clock, debounceMs: 500, collect: () => state({ watch: { ...state().watch, revision } }), onWritten: (s) => written.push(s.watch.revision) });
      w.changed();
      revision = 2;
      w.changed();
      clock.advance(499);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(written, []);
      clock.advance(1);
      await waitUntil(() => written.length === 1);
      assert.deepEqual(written, [2]);
      revision = 3;
      w.changed();
      await w.stop();
      assert.deepEqual(written, [2, 3]);
      assert.equal(JSON.parse(await readFile(statePath(dir), 'utf8')).watch.revision, 3);
      w.changed();
      clock.advance(1000);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(written, [2, 3], 'nothing after stop()');
    });
  });
});

async function waitUntil(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
