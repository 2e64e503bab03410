// A sub-agent after a broker restart. The broker keeps agent sessions in memory only, so after it restarts a
// `writ exec` comes back as a new agent under its name, holding the session it had; a `writ exec` running inside it
// (a sub-agent) says hello with its own session and its parent's, as on its first hello, and so comes back under
// its parent as the parent is now, whichever of the two reconnects first. Revoking the parent then takes the
// sub-agent through the broker's own cascade. The sub-agent here has left its parent's process tree (`setsid`, a
// session and process group of its own, which a daemonizing tool does), so no process-tree walk stops it: only the
// broker's cascade (its line closed with 4001) and the revocation of the ids its token names (`act`) can.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerProcess, WRIT, approveAll, form, freshEnv, liveAgents, requireKeyring } from '../helpers/broker';
import { until } from '../helpers/until';
import { codeOf } from '../helpers/codes';
import { isAlive, treeOf } from '../../broker/proxy/process-tree';
import { ExecLine, heldToken } from '../../broker/exec-line';
import { WritClient } from '../../broker/sdk/client';
import { createVerifier } from '../../broker/sdk/verify';
import type { WritError } from '../../broker/errors';

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
  // `commandFirst`: the sub-agent's own command (WRIT_SESSION in its environment: its `writ token`, `writ mcp`, an SDK
  // client) says hello with the sub-agent's session before its `writ exec` does; the new broker takes the session
  // for that hello, under the name the command gives, and `writ exec`'s hello is then answered `resumed: true`.
  it.each([
    ['its `writ exec` says hello first', false],
    ['its command says hello first, as `writ token` would', true],
  ])('%s: comes back under its parent, and is stopped by the broker\'s cascade, its token refused, when the parent is revoked under the id it came back as', async (_order, commandFirst) => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const dir = env.WRIT_STATE_DIR;
    const innerMarker = join(dir, 'inner-running');
    const outerSession = join(dir, 'outer-session');
    const innerErr = join(dir, 'inner-stderr');
    const exec = (agent: string, task: string) => [WRIT, 'exec', '--task', task, '--scope', 'repo:read:x', '--aud', 'https://api.example', '--agent', agent, '--'];
    // The sub-agent's command: says where it is and what it holds, then idles.
    const idle = `require('fs').writeFileSync(${JSON.stringify(innerMarker)}, JSON.stringify({ pid: process.pid, token: process.env.WRIT_TOKEN, session: process.env.WRIT_SESSION })); setInterval(() => {}, 1000)`;
    // The parent's command starts a launcher that starts the sub-agent's `writ exec` in a session of its own (out of
    // the parent's process group), its stderr to a file, and exits at once: the sub-agent is orphaned, reparented
    // away from the parent's tree (a daemon's double fork), so no process-tree walk can find it. The parent idles.
    const launcher = `
      const fs = require('node:fs');
      const err = fs.openSync(${JSON.stringify(innerErr)}, 'a');
      const c = require('node:child_process').spawn(process.execPath, ${JSON.stringify([...exec('sub', 'sub task'), process.execPath, '-e', idle])}, { detached: true, stdio: ['ignore', 'ignore', err] });
      fs.writeFileSync(${JSON.stringify(join(dir, 'inner-writ-pid'))}, String(c.pid));
      c.unref();`;
    const parentCommand = `require('node:fs').writeFileSync(${JSON.stringify(outerSession)}, process.env.WRIT_SESSION); require('node:child_process').spawnSync(process.execPath, ['-e', ${JSON.stringify(launcher)}], { stdio: 'inherit' }); setInterval(() => {}, 1000);`;
    const outer = spawn(process.execPath, [...exec('parent', 'parent task'), process.execPath, '-e', parentCommand], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let outerErr = '';
    outer.stderr.on('data', (d) => (outerErr += d));
    const outerExited = new Promise<{ code: number | null; signal: string | null }>((r) => outer.on('exit', (code, signal) => r({ code, signal })));
    cleanup.push(() => {
      if (outer.exitCode === null && outer.signalCode === null) outer.kill('SIGKILL');
    });

    const inner = await until(() => readJson<{ pid: number; token: string; session: string }>(innerMarker));
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
    // The sub-agent's `writ exec` held still (SIGSTOP) while its command says hello: the order is the test's, not the clock's.
    if (commandFirst) process.kill(innerWrit, 'SIGSTOP');
    cleanup.push(() => isAlive(innerWrit) && process.kill(innerWrit, 'SIGCONT'));
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    let fromCommand: string | undefined;
    if (commandFirst) {
      const cmd = await WritClient.asAgent({ name: 'writ-cli', kind: 'cli', session: inner.session }, b2.socket);
      cleanup.push(() => cmd.client.terminate());
      expect(cmd.hello.resumed).toBe(false);
      fromCommand = cmd.hello.agentId;
      process.kill(innerWrit, 'SIGCONT');
    }
    await until(() => (outerErr.includes('writ: reconnected') && readText(innerErr).includes('writ: reconnected') ? true : undefined));
    const after = await liveAgents(env);
    const parentNew = after.find((a) => a.name === 'parent' && a.connected)!.id;
    const subNew = after.find((a) => a.name === 'sub' && a.connected)!.id;
    // The agent the command's hello made: `writ exec`'s hello, with the parent's session, named it and put it under its parent.
    if (commandFirst) expect(subNew).toBe(fromCommand);
    expect([parentNew, subNew]).not.toContain(parentOld);
    expect([parentNew, subNew]).not.toContain(subOld);
    // Listed under its parent as it is now, in `writ agents --live` and in the snapshot the editor's Agents view draws.
    const listed = (id: string) => after.find((a) => a.id === id) && { parents: after.find((a) => a.id === id)!.parents, connected: after.find((a) => a.id === id)!.connected };
    expect([listed(parentNew), listed(subNew)]).toEqual([
      { parents: [], connected: true },
      { parents: [parentNew], connected: true },
    ]);
    b2.send({ type: 'state.request', requestId: 'after-restart' });
    const state = await until(() => b2.messages.find((m) => m.type === 'state' && m.requestId === 'after-restart'));
    expect(state.type === 'state' && state.agents.find((a) => a.id === subNew)?.parents).toEqual([parentNew]);

    // Stop the parent from the editor as the developer now sees it: its new id. The broker's cascade takes the
    // sub-agent with it (its line closed with 4001), not only the revocation of the old ids its token names.
    b2.send({ type: 'revoke', target: { kind: 'agent', id: parentNew } });
    expect(await outerExited).toEqual({ code: 143, signal: null });
    await until(() => (!isAlive(inner.pid) && !isAlive(innerWrit) ? true : undefined));
    expect((await liveAgents(env)).filter((a) => a.id === parentNew || a.id === subNew).map((a) => a.revoked)).toEqual([true, true]);
    // The sub-agent's `writ exec` heard its own revocation (the broker closed its line), stopped its command, and
    // revoked the id its token names (which the parent's `writ exec` revoking the parent's old id covers too).
    expect(readText(innerErr).trim().split('\n').slice(-2)).toEqual([
      'writ: the agent was revoked; stopping its process tree',
      `writ: revoked ${subOld} too, the id its token names`,
    ]);
    // And the token it held is refused wherever it is checked.
    const introspected = await form(`${b2.discovery.httpUrl}/oauth2/introspect`, { token: inner.token });
    expect(introspected.json.active).toBe(false);
    for (const text of [outerErr, readText(innerErr)]) expect(text).not.toContain(inner.token);
    // No session credential in anything the broker or `writ exec` wrote: their stderr and output, the audit log, the
    // revocation list (which names a revoked session by its hash).
    const sessions = [readFileSync(outerSession, 'utf8'), inner.session];
    expect(sessions.map((x) => /^wss_[A-Za-z0-9_-]{43}$/.test(x))).toEqual([true, true]);
    await b2.stop();
    const written = [b1.stderr, b1.stdout, b2.stderr, b2.stdout, outerErr, readText(innerErr), readText(join(dir, 'audit.jsonl')), readText(join(dir, 'revocations.jsonl'))];
    for (const text of written) for (const secret of sessions) expect(text).not.toContain(secret);
  }, 180_000);
});

