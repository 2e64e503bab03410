// Revocation events stay small however many tokens they cover: a grant, task or agent revocation names its
// grants, task and agents, never its tokens (each carries one of those in its claims), and whatever still does not
// fit one frame goes as several, whose union is the revocation.
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
import type { RevocationEntry } from '../../broker/core/revocation';
import { TokenMinter } from '../../broker/core/tokens';
import { eventOfEntry, firstPage, nextPage, revocationFrame, revocationFrames } from '../../broker/net/rpc';
import { MAX_FRAME_BYTES, parseRevocationEvent } from '../../broker/protocol';
import type { ApprovalDecision, ApprovalRequest, AuditEntry, RevocationEvent } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';

const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');

const approveAll: Approver = {
  kind: 'ipc',
  ask: (r: ApprovalRequest) => Promise.resolve({ decision: 'approve', mode: 'session', requestId: r.requestId } as ApprovalDecision),
};

function counterIds(): IdSource {
  let n = 0;
  return { id: (p) => `${p}_${++n}`, secret: (p) => `${p}_secret_${++n}` };
}

/** An authority on a manual clock; it keeps the `revoked` audit records, the events and the list's entries. */
async function broker() {
  const dir = mkdtempSync(join(tmpdir(), 'writ-frames-'));
  const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
  const ids = counterIds();
  const revoked: AuditEntry[] = [];
  const revocations = await RevocationStore.open(join(dir, 'r.jsonl'), clock);
  const a = new Authority(
    { ...DEFAULT_AUTHORITY_CONFIG, issuer: 'urn:writ:test', user: 'u' },
    {
      clock,
      ids,
      audit: { append: async (e) => void (e.event === 'revoked' ? revoked.push(e) : undefined) },
      minter: new TokenMinter('urn:writ:test', () => ({ kid: 'k1', privateKey }), clock, ids),
      revocations,
      approver: approveAll,
      publicKey: () => publicKey,
    },
  );
  const events: RevocationEvent[] = [];
  a.onRevocation((e) => void events.push(e));
  const entries: RevocationEntry[] = [];
  revocations.onRecord((e) => void entries.push(e));
  const { agentId } = await a.introduce({ protocol: 'writ/1', agent: { name: 'busy', kind: 'script' } });
  return { a, clock, revoked, events, entries, agentId };
}

const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string; grant_id: string; iat: number; parent_grant_ids?: string[] };
const paramsOf = (frame: Buffer) => (JSON.parse(frame.toString()) as { params: unknown }).params;

