// The `writ` command as a user runs it: token prints only the token, a rerun reuses the grant, exec passes the
// exit code through and stops a revoked agent, audit verify/export read what the broker wrote.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import type { Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PROTOCOL_VERSION } from '../../broker/protocol';
import { join } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { BrokerProcess, WRIT, approveAll, form, freshEnv, liveAgents, requireKeyring, writ } from '../helpers/broker';
import { keychainDelete, keychainGet, keychainSet } from '../../broker/core/keychain';
import { KeySet, newSigningKey, serializeKeySet } from '../../broker/core/keys';
import { isAlive } from '../../broker/proxy/process-tree';
import { until } from '../helpers/until';

requireKeyring();

describe('writ CLI against a running broker', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
  });
  afterAll(async () => {
    await b.stop();
  });

  it('token prints the token and nothing else; a rerun within the grant shows no prompt', async () => {
    const args = ['token', '--task', 'fix issue 12', '--scope', 'repo:read:acme/web', '--aud', 'https://api.example'];
    const first = await writ(args, b.env);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+\n$/);
    const prompts = b.requests.length;
    const again = await writ(args, b.env);
    expect(again.code).toBe(0);
    expect(again.stdout).not.toBe(first.stdout);
    expect(b.requests.length).toBe(prompts);
  });

  it('token: usage errors exit 2, refusals exit 1 with the code on stderr and an empty stdout', async () => {
    const usage = await writ(['token', '--scope', 'repo:read:x', '--aud', 'a'], b.env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--task is required');
    b.decide = () => ({ decision: 'deny' });
    const denied = await writ(['token', '--task', 'deny me', '--scope', 'repo:write:x', '--aud', 'a', '--agent', 'other'], b.env);
    b.decide = approveAll;
    expect(denied).toMatchObject({ code: 1, stdout: '' });
    expect(denied.stderr).toContain('(WRIT_DENIED)');
  });

  it('exec runs the command with a token, passes its exit code through, and its agent can reuse the grant', async () => {
    const script = `
      const { execFileSync } = require('node:child_process');
      if (!process.env.WRIT_TOKEN || !process.env.WRIT_SESSION || !process.env.WRIT_BROKER) process.exit(9);
      const again = execFileSync(process.execPath, [${JSON.stringify(join(process.cwd(), 'dist/writ.mjs'))}, 'token', '--task', 'run tests', '--scope', 'repo:read:acme/web', '--aud', 'https://api.example', '--agent', 'tests'], { encoding: 'utf8' });
      process.exit(again.split('.').length === 3 ? 7 : 8);`;
    const prompts = b.requests.length;
    const r = await writ(['exec', '--task', 'run tests', '--scope', 'repo:read:acme/*', '--aud', 'https://api.example', '--agent', 'tests', '--', process.execPath, '-e', script], b.env);
    expect(r.code).toBe(7);
    expect(b.requests.length).toBe(prompts + 1);
  });

  it('exec exits as a shell does when the command dies of a signal: 128 + its number', async () => {
    const scope = ['--task', 'run tests', '--scope', 'repo:read:acme/*', '--aud', 'https://api.example', '--agent', 'tests', '--', process.execPath, '-e'];
    for (const [sig, code] of [['SIGSEGV', 139], ['SIGABRT', 134], ['SIGTERM', 143]] as const) {
      const r = await writ(['exec', ...scope, `process.kill(process.pid, '${sig}')`], b.env);
      expect([sig, r.code]).toEqual([sig, code]);
    }
  });

  it('exec refuses a command it cannot run before it asks the broker: 127 not found, 126 not executable, no prompt, no grant, no token', async () => {
    const dir = join(b.env.WRIT_STATE_DIR, 'exec-commands');
    mkdirSync(join(dir, 'bin'), { recursive: true });
    writeFileSync(join(dir, 'bin', 'readable-only'), '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    writeFileSync(join(dir, 'not-executable'), '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    let asked = 0;
    b.decide = () => {
      asked++;
      return { decision: 'approve', mode: 'task' };
    };
    const events = () => b.auditLines().map((l) => JSON.parse(l) as { event: string; agent?: { name?: string } });
    const before = events().length;
    const prompts = b.requests.length;
    const env = { ...b.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` };
    const run = (agent: string, command: string) => writ(['exec', '--task', 'run it', '--scope', 'repo:read:x', '--aud', 'a', '--agent', agent, '--', command, '--flag'], env);
    try {
      expect(await run('ghost-1', 'writ-no-such-command')).toEqual({
        code: 127,
        stdout: '',
        stderr: 'writ: cannot run writ-no-such-command: not found in PATH (WRIT_COMMAND_NOT_FOUND)\n',
      });
      expect(await run('ghost-2', join(dir, 'missing'))).toEqual({ code: 127, stdout: '', stderr: `writ: cannot run ${join(dir, 'missing')}: no such file (WRIT_COMMAND_NOT_FOUND)\n` });
      expect(await run('ghost-3', join(dir, 'not-executable'))).toEqual({
        code: 126,
        stdout: '',
        stderr: `writ: cannot run ${join(dir, 'not-executable')}: not executable by this user (WRIT_COMMAND_NOT_EXECUTABLE)\n`,
      });
      expect(await run('ghost-4', 'readable-only')).toEqual({
        code: 126,
        stdout: '',
        stderr: `writ: cannot run readable-only: ${join(dir, 'bin', 'readable-only')}: not executable by this user (WRIT_COMMAND_NOT_EXECUTABLE)\n`,
      });
      expect(await run('ghost-5', dir)).toEqual({ code: 126, stdout: '', stderr: `writ: cannot run ${dir}: is a directory (WRIT_COMMAND_NOT_EXECUTABLE)\n` });
    } finally {
      b.decide = approveAll;
    }
    // The stand-in approver was never asked, and the broker heard nothing: no agent, no task, no token on record.
    expect({ asked, prompts: b.requests.length }).toEqual({ asked: 0, prompts });
    const heard = events().slice(before).filter((r) => r.agent?.name?.startsWith('ghost-') || r.event === 'task.requested' || r.event === 'token.minted');
    expect(heard.map((r) => r.event)).toEqual([]);
  });

  it('exec whose command passed the check but does not start (a missing interpreter) exits 127 and revokes the token it was minted', async () => {
    const script = join(b.env.WRIT_STATE_DIR, 'bad-interpreter');
    writeFileSync(script, '#!/nonexistent/interpreter\n', { mode: 0o755 });
    const r = await writ(['exec', '--task', 'run it', '--scope', 'repo:read:x', '--aud', 'a', '--agent', 'no-start', '--', script], b.env);
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 127, stdout: '', stderr: `writ: cannot run ${script}: spawn ${script} ENOENT (WRIT_COMMAND_NOT_FOUND)\n` });
    const records = b.auditLines().map((l) => JSON.parse(l) as { event: string; jti?: string; agent?: { name?: string }; detail?: Record<string, unknown> });
    const minted = records.filter((x) => x.event === 'token.minted' && x.agent?.name === 'no-start');
    expect(minted).toHaveLength(1);
    // Revoked before exec returned: nothing holds a token minted for a command that never ran.
    const revoked = records.filter((x) => x.event === 'revoked' && x.jti === minted[0]!.jti);
    expect(revoked.map((x) => x.detail)).toEqual([expect.objectContaining({ target: { kind: 'token', jti: minted[0]!.jti }, reason: 'writ exec could not start bad-interpreter', tokens: 1 })]);
  });

  it('exec stops the agent process when the agent is revoked', async () => {
    const marker = join(b.env.WRIT_STATE_DIR, 'exec-started');
    const run = writ(
      ['exec', '--task', 'long job', '--scope', 'repo:read:x', '--aud', 'a', '--agent', 'runaway', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, String(process.pid)); setInterval(() => {}, 1000)`],
      b.env,
    );
    let pid = 0;
    for (let i = 0; i < 200 && !pid; i++) {
      await new Promise((r) => setTimeout(r, 25));
      try {
        pid = Number(readFileSync(marker, 'utf8'));
      } catch {
        // not yet
      }
    }
    expect(pid).toBeGreaterThan(0);
    const listed = await writ(['agents', '--live', '--json'], b.env);
    const agent = JSON.parse(listed.stdout).find((a: { name: string }) => a.name === 'runaway');
    expect(agent).toMatchObject({ connected: true, revoked: false, grants: 1, liveTokens: 1 });
    const rev = await writ(['revoke', '--agent', agent.id], b.env);
    expect(rev.code).toBe(0);
    const r = await run;
    expect(r.code).toBe(128 + 15); // SIGTERM
    expect(r.stderr).toContain('the agent was revoked');
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('status and agents describe the running broker', async () => {
    const s = await writ(['status', '--json'], b.env);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({ pid: b.child.pid, user: 'dev@example.com', approver: 'ipc', protocol: 'writ/1' });
    const live = await writ(['agents', '--live'], b.env);
    expect(live.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+KIND\s+STATE\s+GRANTS\s+TOKENS\s+PARENT$/);
    const inv = await writ(['agents'], b.env);
    expect(inv.stdout.split('\n')[0]).toMatch(/^IDENTITY\s+NAME\s+KIND\s+STATUS\s+LAST SEEN\s+TOKENS\s+LIVE$/);
  });

  it('agents shows a name with control characters escaped, so it cannot rewrite the terminal', async () => {
    const { client } = await b.agent('evil\x1b[2J\nID  fake-row');
    const live = await writ(['agents', '--live'], b.env);
    expect(live.stdout).not.toContain('\x1b');
    expect(live.stdout.split('\n').filter((l) => l.includes('fake-row'))).toEqual([expect.stringContaining('evil\\x1b[2J\\x0aID  fake-row')]);
    await client.close();
  });

  it('--help on every command, command group and sub-command: usage on stderr, nothing on stdout, exit 0', async () => {
    const commands = [
      ['serve'], ['token'], ['exec'], ['revoke'], ['status'], ['mcp'], ['gate'],
      ['agents'], ['agents', 'export'], ['agents', 'block'], ['agents', 'unblock'],
      ['audit'], ['audit', 'verify'], ['audit', 'export'],
      ['key'], ['key', 'rotate'],
      ['secret'], ['secret', 'set'], ['secret', 'list'], ['secret', 'rm'],
    ];
    const runs = commands.flatMap((cmd) => ['--help', '-h'].map((flag) => [...cmd, flag]));
    const seen: { cmd: string; code: number; stdout: string; usage: boolean }[] = [];
    // A few at a time: forty CLI processes at once would crowd a busy two-core machine past their timeout.
    for (let i = 0; i < runs.length; i += 4) {
      seen.push(
        ...(await Promise.all(
          runs.slice(i, i + 4).map(async (args) => {
            const r = await writ(args, b.env);
            return { cmd: args.join(' '), code: r.code, stdout: r.stdout, usage: r.stderr.startsWith(`Usage: writ ${args[0]}`) };
          }),
        )),
      );
    }
    expect(seen).toEqual(runs.map((args) => ({ cmd: args.join(' '), code: 0, stdout: '', usage: true })));
    // The command group without a sub-command is a usage error (exit 2) that still says how to ask for help.
    const bare = await writ(['audit'], b.env);
    expect({ code: bare.code, stderr: bare.stderr }).toEqual({ code: 2, stderr: 'writ: writ audit verify | writ audit export | writ audit wal\nRun `writ audit --help`.\n' });
  }, 180_000);
});

describe('writ audit', () => {
  it('verify passes on what the broker wrote, names the first bad line after tampering, and export writes each format', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client, hello } = await b.agent('auditee');
    const r = await client.call('task.request', { task: 'audit me', scopes: ['repo:read:a'], audience: 'https://api.example' });
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    await client.close();
    await b.stop();

    const ok = await writ(['audit', 'verify'], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^audit log intact: \d+ records, \d+ signed checkpoints\n$/);
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const text = readFileSync(log, 'utf8');
    expect(text).not.toContain(r.token.token);
    expect(text).not.toContain(r.session!);

    const csv = await writ(['audit', 'export', '--format', 'csv', '--agent', hello.agentId], env);
    expect(csv.code).toBe(0);
    const rows = csv.stdout.trim().split('\r\n');
    expect(rows[0]).toBe('seq,ts,session,event,user,agent_id,agent_name,agent_chain,task_id,task,grant_id,scopes,audience,jti,exp,outcome,code,prev,detail');
    expect(rows.slice(1).map((row) => row.split(',')[3])).toEqual(['agent.connected', 'task.requested', 'task.approved', 'token.minted', 'revoked', 'agent.disconnected']);
    const ocsf = await writ(['audit', 'export', '--format', 'ocsf', '--agent', hello.agentId], env);
    const classes = ocsf.stdout.trim().split('\n').map((l) => JSON.parse(l).class_uid);
    expect(classes).toEqual([3002, 3003, 3003, 6003, 6003, 3002]);

    // Tamper with one record in the middle: verify names the record after it (its prev no longer matches).
    const lines = text.split('\n');
    const idx = lines.findIndex((l) => l.includes('"event":"token.minted"'));
    lines[idx] = lines[idx]!.replace('repo:read:a', 'repo:read:b');
    writeFileSync(log, lines.join('\n'));
    const bad = await writ(['audit', 'verify'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`BROKEN at line ${idx + 2}`);
    expect(bad.stderr).toContain('chain');
  });
});

