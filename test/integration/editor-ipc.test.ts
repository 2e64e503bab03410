// What the editor sees and does over the broker's IPC pipe (the approval channel): audit records only while it
// follows them, and otherwise a coalesced word that records were written; a grant's live tokens on request; the
// `state` answer carries the watch's open findings and the agent inventory; block, unblock and dismiss each answer
// `action.result` when asked with a requestId, and take effect on a real agent over the real socket.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BrokerProcess, approveAll, form, freshEnv, requireKeyring } from '../helpers/broker';
import { TOKENS_PER_ANSWER } from '../../broker/protocol';
import type { BrokerToParent, ParentToBroker } from '../../broker/protocol';
import { identityOf } from '../../broker/core/inventory';
import { codeOf } from '../helpers/codes';

requireKeyring();

const AUD = 'https://api.example';
const USER = 'dev@example.com';

type StateMsg = Extract<BrokerToParent, { type: 'state' }>;
type ResultMsg = Extract<BrokerToParent, { type: 'action.result' }>;
type ActivityMsg = Extract<BrokerToParent, { type: 'audit.activity' }>;
type TokensMsg = Extract<BrokerToParent, { type: 'tokens' }>;

async function waitForMessage<T extends BrokerToParent>(b: BrokerProcess, match: (m: BrokerToParent) => m is T): Promise<T> {
  for (let i = 0; i < 500; i++) {
    const m = b.messages.find(match);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the broker did not answer over IPC within 10 s');
}

async function state(b: BrokerProcess, requestId: string): Promise<StateMsg> {
  b.send({ type: 'state.request', requestId });
  return waitForMessage(b, (m): m is StateMsg => m.type === 'state' && m.requestId === requestId);
}

/** The identity's block as the inventory file holds it, read by the test the moment it is called. */
function blockOnDisk(b: BrokerProcess, identity: string): unknown {
  const file = JSON.parse(readFileSync(join(b.env.WRIT_STATE_DIR, 'agents.json'), 'utf8')) as { agents: { id: string; blocked: unknown }[] };
  return file.agents.find((a) => a.id === identity)?.blocked;
}

async function act(b: BrokerProcess, msg: ParentToBroker & { requestId: string }): Promise<ResultMsg> {
  b.send(msg);
  return waitForMessage(b, (m): m is ResultMsg => m.type === 'action.result' && m.requestId === msg.requestId);
}

/** Messages of one type, from index `from` of the pipe on. */
function ofType<K extends BrokerToParent['type']>(b: BrokerProcess, type: K, from = 0): Extract<BrokerToParent, { type: K }>[] {
  return b.messages.slice(from).filter((m): m is Extract<BrokerToParent, { type: K }> => m.type === type);
}

/** Resolves when an `audit.activity` message arrives after index `from`: the broker told of what was written by then. */
async function activityAfter(b: BrokerProcess, from: number): Promise<ActivityMsg> {
  return waitForMessage(b, (m): m is ActivityMsg => m.type === 'audit.activity' && b.messages.indexOf(m) >= from);
}

async function tokens(b: BrokerProcess, requestId: string, grantId: string): Promise<TokensMsg> {
  b.send({ type: 'tokens.request', requestId, grantId });
  return waitForMessage(b, (m): m is TokensMsg => m.type === 'tokens' && m.requestId === requestId);
}

/** Records the editor is told of by `audit.activity` (checkpoints and introspections change nothing it shows). */
const told = (r: { event: string }) => r.event !== 'checkpoint' && r.event !== 'token.introspected';

describe('the editor over IPC: the audit stream, only while followed', () => {
  it('sends no record to a new broker\'s editor; while followed every durable record once, in log order, batched; none after off', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const ready = b.messages.find((m): m is Extract<BrokerToParent, { type: 'ready' }> => m.type === 'ready')!;
    const { client } = await b.agent('minter');
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a'], audience: AUD });
    await client.call('token.mint', { grantId: r.grant.id });
    // Written, and the editor was told so, but sent none of them.
    await activityAfter(b, 0);
    await state(b, 'before');
    expect(ofType(b, 'audit.records')).toEqual([]);
    const before = b.auditLines().length;
    expect(before).toBeGreaterThanOrEqual(5); // broker.started, key.created, agent.connected, task.*, token.minted

    await b.follow(true);
    await Promise.all(Array.from({ length: 64 }, () => client.call('token.mint', { grantId: r.grant.id })));
    const onDisk = b.auditLines().map((l) => JSON.parse(l) as { seq: number; event: string; session: string });
    // The last record the client saw is on disk; the editor's copy catches up within the same flush.
    for (let i = 0; i < 250 && b.records.at(-1)?.seq !== onDisk.at(-1)!.seq; i++) await new Promise((res) => setTimeout(res, 20));
    // From the follow on, every record, once, in order: none of those written before it.
    const first = b.records[0]!.seq;
    expect(first).toBeGreaterThanOrEqual(before);
    expect(b.records.map((x) => [x.seq, x.event])).toEqual(onDisk.slice(first).map((x) => [x.seq, x.event]));
    expect(b.records.filter((x) => x.event === 'token.minted')).toHaveLength(64);
    expect(ofType(b, 'audit.records').length).toBeLessThan(b.records.length);
    // `ready` named the run the records say wrote them.
    expect(new Set(onDisk.map((x) => x.session))).toEqual(new Set([ready.session]));

    await b.follow(false);
    const kept = b.records.length;
    const mark = b.messages.length;
    await Promise.all(Array.from({ length: 10 }, () => client.call('token.mint', { grantId: r.grant.id })));
    await activityAfter(b, mark);
    await state(b, 'after-off'); // any record still waiting to go would go before this answer
    expect(b.records.length).toBe(kept);
    expect(ofType(b, 'audit.records', mark)).toEqual([]);
    expect(b.auditLines().map((l) => JSON.parse(l) as { event: string }).filter((x) => x.event === 'token.minted')).toHaveLength(76); // 1 + 1 + 64 + 10
    await client.close();
    await b.stop();
  });

  it('tells of every record written (checkpoints and introspections aside), a change at once and token activity at most once a second', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const t0 = Date.now();
    const { client } = await b.agent('minter');
    // A new agent is a change: told within the 5 ms window, not held for the once-a-second limit.
    const connected = await activityAfter(b, 0);
    expect(connected.changes).toBe(true);
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a'], audience: AUD });
    await Promise.all(Array.from({ length: 100 }, () => client.call('token.mint', { grantId: r.grant.id })));
    // A resource's introspection is audited, but changes nothing the editor's views show: not told.
    expect((await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: r.token.token })).json.active).toBe(true);
    await client.close();
    await b.stop(); // the broker tells of what is still waiting as it stops
    const elapsed = Date.now() - t0;

    const activity = ofType(b, 'audit.activity');
    const onDisk = b.auditLines().map((l) => JSON.parse(l) as { event: string });
    // Every record the editor's views care about is counted once: the broker's last word included.
    expect(activity.reduce((n, m) => n + m.records, 0)).toBe(onDisk.filter(told).length);
    // 101 tokens minted, in far fewer messages; token activity alone at most once a second of the run.
    expect(onDisk.filter((x) => x.event === 'token.minted')).toHaveLength(101);
    const countsOnly = activity.filter((m) => !m.changes).length;
    expect(countsOnly).toBeLessThanOrEqual(Math.ceil(elapsed / 1000) + 1);
    expect(activity.length).toBeLessThan(20);
    expect(ofType(b, 'audit.records')).toEqual([]);
  });
});

