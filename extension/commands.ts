// The palette commands, the status bar's menu, and the tree's inline actions. Each is thin: the work is in
// the context (ctx.ts) or in the pure modules.
import { inert, quoted } from './inert';
import * as vscode from 'vscode';
import { createWriteStream } from 'node:fs';
import type { AgentView, FindingView } from '../broker/protocol';
import { exportAuditFile } from '../broker/audit/export';
import type { WritContext } from './ctx';
import type { WritNode } from './tree';
import { activeAgents } from './agentState';
import { identityPickText, kindLabel, newestFirst } from './oversight';
import { FORMAT_ITEMS, exportFileName, exportFilter, parseTimeInput } from './exportOptions';
import type { ExportRange } from './exportOptions';
import { agentPickText, agentRowText, findingPickText, findingRowText, findingTitle, keepPlaces, menuRows, noAgentsRowText, rowsSignature } from './statusMenu';
import type { MenuRow } from './statusMenu';

export const COMMAND = {
  showAgents: 'writ.showAgents',
  stopAgent: 'writ.stopAgent',
  stopAllAgents: 'writ.stopAllAgents',
  openAuditPanel: 'writ.openAuditPanel',
  exportAuditLog: 'writ.exportAuditLog',
  verifyAuditLog: 'writ.verifyAuditLog',
  restartBroker: 'writ.restartBroker',
  showPendingApprovals: 'writ.showPendingApprovals',
  statusBarClick: 'writ.statusBarClick',
  revokeGrant: 'writ.revokeGrant',
  revokeToken: 'writ.revokeToken',
  blockAgent: 'writ.blockAgent',
  unblockAgent: 'writ.unblockAgent',
  dismissFinding: 'writ.dismissFinding',
  trustWorkspaceRules: 'writ.trustWorkspaceRules',
} as const;

const STOP_BUTTON: vscode.QuickInputButton = { iconPath: new vscode.ThemeIcon('debug-stop'), tooltip: 'Stop' };
const STOP_AGENT_BUTTON: vscode.QuickInputButton = { iconPath: new vscode.ThemeIcon('debug-stop'), tooltip: 'Stop agent' };
const BLOCK_BUTTON: vscode.QuickInputButton = { iconPath: new vscode.ThemeIcon('circle-slash'), tooltip: 'Block' };
const DISMISS_BUTTON: vscode.QuickInputButton = { iconPath: new vscode.ThemeIcon('check'), tooltip: 'Dismiss as expected' };

/** A status menu item; `key` names the row (statusMenu.ts) across rebuilds. */
type MenuItem = vscode.QuickPickItem & { key: string; run?: () => unknown; agent?: AgentView; finding?: FindingView };

/** The identity a tree row or a command argument names: an inventory row, an agent, a finding, or the id itself. */
function identityOf(node: WritNode | string | undefined): string | undefined {
  if (typeof node === 'string') return node;
  if (node?.kind === 'identity') return node.entry.id;
  if (node?.kind === 'finding') return node.finding.identity;
  if (node?.kind === 'agent') return node.agent.identity;
  return undefined;
}

