// Crash safety: SIGKILL the broker in the middle of heavy minting, again and again. After each restart the
// audit log verifies, every token a client received has its durable mint record, and every revocation
// made before the kill still holds. Bounded: a fixed number of rounds, each a fraction of a second of load.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BrokerProcess, approveAll, form, freshEnv, requireKeyring, writ } from '../helpers/broker';

requireKeyring();

const ROUNDS = 4;
const CLIENTS = 8;

describe('crash safety', { timeout: 120_000 }, () => {
  it(`survives ${ROUNDS} SIGKILLs during heavy minting with nothing lost`, async () => {
    const env = freshEnv();
    const received: string[] = [];
    const revoked: { token: string; jti: string }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const b = await BrokerProcess.start(env);
      b.decide = () => ({ decision: 'approve', mode: 'session' });
      // Every revocation made before an earlier kill still holds after this restart.
      for (const r of revoked) expect(await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: r.token })).toEqual({ status: 200, json: { active: false } });

      const agents = await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const { client } = await b.agent(`load-${round}-${i}`);
          const r = await client.call('task.request', { task: 'load', scopes: ['repo:read:acme/web'], audience: 'aud' });
          received.push(r.token.jti);
          return { client, grantId: r.grant.id, first: r.token };
        }),
      );
      // One revocation per round, acknowledged before the kill.
      await agents[0]!.client.call('revoke', { target: { kind: 'token', jti: agents[0]!.first.jti } });
      revoked.push({ token: agents[0]!.first.token, jti: agents[0]!.first.jti });

      let killed = false;
      const loops = agents.map(async ({ client, grantId }) => {
        while (!killed) {
          try {
            const t = await client.call('token.mint', { grantId });
            received.push(t.jti);
          } catch {
            return; // the broker died under us: what we did not receive was never handed out
          }
        }
      });
      await new Promise((r) => setTimeout(r, 150 + round * 100));
      await b.kill();
      killed = true;
      await Promise.all(loops);
    }

    // A last clean run signs what the crashes left unsigned; then everything must check out.
    const b = await BrokerProcess.start(env);
    await b.stop();
    const verify = await writ(['audit', 'verify'], env);
    expect(verify.code, verify.stderr).toBe(0);
    const text = readFileSync(join(env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8');
    const minted = new Set(
      text
        .split('\n')
        .filter((l) => l.includes('"event":"token.minted"'))
        .map((l) => JSON.parse(l).jti as string),
    );
    expect(received.length).toBeGreaterThan(ROUNDS * CLIENTS);
    const missing = received.filter((jti) => !minted.has(jti));
    expect(missing).toEqual([]);

    // Each start after a kill said which records it signed without having written them, and signed them at once.
    const records = text.trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; event: string; detail?: { firstSeq: number; records: number } });
    const adopted = records.flatMap((r, i) => (r.event === 'audit.adopted' ? [i] : []));
    expect(adopted.length).toBeGreaterThan(0);
    expect(adopted.length).toBeLessThanOrEqual(ROUNDS);
    for (const i of adopted) {
      const { firstSeq, records: n } = records[i]!.detail!;
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThanOrEqual(1000);
      // They run up to this start's first record (audit.recovered when the kill tore a line, followed by a checkpoint
      // when it brought the unsigned tail to the limit), after a checkpoint.
      const recovered = records[i - 1]!.event === 'audit.recovered' ? i - 1 : records[i - 1]!.event === 'checkpoint' && records[i - 2]?.event === 'audit.recovered' ? i - 2 : -1;
      const start = recovered >= 0 ? recovered : i;
      expect(firstSeq + n).toBe(start);
      // After the last checkpoint, or from the log's start (a first run killed before any).
      if (firstSeq > 0) expect(records[firstSeq - 1]!.event).toBe('checkpoint');
      expect(records[i + 1]!.event).toBe('checkpoint');
    }
    const total = adopted.reduce((t, i) => t + records[i]!.detail!.records, 0);
    expect(verify.stderr).toContain(`note: ${total} record(s) a crash left unsigned were signed by the next broker as it started, not by the run that wrote them (audit.adopted, first at line ${adopted[0]! + 1})`);
  });

  it('writ audit wal finds what a set-aside write-ahead file holds that the log lost, and renamed back it is restored', async () => {
    const env = freshEnv();
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    const { client } = await b.agent('set-aside');
    const r = await client.call('task.request', { task: 'lost', scopes: ['repo:read:acme/web'], audience: 'aud' });
    for (let i = 0; i < 6; i++) await client.call('token.mint', { grantId: r.grant.id });
    await b.kill();
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const all = readFileSync(log, 'utf8').split('\n').filter(Boolean);
    // A power cut took the last four records from the log, and a failed sync set the write-ahead file aside.
    writeFileSync(log, all.slice(0, -4).join('\n') + '\n');
    renameSync(`${log}.wal`, `${log}.wal.rejected`);
    const refused = await writ(['serve'], env, { timeout: 60_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("Compare it with the log (`writ audit wal`), then remove it, or rename it back to restore what the log lacks, to open the log (WRIT_AUDIT_CORRUPT)");

    const check = await writ(['audit', 'wal'], env);
    expect(check.code).toBe(3);
    expect(check.stderr).toContain(`${log}.wal.rejected: compared with the audit log ${log} (${all.length - 4} records)`);
    expect(check.stderr).toContain(`, 4 missing from it (seq ${all.length - 4}-${all.length - 1})`);
    expect(check.stdout).toBe(
      `the 4 record(s) missing continue the log from its last record (seq ${all.length - 5}): renamed to ${log}.wal, the file is restored from at the next start. ` +
        'Some may be records the broker reported as failed when a sync failed (it returned no token for them)\n',
    );
    const missing = await writ(['audit', 'wal', '--missing'], env);
    expect(missing.stdout.split('\n').slice(0, 4)).toEqual(all.slice(-4));

    renameSync(`${log}.wal.rejected`, `${log}.wal`);
    const again = await BrokerProcess.start(env);
    await again.stop();
    expect(readFileSync(log, 'utf8').split('\n').slice(0, all.length)).toEqual(all);
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);
    expect((await writ(['audit', 'wal'], env)).code).toBe(0);
  });

  it('will not start a new log beside the write-ahead file of one moved aside, until that file follows it', async () => {
    const env = freshEnv();
    // Two runs: the second's write-ahead generation begins on the first's records, as any restart's does.
    for (let run = 0; run < 2; run++) {
      const b = await BrokerProcess.start(env);
      b.decide = approveAll;
      const { client } = await b.agent(`run-${run}`);
      await client.call('task.request', { task: 'moved', scopes: ['repo:read:acme/web'], audience: 'aud' });
      await client.close();
      await b.stop();
    }
    const log = join(env.WRIT_STATE_DIR, 'audit.jsonl');
    const wal = `${log}.wal`;
    renameSync(log, `${log}.old`);
    const walBefore = readFileSync(wal);
    const serve = await writ(['serve'], env, { timeout: 60_000 });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toMatch(new RegExp(`audit log ${log}: its write-ahead file ${wal} was written for a log whose first \\d+ records \\(\\d+ bytes\\) this one does not begin with`));
    expect(serve.stderr).toContain(`Move ${wal} aside (keep it with the log it came from: it may hold records that log lost; \`writ audit wal --file LOG --wal FILE\` compares the two) to open this log`);
    expect(serve.stderr).toContain('(WRIT_AUDIT_CORRUPT)');
    expect(readFileSync(wal)).toEqual(walBefore);
    expect(readFileSync(log, 'utf8')).toBe('');
    expect(existsSync(join(env.WRIT_RUNTIME_DIR, 'broker.json'))).toBe(false);

    // `writ audit wal`, as the refusal says: the file holds what the moved log holds, and nothing of the new one.
    const pair = await writ(['audit', 'wal', '--file', `${log}.old`, '--wal', wal], env);
    expect({ code: pair.code, stdout: pair.stdout }).toEqual({ code: 0, stdout: 'the log holds every record the write-ahead file does: removing the file loses none\n' });
    const beside = await writ(['audit', 'wal'], env);
    expect(beside.code).toBe(3);
    expect(beside.stderr).toContain('written for another file (not this log, or this log replaced)');
    expect(beside.stdout).toBe('the file holds records the log lacks or holds otherwise, and this check cannot confirm that a start would restore them: keep the file with the log as evidence (--missing prints those the log lacks)\n');
    expect(readFileSync(wal)).toEqual(walBefore);

    // Moved aside with its log: a new log starts, and the old pair still verifies.
    renameSync(wal, `${log}.old.wal`);
    const b = await BrokerProcess.start(env);
    await b.stop();
    expect((await writ(['audit', 'verify'], env)).code).toBe(0);
    expect((await writ(['audit', 'verify', '--file', `${log}.old`], env)).code).toBe(0);
  });
});
