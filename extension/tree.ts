// The "Writ" view: agents → grants → live tokens (with time left). Inline Stop / Revoke through `contextValue`
// and the view/item/context menus in package.json.
import * as vscode from 'vscode';
import type { AgentView, GrantView } from '../broker/protocol';
import { agentDescription, timeLeft } from './agentState';
import type { LiveToken } from './agentState';

export type WritNode =
  | { kind: 'agent'; agent: AgentView }
  | { kind: 'grant'; grant: GrantView }
  | { kind: 'token'; token: LiveToken }
  | { kind: 'message'; text: string };

export interface TreeSource {
  agents(): AgentView[];
  grantsOf(agentId: string): GrantView[];
  tokensOf(grantId: string): LiveToken[];
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

  getChildren(node?: WritNode): WritNode[] {
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
    if (node.kind === 'agent') return this.source.grantsOf(node.agent.id).map((grant) => ({ kind: 'grant', grant }));
    if (node.kind === 'grant') return this.source.tokensOf(node.grant.id).map((token) => ({ kind: 'token', token }));
    return [];
  }

  getTreeItem(node: WritNode): vscode.TreeItem {
    const none = vscode.TreeItemCollapsibleState.None;
    switch (node.kind) {
      case 'message':
        return new vscode.TreeItem(node.text, none);
      case 'agent': {
        const a = node.agent;
        const byId = new Map(this.source.agents().map((x) => [x.id, x]));
        const item = new vscode.TreeItem(a.name, a.grants > 0 ? vscode.TreeItemCollapsibleState.Expanded : none);
        item.id = `agent:${a.id}`;
        item.description = agentDescription(a, byId);
        item.tooltip = `${a.name} (${a.kind}${a.version ? ` ${a.version}` : ''})\n${a.id}`;
        item.iconPath = new vscode.ThemeIcon(a.revoked ? 'circle-slash' : a.connected ? 'robot' : 'debug-pause');
        item.contextValue = a.revoked ? 'writ.agent.stopped' : 'writ.agent';
        return item;
      }
      case 'grant': {
        const g = node.grant;
        const item = new vscode.TreeItem(g.task, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `grant:${g.id}`;
        const left = g.expiresAt - Math.floor(Date.now() / 1000);
        item.description = `${g.mode} · ${g.audience} · ${timeLeft(left)}`;
        item.tooltip = `${g.id}\n${g.scopes.join('\n')}\naudience ${g.audience}`;
        item.iconPath = new vscode.ThemeIcon('key');
        item.contextValue = 'writ.grant';
        return item;
      }
      case 'token': {
        const t = node.token;
        const item = new vscode.TreeItem(t.jti, none);
        item.id = `token:${t.jti}`;
        item.description = `${timeLeft(t.expiresAt - Math.floor(Date.now() / 1000))} left · ${t.scopes.join(' ')}`;
        item.iconPath = new vscode.ThemeIcon('symbol-key');
        item.contextValue = 'writ.token';
        return item;
      }
    }
  }

  dispose(): void {
    clearInterval(this.ticker);
    this.subscription.dispose();
    this.changed.dispose();
  }
}
