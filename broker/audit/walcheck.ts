// `writ audit wal`: what a write-ahead file holds that its log does not. A broker refuses to open a log whose
// write-ahead file it set aside (`audit.jsonl.wal.rejected`, after a failed sync) or one written for another log
// (`WRIT_AUDIT_CORRUPT`, naming the file): such a file may hold acknowledged records the log lost, and this is how a
// developer finds out before removing it. The file and the log are only read.
import { stat } from 'node:fs/promises';
import { ZERO_HASH, sha256Hex } from './log';
import { readAuditLines, unreadable } from './lines';
import { anyRecords, joinGenerations, newestGenerations, readWalFile } from './wal';
import type { Generation, WalBase, WalRecords } from './wal';

export interface WalGenerationReport {
  /** Its number (0: a version 1 file). */
  gen: number;
  /** Whether its header names this log's file (inode). */
  sameFile: boolean;
  /** The log's prefix when the generation began. */
  base: WalBase;
  /** Whether the log begins with that prefix (its first `base.count` records, `base.offset` bytes, ending in `base.head`). */
  logHoldsBase: boolean;
  /** Records held, from seq `base.count` on. */
  records: number;
  /** Whether a start restores from it (the newest, or the one before it): else it is stale, its records unchained. */
  read: boolean;
}

export interface WalComparison {
  generations: WalGenerationReport[];
  /** Records of the generations a start restores from (once each, the newer's line where both hold a seq). */
  records: number;
  /** Of them, those the log holds at the same seq, byte for byte. */
  inLog: number;
  /** Those whose seq the log does not reach (or has only as a torn line), in seq order, each line as the file holds it. */
  missing: { seq: number; line: Buffer }[];
  /** Those the log holds a different line for at that seq. */
  differs: number[];
  /**
   * Records in the file that chain on from no generation's base (stale lines after a generation's end, records after
   * a page the file lost, a region whose header was lost), and those of them the log lacks (it does not reach
   * their seq, or holds another line there).
   */
  unchained: { records: number; lacking: { seq: number; line: Buffer }[] };
  /** Complete records in the log, and the seq of its last one (-1 when none). */
  logRecords: number;
  /** Whole lines in the log that are not records (zeros a power cut left, an overlong line). */
  logUnreadableLines: number;
  logLastSeq: number;
  /**
   * Whether renaming the file back to the log's `.wal` makes the next start restore the missing records: the header
   * names this log's file, the log holds the base the start would check it from and every record after it as the
   * file does, and the missing records continue the log's chain from its last record. False claims nothing: a start
   * may still restore some of them (after a page the log lost), but this check does not say so.
   */
  restorable: boolean;
}

