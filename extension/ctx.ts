// The one object that owns the extension's glue (rust-analyzer's Ctx): the broker supervisor, approvals,
// agent state, status bar, tree, audit panel and commands. Two lifetimes: the extension's (`context.subscriptions`,
// until deactivate) and the broker run's (its approvals, agents, pending state and token requests and the
// terminals' address), all dropped by endRun() whenever the broker stops or restarts.
import { inert, quoted } from './inert';
import { printable } from '../broker/printable';
import * as vscode from 'vscode';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { COUNTS_ACTIVITY_MS } from '../broker/protocol';
import type { ApprovalDecision, ApprovalRequest, BrokerToParent, FindingView, InventoryView, ParentToBroker, RevokeTarget, VerifyView } from '../broker/protocol';
/** The variable `writ` and the SDK read the broker's address from (broker/sdk/client.ts ENV_BROKER). */
const ENV_BROKER = 'WRIT_BROKER';
import { ApprovalQueue } from './approvals';
import { AgentsTree, InventoryTree } from './tree';
import type { TreeSource } from './tree';
import { AuditPanel } from './auditPanel';
import { StatusBar } from './status';
import { statusView } from './statusModel';
import type { BrokerPhase, StatusInput, StatusView } from './statusModel';
import { BrokerSupervisor } from './supervisor';
import type { BrokerMessage, ReadyInfo } from './supervisor';
import { brokerDirs, workspaceKey } from './brokerDirs';
import type { BrokerDirs } from './brokerDirs';
import { claimSlot } from './slotLock';
import type { ClaimedSlot } from './slotLock';
import { DEFAULT_SETTINGS, SETTINGS_SECTION, brokerSettingsEnv, sanitizeSettings, serveArgs } from './settings';
import type { WritSettings } from './settings';
import { EMPTY_SNAPSHOT, TokenRequests, activeAgents } from './agentState';
import type { Snapshot, TokenPage } from './agentState';
import { RULES_FILE, addRule, applicableRules, parseRules, rulesDigest, savedRuleLine, trustRulesDetail } from './rules';
import type { WorkspaceRule } from './rules';

/** Workspace-state key: the SHA-256 of the rules file text the developer trusted. */
const TRUSTED_RULES_KEY = 'writ.trustedRulesDigest';
import { verifyView } from './verifyOutput';
import { COMMAND, registerCommands } from './commands';
import { FindingNotifications } from './findings';
import { findingAgentLabel, findingLine, liveAgentIds, newestFirst } from './oversight';

/** What activate() returns: the extension's own API (used by the in-editor tests and other extensions). */
export interface WritApi {
  /** Resolves when this window's broker is ready (again, after a restart). */
  whenReady(): Promise<ReadyInfo>;
  readonly phase: BrokerPhase;
  pendingApprovals(): ApprovalRequest[];
  onApprovalRequest(listener: (r: ApprovalRequest) => void): vscode.Disposable;
  /** Decide a waiting request as the developer would; false when it is no longer waiting. */
  decide(decision: ApprovalDecision): boolean;
  snapshot(): Snapshot;
  stopAgent(agentId: string): Promise<void>;
  /** The watch's open findings and the agent inventory, as of the last snapshot. */
  findings(): FindingView[];
  inventory(): InventoryView[];
  /** What the status bar item shows now. */
  statusView(): StatusView;
  /** Block / unblock an inventory identity, dismiss a finding as expected: resolves with the broker's answer. */
  blockAgent(identity: string, reason?: string): Promise<ActionOutcome>;
  unblockAgent(identity: string): Promise<ActionOutcome>;
  dismissFinding(findingId: string): Promise<ActionOutcome>;
  /** Revoke every live agent of an identity (Stop agent on a finding). */
  stopIdentity(identity: string): Promise<void>;
  /** Milliseconds activate() took (the broker starts after it, in the background); also in the Writ output. */
  readonly activationMs: number | undefined;
}

/** The broker's answer to a block, unblock or dismissal: done, or its stable code and safe message. */
export type ActionOutcome = { ok: true } | { ok: false; code: NonNullable<Extract<BrokerToParent, { type: 'action.result' }>['error']>['code']; message: string };

