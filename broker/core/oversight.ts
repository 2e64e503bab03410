// Oversight joins the inventory and the watch to the broker's decisions: it names each agent's identity,
// refuses blocked identities without a prompt, turns the watch's findings into audit records and actions
// (warn, block, stop), and keeps the inventory current. The authority calls it; it never calls sockets.
import { WritError } from '../errors';
import type { AuditAgent, AuditEntry } from '../protocol';
import type { Inventory } from './inventory';
import type { InventoryEntry } from '../protocol';
import { blockPutBack, identityOf } from './inventory';
import type { Finding, Watch } from './watch';

export interface OversightDeps {
  user: string;
  inventory: Inventory;
  watch: Watch;
  audit: (entry: AuditEntry) => Promise<unknown>;
  /** Revokes every live agent of an identity (set by the composition root: it needs the authority). */
  stopIdentity: (identity: string, reason: string) => Promise<void>;
  /**
   * Resolves once the verifiers told of the block changes so far have acknowledged them (or timed out): a block
   * is answered only after, so no verifier that hears blocks takes the identity's tokens once the caller knows.
   */
  blocksHeard?: () => Promise<unknown>;
}

export type FindingListener = (f: Finding) => void;

export class Oversight {
  private readonly listeners = new Set<FindingListener>();

  constructor(private readonly deps: OversightDeps) {
    // An identity the inventory's cap forgets takes its watch state with it.
    deps.inventory.onForget((id) => deps.watch.forget(id));
  }

