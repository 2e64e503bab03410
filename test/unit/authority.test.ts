// The decision logic with an injected clock and a scripted approval channel: TTL clamping, narrowing,
// grant reuse and expiry, sub-agent bounds, fail-closed audit, and revocation checked from claims.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authority, DEFAULT_AUTHORITY_CONFIG, OpenUses, RECENT_TOKENS } from '../../broker/core/authority';
import type { Approver, AuditSink } from '../../broker/core/authority';
import { ManualClock } from '../../broker/core/clock';
import type { IdSource } from '../../broker/core/clock';
import { RevocationStore } from '../../broker/core/revocation';
import { TokenMinter } from '../../broker/core/tokens';
import { AuditLog } from '../../broker/audit/log';
import { WritError } from '../../broker/errors';
import type { ApprovalDecision, ApprovalRequest, AuditEntry, RevocationEvent } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';
import { Inventory, identityOf } from '../../broker/core/inventory';
import { Oversight } from '../../broker/core/oversight';
import { DEFAULT_WATCH_CONFIG, Watch } from '../../broker/core/watch';

const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');

/** Counted ids; `prefix` tells a later run's (`next_`) from the first's, as random ids would be. */
function counterIds(prefix = ''): IdSource {
  let n = 0;
  // Secrets have the shape the broker issues (`wss_` and 43 base64url characters): only such a session is taken
  // as an agent's after a restart.
  return { id: (p) => `${p}_${prefix}${++n}`, secret: (p) => `${p}_secret_${String(++n).padStart(36, '0')}` };
}

class ScriptedApprover implements Approver {
  readonly kind = 'ipc' as const;
  readonly asked: ApprovalRequest[] = [];
  answer: ((r: ApprovalRequest) => Omit<ApprovalDecision, 'requestId'>) | null = () => ({ decision: 'approve', mode: 'task' });
  ask(r: ApprovalRequest, signal: AbortSignal): Promise<ApprovalDecision> {
    this.asked.push(r);
    const answer = this.answer;
    if (!answer) return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    return Promise.resolve({ ...answer(r), requestId: r.requestId } as ApprovalDecision);
  }
}


