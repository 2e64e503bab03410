// The verifier library against the real broker process: signature, audience, time and scope checks with their
// exact codes, revocation heard over the subscription (also before the verifier existed, and cascading to
// sub-agents), fail-closed behaviour when the broker dies and recovery when it returns, and use in the audit log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerProcess, ROOT, approveAll, form, freshEnv, requireKeyring } from '../helpers/broker';
import { createVerifier } from '../../broker/sdk/verify';
import type { Verifier, VerifierStatus } from '../../broker/sdk/verify';
import { WritClient } from '../../broker/sdk/client';
import { WritError } from '../../broker/errors';
import type { AuditRecord, RevocationEvent } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';
import { until } from '../helpers/until';

requireKeyring();

const AUD = 'https://api.example';


const payloadOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());

/** Resolves with the next revocation event the verifier has applied. */
const nextRevocation = (v: Verifier) =>
  new Promise<RevocationEvent>((resolve) => {
    const off = v.onRevocation((e) => {
      off();
      resolve(e);
    });
  });

/** Resolves once `status().connected` is `want` (at once if it already is). */
const connectedIs = (v: Verifier, want: boolean) =>
  new Promise<void>((resolve) => {
    if (v.status().connected === want) return resolve();
    const off = v.onStatus((s: VerifierStatus) => {
      if (s.connected === want) {
        off();
        resolve();
      }
    });
  });