// `writ exec`'s line (ExecLine) across a restart when the agent's own command says hello with the session first:
// the new broker takes the session for that hello, and the line's own hello is answered `resumed: true` with an id
// the line has never had. That is a restart all the same: the line must hear revocations of the id its token names,
// and revoke that id too when the agent it is now is revoked.
describe('writ exec\'s line after a restart, when its command said hello with the session first', () => {
  async function restarted() {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client, hello } = await WritClient.asAgent({ name: 'agent', kind: 'script' }, b1.socket);
    const r = await client.call('task.request', { task: 't', scopes: ['repo:read:x'], audience: 'https://api.example' });
    const session = r.session!;
    const log: string[] = [];
    let stopped: string | undefined;
    let open = false;
    let b2: BrokerProcess | undefined;
    const line = new ExecLine({
      client,
      agent: { name: 'agent', kind: 'script' },
      session,
      agentId: hello.agentId,
      token: heldToken(r.token.token),
      // No broker for the line until the command has said hello on the new one: the order is the test's, not the clock's.
      address: () => (open && b2 ? b2.socket : `unix:${join(env.WRIT_RUNTIME_DIR, 'nothing.sock')}`),
      log: (l) => log.push(l),
      onRevoked: (why) => (stopped = why),
      backoffMs: [100],
    });
    cleanup.push(() => line.close().catch(() => undefined));
    await b1.kill();
    await until(() => (log.some((l) => l.includes('lost the connection')) ? true : undefined));
    b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2!.stop());
    const cmd = await WritClient.asAgent({ name: 'writ-cli', kind: 'cli', session }, b2.socket);
    cleanup.push(() => cmd.client.terminate());
    expect(cmd.hello.resumed).toBe(false);
    open = true;
    await until(() => (log.some((l) => l.includes('writ: reconnected')) ? true : undefined));
    const admin = await WritClient.connect(b2.socket);
    cleanup.push(() => admin.terminate());
    return { env, b2, line, log, admin, oldId: hello.agentId, newId: cmd.hello.agentId, token: r.token.token, stopped: () => stopped };
  }

  it('is the agent the command\'s hello made, and revoking the agent it was (its old id) stops the command', async () => {
    const s = await restarted();
    expect(s.line.agentId).toBe(s.newId);
    expect(s.stopped()).toBeUndefined();
    await s.admin.call('revoke', { target: { kind: 'agent', id: s.oldId } });
    expect(await until(() => s.stopped())).toBe(`the agent ${s.oldId} was revoked`);
  }, 120_000);

  it('revoking the agent it is now stops the command and revokes the old id, so its token is refused at writ/verify', async () => {
    const s = await restarted();
    const v = createVerifier({ env: s.env, audience: 'https://api.example', reportUse: false });
    cleanup.push(() => v.close());
    expect((await v.verify(s.token)).actors).toEqual([s.oldId]);
    await s.admin.call('revoke', { target: { kind: 'agent', id: s.newId } });
    expect(await until(() => s.stopped())).toBe('the agent was revoked');
    await s.line.close(); // as `writ exec` does once the command has stopped: the old id's revocation is sent first
    expect(s.log.at(-1)).toBe(`writ: revoked ${s.oldId} too, the id its token names`);
    expect(await codeOf(v.verify(s.token))).toBe('WRIT_TOKEN_REVOKED');
  }, 120_000);

  it('a line dropped again later (the broker still up) keeps hearing revocations of the old id', async () => {
    const s = await restarted();
    const reconnects = s.log.filter((l) => l.includes('writ: reconnected')).length;
    // The connection goes (a network hiccup, not a close of the broker's): the line says hello again, `resumed: true`.
    s.line['client'].terminate();
    await until(() => (s.log.filter((l) => l.includes('writ: reconnected')).length > reconnects ? true : undefined));
    expect(s.line.agentId).toBe(s.newId);
    await s.admin.call('revoke', { target: { kind: 'agent', id: s.oldId } });
    expect(await until(() => s.stopped())).toBe(`the agent ${s.oldId} was revoked`);
  }, 120_000);
});

