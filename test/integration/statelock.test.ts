// One writer per state folder: brokers given different runtime folders (XDG_RUNTIME_DIR in one terminal, not in
// another) still share the state folder, so the second refuses with WRIT_STATE_LOCKED instead of interleaving its
// audit records with the first's and rewriting agents.json over it. Offline CLI writers refuse the same way.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BrokerProcess, approveAll, freshEnv, requireKeyring, writ } from '../helpers/broker';
import type { BrokerEnv } from '../helpers/broker';

requireKeyring();

/** The same state folder, another runtime folder: what a shell under ssh gets next to a desktop terminal. */
function otherRuntime(env: BrokerEnv): BrokerEnv {
  return { ...env, WRIT_RUNTIME_DIR: join(dirname(env.WRIT_RUNTIME_DIR), 'run-elsewhere') };
}

function events(env: BrokerEnv): string[] {
  const p = join(env.WRIT_STATE_DIR, 'audit.jsonl');
  return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).event) : [];
}

/** Field 22 of /proc/PID/stat, read here independently of the broker's code. */
function startTime(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

const bootId = () => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

describe('one writer per state folder', { timeout: 120_000 }, () => {
  it('a second broker through another runtime folder refuses; the first keeps serving and its log verifies', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const elsewhere = otherRuntime(env);

    const second = await writ(['serve'], elsewhere, { timeout: 60_000 });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('(WRIT_STATE_LOCKED)');
    expect(second.stderr).toContain(`pid ${b1.child.pid}`);
    expect(second.stderr).toContain(env.WRIT_STATE_DIR);
    expect(existsSync(join(elsewhere.WRIT_RUNTIME_DIR, 'broker.json'))).toBe(false);
    expect(events(env).filter((e) => e === 'broker.started')).toHaveLength(1);

    const { client } = await b1.agent();
    const r = await client.call('task.request', { task: 'after the refusal', scopes: ['repo:read:a'], audience: 'aud' });
    expect(r.token.token.split('.')).toHaveLength(3);
    await client.close();
    expect(await b1.stop()).toBe(0);
    expect(existsSync(join(env.WRIT_STATE_DIR, 'lock'))).toBe(false);

    const verified = await writ(['audit', 'verify'], env);
    expect(verified.code).toBe(0);
    expect(events(env)).toEqual(expect.arrayContaining(['broker.started', 'token.minted', 'broker.stopped']));
  });

  it('after a SIGKILL the lock is stale: the next broker, through either runtime folder, takes it over', async () => {
    const env = freshEnv();
    const b1 = await BrokerProcess.start(env);
    const pid = b1.child.pid!;
    await b1.kill();
    expect(JSON.parse(readFileSync(join(env.WRIT_STATE_DIR, 'lock'), 'utf8'))).toMatchObject({ pid, holder: 'broker' });

    const b2 = await BrokerProcess.start(otherRuntime(env));
    expect(JSON.parse(readFileSync(join(env.WRIT_STATE_DIR, 'lock'), 'utf8'))).toMatchObject({ pid: b2.child.pid, holder: 'broker' });
    expect(await b2.stop()).toBe(0);
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);
  });

  it('a lock naming a live pid with another start time is a reused pid, taken over; with its own start time it holds', async () => {
    const env = freshEnv();
    mkdirSync(env.WRIT_STATE_DIR, { recursive: true, mode: 0o700 });
    const lockPath = join(env.WRIT_STATE_DIR, 'lock');
    // This test process is alive: the lock is believed only if the start time is this process's own.
    const live = { pid: process.pid, start: startTime(process.pid), boot: bootId(), holder: 'broker', nonce: 'n1' };
    writeFileSync(lockPath, JSON.stringify(live), { mode: 0o600 });
    const refused = await writ(['serve'], env, { timeout: 60_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('(WRIT_STATE_LOCKED)');
    expect(refused.stderr).toContain(`pid ${process.pid}`);
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toEqual(live);

    writeFileSync(lockPath, JSON.stringify({ ...live, start: String(Number(live.start) + 1) }), { mode: 0o600 });
    const b = await BrokerProcess.start(env);
    expect(JSON.parse(readFileSync(lockPath, 'utf8')).pid).toBe(b.child.pid);
    expect(await b.stop()).toBe(0);

    // Another boot: whatever its pid, the holder is gone.
    writeFileSync(lockPath, JSON.stringify({ ...live, boot: '00000000-0000-0000-0000-000000000000' }), { mode: 0o600 });
    const rotated = await writ(['key', 'rotate'], env);
    expect(rotated.code).toBe(0);
    expect(existsSync(lockPath)).toBe(false);
  });

  it('writ key rotate and writ agents unblock refuse while a broker holds the state folder, and change nothing', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    const elsewhere = otherRuntime(env);

    const rotate = await writ(['key', 'rotate'], elsewhere);
    expect(rotate.code).toBe(1);
    expect(rotate.stderr).toContain('(WRIT_STATE_LOCKED)');
    expect(rotate.stderr).toContain(`pid ${b.child.pid}`);
    const unblock = await writ(['agents', 'unblock', 'agt_x'], elsewhere);
    expect(unblock.code).toBe(1);
    expect(unblock.stderr).toContain('(WRIT_STATE_LOCKED)');
    expect(unblock.stderr).toContain(`pid ${b.child.pid}`);
    expect(JSON.parse(readFileSync(join(env.WRIT_STATE_DIR, 'lock'), 'utf8')).pid).toBe(b.child.pid);
    expect(await b.stop()).toBe(0);

    // Refused before the keychain changed: the next broker still has one key, and no rotation was logged.
    const b2 = await BrokerProcess.start(env);
    expect(await jwksOf(b2)).toBe(1);
    await b2.stop();
    expect(events(env)).not.toContain('key.rotated');
    expect(events(env)).not.toContain('agent.unblocked');
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);
  });
});

async function jwksOf(b: BrokerProcess): Promise<number> {
  return (await (await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`)).json()).keys.length;
}
