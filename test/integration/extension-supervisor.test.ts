// The extension's broker supervisor against the real broker process: ready, state over IPC, restart after a
// crash, and a clean stop (the `broker.stopped` record and final checkpoint are written).
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerSupervisor } from '../../extension/supervisor';
import type { BrokerMessage, ReadyInfo, SupervisorOptions } from '../../extension/supervisor';
import type { BrokerPhase } from '../../extension/statusModel';
import { WRIT, freshEnv, requireKeyring } from '../helpers/broker';

requireKeyring();

function harness(extra: Partial<SupervisorOptions> = {}) {
  const env = freshEnv();
  const phases: BrokerPhase['kind'][] = [];
  const messages: BrokerMessage[] = [];
  const readies: ReadyInfo[] = [];
  let onReady: (() => void) | undefined;
  const sup = new BrokerSupervisor({
    execPath: process.execPath,
    script: WRIT,
    args: () => ['serve', '--state-dir', env.WRIT_STATE_DIR, '--runtime-dir', env.WRIT_RUNTIME_DIR, '--default-ttl', '120'],
    env: () => ({ ...process.env, ...env, ELECTRON_RUN_AS_NODE: '1' }),
    log: () => undefined,
    onPhase: (p) => phases.push(p.kind),
    onReady: (r) => {
      readies.push(r);
      onReady?.();
    },
    onMessage: (m) => messages.push(m),
    backoffMs: [50],
    ...extra,
  });
  const nextReady = () => new Promise<void>((r) => (onReady = r));
  return { env, sup, phases, messages, readies, nextReady };
}

let stopMe: BrokerSupervisor | undefined;

/** A harness whose broker has started (stopped after the test). */
async function running(extra: Partial<SupervisorOptions>): Promise<ReturnType<typeof harness>> {
  const h = harness(extra);
  stopMe = h.sup;
  const ready = h.nextReady();
  h.sup.start();
  await ready;
  return h;
}
afterEach(async () => {
  await stopMe?.stop();
  stopMe = undefined;
});

describe('BrokerSupervisor', () => {
  it('starts the broker, answers a state request, restarts it after a crash and stops it cleanly', async () => {
    const h = harness();
    stopMe = h.sup;
    let ready = h.nextReady();
    h.sup.start();
    await ready;
    expect(h.phases).toEqual(['starting', 'running']);
    expect(h.readies[0]!.socketPath).toBe(join(h.env.WRIT_RUNTIME_DIR, 'writ.sock'));

    expect(h.sup.send({ type: 'state.request', requestId: 'q1' })).toBe(true);
    for (let i = 0; i < 100 && !h.messages.some((m) => m.type === 'state'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(h.messages.find((m) => m.type === 'state')).toEqual({ type: 'state', requestId: 'q1', agents: [], grants: [], pendingApprovals: 0, findings: [], inventory: [] });

    ready = h.nextReady();
    process.kill(h.sup.pid!, 'SIGKILL');
    await ready;
    expect(h.phases).toEqual(['starting', 'running', 'restarting', 'starting', 'running']);

    const pid = h.sup.pid!;
    await h.sup.stop();
    expect(h.phases.at(-1)).toBe('stopped');
    expect(() => process.kill(pid, 0)).toThrow();
    const lines = readFileSync(join(h.env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.slice(-2).map((l) => l.event), JSON.stringify(lines.slice(-8).map((l) => l.event))).toEqual(['broker.stopped', 'checkpoint']);
  });

  it('says when a running broker stops answering (SIGSTOP), keeps it, and says so again when it answers', async () => {
    const h = await running({ pingMs: 100, unresponsiveMs: 3000 });
    const pid = h.sup.pid!;
    const until = async (what: string, ok: () => boolean) => {
      for (let i = 0; i < 1500 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
      if (!ok()) throw new Error(`timed out waiting for ${what}; phases ${h.phases.join(' ')}`);
    };
    // Answering pings: a dozen go by and it stays running.
    await new Promise((r) => setTimeout(r, 1500));
    expect(h.phases).toEqual(['starting', 'running']);
    process.kill(pid, 'SIGSTOP');
    try {
      await until('unresponsive', () => h.sup.current.kind === 'unresponsive');
      const silent = h.sup.current as Extract<BrokerPhase, { kind: 'unresponsive' }>;
      expect(silent.silentSeconds).toBeGreaterThanOrEqual(3);
      // Not restarted, not killed: the same process, still there.
      expect(h.sup.pid).toBe(pid);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await until('running again', () => h.sup.current.kind === 'running');
    expect(h.phases.filter((p) => p !== 'unresponsive')).toEqual(['starting', 'running', 'running']);
    expect(h.sup.pid).toBe(pid);
    // Pongs are the supervisor's own: none reaches the editor.
    expect(h.messages.some((m) => (m as { type: string }).type === 'pong')).toBe(false);
    expect(h.sup.send({ type: 'state.request', requestId: 'after' })).toBe(true);
    await until('a state answer', () => h.messages.some((m) => m.type === 'state' && m.requestId === 'after'));
  });

  it('does not call a broker silent when the editor side was the one blocked (its answer waiting in the pipe)', async () => {
    const h = await running({ pingMs: 100, unresponsiveMs: 1000 });
    // Right after a ping goes out, this process (the extension host) is blocked longer than the silence allowed.
    const child = (h.sup as unknown as { child: { send: (m: { type: string }) => boolean } }).child;
    const send = child.send.bind(child);
    let blocked = 0;
    child.send = (m) => {
      const sent = send(m);
      if (m.type === 'ping' && blocked++ < 2) {
        setImmediate(() => {
          const end = Date.now() + 1500;
          while (Date.now() < end);
        });
      }
      return sent;
    };
    await new Promise((r) => setTimeout(r, 4000));
    expect(blocked).toBeGreaterThanOrEqual(2);
    expect(h.phases).toEqual(['starting', 'running']);
  });

  it('gives up with an error phase when the broker cannot start, naming the reason', async () => {
    const h = harness();
    const phases: BrokerPhase[] = [];
    const sup = new BrokerSupervisor({
      execPath: process.execPath,
      script: WRIT,
      args: () => ['serve', '--max-ttl', '99999', '--state-dir', h.env.WRIT_STATE_DIR, '--runtime-dir', h.env.WRIT_RUNTIME_DIR],
      env: () => ({ ...process.env, ...h.env }),
      log: () => undefined,
      onPhase: (p) => phases.push(p),
      onReady: () => undefined,
      onMessage: () => undefined,
      backoffMs: [10],
      maxFailures: 2,
    });
    stopMe = sup;
    sup.start();
    for (let i = 0; i < 300 && sup.current.kind !== 'error'; i++) await new Promise((r) => setTimeout(r, 20));
    expect(phases.map((p) => p.kind)).toEqual(['starting', 'restarting', 'starting', 'error']);
    expect(sup.current).toEqual({ kind: 'error', error: 'the maximum token lifetime must be 1 to 3600 seconds (WRIT_USAGE)' });
  });
});
