// The audit panel under load, as a person sees it: code-server with the VSIX installed, driven by chromium. A real
// agent (`writ exec … -- node agent.mjs`, approved by a workspace rule) mints 30,000 tokens through the window's
// broker, so the log is real and its chain verifies; then the panel opens on it. Asserted: a bounded number of row
// elements, the last record's exact content at the end, exact filter counts, the chain status, findings with Stop
// agent and Dismiss, Stop only for live agents, a record written after opening showing up as a row, and the panel
// opened on a broker stopped with SIGSTOP: the log on disk and the not-answering note, then live records again.
// Printed, never asserted: write → row latency, and the webview's long tasks and CPU while a 20 ms agent runs.
// WRIT_E2E_PANEL_RECORDS changes the number of tokens minted (default 30,000).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { buildAgent, launchBrowser, reportOnFailure, runCommand, SCREENSHOTS, startCodeServer, waitForWorkbench, windowBroker, waitUntil, workbenchUrl } from './harness';
import type { BrowserContext, CodeServer, FrameLocator, Locator, Page, WindowBroker } from './harness';
import type { AgentEvent } from './agent';
import type { AuditRecord } from '../../broker/protocol';
import { rowCells } from '../../extension/auditFilter';
import { BROKER_SILENT_NOTE } from '../../extension/auditRows';

const AUD = 'https://api.example.test';
const SCOPE = 'repo:read:acme/web';
const BULK = Number(process.env.WRIT_E2E_PANEL_RECORDS) || 30_000;
/** Each window the 20 ms agent is measured in (panel visible, then hidden). */
const MEASURE_MS = 15_000;
/** Rows a virtualised list may hold in the DOM: a window of ~40 visible rows plus overscan, never thousands. */
const MAX_DOM_ROWS = 120;

// playwright-core calls this file uses beyond the harness's typed subset.
interface Frame {
  url(): string;
  evaluate<R, A>(f: (arg: A) => R, arg: A): Promise<R>;
}
interface CDPSession {
  send(method: string, params?: Record<string, unknown>): Promise<unknown>;
}
type FullPage = Page & { frames(): Frame[]; context(): { newCDPSession(p: Page): Promise<CDPSession> } };
type FullLocator = Locator & { selectOption(value: string): Promise<unknown>; fill(value: string): Promise<void> };

let cs: CodeServer | undefined;
let context: BrowserContext | undefined;
let page: FullPage | undefined;
let broker: WindowBroker | undefined;
let agentScript = '';
const agents: AgentRun[] = [];
let bulk: AgentRun | undefined;
let bulkId = '';

beforeAll(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  agentScript = await buildAgent();
  cs = await startCodeServer({ name: 'panel' });
  // Both agents are approved by a workspace rule: this test is about the panel, not the prompt.
  mkdirSync(join(cs.workspace, '.vscode'), { recursive: true });
  writeFileSync(
    join(cs.workspace, '.vscode', 'writ.json'),
    JSON.stringify({ rules: ['e2e-bulk', 'e2e-busy', 'e2e-late'].map((agent) => ({ agent, audience: AUD, scopes: [SCOPE], mode: 'task' })) }, null, 2),
  );
  const browser = await launchBrowser(cs.stateDir);
  context = browser.context;
  page = browser.page as FullPage;
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(workbenchUrl(cs), { timeout: 120_000 });
  await waitForWorkbench(page);
  broker = await windowBroker(cs);
  // A rules file the editor has not seen trusted applies nothing: the developer reviews and trusts it once.
  await runCommand(page, 'Writ: Review and Trust Workspace Rules…');
  const dialog = page.locator('.monaco-dialog-box');
  await dialog.waitFor({ state: 'visible', timeout: 30_000 });
  expect(await dialog.innerText()).toContain('"e2e-bulk"');
  await dialog.getByRole('button', { name: 'Trust', exact: true }).click();
  await page.locator('.notification-toast').filter({ hasText: 'the workspace rules apply' }).first().waitFor({ state: 'visible', timeout: 30_000 });
}, 400_000);

afterAll(async () => {
  for (const a of agents) a.kill();
  await context?.close().catch(() => {});
  await cs?.stop();
});

function dumpOnFailure(): void {
  reportOnFailure('failed-panel-', () => ({ cs, agents, page }), 5000);
}

interface AgentRun {
  name: string;
  exited: Promise<number | null>;
  running(): boolean;
  events(): (AgentEvent & { t: number })[];
  output(): string;
  kill(): void;
}

