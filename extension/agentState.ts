// What the editor knows of the running broker's agents, grants and live tokens: the broker's `state` snapshot,
// and a grant's tokens asked for when the tree shows it (the snapshot counts tokens but does not list them).
// Pure: snapshots and answers in, views out; time is passed in.
import type { AgentView, FindingView, GrantView, InventoryView, TokenView } from '../broker/protocol';
import { oneLine, quoted, shownKind, shownName } from './inert';

export interface Snapshot {
  agents: AgentView[];
  grants: GrantView[];
  pendingApprovals: number;
  /** The watch's open findings. */
  findings: FindingView[];
  /** Every agent identity the broker has seen, across runs. */
  inventory: InventoryView[];
}

export const EMPTY_SNAPSHOT: Snapshot = { agents: [], grants: [], pendingApprovals: 0, findings: [], inventory: [] };

/** One answer to `tokens.request`: a grant's live tokens, newest first, and how many live ones it left out. */
export interface TokenPage {
  tokens: TokenView[];
  more: number;
}

/**
 * The editor's `tokens.request`s waiting for their answer, by request id. Each resolves once: with the answer, or
 * with undefined when the broker did not answer in time, was not there to ask, or its run ended (a tree node
 * waiting on it must not spin for ever).
 */
export class TokenRequests {
  private readonly waiting = new Map<string, { resolve: (page: TokenPage | undefined) => void; timer?: ReturnType<typeof setTimeout> }>();

  constructor(
    private readonly timeoutMs: number,
    private readonly newId: () => string,
  ) {}

  /** `send` posts the request with this id; false when there is no broker to post it to. */
  ask(send: (requestId: string) => boolean): Promise<TokenPage | undefined> {
    const requestId = this.newId();
    return new Promise((resolve) => {
      const entry: { resolve: (page: TokenPage | undefined) => void; timer?: ReturnType<typeof setTimeout> } = { resolve };
      this.waiting.set(requestId, entry);
      if (!send(requestId)) {
        this.settle(requestId, undefined);
        return;
      }
      entry.timer = setTimeout(() => this.settle(requestId, undefined), this.timeoutMs);
    });
  }

  /** The broker's answer; false when nothing waits for it (late, or unknown). */
  answer(requestId: string, page: TokenPage): boolean {
    return this.settle(requestId, page);
  }

  /** The run ended: everything waiting resolves with undefined. */
  clear(): void {
    for (const id of [...this.waiting.keys()]) this.settle(id, undefined);
  }

  get pending(): number {
    return this.waiting.size;
  }

  private settle(requestId: string, page: TokenPage | undefined): boolean {
    const entry = this.waiting.get(requestId);
    if (!entry) return false;
    this.waiting.delete(requestId);
    clearTimeout(entry.timer);
    entry.resolve(page);
    return true;
  }
}

/** What a grant lists under it: its live tokens, then a line for those left out, or why it cannot say. */
export type GrantChild = { kind: 'token'; token: TokenView } | { kind: 'message'; text: string };

/** A message row of the Writ and Inventory views (a notice, which may carry the broker's error text): on one line. */
export function messageRow(text: string): Row {
  return { label: oneLine(text), description: '' };
}

export function grantChildren(page: TokenPage | undefined): GrantChild[] {
  if (!page) return [{ kind: 'message', text: 'The broker did not answer: the tokens show at the next refresh.' }];
  const rows: GrantChild[] = page.tokens.map((token) => ({ kind: 'token', token }));
  if (page.more > 0) rows.push({ kind: 'message', text: `…and ${page.more} older live token${page.more === 1 ? '' : 's'}` });
  return rows;
}

/** Agents that count as active: not revoked, and connected or holding a live grant. */
export function activeAgents(agents: readonly AgentView[]): AgentView[] {
  return agents.filter((a) => !a.revoked && (a.connected || a.grants > 0));
}

/** `4m 05s`, `59s`, `1h 00m`; `expired` at or below zero. */
export function timeLeft(seconds: number): string {
  if (seconds <= 0) return 'expired';
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line about an agent for lists: state, grants and tokens, and its parent when it is a sub-agent. */
export function agentDescription(a: AgentView, byId: ReadonlyMap<string, AgentView>): string {
  const state = a.revoked ? 'stopped' : a.connected ? 'connected' : 'idle';
  const parts = [state, `${a.grants} grant${a.grants === 1 ? '' : 's'}`, `${a.liveTokens} token${a.liveTokens === 1 ? '' : 's'}`];
  const parent = a.parents[0];
  if (parent !== undefined) {
    const p = byId.get(parent);
    parts.push(`sub-agent of ${p ? quoted(p.name, oneLine) : oneLine(parent)}`);
  }
  if (a.process) parts.push(`pid ${a.process.pid}`);
  return parts.join(' · ');
}

type Row = { label: string; description: string; tooltip?: string };

/**
 * An agent's row in the Writ view: its name on one line (shownName: no separator of the description), its state, and a hover with name, kind and version
 * (agent text printable: a hover is plain text, and a newline would forge its lines). `findings` open on it.
 */
export function agentRow(a: AgentView, byId: ReadonlyMap<string, AgentView>, findings: number): Row & { tooltip: string } {
  const kind = shownKind(a.kind);
  return {
    label: shownName(a.name),
    description: `${findings > 0 ? `${findings} finding${findings === 1 ? '' : 's'} · ` : ''}${agentDescription(a, byId)}`,
    tooltip: `${quoted(a.name, oneLine)} (${kind}${a.version ? ` ${shownKind(a.version)}` : ''})\n${oneLine(a.id)}${a.identity ? `\nidentity ${oneLine(a.identity)}` : ''}`,
  };
}

/** A grant's row: its task on one line, mode, audience and time left; scopes in the hover, one a line. */
export function grantRow(g: GrantView, nowSec: number): Row & { tooltip: string } {
  return {
    label: oneLine(g.task),
    description: `${g.mode} · ${oneLine(g.audience)} · ${timeLeft(g.expiresAt - nowSec)}`,
    tooltip: `${oneLine(g.id)}\n${g.scopes.map(oneLine).join('\n')}\naudience ${oneLine(g.audience)}`,
  };
}

/** A live token's row: its id, time left and scopes. */
export function tokenRow(t: TokenView, nowSec: number): Row {
  return { label: oneLine(t.jti), description: `${timeLeft(t.expiresAt - nowSec)} left · ${t.scopes.map(oneLine).join(' ')}` };
}
