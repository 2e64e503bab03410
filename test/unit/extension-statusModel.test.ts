import { describe, it, expect } from 'vitest';
import { statusView } from '../../extension/statusModel';

describe('status bar state machine', () => {
  const running = { kind: 'running' } as const;

  it('shows each broker phase with its colour', () => {
    expect(statusView({ phase: { kind: 'stopped' }, activeAgents: 0, pendingApprovals: 0, openFindings: 0 })).toEqual({
      text: '$(circle-slash) Writ',
      tooltip: 'Writ: the broker is stopped. Click to restart it.',
      background: undefined,
    });
    expect(statusView({ phase: { kind: 'starting' }, activeAgents: 0, pendingApprovals: 0, openFindings: 0 }).text).toBe('$(loading~spin) Writ');
    expect(statusView({ phase: { kind: 'restarting', attempt: 2, error: 'exited with code 1' }, activeAgents: 3, pendingApprovals: 1, openFindings: 0 })).toEqual({
      text: '$(sync~spin) Writ: restarting',
      tooltip: 'Writ: the broker stopped unexpectedly (exited with code 1); restart attempt 2.',
      background: 'statusBarItem.warningBackground',
    });
    expect(statusView({ phase: { kind: 'error', error: 'no keychain (WRIT_KEYCHAIN_UNAVAILABLE)' }, activeAgents: 0, pendingApprovals: 0, openFindings: 0 })).toEqual({
      text: '$(error) Writ: broker error',
      tooltip: 'Writ: no keychain (WRIT_KEYCHAIN_UNAVAILABLE). Click to restart the broker.',
      background: 'statusBarItem.errorBackground',
    });
    // Silent: said before anything it counted (the counts are as stale as the broker).
    expect(statusView({ phase: { kind: 'unresponsive', silentSeconds: 17 }, activeAgents: 2, pendingApprovals: 1, openFindings: 1 })).toEqual({
      text: '$(warning) Writ: broker not responding',
      tooltip: 'Writ: the broker has not answered for 17 s: it may be very busy, or hung. 1 approval was waiting. Click to restart it (you are asked first: its agents then ask again for their tasks).',
      background: 'statusBarItem.errorBackground',
    });
  });

  it('counts agents while running, and approvals waiting take precedence with a warning colour', () => {
    expect(statusView({ phase: running, activeAgents: 0, pendingApprovals: 0, openFindings: 0 })).toEqual({
      text: '$(shield) Writ',
      tooltip: 'Writ: the broker is running; no agents are active.',
      background: undefined,
    });
    expect(statusView({ phase: running, activeAgents: 1, pendingApprovals: 0, openFindings: 0 }).text).toBe('$(shield) Writ: 1 agent');
    expect(statusView({ phase: running, activeAgents: 2, pendingApprovals: 0, openFindings: 0 }).tooltip).toBe('Writ: 2 agents active. Click to see or stop them.');
    expect(statusView({ phase: running, activeAgents: 1, pendingApprovals: 1, openFindings: 0 })).toEqual({
      text: '$(bell-dot) Writ: 1 approval waiting',
      tooltip: 'Writ: 1 request waits for your decision; 1 agent active.',
      background: 'statusBarItem.warningBackground',
    });
    expect(statusView({ phase: running, activeAgents: 0, pendingApprovals: 3, openFindings: 0 }).text).toBe('$(bell-dot) Writ: 3 approvals waiting');
  });

  it('names the newest finding printable: the tooltip is plain text, and a newline in agent text would write a line of its own', () => {
    const newest = 'creeper\n(script) asked for a scope\u202e it was never granted: repo:write:acme/web';
    expect(statusView({ phase: running, activeAgents: 1, pendingApprovals: 0, openFindings: 1, newestFinding: newest }).tooltip).toBe(
      'Writ: 1 finding open; 1 agent active. Newest: creeper\\x0a(script) asked for a scope\\u{202e} it was never granted: repo:write:acme/web. Click to stop, block or dismiss.',
    );
    expect(statusView({ phase: { kind: 'error', error: 'spawn failed\nfake' }, activeAgents: 0, pendingApprovals: 0, openFindings: 0 }).tooltip).toBe('Writ: spawn failed\\x0afake. Click to restart the broker.');
  });

  it('open findings turn the item into a warning naming the newest; approvals waiting still come first', () => {
    const newest = 'creeper (script) asked for a scope it was never granted: repo:write:acme/web';
    expect(statusView({ phase: running, activeAgents: 1, pendingApprovals: 0, openFindings: 1, newestFinding: newest })).toEqual({
      text: '$(warning) Writ: 1 finding',
      tooltip: `Writ: 1 finding open; 1 agent active. Newest: ${newest}. Click to stop, block or dismiss.`,
      background: 'statusBarItem.warningBackground',
    });
    expect(statusView({ phase: running, activeAgents: 0, pendingApprovals: 0, openFindings: 3 })).toEqual({
      text: '$(warning) Writ: 3 findings',
      tooltip: 'Writ: 3 findings open; 0 agents active. Click to stop, block or dismiss.',
      background: 'statusBarItem.warningBackground',
    });
    expect(statusView({ phase: running, activeAgents: 2, pendingApprovals: 1, openFindings: 2, newestFinding: newest })).toEqual({
      text: '$(bell-dot) Writ: 1 approval waiting',
      tooltip: 'Writ: 1 request waits for your decision; 2 agents active; 2 findings open.',
      background: 'statusBarItem.warningBackground',
    });
    // A dismissed finding gives the agent count back; a broker that is down says so whatever was open.
    expect(statusView({ phase: running, activeAgents: 2, pendingApprovals: 0, openFindings: 0 }).text).toBe('$(shield) Writ: 2 agents');
    expect(statusView({ phase: { kind: 'restarting', attempt: 1, error: 'killed by SIGKILL' }, activeAgents: 0, pendingApprovals: 0, openFindings: 2 }).text).toBe(
      '$(sync~spin) Writ: restarting',
    );
  });
});
