// The audit panel's feed (extension/auditFeed.ts) against a real broker run by the extension's supervisor and
// stopped with SIGSTOP: opening the panel on a broker that does not answer shows the log on disk and says so, and
// once it answers again every record it wrote reaches the panel once, in log order.
import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerSupervisor } from '../../extension/supervisor';
import type { SupervisorOptions } from '../../extension/supervisor';
import { AuditFeed } from '../../extension/auditFeed';
import type { AuditFeedDeps } from '../../extension/auditFeed';
import type { BrokerPhase } from '../../extension/statusModel';
import type { AuditRecord, ExtensionToWebview } from '../../broker/protocol';
import { WritClient } from '../../broker/sdk/client';
import { WRIT, freshEnv, requireKeyring } from '../helpers/broker';
import { until } from '../helpers/until';

requireKeyring();

const AUD = 'https://api.example';

/** A supervised broker and a panel feed wired to it as WritContext wires them (phase, records, follow). */
async function editor(sup: Partial<SupervisorOptions>, feed: Pick<AuditFeedDeps, 'silentAfterMs'>) {
  const env = freshEnv();
  const auditPath = join(env.WRIT_STATE_DIR, 'audit.jsonl');
  const posts: ExtensionToWebview[] = [];
  const stateWaiters = new Map<string, () => void>();
  let panel: AuditFeed | undefined;
  let phase: BrokerPhase['kind'] = 'stopped';
  let socketPath = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  const supervisor = new BrokerSupervisor({
    execPath: process.execPath,
    script: WRIT,
    args: () => ['serve', '--state-dir', env.WRIT_STATE_DIR, '--runtime-dir', env.WRIT_RUNTIME_DIR, '--default-ttl', '120'],
    env: () => ({ ...process.env, ...env, ELECTRON_RUN_AS_NODE: '1' }),
    log: () => undefined,
    onPhase: (p) => {
      phase = p.kind;
      panel?.brokerSilent(p.kind === 'unresponsive');
    },
    onReady: (info) => {
      socketPath = info.socketPath;
      onReady();
    },
    onMessage: (m) => {
      if (m.type === 'audit.records') for (const r of m.records) panel?.append(r);
      if (m.type === 'state') stateWaiters.get(m.requestId)?.();
      if (m.type === 'approval.request') supervisor.send({ type: 'approval.decision', decision: { requestId: m.request.requestId, decision: 'approve', mode: 'task' } });
    },
    ...sup,
  });
  stopMe = supervisor;
  let round = 0;
  panel = new AuditFeed({
    auditPath: () => auditPath,
    // As WritContext.follow: `audit.follow`, then a state request, whose answer comes only after the broker took it.
    follow: async (on) => {
      if (!supervisor.send({ type: 'audit.follow', on }) || !on) return;
      const requestId = `follow-${++round}`;
      await new Promise<void>((resolve) => {
        stateWaiters.set(requestId, resolve);
        supervisor.send({ type: 'state.request', requestId });
      });
    },
    post: (m) => posts.push(m),
    liveAgents: () => [],
    verify: async () => ({ state: 'intact', message: 'not run here' }),
    log: () => undefined,
    ...feed,
  });
  supervisor.start();
  await ready;
  const agent = (await WritClient.asAgent({ name: 'runaway', kind: 'script', version: '1.0' }, `unix:${socketPath}`)).client;
  const grant = (await agent.call('task.request', { task: 'mint', scopes: ['repo:read:acme/web'], audience: AUD })).grant;
  return {
    supervisor,
    panel,
    posts,
    agent,
    mint: () => agent.call('token.mint', { grantId: grant.id }),
    phase: () => phase,
    /** The log's complete lines now, by seq. */
    onDisk: (): number[] => {
      if (!existsSync(auditPath)) return [];
      const text = readFileSync(auditPath, 'utf8');
      return text
        .slice(0, text.lastIndexOf('\n') + 1)
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as AuditRecord).seq);
    },
    /** The records the webview holds: a reset replaces them, the rest append. */
    shown: (): number[] => {
      let held: number[] = [];
      for (const m of posts) if (m.type === 'records') held = m.reset ? m.records.map((r) => r.seq) : [...held, ...m.records.map((r) => r.seq)];
      return held;
    },
    notes: () => posts.filter((m): m is Extract<ExtensionToWebview, { type: 'broker' }> => m.type === 'broker').map((m) => m.answering),
  };
}

