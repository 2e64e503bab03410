// Runs the mocha suite in test/e2e/suite inside code-server's extension host (the standard extensionTestsPath
// runner, through the smoke-test driver) against the extension installed from the VSIX.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { format } from 'node:util';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildSuite, launchBrowser, ROOT, SCREENSHOTS, startCodeServer, waitForWorkbench, workbenchUrl } from './harness';
import type { BrowserContext, CodeServer } from './harness';

let cs: CodeServer | undefined;
let context: BrowserContext | undefined;

beforeAll(() => {
  mkdirSync(SCREENSHOTS, { recursive: true });
});

afterAll(async () => {
  await context?.close().catch(() => {});
  await cs?.stop();
});

test('the in-editor mocha suite passes in code-server', async () => {
  const t0 = Date.now();
  const suite = await buildSuite();
  cs = await startCodeServer({ name: 'mocha', smokeTestDriver: true });
  const tServer = Date.now();
  const browser = await launchBrowser(cs.stateDir);
  context = browser.context;
  const { page } = browser;

  const lines: string[] = [];
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  await context.exposeFunction('codeAutomationLog', (type: string, args: unknown[]) => {
    // The console call's arguments: mocha's reporter logs printf-style ('%d passing (%s)', 4, '4s').
    const text = format(...(Array.isArray(args) ? args : [args]));
    lines.push(text);
    process.stdout.write(`[ext host ${type}] ${text}\n`);
  });
  await context.exposeFunction('codeAutomationExit', (code: number) => resolveExit(code));

  await page.goto(
    workbenchUrl(cs, { extensionDevelopmentPath: cs.installedExtension, extensionTestsPath: suite.replace(/\.js$/, '') }),
    { timeout: 120_000 },
  );
  await waitForWorkbench(page);
  const tWorkbench = Date.now();

  const code = await Promise.race([
    exit,
    new Promise<number>((_, reject) =>
      setTimeout(() => reject(new Error(`the in-editor suite did not finish within 10 min; output so far:\n${lines.join('\n')}\n--- code-server ---\n${cs?.log()}`)), 600_000),
    ),
  ]);
  const tDone = Date.now();
  await page.screenshot({ path: join(SCREENSHOTS, 'in-editor-suite.png') }).catch(() => {});
  // Timings are printed for people, never asserted.
  console.log(
    `e2e timings: code-server up (VSIX installed) ${tServer - t0} ms, workbench ${tWorkbench - tServer} ms, suite ${tDone - tWorkbench} ms (${ROOT})`,
  );
  const output = lines.join('\n');
  expect(code, `the in-editor suite failed:\n${output}\n--- code-server ---\n${cs.log()}`).toBe(0);
  // A run that loaded no test must not pass.
  expect(output).toMatch(/\b[1-9]\d* passing\b/);
});