export function registerCommands(ctx: WritContext): void {
  const reg = (id: string, fn: (...args: never[]) => unknown) => ctx.ext.subscriptions.push(vscode.commands.registerCommand(id, fn));

  reg(COMMAND.showAgents, () => showAgents(ctx));
  reg(COMMAND.trustWorkspaceRules, async () => {
    try {
      if (await ctx.trustWorkspaceRules()) void vscode.window.showInformationMessage('Writ: the workspace rules apply.');
    } catch (e) {
      // The rules file's problem (agents write the file): inert, so no link in it runs a command.
      void vscode.window.showErrorMessage(inert(`Writ: ${(e as Error).message}`));
    }
  });
  reg(COMMAND.stopAgent, async (node?: WritNode | string) => {
    // On a finding or an inventory row, Stop means every live agent of that identity.
    if (typeof node === 'object' && (node.kind === 'finding' || node.kind === 'identity')) return ctx.stopIdentity(identityOf(node)!);
    const id = typeof node === 'string' ? node : node?.kind === 'agent' ? node.agent.id : await pickAgent(ctx);
    if (id) await ctx.stopAgent(id);
  });
  reg(COMMAND.blockAgent, async (node?: WritNode | string) => {
    const identity = identityOf(node) ?? (await pickIdentity(ctx, false));
    if (identity) await ctx.blockIdentity(identity, 'blocked in the editor');
  });
  reg(COMMAND.unblockAgent, async (node?: WritNode | string) => {
    const identity = identityOf(node) ?? (await pickIdentity(ctx, true));
    if (identity) await ctx.unblockIdentity(identity);
  });
  reg(COMMAND.dismissFinding, async (node?: WritNode | string) => {
    const id = typeof node === 'string' ? node : node?.kind === 'finding' ? node.finding.id : await pickFinding(ctx);
    if (id) await ctx.dismissFinding(id);
  });
  reg(COMMAND.stopAllAgents, async () => {
    const n = activeAgents(ctx.agents()).length;
    const sure = await vscode.window.showWarningMessage(inert(`Writ: stop all agents${n ? ` (${n} active)` : ''}? Every grant and live token is revoked.`), { modal: true }, 'Stop All');
    if (sure === 'Stop All' && (await ctx.revoke({ kind: 'all' }, 'stop all in the editor'))) ctx.output.info('stopped all agents');
  });
  reg(COMMAND.revokeGrant, async (node?: WritNode) => {
    if (node?.kind === 'grant') await ctx.revoke({ kind: 'grant', id: node.grant.id }, 'revoked in the editor');
  });
  reg(COMMAND.revokeToken, async (node?: WritNode) => {
    if (node?.kind === 'token') await ctx.revoke({ kind: 'token', jti: node.token.jti }, 'revoked in the editor');
  });
  reg(COMMAND.openAuditPanel, () => ctx.panel.open());
  reg(COMMAND.exportAuditLog, () => exportLog(ctx));
  reg(COMMAND.verifyAuditLog, () => verifyLog(ctx));
  reg(COMMAND.restartBroker, () => ctx.restartBroker());
  reg(COMMAND.showPendingApprovals, () => ctx.approvals.showPending());
  reg(COMMAND.statusBarClick, () => {
    const k = ctx.phase.kind;
    if (k === 'error' || k === 'stopped') return ctx.restartBroker();
    if (k === 'unresponsive') return ctx.offerRestartSilent();
    return ctx.config.statusBarClick === 'auditPanel' ? ctx.panel.open() : showAgents(ctx);
  });
}

async function pickAgent(ctx: WritContext): Promise<string | undefined> {
  const live = ctx.agents().filter((a) => !a.revoked);
  if (live.length === 0) {
    void vscode.window.showInformationMessage('Writ: no agents to stop.');
    return undefined;
  }
  const byId = new Map(ctx.agents().map((a) => [a.id, a]));
  const picked = await vscode.window.showQuickPick(
    live.map((a) => ({ ...agentPickText(a, byId), id: a.id })),
    { title: 'Writ: stop an agent', placeHolder: 'Its grants, tokens and sub-agents are revoked' },
  );
  return picked?.id;
}

/** An inventory identity to block (not blocked yet) or to unblock (blocked). */
async function pickIdentity(ctx: WritContext, blocked: boolean): Promise<string | undefined> {
  const rows = ctx.inventory().filter((e) => (e.status === 'blocked') === blocked);
  if (rows.length === 0) {
    void vscode.window.showInformationMessage(blocked ? 'Writ: no agent is blocked.' : 'Writ: no agent to block yet.');
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    rows.map((e) => ({ ...identityPickText(e), id: e.id })),
    {
      title: blocked ? 'Writ: unblock an agent' : 'Writ: block an agent',
      placeHolder: blocked ? 'It may ask for credentials again' : 'Its live sessions are stopped and its requests refused, across restarts, until unblocked',
    },
  );
  return picked?.id;
}

async function pickFinding(ctx: WritContext): Promise<string | undefined> {
  const open = newestFirst(ctx.findings());
  if (open.length === 0) {
    void vscode.window.showInformationMessage('Writ: no findings are open.');
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    open.map((f) => ({ ...findingPickText(ctx.findingLabel(f), f), id: f.id })),
    { title: 'Writ: dismiss a finding as expected', placeHolder: 'The dismissal is audited; the watch may raise it again later' },
  );
  return picked?.id;
}

