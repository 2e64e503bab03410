// The "Writ" views. Agents: this run's agents → their open findings, grants → live tokens (with time left), asked
// of the broker when a grant is shown expanded.
// Inventory: every agent identity the broker has seen across runs → its open findings. Inline Stop / Revoke /
// Block / Unblock / Dismiss through `contextValue` and the view/item/context menus in package.json.
import * as vscode from 'vscode';
import type { AgentView, FindingView, GrantView, InventoryView, TokenView } from '../broker/protocol';
import { agentRow, grantChildren, grantRow, messageRow, tokenRow } from './agentState';
import type { TokenPage } from './agentState';
import { findingRow, identityRow, inventoryOrder, newestFirst } from './oversight';

export type WritNode =
  | { kind: 'agent'; agent: AgentView }
  | { kind: 'grant'; grant: GrantView }
  | { kind: 'token'; token: TokenView }
  | { kind: 'identity'; entry: InventoryView }
  | { kind: 'finding'; finding: FindingView }
  | { kind: 'message'; text: string };

export interface TreeSource {
  agents(): AgentView[];
  grantsOf(agentId: string): GrantView[];
  /** A grant's live tokens, newest first (capped), from the broker; undefined when it did not answer. */
  tokensOf(grantId: string): Promise<TokenPage | undefined>;
  findings(): FindingView[];
  inventory(): InventoryView[];
  /** Why there is nothing to show (broker not running), or undefined when running. */
  notice(): string | undefined;
  readonly onDidChange: vscode.Event<void>;
}

export class AgentsTree implements vscode.TreeDataProvider<WritNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<WritNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subscription: vscode.Disposable;
  /** Token rows show time left: refresh while any are live. */
  private readonly ticker: NodeJS.Timeout;

  constructor(private readonly source: TreeSource) {
    this.subscription = source.onDidChange(() => this.changed.fire(undefined));
    this.ticker = setInterval(() => {
      if (source.agents().some((a) => a.liveTokens > 0)) this.changed.fire(undefined);
    }, 5000);
  }

  getChildren(node?: WritNode): WritNode[] | Promise<WritNode[]> {
    if (!node) {
      const notice = this.source.notice();
      if (notice) return [{ kind: 'message', text: notice }];
      // Root agents first, each followed by its sub-agents (by parent chain length).
      return this.source
        .agents()
        .slice()
        .sort((a, b) => Number(a.revoked) - Number(b.revoked) || a.parents.length - b.parents.length)
        .map((agent) => ({ kind: 'agent', agent }));
    }
    if (node.kind === 'agent') {
      return [
        ...newestFirst(this.source.findings().filter((f) => f.agentId === node.agent.id)).map((finding): WritNode => ({ kind: 'finding', finding })),
        ...this.source.grantsOf(node.agent.id).map((grant): WritNode => ({ kind: 'grant', grant })),
      ];
    }
    // Asked only for a grant shown expanded: VS Code calls this when it draws the grant's children.
    if (node.kind === 'grant') return this.source.tokensOf(node.grant.id).then(grantChildren);
    return [];
  }

  getTreeItem(node: WritNode): vscode.TreeItem {
    const none = vscode.TreeItemCollapsibleState.None;
    switch (node.kind) {
      case 'message':
        return new vscode.TreeItem(messageRow(node.text).label, none);
      case 'agent': {
        const a = node.agent;
        const byId = new Map(this.source.agents().map((x) => [x.id, x]));
        const findings = this.source.findings().filter((f) => f.agentId === a.id).length;
        const parent = a.grants > 0 || findings > 0;
        // Agent text (name, kind, version) is made printable and one line in the pure row (agentState.ts).
        const row = agentRow(a, byId, findings);
        const item = new vscode.TreeItem(row.label, parent ? vscode.TreeItemCollapsibleState.Expanded : none);
        // VS Code keeps the collapsible state it first drew for an id: an agent drawn before its first grant would
        // stay closed once the grant came. A leaf has an id of its own, so the agent with children is a new item.
        item.id = parent ? `agent:${a.id}` : `agent:${a.id}:leaf`;
        item.description = row.description;
        item.tooltip = row.tooltip;
        item.iconPath = findings > 0 && !a.revoked
          ? new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground'))
          : new vscode.ThemeIcon(a.revoked ? 'circle-slash' : a.connected ? 'robot' : 'debug-pause');
        item.contextValue = a.revoked ? 'writ.agent.stopped' : 'writ.agent';
        return item;
      }
      case 'grant': {
        const g = node.grant;
        const row = grantRow(g, Math.floor(Date.now() / 1000));
        const item = new vscode.TreeItem(row.label, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `grant:${g.id}`;
        item.description = row.description;
        item.tooltip = row.tooltip;
        item.iconPath = new vscode.ThemeIcon('key');
        item.contextValue = 'writ.grant';
        return item;
      }
      case 'token': {
        const t = node.token;
        const row = tokenRow(t, Math.floor(Date.now() / 1000));
        const item = new vscode.TreeItem(row.label, none);
        item.id = `token:${t.jti}`;
        item.description = row.description;
        item.iconPath = new vscode.ThemeIcon('symbol-key');
        item.contextValue = 'writ.token';
        return item;
      }
      case 'finding':
        return findingItem(node.finding);
      case 'identity':
        return identityItem(node.entry, 0);
    }
  }

  dispose(): void {
    clearInterval(this.ticker);
    this.subscription.dispose();
    this.changed.dispose();
  }
}

