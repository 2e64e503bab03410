// `writ audit wal` (broker/audit/walcheck.ts): what a write-ahead file holds that its log does not. Real logs and
// write-ahead files, written by AuditLog; a power cut is modelled by cutting the log's bytes.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../broker/audit/log';
import { compareWal } from '../../broker/audit/walcheck';
import { walPath, walSetAsidePath } from '../../broker/audit/wal';
import { ManualClock } from '../../broker/core/clock';
import { isWritError } from '../../broker/errors';
import type { AuditEntry } from '../../broker/protocol';

const { privateKey } = generateKeyPairSync('ed25519');
const signer = { kid: 'k1', sign: (d: Uint8Array) => sign(null, d, privateKey) };
const minted = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, scopes: ['repo:read'], outcome: 'success' });

let dir: string;
let path: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'writ-walcheck-'));
  path = join(dir, 'audit.jsonl');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A log whose process is gone without closing it (nothing synced or signed at close). */
function abandoned(session = 'ses_1', p = path): Promise<AuditLog> {
  return AuditLog.open({ path: p, session, user: 'alice', clock: new ManualClock(Date.UTC(2026, 0, 1)), signer, checkpointIntervalMs: 0 });
}

async function lines(p = path): Promise<string[]> {
  return (await readFile(p, 'utf8')).split('\n').filter(Boolean);
}

/** Twelve records acknowledged; then a power cut kept only the log's first `keep` lines. Returns the lines before. */
async function cutAfter(keep: number): Promise<string[]> {
  const a = await abandoned();
  for (let i = 0; i < 12; i++) await a.append(minted(i));
  const before = await lines();
  await writeFile(path, before.slice(0, keep).join('\n') + '\n');
  return before;
}

