// Two edges found by a review of this session's fixes: a resource's awaited use report (`token.uses`) must not let
// any local process plant "allowed" records without bound or for a revoked token, and a `writ exec` agent that came
// back under a new id after a broker restart must take its token down with it when revoked.
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { BrokerProcess, WRIT, approveAll, form, freshEnv, requireKeyring, writ } from '../helpers/broker';
import { codeOf } from '../helpers/codes';
import { WritClient } from '../../broker/sdk/client';
import { isAlive } from '../../broker/proxy/process-tree';
import { until } from '../helpers/until';

requireKeyring();
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

async function execIdle(env: Record<string, string>, agent: string) {
  const marker = join(env.WRIT_STATE_DIR!, `${agent}-running`);
  const script = `require('fs').writeFileSync(${JSON.stringify(marker)}, JSON.stringify({ pid: process.pid, token: process.env.WRIT_TOKEN })); setInterval(() => {}, 1000)`;
  const w = spawn(process.execPath, [WRIT, 'exec', '--task', 'long job', '--scope', 'repo:read:x', '--aud', 'https://api.example', '--agent', agent, '--', process.execPath, '-e', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  w.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => w.on('exit', (code, signal) => r({ code, signal })));
  const { pid, token } = await until(() => {
    try {
      return JSON.parse(readFileSync(marker, 'utf8')) as { pid: number; token: string };
    } catch {
      return undefined;
    }
  });
  cleanup.push(() => {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  });
  return { pid, token, exited, stderr: () => stderr };
}

describe('use records and an agent back after a restart', () => {
  it('token.uses: a revoked jti is refused, an unknown one is marked unknown, and a flood is refused past its budget', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    cleanup.push(() => b.stop());
    b.decide = approveAll;
    const { client } = await b.agent('user-of-tools');
    const r = await client.call('task.request', { task: 'tools', scopes: ['mcp:call:github/*'], audience: 'https://api.example' });
    const c = await WritClient.connect(`unix:${b.discovery.socketPath}`, { ...process.env, ...env });
    cleanup.push(() => c.close());
    const call = { resource: 'mcp', action: 'call', target: 'github/create_issue' };
    // A token of this run: recorded, named; then revoked: refused, and nothing more is recorded for it.
    expect(await c.call('token.uses', { jti: r.token.jti, exp: r.token.expiresAt, calls: [call] })).toEqual({ recorded: 1 });
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    expect(await codeOf(c.call('token.uses', { jti: r.token.jti, exp: r.token.expiresAt, calls: [call] }))).toBe('WRIT_TOKEN_REVOKED');
    const mine = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used' && x.jti === r.token.jti);
    expect(mine.map((x) => [x.outcome, x.grantId, x.detail.unknownToken])).toEqual([['success', r.grant.id, undefined]]);
    // A jti this broker does not hold (made up, or minted before a restart): recorded as unknown, never as its own.
    expect(await c.call('token.uses', { jti: 'jti_forged', calls: [call] })).toEqual({ recorded: 1 });
    const forged = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === 'jti_forged');
    expect(forged.map((x) => [x.outcome, x.detail.unknownToken, x.grantId, x.agent])).toEqual([['success', true, undefined, undefined]]);
    // 20 reports of 256 calls at once: at least 2,560 fall in one second, past the 2,000 a connection may record.
    const calls = Array.from({ length: 256 }, (_, i) => ({ resource: 'mcp', action: 'call', target: `forged/tool-${i}` }));
    const answers = await Promise.all(Array.from({ length: 20 }, () => c.call('token.uses', { jti: 'jti_flood', calls }).then(() => 'recorded', (e: unknown) => (e as { code?: string }).code)));
    expect(answers.filter((a) => a !== 'recorded' && a !== 'WRIT_RATE_LIMITED')).toEqual([]);
    expect(answers.filter((a) => a === 'WRIT_RATE_LIMITED').length).toBeGreaterThan(0);
    const flood = b.auditLines().filter((l) => l.includes('"jti_flood"')).length;
    expect(flood).toBe(answers.filter((a) => a === 'recorded').length * 256);
  }, 120_000);

  it('after a broker restart, revoking the agent writ exec came back as stops the command and its token', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const run = await execIdle(env, 'restart-token');
    await b1.kill();
    await until(() => (run.stderr().includes('lost the connection') ? true : undefined));
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    await until(() => (run.stderr().includes('writ: reconnected') ? true : undefined));
    const live = JSON.parse((await writ(['agents', '--live', '--json'], env)).stdout) as { id: string; name: string }[];
    const back = live.find((a) => a.name === 'restart-token')!;
    expect((await writ(['revoke', '--agent', back.id], env)).code).toBe(0);
    expect((await run.exited).code).toBe(143);
    expect(run.stderr()).toMatch(/writ: revoked agt_\S+ too, the id its token names/);
    expect(await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: run.token })).toEqual({ status: 200, json: { active: false } });
    expect(run.stderr()).not.toContain(run.token);
  }, 180_000);
});
