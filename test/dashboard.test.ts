/**
 * The web dashboard in a real browser (Debian's Chromium driven by playwright-core, headless):
 * the demo shop (`skein up examples/shop/shop.yaml`) on the dashboard, first idle and then under
 * traffic sent through the mesh's outbound listener (services table, instances, topology edges,
 * charts, events; no console error, no failed request, nothing fetched from another origin; every
 * number of the overview, as its text reads, is the one GET /v1/signals gives), and
 * a dashboard that outlives a control-plane crash: the indicator goes to "reconnecting" and back
 * to "live" with fresh data once the control plane is back on the same port. Then the dashboard
 * routes themselves (fastify inject): the 503 when the UI is not built, the redirects, the
 * security and cache headers. Screenshots go to test-artifacts/dashboard-*.png.
 *
 * Chromium is required: without it every browser test fails, saying to run scripts/setup.sh.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { assertDashboardBuilt, chromiumPath, launch, screenshot as shot, watchPage } from './browser-helpers.js';
import { DASHBOARD_NOT_BUILT, DEFAULT_DASHBOARD_ROOT, dashboardRoutes } from '../src/control/dashboard.js';
import type { WireEdge, WireInstance, WireService } from '../src/api/signals.js';
import { api, run, startControl, tempDir, waitFor, type ControlProcess } from './helpers.js';
import { SHOP_SERVICES, portOf, startShop, type UpProcess } from './mesh-helpers.js';
import { httpGet, registerInstance } from './proxy-helpers.js';

const testId = (id: string) => `[data-testid="${id}"]`;

/** The little of the DOM the checks below use (the tests compile without the DOM's types). */
interface PageDocument {
  querySelector(selector: string): { getAttribute(name: string): string | null; textContent: string | null } | null;
}

/** An attribute of the first element matching `selector` (null when absent). */
async function attr(page: Page, selector: string, name: string): Promise<string | null> {
  return page.evaluate(([s, n]) => (globalThis as unknown as { document: PageDocument }).document.querySelector(s!)?.getAttribute(n!) ?? null, [selector, name]);
}

/** The text of the first element matching `selector` (null when absent). */
async function text(page: Page, selector: string): Promise<string | null> {
  return page.evaluate((s) => (globalThis as unknown as { document: PageDocument }).document.querySelector(s)?.textContent ?? null, selector);
}

/** Waits for the connection indicator to show `state`. */
async function waitConnection(page: Page, state: 'live' | 'reconnecting', timeoutMs = 15_000): Promise<void> {
  await waitFor(async () => (await attr(page, testId('connection'), 'data-state')) === state && (await text(page, testId('connection'))) === state, {
    timeoutMs,
    intervalMs: 100,
    what: `the connection indicator to read "${state}" (it reads "${await text(page, testId('connection'))}")`,
  });
}

/** The texts of the first element matching each selector (null when absent), read at one moment. */
async function texts(page: Page, selectors: string[]): Promise<Array<string | null>> {
  return page.evaluate((list) => list.map((s) => (globalThis as unknown as { document: PageDocument }).document.querySelector(s)?.textContent ?? null), selectors);
}

/**
 * Whether a number as the page shows it ("12.5", "<0.01", "99.50%", "3.41 ms", "1.20 s", "1.2k", or
 * a dash for none) reads as `expected` (API units: a share for a rate, ms for a latency): the same
 * to within one unit of the last digit shown, and a rate of exactly 1 as "100%". An explanation
 * when it does not.
 */
