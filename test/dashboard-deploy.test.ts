/**
 * The dashboard's Deployment panel in a real browser (Debian's Chromium, headless, as in
 * test/dashboard.test.ts) against a real `skein up` running two services of
 * test/fixtures/rollout-app.mjs under paced load: `web` with a canary strategy (interval 1s) and
 * `api` with an autoscaler. A good canary shows the weight the API reports ("canary 20%"), on
 * the service's page and as a badge in the services table, and both versions' numbers side by
 * side, then the promoted revision; a canary answering 500s shows
 * "rolled back" with the failed success-rate check, its value against its threshold, as the
 * event says; the autoscaled service shows its policy and the API's last decision. A bare
 * `skein control` (no mesh: GET /v1/mesh is 404) shows a service without the panel.
 * What is asserted is the text the user reads.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { launch, screenshot as shot, watchPage } from './browser-helpers.js';
import { ROOT, api, skein, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { Pacer, portOf, upFromText, type MeshUnderTest } from './mesh-helpers.js';
import { registerInstance } from './proxy-helpers.js';

const APP = join(ROOT, 'test', 'fixtures', 'rollout-app.mjs');


/** A canary judged every second; 500s fail the success-rate check rather than abort at once (abortErrorRate 100%). */
const CANARY = '{ interval: 1s, stepWeight: 20, maxWeight: 60, threshold: 2, minRequests: 3, abortErrorRate: 100 }';

function meshFile(o: { version: string; env?: string }): string {
  const app = (env: string) => [`    command: node`, `    args: [${JSON.stringify(APP)}]`, `    env: { ${env} }`, '    readiness: { type: http, path: /health, interval: 100ms, deadline: 2s }'];
  return [
    'kind: Mesh',
    'name: deploy-dash',
    'services:',
    '  web:',
    ...app(`APP_VERSION: ${o.version}${o.env === undefined ? '' : `, ${o.env}`}`),
    `    version: ${o.version}`,
    '    replicas: 2',
    `    canary: ${CANARY}`,
    '  api:',
    ...app('APP_VERSION: a1'),
    '    version: a1',
    '    autoscale: { min: 1, max: 2, target: { rps: 5 }, interval: 2s, window: 2s }',
    '',
  ].join('\n');
}

const testId = (id: string) => `[data-testid="${id}"]`;

/** The text of the first element matching `selector`, null when there is none (never waits). */
async function textOf(page: Page, selector: string): Promise<string | null> {
  const l = page.locator(selector);
  return (await l.count()) === 0 ? null : l.first().textContent();
}

/** The cells' texts of the table rows matching `selector`. */
async function rows(page: Page, selector: string): Promise<string[][]> {
  return page.locator(selector).evaluateAll((trs) => trs.map((tr) => Array.from((tr as unknown as { cells: ArrayLike<{ textContent: string | null }> }).cells).map((c) => (c.textContent ?? '').trim())));
}

interface CanaryStatusBody {
  rollout: null | { phase: string; revision: number; canary?: { weight: number; phase: string } };
}