describe('Authority', () => {
  let clock: ManualClock;
  let approver: ScriptedApprover;
  let log: AuditLog;
  let audit: AuditSink;
  let authority: Authority;
  let dir: string;

  async function build(overrides: Partial<typeof DEFAULT_AUTHORITY_CONFIG> = {}, sink?: AuditSink) {
    dir = mkdtempSync(join(tmpdir(), 'writ-auth-'));
    clock = new ManualClock(Date.UTC(2026, 10, 29, 12, 0, 0));
    approver = new ScriptedApprover();
    log = await AuditLog.open({
      path: join(dir, 'audit.jsonl'),
      session: 'ses_1',
      user: 'dev@example.com',
      clock,
      signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) },
      checkpointIntervalMs: 0,
    });
    audit = sink ?? { append: (e: AuditEntry) => log.append(e) };
    authority = await authorityOn(overrides);
  }

  /** An Authority on this test's audit, revocation list and key; a second one is the broker's next run. */
  async function authorityOn(overrides: Partial<typeof DEFAULT_AUTHORITY_CONFIG> = {}, ids = counterIds()): Promise<Authority> {
    return new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'dev@example.com', ...overrides },
      {
        clock,
        ids,
        audit,
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations: await RevocationStore.open(join(dir, 'revocations.jsonl'), clock),
        approver,
        publicKey: (kid) => (kid === 'k1' ? publicKey : undefined),
        // The manual clock's time passes when the authority waits.
        sleep: async (ms) => {
          slept.push(ms);
          clock.advance(ms);
        },
      },
    );
  }
  let slept: number[] = [];

  beforeEach(async () => {
    slept = [];
    await build();
  });
  afterEach(async () => log.close());

  const hello = (name = 'agent', extra: { session?: string; parentSession?: string } = {}) =>
    authority.introduce({ protocol: 'writ/1', agent: { name, kind: 'script' }, ...extra });

  it('clamps the asked TTL to the configured maximum', async () => {
    await log.close();
    await build({ maxTtlSeconds: 600 });
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    expect(approver.asked[0]!.ttl).toBe(600);
    expect(approver.asked[0]!.maxTtl).toBe(600);
    expect(r.token.expiresAt - Math.floor(clock.now() / 1000)).toBe(600);
  });

  it('uses the default lifetime of 5 minutes when none is asked', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(r.token.expiresAt - Math.floor(clock.now() / 1000)).toBe(300);
  });

  it('revoking a task takes all its grants before it waits for the disk, and writes their entries at once', async () => {
    const p = await hello('parent');
    const pr = await authority.requestTask({ agentId: p.agentId }, { task: 'main', scopes: ['repo:read:acme/*'], audience: AUD });
    const kids = [];
    for (const name of ['child-1', 'child-2']) {
      const c = await hello(name, { parentSession: pr.session! });
      kids.push(await authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD }));
    }
    const ids = [pr.grant.id, ...kids.map((k) => k.grant.id)];
    expect(authority.listGrants().filter((g) => ids.includes(g.id))).toHaveLength(3);
    const revoking = authority.revoke({ kind: 'task', id: pr.grant.taskId }, 'test');
    // Before the call has waited for anything: none of the three can mint.
    expect(authority.listGrants().filter((g) => ids.includes(g.id))).toEqual([]);
    expect(await revoking).toMatchObject({ revokedGrants: 3 });
    const entries = readFileSync(join(dir, 'revocations.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(entries.map((e) => [e.kind, e.id])).toEqual([['task', pr.grant.taskId], ...ids.map((id) => ['grant', id])]);
    expect(new Set(entries.map((e) => e.at)).size).toBe(1);
  });

  it('records who approved: the developer, or a workspace rule the developer trusted', async () => {
    const { agentId } = await hello();
    await authority.requestTask({ agentId }, { task: 'by hand', scopes: ['repo:read:a'], audience: AUD });
    approver.answer = () => ({ decision: 'approve', mode: 'task', by: 'workspace-rule' });
    await authority.requestTask({ agentId }, { task: 'by rule', scopes: ['repo:read:b'], audience: AUD });
    await log.close();
    const approved = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.event === 'task.approved');
    expect(approved.map((r) => [r.task.description, r.detail.by])).toEqual([['by hand', 'developer'], ['by rule', 'workspace-rule']]);
  });

  it('a task grant stops minting when it expires; reuse then prompts again', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    clock.advance((DEFAULT_AUTHORITY_CONFIG.taskGrantSeconds - 1) * 1000);
    await authority.mint({ agentId }, { grantId: r.grant.id });
    clock.advance(1000);
    expect(await codeOf(authority.mint({ agentId }, { grantId: r.grant.id }))).toBe('WRIT_GRANT_EXPIRED');
    await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(approver.asked).toHaveLength(2);
  });

  it('a grant does not serve another audience or another agent', async () => {
    const a = await hello('a');
    const b = await hello('b');
    const r = await authority.requestTask({ agentId: a.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(await codeOf(authority.mint({ agentId: b.agentId }, { grantId: r.grant.id }))).toBe('WRIT_GRANT_NOT_FOUND');
    await authority.requestTask({ agentId: a.agentId }, { task: 't', scopes: ['repo:read:a'], audience: 'https://other.example' });
    expect(approver.asked).toHaveLength(2);
  });

  it('an approval times out into a denial, recorded with its code', async () => {
    await log.close();
    await build({ approvalTimeoutMs: 20 });
    approver.answer = null;
    const { agentId } = await hello();
    expect(await codeOf(authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD }))).toBe('WRIT_APPROVAL_TIMEOUT');
    const lines = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ event: 'task.denied', outcome: 'failure', code: 'WRIT_APPROVAL_TIMEOUT' });
  });

  it('bounds the requests one agent may have waiting', async () => {
    approver.answer = null;
    const { agentId } = await hello();
    const waiting = [1, 2, 3, 4].map((i) => authority.requestTask({ agentId }, { task: `t${i}`, scopes: ['repo:read:a'], audience: AUD }).catch((e) => e));
    expect(await codeOf(authority.requestTask({ agentId }, { task: 't5', scopes: ['repo:read:a'], audience: AUD }))).toBe('WRIT_TOO_MANY_PENDING');
    expect(authority.counts().pendingApprovals).toBe(4);
    await authority.revoke({ kind: 'agent', id: agentId }, 'test');
    const codes = (await Promise.all(waiting)).map((e: WritError) => e.code);
    expect(codes).toEqual(['WRIT_TOKEN_REVOKED', 'WRIT_TOKEN_REVOKED', 'WRIT_TOKEN_REVOKED', 'WRIT_TOKEN_REVOKED']);
    expect(authority.counts().pendingApprovals).toBe(0);
  });

  it('a sub-agent is bounded by its parent and its chain is nested in act', async () => {
    const p = await hello('parent');
    const pr = await authority.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:acme/*'], audience: AUD });
    const c = await hello('child', { parentSession: pr.session! });
    const cr = await authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    const claims = await authority.check(cr.token.token);
    expect(claims.act).toEqual({ sub: c.agentId, act: { sub: p.agentId } });
    expect(claims.chain).toEqual([c.agentId, p.agentId]);
    expect(await codeOf(authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:other/x'], audience: AUD }))).toBe(
      'WRIT_SCOPE_NOT_COVERED',
    );
    expect(approver.asked).toHaveLength(1);
  });

  it("revoking the parent's grant or task revokes a sub-agent's grant covered by it, now and after a restart", async () => {
    const p = await hello('parent');
    const pr = await authority.requestTask({ agentId: p.agentId }, { task: 'delegate', scopes: ['repo:write:acme/*'], audience: AUD });
    const c = await hello('child', { parentSession: pr.session! });
    const cr = await authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:write:acme/web'], audience: AUD });
    const g = await hello('grandchild', { parentSession: cr.session! });
    const gr = await authority.requestTask({ agentId: g.agentId }, { task: 'subsub', scopes: ['repo:write:acme/web'], audience: AUD });
    // The tokens name the grants above theirs, so the link holds where the broker's memory does not.
    expect((await authority.check(cr.token.token)).parent_grant_ids).toEqual([pr.grant.id]);
    expect((await authority.check(gr.token.token)).parent_grant_ids).toEqual([cr.grant.id, pr.grant.id]);
    const later = await authority.mint({ agentId: c.agentId }, { grantId: cr.grant.id });

    // In this run: the child's grant and the grandchild's go with the parent's task, their tokens and minting too.
    expect(await authority.revoke({ kind: 'task', id: pr.grant.taskId }, 'test')).toEqual({ revokedTokens: 4, revokedGrants: 3, revokedAgents: 0 });
    for (const t of [pr.token.token, cr.token.token, later.token, gr.token.token]) expect(await codeOf(authority.check(t))).toBe('WRIT_TOKEN_REVOKED');
    expect(await codeOf(authority.mint({ agentId: c.agentId }, { grantId: cr.grant.id }))).toBe('WRIT_TOKEN_REVOKED');
    expect(await codeOf(authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:write:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');

    // Another parent grant, then a restart: revoking it by id there takes the sub-agent's token by its claims.
    const pr2 = await authority.requestTask({ agentId: p.agentId }, { task: 'again', scopes: ['repo:read:acme/*'], audience: AUD });
    const c2 = await hello('child-2', { parentSession: pr.session! }); // the parent's session, handed out once
    const cr2 = await authority.requestTask({ agentId: c2.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
    expect((await authority.check(cr2.token.token)).parent_grant_ids).toEqual([pr2.grant.id]);
    const next = await authorityOn();
    expect((await next.check(cr2.token.token)).jti).toBe(cr2.token.jti);
    await next.revoke({ kind: 'grant', id: pr2.grant.id }, 'test');
    expect(await codeOf(next.check(cr2.token.token))).toBe('WRIT_TOKEN_REVOKED');
  });

  it('a revocation made by a run with a lower --max-ttl, or after the clock went back, is kept while the token it covers lives', async () => {
    const t0 = Math.floor(clock.now() / 1000);
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const other = await authority.requestTask({ agentId: (await hello('other')).agentId }, { task: 'o', scopes: ['repo:read:b'], audience: AUD, ttl: 3600 });
    expect([r.token.expiresAt, other.token.expiresAt]).toEqual([t0 + 3600, t0 + 3600]);
    const entries = () => readFileSync(join(dir, 'revocations.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string; until: number });

    // The next run allows 300 s at most; it revokes the agent, the token by jti (its claims not at hand), the grant and the task.
    const run2 = await authorityOn({ maxTtlSeconds: 300 }, counterIds('r2_'));
    await run2.revoke({ kind: 'agent', id: agentId }, 'test');
    await run2.revoke({ kind: 'token', jti: r.token.jti }, 'test');
    await run2.revoke({ kind: 'grant', id: r.grant.id }, 'test');
    await run2.revoke({ kind: 'task', id: r.grant.taskId }, 'test');
    expect(entries().map((e) => [e.kind, e.until])).toEqual([
      ['agent', t0 + 3600],
      ['token', t0 + 3600],
      ['grant', t0 + 3600],
      ['task', t0 + 3600],
    ]);
    // The clock goes back ten minutes; a verified token revoked by jti (RFC 7009, its claims at hand) is kept to its own exp.
    clock.advance(-600_000);
    await run2.revoke({ kind: 'token', jti: other.token.jti }, 'http:rfc7009', undefined, other.token.expiresAt);
    expect(entries().at(-1)).toMatchObject({ kind: 'token', until: t0 + 3600 });

    // Nearly an hour on, a later run still refuses both tokens, which have 5 s left.
    clock.set((t0 + 3595) * 1000);
    const run3 = await authorityOn({}, counterIds('r3_'));
    expect([await codeOf(run3.check(r.token.token)), await codeOf(run3.check(other.token.token))]).toEqual(['WRIT_TOKEN_REVOKED', 'WRIT_TOKEN_REVOKED']);
    // At their exp a token is still taken for the clock tolerance (5 s), and so a start keeps the entries; after
    // it, the next start drops them.
    clock.set((t0 + 3600) * 1000);
    const run4 = await authorityOn({}, counterIds('r4_'));
    expect(entries()).toHaveLength(5);
    expect(await codeOf(run4.check(r.token.token))).toBe('WRIT_TOKEN_REVOKED');
    clock.set((t0 + 3605) * 1000);
    const run5 = await authorityOn({}, counterIds('r5_'));
    expect(entries()).toEqual([]);
    expect(await codeOf(run5.check(r.token.token))).toBe('WRIT_TOKEN_EXPIRED');
  });

  it('revoking everything writes one entry that covers its own second, and a token minted later that second waits for the next', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const earlier = [r.token];
    for (let i = 0; i < 20; i++) earlier.push(await authority.mint({ agentId }, { grantId: r.grant.id }));
    clock.advance(2_300);
    const sameSecond = await authority.mint({ agentId }, { grantId: r.grant.id });
    const second = Math.floor(clock.now() / 1000);
    expect(await authority.revoke({ kind: 'all' }, 'test')).toEqual({ revokedTokens: 22, revokedGrants: 1, revokedAgents: 1 });
    const entries = () => readFileSync(join(dir, 'revocations.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    // One entry however many tokens this second holds: no fsync per token.
    expect(entries().map((e) => [e.kind, e.id, e.at])).toEqual([['all', '', second + 1]]);
    for (const t of [...earlier.map((x) => x.token), sameSecond.token]) expect(await codeOf(authority.check(t))).toBe('WRIT_TOKEN_REVOKED');

    // A new agent approved in the same second gets a token issued in the next one, which the entry does not cover.
    const after = await hello('after');
    expect(slept).toEqual([]);
    const fresh = await authority.requestTask({ agentId: after.agentId }, { task: 't2', scopes: ['repo:read:a'], audience: AUD });
    expect(slept).toEqual([701]);
    expect((await authority.check(fresh.token.token)).iat).toBe(second + 1);
    expect(entries()).toHaveLength(1);

    // In a later run, from the list alone: the same verdicts.
    const next = await authorityOn();
    for (const t of [...earlier.map((x) => x.token), sameSecond.token]) expect(await codeOf(next.check(t))).toBe('WRIT_TOKEN_REVOKED');
    expect((await next.check(fresh.token.token)).jti).toBe(fresh.token.jti);
  });

  it("revoking a task takes every token issued for it by task_id: on a grant another task made, exchanged, and in a later run", async () => {
    approver.answer = () => ({ decision: 'approve', mode: 'session' });
    const { agentId } = await hello();
    const a = await authority.requestTask({ agentId }, { task: 'task A', scopes: ['repo:read:acme/web'], audience: AUD });
    const b = await authority.requestTask({ agentId }, { task: 'task B', scopes: ['repo:read:acme/web'], audience: AUD });
    // B reused A's session grant without a prompt; its token names task B.
    expect([b.reused, b.grant.id, approver.asked.length]).toEqual([true, a.grant.id, 1]);
    const taskB = (await authority.check(b.token.token)).task_id;
    expect(taskB).not.toBe(a.grant.taskId);
    const exchangedB = await authority.exchange(b.token.token, { actorName: 'helper' });
    await authority.revoke({ kind: 'task', id: taskB }, 'test');
    for (const t of [b.token.token, exchangedB.token]) expect(await codeOf(authority.check(t))).toBe('WRIT_TOKEN_REVOKED');
    // Task A, and the grant B had reused, are not B's: they stay.
    expect((await authority.check(a.token.token)).jti).toBe(a.token.jti);
    expect((await authority.mint({ agentId }, { grantId: a.grant.id })).scopes).toEqual(['repo:read:acme/web']);
    // A later run holds no grant of task A, and still finds its tokens by task_id once it is revoked there.
    const next = await authorityOn();
    expect((await next.check(a.token.token)).jti).toBe(a.token.jti);
    await next.revoke({ kind: 'task', id: a.grant.taskId }, 'test');
    expect(await codeOf(next.check(a.token.token))).toBe('WRIT_TOKEN_REVOKED');
    expect(next.revocationSnapshot().taskIds).toEqual([taskB, a.grant.taskId]);
  });

  it('limits delegation depth', async () => {
    await log.close();
    await build({ maxDelegationDepth: 1 });
    const p = await hello('p');
    const pr = await authority.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const c = await hello('c', { parentSession: pr.session! });
    const cr = await authority.requestTask({ agentId: c.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(await codeOf(authority.exchange(cr.token.token, {}))).toBe('WRIT_DEPTH_EXCEEDED');
  });

  describe('after a restart: sessions the new run does not know', () => {
    /** The first run: a parent with a grant, its sub-agent, and the sub-agent's own sub-agent, each with its session. */
    async function family() {
      const p = await hello('parent');
      const pr = await authority.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:acme/*'], audience: AUD });
      const c = await hello('child', { parentSession: pr.session! });
      const cr = await authority.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
      const g = await hello('grandchild', { parentSession: cr.session! });
      const gr = await authority.requestTask({ agentId: g.agentId }, { task: 'subsub', scopes: ['repo:read:acme/web'], audience: AUD });
      approver.asked.length = 0;
      return { parent: pr.session!, child: cr.session!, grandchild: gr.session! };
    }
    const back = (a: Authority, name: string, extra: { session?: string; parentSession?: string }) => a.introduce({ protocol: 'writ/1', agent: { name, kind: 'script' }, ...extra });
    const parentsOf = (a: Authority) => Object.fromEntries(a.listAgents().map((x) => [x.name, x.parents]));
    const records = () => readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

    it('a sub-agent that says hello with its parent\'s session is put under the agent holding it now, and goes with it', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const p = await back(next, 'parent', { session: s.parent });
      const c = await back(next, 'child', { session: s.child, parentSession: s.parent });
      const g = await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child });
      expect([p.resumed, c.resumed, g.resumed]).toEqual([false, false, false]);
      expect(parentsOf(next)).toEqual({ parent: [], child: [p.agentId], grandchild: [c.agentId, p.agentId] });
      // Each holds the session it came back with: a second hello with it resumes the same agent.
      expect(await back(next, 'child', { session: s.child })).toEqual({ agentId: c.agentId, resumed: true });
      // A sub-agent again: bounded by what the parent holds now (nothing yet), never a prompt.
      expect(await codeOf(next.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
      await next.requestTask({ agentId: p.agentId }, { task: 'again', scopes: ['repo:read:acme/*'], audience: AUD });
      const cr = await next.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD });
      expect((await next.check(cr.token.token)).act).toEqual({ sub: c.agentId, act: { sub: p.agentId } });
      expect(approver.asked.map((r) => r.agent.name)).toEqual(['parent']);
      // Revoking the parent as it is now takes both below it, by the broker's own cascade.
      expect(next.agentTree(p.agentId)).toEqual([p.agentId, c.agentId, g.agentId]);
      expect(await next.revoke({ kind: 'agent', id: p.agentId }, 'test')).toEqual({ revokedTokens: 2, revokedGrants: 2, revokedAgents: 3 });
      expect(next.listAgents().map((x) => x.revoked)).toEqual([true, true, true]);
      expect(await codeOf(back(next, 'child', { session: s.child, parentSession: s.parent }))).toBe('WRIT_SESSION_INVALID');
    });

    it('one back before its parent waits top-level, refused grants without a prompt, and is put under it (with its own sub-agents) when the parent comes back', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const c = await back(next, 'child', { session: s.child, parentSession: s.parent });
      const g = await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child });
      expect(parentsOf(next)).toEqual({ child: [], grandchild: [c.agentId] });
      const refused = await next.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD }).catch((e: WritError) => e);
      expect({ code: (refused as WritError).code, data: (refused as WritError).data }).toEqual({ code: 'WRIT_SCOPE_NOT_COVERED', data: { uncovered: ['repo:read:acme/web'] } });
      expect(await codeOf(next.requestTask({ agentId: g.agentId }, { task: 'subsub', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
      expect(approver.asked).toEqual([]);

      const p = await back(next, 'parent', { session: s.parent });
      expect(parentsOf(next)).toEqual({ child: [p.agentId], grandchild: [c.agentId, p.agentId], parent: [] });
      const connected = records().filter((r) => r.event === 'agent.connected').slice(-3);
      expect(connected.map((r) => [r.agent.name, r.detail])).toEqual([
        ['child', { resumed: false, sessionTaken: true, awaitingParent: true }],
        ['grandchild', { resumed: false, sessionTaken: true, underParent: true }],
        ['parent', { resumed: false, sessionTaken: true, subAgentsBack: [c.agentId] }],
      ]);
      await next.requestTask({ agentId: p.agentId }, { task: 'again', scopes: ['repo:read:acme/*'], audience: AUD });
      expect((await next.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD })).grant.agentId).toBe(c.agentId);
      expect(approver.asked.map((r) => r.agent.name)).toEqual(['parent']);
      expect(await next.revoke({ kind: 'agent', id: p.agentId }, 'test')).toMatchObject({ revokedAgents: 3 });
    });

    it('no one gets a parent whose session it does not hold, nor takes a session that is not the broker\'s shape', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const made = (n: number) => `wss_${String(n).padStart(43, 'x')}`;
      // Claims to be coming back under a parent session it made up: waits for it, and the real parent is not it.
      const impostor = await back(next, 'child', { session: made(1), parentSession: made(2) });
      const p = await back(next, 'parent', { session: s.parent });
      expect(parentsOf(next)).toEqual({ child: [], parent: [] });
      expect(await codeOf(next.requestTask({ agentId: impostor.agentId }, { task: 'x', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
      // A first hello (no session of its own) under an unknown parent session is refused, as in any run.
      expect(await codeOf(back(next, 'child', { parentSession: made(3) }))).toBe('WRIT_SESSION_INVALID');
      // A session not shaped as the broker's is not taken: the next hello with it is another new agent.
      for (const weak of ['', 'guess', `${s.parent}x`]) {
        const first = await back(next, 'weak', { session: weak });
        const again = await back(next, 'weak', { session: weak });
        expect([first.resumed, again.resumed, again.agentId === first.agentId]).toEqual([false, false, false]);
      }
      // Nor is such a parent session waited for.
      expect(await codeOf(back(next, 'child', { session: made(4), parentSession: 'guess' }))).toBe('WRIT_SESSION_INVALID');
      // A parent revoked in this run stays refused as a parent.
      await next.revoke({ kind: 'agent', id: p.agentId }, 'test');
      expect(await codeOf(back(next, 'child', { session: s.child, parentSession: s.parent }))).toBe('WRIT_SESSION_INVALID');
    });

    /** The agent's own command (`writ token`, `writ mcp`, the SDK: WRIT_SESSION in its environment, no parent session). */
    const fromCommand = (a: Authority, session: string) => a.introduce({ protocol: 'writ/1', agent: { name: 'writ-cli', kind: 'cli' }, session });

    it('a sub-agent whose command says hello first is put under its parent by its `writ exec`, named as that names it, and never prompts', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const p = await back(next, 'parent', { session: s.parent });
      const cmd = await fromCommand(next, s.child);
      expect(parentsOf(next)).toEqual({ parent: [], 'writ-cli': [] });
      // `writ exec`'s line, with the sub-agent's session and its parent's: the same agent, now under the parent.
      expect(await back(next, 'child', { session: s.child, parentSession: s.parent })).toEqual({ agentId: cmd.agentId, resumed: true });
      expect(parentsOf(next)).toEqual({ parent: [], child: [p.agentId] });
      expect(next.listAgents().find((a) => a.id === cmd.agentId)).toMatchObject({ name: 'child', kind: 'script' });
      expect(records().filter((r) => r.event === 'agent.connected').at(-1)).toMatchObject({
        agent: { id: cmd.agentId, name: 'child', parents: [p.agentId] },
        detail: { resumed: true, underParent: true, formerly: { name: 'writ-cli', kind: 'cli' } },
      });
      // Bounded by what the parent holds now, never a prompt; and the parent's revocation takes it.
      expect(await codeOf(next.requestTask({ agentId: cmd.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
      await next.requestTask({ agentId: p.agentId }, { task: 'again', scopes: ['repo:read:acme/*'], audience: AUD });
      expect((await next.requestTask({ agentId: cmd.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD })).grant.agentId).toBe(cmd.agentId);
      expect(approver.asked.map((r) => r.agent.name)).toEqual(['parent']);
      expect(await next.revoke({ kind: 'agent', id: p.agentId }, 'test')).toMatchObject({ revokedAgents: 2 });
      expect(await codeOf(fromCommand(next, s.child))).toBe('WRIT_SESSION_INVALID');
    });

    it('so does one whose command and `writ exec` are both back before its parent: it waits, refused grants, with its own sub-agents', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const c = await fromCommand(next, s.child);
      expect(await back(next, 'child', { session: s.child, parentSession: s.parent })).toEqual({ agentId: c.agentId, resumed: true });
      const g = await fromCommand(next, s.grandchild);
      expect(await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child })).toEqual({ agentId: g.agentId, resumed: true });
      // Still named as its command named it: the parent session it waits for proves nothing until the parent is back.
      expect(parentsOf(next)).toEqual({ 'writ-cli': [], grandchild: [c.agentId] });
      expect(await codeOf(next.requestTask({ agentId: c.agentId }, { task: 'sub', scopes: ['repo:read:acme/web'], audience: AUD }))).toBe('WRIT_SCOPE_NOT_COVERED');
      expect(approver.asked).toEqual([]);
      // A later hello naming another parent session does not move it: it waits for the one it named first.
      await back(next, 'child', { session: s.child, parentSession: s.grandchild });
      expect(parentsOf(next)).toEqual({ 'writ-cli': [], grandchild: [c.agentId] });
      const p = await back(next, 'parent', { session: s.parent });
      expect(parentsOf(next)).toEqual({ child: [p.agentId], grandchild: [c.agentId, p.agentId], parent: [] });
      expect(records().filter((r) => r.event === 'agent.connected').at(-1)).toMatchObject({
        agent: { name: 'parent' },
        detail: { resumed: false, sessionTaken: true, subAgentsBack: [c.agentId], subAgentsRenamed: [{ id: c.agentId, formerly: { name: 'writ-cli', kind: 'cli' } }] },
      });
      expect(await next.revoke({ kind: 'agent', id: p.agentId }, 'test')).toMatchObject({ revokedAgents: 3 });
    });

    it('one that names a parent revoked in this run, after its command came back, is revoked as the cascade would have', async () => {
      const s = await family();
      const next = await authorityOn({}, counterIds('next_'));
      const p = await back(next, 'parent', { session: s.parent });
      const cmd = await fromCommand(next, s.child);
      await next.revoke({ kind: 'agent', id: p.agentId }, 'test');
      expect(next.isAgentRevoked(cmd.agentId)).toBe(false);
      expect(await codeOf(back(next, 'child', { session: s.child, parentSession: s.parent }))).toBe('WRIT_SESSION_INVALID');
      expect(next.isAgentRevoked(cmd.agentId)).toBe(true);
      expect(await codeOf(fromCommand(next, s.child))).toBe('WRIT_SESSION_INVALID');
      // Nor may a session of the broker's shape that no agent of this run held come back under it.
      expect(await codeOf(back(next, 'other', { session: `wss_${'o'.repeat(43)}`, parentSession: s.parent }))).toBe('WRIT_SESSION_INVALID');
      expect(await codeOf(fromCommand(next, `wss_${'o'.repeat(43)}`))).toBe('WRIT_SESSION_INVALID');
    });

    it('a sub-agent nested deeper than a depth limit lowered across the restart comes back top-level, in either order, not refused', async () => {
      const s = await family();
      const next = await authorityOn({ maxDelegationDepth: 1 }, counterIds('next_'));
      const p = await back(next, 'parent', { session: s.parent });
      const c = await back(next, 'child', { session: s.child, parentSession: s.parent });
      const g = await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child });
      expect(g.resumed).toBe(false);
      expect(parentsOf(next)).toEqual({ parent: [], child: [p.agentId], grandchild: [] });
      // Its `writ exec` saying hello again (a line drop) is the same agent, still top-level.
      expect(await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child })).toEqual({ agentId: g.agentId, resumed: true });
      expect(parentsOf(next)).toEqual({ parent: [], child: [p.agentId], grandchild: [] });
      // Its command first, then its `writ exec`: the same.
      const other = await authorityOn({ maxDelegationDepth: 1 }, counterIds('other_'));
      await back(other, 'parent', { session: s.parent });
      await back(other, 'child', { session: s.child, parentSession: s.parent });
      const gc = await fromCommand(other, s.grandchild);
      expect(await back(other, 'grandchild', { session: s.grandchild, parentSession: s.child })).toEqual({ agentId: gc.agentId, resumed: true });
      expect(other.listAgents().find((a) => a.id === gc.agentId)?.parents).toEqual([]);
      // A first hello (no session of its own) that deep is refused, as in any run.
      expect(await codeOf(back(next, 'new', { parentSession: s.child }))).toBe('WRIT_DEPTH_EXCEEDED');
      expect(c.resumed).toBe(false);
    });

    it('a session revoked before the restart is refused by the next runs, as an agent\'s and as a parent\'s; the list holds only its hash', async () => {
      const s = await family();
      const childId = authority.listAgents().find((a) => a.name === 'child')!.id;
      expect(await authority.revoke({ kind: 'agent', id: childId }, 'test')).toMatchObject({ revokedAgents: 2 });
      for (const prefix of ['next_', 'third_']) {
        const next = await authorityOn({}, counterIds(prefix));
        expect(await codeOf(back(next, 'child', { session: s.child }))).toBe('WRIT_SESSION_INVALID');
        expect(await codeOf(back(next, 'grandchild', { session: s.grandchild, parentSession: s.child }))).toBe('WRIT_SESSION_INVALID');
        expect(await codeOf(back(next, 'other', { session: `wss_${prefix.padEnd(43, 'o')}`, parentSession: s.child }))).toBe('WRIT_SESSION_INVALID');
        expect((await back(next, 'parent', { session: s.parent })).resumed).toBe(false);
      }
      const list = readFileSync(join(dir, 'revocations.jsonl'), 'utf8');
      for (const secret of [s.parent, s.child, s.grandchild]) expect(list).not.toContain(secret);
    });

    it('an agent holding only its own session cannot rename itself: not by naming its own session, a made-up one, or a refused link, and at most once', async () => {
      const s = await family();
      const next = await authorityOn({ maxDelegationDepth: 1 }, counterIds('next_'));
      const me = await back(next, 'parent', { session: s.parent });
      const named = () => next.listAgents().find((x) => x.id === me.agentId)!;
      const hello = (name: string, parentSession: string) => next.introduce({ protocol: 'writ/1', agent: { name, kind: 'editor' }, session: s.parent, parentSession });
      // Its own session as its parent's: no link, no rename.
      expect(await hello('claude-code', s.parent)).toEqual({ agentId: me.agentId, resumed: true });
      expect(named()).toMatchObject({ name: 'parent', kind: 'script', parents: [] });
      expect(records().filter((r) => r.event === 'agent.connected').at(-1).detail).toEqual({ resumed: true });
      // That was its one claim: a made-up parent session of the right shape afterwards is not even waited for.
      expect(await hello('github-copilot', `wss_${'q'.repeat(43)}`)).toEqual({ agentId: me.agentId, resumed: true });
      expect(named()).toMatchObject({ name: 'parent', kind: 'script', parents: [] });
      // A fresh taken session whose first claim is a made-up parent: it waits, under its own name.
      const other = await back(next, 'other', { session: `wss_${'o'.repeat(43)}` });
      await next.introduce({ protocol: 'writ/1', agent: { name: 'ssh-agent', kind: 'system' }, session: `wss_${'o'.repeat(43)}`, parentSession: `wss_${'q'.repeat(43)}` });
      expect(next.listAgents().find((x) => x.id === other.agentId)).toMatchObject({ name: 'other', kind: 'script', parents: [] });
      expect(records().filter((r) => r.event === 'agent.connected').at(-1).detail).toEqual({ resumed: true, awaitingParent: true });
      // A link refused (deeper than the depth limit lowered across the restart): no rename either.
      const c = await back(next, 'child', { session: s.child, parentSession: s.parent });
      expect(parentsOf(next).child).toEqual([me.agentId]);
      const g = await fromCommand(next, s.grandchild);
      expect(await back(next, 'grandchild', { session: s.grandchild, parentSession: s.child })).toEqual({ agentId: g.agentId, resumed: true });
      expect(next.listAgents().find((x) => x.id === g.agentId)).toMatchObject({ name: 'writ-cli', kind: 'cli', parents: [] });
      expect(c.resumed).toBe(false);
    });

    it('a link that would make a cycle or nest deeper than allowed is not made: those stay top-level', async () => {
      const next = await authorityOn({ maxDelegationDepth: 1 }, counterIds('next_'));
      const made = (n: number) => `wss_${String(n).padStart(43, 'y')}`;
      // Each names the other's session as its parent's.
      const a = await back(next, 'a', { session: made(1), parentSession: made(2) });
      const b = await back(next, 'b', { session: made(2), parentSession: made(1) });
      expect(parentsOf(next)).toEqual({ a: [], b: [a.agentId] });
      // A child with a sub-agent of its own, waiting for a parent: under it the grandchild would be 2 deep.
      const c = await back(next, 'c', { session: made(3), parentSession: made(5) });
      await back(next, 'd', { session: made(4), parentSession: made(3) });
      const e = await back(next, 'e', { session: made(5) });
      expect(parentsOf(next)).toMatchObject({ c: [], d: [c.agentId], e: [] });
      expect(records().filter((r) => r.event === 'agent.connected').at(-1).detail).toEqual({ resumed: false, sessionTaken: true });
      expect(b.agentId).not.toBe(e.agentId);
    });
  });

  describe('RFC 8693 exchange: the sub-agent\'s grant', () => {
    /** A parent agent holding a grant, and a way to exchange one of its tokens for a named sub-agent. */
    async function parentWithGrant(scopes = ['repo:read:acme/*']) {
      const p = await hello('parent');
      const pr = await authority.requestTask({ agentId: p.agentId }, { task: 'delegate', scopes, audience: AUD });
      return { agentId: p.agentId, grantId: pr.grant.id, token: pr.token };
    }
    const grantOf = async (token: string) => (await authority.check(token)).grant_id;

    it('exchanges for one sub-agent from one parent grant share a grant; revoking one token leaves its siblings active', async () => {
      const p = await parentWithGrant();
      const later = await authority.mint({ agentId: p.agentId }, { grantId: p.grantId });
      const a = await authority.exchange(p.token.token, { actorName: 'sub' });
      const b = await authority.exchange(later.token, { actorName: 'sub' });
      expect(await grantOf(b.token)).toBe(await grantOf(a.token));
      expect(await grantOf(a.token)).not.toBe(p.grantId);
      expect(await authority.revoke({ kind: 'token', jti: a.jti }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
      expect(await codeOf(authority.check(a.token))).toBe('WRIT_TOKEN_REVOKED');
      expect((await authority.check(b.token)).jti).toBe(b.jti);
      expect((await authority.check(p.token.token)).jti).toBe(p.token.jti);
    });

    it('another sub-agent name, or narrower scopes, is another grant', async () => {
      const p = await parentWithGrant(['repo:read:acme/*', 'repo:write:acme/web']);
      const whole = await grantOf((await authority.exchange(p.token.token, { actorName: 'sub' })).token);
      const narrow = await grantOf((await authority.exchange(p.token.token, { actorName: 'sub', scopes: ['repo:read:acme/web'] })).token);
      const other = await grantOf((await authority.exchange(p.token.token, { actorName: 'other' })).token);
      expect(new Set([whole, narrow, other]).size).toBe(3);
      expect(await grantOf((await authority.exchange(p.token.token, { actorName: 'sub', scopes: ['repo:read:acme/web'] })).token)).toBe(narrow);
    });

    it('revoking the parent grant revokes every token exchanged from it, and exchange from its tokens is refused', async () => {
      const p = await parentWithGrant();
      const a = await authority.exchange(p.token.token, { actorName: 'sub' });
      const b = await authority.exchange(p.token.token, { actorName: 'sub' });
      const c = await authority.exchange(p.token.token, { actorName: 'other' });
      const below = [await grantOf(a.token), await grantOf(c.token)];
      const heard: string[][] = [];
      authority.onRevocation((e) => void heard.push(e.grantIds ?? []));
      const res = await authority.revoke({ kind: 'grant', id: p.grantId }, 'test');
      // The parent grant and the two sub-agent grants below it; the parent's token and the three exchanged ones.
      expect(res).toEqual({ revokedTokens: 4, revokedGrants: 3, revokedAgents: 0 });
      // Verifiers hear every grant id, so they refuse the exchanged tokens (whose grant_id is the sub-agent's grant).
      expect(heard).toEqual([[p.grantId, ...below]]);
      for (const t of [p.token.token, a.token, b.token, c.token]) expect(await codeOf(authority.check(t))).toBe('WRIT_TOKEN_REVOKED');
      expect(await codeOf(authority.exchange(p.token.token, { actorName: 'sub' }))).toBe('WRIT_TOKEN_REVOKED');
    });

    it('an exchanged token names the grants above its own, nearest first, and the exchange record names the parent grant', async () => {
      const p = await parentWithGrant();
      const child = await authority.exchange(p.token.token, { actorName: 'sub' });
      const grandchild = await authority.exchange(child.token, { actorName: 'subsub' });
      const c = await authority.check(child.token);
      const g = await authority.check(grandchild.token);
      expect(c.parent_grant_ids).toEqual([p.grantId]);
      expect(g.parent_grant_ids).toEqual([c.grant_id, p.grantId]);
      expect((await authority.check(p.token.token)).parent_grant_ids).toBeUndefined();
      const records = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const exchanged = records.filter((r) => r.event === 'token.exchanged');
      expect(exchanged.map((r) => [r.jti, r.grantId, r.detail.parentGrantId])).toEqual([
        [child.jti, c.grant_id, p.grantId],
        [grandchild.jti, g.grant_id, c.grant_id],
      ]);
    });

    it('after a restart (no grant in memory), revoking a grant revokes the tokens exchanged below it, by their claims', async () => {
      const p = await parentWithGrant();
      const child = await authority.exchange(p.token.token, { actorName: 'sub' });
      const grandchild = await authority.exchange(child.token, { actorName: 'subsub' });
      const other = await parentWithGrant();
      const unrelated = await authority.exchange(other.token.token, { actorName: 'sub' });
      const childGrant = (await authority.check(child.token)).grant_id;
      // A second Authority on the same revocation list and key, knowing no agent, grant or token: the next run.
      const next = await authorityOn();
      expect((await next.check(grandchild.token)).jti).toBe(grandchild.jti);
      // Revoking the child's grant there ends the grandchild's token and leaves the parent's.
      await next.revoke({ kind: 'grant', id: childGrant }, 'test');
      expect(await codeOf(next.check(grandchild.token))).toBe('WRIT_TOKEN_REVOKED');
      expect((await next.check(p.token.token)).jti).toBe(p.token.jti);
      await next.revoke({ kind: 'grant', id: p.grantId }, 'test');
      for (const t of [p.token.token, child.token]) expect(await codeOf(next.check(t))).toBe('WRIT_TOKEN_REVOKED');
      expect(await codeOf(next.exchange(p.token.token, { actorName: 'sub' }))).toBe('WRIT_TOKEN_REVOKED');
      expect((await next.check(unrelated.token)).jti).toBe(unrelated.jti);
    });

    it("revoking a sub-agent's grant ends the tokens exchanged on it, not its parent's; the next exchange gets a new grant", async () => {
      const p = await parentWithGrant();
      const a = await authority.exchange(p.token.token, { actorName: 'sub' });
      const b = await authority.exchange(p.token.token, { actorName: 'sub' });
      const first = await grantOf(a.token);
      expect(await authority.revoke({ kind: 'grant', id: first }, 'test')).toEqual({ revokedTokens: 2, revokedGrants: 1, revokedAgents: 0 });
      expect(await codeOf(authority.check(a.token))).toBe('WRIT_TOKEN_REVOKED');
      expect(await codeOf(authority.check(b.token))).toBe('WRIT_TOKEN_REVOKED');
      expect((await authority.check(p.token.token)).jti).toBe(p.token.jti);
      const c = await authority.exchange(p.token.token, { actorName: 'sub' });
      expect(await grantOf(c.token)).not.toBe(first);
      expect((await authority.check(c.token)).jti).toBe(c.jti);
    });

    it('revoking the sub-agent revokes its exchanged tokens and leaves the parent active', async () => {
      const p = await parentWithGrant();
      const a = await authority.exchange(p.token.token, { actorName: 'sub' });
      const sub = (await authority.check(a.token)).client_id;
      expect(await authority.revoke({ kind: 'agent', id: sub }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 1, revokedAgents: 1 });
      expect(await codeOf(authority.check(a.token))).toBe('WRIT_TOKEN_REVOKED');
      expect(await codeOf(authority.exchange(p.token.token, { actorName: 'sub' }))).toBe('WRIT_TOKEN_REVOKED');
      expect((await authority.check(p.token.token)).jti).toBe(p.token.jti);
      // Refused before anything was made: no new grant for the revoked sub-agent, no second exchange on record.
      expect(authority.listAgents().find((x) => x.id === sub)).toMatchObject({ revoked: true, grants: 0, liveTokens: 0 });
      const exchanged = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.event === 'token.exchanged');
      expect(exchanged.map((r) => r.jti)).toEqual([a.jti]);
    });

    it('refuses an exchange asking for more scopes than a task request may (32), before any scope work', async () => {
      const p = await parentWithGrant(['repo:read:acme/**']);
      const many = Array.from({ length: 33 }, (_, i) => `repo:read:acme/**/x${i}`);
      const e = await authority.exchange(p.token.token, { actorName: 'sub', scopes: many }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(WritError);
      expect([(e as WritError).code, (e as WritError).path]).toEqual(['WRIT_BAD_REQUEST', 'scope']);
      expect(await codeOf(authority.exchange(p.token.token, { actorName: 'sub', scopes: [] }))).toBe('WRIT_BAD_REQUEST');
      expect((await authority.exchange(p.token.token, { actorName: 'sub', scopes: many.slice(0, 32) })).scopes).toHaveLength(32);
    });

    it('a shared grant lives as long as the latest parent token exchanged on it', async () => {
      const p = await parentWithGrant();
      clock.advance(200_000);
      const later = await authority.mint({ agentId: p.agentId }, { grantId: p.grantId });
      const a = await authority.exchange(p.token.token, { actorName: 'sub' });
      const b = await authority.exchange(later.token, { actorName: 'sub' });
      expect(b.expiresAt).toBe(later.expiresAt);
      expect(a.expiresAt).toBe(p.token.expiresAt);
      const g = await grantOf(b.token);
      // Past the first parent token's expiry, the grant and the later token are still live.
      clock.advance(150_000);
      expect(await codeOf(authority.check(a.token))).toBe('WRIT_TOKEN_EXPIRED');
      expect((await authority.check(b.token)).grant_id).toBe(g);
      expect(authority.listGrants(undefined).map((x) => x.id)).toContain(g);
    });
  });

  it('fails closed: when the audit write fails, no token is returned', async () => {
    let fail = false;
    await log.close();
    await build({}, { append: (e) => (fail && e.event === 'token.minted' ? Promise.reject(new WritError('WRIT_AUDIT_WRITE_FAILED', 'disk full')) : log.append(e)) });
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    fail = true;
    expect(await codeOf(authority.mint({ agentId }, { grantId: r.grant.id }))).toBe('WRIT_AUDIT_WRITE_FAILED');
  });

  it('agent.stopped for an id this run does not know is on record only if the revocation list names it, marked unknownAgent (nothing proves who ran it)', async () => {
    const stop = { pid: 4242, signal: 'SIGKILL', processes: 9, treeStopped: true, exitCode: null, exitSignal: 'SIGKILL' } as const;
    const made = 'agt_made_up_by_anyone';
    expect(await codeOf(authority.recordAgentStopped({ agentId: made, ...stop }, undefined))).toBe('WRIT_AGENT_NOT_FOUND');
    // Revocation is open to any caller, so anyone can make the id one the list names, then report it stopped.
    await authority.revoke({ kind: 'agent', id: made }, 'anyone');
    await authority.recordAgentStopped({ agentId: made, ...stop }, { pid: 777, exe: '/usr/bin/node' });
    const { agentId } = await hello('known');
    await authority.revoke({ kind: 'agent', id: agentId }, 'test');
    await authority.recordAgentStopped({ agentId, ...stop }, { pid: 778 });
    const stopped = readFileSync(join(dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.event === 'agent.stopped');
    expect(stopped.map((r) => [r.agent?.id, r.detail])).toEqual([
      [undefined, { agentId: made, ...stop, revoked: true, unknownAgent: true, reporter: { pid: 777, exe: '/usr/bin/node' } }],
      [agentId, { ...stop, revoked: true, reporter: { pid: 778 } }],
    ]);
  });

  it('an awaited use report (token.uses, token.uses.open) is answered only once a record per call is durable, and not at all when the write fails; only token.uses.open names use ids', async () => {
    let fail = false;
    await log.close();
    await build({}, { append: (e) => (fail && e.event === 'token.used' ? Promise.reject(new WritError('WRIT_AUDIT_WRITE_FAILED', 'disk full')) : log.append(e)) });
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['mcp:call:echo/*'], audience: AUD });
    const calls = ['echo/a', 'echo/b', 'echo/c'].map((target) => ({ resource: 'mcp', action: 'call', target }));
    const used = () => readFileSync(join(dir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used');
    // token.uses: a count, and records that name no use id (nothing can end them by id).
    expect(await authority.recordUses({ jti: r.token.jti, exp: r.token.expiresAt, audience: AUD, calls }, {})).toBe(3);
    expect(used().map((x) => [x.outcome, x.grantId, x.detail.allowed, x.detail.call.target, x.detail.use])).toEqual(calls.map((c) => ['success', r.grant.id, true, c.target, undefined]));
    // token.uses.open: each call's use id, open until its end is reported.
    const connection = new OpenUses();
    const uses = await authority.recordOpenUses({ jti: r.token.jti, exp: r.token.expiresAt, audience: AUD, calls }, {}, undefined, connection);
    expect(uses).toEqual([expect.stringMatching(/^use_/), expect.stringMatching(/^use_/), expect.stringMatching(/^use_/)]);
    expect(new Set(uses).size).toBe(3);
    // Each record names its use id, in the order of the calls: what the call's end record links to.
    expect(used().slice(3).map((x) => [x.outcome, x.grantId, x.detail.allowed, x.detail.call.target, x.detail.use])).toEqual(calls.map((c, i) => ['success', r.grant.id, true, c.target, uses[i]]));
    expect(uses.every((u) => authority.isOpenUse(u, connection))).toBe(true);
    fail = true;
    expect(await codeOf(authority.recordUses({ jti: r.token.jti, exp: r.token.expiresAt, audience: AUD, calls }, {}))).toBe('WRIT_AUDIT_WRITE_FAILED');
    expect(await codeOf(authority.recordOpenUses({ jti: r.token.jti, exp: r.token.expiresAt, audience: AUD, calls }, {}, undefined, connection))).toBe('WRIT_AUDIT_WRITE_FAILED');
  });

  it("open uses belong to the connection that recorded them: another cannot end them or push them out; at its cap a connection forgets its own oldest; all are forgotten as it closes", async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['mcp:call:echo/*'], audience: AUD });
    const echo = { resource: 'mcp', action: 'call', target: 'echo/echo' };
    const report = (n: number) => ({ jti: r.token.jti, exp: r.token.expiresAt, audience: AUD, calls: Array.from({ length: n }, () => echo) });
    const end = (use: string) => ({ use, jti: r.token.jti, call: echo, outcome: 'answered' as const, durationMs: 1 });
    const ends = () =>
      readFileSync(join(dir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((x) => x.event === 'token.use.ended').map((x) => [x.detail.use, x.detail.unknownUse]);
    const gate = new OpenUses(3);
    const flooder = new OpenUses(3);
    const [g1, g2] = await authority.recordOpenUses(report(2), {}, undefined, gate);
    // Another connection floods past its own cap: only its own oldest go; the gate's stay open.
    const flood = await authority.recordOpenUses(report(5), {}, undefined, flooder);
    expect(flood.map((u) => authority.isOpenUse(u, flooder))).toEqual([false, false, true, true, true]);
    expect(flooder.forgotten).toBe(2);
    expect([authority.isOpenUse(g1, gate), authority.isOpenUse(g2, gate)]).toEqual([true, true]);
    // It cannot end the gate's use (it may read the id in the audit log): refused, nothing written.
    const e = await authority.recordUseEnded(end(g1!), flooder).catch((x: unknown) => x);
    expect([(e as WritError).code, (e as WritError).path]).toEqual(['WRIT_BAD_REQUEST', 'params.use']);
    expect(ends()).toEqual([]);
    // The gate's own end is of a known use; a forgotten one's end is of an unknown use.
    await authority.recordUseEnded(end(g1!), gate);
    await authority.recordUseEnded(end(flood[0]!), flooder);
    expect(ends()).toEqual([
      [g1, undefined],
      [flood[0], true],
    ]);
    // At its cap the gate forgets its own oldest (g2), not another's.
    const more = await authority.recordOpenUses(report(3), {}, undefined, gate);
    expect([authority.isOpenUse(g2, gate), ...more.map((u) => authority.isOpenUse(u, gate))]).toEqual([false, true, true, true]);
    expect(authority.isOpenUse(flood[4], flooder)).toBe(true);
    // Closed: its open uses are forgotten, so another connection's end for one is of an unknown use, not refused.
    authority.forgetOpenUses(gate);
    expect(authority.isOpenUse(more[0], gate)).toBe(false);
    await authority.recordUseEnded(end(more[0]!), flooder);
    expect(ends().at(-1)).toEqual([more[0], true]);
    // A report whose record lands after its connection closed opens nothing.
    expect(gate.uses.size).toBe(0);
    await authority.recordOpenUses(report(1), {}, undefined, gate);
    expect(gate.uses.size).toBe(0);
  });

  it('tokens expire by the clock, and checks say so with their own code', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    expect((await authority.check(r.token.token)).jti).toBe(r.token.jti);
    expect(await codeOf(authority.check(r.token.token, 'https://other.example'))).toBe('WRIT_AUDIENCE_MISMATCH');
    clock.advance(66_000);
    expect(await codeOf(authority.check(r.token.token))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await authority.introspect(r.token.token)).toEqual({ active: false });
  });

  it('introspection says active only before exp, without the clock tolerance other checks allow (RFC 7662)', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    const records: AuditEntry[] = [];
    const write = log.append.bind(log);
    log.append = (e: AuditEntry) => {
      if (e.event === 'token.introspected') records.push(e);
      return write(e);
    };
    clock.set(r.token.expiresAt * 1000 - 1000);
    expect(await authority.introspect(r.token.token)).toMatchObject({ active: true, jti: r.token.jti, exp: r.token.expiresAt });
    for (const past of [0, 4]) {
      clock.set((r.token.expiresAt + past) * 1000);
      // Still taken within the 5 s tolerance by the broker's own checks (exchange), not shown as active.
      expect((await authority.check(r.token.token)).jti).toBe(r.token.jti);
      expect(await authority.introspect(r.token.token)).toEqual({ active: false });
    }
    expect(records.map((e) => [e.outcome, e.code])).toEqual([['success', undefined], ['failure', 'WRIT_TOKEN_EXPIRED'], ['failure', 'WRIT_TOKEN_EXPIRED']]);
  });

  it('never writes a token or session credential into the audit log', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const m = await authority.mint({ agentId }, { grantId: r.grant.id });
    await log.close();
    const text = readFileSync(join(dir, 'audit.jsonl'), 'utf8');
    expect(text).toContain(r.token.jti);
    for (const secret of [r.token.token, m.token, r.session!, r.token.token.split('.')[2]!]) expect(text).not.toContain(secret);
  });
});