describe('writ audit wal: comparing a write-ahead file with its log', () => {
  it('finds exactly the acknowledged records a power cut took from the log, and renamed back the file restores them', async () => {
    const before = await cutAfter(7);
    await rename(walPath(path), walSetAsidePath(path)); // as the broker sets it aside
    const c = await compareWal(path, walSetAsidePath(path));
    expect(c.generations).toEqual([{ gen: 1, sameFile: true, base: { offset: 0, count: 0, head: '0'.repeat(64) }, logHoldsBase: true, records: 12, read: true }]);
    expect({ records: c.records, inLog: c.inLog, differs: c.differs, logRecords: c.logRecords, logLastSeq: c.logLastSeq, restorable: c.restorable }).toEqual({
      records: 12,
      inLog: 7,
      differs: [],
      logRecords: 7,
      logLastSeq: 6,
      restorable: true,
    });
    expect(c.missing.map((m) => ({ seq: m.seq, line: m.line.toString('utf8') }))).toEqual(before.slice(7).map((line, i) => ({ seq: 7 + i, line })));
    // Neither file was changed.
    expect(await lines()).toEqual(before.slice(0, 7));

    // What it promised: renamed back, the next start restores those very lines.
    await rename(walSetAsidePath(path), walPath(path));
    const b = await abandoned('ses_2');
    await b.close();
    expect((await lines()).slice(0, 12)).toEqual(before);
  });

  it('says the log holds everything when it does, so removing the file loses nothing', async () => {
    const a = await abandoned();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await a.close();
    const c = await compareWal(path, walPath(path));
    expect({ records: c.records, inLog: c.inLog, missing: c.missing, differs: c.differs, restorable: c.restorable }).toEqual({ records: 6, inLog: 6, missing: [], differs: [], restorable: false });
  });

  it('names a record the log holds otherwise, and does not promise a restore over it', async () => {
    const before = await cutAfter(12);
    const edited = before.map((l, i) => (i === 4 ? l.replace('"jti_4"', '"jti_X"') : l));
    await writeFile(path, edited.slice(0, 9).join('\n') + '\n');
    const c = await compareWal(path, walPath(path));
    expect({ inLog: c.inLog, differs: c.differs, missing: c.missing.map((m) => m.seq), restorable: c.restorable }).toEqual({
      inLog: 8,
      differs: [4],
      missing: [9, 10, 11],
      restorable: false,
    });
  });

  it("tells another log's file apart: not written for this file, nothing in it taken as the log's, nothing promised", async () => {
    await cutAfter(12);
    const other = join(dir, 'other.jsonl');
    const o = await abandoned('ses_o', other);
    for (let i = 0; i < 3; i++) await o.append(minted(100 + i));
    await o.close();
    const c = await compareWal(other, walPath(path));
    expect(c.generations.map((g) => ({ sameFile: g.sameFile, logHoldsBase: g.logHoldsBase }))).toEqual([{ sameFile: false, logHoldsBase: true }]);
    // The other log's records are not these: all twelve differ or are missing, none is in it.
    expect({ inLog: c.inLog, differs: c.differs, missing: c.missing.map((m) => m.seq), restorable: c.restorable }).toEqual({
      inLog: 0,
      differs: [0, 1, 2, 3],
      missing: [4, 5, 6, 7, 8, 9, 10, 11],
      restorable: false,
    });
  });

  it('reads both generations after a hand-over, and checks the log from the older base when it lacks the newer', async () => {
    // 50 records of 100 kB: the first region fills, and a second generation begins in the other.
    const big = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, outcome: 'success', detail: { pad: 'x'.repeat(100_000) } });
    const a = await abandoned();
    for (let i = 0; i < 50; i++) await a.append(big(i));
    const before = await lines();
    const c0 = await compareWal(path, walPath(path));
    const [first, second] = c0.generations;
    expect(c0.generations).toHaveLength(2);
    expect({ gen: first!.gen, from: first!.base.count, holds: first!.logHoldsBase }).toEqual({ gen: 1, from: 0, holds: true });
    expect({ gen: second!.gen, from: second!.base.count, holds: second!.logHoldsBase, to: second!.base.count + second!.records }).toEqual({ gen: 2, from: first!.records, holds: true, to: 50 });
    expect({ records: c0.records, inLog: c0.inLog, missing: c0.missing }).toEqual({ records: 50, inLog: 50, missing: [] });

    // The log lost everything from record 20 on, the newer base with it: the older generation leads on to it.
    await writeFile(path, before.slice(0, 20).join('\n') + '\n');
    const c = await compareWal(path, walPath(path));
    expect(c.generations.map((g) => g.logHoldsBase)).toEqual([true, false]);
    expect({ inLog: c.inLog, missing: c.missing.map((m) => m.seq), restorable: c.restorable }).toEqual({ inLog: 20, missing: Array.from({ length: 30 }, (_, i) => 20 + i), restorable: true });
    const b = await abandoned('ses_2');
    await b.close();
    expect((await lines()).slice(0, 50)).toEqual(before);
  });

  // Found by review: only records chaining on from a header were looked at, so a page the file lost (the case it
  // exists for) or a header it could not read left acknowledged records unseen, and it said removing it lost none.
  it('looks up every record in the file, chained or not: those after a page the file lost', async () => {
    const padded = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, outcome: 'success', detail: { pad: 'x'.repeat(1000) } });
    const a = await abandoned();
    for (let i = 0; i < 12; i++) await a.append(padded(i));
    const before = await lines();
    const wal = await readFile(walPath(path));
    wal.fill(0, 4096, 8192); // a page of the file whose writeback failed
    await writeFile(walPath(path), wal);
    const text = wal.toString('latin1');
    const chained = before.filter((l) => text.indexOf(l) !== -1 && text.indexOf(l) + l.length < 4096).length;
    const whole = before.flatMap((l, seq) => (text.indexOf(l) > 8192 ? [seq] : []));
    expect(whole.length).toBeGreaterThan(0);
    await writeFile(path, before.slice(0, chained).join('\n') + '\n'); // the log kept only what chains
    const c = await compareWal(path, walPath(path));
    expect({ records: c.records, missing: c.missing, restorable: c.restorable }).toEqual({ records: chained, missing: [], restorable: false });
    expect(c.unchained.lacking.map((u) => ({ seq: u.seq, line: u.line.toString('utf8') }))).toEqual(whole.map((seq) => ({ seq, line: before[seq] })));
  });

  it('looks up every record under a header it cannot read (a newer format, or one flipped byte)', async () => {
    const cut = await cutAfter(12);
    const w = await readFile(walPath(path));
    w.write('3', w.indexOf('"wal":2') + 6, 'latin1');
    await writeFile(walPath(path), w);
    await writeFile(path, cut.slice(0, 7).join('\n') + '\n');
    const d = await compareWal(path, walPath(path));
    expect({ generations: d.generations, records: d.records, unchained: d.unchained.records }).toEqual({ generations: [], records: 0, unchained: 12 });
    expect(d.unchained.lacking.map((u) => u.seq)).toEqual([7, 8, 9, 10, 11]);
  });

  it('counts lines of the log that are not records apart, and does not promise a restore past them', async () => {
    const before = await cutAfter(12);
    // Records 7 and 8 lost as a page of zeros (the newline after 8 kept), 9 to 11 still there.
    const zeros = '\0'.repeat(before[7]!.length + 1 + before[8]!.length);
    await writeFile(path, [...before.slice(0, 7), zeros, ...before.slice(9)].join('\n') + '\n');
    const c = await compareWal(path, walPath(path));
    expect({ logRecords: c.logRecords, logUnreadableLines: c.logUnreadableLines, logLastSeq: c.logLastSeq, missing: c.missing.map((m) => m.seq), restorable: c.restorable }).toEqual({
      logRecords: 10,
      logUnreadableLines: 1,
      logLastSeq: 11,
      missing: [7, 8],
      restorable: false,
    });
  });

  it('refuses a FIFO in the place of the file at once, rather than waiting for a writer', async () => {
    await cutAfter(12);
    const fifo = join(dir, 'audit.jsonl.wal.fifo');
    execFileSync('mkfifo', [fifo]);
    const e = await compareWal(path, fifo).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect((e as Error).message).toBe(`cannot read the write-ahead file ${fifo}: not a regular file`);
  });

  it('refuses a file it cannot read with WRIT_AUDIT_UNREADABLE, naming it', async () => {
    await cutAfter(12);
    const gone = join(dir, 'gone.wal');
    const e = await compareWal(path, gone).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(isWritError(e, 'WRIT_AUDIT_UNREADABLE')).toBe(true);
    expect((e as Error).message).toBe(`cannot read the write-ahead file ${gone}: no such file`);
    const noLog = await compareWal(join(dir, 'none.jsonl'), walPath(path)).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect((noLog as Error).message).toBe(`cannot read the audit log ${join(dir, 'none.jsonl')}: no such file`);
    expect((await stat(walPath(path))).isFile()).toBe(true);
  });
});