describe('verifier', { timeout: 60_000 }, () => {
  let b: BrokerProcess;
  let agent: WritClient;
  let agentId: string;
  let v: Verifier;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    await b.follow(true); // the use reports' records are read from the stream
    b.decide = approveAll;
    const a = await b.agent('resource-test');
    agent = a.client;
    agentId = a.hello.agentId;
    v = createVerifier({ broker: b.discovery.httpUrl, audience: AUD });
    expect(await v.ready()).toBe(true);
  });
  afterAll(async () => {
    await v.close();
    await agent.close();
    await b.stop();
  });

  it('accepts a valid token with its exact claims, by scope and by concrete call, and reports each use', async () => {
    const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
    const p = payloadOf(r.token.token);
    const t = await v.verify(r.token.token, { scope: 'repo:read:acme/web' });
    expect(t).toEqual({
      jti: r.token.jti,
      issuer: 'urn:writ:dev@example.com',
      subject: 'dev@example.com',
      audience: AUD,
      agentId,
      actors: [agentId],
      scopes: ['repo:read:acme/*'],
      taskId: r.grant.taskId,
      grantId: r.grant.id,
      parentGrantIds: [],
      issuedAt: p.iat,
      notBefore: p.iat,
      expiresAt: r.token.expiresAt,
      claims: p,
    });
    expect(await v.verify(r.token.token, { call: { resource: 'repo', action: 'read', target: 'acme/api' } })).toBe(t);
    expect(await v.verify(r.token.token)).toBe(t);
    expect(v.status()).toMatchObject({ connected: true, cachedTokens: 1 });

    const allowed = await until(() => b.records.find((x) => x.event === 'token.used' && x.jti === r.token.jti && (x.detail as any)?.call));
    expect(allowed).toMatchObject({
      outcome: 'success',
      agent: { id: agentId, name: 'resource-test' },
      grantId: r.grant.id,
      audience: AUD,
      detail: { allowed: true, call: { resource: 'repo', action: 'read', target: 'acme/api' } },
    });
    expect(allowed.code).toBeUndefined();
  });

  it('refuses a token for another audience with WRIT_AUDIENCE_MISMATCH', async () => {
    const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
    const other = createVerifier({ broker: b.discovery.httpUrl, audience: 'https://other.example', reportUse: false });
    try {
      expect(await codeOf(other.verify(r.token.token))).toBe('WRIT_AUDIENCE_MISMATCH');
    } finally {
      await other.close();
    }
  });

  it('refuses an expired token with WRIT_TOKEN_EXPIRED, fresh or cached, with the clock injected', async () => {
    const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
    const short = await agent.call('token.mint', { grantId: r.grant.id, ttl: 1 });
    expect(short.expiresAt - payloadOf(short.token).iat).toBe(1);
    let offset = 0;
    const timed = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, now: () => Date.now() + offset });
    try {
      // Past exp by more than the 5 s tolerance.
      offset = 60_000;
      expect(await codeOf(timed.verify(short.token))).toBe('WRIT_TOKEN_EXPIRED');
      // Verified while valid, then time passes: the cached token expires too.
      offset = 0;
      const token = (await agent.call('token.mint', { grantId: r.grant.id, ttl: 30 })).token;
      await timed.verify(token);
      offset = 40_000;
      expect(await codeOf(timed.verify(token))).toBe('WRIT_TOKEN_EXPIRED');
    } finally {
      await timed.close();
    }
    const refused = await until(() => b.records.find((x) => x.event === 'token.used' && x.jti === short.jti));
    expect(refused).toMatchObject({ outcome: 'failure', code: 'WRIT_TOKEN_EXPIRED', detail: { allowed: false } });
  });

  it('refuses scopes and calls the token does not cover with WRIT_SCOPE_NOT_COVERED', async () => {
    const r = await agent.call('task.request', { task: 'narrow', scopes: ['repo:read:acme/web'], audience: AUD });
    const token = r.token.token;
    const wider = await v.verify(token, { scope: ['repo:read:acme/web', 'repo:write:acme/web'] }).catch((e: unknown) => e);
    expect(wider).toBeInstanceOf(WritError);
    expect(wider).toMatchObject({ code: 'WRIT_SCOPE_NOT_COVERED', data: { uncovered: ['repo:write:acme/web'] } });
    expect(await codeOf(v.verify(token, { scope: 'repo:read:acme/*' }))).toBe('WRIT_SCOPE_NOT_COVERED');
    expect(await codeOf(v.verify(token, { call: { resource: 'repo', action: 'read', target: 'acme/api' } }))).toBe('WRIT_SCOPE_NOT_COVERED');
    expect(await codeOf(v.verify(token, { call: { resource: 'repo', action: 'write', target: 'acme/web' } }))).toBe('WRIT_SCOPE_NOT_COVERED');
    // A glob must not be walked out of.
    expect(await codeOf(v.verify(token, { call: { resource: 'repo', action: 'read', target: 'acme/web/../api' } }))).toBe('WRIT_SCOPE_NOT_COVERED');
    // The same token still passes for what it does cover.
    expect((await v.verify(token, { scope: 'repo:read:acme/web' })).jti).toBe(r.token.jti);
    // A malformed scope asked is the caller's input error, with its own code.
    expect(await codeOf(v.verify(token, { scope: 'Repo read' }))).toBe('WRIT_SCOPE_INVALID');

    const refused = await until(() =>
      b.records.find((x) => x.event === 'token.used' && x.jti === r.token.jti && (x.detail as any)?.call?.target === 'acme/api'),
    );
    expect(refused).toMatchObject({
      outcome: 'failure',
      code: 'WRIT_SCOPE_NOT_COVERED',
      detail: { allowed: false, call: { resource: 'repo', action: 'read', target: 'acme/api' } },
    });
    const byScope = await until(() => b.records.find((x) => x.event === 'token.used' && x.jti === r.token.jti && (x.detail as any)?.asked?.length === 2));
    expect(byScope).toMatchObject({ outcome: 'failure', detail: { allowed: false, asked: ['repo:read:acme/web', 'repo:write:acme/web'] } });
  });

  it('refuses malformed and tampered tokens with WRIT_TOKEN_INVALID', async () => {
    const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
    const [h, p, s] = r.token.token.split('.') as [string, string, string];
    const forged = Buffer.from(JSON.stringify({ ...payloadOf(r.token.token), scope: 'repo:admin' })).toString('base64url');
    const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    for (const bad of ['not-a-token', '', 'a.b.c', `${h}.${forged}.${s}`, `${h}.${p}.${flipped}`, `${h}.${p}.`, 'x'.repeat(9000)]) {
      expect(await codeOf(v.verify(bad)), bad.slice(0, 40)).toBe('WRIT_TOKEN_INVALID');
    }
    expect(await codeOf(v.verify(42 as unknown as string))).toBe('WRIT_TOKEN_INVALID');
  });

  it('a token revoked at the broker fails on the next call after the revocation event; its sibling does not', async () => {
    const r = await agent.call('task.request', { task: 'revoke me', scopes: ['repo:read:acme/*'], audience: AUD });
    const sibling = await agent.call('token.mint', { grantId: r.grant.id });
    await v.verify(r.token.token);
    await v.verify(sibling.token);
    const heard = nextRevocation(v);
    const before = v.status().revocationsKnown;
    await agent.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    expect((await heard).jtis).toEqual([r.token.jti]);
    expect(await codeOf(v.verify(r.token.token))).toBe('WRIT_TOKEN_REVOKED');
    expect((await v.verify(sibling.token)).jti).toBe(sibling.jti);
    expect(v.status().revocationsKnown).toBe(before + 1);

    // A grant: every token of it, including one this verifier has never seen.
    const unseen = await agent.call('token.mint', { grantId: r.grant.id });
    const heardGrant = nextRevocation(v);
    await agent.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
    expect((await heardGrant).grantIds).toEqual([r.grant.id]);
    expect(await codeOf(v.verify(sibling.token))).toBe('WRIT_TOKEN_REVOKED');
    expect(await codeOf(v.verify(unseen.token))).toBe('WRIT_TOKEN_REVOKED');
  });

  it('a revoked task reaches the verifier by its id: its tokens fail, cached or not, here and in a verifier started after', async () => {
    // A session grant, reused by a second task: revoking that task revokes no grant, only its tokens by task_id.
    b.decide = () => ({ decision: 'approve', mode: 'session' });
    const first = await agent.call('task.request', { task: 'first task', scopes: ['repo:read:acme/docs'], audience: AUD });
    const second = await agent.call('task.request', { task: 'second task', scopes: ['repo:read:acme/docs'], audience: AUD });
    b.decide = approveAll;
    expect([second.reused, second.grant.id]).toEqual([true, first.grant.id]);
    const taskId = (await v.verify(second.token.token)).taskId;
    expect(taskId).not.toBe(first.grant.taskId);
    const heard = nextRevocation(v);
    await agent.call('revoke', { target: { kind: 'task', id: taskId } });
    expect(await heard).toMatchObject({ taskIds: [taskId], grantIds: [] });
    expect(await codeOf(v.verify(second.token.token))).toBe('WRIT_TOKEN_REVOKED');
    expect((await v.verify(first.token.token)).jti).toBe(first.token.jti);
    // From the snapshot a new subscriber starts with.
    const late = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, reportUse: false });
    try {
      expect(await late.ready()).toBe(true);
      expect(await codeOf(late.verify(second.token.token))).toBe('WRIT_TOKEN_REVOKED');
      expect((await late.verify(first.token.token)).jti).toBe(first.token.jti);
    } finally {
      await late.close();
    }
  });

  it("revoking an agent revokes its sub-agents' tokens in the verifier, nested act chains included", async () => {
    const { client: parent, hello: ph } = await b.agent('parent');
    const pr = await parent.call('task.request', { task: 'delegate', scopes: ['repo:read:acme/*'], audience: AUD });
    const { client: child, hello: ch } = await b.agent('child', { parentSession: pr.session! });
    const cr = await child.call('task.request', { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    const ex = await form(`${b.discovery.httpUrl}/oauth2/token`, {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: cr.token.token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      actor_name: 'grandchild',
    });
    expect(ex.status).toBe(200);
    const childToken = await v.verify(cr.token.token, { scope: 'repo:read:acme/web' });
    expect(childToken.actors).toEqual([ch.agentId, ph.agentId]);
    const grandchild = await v.verify(ex.json.access_token);
    expect(grandchild.actors.slice(1)).toEqual([ch.agentId, ph.agentId]);

    // One event per agent of the tree, each pushed as the broker applies it: all heard before the call returns.
    const heard: string[] = [];
    const off = v.onRevocation((e) => heard.push(...e.agentIds));
    await agent.call('revoke', { target: { kind: 'agent', id: ph.agentId } });
    off();
    expect(heard).toEqual(expect.arrayContaining([ph.agentId, ch.agentId]));
    expect(await codeOf(v.verify(pr.token.token))).toBe('WRIT_TOKEN_REVOKED');
    expect(await codeOf(v.verify(cr.token.token))).toBe('WRIT_TOKEN_REVOKED');
    expect(await codeOf(v.verify(ex.json.access_token))).toBe('WRIT_TOKEN_REVOKED');
    await parent.close();
    await child.close();
  });

  it('knows revocations made before it existed (the subscription starts from a snapshot)', async () => {
    const r = await agent.call('task.request', { task: 'early revoke', scopes: ['repo:read:acme/*'], audience: AUD });
    await agent.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    const late = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, reportUse: false });
    try {
      expect(await late.ready()).toBe(true);
      expect(late.status().revocationsKnown).toBeGreaterThan(0);
      expect(await codeOf(late.verify(r.token.token))).toBe('WRIT_TOKEN_REVOKED');
    } finally {
      await late.close();
    }
  });

  it('use reports: open without hello, bounded per connection, and never a token', async () => {
    const raw = await WritClient.connect(b.socket);
    try {
      expect(await raw.call('token.used', { jti: 'tok_unknown', allowed: false, code: 'WRIT_TOKEN_INVALID' })).toEqual({ recorded: true });
      const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
      // Something shaped like a JWT in any field is refused before the log sees it.
      const jwtShaped = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln';
      const e = await raw
        .call('token.used', { jti: 'tok_x', allowed: true, call: { resource: 'repo', action: 'read', target: jwtShaped } })
        .catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'WRIT_BAD_REQUEST', path: 'params' });
      const start = Date.now();
      const answers = await Promise.all(Array.from({ length: 250 }, (_, i) => raw.call('token.used', { jti: `tok_flood_${i}`, allowed: true })));
      const windows = Math.floor(Date.now() / 1000) - Math.floor(start / 1000) + 1;
      const recorded = answers.filter((a) => a.recorded).length;
      expect(recorded).toBeLessThanOrEqual(100 * windows);
      if (windows <= 2) expect(recorded).toBeLessThan(250);
      // No token reached the log, from any test in this file.
      expect(b.auditLines().join('\n')).not.toContain(r.token.token.split('.')[2]!);
    } finally {
      await raw.close();
    }
  });

  it('is the package entry point writ/verify, usable from a plain Node process that finds the broker by discovery', async () => {
    const r = await agent.call('task.request', { task: 'read web', scopes: ['repo:read:acme/*'], audience: AUD });
    const script = `
      import { createVerifier } from 'writ/verify';
      const v = createVerifier({ audience: ${JSON.stringify(AUD)} });
      const out = {};
      try { out.ok = (await v.verify(process.env.TOKEN, { scope: 'repo:read:acme/web' })).jti; } catch (e) { out.error = e.code; }
      try { await v.verify(process.env.TOKEN, { scope: 'repo:write:acme/web' }); } catch (e) { out.narrow = e.code; }
      await v.close();
      console.log(JSON.stringify(out));`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, ...b.env, TOKEN: r.token.token }, timeout: 20_000 }, (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(JSON.parse(out)).toEqual({ ok: r.token.jti, narrow: 'WRIT_SCOPE_NOT_COVERED' });
  });
});