describe('Authority: whose token is this (holder rules on exchange)', () => {
  it('refuses a token presented from another agent\'s process, and forgets a process the agent has not said hello from lately', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-holder-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const ids = counterIds();
    // Each process a child of pid 1 (start time = pid), none gone.
    const processes = { lineage: (pid: number) => [{ pid, startTime: pid }, { pid: 1, startTime: 1 }] };
    const a = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
      {
        clock,
        ids,
        audit: { append: async () => undefined },
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations: await RevocationStore.open(join(dir, 'r.jsonl'), clock),
        approver: new ScriptedApprover(),
        publicKey: () => publicKey,
        processes,
      },
    );
    const proc = (pid: number) => ({ pid, startTime: pid, uid: 0 });
    const from = (pid: number) => ({ process: async () => proc(pid) });
    const owner = await a.introduce({ protocol: 'writ/1', agent: { name: 'owner', kind: 'k' } }, proc(10));
    const other = await a.introduce({ protocol: 'writ/1', agent: { name: 'other', kind: 'k' } }, proc(20));
    const r = await a.requestTask({ agentId: owner.agentId, process: proc(10) }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const theirs = await a.requestTask({ agentId: other.agentId, process: proc(20) }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(await codeOf(a.exchange(r.token.token, {}, from(20)))).toBe('WRIT_TOKEN_NOT_YOURS');
    expect(await codeOf(a.exchange(r.token.token, {}, from(10)))).toBe('resolved');
    // The other agent resumes from four more processes: it is remembered in the last four, so no longer in 20.
    for (const pid of [21, 22, 23, 24]) await a.introduce({ protocol: 'writ/1', agent: { name: 'other', kind: 'k' }, session: theirs.session! }, proc(pid));
    expect(await codeOf(a.exchange(r.token.token, {}, from(24)))).toBe('WRIT_TOKEN_NOT_YOURS');
    expect(await codeOf(a.exchange(r.token.token, {}, from(20)))).toBe('resolved');
    // A process both said hello from counts as both: the owner's token may be held there.
    await a.introduce({ protocol: 'writ/1', agent: { name: 'owner', kind: 'k' }, session: r.session! }, proc(24));
    expect(await codeOf(a.exchange(r.token.token, {}, from(24)))).toBe('resolved');
  });
});

