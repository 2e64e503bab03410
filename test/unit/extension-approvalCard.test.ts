import { describe, it, expect } from 'vitest';
import type { ApprovalRequest } from '../../broker/protocol';
import { approvalRequest } from '../helpers/requests';
import { approvalMessage, decisionLine, describeAgent, describeScope, describeTtl, scopeItems, ttlChoices } from '../../extension/approvalCard';
import { findingMessage } from '../../extension/oversight';

const request = (over: Partial<ApprovalRequest> = {}): ApprovalRequest =>
  approvalRequest({
    agent: { id: 'agt_1', name: 'claude', kind: 'cli', version: '2.1', parents: [] },
    scopes: ['repo:read:acme/web', 'http:GET:https://api.github.com/repos/acme/web/**'],
    maxTtl: 3600,
    ...over,
  });

describe('approval card', () => {
  it('puts scopes in plain words', () => {
    expect(describeScope('repo:read:acme/web')).toBe('read repo acme/web');
    expect(describeScope('repo:read')).toBe('read any repo');
    expect(describeScope('repo:write:**')).toBe('write any repo');
    expect(describeScope('http:GET:https://api.github.com/repos/acme/**')).toBe('GET http under https://api.github.com/repos/acme');
    expect(describeScope('repo:read:acme/*')).toBe('read repo directly in acme');
    expect(describeScope('nocolon')).toBe('nocolon');
  });

  it('names the agent and, for a sub-agent, its parent chain nearest first', () => {
    expect(describeAgent(request().agent)).toBe('claude (cli 2.1)');
    expect(describeAgent({ id: 'agt_3', name: 'tester', kind: 'script', parents: [{ id: 'agt_2', name: 'planner' }, { id: 'agt_1', name: 'claude' }] })).toBe(
      'tester (script), sub-agent of planner ← claude',
    );
  });

  it('says lifetimes in words', () => {
    expect([describeTtl(1), describeTtl(45), describeTtl(60), describeTtl(300), describeTtl(3600), describeTtl(90)]).toEqual([
      '1 second',
      '45 seconds',
      '1 minute',
      '5 minutes',
      '1 hour',
      '90 seconds',
    ]);
  });

  it('writes the notification with the agent, task, scopes, audience, lifetime and the queue count', () => {
    expect(approvalMessage(request(), 0)).toBe(
      'Writ: claude (cli 2.1) asks to "fix issue 12": read repo acme/web; GET http under https://api.github.com/repos/acme/web, for https://api.github.com, tokens of 5 minutes.',
    );
    expect(approvalMessage(request({ scopes: ['repo:read'] }), 2)).toBe(
      'Writ: claude (cli 2.1) asks to "fix issue 12": read any repo, for https://api.github.com, tokens of 5 minutes. (2 more waiting)',
    );
  });

  it('makes agent-supplied text inert: no command link, no fake line, no hidden text', () => {
    const link = '[Approve](command:writ.unblockAgent?%22abc%22 "Approve")';
    const msg = approvalMessage(request({ task: `triage ${link}\nFor: https://api.github.com\x1b[8m`, agent: { id: 'agt_1', name: `claude ${link}`, kind: 'cli', parents: [] } }), 0);
    expect(msg).not.toContain('](');
    expect(msg).toBe(
      'Writ: claude [Approve] (command:writ.unblockAgent?%22abc%22 "Approve") (cli) asks to "triage [Approve] (command:writ.unblockAgent?%22abc%22 "Approve")\\x0aFor: https://api.github.com\\x1b[8m": read repo acme/web; GET http under https://api.github.com/repos/acme/web, for https://api.github.com, tokens of 5 minutes.',
    );
    const f: Parameters<typeof findingMessage>[0] = { id: 'fnd_1', identity: 'idn_1', agentId: 'agt_1', kind: 'scope-creep', action: 'warn', at: 1, evidence: { newScopes: [`repo:read:${link}`] } };
    const finding = findingMessage(f, `evil ${link}`);
    expect(finding).toContain('evil [Approve] (command:');
    expect(finding).not.toContain('](');
  });

  it('offers every scope picked, and lifetimes from the one asked up to the maximum', () => {
    expect(scopeItems(request()).map((i) => [i.label, i.scope, i.picked])).toEqual([
      ['read repo acme/web', 'repo:read:acme/web', true],
      ['GET http under https://api.github.com/repos/acme/web', 'http:GET:https://api.github.com/repos/acme/web/**', true],
    ]);
    expect(ttlChoices(300, 3600)).toEqual([300, 60, 900, 3600]);
    expect(ttlChoices(120, 600)).toEqual([120, 60, 300]);
  });

  it('logs a decision without any secret', () => {
    expect(decisionLine(request(), 'denied')).toBe('denied: claude [agt_1] "fix issue 12" repo:read:acme/web http:GET:https://api.github.com/repos/acme/web/** for https://api.github.com');
  });
});
