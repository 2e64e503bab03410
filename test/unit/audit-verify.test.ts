import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../broker/audit/log';
import { judge, verdict, verifyAuditFile, verifyAuditLines, type VerifyResult } from '../../broker/audit/verify';
import { ManualClock } from '../../broker/core/clock';
import type { AuditRecord } from '../../broker/protocol';

const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const keys: ReadonlyMap<string, KeyObject> = new Map([['k1', publicKey]]);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'writ-audit-verify-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * 10 records with a checkpoint every 4: seq 0-3, cp 4, 5-8, cp 9, 10, 11 and, when closed, cp 12.
 * Line n (1-based) holds seq n-1.
 */
async function makeLog(close = true): Promise<{ path: string; lines: string[] }> {
  const path = join(dir, `audit-${close ? 'closed' : 'open'}.jsonl`);
  const clock = new ManualClock();
  const log = await AuditLog.open({
    path,
    session: 'ses_1',
    user: 'alice',
    clock,
    signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) },
    checkpointEvery: 4,
    checkpointIntervalMs: 0,
    fsync: false,
  });
  for (let i = 0; i < 10; i++) {
    clock.advance(1000);
    await log.append({ event: 'token.minted', jti: `jti_${i}`, scopes: ['repo:read'], outcome: 'success' });
  }
  if (close) await log.close();
  const text = await readFile(path, 'utf8');
  if (close) return { path, lines: text.slice(0, -1).split('\n') };
  // A snapshot of the file as a still-running broker left it (close() would sign the tail).
  const snapshot = `${path}.snapshot`;
  await writeFile(snapshot, text);
  await log.close();
  return { path: snapshot, lines: text.slice(0, -1).split('\n') };
}

/** Edits one record's fields, keeping its key order. */
function edit(line: string, change: (r: AuditRecord) => void): string {
  const r = JSON.parse(line) as AuditRecord;
  change(r);
  return JSON.stringify(r);
}

/** What a forger with write access but no key can do: recompute every `prev` after an edit. */
function rechain(lines: string[], from: number, fixCheckpointHead: boolean): string[] {
  const out = lines.slice(0, from + 1);
  for (const line of lines.slice(from + 1)) {
    out.push(
      edit(line, (r) => {
        r.prev = sha(out[out.length - 1]!);
        if (fixCheckpointHead && r.checkpoint) r.checkpoint.head = r.prev;
      }),
    );
  }
  return out;
}

function expectError(res: VerifyResult, line: number, seq: number | null, reason: string): void {
  expect(res.ok).toBe(false);
  expect(res.error).toMatchObject({ code: 'WRIT_AUDIT_CORRUPT', line, seq, reason });
  expect(res.records).toBe(line - 1); // everything before the bad line verified
}