describe('verifier when the broker goes away', { timeout: 90_000 }, () => {
  it('keeps verified tokens working until they expire, refuses unseen ones, says so, and reconnects', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('survivor');
    const r = await client.call('task.request', { task: 'outage', scopes: ['repo:read:acme/*'], audience: AUD });
    const unseen = await client.call('token.mint', { grantId: r.grant.id });
    await client.close();
    let offset = 0;
    // By discovery, so it finds the restarted broker on its new port.
    const v = createVerifier({ env, audience: AUD, now: () => Date.now() + offset });
    let b2: BrokerProcess | undefined;
    try {
      expect(await v.ready()).toBe(true);
      await v.verify(r.token.token);

      await b.kill();
      await connectedIs(v, false);
      expect(v.status().connected).toBe(false);
      expect((await v.verify(r.token.token, { scope: 'repo:read:acme/web' })).jti).toBe(r.token.jti);
      expect(await codeOf(v.verify(unseen.token))).toBe('WRIT_BROKER_UNREACHABLE');
      expect(await codeOf(v.verify('not-a-token'))).toBe('WRIT_TOKEN_INVALID');
      expect(v.status().reportsDropped).toBeGreaterThan(0);
      offset = (r.token.expiresAt + 10) * 1000 - Date.now();
      expect(await codeOf(v.verify(r.token.token))).toBe('WRIT_TOKEN_EXPIRED');
      offset = 0;

      // The broker comes back (same keychain entry, so the same key): the verifier reconnects by itself.
      b2 = await BrokerProcess.start(env);
      await b2.follow(true); // the use report's record is read from the stream
      await connectedIs(v, true);
      expect((await v.verify(unseen.token)).jti).toBe(unseen.jti);
      const records: AuditRecord[] = b2.records;
      await until(() => records.find((x) => x.event === 'token.used' && x.jti === unseen.jti));
    } finally {
      await v.close();
      await b2?.stop();
    }
  });

  it('a token verified before is refused once the restarted broker no longer publishes its key', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('old-key');
    const r = await client.call('task.request', { task: 'key change', scopes: ['repo:read:x'], audience: AUD });
    await client.close();
    const v = createVerifier({ env, audience: AUD });
    let b2: BrokerProcess | undefined;
    try {
      expect(await v.ready()).toBe(true);
      expect((await v.verify(r.token.token)).jti).toBe(r.token.jti); // now cached
      await b.stop();
      await connectedIs(v, false);
      // The same state folder with another keychain entry: a new key (a fresh keyring, or the old key removed after a leak).
      b2 = await BrokerProcess.start({ ...env, WRIT_KEYCHAIN_SERVICE: `${env.WRIT_KEYCHAIN_SERVICE}-2` });
      await connectedIs(v, true);
      expect(await codeOf(v.verify(r.token.token))).toBe('WRIT_TOKEN_INVALID');
      expect(v.status().cachedTokens).toBe(0);
    } finally {
      await v.close();
      await b2?.stop();
    }
  });

  it('a token verified before is refused once the restarted broker names another issuer', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('old-issuer');
    const r = await client.call('task.request', { task: 'issuer change', scopes: ['repo:read:x'], audience: AUD });
    await client.close();
    const v = createVerifier({ env, audience: AUD });
    let b2: BrokerProcess | undefined;
    try {
      expect(await v.ready()).toBe(true);
      expect((await v.verify(r.token.token)).issuer).toBe(payloadOf(r.token.token).iss);
      await b.stop();
      await connectedIs(v, false);
      // The same key, another issuer.
      b2 = await BrokerProcess.start({ ...env, WRIT_ISSUER: 'urn:writ:someone-else' });
      await connectedIs(v, true);
      expect(await codeOf(v.verify(r.token.token))).toBe('WRIT_TOKEN_INVALID');
    } finally {
      await v.close();
      await b2?.stop();
    }
  });

  it("after a restart, revoking an agent the new broker never met still revokes its sub-agent's token (by the act chain)", async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client: parent, hello: ph } = await b1.agent('parent');
    const pr = await parent.call('task.request', { task: 'delegate', scopes: ['repo:read:acme/*'], audience: AUD });
    const { client: child, hello: ch } = await b1.agent('child', { parentSession: pr.session! });
    const cr = await child.call('task.request', { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    await parent.close();
    await child.close();
    const v = createVerifier({ env, audience: AUD, reportUse: false });
    let b2: BrokerProcess | undefined;
    try {
      expect((await v.verify(cr.token.token)).actors).toEqual([ch.agentId, ph.agentId]);
      await b1.stop();
      await connectedIs(v, false);
      b2 = await BrokerProcess.start(env);
      await connectedIs(v, true);
      expect((await v.verify(cr.token.token)).jti).toBe(cr.token.jti);
      // This broker run knows neither agent nor token: the event names the agent and no jti.
      const heard = nextRevocation(v);
      const watcher = await WritClient.connect(`unix:${b2.discovery.socketPath}`);
      await watcher.call('revoke', { target: { kind: 'agent', id: ph.agentId } });
      await watcher.close();
      expect(await heard).toMatchObject({ agentIds: [ph.agentId], jtis: [] });
      expect(await codeOf(v.verify(cr.token.token))).toBe('WRIT_TOKEN_REVOKED');
    } finally {
      await v.close();
      await b2?.stop();
    }
  });

  it("after a restart, revoking a grant the new broker never held revokes the sub-agents' exchanged tokens (by parent_grant_ids)", async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client } = await b1.agent('parent');
    const r = await client.call('task.request', { task: 'delegate', scopes: ['repo:read:acme/*'], audience: AUD });
    const other = await client.call('task.request', { task: 'unrelated', scopes: ['repo:read:acme/docs'], audience: AUD });
    await client.close();
    const exchange = async (subject: string, actor: string): Promise<string> => {
      const res = await form(`${b1.discovery.httpUrl}/oauth2/token`, {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subject,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        actor_name: actor,
      });
      expect(res.status).toBe(200);
      return res.json.access_token as string;
    };
    const child = await exchange(r.token.token, 'helper');
    const grandchild = await exchange(child, 'helper-of-helper');
    const unrelated = await exchange(other.token.token, 'helper');
    const v = createVerifier({ env, audience: AUD, reportUse: false });
    let b2: BrokerProcess | undefined;
    try {
      const g = await v.verify(grandchild);
      expect(g.parentGrantIds).toEqual([payloadOf(child).grant_id, r.grant.id]);
      expect((await v.verify(child)).parentGrantIds).toEqual([r.grant.id]);
      expect((await v.verify(r.token.token)).parentGrantIds).toEqual([]);
      await b1.kill();
      await connectedIs(v, false);
      b2 = await BrokerProcess.start(env);
      await connectedIs(v, true);
      // This run holds no grant and knows no exchange: the event names the parent's grant alone.
      const heard = nextRevocation(v);
      const revoker = await WritClient.connect(`unix:${b2.discovery.socketPath}`);
      await revoker.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
      await revoker.close();
      expect((await heard).grantIds).toEqual([r.grant.id]);
      for (const t of [r.token.token, child, grandchild]) {
        expect(await codeOf(v.verify(t))).toBe('WRIT_TOKEN_REVOKED');
        expect((await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: t })).json).toEqual({ active: false });
      }
      expect((await v.verify(unrelated)).jti).toBe(payloadOf(unrelated).jti);
      expect((await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: unrelated })).json.active).toBe(true);
    } finally {
      await v.close();
      await b2?.stop();
    }
  });

  it('refuses every token with WRIT_BROKER_UNREACHABLE when it never reached a broker', async () => {
    const v = createVerifier({ broker: 'http://127.0.0.1:9', audience: AUD });
    try {
      expect(await v.ready()).toBe(false);
      expect(v.status()).toMatchObject({ connected: false, revocationsKnown: 0 });
      const token = ['eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsxIn0', 'eyJzdWIiOiJ4In0', 'c2ln'].join('.');
      expect(await codeOf(v.verify(token))).toBe('WRIT_BROKER_UNREACHABLE');
    } finally {
      await v.close();
    }
  });
});

