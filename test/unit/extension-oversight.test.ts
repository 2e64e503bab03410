// The watch's findings and the inventory as the developer reads them in the editor: exact wording with the
// evidence, the buttons, which findings get a notification (never a flood), and the inventory's rows.
import { describe, it, expect } from 'vitest';
import type { AgentView, FindingView, InventoryView } from '../../broker/protocol';
import {
  FindingAlerts,
  ago,
  describeFinding,
  findingAgentLabel,
  findingButtons,
  findingMessage,
  findingRow,
  identityPickText,
  identityRow,
  inventoryDescription,
  inventoryOrder,
  inventoryTooltip,
  liveAgentIds,
  newestFirst,
  shownKind,
  statusAndKind,
  summaryMessage,
} from '../../extension/oversight';

const finding = (over: Partial<FindingView> = {}): FindingView => ({
  id: 'fnd_1',
  kind: 'scope-creep',
  identity: 'inv_a',
  agentId: 'agt_1',
  at: 1_000,
  action: 'warn',
  evidence: { newScopes: ['repo:write:acme/web'], grantedBefore: 1 },
  ...over,
});

const entry = (over: Partial<InventoryView> = {}): InventoryView => ({
  id: 'inv_a',
  name: 'creeper',
  kind: 'script',
  owner: 'dev@example.com',
  firstSeen: '2026-01-01T09:00:00.000Z',
  lastSeen: '2026-01-01T10:00:00.000Z',
  sessions: 2,
  processes: [{ exe: '/usr/bin/node' }],
  parents: [],
  subAgents: [],
  scopesGranted: ['repo:read:acme/web'],
  blocked: null,
  stopped: false,
  status: 'active',
  tokensNow: 1,
  live: ['agt_1'],
  ...over,
});

const agent = (over: Partial<AgentView> = {}): AgentView => ({
  id: 'agt_1',
  name: 'creeper',
  kind: 'script',
  parents: [],
  connected: true,
  revoked: false,
  grants: 1,
  liveTokens: 1,
  ...over,
});

