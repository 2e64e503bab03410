// Workspace rules (.vscode/writ.json) as a developer meets them: code-server with the VSIX installed, driven by
// chromium, and `writ token` run as an agent against the window's broker. The file comes with the repository and
// agents can write it, so a rule applies only once the developer trusted that exact text with "Writ: Review and
// Trust Workspace Rules…": before that the request waits for the developer, after it the rule decides, and after
// any edit the developer is asked again.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchBrowser, reportOnFailure, runCommand, runWrit, SCREENSHOTS, startCodeServer, waitForWorkbench, windowBroker, waitUntil, workbenchUrl, writLog } from './harness';
import type { BrowserContext, CodeServer, Locator, Page, WindowBroker } from './harness';

const AUD = 'https://api.example.test';
const SCOPE = 'repo:read:acme/web';
const AGENT = 'e2e-ruled';
/** The lifetime each request asks for, and the rule's own: a token that lives RULE_TTL seconds was decided by the rule. */
const ASKED_TTL = 600;
const RULE_TTL = 120;
const UNTRUSTED_WARNING = 'holds 1 rule(s) you have not trusted in this form: none applies until you trust them';

let cs: CodeServer | undefined;
let context: BrowserContext | undefined;
let page: Page | undefined;
let broker: WindowBroker | undefined;

function writeRules(ttl: number): void {
  const rules = { rules: [{ agent: AGENT, audience: AUD, scopes: [SCOPE], mode: 'task', ttl }] };
  writeFileSync(join(cs!.workspace, '.vscode', 'writ.json'), JSON.stringify(rules, null, 2) + '\n');
}

beforeAll(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  cs = await startCodeServer({ name: 'rules' });
  // The repository arrives with a rule that would approve the agent's request without asking.
  mkdirSync(join(cs.workspace, '.vscode'), { recursive: true });
  writeRules(RULE_TTL);
  const browser = await launchBrowser(cs.stateDir);
  context = browser.context;
  page = browser.page;
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(workbenchUrl(cs), { timeout: 120_000 });
  await waitForWorkbench(page);
  broker = await windowBroker(cs);
}, 400_000);

afterAll(async () => {
  await context?.close().catch(() => {});
  await cs?.stop();
});

function dumpOnFailure(): void {
  reportOnFailure('failed-rules-', () => ({ cs, agents: [], page }));
}

/** `writ token` as the agent the rule names, asking for the rule's scope and audience with ASKED_TTL. */
function request(task: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runWrit(cs!, broker!, ['token', '--agent', AGENT, '--task', task, '--scope', SCOPE, '--aud', AUD, '--ttl', String(ASKED_TTL)]);
}

function approvalToast(task: string): Locator {
  return page!.locator('.notification-toast').filter({ hasText: `"${task}"` }).first();
}


/** Lines of the Writ output channel that contain `text`. */
const logLines = (text: string): string[] => writLog(cs!).split('\n').filter((l) => l.includes(text));

/** The request waits for the developer (its approval notification, with the usual buttons); Deny ends it. */
async function expectAskedThenDeny(task: string): Promise<void> {
  const pending = request(task);
  const toast = approvalToast(task);
  const first = await Promise.race([
    toast.waitFor({ state: 'visible', timeout: 120_000 }).then(() => 'asked', () => 'no prompt within 120 s'),
    pending.then((r) => `decided without asking (exit ${r.code})`),
  ]);
  expect(first).toBe('asked');
  expect((await toast.innerText()).replace(/\s+/g, ' ')).toContain(`? Asked by "${AGENT}" (cli) for "${task}".`);
  for (const label of ['Approve', 'Review…']) await toast.getByRole('button', { name: label, exact: true }).waitFor({ state: 'visible', timeout: 10_000 });
  await toast.getByRole('button', { name: 'Deny', exact: true }).click();
  const { code, stdout, stderr } = await pending;
  expect(stderr).toContain('(WRIT_DENIED)');
  expect(code).toBe(1);
  expect(stdout).toBe('');
  // The developer decided it, no rule did.
  expect(logLines(`"${task}"`).filter((l) => l.includes('approved by a workspace rule'))).toEqual([]);
  await waitUntil('the denial in the Writ output channel', 60_000, () => logLines(`denied: "${AGENT}"`).find((l) => l.includes(`"${task}"`)));
}

