// The audit panel: a webview that shows the log and then the records the broker writes, which it follows only
// while open (the editor pays for the stream only then), over a strict CSP with a nonce, with a `ready` handshake
// before anything is posted. Every message from the webview is parsed with the protocol's schema; every message
// to it is typed by it.
import * as vscode from 'vscode';
import { randomBytes } from 'node:crypto';
import { AuditRecord, WebviewToExtension } from '../broker/protocol';
import type { ExtensionToWebview, VerifyView } from '../broker/protocol';
import { readAuditLines, tailStart } from '../broker/audit/lines';
import { MAX_PANEL_RECORDS } from './auditRows';

/** Records posted per message while loading the file: keeps each postMessage small. */
const LOAD_CHUNK = 5000;

export interface AuditPanelDeps {
  extensionUri: vscode.Uri;
  /** The live log of this window's broker. */
  auditPath(): string;
  /**
   * Follow the broker's audit records (on) or stop (off). Resolves once the broker follows, or at once when there
   * is none: the file is read only after, so no record falls between the file and the stream.
   */
  follow(on: boolean): Promise<void>;
  /** Agents that can be stopped now (live, not revoked): only their rows offer Stop. */
  liveAgents(): string[];
  verify(): Promise<VerifyView>;
  stopAgent(agentId: string): Promise<void>;
  /** Tells the broker a finding is expected (IPC `finding.dismiss`); it audits `finding.dismissed`. */
  dismissFinding(id: string): void;
  exportLog(): Promise<void>;
  log(line: string): void;
}

export class AuditPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;
  private readonly panelDisposables: vscode.Disposable[] = [];
  /** False until the webview said `ready`, and while the file is being loaded: live records wait in `backlog`. */
  private streaming = false;
  private backlog: AuditRecord[] = [];
  private lastSeq = -1;
  /** The latest follow(true): a load waits for it. */
  private following: Promise<void> = Promise.resolve();
  /** The webview said `ready` (it can be loaded), and how many loads were started: only the latest may post. */
  private webviewReady = false;
  private loads = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  /** The live agents last posted: state refreshes come every 100 ms while agents work, changes rarely. */
  private postedLive: string | undefined;

  constructor(private readonly deps: AuditPanelDeps) {}

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
    this.following = this.deps.follow(true);
    panel.iconPath = vscode.Uri.joinPath(media, 'writ.svg');
    panel.webview.html = this.html(panel.webview, vscode.Uri.joinPath(script, 'audit.js'), vscode.Uri.joinPath(media, 'audit.css'));
    this.panelDisposables.push(
      panel.webview.onDidReceiveMessage((raw) => this.receive(raw)),
      panel.onDidDispose(() => this.closed()),
    );
  }

  /** A record the broker just wrote. */
  append(r: AuditRecord): void {
    if (!this.panel) return;
    this.backlog.push(r);
    if (this.streaming) this.scheduleFlush();
  }

  agentsChanged(): void {
    if (this.streaming) this.postAgents(false);
  }

  private postAgents(always: boolean): void {
    const live = this.deps.liveAgents();
    const key = [...live].sort().join(' ');
    if (!always && key === this.postedLive) return;
    this.postedLive = key;
    this.post({ type: 'agents', live });
  }

  /** A new broker (which follows nothing yet), and a new log (a restart may have recovered it): follow, load again. */
  reload(): void {
    if (!this.panel) return;
    this.following = this.deps.follow(true);
    if (this.webviewReady) void this.load();
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
        this.webviewReady = true;
        void this.load();
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
        void this.runVerify();
        return;
    }
  }

  /**
   * Once the broker follows: sends the whole file, then whatever arrived meanwhile, then streams. A later load (a
   * new broker) supersedes one still running, which stops posting.
   */
  private async load(): Promise<void> {
    const load = ++this.loads;
    const current = (): boolean => this.panel !== undefined && load === this.loads;
    this.streaming = false;
    const records: AuditRecord[] = [];
    let reset = true;
    let lastSeq = -1;
    await this.following.catch(() => undefined);
    if (!current()) return;
    try {
      // Only what the panel holds: a log of millions of records is read from its tail, not parsed whole.
      const path = this.deps.auditPath();
      const start = await tailStart(path, MAX_PANEL_RECORDS);
      for await (const l of readAuditLines(path, { start })) {
        if (!l.terminated) break;
        let value: unknown;
        try {
          value = JSON.parse(l.bytes.toString('utf8'));
        } catch {
          continue; // verification reports a bad line; the panel shows what it can
        }
        const r = AuditRecord.safeParse(value);
        if (!r.success) continue;
        records.push(r.data);
        lastSeq = r.data.seq;
        if (records.length >= LOAD_CHUNK) {
          if (!current()) return;
          // A record's seq is its position in the log: the first one loaded says how many come before it.
          const older = reset ? records[0]!.seq : undefined;
          this.post({ type: 'records', reset, records: records.splice(0), ...(older === undefined ? {} : { older }) });
          reset = false;
        }
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.log(`writ: cannot read the audit log: ${(e as Error).message}`);
    }
    if (!current()) return;
    this.post({ type: 'records', reset, records, ...(reset && records[0] ? { older: records[0].seq } : {}) });
    this.lastSeq = lastSeq;
    this.streaming = true;
    this.flush();
    this.postAgents(true);
    void this.runVerify();
  }

  private scheduleFlush(): void {
    // One post per burst, well inside the 100 ms from the broker's write to the row.
    this.flushTimer ??= setTimeout(() => this.flush(), 15);
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const fresh = this.backlog.filter((r) => r.seq > this.lastSeq);
    this.backlog = [];
    if (fresh.length === 0) return;
    this.lastSeq = fresh[fresh.length - 1]!.seq;
    this.post({ type: 'records', reset: false, records: fresh });
  }

  private async runVerify(): Promise<void> {
    this.post({ type: 'verify', result: { state: 'running' } });
    const result = await this.deps.verify();
    this.post({ type: 'verify', result });
  }

  private closed(): void {
    if (this.panel) void this.deps.follow(false).catch(() => undefined);
    this.panel = undefined;
    this.streaming = false;
    this.webviewReady = false;
    this.backlog = [];
    this.postedLive = undefined;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const d of this.panelDisposables.splice(0)) d.dispose();
  }

  dispose(): void {
    this.panel?.dispose();
    this.closed();
  }
}
