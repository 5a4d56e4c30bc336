/**
 * One configuration pipeline (issue 12 §5): the same bad field gets the same message whichever way
 * it arrives: the body of a real API call (fastify, over a socket), a resource file (`skein
 * validate`, as `skein apply` reads it) and a mesh file loaded by `skein up`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { api, skein, startControl, tempDir, type ControlProcess } from './helpers.js';

let cp: ControlProcess;
let dir: { path: string; remove: () => Promise<void> };

before(async () => {
  dir = await tempDir('skein-config-errors-');
  cp = await startControl({ dataDir: join(dir.path, 'data') });
});

after(async () => {
  try {
    await cp?.stop();
  } finally {
    await dir?.remove();
  }
});

/** One mistake in a service, the field it is reported at (relative to the service) and the message people read. */
const CASES: Array<{ what: string; fields: Record<string, unknown>; field: string; message: string }> = [
  { what: 'a duration without a unit', fields: { timeouts: { request: '10 seconds' } }, field: 'timeouts.request', message: 'must be a duration such as "500ms", "10s" or "1m30s"' },
  { what: 'a duration below its bound', fields: { retries: { budget: { window: '500ms' } } }, field: 'retries.budget.window', message: 'must be at least 1s' },
  { what: 'a misspelt field', fields: { retries: { maxRetry: 2 } }, field: 'retries.maxRetry', message: 'is not a known field' },
  { what: 'a number given as a string', fields: { retries: { maxRetries: 'two' } }, field: 'retries.maxRetries', message: 'must be an integer' },
  {
    what: 'an unknown balancer',
    fields: { balancer: { kind: 'fastest' } },
    field: 'balancer.kind',
    message: 'must be one of "round-robin", "weighted-round-robin", "random", "least-request", "peak-ewma", "ring-hash", "maglev"',
  },
  {
    what: 'a label key that is not one',
    fields: { labels: { 'bad key!': 'x' } },
    field: 'labels.bad key!',
    message: 'is not a label key (letters, digits, ".", "_", "/" and "-", 1-63 characters, starting and ending with a letter or digit)',
  },
  { what: 'a max below its min', fields: { breaker: { backoff: { min: '2s', max: '1s' } } }, field: 'breaker.backoff.max', message: 'must be at least breaker.backoff.min (2000ms)' },
];

for (const c of CASES) {
  test(`${c.what}: the same field and message from the API, a resource file and a mesh file`, async () => {
    // The API: PUT /v1/services/web over a real socket.
    const r = await api(cp.http, 'PUT', '/v1/services/web', c.fields);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.headers.get('x-skein-error'), 'SKEIN_E_VALIDATION');
    assert.equal(r.body.field, c.field);
    assert.equal(r.body.message, `invalid service: ${c.field} ${c.message}`);
    assert.deepEqual(r.body.details, [{ field: c.field, message: c.message }]);

    // A resource file, as `skein apply` reads it.
    const resources = join(dir.path, 'service.yaml');
    await writeFile(resources, stringify({ apiVersion: 'skein/v1', kind: 'Service', name: 'web', ...c.fields }));
    const v = await skein(['validate', resources]);
    assert.equal(v.code, 1, v.stderr);
    assert.equal(v.stderr, `skein: ${resources}: resource [0] Service "web": invalid service: ${c.field} ${c.message} [SKEIN_E_VALIDATION]\n`);

    // A mesh file, loaded by `skein up` (it checks the whole file before it starts anything).
    const mesh = join(dir.path, 'mesh.yaml');
    await writeFile(mesh, stringify({ apiVersion: 'skein/v1', kind: 'Mesh', name: 'shop', services: { web: { command: 'node', ...c.fields } } }));
    const up = await skein(['up', mesh, '--dns', 'off', '--outbound', 'off', '--admin', 'off'], { timeoutMs: 20_000 });
    assert.equal(up.code, 1, up.stderr);
    // (The CLI adds the field's full path in the file.)
    assert.equal(up.stderr, `skein: ${mesh}: service "web": ${c.field} ${c.message} (services.web.${c.field}) [SKEIN_E_VALIDATION]\n`);
  });
}
