// The audit panel's filtering and row text. Pure and free of Node APIs: the webview script bundles it too.
import type { AuditRecord } from '../broker/protocol';
import { printable } from '../broker/printable';
import { quoted } from './inert';

export interface PanelFilter {
  /** An agent id: the agent's own rows and its sub-agents' rows. Empty = all. */
  agent: string;
  /** An audit event name. Empty = all. */
  event: string;
  /** Case-insensitive text anywhere in the row. */
  text: string;
}

export const NO_FILTER: PanelFilter = { agent: '', event: '', text: '' };

/**
 * The columns a row shows, in order: time, event, agent, task, scopes, detail. Each printable: the agent chose its
 * name, task and scopes (and its process the exe paths in the detail), and a bidi override in a name would reorder
 * the cell so that `claude agt_1\u202e` passed for another agent's id. The agent is its id, then its name quoted
 * (agentShown): a name `claude agt_1` next to the id read as one more id.
 */
export function rowCells(r: AuditRecord): [string, string, string, string, string, string] {
  const [time, event, agent, task, scopes, detail] = rawCells(r);
  return [printable(time), printable(event), printable(agent), printable(task), printable(scopes), printable(detail)];
}

function rawCells(r: AuditRecord): [string, string, string, string, string, string] {
  const time = r.ts.length >= 23 ? r.ts.slice(11, 23) : r.ts;
  const agent = r.agent ? agentShown(r.agent.id, r.agent.name) : '';
  const task = r.task?.description ?? '';
  const scopes = r.scopes?.join(' ') ?? '';
  const bits: string[] = [];
  if (r.audience) bits.push(`aud ${r.audience}`);
  if (r.jti) bits.push(`jti ${r.jti}`);
  if (r.outcome === 'failure') bits.push(`failed${r.code ? ` ${r.code}` : ''}`);
  else if (r.code) bits.push(r.code);
  if (r.detail) {
    for (const [k, v] of Object.entries(r.detail)) bits.push(`${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return [time, r.event, agent, task, scopes, bits.join(' · ')];
}

/** Lower-cased searchable text of a row (callers cache it: filtering tens of thousands of rows stays cheap). */
export function rowText(r: AuditRecord): string {
  return `${r.seq} ${rowCells(r).join(' ')} ${r.grantId ?? ''} ${r.session}`.toLowerCase();
}

export function matchesPanelFilter(r: AuditRecord, f: PanelFilter, text?: string): boolean {
  if (f.event && r.event !== f.event) return false;
  if (f.agent && r.agent?.id !== f.agent && !r.agent?.parents.includes(f.agent)) return false;
  if (f.text) {
    const needle = f.text.trim().toLowerCase();
    if (needle && !(text ?? rowText(r)).includes(needle)) return false;
  }
  return true;
}

/** Indices of the records that pass, in order. `texts[i]` is rowText(records[i]) when the caller cached it. */
export function filterIndices(records: readonly AuditRecord[], f: PanelFilter, texts?: readonly string[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < records.length; i++) if (matchesPanelFilter(records[i]!, f, texts?.[i])) out.push(i);
  return out;
}

/** An agent as the panel shows it (its cell, the cell's hover, the agent filter's option): the id first, then the name quoted, printable. */
function agentShown(id: string, name: string): string {
  return `${printable(id)} ${quoted(name)}`;
}

/** The agent filter's option text for an agent: its id and quoted name, printable. */
export function agentOptionText(id: string, name: string): string {
  return agentShown(id, name);
}

/** The agents seen in the records, for the agent filter: id → name (as sent: agentOptionText shows it), in first-seen order. */
export function agentsSeen(records: readonly AuditRecord[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of records) if (r.agent && !m.has(r.agent.id)) m.set(r.agent.id, r.agent.name);
  return m;
}

/** The rows a virtualised list renders: the visible window plus `overscan` rows each side. */
export function visibleWindow(scrollTop: number, viewportHeight: number, rowHeight: number, total: number, overscan = 10): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const count = Math.ceil(viewportHeight / rowHeight);
  return { start: Math.max(0, first - overscan), end: Math.min(total, first + count + overscan) };
}
