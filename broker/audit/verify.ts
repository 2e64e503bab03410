// Verifies an audit file (`writ audit verify`): schema, sequence, hash chain and signed checkpoints, streaming.
// Stops at the first bad line and names it by line number, seq and reason; never echoes a line's content.
//
// What this can and cannot prove:
// - The chain alone proves internal consistency only: whoever can write the file can edit a record and recompute
//   every later `prev`. Checkpoints close that gap for the prefix they sign, because the rewriter lacks the key.
// - A checkpoint is only as trustworthy as `publicKeys`: pass keys from the keychain, never keys found in the log
//   (a `kid` merely names one; a log cannot vouch for itself).
// - A key set may be partial (a broker's JWKS keeps a retired key for an hour only). Then a checkpoint naming a kid
//   it lacks proves nothing either way: it is unverifiable, not broken, and the chain is checked on to the end. A
//   later checkpoint that verifies covers it, since its signed head commits to every line before it.
// - Records after the last checkpoint are held only by the chain: they can be edited, or cut off, without a trace
//   here. `unsignedTail` says how many there are, and `judge` below decides what they mean: a running broker
//   writing this very file can vouch for them (its durable count and head), a broker never leaves more than
//   CHECKPOINT_EVERY of them, and a log with any and no broker to vouch is unsigned, not intact.
// - Cutting off the final checkpoint along with everything after it leaves a shorter log that verifies cleanly:
//   only an expected size known out of band (a saved checkpoint, the broker's `auditRecords` status, or the
//   `broker.stopped` + checkpoint pair a clean shutdown leaves at the end) can reveal it.
import type { KeyObject } from 'node:crypto';
import { AuditRecord, issuePath } from '../protocol';
import { printable } from '../printable';
import { readAuditLines } from './lines';
import { CHECKPOINT_EVERY, checkpointSigned, DEFAULT_AUDIT_ORIGIN, sha256Hex, ZERO_HASH } from './log';

export type VerifyReason =
  | 'parse'
  | 'schema'
  | 'seq'
  | 'chain'
  | 'checkpoint-signature'
  | 'checkpoint-count'
  | 'checkpoint-head'
  | 'unknown-kid'
  | 'torn-tail'
  /** Fewer records than the running broker writing the file has made durable. */
  | 'cut';

export interface VerifyError {
  code: 'WRIT_AUDIT_CORRUPT';
  /** 1-based line number of the first bad line. */
  line: number;
  seq: number | null;
  reason: VerifyReason;
  message: string;
}

/**
 * Checkpoints a partial key set could not check, after the last checkpoint that verifies: nothing found broken,
 * but nothing proves these records unedited either. The first of them is named.
 */
export interface Unverifiable {
  code: 'WRIT_AUDIT_UNVERIFIABLE';
  /** 1-based line number of the first such checkpoint. */
  line: number;
  seq: number;
  /** The kid it names (public: a key thumbprint, or whatever the file says). */
  kid: string;
  /** How many such checkpoints follow the last verified one, the first included. */
  checkpoints: number;
  message: string;
}

export interface VerifyResult {
  /** True only when nothing is broken and nothing is left unverifiable. */
  ok: boolean;
  /** Records verified (all of them when ok; those before the bad line otherwise). Checkpoints included. */
  records: number;
  checkpoints: number;
  lastCheckpointSeq: number | null;
  /** Verified records after the last checkpoint: held by the chain alone (see above). */
  unsignedTail: number;
  /**
   * Partial key set only, when any: checkpoints whose kid it lacks, covered or not. Not in `checkpoints`; until a
   * checkpoint that verifies follows, their records count in `unsignedTail`.
   */
  skippedCheckpoints?: number;
  /** Partial key set only: skipped checkpoints no verified one covers. Without `error`, the verdict is "unverifiable". */
  unverifiable?: Unverifiable;
  /** The first break. It wins over `unverifiable`: the log is broken whatever the missing keys would say. */
  error?: VerifyError;
  /** With `headOf`: the SHA-256 hex of the record with that seq, when the file holds it (and it verified). */
  headAt?: string;
  /**
   * Records a crash left unsigned that the next broker signed as it started (`audit.adopted`): signed, but not by
   * the run that wrote them, so they rest on the chain alone. The first such record's line, and their total.
   */
  adopted?: { line: number; records: number };
}

