// The audit panel: a webview over a strict CSP with a nonce, with a `ready` handshake before anything is posted.
// Every message from the webview is parsed with the protocol's schema; every message to it is typed by it. What it
// shows and when (the log, then the live records, and whether the broker answers) is auditFeed.ts, which tests
// drive without an editor.
import * as vscode from 'vscode';
import { randomBytes } from 'node:crypto';
import { WebviewToExtension } from '../broker/protocol';
import type { AuditRecord, ExtensionToWebview } from '../broker/protocol';
import { AuditFeed } from './auditFeed';
import type { AuditFeedDeps } from './auditFeed';

export interface AuditPanelDeps extends Omit<AuditFeedDeps, 'post'> {
  extensionUri: vscode.Uri;
  stopAgent(agentId: string): Promise<void>;
  /** Tells the broker a finding is expected (IPC `finding.dismiss`); it audits `finding.dismissed`. */
  dismissFinding(id: string): void;
  exportLog(): Promise<void>;
}

export class AuditPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private readonly panelDisposables: vscode.Disposable[] = [];
  private readonly feed: AuditFeed;

  constructor(private readonly deps: AuditPanelDeps) {
    this.feed = new AuditFeed({ ...deps, post: (msg) => this.post(msg) });
  }

  get isOpen(): boolean {
    return this.panel !== undefined;
  }

  open(): void {
    if (this.panel) {
      this.panel.reveal();
      return;
    }
    const media = vscode.Uri.joinPath(this.deps.extensionUri, 'media');
    const script = vscode.Uri.joinPath(this.deps.extensionUri, 'dist', 'webview');
    const panel = vscode.window.createWebviewPanel('writ.audit', 'Writ Audit', vscode.ViewColumn.Active, {
      enableScripts: true,
      retainContextWhenHidden: true,
      // media/ holds the stylesheet and icon; dist/webview/ only the bundled panel script.
      localResourceRoots: [media, script],
    });
    this.panel = panel;
    // Before the webview is ready to load the file: records written from here on come in (and duplicates go).
    this.feed.open();
    panel.iconPath = vscode.Uri.joinPath(media, 'writ.svg');
    panel.webview.html = this.html(panel.webview, vscode.Uri.joinPath(script, 'audit.js'), vscode.Uri.joinPath(media, 'audit.css'));
    this.panelDisposables.push(
      panel.webview.onDidReceiveMessage((raw) => this.receive(raw)),
      panel.onDidDispose(() => this.closed()),
    );
  }

  /** A record the broker just wrote. */
  append(r: AuditRecord): void {
    this.feed.append(r);
  }

  agentsChanged(): void {
    this.feed.agentsChanged();
  }

  /** A new broker (which follows nothing yet), and a new log (a restart may have recovered it): follow, load again. */
  reload(): void {
    this.feed.reload();
  }

  /** The supervisor's phase: `unresponsive` (true) or not; the panel says so while it lasts. */
  brokerSilent(silent: boolean): void {
    this.feed.brokerSilent(silent);
  }

  private html(webview: vscode.Webview, script: vscode.Uri, style: vscode.Uri): string {
    const nonce = randomBytes(18).toString('base64');
    const csp = [`default-src 'none'`, `style-src ${webview.cspSource}`, `script-src 'nonce-${nonce}'`, `font-src ${webview.cspSource}`].join('; ');
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${webview.asWebviewUri(style).toString()}">
<title>Writ Audit</title>
</head>
<body>
<header class="toolbar">
  <select id="agent" aria-label="Filter by agent"><option value="">All agents</option></select>
  <select id="event" aria-label="Filter by event"><option value="">All events</option></select>
  <input id="text" type="search" placeholder="Filter text" aria-label="Filter text">
  <span id="count" class="count"></span>
  <span id="verify" class="verify" role="status"></span>
  <button id="verifyButton" type="button">Verify</button>
  <button id="exportButton" type="button">Export…</button>
</header>
<div id="note" class="note-bar" role="status" hidden></div>
<div class="head row" aria-hidden="true"><span>time</span><span>event</span><span>agent</span><span>task</span><span>scopes</span><span>detail</span><span></span></div>
<div id="viewport" class="viewport" role="table" aria-label="Audit records"><div id="spacer" class="spacer"></div></div>
<script nonce="${nonce}" src="${webview.asWebviewUri(script).toString()}"></script>
</body>
</html>`;
  }

  private post(msg: ExtensionToWebview): void {
    void this.panel?.webview.postMessage(msg);
  }

  private receive(raw: unknown): void {
    const parsed = WebviewToExtension.safeParse(raw);
    if (!parsed.success) {
      this.deps.log(`writ: ignored a panel message that did not match the protocol (${parsed.error.issues[0]?.path.join('.') || 'type'})`);
      return;
    }
    const msg = parsed.data;
    switch (msg.type) {
      case 'ready':
        this.feed.ready();
        return;
      case 'stopAgent':
        void this.deps.stopAgent(msg.agentId);
        return;
      case 'dismissFinding':
        this.deps.dismissFinding(msg.id);
        return;
      case 'export':
        void this.deps.exportLog();
        return;
      case 'verify':
        void this.feed.verify();
        return;
    }
  }

  private closed(): void {
    if (this.panel) this.feed.close();
    this.panel = undefined;
    for (const d of this.panelDisposables.splice(0)) d.dispose();
  }

  dispose(): void {
    this.panel?.dispose();
    this.closed();
  }
}
