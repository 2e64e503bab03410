// Test harness: the real broker process (dist/writ.mjs) on real sockets with the real keychain, spawned the
// way the extension spawns it (an IPC pipe), so tests can play the developer at the approval channel.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrokerToParent, Discovery } from '../../broker/protocol';
import { AgentView } from '../../broker/protocol';
import type { ApprovalDecision, ApprovalRequest, AuditRecord, ParentToBroker } from '../../broker/protocol';
import { WritClient } from '../../broker/sdk/client';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WRIT = join(ROOT, 'dist', 'writ.mjs');

export function requireKeyring(): void {
  if (!process.env.DBUS_SESSION_BUS_ADDRESS) {
    throw new Error('integration tests need the throwaway keyring: run them with `npm test` (bash scripts/with-keyring.sh vitest run)');
  }
}

export interface BrokerEnv {
  WRIT_STATE_DIR: string;
  WRIT_RUNTIME_DIR: string;
  WRIT_KEYCHAIN_SERVICE: string;
  WRIT_USER: string;
  [k: string]: string;
}

let counter = 0;
export function freshEnv(extra: Record<string, string> = {}): BrokerEnv {
  const base = mkdtempSync(join(tmpdir(), 'writ-it-'));
  return {
    WRIT_STATE_DIR: join(base, 'state'),
    WRIT_RUNTIME_DIR: join(base, 'run'),
    WRIT_KEYCHAIN_SERVICE: `writ-test-${process.pid}-${Date.now()}-${counter++}`,
    WRIT_USER: 'dev@example.com',
    // The machine running the suite is busy: give the keychain child more than the 2 s a developer gets.
    WRIT_KEYCHAIN_TIMEOUT_MS: '15000',
    // Each test broker has a keychain service of its own: no other process creates its key at the same time.
    WRIT_KEY_SETTLE_MS: '0',
    ...extra,
  };
}

export type Decider = (r: ApprovalRequest) => Omit<ApprovalDecision, 'requestId'> | Promise<Omit<ApprovalDecision, 'requestId'>> | null;

/**
 * A broker spawned with an IPC pipe: the test is the editor and answers approval requests with `decide`. Like the
 * extension with its audit panel closed, it does not follow the audit stream until `follow(true)`: `records` stays
 * empty, and `audit.activity` messages say that records were written.
 */
/** The requestId of the snapshots `refreshOnActivity` asks for. */
const REFRESH = 'refresh-on-activity';

export class BrokerProcess {
  readonly requests: ApprovalRequest[] = [];
  readonly closed: { requestId: string; reason: string }[] = [];
  readonly records: AuditRecord[] = [];
  /** Every message from the broker, in order (the editor's view of the pipe). */
  readonly messages: BrokerToParent[] = [];
  stdout = '';
  stderr = '';
  decide: Decider = () => null;
  /**
   * Keep every audit record and message (tests read them). A benchmark turns it off: it still receives and parses
   * what the editor would (the audit stream too, while following), but a few million retained records would make
   * this process's garbage collector compete for the two cores with the broker it measures.
   */
  retain = true;
  discovery!: Discovery;
  private exited: Promise<number | null>;

  constructor(
    readonly child: ChildProcess,
    readonly env: BrokerEnv,
  ) {
    child.stdout?.on('data', (d) => (this.stdout += d));
    child.stderr?.on('data', (d) => (this.stderr += d));
    child.on('message', (m) => this.onMessage(m));
    this.exited = new Promise((r) => child.on('exit', (code) => r(code)));
  }

  /** `script` is the bundle to run: dist/writ.mjs unless a benchmark compares another build with it. */
  static async start(env: BrokerEnv = freshEnv(), args: string[] = [], nodeArgs: string[] = [], script = WRIT): Promise<BrokerProcess> {
    const child = spawn(process.execPath, [...nodeArgs, script, 'serve', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const b = new BrokerProcess(child, env);
    await b.ready();
    return b;
  }

  private readyResolve?: () => void;
  private ready(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.readyResolve = () => resolve();
      void this.exited.then((code) => reject(new Error(`broker exited ${code} before ready: ${this.stderr}`)));
    }).then(async () => {
      // `serve` prints its addresses just after it tells the parent it is ready.
      for (let i = 0; i < 200 && !this.stdout.includes('In another terminal'); i++) await new Promise((r) => setTimeout(r, 10));
      this.discovery = Discovery.parse(JSON.parse(readFileSync(join(this.env.WRIT_RUNTIME_DIR, 'broker.json'), 'utf8')));
    });
  }

