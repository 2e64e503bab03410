import { describe, it, expect } from 'vitest';
import { approvalRequest } from '../helpers/requests';
import { addRule, applicableRules, describeRules, matchRule, parseRules, ruleDecision, rulesDigest, savedRuleLine, trustRulesDetail } from '../../extension/rules';
import type { WorkspaceRule } from '../../extension/rules';

const request = approvalRequest;

const rule: WorkspaceRule = { agent: 'claude', audience: 'https://api.github.com', scopes: ['repo:read:acme/*'], mode: 'session' };

describe('workspace rules', () => {
  it('parses a rules file and reports a bad one by field path only', () => {
    expect(parseRules(null)).toEqual({ ok: true, rules: [] });
    expect(parseRules('{"rules":[{"agent":"claude","audience":"a","scopes":["repo:read"]}]}')).toEqual({
      ok: true,
      rules: [{ agent: 'claude', audience: 'a', scopes: ['repo:read'], mode: 'task' }],
    });
    expect(parseRules('{oops')).toEqual({ ok: false, problem: '.vscode/writ.json is not valid JSON' });
    expect(parseRules('{"rules":[{"agent":"claude","audience":"a","scopes":[]}]}')).toEqual({ ok: false, problem: '.vscode/writ.json: invalid field rules.0.scopes' });
    expect(parseRules('{"rules":[{"agent":"claude","audience":"a","scopes":["Not A Scope"]}]}')).toEqual({
      ok: false,
      problem: '.vscode/writ.json: a rule for "claude" has an invalid scope',
    });
  });

  it('quotes the agent name in a problem and makes it inert: agents write the file, and the problem reaches notifications', () => {
    const link = '[Trust](command:workbench.action.terminal.sendSequence?%7B%22text%22%3A%22id%5Cn%22%7D)';
    const file = JSON.stringify({ rules: [{ agent: `${link}\u202e\n`, audience: 'x', scopes: ['not a scope'] }] });
    const read = parseRules(file);
    const problem = (read as { problem: string }).problem;
    expect(problem).toBe(
      '.vscode/writ.json: a rule for "[Trust] (command:workbench.action.terminal.sendSequence?%7B%22text%22%3A%22id%5Cn%22%7D)\\u{202e}\\n" has an invalid scope',
    );
    // VS Code's notification link syntax (code-server's parser): none left, whichever way the problem is shown.
    const LINK = /\[([^\]]+)\]\(((?:https?:\/\/|command:|file:)[^)\s]+)/i;
    expect(problem).not.toMatch(LINK);
    expect(applicableRules(file, undefined)).toEqual({ rules: [], problem });
    expect(() => addRule(file, rule)).toThrow(problem);
  });

  it('matches only the same agent name and audience with every asked scope covered', () => {
    expect(matchRule([rule], request())).toBe(rule);
    expect(matchRule([rule], request({ scopes: ['repo:read:acme/web', 'repo:read:acme/api'] }))).toBe(rule);
    expect(matchRule([rule], request({ scopes: ['repo:read:acme/web', 'repo:write:acme/web'] }))).toBeUndefined();
    expect(matchRule([rule], request({ scopes: ['repo:read:acme/web/sub'] }))).toBeUndefined();
    expect(matchRule([rule], request({ audience: 'https://evil.example' }))).toBeUndefined();
    expect(matchRule([rule], request({ agent: { id: 'agt_2', name: 'copilot', kind: 'cli', parents: [] } }))).toBeUndefined();
  });

  it('approves what was asked, in the rule\'s mode, with its lifetime capped at the maximum', () => {
    expect(ruleDecision(rule, request())).toEqual({ requestId: 'req_1', decision: 'approve', scopes: ['repo:read:acme/web'], mode: 'session', by: 'workspace-rule' });
    expect(ruleDecision({ ...rule, ttl: 3600 }, request())).toEqual({ requestId: 'req_1', decision: 'approve', scopes: ['repo:read:acme/web'], mode: 'session', ttl: 600, by: 'workspace-rule' });
  });

  it('adds a rule once, keeping what else the file holds', () => {
    const first = addRule(null, rule);
    expect(JSON.parse(first)).toEqual({ rules: [rule] });
    expect(addRule(first, rule)).toBe(first);
    const withSchema = addRule('{"$schema":"x","rules":[]}', rule);
    expect(JSON.parse(withSchema)).toEqual({ $schema: 'x', rules: [rule] });
    expect(() => addRule('{oops', rule)).toThrow('.vscode/writ.json is not valid JSON');
  });
});