describe('a finding in plain words', () => {
  it('names each kind with its evidence', () => {
    expect(describeFinding(finding())).toBe('asked for a scope it was never granted: repo:write:acme/web');
    expect(describeFinding(finding({ evidence: { newScopes: ['a:b:1', 'a:b:2', 'a:b:3', 'a:b:4', 'a:b:5'], grantedBefore: 2 } }))).toBe(
      'asked for 5 scopes it was never granted: a:b:1, a:b:2, a:b:3 and 2 more',
    );
    expect(describeFinding(finding({ kind: 'scope-burst', evidence: { newScopes: 6, windowMs: 60_000 } }))).toBe('asked for 6 scopes it was never granted within 60 s');
    expect(describeFinding(finding({ kind: 'mint-burst', evidence: { mints: 812, windowMs: 10_000, baselinePerWindow: 20.3 } }))).toBe(
      'minted 812 tokens in 10 s, 40× its usual rate',
    );
    expect(describeFinding(finding({ kind: 'request-burst', evidence: { requests: 31, windowMs: 10_000, baselinePerWindow: 3 } }))).toBe(
      'made 31 requests in 10 s, 10× its usual rate',
    );
    expect(describeFinding(finding({ kind: 'request-burst', evidence: { requests: 13, windowMs: 600_000, baselinePerWindow: 2 } }))).toBe(
      'made 13 requests in 10 min, 6.5× its usual rate',
    );
    expect(describeFinding(finding({ kind: 'bad-token', evidence: { code: 'WRIT_TOKEN_REVOKED', jti: 'jti_9' } }))).toBe('presented a revoked token (jti_9)');
    expect(describeFinding(finding({ kind: 'bad-token', evidence: { code: 'WRIT_TOKEN_EXPIRED' } }))).toBe('presented an expired token');
    expect(describeFinding(finding({ kind: 'bad-token', evidence: { code: 'WRIT_TOKEN_INVALID' } }))).toBe('presented a token the broker refused (WRIT_TOKEN_INVALID)');
    expect(
      describeFinding(finding({ kind: 'process-mismatch', evidence: { expected: { pid: 123, exe: '/usr/bin/node' }, actual: { pid: 456, exe: '/usr/bin/curl' } } })),
    ).toBe('had its token used from pid 456 (/usr/bin/curl); it was minted for pid 123 (/usr/bin/node)');
    expect(
      describeFinding(finding({ kind: 'bad-token', evidence: { code: 'WRIT_TOKEN_NOT_YOURS', jti: 'jti_3', via: 'exchange', presenter: { agentIds: ['agt_9'], pid: 77, exe: '/usr/bin/node' } } })),
    ).toBe('had its token (jti_3) presented by another agent (pid 77, /usr/bin/node); Writ refused it');
    expect(describeFinding(finding({ kind: 'pending-flood', evidence: { pending: 3 } }))).toBe('has 3 requests waiting for your approval at once');
  });

  it('falls back to words without numbers when the evidence is missing or of the wrong type, and names an unknown kind', () => {
    expect(describeFinding(finding({ evidence: {} }))).toBe('asked for scopes it was never granted');
    expect(describeFinding(finding({ kind: 'mint-burst', evidence: { mints: '812' } }))).toBe('minted tokens far faster than usual');
    expect(describeFinding(finding({ kind: 'request-burst', evidence: { requests: 40, windowMs: 10_000 } }))).toBe('made 40 requests in 10 s');
    expect(describeFinding(finding({ kind: 'process-mismatch', evidence: { expected: 'x' } }))).toBe('had its token used from a process other than the one it was minted for');
    expect(describeFinding(finding({ kind: 'moon-phase', evidence: {} }))).toBe('raised a "moon-phase" finding');
  });

  it('a name cannot pass for Writ\'s words: a warning starts with Writ\'s own, the name is quoted (its quotes escaped) and capped inside the quotes', () => {
    const f = finding({ kind: 'request-burst', evidence: { requests: 400, windowMs: 10_000 } });
    const label = findingAgentLabel(f, [entry({ name: 'claude (cli): Writ blocked it; nothing to do. It', kind: 'cli' })], []);
    expect(findingMessage(f, label)).toBe('Writ: warning: agent "claude (cli): Writ blocked it; nothing to do. It" (cli) made 400 requests in 10 s.');
    expect(findingAgentLabel(f, [entry({ name: 'a" (cli) x "b\\', kind: 'cli' })], [])).toBe('"a\\" (cli) x \\"b\\\\" (cli)');
    const long = findingAgentLabel(f, [entry({ name: 'n'.repeat(500), kind: 'k'.repeat(500) })], []);
    expect(long).toBe(`"${'n'.repeat(59)}…" (${'k'.repeat(19)}…)`);
    expect(findingMessage(f, long)).toContain(`${long} made 400 requests`);
    expect(inventoryTooltip(entry({ name: 'x (cli), owner root' })).split('\n')[0]).toBe('"x (cli), owner root" (script), owner dev@example.com');
  });

  it('a name shown alone (a tree row, a picker) has no separator of the description', () => {
    for (const dot of ['\u00b7', '\u0387', '\u2022', '\u30fb', '\u318d', '\u119e', '\u2981', '\u2e30'])
      expect(identityRow(entry({ name: `claude (cli) ${dot} blocked ${dot} 0 tokens` }), 0, 0).label).toBe('claude (cli) - blocked - 0 tokens');
    expect(identityPickText(entry({ name: 'claude · blocked' })).label).toBe('claude - blocked');
  });

  it('the notification says what the broker already did first, then the agent and what it did; the buttons follow', () => {
    expect(findingMessage(finding(), 'creeper (script)')).toBe('Writ: warning: agent creeper (script) asked for a scope it was never granted: repo:write:acme/web.');
    expect(findingMessage(finding({ kind: 'request-burst', action: 'block', evidence: { requests: 31, windowMs: 10_000, baselinePerWindow: 3 } }), 'runaway (script)')).toBe(
      'Writ: blocked runaway (script): its requests are refused until you unblock it. It made 31 requests in 10 s, 10× its usual rate.',
    );
    expect(findingMessage(finding({ kind: 'pending-flood', action: 'stop', evidence: { pending: 4 } }), 'x (y)')).toBe(
      'Writ: stopped x (y). It has 4 requests waiting for your approval at once.',
    );
    expect(findingButtons({ action: 'warn' })).toEqual(['Stop agent', 'Block', 'Dismiss']);
    expect(findingButtons({ action: 'block' })).toEqual(['Unblock', 'Dismiss']);
    expect(findingButtons({ action: 'stop' })).toEqual(['Block', 'Dismiss']);
  });

  it('a finding of the largest size fits in what VS Code shows (1,000 characters) with what Writ did first', () => {
    // VS Code's cut (parseNotificationMessage): past 1,000 characters the rest is dropped, the buttons stay.
    const shown = (m: string) => (m.length > 1000 ? `${m.slice(0, 1000)}...` : m);
    const scope = (i: number) => `repo:read:acme/${i}${'a'.repeat(395)}`;
    const exe = `/${'x'.repeat(4000)}\n`;
    const agentLabel = `${'n'.repeat(100)} (${'k'.repeat(50)})`;
    const findings: FindingView[] = [
      finding({ action: 'block', evidence: { newScopes: [scope(1), scope(2), scope(3), scope(4)] } }),
      finding({ action: 'stop', evidence: { newScopes: [scope(1), scope(2), scope(3)] } }),
      finding({ action: 'warn', evidence: { newScopes: [scope(1), scope(2), scope(3)] } }),
      finding({ action: 'block', kind: 'process-mismatch', evidence: { expected: { pid: 1, exe }, actual: { pid: 2, exe } } }),
      finding({ action: 'block', kind: 'bad-token', evidence: { code: 'WRIT_TOKEN_NOT_YOURS', jti: 'j'.repeat(3000), presenter: { pid: 3, exe } } }),
      finding({ action: 'stop', kind: 'x'.repeat(2000), evidence: {} }),
    ];
    for (const f of findings) {
      const m = findingMessage(f, agentLabel);
      expect(m.length).toBeLessThanOrEqual(900);
      expect(shown(m)).toBe(m);
      if (f.action === 'block') expect(m).toMatch(/^Writ: blocked .*: its requests are refused until you unblock it\. It /);
      if (f.action === 'stop') expect(m).toMatch(/^Writ: stopped .*\. It /);
    }
    const m = findingMessage(findings[0]!, 'evil (cli)');
    // Each scope is capped, so the list still shows three of them and the count of the rest.
    expect(m).toMatch(/^Writ: blocked evil \(cli\): its requests are refused until you unblock it\. It asked for 4 scopes it was never granted: repo:read:acme\/1a+…, repo:read:acme\/2a+…, repo:read:acme\/3a+… and 1 more\.$/);
  });

  it('names the agent from the inventory, else the live agent, else the identity', () => {
    expect(findingAgentLabel(finding(), [entry({ name: 'claude-code', kind: 'cli' })], [])).toBe('"claude-code" (cli)');
    expect(findingAgentLabel(finding(), [], [agent({ name: 'helper', kind: 'mcp' })])).toBe('"helper" (mcp)');
    expect(findingAgentLabel(finding(), [], [])).toBe('inv_a');
  });

  it('the summary counts the findings past the limit and says whose', () => {
    const fs = [finding(), finding({ id: 'fnd_2', kind: 'mint-burst', identity: 'inv_b' }), finding({ id: 'fnd_3', kind: 'bad-token' }), finding({ id: 'fnd_4', kind: 'x' })];
    expect(summaryMessage(fs, (f) => (f.identity === 'inv_a' ? 'creeper' : 'minter'))).toBe(
      'Writ: 4 more findings (creeper: scope creep, minter: token burst, creeper: bad token and 1 more).',
    );
    expect(summaryMessage([finding()], () => 'creeper')).toBe('Writ: 1 more finding (creeper: scope creep).');
  });

  it('Stop takes the identity\'s live agents of this run that are not revoked yet', () => {
    const inv = [entry({ live: ['agt_1', 'agt_2', 'agt_3'] })];
    expect(liveAgentIds('inv_a', inv, [agent({ id: 'agt_2', revoked: true })])).toEqual(['agt_1', 'agt_3']);
    expect(liveAgentIds('inv_zz', inv, [])).toEqual([]);
  });

  it('orders findings newest first', () => {
    expect(newestFirst([finding({ id: 'a', at: 1 }), finding({ id: 'b', at: 3 }), finding({ id: 'c', at: 2 })]).map((f) => f.id)).toEqual(['b', 'c', 'a']);
  });
});

