// The status bar menu's rows while it is open. VS Code names the row a click landed on by its index in the items it
// was last sent, so a rebuild must leave every row it showed at the same index: a late click on one agent's Stop
// must never reach another agent.
import { describe, it, expect } from 'vitest';
import type { AgentView, FindingView } from '../../broker/protocol';
import { SINCE_OPENED, agentPickText, agentRowText, findingPickText, findingRowText, findingTitle, keepPlaces, menuRows, noAgentsRowText, rowsSignature } from '../../extension/statusMenu';
import type { MenuRow } from '../../extension/statusMenu';

const agent = (id: string, over: Partial<AgentView> = {}): AgentView => ({
  id,
  name: `agent-${id}`,
  kind: 'cli',
  parents: [],
  connected: true,
  revoked: false,
  grants: 1,
  liveTokens: 1,
  ...over,
});
const finding = (id: string): FindingView => ({ id, kind: 'scope-creep', identity: 'inv_a', agentId: 'agt_a', at: 1_000, action: 'warn', evidence: {} });

/** Each row as `key` (or `key~` when ended), in order: the index is the row's handle in VS Code. */
const layout = (rows: readonly MenuRow[]) => rowsSignature(rows).split('\n');
const ACTIONS = ['separator:actions', 'action:stop-all', 'action:audit-panel', 'action:pending'];

describe('status menu rows', () => {
  it('opens with the findings, then the agents, then the actions', () => {
    expect(layout(menuRows([finding('fnd_1')], [agent('agt_a'), agent('agt_b')]))).toEqual([
      'separator:findings',
      'finding:fnd_1',
      'separator:agents',
      'agent:agt_a',
      'agent:agt_b',
      ...ACTIONS,
    ]);
    // No findings: no Findings heading. No agents: one row says so.
    expect(layout(menuRows([], []))).toEqual(['separator:agents', 'no-agents', ...ACTIONS]);
  });

  it('keeps every row it showed at its index: a stopped agent stays in place, ended; a new one goes at the end', () => {
    const open = menuRows([], [agent('agt_a'), agent('agt_b')]);
    // agt_a is stopped and agt_c starts while the menu is open.
    const next = keepPlaces(open, menuRows([], [agent('agt_b'), agent('agt_c')]));
    expect(layout(next)).toEqual(['separator:agents', 'agent:agt_a~', 'agent:agt_b', ...ACTIONS, `separator:since-opened`, 'agent:agt_c']);
    expect(next.slice(0, open.length).map((r) => r.key)).toEqual(open.map((r) => r.key));
    // The row a late click on agt_b's Stop names (index 2) is still agt_b, and agt_a's row acts on nothing.
    expect(next[2]).toMatchObject({ kind: 'agent', agent: { id: 'agt_b' }, ended: false });
    expect(next[1]).toMatchObject({ kind: 'agent', agent: { id: 'agt_a' }, ended: true });
    expect(next.find((r) => r.kind === 'separator' && r.key === 'separator:since-opened')).toEqual({ key: 'separator:since-opened', kind: 'separator', label: SINCE_OPENED });

    // A finding raised later goes below agt_c under the same separator; its own section heading is not added there.
    const later = keepPlaces(next, menuRows([finding('fnd_1')], [agent('agt_b'), agent('agt_c')]));
    expect(layout(later)).toEqual([...layout(next), 'finding:fnd_1']);
    // Dismissed: the finding's row stays, ended.
    expect(layout(keepPlaces(later, menuRows([], [agent('agt_b'), agent('agt_c')])))).toEqual([...layout(next), 'finding:fnd_1~']);
  });

  it('updates a row that stays with what it shows now', () => {
    const open = menuRows([], [agent('agt_a', { liveTokens: 1 })]);
    const next = keepPlaces(open, menuRows([], [agent('agt_a', { liveTokens: 7 })]));
    expect(next[1]).toMatchObject({ kind: 'agent', agent: { id: 'agt_a', liveTokens: 7 }, ended: false });
    // Counts alone do not change what rows there are: no rebuild for them.
    expect(rowsSignature(next)).toBe(rowsSignature(open));
  });

  it('marks "no live agents" ended when an agent starts, and lists the agent at the end', () => {
    const open = menuRows([], []);
    const next = keepPlaces(open, menuRows([], [agent('agt_a')]));
    expect(layout(next)).toEqual(['separator:agents', 'no-agents~', ...ACTIONS, 'separator:since-opened', 'agent:agt_a']);
    // The agent stops: its row ends in place, and nothing moves.
    expect(layout(keepPlaces(next, menuRows([], [])))).toEqual(['separator:agents', 'no-agents', ...ACTIONS, 'separator:since-opened', 'agent:agt_a~']);
  });
  it('shows agent text inert in its rows and the pickers: no icon syntax, no newline or bidi override', () => {
    // VS Code renders `$(name)` in a quick pick's label, description, detail and title as an icon.
    const parent = agent('agt_p', { name: '$(verified) planner\u202e' });
    const a = agent('agt_a', { name: 'claude $(pass-filled) approved\nx', parents: ['agt_p'] });
    const byId = new Map([parent, a].map((x) => [x.id, x]));
    const f: FindingView = { ...finding('fnd_1'), evidence: { newScopes: ['repo:write:$(check)'] } };
    const who = 'claude $(pass-filled) (cli)';
    const rows = [agentRowText(a, false, byId), agentRowText(a, true, byId), findingRowText(who, f, false), findingRowText(who, f, true), agentPickText(a, byId), findingPickText(who, f)];
    const texts = [...rows.flatMap((r) => [r.label, r.description ?? '', r.detail ?? '']), findingTitle(who, f)];
    for (const t of texts) {
      // The menu's own icons lead a label; none comes from the agent.
      expect(t.replace(/^\$\((robot|debug-stop|warning|pass)\) /, '')).not.toMatch(/(^|[^\\])\$\(/);
      expect(t).not.toMatch(/[\u0000-\u001f\u202e]/);
    }
    expect(agentRowText(a, false, byId).label).toBe('$(robot) claude \\$(pass-filled) approved\\x0ax');
    expect(agentRowText(a, false, byId).description).toContain('sub-agent of "\\$(verified) planner\\u{202e}"');
  });

  it('keeps quick pick texts on one line (padding pushed the description out), the "No live agents" notice too', () => {
    const a = agent('agt_a', { name: `claude${' '.repeat(90)}x \u3164y` });
    expect(agentPickText(a, new Map()).label).toBe('claude x y');
    expect(agentRowText(a, false, new Map()).label).toBe('$(robot) claude x y');
    expect(findingTitle(`w${' '.repeat(50)}ho`, finding('fnd_1'))).toMatch(/^Writ: w ho /);
    const none = noAgentsRowText(false, 'The broker is not running: spawn $(x)\n  [go](command:x)\u202e');
    expect(none).toEqual({ label: '$(info) No live agents', description: 'The broker is not running: spawn \\$(x)\\x0a [go] (command:x)\\u{202e}' });
    expect(noAgentsRowText(true, 'x').description).toBe('the agents started since are listed below');
  });
});