/** A finding row: its kind, what the agent did, and an inline Dismiss (contextValue `writ.finding`). */
function findingItem(f: FindingView): vscode.TreeItem {
  const row = findingRow(f);
  const item = new vscode.TreeItem(row.label, vscode.TreeItemCollapsibleState.None);
  item.id = `finding:${f.id}`;
  item.description = row.description;
  item.tooltip = row.tooltip;
  item.iconPath = new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground'));
  item.contextValue = 'writ.finding';
  return item;
}

/** An inventory row; `writ.identity` offers Block, `writ.identity.blocked` Unblock. */
function identityItem(e: InventoryView, findings: number): vscode.TreeItem {
  const row = identityRow(e, findings, Date.now());
  const item = new vscode.TreeItem(row.label, findings > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
  item.id = `identity:${e.id}`;
  item.description = row.description;
  item.tooltip = row.tooltip;
  const icon = { active: 'robot', idle: 'debug-pause', stopped: 'circle-slash', blocked: 'error' }[e.status];
  item.iconPath = findings > 0 && e.status !== 'blocked' ? new vscode.ThemeIcon('warning', new vscode.ThemeColor('list.warningForeground')) : new vscode.ThemeIcon(icon);
  item.contextValue = e.status === 'blocked' ? 'writ.identity.blocked' : 'writ.identity';
  return item;
}

/** The "Inventory" view: every identity across runs (blocked first), each with its open findings. */
export class InventoryTree implements vscode.TreeDataProvider<WritNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<WritNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly source: TreeSource) {
    this.subscription = source.onDidChange(() => this.changed.fire(undefined));
  }

  getChildren(node?: WritNode): WritNode[] {
    if (!node) {
      const notice = this.source.notice();
      if (notice && this.source.inventory().length === 0) return [{ kind: 'message', text: notice }];
      return inventoryOrder(this.source.inventory()).map((entry) => ({ kind: 'identity', entry }));
    }
    if (node.kind === 'identity') return newestFirst(this.source.findings().filter((f) => f.identity === node.entry.id)).map((finding) => ({ kind: 'finding', finding }));
    return [];
  }

  getTreeItem(node: WritNode): vscode.TreeItem {
    if (node.kind === 'identity') return identityItem(node.entry, this.source.findings().filter((f) => f.identity === node.entry.id).length);
    if (node.kind === 'finding') return findingItem(node.finding);
    return new vscode.TreeItem(node.kind === 'message' ? messageRow(node.text).label : '', vscode.TreeItemCollapsibleState.None);
  }

  dispose(): void {
    this.subscription.dispose();
    this.changed.dispose();
  }
}
