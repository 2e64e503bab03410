// End-to-end harness: a real VS Code (code-server from npm, run by Node 24 from the `node` package) with the
// built VSIX installed, driven from Debian's chromium through playwright-core. See
// shared/recipes/vscode-e2e.md for the measured facts this follows. The tools live in the git-ignored
// .e2e-tools/ folder that scripts/e2e-tools.sh fills; nothing here downloads anything.
// Env: WRIT_E2E_TOOLS (the tool folder), WRIT_E2E_CHROMIUM (the browser), WRIT_E2E_KEEP=1 (keep each run's
// temp state folder: code-server's logs under ud/logs/, the workspace, the broker's files under tmp/).
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onTestFailed } from 'vitest';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const TOOLS = process.env.WRIT_E2E_TOOLS || join(ROOT, '.e2e-tools');
export const NODE24 = join(TOOLS, 'node_modules', 'node', 'bin', 'node');
export const CODE_SERVER = join(TOOLS, 'code-server', 'node_modules', 'code-server', 'out', 'node', 'entry.js');
export const CHROMIUM = process.env.WRIT_E2E_CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = join(ROOT, 'test-results', 'screenshots');
export const EXTENSION_ID = 'writ-dev.writ';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
export const VSIX = join(ROOT, `writ-${pkg.version}.vsix`);

const FIX_TOOLS = 'run `bash scripts/e2e-tools.sh` (it installs code-server, Node 24, playwright-core and chromium)';

/** Fails (never skips) when something the e2e tests need is missing, saying how to get it. */
export function requireTools(): void {
  const missing: string[] = [];
  if (!existsSync(join(TOOLS, 'stamp'))) missing.push(`${TOOLS} (the e2e tool folder)`);
  if (!existsSync(NODE24)) missing.push(NODE24);
  if (!existsSync(CODE_SERVER)) missing.push(CODE_SERVER);
  if (!existsSync(join(TOOLS, 'node_modules', 'playwright-core', 'package.json'))) missing.push('playwright-core');
  if (!existsSync(CHROMIUM)) missing.push(CHROMIUM);
  if (missing.length > 0) {
    throw new Error(`writ e2e: missing ${missing.join(', ')}: ${FIX_TOOLS}`);
  }
  if (!process.env.DBUS_SESSION_BUS_ADDRESS) {
    throw new Error('writ e2e: the broker in the extension needs the throwaway keyring: run `npm run test:e2e` (scripts/with-keyring.sh)');
  }
  if (!existsSync(VSIX)) {
    throw new Error(`writ e2e: ${VSIX} is missing: run \`npm run package\` first (npm run test:e2e does)`);
  }
}

// ---------------------------------------------------------------------------------------------
// playwright-core, loaded from the tool folder. Only the few calls used here are typed, so the project
// typechecks without the tool folder.
// ---------------------------------------------------------------------------------------------
export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}
export interface Locator {
  first(): Locator;
  last(): Locator;
  filter(o: { hasText?: string | RegExp; has?: Locator }): Locator;
  locator(selector: string): Locator;
  getByRole(role: string, o?: { name?: string | RegExp; exact?: boolean }): Locator;
  waitFor(o?: { state?: 'attached' | 'visible' | 'hidden' | 'detached'; timeout?: number }): Promise<void>;
  textContent(o?: { timeout?: number }): Promise<string | null>;
  innerText(o?: { timeout?: number }): Promise<string>;
  getAttribute(name: string, o?: { timeout?: number }): Promise<string | null>;
  allTextContents(): Promise<string[]>;
  count(): Promise<number>;
  isVisible(): Promise<boolean>;
  boundingBox(o?: { timeout?: number }): Promise<Box | null>;
  hover(o?: { timeout?: number; force?: boolean }): Promise<void>;
  click(o?: { timeout?: number; force?: boolean }): Promise<void>;
}
export interface FrameLocator {
  locator(selector: string): Locator;
  frameLocator(selector: string): FrameLocator;
}
export interface Page {
  goto(url: string, o?: { timeout?: number; waitUntil?: 'load' | 'domcontentloaded' | 'commit' }): Promise<unknown>;
  locator(selector: string): Locator;
  frameLocator(selector: string): FrameLocator;
  getByRole(role: string, o?: { name?: string | RegExp; exact?: boolean }): Locator;
  screenshot(o: { path: string; fullPage?: boolean; clip?: Box }): Promise<unknown>;
  waitForTimeout(ms: number): Promise<void>;
  evaluate<R, A>(f: (arg: A) => R, arg: A): Promise<R>;
  on(event: 'console', f: (m: { type(): string; text(): string }) => void): void;
  on(event: 'pageerror', f: (e: Error) => void): void;
  keyboard: { press(key: string): Promise<void>; type(text: string): Promise<void> };
  mouse: { move(x: number, y: number): Promise<void> };
}
export interface BrowserContext {
  pages(): Page[];
  newPage(): Promise<Page>;
  exposeFunction(name: string, f: (...args: never[]) => unknown): Promise<void>;
  close(): Promise<void>;
}
interface Chromium {
  launchPersistentContext(
    userDataDir: string,
    o: { executablePath: string; headless: boolean; args: readonly string[]; viewport?: { width: number; height: number }; timeout?: number },
  ): Promise<BrowserContext>;
}

