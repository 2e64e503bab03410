import { describe, it, expect } from 'vitest';
import type { AgentView, AuditRecord } from '../../broker/protocol';
import { NO_FILTER, filterIndices } from '../../extension/auditFilter';
import { RowIndex, countText, dismissedFindingId, findingKindWords, findingOf, findingText, rowActions, stopTitle } from '../../extension/auditRows';
import { activeAgents } from '../../extension/agentState';

import { claude, helper, rec } from '../helpers/records';
const finding = (seq: number, id: string, over: Record<string, unknown> = {}): AuditRecord =>
  rec(seq, {
    event: 'finding',
    agent: claude,
    outcome: 'failure',
    detail: { id, kind: 'mint-burst', action: 'warn', identity: 'idn_1', evidence: { mints: 812, windowMs: 10000, baselinePerWindow: 0 }, ...over },
  });

const keys = (ix: RowIndex) => Array.from({ length: ix.shownCount }, (_, i) => ix.shown(i)!.record.seq);

describe('the panel loads the tail of a long log', () => {
  it('counts the records before the loaded ones as older, keeping keys equal to their position in the log', () => {
    const index = new RowIndex(NO_FILTER, 10);
    index.clear(990);
    index.append(Array.from({ length: 10 }, (_, i) => rec(990 + i)));
    expect([index.size, index.dropped, index.shownCount]).toEqual([10, 990, 10]);
    expect(index.shown(0)).toEqual({ key: 990, record: rec(990) });
    expect(countText(index.shownCount, index.size, index.dropped)).toBe(countText(10, 10, 990));
    expect(countText(10, 10, 990)).toContain('990 older not shown: open the log or export it');
  });
});

describe('audit panel row index', () => {
  const many = Array.from({ length: 1000 }, (_, i) => rec(i, { agent: i % 3 ? claude : helper, event: i % 5 ? 'token.minted' : 'token.used' }));

  it('matches only new records on append, with the same result as a full filter', () => {
    const f = { agent: 'agt_2', event: 'token.used', text: '' };
    const ix = new RowIndex(f);
    for (let i = 0; i < many.length; i += 37) ix.append(many.slice(i, i + 37));
    expect(keys(ix)).toEqual(filterIndices(many, f).map((i) => many[i]!.seq));
    expect(ix.shownCount).toBe(67); // multiples of 15 below 1000
    expect(ix.size).toBe(1000);
  });

  it('a new filter is one pass over what is held; clearing empties it', () => {
    const ix = new RowIndex(NO_FILTER);
    ix.append(many);
    expect(ix.shownCount).toBe(1000);
    ix.setFilter({ agent: '', event: '', text: 'token.used' });
    expect(ix.shownCount).toBe(200);
    ix.append([rec(1000, { event: 'token.used' }), rec(1001)]);
    expect(ix.shownCount).toBe(201);
    expect(ix.shown(200)!.record.seq).toBe(1000);
    expect(ix.last()!.seq).toBe(1001);
    ix.clear();
    expect([ix.size, ix.shownCount, ix.dropped]).toEqual([0, 0, 0]);
    expect(ix.shown(0)).toBeUndefined();
  });

  it('past the cap drops the oldest tenth at once; keys stay stable and the count points to the file', () => {
    const ix = new RowIndex({ agent: '', event: 'token.used', text: '' }, 100);
    ix.append(many.slice(0, 100));
    const keyOf95 = ix.shown(19)!.key; // seq 95
    expect(ix.shown(19)!.record.seq).toBe(95);
    ix.append([many[100]!]);
    // 101 held > 100: 11 dropped (down to 90), seqs 0..10 gone with them.
    expect([ix.size, ix.dropped]).toEqual([90, 11]);
    expect(keys(ix)[0]).toBe(15);
    expect(keys(ix).at(-1)).toBe(100);
    expect(ix.shown(keys(ix).indexOf(95))!.key).toBe(keyOf95);
    expect(countText(ix.shownCount, ix.size, ix.dropped)).toBe('18 of 90 records (11 older not shown: open the log or export it)');
    expect(countText(5, 5, 0)).toBe('5 records');
    expect(() => new RowIndex(NO_FILTER, 0)).toThrow(TypeError);
  });
});

