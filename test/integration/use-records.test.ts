// A resource's awaited use report (`token.uses`, what `writ gate` waits for before it forwards a tool call) is open to
// any local process: it must not let one plant "allowed" records for a revoked token, pass off a jti the broker does
// not hold as one of its own, or make the broker write without bound.
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import { codeOf } from '../helpers/codes';
import { WritClient } from '../../broker/sdk/client';

requireKeyring();
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

describe('token.uses, the awaited use report', () => {
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
    expect(await c.call('token.uses', { jti: r.token.jti, exp: r.token.expiresAt, calls: [call] })).toEqual({ recorded: 1, uses: [expect.stringMatching(/^use_/)] });
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    expect(await codeOf(c.call('token.uses', { jti: r.token.jti, exp: r.token.expiresAt, calls: [call] }))).toBe('WRIT_TOKEN_REVOKED');
    const mine = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used' && x.jti === r.token.jti);
    expect(mine.map((x) => [x.outcome, x.grantId, x.detail.unknownToken])).toEqual([['success', r.grant.id, undefined]]);
    // A jti this broker does not hold (made up, or minted before a restart): recorded as unknown, never as its own.
    expect(await c.call('token.uses', { jti: 'jti_forged', calls: [call] })).toEqual({ recorded: 1, uses: [expect.stringMatching(/^use_/)] });
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
});