/** `{"seq":N,` opens every record (the log writes its keys in a fixed order); else the line is parsed. */
function seqOf(line: Buffer): number | undefined {
  const m = /^\{"seq":(\d{1,15}),/.exec(line.toString('latin1', 0, Math.min(line.length, 32)));
  if (m) return Number(m[1]);
  try {
    const v = (JSON.parse(line.toString('utf8')) as { seq?: unknown } | null)?.seq;
    return Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : undefined;
  } catch {
    return undefined;
  }
}

/** The records of one generation, each line with its seq. */
function linesOf(records: WalRecords): { seq: number; line: Buffer }[] {
  return records.ends.map((end, i) => ({ seq: records.base.count + i, line: records.bytes.subarray(i === 0 ? 0 : records.ends[i - 1], end - 1) }));
}

/** Compares the write-ahead file `walFile` with the audit log `logFile`; reads both, changes neither. */
export async function compareWal(logFile: string, walFile: string): Promise<WalComparison> {
  let found: Generation[];
  let bytes: Buffer;
  try {
    ({ generations: found, bytes } = readWalFile(walFile, sha256Hex));
  } catch (e) {
    throw unreadable(walFile, 'write-ahead file', e);
  }
  let ino: string;
  try {
    const st = await stat(logFile, { bigint: true });
    if (!st.isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    ino = String(st.ino);
  } catch (e) {
    throw unreadable(logFile, 'audit log', e);
  }

  // The records of the generations a start would restore from (newestGenerations: the newest, and the one before it
  // in the other region), the newer's line last; a stale region's go with the unchained records below.
  const picked = newestGenerations(found);
  const held = new Map<number, Buffer>();
  for (const g of picked ? [picked.older, picked.newest] : []) if (g) for (const { seq, line } of linesOf(g.records)) held.set(seq, line);
  // Records that chain on from no generation's base: each looked up in the log all the same.
  const loose = new Map<number, Buffer[]>();
  for (const { seq, line } of anyRecords(bytes)) {
    if (held.get(seq)?.equals(line) || loose.get(seq)?.some((l) => l.equals(line))) continue;
    loose.set(seq, [...(loose.get(seq) ?? []), line]);
  }
  const bases = new Map<number, { offset: number; head: string; held: boolean }[]>();
  for (const g of found) {
    const b = { offset: g.records.base.offset, head: g.records.base.head, held: g.records.base.count === 0 && g.records.base.offset === 0 };
    bases.set(g.records.base.count, [...(bases.get(g.records.base.count) ?? []), b]);
  }

  const inLog = new Set<number>();
  const differs = new Set<number>();
  const looseInLog = new Set<Buffer>();
  let lines = 0;
  let count = 0;
  let unreadableLines = 0;
  let lastSeq = -1;
  let last: Buffer | undefined;
  let offset = 0;
  for await (const l of readAuditLines(logFile)) {
    if (!l.terminated) break; // a torn last line holds no record
    offset += l.length + 1;
    lines++;
    last = l.bytes;
    // The prefix a generation began on: `lines` lines, `offset` bytes, the last hashing to its head.
    const at = bases.get(lines);
    if (at?.some((b) => b.offset === offset)) {
      const h = sha256Hex(l.bytes);
      for (const b of at) if (b.offset === offset && b.head === h) b.held = true;
    }
    const seq = l.overlong ? undefined : seqOf(l.bytes);
    if (seq === undefined) {
      unreadableLines++;
      continue;
    }
    count++;
    lastSeq = seq;
    const mine = held.get(seq);
    if (mine !== undefined) (mine.equals(l.bytes) ? inLog.add(seq) : differs.add(seq));
    for (const other of loose.get(seq) ?? []) if (other.equals(l.bytes)) looseInLog.add(other);
  }

  const generations = found.map(
    (g): WalGenerationReport => ({
      gen: g.gen,
      sameFile: g.records.ino === ino,
      base: g.records.base,
      logHoldsBase: (bases.get(g.records.base.count) ?? []).some((b) => b.offset === g.records.base.offset && b.head === g.records.base.head && b.held),
      records: g.records.ends.length,
      read: picked?.newest === g || picked?.older === g,
    }),
  );
  const missing = [...held.entries()].filter(([seq]) => !inLog.has(seq) && !differs.has(seq)).sort(([a], [b]) => a - b).map(([seq, line]) => ({ seq, line }));
  const unchained = [...loose.entries()].flatMap(([seq, ls]) => ls.map((line) => ({ seq, line })));
  const unchainedLacking = unchained.filter((u) => !looseInLog.has(u.line)).sort((a, b) => a.seq - b.seq);

  return {
    generations,
    records: held.size,
    inLog: inLog.size,
    missing,
    differs: [...differs].sort((a, b) => a - b),
    unchained: { records: unchained.length, lacking: unchainedLacking },
    logRecords: count,
    logUnreadableLines: unreadableLines,
    logLastSeq: lastSeq,
    restorable: unreadableLines === 0 && restorable(found, generations, missing, differs.size, count, last === undefined ? ZERO_HASH : sha256Hex(last)),
  };
}

/**
 * What the next start does with the file renamed back (audit/log.ts `open`): it checks the log from the newest
 * generation's base, or from the generation before it where that one leads on to the newest and the log holds its
 * base, and restores what chains on from the log's end.
 */
function restorable(found: Generation[], reports: WalGenerationReport[], missing: { seq: number; line: Buffer }[], differs: number, logRecords: number, lastHash: string): boolean {
  // A record the log holds otherwise stops the restore there (it is not the file's to overwrite).
  if (missing.length === 0 || found.length === 0 || differs > 0) return false;
  const chosen = newestGenerations(found)!;
  const reportOf = (g: Generation) => ({ g, r: reports[found.indexOf(g)]! });
  const newest = reportOf(chosen.newest);
  const older = chosen.older && reportOf(chosen.older);
  const from = older?.r.logHoldsBase && older.r.sameFile && joinGenerations(older.g.records, newest.g.records) ? older : newest.r.logHoldsBase ? newest : undefined;
  if (!from || !from.r.sameFile) return false;
  // The missing records continue the log: the first comes right after its last record and names it as prev.
  const first = missing[0]!;
  if (first.seq !== logRecords) return false;
  for (let i = 1; i < missing.length; i++) if (missing[i]!.seq !== first.seq + i) return false;
  const prev = (JSON.parse(first.line.toString('utf8')) as { prev?: unknown }).prev;
  return prev === lastHash;
}