describe('verifyAuditFile', () => {
  it('verifies a clean log with exact counts', async () => {
    const { path, lines } = await makeLog();
    const expected: VerifyResult = { ok: true, records: 13, checkpoints: 3, lastCheckpointSeq: 12, unsignedTail: 0 };
    expect(await verifyAuditFile(path, keys)).toEqual(expected);
    expect(verifyAuditLines(lines, keys)).toEqual(expected);
    expect(verifyAuditLines([], keys)).toEqual({ ok: true, records: 0, checkpoints: 0, lastCheckpointSeq: null, unsignedTail: 0 });
  });

  it('reports records after the last checkpoint as an unsigned tail', async () => {
    const { path, lines } = await makeLog(false);
    expect(await verifyAuditFile(path, keys)).toEqual({ ok: true, records: 12, checkpoints: 2, lastCheckpointSeq: 9, unsignedTail: 2 });
    // Cutting records off after the last checkpoint cannot be detected; it shows only as a shorter unsigned tail.
    expect(verifyAuditLines(lines.slice(0, -1), keys)).toEqual({ ok: true, records: 11, checkpoints: 2, lastCheckpointSeq: 9, unsignedTail: 1 });
  });

  it('cannot see the final checkpoint cut off with everything after it (needs an expected size from elsewhere)', async () => {
    const { lines } = await makeLog();
    expect(verifyAuditLines(lines.slice(0, 10), keys)).toEqual({ ok: true, records: 10, checkpoints: 2, lastCheckpointSeq: 9, unsignedTail: 0 });
  });

  it('catches an edited field at the next record, by the chain', async () => {
    const { path, lines } = await makeLog();
    lines[1] = edit(lines[1]!, (r) => (r.scopes = ['repo:write']));
    await writeFile(path, lines.join('\n') + '\n');
    const res = await verifyAuditFile(path, keys);
    expectError(res, 3, 2, 'chain');
    expect(res.error!.message).toBe('audit log line 3 (seq 2): prev is not the hash of line 2');
  });

  it('catches an edit to the record a checkpoint follows, at the checkpoint', async () => {
    const { lines } = await makeLog();
    lines[3] = edit(lines[3]!, (r) => (r.jti = 'jti_forged'));
    expectError(verifyAuditLines(lines, keys), 5, 4, 'chain');
  });

  it('catches an edited checkpoint by its own fields', async () => {
    const { lines } = await makeLog();
    const sig = (JSON.parse(lines[4]!) as AuditRecord).checkpoint!.sig;
    const forged = [...lines];
    forged[4] = edit(lines[4]!, (r) => (r.checkpoint!.sig = sig.slice(0, -4) + (sig.endsWith('AAAA') ? 'BBBB' : 'AAAA')));
    expectError(verifyAuditLines(forged, keys), 5, 4, 'checkpoint-signature');
    forged[4] = edit(lines[4]!, (r) => (r.checkpoint!.count = 3));
    expectError(verifyAuditLines(forged, keys), 5, 4, 'checkpoint-count');
  });

  it('catches reordered lines by seq', async () => {
    const { lines } = await makeLog();
    [lines[1], lines[2]] = [lines[2]!, lines[1]!];
    expectError(verifyAuditLines(lines, keys), 2, 2, 'seq');
  });

  it('catches a deleted middle line by seq', async () => {
    const { lines } = await makeLog();
    lines.splice(6, 1);
    const res = verifyAuditLines(lines, keys);
    expectError(res, 7, 7, 'seq');
    expect(res.error!.message).toBe('audit log line 7 (seq 7): expected seq 6');
  });

  it('catches a rewritten chain at the first checkpoint after the edit', async () => {
    const { lines } = await makeLog();
    const edited = [...lines];
    edited[6] = edit(lines[6]!, (r) => (r.outcome = 'failure'));
    // Later prevs recomputed, checkpoint heads left alone: the head no longer matches.
    expectError(verifyAuditLines(rechain(edited, 6, false), keys), 10, 9, 'checkpoint-head');
    // Heads recomputed too: only the signature, which needs the key, gives it away.
    expectError(verifyAuditLines(rechain(edited, 6, true), keys), 10, 9, 'checkpoint-signature');
  });

  it('rejects checkpoints from keys outside the key set, and the wrong key under a known kid', async () => {
    const { lines } = await makeLog();
    expectError(verifyAuditLines(lines, new Map()), 5, 4, 'unknown-kid');
    expectError(verifyAuditLines(lines, new Map([['k2', publicKey]])), 5, 4, 'unknown-kid');
    expectError(verifyAuditLines(lines, new Map([['k1', other.publicKey]])), 5, 4, 'checkpoint-signature');
    // A key of the wrong type is a bad signature, not a crash.
    expectError(verifyAuditLines(lines, new Map([['k1', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey]])), 5, 4, 'checkpoint-signature');
  });

  it('with the complete key set (the keychain), an unknown kid is a break even where a partial set would only skip it', async () => {
    const { lines } = await makeLog();
    const complete = verifyAuditLines(lines, new Map([['k2', other.publicKey]]));
    expectError(complete, 5, 4, 'unknown-kid');
    expect(complete.unverifiable).toBeUndefined();
    expect(verdict(complete)).toBe('broken');
    // 'complete' is the default: saying so changes nothing.
    expect(verifyAuditLines(lines, new Map([['k2', other.publicKey]]), { keySet: 'complete' })).toEqual(complete);
  });

  it('binds checkpoints to their origin', async () => {
    const { lines } = await makeLog();
    expectError(verifyAuditLines(lines, keys, { origin: 'other/v1' }), 5, 4, 'checkpoint-signature');
  });

  it('names parse and schema failures without echoing content', async () => {
    const { lines } = await makeLog();
    const bad = [...lines];
    bad[2] = 'secret-token-xyz';
    let res = verifyAuditLines(bad, keys);
    expectError(res, 3, null, 'parse');
    expect(res.error!.message).not.toContain('secret');

    bad[2] = edit(lines[2]!, (r) => ((r as { event: string }).event = 'token.stolen'));
    res = verifyAuditLines(bad, keys);
    expectError(res, 3, 2, 'schema');
    expect(res.error!.message).toBe('audit log line 3 (seq 2): invalid field event');

    bad[2] = edit(lines[2]!, (r) => ((r as { extra?: string }).extra = 'secret-token-xyz'));
    res = verifyAuditLines(bad, keys);
    expectError(res, 3, 2, 'schema');
    expect(res.error!.message).not.toContain('secret');

    // A checkpoint field on an ordinary record is not a checkpoint.
    bad[2] = edit(lines[2]!, (r) => (r.checkpoint = { count: 2, head: r.prev, kid: 'k1', sig: '' }));
    expectError(verifyAuditLines(bad, keys), 3, 2, 'schema');
  });

  it('reports a torn final line', async () => {
    const { path, lines } = await makeLog();
    await writeFile(path, lines.join('\n') + '\n{"v":1,"seq":13,"ts":"20');
    const res = await verifyAuditFile(path, keys);
    expectError(res, 14, null, 'torn-tail');
    expect(res).toMatchObject({ records: 13, checkpoints: 3, lastCheckpointSeq: 12, unsignedTail: 0 });
    // Even a complete record is torn without its newline: the writer never acknowledged it.
    expectError(verifyAuditLines(lines, keys, { tornTail: true }), 13, null, 'torn-tail');
  });

  it('hashes exact bytes: a CR before the newline breaks the chain', async () => {
    const { path, lines } = await makeLog();
    lines[1] = lines[1]! + '\r'; // still valid JSON (trailing whitespace), but not the bytes that were hashed
    await writeFile(path, lines.join('\n') + '\n');
    expectError(await verifyAuditFile(path, keys), 3, 2, 'chain');
  });

  it('streams a large log', async () => {
    const path = join(dir, 'big.jsonl');
    const log = await AuditLog.open({
      path,
      session: 'ses_1',
      user: 'alice',
      clock: new ManualClock(),
      signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) },
      checkpointIntervalMs: 0,
      fsync: false,
    });
    for (let i = 0; i < 50; i++) {
      await Promise.all(Array.from({ length: 1000 }, (_, j) => log.append({ event: 'token.introspected', jti: `jti_${i}_${j}` })));
    }
    await log.close();
    // 50,000 records, a checkpoint after each 1000 (the last one at close).
    expect(await verifyAuditFile(path, keys)).toEqual({ ok: true, records: 50_050, checkpoints: 50, lastCheckpointSeq: 50_049, unsignedTail: 0 });
  });
});