describe('Authority: a blocked sub-agent identity at exchange', () => {
  /** A broker run with oversight on this folder's inventory and revocation list; a second call is its next run. */
  async function run(dir: string, clock: ManualClock, ids: IdSource, hook?: (e: AuditEntry) => Promise<void>) {
    const seen: AuditEntry[] = [];
    const inventory = Inventory.load(join(dir, 'agents.json'), clock);
    let a!: Authority;
    const oversight = new Oversight({
      user: 'u',
      inventory,
      watch: new Watch(DEFAULT_WATCH_CONFIG, clock, ids),
      audit: async (e) => void seen.push(e),
      stopIdentity: (id, why) => a.stopIdentity(id, why),
    });
    a = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
      {
        clock,
        ids,
        audit: {
          append: async (e) => {
            seen.push(e);
            await hook?.(e);
          },
        },
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations: await RevocationStore.open(join(dir, 'r.jsonl'), clock),
        approver: new ScriptedApprover(),
        publicKey: () => publicKey,
        oversight,
      },
    );
    return { a, oversight, inventory, seen };
  }
  const identityOfAgent = (a: Authority, id: string) => a.listAgents().find((v) => v.id === id)?.identity;

  // Found by review: the audience and depth refusals came before the scope list was checked, and were recorded with
  // it as sent: any agent could loop refused exchanges writing records of thousands of scopes each.
  it('checks the scope list before any refusal that goes on record with it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-exchange-junk-'));
    const { a, seen } = await run(dir, new ManualClock(Date.UTC(2026, 10, 29, 12)), counterIds());
    const p = await a.introduce({ protocol: 'writ/1', agent: { name: 'p', kind: 'k' } });
    const pr = await a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 600 });
    seen.length = 0;
    const junk = ['\u001b[2J\u202eforged', ...Array.from({ length: 5000 }, (_, i) => `x${i}`)];
    expect(await codeOf(a.exchange(pr.token.token, { audience: 'https://other', scopes: junk }))).toBe('WRIT_BAD_REQUEST');
    expect(await codeOf(a.exchange(pr.token.token, { audience: 'https://other', scopes: ['not a scope'] }))).toBe('WRIT_SCOPE_INVALID');
    expect(seen).toEqual([]);
    // A list that parses is refused for the audience, on record with it.
    expect(await codeOf(a.exchange(pr.token.token, { audience: 'https://other', scopes: ['repo:read:a'] }))).toBe('WRIT_AUDIENCE_MISMATCH');
    expect(seen.map((e) => [e.event, e.code, e.scopes])).toEqual([['task.denied', 'WRIT_AUDIENCE_MISMATCH', ['repo:read:a']]]);
  });

  // Found by review: blocking revoked only agents of that identity, not a sub-agent this run made from an earlier
  // run's token of it, so no revocation reached verifiers for it.
  it('blocking an identity after a restart revokes the sub-agents this run made from its earlier tokens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-blocked-inherited-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const first = await run(dir, clock, counterIds());
    const p = await first.a.introduce({ protocol: 'writ/1', agent: { name: 'p', kind: 'k' } });
    const pr = await first.a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const parentIdentity = identityOfAgent(first.a, p.agentId)!;
    await first.inventory.close();
    const second = await run(dir, clock, counterIds('r2_'));
    const late = await second.a.exchange(pr.token.token, { actorName: 'late' });
    const lateId = (await second.a.check(late.token)).client_id;
    const events: RevocationEvent[] = [];
    second.a.onRevocation((e) => void events.push(e));
    await second.oversight.block(parentIdentity, 'bad', 'ipc');
    expect(await codeOf(second.a.check(late.token))).toBe('WRIT_TOKEN_REVOKED');
    expect(second.a.isAgentRevoked(lateId)).toBe(true);
    expect(events.flatMap((e) => e.agentIds)).toContain(lateId);
    await second.inventory.close();
  });

  // Found by review: an agent revoked while its task.approved record was written still had the scopes counted as
  // granted (the baseline of the scope-creep finding) and a token.minted record written.
  it('an agent revoked while its approval is recorded has nothing counted as granted and no token minted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-revoked-at-approval-'));
    let onApproved: (() => Promise<void>) | undefined;
    const r = await run(dir, new ManualClock(Date.UTC(2026, 10, 29, 12)), counterIds(), async (e) => {
      if (e.event === 'task.approved' && onApproved) await onApproved();
    });
    const p = await r.a.introduce({ protocol: 'writ/1', agent: { name: 'p', kind: 'k' } });
    onApproved = async () => {
      onApproved = undefined;
      await r.a.revoke({ kind: 'agent', id: p.agentId }, 'developer');
    };
    expect(await codeOf(r.a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:write:zzz'], audience: AUD, ttl: 600 }))).toBe('WRIT_TOKEN_REVOKED');
    expect(r.seen.map((e) => e.event).filter((e) => e !== 'agent.connected')).toEqual(['task.requested', 'task.approved', 'revoked']);
    expect(r.inventory.list().find((e) => e.name === 'p')!.scopesGranted).toEqual([]);
    await r.inventory.close();
  });

  it('is refused (WRIT_AGENT_BLOCKED, recorded as task.denied) once its revoked agent is forgotten, and after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-blocked-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const first = await run(dir, clock, counterIds());
    const { a, oversight } = first;
    const p = await a.introduce({ protocol: 'writ/1', agent: { name: 'parent', kind: 'k' } });
    const pr = await a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    const helperId = (await a.check((await a.exchange(pr.token.token, { actorName: 'helper' })).token)).client_id;
    const parentIdentity = identityOfAgent(a, p.agentId)!;
    const helper = identityOfAgent(a, helperId)!;
    expect(helper).toBe(identityOf('u', 'helper', 'sub-agent', parentIdentity));
    await oversight.block(helper, 'bad helper', 'ipc');
    // Blocking revoked the live helper agent; asked for again it is refused as blocked, as after a sweep or restart.
    expect(await codeOf(a.exchange(pr.token.token, { actorName: 'helper' }))).toBe('WRIT_AGENT_BLOCKED');

    // Its tokens expire, agents come and go, and a sweep forgets the revoked helper: the one made again is blocked.
    clock.advance(120_000);
    for (let i = 0; i < 300; i++) await a.disconnected((await a.introduce({ protocol: 'writ/1', agent: { name: `n${i}`, kind: 'k' } })).agentId);
    expect(identityOfAgent(a, helperId)).toBeUndefined();
    const fresh = await a.mint({ agentId: p.agentId }, { grantId: pr.grant.id, ttl: 600 });
    first.seen.length = 0;
    expect(await codeOf(a.exchange(fresh.token, { actorName: 'helper' }))).toBe('WRIT_AGENT_BLOCKED');
    const again = a.listAgents().find((v) => v.name === 'helper' && v.id !== helperId)!;
    expect({ identity: again.identity, revoked: again.revoked, grants: again.grants }).toEqual({ identity: helper, revoked: false, grants: 0 });
    expect(first.seen.map((e) => ({ event: e.event, agent: e.agent?.id, code: e.code, outcome: e.outcome, task: e.task?.id, detail: e.detail }))).toEqual([
      {
        event: 'task.denied',
        agent: again.id,
        code: 'WRIT_AGENT_BLOCKED',
        outcome: 'failure',
        task: pr.grant.taskId,
        detail: { via: 'exchange', subjectJti: fresh.jti, parentGrantId: pr.grant.id },
      },
    ]);
    // Another sub-agent name of the same parent is another identity, not blocked.
    expect(await codeOf(a.exchange(fresh.token, { actorName: 'other' }))).toBe('resolved');
    await first.inventory.close();

    // The broker restarts: the parent's token names an agent the new run does not hold, and its own identity.
    const second = await run(dir, clock, counterIds('r2_'));
    expect(second.a.listAgents()).toEqual([]);
    expect(await codeOf(second.a.exchange(fresh.token, { actorName: 'helper' }))).toBe('WRIT_AGENT_BLOCKED');
    expect(second.seen.filter((e) => e.event === 'task.denied').map((e) => e.code)).toEqual(['WRIT_AGENT_BLOCKED']);
    const other = await second.a.exchange(fresh.token, { actorName: 'other' });
    expect(identityOfAgent(second.a, (await second.a.check(other.token)).client_id)).toBe(identityOf('u', 'other', 'sub-agent', parentIdentity));
    await second.inventory.close();
  });

  it('every exchange refusal of a token that verified is on record as task.denied with its code: a blocked (so revoked) sub-agent, a revoked one, audience, depth, scopes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-blocked-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const { a, oversight, inventory, seen } = await run(dir, clock, counterIds());
    const p = await a.introduce({ protocol: 'writ/1', agent: { name: 'parent', kind: 'k' } });
    const pr = await a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 600 });
    const h = await a.exchange(pr.token.token, { actorName: 'helper' });
    const o = await a.exchange(pr.token.token, { actorName: 'other' });
    const helperId = (await a.check(h.token)).client_id;
    const otherId = (await a.check(o.token)).client_id;
    await oversight.block(identityOfAgent(a, helperId)!, 'x', 'ipc');
    await a.revoke({ kind: 'agent', id: otherId }, 'developer');
    // A chain as deep as allowed: its token may not be exchanged again.
    let deep = pr.token.token;
    for (let i = 0; i < DEFAULT_AUTHORITY_CONFIG.maxDelegationDepth; i++) deep = (await a.exchange(deep, { actorName: `d${i}` })).token;
    const deepClaims = await a.check(deep);
    seen.length = 0;
    const codes = [
      await codeOf(a.exchange(pr.token.token, { actorName: 'helper' })),
      await codeOf(a.exchange(pr.token.token, { actorName: 'other' })),
      await codeOf(a.exchange(pr.token.token, { actorName: 'x', audience: 'https://elsewhere.example' })),
      await codeOf(a.exchange(deep, { actorName: 'deeper' })),
      await codeOf(a.exchange(pr.token.token, { actorName: 'x', scopes: ['repo:write:a'] })),
    ];
    expect(codes).toEqual(['WRIT_AGENT_BLOCKED', 'WRIT_TOKEN_REVOKED', 'WRIT_AUDIENCE_MISMATCH', 'WRIT_DEPTH_EXCEEDED', 'WRIT_SCOPE_NOT_COVERED']);
    const on = (subjectJti: string, parentGrantId: string, more: Record<string, unknown> = {}) => ({ via: 'exchange', subjectJti, parentGrantId, ...more });
    expect(seen.map((e) => ({ event: e.event, agent: e.agent?.id, code: e.code, outcome: e.outcome, task: e.task?.id, scopes: e.scopes, detail: e.detail }))).toEqual([
      { event: 'task.denied', agent: helperId, code: 'WRIT_AGENT_BLOCKED', outcome: 'failure', task: pr.grant.taskId, scopes: ['repo:read:a'], detail: on(pr.token.jti, pr.grant.id) },
      { event: 'task.denied', agent: otherId, code: 'WRIT_TOKEN_REVOKED', outcome: 'failure', task: pr.grant.taskId, scopes: ['repo:read:a'], detail: on(pr.token.jti, pr.grant.id) },
      { event: 'task.denied', agent: p.agentId, code: 'WRIT_AUDIENCE_MISMATCH', outcome: 'failure', task: pr.grant.taskId, scopes: ['repo:read:a'], detail: on(pr.token.jti, pr.grant.id, { actorName: 'x' }) },
      { event: 'task.denied', agent: deepClaims.client_id, code: 'WRIT_DEPTH_EXCEEDED', outcome: 'failure', task: pr.grant.taskId, scopes: ['repo:read:a'], detail: on(deepClaims.jti, deepClaims.grant_id, { actorName: 'deeper' }) },
      { event: 'task.denied', agent: p.agentId, code: 'WRIT_SCOPE_NOT_COVERED', outcome: 'failure', task: pr.grant.taskId, scopes: ['repo:write:a'], detail: on(pr.token.jti, pr.grant.id, { actorName: 'x' }) },
    ]);
    // None of them made a grant or a token.
    expect(seen.filter((e) => e.event === 'token.exchanged')).toEqual([]);
    await inventory.close();
  });

  it('a token naming a blocked identity (its agent\'s or one above it) is refused, also of a run before the block', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-blocked-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const claimsOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString('utf8'));
    const first = await run(dir, clock, counterIds());
    const p = await first.a.introduce({ protocol: 'writ/1', agent: { name: 'parent', kind: 'k' } });
    const pr = await first.a.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const h = await first.a.exchange(pr.token.token, { actorName: 'helper' });
    const g = await first.a.exchange(h.token, { actorName: 'grand' });
    // A sub-agent with its own session, asking for what its parent holds (the request path's mint).
    const s = await first.a.introduce({ protocol: 'writ/1', agent: { name: 'child', kind: 'k' }, parentSession: pr.session! });
    const sr = await first.a.requestTask({ agentId: s.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const X = identityOfAgent(first.a, p.agentId)!;
    const C = identityOfAgent(first.a, claimsOf(h.token).client_id)!;
    const G = identityOfAgent(first.a, claimsOf(g.token).client_id)!;
    const S = identityOfAgent(first.a, s.agentId)!;
    const named = (t: string) => [claimsOf(t).agent_identity, claimsOf(t).parent_identities];
    expect([pr.token.token, h.token, g.token, sr.token.token].map(named)).toEqual([[X, undefined], [C, [X]], [G, [C, X]], [S, [X]]]);
    await first.inventory.close();

    // The next run holds none of these agents: blocking revokes nothing, the tokens name what it blocked.
    clock.advance(60_000);
    const second = await run(dir, clock, counterIds('r2_'));
    // A sub-agent exchanged now from a token of the first run names the identities that token named.
    const k = await second.a.exchange(h.token, { actorName: 'late' });
    const K = identityOf('u', 'late', 'sub-agent', C);
    expect(named(k.token)).toEqual([K, [C, X]]);
    await second.oversight.block(X, 'bad parent', 'ipc');
    second.seen.length = 0;
    const codes = async () => Promise.all([pr.token.token, h.token, g.token, sr.token.token, k.token].map((t) => codeOf(second.a.check(t))));
    // k's agent is this run's: the block revoked it (verifiers hear that), and revoked it stays.
    expect(await codes()).toEqual([...Array(4).fill('WRIT_AGENT_BLOCKED'), 'WRIT_TOKEN_REVOKED']);
    expect(await second.a.introspect(g.token)).toEqual({ active: false });
    expect(await codeOf(second.a.exchange(g.token, { actorName: 'deeper' }))).toBe('WRIT_AGENT_BLOCKED');
    // RFC 7009 revocation still takes a blocked token (ignore: it is not refused there).
    expect(await codeOf(second.a.check(pr.token.token, undefined, undefined, 'ignore'))).toBe('resolved');
    // (k's revoked token, checked above, is the watch's bad-token finding: first.)
    expect(second.seen.map((e) => e.event === 'finding' && (e.detail as { kind?: string }).kind)).toEqual(['bad-token', false, false]);
    expect(second.seen.filter((e) => e.event !== 'finding').map((e) => ({ event: e.event, agent: e.agent?.id, code: e.code, outcome: e.outcome, task: e.task?.id, jti: e.jti, detail: e.detail }))).toEqual([
      { event: 'token.introspected', agent: undefined, code: 'WRIT_AGENT_BLOCKED', outcome: 'failure', task: undefined, jti: undefined, detail: undefined },
      {
        event: 'task.denied',
        agent: undefined,
        code: 'WRIT_AGENT_BLOCKED',
        outcome: 'failure',
        task: pr.grant.taskId,
        jti: undefined,
        detail: { via: 'exchange', subjectJti: g.jti, parentGrantId: claimsOf(g.token).grant_id, blockedIdentity: X },
      },
    ]);
    // No agent of the blocked identity was made for the refused exchange.
    expect(second.a.listAgents().map((v) => v.name)).toEqual(['late']);
    // A block of the sub-agent's own identity alone refuses its tokens, not its parent's; unblocking gives them back.
    await second.oversight.unblock(X, 'ipc');
    await second.oversight.block(C, 'bad helper', 'ipc');
    expect(await codes()).toEqual(['resolved', 'WRIT_AGENT_BLOCKED', 'WRIT_AGENT_BLOCKED', 'resolved', 'WRIT_TOKEN_REVOKED']);
    await second.oversight.unblock(C, 'ipc');
    expect(await codes()).toEqual([...Array(4).fill('resolved'), 'WRIT_TOKEN_REVOKED']);
    await second.inventory.close();
  });
});