describe('writ key rotate', () => {
  it('adds a key; the old one still verifies its live tokens and the audit log stays verifiable', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client } = await b1.agent();
    const before = await client.call('task.request', { task: 'rotate', scopes: ['repo:read:a'], audience: 'aud' });
    await client.close();
    const running = await writ(['key', 'rotate'], env);
    expect(running.code).toBe(1);
    expect(running.stderr).toContain('(WRIT_BROKER_RUNNING)');
    await b1.stop();

    const rotated = await writ(['key', 'rotate'], env);
    expect(rotated.code).toBe(0);
    const b2 = await BrokerProcess.start(env);
    const jwks = await (await fetch(`${b2.discovery.httpUrl}/.well-known/jwks.json`)).json();
    const oldKid = JSON.parse(Buffer.from(before.token.token.split('.')[0]!, 'base64url').toString()).kid;
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toContain(oldKid);
    expect(jwks.keys).toHaveLength(2);
    const intro = await fetch(`${b2.discovery.httpUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: before.token.token }).toString(),
    });
    expect((await intro.json()).active).toBe(true);
    b2.decide = approveAll;
    const { client: c2 } = await b2.agent();
    const after = await c2.call('task.request', { task: 'rotate', scopes: ['repo:read:a'], audience: 'aud' });
    await c2.close();
    const newKid = JSON.parse(Buffer.from(after.token.token.split('.')[0]!, 'base64url').toString()).kid;
    expect(newKid).not.toBe(oldKid);
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toContain(newKid);

    // With the broker running but no keychain in reach, verify falls back to the broker's JWKS and says so.
    const { DBUS_SESSION_BUS_ADDRESS: _bus, ...noBus } = process.env;
    const viaJwks = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [WRIT, 'audit', 'verify'], { env: { ...noBus, ...env } }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
    expect(viaJwks.code).toBe(0);
    expect(viaJwks.stderr).toContain("keys from the running broker's JWKS (the keychain is not reachable here: WRIT_KEYCHAIN_UNAVAILABLE)");
    await b2.stop();
    const ok = await writ(['audit', 'verify'], env);
    expect(ok.code).toBe(0);
    expect(readFileSync(join(env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8')).toContain('"event":"key.rotated"');
  });
});

/** `writ` run where the keychain is out of reach (no D-Bus session), as from another login session. */
function writWithoutKeychain(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const { DBUS_SESSION_BUS_ADDRESS: _bus, ...noBus } = process.env;
  return new Promise((resolve) =>
    execFile(process.execPath, [WRIT, ...args], { env: { ...noBus, ...env }, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe('writ audit verify with only a broker that does not give its keys', () => {
  // A discovery file naming a live process (this one) whose HTTP listener hangs, errs or answers junk.
  async function withFakeBroker(handler: (req: IncomingMessage, res: ServerResponse) => void, run: (env: ReturnType<typeof freshEnv>) => Promise<void>): Promise<void> {
    const env = freshEnv();
    const server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    mkdirSync(env.WRIT_RUNTIME_DIR, { recursive: true, mode: 0o700 });
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const discovery = { protocol: PROTOCOL_VERSION, pid: process.pid, socketPath: join(env.WRIT_RUNTIME_DIR, 'broker.sock'), httpUrl: url, wsUrl: url.replace('http', 'ws'), issuer: 'urn:writ:fake', startedAt: new Date().toISOString(), auditPath: log };
    writeFileSync(join(env.WRIT_RUNTIME_DIR, 'broker.json'), JSON.stringify(discovery), { mode: 0o600 });
    try {
      await run(env);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
  const cases: [string, (req: IncomingMessage, res: ServerResponse) => void, string][] = [
    ['never answers', () => undefined, 'no answer within 5 s'],
    ['answers 500', (_q, res) => res.writeHead(500).end(), 'HTTP 500'],
    ['answers junk', (_q, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[{"kid":"k","kty":"RSA"}]}'), 'a key that is not an Ed25519 JWK with a kid'],
  ];
  for (const [what, handler, why] of cases) {
    it(`refuses with WRIT_BROKER_UNREACHABLE when the broker ${what}`, async () => {
      await withFakeBroker(handler, async (env) => {
        const r = await writWithoutKeychain(['audit', 'verify', '--file', join(env.WRIT_STATE_DIR, 'audit.jsonl')], env);
        expect(r.code).toBe(1);
        expect(r.stdout).toBe('');
        expect(r.stderr).toContain(`could not read the running broker's keys at http://127.0.0.1:`);
        expect(r.stderr).toContain(`(${why}); run this where the keychain is reachable (WRIT_BROKER_UNREACHABLE)`);
      });
    }, 30_000);
  }
});