describe('verifier: revocation is in force when the revoke call returns', () => {
  it('a verifier in another process refuses the token on its very next check after the revoke call resolves', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('checked');
    const r = await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    // The verifier runs in a child process that reads tokens on stdin and answers each with its verdict.
    const script = `
      import { createVerifier } from ${JSON.stringify(`${ROOT}dist/verify.mjs`)};
      import { createInterface } from 'node:readline';
      const v = createVerifier({ audience: ${JSON.stringify(AUD)}, broker: ${JSON.stringify(b.discovery.httpUrl)}, reportUse: false });
      await v.ready();
      const rl = createInterface({ input: process.stdin });
      for await (const line of rl) {
        try { await v.verify(line, { scope: 'repo:read:a' }); console.log('ok'); }
        catch (e) { console.log(e.code); }
      }
      await v.close();`;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    const { createInterface } = await import('node:readline');
    const ask = (token: string) =>
      new Promise<string>((resolve) => {
        const rl = createInterface({ input: child.stdout! });
        rl.once('line', (l) => {
          rl.close();
          resolve(l);
        });
        child.stdin!.write(token + '\n');
      });
    expect(await ask(r.token.token)).toBe('ok');
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    // No waiting for any event here: the broker answered only once the verifier had applied it.
    expect(await ask(r.token.token)).toBe('WRIT_TOKEN_REVOKED');
    child.stdin!.end();
    await new Promise((res) => child.on('exit', res));
    await client.close();
    await b.stop();
  });
});