test('an untrusted rules file applies nothing: the request waits for the developer, who is told why', async () => {
  dumpOnFailure();
  await expectAskedThenDeny('read the docs');
  const warning = page!.locator('.notification-toast').filter({ hasText: 'its rules do not apply until you review and trust them' }).first();
  await warning.waitFor({ state: 'visible', timeout: 60_000 });
  await warning.getByRole('button', { name: 'Review Rules…', exact: true }).waitFor({ state: 'visible', timeout: 10_000 });
  await page!.screenshot({ path: join(SCREENSHOTS, 'rules-untrusted.png') });
  expect(logLines(UNTRUSTED_WARNING)).toHaveLength(1);
}, 600_000);

test('trusted with "Writ: Review and Trust Workspace Rules…", the rule decides the same request without a prompt', async () => {
  dumpOnFailure();
  await runCommand(page!, 'Writ: Review and Trust Workspace Rules…');
  const dialog = page!.locator('.monaco-dialog-box');
  await dialog.waitFor({ state: 'visible', timeout: 30_000 });
  const text = await dialog.innerText();
  expect(text).toContain('Trust the 1 rule(s) in .vscode/writ.json?');
  expect(text).toContain(`"${AGENT}" → "${AUD}": "${SCOPE}" (task, ${RULE_TTL} s)`);
  await page!.screenshot({ path: join(SCREENSHOTS, 'rules-trust-dialog.png') });
  await dialog.getByRole('button', { name: 'Trust', exact: true }).click();
  await page!.locator('.notification-toast').filter({ hasText: 'the workspace rules apply' }).first().waitFor({ state: 'visible', timeout: 30_000 });

  const task = 'read the docs again';
  const { code, stdout, stderr } = await request(task);
  expect(stderr).not.toContain('WRIT_');
  expect(code).toBe(0);
  // The token carries the rule's lifetime, not the one asked: the rule made the decision.
  const jwks = createRemoteJWKSet(new URL(`${broker!.httpUrl.replace(/\/$/, '')}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(stdout.trim(), jwks, { issuer: broker!.issuer, audience: AUD });
  expect(payload.scope).toBe(SCOPE);
  expect(payload.exp! - payload.iat!).toBe(RULE_TTL);
  // And the tamper-evident log says so: the approval is the rule's, not the developer's (durable before the token).
  const approved = readFileSync(broker!.auditPath, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"task.approved"'))
    .map((l) => JSON.parse(l) as { task?: { description?: string }; detail?: { by?: string; ttl?: number } })
    .filter((r) => r.task?.description === task);
  expect(approved.map((r) => r.detail)).toMatchObject([{ by: 'workspace-rule', ttl: RULE_TTL }]);
  await waitUntil('the rule decision in the Writ output channel', 60_000, () => logLines(`approved by a workspace rule: "${AGENT}"`).find((l) => l.includes(`"${task}"`)));
  // Decided before any prompt was made: none names the task.
  expect(await approvalToast(task).count()).toBe(0);
}, 600_000);

test('an edit to the trusted file (an agent giving itself hour-long tokens) makes it untrusted again: the request waits', async () => {
  dumpOnFailure();
  writeRules(3600);
  await expectAskedThenDeny('read the docs once more');
  // The developer is told again, once for this version of the file.
  expect(logLines(UNTRUSTED_WARNING)).toHaveLength(2);
  expect(logLines(`approved by a workspace rule: "${AGENT}"`)).toHaveLength(1);
}, 600_000);
