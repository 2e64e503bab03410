import { describe, it, expect } from 'vitest';
import { agentOptionText, agentsSeen, filterIndices, rowCells, rowText, visibleWindow } from '../../extension/auditFilter';
import { claude, helper, rec } from '../helpers/records';

const records = [
  rec(0, { event: 'broker.started', detail: { pid: 7 } }),
  rec(1, { event: 'task.approved', agent: claude, task: { id: 'tsk_1', description: 'fix issue 12' }, scopes: ['repo:read:acme/web'], detail: { mode: 'task' } }),
  rec(2, { agent: claude, jti: 'jti_a', audience: 'https://api', scopes: ['repo:read:acme/web'] }),
  rec(3, { event: 'task.denied', agent: helper, outcome: 'failure', code: 'WRIT_DENIED' }),
];

describe('audit panel filtering', () => {
  it('renders a row as time, event, agent, task, scopes and detail', () => {
    expect(rowCells(records[2]!)).toEqual(['03:04:05.678', 'token.minted', 'agt_1 "claude"', '', 'repo:read:acme/web', 'aud https://api · jti jti_a']);
    expect(rowCells(records[3]!)[5]).toBe('failed WRIT_DENIED');
    expect(rowCells(records[0]!)[5]).toBe('pid 7');
  });

  it('filters by agent (with its sub-agents), by event and by text, case-insensitively', () => {
    const texts = records.map(rowText);
    expect(filterIndices(records, { agent: '', event: '', text: '' }, texts)).toEqual([0, 1, 2, 3]);
    expect(filterIndices(records, { agent: 'agt_1', event: '', text: '' }, texts)).toEqual([1, 2, 3]);
    expect(filterIndices(records, { agent: 'agt_2', event: '', text: '' })).toEqual([3]);
    expect(filterIndices(records, { agent: '', event: 'token.minted', text: '' })).toEqual([2]);
    expect(filterIndices(records, { agent: '', event: '', text: 'FIX ISSUE' })).toEqual([1]);
    expect(filterIndices(records, { agent: 'agt_1', event: 'task.denied', text: 'writ_denied' })).toEqual([3]);
    expect(filterIndices(records, { agent: '', event: '', text: 'nothing like this' })).toEqual([]);
  });

  it('shows agent text printable in the cells and the agent filter: a bidi override cannot pass a name for another id', () => {
    const r = { ts: '2026-11-30T07:00:00.000Z', seq: 1, session: 's', event: 'token.minted', agent: { id: 'agt_9', name: 'claude agt_1\u202e', parents: [] }, task: { description: 'x\ny' }, scopes: ['a\u061cb'], detail: { exe: '/tmp/x\u202efdp.sh' } } as never;
    expect(rowCells(r).slice(2)).toEqual(['agt_9 "claude agt_1\\u{202e}"', 'x\\x0ay', 'a\\u{61c}b', 'exe /tmp/x\\u{202e}fdp.sh']);
    expect(agentOptionText('agt_9', 'claude agt_1\u202e\n')).toBe('agt_9 "claude agt_1\\u{202e}\\x0a"');
  });

  it('shows the agent id first and its name quoted: a name holding another id does not read as that id', () => {
    const r = { ts: '2026-11-30T07:00:00.000Z', seq: 1, session: 's', event: 'token.minted', agent: { id: 'agt_7', name: 'claude agt_1', parents: [] } } as never;
    expect(rowCells(r)[2]).toBe('agt_7 "claude agt_1"');
    expect(agentOptionText('agt_7', 'claude agt_1')).toBe('agt_7 "claude agt_1"');
    expect(agentOptionText('agt_7', 'x" agt_1 "y')).toBe('agt_7 "x\\" agt_1 \\"y"');
  });

  it('lists the agents seen in first-seen order', () => {
    expect([...agentsSeen(records)]).toEqual([
      ['agt_1', 'claude'],
      ['agt_2', 'helper'],
    ]);
  });

  it('renders only the visible window plus overscan', () => {
    expect(visibleWindow(0, 220, 22, 50_000)).toEqual({ start: 0, end: 20 });
    expect(visibleWindow(22_000, 440, 22, 50_000)).toEqual({ start: 990, end: 1030 });
    expect(visibleWindow(1_099_780, 440, 22, 50_000)).toEqual({ start: 49_980, end: 50_000 });
    expect(visibleWindow(-5, 100, 22, 3)).toEqual({ start: 0, end: 3 });
  });

  it('filters fifty thousand rows to the exact matches', () => {
    const many = Array.from({ length: 50_000 }, (_, i) => rec(i, { agent: i % 2 ? claude : helper, task: { id: 't', description: `task ${i}` } }));
    const texts = many.map(rowText);
    const hits = filterIndices(many, { agent: 'agt_2', event: '', text: 'task 4999' }, texts);
    // 'task 4999' is in 4999 and 49990..49999; helper rows are the even ones.
    expect(hits.map((i) => many[i]!.seq)).toEqual([49990, 49992, 49994, 49996, 49998]);
  });
});