  private onMessage(raw: unknown): void {
    const m = BrokerToParent.parse(baselineReady(raw));
    // As the extension's views do: each word of activity asks for a fresh snapshot (its answer is not kept).
    if (m.type === 'audit.activity' && this.refreshOnActivity) this.send({ type: 'state.request', requestId: REFRESH });
    if (m.type === 'state' && m.requestId === REFRESH) return;
    if ((m.type === 'audit.records' || m.type === 'audit.activity') && !this.retain) return;
    this.messages.push(m);
    if (m.type === 'ready') this.readyResolve?.();
    if (m.type === 'audit.records') this.records.push(...m.records);
    if (m.type === 'approval.closed') this.closed.push({ requestId: m.requestId, reason: m.reason });
    if (m.type === 'approval.request') {
      this.requests.push(m.request);
      void Promise.resolve(this.decide(m.request)).then((d) => {
        if (d) this.send({ type: 'approval.decision', decision: { ...d, requestId: m.request.requestId } as ApprovalDecision });
      });
    }
  }

  send(msg: ParentToBroker): void {
    this.child.send(msg);
  }

  /** Ask for a state snapshot on every `audit.activity`, as the extension does to refresh its views (the benchmark's editor). */
  refreshOnActivity = false;

  private followRound = 0;
  /**
   * `audit.follow`, as the extension sends it when its audit panel opens (on) or closes (off). Resolves once the
   * broker has taken it: the pipe keeps order, so a `state` answer asked after it comes after it was applied.
   */
  async follow(on: boolean): Promise<void> {
    this.send({ type: 'audit.follow', on });
    const requestId = `follow-${++this.followRound}`;
    this.send({ type: 'state.request', requestId });
    for (let i = 0; i < 1500; i++) {
      if (this.messages.some((m) => m.type === 'state' && m.requestId === requestId)) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('the broker did not answer a state request within 30 s');
  }

  get socket(): string {
    return `unix:${this.discovery.socketPath}`;
  }

  async agent(name = 'test-agent', extra: { session?: string; parentSession?: string } = {}) {
    return WritClient.asAgent({ name, kind: 'script', version: '1.0', ...extra }, this.socket);
  }

  /** SIGTERM and wait: the broker writes its final checkpoint and removes its discovery file. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    return this.exited;
  }

  kill(): Promise<number | null> {
    this.child.kill('SIGKILL');
    return this.exited;
  }

  /** The log's whole lines: one the broker is still writing (no line end yet) is left out, as a reader must. */
  auditLines(): string[] {
    const p = join(this.env.WRIT_STATE_DIR, 'audit.jsonl');
    if (!existsSync(p)) return [];
    const text = readFileSync(p, 'utf8');
    return text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter(Boolean);
  }
}

/**
 * A benchmark's baseline bundle may predate `ready`'s session (bench/ab.ts compares builds): its `ready` is
 * taken with an empty one. Anything else is parsed as it came.
 */
function baselineReady(raw: unknown): unknown {
  if (typeof raw === 'object' && raw !== null && (raw as { type?: unknown }).type === 'ready' && !('session' in raw)) return { ...raw, session: '' };
  return raw;
}

export const approveAll: Decider = () => ({ decision: 'approve', mode: 'task' });

/** Runs the CLI as a separate process; resolves with its exit code and output. */
export function writ(args: string[], env: Record<string, string>, opts: { timeout?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [WRIT, ...args], { env: { ...process.env, ...env }, timeout: opts.timeout ?? 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * This run's agents as `writ agents --live --json` lists them (the CLI, a process of its own, as a developer runs it),
 * each checked against the protocol's AgentView. A failing command throws with what it said.
 */
export async function liveAgents(env: Record<string, string>): Promise<AgentView[]> {
  const r = await writ(['agents', '--live', '--json'], env);
  if (r.code !== 0) throw new Error(`writ agents --live exited ${r.code}: ${r.stderr}`);
  return AgentView.array().parse(JSON.parse(r.stdout));
}

export async function form(url: string, body: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(body).toString(),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}