/** Debian chromium, headless as root on a closed network (the recipe's flags). */
export const CHROMIUM_ARGS: readonly string[] = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchBrowser(stateDir: string): Promise<{ context: BrowserContext; page: Page }> {
  const require = createRequire(join(TOOLS, 'package.json'));
  const { chromium } = require('playwright-core') as { chromium: Chromium };
  const context = await chromium.launchPersistentContext(join(stateDir, 'chromium'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    timeout: 120_000,
    args: CHROMIUM_ARGS,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

// ---------------------------------------------------------------------------------------------
// code-server
// ---------------------------------------------------------------------------------------------
const USER_SETTINGS = {
  'security.workspace.trust.enabled': false,
  'workbench.startupEditor': 'none',
  'update.mode': 'none',
  'extensions.autoUpdate': false,
  'extensions.autoCheckUpdates': false,
  'chat.disableAIFeatures': true,
  'telemetry.telemetryLevel': 'off',
  // Not in the recipe: keeps the empty chat side bar out of the screenshots.
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
};

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

// Every process group started here, killed on any exit of the test process too (a crashed or interrupted run
// must not leave a code-server and its extension host, with the broker inside, behind).
const liveGroups = new Set<number>();
function killLiveGroups(): void {
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  liveGroups.clear();
}
process.on('exit', killLiveGroups);
// 'exit' does not run when a signal ends the test process: kill the groups, then die of the same signal.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killLiveGroups();
    process.kill(process.pid, sig);
  });
}

export interface CodeServer {
  port: number;
  base: string;
  /** Temp state folder: home/, ud/ (user data), ext/ (extensions), ws/ (the opened workspace), chromium/. */
  stateDir: string;
  workspace: string;
  extensionsDir: string;
  /** The folder the VSIX was installed into (extensions dir / writ-dev.writ-VERSION...). */
  installedExtension: string;
  env: NodeJS.ProcessEnv;
  log(): string;
  /** Kills the whole process group (code-server, extension host, the broker, terminals); idempotent. */
  stop(): Promise<void>;
}

export interface StartOptions {
  /** `--vscode-option enable-smoke-test-driver`: needed for the in-editor mocha runner; hides toasts. */
  smokeTestDriver?: boolean;
  name: string;
}

