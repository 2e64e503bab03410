// What the editor sees and does over the broker's IPC pipe (the approval channel): the `state` answer carries
// the watch's open findings and the agent inventory; block, unblock and dismiss each answer `action.result`
// when asked with a requestId, and take effect on a real agent over the real socket.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import type { BrokerToParent, ParentToBroker } from '../../broker/protocol';
import { identityOf } from '../../broker/core/inventory';
import { codeOf } from '../helpers/codes';

requireKeyring();

const AUD = 'https://api.example';
const USER = 'dev@example.com';

type StateMsg = Extract<BrokerToParent, { type: 'state' }>;
type ResultMsg = Extract<BrokerToParent, { type: 'action.result' }>;

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

describe('the editor over IPC: the audit stream', () => {
  it('gets every durable record once, in log order, batched per flush rather than one message each', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('minter');
    const r = await client.call('task.request', { task: 'mint', scopes: ['repo:read:a'], audience: AUD });
    await Promise.all(Array.from({ length: 64 }, () => client.call('token.mint', { grantId: r.grant.id })));
    const onDisk = b.auditLines().map((l) => JSON.parse(l) as { seq: number; event: string });
    // The last record the client saw is on disk; the editor's copy catches up within the same flush.
    for (let i = 0; i < 250 && b.records.length < onDisk.length; i++) await new Promise((res) => setTimeout(res, 20));
    expect(b.records.map((x) => [x.seq, x.event])).toEqual(onDisk.map((x) => [x.seq, x.event]));
    expect(onDisk.filter((x) => x.event === 'token.minted')).toHaveLength(65);
    const messages = b.messages.filter((m) => m.type === 'audit.records').length;
    expect(messages).toBeLessThan(onDisk.length);
    await client.close();
    await b.stop();
  });
});

describe('the editor over IPC: findings, inventory, block, unblock, dismiss', () => {
  it('state lists the open finding and the identity; block refuses and stops the agent; unblock gives it back', async () => {
    const b = await BrokerProcess.start(freshEnv());
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
    expect(b.records.some((r) => r.event === 'agent.blocked')).toBe(false);
    await b.stop();
  });

  it('a malformed action is dropped without an answer or a record', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.child.send({ type: 'agent.block', identity: '', requestId: 'bad' });
    // The pipe keeps order: once the state answer is back, the bad message was seen and dropped.
    await state(b, 'after');
    expect(b.messages.some((m) => m.type === 'action.result')).toBe(false);
    expect(b.records.some((r) => r.event === 'agent.blocked')).toBe(false);
    await b.stop();
  });
});
