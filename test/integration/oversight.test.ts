// Inventory and watch against the real broker: each rule fires on a scripted misbehaving agent (a real
// client over the real socket), an ordinary workload raises nothing, blocks and the inventory survive a
// restart, and a corrupt inventory stops the broker with a clear error.
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { BrokerProcess, WRIT, approveAll, form, freshEnv, requireKeyring, writ } from '../helpers/broker';
import { WritError } from '../../broker/errors';
import { identityOf } from '../../broker/core/inventory';
import { codeOf } from '../helpers/codes';

requireKeyring();

const AUD = 'https://api.example';
const USER = 'dev@example.com';


const auditEvents = (b: BrokerProcess) => b.auditLines().map((l) => JSON.parse(l));

describe('oversight: the watch on a live broker', () => {
  it('an ordinary workload raises no finding', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = () => ({ decision: 'approve', mode: 'session' });
    const { client } = await b.agent('steady');
    const first = await client.call('task.request', { task: 'work', scopes: ['repo:read:acme/*'], audience: AUD });
    for (let i = 0; i < 20; i++) await client.call('task.request', { task: `work ${i}`, scopes: ['repo:read:acme/web'], audience: AUD });
    for (let i = 0; i < 300; i++) await client.call('token.mint', { grantId: first.grant.id });
    expect((await client.call('findings.list', {})).findings).toEqual([]);
    expect((await client.call('status', {})).findings).toBe(0);
    await client.close();
    await b.stop();
  });

  it('a request burst blocks the agent: refused without a prompt, across a restart, until unblocked over IPC', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('runaway');
    const codes: string[] = [];
    for (let i = 0; i < 32; i++) codes.push(await codeOf(client.call('task.request', { task: 'spam', scopes: ['repo:read:a'], audience: AUD })));
    expect(codes.slice(0, 30).every((c) => c === 'resolved')).toBe(true);
    expect(codes[30]).toBe('WRIT_AGENT_BLOCKED');
    const identity = identityOf(USER, 'runaway', 'script');
    const events = auditEvents(b);
    const finding = events.find((r) => r.event === 'finding');
    expect(finding.detail).toMatchObject({ kind: 'request-burst', action: 'block', identity, evidence: { requests: 31, windowMs: 10_000 } });
    expect(events.some((r) => r.event === 'agent.blocked' && r.detail.identity === identity)).toBe(true);
    expect(events.filter((r) => r.event === 'task.denied').map((r) => r.code)).toContain('WRIT_AGENT_BLOCKED');
    await client.close().catch(() => undefined);
    await b.stop();

    const b2 = await BrokerProcess.start(env);
    b2.decide = approveAll;
    const { client: again } = await b2.agent('runaway');
    expect(await codeOf(again.call('task.request', { task: 'after restart', scopes: ['repo:read:a'], audience: AUD }))).toBe('WRIT_AGENT_BLOCKED');
    expect(b2.requests).toHaveLength(0);
    const inv = await writ(['agents', '--json'], env);
    expect(JSON.parse(inv.stdout).find((a: { id: string }) => a.id === identity)).toMatchObject({ status: 'blocked', name: 'runaway', sessions: 2 });
    // Unblocking is refused from the CLI while the broker runs; the editor does it over IPC.
    const cli = await writ(['agents', 'unblock', identity], env);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('(WRIT_BROKER_RUNNING)');
    b2.send({ type: 'agent.unblock', identity });
    for (let i = 0; i < 100 && !auditEvents(b2).some((r) => r.event === 'agent.unblocked'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await codeOf(again.call('task.request', { task: 'after unblock', scopes: ['repo:read:a'], audience: AUD }))).toBe('resolved');
    expect(b2.requests).toHaveLength(1);
    await again.close();
    await b2.stop();
  });

  it('scope creep warns and lets the request through; a dismissal is audited', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client, hello } = await b.agent('creeper');
    await client.call('task.request', { task: 'read', scopes: ['repo:read:acme/web'], audience: AUD });
    const r = await client.call('task.request', { task: 'write', scopes: ['repo:write:acme/web'], audience: AUD });
    expect(r.grant.scopes).toEqual(['repo:write:acme/web']);
    const { findings } = await client.call('findings.list', {});
    expect(findings.map((f) => [f.kind, f.action, f.agentId, f.evidence])).toEqual([['scope-creep', 'warn', hello.agentId, { newScopes: ['repo:write:acme/web'], grantedBefore: 1 }]]);
    const status = await writ(['status'], b.env);
    expect(status.stdout).toContain(`${findings[0]!.id}  scope-creep  agent ${hello.agentId}`);
    b.send({ type: 'finding.dismiss', id: findings[0]!.id });
    for (let i = 0; i < 100 && (await client.call('findings.list', {})).findings.length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await client.call('findings.list', {})).findings).toEqual([]);
    expect(auditEvents(b).find((e) => e.event === 'finding.dismissed')?.detail).toMatchObject({ id: findings[0]!.id, kind: 'scope-creep', by: 'ipc' });
    await client.close();
    await b.stop();
  });

  it('a mint burst with the action set to stop revokes the agent; a revoked token presented again is a finding', async () => {
    const b = await BrokerProcess.start(
      freshEnv({ WRIT_WATCH_CONFIG: JSON.stringify({ mintBurst: { windowMs: 10_000, min: 50, factor: 10 } }), WRIT_WATCH_ACTIONS: 'mint-burst=stop' }),
    );
    b.decide = approveAll;
    const { client } = await b.agent('minter');
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a'], audience: AUD });
    const codes: string[] = [];
    for (let i = 0; i < 60; i++) codes.push(await codeOf(client.call('token.mint', { grantId: r.grant.id })));
    expect(codes.filter((c) => c === 'resolved')).toHaveLength(49);
    expect(codes[49]).toBe('WRIT_TOKEN_REVOKED');
    expect(await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: r.token.token })).toEqual({ status: 200, json: { active: false } });
    const kinds = auditEvents(b)
      .filter((e) => e.event === 'finding')
      .map((e) => [e.detail.kind, e.detail.action]);
    expect(kinds).toEqual([
      ['mint-burst', 'stop'],
      ['bad-token', 'warn'],
    ]);
    await client.close().catch(() => undefined);
    await b.stop();
  });

  it('an expired token of an agent presented again is a bad-token finding against that agent', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client, hello } = await b.agent('late');
    const r = await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 1 });
    // Past the token's expiry and the 5 s clock tolerance.
    await new Promise((res) => setTimeout(res, 7_000));
    expect(await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: r.token.token })).toEqual({ status: 200, json: { active: false } });
    const { findings } = await client.call('findings.list', {});
    expect(findings.map((f) => [f.kind, f.agentId, f.evidence])).toEqual([['bad-token', hello.agentId, { code: 'WRIT_TOKEN_EXPIRED', jti: r.token.jti }]]);
    await client.close();
    await b.stop();
  });

  it('a flood of waiting requests is flagged', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = () => null; // nobody answers
    const { client } = await b.agent('flooder');
    const waiting = [1, 2, 3].map((i) => client.call('task.request', { task: `t${i}`, scopes: ['repo:read:a'], audience: AUD }).catch(() => undefined));
    for (let i = 0; i < 100 && b.requests.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    const { findings } = await client.call('findings.list', {});
    expect(findings.map((f) => [f.kind, f.evidence])).toEqual([['pending-flood', { pending: 3 }]]);
    await client.close();
    await Promise.all(waiting);
    await b.stop();
  });
});