describe('Authority: a task revoked before its grant is made', () => {
  /** An authority whose approvals wait for `decide`, and whose records of the event `hold` names wait while it is set. */
  async function waiting() {
    const dir = mkdtempSync(join(tmpdir(), 'writ-pending-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const ids = counterIds();
    const seen: AuditEntry[] = [];
    const t = {
      seen,
      signals: [] as AbortSignal[],
      decide: [] as ((mode: 'task' | 'session') => void)[],
      hold: undefined as { event: AuditEntry['event']; until: Promise<void> } | undefined,
    };
    const approver: Approver = {
      kind: 'ipc',
      ask: (r, signal) => {
        t.signals.push(signal);
        return new Promise((res) => t.decide.push((mode) => res({ requestId: r.requestId, decision: 'approve', mode })));
      },
    };
    const a = new Authority({ ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' }, {
      clock,
      ids,
      audit: {
        append: async (e) => {
          seen.push(e);
          if (e.event === t.hold?.event) await t.hold.until;
        },
      },
      minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
      revocations: await RevocationStore.open(join(dir, 'r.jsonl'), clock),
      approver,
      publicKey: () => publicKey,
    });
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'x', kind: 'k' } });
    const taskOf = (n: number) => seen.filter((e) => e.event === 'task.requested')[n]!.task!.id;
    const settle = () => new Promise((r) => setTimeout(r, 5));
    return { a, t, agentId, taskOf, settle };
  }
  const denials = (seen: AuditEntry[]) => seen.filter((e) => e.event === 'task.denied').map((e) => ({ task: e.task?.id, code: e.code }));
  const ask = { task: 'deploy', scopes: ['repo:write:a'], audience: AUD };

  /** A sub-agent's request (task 1, after its parent's approved task 0) held while its `task.requested` record is written. */
  async function childAskingWhileRecorded() {
    const w = await waiting();
    const { a, t, agentId, settle } = w;
    const parent = a.requestTask({ agentId }, { ...ask, scopes: ['repo:write:*'] });
    await settle();
    t.decide[0]!('task');
    const child = await a.introduce({ protocol: 'writ/1', agent: { name: 'child', kind: 'k' }, parentSession: (await parent).session! });
    let release!: () => void;
    t.hold = { event: 'task.requested', until: new Promise((r) => (release = r)) };
    const asking = a.requestTask({ agentId: child.agentId }, ask);
    await settle();
    t.hold = undefined;
    return { ...w, child, asking, release };
  }

  it('while its prompt waits: the wait ends WRIT_TOKEN_REVOKED (as for a revoked agent), no grant; asked again it prompts afresh', async () => {
    const { a, t, agentId, taskOf, settle } = await waiting();
    const asking = codeOf(a.requestTask({ agentId }, ask)); // its refusal is handled as soon as it comes
    await settle();
    expect(await a.revoke({ kind: 'task', id: taskOf(0) }, 'developer')).toEqual({ revokedTokens: 0, revokedGrants: 0, revokedAgents: 0 });
    expect(await asking).toBe('WRIT_TOKEN_REVOKED');
    expect(t.signals[0]!.aborted).toBe(true);
    expect(denials(t.seen)).toEqual([{ task: taskOf(0), code: 'WRIT_TOKEN_REVOKED' }]);
    expect(a.listGrants()).toEqual([]);
    // The same task asked again is a new request: a prompt, a new grant and a live token.
    const again = a.requestTask({ agentId }, ask);
    await settle();
    t.decide[1]!('task');
    const r = await again;
    expect({ reused: r.reused, prompts: t.decide.length, code: await codeOf(a.check(r.token.token)) }).toEqual({ reused: false, prompts: 2, code: 'resolved' });
  });

  it('an approval landing with the revocation makes no grant: refused WRIT_TOKEN_REVOKED, nothing to reuse', async () => {
    const { a, t, agentId, taskOf, settle } = await waiting();
    const asking = a.requestTask({ agentId }, ask);
    await settle();
    // The developer approves, and the task is revoked before the approval is acted on.
    t.decide[0]!('session');
    const revoking = a.revoke({ kind: 'task', id: taskOf(0) }, 'developer');
    expect(await codeOf(asking)).toBe('WRIT_TOKEN_REVOKED');
    await revoking;
    expect(denials(t.seen)).toEqual([{ task: taskOf(0), code: 'WRIT_TOKEN_REVOKED' }]);
    expect(t.seen.filter((e) => e.event === 'task.approved' || e.event === 'token.minted')).toEqual([]);
    expect(a.listGrants()).toEqual([]);
  });

  for (const target of ['agent', 'all'] as const) {
    it(`an approval landing with the revocation of its agent (${target}) makes no grant: refused WRIT_TOKEN_REVOKED, nothing approved, minted or listed`, async () => {
      const { a, t, agentId, taskOf, settle } = await waiting();
      const asking = a.requestTask({ agentId }, ask);
      await settle();
      t.decide[0]!('session');
      const revoking = a.revoke(target === 'agent' ? { kind: 'agent', id: agentId } : { kind: 'all' }, 'developer');
      expect(await codeOf(asking)).toBe('WRIT_TOKEN_REVOKED');
      await revoking;
      expect(denials(t.seen)).toEqual([{ task: taskOf(0), code: 'WRIT_TOKEN_REVOKED' }]);
      expect(t.seen.filter((e) => e.event === 'task.approved' || e.event === 'token.minted')).toEqual([]);
      expect(a.listGrants()).toEqual([]);
    });
  }

  it("a sub-agent's request whose parent is revoked while it is being recorded is refused on record, no grant", async () => {
    const { a, t, agentId, taskOf, child, asking, release } = await childAskingWhileRecorded();
    await a.revoke({ kind: 'agent', id: agentId }, 'developer');
    release();
    expect(await codeOf(asking)).toBe('WRIT_TOKEN_REVOKED');
    expect(denials(t.seen)).toEqual([{ task: taskOf(1), code: 'WRIT_TOKEN_REVOKED' }]);
    expect(t.seen.filter((e) => e.event === 'task.approved').length).toBe(1);
    expect(a.listGrants(child.agentId)).toEqual([]);
  });

  for (const target of ['task', 'agent'] as const) {
    it(`a request whose ${target} is revoked while it is being recorded never prompts the developer`, async () => {
      const { a, t, agentId, taskOf, settle } = await waiting();
      let release!: () => void;
      t.hold = { event: 'task.requested', until: new Promise((r) => (release = r)) };
      const asking = codeOf(a.requestTask({ agentId }, ask)); // its refusal is handled as soon as it comes
      await settle();
      t.hold = undefined;
      // Nothing is pending yet: the revocation has no wait to end.
      await a.revoke(target === 'task' ? { kind: 'task', id: taskOf(0) } : { kind: 'agent', id: agentId }, 'developer');
      release();
      await settle();
      const prompts = t.signals.length;
      t.decide[0]?.('task');
      expect({ code: await asking, prompts }).toEqual({ code: 'WRIT_TOKEN_REVOKED', prompts: 0 });
      expect(denials(t.seen)).toEqual([{ task: taskOf(0), code: 'WRIT_TOKEN_REVOKED' }]);
      expect(a.counts().pendingApprovals).toBe(0);
      expect(a.listGrants()).toEqual([]);
    });
  }

  it('a token is not handed out when its task is revoked while it is being minted, on a grant another task made', async () => {
    const { a, t, agentId, taskOf, settle } = await waiting();
    const first = a.requestTask({ agentId }, ask);
    await settle();
    t.decide[0]!('session');
    const grant = (await first).grant;
    // A second task reuses the session grant; it is revoked while its token's record is written.
    let release!: () => void;
    t.hold = { event: 'token.minted', until: new Promise((r) => (release = r)) };
    const second = a.requestTask({ agentId }, { ...ask, task: 'other' });
    await settle();
    await a.revoke({ kind: 'task', id: taskOf(1) }, 'developer');
    release();
    expect(await codeOf(second)).toBe('WRIT_TOKEN_REVOKED');
    // The grant of the first task is not the revoked task's: it still mints, for its own task.
    t.hold = undefined;
    const more = await a.mint({ agentId }, { grantId: grant.id });
    expect(await codeOf(a.check(more.token))).toBe('resolved');
  });

  it("a sub-agent's request revoked while it is being recorded gets no grant from its parent's", async () => {
    const { a, t, taskOf, child, asking, release } = await childAskingWhileRecorded();
    await a.revoke({ kind: 'task', id: taskOf(1) }, 'developer');
    release();
    expect(await codeOf(asking)).toBe('WRIT_TOKEN_REVOKED');
    expect(denials(t.seen)).toEqual([{ task: taskOf(1), code: 'WRIT_TOKEN_REVOKED' }]);
    expect(a.listGrants(child.agentId)).toEqual([]);
  });
});