/**
 * A log written over two broker runs, the key rotated between them: run 1 signs with k1 (seq 0-3, cp 4, 5, cp 6 at
 * close), run 2 with k2 (seq 7-10, cp 11, 12, cp 13 at close). Line n holds seq n-1.
 */
async function makeRotatedLog(): Promise<string[]> {
  const path = join(dir, 'audit-rotated.jsonl');
  const clock = new ManualClock();
  for (const [kid, key, n] of [['k1', privateKey, 5], ['k2', other.privateKey, 5]] as const) {
    const log = await AuditLog.open({ path, session: `ses_${kid}`, user: 'alice', clock, signer: { kid, sign: (d) => sign(null, d, key) }, checkpointEvery: 4, checkpointIntervalMs: 0, fsync: false });
    for (let i = 0; i < n; i++) {
      clock.advance(1000);
      await log.append({ event: 'token.minted', jti: `jti_${kid}_${i}`, scopes: ['repo:read'], outcome: 'success' });
    }
    await log.close();
  }
  return (await readFile(path, 'utf8')).slice(0, -1).split('\n');
}

describe('verify with a partial key set (a broker\'s JWKS)', () => {
  const partial = { keySet: 'partial' } as const;

  it('calls a log whose checkpoints all name a missing key unverifiable, not broken, after checking the chain to the end', async () => {
    const { path, lines } = await makeLog();
    const res = verifyAuditLines(lines, new Map([['k2', other.publicKey]]), partial);
    expect(res).toEqual({
      ok: false,
      records: 13,
      checkpoints: 0,
      lastCheckpointSeq: null,
      unsignedTail: 13,
      skippedCheckpoints: 3,
      unverifiable: {
        code: 'WRIT_AUDIT_UNVERIFIABLE',
        line: 5,
        seq: 4,
        kid: 'k1',
        checkpoints: 3,
        message: 'audit log line 5 (seq 4): checkpoint signed by key k1, which the key set lacks (and 2 later checkpoints): not checked',
      },
    });
    expect(verdict(res)).toBe('unverifiable');
    expect(await verifyAuditFile(path, new Map(), partial)).toEqual({ ...res });
  });

  it('still catches an edit after an unverifiable checkpoint: the break wins', async () => {
    const { lines } = await makeLog();
    lines[6] = edit(lines[6]!, (r) => (r.scopes = ['repo:write']));
    const res = verifyAuditLines(lines, new Map(), partial);
    expectError(res, 8, 7, 'chain');
    expect(verdict(res)).toBe('broken');
    // What was skipped before the break is still said.
    expect(res.unverifiable).toMatchObject({ line: 5, seq: 4, checkpoints: 1 });
  });

  it('still checks an unverifiable checkpoint\'s count and head against the chain', async () => {
    const { lines } = await makeLog();
    const forged = [...lines];
    forged[4] = edit(lines[4]!, (r) => (r.checkpoint!.count = 3));
    expectError(verifyAuditLines(forged, new Map(), partial), 5, 4, 'checkpoint-count');
    // An edit before it, chain recomputed and head fixed: only the signature could tell, and it is not checked,
    // but the next checkpoint (a known key) signs the original head.
    const edited = [...lines];
    edited[1] = edit(lines[1]!, (r) => (r.jti = 'jti_forged'));
    const rewritten = rechain(edited, 1, true);
    expect(verdict(verifyAuditLines(rewritten, new Map(), partial))).toBe('unverifiable');
    expectError(verifyAuditLines(rewritten, keys, partial), 5, 4, 'checkpoint-signature');
  });

  it('a known kid with a bad signature stays broken', async () => {
    const { lines } = await makeLog();
    expectError(verifyAuditLines(lines, new Map([['k1', other.publicKey]]), partial), 5, 4, 'checkpoint-signature');
  });

  it('a later checkpoint that verifies covers the skipped ones: the log is intact', async () => {
    const lines = await makeRotatedLog();
    expect(lines).toHaveLength(14);
    // The JWKS after the old key's hour: k2 only. k2's checkpoint at seq 11 signs a head that commits to seq 0-10.
    const res = verifyAuditLines(lines, new Map([['k2', other.publicKey]]), partial);
    expect(res).toEqual({ ok: true, records: 14, checkpoints: 2, lastCheckpointSeq: 13, unsignedTail: 0, skippedCheckpoints: 2 });
    expect(verdict(res)).toBe('intact');
    // The full key set verifies every checkpoint and skips none.
    expect(verifyAuditLines(lines, new Map([['k1', publicKey], ['k2', other.publicKey]]))).toEqual({ ok: true, records: 14, checkpoints: 4, lastCheckpointSeq: 13, unsignedTail: 0 });
  });

  it('checkpoints after the last verified one are unverifiable, and their records count as the unsigned tail', async () => {
    const lines = await makeRotatedLog();
    const res = verifyAuditLines(lines, keys, partial); // k1 only: run 2's checkpoints cannot be checked
    expect(res).toMatchObject({ ok: false, records: 14, checkpoints: 2, lastCheckpointSeq: 6, unsignedTail: 7, skippedCheckpoints: 2 });
    expect(res.unverifiable).toMatchObject({ line: 12, seq: 11, kid: 'k2', checkpoints: 2 });
    expect(res.error).toBeUndefined();
    // The same file and keys as a complete set: the first k2 checkpoint is a break.
    expectError(verifyAuditLines(lines, keys), 12, 11, 'unknown-kid');
  });

  it('names a kid from the file inert and short', async () => {
    const { lines } = await makeLog();
    const evil = '\x1b[2J' + 'x'.repeat(100);
    const forged = lines.map((l) => (l.includes('"checkpoint":{') ? edit(l, (r) => (r.checkpoint!.kid = evil)) : l));
    const res = verifyAuditLines(rechain(forged, 4, true), new Map(), partial);
    expect(res.error).toBeUndefined();
    expect(res.unverifiable!.kid).toBe(evil);
    expect(res.unverifiable!.message).toBe(`audit log line 5 (seq 4): checkpoint signed by key \\x1b[2J${'x'.repeat(60)}…, which the key set lacks (and 2 later checkpoints): not checked`);
  });
});