/** An action the broker has not answered in this long is reported as unanswered (it may still happen). */
const ACTION_TIMEOUT_MS = 10_000;
/** State (and token) requests slower than this are dropped (the next refresh asks again). */
const STATE_TIMEOUT_MS = 3000;
/** Audit records come in bursts: one state refresh per burst. */
const REFRESH_DEBOUNCE_MS = 100;
/** Token activity alone refreshes the counts once a second (the broker tells of it as often). */
const COUNTS_REFRESH_MS = COUNTS_ACTIVITY_MS;

export class WritContext implements TreeSource {
  readonly output: vscode.LogOutputChannel;
  readonly approvals: ApprovalQueue;
  readonly panel: AuditPanel;
  private readonly status: StatusBar;
  private readonly supervisor: BrokerSupervisor;
  private readonly slot: ClaimedSlot;
  private settings: WritSettings = DEFAULT_SETTINGS;
  private snap: Snapshot = EMPTY_SNAPSHOT;
  private readonly tokenRequests = new TokenRequests(STATE_TIMEOUT_MS, randomUUID);
  private readonly stateWaiters = new Map<string, (s: Snapshot | undefined) => void>();
  private readonly actionWaiters = new Map<string, (o: ActionOutcome) => void>();
  private readonly findingNotes: FindingNotifications;
  private readonly readyWaiters = new Set<(r: ReadyInfo) => void>();
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshDue = 0;
  /** The last snapshot as JSON: a refresh that changes nothing repaints nothing. */
  private snapText = '';
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChange = this.changed.event;
  /** Set by activate() once it returns: how long the extension's own activation work took. */
  activationMs: number | undefined;
  /** The untrusted version of the rules file last warned about (one warning per version). */
  private warnedRulesDigest: string | undefined;
  /** The running (or last) broker's session id, from its `ready`: "this session" in the export. */
  session: string | undefined;