function startAgent(name: string, env: Record<string, string>): AgentRun {
  const eventsFile = join(cs!.stateDir, `agent-${name}.jsonl`);
  const writ = join(cs!.installedExtension, 'dist', 'writ.mjs');
  const args = [writ, 'exec', '--agent', name, '--task', `panel load ${name}`, '--scope', SCOPE, '--aud', AUD, '--', process.execPath, agentScript, eventsFile];
  const child: ChildProcess = spawn(process.execPath, args, {
    env: { ...cs!.env, WRIT_BROKER: `unix:${broker!.socketPath}`, WRIT_RUNTIME_DIR: broker!.runtimeDir, WRIT_E2E_AGENT_NAME: name, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const run: AgentRun = {
    name,
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
    output: () => out,
    events: () =>
      existsSync(eventsFile)
        ? readFileSync(eventsFile, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as AgentEvent & { t: number })
        : [],
    kill: () => {
      if (run.running()) child.kill('SIGTERM');
    },
  };
  agents.push(run);
  return run;
}


/** The window broker's audit log, read back (complete lines only: the broker may be writing). */
function auditRecords(): AuditRecord[] {
  const text = readFileSync(broker!.auditPath, 'utf8');
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditRecord);
}

/** Records appended after byte `offset` of the log: cheap to poll where the whole file is 30 MB. */
function auditRecordsFrom(offset: number): AuditRecord[] {
  const text = readFileSync(broker!.auditPath).subarray(offset).toString('utf8');
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditRecord);
}

function auditFrame(): FrameLocator {
  return page!.frameLocator('iframe.webview').frameLocator('#active-frame');
}

/** The webview document itself (the inner frame holding #viewport), for measurements and scrolling. */
async function panelFrame(): Promise<Frame> {
  return waitUntil('the audit panel frame', 60_000, async () => {
    for (const f of page!.frames()) {
      const ok = await f.evaluate(() => document.getElementById('viewport') !== null && document.getElementById('spacer') !== null, undefined).catch(() => false);
      if (ok) return f;
    }
    return undefined;
  });
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time by function and by script, top entries: where the renderer's time went. */
function printProfile({ profile }: { profile: CpuProfile }): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const fn = new Map<string, number>();
  const script = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const cf = byId.get(id)!;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    const file = cf.url ? cf.url.replace(/[?#].*$/, '').split('/').slice(-2).join('/') : cf.functionName;
    fn.set(`${cf.functionName || '(anonymous)'} ${file}:${cf.lineNumber}`, (fn.get(`${cf.functionName || '(anonymous)'} ${file}:${cf.lineNumber}`) ?? 0) + ms);
    script.set(file, (script.get(file) ?? 0) + ms);
  });
  const top = (m: Map<string, number>, n: number): string =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `  ${Math.round(v)} ms  ${k}`)
      .join('\n');
  console.log(`panel e2e: renderer CPU profile, self time by script:\n${top(script, 12)}\nby function:\n${top(fn, 25)}`);
}

async function countText(): Promise<string> {
  return (await auditFrame().locator('#count').textContent({ timeout: 10_000 })) ?? '';
}

/** Waits until the panel's count reads "<shown> of <held> records" (or "<held> records") for the log as it is now. */
async function waitForCount(what: string, shown: (rs: AuditRecord[]) => number | undefined): Promise<void> {
  let last = '';
  await waitUntil(`${what} (count reads "${last}")`, 120_000, async () => {
    const rs = auditRecords();
    const n = shown(rs) ?? rs.length;
    last = await countText();
    return last === (n === rs.length ? `${rs.length} records` : `${n} of ${rs.length} records`);
  });
}

async function rowCellsInDom(row: Locator): Promise<string[]> {
  return (await row.locator('span').allTextContents()).slice(0, 6);
}

async function domRows(): Promise<number> {
  return auditFrame().locator('#spacer .row').count();
}

function select(id: string): FullLocator {
  return auditFrame().locator(`#${id}`) as FullLocator;
}

async function setFilter(agent: string, event: string, text: string): Promise<void> {
  await select('agent').selectOption(agent);
  await select('event').selectOption(event);
  await select('text').fill(text);
}