describe('Authority: memory', () => {
  it('forgets grants that have expired with all their tokens, and keeps live ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-sweep-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const ids = counterIds();
    const log = await AuditLog.open({ path: join(dir, 'audit.jsonl'), session: 's', user: 'u', clock, signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) }, checkpointIntervalMs: 0, fsync: false });
    const approver = new ScriptedApprover();
    const a = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
      { clock, ids, audit: { append: (e) => log.append(e) }, minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids), revocations: await RevocationStore.open(join(dir, 'r.jsonl'), clock), approver, publicKey: () => publicKey },
    );
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'x', kind: 'k' } });
    const first = await a.requestTask({ agentId }, { task: 'old', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    // 300 exchanges later, each for a sub-agent of its own (so each a grant of its own), past the first grant's
    // and all tokens' expiry…
    clock.advance((DEFAULT_AUTHORITY_CONFIG.taskGrantSeconds + 61) * 1000);
    const live = await a.requestTask({ agentId }, { task: 'new', scopes: ['repo:read:b'], audience: AUD, ttl: 3600 });
    for (let i = 0; i < 300; i++) await a.exchange(live.token.token, { actorName: `sub${i}` });
    // The first grant and its token are past expiry: swept. The live grant and the 300 exchange grants
    // (alive until the subject token expires) are kept: 301 held, not 302.
    expect(a.retainedGrants()).toBe(301);
    // Exchanging again for those sub-agents reuses their grants: nothing more is held but the tokens.
    for (let i = 0; i < 300; i++) await a.exchange(live.token.token, { actorName: `sub${i % 3}` });
    expect(a.retainedGrants()).toBe(301);
    expect(a.retainedTokens()).toBe(601);
    expect(a.listGrants(agentId).map((g) => g.id)).toEqual([live.grant.id]);
    expect(await a.introspect(first.token.token)).toEqual({ active: false });
    await log.close();
  });
});

