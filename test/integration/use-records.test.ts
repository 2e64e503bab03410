// A resource's awaited use report (`token.uses`, what `writ gate` waits for before it forwards a tool call) is open to
// any local process: it must not let one plant "allowed" records for a revoked token, pass off a jti the broker does
// not hold as one of its own, or make the broker write without bound.
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { z } from 'zod';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import { codeOf } from '../helpers/codes';
import { WritClient } from '../../broker/sdk/client';

requireKeyring();
const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

describe('token.uses and token.uses.open, the awaited use reports', () => {
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

  it("a verifier from before use ids still records through this broker: token.uses answers exactly {recorded}; token.uses.open names each call's use", async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    cleanup.push(() => b.stop());
    b.decide = approveAll;
    const { client } = await b.agent('user-of-old-resource');
    const r = await client.call('task.request', { task: 'old resource', scopes: ['mcp:call:github/*'], audience: 'https://api.example' });
    // The frames such a verifier sends and reads, over a raw WebSocket: no client of this branch in between.
    const ws = new WebSocket(`ws+unix://${b.discovery.socketPath}:/`, { perMessageDeflate: false, headers: { host: 'localhost' } });
    cleanup.push(() => ws.close());
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    let nextId = 1;
    const rpc = (method: string, params: unknown) =>
      new Promise<Record<string, unknown>>((resolve) => {
        const id = nextId++;
        const hear = (data: Buffer) => {
          const m = JSON.parse(data.toString());
          if (m.id !== id) return;
          ws.off('message', hear);
          resolve(m);
        };
        ws.on('message', hear);
        ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
      });
    const calls = [
      { resource: 'mcp', action: 'call', target: 'github/create_issue' },
      { resource: 'mcp', action: 'call', target: 'github/list_issues' },
    ];
    // The result schema of `token.uses` as main's verifier has it (strict): anything more and every authorize failed.
    const before = z.strictObject({ recorded: z.number().int().min(0) });
    const old = await rpc('token.uses', { jti: r.token.jti, exp: r.token.expiresAt, calls });
    expect(old).toEqual({ jsonrpc: '2.0', id: 1, result: { recorded: 2 } });
    expect(before.safeParse(old.result).success).toBe(true);
    const opened = await rpc('token.uses.open', { jti: r.token.jti, exp: r.token.expiresAt, calls });
    expect(opened).toEqual({ jsonrpc: '2.0', id: 2, result: { recorded: 2, uses: [expect.stringMatching(/^use_/), expect.stringMatching(/^use_/)] } });
    const uses = (opened.result as { uses: string[] }).uses;
    const used = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used' && x.jti === r.token.jti);
    // Only the calls recorded through token.uses.open name a use, each its own.
    expect(used.map((x) => [x.detail.call.target, x.detail.use])).toEqual([
      ['github/create_issue', undefined],
      ['github/list_issues', undefined],
      ['github/create_issue', uses[0]],
      ['github/list_issues', uses[1]],
    ]);
  }, 120_000);
});