test(`a log of ${BULK} records: bounded rows, the last record at the end, exact filter counts, the chain verifies`, async () => {
  dumpOnFailure();
  bulk = startAgent('e2e-bulk', { WRIT_E2E_MINT_COUNT: String(BULK), WRIT_E2E_MINT_CONCURRENCY: '8' });
  const done = await waitUntil(`the agent to mint ${BULK} tokens`, 1_200_000, () => {
    const ev = bulk!.events();
    const refused = ev.find((e) => e.type === 'refused');
    if (refused) throw new Error(`the bulk agent was refused: ${JSON.stringify(refused)}\n${bulk!.output()}`);
    return ev.find((e): e is Extract<AgentEvent, { type: 'done' }> & { t: number } => e.type === 'done');
  });
  console.log(`panel e2e: ${done.count} tokens minted in ${done.ms} ms (${Math.round((done.count * 1000) / done.ms)}/s) by a real agent`);
  expect(done.count).toBe(BULK);
  bulkId = auditRecords().find((r) => r.event === 'task.requested' && r.agent?.name === 'e2e-bulk')!.agent!.id;

  const t0 = Date.now();
  await runCommand(page!, 'Writ: Open Audit Panel');
  const frame = auditFrame();
  await waitForCount('the whole log in the panel', () => undefined);
  console.log(`panel e2e: ${auditRecords().length} records loaded into the panel ${Date.now() - t0} ms after the command`);
  await frame.locator('#verify[data-state="intact"]').waitFor({ state: 'visible', timeout: 300_000 });
  expect(await frame.locator('#verify').innerText()).toBe('✓ Chain verifies');

  // Virtualised: a window of rows, not the log.
  const inDom = await domRows();
  expect(inDom).toBeGreaterThan(10);
  expect(inDom).toBeLessThanOrEqual(MAX_DOM_ROWS);

  // To the top (the first record), then to the end: the last record's exact content.
  const pf = await panelFrame();
  await pf.evaluate(() => {
    document.getElementById('viewport')!.scrollTop = 0;
  }, undefined);
  const first = auditRecords()[0]!;
  expect(await rowCellsInDom(frame.locator(`.row[data-seq="${first.seq}"]`))).toEqual(rowCells(first));
  await pf.evaluate(() => {
    const v = document.getElementById('viewport')!;
    v.scrollTop = v.scrollHeight;
  }, undefined);
  // The broker may still sign a checkpoint after the last mint: compare with the log's last line as it is then.
  let lastSeen: AuditRecord | undefined;
  await waitUntil('the last record of the log as the last row', 60_000, async () => {
    const last = auditRecords().at(-1)!;
    const row = frame.locator(`.row[data-seq="${last.seq}"]`);
    if ((await row.count()) !== 1) return false;
    const cells = await rowCellsInDom(row);
    lastSeen = last;
    return JSON.stringify(cells) === JSON.stringify(rowCells(last));
  });
  expect(await rowCellsInDom(frame.locator(`.row[data-seq="${lastSeen!.seq}"]`))).toEqual(rowCells(lastSeen!));
  expect(await domRows()).toBeLessThanOrEqual(MAX_DOM_ROWS);
  await page!.screenshot({ path: join(SCREENSHOTS, 'panel-30k-end.png') });

  // Filters give the exact counts the log has.
  const ofBulk = (r: AuditRecord): boolean => r.agent?.id === bulkId || (r.agent?.parents.includes(bulkId) ?? false);
  await setFilter(bulkId, 'token.minted', '');
  await waitForCount('agent + event filter', (rs) => rs.filter((r) => ofBulk(r) && r.event === 'token.minted').length);
  const minted = auditRecords().filter((r) => ofBulk(r) && r.event === 'token.minted');
  expect(minted.length).toBe(BULK + 1); // the first token came with the approval
  const middle = minted[Math.floor(minted.length / 2)]!;
  await setFilter('', '', middle.jti!);
  await waitForCount('text filter on one jti', () => 1);
  expect(await frame.locator('#spacer .row').count()).toBe(1);
  expect(await frame.locator('#spacer .row').first().getAttribute('data-seq')).toBe(String(middle.seq));
  await setFilter('', 'checkpoint', '');
  await waitForCount('event filter', (rs) => rs.filter((r) => r.event === 'checkpoint').length);
  expect(auditRecords().filter((r) => r.event === 'checkpoint').length).toBeGreaterThanOrEqual(Math.floor(BULK / 1000));
  await setFilter('', '', '');
  await waitForCount('no filter', () => undefined);
}, 1_500_000);

