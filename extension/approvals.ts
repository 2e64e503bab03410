// In-editor approvals: one notification at a time (the rest queue, and the notification shows how many), the
// review steps, and workspace rules. A dismissed notification or review is a denial; `approval.closed` from
// the broker ends a request, and a late click on its notification is ignored (a toast cannot be taken down).
import * as vscode from 'vscode';
import type { ApprovalDecision, ApprovalRequest } from '../broker/protocol';
import { APPROVE, MODE_ITEMS, REVIEW, DENY, approvalPrompt, decisionLine, describeTtl, pendingItems, reviewTitle, scopeItems, scopePlaceholder, ttlChoices } from './approvalCard';
import { matchRule, ruleDecision } from './rules';
import type { WorkspaceRule } from './rules';
import { inert } from './inert';

export interface ApprovalDeps {
  post(decision: ApprovalDecision): boolean;
  log(line: string): void;
  /** Rules that apply now: empty in an untrusted workspace. */
  rules(): Promise<WorkspaceRule[]>;
  saveRule(rule: WorkspaceRule): Promise<void>;
  changed(): void;
}

export class ApprovalQueue implements vscode.Disposable {
  /** Requests waiting for the developer, oldest first (Map keeps insertion order). */
  private readonly waiting = new Map<string, ApprovalRequest>();
  /** The request whose notification or review is on screen; the next one waits for it. */
  private active: string | undefined;
  private readonly requestListeners = new Set<(r: ApprovalRequest) => void>();

  constructor(private readonly deps: ApprovalDeps) {}

  get pending(): ApprovalRequest[] {
    return [...this.waiting.values()];
  }

  onRequest(listener: (r: ApprovalRequest) => void): vscode.Disposable {
    this.requestListeners.add(listener);
    return new vscode.Disposable(() => this.requestListeners.delete(listener));
  }

  async receive(r: ApprovalRequest): Promise<void> {
    const rule = matchRule(await this.deps.rules(), r);
    if (rule) {
      this.deps.log(decisionLine(r, 'approved by a workspace rule'));
      this.deps.post(ruleDecision(rule, r));
      return;
    }
    this.waiting.set(r.requestId, r);
    for (const l of this.requestListeners) l(r);
    this.deps.changed();
    this.pump();
  }

  /** The broker ended the request (decided, timed out, agent gone or revoked). */
  closed(requestId: string, reason: string): void {
    const r = this.waiting.get(requestId);
    if (!r) return;
    this.waiting.delete(requestId);
    if (reason !== 'decided') this.deps.log(decisionLine(r, `closed (${reason})`));
    if (this.active === requestId) this.active = undefined;
    this.deps.changed();
    this.pump();
  }

  /** A new broker run: its requests died with the old one. */
  clear(): void {
    this.waiting.clear();
    this.active = undefined;
    this.deps.changed();
  }

  /** Decide a waiting request (the notification, the review, the API). False when it is no longer waiting. */
  decide(decision: ApprovalDecision): boolean {
    const r = this.waiting.get(decision.requestId);
    if (!r) return false;
    this.waiting.delete(decision.requestId);
    if (this.active === decision.requestId) this.active = undefined;
    const how = decision.decision === 'deny' ? 'denied' : `approved (${decision.mode}${decision.scopes ? `, ${decision.scopes.length} of ${r.scopes.length} scopes` : ''})`;
    this.deps.log(decisionLine(r, how));
    this.deps.post(decision);
    this.deps.changed();
    this.pump();
    return true;
  }

  /** "Show pending approvals": pick one to review now. */
  async showPending(): Promise<void> {
    const items = pendingItems(this.pending);
    if (items.length === 0) {
      void vscode.window.showInformationMessage('Writ: no approvals are waiting.');
      return;
    }
    const picked = await vscode.window.showQuickPick(items, { title: 'Writ: approvals waiting', placeHolder: 'Pick a request to review' });
    if (!picked) return;
    this.active = picked.r.requestId;
    await this.review(picked.r);
  }

  private pump(): void {
    if (this.active !== undefined) return;
    const next = this.waiting.values().next();
    if (next.done) return;
    void this.notify(next.value);
  }

  private async notify(r: ApprovalRequest): Promise<void> {
    this.active = r.requestId;
    const prompt = approvalPrompt(r, this.waiting.size - 1);
    const choice = await vscode.window.showInformationMessage(prompt.message, { modal: false }, ...prompt.buttons);
    // Late clicks (the request was closed or decided elsewhere meanwhile) are ignored.
    if (!this.waiting.has(r.requestId)) return;
    if (choice === APPROVE && prompt.buttons.includes(APPROVE)) this.decide({ requestId: r.requestId, decision: 'approve', mode: 'task' });
    else if (choice === REVIEW) await this.review(r);
    else this.decide({ requestId: r.requestId, decision: 'deny', reason: choice === DENY ? 'denied in the editor' : 'dismissed in the editor' });
  }

  /** Narrow the scopes, pick a lifetime, choose how long the approval holds. Escape at any step denies. */
  async review(r: ApprovalRequest): Promise<void> {
    const deny = (reason: string) => void this.decide({ requestId: r.requestId, decision: 'deny', reason });
    const title = reviewTitle(r);
    const scopes = await vscode.window.showQuickPick(scopeItems(r), { title, canPickMany: true, placeHolder: scopePlaceholder(r), ignoreFocusOut: true });
    if (!this.waiting.has(r.requestId)) return;
    if (!scopes || scopes.length === 0) return deny(scopes ? 'no scopes left after review' : 'review dismissed');
    const ttls = ttlChoices(r.ttl, r.maxTtl).map((t, i) => ({ label: describeTtl(t), description: i === 0 ? 'as asked' : '', ttl: t }));
    const ttl = await vscode.window.showQuickPick(ttls, { title, placeHolder: 'Lifetime of each token', ignoreFocusOut: true });
    if (!this.waiting.has(r.requestId)) return;
    if (!ttl) return deny('review dismissed');
    const mode = await vscode.window.showQuickPick(MODE_ITEMS.map((m) => ({ ...m })), { title, placeHolder: 'How long does this approval hold?', ignoreFocusOut: true });
    if (!this.waiting.has(r.requestId)) return;
    if (!mode) return deny('review dismissed');
    const chosen = scopes.map((s) => s.scope);
    if (mode.mode === 'workspace') {
      try {
        await this.deps.saveRule({ agent: r.agent.name, audience: r.audience, scopes: chosen, mode: 'session', ttl: ttl.ttl });
      } catch (e) {
        // The error can carry the rules file's text (agents write it): inert, so no link in it runs a command.
        void vscode.window.showWarningMessage(inert(`Writ: the workspace rule was not saved: ${(e as Error).message}. Approved for this session only.`));
      }
    }
    this.decide({
      requestId: r.requestId,
      decision: 'approve',
      ...(chosen.length === r.scopes.length ? {} : { scopes: chosen }),
      ttl: ttl.ttl,
      mode: mode.mode === 'task' ? 'task' : 'session',
    });
  }

  dispose(): void {
    this.waiting.clear();
    this.requestListeners.clear();
  }
}