describe('writ audit export --out', () => {
  it('writes a file only this user can read, narrowing an existing one, and never through a symbolic link', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    await b.stop();
    const out = join(env.WRIT_STATE_DIR, 'export.jsonl');
    writeFileSync(out, 'old contents, readable by all\n', { mode: 0o644 });
    chmodSync(out, 0o644);
    const r = await writ(['audit', 'export', '--out', out], env);
    expect(r.code).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8'));

    const target = join(env.WRIT_STATE_DIR, 'elsewhere.txt');
    writeFileSync(target, 'not an export\n');
    const link = join(env.WRIT_STATE_DIR, 'link.jsonl');
    symlinkSync(target, link);
    const refused = await writ(['audit', 'export', '--out', link], env);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toBe(`writ: --out ${link} is a symbolic link: the export is not written through one (WRIT_BAD_REQUEST)\n`);
    expect(readFileSync(target, 'utf8')).toBe('not an export\n');
  });
});

describe('writ audit on a file that cannot be read', () => {
  it('says which file and why, with WRIT_AUDIT_UNREADABLE, for export and wal alike', async () => {
    const env = freshEnv();
    const gone = join(env.WRIT_STATE_DIR, 'gone.jsonl');
    const exported = await writ(['audit', 'export', '--file', gone], env);
    expect(exported).toEqual({ code: 1, stdout: '', stderr: `writ: cannot read the audit log ${gone}: no such file (WRIT_AUDIT_UNREADABLE)\n` });
    mkdirSync(env.WRIT_STATE_DIR, { recursive: true, mode: 0o700 });
    const folder = await writ(['audit', 'export', '--file', env.WRIT_STATE_DIR], env);
    expect(folder.stderr).toBe(`writ: cannot read the audit log ${env.WRIT_STATE_DIR}: not a regular file (WRIT_AUDIT_UNREADABLE)\n`);
    const wal = await writ(['audit', 'wal', '--file', gone], env);
    expect(wal).toEqual({ code: 1, stdout: '', stderr: `writ: cannot read the write-ahead file ${gone}.wal: no such file (WRIT_AUDIT_UNREADABLE)\n` });
  });
});

