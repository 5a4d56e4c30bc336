/**
 * What the dashboard's browser tests share: Debian's Chromium (driven by playwright-core), a
 * check that the dashboard is built, screenshots into test-artifacts/, and a watch on what a
 * page did wrong.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEFAULT_DASHBOARD_ROOT } from '../src/control/dashboard.js';
import { ROOT } from './helpers.js';

const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium'];

/** Debian's Chromium; fails the test, saying what to do, when it is missing. */
export function chromiumPath(): string {
  const found = CHROMIUM_CANDIDATES.find((p) => existsSync(p));
  assert.ok(found !== undefined, `Chromium is not installed (looked for ${CHROMIUM_CANDIDATES.join(', ')}): run scripts/setup.sh, which installs Debian's chromium package`);
  return found;
}

export function assertDashboardBuilt(): void {
  assert.ok(existsSync(join(DEFAULT_DASHBOARD_ROOT, 'index.html')), `the dashboard is not built (no ${DEFAULT_DASHBOARD_ROOT}/index.html): run npx vite build dashboard (scripts/setup.sh does)`);
}

/** Headless Chromium, once Chromium and the built dashboard are found. */
export async function launch(): Promise<Browser> {
  const executablePath = chromiumPath();
  assertDashboardBuilt();
  return chromium.launch({ executablePath, args: ['--no-sandbox'], headless: true });
}

/** test-artifacts/<name>.png, the whole page. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** What a page did wrong: console errors, uncaught exceptions, failed requests, HTTP errors, other origins; and the paths it got answers for. */
export interface PageProblems {
  console: string[];
  exceptions: string[];
  failed: string[];
  httpErrors: string[];
  foreign: string[];
  requests: number;
  responses: string[];
}

/** Watches `page`; `origin`: requests elsewhere count as foreign. */
export function watchPage(page: Page, origin: string | null = null): PageProblems {
  const p: PageProblems = { console: [], exceptions: [], failed: [], httpErrors: [], foreign: [], requests: 0, responses: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') p.console.push(m.text());
  });
  page.on('pageerror', (e) => p.exceptions.push(e.message));
  page.on('request', (r) => {
    p.requests++;
    const url = r.url();
    if (origin !== null && !url.startsWith(`${origin}/`) && !url.startsWith('data:')) p.foreign.push(url);
  });
  page.on('requestfailed', (r) => p.failed.push(`${r.url()}: ${r.failure()?.errorText ?? '?'}`));
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    p.responses.push(path);
    if (r.status() >= 400) p.httpErrors.push(`${r.status()} ${origin === null ? path : r.url()}`);
  });
  return p;
}
