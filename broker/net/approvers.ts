// The approval channels. Agents run as the developer's own OS user, so nothing an agent can open may approve:
// only the IPC pipe of the process that spawned the broker (the extension) or the broker's own terminal.
import { createInterface } from 'node:readline/promises';
import type { Interface } from 'node:readline/promises';
import { WritError } from '../errors';
import { ParentToBroker } from '../protocol';
import type { ApprovalDecision, ApprovalRequest, BrokerToParent, ParentToBroker as ParentMessage } from '../protocol';
import type { Approver } from '../core/authority';
import { printable } from '../printable';

export { printable };

/** Denies everything: used when the broker has neither a parent pipe nor a terminal. */
export const noApprover: Approver = {
  kind: 'none',
  ask: () => Promise.reject(new WritError('WRIT_NO_APPROVER', 'no one can approve')),
};

/** Approvals over the parent's IPC pipe (Node's `process.send`), each message checked against the protocol. */
export class IpcApprover implements Approver {
  readonly kind = 'ipc' as const;
  private readonly waiting = new Map<string, (d: ApprovalDecision) => void>();

  constructor(
    private readonly post: (msg: BrokerToParent) => void,
    private readonly onOther: (msg: Exclude<ParentMessage, { type: 'approval.decision' }>) => void,
  ) {}

  /** Feed every message from the parent here. Invalid messages are dropped: the pipe is trusted but still parsed. */
  receive(raw: unknown): void {
    const parsed = ParentToBroker.safeParse(raw);
    if (!parsed.success) return;
    const msg = parsed.data;
    if (msg.type === 'approval.decision') {
      const resolve = this.waiting.get(msg.decision.requestId);
      if (resolve) resolve(msg.decision);
      return;
    }
    this.onOther(msg);
  }

  ask(request: ApprovalRequest, signal: AbortSignal): Promise<ApprovalDecision> {
    return new Promise((resolve) => {
      this.waiting.set(request.requestId, (d) => {
        this.waiting.delete(request.requestId);
        resolve(d);
      });
      signal.addEventListener(
        'abort',
        () => {
          this.waiting.delete(request.requestId);
          const reason = signal.reason instanceof WritError && signal.reason.message !== 'decided' ? signal.reason.code : 'decided';
          this.post({ type: 'approval.closed', requestId: request.requestId, reason });
        },
        { once: true },
      );
      this.post({ type: 'approval.request', request });
    });
  }
}

export function describeRequest(r: ApprovalRequest): string {
  const p = printable;
  const lines = [
    '',
    '── Writ: an agent asks for credentials ─────────────────────────────',
    `  Agent:    ${p(r.agent.name)} (${p(r.agent.kind)}${r.agent.version ? ` ${p(r.agent.version)}` : ''})  ${p(r.agent.id)}`,
  ];
  if (r.agent.parents.length > 0) lines.push(`  For:      ${r.agent.parents.map((a) => `${p(a.name)} ${p(a.id)}`).join(' ← ')}`);
  const proc = r.agent.process;
  if (proc) {
    lines.push(`  Process:  pid ${proc.pid}${proc.uid === undefined ? '' : ` uid ${proc.uid}`} ${proc.exe === undefined ? '(executable unknown)' : p(proc.exe)}`);
    if (proc.sha256) lines.push(`            sha256 ${p(proc.sha256)}`);
    if (proc.ppidChain?.length) lines.push(`            under ${proc.ppidChain.map((a) => `${p(a.name ?? '?')} (${a.pid})`).join(' ← ')}`);
  } else {
    lines.push('  Process:  not identified (the kernel did not say which process this is)');
  }
  lines.push(`  Task:     ${p(r.task)}`);
  lines.push(`  Audience: ${p(r.audience)}`);
  r.scopes.forEach((s, i) => lines.push(`  ${i === 0 ? 'Scopes:  ' : '         '} ${i + 1}) ${p(s)}`));
  lines.push(`  Lifetime: ${r.ttl} s per token (max ${r.maxTtl} s)`);
  return lines.join('\n');
}

/**
 * Approvals at the broker's own controlling terminal, one request at a time (others queue). The prompt offers
 * approve for this task, approve for the session, deny, or edit (narrow) the scopes first.
 */
export class TtyApprover implements Approver {
  readonly kind = 'tty' as const;
  private queue: Promise<unknown> = Promise.resolve();
  private rl: Interface | undefined;

  constructor(
    private readonly input: NodeJS.ReadableStream & { isTTY?: boolean },
    private readonly output: NodeJS.WritableStream,
    private readonly onInterrupt: () => void,
  ) {}

  ask(request: ApprovalRequest, signal: AbortSignal): Promise<ApprovalDecision> {
    const turn = this.queue.then(() => this.prompt(request, signal));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  close(): void {
    this.rl?.close();
    this.rl = undefined;
  }

  private readline(): Interface {
    if (!this.rl) {
      this.rl = createInterface({ input: this.input, output: this.output, terminal: true });
      // Ctrl-C at a prompt stops the broker, as it does everywhere else in the terminal.
      this.rl.on('SIGINT', () => this.onInterrupt());
    }
    return this.rl;
  }

  private async prompt(request: ApprovalRequest, signal: AbortSignal): Promise<ApprovalDecision> {
    if (signal.aborted) throw signal.reason;
    const rl = this.readline();
    const write = (s: string) => this.output.write(s + '\n');
    write(describeRequest(request));
    let scopes = request.scopes;
    try {
      for (;;) {
        const answer = (
          await rl.question(`  Approve? [y] this task  [s] this session  [e] edit scopes  [n] deny > `, { signal })
        )
          .trim()
          .toLowerCase();
        if (answer === 'y' || answer === 'yes' || answer === 's') {
          const mode = answer === 's' ? 'session' : 'task';
          write(`  ✔ approved (${mode}): ${scopes.join(' ')}`);
          return { requestId: request.requestId, decision: 'approve', scopes, mode };
        }
        if (answer === 'n' || answer === 'no') {
          write('  ✘ denied');
          return { requestId: request.requestId, decision: 'deny' };
        }
        if (answer === 'e') {
          const keep = await rl.question(`  Keep which scopes? numbers 1-${request.scopes.length}, space-separated > `, { signal });
          const picked = [...new Set(keep.split(/[\s,]+/).filter(Boolean).map(Number))];
          if (picked.length === 0 || picked.some((n) => !Number.isInteger(n) || n < 1 || n > request.scopes.length)) {
            write('  (no change: give numbers from the list)');
            continue;
          }
          scopes = picked.sort((a, b) => a - b).map((n) => request.scopes[n - 1]!);
          write(`  Scopes now: ${scopes.join(' ')}`);
          continue;
        }
        write('  (answer y, s, e or n)');
      }
    } catch (e) {
      if (signal.aborted) {
        const why = signal.reason instanceof WritError ? signal.reason.message : 'withdrawn';
        write(`\n  … request ${request.requestId} closed: ${why}`);
        throw signal.reason;
      }
      throw e;
    }
  }
}
