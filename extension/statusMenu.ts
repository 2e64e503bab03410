// The status bar menu's rows while it is open: which rows, in what order, and where each one stays. VS Code
// names the row a click landed on by its index in the items the window was last sent (an item's handle is its
// position in the array), so a rebuild that moved rows would turn a late click on one agent's Stop into a click
// on whatever took that place. While the menu is open a row therefore keeps its index: a row whose agent or
// finding ended stays where it was, marked ended and without buttons; rows that are new go at the end.
// Pure (no vscode): commands.ts turns rows into quick pick items, with the texts below (also the pickers' texts).
import type { AgentView, FindingView } from '../broker/protocol';
import { agentDescription } from './agentState';
import { describeFinding, kindLabel } from './oversight';
import { pickInert, shownName } from './inert';

export type MenuAction = 'stop-all' | 'audit-panel' | 'pending';

export type MenuRow =
  | { key: string; kind: 'separator'; label: string }
  | { key: string; kind: 'finding'; finding: FindingView; ended: boolean }
  | { key: string; kind: 'agent'; agent: AgentView; ended: boolean }
  /** Stands where the agents would be. Ended: agents started since the menu opened (they are listed at the end). */
  | { key: string; kind: 'no-agents'; ended: boolean }
  | { key: string; kind: 'action'; action: MenuAction };

/** The separator over rows that appeared while the menu was open. */
export const SINCE_OPENED = 'Since this menu opened';

const separator = (key: string, label: string): MenuRow => ({ key: `separator:${key}`, kind: 'separator', label });

/** The rows for the state now, in the order a menu opened now shows them: findings, agents, actions. */
export function menuRows(findings: readonly FindingView[], live: readonly AgentView[]): MenuRow[] {
  return [
    ...(findings.length === 0 ? [] : [separator('findings', 'Findings')]),
    ...findings.map((f): MenuRow => ({ key: `finding:${f.id}`, kind: 'finding', finding: f, ended: false })),
    separator('agents', 'Agents'),
    ...(live.length === 0 ? [{ key: 'no-agents', kind: 'no-agents', ended: false } as const] : []),
    ...live.map((a): MenuRow => ({ key: `agent:${a.id}`, kind: 'agent', agent: a, ended: false })),
    separator('actions', 'Actions'),
    { key: 'action:stop-all', kind: 'action', action: 'stop-all' },
    { key: 'action:audit-panel', kind: 'action', action: 'audit-panel' },
    { key: 'action:pending', kind: 'action', action: 'pending' },
  ];
}

/**
 * `next` (from menuRows) laid over the rows on screen: every row shown keeps its index, updated when it is still
 * in `next` and marked ended when it is not; rows new in `next` are appended under one "since opened" separator
 * (their own section separators are left out: they would head the wrong rows down there).
 */
export function keepPlaces(shown: readonly MenuRow[], next: readonly MenuRow[]): MenuRow[] {
  const now = new Map(next.map((r) => [r.key, r]));
  const out = shown.map((r): MenuRow => now.get(r.key) ?? ended(r));
  const known = new Set(shown.map((r) => r.key));
  const added = next.filter((r) => !known.has(r.key) && r.kind !== 'separator');
  if (added.length > 0) {
    const since = separator('since-opened', SINCE_OPENED);
    if (!known.has(since.key)) out.push(since);
    out.push(...added);
  }
  return out;
}

function ended(r: MenuRow): MenuRow {
  return r.kind === 'finding' || r.kind === 'agent' || r.kind === 'no-agents' ? { ...r, ended: true } : r;
}

/** Which rows there are and which ended, as one string: the menu is rebuilt only when this (or its counts) change. */
export function rowsSignature(rows: readonly MenuRow[]): string {
  return rows.map((r) => ('ended' in r && r.ended ? `${r.key}~` : r.key)).join('\n');
}

/** What a quick pick row shows: agent-supplied text in it through pickInert (VS Code renders `$(icon)` there). */
export interface PickText {
  label: string;
  description?: string;
  detail?: string;
}

/** An agent's row in the menu: live (with its state), or ended (stopped, or gone from the broker). */
export function agentRowText(a: AgentView, ended: boolean, byId: ReadonlyMap<string, AgentView>): PickText {
  if (ended) return { label: `$(debug-stop) ${pickInert(shownName(a.name))}`, description: byId.get(a.id)?.revoked ? 'stopped' : 'gone', detail: pickInert(a.id) };
  return { label: `$(robot) ${pickInert(shownName(a.name))}`, description: pickInert(agentDescription(a, byId)), detail: pickInert(a.id) };
}

/** A finding's row in the menu; `who` is the agent it is about (findingAgentLabel). */
export function findingRowText(who: string, f: FindingView, ended: boolean): PickText {
  const label = pickInert(`${who}: ${kindLabel(f.kind)}`);
  if (ended) return { label: `$(pass) ${label}`, description: 'closed', detail: pickInert(describeFinding(f)) };
  return { label: `$(warning) ${label}`, detail: pickInert(describeFinding(f)) };
}

/**
 * The menu's row where the agents would be, when there is none: ended (agents started since are listed below), or
 * why there is none (ctx.notice(): it may carry the broker's error text, so it goes through pickInert).
 */
export function noAgentsRowText(ended: boolean, notice: string | undefined): PickText {
  return ended
    ? { label: '$(info) No live agents when this menu opened', description: 'the agents started since are listed below' }
    : { label: '$(info) No live agents', description: pickInert(notice ?? '') };
}

/** An agent in the Stop picker. */
export function agentPickText(a: AgentView, byId: ReadonlyMap<string, AgentView>): PickText {
  return { label: pickInert(shownName(a.name)), description: pickInert(agentDescription(a, byId)), detail: pickInert(a.id) };
}

/** A finding in the Dismiss picker. */
export function findingPickText(who: string, f: FindingView): PickText {
  return { label: pickInert(`${who}: ${kindLabel(f.kind)}`), detail: pickInert(describeFinding(f)) };
}

/** The title of the picker of what to do about a finding. */
export function findingTitle(who: string, f: FindingView): string {
  return pickInert(`Writ: ${who} ${describeFinding(f)}`);
}