export async function startCodeServer(opts: StartOptions): Promise<CodeServer> {
  requireTools();
  const stateDir = mkdtempSync(join(tmpdir(), `writ-e2e-${opts.name}-`));
  const dirs = {
    home: join(stateDir, 'home'),
    config: join(stateDir, 'config'),
    data: join(stateDir, 'data'),
    state: join(stateDir, 'state'),
    cache: join(stateDir, 'cache'),
    run: join(stateDir, 'run'),
    tmp: join(stateDir, 'tmp'),
    ud: join(stateDir, 'ud'),
    ext: join(stateDir, 'ext'),
    ws: join(stateDir, 'ws'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true, mode: 0o700 });
  mkdirSync(join(dirs.ud, 'User'), { recursive: true });
  writeFileSync(join(dirs.ud, 'User', 'settings.json'), JSON.stringify(USER_SETTINGS, null, 2));
  writeFileSync(join(dirs.ws, 'README.md'), '# A workspace for the Writ e2e tests\n');

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${join(TOOLS, 'node_modules', 'node', 'bin')}:${process.env.PATH ?? ''}`,
    HOME: dirs.home,
    XDG_CONFIG_HOME: dirs.config,
    XDG_DATA_HOME: dirs.data,
    XDG_STATE_HOME: dirs.state,
    XDG_CACHE_HOME: dirs.cache,
    XDG_RUNTIME_DIR: dirs.run,
    TMPDIR: dirs.tmp,
    // The broker's user and keychain entry, unique to this run (the keyring itself is throwaway anyway).
    WRIT_USER: 'dev@example.com',
    WRIT_KEYCHAIN_SERVICE: `writ-e2e-${process.pid}-${opts.name}`,
    // No password prompt, no browser opened by code-server itself.
    BROWSER: '/bin/true',
  };
  for (const k of ['WRIT_STATE_DIR', 'WRIT_RUNTIME_DIR', 'WRIT_BROKER', 'WRIT_TOKEN', 'WRIT_SESSION', 'VSCODE_IPC_HOOK_CLI', 'NODE_OPTIONS']) {
    delete env[k];
  }
  const common = ['--user-data-dir', dirs.ud, '--extensions-dir', dirs.ext];

  // Install the VSIX (a separate, short-lived code-server process).
  let installed: string[];
  try {
    await run(NODE24, [CODE_SERVER, ...common, '--install-extension', VSIX], env, 180_000);
    installed = readdirSync(dirs.ext).filter((d) => d.toLowerCase().startsWith(`${EXTENSION_ID}-`));
    if (installed.length !== 1) {
      throw new Error(`writ e2e: ${VSIX} did not install as ${EXTENSION_ID} (extensions dir has: ${readdirSync(dirs.ext).join(', ') || 'nothing'})`);
    }
  } catch (e) {
    if (!process.env.WRIT_E2E_KEEP) rmSync(stateDir, { recursive: true, force: true, maxRetries: 3 });
    throw e;
  }

  const port = await freePort();
  const args = [
    CODE_SERVER,
    '--bind-addr',
    `127.0.0.1:${port}`,
    '--auth',
    'none',
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-workspace-trust',
    '--reconnection-grace-time',
    '5',
    ...common,
  ];
  if (opts.smokeTestDriver) args.push('--vscode-option', 'enable-smoke-test-driver');

  let output = '';
  // detached: its own session and process group (setsid), so one kill reaches everything it started.
  const child: ChildProcess = spawn(NODE24, args, { env, cwd: dirs.ws, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const pgid = child.pid!;
  liveGroups.add(pgid);
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const kill = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-pgid, sig);
      } catch {
        /* already gone */
      }
    };
    kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
    // The leader exiting does not mean the group is empty (extension host, broker, terminals): always finish with KILL.
    kill('SIGKILL');
    liveGroups.delete(pgid);
    if (!process.env.WRIT_E2E_KEEP) rmSync(stateDir, { recursive: true, force: true, maxRetries: 3 });
  };

  const base = `http://127.0.0.1:${port}`;
  try {
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`code-server exited (${child.exitCode}) before it was up:\n${output}`);
      try {
        const res = await fetch(`${base}/healthz`);
        if (res.ok) break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`code-server did not answer /healthz within 120 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    port,
    base,
    stateDir,
    workspace: dirs.ws,
    extensionsDir: dirs.ext,
    installedExtension: join(dirs.ext, installed[0]!),
    env,
    log: () => output,
    stop,
  };
}

/** `/?folder=...` plus, for the in-editor runner, the development/tests paths as a vscode-remote payload. */
export function workbenchUrl(cs: CodeServer, payload?: { extensionDevelopmentPath: string; extensionTestsPath: string }): string {
  const url = new URL(cs.base + '/');
  url.searchParams.set('folder', cs.workspace);
  if (payload) {
    const remote = (p: string): string => `vscode-remote://127.0.0.1:${cs.port}${p}`;
    url.searchParams.set(
      'payload',
      JSON.stringify([
        ['extensionDevelopmentPath', remote(payload.extensionDevelopmentPath)],
        ['extensionTestsPath', remote(payload.extensionTestsPath)],
      ]),
    );
  }
  return url.toString();
}

export async function waitForWorkbench(page: Page): Promise<void> {
  await page.locator('.monaco-workbench').first().waitFor({ state: 'visible', timeout: 180_000 });
}

