// What the editor knows of the running broker's agents, grants and live tokens: the broker's `state` snapshot
// plus the tokens read from this run's audit records (the snapshot counts tokens but does not list them).
// Pure: records and snapshots in, views out; time is passed in.
import type { AgentView, AuditRecord, FindingView, GrantView, InventoryView } from '../broker/protocol';

export interface LiveToken {
  jti: string;
  grantId: string;
  /** Epoch seconds. */
  expiresAt: number;
  scopes: string[];
}

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

/** Tokens minted in this broker run, forgotten when they expire or are revoked by jti. */
export class TokenLedger {
  private readonly tokens = new Map<string, LiveToken>();

  /** Feed every audit record of the run. Returns true when the record changed the ledger. */
  add(r: AuditRecord): boolean {
    if ((r.event === 'token.minted' || r.event === 'token.exchanged') && r.outcome === 'success' && r.jti && r.grantId && r.exp !== undefined) {
      this.tokens.set(r.jti, { jti: r.jti, grantId: r.grantId, expiresAt: r.exp, scopes: r.scopes ?? [] });
      return true;
    }
    if (r.event === 'revoked' && r.jti) return this.tokens.delete(r.jti);
    return false;
  }

  clear(): void {
    this.tokens.clear();
  }

  /** Live tokens of a grant still live in the snapshot (a revoked grant's tokens are gone with it). */
  forGrant(grantId: string, nowSeconds: number): LiveToken[] {
    const out: LiveToken[] = [];
    for (const t of this.tokens.values()) {
      if (t.expiresAt <= nowSeconds) this.tokens.delete(t.jti);
      else if (t.grantId === grantId) out.push(t);
    }
    return out.sort((a, b) => a.expiresAt - b.expiresAt);
  }
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
  if (parent !== undefined) parts.push(`sub-agent of ${byId.get(parent)?.name ?? parent}`);
  if (a.process) parts.push(`pid ${a.process.pid}`);
  return parts.join(' · ');
}
