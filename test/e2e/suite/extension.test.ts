/// <reference types="mocha" />
// In-editor tests: mocha inside code-server's extension host, with the real `vscode` API, against the
// extension as installed from the VSIX (the harness passes the installed folder as extensionDevelopmentPath).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { PENDING, pendingTitle } from '../pending';
// Type only (erased from the bundle): the API activate() returns, so a change to it breaks the typecheck here.
import type { WritApi } from '../../../extension/ctx';
import type { ReadyInfo } from '../../../extension/supervisor';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const EXTENSION_ID = 'writ-dev.writ';

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function extension(): vscode.Extension<unknown> {
  const ext = vscode.extensions.getExtension(EXTENSION_ID);
  assert.ok(ext, `${EXTENSION_ID} is not installed (have: ${vscode.extensions.all.map((e) => e.id).filter((id) => !id.startsWith('vscode.')).join(', ')})`);
  return ext;
}

/** Local files a manifest points at (icons, JSON schemas), as paths relative to the extension folder. */
function manifestFiles(manifest: unknown): string[] {
  const out = new Set<string>();
  const walk = (v: unknown, key: string): void => {
    if (typeof v === 'string') {
      const keyNamesFile = ['icon', 'url', 'light', 'dark', 'path'].includes(key);
      const looksLikeFile = /\.(svg|png|jpe?g|gif|json|woff2?|ttf|m?js|cjs|css|html|md)$/i.test(v);
      if (keyNamesFile && looksLikeFile && !/^[a-z][a-z0-9+.-]*:/i.test(v)) {
        out.add(v.replace(/^\.\//, ''));
      }
    } else if (Array.isArray(v)) {
      for (const x of v) walk(x, key);
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, k);
    }
  };
  walk((manifest as { contributes?: unknown }).contributes, '');
  const icon = (manifest as { icon?: unknown }).icon;
  if (typeof icon === 'string') out.add(icon);
  return [...out];
}

interface Manifest {
  activationEvents?: string[];
  contributes?: { commands?: { command: string; title: string }[] };
}

describe('Writ in a real VS Code (code-server)', () => {
  it('is installed from the VSIX and activates on its own (onStartupFinished)', async () => {
    const ext = extension();
    // Not ext.activate(): that would hide a broken activation event.
    await waitFor('the extension to activate', 90_000, () => ext.isActive || undefined);
    console.log(`    activated: ${ext.id} ${String((ext.packageJSON as { version?: string }).version)} in a ${vscode.env.uiKind === vscode.UIKind.Web ? 'web' : 'desktop'} UI, remote ${String(vscode.env.remoteName)}, Node ${process.versions.node}`);
  });

  it('carries the broker bundle, the platform keyring binary and every file its manifest names', () => {
    const ext = extension();
    const dir = ext.extensionPath;
    const files = [
      'dist/extension.cjs',
      'dist/writ.mjs',
      'node_modules/@napi-rs/keyring/index.js',
      'node_modules/@napi-rs/keyring-linux-x64-gnu/keyring.linux-x64-gnu.node',
      ...manifestFiles(ext.packageJSON),
    ];
    const missing = files.filter((f) => !existsSync(join(dir, f)));
    assert.deepEqual(missing, [], `missing from the installed extension (${dir}): ${missing.join(', ')}`);
  });

  it('starts its broker on activation (the API resolves whenReady)', async () => {
    const ext = extension();
    await waitFor('the extension to activate', 90_000, () => ext.isActive || undefined);
    const api = ext.exports as Partial<WritApi> | undefined;
    assert.ok(api && typeof api.whenReady === 'function', 'activate() returns no API with whenReady()');
    const info = await Promise.race([
      api.whenReady(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the broker was not ready within 90 s (phase ${JSON.stringify(api.phase)})`)), 90_000)),
    ]);
    assert.deepEqual(api.phase, { kind: 'running' });
    // Printed for people, never asserted (the machine is shared): the extension's own activation work.
    assert.equal(typeof api.activationMs, 'number', 'the API reports no activationMs');
    console.log(`    e2e timings: extension activation ${api.activationMs!.toFixed(1)} ms (the broker starts after it)`);
    assert.ok(existsSync(info.socketPath), `no socket at ${info.socketPath}`);
    const jwks = (await (await fetch(`${info.httpUrl.replace(/\/$/, '')}/.well-known/jwks.json`)).json()) as { keys: unknown[] };
    assert.ok(jwks.keys.length >= 1);
  });

  it("runs the VSIX's own broker against the keychain (nothing fetched at run time)", async function () {
    // A second broker next to the extension's own: its own runtime/state folders and keychain entry.
    const dir = extension().extensionPath;
    const base = mkdtempSync(join(tmpdir(), 'writ-e2e-vsix-broker-'));
    const env = {
      ...process.env,
      WRIT_STATE_DIR: join(base, 'state'),
      WRIT_RUNTIME_DIR: join(base, 'run'),
      WRIT_KEYCHAIN_SERVICE: `writ-e2e-vsix-${process.pid}`,
      WRIT_USER: 'dev@example.com',
    };
    const child = spawn(process.execPath, [join(dir, 'dist', 'writ.mjs'), 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      const discovery = await waitFor('the broker discovery file', 60_000, () => {
        if (child.exitCode !== null) throw new Error(`the VSIX's broker exited (${child.exitCode}):\n${out}`);
        const f = join(env.WRIT_RUNTIME_DIR, 'broker.json');
        if (!existsSync(f)) return undefined;
        try {
          return JSON.parse(readFileSync(f, 'utf8')) as { httpUrl: string };
        } catch {
          return undefined; // being written
        }
      });
      const jwks = (await (await fetch(`${discovery.httpUrl.replace(/\/$/, '')}/.well-known/jwks.json`)).json()) as { keys: { kty?: string }[] };
      assert.ok(jwks.keys.length >= 1, `the JWKS has no key: ${JSON.stringify(jwks)}`);
      assert.equal(jwks.keys[0]!.kty, 'OKP');
    } finally {
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('registers every command it declares', async () => {
    const manifest = extension().packageJSON as Manifest;
    const declared = (manifest.contributes?.commands ?? []).map((c) => c.command);
    const registered = new Set(await vscode.commands.getCommands(true));
    const missing = declared.filter((c) => !registered.has(c));
    assert.deepEqual(missing, [], `declared in package.json but not registered: ${missing.join(', ')}`);
    console.log(`    declared commands: ${declared.join(', ') || '(none)'}; registered writ.*: ${[...registered].filter((c) => c.startsWith('writ.')).join(', ') || '(none)'}`);
  });

  (PENDING.commands ? it.skip : it)(pendingTitle('commands', 'contributes writ.* commands to the palette'), async () => {
    const manifest = extension().packageJSON as Manifest;
    const declared = (manifest.contributes?.commands ?? []).map((c) => c.command);
    assert.ok(declared.length > 0 && declared.every((c) => c.startsWith('writ.')), `declared: ${declared.join(', ')}`);
    const registered = (await vscode.commands.getCommands(true)).filter((c) => c.startsWith('writ.'));
    assert.ok(registered.length > 0);
  });

  (PENDING.terminalEnv ? it.skip : it)(pendingTitle('terminalEnv', 'gives a new integrated terminal WRIT_BROKER'), async () => {
    await waitFor('the extension to activate', 90_000, () => extension().isActive || undefined);
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    assert.ok(folder, 'no workspace folder is open');
    // The broker starts asynchronously: a terminal opened before its address is known may not have it yet,
    // so open a fresh one until one does.
    let attempt = 0;
    const value = await waitFor('WRIT_BROKER in a new terminal', 120_000, async () => {
      const file = join(folder, `writ-broker-env-${attempt++}.txt`);
      const term = vscode.window.createTerminal({ name: `writ-e2e-${attempt}`, cwd: folder });
      try {
        term.sendText(`echo "WRIT_BROKER=$WRIT_BROKER" > '${file}.tmp' && mv '${file}.tmp' '${file}'`);
        const line = await waitFor('the terminal to run the command', 30_000, () =>
          existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined,
        );
        const v = line.slice('WRIT_BROKER='.length);
        return v === '' ? undefined : v;
      } finally {
        term.dispose();
      }
    });
    assert.match(value, /^(unix:\/.+|ws:\/\/127\.0\.0\.1:\d+\/?)$/, `WRIT_BROKER=${value}`);
    if (value.startsWith('unix:')) assert.ok(existsSync(value.slice('unix:'.length)), `no socket at ${value}`);
    console.log(`    terminal WRIT_BROKER=${value}`);
  });

  describe("agents through the extension's API: approvals, Stop, findings, Block", () => {
    let api: WritApi;
    let info: ReadyInfo;
    const scratch = mkdtempSync(join(tmpdir(), 'writ-e2e-agent-'));

    before(async () => {
      const ext = extension();
      await waitFor('the extension to activate', 90_000, () => ext.isActive || undefined);
      api = ext.exports as WritApi;
      info = await api.whenReady();
    });
    after(() => rmSync(scratch, { recursive: true, force: true }));

    /** `writ ARGS` from the installed VSIX, as an agent in a terminal of this window would run it. */
    function writ(args: string[], name: string) {
      const child = spawn(process.execPath, [join(extension().extensionPath, 'dist', 'writ.mjs'), ...args], {
        // Its own runtime folder: no CLI session remembered from another test.
        env: { ...process.env, WRIT_BROKER: `unix:${info.socketPath}`, WRIT_RUNTIME_DIR: join(scratch, name) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const io = { stdout: '', stderr: '' };
      child.stdout.on('data', (d) => (io.stdout += d));
      child.stderr.on('data', (d) => (io.stderr += d));
      const exited = new Promise<number>((resolve) => child.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1))));
      return { child, io, exited };
    }

    /** Resolves with the first approval request from the named agent (waiting, or raised later). */
    function nextRequest(agent: string) {
      return new Promise<Parameters<Parameters<WritApi['onApprovalRequest']>[0]>[0]>((resolve) => {
        const waiting = api.pendingApprovals().find((r) => r.agent.name === agent);
        if (waiting) return resolve(waiting);
        const sub = api.onApprovalRequest((r) => {
          if (r.agent.name !== agent) return;
          sub.dispose();
          resolve(r);
        });
      });
    }

    it('an approval through the API yields a token that verifies against the JWKS', async () => {
      const agent = 'e2e-approve';
      const requested = nextRequest(agent);
      const run = writ(['token', '--task', 'e2e approve', '--scope', 'repo:read:acme/web', '--aud', 'https://api.example', '--agent', agent], agent);
      const req = await requested;
      assert.deepEqual(req.scopes, ['repo:read:acme/web']);
      assert.equal(api.decide({ requestId: req.requestId, decision: 'approve', mode: 'task' }), true);
      const code = await run.exited;
      assert.equal(code, 0, `writ token failed (${code}): ${run.io.stderr}`);
      const token = run.io.stdout.trim();
      const jwks = createRemoteJWKSet(new URL(`${info.httpUrl.replace(/\/$/, '')}/.well-known/jwks.json`));
      const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: info.issuer, audience: 'https://api.example', typ: 'at+jwt' });
      assert.equal(protectedHeader.alg, 'EdDSA');
      assert.equal(payload.scope, 'repo:read:acme/web');
      assert.equal((payload.act as { sub?: string } | undefined)?.sub, req.agent.id);
    });

    it("Stop revokes the agent and ends the agent's process", async () => {
      const agent = 'e2e-stop';
      const requested = nextRequest(agent);
      const run = writ(
        ['exec', '--task', 'e2e stop', '--scope', 'repo:read:acme/web', '--aud', 'https://api.example', '--agent', agent, '--', process.execPath, '-e', 'setInterval(() => {}, 1000)'],
        agent,
      );
      try {
        const req = await requested;
        assert.equal(api.decide({ requestId: req.requestId, decision: 'approve', mode: 'task' }), true);
        // The agent is running with its token once the snapshot lists it as not revoked.
        await waitFor('the agent in the snapshot', 60_000, () => api.snapshot().agents.find((a) => a.id === req.agent.id && !a.revoked));
        assert.equal(run.child.exitCode, null, `the agent ended early: ${run.io.stderr}`);
        await api.stopAgent(req.agent.id);
        const code = await Promise.race([run.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the agent still runs 60 s after Stop')), 60_000))]);
        assert.notEqual(code, 0);
        assert.match(run.io.stderr, /revoked/);
        await waitFor('the snapshot to show the agent revoked', 60_000, () => api.snapshot().agents.find((a) => a.id === req.agent.id && a.revoked));
      } finally {
        if (run.child.exitCode === null) run.child.kill('SIGKILL');
      }
    });

    it("a scope-creep finding shows in the API and the status bar; Block refuses the agent, Unblock gives it back, Dismiss closes it", async () => {
      const agent = 'e2e-creeper';
      const token = (scope: string) => writ(['token', '--task', 'e2e creep', '--scope', scope, '--aud', 'https://api.example', '--agent', agent], agent);
      const settle = async (run: ReturnType<typeof writ>, decision: 'approve' | 'deny') => {
        const req = await nextRequest(agent);
        assert.equal(api.decide(decision === 'approve' ? { requestId: req.requestId, decision, mode: 'task' } : { requestId: req.requestId, decision }), true);
        return { req, code: await run.exited };
      };

      // A grant, then a scope it was never granted: the watch raises scope creep (a warning) before the prompt.
      const first = await settle(token('repo:read:acme/web'), 'approve');
      assert.equal(first.code, 0);
      const creep = token('repo:write:acme/web');
      const finding = await waitFor('the scope-creep finding in the API', 60_000, () => api.findings().find((f) => f.kind === 'scope-creep' && f.agentId === first.req.agent.id));
      assert.equal(finding.action, 'warn');
      assert.deepEqual(finding.evidence, { newScopes: ['repo:write:acme/web'], grantedBefore: 1 });
      const entry = api.inventory().find((e) => e.id === finding.identity);
      assert.deepEqual(entry && [entry.name, entry.kind, entry.owner], [agent, 'cli', 'dev@example.com']);
      const denied = await settle(creep, 'deny');
      assert.equal(denied.code, 1);

      // No approval waits now: the status bar is a warning naming the newest finding.
      await waitFor('the status bar warning', 30_000, () => api.pendingApprovals().length === 0 && api.statusView().text.startsWith('$(warning)'));
      const open = api.findings().length;
      assert.deepEqual(api.statusView(), {
        text: `$(warning) Writ: ${open} finding${open === 1 ? '' : 's'}`,
        tooltip: api.statusView().tooltip,
        background: 'statusBarItem.warningBackground',
      });
      assert.ok(
        api.statusView().tooltip.includes(`Newest: "${agent}" (cli) asked for a scope it was never granted: repo:write:acme/web.`),
        api.statusView().tooltip,
      );

      // Block by identity: the broker answers, the inventory says blocked, and the agent's next request is
      // refused with WRIT_AGENT_BLOCKED without a prompt.
      assert.deepEqual(await api.blockAgent('inv_00000000000000000000'), { ok: false, code: 'WRIT_AGENT_NOT_FOUND', message: 'no agent with that identity in the inventory' });
      assert.deepEqual(await api.blockAgent(finding.identity, 'e2e: scope creep'), { ok: true });
      await waitFor('the inventory to show the agent blocked', 30_000, () => api.inventory().find((e) => e.id === finding.identity && e.status === 'blocked'));
      const blocked = token('repo:read:acme/web');
      const blockedCode = await blocked.exited;
      assert.equal(blockedCode, 1, blocked.io.stderr);
      assert.match(blocked.io.stderr, /\(WRIT_AGENT_BLOCKED\)/);
      assert.equal(api.pendingApprovals().filter((r) => r.agent.name === agent).length, 0);

      // Unblock: the same identity asks again and is approved.
      assert.deepEqual(await api.unblockAgent(finding.identity), { ok: true });
      await waitFor('the inventory to show the agent unblocked', 30_000, () => api.inventory().find((e) => e.id === finding.identity && e.status !== 'blocked'));
      const again = token('repo:read:acme/web');
      const back = await settle(again, 'approve');
      assert.equal(back.code, 0, again.io.stderr);
      assert.match(again.io.stdout.trim(), /^[\w-]+\.[\w-]+\.[\w-]+$/);

      // Dismiss as expected: the finding closes and the status bar leaves the warning (when it was the only one).
      assert.deepEqual(await api.dismissFinding(finding.id), { ok: true });
      await waitFor('the finding to close', 30_000, () => !api.findings().some((f) => f.id === finding.id) || undefined);
      if (api.findings().length === 0) assert.ok(!api.statusView().text.startsWith('$(warning)'), api.statusView().text);
    });

    it('the writ.watch.actions setting reaches the broker: scope creep set to block refuses the agent without a prompt', async () => {
      const config = vscode.workspace.getConfiguration('writ');
      await config.update('watch.actions', { 'scope-creep': 'block' }, vscode.ConfigurationTarget.Global);
      try {
        await vscode.commands.executeCommand('writ.restartBroker');
        info = await api.whenReady();
        const agent = 'e2e-strict';
        const token = (scope: string) => writ(['token', '--task', 'e2e strict', '--scope', scope, '--aud', 'https://api.example', '--agent', agent], agent);
        const requested = nextRequest(agent);
        const first = token('repo:read:acme/web');
        const req = await requested;
        assert.equal(api.decide({ requestId: req.requestId, decision: 'approve', mode: 'task' }), true);
        assert.equal(await first.exited, 0, first.io.stderr);
        // A scope it was never granted: the finding's action is now block, so the request ends there, unasked.
        const creep = token('repo:write:acme/web');
        const code = await creep.exited;
        assert.equal(code, 1, creep.io.stderr);
        assert.match(creep.io.stderr, /\(WRIT_AGENT_BLOCKED\)/);
        assert.equal(api.pendingApprovals().filter((r) => r.agent.name === agent).length, 0);
        const finding = await waitFor('the blocking finding in the API', 30_000, () => api.findings().find((f) => f.kind === 'scope-creep' && f.agentId === req.agent.id));
        assert.equal(finding.action, 'block');
        await waitFor('the inventory to show the agent blocked', 30_000, () => api.inventory().find((e) => e.id === finding.identity && e.status === 'blocked'));
      } finally {
        await config.update('watch.actions', undefined, vscode.ConfigurationTarget.Global);
        await vscode.commands.executeCommand('writ.restartBroker');
        info = await api.whenReady();
      }
    });
  });
});