/** The status bar menu: open findings (Stop agent / Block / Dismiss), live agents (each with Stop), then the actions. */
function showAgents(ctx: WritContext): Promise<void> {
  return new Promise((resolve) => {
    const qp = vscode.window.createQuickPick<MenuItem>();
    qp.title = 'Writ: agents';
    qp.placeholder = 'Select a finding or an agent to act on it, or an action';
    // A rebuild keeps the scroll position and the active row (VS Code would go back to the top and the first row).
    qp.keepScrollPosition = true;
    const fresh = (): MenuRow[] => menuRows(newestFirst(ctx.findings()), ctx.agents().filter((a) => !a.revoked));
    const item = (r: MenuRow, byId: ReadonlyMap<string, AgentView>): MenuItem => {
      switch (r.kind) {
        case 'separator':
          return { key: r.key, label: r.label, kind: vscode.QuickPickItemKind.Separator };
        case 'finding': {
          const f = r.finding;
          const text = findingRowText(ctx.findingLabel(f), f, r.ended);
          if (r.ended) return { key: r.key, ...text };
          return { key: r.key, ...text, buttons: [STOP_AGENT_BUTTON, BLOCK_BUTTON, DISMISS_BUTTON], finding: f };
        }
        case 'agent': {
          const a = r.agent;
          // Ended: revoked (stopped), or forgotten by the broker (it left with nothing granted).
          if (r.ended) return { key: r.key, ...agentRowText(a, true, byId) };
          return { key: r.key, ...agentRowText(a, false, byId), buttons: [STOP_BUTTON], agent: a };
        }
        case 'no-agents':
          return { key: r.key, ...noAgentsRowText(r.ended, ctx.notice()) };
        case 'action':
          if (r.action === 'stop-all') return { key: r.key, label: '$(debug-stop) Stop all agents', run: () => vscode.commands.executeCommand(COMMAND.stopAllAgents) };
          if (r.action === 'audit-panel') return { key: r.key, label: '$(output) Open audit panel', run: () => ctx.panel.open() };
          return { key: r.key, label: '$(bell) Show pending approvals', description: pendingText(), run: () => ctx.approvals.showPending() };
      }
    };
    const pendingText = (): string => (ctx.approvals.pending.length ? `${ctx.approvals.pending.length} waiting` : 'none');
    // Rebuild only when what the menu shows changes: the context changes on every audit record (a busy agent
    // mints every second), and every rebuild replaces the rows in the window, under the cursor too.
    // (Token counts in the descriptions may lag while the menu is open; the set of agents never does.)
    const signature = (rows: readonly MenuRow[]): string => JSON.stringify([rowsSignature(rows), pendingText(), ctx.notice() ?? '']);
    let rows = fresh();
    let current = signature(rows);
    const render = (previous: readonly MenuItem[]): MenuItem[] => {
      const byId = new Map(ctx.agents().map((a) => [a.id, a]));
      const before = new Map(previous.map((i) => [i.key, i]));
      // An item that shows the same as before stays the same object, so the active row is still one of the items.
      return rows.map((r) => {
        const next = item(r, byId);
        const old = before.get(r.key);
        return old && sameItem(old, next) ? old : next;
      });
    };
    qp.items = render([]);
    const sub = ctx.onDidChange(() => {
      const next = keepPlaces(rows, fresh());
      const sig = signature(next);
      if (sig === current) return;
      rows = next;
      current = sig;
      const active = new Set(qp.activeItems.map((i) => i.key));
      qp.items = render(qp.items);
      qp.activeItems = qp.items.filter((i) => active.has(i.key));
    });
    qp.onDidTriggerItemButton((e) => {
      const f = e.item.finding;
      if (f) {
        if (e.button === STOP_AGENT_BUTTON) void ctx.stopIdentity(f.identity);
        else if (e.button === BLOCK_BUTTON) void ctx.blockIdentity(f.identity, `after a ${kindLabel(f.kind)} finding (${f.id})`);
        else if (e.button === DISMISS_BUTTON) void ctx.dismissFinding(f.id);
        return;
      }
      if (e.item.agent) void ctx.stopAgent(e.item.agent.id);
    });
    qp.onDidAccept(async () => {
      const item = qp.selectedItems[0];
      qp.hide();
      if (item?.run) await item.run();
      else if (item?.finding) await actOnFinding(ctx, item.finding);
      else if (item?.agent) {
        const sure = await vscode.window.showWarningMessage(inert(`Writ: stop ${quoted(item.agent.name)}? Its grants, tokens and sub-agents are revoked, and its process is ended where Writ started it (writ exec).`), 'Stop');
        if (sure === 'Stop') await ctx.stopAgent(item.agent.id);
      }
    });
    qp.onDidHide(() => {
      sub.dispose();
      qp.dispose();
      resolve();
    });
    qp.show();
  });
}

/** Two items that show the same thing (label, texts, buttons) and act on the same finding or agent. */
function sameItem(a: MenuItem, b: MenuItem): boolean {
  const buttons = (i: MenuItem) => i.buttons ?? [];
  return (
    a.label === b.label &&
    a.kind === b.kind &&
    a.description === b.description &&
    a.detail === b.detail &&
    a.finding?.id === b.finding?.id &&
    a.agent?.id === b.agent?.id &&
    buttons(a).length === buttons(b).length &&
    buttons(a).every((x, i) => x === buttons(b)[i])
  );
}

/** A finding picked in the status menu: choose what to do about it. */
async function actOnFinding(ctx: WritContext, f: FindingView): Promise<void> {
  const choices = [
    { label: '$(debug-stop) Stop agent', detail: 'Revoke its live sessions, grants and tokens now', run: () => ctx.stopIdentity(f.identity) },
    { label: '$(circle-slash) Block', detail: 'Stop it and refuse its requests, across restarts, until unblocked', run: () => ctx.blockIdentity(f.identity, `after a ${kindLabel(f.kind)} finding (${f.id})`) },
    { label: '$(check) Dismiss as expected', detail: 'Close the finding (audited); the watch may raise it again later', run: () => ctx.dismissFinding(f.id) },
  ];
  const picked = await vscode.window.showQuickPick(choices, { title: findingTitle(ctx.findingLabel(f), f) });
  if (picked) await picked.run();
}