  constructor(readonly ext: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('Writ', { log: true });
    this.settings = this.readSettings();
    const uid = typeof process.getuid === 'function' ? process.getuid() : userInfo().uid;
    const workspace = workspaceKey((vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.toString()), vscode.workspace.workspaceFile?.toString());
    this.slot = claimSlot((slot) => brokerDirs({ globalStorage: ext.globalStorageUri.fsPath, workspace, slot, tmpdir: tmpdir(), uid }), process.pid);
    this.status = new StatusBar();
    this.approvals = new ApprovalQueue({
      post: (decision) => this.supervisor.send({ type: 'approval.decision', decision }),
      log: (line) => this.output.info(line),
      rules: () => this.workspaceRules(),
      saveRule: (rule) => this.saveRule(rule),
      changed: () => this.update(),
    });
    this.panel = new AuditPanel({
      extensionUri: ext.extensionUri,
      auditPath: () => this.auditPath,
      follow: (on) => this.follow(on),
      // An agent that was denied and left, or was revoked, has nothing left to stop.
      liveAgents: () => activeAgents(this.snap.agents).map((a) => a.id),
      verify: () => this.verify(this.auditPath),
      stopAgent: (id) => this.stopAgent(id),
      dismissFinding: (id) => this.dismissFinding(id),
      exportLog: async () => void (await vscode.commands.executeCommand('writ.exportAuditLog')),
      log: (line) => this.output.warn(line),
    });
    this.supervisor = new BrokerSupervisor({
      execPath: process.execPath,
      script: ext.asAbsolutePath(join('dist', 'writ.mjs')),
      args: () => serveArgs(this.settings, this.dirs),
      env: () => ({ ...this.brokerEnv(), ...brokerSettingsEnv(this.settings) }),
      log: (line) => this.output.info(line),
      onPhase: (phase) => this.phaseChanged(phase),
      onReady: (info) => this.ready(info),
      onMessage: (msg) => this.brokerMessage(msg),
    });
    this.findingNotes = new FindingNotifications({
      label: (f) => this.findingLabel(f),
      isOpen: (id) => this.snap.findings.some((f) => f.id === id),
      stop: (identity) => this.stopIdentity(identity),
      block: (identity, reason) => this.blockIdentity(identity, reason),
      unblock: (identity) => this.unblockIdentity(identity),
      dismiss: (id) => this.dismissFinding(id),
      showFindings: () => vscode.commands.executeCommand(COMMAND.showAgents),
    });
    const tree = new AgentsTree(this);
    const inventoryTree = new InventoryTree(this);
    ext.environmentVariableCollection.persistent = false;
    ext.environmentVariableCollection.description = 'Writ: the address of this window\'s credential broker (WRIT_BROKER)';
    ext.subscriptions.push(
      this.output,
      this.status,
      this.approvals,
      this.panel,
      tree,
      inventoryTree,
      this.changed,
      vscode.window.createTreeView('writ.agents', { treeDataProvider: tree, showCollapseAll: true }),
      vscode.window.createTreeView('writ.inventory', { treeDataProvider: inventoryTree, showCollapseAll: true }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (!e.affectsConfiguration(SETTINGS_SECTION)) return;
        this.settings = this.readSettings();
        this.update();
        if (this.supervisor.ready) void this.offerRestart();
      }),
      { dispose: () => this.slot.release() },
    );
    registerCommands(this);
    this.update();
  }

  get dirs(): BrokerDirs {
    return this.slot.dirs;
  }

  get auditPath(): string {
    return join(this.dirs.stateDir, 'audit.jsonl');
  }

  get phase(): BrokerPhase {
    return this.supervisor.current;
  }

  get config(): WritSettings {
    return this.settings;
  }

  /** Starts the broker in the background: activation does not wait for it. */
  start(): void {
    this.output.info(`broker folders: state ${this.dirs.stateDir}, runtime ${this.dirs.runtimeDir}`);
    this.supervisor.start();
  }

  restartBroker(): Promise<void> {
    return this.supervisor.restart();
  }

  /** deactivate(): stop the broker and wait for it (its final checkpoint is written on the way out). */
  async stop(): Promise<void> {
    this.endRun();
    await this.supervisor.stop();
  }

  api(): WritApi {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const ctx = this;
    return {
      whenReady: () => this.whenReady(),
      get phase() {
        return ctx.phase;
      },
      pendingApprovals: () => this.approvals.pending,
      onApprovalRequest: (l) => this.approvals.onRequest(l),
      decide: (d) => this.approvals.decide(d),
      snapshot: () => this.snap,
      stopAgent: (id) => this.stopAgent(id),
      findings: () => this.snap.findings,
      inventory: () => this.snap.inventory,
      statusView: () => statusView(this.statusInput()),
      blockAgent: (identity, reason) => this.blockIdentity(identity, reason ?? 'blocked in the editor'),
      unblockAgent: (identity) => this.unblockIdentity(identity),
      dismissFinding: (id) => this.dismissFinding(id),
      stopIdentity: (identity) => this.stopIdentity(identity),
      get activationMs() {
        return ctx.activationMs;
      },
    };
  }

  whenReady(): Promise<ReadyInfo> {
    const now = this.supervisor.ready;
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => this.readyWaiters.add(resolve));
  }

  // ---------------------------------------------------------------------------------------------
  // TreeSource and what the views read
  // ---------------------------------------------------------------------------------------------

  agents() {
    return this.snap.agents;
  }

  grantsOf(agentId: string) {
    return this.snap.grants.filter((g) => g.agentId === agentId);
  }

  findings(): FindingView[] {
    return this.snap.findings;
  }

  inventory(): InventoryView[] {
    return this.snap.inventory;
  }

  /** `creeper (script)`: the agent a finding is about, by the inventory's name. */
  findingLabel(f: FindingView): string {
    return findingAgentLabel(f, this.snap.inventory, this.snap.agents);
  }

  tokensOf(grantId: string): Promise<TokenPage | undefined> {
    return this.tokenRequests.ask((requestId) => this.supervisor.send({ type: 'tokens.request', requestId, grantId }));
  }

  notice(): string | undefined {
    switch (this.phase.kind) {
      case 'running':
        return this.snap.agents.length === 0 ? 'No agents yet: run `npx writ token` or `npx writ exec` in a terminal.' : undefined;
      case 'starting':
        return 'The broker is starting…';
      case 'restarting':
        return `The broker stopped (${this.phase.error}); restarting…`;
      case 'error':
        return `The broker is not running: ${this.phase.error}`;
      case 'unresponsive':
        return `The broker has not answered for ${this.phase.silentSeconds} s. Restart it from the status bar if it stays silent.`;
      case 'stopped':
        return 'The broker is stopped.';
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Actions
  // ---------------------------------------------------------------------------------------------

  /** Revokes over the IPC pipe; the broker closes the agent's connections, and `writ exec` ends its process. */
  async revoke(target: RevokeTarget, reason: string): Promise<boolean> {
    const sent = this.supervisor.send({ type: 'revoke', target, reason });
    if (!sent) void vscode.window.showWarningMessage('Writ: the broker is not running.');
    else this.scheduleRefresh(0);
    return sent;
  }

  async stopAgent(agentId: string): Promise<void> {
    const a = this.snap.agents.find((x) => x.id === agentId);
    if (await this.revoke({ kind: 'agent', id: agentId }, 'stopped in the editor')) this.output.info(`stopped agent ${quoted(a?.name ?? '')} [${printable(agentId)}]`);
  }

  /** Stop agent for an identity: revokes each of its live agents of this run (the agent's own Stop path). */
  async stopIdentity(identity: string): Promise<void> {
    const ids = liveAgentIds(identity, this.snap.inventory, this.snap.agents);
    if (ids.length === 0) {
      void vscode.window.showInformationMessage('Writ: that agent has no live session to stop.');
      return;
    }
    for (const id of ids) await this.stopAgent(id);
  }

  blockIdentity(identity: string, reason: string): Promise<ActionOutcome> {
    return this.oversee({ type: 'agent.block', identity, reason }, `block ${this.identityName(identity)}`);
  }

  unblockIdentity(identity: string): Promise<ActionOutcome> {
    return this.oversee({ type: 'agent.unblock', identity }, `unblock ${this.identityName(identity)}`);
  }

  dismissFinding(findingId: string): Promise<ActionOutcome> {
    return this.oversee({ type: 'finding.dismiss', id: findingId }, 'dismiss the finding');
  }

  /** For the output channel and a notification (inert there too): the agent's name quoted and printable. */
  private identityName(identity: string): string {
    const e = this.snap.inventory.find((x) => x.id === identity);
    return e ? quoted(e.name) : printable(identity);
  }

  /** Sends an oversight action with a requestId, waits for the broker's answer, and says so when it failed. */
  private async oversee(msg: Extract<ParentToBroker, { type: 'agent.block' | 'agent.unblock' | 'finding.dismiss' }>, what: string): Promise<ActionOutcome> {
    const requestId = randomUUID();
    const answered = new Promise<ActionOutcome>((resolve) => {
      this.actionWaiters.set(requestId, resolve);
      setTimeout(() => {
        if (this.actionWaiters.delete(requestId)) resolve({ ok: false, code: 'WRIT_BROKER_UNREACHABLE', message: `the broker did not answer in ${ACTION_TIMEOUT_MS / 1000} s` });
      }, ACTION_TIMEOUT_MS).unref();
    });
    if (!this.supervisor.send({ ...msg, requestId })) {
      this.actionWaiters.delete(requestId);
      void vscode.window.showWarningMessage('Writ: the broker is not running.');
      return { ok: false, code: 'WRIT_BROKER_UNREACHABLE', message: 'the broker is not running' };
    }
    const outcome = await answered;
    if (outcome.ok) this.output.info(`${what}: done`);
    else {
      this.output.warn(`${what}: ${printable(outcome.message)} (${outcome.code})`);
      void vscode.window.showWarningMessage(inert(`Writ: could not ${what}: ${outcome.message} (${outcome.code}).`));
    }
    this.scheduleRefresh(0);
    return outcome;
  }

  /** Verifies an audit file with `writ audit verify` as a child: it reads the public keys from the keychain. */
  verify(file: string): Promise<VerifyView> {
    return new Promise((resolve) => {
      // This window's folders, so the check finds this window's broker, which vouches for the records it wrote
      // since its last checkpoint (without it they would be unsigned).
      const env = { ...this.brokerEnv(), WRIT_RUNTIME_DIR: this.dirs.runtimeDir, WRIT_STATE_DIR: this.dirs.stateDir };
      execFile(process.execPath, [this.ext.asAbsolutePath(join('dist', 'writ.mjs')), 'audit', 'verify', '--file', file], { env, timeout: 120_000, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : null) : 0;
        resolve(verifyView(code, stdout, stderr));
      });
    });
  }

  // ---------------------------------------------------------------------------------------------
  // The broker run
  // ---------------------------------------------------------------------------------------------

  private brokerEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ELECTRON_RUN_AS_NODE: '1' };
    // This window's folders are passed as flags; an agent's credentials in the editor's environment are not ours.
    for (const k of ['WRIT_BROKER', 'WRIT_SESSION', 'WRIT_TOKEN', 'WRIT_STATE_DIR', 'WRIT_RUNTIME_DIR']) delete env[k];
    return env;
  }

  private ready(info: ReadyInfo): void {
    this.session = info.session;
    const env = this.ext.environmentVariableCollection;
    env.replace(ENV_BROKER, `unix:${info.socketPath}`);
    // So `writ status`, `writ agents` and `writ audit verify` in this window's terminals mean this broker.
    env.replace('WRIT_RUNTIME_DIR', this.dirs.runtimeDir);
    env.replace('WRIT_STATE_DIR', this.dirs.stateDir);
    this.output.info(`broker ready (pid ${info.pid}) on ${info.socketPath} and ${info.httpUrl}`);
    for (const w of this.readyWaiters) w(info);
    this.readyWaiters.clear();
    // A new broker does not follow the audit stream: the panel, if open, turns it on again and reloads the log.
    this.panel.reload();
    this.scheduleRefresh(0);
  }

  /**
   * The audit panel follows the broker's records while it is open. Resolves once the broker has taken `on` (a
   * state answer asked after it comes after it), so the panel's second read of the file, made only then, holds
   * every record the stream does not; at once when there is no broker (the next one is followed from its
   * `ready`). No timeout: the panel shows the file meanwhile and says the broker is silent (auditFeed.ts); a
   * broker that goes settles every waiter (endRun).
   */
  private async follow(on: boolean): Promise<void> {
    if (!this.supervisor.send({ type: 'audit.follow', on }) || !on) return;
    await this.refresh(Infinity);
  }

  private brokerMessage(msg: BrokerMessage): void {
    switch (msg.type) {
      case 'approval.request':
        void this.approvals.receive(msg.request);
        return;
      case 'approval.closed':
        this.approvals.closed(msg.requestId, msg.reason);
        return;
      case 'audit.records':
        // Only while the panel is open and following.
        for (const r of msg.records) this.panel.append(r);
        return;
      case 'audit.activity':
        // A minting agent changes only token counts: the views catch up once a second instead of redrawing per token.
        this.scheduleRefresh(msg.changes ? REFRESH_DEBOUNCE_MS : COUNTS_REFRESH_MS);
        return;
      case 'tokens':
        this.tokenRequests.answer(msg.requestId, { tokens: msg.tokens, more: msg.more });
        return;
      case 'state': {
        const resolve = this.stateWaiters.get(msg.requestId);
        this.stateWaiters.delete(msg.requestId);
        resolve?.({ agents: msg.agents, grants: msg.grants, pendingApprovals: msg.pendingApprovals, findings: msg.findings, inventory: msg.inventory });
        return;
      }
      case 'finding':
        // Told from the next snapshot, which names the agent (the inventory) and holds every open finding.
        this.output.warn(printable(`finding ${msg.finding.id} ${msg.finding.kind} (${msg.finding.action}): identity ${msg.finding.identity}, agent ${msg.finding.agentId}`));
        this.scheduleRefresh(0);
        return;
      case 'action.result': {
        const resolve = this.actionWaiters.get(msg.requestId);
        this.actionWaiters.delete(msg.requestId);
        resolve?.(msg.error ? { ok: false, code: msg.error.code, message: msg.error.message } : { ok: true });
        return;
      }
      case 'fatal':
        this.output.error(`broker: ${printable(msg.message)} (${msg.code})`);
        return;
    }
  }

  private phaseChanged(phase: BrokerPhase): void {
    // A silent broker may yet answer: its run (approvals, agents) is kept until it stops or restarts.
    if (phase.kind !== 'running' && phase.kind !== 'unresponsive') this.endRun();
    this.panel.brokerSilent(phase.kind === 'unresponsive');
    if (phase.kind === 'error') {
      void vscode.window.showErrorMessage(inert(`Writ: the broker could not start: ${phase.error}`), 'Restart Broker', 'Show Output').then((c) => {
        if (c === 'Restart Broker') void this.restartBroker();
        if (c === 'Show Output') this.output.show();
      });
    }
    this.update();
  }

  /** What belonged to the run that ended: its approvals, agents, tokens, and the terminals' address. */
  private endRun(): void {
    this.approvals.clear();
    this.tokenRequests.clear();
    this.snap = EMPTY_SNAPSHOT;
    this.snapText = '';
    // Unanswered: whoever waits (a refresh, the panel about to load) goes on now, not after a broker that is gone.
    for (const resolve of this.stateWaiters.values()) resolve(undefined);
    this.stateWaiters.clear();
    for (const resolve of this.actionWaiters.values()) resolve({ ok: false, code: 'WRIT_BROKER_UNREACHABLE', message: 'the broker stopped before it answered' });
    this.actionWaiters.clear();
    this.findingNotes.reset();
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.ext.environmentVariableCollection.clear();
  }

  /** One state request per window of `delay`; an earlier due time (a Stop, a finding) pulls a pending one forward. */
  private scheduleRefresh(delay: number): void {
    const due = Date.now() + delay;
    if (this.refreshTimer) {
      if (due >= this.refreshDue) return;
      clearTimeout(this.refreshTimer);
    }
    this.refreshDue = due;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.refresh();
    }, delay);
  }

  /** Asks for a state snapshot and applies it; gives up after `waitMs` (Infinity: only when the broker goes). */
  private async refresh(waitMs = STATE_TIMEOUT_MS): Promise<void> {
    const requestId = randomUUID();
    if (!this.supervisor.send({ type: 'state.request', requestId })) return;
    const snap = await new Promise<Snapshot | undefined>((resolve) => {
      this.stateWaiters.set(requestId, resolve);
      if (waitMs === Infinity) return;
      setTimeout(() => {
        if (this.stateWaiters.delete(requestId)) resolve(undefined);
      }, waitMs).unref();
    });
    if (!snap) return;
    // Unchanged state redraws nothing: the tree, the status bar and the panel repaint only on a real change.
    const text = JSON.stringify(snap);
    if (text === this.snapText) return;
    this.snapText = text;
    this.snap = snap;
    this.update();
    this.panel.agentsChanged();
    this.findingNotes.update(snap.findings);
  }

  private statusInput(): StatusInput {
    const newest = newestFirst(this.snap.findings)[0];
    return {
      phase: this.phase,
      activeAgents: activeAgents(this.snap.agents).length,
      pendingApprovals: this.approvals.pending.length,
      openFindings: this.snap.findings.length,
      newestFinding: newest ? findingLine(newest, this.findingLabel(newest)) : undefined,
    };
  }

  private update(): void {
    this.status.update(this.statusInput());
    this.changed.fire();
  }

  private readSettings(): WritSettings {
    const c = vscode.workspace.getConfiguration(SETTINGS_SECTION);
    return sanitizeSettings((key) => c.get(key));
  }

  /** The status bar clicked while the broker is silent: a restart ends its run, so the developer says so first. */
  async offerRestartSilent(): Promise<void> {
    const phase = this.phase;
    if (phase.kind !== 'unresponsive') return;
    const c = await vscode.window.showWarningMessage(
      inert(`Writ: the broker has not answered for ${phase.silentSeconds} s. Restart it? Its agents lose their grants and ask again.`),
      { modal: true },
      'Restart Broker',
      'Show Output',
    );
    if (c === 'Restart Broker') await this.restartBroker();
    if (c === 'Show Output') this.output.show();
  }

  private async offerRestart(): Promise<void> {
    const c = await vscode.window.showInformationMessage('Writ: the new settings apply when the broker restarts. Agents lose their grants.', 'Restart Broker');
    if (c === 'Restart Broker') await this.restartBroker();
  }

  // ---------------------------------------------------------------------------------------------
  // Workspace rules (.vscode/writ.json), applied only in a trusted workspace
  // ---------------------------------------------------------------------------------------------

  private rulesUri(): vscode.Uri | undefined {
    const folder = vscode.workspace.workspaceFolders?.[0];
    return folder ? vscode.Uri.joinPath(folder.uri, RULES_FILE) : undefined;
  }

  private async readRulesText(uri: vscode.Uri): Promise<string | null> {
    try {
      return new TextDecoder().decode(await vscode.workspace.fs.readFile(uri));
    } catch {
      return null;
    }
  }

  /** The digest of the rules file's text the developer last trusted in this workspace (workspace state, not the file). */
  private get trustedRulesDigest(): string | undefined {
    return this.ext.workspaceState.get<string>(TRUSTED_RULES_KEY);
  }

  async workspaceRules(): Promise<WorkspaceRule[]> {
    const uri = this.rulesUri();
    if (!uri || !vscode.workspace.isTrusted) return [];
    const read = applicableRules(await this.readRulesText(uri), this.trustedRulesDigest);
    if ('problem' in read) this.output.warn(`${printable(read.problem)}: no workspace rule applies`);
    else if ('untrusted' in read && this.warnedRulesDigest !== read.untrusted.digest) {
      // Once per version of the file: the request is asked as if there were no rule.
      this.warnedRulesDigest = read.untrusted.digest;
      this.output.warn(`${RULES_FILE} holds ${read.untrusted.count} rule(s) you have not trusted in this form: none applies until you trust them`);
      void vscode.window
        .showWarningMessage(inert(`Writ: ${RULES_FILE} changed since you last trusted it (or was never trusted here): its rules do not apply until you review and trust them.`), 'Review Rules…')
        .then((c) => (c ? vscode.commands.executeCommand('writ.trustWorkspaceRules') : undefined));
    }
    return read.rules;
  }

  /**
   * Shows every rule of the file as it is now and, if the developer trusts them, remembers the file's digest in
   * this workspace's state. True when the file's rules (if any) are trusted afterwards.
   */
  async trustWorkspaceRules(): Promise<boolean> {
    const uri = this.rulesUri();
    if (!uri) throw new Error('open a folder first: rules live in the workspace');
    if (!vscode.workspace.isTrusted) throw new Error('this workspace is not trusted: rules are neither applied nor saved');
    const text = await this.readRulesText(uri);
    const read = parseRules(text);
    if (!read.ok) throw new Error(read.problem);
    if (read.rules.length === 0) return true;
    const digest = rulesDigest(text!);
    if (digest === this.trustedRulesDigest) return true;
    const choice = await vscode.window.showWarningMessage(
      inert(`Trust the ${read.rules.length} rule(s) in ${RULES_FILE}? A request they cover is approved without asking you.`),
      { modal: true, detail: trustRulesDetail(read.rules) },
      'Trust',
    );
    if (choice !== 'Trust') return false;
    await this.ext.workspaceState.update(TRUSTED_RULES_KEY, digest);
    this.output.info(`trusted ${read.rules.length} workspace rule(s) in ${RULES_FILE} (sha256 ${digest.slice(0, 12)}…)`);
    return true;
  }

  private async saveRule(rule: WorkspaceRule): Promise<void> {
    const uri = this.rulesUri();
    if (!uri) throw new Error('open a folder first: rules are saved in the workspace');
    if (!vscode.workspace.isTrusted) throw new Error('this workspace is not trusted: rules are neither applied nor saved');
    // The new text is trusted because the developer made it here; what was in the file before must have been too.
    if (!(await this.trustWorkspaceRules())) throw new Error(`the rules already in ${RULES_FILE} are not trusted: the rule was not saved`);
    const text = addRule(await this.readRulesText(uri), rule);
    await vscode.workspace.fs.writeFile(uri, new TextEncoder().encode(text));
    await this.ext.workspaceState.update(TRUSTED_RULES_KEY, rulesDigest(text));
    this.output.info(savedRuleLine(rule));
  }
}