/** What `verdict` makes of a result: a break wins, then anything left unverifiable. */
export type VerifyVerdict = 'intact' | 'unverifiable' | 'broken';

export function verdict(r: VerifyResult): VerifyVerdict {
  return r.error ? 'broken' : r.unverifiable ? 'unverifiable' : 'intact';
}

export interface VerifyOptions {
  /** The origin the checkpoints were signed with. Default 'writ-audit/v1'. */
  origin?: string;
  /**
   * 'complete' (default): `publicKeys` holds every key that ever signed a checkpoint (the keychain's), so a kid
   * outside it is a forgery, reason 'unknown-kid'. 'partial': keys may be missing (a broker's JWKS), so such a
   * checkpoint is unverifiable instead: its count and head are still checked, and the chain after it.
   */
  keySet?: 'complete' | 'partial';
  /** Also return the hash of the record with this seq (`headAt`): to compare with a running broker's head. */
  headOf?: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Checks one line at a time, so a file of any length needs constant memory. */
class Verifier {
  records = 0;
  checkpoints = 0;
  lastCheckpointSeq: number | null = null;
  unsignedTail = 0;
  error: VerifyError | undefined;
  skipped = 0;
  /** The first skipped checkpoint since the last verified one, and how many since. */
  uncovered: { line: number; seq: number; kid: string; checkpoints: number } | undefined;
  headAt: string | undefined;
  adopted: { line: number; records: number } | undefined;
  #prev = ZERO_HASH;

  constructor(
    private readonly keys: ReadonlyMap<string, KeyObject>,
    private readonly origin: string,
    private readonly partial: boolean,
    private readonly headOf: number | undefined,
  ) {}

  /** Returns false once a line failed: stop feeding. */
  push(bytes: Uint8Array, line: number, terminated: boolean): boolean {
    if (!terminated) return this.#stop(line, null, 'torn-tail', 'last line has no line end: a torn write');
    let value: unknown;
    try {
      value = JSON.parse(utf8.decode(bytes));
    } catch {
      return this.#stop(line, null, 'parse', 'not a JSON line');
    }
    const parsed = AuditRecord.safeParse(value);
    if (!parsed.success) {
      const seq = (value as { seq?: unknown } | null)?.seq;
      const at = issuePath(parsed.error) || '(root)';
      return this.#stop(line, Number.isInteger(seq) ? (seq as number) : null, 'schema', `invalid field ${at}`);
    }
    const r = parsed.data;
    if ((r.event === 'checkpoint') !== (r.checkpoint !== undefined)) {
      return this.#stop(line, r.seq, 'schema', 'a checkpoint field belongs to, and only to, a checkpoint event');
    }
    if (r.seq !== this.records) return this.#stop(line, r.seq, 'seq', `expected seq ${this.records}`);
    if (r.prev !== this.#prev) {
      const what = line === 1 ? 'the first record\'s prev is not zeros' : `prev is not the hash of line ${line - 1}`;
      return this.#stop(line, r.seq, 'chain', what);
    }
    if (r.checkpoint) {
      const { count, head, kid, sig } = r.checkpoint;
      if (count !== r.seq) return this.#stop(line, r.seq, 'checkpoint-count', `checkpoint count is not ${r.seq}`);
      if (head !== r.prev) return this.#stop(line, r.seq, 'checkpoint-head', 'checkpoint head is not the chain head');
      const key = this.keys.get(kid);
      if (key) {
        if (!checkpointSigned(key, this.origin, { count, head, sig })) return this.#stop(line, r.seq, 'checkpoint-signature', 'checkpoint signature does not verify');
        this.checkpoints++;
        this.lastCheckpointSeq = r.seq;
        this.unsignedTail = 0;
        this.uncovered = undefined;
      } else if (this.partial) {
        // Not checked, so not counted as signed: its records stay in the unsigned tail until a checkpoint verifies.
        this.skipped++;
        if (this.uncovered) this.uncovered.checkpoints++;
        else this.uncovered = { line, seq: r.seq, kid, checkpoints: 1 };
        this.unsignedTail++;
      } else {
        return this.#stop(line, r.seq, 'unknown-kid', 'checkpoint signed by a key not in the key set');
      }
    } else {
      this.unsignedTail++;
    }
    this.#prev = sha256Hex(bytes);
    if (r.seq === this.headOf) this.headAt = this.#prev;
    if (r.event === 'audit.adopted') {
      const n = r.detail?.records;
      const records = typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : 0;
      if (this.adopted) this.adopted.records += records;
      else this.adopted = { line, records };
    }
    this.records++;
    return true;
  }