async function exportLog(ctx: WritContext): Promise<void> {
  const format = await vscode.window.showQuickPick(FORMAT_ITEMS.map((f) => ({ ...f })), { title: 'Writ: export the audit log (1/3): format' });
  if (!format) return;
  const ranges: (vscode.QuickPickItem & { kind2: ExportRange['kind'] })[] = [
    ...(ctx.session ? [{ label: 'This session', description: ctx.session, kind2: 'session' as const }] : []),
    { label: 'A time range…', kind2: 'time' },
    { label: 'All records', detail: format.format === 'jsonl' ? 'A full JSON Lines export verifies like the log itself.' : '', kind2: 'all' },
  ];
  const rangePick = await vscode.window.showQuickPick(ranges, { title: 'Writ: export the audit log (2/3): records' });
  if (!rangePick) return;
  let range: ExportRange;
  if (rangePick.kind2 === 'session') range = { kind: 'session', session: ctx.session! };
  else if (rangePick.kind2 === 'all') range = { kind: 'all' };
  else {
    const validate = (v: string) => (parseTimeInput(v) === null ? 'An ISO 8601 time, e.g. 2026-01-31T09:00 or 2026-01-31' : undefined);
    const since = await vscode.window.showInputBox({ title: 'From (inclusive, empty = the beginning)', placeHolder: '2026-01-31T09:00', validateInput: validate });
    if (since === undefined) return;
    const until = await vscode.window.showInputBox({ title: 'Until (exclusive, empty = now)', placeHolder: '2026-01-31T18:00', validateInput: validate });
    if (until === undefined) return;
    range = { kind: 'time', since: parseTimeInput(since) ?? undefined, until: parseTimeInput(until) ?? undefined };
  }
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
  const name = exportFileName(format.format, new Date());
  const target = await vscode.window.showSaveDialog({
    title: 'Writ: export the audit log (3/3): file',
    ...(folder ? { defaultUri: vscode.Uri.joinPath(folder, name) } : {}),
    saveLabel: 'Export',
  });
  if (!target) return;
  if (target.scheme !== 'file') {
    void vscode.window.showErrorMessage('Writ: export to a local file.');
    return;
  }
  try {
    const out = createWriteStream(target.fsPath, { mode: 0o600 });
    const done = new Promise<void>((resolve, reject) => {
      out.on('error', reject);
      out.on('finish', () => resolve());
    });
    const r = await exportAuditFile(ctx.auditPath, out, format.format, exportFilter(range));
    out.end();
    await done;
    ctx.output.info(`exported ${r.exported} audit records as ${format.format} to ${target.fsPath}`);
    const open = await vscode.window.showInformationMessage(inert(`Writ: exported ${r.exported} records to ${target.fsPath}.`), 'Open');
    if (open === 'Open') await vscode.window.showTextDocument(target);
  } catch (e) {
    void vscode.window.showErrorMessage(inert(`Writ: export failed: ${(e as Error).message}`));
  }
}

async function verifyLog(ctx: WritContext): Promise<void> {
  const which = await vscode.window.showQuickPick(
    [
      { label: 'The live audit log', description: ctx.auditPath, live: true },
      { label: 'A file…', description: 'e.g. a JSON Lines export', live: false },
    ],
    { title: 'Writ: verify an audit log' },
  );
  if (!which) return;
  let file = ctx.auditPath;
  if (!which.live) {
    const picked = await vscode.window.showOpenDialog({ canSelectMany: false, openLabel: 'Verify', filters: { 'Audit log': ['jsonl'], 'All files': ['*'] } });
    if (!picked?.[0]) return;
    file = picked[0].fsPath;
  }
  const result = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'Writ: verifying the audit log…' }, () => ctx.verify(file));
  ctx.output.info(`verify ${file}: ${result.state === 'running' ? '' : result.message}`);
  // The checker's words quote the file (a path, a record's fields): inert, so no link in them runs a command.
  if (result.state === 'intact') void vscode.window.showInformationMessage(inert(`Writ: ${result.message}.`));
  else if (result.state === 'broken') void vscode.window.showErrorMessage(inert(`Writ: ${result.message}`));
  else if (result.state === 'unverifiable') void vscode.window.showWarningMessage(inert(`Writ: ${result.message}`));
  else if (result.state === 'error') void vscode.window.showWarningMessage(inert(`Writ: could not verify: ${result.message}`));
}
