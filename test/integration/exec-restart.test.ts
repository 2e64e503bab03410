// A sub-agent after a broker restart. The broker keeps agent sessions in memory only, so after it restarts a
// `writ exec` comes back as a new agent under its name, and so does a `writ exec` running inside it (a sub-agent),
// as a top-level one: the new broker cannot know it was the first one's child. Stop must still reach the sub-agent
// when it has left its parent's process tree (here: `setsid`, a session and process group of its own, which a
// daemonizing tool does): revoking the parent as it is now makes its `writ exec` revoke the id it had, which the
// sub-agent's token names in its `act` chain, and the sub-agent's own `writ exec` hears that and stops its command.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, WRIT, approveAll, form, freshEnv, liveAgents, requireKeyring, writ } from '../helpers/broker';
import { until } from '../helpers/until';
import { isAlive, treeOf } from '../../broker/proxy/process-tree';

requireKeyring();

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

const readJson = <T>(path: string): T | undefined => {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
};
const readText = (path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

describe('a sub-agent outside its parent\'s process tree, across a broker restart', () => {
  it('is stopped, and its token refused, when the parent is revoked under the id it came back as', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const dir = env.WRIT_STATE_DIR;
    const innerMarker = join(dir, 'inner-running');
    const innerErr = join(dir, 'inner-stderr');
    const exec = (agent: string, task: string) => [WRIT, 'exec', '--task', task, '--scope', 'repo:read:x', '--aud', 'https://api.example', '--agent', agent, '--'];
    // The sub-agent's command: says where it is and what it holds, then idles.
    const idle = `require('fs').writeFileSync(${JSON.stringify(innerMarker)}, JSON.stringify({ pid: process.pid, token: process.env.WRIT_TOKEN })); setInterval(() => {}, 1000)`;
    // The parent's command starts a launcher that starts the sub-agent's `writ exec` in a session of its own (out of
    // the parent's process group), its stderr to a file, and exits at once: the sub-agent is orphaned, reparented
    // away from the parent's tree (a daemon's double fork), so no process-tree walk can find it. The parent idles.
    const launcher = `
      const fs = require('node:fs');
      const err = fs.openSync(${JSON.stringify(innerErr)}, 'a');
      const c = require('node:child_process').spawn(process.execPath, ${JSON.stringify([...exec('sub', 'sub task'), process.execPath, '-e', idle])}, { detached: true, stdio: ['ignore', 'ignore', err] });
      fs.writeFileSync(${JSON.stringify(join(dir, 'inner-writ-pid'))}, String(c.pid));
      c.unref();`;
    const parentCommand = `require('node:child_process').spawnSync(process.execPath, ['-e', ${JSON.stringify(launcher)}], { stdio: 'inherit' }); setInterval(() => {}, 1000);`;
    const outer = spawn(process.execPath, [...exec('parent', 'parent task'), process.execPath, '-e', parentCommand], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let outerErr = '';
    outer.stderr.on('data', (d) => (outerErr += d));
    const outerExited = new Promise<{ code: number | null; signal: string | null }>((r) => outer.on('exit', (code, signal) => r({ code, signal })));
    cleanup.push(() => {
      if (outer.exitCode === null && outer.signalCode === null) outer.kill('SIGKILL');
    });

    const inner = await until(() => readJson<{ pid: number; token: string }>(innerMarker));
    const innerWrit = Number(readFileSync(join(dir, 'inner-writ-pid'), 'utf8'));
    // Orphaned: the parent's `writ exec` cannot find it in its tree.
    expect(treeOf(outer.pid!, false)).not.toContain(innerWrit);
    cleanup.push(() => {
      for (const pid of [inner.pid, innerWrit]) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    });
    const before = await liveAgents(env);
    const parentOld = before.find((a) => a.name === 'parent')!.id;
    const subOld = before.find((a) => a.name === 'sub')!.id;
    // The sub-agent's token names both, the sub-agent first (RFC 8693 nested act).
    const claims = JSON.parse(Buffer.from(inner.token.split('.')[1]!, 'base64url').toString('utf8'));
    expect(claims.act).toEqual({ sub: subOld, act: { sub: parentOld } });

    await b1.kill(); // a crash; the extension starts it again
    await until(() => (outerErr.includes('lost the connection') && readText(innerErr).includes('lost the connection') ? true : undefined));
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    await until(() => (outerErr.includes('writ: reconnected') && readText(innerErr).includes('writ: reconnected') ? true : undefined));
    const after = await liveAgents(env);
    const parentNew = after.find((a) => a.name === 'parent' && a.connected)!.id;
    expect(parentNew).not.toBe(parentOld);
    expect(after.find((a) => a.name === 'sub' && a.connected)!.id).not.toBe(subOld);

    // Stop the parent as the developer now sees it: its new id.
    expect((await writ(['revoke', '--agent', parentNew], env)).code).toBe(0);
    expect(await outerExited).toEqual({ code: 143, signal: null });
    // The sub-agent's `writ exec` heard the revocation of the id its token names, and stopped its command.
    await until(() => (!isAlive(inner.pid) && !isAlive(innerWrit) ? true : undefined));
    expect(readText(innerErr).trim().split('\n').at(-1)).toBe(`writ: the agent ${subOld} was revoked; stopping its process tree`);
    // And the token it held is refused wherever it is checked.
    const introspected = await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: inner.token });
    expect(introspected.json.active).toBe(false);
    for (const text of [outerErr, readText(innerErr)]) expect(text).not.toContain(inner.token);
  }, 180_000);
});
