// `writ exec` and a revoked agent's process tree: the child and a grandchild it started (one that ignores SIGTERM)
// are both gone after revocation, and the audit log records that the tree was stopped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerProcess, approveAll, freshEnv, requireKeyring, writ } from '../helpers/broker';
import { isAlive } from '../../broker/proxy/process-tree';

requireKeyring();

describe('writ exec stops the whole process tree of a revoked agent', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
  });
  afterAll(async () => {
    await b.stop();
  });

  it('child and grandchild (which ignores SIGTERM) are gone; agent.stopped is on record', async () => {
    const marker = join(b.env.WRIT_STATE_DIR, 'tree-pids');
    // The grandchild ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    const grandchild = `process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)`;
    const child = `
      const { spawn } = require('node:child_process');
      const g = spawn(process.execPath, ['-e', ${JSON.stringify(grandchild)}], { stdio: 'ignore' });
      setTimeout(() => require('fs').writeFileSync(${JSON.stringify(marker)}, process.pid + ' ' + g.pid), 300);
      setInterval(() => {}, 1000);`;
    const run = writ(['exec', '--task', 'tree job', '--scope', 'repo:read:x', '--aud', 'a', '--agent', 'tree', '--', process.execPath, '-e', child], b.env, { timeout: 60_000 });
    let pids: number[] = [];
    for (let i = 0; i < 400 && pids.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      try {
        pids = readFileSync(marker, 'utf8').trim().split(' ').map(Number);
      } catch {
        // not yet
      }
    }
    expect(pids).toHaveLength(2);
    const [childPid, grandPid] = pids as [number, number];
    expect(isAlive(childPid)).toBe(true);
    expect(isAlive(grandPid)).toBe(true);

    const listed = await writ(['agents', '--live', '--json'], b.env);
    const agent = JSON.parse(listed.stdout).find((a: { name: string }) => a.name === 'tree');
    expect(agent).toBeDefined();
    expect((await writ(['revoke', '--agent', agent.id], b.env)).code).toBe(0);

    const r = await run;
    expect(r.code).toBe(128 + 15); // the child ended on SIGTERM
    expect(r.stderr).toContain('the agent was revoked');
    expect(isAlive(childPid)).toBe(false);
    expect(isAlive(grandPid)).toBe(false);

    let rec: any;
    for (let i = 0; i < 200 && !rec; i++) {
      rec = b.auditLines().map((l) => JSON.parse(l)).find((x) => x.event === 'agent.stopped');
      if (!rec) await new Promise((res) => setTimeout(res, 25));
    }
    expect(rec).toMatchObject({
      event: 'agent.stopped',
      outcome: 'success',
      agent: { id: agent.id, name: 'tree' },
      detail: { pid: childPid, signal: 'SIGKILL', treeStopped: true, exitCode: null, exitSignal: 'SIGTERM', revoked: true },
    });
    expect(rec.detail.processes).toBeGreaterThanOrEqual(2);
    expect(rec.detail.reporter.pid).toBeGreaterThan(0);
  }, 90_000);
});