describe('Authority: bounded memory in a long session', () => {
  /** An authority on a manual clock whose audit sink keeps only the records these tests read. */
  async function longSession() {
    const dir = mkdtempSync(join(tmpdir(), 'writ-long-'));
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
    const ids = counterIds();
    const kept: AuditEntry[] = [];
    const approver = new ScriptedApprover();
    const revocations = await RevocationStore.open(join(dir, 'r.jsonl'), clock);
    const a = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
      {
        clock,
        ids,
        audit: { append: async (e) => void (e.event === 'revoked' || e.event === 'token.used' ? kept.push(e) : undefined) },
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations,
        approver,
        publicKey: () => publicKey,
      },
    );
    const hello = (name: string, extra: { session?: string; parentSession?: string } = {}) =>
      a.introduce({ protocol: 'writ/1', agent: { name, kind: 'script' }, ...extra });
    return { a, clock, approver, kept, revocations, hello };
  }

  it('a session grant minting 100,000 tokens over hours holds only about its live ones, and revoking it revokes exactly those', async () => {
    const { a, clock, approver, kept, revocations, hello } = await longSession();
    approver.answer = () => ({ decision: 'approve', mode: 'session' });
    const { agentId } = await hello('steady');
    const first = await a.requestTask({ agentId }, { task: 'work', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    expect(first.grant.mode).toBe('session');
    const minted: { jti: string; exp: number }[] = [{ jti: first.token.jti, exp: first.token.expiresAt }];
    let most = 0;
    // One token every 100 ms, each for 60 s: 100,000 tokens over 2.8 simulated hours, about 600 live at a time.
    for (let i = 1; i < 100_000; i++) {
      clock.advance(100);
      const t = await a.mint({ agentId }, { grantId: first.grant.id });
      minted.push({ jti: t.jti, exp: t.expiresAt });
      most = Math.max(most, a.retainedTokens());
    }
    const now = Math.floor(clock.now() / 1000);
    const live = minted.filter((t) => t.exp > now);
    expect(live.length).toBeGreaterThanOrEqual(590);
    expect(live.length).toBeLessThanOrEqual(610);
    // Each let go the second it expires: never more than the live tokens, not the 100,000 minted.
    expect(most).toBeLessThanOrEqual(610);
    expect(a.retainedTokens()).toBe(live.length);
    expect(a.listAgents()[0]).toMatchObject({ id: agentId, grants: 1, liveTokens: live.length });

    // A use report of a live token still names its grant and agent, found by jti alone, or by jti and the exp
    // the verifier read (one lookup); an exp that is not the token's finds nothing, and names no one.
    const used = live[100]!;
    await a.recordUse({ jti: used.jti, allowed: true }, {});
    expect(kept.at(-1)).toMatchObject({ event: 'token.used', jti: used.jti, grantId: first.grant.id, agent: { id: agentId } });
    await a.recordUse({ jti: used.jti, exp: used.exp, allowed: true }, {});
    expect(kept.at(-1)).toMatchObject({ event: 'token.used', jti: used.jti, grantId: first.grant.id, agent: { id: agentId } });
    await a.recordUse({ jti: used.jti, exp: used.exp + 1, allowed: true }, {});
    expect(kept.at(-1)).toMatchObject({ event: 'token.used', jti: used.jti });
    expect(kept.at(-1)).not.toHaveProperty('grantId');
    expect(kept.at(-1)).not.toHaveProperty('agent');

    // Revoking one live token by jti finds its grant (the agent in the record) and its exp (how long it is listed).
    const one = live[0]!;
    expect(await a.revoke({ kind: 'token', jti: one.jti }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(kept.at(-1)).toMatchObject({ event: 'revoked', jti: one.jti, agent: { id: agentId } });
    expect(revocations.entries().find((e) => e.kind === 'token' && e.id === one.jti)?.until).toBe(one.exp);

    // Revoking the grant counts exactly the other live tokens (none expired, none missing) and pushes the grant to
    // verifiers, not its tokens: each carries the grant's id.
    const pushed: RevocationEvent[] = [];
    a.onRevocation((e) => void pushed.push(e));
    const r = await a.revoke({ kind: 'grant', id: first.grant.id }, 'test');
    expect(r).toEqual({ revokedTokens: live.length - 1, revokedGrants: 1, revokedAgents: 0 });
    expect(kept.at(-1)).toMatchObject({ event: 'revoked', grantId: first.grant.id, detail: { tokens: live.length - 1 } });
    expect(pushed).toMatchObject([{ target: { kind: 'grant', id: first.grant.id }, jtis: [], grantIds: [first.grant.id] }]);
    expect(a.listAgents()[0]).toMatchObject({ id: agentId, liveTokens: 0 });
    expect(await codeOf(a.mint({ agentId }, { grantId: first.grant.id }))).toBe('WRIT_TOKEN_REVOKED');
    // Its tokens (and the processes they were bound to) are kept until they expire, refused meanwhile; then
    // nothing of them is held, and the grant is swept with the next sweep.
    expect(a.retainedTokens()).toBe(live.length - 1);
    clock.advance(61_000);
    expect(a.retainedTokens()).toBe(0);
  }, 300_000);

  it('lists a grant\'s live tokens for the editor: newest first, with the scopes each was minted with, capped, expired and revoked ones left out', async () => {
    const { a, clock, approver, hello } = await longSession();
    approver.answer = () => ({ decision: 'approve', mode: 'session' });
    const { agentId } = await hello('lister');
    const first = await a.requestTask({ agentId }, { task: 'work', scopes: ['repo:read:a', 'repo:write:a'], audience: AUD, ttl: 60 });
    const grantId = first.grant.id;
    const minted = [first.token];
    // Every other token with fewer scopes than the grant's; 20 s apart, each for 60 s.
    for (let i = 0; i < 4; i++) {
      clock.advance(20_000);
      minted.push(await a.mint({ agentId }, { grantId, ...(i % 2 === 1 ? { scopes: ['repo:read:a'] } : {}) }));
    }
    const view = (t: { jti: string; expiresAt: number; scopes: string[] }) => ({ jti: t.jti, expiresAt: t.expiresAt, scopes: t.scopes });
    // Minted at 0, 20, 40, 60, 80 s: at 80 s the first two have expired (exp 60 and 80).
    const listed = a.liveTokens(grantId, 10);
    expect(listed).toEqual({ tokens: minted.slice(2).reverse().map(view), more: 0 });
    expect(listed.tokens.map((t) => t.scopes)).toEqual([['repo:read:a'], ['repo:read:a', 'repo:write:a'], ['repo:read:a']]);
    // Tokens asked with the same narrower scopes hold one array between them, not one each.
    expect(listed.tokens[0]!.scopes).toBe(listed.tokens[2]!.scopes);
    expect(a.liveTokens(grantId, 2)).toEqual({ tokens: minted.slice(3).reverse().map(view), more: 1 });
    expect(a.liveTokens('grt_none', 10)).toEqual({ tokens: [], more: 0 });
    await a.revoke({ kind: 'token', jti: minted[4]!.jti }, 'test');
    expect(a.liveTokens(grantId, 10).tokens.map((t) => t.jti)).toEqual([minted[3]!.jti, minted[2]!.jti]);
    await a.revoke({ kind: 'grant', id: grantId }, 'test');
    expect(a.liveTokens(grantId, 10)).toEqual({ tokens: [], more: 0 });
  });

  it('lists the newest of a grant with more live tokens than it keeps a ring for, and counting drops the expired ones once', async () => {
    const { a, clock, approver, hello } = await longSession();
    approver.answer = () => ({ decision: 'approve', mode: 'session' });
    const { agentId } = await hello('many');
    const first = await a.requestTask({ agentId }, { task: 'work', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    const minted = [first.token];
    // 150 tokens, 0.2 s apart, 60 s each: the first 50 minted in the first 10 s.
    for (let i = 1; i < 150; i++) {
      clock.advance(200);
      minted.push(await a.mint({ agentId }, { grantId: first.grant.id }));
    }
    const listed = a.liveTokens(first.grant.id, 100);
    expect(listed.tokens.map((t) => t.jti)).toEqual(minted.slice(50).reverse().map((t) => t.jti));
    expect(listed.more).toBe(50);
    expect(a.liveTokens(first.grant.id, 1_000).tokens).toHaveLength(RECENT_TOKENS);
    expect(a.retainedTokens()).toBe(150);
    // About 60 s after the 50th token: the first ~50 have expired; the count says so and lets them go.
    clock.advance(60_000 - 99 * 200);
    const live = minted.filter((t) => t.expiresAt > Math.floor(clock.now() / 1000)).length;
    expect(live).toBeGreaterThan(90);
    expect(live).toBeLessThan(100);
    expect(a.listAgents().find((x) => x.id === agentId)?.liveTokens).toBe(live);
    expect(a.retainedTokens()).toBe(live);
    expect(a.liveTokens(first.grant.id, RECENT_TOKENS)).toEqual({ tokens: expect.any(Array), more: 0 });
    expect(a.liveTokens(first.grant.id, RECENT_TOKENS).tokens).toHaveLength(live);
  });

  it('counts a grant\'s live tokens exactly with mixed lifetimes: a short one minted after a long one stops counting when it expires', async () => {
    const { a, clock, approver, hello } = await longSession();
    approver.answer = () => ({ decision: 'approve', mode: 'session' });
    const { agentId } = await hello('mixed');
    const first = await a.requestTask({ agentId }, { task: 'work', scopes: ['repo:read:a'], audience: AUD, ttl: 600 });
    const short = await a.mint({ agentId }, { grantId: first.grant.id, ttl: 10 });
    const long = await a.mint({ agentId }, { grantId: first.grant.id, ttl: 600 });
    expect(a.listAgents()[0]).toMatchObject({ liveTokens: 3 });
    clock.advance(10_000);
    // Before, the short token counted until a sweep, being behind the longer-lived first one.
    expect(a.listAgents()[0]).toMatchObject({ liveTokens: 2 });
    expect(a.liveTokens(first.grant.id, 10).tokens.map((t) => t.jti)).toEqual([long.jti, first.token.jti]);
    expect(a.liveTokens(first.grant.id, 10).tokens.map((t) => t.jti)).not.toContain(short.jti);
    expect(a.retainedTokens()).toBe(2);
  });

  it('10,000 agents that say hello and leave are forgotten; a revoked session stays refused and a held child keeps its parent', async () => {
    const { a, clock, approver, hello } = await longSession();
    // An agent revoked while it held a grant: its session must never become a fresh agent.
    const gone = await hello('revoked');
    const goneTask = await a.requestTask({ agentId: gone.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    await a.revoke({ kind: 'agent', id: gone.agentId }, 'test');
    await a.disconnected(gone.agentId);
    // A parent that leaves while its sub-agent is still connected.
    const parent = await hello('parent');
    const pt = await a.requestTask({ agentId: parent.agentId }, { task: 't', scopes: ['repo:read:*'], audience: AUD });
    const child = await hello('child', { parentSession: pt.session! });
    await a.requestTask({ agentId: child.agentId }, { task: 'sub', scopes: ['repo:read:x'], audience: AUD });
    await a.disconnected(parent.agentId);
    expect(approver.asked).toHaveLength(2);

    // Half an hour on, the revoked agent's token is still unexpired; then 10,000 short-lived agents come and go.
    clock.advance(1800 * 1000);
    for (let i = 0; i < 10_000; i++) {
      const { agentId } = await hello(`run-${i % 50}`);
      await a.disconnected(agentId);
    }
    const held = a.retainedAgents();
    expect(held.agents).toBeLessThanOrEqual(256 + 3);
    expect(a.listAgents().length).toBe(held.agents);
    // Its unexpired token names it in its chain: refused, from the record or from the revocation list.
    expect(await codeOf(a.check(goneTask.token.token))).toBe('WRIT_TOKEN_REVOKED');

    // Past every grant's end (and the revoked one's tokens), another round forgets the revoked agent.
    clock.advance((DEFAULT_AUTHORITY_CONFIG.taskGrantSeconds + DEFAULT_AUTHORITY_CONFIG.maxTtlSeconds) * 1000);
    for (let i = 0; i < 300; i++) await a.disconnected((await hello(`again-${i}`)).agentId);
    const ids = a.listAgents().map((x) => x.id);
    expect(ids).not.toContain(gone.agentId);
    expect(a.retainedAgents().revokedSessions).toBe(1);
    expect(await codeOf(hello('revoked', { session: goneTask.session! }))).toBe('WRIT_SESSION_INVALID');
    expect(await codeOf(hello('its-child', { parentSession: goneTask.session! }))).toBe('WRIT_SESSION_INVALID');
    // The child is still connected, so its parent is held (chains and cascades name it) though it holds nothing.
    expect(ids).toContain(child.agentId);
    expect(ids).toContain(parent.agentId);
    expect(a.agentTree(parent.agentId)).toEqual([parent.agentId, child.agentId]);

    // Once the child leaves too, both go; the parent's session is then unknown and starts a new agent.
    await a.disconnected(child.agentId);
    for (let i = 0; i < 300; i++) await a.disconnected((await hello(`late-${i}`)).agentId);
    expect(a.listAgents().map((x) => x.id)).not.toContain(parent.agentId);
    expect(a.listAgents().map((x) => x.id)).not.toContain(child.agentId);
    const back = await hello('parent', { session: pt.session! });
    expect(back.resumed).toBe(false);
    expect(back.agentId).not.toBe(parent.agentId);
    expect(a.retainedAgents().revokedSessions).toBe(1);
  }, 300_000);
});
