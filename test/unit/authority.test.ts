// The decision logic with an injected clock and a scripted approval channel: TTL clamping, narrowing,
// grant reuse and expiry, sub-agent bounds, fail-closed audit, and revocation checked from claims.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authority, DEFAULT_AUTHORITY_CONFIG } from '../../broker/core/authority';
import type { Approver, AuditSink } from '../../broker/core/authority';
import { ManualClock } from '../../broker/core/clock';
import type { IdSource } from '../../broker/core/clock';
import { RevocationStore } from '../../broker/core/revocation';
import { TokenMinter } from '../../broker/core/tokens';
import { AuditLog } from '../../broker/audit/log';
import { WritError } from '../../broker/errors';
import type { ApprovalDecision, ApprovalRequest, AuditEntry } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';

const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');

function counterIds(): IdSource {
  let n = 0;
  return { id: (p) => `${p}_${++n}`, secret: (p) => `${p}_secret_${++n}` };
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
    const ids = counterIds();
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
    authority = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'dev@example.com', ...overrides },
      {
        clock,
        ids,
        audit,
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations: await RevocationStore.open(join(dir, 'revocations.jsonl'), clock),
        approver,
        publicKey: (kid) => (kid === 'k1' ? publicKey : undefined),
      },
    );
  }

  beforeEach(async () => build());
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

  it('limits delegation depth', async () => {
    await log.close();
    await build({ maxDelegationDepth: 1 });
    const p = await hello('p');
    const pr = await authority.requestTask({ agentId: p.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    const c = await hello('c', { parentSession: pr.session! });
    const cr = await authority.requestTask({ agentId: c.agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect(await codeOf(authority.exchange(cr.token.token, {}))).toBe('WRIT_DEPTH_EXCEEDED');
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

  it('tokens expire by the clock, and checks say so with their own code', async () => {
    const { agentId } = await hello();
    const r = await authority.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 60 });
    expect((await authority.check(r.token.token)).jti).toBe(r.token.jti);
    expect(await codeOf(authority.check(r.token.token, 'https://other.example'))).toBe('WRIT_AUDIENCE_MISMATCH');
    clock.advance(66_000);
    expect(await codeOf(authority.check(r.token.token))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await authority.introspect(r.token.token)).toEqual({ active: false });
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
    // 300 exchanges later (one grant each), past the first grant's and all tokens' expiry…
    clock.advance((DEFAULT_AUTHORITY_CONFIG.taskGrantSeconds + 61) * 1000);
    const live = await a.requestTask({ agentId }, { task: 'new', scopes: ['repo:read:b'], audience: AUD, ttl: 3600 });
    for (let i = 0; i < 300; i++) await a.exchange(live.token.token, { actorName: `sub${i % 3}` });
    // The first grant and its token are past expiry: swept. The live grant and the 300 exchange grants
    // (alive until the subject token expires) are kept: 301 held, not 302.
    expect(a.retainedGrants()).toBe(301);
    expect(a.listGrants(agentId).map((g) => g.id)).toEqual([live.grant.id]);
    expect(await a.introspect(first.token.token)).toEqual({ active: false });
    await log.close();
  });
});