describe('findings in the audit panel', () => {
  it('reads a finding record and says its kind in words with the evidence and the action', () => {
    const f = findingOf(finding(7, 'fnd_1'))!;
    expect(f).toEqual({ id: 'fnd_1', kind: 'mint-burst', action: 'warn', identity: 'idn_1', evidence: { mints: 812, windowMs: 10000, baselinePerWindow: 0 }, agentId: 'agt_1' });
    expect(findingText(f)).toBe('Burst of token minting: mints 812 · windowMs 10000 · baselinePerWindow 0 · warned');
    expect(findingText({ ...f, kind: 'scope-creep', action: 'block', evidence: { newScopes: ['repo:write:a', 'repo:write:b'] } })).toBe(
      'Asked for scopes it never had: newScopes repo:write:a repo:write:b · blocked',
    );
    expect(findingKindWords('bad-token')).toBe('Presented a bad token');
    expect(findingKindWords('something-new')).toBe('Finding: something-new');
  });

  it('shows the evidence, an unknown kind and the Stop button\'s agent name printable', () => {
    const f = findingOf(finding(7, 'fnd_1'))!;
    expect(findingText({ ...f, kind: 'process-mismatch', evidence: { exe: '/tmp/x\u202efdp.sh' } })).toBe('Token used by another process: exe /tmp/x\\u{202e}fdp.sh · warned');
    expect(findingKindWords('k\u202e\n')).toBe('Finding: k\\u{202e}\\x0a');
    expect(stopTitle('claude"\u202e')).toBe('Stop "claude\\"\\u{202e}": revoke its grants, tokens and sub-agents');
  });

  it('is not a finding without id and kind, or for another event', () => {
    expect(findingOf(rec(1))).toBeUndefined();
    expect(findingOf(rec(1, { event: 'finding', detail: { kind: 'mint-burst' } }))).toBeUndefined();
    expect(findingOf(rec(1, { event: 'finding' }))).toBeUndefined();
    expect(dismissedFindingId(rec(2, { event: 'finding.dismissed', detail: { id: 'fnd_1', kind: 'mint-burst', by: 'ipc' } }))).toBe('fnd_1');
    expect(dismissedFindingId(finding(2, 'fnd_1'))).toBeUndefined();
  });

  it('offers Stop only for live agents and Dismiss only while the finding is open', () => {
    const live = new Set(['agt_1']);
    expect(rowActions(finding(7, 'fnd_1'), live, new Set())).toEqual({ stop: true, dismiss: 'fnd_1' });
    expect(rowActions(finding(7, 'fnd_1'), live, new Set(['fnd_1']))).toEqual({ stop: true, dismiss: undefined });
    expect(rowActions(finding(7, 'fnd_1'), new Set(), new Set())).toEqual({ stop: false, dismiss: 'fnd_1' });
    expect(rowActions(rec(3, { agent: helper }), live, new Set())).toEqual({ stop: false, dismiss: undefined });
    expect(rowActions(rec(4), live, new Set())).toEqual({ stop: false, dismiss: undefined });
  });

  it('live agents are those not revoked that are connected or hold a grant: not one denied that left', () => {
    const view = (id: string, over: Partial<AgentView>): AgentView => ({ id, name: id, kind: 'cli', parents: [], connected: false, revoked: false, grants: 0, liveTokens: 0, ...over });
    const agents = [
      view('working', { connected: true, grants: 1 }),
      view('between-calls', { grants: 1 }),
      view('connected-no-grant', { connected: true }),
      view('denied-and-left', {}),
      view('revoked', { connected: true, grants: 1, revoked: true }),
    ];
    expect(activeAgents(agents).map((a) => a.id)).toEqual(['working', 'between-calls', 'connected-no-grant']);
  });
});