describe('which findings get a notification', () => {
  it('tells each open finding once, however many snapshots repeat it', () => {
    const alerts = new FindingAlerts(2);
    const f = finding();
    expect(alerts.update([f])).toEqual([{ kind: 'one', finding: f }]);
    expect(alerts.update([f])).toEqual([]);
    expect(alerts.update([f])).toEqual([]);
  });

  it('tells a finding raised again after it was dismissed', () => {
    const alerts = new FindingAlerts(2);
    const f = finding();
    alerts.closed(alerts.update([f])[0]!);
    expect(alerts.update([])).toEqual([]);
    const again = finding({ id: 'fnd_2', at: 2_000 });
    expect(alerts.update([again])).toEqual([{ kind: 'one', finding: again }]);
  });

  it('tells a new id for the same identity and kind even when the dismissal fell between two snapshots', () => {
    const alerts = new FindingAlerts(2);
    alerts.closed(alerts.update([finding()])[0]!);
    const again = finding({ id: 'fnd_2' });
    expect(alerts.update([again])).toEqual([{ kind: 'one', finding: again }]);
  });

  it('shows at most the limit at once, folds the rest into one summary, and only counts more while that is up', () => {
    const alerts = new FindingAlerts(2);
    const fs = [1, 2, 3, 4].map((i) => finding({ id: `fnd_${i}`, identity: `inv_${i}`, at: i }));
    const first = alerts.update(fs.slice().reverse());
    expect(first).toEqual([
      { kind: 'one', finding: fs[0] },
      { kind: 'one', finding: fs[1] },
      { kind: 'many', findings: [fs[2], fs[3]] },
    ]);
    const f5 = finding({ id: 'fnd_5', identity: 'inv_5', at: 5 });
    expect(alerts.update([...fs, f5])).toEqual([]);
    // One finding notification closes: the next new one is shown on its own.
    alerts.closed(first[0]!);
    const f6 = finding({ id: 'fnd_6', identity: 'inv_6', at: 6 });
    expect(alerts.update([...fs, f5, f6])).toEqual([{ kind: 'one', finding: f6 }]);
    // The summary closes: the next overflow gets a summary again.
    alerts.closed(first[2]!);
    const f7 = finding({ id: 'fnd_7', identity: 'inv_7', at: 7 });
    expect(alerts.update([...fs, f5, f6, f7])).toEqual([{ kind: 'many', findings: [f7] }]);
  });

  it('a new broker run forgets what was told', () => {
    const alerts = new FindingAlerts(5);
    const f = finding();
    alerts.update([f]);
    alerts.reset();
    expect(alerts.update([f])).toEqual([{ kind: 'one', finding: f }]);
  });
});