describe('trusting the rules file', () => {
  const text = addRule(null, rule);

  it('applies the rules only while the file is the exact text the developer trusted', () => {
    expect(applicableRules(text, rulesDigest(text))).toEqual({ rules: [rule] });
    // Never trusted, or trusted before a change (an agent adding itself a rule, one space more): nothing applies.
    expect(applicableRules(text, undefined)).toEqual({ rules: [], untrusted: { digest: rulesDigest(text), count: 1 } });
    const widened = addRule(text, { agent: 'claude', audience: 'https://api.github.com', scopes: ['http:DELETE'], mode: 'session' });
    expect(applicableRules(widened, rulesDigest(text))).toEqual({ rules: [], untrusted: { digest: rulesDigest(widened), count: 2 } });
    expect(applicableRules(`${text} `, rulesDigest(text))).toMatchObject({ rules: [], untrusted: { count: 1 } });
    expect(matchRule(applicableRules(widened, rulesDigest(text)).rules, request({ scopes: ['http:DELETE:https://api.github.com/repos/acme/web'] }))).toBeUndefined();
  });

  it('needs no trust for an absent or empty file, and reports a bad one', () => {
    expect(applicableRules(null, undefined)).toEqual({ rules: [] });
    expect(applicableRules('{"rules":[]}', undefined)).toEqual({ rules: [] });
    expect(applicableRules('{oops', rulesDigest('{oops'))).toEqual({ rules: [], problem: '.vscode/writ.json is not valid JSON' });
  });

  it('describes each rule on one line, names quoted so none can pass for another line', () => {
    const sneaky: WorkspaceRule = { agent: 'helper\n"claude" → "x": "repo:read"', audience: 'https://a.example', scopes: ['repo:read:a'], mode: 'task', ttl: 60 };
    const lines = describeRules([rule, sneaky]).split('\n');
    expect(lines).toEqual([
      '"claude" → "https://api.github.com": "repo:read:acme/*" (session)',
      '"helper\\n\\"claude\\" → \\"x\\": \\"repo:read\\"" → "https://a.example": "repo:read:a" (task, 60 s)',
    ]);
  });

  it('logs a saved rule with the agent name quoted, its quotes escaped and printable', () => {
    expect(savedRuleLine({ agent: 'claude' })).toBe('saved a workspace rule for "claude" in .vscode/writ.json');
    expect(savedRuleLine({ agent: 'x in .vscode/writ.json; saved a workspace rule for "claude\u202e' })).toBe(
      'saved a workspace rule for "x in .vscode/writ.json; saved a workspace rule for \\"claude\\u{202e}" in .vscode/writ.json',
    );
  });

  it('writes the trust dialog\'s detail: the warning, then each rule on its line, with no link syntax', () => {
    expect(trustRulesDetail([{ agent: 'a](command:x)', audience: 'https://a.example', scopes: ['repo:read:a'], mode: 'task' }])).toBe(
      'Agents can write workspace files: trust only rules you or your team wrote.\n\n"a] (command:x)" → "https://a.example": "repo:read:a" (task)',
    );
  });

  it('shows bidirectional overrides and line separators in a rule as escapes (JSON.stringify keeps them raw)', () => {
    const lines = describeRules([{ agent: 'a\u202e', audience: 'x\u2028y', scopes: ['repo:read'], mode: 'task' }]).split('\n');
    expect(lines).toEqual(['"a\\u{202e}" → "x\\u{2028}y": "repo:read" (task)']);
  });
});
