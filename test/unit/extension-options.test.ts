// Settings, export options, broker folders and slots, verify output, and a grant's live tokens asked of the broker.
import { afterEach, beforeEach, describe, it, expect, vi } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentView } from '../../broker/protocol';
import { DEFAULT_SETTINGS, brokerSettingsEnv, sanitizeSettings, serveArgs } from '../../extension/settings';
import { exportFileName, exportFilter, parseTimeInput } from '../../extension/exportOptions';
import { MAX_SOCKET_PATH_BYTES, brokerDirs, workspaceKey } from '../../extension/brokerDirs';
import { claimSlot } from '../../extension/slotLock';
import { verifyView } from '../../extension/verifyOutput';
import { TokenRequests, activeAgents, agentDescription, agentRow, grantChildren, grantRow, messageRow, timeLeft, tokenRow } from '../../extension/agentState';
import type { TokenPage } from '../../extension/agentState';

describe('settings', () => {
  it('falls back to safe defaults and keeps the default lifetime under the maximum', () => {
    expect(sanitizeSettings(() => undefined)).toEqual(DEFAULT_SETTINGS);
    const s = sanitizeSettings((k) => ({ defaultTtlSeconds: 900, maxTtlSeconds: 600, approvalTimeoutSeconds: 2, statusBarClick: 'auditPanel' })[k]);
    expect(s).toEqual({ defaultTtlSeconds: 600, maxTtlSeconds: 600, approvalTimeoutSeconds: 120, statusBarClick: 'auditPanel', watchActions: DEFAULT_SETTINGS.watchActions });
    expect(sanitizeSettings((k) => (k === 'maxTtlSeconds' ? 7200 : k === 'statusBarClick' ? 'x' : undefined))).toEqual(DEFAULT_SETTINGS);
  });

  it('sets the action of each finding kind, keeping the default where a value is missing or unknown, and declares the same defaults', () => {
    const s = sanitizeSettings((k) => (k === 'watch.actions' ? { 'scope-creep': 'block', 'mint-burst': 'stop', 'bad-token': 'explode', 'no-such-kind': 'stop' } : undefined));
    expect(brokerSettingsEnv(s)).toEqual({
      WRIT_WATCH_ACTIONS: 'scope-creep=block,scope-burst=warn,request-burst=block,mint-burst=stop,bad-token=warn,process-mismatch=warn,pending-flood=warn',
    });
    // What package.json shows in the Settings UI is what the extension applies when nothing is set.
    const declared = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).contributes.configuration.properties['writ.watch.actions'];
    expect(declared.default).toEqual(DEFAULT_SETTINGS.watchActions);
    expect(Object.keys(declared.properties)).toEqual(Object.keys(DEFAULT_SETTINGS.watchActions));
  });

  it('becomes `writ serve` flags', () => {
    expect(serveArgs(DEFAULT_SETTINGS, { stateDir: '/s', runtimeDir: '/r' })).toEqual([
      'serve', '--state-dir', '/s', '--runtime-dir', '/r', '--default-ttl', '300', '--max-ttl', '3600', '--approval-timeout', '120',
    ]);
  });
});

