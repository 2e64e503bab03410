import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  exportAuditFile,
  exportHeader,
  formatRecord,
  matchesFilter,
  type AuditFilter,
  type ExportFormat,
} from '../../broker/audit/export';
import { AuditLog } from '../../broker/audit/log';
import { ManualClock } from '../../broker/core/clock';
import { isWritError } from '../../broker/errors';
import type { AuditAgent, AuditEntry, AuditRecord } from '../../broker/protocol';
import { TokenUseEndedDetail } from '../../broker/protocol';

const { privateKey } = generateKeyPairSync('ed25519');
const T0 = Date.UTC(2026, 0, 1);

const root: AuditAgent = { id: 'agt_root', name: 'claude', kind: 'cli', parents: [], process: { pid: 4242 } };
const child: AuditAgent = { id: 'agt_child', name: '@sub,agent', kind: 'subagent', parents: ['agt_mid', 'agt_root'] };

let dir: string;
let path: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'writ-audit-export-'));
  path = join(dir, 'audit.jsonl');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Appends `entries` one second apart from `start`, as one broker run, and closes (adding a checkpoint). */
async function run(session: string, start: number, entries: AuditEntry[]): Promise<void> {
  const clock = new ManualClock(start);
  const log = await AuditLog.open({
    path,
    session,
    user: 'alice',
    clock,
    signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) },
    checkpointIntervalMs: 0,
    fsync: false,
  });
  for (const e of entries) {
    await log.append(e);
    clock.advance(1000);
  }
  await log.close();
}

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

async function exportText(format: ExportFormat, filter: AuditFilter = {}): Promise<{ text: string; exported: number }> {
  const sink = new Sink();
  const { exported } = await exportAuditFile(path, sink, format, filter);
  return { text: sink.text, exported };
}

async function prevs(): Promise<string[]> {
  return (await readFile(path, 'utf8'))
    .trimEnd()
    .split('\n')
    .map((l) => (JSON.parse(l) as AuditRecord).prev);
}

const ENTRIES: AuditEntry[] = [
  { event: 'broker.started', detail: { kid: 'k1' } },
  { event: 'task.approved', agent: root, task: { id: 'tsk_1', description: 'fix "auth", then deploy' }, grantId: 'grt_1', scopes: ['repo:read', 'repo:write'], audience: 'https://api.github.com', outcome: 'success', detail: { mode: 'task' } },
  { event: 'token.minted', agent: child, task: { id: 'tsk_1', description: '=HYPERLINK("http://x")' }, grantId: 'grt_1', scopes: ['repo:read'], audience: 'https://api.github.com', jti: 'jti_1', exp: 1767225900, outcome: 'success' },
  { event: 'task.denied', agent: root, task: { id: 'tsk_2', description: '-rm\r\nline' }, scopes: ['admin'], audience: 'x', outcome: 'failure', code: 'WRIT_DENIED' },
];

