// Revocation of each kind, its cascade to sub-agents, the push to subscribers, and its survival of a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrokerProcess, approveAll, form, freshEnv, requireKeyring } from '../helpers/broker';
import type { RevocationEvent } from '../../broker/protocol';
import { WritClient } from '../../broker/sdk/client';
import { WritError } from '../../broker/errors';
import { codeOf } from '../helpers/codes';

requireKeyring();

const AUD = 'https://api.example';
const introspect = async (b: BrokerProcess, token: string) => (await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token })).json;
const exchange = (b: BrokerProcess, subject: string, extra: Record<string, string> = {}) =>
  form(`${b.discovery.httpUrl}/oauth2/token`, {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: subject,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    ...extra,
  });


describe('revocation', () => {
  let b: BrokerProcess;
  let watcher: WritClient;
  const events: RevocationEvent[] = [];
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
    watcher = await WritClient.connect(b.socket);
    await watcher.call('subscribe', { events: ['revocation'] });
    watcher.onRevocation((e) => events.push(e));
  });
  afterAll(async () => {
    await watcher.close();
    await b.stop();
  });

  it('a revoked token is inactive at once while its siblings stay active, and subscribers hear of it', async () => {
    const { client } = await b.agent();
    const r = await client.call('task.request', { task: 't1', scopes: ['repo:read:a'], audience: AUD });
    const sibling = await client.call('token.mint', { grantId: r.grant.id });
    expect((await introspect(b, r.token.token)).active).toBe(true);
    const n = events.length;
    const res = await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    expect(res).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(await introspect(b, r.token.token)).toEqual({ active: false });
    expect((await introspect(b, sibling.token)).active).toBe(true);
    await new Promise((r) => setTimeout(r, 30));
    expect(events.slice(n).map((e) => e.jtis)).toEqual([[r.token.jti]]);
    await client.close();
  });

  it('revoking a grant ends all its tokens and its minting', async () => {
    const { client } = await b.agent();
    const r = await client.call('task.request', { task: 't2', scopes: ['repo:read:a'], audience: AUD });
    const second = await client.call('token.mint', { grantId: r.grant.id });
    const res = await client.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
    expect(res).toEqual({ revokedTokens: 2, revokedGrants: 1, revokedAgents: 0 });
    expect(await introspect(b, r.token.token)).toEqual({ active: false });
    expect(await introspect(b, second.token)).toEqual({ active: false });
    expect(await codeOf(client.call('token.mint', { grantId: r.grant.id }))).toBe('WRIT_TOKEN_REVOKED');
    await client.close();
  });

  it('revoking a grant revokes the tokens exchanged from its tokens; revoking one exchanged token leaves its sibling', async () => {
    const { client } = await b.agent('exchanging-parent');
    const r = await client.call('task.request', { task: 't-ex', scopes: ['repo:read:acme/*'], audience: AUD });
    const later = await client.call('token.mint', { grantId: r.grant.id });
    const one = await exchange(b, r.token.token, { actor_name: 'helper' });
    const two = await exchange(b, later.token, { actor_name: 'helper' });
    expect([one.status, two.status]).toEqual([200, 200]);
    const claimsOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
    // One delegation, one grant: both exchanged tokens name the helper's grant, not the parent's.
    expect(claimsOf(two.json.access_token).grant_id).toBe(claimsOf(one.json.access_token).grant_id);
    expect(claimsOf(one.json.access_token).grant_id).not.toBe(r.grant.id);

    const byJti = await client.call('revoke', { target: { kind: 'token', jti: claimsOf(one.json.access_token).jti } });
    expect(byJti).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(await introspect(b, one.json.access_token)).toEqual({ active: false });
    expect((await introspect(b, two.json.access_token)).active).toBe(true);

    const n = events.length;
    const res = await client.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
    // The parent's grant and the helper's below it; the parent's two tokens and the exchanged one still live.
    expect(res).toEqual({ revokedTokens: 3, revokedGrants: 2, revokedAgents: 0 });
    for (const t of [r.token.token, later.token, two.json.access_token]) expect(await introspect(b, t)).toEqual({ active: false });
    const again = await exchange(b, later.token, { actor_name: 'helper' });
    expect(again).toEqual({ status: 400, json: { error: 'invalid_grant', error_description: 'token has been revoked', writ_code: 'WRIT_TOKEN_REVOKED' } });
    await new Promise((r) => setTimeout(r, 30));
    expect(events.slice(n).map((e) => e.grantIds)).toEqual([[r.grant.id, claimsOf(two.json.access_token).grant_id]]);
    await client.close();
  });

  it('revoking an agent cascades to its sub-agents, their tokens and connections', async () => {
    const { client: parent } = await b.agent('parent');
    const pr = await parent.call('task.request', { task: 't3', scopes: ['repo:read:acme/*', 'repo:write:acme/web'], audience: AUD });
    const { client: child, hello: ch } = await b.agent('child', { parentSession: pr.session! });
    const prompts = b.requests.length;
    const cr = await child.call('task.request', { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    expect(b.requests.length).toBe(prompts); // covered by the parent: no prompt
    expect(cr.token.scopes).toEqual(['repo:read:acme/web']);
    const payload = JSON.parse(Buffer.from(cr.token.token.split('.')[1]!, 'base64url').toString());
    expect(payload.act).toEqual({ sub: ch.agentId, act: { sub: pr.grant.agentId } });
    // A sub-agent never gets more than its parent.
    expect(await codeOf(child.call('task.request', { task: 'sub', scopes: ['repo:admin:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
    // Exchange gives a grandchild a narrower token with the chain nested.
    const ex = await exchange(b, cr.token.token, { scope: 'repo:read:acme/web', actor_name: 'grandchild' });
    expect(ex.status).toBe(200);
    const gp = JSON.parse(Buffer.from(ex.json.access_token.split('.')[1], 'base64url').toString());
    expect(gp.act.act).toEqual({ sub: ch.agentId, act: { sub: pr.grant.agentId } });
    expect(gp.exp).toBeLessThanOrEqual(payload.exp);
    const wider = await exchange(b, cr.token.token, { scope: 'repo:read:acme/*' });
    expect(wider.status).toBe(400);
    expect(wider.json).toMatchObject({ error: 'invalid_scope', writ_code: 'WRIT_SCOPE_NOT_COVERED' });

    const closed = new Promise<number>((r) => child.onClose((code) => r(code)));
    const res = await watcher.call('revoke', { target: { kind: 'agent', id: pr.grant.agentId } });
    expect(res.revokedAgents).toBe(3);
    expect(await closed).toBe(4001);
    for (const t of [pr.token.token, cr.token.token, ex.json.access_token]) expect(await introspect(b, t)).toEqual({ active: false });
    // Its session is gone too: reconnecting with it is refused.
    expect(await codeOf(b.agent('parent', { session: pr.session! }))).toBe('WRIT_SESSION_INVALID');
    await parent.close();
  });

  it('an acknowledging subscriber hears each revoked agent of a tree, numbered, before the revoke call returns; others hear one event', async () => {
    const { client: parent } = await b.agent('ack-parent');
    const pr = await parent.call('task.request', { task: 'ack', scopes: ['repo:read:a'], audience: AUD });
    const { client: child, hello: ch } = await b.agent('ack-child', { parentSession: pr.session! });
    const verifier = await WritClient.connect(b.socket);
    await verifier.call('subscribe', { events: ['revocation'], acknowledge: true });
    const heard: RevocationEvent[] = [];
    verifier.onRevocation((e) => {
      heard.push(e);
      verifier.notify('revocation.ack', { seq: e.seq! });
    });
    const n = events.length;
    const res = await watcher.call('revoke', { target: { kind: 'agent', id: pr.grant.agentId } });
    expect(res.revokedAgents).toBe(2);
    // Already applied by the acknowledging subscriber when the call returned: one event per agent, each numbered.
    expect(heard.map((e) => e.agentIds)).toEqual([[pr.grant.agentId], [ch.agentId]]);
    expect(heard.map((e) => e.target)).toEqual([{ kind: 'agent', id: pr.grant.agentId }, { kind: 'agent', id: ch.agentId }]);
    expect(new Set(heard.map((e) => e.seq)).size).toBe(2);
    await new Promise((r) => setTimeout(r, 30));
    expect(heard).toHaveLength(2);
    // A subscriber that does not acknowledge gets the call's one event, once it is durable.
    expect(events.slice(n).map((e) => [e.target, [...e.agentIds].sort()])).toEqual([[{ kind: 'agent', id: pr.grant.agentId }, [pr.grant.agentId, ch.agentId].sort()]]);
    await verifier.close();
    await child.close();
    await parent.close();
  });

  it('revoking everything ends every agent', async () => {
    const { client } = await b.agent('last');
    const r = await client.call('task.request', { task: 't4', scopes: ['repo:read:a'], audience: AUD });
    await watcher.call('revoke', { target: { kind: 'all' } });
    expect(await introspect(b, r.token.token)).toEqual({ active: false });
    // An agent approved right after is served a live token (issued after the second the revocation covers).
    const { client: next } = await b.agent('after-stop');
    const n = await next.call('task.request', { task: 't5', scopes: ['repo:read:a'], audience: AUD });
    expect(await introspect(b, n.token.token)).toMatchObject({ active: true, jti: n.token.jti });
    await next.close();
    await client.close();
  });
});

describe('revocation survives a restart', () => {
  it('a token revoked before a restart stays revoked after it; an unrevoked one stays active', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client } = await b1.agent();
    const r = await client.call('task.request', { task: 'keep', scopes: ['repo:read:a'], audience: AUD });
    const other = await client.call('token.mint', { grantId: r.grant.id });
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    await client.close();
    await b1.kill(); // no clean shutdown: the revocation was durable before the call returned
    const b2 = await BrokerProcess.start(env);
    expect(await introspect(b2, r.token.token)).toEqual({ active: false });
    expect((await introspect(b2, other.token)).active).toBe(true);
    await b2.stop();
  });
});

describe('delegation depth', () => {
  it('is configurable, and a chain deeper than allowed is refused at exchange with its code', async () => {
    const b = await BrokerProcess.start(freshEnv({ WRIT_MAX_DELEGATION_DEPTH: '1' }));
    b.decide = approveAll;
    const { client: parent } = await b.agent('parent');
    const pr = await parent.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const { client: child } = await b.agent('child', { parentSession: pr.session! });
    const cr = await child.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const deeper = await exchange(b, cr.token.token);
    expect(deeper.status).toBe(400);
    expect(deeper.json).toMatchObject({ error: 'invalid_grant', writ_code: 'WRIT_DEPTH_EXCEEDED' });
    await child.close();
    await parent.close();
    await b.stop();
  });
});