describe('export options', () => {
  it('maps the range to the exporter filter', () => {
    expect(exportFilter({ kind: 'session', session: 'ses_1' })).toEqual({ session: 'ses_1' });
    expect(exportFilter({ kind: 'time', since: 5 })).toEqual({ since: 5 });
    expect(exportFilter({ kind: 'time', since: 5, until: 9 })).toEqual({ since: 5, until: 9 });
    expect(exportFilter({ kind: 'all' })).toEqual({});
  });

  it('names the file by format and time, and reads typed times', () => {
    const now = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(exportFileName('jsonl', now)).toBe('writ-audit-2026-01-02T03-04-05.jsonl');
    expect(exportFileName('csv', now)).toBe('writ-audit-2026-01-02T03-04-05.csv');
    expect(exportFileName('ocsf', now)).toBe('writ-audit-2026-01-02T03-04-05.ocsf.jsonl');
    expect(parseTimeInput('  ')).toBeUndefined();
    expect(parseTimeInput('2026-01-02T03:04:05Z')).toBe(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(parseTimeInput('yesterday')).toBeNull();
  });
});

describe('broker folders', () => {
  it('gives each workspace a stable short key', () => {
    expect(workspaceKey([])).toBe('empty');
    expect(workspaceKey(['file:///a'])).toBe(workspaceKey(['file:///a']));
    expect(workspaceKey(['file:///a'])).not.toBe(workspaceKey(['file:///b']));
    expect(workspaceKey(['file:///a'])).toMatch(/^[0-9a-f]{16}$/);
  });

  it('keeps the socket inside the slot when the path fits, else in a short private temp folder', () => {
    const short = brokerDirs({ globalStorage: '/home/u/gs', workspace: 'abcd', slot: 1, tmpdir: '/tmp', uid: 1000 });
    expect(short).toEqual({
      slotDir: '/home/u/gs/brokers/abcd/1',
      stateDir: '/home/u/gs/brokers/abcd/1/state',
      runtimeDir: '/home/u/gs/brokers/abcd/1/run',
      socketPath: '/home/u/gs/brokers/abcd/1/run/writ.sock',
      lockPath: '/home/u/gs/brokers/abcd/1/window.lock',
    });
    const long = brokerDirs({ globalStorage: `/home/u/${'x'.repeat(90)}`, workspace: 'abcd', slot: 0, tmpdir: '/tmp', uid: 1000 });
    expect(long.stateDir).toBe(`/home/u/${'x'.repeat(90)}/brokers/abcd/0/state`);
    expect(long.runtimeDir).toMatch(/^\/tmp\/writ-1000-[0-9a-f]{12}$/);
    expect(Buffer.byteLength(long.socketPath)).toBeLessThanOrEqual(MAX_SOCKET_PATH_BYTES);
  });

  it('gives a second window on the same workspace the next slot, and takes over a stale lock', () => {
    const gs = mkdtempSync(join(tmpdir(), 'writ-slot-'));
    const dirsFor = (slot: number) => brokerDirs({ globalStorage: gs, workspace: 'w', slot, tmpdir: tmpdir(), uid: 1 });
    const alive = (pid: number) => pid === 101 || pid === 102;
    const a = claimSlot(dirsFor, 101, alive);
    const b = claimSlot(dirsFor, 102, alive);
    expect([a.slot, b.slot]).toEqual([0, 1]);
    expect(claimSlot(dirsFor, 101, alive).slot).toBe(0); // the same window again
    mkdirSync(dirsFor(2).slotDir, { recursive: true });
    writeFileSync(dirsFor(2).lockPath, '999'); // a window that died
    expect(claimSlot(dirsFor, 103, alive).slot).toBe(2);
    expect(readFileSync(dirsFor(2).lockPath, 'utf8')).toBe('103');
    a.release();
    expect(existsSync(dirsFor(0).lockPath)).toBe(false);
    b.release();
  });
});

describe('verify output', () => {
  it('reads `writ audit verify` results', () => {
    expect(verifyView(0, 'audit log intact: 12 records, 2 signed checkpoints, 0 records after the last checkpoint\n', '')).toEqual({
      state: 'intact',
      message: 'Audit log intact: 12 records, 2 signed checkpoints, 0 records after the last checkpoint',
    });
    expect(verifyView(1, '', 'writ: audit log BROKEN at line 7 (seq 6): chain: audit log line 7 (seq 6): prev is not the hash of line 6 (WRIT_AUDIT_CORRUPT)\n')).toEqual({
      state: 'broken',
      message: 'Audit log BROKEN at line 7 (seq 6): chain: audit log line 7 (seq 6): prev is not the hash of line 6 (WRIT_AUDIT_CORRUPT)',
      line: 7,
    });
    expect(verifyView(1, '', 'writ: the OS keychain is locked (WRIT_KEYCHAIN_LOCKED)\n')).toEqual({ state: 'error', message: 'the OS keychain is locked (WRIT_KEYCHAIN_LOCKED)' });
    // Exit 3: the broker's JWKS lacked a checkpoint's key. Neither a pass nor a break.
    const stderr =
      '/s/audit.jsonl: checkpoint signatures checked with keys from the running broker\'s JWKS (the keychain is not reachable here: WRIT_KEYCHAIN_UNAVAILABLE)\n' +
      'writ: audit log UNVERIFIABLE from line 5 (seq 4): audit log line 5 (seq 4): checkpoint signed by key k1, which the key set lacks: not checked; no break found (WRIT_AUDIT_UNVERIFIABLE)\n';
    expect(verifyView(3, '', stderr)).toEqual({
      state: 'unverifiable',
      message: 'Audit log UNVERIFIABLE from line 5 (seq 4): audit log line 5 (seq 4): checkpoint signed by key k1, which the key set lacks: not checked; no break found (WRIT_AUDIT_UNVERIFIABLE)',
      line: 5,
    });
    // Exit 4: unsigned records no running broker vouches for. Neither a pass nor a break found.
    const unsigned = 'writ: audit log UNSIGNED from line 11 (seq 10): audit log line 11 (seq 10) on: 2 records no signed checkpoint covers, and no running broker vouches for them (WRIT_AUDIT_UNSIGNED)\n';
    expect(verifyView(4, '', unsigned)).toEqual({
      state: 'unverifiable',
      message: 'Audit log UNSIGNED from line 11 (seq 10): audit log line 11 (seq 10) on: 2 records no signed checkpoint covers, and no running broker vouches for them (WRIT_AUDIT_UNSIGNED)',
      line: 11,
    });
  });
});

describe('agent state', () => {
  const page = (n: number, more = 0): TokenPage => ({
    tokens: Array.from({ length: n }, (_, i) => ({ jti: `j${n - i}`, expiresAt: 2000 - i, scopes: ['repo:read:a'] })),
    more,
  });

  describe('a grant\'s tokens, asked of the broker', () => {
    beforeEach(() => void vi.useFakeTimers());
    afterEach(() => void vi.useRealTimers());

    it('pairs each answer with its request by id; a late or unknown answer is dropped', async () => {
      let n = 0;
      const sent: string[] = [];
      const q = new TokenRequests(3000, () => `r${++n}`);
      const a = q.ask((id) => (sent.push(id), true));
      const b = q.ask((id) => (sent.push(id), true));
      expect(sent).toEqual(['r1', 'r2']);
      expect(q.answer('r2', page(1))).toBe(true);
      expect(q.answer('r1', page(2, 7))).toBe(true);
      expect(await a).toEqual(page(2, 7));
      expect(await b).toEqual(page(1));
      expect(q.answer('r1', page(3))).toBe(false);
      expect(q.answer('nope', page(3))).toBe(false);
      expect(q.pending).toBe(0);
    });

    it('resolves with undefined, never hangs: no broker to ask, no answer in time, or the run ended', async () => {
      let n = 0;
      const q = new TokenRequests(3000, () => `r${++n}`);
      expect(await q.ask(() => false)).toBeUndefined();
      const slow = q.ask(() => true);
      vi.advanceTimersByTime(2999);
      expect(q.pending).toBe(1);
      vi.advanceTimersByTime(1);
      expect(await slow).toBeUndefined();
      expect(q.answer('r2', page(1))).toBe(false); // too late
      const waiting = [q.ask(() => true), q.ask(() => true)];
      q.clear();
      expect(await Promise.all(waiting)).toEqual([undefined, undefined]);
      expect(q.pending).toBe(0);
    });
  });

  it('lists a grant\'s tokens as the broker sent them, then how many older ones it left out, or that it did not answer', () => {
    expect(grantChildren(page(2))).toEqual([
      { kind: 'token', token: { jti: 'j2', expiresAt: 2000, scopes: ['repo:read:a'] } },
      { kind: 'token', token: { jti: 'j1', expiresAt: 1999, scopes: ['repo:read:a'] } },
    ]);
    expect(grantChildren(page(100, 1)).at(-1)).toEqual({ kind: 'message', text: '…and 1 older live token' });
    expect(grantChildren(page(100, 250)).map((c) => c.kind)).toEqual([...Array<string>(100).fill('token'), 'message']);
    expect(grantChildren(page(100, 250)).at(-1)).toEqual({ kind: 'message', text: '…and 250 older live tokens' });
    expect(grantChildren(page(0))).toEqual([]);
    expect(grantChildren(undefined)).toEqual([{ kind: 'message', text: 'The broker did not answer: the tokens show at the next refresh.' }]);
  });

  it('counts active agents and describes them', () => {
    const a = (over: Partial<AgentView>): AgentView => ({ id: 'a', name: 'n', kind: 'cli', parents: [], connected: false, revoked: false, grants: 0, liveTokens: 0, ...over });
    const agents = [a({ id: 'a1', connected: true }), a({ id: 'a2', grants: 1 }), a({ id: 'a3' }), a({ id: 'a4', connected: true, revoked: true })];
    expect(activeAgents(agents).map((x) => x.id)).toEqual(['a1', 'a2']);
    const child = a({ id: 'a5', name: 'helper', parents: ['a1'], connected: true, grants: 1, liveTokens: 2, process: { pid: 42 } });
    expect(agentDescription(child, new Map([['a1', a({ id: 'a1', name: 'claude' })]]))).toBe('connected · 1 grant · 2 tokens · sub-agent of "claude" · pid 42');
    expect([timeLeft(0), timeLeft(59), timeLeft(245), timeLeft(3660)]).toEqual(['expired', '59s', '4m 05s', '1h 01m']);
  });

  it('shows agent text in the Writ view printable and on one line (rows, descriptions, hovers)', () => {
    const a = (over: Partial<AgentView>): AgentView => ({ id: 'a', name: 'n', kind: 'cli', parents: [], connected: true, revoked: false, grants: 1, liveTokens: 0, ...over });
    const parent = a({ id: 'a1', name: 'claude\nstatus: stopped' });
    const child = a({ id: 'a2', name: `helper${' '.repeat(120)}\u2800x\nagt_real`, kind: 'cli) · v9 (x', version: '1\u202e', parents: ['a1'] });
    expect(agentRow(a({ name: 'claude · stopped · 0 grants · 0 tokens' }), new Map(), 0).label).toBe('claude - stopped - 0 grants - 0 tokens');
    expect(messageRow('The broker is not running: x\n   status: ok\u202e').label).toBe('The broker is not running: x\\x0a status: ok\\u{202e}');
    const row = agentRow(child, new Map([['a1', parent]]), 1);
    expect(row.label).toBe('helper x\\x0aagt_real');
    expect(row.description).toBe('1 finding · connected · 1 grant · 0 tokens · sub-agent of "claude\\x0astatus: stopped"');
    expect(row.tooltip).toBe('"helper x\\x0aagt_real" (cli - v9 x 1-)\na2');
    const g = grantRow({ id: 'g1', agentId: 'a2', task: 'fix\nbug', scopes: ['repo:read:a'], audience: 'https://x\u2028y', mode: 'task', expiresAt: 1_060 } as never, 1_000);
    expect(g).toEqual({ label: 'fix\\x0abug', description: 'task · https://x\\u{2028}y · 1m 00s', tooltip: 'g1\nrepo:read:a\naudience https://x\\u{2028}y' });
    expect(tokenRow({ jti: 'j\n1', expiresAt: 1_030, scopes: ['repo:read:a'] }, 1_000)).toEqual({ label: 'j\\x0a1', description: '30s left · repo:read:a' });
  });
});
