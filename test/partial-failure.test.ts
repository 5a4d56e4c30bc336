/**
 * Issue 12 §6, "never turn a partial failure into an outage", on the demo shop as a new user meets
 * it (`skein up examples/shop/shop.yaml`): pages of the frontend through the mesh's outbound
 * listener, product ids 1 to 7. Products 6 and 7 do not exist: product-service answers 404 and the
 * frontend, correctly, answers 502 naming it. Runs of those 502s must not take the frontend out:
 * every answer is one the frontend made itself (no x-skein-error, no 503 from the mesh) and every
 * valid page is a 200, with one frontend replica (ejected after five 502s in a row, then served
 * anyway in panic mode: the metrics, /debug/endpoints, the event feed and the dashboard, in
 * Debian's Chromium, say so) and with two.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { DEFAULT_DASHBOARD_ROOT } from '../src/control/dashboard.js';
import { api, metricSample, skein, waitFor } from './helpers.js';
import { portOf, startShop, type UpProcess } from './mesh-helpers.js';

/** 31 blocks of 13 pages: products 1-5, then eight invalid ones in a row (6, 7, 6, ...): 403 requests. */
const BLOCK = [1, 2, 3, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7];
const PRODUCTS = Array.from({ length: 31 }, () => BLOCK).flat();
const VALID = (id: number) => id <= 5;

interface Answer {
  product: number;
  status: number;
  skeinError: string | undefined;
  body: { product?: { id?: number }; service?: string; status?: number; served_by?: { frontend?: string } } | null;
}

/** GET http://frontend/api/page?... through the outbound listener (absolute form), one after the other. */
async function pages(outbound: string, products: readonly number[]): Promise<Answer[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out: Answer[] = [];
  try {
    for (let i = 0; i < products.length; i++) {
      const product = products[i] as number;
      const url = `http://frontend/api/page?user_id=${(i % 5) + 1}&product_id=${product}`;
      out.push(
        await new Promise<Answer>((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port: portOf(outbound), path: url, agent, timeout: 10_000 }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              let body: Answer['body'] = null;
              try {
                body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Answer['body'];
              } catch {
                /* not JSON: the assertions say so */
              }
              const h = res.headers['x-skein-error'];
              resolve({ product, status: res.statusCode ?? 0, skeinError: Array.isArray(h) ? h.join(',') : h, body });
            });
            res.on('error', reject);
          });
          req.on('timeout', () => req.destroy(new Error(`no answer to ${url} within 10 s`)));
          req.on('error', reject);
          req.end();
        }),
      );
    }
  } finally {
    agent.destroy();
  }
  return out;
}

/** Every answer is the frontend's own: 200 with the product for 1-5, 502 naming product-service's 404 for 6 and 7. */
function assertAppAnswers(answers: readonly Answer[]): void {
  const mesh = answers.filter((a) => a.skeinError !== undefined || a.status === 503);
  assert.deepEqual(mesh.slice(0, 5), [], `${mesh.length} of ${answers.length} answers were made by the mesh`);
  const wrong = answers.filter((a) =>
    VALID(a.product) ? a.status !== 200 || a.body?.product?.id !== a.product : a.status !== 502 || a.body?.service !== 'product-service' || a.body?.status !== 404,
  );
  assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} of ${answers.length} answers are not the frontend's (200 with the product, or 502 naming product-service's 404)`);
  assert.equal(answers.filter((a) => a.status === 200).length, answers.filter((a) => VALID(a.product)).length, 'every valid page succeeded');
}

async function metrics(up: UpProcess): Promise<string> {
  const r = await fetch(`http://${up.admin}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}

async function frontendState(up: UpProcess): Promise<{ endpoints: unknown[]; traffic: { panic: { panicking: boolean; picks: number; lastDecision: object | null } } }> {
  const r = await api(`http://${up.admin}`, 'GET', '/debug/endpoints');
  assert.equal(r.status, 200);
  return r.body.services.frontend;
}