describe('the inventory view', () => {
  const now = Date.parse('2026-01-01T10:05:30.000Z');

  it('says when an identity was last seen', () => {
    expect(ago('2026-01-01T10:05:00.000Z', now)).toBe('just now');
    expect(ago('2026-01-01T10:00:00.000Z', now)).toBe('5 min ago');
    expect(ago('2026-01-01T07:00:00.000Z', now)).toBe('3 h ago');
    expect(ago('2025-12-30T10:00:00.000Z', now)).toBe('2 d ago');
    expect(ago('not a time', now)).toBe('not a time');
  });

  it('describes a row with status and kind, open findings, owner, last seen and tokens', () => {
    expect(inventoryDescription(entry(), 0, now)).toBe('active (script) · dev@example.com · seen 5 min ago · 1 token · ran as node');
    expect(inventoryDescription(entry({ status: 'blocked', tokensNow: 0, processes: [] }), 2, now)).toBe('blocked (script) · 2 findings · dev@example.com · seen 5 min ago · 0 tokens');
    const many = [{ exe: '/usr/bin/node', sha256: 'a'.repeat(64) }, { exe: '/opt/node/bin/node' }, { exe: '/usr/bin/python3' }, { exe: '/bin/sh' }];
    expect(inventoryDescription(entry({ processes: many }), 0, now)).toBe('active (script) · dev@example.com · seen 5 min ago · 1 token · ran as node, python3 and 1 more');
  });

  it('a kind that says "blocked" does not read as the status: the status comes first, the kind after without separators', () => {
    const e = entry({ kind: 'cli · blocked', status: 'active' });
    expect(inventoryDescription(e, 0, now).split(' · ')[0]).toBe('active (cli - blocked)');
    expect(inventoryDescription(entry({ kind: 'cli • blocked ∙ x' }), 1, now).split(' · ').slice(0, 2)).toEqual(['active (cli - blocked - x)', '1 finding']);
    expect(identityPickText(e).description).toBe('active (cli - blocked) · dev@example.com');
  });

  it('a kind can neither close the parenthesis nor pose as a separator (U+0387 and the other dots), and shows printable', () => {
    const e = entry({ kind: 'cli) \u0387 blocked (since 10:02' });
    expect(inventoryDescription(e, 0, Date.parse('2026-01-01T10:00:30Z'))).toBe('active (cli - blocked since 10-02) · dev@example.com · seen just now · 1 token · ran as node');
    for (const dot of ['\u00b7', '\u0387', '\u2022', '\u2219', '\u22c5', '\u30fb', '\uff65', '\u2027']) {
      expect(statusAndKind({ status: 'active', kind: `cli ${dot} blocked` })).toBe('active (cli - blocked)');
    }
    expect(statusAndKind({ status: 'active', kind: 'cli\uff09 x \uff08y' })).toBe('active (cli x y)');
    expect(statusAndKind({ status: 'active', kind: 'cli\u202e\n' })).toBe('active (cli-)');
    expect(identityPickText(e).description).toBe('active (cli - blocked since 10-02) · dev@example.com');
  });

  it('a kind shows only letters, digits, space and _ . + / -: lookalike brackets and dots of other scripts are -, and combining marks cannot stack', () => {
    for (const [l, r] of [['\u2e28', '\u2e29'], ['\ufd3e', '\ufd3f'], ['\u2985', '\u2986'], ['\u3014', '\u3015'], ['\u0f3c', '\u0f3d']])
      for (const dot of ['\u318d', '\u2981', '\u2e30', '\u119e'])
        expect(statusAndKind({ status: 'active', kind: `cli${r} ${dot} blocked ${l}since 10:02` })).toBe('active (cli- - blocked -since 10-02)');
    expect(shownKind('cli\u0338\u0338\u0338\u0338')).toBe('cli\u0338\u0338');
    expect(shownKind('\u0338\u0338x')).toBe('x');
    expect(shownKind('claude-code 1.2.3+b_4/x')).toBe('claude-code 1.2.3+b_4/x');
    expect(shownKind('ünïcode e\u0301')).toBe('ünïcode \u00e9');
  });

  it('tree rows and hovers show agent text printable and on one line: a newline in a name forges no hover line, padding pushes nothing out of view', () => {
    const forged = entry({
      name: 'claude (cli), owner dev@example.com\nidentity inv_real\nstatus active\n',
      status: 'blocked',
      blocked: { at: '2026-01-01T10:01:00.000Z', reason: 'scope\ncreep' },
      processes: [{ exe: '/tmp/x\nstatus active' }],
      parents: ['p\u2028q'],
    });
    const row = identityRow(forged, 0, now);
    const lines = row.tooltip.split('\n');
    expect(lines[0]).toBe('"claude (cli), owner dev@example.com\\x0aidentity inv_real\\x0astatus active\\x0a" (script), owner dev@example.com');
    expect(lines[1]).toBe('identity inv_a');
    expect(lines[2]).toBe('status blocked: blocked 2026-01-01T10:01:00.000Z (scope\\x0acreep)');
    expect(lines).toHaveLength(8);
    expect(row.tooltip).not.toMatch(/[\u2028\u202e]/);
    expect(row.description).toContain('ran as x\\x0astatus active');
    const padded = identityRow(entry({ name: `claude${' '.repeat(200)}\u3000\u2800\u00a0x` }), 0, now);
    expect(padded.label).toBe('claude x');
    const f = findingRow(finding({ kind: 'process-mismatch', evidence: { expected: { pid: 1, exe: '/a' }, actual: { pid: 2, exe: '/b\u202e\nfake line' } } }));
    expect(f.description).toBe('had its token used from pid 2 (/b\\u{202e}\\x0afake line); it was minted for pid 1 (/a)');
    expect(f.tooltip.split('\n')).toHaveLength(3);
    expect(findingRow(finding({ evidence: { newScopes: ['repo:write:a\nb'] } })).description).toBe('asked for a scope it was never granted: repo:write:a\\x0ab');
    expect(findingAgentLabel(finding(), [entry({ name: 'x\ny', kind: 'cli) blocked (' })], [])).toBe('"x\\x0ay" (cli blocked)');
  });

  it('the hover holds the identity, the block, the processes and the scopes granted', () => {
    expect(inventoryTooltip(entry({ status: 'blocked', blocked: { at: '2026-01-01T10:01:00.000Z', reason: 'scope creep' }, live: [], processes: [{ exe: '/usr/bin/node', sha256: 'ab12'.repeat(16) }] }))).toBe(
      [
        '"creeper" (script), owner dev@example.com',
        'identity inv_a',
        'status blocked: blocked 2026-01-01T10:01:00.000Z (scope creep)',
        'first seen 2026-01-01T09:00:00.000Z, last seen 2026-01-01T10:00:00.000Z, 2 sessions',
        'tokens now 1',
        'processes: /usr/bin/node (sha256 ab12ab12ab12…)',
        'granted before: repo:read:acme/web',
      ].join('\n'),
    );
  });

  it('the Block and Unblock pickers show the identity inert: no icon syntax, no newline', () => {
    const p = identityPickText(entry({ name: 'helper $(pass-filled)\nx', kind: 'cli $(lock)' }));
    for (const t of [p.label, p.description, p.detail]) {
      expect(t).not.toMatch(/(^|[^\\])\$\(/);
      expect(t).not.toMatch(/[\u0000-\u001f]/);
    }
    expect(p.label).toBe('helper \\$(pass-filled)\\x0ax');
  });

  it('lists blocked identities first, then the most recently seen', () => {
    const rows = [
      entry({ id: 'old', lastSeen: '2026-01-01T08:00:00.000Z' }),
      entry({ id: 'new', lastSeen: '2026-01-01T10:00:00.000Z' }),
      entry({ id: 'blocked', status: 'blocked', lastSeen: '2026-01-01T07:00:00.000Z' }),
    ];
    expect(inventoryOrder(rows).map((r) => r.id)).toEqual(['blocked', 'new', 'old']);
  });
});
