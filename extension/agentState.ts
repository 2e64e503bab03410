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
  /** Live tokens by grant, then by jti: a grant's rows cost its own tokens, not every token of the run. */
  private readonly byGrant = new Map<string, Map<string, LiveToken>>();
  private readonly grantOf = new Map<string, string>();
  /** Size after the last sweep of expired tokens: sweeping when it doubles keeps memory bounded by live tokens. */
  private swept = 1024;

  constructor(private readonly nowSeconds: () => number = () => Math.floor(Date.now() / 1000)) {}

  /** Feed every audit record of the run. Returns true when the record changed the ledger. */
  add(r: AuditRecord): boolean {
    if ((r.event === 'token.minted' || r.event === 'token.exchanged') && r.outcome === 'success' && r.jti && r.grantId && r.exp !== undefined) {
      let g = this.byGrant.get(r.grantId);
      if (!g) this.byGrant.set(r.grantId, (g = new Map()));
      g.set(r.jti, { jti: r.jti, grantId: r.grantId, expiresAt: r.exp, scopes: r.scopes ?? [] });
      this.grantOf.set(r.jti, r.grantId);
      if (this.grantOf.size >= 2 * this.swept) this.sweep(this.nowSeconds());
      return true;
    }
    if (r.event === 'revoked' && r.jti) {
      const grantId = this.grantOf.get(r.jti);
      if (grantId === undefined) return false;
      this.drop(grantId, r.jti);
      return true;
    }
    return false;
  }

  clear(): void {
    this.byGrant.clear();
    this.grantOf.clear();
  }

  /** How many unexpired tokens it holds (after dropping the expired ones). */
  size(nowSeconds: number): number {
    this.sweep(nowSeconds);
    return this.grantOf.size;
  }

  /** Live tokens of a grant still live in the snapshot (a revoked grant's tokens are gone with it). */
  forGrant(grantId: string, nowSeconds: number): LiveToken[] {
    const out: LiveToken[] = [];
    for (const t of this.byGrant.get(grantId)?.values() ?? []) {
      if (t.expiresAt <= nowSeconds) this.drop(grantId, t.jti);
      else out.push(t);
    }
    return out.sort((a, b) => a.expiresAt - b.expiresAt);
  }

  private drop(grantId: string, jti: string): void {
    this.grantOf.delete(jti);
    const g = this.byGrant.get(grantId);
    g?.delete(jti);
    if (g?.size === 0) this.byGrant.delete(grantId);
  }

  private sweep(nowSeconds: number): void {
    for (const [grantId, g] of this.byGrant) for (const t of g.values()) if (t.expiresAt <= nowSeconds) this.drop(grantId, t.jti);
    this.swept = Math.max(1024, this.grantOf.size);
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
