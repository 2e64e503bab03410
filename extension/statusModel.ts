// The status bar as a small state machine: broker phase plus counts in, what the item shows out. Pure.
import { oneLine } from './inert';

export type BrokerPhase =
  | { kind: 'stopped' }
  | { kind: 'starting' }
  | { kind: 'running' }
  /** Started, but it has not answered the editor's pings for `silentSeconds`: busy, stopped (SIGSTOP) or hung. */
  | { kind: 'unresponsive'; silentSeconds: number }
  /** Crashed; the next start is scheduled. */
  | { kind: 'restarting'; attempt: number; error: string }
  /** Gave up (or never started): the developer restarts it. */
  | { kind: 'error'; error: string };

export interface StatusInput {
  phase: BrokerPhase;
  /** Agents not revoked that are connected or hold a live grant. */
  activeAgents: number;
  pendingApprovals: number;
  /** The watch's open findings. */
  openFindings: number;
  /** The newest open finding in words (`creeper (script) asked for …`), when there is one; agent text, shown printable. */
  newestFinding?: string | undefined;
}

export interface StatusView {
  text: string;
  tooltip: string;
  /** A theme colour id for the background, or none. */
  background: 'statusBarItem.warningBackground' | 'statusBarItem.errorBackground' | undefined;
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

export function statusView(s: StatusInput): StatusView {
  switch (s.phase.kind) {
    case 'stopped':
      return { text: '$(circle-slash) Writ', tooltip: 'Writ: the broker is stopped. Click to restart it.', background: undefined };
    case 'starting':
      return { text: '$(loading~spin) Writ', tooltip: 'Writ: starting the broker…', background: undefined };
    case 'restarting':
      return {
        text: '$(sync~spin) Writ: restarting',
        tooltip: `Writ: the broker stopped unexpectedly (${oneLine(s.phase.error)}); restart attempt ${s.phase.attempt}.`,
        background: 'statusBarItem.warningBackground',
      };
    case 'error':
      return { text: '$(error) Writ: broker error', tooltip: `Writ: ${oneLine(s.phase.error)}. Click to restart the broker.`, background: 'statusBarItem.errorBackground' };
    case 'unresponsive':
      return {
        text: '$(warning) Writ: broker not responding',
        tooltip: `Writ: the broker has not answered for ${s.phase.silentSeconds} s: it may be very busy, or hung.${s.pendingApprovals > 0 ? ` ${plural(s.pendingApprovals, 'approval was', 'approvals were')} waiting.` : ''} Click to restart it (you are asked first: its agents then ask again for their tasks).`,
        background: 'statusBarItem.errorBackground',
      };
    case 'running':
      break;
  }
  const agents = plural(s.activeAgents, 'agent active', 'agents active');
  const findings = plural(s.openFindings, 'finding', 'findings');
  // Approvals first: an agent is waiting on the developer. Findings are next: something looked wrong.
  if (s.pendingApprovals > 0) {
    return {
      text: `$(bell-dot) Writ: ${plural(s.pendingApprovals, 'approval', 'approvals')} waiting`,
      tooltip: `Writ: ${plural(s.pendingApprovals, 'request waits', 'requests wait')} for your decision; ${agents}${s.openFindings > 0 ? `; ${findings} open` : ''}.`,
      background: 'statusBarItem.warningBackground',
    };
  }
  if (s.openFindings > 0) {
    // The tooltip is plain text: a newline in the agent's name or scopes would write a line of its own.
    const newest = s.newestFinding ? ` Newest: ${oneLine(s.newestFinding)}.` : '';
    return {
      text: `$(warning) Writ: ${findings}`,
      tooltip: `Writ: ${findings} open; ${agents}.${newest} Click to stop, block or dismiss.`,
      background: 'statusBarItem.warningBackground',
    };
  }
  if (s.activeAgents > 0) {
    return { text: `$(shield) Writ: ${plural(s.activeAgents, 'agent', 'agents')}`, tooltip: `Writ: ${agents}. Click to see or stop them.`, background: undefined };
  }
  return { text: '$(shield) Writ', tooltip: 'Writ: the broker is running; no agents are active.', background: undefined };
}