function misread(shown: string | null, expected: number | null): string | null {
  const what = `shows ${JSON.stringify(shown)} for ${String(expected)}`;
  if (shown === '\u2013' || expected === null) return shown === '\u2013' && expected === null ? null : what;
  const m = /^(<)?(\d+(?:\.(\d+))?)(%| ms| s|k)?$/.exec(shown ?? '');
  if (m === null) return `${what}: not a number as the dashboard writes one`;
  const scale = { '%': 0.01, ' ms': 1, ' s': 1000, k: 1000 }[m[4] ?? ''] ?? 1;
  const value = Number(m[2]) * scale;
  if (m[4] === '%' && expected === 1) return shown === '100%' ? null : what;
  if (m[1] === '<') return expected < value ? null : what;
  return Math.abs(value - expected) <= 10 ** -(m[3]?.length ?? 0) * scale + 1e-9 ? null : what;
}

/** A number on the page: what it is, where it is shown, and where the API's answer has it. */
type Shown = [what: string, selector: string, value: (body: any) => number | null];

/**
 * Numbers on the page against the API's answer at `path` (for the 10s window, what the page's
 * stream carries), read between two answers with the same numbers (of one scrape round): the
 * differences, empty when every number reads as the API says.
 */
async function pageAgainstApi(page: Page, control: string, path: string, numbers: Shown[]): Promise<string[]> {
  const before = await api(control, 'GET', path);
  const shown = await texts(page, numbers.map(([, selector]) => selector));
  const after = await api(control, 'GET', path);
  // `time` is when the API answered; the numbers change with each scrape round only.
  const numbersOf = (body: any) => JSON.stringify({ ...body, time: null });
  if (numbersOf(before.body) !== numbersOf(after.body)) return ['a scrape round came while the page was read'];
  return numbers.flatMap(([what, , value], i) => {
    const problem = misread(shown[i] ?? null, value(after.body));
    return problem === null ? [] : [`${what} ${problem}`];
  });
}

/** Polls until the page shows what the API says; fails listing the numbers that still differ. */
async function assertPageShowsApi(page: Page, control: string, path: string, numbers: Shown[]): Promise<void> {
  let differences: string[] = [];
  await waitFor(async () => (differences = await pageAgainstApi(page, control, path, numbers)).length === 0, { timeoutMs: 15_000, intervalMs: 200 }).catch(() => undefined);
  assert.deepEqual(differences, [], `the page shows the numbers of GET ${path}`);
}

const LATENCIES = ['p50', 'p95', 'p99'] as const;

/** The overview: the header's mesh RPS and success (every service summed) and each service's row. */
function overviewNumbers(services: readonly string[]): Shown[] {
  const all = (b: any) => b.services as WireService[];
  const sum = (b: any, k: 'rps' | 'requests' | 'failures') => all(b).reduce((n, s) => n + s[k], 0);
  const one = (b: any, name: string) => all(b).find((s) => s.service === name) ?? assert.fail(`GET /v1/signals has no ${name}`);
  return [
    ['mesh rps', testId('mesh-rps'), (b) => sum(b, 'rps')],
    ['mesh success', testId('mesh-success'), (b) => (sum(b, 'requests') === 0 ? null : (sum(b, 'requests') - sum(b, 'failures')) / sum(b, 'requests'))],
    ...services.flatMap((name): Shown[] => {
      const row = (cell: string) => `${testId(`service-row-${name}`)} ${testId(cell)}`;
      return [
        [`${name} rps`, row('rps'), (b) => one(b, name).rps],
        [`${name} success`, row('success'), (b) => one(b, name).successRate],
        ...LATENCIES.map((p): Shown => [`${name} ${p}`, row(p), (b) => one(b, name).latencyMs[p]]),
      ];
    }),
  ];
}

// ---------------------------------------------------------------------------------------------
// traffic through `skein up`'s outbound listener
// ---------------------------------------------------------------------------------------------