describe('verifier: the revocation journal', { timeout: 60_000 }, () => {
  /**
   * Sends a revoke and keeps this process's event loop busy (awaiting only settled promises: microtasks, no I/O)
   * checking the token with `verify` until it is refused or 5 s pass: no frame is read meanwhile, so a refusal
   * can only have come from the journal. Says whether it was refused, and whether the push had been applied then.
   */
  const revokeWhileBusy = async (v: Verifier, client: WritClient, token: string, jti: string) => {
    let pushed = false;
    const off = v.onRevocation((e) => {
      if (e.jtis.includes(jti)) pushed = true;
    });
    const call = client.call('revoke', { target: { kind: 'token', jti } });
    const deadline = Date.now() + 5000;
    let code = await codeOf(v.verify(token));
    while (code === 'resolved' && Date.now() < deadline) code = await codeOf(v.verify(token));
    const pushedThen = pushed;
    await call;
    off();
    return { code, pushedThen, pushedLater: pushed };
  };
  /** This process's open files that are a broker's revocation journal (the verifier's readers). */
  const journalsOpen = () =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return /\/revocations-[0-9]+-[0-9]+\.journal( \(deleted\))?$/.test(readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        return false; // closed meanwhile (the listing's own fd)
      }
    }).length;
  const journalFiles = (env: Record<string, string>) => readdirSync(env.WRIT_RUNTIME_DIR!).filter((n) => n.endsWith('.journal'));

  it("a verifier refuses a revoked token at its next check while its process has not yet read the push; after a restart, from the new broker's journal", async () => {
    const env = freshEnv();
    let b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const v = createVerifier({ env, audience: AUD, reportUse: false });
    try {
      expect(await v.ready()).toBe(true);
      expect(v.status()).toMatchObject({ connected: true, journal: true });
      for (const round of [1, 2]) {
        const { client } = await b.agent(`journal-${round}`);
        const r = await client.call('task.request', { task: 'journal', scopes: ['repo:read:acme/web'], audience: AUD });
        await v.verify(r.token.token);
        const outcome = await revokeWhileBusy(v, client, r.token.token, r.token.jti);
        // Refused before the push was applied; the push still came, and was acknowledged (the call returned).
        expect({ round, ...outcome }).toEqual({ round, code: 'WRIT_TOKEN_REVOKED', pushedThen: false, pushedLater: true });
        expect(journalsOpen()).toBe(1);
        await client.close();
        if (round === 1) {
          await b.stop();
          // The broker removed its journal as it stopped; the verifier no longer says it reads one.
          expect(journalFiles(env)).toEqual([]);
          await connectedIs(v, false);
          expect(v.status().journal).toBe(false);
          // A journal a broker that is gone left behind (SIGKILL): the next one removes it.
          writeFileSync(join(env.WRIT_RUNTIME_DIR!, 'revocations-999999-1.journal'), '', { mode: 0o600 });
          b = await BrokerProcess.start(env);
          b.decide = approveAll;
          expect(journalFiles(env)).toEqual([`revocations-${b.discovery.pid}-1.journal`]);
          await connectedIs(v, true);
          expect(v.status().journal).toBe(true);
        }
      }
    } finally {
      await v.close();
      await b.stop();
    }
    // The reader of the last broker's journal was closed with the verifier, and that of the first one's on reconnecting.
    expect(journalsOpen()).toBe(0);
  });
});