describe('judge: what `writ audit verify` makes of a verified file', () => {
  it('calls a log intact only when a signed checkpoint ends it, or the broker writing it vouches for what follows', async () => {
    const closed = await makeLog();
    expect(judge(await verifyAuditFile(closed.path, keys))).toEqual({ verdict: 'intact', vouched: 0 });

    // The snapshot of a running broker's log: seq 10 and 11 follow the checkpoint at seq 9.
    const open = await makeLog(false);
    expect(judge(await verifyAuditFile(open.path, keys))).toEqual({
      verdict: 'unsigned',
      code: 'WRIT_AUDIT_UNSIGNED',
      line: 11,
      seq: 10,
      records: 2,
      message:
        'audit log line 11 (seq 10) on: 2 records no signed checkpoint covers, and no running broker vouches for them: a broker that stopped cleanly leaves a checkpoint last, and one that crashed signs them when it starts again; else they were written, or changed, by something else',
    });
    // The broker that wrote it has made 12 records durable, the last hashing to the file's last line.
    const head = sha(open.lines[11]!);
    const r = await verifyAuditFile(open.path, keys, { headOf: 11 });
    expect(r.headAt).toBe(head);
    expect(judge(r, { pid: 4242, count: 12, head, upTo: 12 })).toEqual({ verdict: 'intact', vouched: 2 });
    // It had made 11 durable when first asked and 12 when asked again (the 12th came while the file was read).
    const r11 = await verifyAuditFile(open.path, keys, { headOf: 10 });
    expect(judge(r11, { pid: 4242, count: 11, head: sha(open.lines[10]!), upTo: 12 })).toEqual({ verdict: 'intact', vouched: 2 });
    // Asked again, it still had 11: the 12th record is none of its own (appended by something else while it idled).
    expect(judge(r11, { pid: 4242, count: 11, head: sha(open.lines[10]!), upTo: 11 })).toEqual({
      verdict: 'unsigned',
      code: 'WRIT_AUDIT_UNSIGNED',
      line: 12,
      seq: 11,
      records: 1,
      message: 'audit log line 12 (seq 11) on: 1 record past the last the running broker (pid 4242) has written: not its own',
    });
  });

  it('is broken when the file is shorter than, or differs from, what the running broker wrote to it', async () => {
    const { path, lines } = await makeLog(false);
    const head = sha(lines[11]!);
    // An unsigned record rewritten and the chain recomputed: the chain holds, the broker's head does not.
    const forged = rechain(lines.map((l, i) => (i === 10 ? edit(l, (r) => (r.scopes = ['repo:admin'])) : l)), 10, false);
    await writeFile(path, forged.join('\n') + '\n');
    const r = await verifyAuditFile(path, keys, { headOf: 11 });
    expect(r).toMatchObject({ ok: true, unsignedTail: 2 });
    expect(judge(r, { pid: 4242, count: 12, head, upTo: 12 })).toEqual({
      verdict: 'broken',
      error: { code: 'WRIT_AUDIT_CORRUPT', line: 12, seq: 11, reason: 'chain', message: 'audit log line 12 (seq 11): not the record the running broker (pid 4242) wrote' },
    });
    // The last record cut off.
    await writeFile(path, lines.slice(0, 11).join('\n') + '\n');
    expect(judge(await verifyAuditFile(path, keys, { headOf: 11 }), { pid: 4242, count: 12, head, upTo: 12 })).toEqual({
      verdict: 'broken',
      error: { code: 'WRIT_AUDIT_CORRUPT', line: 12, seq: null, reason: 'cut', message: 'audit log: the running broker (pid 4242) has written 12 records here, the file holds 11: it was cut' },
    });
  });

  it('calls a log rewritten without its checkpoints unsigned, and an empty one too', async () => {
    const { path, lines } = await makeLog();
    // A forger without the key drops every checkpoint, renumbers and rechains: the chain alone holds.
    const kept = lines.filter((l) => !l.includes('"event":"checkpoint"')).map((l, i) => edit(l, (r) => (r.seq = i)));
    const forged = rechain([edit(kept[0]!, (r) => (r.prev = '0'.repeat(64))), ...kept.slice(1)], 0, false);
    await writeFile(path, forged.join('\n') + '\n');
    const r = await verifyAuditFile(path, keys);
    expect(r).toEqual({ ok: true, records: 10, checkpoints: 0, lastCheckpointSeq: null, unsignedTail: 10 });
    expect(verdict(r)).toBe('intact'); // the chain-level verdict, unchanged
    expect(judge(r)).toMatchObject({ verdict: 'unsigned', code: 'WRIT_AUDIT_UNSIGNED', line: 1, seq: 0, records: 10 });
    await writeFile(path, '');
    expect(judge(await verifyAuditFile(path, keys))).toEqual({
      verdict: 'unsigned',
      code: 'WRIT_AUDIT_UNSIGNED',
      line: 1,
      seq: 0,
      records: 0,
      message: 'audit log: no records, and a broker writes its start record first: it was emptied',
    });
  });

  it('says a tail longer than a broker ever leaves unsigned was not left by a broker', () => {
    const r: VerifyResult = { ok: true, records: 5000, checkpoints: 1, lastCheckpointSeq: 3998, unsignedTail: 1001 };
    expect(judge(r)).toEqual({
      verdict: 'unsigned',
      code: 'WRIT_AUDIT_UNSIGNED',
      line: 4000,
      seq: 3999,
      records: 1001,
      message: 'audit log line 4000 (seq 3999) on: 1001 records no signed checkpoint covers, more than the 1000 a broker ever leaves unsigned: they were written, or the log rewritten, by something else',
    });
  });
});

