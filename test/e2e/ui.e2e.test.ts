// The UI as a person sees it: code-server (without the smoke-test driver, so toasts show) with the VSIX
// installed, driven by chromium. Screenshots go to test-results/screenshots/ (git-ignored).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, onTestFailed, test } from 'vitest';
import { launchBrowser, SCREENSHOTS, startCodeServer, waitForWorkbench, workbenchUrl } from './harness';
import type { BrowserContext, CodeServer, Page } from './harness';
import { PENDING, pendingTitle } from './pending';

let cs: CodeServer | undefined;
let context: BrowserContext | undefined;
let page: Page | undefined;

beforeAll(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  cs = await startCodeServer({ name: 'ui' });
  const browser = await launchBrowser(cs.stateDir);
  context = browser.context;
  page = browser.page;
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
}, 300_000);

afterAll(async () => {
  await context?.close().catch(() => {});
  await cs?.stop();
});

function dumpServerLogOnFailure(): void {
  onTestFailed(() => console.log(`--- code-server (${cs?.stateDir}) ---\n${cs?.log() ?? ''}`));
}

test('the workbench loads with the Writ VSIX installed', async () => {
  dumpServerLogOnFailure();
  const t0 = Date.now();
  await page!.goto(workbenchUrl(cs!), { timeout: 120_000 });
  await waitForWorkbench(page!);
  console.log(`e2e timings: workbench visible ${Date.now() - t0} ms after navigation`);
  // The status bar is the last part to render; let the extension activate (onStartupFinished, ~10 s).
  await page!.locator('.statusbar').first().waitFor({ state: 'visible', timeout: 120_000 });
  await page!.waitForTimeout(500);
  await page!.screenshot({ path: join(SCREENSHOTS, 'workbench.png') });
  expect(await page!.locator('.monaco-workbench').count()).toBeGreaterThan(0);
}, 300_000);

test.skipIf(PENDING.statusBar)(pendingTitle('statusBar', 'the status bar shows a Writ item'), async () => {
  dumpServerLogOnFailure();
  // Poll rather than wait once: the workbench re-lays the status bar out while it starts (a transient progress
  // entry such as "Saving 'settings.json'" can stand in the way for a moment).
  const deadline = Date.now() + 120_000;
  let texts: string[] = [];
  for (;;) {
    texts = (await page!.locator('.statusbar-item').allTextContents()).map((t) => t.trim());
    if (texts.some((t) => t.includes('Writ')) || Date.now() > deadline) break;
    await page!.waitForTimeout(250);
  }
  await page!.waitForTimeout(500);
  await page!.screenshot({ path: join(SCREENSHOTS, 'statusbar.png') });
  console.log(`status bar items: ${JSON.stringify(texts)}`);
  expect(texts.some((t) => t.includes('Writ')), `status bar items: ${JSON.stringify(texts)}`).toBe(true);
}, 300_000);

test.skipIf(PENDING.statusBar)(pendingTitle('statusBar', 'the status bar item turns to the running state (shield icon)'), async () => {
  dumpServerLogOnFailure();
  // statusModel: `$(loading~spin) Writ` while the broker starts, `$(shield) Writ` once it runs.
  const running = page!.locator('.statusbar-item:has(.codicon-shield)').filter({ hasText: 'Writ' }).first();
  try {
    await running.waitFor({ state: 'visible', timeout: 120_000 });
  } finally {
    await page!.screenshot({ path: join(SCREENSHOTS, 'statusbar-running.png') });
  }
}, 300_000);
