import { describe, it, expect } from 'vitest';
import type { ApprovalRequest } from '../../broker/protocol';
import { approvalRequest } from '../helpers/requests';
import { APPROVE, DENY, REVIEW, approvalMessage, approvalPrompt, decisionLine, describeAgent, describeScope, describeTtl, pendingItems, reviewTitle, scopeItems, scopePlaceholder, ttlChoices } from '../../extension/approvalCard';
import { inert } from '../../extension/inert';
import { parseScope } from '../../broker/core/scopes';
import { AgentInfo, Audience, Methods, ScopeList } from '../../broker/protocol';
import { findingAgentLabel, findingMessage } from '../../extension/oversight';

const request = (over: Partial<ApprovalRequest> = {}): ApprovalRequest =>
  approvalRequest({
    agent: { id: 'agt_1', name: 'claude', kind: 'cli', version: '2.1', parents: [] },
    scopes: ['repo:read:acme/web', 'http:GET:https://api.github.com/repos/acme/web/**'],
    maxTtl: 3600,
    ...over,
  });

describe('approval card', () => {
  it('quotes the agent names, so a root agent cannot read as a sub-agent, and shows kind and version as shownKind', () => {
    const r = request({ agent: { id: 'a', name: 'helper (cli), sub-agent of claude', kind: 'cli) x (y', version: '1.0 · ok', parents: [] } });
    expect(approvalMessage(r, 0)).toContain('Asked by "helper (cli), sub-agent of claude" (cli x y 1.0 - ok) for');
    expect(reviewTitle(r)).toContain(': "helper (cli), sub-agent of claude" (cli x y 1.0 - ok): ');
    const sub = request({ agent: { id: 'b', name: 'x"y', kind: 'cli', parents: [{ id: 'p', name: 'p (cli) ← "q' }] } });
    expect(describeAgent(sub.agent)).toBe('"x\\"y" (cli), sub-agent of "p (cli) ← \\"q"');
    expect(describeAgent(request({ agent: { id: 'c', name: 'n'.repeat(100), kind: 'cli', parents: [] } }).agent)).toBe(`"${'n'.repeat(39)}…" (cli)`);
  });

  it('escapes every quote lookalike in a name (initial and final quotes, primes, ditto marks, ornaments, two apostrophes), so none closes the quotes', () => {
    const lookalikes = ['"', '\u201c', '\u201d', '\u201e', '\u201f', '\u2033', '\u02ba', '\u02dd', '\uff02', '\u05f4', '\u3003', '\u301d', '\u301e',
      '\u301f', '\u02ee', '\u02f6', '\u2036', '\u275d', '\u275e', '\u2e42', '\u{1f676}', '\u{1f677}', '\u{1f678}', '\u00ab', '\u00bb', '\u2018',
      '\u2019', '\u2039', '\u203a', '\u2e02', '\u2e03', '\u2e20', '\u2e21', '\u2057', '\u2034', '\u2037'];
    for (const q of lookalikes) {
      const name = `helper${q} (cli), sub-agent of ${q}claude`;
      expect(describeAgent(request({ agent: { id: 'a', name, kind: 'cli', parents: [] } }).agent), `U+${q.codePointAt(0)!.toString(16)}`)
        .toBe(`"helper\\${q} (cli), sub-agent of \\${q}claude" (cli)`);
    }
    for (const run of ["''", '\u2032\u2032', '``', "'\u2032", '\u05f3\u05f3', '\uff07\uff07'])
      expect(describeAgent(request({ agent: { id: 'a', name: `a${run} (cli), sub-agent of ${run}b`, kind: 'cli', parents: [] } }).agent))
        .toBe(`"a${[...run].map((c) => `\\${c}`).join('')} (cli), sub-agent of ${[...run].map((c) => `\\${c}`).join('')}b" (cli)`);
    expect(describeAgent(request({ agent: { id: 'a', name: "O'Brien", kind: 'cli', parents: [] } }).agent)).toBe('"O\'Brien" (cli)');
  });

  it('a cap inside the quotes never leaves half an escape: no dangling backslash before the ellipsis', () => {
    const shown = (name: string) => describeAgent(request({ agent: { id: 'a', name, kind: 'cli', parents: [] } }).agent);
    // The cap keeps 39 characters: the 39th would be the escape's backslash.
    expect(shown(`${'a'.repeat(38)}"b`)).toBe(`"${'a'.repeat(38)}…" (cli)`);
    expect(shown(`${'a'.repeat(38)}\\b`)).toBe(`"${'a'.repeat(38)}…" (cli)`);
    expect(shown(`${'a'.repeat(37)}\\bcd`)).toBe(`"${'a'.repeat(37)}\\\\…" (cli)`);
    expect(shown(`${'a'.repeat(36)}\u202eb`)).toBe(`"${'a'.repeat(36)}…" (cli)`);
    expect(shown(`${'a'.repeat(30)}\u202eb${'c'.repeat(20)}`)).toBe(`"${'a'.repeat(30)}\\u{202e}b…" (cli)`);
    expect(shown(`${'a'.repeat(37)}"\u201cb`)).toBe(`"${'a'.repeat(37)}\\"…" (cli)`);
    expect(shown('a"b')).toBe('"a\\"b" (cli)');
    const finding = findingAgentLabel({ identity: 'i', agentId: 'agt_1' }, [], [{ id: 'agt_1', name: `${'a'.repeat(58)}"b`, kind: 'cli', parents: [], connected: true, revoked: false, grants: 0, liveTokens: 0 } as never]);
    expect(finding).toBe(`"${'a'.repeat(58)}…" (cli)`);
  });

  it('puts scopes in plain words', () => {
    expect(describeScope('repo:read:acme/web')).toBe('read repo acme/web');
    expect(describeScope('repo:read')).toBe('read any repo');
    expect(describeScope('repo:write:**')).toBe('write any repo');
    expect(describeScope('http:GET:https://api.github.com/repos/acme/**')).toBe('GET http under https://api.github.com/repos/acme');
    expect(describeScope('repo:read:acme/*')).toBe('read repo directly in acme');
    expect(describeScope('nocolon')).toBe('nocolon');
  });

  it('describes a glob over the root with its slash, never with an empty object', () => {
    // Every target that ends in /** or /* with nothing before it: each parses, and each names what it covers.
    const cases: [string, string][] = [
      ['fs:write:/**', 'write fs under /'],
      ['fs:read:/*', 'read fs directly in /'],
      ['repo:read:/**', 'read repo under /'],
      ['http:GET:/*', 'GET http directly in /'],
    ];
    for (const [scope, words] of cases) {
      expect(() => parseScope(scope)).not.toThrow();
      expect(describeScope(scope)).toBe(words);
    }
    const p = approvalPrompt(approvalRequest({ scopes: ['fs:write:/**'] }), 0);
    expect(p.message).toContain('Writ: grant write fs under /, for ');
    expect(p.message).not.toMatch(/under ,|in ,/);
  });

  it('names the agent and, for a sub-agent, its parent chain nearest first', () => {
    expect(describeAgent(request().agent)).toBe('"claude" (cli 2.1)');
    expect(describeAgent({ id: 'agt_3', name: 'tester', kind: 'script', parents: [{ id: 'agt_2', name: 'planner' }, { id: 'agt_1', name: 'claude' }] })).toBe(
      '"tester" (script), sub-agent of "planner" ← "claude"',
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

  it('writes the notification with the scopes, audience and lifetime, then the agent, task and the queue count', () => {
    expect(approvalMessage(request(), 0)).toBe(
      'Writ: grant read repo acme/web; GET http under https://api.github.com/repos/acme/web, for https://api.github.com, tokens of 5 minutes? Asked by "claude" (cli 2.1) for "fix issue 12".',
    );
    expect(approvalMessage(request({ scopes: ['repo:read'] }), 2)).toBe(
      'Writ: grant read any repo, for https://api.github.com, tokens of 5 minutes? Asked by "claude" (cli 2.1) for "fix issue 12". (2 more waiting)',
    );
  });

  it('makes agent-supplied text inert: no command link, no fake line, no hidden text', () => {
    const link = '[Approve](command:writ.unblockAgent?%22abc%22 "Approve")';
    const msg = approvalMessage(request({ task: `triage ${link}\nFor: https://api.github.com\x1b[8m`, agent: { id: 'agt_1', name: `claude ${link}`, kind: 'cli', parents: [] } }), 0);
    expect(msg).not.toContain('](');
    expect(msg).toBe(
      'Writ: grant read repo acme/web; GET http under https://api.github.com/repos/acme/web, for https://api.github.com, tokens of 5 minutes? Asked by "claude [Approve] (command:writ.unblockA…" (cli) for "triage [Approve] (command:writ.unblockAgent?%22abc%22 "Approve")\\x0aFor: https://api.github.com\\x1b[8m".',
    );
    const f: Parameters<typeof findingMessage>[0] = { id: 'fnd_1', identity: 'idn_1', agentId: 'agt_1', kind: 'scope-creep', action: 'warn', at: 1, evidence: { newScopes: [`repo:read:${link}`] } };
    const finding = findingMessage(f, `evil ${link}`);
    expect(finding).toContain('evil [Approve] (command:');
    expect(finding).not.toContain('](');
  });

  it('offers Approve only when VS Code shows all it grants: every scope, the audience and the lifetime', () => {
    // VS Code cuts a notification's message at 1,000 characters (code-server's parseNotificationMessage), and
    // Approve grants what was cut too.
    const shownByVsCode = (m: string) => (m.length > 1000 ? `${m.slice(0, 1000)}...` : m);
    const check = (r: ApprovalRequest, waiting = 0) => {
      const p = approvalPrompt(r, waiting);
      expect(p.message.length).toBeLessThanOrEqual(1000);
      if (p.buttons.includes(APPROVE)) {
        const seen = shownByVsCode(p.message);
        for (const s of r.scopes) expect(seen).toContain(inert(describeScope(s)));
        expect(seen).toContain(`, for ${inert(r.audience)}, tokens of ${describeTtl(r.ttl)}`);
        if (waiting > 0) expect(seen).toContain(`(${waiting} more waiting)`);
      } else expect(p.buttons).toEqual([REVIEW, DENY]);
      return p;
    };
    // The longest fields the protocol takes: AgentInfo, task.request's task, ScopeList, Audience.
    // 512 characters: a resource and an action of 55, a target of 400 (the grammar's limits).
    const scope = (i: number) => {
      const head = `https://api.github.com/repos/acme/web/contents/${String(i).padStart(2, '0')}/`;
      return `h${'t'.repeat(54)}:G${'e'.repeat(54)}:${head}${'a'.repeat(400 - head.length - 3)}/**`;
    };
    const most = {
      agent: { id: 'agt_1', name: '\u202e'.repeat(100), kind: '\n'.repeat(50), version: '\x1b'.repeat(50), parents: [] },
      task: '\x00'.repeat(500),
      scopes: [...Array.from({ length: 31 }, (_, i) => scope(i)), 'secret:read:**'],
      audience: `https://api.github.com/${'b'.repeat(512 - 23)}`,
      ttl: 3600,
    };
    expect(AgentInfo.parse({ name: most.agent.name, kind: most.agent.kind, version: most.agent.version })).toBeTruthy();
    expect(Methods['task.request'].params.parse({ task: most.task, scopes: most.scopes, audience: most.audience, ttl: most.ttl })).toBeTruthy();
    expect(ScopeList.parse(most.scopes)).toHaveLength(32);
    expect(Audience.parse(most.audience)).toHaveLength(512);
    most.scopes.forEach(parseScope);
    expect(check(request(most), 3).buttons).toEqual([REVIEW, DENY]);
    // Long agent text before a few short scopes: capped, after the scopes; Approve shows the secret scope.
    const hidden = check(request({ ...most, scopes: ['repo:read:acme/web', 'secret:read:**'], audience: 'https://api.github.com' }), 3);
    expect(hidden.buttons).toEqual([APPROVE, REVIEW, DENY]);
    expect(hidden.message).toContain('read any secret');
    // Many long scopes (each valid, 12 of at most 32): more than fit, so no Approve.
    const dirs = ['design-system/src/components', 'design-system/src/tokens', 'docs-site/content/guides', 'docs-site/content/reference', 'build-tools/eslint-config',
      'build-tools/tsconfig', 'apps/storefront/src/pages', 'apps/storefront/src/api', 'apps/admin/src/pages', 'apps/admin/src/api', 'apps/mobile/src/screens'];
    const many = [...dirs.map((d) => `http:GET:https://api.github.com/repos/acme/web/contents/packages/${d}/**`), 'secret:read:**', 'repo:admin:**'];
    many.forEach(parseScope);
    expect(check(request({ scopes: many, ttl: 3600 }), 3).buttons).toEqual([REVIEW, DENY]);
    // A sub-agent with the deepest chain (16) of the longest names.
    const deep = { ...most.agent, parents: Array.from({ length: 16 }, (_, i) => ({ id: `agt_p${i}`, name: 'p'.repeat(100) })) };
    expect(check(request({ agent: deep })).buttons).toEqual([APPROVE, REVIEW, DENY]);
    // An ordinary request is still approved from the notification.
    expect(check(request(), 2).buttons).toEqual([APPROVE, REVIEW, DENY]);
  });

  it('shows agent text inert in the quick picks: no icon syntax, no newline or bidi override', () => {
    // VS Code renders `$(name)` in a quick pick's label, description, detail and title as an icon.
    const r = request({
      agent: { id: 'agt_1', name: 'claude $(pass-filled) approved', kind: 'cli', parents: [{ id: 'agt_0', name: '$(shield) trusted' }] },
      task: 'fix\u202e21 eussi\nx $(check)',
      audience: 'https://api.github.com/$(lock)',
      scopes: ['repo:read:acme/$(verified)'],
    });
    const texts = [reviewTitle(r), ...pendingItems([r]).flatMap((i) => [i.label, i.description, i.detail]), ...scopeItems(r).flatMap((i) => [i.label, i.description])];
    for (const t of texts) {
      expect(t).not.toMatch(/(^|[^\\])\$\(/);
      expect(t).not.toMatch(/[\u0000-\u001f\u202e]/);
    }
    expect(pendingItems([r])[0]!.label).toBe('"claude \\$(pass-filled) approved": fix\\u{202e}21 eussi\\x0ax \\$(check)');
    expect(scopeItems(r)[0]).toMatchObject({ description: 'repo:read:acme/\\$(verified)', scope: 'repo:read:acme/$(verified)' });
  });

  it('offers every scope picked, and lifetimes from the one asked up to the maximum', () => {
    expect(scopeItems(request()).map((i) => [i.label, i.scope, i.picked])).toEqual([
      ['read repo acme/web', 'repo:read:acme/web', true],
      ['GET http under https://api.github.com/repos/acme/web', 'http:GET:https://api.github.com/repos/acme/web/**', true],
    ]);
    expect(scopePlaceholder(request())).toBe('Ticked scopes are granted (all 2 at first): untick to refuse, then Enter to choose the lifetime; none ticked denies');
    // Enter goes on to the lifetime and the mode, and the text stays while scopes are unticked: no count of what Enter grants.
    expect(scopePlaceholder(request({ scopes: ['repo:read:acme/web'] }))).toBe('The scope is granted while ticked (it is at first): untick it to refuse, then Enter to choose the lifetime; none ticked denies');
    expect(ttlChoices(300, 3600)).toEqual([300, 60, 900, 3600]);
    expect(ttlChoices(120, 600)).toEqual([120, 60, 300]);
  });

  it('ticks no scope at first when there are more than fit on screen: Enter would approve rows below the scroll', () => {
    const scopes = (n: number) => Array.from({ length: n }, (_, i) => `repo:read:acme/r${i}`);
    // A short window's quick pick shows 6 rows (0.4 of 350 px, 22 px a row): 7 are not ticked at first.
    expect(scopeItems(request({ scopes: scopes(6) })).every((i) => i.picked)).toBe(true);
    expect(scopePlaceholder(request({ scopes: scopes(6) }))).toBe('Ticked scopes are granted (all 6 at first): untick to refuse, then Enter to choose the lifetime; none ticked denies');
    expect(scopeItems(request({ scopes: scopes(7) })).some((i) => i.picked)).toBe(false);
    expect(scopePlaceholder(request({ scopes: scopes(7) }))).toBe('7 scopes, more than fit: none is ticked at first; tick each one to grant, then Enter to choose the lifetime; none ticked denies');
    const many = request({ scopes: scopes(32) });
    expect(scopeItems(many).map((i) => i.picked)).toEqual(Array<boolean>(32).fill(false));
    expect(scopePlaceholder(many)).toBe('32 scopes, more than fit: none is ticked at first; tick each one to grant, then Enter to choose the lifetime; none ticked denies');
  });

  it('logs a decision without any secret', () => {
    expect(decisionLine(request(), 'denied')).toBe('denied: "claude" [agt_1] "fix issue 12" repo:read:acme/web http:GET:https://api.github.com/repos/acme/web/** for https://api.github.com');
  });

  it('logs agent text printable: a newline in the task cannot forge a line of the output channel', () => {
    const forged = 'x"\n2025-06-01 12:00:00.000 [info] denied: claude [agt_9] "y';
    const line = decisionLine(request({ task: forged, agent: { id: 'agt_1', name: 'claude\r\u202e', kind: 'cli', parents: [] }, audience: 'https://api.github.com\u2028' }), 'approved (session)');
    expect(line).not.toMatch(/[\u0000-\u001f\u202e\u2028]/);
    expect(line).toBe(
      'approved (session): "claude\\x0d\\u{202e}" [agt_1] "x"\\x0a2025-06-01 12:00:00.000 [info] denied: claude [agt_9] "y" repo:read:acme/web http:GET:https://api.github.com/repos/acme/web/** for https://api.github.com\\u{2028}',
    );
  });
});