describe('CSV export', () => {
  it('renders exact RFC 4180 rows with the formula guard, skipping checkpoints when filtered', async () => {
    await run('ses_1', T0, ENTRIES);
    const p = await prevs();
    const { text, exported } = await exportText('csv', { events: ['broker.started', 'task.approved', 'token.minted', 'task.denied'] });
    expect(exported).toBe(4);
    expect(text).toBe(
      [
        'seq,ts,session,event,user,agent_id,agent_name,agent_chain,task_id,task,grant_id,scopes,audience,jti,exp,outcome,code,prev,detail',
        `0,2026-01-01T00:00:00.000Z,ses_1,broker.started,alice,,,,,,,,,,,,,${p[0]},"{""kid"":""k1""}"`,
        `1,2026-01-01T00:00:01.000Z,ses_1,task.approved,alice,agt_root,claude,agt_root,tsk_1,"fix ""auth"", then deploy",grt_1,"repo:read repo:write",https://api.github.com,,,success,,${p[1]},"{""mode"":""task""}"`,
        `2,2026-01-01T00:00:02.000Z,ses_1,token.minted,alice,agt_child,"'@sub,agent",agt_root>agt_mid>agt_child,tsk_1,"'=HYPERLINK(""http://x"")",grt_1,repo:read,https://api.github.com,jti_1,1767225900,success,,${p[2]},`,
        `3,2026-01-01T00:00:03.000Z,ses_1,task.denied,alice,agt_root,claude,agt_root,tsk_2,"'-rm\r\nline",,admin,x,,,failure,WRIT_DENIED,${p[3]},`,
        '',
      ].join('\r\n'),
    );
  });

  it('quotes every cell that is not plain, so a `;` separator cannot split out a formula, and guards blank-led formulas', async () => {
    await run('ses_1', T0, [
      { event: 'task.requested', agent: { ...root, name: ' =1+1' }, task: { id: 'tsk_9', description: "fix;=cmd|' /C calc'!A0" }, scopes: ['repo:read'] },
      { event: 'task.requested', agent: { ...root, name: '\n=1+1' }, task: { id: 'tsk_9', description: 'a\tb' }, scopes: ['repo:read'] },
    ]);
    const { text } = await exportText('csv', { events: ['task.requested'] });
    const rows = text.split('\r\n');
    // agent_name, agent_chain, task_id, task: a quoted cell is one cell whatever the separator.
    expect(rows[1]!.split(',').slice(6, 10)).toEqual([`"' =1+1"`, 'agt_root', 'tsk_9', `"fix;=cmd|' /C calc'!A0"`]);
    expect(rows[2]).toContain(`,"'\n=1+1",agt_root,tsk_9,"a\tb",`);
  });

  it('carries each record\'s detail as JSON in the last column: how a tool call ended is in the CSV, not only "failure"', async () => {
    const call = { resource: 'mcp', action: 'call', target: 'github/create_issue' };
    await run('ses_1', T0, [
      { event: 'token.use.ended', agent: child, jti: 'jti_1', outcome: 'failure', code: 'WRIT_TOKEN_REVOKED', detail: { use: 'use_abc', call, outcome: 'revoked', durationMs: 42 } },
    ]);
    const { text } = await exportText('csv', { events: ['token.use.ended'] });
    const row = text.split('\r\n')[1]!;
    expect(row.startsWith('0,2026-01-01T00:00:00.000Z,ses_1,token.use.ended,alice,agt_child,')).toBe(true);
    expect(row.endsWith(
      `,failure,WRIT_TOKEN_REVOKED,${'0'.repeat(64)},"{""use"":""use_abc"",""call"":{""resource"":""mcp"",""action"":""call"",""target"":""github/create_issue""},""outcome"":""revoked"",""durationMs"":42}"`,
    )).toBe(true);
  });

  it('includes checkpoint rows in an unfiltered export', async () => {
    await run('ses_1', T0, ENTRIES.slice(0, 1));
    const { text, exported } = await exportText('csv');
    expect(exported).toBe(2);
    expect(text.split('\r\n')[2]).toMatch(/^1,2026-01-01T00:00:01.000Z,ses_1,checkpoint,alice,/);
    expect(exportHeader('jsonl')).toBe('');
    expect(exportHeader('ocsf')).toBe('');
  });
});

describe('OCSF export', () => {
  it('maps tasks, tokens and connections to OCSF classes with exact fields', async () => {
    const entries: AuditEntry[] = [
      ...ENTRIES,
      { event: 'agent.connected', agent: root },
      { event: 'token.introspected', agent: child, jti: 'jti_1', outcome: 'success' },
      { event: 'revoked', agent: root, jti: 'jti_1', detail: { target: { kind: 'token', jti: 'jti_1' } } },
      { event: 'agent.disconnected', agent: root },
      { event: 'task.requested', agent: child, task: { id: 'tsk_3', description: 'read' }, scopes: ['repo:read'] },
    ];
    await run('ses_1', T0, entries);
    const { text, exported } = await exportText('ocsf');
    const events = text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    // broker.started and the checkpoint have no OCSF mapping.
    expect(exported).toBe(8);
    expect(events.map((e) => [e.metadata.uid, e.class_uid, e.activity_id, e.type_uid, e.status_id])).toEqual([
      ['ses_1:1', 3003, 1, 300301, 1],
      ['ses_1:2', 6003, 1, 600301, 1],
      ['ses_1:3', 3003, 1, 300301, 2],
      ['ses_1:4', 3002, 1, 300201, 1],
      ['ses_1:5', 6003, 2, 600302, 1],
      ['ses_1:6', 6003, 4, 600304, 1],
      ['ses_1:7', 3002, 2, 300202, 1],
      ['ses_1:8', 3003, 99, 300399, 1],
    ]);
    expect(events[1]).toEqual({
      class_uid: 6003,
      category_uid: 6,
      activity_id: 1,
      activity_name: 'Create',
      type_uid: 600301,
      time: T0 + 2000,
      severity_id: 1,
      status_id: 1,
      status: 'Success',
      metadata: { product: { name: 'Writ', vendor_name: 'Writ' }, version: '1.3.0', uid: 'ses_1:2' },
      actor: { user: { uid: 'alice', type_id: 1 }, app_name: '@sub,agent', session: { uid: 'ses_1' } },
      api: { operation: 'token.minted' },
      unmapped: {
        agent_chain: ['agt_root', 'agt_mid', 'agt_child'],
        task: { id: 'tsk_1', description: '=HYPERLINK("http://x")' },
        scopes: ['repo:read'],
        jti: 'jti_1',
        grant_id: 'grt_1',
      },
    });
    expect(events[2]).toMatchObject({
      category_uid: 3,
      status: 'Failure',
      status_code: 'WRIT_DENIED',
      actor: { user: { uid: 'alice', type_id: 1 }, app_name: 'claude', session: { uid: 'ses_1' }, process: { pid: 4242 } },
      user: { uid: 'alice', type_id: 1 },
      privileges: ['admin'],
    });
  });

  it('returns an empty string for records it does not map', () => {
    const r: AuditRecord = { v: 1, seq: 0, ts: '2026-01-01T00:00:00.000Z', session: 's', event: 'key.rotated', user: 'u', prev: '0'.repeat(64) };
    expect(formatRecord(r, 'ocsf')).toBe('');
    expect(formatRecord(r, 'jsonl')).toBe(JSON.stringify(r) + '\n');
  });
});