test('a finding stands out with the kind in words, Dismiss is audited, Stop agent ends the agent and its Stop buttons', async () => {
  dumpOnFailure();
  expect(bulkId).not.toBe('');
  const frame = auditFrame();
  // Minting thousands a second is a mint burst for the watch: it warns, and the panel shows it.
  const findings = auditRecords().filter((r) => r.event === 'finding' && r.agent?.id === bulkId);
  expect(findings.length).toBeGreaterThan(0);
  const f = findings[0]!;
  const fid = String(f.detail!.id);
  expect(f.detail!.kind).toBe('mint-burst');
  await setFilter('', 'finding', '');
  await waitForCount('findings only', (rs) => rs.filter((r) => r.event === 'finding').length);
  const row = frame.locator(`.row.finding[data-finding-id="${fid}"]`);
  await row.waitFor({ state: 'visible', timeout: 30_000 });
  expect(await row.locator('.event').innerText()).toBe('Burst of token minting');
  expect(await row.locator('.detail').innerText()).toMatch(/^Burst of token minting: mints \d+ · windowMs 10000 · baselinePerWindow \d+ · warned$/);
  // The theme's warning colour, not the default text colour.
  const colours = await (await panelFrame()).evaluate((id: string) => {
    const probe = document.createElement('span');
    probe.style.color = 'var(--vscode-editorWarning-foreground)';
    document.body.append(probe);
    const warning = getComputedStyle(probe).color;
    probe.remove();
    const ev = document.querySelector(`.row.finding[data-finding-id="${id}"] .event`)!;
    return { warning, event: getComputedStyle(ev).color, body: getComputedStyle(document.body).color };
  }, fid);
  expect(colours.event).toBe(colours.warning);
  expect(colours.event).not.toBe(colours.body);
  const stop = row.getByRole('button', { name: 'Stop agent', exact: true });
  const dismiss = row.getByRole('button', { name: 'Dismiss', exact: true });
  await stop.waitFor({ state: 'visible', timeout: 60_000 });
  await dismiss.waitFor({ state: 'visible', timeout: 10_000 });
  await page!.screenshot({ path: join(SCREENSHOTS, 'panel-finding.png') });

  // Dismiss: the broker audits it, and the row says so.
  await dismiss.click();
  const dismissed = await waitUntil('the finding.dismissed record', 60_000, () => auditRecords().find((r) => r.event === 'finding.dismissed' && r.detail?.id === fid));
  expect(dismissed.detail).toMatchObject({ id: fid, kind: 'mint-burst', by: 'ipc' });
  await row.locator('.note').filter({ hasText: 'Dismissed' }).waitFor({ state: 'visible', timeout: 60_000 });
  expect(await row.getByRole('button', { name: 'Dismiss', exact: true }).count()).toBe(0);

  // Stop agent: revoked through the existing path, `writ exec` ends it, and its rows offer Stop no more.
  await stop.click();
  const revoked = await waitUntil('the agent to be revoked', 60_000, () => auditRecords().find((r) => r.event === 'revoked' && (r.detail as { target?: { id?: string } } | undefined)?.target?.id === bulkId));
  expect(revoked.outcome).toBe('success');
  await Promise.race([bulk!.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('`writ exec` did not end after Stop agent')), 60_000))]);
  await setFilter(bulkId, '', '');
  await waitUntil('no Stop button for the stopped agent', 60_000, async () => (await frame.locator(`.row[data-agent-id="${bulkId}"] button`).count()) === 0);
  expect(await frame.locator(`.row[data-agent-id="${bulkId}"]`).count()).toBeGreaterThan(0);
  await setFilter('', '', '');
}, 600_000);

