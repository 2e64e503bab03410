// Runs this window's broker (`writ serve`) as a child with an IPC pipe: waits for `ready`, restarts it with
// backoff when it dies, stops it on request. No vscode import: the editor glue passes in what it needs, and the
// integration test drives it against the real broker.
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BrokerToParent } from '../broker/protocol';
import type { ParentToBroker } from '../broker/protocol';
import type { BrokerPhase } from './statusModel';

export type ReadyInfo = Extract<BrokerToParent, { type: 'ready' }>;
export type BrokerMessage = Exclude<BrokerToParent, { type: 'ready' }>;

export interface SupervisorOptions {
  /** The runtime to start the broker with: the extension host's own (`process.execPath`). */
  execPath: string;
  /** Path of the bundled `dist/writ.mjs`. */
  script: string;
  /** Arguments after the script; read at every start, so setting changes apply on restart. */
  args: () => string[];
  /** Read at each start, so a restart after a settings change gets the new values. */
  env: () => NodeJS.ProcessEnv;
  /** Human-readable lines (the broker's stderr and stdout, and the supervisor's own). Never a secret. */
  log: (line: string) => void;
  onPhase: (phase: BrokerPhase) => void;
  onReady: (info: ReadyInfo) => void;
  onMessage: (msg: BrokerMessage) => void;
  /** Delays before restart attempts 1, 2, …; the last repeats. Default 1, 2, 4, 8, 16 s. */
  backoffMs?: readonly number[];
  /** Consecutive failed starts before giving up (state `error`). Default 5. */
  maxFailures?: number;
  /** How long a start may take before it counts as failed. Default 30 s. */
  readyTimeoutMs?: number;
  /** A run this long resets the failure count. Default 60 s. */
  stableMs?: number;
  /** How often a running broker is pinged over IPC. Default 5 s. */
  pingMs?: number;
  /** Silence (no answer to a ping) after which a running broker is `unresponsive`. Default 15 s. */
  unresponsiveMs?: number;
}

const DEFAULT_BACKOFF = [1000, 2000, 4000, 8000, 16000];

/** Phases as a union the caller can switch on; `phase` is always the latest. */
export class BrokerSupervisor {
  private child: ChildProcess | undefined;
  private phase: BrokerPhase = { kind: 'stopped' };
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readyTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  private lastError = '';
  private startedAt = 0;
  private readyInfo: ReadyInfo | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  /** The ping awaiting its pong, and when it was sent (monotonic ms): one at a time. */
  private outstanding: { id: string; sentAt: number } | undefined;
  private lastPingAt = 0;
  private pings = 0;

  constructor(private readonly o: SupervisorOptions) {}

  get current(): BrokerPhase {
    return this.phase;
  }

  get ready(): ReadyInfo | undefined {
    return this.readyInfo;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the broker unless one is running or starting. A scheduled restart is brought forward. */
  start(): void {
    if (this.child || this.stopping) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.spawnOnce();
  }

  /** Sends a message to the running broker; false when there is none (or its pipe is closed). */
  send(msg: ParentToBroker): boolean {
    const c = this.child;
    if (!c || !c.connected || !this.readyInfo) return false;
    c.send(msg);
    return true;
  }

  /**
   * Stops the broker: `shutdown` over IPC, then the pipe is closed (the broker stops when its parent goes),
   * SIGTERM after `graceMs`, SIGKILL after as long again. Resolves when the process has exited.
   */
  stop(graceMs = 2000): Promise<void> {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.stopping ??= this.stopChild(graceMs).finally(() => {
      this.stopping = undefined;
      this.failures = 0;
      this.setPhase({ kind: 'stopped' });
    });
    return this.stopping;
  }

  /** Stop, then start afresh with the failure count reset (the developer asked). */
  async restart(): Promise<void> {
    await this.stop();
    this.start();
  }

  private async stopChild(graceMs: number): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    const wait = (ms: number) => Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    try {
      if (c.connected) {
        c.send({ type: 'shutdown' } satisfies ParentToBroker, () => {
          if (c.connected) c.disconnect();
        });
      }
    } catch {
      // the pipe closed under us: the signals below still stop it
    }
    if (await wait(graceMs)) return;
    c.kill('SIGTERM');
    if (await wait(graceMs)) return;
    this.o.log('writ: the broker did not stop; killing it');
    c.kill('SIGKILL');
    await exited;
  }

  private setPhase(p: BrokerPhase): void {
    this.phase = p;
    this.o.onPhase(p);
  }