describe('the editor over IPC: a grant\'s live tokens on request', () => {
  it('lists the live tokens newest first, each with its exp and the scopes it was minted with, capped, with how many more', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('minter');
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a', 'repo:write:a'], audience: AUD });
    const minted = [r.token];
    // One at a time, so minting order is known; every third with fewer scopes than the grant's.
    for (let i = 0; i < 104; i++) minted.push(await client.call('token.mint', { grantId: r.grant.id, ...(i % 3 === 0 ? { scopes: ['repo:read:a'] } : {}) }));
    const view = (t: { jti: string; expiresAt: number; scopes: string[] }) => ({ jti: t.jti, expiresAt: t.expiresAt, scopes: t.scopes });

    const all = await tokens(b, 't1', r.grant.id);
    expect(all.tokens).toEqual(minted.slice(-TOKENS_PER_ANSWER).reverse().map(view));
    expect(all.more).toBe(105 - TOKENS_PER_ANSWER);
    expect(all.tokens[0]!.scopes).toEqual(['repo:read:a', 'repo:write:a']);
    expect(all.tokens.find((t) => t.jti === minted[103]!.jti)!.scopes).toEqual(['repo:read:a']); // i = 102

    // A token revoked by jti is gone from the list; revoking the grant empties it.
    await client.call('revoke', { target: { kind: 'token', jti: minted[104]!.jti } });
    const after = await tokens(b, 't2', r.grant.id);
    expect(after.tokens.map((t) => t.jti)).toEqual(minted.slice(-TOKENS_PER_ANSWER - 1, -1).reverse().map((t) => t.jti));
    expect(after.more).toBe(4);
    await client.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
    expect(await tokens(b, 't3', r.grant.id)).toEqual({ type: 'tokens', requestId: 't3', tokens: [], more: 0 });
    expect(await tokens(b, 't4', 'grt_unknown')).toEqual({ type: 'tokens', requestId: 't4', tokens: [], more: 0 });
    await client.close();
    await b.stop();
  });

  it('a malformed tokens.request or audit.follow is dropped: no answer, no stream, and the broker carries on', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    for (const bad of [
      { type: 'tokens.request', requestId: '', grantId: 'grt_x' },
      { type: 'tokens.request', requestId: 'r1', grantId: 42 },
      { type: 'tokens.request', requestId: 'r2', grantId: 'g'.repeat(101) },
      { type: 'tokens.request', requestId: 'r3' },
      { type: 'tokens.request', requestId: 'r4', grantId: 'grt_x', extra: true },
      { type: 'audit.follow', on: 'yes' },
      { type: 'audit.follow' },
    ]) b.child.send(bad);
    await state(b, 'after'); // the pipe keeps order: every bad message was seen and dropped by now
    const { client } = await b.agent('minter');
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a'], audience: AUD });
    expect((await tokens(b, 'ok', r.grant.id)).tokens.map((t) => t.jti)).toEqual([r.token.jti]);
    expect(ofType(b, 'tokens').map((m) => m.requestId)).toEqual(['ok']);
    expect(ofType(b, 'audit.records')).toEqual([]);
    await client.close();
    expect(await b.stop()).toBe(0);
  });
});