/** Steady, paced traffic to the shop's frontend through the outbound listener (about 20 requests/s). */
class Traffic {
  ok = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(port: number) {
    this.loop = (async () => {
      for (let n = 0; !this.stopped; n++) {
        try {
          const r = await httpGet(port, `http://frontend/api/page?user_id=${1 + (n % 3)}&product_id=${1 + (n % 5)}`, { headers: { host: 'frontend' }, timeoutMs: 5000 });
          if (r.status === 200) this.ok++;
          else this.failures.push(`${r.status} ${r.body.slice(0, 200)}`);
        } catch (e) {
          this.failures.push((e as Error).message);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

// ---------------------------------------------------------------------------------------------
// the demo shop
// ---------------------------------------------------------------------------------------------

describe('the dashboard on the demo shop', () => {
  test('shows the three services, then the traffic sent through the mesh', async (t) => {
    // Checked first, so that a machine without Chromium fails here with what to do.
    chromiumPath();
    assertDashboardBuilt();
    let up: (UpProcess & { outbound: string }) | undefined = undefined;
    let browser: Browser | undefined = undefined;
    let traffic: Traffic | undefined = undefined;
    t.after(async () => {
      await traffic?.stop();
      await browser?.close();
      await up?.stop();
    });
    up = await startShop({ expect: ['outbound'] });
    assert.equal(up.dashboard, `${up.control}/dashboard/`, `skein up prints the dashboard's URL\n${up.logs()}`);
    browser = await launch();
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const origin = new URL(up.control).origin;
    const problems = watchPage(page, origin);

    // GET / redirects to the dashboard.
    const res = await page.goto(`${up.control}/`);
    assert.equal(res?.status(), 200);
    assert.equal(page.url(), `${up.control}/dashboard/`);
    assert.equal(await page.title(), 'Skein dashboard');
    await waitConnection(page, 'live');

    // The three services, registered; no traffic but the control plane's health checks (every 5 s,
    // through each replica's inbound listener): what the API says, dashes where it has no requests.
    for (const s of SHOP_SERVICES) {
      await waitFor(async () => (await text(page, `${testId(`service-row-${s}`)} ${testId('name')}`)) === s, { what: `the row of ${s}`, intervalMs: 100 });
    }
    await assertPageShowsApi(page, up.control, '/v1/signals?window=10s', overviewNumbers(SHOP_SERVICES));
    await waitFor(async () => (await text(page, `${testId('service-row-user-service')} ${testId('instances')}`)) === '2/2', { what: 'user-service 2/2 healthy', intervalMs: 100 });
    // The registrations are events.
    await waitFor(async () => (await page.locator(`${testId('event')}[data-type="health"]`).count()) >= 5, { what: 'the health events of the five replicas', intervalMs: 100 });

    traffic = new Traffic(portOf(up.outbound));
    await waitFor(async () => traffic!.ok >= 5, { what: 'requests through the mesh', timeoutMs: 15_000 });

    // The numbers move: the table, the topology, the charts.
    await waitFor(async () => Number(await attr(page, `${testId('service-row-frontend')} ${testId('rps')}`, 'data-value')) > 0, { what: 'frontend RPS > 0', timeoutMs: 15_000, intervalMs: 100 });
    for (const s of ['user-service', 'product-service']) {
      await waitFor(async () => Number(await attr(page, `${testId(`service-row-${s}`)} ${testId('rps')}`, 'data-value')) > 0, { what: `${s} RPS > 0`, timeoutMs: 15_000, intervalMs: 100 });
    }
    await waitFor(async () => Number(await attr(page, `${testId('service-row-frontend')} ${testId('p99')}`, 'data-value')) > 0, { what: 'frontend p99', intervalMs: 100 });
    // What the user reads is what the API says, number by number (within a scrape round or two:
    // the page gets each round over its stream).
    await assertPageShowsApi(page, up.control, '/v1/signals?window=10s', overviewNumbers(SHOP_SERVICES));

    for (const callee of ['user-service', 'product-service']) {
      const edge = testId(`edge-frontend-${callee}`);
      await waitFor(async () => !((await attr(page, edge, 'class')) ?? 'quiet').includes('quiet'), { what: `an active edge frontend -> ${callee}`, timeoutMs: 15_000, intervalMs: 100 });
      assert.match((await text(page, `${edge} .edge-label`)) ?? '', /rps/, `the edge frontend -> ${callee} is labelled with its traffic`);
    }
    for (const n of SHOP_SERVICES) assert.ok((await page.locator(testId(`node-${n}`)).count()) === 1, `the topology shows ${n}`);
    // mTLS strict between the proxies: the API says every request of frontend -> user-service was
    // mTLS, and the edge carries a closed lock whose text alternative says so.
    const edgeOf = (b: any, source: string, destination: string): WireEdge => (b.edges as WireEdge[]).find((e) => e.source === source && e.destination === destination) ?? assert.fail(`GET /v1/signals has no edge ${source} -> ${destination}: ${JSON.stringify(b.edges)}`);
    await waitFor(async () => edgeOf((await api(up!.control, 'GET', '/v1/signals?window=10s')).body, 'frontend', 'user-service').requests > 0, { what: 'requests on frontend -> user-service', intervalMs: 200 });
    const apiEdge = edgeOf((await api(up.control, 'GET', '/v1/signals?window=10s')).body, 'frontend', 'user-service');
    assert.equal(apiEdge.mtls, 'all', `frontend -> user-service is mTLS: ${JSON.stringify(apiEdge)}`);
    assert.equal(apiEdge.mtlsRequests, apiEdge.requests);
    const lock = testId('edge-mtls-frontend-user-service');
    await waitFor(async () => (await attr(page, lock, 'data-mtls')) === 'all', { what: `the lock of frontend -> user-service to read mTLS (data-mtls: ${await attr(page, lock, 'data-mtls')})`, timeoutMs: 15_000, intervalMs: 100 });
    assert.match((await attr(page, lock, 'aria-label')) ?? '', /^mTLS: all \d+ requests \(last 10 s\) between the proxies were mutual TLS$/);
    assert.equal(await text(page, `${lock} title`), await attr(page, lock, 'aria-label'), 'the lock has the same text as its title (a tooltip)');

    await waitFor(async () => Number(await attr(page, testId('mesh-chart-rps'), 'data-max')) > 0, { what: 'the mesh RPS chart to show traffic', timeoutMs: 15_000, intervalMs: 100 });
    assert.ok((await page.locator(`${testId('mesh-chart-rps')} canvas`).count()) >= 1, 'the chart is drawn (uPlot canvas)');
    await shot(page, 'dashboard-overview');

    // One service: its numbers, its instances with their status and their own numbers, its charts.
    await page.click(`${testId('service-row-frontend')} ${testId('name')}`);
    await waitFor(async () => (await attr(page, testId('service-detail'), 'data-service')) === 'frontend', { what: 'the detail of frontend', intervalMs: 100 });
    assert.equal(await page.title(), 'frontend \u00b7 Skein dashboard');
    const instance = testId('instance-row-frontend-1');
    await waitFor(async () => (await text(page, `${instance} ${testId('status')}`)) === 'healthy', { what: 'frontend-1 healthy', intervalMs: 100 });
    await waitFor(async () => Number(await attr(page, `${instance} ${testId('rps')}`, 'data-value')) > 0, { what: 'frontend-1 RPS > 0', intervalMs: 100 });
    const frontend1 = (b: any) => (b.instances as WireInstance[]).find((i) => i.id === 'frontend-1') ?? assert.fail('GET /v1/signals/services/frontend has no frontend-1');
    await assertPageShowsApi(page, up.control, '/v1/signals/services/frontend?window=10s', [
      ['frontend-1 rps', `${instance} ${testId('rps')}`, (b) => frontend1(b).rps],
      ['frontend-1 success', `${instance} ${testId('success')}`, (b) => frontend1(b).successRate],
    ]);
    await waitFor(async () => Number(await attr(page, testId('chart-rps'), 'data-max')) > 0, { what: 'the RPS chart of frontend', timeoutMs: 15_000, intervalMs: 100 });
    assert.ok(Number(await attr(page, testId('chart-latency'), 'data-points')) > 0, 'the latency chart has points');
    await waitFor(async () => (await page.locator(`${testId('edges')} tbody tr`).count()) >= 2, { what: 'the calls of frontend', intervalMs: 100 });
    // The calls table says in words (beside the lock) that frontend -> user-service is mTLS.
    const callRow = testId('edge-row-frontend-user-service');
    await waitFor(async () => (await text(page, `${callRow} ${testId('mtls')}`)) === 'mTLS', { what: `the call frontend -> user-service to read mTLS (reads ${JSON.stringify(await text(page, `${callRow} ${testId('mtls')}`))})`, intervalMs: 100 });
    assert.equal(await attr(page, `${callRow} ${testId('mtls')}`, 'data-mtls'), 'all');
    assert.equal(await page.locator(`${callRow} ${testId('mtls')} svg.lock`).count(), 1, 'a lock beside the word');
    await shot(page, 'dashboard-service');

    // A service with two replicas, each with its own numbers.
    await page.goto(`${up.control}/dashboard/#/services/user-service`);
    await waitFor(async () => (await page.locator(`${testId('instances')} tbody tr`).count()) === 2, { what: 'the two instances of user-service', intervalMs: 100 });
    for (const id of ['user-service-1', 'user-service-2']) {
      assert.equal(await text(page, `${testId(`instance-row-${id}`)} ${testId('status')}`), 'healthy');
    }
    await waitFor(async () => Number(await attr(page, testId('chart-rps'), 'data-max')) > 0, { what: 'the RPS chart of user-service', timeoutMs: 15_000, intervalMs: 100 });

    // Its policy "only-frontend": the frontend's calls are allowed; one request from outside the mesh
    // (curl -x through skein up's outbound listener calls as "local") is denied, and the page says so.
    const stat = (id: string) => `${testId(id)} .stat-value`;
    await waitFor(async () => Number(await text(page, stat('decisions-allowed'))) > 0, { what: 'allowed decisions on user-service', timeoutMs: 15_000, intervalMs: 100 });
    assert.equal(await text(page, stat('decisions-denied')), '0', 'nothing denied before the request from outside');
    const denied = await run('curl', ['-sS', '--max-time', '10', '-x', `http://${up.outbound}`, '-o', '/dev/null', '-w', '%{http_code}', 'http://user-service/user?user_id=1']);
    assert.equal(denied.stdout, '403', `curl -x to user-service: ${denied.stdout} ${denied.stderr}`);
    await waitFor(async () => (await text(page, stat('decisions-denied'))) === '1', { what: `user-service's page to show 1 denied request (shows ${JSON.stringify(await text(page, stat('decisions-denied')))})`, timeoutMs: 15_000, intervalMs: 100 });
    const denyRow = testId('decision-row-deny-only-frontend');
    assert.deepEqual([await text(page, `${denyRow} ${testId('policy')}`), await text(page, `${denyRow} ${testId('outcome')}`), await text(page, `${denyRow} ${testId('requests')}`)], ['only-frontend', 'denied', '1']);
    assert.equal(await text(page, stat('decisions-dry-run-denied')), '0');
    const decisions = (await api(up.control, 'GET', '/v1/signals/services/user-service?window=5m')).body.authz;
    assert.equal(decisions.denied, 1, `GET /v1/signals/services/user-service?window=5m: ${JSON.stringify(decisions)}`);
    assert.deepEqual(decisions.byPolicy.filter((p: any) => p.outcome === 'deny'), [{ policy: 'only-frontend', outcome: 'deny', requests: 1 }]);
    await assertPageShowsApi(page, up.control, '/v1/signals/services/user-service?window=5m', [
      ['user-service allowed', stat('decisions-allowed'), (b) => b.authz.allowed],
      ['user-service denied', stat('decisions-denied'), (b) => b.authz.denied],
    ]);
    await shot(page, 'dashboard-decisions');

    await traffic.stop();
    // The mesh answers (a rare failure under a loaded machine is not this test's business).
    assert.ok(traffic.ok > 0 && traffic.failures.length <= traffic.ok / 10, `requests through the mesh: ${traffic.ok} ok, failures: ${traffic.failures.slice(0, 5).join('; ')}`);
    assert.ok(problems.requests > 0);
    assert.deepEqual(problems.exceptions, [], 'no uncaught exception in the page');
    assert.deepEqual(problems.console, [], 'no console error');
    assert.deepEqual(problems.failed, [], 'no failed request');
    assert.deepEqual(problems.httpErrors, [], 'no HTTP error');
    assert.deepEqual(problems.foreign, [], 'nothing is fetched from another origin (the dashboard works offline)');
    await page.close();
  });
});

// ---------------------------------------------------------------------------------------------
// reconnection
// ---------------------------------------------------------------------------------------------

describe('the dashboard when the control plane restarts', () => {
  test('goes to "reconnecting" while it is down and back to "live", with fresh data, once it is back', async (t) => {
    chromiumPath();
    assertDashboardBuilt();
    let cp: ControlProcess | undefined = undefined;
    let browser: Browser | undefined = undefined;
    const dir = await tempDir('skein-dashboard-');
    t.after(async () => {
      await browser?.close();
      await cp?.stop('SIGKILL');
      await dir.remove();
    });
    cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off'] });
    browser = await launch();
    await registerInstance(cp.http, 'billing', 'billing-1', 9);
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${cp.http}/dashboard/`);
    await waitConnection(page, 'live');
    await waitFor(async () => (await page.locator(testId('service-row-billing')).count()) === 1, { what: 'the row of billing', intervalMs: 100 });
    assert.equal(await page.locator(testId('banner')).count(), 0, 'no banner while live');

    // The control plane dies: the indicator says so, the last numbers stay.
    const port = cp.httpPort;
    await cp.stop('SIGKILL');
    await waitConnection(page, 'reconnecting');
    assert.match((await text(page, testId('banner'))) ?? '', /reconnecting/);
    assert.equal(await page.locator(testId('service-row-billing')).count(), 1, 'the last numbers seen stay on the page');
    await shot(page, 'dashboard-reconnecting');

    // Back on the same port (same data directory): live again, and showing what the new process knows.
    cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off', '--http', `127.0.0.1:${port}`] });
    assert.equal(cp.httpPort, port);
    await registerInstance(cp.http, 'shipping', 'shipping-1', 9);
    await waitConnection(page, 'live', 20_000);
    await waitFor(async () => (await page.locator(testId('service-row-shipping')).count()) === 1, { what: 'the row of shipping, registered after the restart', intervalMs: 100 });
    assert.equal(await page.locator(testId('banner')).count(), 0, 'the banner is gone');
    await shot(page, 'dashboard-reconnected');

    // An HTTP error instead of a stream (as from a proxy in front of a control plane that is
    // down): the browser gives up on the stream, so the page retries by itself with a backoff,
    // and its banner names the error the API gave.
    const down = JSON.stringify({ code: 'SKEIN_E_SHUTTING_DOWN', message: 'the control plane is shutting down' });
    const isSignals = (url: URL) => url.pathname === '/v1/signals/stream' || url.pathname === '/v1/signals';
    await page.route(isSignals, (route) => route.fulfill({ status: 503, contentType: 'application/json', body: down }));
    await cp.stop('SIGKILL');
    await waitConnection(page, 'reconnecting');
    await waitFor(async () => ((await text(page, testId('banner'))) ?? '').includes('the control plane is shutting down'), { what: 'the banner naming the API error', intervalMs: 100 });
    cp = await startControl({ dataDir: dir.path, args: ['--dns', 'off', '--http', `127.0.0.1:${port}`] });
    await page.unroute(isSignals);
    await waitConnection(page, 'live', 30_000);
    assert.equal(await page.locator(testId('banner')).count(), 0, 'the banner is gone again');
    await page.close();
  });
});

// ---------------------------------------------------------------------------------------------
// the routes
// ---------------------------------------------------------------------------------------------

describe('the dashboard routes', () => {
  test('answer 503 with a JSON error saying how to build the UI when it is not built', async (t) => {
    const empty = await tempDir('skein-dashboard-empty-');
    t.after(() => empty.remove());
    const app = Fastify();
    t.after(() => app.close());
    dashboardRoutes(app, { root: empty.path });
    await app.ready();
    for (const url of ['/dashboard/', '/dashboard/assets/index.js']) {
      const r = await app.inject({ method: 'GET', url });
      assert.equal(r.statusCode, 503, url);
      assert.match(String(r.headers['content-type']), /^application\/json/);
      const body = r.json() as { code: string; message: string };
      assert.equal(body.code, 'SKEIN_E_DASHBOARD_NOT_BUILT');
      assert.equal(body.message, DASHBOARD_NOT_BUILT);
      assert.match(body.message, /npx vite build dashboard/);
    }
    const root = await app.inject({ method: 'GET', url: '/' });
    assert.equal(root.statusCode, 302);
    assert.equal(root.headers['location'], '/dashboard/');
  });

  test('serve the built UI with its security and cache headers', async (t) => {
    const built = await tempDir('skein-dashboard-built-');
    t.after(() => built.remove());
    await mkdir(join(built.path, 'assets'));
    await writeFile(join(built.path, 'index.html'), '<!doctype html><title>Skein dashboard</title><script type="module" src="./assets/index-abc123.js"></script>');
    await writeFile(join(built.path, 'assets', 'index-abc123.js'), 'console.log("hi");');
    // As the control plane's server has it (src/control/server.ts): "/dashboard" reaches the page's route.
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
    t.after(() => app.close());
    dashboardRoutes(app, { root: built.path });
    await app.ready();

    const page = await app.inject({ method: 'GET', url: '/dashboard/' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(page.body, /Skein dashboard/);
    assert.equal(page.headers['cache-control'], 'no-cache');
    const csp = String(page.headers['content-security-policy']);
    for (const part of ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) assert.ok(csp.includes(part), `CSP has ${part}: ${csp}`);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['referrer-policy'], 'no-referrer');

    const asset = await app.inject({ method: 'GET', url: '/dashboard/assets/index-abc123.js' });
    assert.equal(asset.statusCode, 200);
    assert.match(String(asset.headers['cache-control']), /immutable/);
    assert.ok(String(asset.headers['content-security-policy']).includes("default-src 'self'"));

    const bare = await app.inject({ method: 'GET', url: '/dashboard' });
    assert.equal(bare.statusCode, 301);
    assert.equal(bare.headers['location'], '/dashboard/');
    assert.equal((await app.inject({ method: 'GET', url: '/dashboard/nope.js' })).statusCode, 404);
  });

  test('the real build references nothing outside itself', () => {
    assertDashboardBuilt();
    const html = readFileSync(join(DEFAULT_DASHBOARD_ROOT, 'index.html'), 'utf8');
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(refs.some((r) => /^\.\/assets\/.+\.js$/.test(r)), `index.html loads a bundled script: ${refs.join(', ')}`);
    for (const r of refs) assert.ok(r.startsWith('./') || r.startsWith('data:'), `index.html refers to ${r}: only relative or data: URLs work offline and under a prefix`);
    const assets = readdirSync(join(DEFAULT_DASHBOARD_ROOT, 'assets'));
    for (const f of assets.filter((a) => a.endsWith('.css'))) {
      const css = readFileSync(join(DEFAULT_DASHBOARD_ROOT, 'assets', f), 'utf8');
      assert.doesNotMatch(css, /url\(\s*['"]?(https?:)?\/\//, `${f} loads nothing from elsewhere`);
      assert.doesNotMatch(css, /@import/, `${f} imports nothing`);
    }
  });
});