async function panicEvents(up: UpProcess): Promise<Array<Record<string, unknown>>> {
  const r = await api(up.control, 'GET', '/v1/events?type=panic&service=frontend');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.events;
}

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium'].find((p) => existsSync(p));

/** The dashboard in Chromium: until the frontend's row shows `want` panic badges (0 or 1); then, when `note`, the note in its detail. */
async function dashboardPanic(up: UpProcess, want: number, note: boolean): Promise<void> {
  assert.ok(CHROMIUM !== undefined, "Chromium is not installed: run scripts/setup.sh, which installs Debian's chromium package");
  assert.ok(existsSync(join(DEFAULT_DASHBOARD_ROOT, 'index.html')), 'the dashboard is not built: run npx vite build dashboard (scripts/setup.sh does)');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  try {
    const page = await browser.newPage();
    await page.goto(`${up.control}/dashboard/`);
    await waitFor(async () => (await page.locator('[data-testid="service-row-frontend"]').count()) === 1, { timeoutMs: 15_000, intervalMs: 100, what: "the frontend's row" });
    // The panic events are fetched on connection: once the feed shows events, they are in.
    await waitFor(async () => (await page.locator('[data-testid="event"]').count()) > 0, { timeoutMs: 15_000, intervalMs: 100, what: 'the recent events' });
    const badge = page.locator('[data-testid="service-row-frontend"] [data-testid="panic"]');
    await waitFor(async () => (await badge.count()) === want, { timeoutMs: 15_000, intervalMs: 100, what: `${want} panic badge(s) in the frontend's row` });
    if (want > 0) assert.match((await badge.getAttribute('title')) ?? '', /^frontend is in panic mode in proxy \S+: 0 of 1 instances may take traffic/);
    if (!note) return;
    await page.goto(`${up.control}/dashboard/#/services/frontend`);
    const text = page.locator('[data-testid="panic-note"]');
    await waitFor(async () => (await text.count()) === 1, { timeoutMs: 15_000, intervalMs: 100, what: "the panic note in the frontend's detail" });
    assert.match(await text.innerText(), /^In panic mode: .*\n?.*0 of 1 instances may take traffic \(1 ejected, 0 failing active checks\)/s);
  } finally {
    await browser.close();
  }
}

/** `skein scale frontend N`, then until the proxy's frontend has N endpoints. */
async function scaleFrontend(up: UpProcess, n: number): Promise<void> {
  const r = await skein(['scale', 'frontend', String(n), '-c', up.control], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, `skein scale frontend ${n}: ${r.stdout}${r.stderr}`);
  const m = await api(up.control, 'GET', '/v1/mesh');
  for (const s of m.body.services as Array<{ instances: Array<{ pid: number | null }> }>) for (const i of s.instances) if (i.pid !== null) up.pids.add(i.pid);
  await waitFor(async () => (await frontendState(up)).endpoints.length === n, { timeoutMs: 15_000, what: `the proxy to know ${n} frontend instances` });
}

