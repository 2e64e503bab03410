// The audit panel's row model: the records it holds (capped), the ones the filter shows (kept up to date on
// append, not recomputed), and what a finding row says and offers. Pure and free of Node APIs: the webview
// script bundles it, and unit tests drive it without a DOM.
import type { AuditRecord } from '../broker/protocol';
import { printable } from '../broker/printable';
import { quoted } from './inert';
import { matchesPanelFilter, rowText } from './auditFilter';
import type { PanelFilter } from './auditFilter';

/** Records the panel keeps before dropping the oldest: a log can outgrow any webview; the file keeps them all. */
export const MAX_PANEL_RECORDS = 200_000;

/**
 * Records in log order with their cached search text, and the positions the filter shows. Positions are
 * absolute (they count dropped records too), so a row keeps its key when older records are dropped.
 */
export class RowIndex {
  private records: AuditRecord[] = [];
  private texts: string[] = [];
  /** Absolute positions of the records the filter shows, ascending. */
  private shownAt: number[] = [];
  /** Records dropped from the front (the absolute position of records[0]). */
  private base = 0;
  private f: PanelFilter;

  constructor(
    filter: PanelFilter,
    private readonly cap = MAX_PANEL_RECORDS,
  ) {
    if (!Number.isInteger(cap) || cap < 1) throw new TypeError('RowIndex: cap must be a positive integer');
    this.f = { ...filter };
  }

  get filter(): PanelFilter {
    return this.f;
  }

  /** Records held now. */
  get size(): number {
    return this.records.length;
  }

  /** Records dropped to stay under the cap since the last reset. */
  get dropped(): number {
    return this.base;
  }

  /** Rows the filter shows. */
  get shownCount(): number {
    return this.shownAt.length;
  }

  /** Empties it; `older` records the log holds before the next ones appended (not loaded) count as dropped. */
  clear(older = 0): void {
    this.records = [];
    this.texts = [];
    this.shownAt = [];
    this.base = older;
  }

  /** Appends in log order; only the new records are matched against the filter. */
  append(fresh: readonly AuditRecord[]): void {
    for (const r of fresh) {
      const t = rowText(r);
      this.records.push(r);
      this.texts.push(t);
      if (matchesPanelFilter(r, this.f, t)) this.shownAt.push(this.base + this.records.length - 1);
    }
    if (this.records.length > this.cap) this.trim();
  }

  /** A new filter: the one full pass, over cached text. */
  setFilter(f: PanelFilter): void {
    this.f = { ...f };
    this.shownAt = [];
    for (let i = 0; i < this.records.length; i++) if (matchesPanelFilter(this.records[i]!, this.f, this.texts[i])) this.shownAt.push(this.base + i);
  }

  /** The record shown at row `row` (0-based among shown rows) and its stable key. */
  shown(row: number): { key: number; record: AuditRecord } | undefined {
    const key = this.shownAt[row];
    if (key === undefined) return undefined;
    return { key, record: this.records[key - this.base]! };
  }

  last(): AuditRecord | undefined {
    return this.records[this.records.length - 1];
  }

  /** Drops the oldest tenth past the cap at once, so trimming is rare however fast records come. */
  private trim(): void {
    const drop = this.records.length - this.cap + Math.floor(this.cap / 10);
    const n = Math.min(drop, this.records.length);
    this.records.splice(0, n);
    this.texts.splice(0, n);
    this.base += n;
    let keep = 0;
    while (keep < this.shownAt.length && this.shownAt[keep]! < this.base) keep++;
    this.shownAt.splice(0, keep);
  }
}

/** What the count says: the rows shown, what is held, and a pointer to the file for what was dropped. */
export function countText(shown: number, held: number, dropped: number): string {
  const main = shown === held ? `${held} records` : `${shown} of ${held} records`;
  return dropped > 0 ? `${main} (${dropped} older not shown: open the log or export it)` : main;
}

/** What the panel says while the broker does not answer: its rows are the log on disk, and live ones will follow. */
export const BROKER_SILENT_NOTE = 'The broker is not answering: these are the records on disk. Live records follow when it answers again; restart it from the status bar if it stays silent.';

// ---------------------------------------------------------------------------------------------
// Findings (the watch's `finding` records)
// ---------------------------------------------------------------------------------------------

export interface PanelFinding {
  id: string;
  kind: string;
  action: string;
  identity: string;
  evidence: Record<string, unknown>;
  /** The agent the finding is about (the record's agent). */
  agentId: string | undefined;
}

/** The kinds broker/core/watch.ts raises, in words a developer reads at a glance. */
const KIND_WORDS: Readonly<Record<string, string>> = {
  'scope-creep': 'Asked for scopes it never had',
  'scope-burst': 'Burst of new scopes',
  'request-burst': 'Burst of requests',
  'mint-burst': 'Burst of token minting',
  'bad-token': 'Presented a bad token',
  'process-mismatch': 'Token used by another process',
  'pending-flood': 'Flood of approval prompts',
};

const ACTION_WORDS: Readonly<Record<string, string>> = {
  warn: 'warned',
  block: 'blocked',
  stop: 'stopped',
};

export function findingKindWords(kind: string): string {
  return KIND_WORDS[kind] ?? `Finding: ${printable(kind)}`;
}

/** The finding a `finding` record carries; undefined for any other record or a detail without id and kind. */
export function findingOf(r: AuditRecord): PanelFinding | undefined {
  if (r.event !== 'finding' || !r.detail) return undefined;
  const { id, kind, action, identity, evidence } = r.detail;
  if (typeof id !== 'string' || typeof kind !== 'string') return undefined;
  return {
    id,
    kind,
    action: typeof action === 'string' ? action : '',
    identity: typeof identity === 'string' ? identity : '',
    evidence: evidence && typeof evidence === 'object' && !Array.isArray(evidence) ? (evidence as Record<string, unknown>) : {},
    agentId: r.agent?.id,
  };
}

/** The id a `finding.dismissed` record closes. */
export function dismissedFindingId(r: AuditRecord): string | undefined {
  if (r.event !== 'finding.dismissed') return undefined;
  const id = r.detail?.id;
  return typeof id === 'string' ? id : undefined;
}

/**
 * One line: the kind in words, the evidence, what the broker did. `Burst of token minting: mints 812 · windowMs 10000 · warned`.
 * Printable: the evidence holds what the agent or its process chose (scopes, exe paths).
 */
export function findingText(f: PanelFinding): string {
  const facts = Object.entries(f.evidence).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(' ') : typeof v === 'string' ? v : JSON.stringify(v)}`);
  const action = ACTION_WORDS[f.action] ?? f.action;
  return printable([`${findingKindWords(f.kind)}${facts.length ? `: ${facts.join(' · ')}` : ''}`, action].filter(Boolean).join(' · '));
}

/** The Stop button's hover: the agent's name quoted and printable. */
export function stopTitle(name: string): string {
  return `Stop ${quoted(name)}: revoke its grants, tokens and sub-agents`;
}

/** The buttons a row offers: Stop only for a live agent; Dismiss only for a finding still open. */
export function rowActions(r: AuditRecord, live: ReadonlySet<string>, dismissed: ReadonlySet<string>): { stop: boolean; dismiss: string | undefined } {
  const stop = r.agent !== undefined && live.has(r.agent.id);
  const f = findingOf(r);
  return { stop, dismiss: f && !dismissed.has(f.id) ? f.id : undefined };
}