describe('revocation events', () => {
  it('a grant with 50,000 live tokens (and a sub-agent exchanging from it) is one frame of a few hundred bytes naming its grants', async () => {
    const { a, clock, revoked, events, entries, agentId } = await broker();
    const first = await a.requestTask({ agentId }, { task: 'bulk', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const tokens = [first.token.token];
    for (let i = 1; i < 50_000; i++) tokens.push((await a.mint({ agentId }, { grantId: first.grant.id })).token);
    const exchanged = [(await a.exchange(tokens[0]!, { actorName: 'sub' })).token, (await a.exchange(tokens[1]!, { actorName: 'sub' })).token];
    const childGrant = claimsOf(exchanged[0]!).grant_id;
    expect(claimsOf(exchanged[1]!).grant_id).toBe(childGrant);

    expect(await a.revoke({ kind: 'grant', id: first.grant.id }, 'test')).toEqual({ revokedTokens: 50_002, revokedGrants: 2, revokedAgents: 0 });
    const now = Math.floor(clock.now() / 1000);
    const event = { target: { kind: 'grant', id: first.grant.id }, at: now, jtis: [], agentIds: [], taskIds: [], grantIds: [first.grant.id, childGrant] };
    expect(events).toEqual([event]);
    // The audit record still counts every token ended.
    expect(revoked.at(-1)).toMatchObject({ event: 'revoked', grantId: first.grant.id, detail: { tokens: 50_002, grants: 2, agents: 0 } });

    // Subscribers that do not acknowledge: one frame, exactly the event, far under any frame limit.
    const frames = revocationFrames(events[0]!);
    expect(frames).toHaveLength(1);
    expect(frames[0]!.byteLength).toBeLessThan(300);
    expect(JSON.parse(frames[0]!.toString())).toEqual({ jsonrpc: '2.0', method: 'revocation', params: event });
    expect(parseRevocationEvent(paramsOf(frames[0]!))).toEqual(event);
    // Acknowledging subscribers: one event per entry of the revocation list, the two grants, each as small.
    expect(entries.map((e) => [e.kind, e.id])).toEqual([['grant', first.grant.id], ['grant', childGrant]]);
    for (const e of entries) expect(revocationFrame(eventOfEntry(e)).byteLength).toBeLessThan(300);

    // Fail closed: every token the grant ended carries one of the event's grantIds as grant_id, the check even the
    // first verifier made (it knew neither parent_grant_ids nor task_id); the broker refuses them too.
    const named = new Set(event.grantIds);
    expect([...tokens, ...exchanged].filter((t) => !named.has(claimsOf(t).grant_id))).toEqual([]);
    for (const t of [tokens[0]!, tokens[25_000]!, tokens[49_999]!, ...exchanged]) expect(await codeOf(a.check(t))).toBe('WRIT_TOKEN_REVOKED');
  }, 300_000);

  it('a task and an agent name no jtis either; a token names its own', async () => {
    const { a, events, agentId } = await broker();
    const r = await a.requestTask({ agentId }, { task: 'few', scopes: ['repo:read:a'], audience: AUD });
    const more = await a.mint({ agentId }, { grantId: r.grant.id });
    const other = await a.requestTask({ agentId }, { task: 'other', scopes: ['repo:read:b'], audience: AUD });

    expect(await a.revoke({ kind: 'token', jti: more.jti }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(await a.revoke({ kind: 'task', id: r.grant.taskId }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 1, revokedAgents: 0 });
    expect(await a.revoke({ kind: 'agent', id: agentId }, 'test')).toEqual({ revokedTokens: 1, revokedGrants: 1, revokedAgents: 1 });
    expect(events.map(({ at: _at, ...e }) => e)).toEqual([
      { target: { kind: 'token', jti: more.jti }, jtis: [more.jti], agentIds: [], taskIds: [], grantIds: [] },
      { target: { kind: 'task', id: r.grant.taskId }, jtis: [], agentIds: [], taskIds: [r.grant.taskId], grantIds: [r.grant.id] },
      { target: { kind: 'agent', id: agentId }, jtis: [], agentIds: [agentId], taskIds: [], grantIds: [other.grant.id] },
    ]);
  });

  it('revoking everything names no token, however many this second holds: its `at` is the next second, the list entry\'s', async () => {
    const { a, clock, events, entries, agentId } = await broker();
    const r = await a.requestTask({ agentId }, { task: 'steady', scopes: ['repo:read:a'], audience: AUD, ttl: 3600 });
    const minted = [{ token: r.token.token, jti: r.token.jti }];
    // 6,000 tokens 10 ms apart: 60 s of them, all live, 100 in each second.
    for (let i = 1; i < 6_000; i++) {
      clock.advance(10);
      const t = await a.mint({ agentId }, { grantId: r.grant.id });
      minted.push({ token: t.token, jti: t.jti });
    }
    const now = Math.floor(clock.now() / 1000);
    expect(minted.filter((t) => claimsOf(t.token).iat === now).length).toBeGreaterThanOrEqual(99);

    expect(await a.revoke({ kind: 'all' }, 'test')).toEqual({ revokedTokens: 6_000, revokedGrants: 1, revokedAgents: 1 });
    expect(events).toEqual([{ target: { kind: 'all' }, at: now + 1, jtis: [], agentIds: [agentId], taskIds: [], grantIds: [r.grant.id] }]);
    expect(entries.map((e) => [e.kind, e.at])).toEqual([['all', now + 1]]);
    expect(JSON.stringify(events[0]).length).toBeLessThan(300);
    // Each token is issued before `at`: what every verifier checks for `all`.
    expect(minted.filter((t) => !(claimsOf(t.token).iat < now + 1))).toEqual([]);
  }, 120_000);
});

describe('revocationFrames', () => {
  const target = { kind: 'agent', id: 'agt_root' } as const;
  /** Ids of every length a broker may send, some that JSON escapes (six bytes a character), some of four-byte code points. */
  const idOf = (list: string, i: number) => (i % 97 === 0 ? `${list}_\u0001${'\u0000'.repeat(150)}_${i}` : i % 89 === 0 ? `${'😀'.repeat(190)}${i}` : `${list}_${i}`);
  const big: RevocationEvent = {
    target,
    at: 1_767_225_600,
    jtis: Array.from({ length: 30_000 }, (_, i) => idOf('tok', i)),
    agentIds: Array.from({ length: 5_000 }, (_, i) => idOf('agt', i)),
    taskIds: ['tsk_1'],
    grantIds: Array.from({ length: 12_000 }, (_, i) => idOf('grt', i)),
  };

  it('splits an event past the bound into frames under it whose lists together are the event\'s, in order', () => {
    expect(revocationFrame(big).byteLength).toBeGreaterThan(4 * MAX_FRAME_BYTES);
    const frames = revocationFrames(big);
    const parts = frames.map((f) => parseRevocationEvent(paramsOf(f))!);
    for (const f of frames) expect(f.byteLength).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    for (const p of parts) expect(p).toMatchObject({ target, at: big.at });
    for (const p of parts) expect(p.seq).toBeUndefined();
    expect(parts.flatMap((p) => p.jtis)).toEqual(big.jtis);
    expect(parts.flatMap((p) => p.agentIds)).toEqual(big.agentIds);
    expect(parts.flatMap((p) => p.taskIds)).toEqual(big.taskIds);
    expect(parts.flatMap((p) => p.grantIds!)).toEqual(big.grantIds);
    // Packed, not one id a frame: no more frames than the bytes need, plus one.
    expect(frames.length).toBeLessThanOrEqual(Math.ceil(revocationFrame(big).byteLength / (MAX_FRAME_BYTES - 200)) + 1);
  });

  it('keeps to a smaller bound, and an event without grantIds (an older shape) stays without', () => {
    const { grantIds: _g, ...older } = big;
    const frames = revocationFrames(older, 4096);
    for (const f of frames) {
      expect(f.byteLength).toBeLessThanOrEqual(4096);
      expect(Object.keys(paramsOf(f) as object)).toEqual(['target', 'at', 'jtis', 'agentIds', 'taskIds']);
    }
    expect(frames.map((f) => parseRevocationEvent(paramsOf(f))!).flatMap((p) => p.agentIds)).toEqual(big.agentIds);
  });

  it('sends an event that fits as the one frame revocationFrame makes', () => {
    const small: RevocationEvent = { target: { kind: 'token', jti: 'tok_1' }, at: 5, jtis: ['tok_1'], agentIds: [], taskIds: [], grantIds: [] };
    expect(revocationFrames(small)).toEqual([revocationFrame(small)]);
  });

  it('never splits an acknowledged event (one entry, one seq)', () => {
    expect(() => revocationFrames({ ...big, seq: 3 })).toThrow(TypeError);
  });
});

describe('a paged subscribe snapshot', () => {
  const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}_${String(i).padStart(22, '0')}`);
  /** The answer as the broker sends it, with an id as long as a request may give. */
  const answerBytes = (revocations: unknown) =>
    Buffer.byteLength(JSON.stringify({ jsonrpc: '2.0', id: 'x'.repeat(128), result: { subscribed: ['revocation'], revocations } }));

  it('keeps every answer and page within one frame whichever lists are long, and the pages together are the snapshot', () => {
    const snap = { grantIds: ids('grt', 2_500), taskIds: ids('tsk', 300), agentIds: ids('agt', 900), jtis: ids('tok', 4_000), allBefore: 1_800_000_000 };
    const { snapshot, rest } = firstPage(snap);
    expect(snapshot.more).toBe(true);
    expect(snapshot.allBefore).toBe(1_800_000_000);
    expect(answerBytes(snapshot)).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    const got = { grantIds: [...snapshot.grantIds], taskIds: [...(snapshot.taskIds ?? [])], agentIds: [...snapshot.agentIds], jtis: [...snapshot.jtis] };
    let after = got.grantIds.length + got.taskIds.length + got.agentIds.length + got.jtis.length;
    for (let more = true; more; ) {
      const p = nextPage(rest!, after);
      expect(Buffer.byteLength(JSON.stringify({ jsonrpc: '2.0', id: 'x'.repeat(128), result: p }))).toBeLessThanOrEqual(MAX_FRAME_BYTES);
      for (const k of ['grantIds', 'taskIds', 'agentIds', 'jtis'] as const) got[k].push(...p[k]);
      after += p.grantIds.length + p.taskIds.length + p.agentIds.length + p.jtis.length;
      more = p.more === true;
    }
    expect(got).toEqual({ grantIds: snap.grantIds, taskIds: snap.taskIds, agentIds: snap.agentIds, jtis: snap.jtis });
  });

  // Blocked identities (only for a subscriber to blocks) page first, as a fifth list the verifier counts in `after`.
  it('pages a subscriber to blocks its blocked identities first, within the frame, and never shows the key to one that is not', () => {
    const withBlocks = { blockedIdentities: ids('inv', 9_000), grantIds: ids('grt', 2_000), taskIds: [], agentIds: [], jtis: ids('tok', 3_000) };
    const pages: { blockedIdentities?: string[]; grantIds: string[]; taskIds?: string[]; agentIds: string[]; jtis: string[]; more?: true }[] = [];
    const first = firstPage(withBlocks);
    pages.push(first.snapshot);
    const count = (p: (typeof pages)[number]) => (p.blockedIdentities?.length ?? 0) + p.grantIds.length + (p.taskIds?.length ?? 0) + p.agentIds.length + p.jtis.length;
    for (let after = count(first.snapshot), more = first.snapshot.more === true; more; ) {
      const p = nextPage(first.rest!, after);
      pages.push(p);
      after += count(p);
      more = p.more === true;
    }
    expect(pages.length).toBeGreaterThan(2);
    for (const p of pages) expect(answerBytes(p)).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    expect(pages.flatMap((p) => p.blockedIdentities ?? [])).toEqual(withBlocks.blockedIdentities);
    expect(pages.flatMap((p) => p.grantIds)).toEqual(withBlocks.grantIds);
    expect(pages.flatMap((p) => p.jtis)).toEqual(withBlocks.jtis);
    // The identities come before any revocation, and a page past them has no such key (an older page shape).
    expect(pages[0]!.grantIds).toEqual([]);
    expect('blockedIdentities' in pages.at(-1)!).toBe(false);
    // Nothing blocked: the key is still in the first answer (the list is whole and empty), not in later pages.
    const none = firstPage({ blockedIdentities: [], grantIds: [], taskIds: [], agentIds: [], jtis: ids('tok', 9_000) });
    expect(none.snapshot.blockedIdentities).toEqual([]);
    expect('blockedIdentities' in nextPage(none.rest!, none.snapshot.jtis.length)).toBe(false);
    // A subscriber not to blocks: no page has the key.
    const old = firstPage({ grantIds: [], taskIds: [], agentIds: [], jtis: ids('tok', 9_000) });
    expect('blockedIdentities' in old.snapshot).toBe(false);
    expect('blockedIdentities' in nextPage(old.rest!, old.snapshot.jtis.length)).toBe(false);
  });

  it('answers a small snapshot whole, with nothing to page', () => {
    const snap = { grantIds: ids('grt', 3), taskIds: [], agentIds: [], jtis: ids('tok', 10) };
    expect(firstPage(snap)).toEqual({ snapshot: snap, rest: undefined });
  });
});
