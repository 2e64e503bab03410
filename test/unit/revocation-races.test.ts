// Revocations that land while a token is being made, and revocations of everything against a wall clock that
// moves: nothing the revocation covers is issued, and minting never waits out a clock step.
import { describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Authority, DEFAULT_AUTHORITY_CONFIG } from '../../broker/core/authority';
import type { Approver } from '../../broker/core/authority';
import { ManualClock } from '../../broker/core/clock';
import type { IdSource } from '../../broker/core/clock';
import { RevocationStore } from '../../broker/core/revocation';
import { TokenMinter } from '../../broker/core/tokens';
import type { ApprovalDecision, ApprovalRequest } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';

const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');

let n = 0;
const ids: IdSource = { id: (p) => `${p}_${++n}`, secret: (p) => `${p}_secret_${++n}` };
const approver: Approver = {
  kind: 'ipc',
  ask: async (r: ApprovalRequest) => ({ decision: 'approve', mode: 'task', requestId: r.requestId }) as ApprovalDecision,
};
const processes = { lineage: (pid: number) => [{ pid, startTime: pid }, { pid: 1, startTime: 1 }] };
const proc = (pid: number) => ({ pid, startTime: pid, uid: 0 });

/** A broker run on `dir` (a second call on the same folder is the broker after a restart). */
async function run(dir: string, clock: ManualClock, slept: number[] = []): Promise<Authority> {
  return new Authority(
    { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
    {
      clock,
      ids,
      audit: { append: async () => undefined },
      minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
      revocations: await RevocationStore.open(join(dir, 'r.jsonl'), clock),
      approver,
      publicKey: () => publicKey,
      processes,
      sleep: async (ms) => {
        slept.push(ms);
        clock.advance(ms);
      },
    },
  );
}

const folder = () => mkdtempSync(join(tmpdir(), 'writ-races-'));
const noon = () => new ManualClock(Date.UTC(2026, 10, 29, 12, 0, 0, 200));

describe('an exchange and a revocation of its subject token landing while it runs', () => {
  it('revoking everything after a restart (the subject\'s agent not in memory): no token comes out', async () => {
    const dir = folder();
    const clock = noon();
    const first = await run(dir, clock);
    const { agentId } = await first.introduce({ protocol: 'writ/1', agent: { name: 'a', kind: 'k' } }, proc(10));
    const r = await first.requestTask({ agentId, process: proc(10) }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    clock.advance(5_000);
    const next = await run(dir, clock);
    // The kernel lookup of the presenter (real I/O in the broker) is when the Stop lands.
    let stopped = false;
    const presenter = {
      process: async () => {
        if (!stopped) {
          stopped = true;
          await next.revoke({ kind: 'all' }, 'test');
        }
        return proc(10);
      },
    };
    expect(await codeOf(next.exchange(r.token.token, { actorName: 'sub' }, presenter))).toBe('WRIT_TOKEN_REVOKED');
    expect(stopped).toBe(true);
  });

  it('revoking the subject token by jti: no token comes out', async () => {
    const clock = noon();
    const a = await run(folder(), clock);
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'a', kind: 'k' } }, proc(10));
    const r = await a.requestTask({ agentId, process: proc(10) }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    let revoked = false;
    const presenter = {
      process: async () => {
        if (!revoked) {
          revoked = true;
          await a.revoke({ kind: 'token', jti: r.token.jti }, 'test');
        }
        return proc(10);
      },
    };
    expect(await codeOf(a.exchange(r.token.token, { actorName: 'sub' }, presenter))).toBe('WRIT_TOKEN_REVOKED');
    expect(revoked).toBe(true);
  });
});

describe('a token revoked by its jti while it is being minted', () => {
  it('is never handed out, and the grant does not count it', async () => {
    const clock = noon();
    let a: Authority | undefined;
    let revokeNext = false;
    let revoked: string | undefined;
    a = new Authority(
      { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
      {
        clock,
        ids,
        // The mint record names the jti before the token leaves (the editor's audit stream shows it): the
        // developer revokes it from there while the record is being written.
        audit: {
          append: async (e) => {
            if (revokeNext && e.event === 'token.minted' && e.jti) {
              revokeNext = false;
              revoked = e.jti;
              await a!.revoke({ kind: 'token', jti: e.jti }, 'test');
            }
          },
        },
        minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
        revocations: await RevocationStore.open(join(folder(), 'r.jsonl'), clock),
        approver: { kind: 'ipc', ask: async (r: ApprovalRequest) => ({ decision: 'approve', mode: 'session', requestId: r.requestId }) as ApprovalDecision },
        publicKey: () => publicKey,
      },
    );
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'a', kind: 'k' } });
    const r = await a.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 600 });
    revokeNext = true;
    expect(await codeOf(a.mint({ agentId }, { grantId: r.grant.id }))).toBe('WRIT_TOKEN_REVOKED');
    expect(revoked).toMatch(/^tok_/);
    // Only the first token is live; the revoked one is neither counted nor listed.
    expect(a.listAgents()[0]).toMatchObject({ id: agentId, liveTokens: 1 });
    expect(a.liveTokens(r.grant.id, 10).tokens.map((t) => t.jti)).toEqual([r.token.jti]);
    // The grant goes on minting.
    expect((await a.mint({ agentId }, { grantId: r.grant.id })).jti).not.toBe(revoked);
  });
});

describe('revoking everything, and a wall clock that moves', () => {
  it('after the clock went back past a Stop, minting is refused with the reason at once, never a wait of the gap', async () => {
    const clock = noon();
    const slept: number[] = [];
    const a = await run(folder(), clock, slept);
    await a.revoke({ kind: 'all' }, 'test');
    clock.advance(5_000);
    clock.set(clock.now() - 3_600_000); // NTP steps the wall clock back an hour
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'after', kind: 'k' } });
    expect(await codeOf(a.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD }))).toBe('WRIT_TOKEN_REVOKED');
    expect(slept).toEqual([]);
    // Once the clock has passed the revocation, the same request is served.
    clock.advance(3_600_000);
    const r = await a.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD });
    expect((await a.introspect(r.token.token)).active).toBe(true);
  });

  it('covers a token issued while the clock was ahead, from the revocation list alone (a restart, a verifier told the entry)', async () => {
    const dir = folder();
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 13, 0, 0, 200)); // an hour ahead
    const a = await run(dir, clock);
    const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'a', kind: 'k' } });
    const r = await a.requestTask({ agentId }, { task: 't', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    clock.set(Date.UTC(2026, 10, 29, 12, 0, 5)); // NTP steps back
    await a.revoke({ kind: 'all' }, 'test');
    clock.set(Date.UTC(2026, 10, 29, 13, 0, 30)); // the token's nbf has come
    expect(await codeOf(a.check(r.token.token))).toBe('WRIT_TOKEN_REVOKED');
    const next = await run(dir, clock);
    expect(await codeOf(next.check(r.token.token))).toBe('WRIT_TOKEN_REVOKED');
  });
});