describe("a client's bad input does not become an outage (the demo shop, products 1-7)", () => {
  test('one frontend replica: ejected after five 502s in a row, it still serves every page in panic mode; the metrics, /debug/endpoints, the feed and the dashboard say so; a second replica ends the panic', async (t) => {
    const up = await startShop({ expect: ['admin', 'outbound'] });
    t.after(() => up.stop());
    const t0 = Date.now();
    const answers = await pages(up.outbound, PRODUCTS);
    t.diagnostic(`${answers.length} pages in ${Date.now() - t0} ms`);
    assert.ok(answers.length >= 400);
    assertAppAnswers(answers);

    const text = await metrics(up);
    const m = (s: string) => metricSample(text, s) ?? 0;
    assert.equal(m('skein_proxy_outlier_events_total{service="frontend",event="eject"}'), 1, 'ejected once, at the fifth 502 of the first run');
    assert.equal(m('skein_proxy_outlier_events_total{service="frontend",event="return"}'), 0, 'the run took less than the 30 s ejection');
    assert.equal(m('skein_proxy_panicking{service="frontend"}'), 1);
    assert.equal(m('skein_proxy_panic_transitions_total{service="frontend",to="panic"}'), 1);
    // Ejected at the 10th page (5 valid, then the 5th invalid one); every later page was picked in panic.
    assert.equal(m('skein_proxy_panic_total{service="frontend"}'), answers.length - 10, 'every page after the ejection was sent in panic mode');
    assert.equal(m('skein_proxy_retries_total{service="frontend",reason="status"}'), 0, "the frontend's 502s are not retried");
    assert.equal(m('skein_proxy_breaker_transitions_total{service="frontend",to="open"}'), 0, "the frontend's 502s do not open its breaker");
    const debug = await frontendState(up);
    assert.deepEqual(debug.traffic.panic, {
      panicking: true,
      threshold: 50,
      picks: answers.length - 10,
      lastDecision: { endpoints: 1, available: 0, ejected: 1, failingActiveChecks: 0, threshold: 50 },
    });
    const entered = (await waitFor(async () => (await panicEvents(up)).find((e) => e['state'] === 'entered') ?? null, { timeoutMs: 15_000, what: 'the panic event in the feed' })) as Record<string, unknown>;
    assert.deepEqual(
      { id: entered['id'], endpoints: entered['endpoints'], available: entered['available'], ejected: entered['ejected'], threshold: entered['threshold'] },
      { id: null, endpoints: 1, available: 0, ejected: 1, threshold: 50 },
    );
    assert.match(String(entered['message']), /^frontend is in panic mode in proxy \S+: 0 of 1 instances may take traffic \(1 ejected, 0 failing active checks\)/);
    await dashboardPanic(up, 1, true);

    // A second replica: 1 of 2 may take traffic, which is not below 50%: out of panic, and the
    // ejected one gets nothing until its 30 s are over.
    await scaleFrontend(up, 2);
    const more = await pages(up.outbound, [1, 2, 3, 4, 5]);
    assertAppAnswers(more);
    assert.deepEqual(new Set(more.map((a) => a.body?.served_by?.frontend)), new Set(['frontend-2']), 'the ejected replica is skipped again');
    const after = await metrics(up);
    assert.equal(metricSample(after, 'skein_proxy_panicking{service="frontend"}'), 0);
    assert.equal(metricSample(after, 'skein_proxy_panic_transitions_total{service="frontend",to="normal"}'), 1);
    assert.equal(metricSample(after, 'skein_proxy_panic_total{service="frontend"}'), answers.length - 10, 'no pick in panic since');
    const left = (await waitFor(async () => (await panicEvents(up)).find((e) => e['state'] === 'left') ?? null, { timeoutMs: 15_000, what: 'the end of the panic in the feed' })) as Record<string, unknown>;
    assert.deepEqual({ endpoints: left['endpoints'], available: left['available'] }, { endpoints: 2, available: 1 });
    await dashboardPanic(up, 0, false);
  });

  test('two frontend replicas: every page the frontend made, every valid one a 200, no panic', async (t) => {
    const up = await startShop({ expect: ['admin', 'outbound'] });
    t.after(() => up.stop());
    await scaleFrontend(up, 2);
    const answers = await pages(up.outbound, PRODUCTS);
    assert.ok(answers.length >= 400);
    assertAppAnswers(answers);
    const served = new Set(answers.filter((a) => a.status === 200).map((a) => a.body?.served_by?.frontend));
    assert.deepEqual([...served].sort(), ['frontend-1', 'frontend-2'], 'both replicas served pages');
    const text = await metrics(up);
    t.diagnostic(`ejections of a frontend replica: ${metricSample(text, 'skein_proxy_outlier_events_total{service="frontend",event="eject"}') ?? 0}`);
    assert.equal(metricSample(text, 'skein_proxy_panicking{service="frontend"}'), 0, 'at most one of two is ejected (maxEjectionPercent keeps one): never below 50%');
    assert.equal(metricSample(text, 'skein_proxy_panic_total{service="frontend"}'), 0);
    assert.equal(metricSample(text, 'skein_proxy_breaker_transitions_total{service="frontend",to="open"}') ?? 0, 0);
  });
});