/** Bundles test/e2e/suite/index.ts to out/test/suite/index.js (CommonJS; `vscode` and `mocha` stay external). */
export async function buildSuite(): Promise<string> {
  const esbuild = await import('esbuild');
  const outfile = join(ROOT, 'out', 'test', 'suite', 'index.js');
  await esbuild.build({
    entryPoints: [join(ROOT, 'test', 'e2e', 'suite', 'index.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    sourcemap: 'inline',
    external: ['vscode', 'mocha'],
    logLevel: 'warning',
  });
  // The repo's package.json says "type": "module"; the extension host require()s this file as CommonJS.
  writeFileSync(join(ROOT, 'out', 'test', 'package.json'), '{ "type": "commonjs" }\n');
  return outfile;
}

/**
 * Bundles test/e2e/agent.ts (the stand-in agent, with the SDK client inside) to out/test/agent.mjs: ESM, run by
 * plain Node under `writ exec`. `ws` (CommonJS) calls require() for optional natives, so ESM output gets one.
 */
export async function buildAgent(): Promise<string> {
  const esbuild = await import('esbuild');
  const outfile = join(ROOT, 'out', 'test', 'agent.mjs');
  await esbuild.build({
    entryPoints: [join(ROOT, 'test', 'e2e', 'agent.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
    banner: { js: "import { createRequire as __writCreateRequire } from 'node:module';\nconst require = __writCreateRequire(import.meta.url);" },
  });
  return outfile;
}

/** The discovery file (broker.json) of the window's broker, and the runtime folder it sits in. */
export interface WindowBroker {
  runtimeDir: string;
  pid: number;
  socketPath: string;
  httpUrl: string;
  issuer: string;
  auditPath: string;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Files under `dir` (at most `depth` folders down) whose name `match`es, skipping folders named in `skip`. */
export function filesUnder(dir: string, depth: number, match: (name: string) => boolean, skip: readonly string[] = []): string[] {
  const out: string[] = [];
  const walk = (at: string, left: number): void => {
    if (left < 0) return;
    let entries;
    try {
      entries = readdirSync(at, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(at, e.name);
      if (e.isFile() && match(e.name)) out.push(p);
      else if (e.isDirectory() && !skip.includes(e.name)) walk(p, left - 1);
    }
  };
  walk(dir, depth);
  return out;
}

/**
 * Registers, for the running test, what to print when it fails: the code-server log (its last `logChars`), the
 * Writ output channel, each agent's output, and a screenshot of the window named after the test.
 */
export function reportOnFailure(
  prefix: string,
  state: () => { cs?: CodeServer; agents: readonly { name: string; output(): string }[]; page?: Pick<Page, 'screenshot'> },
  logChars = Infinity,
): void {
  onTestFailed(async ({ task }) => {
    const { cs, agents, page } = state();
    console.log(`--- code-server (${cs?.stateDir}) ---\n${cs?.log().slice(-logChars) ?? ''}`);
    if (cs) console.log(`--- Writ output channel ---\n${writLog(cs).slice(-4000)}`);
    for (const a of agents) console.log(`--- agent ${a.name}: ${a.output().slice(-2000)}`);
    const name = task.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
    await page?.screenshot({ path: join(SCREENSHOTS, `${prefix}${name}.png`) }).catch(() => {});
  });
}

/**
 * The broker the extension started for the window: found the way `writ` finds it, by the discovery file in
 * its runtime folder. That folder is inside the extension's global storage, or under TMPDIR when the socket
 * path would be too long (extension/brokerDirs.ts); both are inside this code-server's state folder, so a walk
 * of it finds exactly this window's broker. Waits for a live one (the extension starts it after activation).
 */
export async function windowBroker(cs: CodeServer, timeoutMs = 180_000): Promise<WindowBroker> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const files = filesUnder(cs.stateDir, 12, (n) => n === 'broker.json', ['chromium', 'node_modules', 'logs', 'CachedData', 'ext']);
    for (const f of files) {
      try {
        const d = JSON.parse(readFileSync(f, 'utf8')) as Omit<WindowBroker, 'runtimeDir'>;
        if (typeof d.pid === 'number' && pidAlive(d.pid) && existsSync(d.socketPath)) return { ...d, runtimeDir: join(f, '..') };
      } catch {
        /* being written */
      }
    }
    if (Date.now() > deadline) throw new Error(`no live broker discovery file under ${cs.stateDir} within ${timeoutMs / 1000} s (found: ${files.join(', ') || 'none'})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Runs a palette command by its title: F1, type, wait until the focused row shows it, Enter. */
export async function runCommand(page: Page, title: string): Promise<void> {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget .quick-input-box input').first();
  await input.waitFor({ state: 'visible', timeout: 30_000 });
  await page.keyboard.type(title);
  await page.locator('.quick-input-list .monaco-list-row.focused').filter({ hasText: title.replace(/^[^:]+:\s*/, '') }).first().waitFor({ state: 'visible', timeout: 30_000 });
  await page.keyboard.press('Enter');
}

/** The Writ output channel as written so far: the extension's own account of what it decided, stopped, warned about. */
export function writLog(cs: CodeServer): string {
  return filesUnder(join(cs.stateDir, 'ud', 'logs'), 8, (n) => /Writ\.log$/.test(n))
    .map((f) => readFileSync(f, 'utf8'))
    .join('');
}

/** The installed extension's own `writ` CLI, pointed at the window's broker the way an agent's terminal is. */
export function runWrit(cs: CodeServer, broker: WindowBroker, args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(cs.installedExtension, 'dist', 'writ.mjs'), ...args], {
    env: { ...cs.env, WRIT_BROKER: `unix:${broker.socketPath}`, WRIT_RUNTIME_DIR: broker.runtimeDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const io = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (io.stdout += d));
  child.stderr!.on('data', (d) => (io.stderr += d));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, ...io })));
}

/** Polls `probe` (every `everyMs`) until it gives a value other than undefined or false; fails naming `what` after `timeoutMs`. */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