  onFinding(l: FindingListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Records a connection and returns the agent's inventory identity; `inUse` names identities of live agents. */
  identify(a: { name: string; kind: string; parentIdentity?: string; process?: { exe?: string; sha256?: string } }, inUse?: (id: string) => boolean): string {
    // Written with the changes after it (see Inventory): a hello never waits for the disk.
    return this.deps.inventory.seen({ ...a, owner: this.deps.user }, inUse).id;
  }

  isBlocked(identity: string): boolean {
    return this.deps.inventory.isBlocked(identity);
  }

  /** Each block as it takes hold and each unblock once on disk (Inventory.onBlockChange). */
  onBlockChange(listener: (identity: string, blocked: boolean) => void): () => void {
    return this.deps.inventory.onBlockChange(listener);
  }

  /** The identities blocked now (a subscriber's snapshot). */
  blockedIdentities(): string[] {
    return this.deps.inventory.blockedIds();
  }

  /**
   * Before a request is shown to anyone: a blocked identity is refused outright, then the watch looks at it.
   * A finding whose action is block or stop ends the request too. Throws the WritError the agent gets.
   */
  async beforeRequest(identity: string, agent: AuditAgent, asked: readonly string[]): Promise<void> {
    if (this.deps.inventory.isBlocked(identity)) {
      throw new WritError('WRIT_AGENT_BLOCKED', 'the developer blocked this agent; it is refused until unblocked');
    }
    const findings = this.deps.watch.onRequest(identity, agent.id, asked, this.deps.inventory.grantedBefore(identity));
    await this.act(findings, agent);
  }

  async onPending(identity: string, agent: AuditAgent, pending: number): Promise<void> {
    await this.act(this.deps.watch.onPending(identity, agent.id, pending), agent);
  }

  /** Every mint passes here: the agent's audit view is built only when a finding needs it. */
  async onMint(identity: string, agentId: string, agent: () => AuditAgent): Promise<void> {
    const findings = this.deps.watch.onMint(identity, agentId);
    if (findings.length > 0) await this.act(findings, agent());
  }

  async onBadToken(identity: string, agent: AuditAgent, code: string, jti: string, more: Record<string, unknown> = {}): Promise<void> {
    // The presenter is not always the agent (a resource introspecting, a thief); the finding records, it does not
    // act. The request itself is refused by its code.
    await this.act(this.deps.watch.onBadToken(identity, agent.id, code, jti, more), agent, { noAction: true });
  }

  /**
   * A token used from a process it was not minted for. Acts as configured (warn by default): block or stop end
   * the presenting request too, and the token's agent is blocked or stopped (its token left its process).
   */
  async onProcessMismatch(
    identity: string,
    agent: AuditAgent,
    expected: { pid: number; exe?: string },
    actual: { pid: number; exe?: string },
    more: Record<string, unknown>,
  ): Promise<void> {
    await this.act(this.deps.watch.onProcessMismatch(identity, agent.id, expected, actual, more), agent);
  }

  granted(identity: string, scopes: readonly string[]): void {
    this.deps.inventory.granted(identity, scopes);
  }

  stopped(identity: string): void {
    this.deps.inventory.stopped(identity);
  }

  /** Audits each finding, tells listeners, and carries out its action. A block or stop ends the caller's request. */
  private async act(findings: Finding[], agent: AuditAgent, opts: { noAction?: boolean } = {}): Promise<void> {
    let refusal: WritError | undefined;
    for (const f of findings) {
      // A finding that records only says so everywhere it is shown (audit, findings.list, the editor's toast).
      if (opts.noAction) f.action = 'warn';
      await this.deps.audit({
        event: 'finding',
        agent,
        outcome: 'failure',
        detail: { id: f.id, kind: f.kind, action: f.action, identity: f.identity, evidence: f.evidence },
      });
      for (const l of this.listeners) l(f);
      if (f.action === 'warn') continue;
      if (f.action === 'block') {
        await this.block(f.identity, `finding ${f.id}: ${f.kind}`, 'watch');
        refusal ??= new WritError('WRIT_AGENT_BLOCKED', `blocked after a ${f.kind} finding; the developer can unblock it`);
      } else {
        await this.deps.stopIdentity(f.identity, `finding ${f.id}: ${f.kind}`);
        refusal ??= new WritError('WRIT_TOKEN_REVOKED', `stopped after a ${f.kind} finding`);
      }
    }
    if (refusal) throw refusal;
  }

  /**
   * Blocking is revocation that outlives a restart: live agents of the identity are stopped too. The block is on
   * disk before it is audited or answered; if it cannot be saved it still holds for this run (and the identity's
   * live agents are stopped), but the caller gets WRIT_INVENTORY_WRITE_FAILED rather than an acknowledgement.
   */
  async block(identity: string, reason: string | undefined, by: string): Promise<InventoryEntry> {
    let e: InventoryEntry;
    try {
      e = await this.deps.inventory.block(identity, reason);
    } catch (err) {
      if (this.deps.inventory.isBlocked(identity)) await Promise.all([this.deps.stopIdentity(identity, `blocked by ${by}`), this.deps.blocksHeard?.()]);
      throw err;
    }
    try {
      await this.deps.audit({ event: 'agent.blocked', outcome: 'success', detail: { identity, by, ...(reason ? { reason } : {}) } });
    } finally {
      // The block holds whether or not its record could be written: its live agents are stopped either way.
      await Promise.all([this.deps.stopIdentity(identity, `blocked by ${by}`), this.deps.blocksHeard?.()]);
    }
    return e;
  }

  async unblock(identity: string, by: string): Promise<InventoryEntry> {
    let e: InventoryEntry;
    try {
      e = await this.deps.inventory.unblock(identity);
    } catch (err) {
      // The unblock could not be saved and put the block back: agents of the identity that came in meanwhile go.
      if (blockPutBack(err)) {
        await Promise.all([this.deps.stopIdentity(identity, `still blocked: the unblock by ${by} could not be saved`), this.deps.blocksHeard?.()]);
      }
      throw err;
    }
    await this.deps.audit({ event: 'agent.unblocked', outcome: 'success', detail: { identity, by } });
    return e;
  }

  async dismiss(findingId: string, by: string): Promise<Finding> {
    const f = this.deps.watch.dismiss(findingId);
    if (!f) throw new WritError('WRIT_BAD_REQUEST', 'no open finding with that id', { path: 'id' });
    await this.deps.audit({ event: 'finding.dismissed', outcome: 'success', detail: { id: f.id, kind: f.kind, identity: f.identity, by } });
    return f;
  }

  findings(): Finding[] {
    return this.deps.watch.openFindings();
  }

  inventory(): InventoryEntry[] {
    return this.deps.inventory.list();
  }
}

export { identityOf };