describe('filters', () => {
  beforeEach(async () => {
    // Two broker runs in one file: ses_1 at T0 (seq 0-3, checkpoint 4), ses_2 an hour later (seq 5-6, checkpoint 7).
    await run('ses_1', T0, ENTRIES);
    await run('ses_2', T0 + 3_600_000, [
      { event: 'agent.connected', agent: { id: 'agt_mid', name: 'planner', kind: 'cli', parents: ['agt_root'] } },
      { event: 'token.minted', agent: { id: 'agt_other', name: 'codex', kind: 'cli', parents: [] }, jti: 'jti_9' },
    ]);
  });

  const seqs = async (filter: AuditFilter, format: ExportFormat = 'jsonl'): Promise<number[]> => {
    const { text } = await exportText(format, filter);
    return text.trimEnd().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as AuditRecord).seq);
  };

  it('exports the file byte for byte, checkpoints included, when unfiltered', async () => {
    const { text, exported } = await exportText('jsonl');
    expect(text).toBe(await readFile(path, 'utf8'));
    expect(exported).toBe(8);
  });

  it('filters by session', async () => {
    expect(await seqs({ session: 'ses_2' })).toEqual([5, 6]);
  });

  it('filters by agent, matching delegated agents through their parents', async () => {
    expect(await seqs({ agentId: 'agt_root' })).toEqual([1, 2, 3, 5]);
    expect(await seqs({ agentId: 'agt_mid' })).toEqual([2, 5]);
    expect(await seqs({ agentId: 'agt_child' })).toEqual([2]);
  });

  it('filters by time, since inclusive and until exclusive', async () => {
    expect(await seqs({ since: T0 + 1000, until: T0 + 3000 })).toEqual([1, 2]);
    expect(await seqs({ since: T0 + 3_600_000 })).toEqual([5, 6]);
  });

  it('filters by event, and exports checkpoints only when asked for by name', async () => {
    expect(await seqs({ events: ['token.minted'] })).toEqual([2, 6]);
    expect(await seqs({ events: ['checkpoint'] })).toEqual([4, 7]);
    expect(await seqs({ session: 'ses_1' })).toEqual([0, 1, 2, 3]);
  });

  it('matchesFilter applies every given criterion', () => {
    const r: AuditRecord = { v: 1, seq: 0, ts: new Date(T0).toISOString(), session: 's', event: 'token.minted', user: 'u', agent: child, prev: '0'.repeat(64) };
    expect(matchesFilter(r, {})).toBe(true);
    expect(matchesFilter(r, { session: 's', agentId: 'agt_mid', since: T0, until: T0 + 1, events: ['token.minted'] })).toBe(true);
    expect(matchesFilter(r, { until: T0 })).toBe(false);
    expect(matchesFilter(r, { agentId: 'agt_x' })).toBe(false);
    expect(matchesFilter({ ...r, agent: undefined }, { agentId: 'agt_mid' })).toBe(false);
  });

  it('refuses a corrupt line rather than leaving a silent gap, and skips a torn tail', async () => {
    const text = await readFile(path, 'utf8');
    await writeFile(path, text + '{"v":1,"se');
    expect((await exportText('jsonl')).exported).toBe(8);
    await writeFile(path, 'garbage\n' + text);
    const e = await exportText('csv').catch((err: unknown) => err);
    expect(isWritError(e, 'WRIT_AUDIT_CORRUPT')).toBe(true);
    expect((e as Error).message).toContain('line 1');
  });
});