describe('verifier: its revocation listeners have run when the revoke call returns', () => {
  it('a listener in another process that takes its time has finished before the revoke call resolves', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('listened');
    const r = await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const marks = join(mkdtempSync(join(tmpdir(), 'writ-listener-')), 'marks');
    // The listener spins for 300 ms, then writes what it heard to a file, synchronously: the write is done
    // before the listener returns, and so before the acknowledgement if listeners run first.
    const script = `
      import { createVerifier } from ${JSON.stringify(`${ROOT}dist/verify.mjs`)};
      import { appendFileSync } from 'node:fs';
      const v = createVerifier({ audience: ${JSON.stringify(AUD)}, broker: ${JSON.stringify(b.discovery.httpUrl)}, reportUse: false });
      v.onRevocation((e) => {
        for (const end = Date.now() + 300; Date.now() < end; );
        appendFileSync(${JSON.stringify(marks)}, e.target.jti + '\\n');
      });
      await v.ready();
      console.log('ready');
      process.stdin.once('data', () => v.close());`;
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    expect(readFileSync(marks, 'utf8')).toBe(`${r.token.jti}\n`);
    child.stdin!.end('x');
    await new Promise((res) => child.on('exit', res));
    await client.close();
    await b.stop();
  });
});

describe('broker: acknowledged revocation', () => {
  /** A broker, an agent holding a token to revoke, and one subscriber that acknowledges revocations per name. */
  async function revocationRig<N extends string>(...names: N[]) {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('target');
    const r = await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const subscribers = {} as Record<N, WritClient>;
    for (const name of names) {
      subscribers[name] = await WritClient.connect(b.socket);
      await subscribers[name].call('subscribe', { events: ['revocation'], acknowledge: true });
    }
    return { b, client, r, subscribers };
  }

  it('a revoke call does not return before an acknowledging subscriber has acknowledged the event', async () => {
    const {
      b,
      client,
      r,
      subscribers: { subscriber },
    } = await revocationRig('subscriber');
    const order: string[] = [];
    subscriber.onRevocation((e) => {
      order.push('event');
      // Hold the acknowledgement back a little: the revoke call must wait for it.
      setTimeout(() => {
        order.push('ack');
        subscriber.notify('revocation.ack', { seq: e.seq! });
      }, 200);
    });
    await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    order.push('revoke returned');
    expect(order).toEqual(['event', 'ack', 'revoke returned']);
    await subscriber.close();
    await client.close();
    await b.stop();
  });

  it('waits for every acknowledging subscriber: a second ack from one of them does not stand in for another', async () => {
    const {
      b,
      client,
      r,
      subscribers: { eager, slow },
    } = await revocationRig('eager', 'slow');
    const order: string[] = [];
    eager.onRevocation((e) => {
      eager.notify('revocation.ack', { seq: e.seq! });
      eager.notify('revocation.ack', { seq: e.seq! });
    });
    slow.onRevocation((e) => {
      setTimeout(() => {
        order.push('slow ack');
        slow.notify('revocation.ack', { seq: e.seq! });
      }, 300);
    });
    expect(await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } })).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    order.push('revoke returned');
    expect(order).toEqual(['slow ack', 'revoke returned']);
    for (const c of [eager, slow, client]) await c.close();
    await b.stop();
  });

  it('a subscriber that never acknowledges, or one that leaves, does not hold the revoke call for ever (1 s bound)', async () => {
    const {
      b,
      client,
      r,
      subscribers: { mute, leaving },
    } = await revocationRig('mute', 'leaving');
    const heard: string[] = [];
    mute.onRevocation((e) => heard.push(`mute ${e.seq}`));
    leaving.onRevocation((e) => {
      heard.push(`leaving ${e.seq}`);
      void leaving.close();
    });
    const first = await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(await client.call('revoke', { target: { kind: 'token', jti: first.token.jti } })).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } })).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    // Each event was pushed to whoever was subscribed when it was applied.
    expect(heard.sort()).toEqual(['leaving 1', 'mute 1', 'mute 2']);
    for (const c of [mute, client]) await c.close();
    await b.stop();
  });
});

// Found by review: a verifier that only reports uses (subscribe: false) sent nothing on its connection, so the
// broker closed it at every first-call timeout (4008) and `authorize` was refused in each gap.
describe('verifier without a subscription', () => {
  it('keeps its connection past the first-call timeout', async () => {
    const b = await BrokerProcess.start(freshEnv({ WRIT_FIRST_CALL_TIMEOUT_MS: '300' }));
    const v = createVerifier({ env: b.env as unknown as NodeJS.ProcessEnv, audience: 'https://api.example', subscribe: false });
    const seen: boolean[] = [];
    try {
      expect(await v.ready()).toBe(true);
      v.onStatus((s) => void seen.push(s.connected));
      await new Promise((r) => setTimeout(r, 1200)); // four first-call timeouts
      expect({ connected: v.status().connected, changes: seen }).toEqual({ connected: true, changes: [] });
    } finally {
      await v.close();
      await b.stop();
    }
  }, 30_000);
});