  private spawnOnce(): void {
    this.readyInfo = undefined;
    this.lastError = '';
    this.setPhase({ kind: 'starting' });
    let child: ChildProcess;
    try {
      child = spawn(this.o.execPath, [this.o.script, ...this.o.args()], {
        env: this.o.env(),
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        windowsHide: true,
      });
    } catch (e) {
      this.failed(`cannot start the broker: ${(e as Error).message}`);
      return;
    }
    this.child = child;
    this.startedAt = Date.now();
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        if (!line.trim()) return;
        if (stream === child.stderr && line.startsWith('writ: ')) this.lastError = line.slice(6);
        this.o.log(line);
      });
    }
    child.on('message', (raw) => {
      const parsed = BrokerToParent.safeParse(raw);
      if (!parsed.success) {
        this.o.log(`writ: ignored a broker message that did not match the protocol (${parsed.error.issues[0]?.path.join('.') ?? ''})`);
        return;
      }
      const msg = parsed.data;
      if (msg.type === 'ready') {
        clearTimeout(this.readyTimer);
        this.readyInfo = msg;
        this.setPhase({ kind: 'running' });
        this.o.onReady(msg);
        this.watchLiveness(child);
        return;
      }
      if (msg.type === 'pong') {
        if (msg.id !== this.outstanding?.id) return;
        this.outstanding = undefined;
        if (this.phase.kind === 'unresponsive') {
          this.o.log('writ: the broker answers again');
          this.setPhase({ kind: 'running' });
        }
        return;
      }
      if (msg.type === 'fatal') this.lastError = `${msg.message} (${msg.code})`;
      this.o.onMessage(msg);
    });
    child.on('error', (e) => {
      this.lastError = e.message;
      this.o.log(`writ: broker process error: ${e.message}`);
    });
    child.on('exit', (code, signal) => this.exited(child, code, signal));
    this.readyTimer = setTimeout(() => {
      this.lastError = `the broker did not become ready in ${(this.o.readyTimeoutMs ?? 30_000) / 1000} s`;
      child.kill('SIGKILL');
    }, this.o.readyTimeoutMs ?? 30_000);
    this.readyTimer.unref();
  }

  /**
   * Pings the running broker over IPC and says when it stops answering: a broker stopped (SIGSTOP), stuck in a
   * native call or starved looks alive to `exit` events. Monotonic time, so a wall clock set back changes nothing.
   */
  private watchLiveness(child: ChildProcess): void {
    clearInterval(this.pingTimer);
    this.outstanding = undefined;
    const every = this.o.pingMs ?? 5000;
    const silentAfter = this.o.unresponsiveMs ?? 15_000;
    const tick = Math.min(every, 1000);
    let lastTick = performance.now();
    this.pingTimer = setInterval(() => {
      if (this.child !== child || !this.readyInfo || !child.connected || this.stopping) return;
      const now = performance.now();
      // A late tick means this side was blocked: an answer may be waiting unread in the pipe. Judge next time.
      const late = now - lastTick > 2 * tick;
      lastTick = now;
      if (late) return;
      if (this.outstanding === undefined) {
        if (now - this.lastPingAt < every) return;
        this.lastPingAt = now;
        this.outstanding = { id: `ping-${++this.pings}`, sentAt: now };
        try {
          child.send({ type: 'ping', id: this.outstanding.id } satisfies ParentToBroker);
        } catch {
          // the pipe closed: the exit that follows says why
        }
        return;
      }
      const silent = now - this.outstanding.sentAt;
      if (silent < silentAfter) return;
      const silentSeconds = Math.floor(silent / 1000);
      if (this.phase.kind !== 'unresponsive') {
        this.o.log(`writ: the broker has not answered for ${silentSeconds} s`);
        this.setPhase({ kind: 'unresponsive', silentSeconds });
      } else if (silentSeconds - this.phase.silentSeconds >= 5) {
        // The count in the status bar's words, every 5 s: not a redraw of every view each second.
        this.setPhase({ kind: 'unresponsive', silentSeconds });
      }
    }, tick);
    this.pingTimer.unref();
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    clearTimeout(this.readyTimer);
    clearInterval(this.pingTimer);
    this.outstanding = undefined;
    this.child = undefined;
    const wasReady = this.readyInfo !== undefined;
    this.readyInfo = undefined;
    if (this.stopping) return; // stop() sets the phase
    const why = this.lastError || (signal ? `killed by ${signal}` : `exited with code ${code}`);
    this.o.log(`writ: the broker ${wasReady ? 'stopped unexpectedly' : 'failed to start'}: ${why}`);
    if (wasReady && Date.now() - this.startedAt >= (this.o.stableMs ?? 60_000)) this.failures = 0;
    this.failed(why);
  }

  private failed(why: string): void {
    this.failures++;
    if (this.failures >= (this.o.maxFailures ?? 5)) {
      this.setPhase({ kind: 'error', error: why });
      return;
    }
    const backoff = this.o.backoffMs ?? DEFAULT_BACKOFF;
    const delay = backoff[Math.min(this.failures - 1, backoff.length - 1)] ?? 1000;
    this.setPhase({ kind: 'restarting', attempt: this.failures, error: why });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.child && !this.stopping) this.spawnOnce();
    }, delay);
  }
}