describe('the Deployment panel against skein up (a canary, an autoscaler)', () => {
  let mesh: MeshUnderTest;
  let browser: Browser;
  let webLoad: Pacer | null = null;
  let apiLoad: Pacer | null = null;

  before(async () => {
    mesh = await upFromText('skein-deploy-dash-', meshFile({ version: 'v1' }), ['--scrape-interval', '1s']);
    browser = await launch();
  });

  after(async () => {
    await webLoad?.stop();
    await apiLoad?.stop();
    await browser?.close();
    await mesh?.stop();
  });

  test('a canary: its weight as the API says, both versions side by side; a bad one rolled back with the failed check; the autoscaler', async (t) => {
    const { up, file } = mesh;
    const rolloutOf = async () => (await api(up.control, 'GET', '/v1/mesh/services/web/rollout')).body as CanaryStatusBody;
    const apiEntry = await mesh.service<{ servicePort: string; instances: Array<{ pid: number | null }> }>('api');
    webLoad = new Pacer(mesh.port, '/', 60, { maxSockets: 16 });
    apiLoad = new Pacer(portOf(apiEntry.servicePort), '/', 20, { maxSockets: 8 });
    const apply = async (text: string) => {
      await writeFile(file, text);
      const r = await skein(['apply', '-f', file, '-c', up.control], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
    };

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const problems = watchPage(page);
    await page.goto(`${up.control}/dashboard/#/services/web`);
    const stat = (id: string) => textOf(page, `${testId(id)} .stat-value`);
    await waitFor(async () => (await stat('deploy-revision')) === '1', { what: 'the Deployment panel of web at revision 1', intervalMs: 100 });
    assert.equal(await stat('deploy-version'), 'v1');
    assert.equal(await stat('deploy-desired'), '2');
    assert.equal(await stat('deploy-phase'), 'none since skein up');
    await waitFor(async () => (await stat('deploy-ready')) === '2', { what: 'web 2 ready', intervalMs: 100 });
    // v1's own numbers once the load shows.
    await waitFor(async () => /^\d/.test((await textOf(page, `${testId('version-row-v1')} ${testId('version-rps')}`)) ?? ''), { what: 'the RPS of v1', timeoutMs: 15_000, intervalMs: 100 });

    // The overview beside it: no badge while nothing moves.
    const overview = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const overviewProblems = watchPage(overview);
    await overview.goto(`${up.control}/dashboard/`);
    await waitFor(async () => (await textOf(overview, `${testId('service-row-web')} ${testId('name')}`)) === 'web', { what: 'the row of web', intervalMs: 100 });
    const badge = () => textOf(overview, `${testId('service-row-web')} ${testId('rollout-badge')}`);
    assert.equal(await badge(), null, 'no rollout badge before the rollout');

    // A good v2: the page shows the weight the API reports, read between two answers that agree.
    await apply(meshFile({ version: 'v2' }));
    let seen = '';
    await waitFor(
      async () => {
        const a = (await rolloutOf()).rollout?.canary?.weight;
        const shown = await textOf(page, testId('canary-weight'));
        const b = (await rolloutOf()).rollout?.canary?.weight;
        seen = `page ${JSON.stringify(shown)}, API ${a} then ${b}`;
        return a !== undefined && a > 0 && a === b && shown === `canary ${a}%`;
      },
      { what: 'the page to show the canary weight the API reports', timeoutMs: 30_000, intervalMs: 50 },
    ).catch(() => assert.fail(`the canary's weight as the API says: ${seen}`));
    t.diagnostic(`canary weight shown: ${seen}`);
    // The services table's badge says the same.
    await waitFor(
      async () => {
        const a = (await rolloutOf()).rollout?.canary?.weight;
        const shown = await badge();
        const b = (await rolloutOf()).rollout?.canary?.weight;
        seen = `badge ${JSON.stringify(shown)}, API ${a} then ${b}`;
        return a !== undefined && a > 0 && a === b && shown === `canary ${a}%`;
      },
      { what: 'the badge to show the canary weight the API reports', timeoutMs: 15_000, intervalMs: 50 },
    ).catch(() => assert.fail(`the badge of web as the API says: ${seen}`));
    await shot(overview, 'dashboard-deploy-badge');
    const split = await page.locator(`${testId('canary-split')} [role="img"]`).getAttribute('aria-label');
    assert.match(split ?? '', /^stable v1 (80|60|40)%, canary v2 (20|40|60)%$/, 'the bar has the split in words');
    // Both versions side by side, with their roles.
    await waitFor(
      async () => {
        const r = await rows(page, `${testId('versions')} tbody tr`);
        return r.some((c) => c[0] === 'v1' && c[1] === 'stable') && r.some((c) => c[0] === 'v2' && c[1] === 'canary' && /^\d/.test(c[3] ?? ''));
      },
      { what: 'v1 (stable) and v2 (canary, with traffic) side by side', timeoutMs: 15_000, intervalMs: 100 },
    );
    await shot(page, 'dashboard-deploy-canary');
    // Promoted, then rolled out: revision 2 on v2.
    await waitFor(async () => (await stat('deploy-version')) === 'v2' && (await stat('deploy-phase')) === 'complete', { what: 'revision 2 complete on v2', timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(await stat('deploy-revision'), '2');
    await waitFor(async () => (await badge()) === null, { what: 'the badge to go once the rollout is complete', intervalMs: 100 });
    assert.deepEqual([overviewProblems.exceptions, overviewProblems.console, overviewProblems.httpErrors], [[], [], []], 'the overview had no error');
    await overview.close();
    assert.equal(await textOf(page, testId('canary-phase')), 'promoted');
    const passed = await rows(page, `${testId('canary-steps')} tbody tr`);
    assert.ok(
      passed.some((c) => c.includes('success rate') && c.includes('100%') && c.includes('\u2265 99.0%') && c.includes('passed')),
      `a passed success-rate check, value against threshold: ${JSON.stringify(passed)}`,
    );

    // A bad v3 (every answer a 500): two failed checks roll it back by itself.
    const since = Date.now();
    await apply(meshFile({ version: 'v3', env: 'FAIL_STATUS: "500"' }));
    await waitFor(async () => ((await textOf(page, testId('canary-outcome'))) ?? '').includes('rolled back'), { what: 'the page to say the canary was rolled back', timeoutMs: 30_000, intervalMs: 100 });
    const events = (await api(up.control, 'GET', '/v1/events?service=web&type=canary&limit=100')).body.events as Array<{ time: string; change: string; reason: string; revision: number }>;
    const rolledBack = events.filter((e) => Date.parse(e.time) >= since - 1000 && e.change === 'canary-rolled-back').at(-1);
    assert.ok(rolledBack !== undefined, JSON.stringify(events.map((e) => e.change)));
    assert.match(rolledBack.reason, /^2 failed checks \(threshold 2\); the last: success rate 0\.0% < 99\.0%$/);
    assert.match((await textOf(page, testId('canary-outcome'))) ?? '', new RegExp(`^Last canary: revision ${rolledBack.revision} \\(v3\\) rolled back at \\d\\d:\\d\\d:\\d\\d: `));
    assert.equal(await textOf(page, testId('canary-outcome-reason')), rolledBack.reason, 'the reason the event gives');
    assert.deepEqual(
      (await rows(page, `${testId('canary-outcome-checks')} tbody tr`)).find((c) => c[0] === 'success rate'),
      ['success rate', '0.0%', '\u2265 99.0%', 'failed'],
      'the failed success-rate check: its value against its threshold',
    );
    // The service is back on v2 (the rollback is a rollout of its own).
    await waitFor(async () => (await stat('deploy-version')) === 'v2' && (await stat('deploy-phase')) === 'complete (a rollback)', { what: 'web back on v2', timeoutMs: 30_000, intervalMs: 100 });
    await shot(page, 'dashboard-deploy-rolled-back');

    // The autoscaled service: its policy and the API's last decision with its inputs.
    await page.goto(`${up.control}/dashboard/#/services/api`);
    await waitFor(async () => (await textOf(page, testId('autoscale-policy'))) === '1..2 replicas, target 5 req/s per replica', { what: "api's autoscale policy", intervalMs: 100 });
    let last = '';
    await waitFor(
      async () => {
        const a = await mesh.service<{ autoscale: { last: { message: string; desired: number } | null }; instances: Array<{ pid: number | null }> }>('api');
        const shown = await Promise.all([textOf(page, testId('autoscale-message')), textOf(page, testId('autoscale-desired'))]);
        const b = await mesh.service<{ autoscale: { last: { message: string; desired: number } | null }; instances: Array<{ pid: number | null }> }>('api');
        const m = a.autoscale.last?.message;
        last = `page ${JSON.stringify(shown)}, API ${JSON.stringify(m)}`;
        return m !== undefined && m === b.autoscale.last?.message && a.autoscale.last?.desired === 2 && shown[0]?.endsWith(`: ${m}`) && shown[1] === '2';
      },
      { what: "the page to show the autoscaler's last decision", timeoutMs: 20_000, intervalMs: 50 },
    ).catch(() => assert.fail(`the autoscaler's last decision as the API says: ${last}`));
    t.diagnostic(`autoscaler: ${last}`);
    assert.match((await textOf(page, testId('autoscale-value'))) ?? '', /^\d+(\.\d+)? req\/s per replica$/);
    await shot(page, 'dashboard-deploy-autoscale');

    assert.deepEqual(problems.exceptions, [], 'no uncaught exception in the page');
    assert.deepEqual(problems.console, [], 'no console error');
    assert.deepEqual(problems.httpErrors, [], 'no HTTP error');
    await page.close();
  });
});

describe('the Deployment panel without a mesh', () => {
  test('a bare skein control (GET /v1/mesh answers 404): the service shows, without the panel and without an error', async (t) => {
    let cp: ControlProcess | undefined = undefined;
    let browser: Browser | undefined = undefined;
    const dir = await tempDir('skein-deploy-dash-');
    t.after(async () => {
      await browser?.close();
      await cp?.stop('SIGKILL');
      await dir.remove();
    });
    cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
    await registerInstance(cp.http, 'billing', 'billing-1', 9);
    browser = await launch();
    const page = await browser.newPage();
    const problems = watchPage(page);
    await page.goto(`${cp.http}/dashboard/#/services/billing`);
    await waitFor(async () => (await textOf(page, `${testId('instance-row-billing-1')} ${testId('status')}`)) !== null, { what: 'the service page of billing', intervalMs: 100 });
    // The question came back (a 404), and two scrape rounds later (the page refetches after each) it was not asked again.
    await waitFor(() => problems.httpErrors.includes('404 /v1/mesh'), { what: 'the answer to GET /v1/mesh', intervalMs: 50 });
    const rounds = problems.responses.filter((p) => p === '/v1/signals/services/billing').length;
    await waitFor(() => problems.responses.filter((p) => p === '/v1/signals/services/billing').length >= rounds + 2, { what: 'two more scrape rounds on the page', intervalMs: 50 });
    assert.equal(await page.locator(testId('deployment')).count(), 0, 'no Deployment panel');
    assert.equal(await page.getByText('Deployment').count(), 0, 'nothing says "Deployment"');
    // (A service registered without a Service resource has no routes: that 404 is the Routes section's.)
    assert.deepEqual(
      problems.httpErrors.filter((e) => e !== '404 /v1/services/billing/routes'),
      ['404 /v1/mesh'],
      'asked once, and nothing else failed',
    );
    assert.deepEqual(problems.exceptions, []);
    // Chromium logs every 4xx answer as a console error; that one is all.
    assert.ok(problems.console.every((m) => /404/.test(m)), problems.console.join(' | '));
    await page.close();
  });
});