/** What a forger with write access and no key can do to a log: drop every checkpoint, edit, renumber, rechain. */
function rewriteWithoutCheckpoints(lines: string[], edit: (r: Record<string, unknown>) => void): string[] {
  const out: string[] = [];
  for (const line of lines) {
    const r = JSON.parse(line) as Record<string, unknown>;
    if (r.event === 'checkpoint') continue;
    edit(r);
    r.seq = out.length;
    r.prev = out.length === 0 ? '0'.repeat(64) : createHash('sha256').update(out[out.length - 1]!, 'utf8').digest('hex');
    out.push(JSON.stringify(r));
  }
  return out;
}

describe('writ audit verify and records no checkpoint signs', { timeout: 120_000 }, () => {
  it('a log rewritten without its checkpoints is unsigned (exit 4), and a broker refuses to sign over more of them than it leaves', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('rewritten');
    await client.call('task.request', { task: 'the real scope', scopes: ['repo:read:a'], audience: 'aud' });
    await client.close();
    await b.stop();
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const lines = readFileSync(log, 'utf8').slice(0, -1).split('\n');
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);

    const forged = rewriteWithoutCheckpoints(lines, (r) => {
      if (Array.isArray(r.scopes)) r.scopes = ['repo:admin'];
    });
    writeFileSync(log, forged.join('\n') + '\n');
    const r = await writ(['audit', 'verify'], env);
    expect(r.code).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(
      `writ: audit log UNSIGNED from line 1 (seq 0): audit log line 1 (seq 0) on: ${forged.length} records no signed checkpoint covers, and no running broker vouches for them`,
    );
    expect(r.stderr.trimEnd().endsWith('(WRIT_AUDIT_UNSIGNED)')).toBe(true);

    // Past the 1,000 records a broker ever leaves unsigned, no broker starts on it: it would sign the forgery.
    const padded = rewriteWithoutCheckpoints([...forged, ...Array.from({ length: 1001 - forged.length }, () => forged[forged.length - 1]!)], () => {});
    writeFileSync(log, padded.join('\n') + '\n');
    const serve = await writ(['serve'], env, { timeout: 60_000 });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(`audit log ${log}: it ends in more than 1000 records no checkpoint signed by this broker's keys covers, which a broker never leaves`);
    expect(serve.stderr).toContain('(WRIT_AUDIT_CORRUPT)');
    expect(readFileSync(log, 'utf8')).toBe(padded.join('\n') + '\n');
    expect(existsSync(join(env.WRIT_RUNTIME_DIR, 'broker.json'))).toBe(false);
  });

  it('the running broker vouches for its live log\'s unsigned records, and an edit of one is a break', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    try {
      b.decide = approveAll;
      const { client } = await b.agent('live');
      await client.call('task.request', { task: 'live records', scopes: ['repo:read:a'], audience: 'aud' });
      await client.close();
      const live = await writ(['audit', 'verify'], env);
      expect(live.code, live.stderr).toBe(0);
      const m = /^audit log intact: (\d+) records, (\d+) signed checkpoints, (\d+) after it vouched for by the running broker \(pid (\d+)\)\n$/.exec(live.stdout);
      expect(m, live.stdout).not.toBeNull();
      expect(Number(m![4])).toBe(b.child.pid);
      expect(Number(m![3])).toBeGreaterThan(0);

      // The last record (unsigned) edited and the file otherwise left as the broker wrote it.
      const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
      const lines = readFileSync(log, 'utf8').slice(0, -1).split('\n');
      const last = lines.length - 1;
      lines[last] = lines[last]!.replace(/"ts":"(\d{4})/, (_m, y: string) => `"ts":"${Number(y) + 1}`);
      writeFileSync(log, lines.join('\n') + '\n');
      const bad = await writ(['audit', 'verify'], env);
      expect(bad.code).toBe(1);
      // The chain alone holds (nothing follows the edited line), so only the broker's head catches it; unless the
      // broker's ten-second checkpoint landed after the edit, whose prev then breaks the chain one line on.
      expect(bad.stderr).toMatch(
        new RegExp(
          `writ: audit log BROKEN at line (${last + 1} \\(seq ${last}\\): chain: audit log line ${last + 1} \\(seq ${last}\\): not the record the running broker \\(pid ${b.child.pid}\\) wrote|${last + 2} \\(seq ${last + 1}\\): chain: audit log line ${last + 2} \\(seq ${last + 1}\\): prev is not the hash of line ${last + 1}) \\(WRIT_AUDIT_CORRUPT\\)`,
        ),
      );
    } finally {
      await b.stop();
    }
  });
});

describe('writ audit verify with only the broker\'s JWKS', () => {
  it('calls checkpoints of a key retired over an hour ago unverifiable (exit 3), not broken; a later checkpoint covers them; a real break still wins', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client } = await b1.agent('before-rotation');
    await client.call('task.request', { task: 'before rotation', scopes: ['repo:read:a'], audience: 'aud' });
    await client.close();
    await b1.stop();
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const before = join(env.WRIT_STATE_DIR, 'before-rotation.jsonl');
    copyFileSync(log, before);
    const lines = readFileSync(before, 'utf8').slice(0, -1).split('\n');
    const checkpointLines = lines.flatMap((l, i) => (JSON.parse(l).event === 'checkpoint' ? [i + 1] : []));
    expect(checkpointLines.length).toBeGreaterThan(0);
    const oldKid: string = JSON.parse(lines[checkpointLines[0]! - 1]!).checkpoint.kid;

    expect((await writ(['key', 'rotate'], env)).code).toBe(0);
    // Two hours on: the old key has left the JWKS. The clock cannot move, so the keychain entry is aged instead.
    const ref = { service: env.WRIT_KEYCHAIN_SERVICE, account: 'signing-keys', timeoutMs: 15_000 };
    const stored = JSON.parse((await keychainGet(ref))!) as { retired: { kid: string; createdAt: number; retiredAt: number }[] };
    expect(stored.retired.map((r) => r.kid)).toEqual([oldKid]);
    stored.retired = stored.retired.map((r) => ({ ...r, createdAt: Date.now() - 3 * 3600_000, retiredAt: Date.now() - 2 * 3600_000 }));
    await keychainSet(ref, JSON.stringify(stored));

    const b2 = await BrokerProcess.start(env);
    try {
      const jwks = (await (await fetch(`${b2.discovery.httpUrl}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]!.kid).not.toBe(oldKid);

      // The log as it was before the rotation: every checkpoint names the old key, which the JWKS lacks.
      const first = checkpointLines[0]!;
      const unverifiable = await writWithoutKeychain(['audit', 'verify', '--file', before], env);
      expect(unverifiable.code).toBe(3);
      expect(unverifiable.stdout).toBe('');
      expect(unverifiable.stderr).toContain(`${before}: checkpoint signatures checked with keys from the running broker's JWKS (the keychain is not reachable here: WRIT_KEYCHAIN_UNAVAILABLE)`);
      expect(unverifiable.stderr).toContain(
        `writ: audit log UNVERIFIABLE from line ${first} (seq ${first - 1}): audit log line ${first} (seq ${first - 1}): checkpoint signed by key ${oldKid}, which the key set lacks`,
      );
      expect(unverifiable.stderr).toContain(`no break found: the hash chain holds for all ${lines.length} records`);
      expect(unverifiable.stderr.trimEnd().endsWith('(WRIT_AUDIT_UNVERIFIABLE)')).toBe(true);
      expect(unverifiable.stderr).not.toContain('BROKEN');

      // The live log goes on past the rotation, whose record the new key signed at once: that checkpoint covers the old ones.
      const live = await writWithoutKeychain(['audit', 'verify'], env);
      expect(live.code).toBe(0);
      expect(live.stdout).toMatch(new RegExp(`^audit log intact: \\d+ records, \\d+ signed checkpoints(, \\d+ after it vouched for by the running broker \\(pid ${b2.child.pid}\\))?\n$`));
      expect(live.stderr).toContain(`${checkpointLines.length} checkpoint(s) name keys not among them, each covered by a later checkpoint that verifies`);

      // An edit is a break whatever keys are missing.
      const idx = lines.findIndex((l) => l.includes('"event":"token.minted"'));
      const tampered = join(env.WRIT_STATE_DIR, 'tampered.jsonl');
      writeFileSync(tampered, lines.map((l, i) => (i === idx ? l.replace('repo:read:a', 'repo:read:b') : l)).join('\n') + '\n');
      const bad = await writWithoutKeychain(['audit', 'verify', '--file', tampered], env);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain(`writ: audit log BROKEN at line ${idx + 2} (seq ${idx + 1}): chain:`);
      expect(bad.stderr).not.toContain('UNVERIFIABLE');
    } finally {
      await b2.stop();
    }

    // The keychain holds every key ever: the old file verifies in full.
    const full = await writ(['audit', 'verify', '--file', before], env);
    expect(full.code).toBe(0);
    expect(full.stdout).toBe(`audit log intact: ${lines.length} records, ${checkpointLines.length} signed checkpoints\n`);
    // A complete key set without the old key (another keychain entry): an unknown kid stays a break.
    const stranger = { ...ref, service: `${ref.service}-stranger` };
    await keychainSet(stranger, serializeKeySet(new KeySet(await newSigningKey(Date.now()), [])));
    try {
      const broken = await writ(['audit', 'verify', '--file', before], { ...env, WRIT_KEYCHAIN_SERVICE: stranger.service });
      expect(broken.code).toBe(1);
      expect(broken.stderr).toContain(`writ: audit log BROKEN at line ${checkpointLines[0]!} (seq ${checkpointLines[0]! - 1}): unknown-kid:`);
    } finally {
      await keychainDelete(stranger);
    }
  }, 120_000);
});