  #stop(line: number, seq: number | null, reason: VerifyReason, why: string): false {
    const at = seq === null ? `line ${line}` : `line ${line} (seq ${seq})`;
    this.error = { code: 'WRIT_AUDIT_CORRUPT', line, seq, reason, message: `audit log ${at}: ${why}` };
    return false;
  }

  result(): VerifyResult {
    const base = {
      records: this.records,
      checkpoints: this.checkpoints,
      lastCheckpointSeq: this.lastCheckpointSeq,
      unsignedTail: this.unsignedTail,
      ...(this.skipped > 0 ? { skippedCheckpoints: this.skipped } : {}),
      ...(this.uncovered ? { unverifiable: this.#unverifiable(this.uncovered) } : {}),
      ...(this.headAt === undefined ? {} : { headAt: this.headAt }),
      ...(this.adopted ? { adopted: this.adopted } : {}),
    };
    return this.error ? { ok: false, ...base, error: this.error } : { ok: base.unverifiable === undefined, ...base };
  }

  #unverifiable(u: NonNullable<Verifier['uncovered']>): Unverifiable {
    // The kid comes from the file: shown inert and short, so it cannot write to a terminal or flood it.
    const shown = printable(u.kid.length > 64 ? `${u.kid.slice(0, 64)}…` : u.kid);
    const more = u.checkpoints === 1 ? '' : ` (and ${u.checkpoints - 1} later checkpoint${u.checkpoints === 2 ? '' : 's'})`;
    return {
      code: 'WRIT_AUDIT_UNVERIFIABLE',
      ...u,
      message: `audit log line ${u.line} (seq ${u.seq}): checkpoint signed by key ${shown}, which the key set lacks${more}: not checked`,
    };
  }
}

/** Streams and verifies the file. Rejects only on I/O errors (e.g. a missing file); corruption is a result. */
export async function verifyAuditFile(
  path: string,
  publicKeys: ReadonlyMap<string, KeyObject>,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const v = new Verifier(publicKeys, opts.origin ?? DEFAULT_AUDIT_ORIGIN, opts.keySet === 'partial', opts.headOf);
  for await (const l of readAuditLines(path)) {
    if (!v.push(l.bytes, l.line, l.terminated)) break;
  }
  return v.result();
}

/**
 * The same checks over lines already split (each without its newline; lines are hashed as UTF-8).
 * `tornTail` marks the final line as unterminated, which verifyAuditFile learns from the file itself.
 */
export function verifyAuditLines(
  lines: Iterable<string>,
  publicKeys: ReadonlyMap<string, KeyObject>,
  opts: VerifyOptions & { tornTail?: boolean } = {},
): VerifyResult {
  const v = new Verifier(publicKeys, opts.origin ?? DEFAULT_AUDIT_ORIGIN, opts.keySet === 'partial', opts.headOf);
  // One line of lookahead: only the final line can be torn.
  let n = 0;
  let pending: string | undefined;
  for (const line of lines) {
    if (pending !== undefined && !v.push(Buffer.from(pending, 'utf8'), n, true)) return v.result();
    pending = line;
    n++;
  }
  if (pending !== undefined) v.push(Buffer.from(pending, 'utf8'), n, opts.tornTail !== true);
  return v.result();
}

/**
 * What the broker writing this very file says, signed, it has made durable (`status.auditSeal`): `count` and `head`
 * asked before the file was read, `upTo` its count asked again after (no record at or past it is its own).
 */
export interface BrokerVouch {
  pid: number;
  count: number;
  head: string;
  upTo: number;
}

export type AuditJudgement =
  | { verdict: 'intact'; vouched: number }
  | { verdict: 'unverifiable'; unverifiable: Unverifiable }
  | { verdict: 'broken'; error: VerifyError }
  | { verdict: 'unsigned'; code: 'WRIT_AUDIT_UNSIGNED'; line: number; seq: number; records: number; message: string };

/**
 * The verdict `writ audit verify` gives a file it verified (`vouch`: verified with `headOf: vouch.count - 1`, and
 * only when the file is that broker's own live log). Records after the last signed checkpoint are intact only when
 * the running broker's durable count and head match them (`vouched` says how many it covered); otherwise they are
 * unsigned: whoever can write the file could have written them, or rewritten the whole log without its checkpoints.
 * A broker that stops cleanly leaves a checkpoint last, and one that starts after a crash signs what the crash left.
 */
export function judge(r: VerifyResult, vouch?: BrokerVouch): AuditJudgement {
  if (r.error) return { verdict: 'broken', error: r.error };
  if (r.unverifiable) return { verdict: 'unverifiable', unverifiable: r.unverifiable };
  if (vouch) {
    const line = vouch.count;
    if (r.records < vouch.count) {
      return { verdict: 'broken', error: { code: 'WRIT_AUDIT_CORRUPT', line: r.records + 1, seq: null, reason: 'cut', message: `audit log: the running broker (pid ${vouch.pid}) has written ${vouch.count} records here, the file holds ${r.records}: it was cut` } };
    }
    if (r.headAt !== vouch.head) {
      return { verdict: 'broken', error: { code: 'WRIT_AUDIT_CORRUPT', line, seq: vouch.count - 1, reason: 'chain', message: `audit log line ${line} (seq ${vouch.count - 1}): not the record the running broker (pid ${vouch.pid}) wrote` } };
    }
    if (r.records > vouch.upTo) {
      const extra = r.records - vouch.upTo;
      return {
        verdict: 'unsigned',
        code: 'WRIT_AUDIT_UNSIGNED',
        line: vouch.upTo + 1,
        seq: vouch.upTo,
        records: extra,
        message: `audit log line ${vouch.upTo + 1} (seq ${vouch.upTo}) on: ${extra} record${extra === 1 ? '' : 's'} past the last the running broker (pid ${vouch.pid}) has written: not its own`,
      };
    }
    // Records after the vouched head were written while this ran, and the broker counted them when asked again:
    // one that was not its own would break the chain at its next record.
    return { verdict: 'intact', vouched: r.unsignedTail };
  }
  if (r.records === 0) {
    return { verdict: 'unsigned', code: 'WRIT_AUDIT_UNSIGNED', line: 1, seq: 0, records: 0, message: 'audit log: no records, and a broker writes its start record first: it was emptied' };
  }
  if (r.unsignedTail === 0) return { verdict: 'intact', vouched: 0 };
  const seq = r.records - r.unsignedTail;
  const why =
    r.unsignedTail > CHECKPOINT_EVERY
      ? `more than the ${CHECKPOINT_EVERY} a broker ever leaves unsigned: they were written, or the log rewritten, by something else`
      : 'and no running broker vouches for them: a broker that stopped cleanly leaves a checkpoint last, and one that crashed signs them when it starts again; else they were written, or changed, by something else';
  return {
    verdict: 'unsigned',
    code: 'WRIT_AUDIT_UNSIGNED',
    line: seq + 1,
    seq,
    records: r.unsignedTail,
    message: `audit log line ${seq + 1} (seq ${seq}) on: ${r.unsignedTail} record${r.unsignedTail === 1 ? '' : 's'} no signed checkpoint covers, ${why}`,
  };
}