let stopMe: BrokerSupervisor | undefined;
let stoppedPid: number | undefined;
afterEach(async () => {
  if (stoppedPid !== undefined) process.kill(stoppedPid, 'SIGCONT');
  stoppedPid = undefined;
  await stopMe?.stop();
  stopMe = undefined;
});

describe('the audit panel on a broker that does not answer', () => {
  it('opened just after SIGSTOP: the log on disk and the note at once; after SIGCONT every later record once, the note gone', async () => {
    // The supervisor would take minutes to call it silent: only the panel's bounded wait for the follow can say so.
    const e = await editor({ pingMs: 100, unresponsiveMs: 600_000 }, {});
    for (let i = 0; i < 3; i++) await e.mint();
    const pid = e.supervisor.pid!;
    process.kill(pid, 'SIGSTOP');
    stoppedPid = pid;
    const before = e.onDisk();
    expect(before.length).toBeGreaterThanOrEqual(6); // broker.started, key, agent.connected, task.*, token.minted ×3

    e.panel.open();
    e.panel.ready();
    await until(() => (e.notes().length > 0 && e.shown().length > 0 ? true : undefined));
    expect(e.notes()).toEqual([false]);
    expect(e.shown()).toEqual(before);
    expect(e.phase()).toBe('running');

    // Asked while it is stopped (answered after SIGCONT), then more once it runs: all of them after the first read.
    const queued = Array.from({ length: 4 }, () => e.mint());
    process.kill(pid, 'SIGCONT');
    stoppedPid = undefined;
    await Promise.all(queued);
    for (let i = 0; i < 4; i++) await e.mint();
    await until(() => (e.notes().length === 2 ? true : undefined));
    expect(e.notes()).toEqual([false, true]);
    await until(() => {
      const disk = e.onDisk();
      return e.shown().at(-1) === disk.at(-1) ? true : undefined;
    });
    const disk = e.onDisk();
    expect(disk.length).toBeGreaterThanOrEqual(before.length + 8);
    // Every record of the log, once, in order: none lost between the first read and the stream, none twice.
    expect(e.shown()).toEqual(disk);
    expect(e.posts.filter((m) => m.type === 'records' && m.reset)).toHaveLength(1);
    await e.agent.close();
  });

  it('opened while the editor calls the broker not responding: the note at once; when it answers, live records again', async () => {
    // No bounded wait here: the note can come only from the supervisor's phase.
    const e = await editor({ pingMs: 100, unresponsiveMs: 3000 }, { silentAfterMs: Infinity });
    await e.mint();
    const pid = e.supervisor.pid!;
    process.kill(pid, 'SIGSTOP');
    stoppedPid = pid;
    await until(() => (e.phase() === 'unresponsive' ? true : undefined));
    const before = e.onDisk();

    e.panel.open();
    e.panel.ready();
    await until(() => (e.shown().length > 0 ? true : undefined));
    expect(e.shown()).toEqual(before);
    expect(e.notes()).toEqual([false]);

    process.kill(pid, 'SIGCONT');
    stoppedPid = undefined;
    await until(() => (e.phase() === 'running' ? true : undefined));
    await until(() => (e.notes().length === 2 ? true : undefined));
    expect(e.notes()).toEqual([false, true]);
    const { jti } = await e.mint();
    await until(() => {
      const disk = e.onDisk();
      return e.shown().at(-1) === disk.at(-1) && e.shown().length === disk.length ? true : undefined;
    });
    expect(e.shown()).toEqual(e.onDisk());
    const posted = e.posts.flatMap((m) => (m.type === 'records' ? m.records : []));
    expect(posted.filter((r) => r.event === 'token.minted' && r.jti === jti)).toHaveLength(1);
    await e.agent.close();
  });
});