test('a record written after opening appears as a row; the webview under a 20 ms agent (printed)', async () => {
  dumpOnFailure();
  const pf = await panelFrame();
  // Follow the newest rows, note when each row first enters the DOM, and count the webview's long tasks.
  await pf.evaluate(() => {
    const v = document.getElementById('viewport')!;
    v.scrollTop = v.scrollHeight;
    const w = window as unknown as {
      __rowSeen: Record<string, number>;
      __rowFirst: Record<string, { cells: string[]; buttons: string[] }>;
      __long: { count: number; ms: number; max: number };
    };
    w.__rowSeen = {};
    w.__rowFirst = {};
    w.__long = { count: 0, ms: 0, max: 0 };
    // A live row passes through the window in a second or two: note its time and what it showed as it came in.
    new MutationObserver((ms) => {
      const now = Date.now();
      for (const m of ms) {
        for (const n of Array.from(m.addedNodes)) {
          if (!(n instanceof HTMLElement) || !n.dataset.seq || n.dataset.seq in w.__rowSeen) continue;
          w.__rowSeen[n.dataset.seq] = now;
          w.__rowFirst[n.dataset.seq] = {
            cells: Array.from(n.querySelectorAll(':scope > span')).slice(0, 6).map((c) => c.textContent ?? ''),
            buttons: Array.from(n.querySelectorAll('button')).map((b) => b.textContent ?? ''),
          };
        }
      }
    }).observe(document.getElementById('spacer')!, { childList: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        w.__long.count++;
        w.__long.ms += e.duration;
        w.__long.max = Math.max(w.__long.max, e.duration);
      }
    }).observe({ type: 'longtask' });
  }, undefined);
  // The webview's frames run in the workbench's renderer (no separate target): these metrics are that process's.
  const cdp = await page!.context().newCDPSession(page!);
  await cdp.send('Performance.enable');
  const metrics = async (): Promise<Record<string, number>> =>
    Object.fromEntries(((await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] }).metrics.map((m) => [m.name, m.value]));

  const offset = statSync(broker!.auditPath).size;
  const busy = startAgent('e2e-busy', { WRIT_E2E_MINT_INTERVAL_MS: '20' });
  const firstMint = await waitUntil('the busy agent to mint', 120_000, () => auditRecordsFrom(offset).find((r) => r.event === 'token.minted' && r.agent?.name === 'e2e-busy'));
  const seq = String(firstMint.seq);
  const first = await waitUntil(`record ${seq} to enter the panel as a row`, 60_000, () =>
    pf.evaluate(
      (s: string) => {
        const w = window as unknown as { __rowSeen: Record<string, number>; __rowFirst: Record<string, { cells: string[]; buttons: string[] }> };
        return s in w.__rowSeen ? { at: w.__rowSeen[s]!, ...w.__rowFirst[s]! } : undefined;
      },
      seq,
    ),
  );
  expect(first.cells).toEqual(rowCells(firstMint));
  // The row can beat the agent list (it comes with the next state refresh): Stop appears on its rows once the
  // editor knows the agent is live, and it is the only live agent (e2e-bulk was stopped above).
  const stops = await waitUntil('Stop on the busy agent\'s rows', 30_000, () =>
    pf.evaluate(() => {
      const rows = Array.from(document.querySelectorAll<HTMLElement>('#spacer .row'));
      const withStop = rows.filter((n) => Array.from(n.querySelectorAll('button')).some((b) => b.textContent === 'Stop'));
      return withStop.length > 0 ? withStop.map((n) => n.textContent ?? '') : undefined;
    }, undefined),
  );
  expect(stops.every((t) => t.includes('e2e-busy'))).toBe(true);
  console.log(`panel e2e: write → row for the first record written after opening: ${first.at - Date.parse(firstMint.ts)} ms`);

  // WRIT_E2E_PANEL_PROFILE=1: a CPU profile of the renderer over each window, summed by function (printed).
  const profiling = process.env.WRIT_E2E_PANEL_PROFILE === '1';
  /** One window of the 20 ms agent at work: the renderer's metrics, the webview's long tasks, write → row. */
  const measure = async (label: string): Promise<number> => {
    await pf.evaluate(() => {
      const w = window as unknown as { __rowSeen: Record<string, number>; __long: { count: number; ms: number; max: number } };
      w.__rowSeen = {};
      w.__long = { count: 0, ms: 0, max: 0 };
    }, undefined);
    if (profiling) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.start');
    }
    const before = await metrics();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, MEASURE_MS));
    const after = await metrics();
    const seconds = (Date.now() - t0) / 1000;
    if (profiling) printProfile((await cdp.send('Profiler.stop')) as { profile: CpuProfile });
    const seen = await pf.evaluate(() => (window as unknown as { __rowSeen: Record<string, number> }).__rowSeen, undefined);
    const long = await pf.evaluate(() => (window as unknown as { __long: { count: number; ms: number; max: number } }).__long, undefined);
    const written = auditRecordsFrom(offset).filter((r) => Date.parse(r.ts) >= t0 && Date.parse(r.ts) <= t0 + seconds * 1000);
    const lat = written
      .filter((r) => seen[String(r.seq)] !== undefined)
      .map((r) => seen[String(r.seq)]! - Date.parse(r.ts))
      .sort((a, b) => a - b);
    const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
    const d = (k: string): string => `${Math.round(((after[k] ?? 0) - (before[k] ?? 0)) * 1000)} ms`;
    console.log(
      `panel e2e [${label}]: 20 ms agent for ${seconds.toFixed(1)} s: ${written.length} records written, ${lat.length} entered the DOM as rows; write → row p50 ${q(0.5)} ms, p95 ${q(0.95)} ms, max ${lat.at(-1)} ms\n` +
        `panel e2e [${label}]: long tasks seen by the webview ${long.count} (${Math.round(long.ms)} ms, longest ${Math.round(long.max)} ms); CDP, whole renderer: task ${d('TaskDuration')}, script ${d('ScriptDuration')}, layout ${d('LayoutDuration')} (${(after.LayoutCount ?? 0) - (before.LayoutCount ?? 0)} layouts), style ${d('RecalcStyleDuration')} (${(after.RecalcStyleCount ?? 0) - (before.RecalcStyleCount ?? 0)}), DOM nodes ${after.Nodes}`,
    );
    return lat.length;
  };
  expect(await measure('panel visible')).toBeGreaterThan(0);
  // The same load with the panel behind another editor: what is left is the workbench's own share.
  // Quick Open, retried: under the load the first keystrokes can land while the webview holds the focus.
  const row = page!.locator('.quick-input-list .monaco-list-row.focused').filter({ hasText: 'README.md' }).first();
  for (let attempt = 1; ; attempt++) {
    await page!.keyboard.press('Escape');
    await page!.keyboard.press('Control+P');
    await page!.keyboard.type('README.md');
    // Generous: the 20 ms agent still runs, and on a loaded machine Quick Open took over 15 s three times running.
    const shown = await row.waitFor({ state: 'visible', timeout: 30_000 }).then(
      () => true,
      (e: unknown) => (attempt < 5 ? false : Promise.reject(e)),
    );
    if (shown) break;
  }
  await page!.keyboard.press('Enter');
  await page!.locator('.tab.active').filter({ hasText: 'README.md' }).first().waitFor({ state: 'visible', timeout: 30_000 });
  await measure('panel hidden');
  busy.kill();
  expect(await domRows()).toBeLessThanOrEqual(MAX_DOM_ROWS);
}, 600_000);

