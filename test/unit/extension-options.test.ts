// Settings, export options, broker folders and slots, verify output, and the live-token ledger.
import { describe, it, expect } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentView, AuditRecord } from '../../broker/protocol';
import { DEFAULT_SETTINGS, brokerSettingsEnv, sanitizeSettings, serveArgs } from '../../extension/settings';
import { exportFileName, exportFilter, parseTimeInput } from '../../extension/exportOptions';
import { MAX_SOCKET_PATH_BYTES, brokerDirs, workspaceKey } from '../../extension/brokerDirs';
import { claimSlot } from '../../extension/slotLock';
import { verifyView } from '../../extension/verifyOutput';
import { TokenLedger, activeAgents, agentDescription, timeLeft } from '../../extension/agentState';

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
  });
});

describe('agent state', () => {
  const Z = '0'.repeat(64);
  const rec = (over: Partial<AuditRecord>): AuditRecord => ({ v: 1, seq: 0, ts: 't', session: 's', event: 'token.minted', user: 'u', prev: Z, ...over });

  it('tracks live tokens per grant from the audit records, dropping expired and revoked ones', () => {
    const l = new TokenLedger();
    expect(l.add(rec({ jti: 'j1', grantId: 'g1', exp: 200, scopes: ['a:b'], outcome: 'success' }))).toBe(true);
    l.add(rec({ event: 'token.exchanged', jti: 'j2', grantId: 'g1', exp: 150, outcome: 'success' }));
    l.add(rec({ jti: 'j3', grantId: 'g2', exp: 300, outcome: 'success' }));
    expect(l.add(rec({ event: 'task.approved', grantId: 'g1' }))).toBe(false);
    expect(l.forGrant('g1', 100).map((t) => t.jti)).toEqual(['j2', 'j1']);
    expect(l.forGrant('g1', 160).map((t) => t.jti)).toEqual(['j1']);
    expect(l.add(rec({ event: 'revoked', jti: 'j1' }))).toBe(true);
    expect(l.forGrant('g1', 100)).toEqual([]);
    expect(l.forGrant('g2', 100)).toEqual([{ jti: 'j3', grantId: 'g2', expiresAt: 300, scopes: [] }]);
  });

  it('keeps memory to the live tokens: expired ones are swept as minting goes on, none of the live ones lost', () => {
    let now = 1000;
    const l = new TokenLedger(() => now);
    // An agent minting for a long time: each token lives 60 s, one per second of the fake clock.
    for (let i = 0; i < 20_000; i++) {
      now = 1000 + i;
      l.add(rec({ jti: `j${i}`, grantId: i % 2 ? 'g1' : 'g2', exp: now + 60, outcome: 'success' }));
    }
    expect(l.size(now)).toBe(60);
    expect(l.forGrant('g1', now).map((t) => t.jti)).toEqual(Array.from({ length: 30 }, (_, k) => `j${19_941 + 2 * k}`));
    expect(l.add(rec({ event: 'revoked', jti: 'j19999' }))).toBe(true);
    expect(l.add(rec({ event: 'revoked', jti: 'j5' }))).toBe(false);
    expect(l.size(now)).toBe(59);
  });

  it('counts active agents and describes them', () => {
    const a = (over: Partial<AgentView>): AgentView => ({ id: 'a', name: 'n', kind: 'cli', parents: [], connected: false, revoked: false, grants: 0, liveTokens: 0, ...over });
    const agents = [a({ id: 'a1', connected: true }), a({ id: 'a2', grants: 1 }), a({ id: 'a3' }), a({ id: 'a4', connected: true, revoked: true })];
    expect(activeAgents(agents).map((x) => x.id)).toEqual(['a1', 'a2']);
    const child = a({ id: 'a5', name: 'helper', parents: ['a1'], connected: true, grants: 1, liveTokens: 2, process: { pid: 42 } });
    expect(agentDescription(child, new Map([['a1', a({ id: 'a1', name: 'claude' })]]))).toBe('connected · 1 grant · 2 tokens · sub-agent of claude · pid 42');
    expect([timeLeft(0), timeLeft(59), timeLeft(245), timeLeft(3660)]).toEqual(['expired', '59s', '4m 05s', '1h 01m']);
  });
});