// After a restart the agent is back under a new id holding its old session, and the developer may revoke it by any
// id it has had: the one its token and the first run's audit records name, or the one `writ agents --live` showed in
// a run since. Each stops the command, and the line revokes the id the agent has now too: that one holds the session,
// so a process still holding WRIT_SESSION (a daemon the command left behind) gets no token without a prompt, and the
// broker's cascade takes its sub-agents.
describe('writ exec\'s line: revoking any id its agent has had since a restart', () => {
  /** An agent (a sub-agent of `parentSession`'s agent when given) whose `writ exec` line reconnects to each broker started. */
  async function lineOn(env: Record<string, string>, b1: BrokerProcess, name: string, parentSession?: string) {
    const { client, hello } = await WritClient.asAgent({ name, kind: 'script', ...(parentSession ? { parentSession } : {}) }, b1.socket);
    const r = await client.call('task.request', { task: `${name} task`, scopes: ['repo:read:x'], audience: 'https://api.example' });
    const log: string[] = [];
    let stopped: string | undefined;
    const state = { broker: b1 };
    const line = new ExecLine({
      client,
      agent: { name, kind: 'script' },
      session: r.session!,
      ...(parentSession ? { parentSession } : {}),
      agentId: hello.agentId,
      token: heldToken(r.token.token),
      address: () => state.broker.socket,
      log: (l) => log.push(l),
      onRevoked: (why) => (stopped = why),
      backoffMs: [100],
    });
    cleanup.push(() => line.close().catch(() => undefined));
    const reconnected = (n: number) => until(() => (log.filter((l) => l.startsWith('writ: reconnected')).length === n ? true : undefined));
    return { line, log, state, session: r.session!, token: r.token.token, firstId: hello.agentId, reconnected, stopped: () => stopped };
  }

  /** What a process holding the session gets when it says hello with it and asks for a token. */
  async function daemonWith(b: BrokerProcess, session: string, prompts: () => number): Promise<string> {
    const before = prompts();
    const hello = await WritClient.asAgent({ name: 'writ-cli', kind: 'cli', session }, b.socket).then((x) => x, (e: WritError) => e);
    if (hello instanceof Error) return hello.code;
    cleanup.push(() => hello.client.terminate());
    return hello.client
      .call('task.request', { task: 'daemon', scopes: ['repo:read:x'], audience: 'https://api.example' })
      .then(() => `token, ${prompts() - before} prompts`, (e: WritError) => e.code);
  }

  it('revoking the id its token names stops the command and revokes the id it has now: a daemon holding the session gets WRIT_SESSION_INVALID', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const a = await lineOn(env, b1, 'agent');
    await b1.kill();
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    let prompts = 0;
    b2.decide = (req) => (prompts++, approveAll(req));
    a.state.broker = b2;
    await a.reconnected(1);
    const newId = a.line.agentId;
    expect(newId).not.toBe(a.firstId);
    // The command's `writ token` after the restart: the developer approves it under the agent it is now.
    expect(await daemonWith(b2, a.session, () => prompts)).toBe('token, 1 prompts');
    const admin = await WritClient.connect(b2.socket);
    cleanup.push(() => admin.terminate());
    await admin.call('revoke', { target: { kind: 'agent', id: a.firstId } });
    expect(await until(() => a.stopped())).toBe(`the agent ${a.firstId} was revoked`);
    await a.line.close(); // as `writ exec` does once the command has stopped: the other ids' revocations are sent first
    expect(a.log.at(-1)).toBe(`writ: revoked ${newId} too, the id the agent has now`);
    expect((await liveAgents(env)).find((x) => x.id === newId)?.revoked).toBe(true);
    expect(await daemonWith(b2, a.session, () => prompts)).toBe('WRIT_SESSION_INVALID');
  }, 120_000);

  it('a sub-agent whose parent is revoked by the id its token names is stopped, and the id it has now revoked', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    // The parent is not under a `writ exec` here: only the sub-agent's line can hear its parent's old id.
    const parent = await WritClient.asAgent({ name: 'parent', kind: 'script' }, b1.socket);
    const p = await parent.client.call('task.request', { task: 'parent task', scopes: ['repo:read:x'], audience: 'https://api.example' });
    const sub = await lineOn(env, b1, 'sub', p.session!);
    expect(heldToken(sub.token).actors).toEqual([sub.firstId, parent.hello.agentId]);
    await b1.kill();
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    b2.decide = approveAll;
    sub.state.broker = b2;
    await sub.reconnected(1);
    const subNow = sub.line.agentId;
    const admin = await WritClient.connect(b2.socket);
    cleanup.push(() => admin.terminate());
    await admin.call('revoke', { target: { kind: 'agent', id: parent.hello.agentId } });
    expect(await until(() => sub.stopped())).toBe(`the agent ${parent.hello.agentId} was revoked`);
    await sub.line.close();
    expect(sub.log.at(-1)).toBe(`writ: revoked ${subNow} too, the id the agent has now`);
    expect(await daemonWith(b2, sub.session, () => 0)).toBe('WRIT_SESSION_INVALID');
  }, 120_000);

  it('after a second restart, revoking the id of the run before stops the command and revokes the id it has now and the one its token names', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const a = await lineOn(env, b1, 'agent');
    await b1.kill();
    const b2 = await BrokerProcess.start(env);
    a.state.broker = b2;
    await a.reconnected(1);
    const secondRunId = a.line.agentId;
    await b2.kill();
    const b3 = await BrokerProcess.start(env);
    cleanup.push(() => b3.stop());
    a.state.broker = b3;
    await a.reconnected(2);
    const thirdRunId = a.line.agentId;
    expect(new Set([a.firstId, secondRunId, thirdRunId]).size).toBe(3);
    const admin = await WritClient.connect(b3.socket);
    cleanup.push(() => admin.terminate());
    await admin.call('revoke', { target: { kind: 'agent', id: secondRunId } });
    expect(await until(() => a.stopped())).toBe(`the agent ${secondRunId} was revoked`);
    await a.line.close();
    expect(a.log.slice(-2)).toEqual([`writ: revoked ${thirdRunId} too, the id the agent has now`, `writ: revoked ${a.firstId} too, the id its token names`]);
    expect(await daemonWith(b3, a.session, () => 0)).toBe('WRIT_SESSION_INVALID');
    const v = createVerifier({ env, audience: 'https://api.example', reportUse: false });
    cleanup.push(() => v.close());
    expect(await codeOf(v.verify(a.token))).toBe('WRIT_TOKEN_REVOKED');
  }, 180_000);

  // A token the command got in the run between two restarts names that run's id in its `act`: whichever id is
  // revoked in the third run, that one is revoked too, so the token is refused and not left to its expiry.
  it.each(['the id it has now', 'the id its token names'] as const)('after a second restart, revoking %s also revokes the id of the run between, so a token the command got then is refused', async (which) => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const a = await lineOn(env, b1, 'agent');
    await b1.kill();
    const b2 = await BrokerProcess.start(env);
    b2.decide = approveAll;
    a.state.broker = b2;
    await a.reconnected(1);
    const secondRunId = a.line.agentId;
    // The command's `writ token` (WRIT_SESSION in its environment) during the second run.
    const cmd = await WritClient.asAgent({ name: 'writ-cli', kind: 'cli', session: a.session }, b2.socket);
    const between = (await cmd.client.call('task.request', { task: 'between', scopes: ['repo:read:x'], audience: 'https://api.example' })).token.token;
    expect(heldToken(between).actors).toEqual([secondRunId]);
    await cmd.client.close();
    await b2.kill();
    const b3 = await BrokerProcess.start(env);
    cleanup.push(() => b3.stop());
    a.state.broker = b3;
    await a.reconnected(2);
    const thirdRunId = a.line.agentId;
    const admin = await WritClient.connect(b3.socket);
    cleanup.push(() => admin.terminate());
    await admin.call('revoke', { target: { kind: 'agent', id: which === 'the id it has now' ? thirdRunId : a.firstId } });
    await until(() => a.stopped());
    await a.line.close();
    expect(a.log.filter((l) => l.startsWith('writ: revoked ')).sort()).toEqual(
      (which === 'the id it has now'
        ? [`writ: revoked ${a.firstId} too, the id its token names`, `writ: revoked ${secondRunId} too, the id it had in a broker run between`]
        : [`writ: revoked ${thirdRunId} too, the id the agent has now`, `writ: revoked ${secondRunId} too, the id it had in a broker run between`]
      ).sort(),
    );
    const v = createVerifier({ env, audience: 'https://api.example', reportUse: false });
    cleanup.push(() => v.close());
    expect([await codeOf(v.verify(a.token)), await codeOf(v.verify(between))]).toEqual(['WRIT_TOKEN_REVOKED', 'WRIT_TOKEN_REVOKED']);
  }, 180_000);

  it('refused its session after a restart (the agent that took it was revoked meanwhile), the line stops the command and revokes the id its token names', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const a = await lineOn(env, b1, 'agent');
    // The line cannot reach the next broker until the test lets it (its address names no socket meanwhile).
    const away = { socket: join(env.WRIT_STATE_DIR, 'no-broker-here.sock') } as unknown as BrokerProcess;
    a.state.broker = away;
    await b1.kill();
    const b2 = await BrokerProcess.start(env);
    cleanup.push(() => b2.stop());
    b2.decide = approveAll;
    // The command's `writ token` takes the session first; the developer revokes the agent `writ agents --live` shows.
    const cmd = await WritClient.asAgent({ name: 'writ-cli', kind: 'cli', session: a.session }, b2.socket);
    const admin = await WritClient.connect(b2.socket);
    cleanup.push(() => admin.terminate());
    await admin.call('revoke', { target: { kind: 'agent', id: cmd.hello.agentId } });
    cmd.client.terminate();
    a.state.broker = b2;
    expect(await until(() => a.stopped())).toBe("the broker refused the agent's session (WRIT_SESSION_INVALID)");
    await a.line.close();
    expect(a.log.at(-1)).toBe(`writ: revoked ${a.firstId} too, the id its token names`);
    const v = createVerifier({ env, audience: 'https://api.example', reportUse: false });
    cleanup.push(() => v.close());
    expect(await codeOf(v.verify(a.token))).toBe('WRIT_TOKEN_REVOKED');
  }, 120_000);
});