describe('the editor over IPC: findings, inventory, block, unblock, dismiss', () => {
  it('state lists the open finding and the identity; block refuses and stops the agent; unblock gives it back', async () => {
    const b = await BrokerProcess.start(freshEnv());
    await b.follow(true); // as with the audit panel open: the block's record comes over the pipe
    b.decide = approveAll;
    const { client, hello } = await b.agent('creeper');
    await client.call('task.request', { task: 'read', scopes: ['repo:read:acme/web'], audience: AUD });
    await client.call('task.request', { task: 'write', scopes: ['repo:write:acme/web'], audience: AUD });
    const identity = identityOf(USER, 'creeper', 'script');

    // The push, then the same finding in the state answer, with the identity in the inventory.
    const pushed = await waitForMessage(b, (m): m is Extract<BrokerToParent, { type: 'finding' }> => m.type === 'finding');
    expect([pushed.finding.kind, pushed.finding.identity, pushed.finding.agentId, pushed.finding.evidence]).toEqual([
      'scope-creep',
      identity,
      hello.agentId,
      { newScopes: ['repo:write:acme/web'], grantedBefore: 1 },
    ]);
    const s1 = await state(b, 's1');
    expect(s1.findings).toEqual([pushed.finding]);
    expect(s1.inventory.map((e) => [e.id, e.name, e.kind, e.owner, e.status, e.tokensNow, e.live])).toEqual([[identity, 'creeper', 'script', USER, 'active', 2, [hello.agentId]]]);

    // Block: answered, audited as by the editor's pipe, the live agent revoked, the next request refused.
    expect(await act(b, { type: 'agent.block', identity, reason: 'scope creep', requestId: 'b1' })).toEqual({ type: 'action.result', requestId: 'b1' });
    // Answered only once it is on disk: a crash now would not lose it.
    expect(blockOnDisk(b, identity)).toMatchObject({ reason: 'scope creep' });
    expect(b.records.find((r) => r.event === 'agent.blocked')?.detail).toEqual({ identity, by: 'ipc', reason: 'scope creep' });
    const s2 = await state(b, 's2');
    expect(s2.inventory.map((e) => [e.status, e.tokensNow, e.blocked?.reason])).toEqual([['blocked', 0, 'scope creep']]);
    expect(s2.agents.find((a) => a.id === hello.agentId)?.revoked).toBe(true);
    await client.close().catch(() => undefined);
    const { client: again } = await b.agent('creeper');
    expect(await codeOf(again.call('task.request', { task: 'after block', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_AGENT_BLOCKED');

    // Unblock: answered, and the same identity is asked for again (and approved).
    expect(await act(b, { type: 'agent.unblock', identity, requestId: 'u1' })).toEqual({ type: 'action.result', requestId: 'u1' });
    expect(blockOnDisk(b, identity)).toBe(null);
    const asked = b.requests.length;
    expect(await codeOf(again.call('task.request', { task: 'after unblock', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('resolved');
    expect(b.requests.length).toBe(asked + 1);
    expect((await state(b, 's3')).inventory.map((e) => [e.status, e.blocked])).toEqual([['active', null]]);

    // Dismiss as expected: answered and audited; a second dismissal of the same id is a clear refusal.
    expect(await act(b, { type: 'finding.dismiss', id: pushed.finding.id, requestId: 'd1' })).toEqual({ type: 'action.result', requestId: 'd1' });
    expect((await state(b, 's4')).findings).toEqual([]);
    expect(await act(b, { type: 'finding.dismiss', id: pushed.finding.id, requestId: 'd2' })).toEqual({
      type: 'action.result',
      requestId: 'd2',
      error: { code: 'WRIT_BAD_REQUEST', message: 'no open finding with that id' },
    });
    await again.close();
    await b.stop();
  });

  it('blocking an identity the broker never saw answers WRIT_AGENT_NOT_FOUND and records nothing', async () => {
    const b = await BrokerProcess.start(freshEnv());
    expect(await act(b, { type: 'agent.block', identity: 'inv_00000000000000000000', requestId: 'b1' })).toEqual({
      type: 'action.result',
      requestId: 'b1',
      error: { code: 'WRIT_AGENT_NOT_FOUND', message: 'no agent with that identity in the inventory' },
    });
    expect(b.auditLines().some((l) => (JSON.parse(l) as { event: string }).event === 'agent.blocked')).toBe(false);
    await b.stop();
  });

  it('a malformed action is dropped without an answer or a record', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.child.send({ type: 'agent.block', identity: '', requestId: 'bad' });
    // The pipe keeps order: once the state answer is back, the bad message was seen and dropped.
    await state(b, 'after');
    expect(b.messages.some((m) => m.type === 'action.result')).toBe(false);
    expect(b.auditLines().some((l) => (JSON.parse(l) as { event: string }).event === 'agent.blocked')).toBe(false);
    await b.stop();
  });
});