describe('oversight: the inventory', () => {
  it('survives a restart and exports for a team as CSV and JSON', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client: parent } = await b.agent('claude-code');
    const pr = await parent.call('task.request', { task: 't', scopes: ['repo:read:acme/*'], audience: AUD });
    const { client: child } = await b.agent('helper', { parentSession: pr.session! });
    await child.call('task.request', { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    await child.close();
    await parent.close();
    await b.stop();
    const parentId = identityOf(USER, 'claude-code', 'script');
    const childId = identityOf(USER, 'helper', 'script', parentId);
    // With the broker stopped, export reads the inventory file itself.
    const csv = await writ(['agents', 'export', '--format', 'csv'], env);
    expect(csv.code).toBe(0);
    const rows = csv.stdout.trim().split('\r\n');
    expect(rows[0]).toBe('id,name,kind,owner,status,first_seen,last_seen,sessions,tokens_now,executables,parents,sub_agents,scopes_granted,blocked_at');
    const parentRow = rows.find((r) => r.startsWith(parentId))!.split(',');
    expect([parentRow[1], parentRow[3], parentRow[4], parentRow[7], parentRow[11], parentRow[12]]).toEqual(['claude-code', USER, 'idle', '1', childId, 'repo:read:acme/*']);
    expect(parentRow[9]).toMatch(/node/); // the kernel-reported executable of the test process
    const json = JSON.parse((await writ(['agents', 'export'], env)).stdout);
    expect(json.agents.find((a: { id: string }) => a.id === childId)).toMatchObject({ parents: [parentId], scopesGranted: ['repo:read:acme/web'] });
  });

  it('block from the CLI; unblock from the CLI only while the broker is stopped, audited and verifiable', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('offline');
    await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const identity = identityOf(USER, 'offline', 'script');
    const blocked = await writ(['agents', 'block', identity, '--reason', 'testing'], env);
    expect(blocked.code, blocked.stderr).toBe(0);
    await client.close().catch(() => undefined);
    const { client: again } = await b.agent('offline');
    expect(await codeOf(again.call('task.request', { task: 'u', scopes: ['repo:read:a'], audience: AUD }))).toBe('WRIT_AGENT_BLOCKED');
    await again.close();
    await b.stop();
    const unblocked = await writ(['agents', 'unblock', identity], env);
    expect(unblocked.code, unblocked.stderr).toBe(0);
    expect(JSON.parse((await writ(['agents', '--json'], env)).stdout).find((a: { id: string }) => a.id === identity).blocked).toBe(null);
    const lines = readFileSync(join(env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((r) => r.event === 'agent.blocked' || r.event === 'agent.unblocked').map((r) => [r.event, r.detail.by])).toEqual([
      ['agent.blocked', 'socket'],
      ['agent.unblocked', 'cli'],
    ]);
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);
  });

  it('a corrupt inventory stops the broker with a clear error instead of an empty inventory', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    await b.stop();
    writeFileSync(join(env.WRIT_STATE_DIR, 'agents.json'), '{"v":1,"agents":[{"id":');
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [WRIT, 'serve'], { env: { ...process.env, ...env } }, (error, _o, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr })),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(WRIT_INVENTORY_CORRUPT)');
    expect(readFileSync(join(env.WRIT_STATE_DIR, 'agents.json'), 'utf8')).toBe('{"v":1,"agents":[{"id":');
  });
});