describe('OCSF mapping of oversight and use records', () => {
  it('maps findings to Detection Finding 2004 and uses to API Activity 6003 Read', async () => {
    const { toOcsf } = await import('../../broker/audit/export');
    const base = { v: 1 as const, seq: 7, ts: '2026-11-29T10:00:00.000Z', session: 'ses_1', user: 'dev@example.com', prev: '0'.repeat(64) };
    const finding = toOcsf({ ...base, event: 'finding', outcome: 'failure', detail: { id: 'fnd_1', kind: 'scope-creep', action: 'warn' } });
    expect(finding).toMatchObject({ class_uid: 2004, category_uid: 2, activity_id: 1, type_uid: 200401, status_id: 2, finding_info: { uid: 'fnd_1', title: 'scope-creep' } });
    const used = toOcsf({ ...base, event: 'token.used', jti: 'tok_1', outcome: 'success' });
    expect(used).toMatchObject({ class_uid: 6003, activity_id: 2, type_uid: 600302, api: { operation: 'token.used' }, unmapped: { jti: 'tok_1' } });
    expect(toOcsf({ ...base, event: 'agent.blocked', outcome: 'success', detail: { identity: 'inv_1' } })).toMatchObject({ class_uid: 3003, type_uid: 300302 });
  });

  it('maps a proxied call to 6003 Read and how it ended to 6003 Other, each with its detail', async () => {
    const { toOcsf } = await import('../../broker/audit/export');
    const base = { v: 1 as const, seq: 8, ts: '2026-11-29T10:00:00.000Z', session: 'ses_1', user: 'dev@example.com', prev: '0'.repeat(64) };
    const call = { allowed: true, call: 'pxc_1', secret: 'gh', method: 'GET', url: 'https://api.github.com/user' };
    expect(toOcsf({ ...base, event: 'proxy.call', jti: 'tok_1', outcome: 'success', detail: call })).toMatchObject({ type_uid: 600302, status_id: 1, unmapped: { jti: 'tok_1', detail: call } });
    const ended = { call: 'pxc_1', secret: 'gh', method: 'GET', url: 'https://api.github.com/user', status: 200, bytesUp: 0, bytesDown: 10, reason: 'revoked', incomplete: true };
    expect(toOcsf({ ...base, event: 'proxy.ended', jti: 'tok_1', outcome: 'failure', code: 'WRIT_TOKEN_REVOKED', detail: ended })).toMatchObject({
      class_uid: 6003,
      activity_id: 99,
      type_uid: 600399,
      status_id: 2,
      status_code: 'WRIT_TOKEN_REVOKED',
      api: { operation: 'proxy.ended' },
      unmapped: { jti: 'tok_1', detail: ended },
    });
  });

  it("maps how a resource's recorded call ended (token.use.ended) to 6003 Other, with its detail", async () => {
    const { toOcsf } = await import('../../broker/audit/export');
    const base = { v: 1 as const, seq: 9, ts: '2026-11-29T10:00:00.000Z', session: 'ses_1', user: 'dev@example.com', prev: '0'.repeat(64) };
    const detail = { use: 'use_1', call: { resource: 'mcp', action: 'call', target: 'echo/slow' }, outcome: 'cancelled', durationMs: 1200 };
    expect(toOcsf({ ...base, event: 'token.use.ended', jti: 'tok_1', outcome: 'failure', detail })).toEqual({
      class_uid: 6003,
      category_uid: 6,
      activity_id: 99,
      activity_name: 'Other',
      type_uid: 600399,
      time: Date.parse(base.ts),
      severity_id: 1,
      status_id: 2,
      status: 'Failure',
      metadata: { product: { name: 'Writ', vendor_name: 'Writ' }, version: '1.3.0', uid: 'ses_1:9' },
      actor: { user: { uid: 'dev@example.com', type_id: 1 }, session: { uid: 'ses_1' } },
      api: { operation: 'token.use.ended' },
      unmapped: { jti: 'tok_1', detail },
    });
    const answered = { ...detail, outcome: 'answered' };
    expect(toOcsf({ ...base, event: 'token.use.ended', jti: 'tok_1', outcome: 'success', detail: answered })).toMatchObject({ status_id: 1, unmapped: { detail: answered } });
    // Ended because the gate stopped: a failure, its detail as the schema has it.
    const closed = TokenUseEndedDetail.parse({ ...detail, outcome: 'closed' });
    expect(toOcsf({ ...base, event: 'token.use.ended', jti: 'tok_1', outcome: 'failure', detail: closed })).toMatchObject({ type_uid: 600399, status_id: 2, unmapped: { detail: closed } });
  });
});