describe('AuditLog.open and an unsigned tail', () => {
  async function unsignedLog(n: number): Promise<string> {
    const path = join(dir, `tail-${n}.jsonl`);
    const log = await AuditLog.open({ path, session: 's', user: 'u', clock: new ManualClock(), signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) }, checkpointEvery: 0, checkpointIntervalMs: 0, fsync: false });
    await log.append({ event: 'broker.started' });
    await log.checkpoint();
    for (let i = 0; i < n; i++) await log.append({ event: 'token.minted', jti: `jti_${i}`, task: { id: 'tsk_1', description: 'x'.repeat(500) }, outcome: 'success' });
    // A crash: the records after the checkpoint stay unsigned (close() would sign them).
    const text = await readFile(path, 'utf8');
    await log.close();
    await writeFile(path, text);
    return path;
  }
  const reopen = (path: string, every = 4) => AuditLog.open({ path, session: 's2', user: 'u', clock: new ManualClock(), signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) }, checkpointEvery: every, checkpointIntervalMs: 0, fsync: false });

  it('opens a log a crash left with as many unsigned records as a checkpoint covers, and signs them on request', async () => {
    const path = await unsignedLog(4);
    const log = await reopen(path);
    expect(log.count).toBe(6);
    expect(await log.checkpoint()).toMatchObject({ event: 'checkpoint', seq: 6 });
    await log.close();
    expect(judge(await verifyAuditFile(path, keys))).toEqual({ verdict: 'intact', vouched: 0 });
  });

  it('refuses, untouched, a log ending in more unsigned records than a broker leaves', async () => {
    const path = await unsignedLog(5);
    const before = await readFile(path, 'utf8');
    await expect(reopen(path)).rejects.toMatchObject({
      code: 'WRIT_AUDIT_CORRUPT',
      message: `audit log ${path}: it ends in more than 4 records no checkpoint signed by this broker's keys covers, which a broker never leaves: it was rewritten, or written by something else. Run \`writ audit verify\` on it, then move it aside (keep it as evidence) to start a new log`,
    });
    expect(await readFile(path, 'utf8')).toBe(before);
  });

  it('counts on past a checkpoint signed by a key not its own, or over another count and head: a forger\'s does not end it', async () => {
    const path = await unsignedLog(3);
    const lines = (await readFile(path, 'utf8')).slice(0, -1).split('\n');
    // Two checkpoints a forger without the key can make, with their own key and with a real signature of another point.
    const ownKey = (prev: string, seq: number) => JSON.stringify({ ...JSON.parse(lines[1]!), seq, prev, checkpoint: { count: seq, head: prev, kid: 'k1', sig: sign(null, Buffer.from(`writ-audit/v1\n${seq}\n${prev}\n`), other.privateKey).toString('base64url') } });
    const forged = [...lines, ownKey(sha(lines.at(-1)!), lines.length)];
    forged.push(JSON.stringify({ ...JSON.parse(lines.at(-1)!), seq: forged.length, prev: sha(forged.at(-1)!) }));
    forged.push(JSON.stringify({ ...JSON.parse(lines[1]!), seq: forged.length, prev: sha(forged.at(-1)!) })); // the real cp of seq 1, moved
    await writeFile(path, forged.join('\n') + '\n');
    const withKeys = (every: number) => AuditLog.open({ path, session: 's2', user: 'u', clock: new ManualClock(), signer: { kid: 'k1', sign: (d) => sign(null, d, privateKey) }, checkpointEvery: every, checkpointIntervalMs: 0, fsync: false, checkpointKeys: keys });
    // 3 records, the forged checkpoint, 1 record, the moved checkpoint: 6 unsigned by the broker's keys.
    await expect(withKeys(5)).rejects.toMatchObject({ code: 'WRIT_AUDIT_CORRUPT' });
    const log = await withKeys(6);
    expect(log.unsignedAtOpen).toEqual({ firstSeq: 2, records: 6 });
    await log.close();
    // Without keys (a tool that does not sign), the last checkpoint line ends the count.
    const plain = await reopen(path, 1);
    expect(plain.unsignedAtOpen).toBeUndefined();
    await plain.close();
  });

  it('counts an unsigned tail that spans several read chunks exactly (1,001 records of ~750 bytes)', async () => {
    const path = await unsignedLog(1001);
    await expect(reopen(path, 1000)).rejects.toMatchObject({ code: 'WRIT_AUDIT_CORRUPT' });
    expect((await stat(path)).size).toBeGreaterThan(2 * 256 * 1024); // three reads of 256 KiB
    await expect(reopen(path, 1001).then((l) => l.close())).resolves.toBeUndefined();
  });
});