test('opened on a broker that does not answer (SIGSTOP): the log on disk and a note at once; after SIGCONT live records, each once', async () => {
  dumpOnFailure();
  // A panel opened afresh (the tests above left one open): it asks the stopped broker to follow, which it cannot.
  await runCommand(page!, 'View: Close All Editors');
  await page!.locator('.tab').filter({ hasText: 'Writ Audit' }).first().waitFor({ state: 'detached', timeout: 30_000 });
  const pid = broker!.pid;
  process.kill(pid, 'SIGSTOP');
  try {
    const onDisk = auditRecords().length;
    await runCommand(page!, 'Writ: Open Audit Panel');
    const note = auditFrame().locator('#note');
    await note.waitFor({ state: 'visible', timeout: 60_000 });
    expect(await note.innerText()).toBe(BROKER_SILENT_NOTE);
    await waitForCount('the log on disk while the broker is stopped', () => undefined);
    expect(auditRecords().length).toBe(onDisk);
    await page!.screenshot({ path: join(SCREENSHOTS, 'panel-broker-silent.png') });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await auditFrame().locator('#note').waitFor({ state: 'hidden', timeout: 60_000 });
  // Records written from now on come live: a new agent's, and the log's count says each came once.
  const late = startAgent('e2e-late', { WRIT_E2E_MINT_COUNT: '5' });
  await waitUntil('the late agent to mint 5 tokens', 120_000, () => {
    const ev = late.events();
    const refused = ev.find((e) => e.type === 'refused');
    if (refused) throw new Error(`the late agent was refused: ${JSON.stringify(refused)}\n${late.output()}`);
    return ev.find((e) => e.type === 'done');
  });
  await waitForCount('every record of the log, once, after SIGCONT', () => undefined);
  const lastMint = auditRecords().filter((r) => r.event === 'token.minted' && r.agent?.name === 'e2e-late').at(-1)!;
  await setFilter('', '', lastMint.jti!);
  await waitForCount('the late agent\'s last token', () => 1);
  expect(await auditFrame().locator('#spacer .row').first().getAttribute('data-seq')).toBe(String(lastMint.seq));
  await setFilter('', '', '');
  late.kill();
}, 600_000);