describe('writ exec inside an agent session', () => {
  it('starts a sub-agent bounded by its parent, with the chain in act, stopped with its parent', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client: parent } = await b.agent('orchestrator');
    const pr = await parent.call('task.request', { task: 'ship', scopes: ['repo:read:acme/*'], audience: 'aud' });
    const env = { ...b.env, WRIT_SESSION: pr.session!, WRIT_BROKER: b.socket };
    const show = `process.stdout.write(JSON.stringify(JSON.parse(Buffer.from(process.env.WRIT_TOKEN.split('.')[1], 'base64url'))))`;
    const prompts = b.requests.length;
    const child = await writ(['exec', '--task', 'read web', '--scope', 'repo:read:acme/web', '--aud', 'aud', '--agent', 'reader', '--', process.execPath, '-e', show], env);
    expect(child.code, child.stderr).toBe(0);
    const claims = JSON.parse(child.stdout);
    expect(claims.scope).toBe('repo:read:acme/web');
    expect(claims.act.act).toEqual({ sub: pr.grant.agentId });
    expect(b.requests.length).toBe(prompts); // bounded by the parent: no prompt
    const wider = await writ(['exec', '--task', 'push', '--scope', 'repo:write:acme/web', '--aud', 'aud', '--agent', 'pusher', '--', process.execPath, '-e', '0'], env);
    expect(wider.code).toBe(1);
    expect(wider.stderr).toContain('(WRIT_SCOPE_NOT_COVERED)');
    // A long-running sub-agent ends when its parent is revoked. Revoked once its command runs (it says so with a
    // file): revoked earlier, between its hello and its token, `writ exec` has nothing to stop and exits 1.
    const mark = join(b.env.WRIT_STATE_DIR, 'waiter-running');
    const running = writ(
      ['exec', '--task', 'wait', '--scope', 'repo:read:acme/api', '--aud', 'aud', '--agent', 'waiter', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(mark)}, ''); setInterval(() => {}, 1000)`],
      env,
    );
    for (let i = 0; i < 400 && !existsSync(mark); i++) await new Promise((r) => setTimeout(r, 25));
    expect(existsSync(mark)).toBe(true);
    await parent.call('revoke', { target: { kind: 'agent', id: pr.grant.agentId } }).catch(() => undefined);
    const r = await running;
    expect(r.code).toBe(128 + 15);
    await parent.close().catch(() => undefined);
    await b.stop();
  });
});

/**
 * `writ exec` of a node script that writes its pid, token and session to a marker and idles (SIGQUIT ends it with
 * exit 77, so no core file is left behind); the wrapper runs without a terminal, as under an agent runner.
 */
async function execIdle(env: Record<string, string>, agent: string) {
  const marker = join(env.WRIT_STATE_DIR!, `${agent}-running`);
  const script = `process.on('SIGQUIT', () => process.exit(77));
    require('fs').writeFileSync(${JSON.stringify(marker)}, JSON.stringify({ pid: process.pid, token: process.env.WRIT_TOKEN, session: process.env.WRIT_SESSION }));
    setInterval(() => {}, 1000)`;
  const w = spawn(process.execPath, [WRIT, 'exec', '--task', 'long job', '--scope', 'repo:read:x', '--aud', 'https://api.example', '--agent', agent, '--', process.execPath, '-e', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  w.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => w.on('exit', (code, signal) => r({ code, signal })));
  const { pid, token, session } = await until(() => {
    try {
      return JSON.parse(readFileSync(marker, 'utf8')) as { pid: number; token: string; session: string };
    } catch {
      return undefined;
    }
  });
  execCleanup.push(() => {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  });
  return { w, pid, token, session, exited, stderr: () => stderr };
}

const execCleanup: (() => unknown)[] = [];

describe('writ exec without a terminal', () => {
  afterEach(async () => {
    for (const c of execCleanup.splice(0)) await c();
  });

  it('passes SIGHUP, SIGQUIT and SIGTERM on to its command (in a session of its own) and exits as the command did', async () => {
    const b = await BrokerProcess.start(freshEnv());
    execCleanup.push(() => b.stop());
    b.decide = approveAll;
    const seen: { sig: string; code: number | null; signal: string | null; commandAlive: boolean }[] = [];
    for (const sig of ['SIGHUP', 'SIGQUIT', 'SIGTERM'] as const) {
      const run = await execIdle(b.env, `signalled-${sig.toLowerCase()}`);
      run.w.kill(sig);
      const exit = await run.exited;
      seen.push({ sig, ...exit, commandAlive: isAlive(run.pid) });
    }
    // As a shell reports a command killed by a signal: 128 + its number (SIGHUP 1, SIGTERM 15); SIGQUIT's handler exits 77.
    expect(seen).toEqual([
      { sig: 'SIGHUP', code: 129, signal: null, commandAlive: false },
      { sig: 'SIGQUIT', code: 77, signal: null, commandAlive: false },
      { sig: 'SIGTERM', code: 143, signal: null, commandAlive: false },
    ]);
  }, 120_000);
});

describe('writ token against a broker that stops answering', () => {
  it('waits as long as the developer takes while the broker answers pings, and fails with WRIT_BROKER_UNREACHABLE once it is frozen', async () => {
    const b = await BrokerProcess.start(freshEnv());
    const pid = b.child.pid!;
    // Nobody decides: the request waits for the developer. The client's liveness window is 4 s here (30 s by default).
    const env = { ...b.env, WRIT_BROKER_TIMEOUT_MS: '4000' };
    const args = ['token', '--task', 'wait for me', '--scope', 'repo:read:acme/web', '--aud', 'https://api.example', '--agent', 'patient'];
    let settled = false;
    const run = writ(args, env, { timeout: 80_000 }).finally(() => (settled = true));
    await until(() => (b.requests.length === 1 ? true : undefined));
    // Several windows go by: the broker answers pings, so a call waiting for an approval is not cut off.
    await new Promise((r) => setTimeout(r, 12_000));
    expect(settled).toBe(false);
    process.kill(pid, 'SIGSTOP');
    try {
      const frozen = await run;
      expect(frozen).toEqual({ code: 1, stdout: '', stderr: 'writ: the broker did not answer for 4 s (stopped or stuck) (WRIT_BROKER_UNREACHABLE)\n' });
      // A new connection to the frozen broker does not hang at the handshake either (the kernel still accepts it).
      const later = await writ(args, env, { timeout: 60_000 });
      expect(later).toEqual({ code: 1, stdout: '', stderr: 'writ: the Writ broker did not answer within 4 s (stopped or stuck) (WRIT_BROKER_UNREACHABLE)\n' });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const bad = await writ(args, { ...env, WRIT_BROKER_TIMEOUT_MS: '4s' });
    expect(bad).toEqual({ code: 1, stdout: '', stderr: 'writ: WRIT_BROKER_TIMEOUT_MS must be a whole number of milliseconds, at least 100 (WRIT_USAGE)\n' });
    await b.stop();
  }, 180_000);
});

describe('writ exec when its line to the broker breaks', () => {
  afterEach(async () => {
    for (const c of execCleanup.splice(0)) await c();
  });

  it('survives a broker restart: the command runs on, its agent is back under its name, and revoking it (by its new id or the one it had) stops the command', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const renamed = await execIdle(env, 'survivor-new-id');
    const remembered = await execIdle(env, 'survivor-old-id');
    const before = await liveAgents(env);
    const oldId = (name: string) => before.find((a) => a.name === name)!.id;
    await b1.kill(); // a crash; the extension starts it again
    for (const run of [renamed, remembered]) await until(() => (run.stderr().includes('lost the connection') ? true : undefined));
    // While the broker is away the commands run on: their tokens stay valid until they expire.
    expect([isAlive(renamed.pid), isAlive(remembered.pid)]).toEqual([true, true]);
    const b2 = await BrokerProcess.start(env);
    execCleanup.push(() => b2.stop());
    for (const run of [renamed, remembered]) await until(() => (run.stderr().includes('writ: reconnected') ? true : undefined));
    // The new broker never knew their sessions: each is a new agent under its name, listed as connected.
    const after = await liveAgents(env);
    const back = after.find((a) => a.name === 'survivor-new-id')!;
    const survivors = after.filter((a) => a.name.startsWith('survivor')).sort((x, y) => x.name.localeCompare(y.name));
    expect(survivors.map((a) => ({ name: a.name, connected: a.connected, revoked: a.revoked, renamed: a.id !== oldId(a.name) }))).toEqual([
      { name: 'survivor-new-id', connected: true, revoked: false, renamed: true },
      { name: 'survivor-old-id', connected: true, revoked: false, renamed: true },
    ]);

    // Revoked as the agent it is now: the broker closes its line with 4001.
    expect((await writ(['revoke', '--agent', back.id], env)).code).toBe(0);
    expect({ ...(await renamed.exited), alive: isAlive(renamed.pid), other: isAlive(remembered.pid) }).toEqual({ code: 143, signal: null, alive: false, other: true });
    // Its token names the id it had before the restart: writ exec revoked that too, so the token (and any copy) is dead.
    expect(await until(async () => ((await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: renamed.token })).json.active === false ? true : undefined))).toBe(true);
    // Revoked as the agent it was (its id from before the restart, as the audit log names it): heard on a subscription.
    expect((await writ(['revoke', '--agent', oldId('survivor-old-id')], env)).code).toBe(0);
    expect({ ...(await remembered.exited), alive: isAlive(remembered.pid) }).toEqual({ code: 143, signal: null, alive: false });

    const lines = renamed.stderr().trim().split('\n').filter((l) => !l.startsWith('writ: cannot reconnect to the broker yet (WRIT_BROKER_UNREACHABLE)'));
    expect(lines).toEqual([
      expect.stringMatching(/^writ: lost the connection to the broker \(close 1006\); the command keeps running and its token stays valid until \d{4}-\d\d-\d\dT[\d:.]+Z \(no revocation can reach it meanwhile\); reconnecting$/),
      `writ: reconnected to the broker, which restarted and no longer knows this agent's session: it is now agent ${back.id} (\`writ agents --live\` lists it by name; revoking it, or the agent it was, stops the command)`,
      'writ: the agent was revoked; stopping its process tree',
      // Its token names the id it had: that one is revoked too, so the token stops working with the command.
      `writ: revoked ${oldId('survivor-new-id')} too, the id its token names`,
    ]);
    // The agent it is now holds the session: writ exec revoked it too, so nothing holding WRIT_SESSION gets a token.
    expect(remembered.stderr().trim().split('\n').slice(-2)).toEqual([
      `writ: the agent ${oldId('survivor-old-id')} was revoked; stopping its process tree`,
      `writ: revoked ${after.find((a) => a.name === 'survivor-old-id')!.id} too, the id the agent has now`,
    ]);
    for (const run of [renamed, remembered]) {
      expect(run.stderr()).not.toContain(run.token);
      expect(run.stderr()).not.toContain(run.session);
    }
    const stopped = await until(() => {
      const recs = b2.auditLines().map((l) => JSON.parse(l)).filter((r) => r.event === 'agent.stopped');
      return recs.length === 2 ? recs : undefined;
    });
    expect(stopped.map((r) => ({ name: r.agent.name, pid: r.detail.pid, treeStopped: r.detail.treeStopped })).sort((x, y) => x.name.localeCompare(y.name))).toEqual([
      { name: 'survivor-new-id', pid: renamed.pid, treeStopped: true },
      { name: 'survivor-old-id', pid: remembered.pid, treeStopped: true },
    ]);
  }, 180_000);

  it('resumes the same agent when the line breaks but the broker stays up; revoked while the line is down, the broker refuses the session on reconnecting and the command is stopped', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    execCleanup.push(() => b.stop());
    b.decide = approveAll;
    const r = await relay(() => b);
    const run = await execIdle({ ...env, WRIT_BROKER: r.url }, 'cut-off');
    const id = (await liveAgents(env)).find((a) => a.name === 'cut-off')!.id;
    r.cut();
    r.open = true;
    await until(() => (run.stderr().includes(`writ: reconnected to the broker as agent ${id}\n`) ? true : undefined));
    expect((await liveAgents(env)).filter((a) => a.name === 'cut-off').map((a) => ({ id: a.id, connected: a.connected }))).toEqual([{ id, connected: true }]);
    r.cut();
    await until(() => (run.stderr().split('writ: lost the connection').length === 3 ? true : undefined));
    // Revoked while its line is down: there is no connection of it to close.
    expect((await writ(['revoke', '--agent', id], env)).code).toBe(0);
    expect(isAlive(run.pid)).toBe(true);
    r.open = true;
    expect({ ...(await run.exited), alive: isAlive(run.pid) }).toEqual({ code: 143, signal: null, alive: false });
    expect(run.stderr().trim().split('\n').at(-1)).toBe("writ: the broker refused the agent's session (WRIT_SESSION_INVALID); stopping its process tree");
  }, 120_000);

  // Revoking the agent: the list keeps its session's hash, and the new broker refuses the session. Revoking everything:
  // the list names no session, the new broker takes it, and the line hears the revocation on subscribing.
  it.each([
    ['its agent', (id: string) => ['--agent', id], "writ: the broker refused the agent's session (WRIT_SESSION_INVALID)"],
    ['everything', () => ['--all'], undefined],
  ] as const)('stops the command when %s was revoked while the line was down and the broker then restarted (its revocation list remembers)', async (_what, target, said) => {
    const env = freshEnv();
    let b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const r = await relay(() => b);
    const run = await execIdle({ ...env, WRIT_BROKER: r.url }, 'cut-then-restart');
    const id = (await liveAgents(env)).find((a) => a.name === 'cut-then-restart')!.id;
    r.cut();
    await until(() => (run.stderr().includes('writ: lost the connection') ? true : undefined));
    expect((await writ(['revoke', ...target(id)], env)).code).toBe(0);
    await b.stop();
    b = await BrokerProcess.start(env); // knows no session; its revocation list remembers
    execCleanup.push(() => b.stop());
    expect(isAlive(run.pid)).toBe(true);
    r.open = true;
    expect({ ...(await run.exited), alive: isAlive(run.pid) }).toEqual({ code: 143, signal: null, alive: false });
    const now = (await liveAgents(env)).find((a) => a.name === 'cut-then-restart' && a.id !== id)?.id;
    // After `all` the new broker took the session (the list names none): writ exec revoked the agent that took it.
    expect(run.stderr().trim().split('\n').slice(said ? -1 : -2)).toEqual(
      said
        ? [`${said}; stopping its process tree`]
        : [`writ: the agent ${id} was revoked while the broker was away; stopping its process tree`, `writ: revoked ${now} too, the id the agent has now`],
    );
    // The stop is on record: by the agent's old id, which the new broker knows only from its revocation list, or
    // as the agent that took the session, which `writ exec` revoked too (a revocation of everything names no session).
    const rec = b.auditLines().map((l) => JSON.parse(l)).find((x) => x.event === 'agent.stopped');
    if (said) expect(rec).toMatchObject({ outcome: 'success', detail: { agentId: id, revoked: true, unknownAgent: true, treeStopped: true } });
    else expect(rec).toMatchObject({ outcome: 'success', agent: { name: 'cut-then-restart' }, detail: { revoked: true, treeStopped: true } });
  }, 120_000);
});

/**
 * A TCP relay to the broker's WebSocket port that the test can cut (every connection dropped, new ones refused
 * until `open` is set again) while the broker stays up. `broker()` is asked at each connection: it may have restarted.
 */
async function relay(broker: () => BrokerProcess): Promise<{ url: string; open: boolean; cut: () => void }> {
  const held = new Set<Socket>();
  const state = {
    url: '',
    open: true,
    cut: () => {
      state.open = false;
      for (const s of held) s.destroy();
    },
  };
  const server = createNetServer((s) => {
    if (!state.open) return void s.destroy();
    const up = connect(Number(new URL(broker().discovery.httpUrl).port), '127.0.0.1');
    for (const [x, y] of [[s, up], [up, s]] as const) {
      held.add(x);
      x.on('error', () => y.destroy());
      x.on('close', () => {
        held.delete(x);
        y.destroy();
      });
      x.pipe(y);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  execCleanup.push(() => new Promise((r) => server.close(r)));
  state.url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return state;
}
