// The audit log: an append-only, SHA-256-chained JSON Lines file with signed checkpoints, written by group commit.
// Owns durability and failing closed: a record is acknowledged only once it is on disk, and one failed write stops the log.
import { hash, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { constants as fsc, fdatasync, writeSync } from 'node:fs';
import { access, mkdir, open as openFile, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Clock } from '../core/clock';
import { WritError } from '../errors';
import { AuditRecord, type AuditEntry } from '../protocol';
import { auditRecordProblem } from './check';
import { MAX_AUDIT_LINE_BYTES } from './lines';
import { AuditWal, joinGenerations, walPath, walSetAsidePath, type WalBase, type WalRecords } from './wal';

export interface AuditSigner {
  readonly kid: string;
  /** Ed25519 over `data`, e.g. `crypto.sign(null, data, privateKey)`. */
  sign(data: Uint8Array): Uint8Array;
}

export interface AuditLogOptions {
  path: string;
  session: string;
  user: string;
  clock: Clock;
  signer: AuditSigner;
  /** Names the log in checkpoint text, so a signature cannot be replayed onto another log kind. Default 'writ-audit/v1'. */
  origin?: string;
  /** Sign a checkpoint after this many records; 0 disables the count trigger. Default 1000 (CHECKPOINT_EVERY). */
  checkpointEvery?: number;
  /** Sign a checkpoint this often while records are unsigned; 0 disables the timer. Default 10000. */
  checkpointIntervalMs?: number;
  /** Called with each record once it is durable, in file order. Errors it throws are ignored. */
  onRecord?: (r: AuditRecord) => void;
  /** Durable batches (through the write-ahead file, audit/wal.ts). Default true; only tests turn it off. */
  fsync?: boolean;
  /**
   * Every key that ever signed a checkpoint here (the keychain's). Counting what a crash left unsigned at open, only
   * a checkpoint one of them signed ends the count: a forger's own would otherwise let a rewrite through. Without
   * them (tools and tests that do not sign), any checkpoint line does.
   */
  checkpointKeys?: ReadonlyMap<string, KeyObject>;
}

export const ZERO_HASH = '0'.repeat(64);
export const DEFAULT_AUDIT_ORIGIN = 'writ-audit/v1';

/**
 * A broker signs a checkpoint after every this many records, in the same write as the last of them, and at start over
 * what a crash left unsigned: so no log a broker wrote ends in more unsigned records than this.
 */
export const CHECKPOINT_EVERY = 1000;

/** The signed text of a checkpoint, modelled on C2SP tlog-checkpoint notes: origin, tree size, root hash. */
export function checkpointText(origin: string, count: number, head: string): string {
  return `${origin}\n${count}\n${head}\n`;
}

/**
 * Whether `sig` (base64url) is `key`'s signature over the checkpoint text of `origin`, `count` and `head`: the one
 * check behind a checkpoint in the log, the log's count of unsigned records at open, and a running broker's
 * statement of its durable state. No key, a key of the wrong type or a malformed signature is a bad signature,
 * never a throw.
 */
export function checkpointSigned(key: KeyObject | undefined, origin: string, c: { count: number; head: string; sig: string }): boolean {
  if (key === undefined) return false;
  try {
    return cryptoVerify(null, Buffer.from(checkpointText(origin, c.count, c.head), 'utf8'), key, Buffer.from(c.sig, 'base64url'));
  } catch {
    return false;
  }
}

/**
 * One-shot (crypto.hash): no Hash object per record. Each of those is a native object the garbage collector must
 * finalize, and at thousands of records a second finalizing them was about half of every young-generation pause.
 */
export function sha256Hex(data: string | Uint8Array): string {
  return hash('sha256', data, 'hex');
}

/** A record's entry fields in serialization order (after v, seq, ts, session, event, user; before prev). */
const ENTRY_FIELDS = [
  'agent',
  'task',
  'grantId',
  'scopes',
  'audience',
  'jti',
  'exp',
  'outcome',
  'code',
  'detail',
  'checkpoint',
] as const satisfies readonly (keyof AuditEntry)[];
const KNOWN_ENTRY_KEYS: ReadonlySet<string> = new Set<string>(['event', ...ENTRY_FIELDS]);

/** No record comes near this (lines.ts's bound, which the readers share); a longer last line means the file is not an audit log. */
const MAX_LINE_BYTES = MAX_AUDIT_LINE_BYTES;
const TAIL_CHUNK = 64 * 1024;

interface Built {
  record: AuditRecord;
  line: string;
  hash: string;
}

interface Pending extends Built {
  resolve(r: AuditRecord): void;
  reject(e: unknown): void;
}

/** Where a batch's bytes begin in the write-ahead file and the log, set just before each is written. */
interface BatchStart {
  wal?: number;
  log?: number;
  /** A batch too big for the write-ahead file began a generation after itself: cutting it must begin one again before it. */
  begun?: boolean;
}

interface Tail {
  /** File size once a torn fragment is cut off. */
  end: number;
  /** Bytes of a torn final fragment (no newline: never acknowledged), or cut to replay the write-ahead file. */
  torn: number;
  /** Records restored from the write-ahead file. */
  replayed?: number;
  /** Whole records cut with the torn bytes: a batch whose log write reached the disk and write-ahead copy did not. */
  cut?: number;
  /** Records in the file, the hash of the last line, and whether that line is a checkpoint. */
  count: number;
  head: string;
  signed: boolean;
}

const noop = (): void => {};

/**
 * Batches whose flush may overlap (the second written and flushing while the first still is). One: an fdatasync
 * of the write-ahead file takes ~0.45 ms here, so batches are small (4-6 records at 5,000 records/s) and each
 * costs the event loop its writes, its sync and its acknowledgements; with two in flight they were smaller still,
 * and `bench/ab.ts` measured 6-12% more broker CPU per call and up to 14% less throughput than with one.
 */
const SYNCS_IN_FLIGHT = 1;

export class AuditLog {
  readonly path: string;
  readonly #fh: FileHandle;
  readonly #session: string;
  readonly #user: string;
  readonly #clock: Clock;
  readonly #signer: AuditSigner;
  readonly #origin: string;
  readonly #every: number;
  readonly #onRecord: ((r: AuditRecord) => void) | undefined;
  readonly #fsync: boolean;
  /** The write-ahead file, when the log is a regular file written durably; else each batch syncs the log itself. */
  readonly #wal: AuditWal | undefined;
  readonly #ino: string;
  /** Bytes in the log file. */
  #end: number;

  // Assigned synchronously in append(): fixes file order = call order.
  #nextSeq: number;
  #prev: string;
  /** Records assigned since the last checkpoint was assigned. */
  #unsigned: number;
  // Durable: what is on disk.
  #count: number;
  #head: string;

  #queue: Pending[] = [];
  /** A batch is being taken and written (its flush not yet started). */
  #pumping = false;
  /** Batches written whose flush and acknowledgement are pending, and the size of the latest. */
  #inFlight = 0;
  #lastBatch = 0;
  /** Settles once every batch written so far is acknowledged or rejected; never rejects. */
  #settled: Promise<void> = Promise.resolve();
  /** The log's sync up to where the write-ahead file's current generation began (`#rebase`). */
  #logSynced: Promise<void> = Promise.resolve();
  #idleWaiters: (() => void)[] = [];
  /** Takes back rejected batches one at a time (audit/wal.ts `cut`, then the log). */
  #unwound: Promise<void> = Promise.resolve();
  #failure: unknown = undefined;
  #failed = false;
  #closing = false;
  #closed: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #unsignedAtOpen: { firstSeq: number; records: number } | undefined;

  private constructor(fh: FileHandle, opts: AuditLogOptions, tail: Tail, wal: AuditWal | undefined, ino: string) {
    this.path = opts.path;
    this.#fh = fh;
    this.#wal = wal;
    this.#ino = ino;
    this.#end = tail.end;
    this.#session = opts.session;
    this.#user = opts.user;
    this.#clock = opts.clock;
    this.#signer = opts.signer;
    this.#origin = opts.origin ?? DEFAULT_AUDIT_ORIGIN;
    this.#every = opts.checkpointEvery ?? CHECKPOINT_EVERY;
    this.#onRecord = opts.onRecord;
    this.#fsync = opts.fsync ?? true;
    this.#nextSeq = this.#count = tail.count;
    this.#prev = this.#head = tail.head;
    // After a restart we do not know how many records follow the last checkpoint (that would need a scan),
    // only whether any do: 1 makes the timer and close() sign them.
    this.#unsigned = tail.signed ? 0 : 1;
  }

  /** Opens (creating 0600, in a 0700 folder if missing) and continues the chain of an existing file. One writer per file. */
  static async open(opts: AuditLogOptions): Promise<AuditLog> {
    const every = opts.checkpointEvery ?? CHECKPOINT_EVERY;
    const interval = opts.checkpointIntervalMs ?? 10_000;
    if (!Number.isInteger(every) || every < 0 || !Number.isFinite(interval) || interval < 0) {
      throw new WritError('WRIT_INTERNAL', 'audit log: checkpointEvery and checkpointIntervalMs must be non-negative');
    }
    let fh: FileHandle;
    let created = true;
    try {
      await mkdir(dirname(opts.path), { recursive: true, mode: 0o700 });
      const flags = fsc.O_RDWR | fsc.O_CREAT | fsc.O_APPEND;
      try {
        fh = await openFile(opts.path, flags | fsc.O_EXCL, 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        created = false;
        fh = await openFile(opts.path, flags, 0o600);
      }
    } catch (e) {
      throw writeFailed(opts.path, 'cannot open the audit log', e);
    }
    let wal: AuditWal | undefined;
    try {
      let tail: Tail = { end: 0, torn: 0, count: 0, head: ZERO_HASH, signed: true };
      let ino = '';
      // Devices (tests use /dev/full) have no tail to read, no mode to tighten and no write-ahead file.
      const st = await fh.stat();
      if (st.isFile()) {
        ino = String((await fh.stat({ bigint: true })).ino);
        if ((st.mode & 0o077) !== 0) await fh.chmod(0o600);
        let fromWal: Tail | undefined;
        let walCreated = false;
        if (opts.fsync ?? true) {
          await refuseSetAside(opts.path);
          const opened = AuditWal.open(walPath(opts.path));
          wal = opened.wal;
          walCreated = opened.created;
          const found = walCreated ? undefined : wal.recover(sha256Hex);
          if (found) {
            // Its header names the log prefix its generation began on. A log without it (the file was moved aside or
            // replaced, or the write-ahead file is another log's) is not opened beside it: restoring its records here
            // would graft them onto the wrong log, and starting afresh would overwrite what it holds.
            // The generation before the newest, still in the other region, counts too: the newest began before the
            // log's sync up to its base ended, so a crash may have kept any part of what the log was given after
            // the older base (even the line the newest base names, without the ones before it). Where the older
            // generation leads on to the newest and the log holds its base, the log is checked from there.
            const newestHeld = await holdsPrefix(fh, st.size, found.newest.base, opts.path);
            const { older } = found;
            const joined = older && (await holdsPrefix(fh, st.size, older.base, opts.path)) ? joinGenerations(older, found.newest) : undefined;
            const records: WalRecords | undefined = joined ?? (newestHeld ? found.newest : undefined);
            if (records === undefined) throw walMismatch(opts.path, found.newest.base);
            // A new log has nothing to restore, nor has another file than the one the header names (however alike).
            if (!created && records.ino === ino) fromWal = await replay(fh, st.size, records, opts.path);
            // Without the newest base the older generation vouches for the log only by restoring it up to that
            // base: a new or other file, or another log's records (an older base of 0 bytes fits any log), is not it.
            if (!newestHeld && fromWal === undefined) throw walMismatch(opts.path, found.newest.base);
          }
        }
        if (fromWal) {
          tail = fromWal;
        } else {
          tail = await readTail(fh, st.size, opts.path);
          // Only now, with the last complete line known good: a torn fragment was never acknowledged to anyone.
          if (tail.torn > 0) await fh.truncate(tail.end);
        }
        if (wal) {
          // The generation's base must be on disk before the write-ahead file stops holding what follows it.
          await asideOnFailure(opts.path, () => datasync(fh.fd));
          await wal.begin(ino, { offset: tail.end, count: tail.count, head: tail.head });
          if (walCreated) created = true; // its name, too, must survive a power cut
        }
      }
      if (created && process.platform !== 'win32') await syncDir(dirname(opts.path));
      // What a crash left unsigned is at most `every` records (the count trigger signs in the same write as the
      // last of them, and a broker signs at start what the last run left): a longer unsigned tail was not left by a
      // broker. Signing over it would vouch for a log rewritten without its checkpoints, so the log is refused
      // (after the torn fragment and write-ahead restores every open makes).
      // With the keys, a last line that is a checkpoint counts only if they signed it (a forger's would end it).
      let unsigned: number | undefined = tail.signed ? 0 : undefined;
      if ((!tail.signed || opts.checkpointKeys) && tail.count > 0 && every > 0 && st.isFile()) {
        const signed = checkpointCheck(opts.checkpointKeys, opts.origin ?? DEFAULT_AUDIT_ORIGIN);
        unsigned = await unsignedRecords(fh, tail.end, every, opts.path, signed);
        if (unsigned > every) {
          throw new WritError(
            'WRIT_AUDIT_CORRUPT',
            `audit log ${opts.path}: it ends in more than ${every} records no checkpoint signed by this broker's keys covers, which a broker never leaves: ` +
              `it was rewritten, or written by something else. Run \`writ audit verify\` on it, then move it ${wal ? `and ${walPath(opts.path)} aside (keep them` : 'aside (keep it'} as evidence) to start a new log`,
          );
        }
      }
      const log = new AuditLog(fh, opts, tail, wal, ino);
      if (unsigned !== undefined && unsigned > 0) {
        log.#unsignedAtOpen = { firstSeq: tail.count - unsigned, records: unsigned };
        // Counted as they are, so the count trigger signs when this start's own records bring them to `every`.
        log.#unsigned = unsigned;
      }
      if (tail.torn > 0 || (tail.replayed ?? 0) > 0) {
        const detail = {
          truncatedBytes: tail.torn,
          ...(tail.replayed ? { replayedRecords: tail.replayed } : {}),
          ...(tail.cut ? { cutRecords: tail.cut } : {}),
        };
        await log.append({ event: 'audit.recovered', detail });
      }
      if (interval > 0) log.#startTimer(interval);
      return log;
    } catch (e) {
      wal?.close();
      await fh.close().catch(noop);
      if (e instanceof WritError) throw e;
      throw writeFailed(opts.path, 'cannot open the audit log', e);
    }
  }

  /**
   * The records an earlier run left after its last signed checkpoint (a crash), as this open counted them; undefined
   * when there were none or they were not counted. A broker that signs over them says so first (`audit.adopted`).
   */
  get unsignedAtOpen(): { firstSeq: number; records: number } | undefined {
    return this.#unsignedAtOpen;
  }

  /**
   * The durable state as a signed statement, in a checkpoint's form (its text, this log's origin): what a running
   * broker shows `writ audit verify`, which checks it with the keychain's keys before it vouches for anything.
   */
  seal(): { count: number; head: string; kid: string; sig: string } {
    const count = this.#count;
    const head = this.#head;
    const sig = Buffer.from(this.#signer.sign(Buffer.from(checkpointText(this.#origin, count, head), 'utf8'))).toString('base64url');
    return { count, head, kid: this.#signer.kid, sig };
  }

  /** Records durably in the file (including those from earlier runs). */
  get count(): number {
    return this.#count;
  }

  /** SHA-256 hex of the last durable line; 64 zeros for an empty log. */
  get head(): string {
    return this.#head;
  }

  /** True once a write failed: the log refuses everything after that. */
  get failed(): boolean {
    return this.#failed;
  }

  /** Resolves once the record is durable; otherwise rejects with WRIT_AUDIT_WRITE_FAILED and the record does not count. */
  append(entry: AuditEntry): Promise<AuditRecord> {
    const refused = this.#refusal();
    if (refused) return Promise.reject(refused);
    if (entry.event === 'checkpoint' || entry.checkpoint !== undefined) {
      return Promise.reject(invalidEntry('checkpoint records are written by the log itself'));
    }
    let built: Built;
    try {
      built = this.#build(entry, this.#nextSeq, this.#prev);
    } catch (e) {
      return Promise.reject(e);
    }
    // Sign in the same synchronous step so the checkpoint lands right after its N-th record.
    let cp: Built | undefined;
    if (this.#every > 0 && this.#unsigned + 1 >= this.#every) {
      try {
        cp = this.#buildCheckpoint(built.record.seq + 1, built.hash);
      } catch (e) {
        return Promise.reject(this.#fail(e));
      }
    }
    const p = this.#enqueue(built);
    this.#unsigned++;
    if (cp) void this.#enqueue(cp).catch(noop); // its failure fails the log, and `p` shares its batch
    return p;
  }

  /** Appends a signed checkpoint if records were added since the last one; null if there is nothing to sign. */
  checkpoint(): Promise<AuditRecord | null> {
    const refused = this.#refusal();
    if (refused) return Promise.reject(refused);
    return this.#checkpointNow();
  }

  /** Signs what is unsigned, waits for the disk, closes. Idempotent; rejects if the final checkpoint fails. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    if (this.#timer) clearInterval(this.#timer);
    let error: unknown;
    if (!this.#failed) await this.#checkpointNow().catch((e: unknown) => (error = e));
    await this.#whenIdle();
    if (this.#wal) {
      // The log file alone then holds every record, for readers that come before the next open.
      await this.#logSynced.catch((e: unknown) => (error ??= writeFailed(this.path, 'audit log sync failed', e)));
      if (!this.#failed) await this.#syncLog().catch((e: unknown) => (error ??= writeFailed(this.path, 'audit log sync failed', e)));
      this.#wal.close();
    }
    await this.#fh.close().catch((e: unknown) => (error ??= writeFailed(this.path, 'audit log close failed', e)));
    if (error !== undefined) throw error;
  }

  #checkpointNow(): Promise<AuditRecord | null> {
    if (this.#unsigned === 0) return Promise.resolve(null);
    let cp: Built;
    try {
      cp = this.#buildCheckpoint(this.#nextSeq, this.#prev);
    } catch (e) {
      return Promise.reject(this.#fail(e));
    }
    return this.#enqueue(cp);
  }

  #startTimer(ms: number): void {
    this.#timer = setInterval(() => {
      // A failure here fails the log; the next append reports it.
      if (this.#unsigned > 0 && !this.#failed && !this.#closing) this.#checkpointNow().catch(noop);
    }, ms);
    this.#timer.unref();
  }

  #refusal(): WritError | undefined {
    if (this.#failed) return writeFailed(this.path, 'audit log is failed: refusing to record', this.#failure);
    if (this.#closing) return new WritError('WRIT_AUDIT_WRITE_FAILED', 'audit log is closed');
    return undefined;
  }

  /** Marks the log failed (for good) and returns the error to reject with. */
  #fail(cause: unknown): WritError {
    if (!this.#failed) {
      this.#failed = true;
      this.#failure = cause;
      if (this.#timer) clearInterval(this.#timer);
    }
    return writeFailed(this.path, 'audit log write failed', cause);
  }

  #build(entry: AuditEntry, seq: number, prev: string): Built {
    // Fixed key order, undefined left out: the line's bytes are what the chain hashes.
    const rec: Record<string, unknown> = {
      v: 1,
      seq,
      ts: new Date(this.#clock.now()).toISOString(),
      session: this.#session,
      event: entry.event,
      user: this.#user,
    };
    for (const k of ENTRY_FIELDS) if (entry[k] !== undefined) rec[k] = entry[k];
    rec.prev = prev;
    for (const k in entry) {
      if (!KNOWN_ENTRY_KEYS.has(k) && Object.hasOwn(entry, k) && (entry as Record<string, unknown>)[k] !== undefined) throw invalidEntry(`unknown field ${k}`);
    }
    // A record that fails the schema would make the log unverifiable (and unopenable if last). The schema's
    // verdict, without zod's copy of the record (audit/check.ts).
    const problem = auditRecordProblem(rec);
    if (problem !== undefined) throw invalidEntry(`invalid field ${problem || '(root)'}`);
    let line: string;
    try {
      line = JSON.stringify(rec);
    } catch (e) {
      throw new WritError('WRIT_AUDIT_WRITE_FAILED', 'audit entry rejected: not serializable', { cause: e });
    }
    // A line longer than open reads back would make the log unopenable after a crash that left it last (a UTF-16
    // unit is at most 3 bytes: the exact count only for lines that could be too long).
    if (line.length * 3 > MAX_LINE_BYTES && Buffer.byteLength(line) > MAX_LINE_BYTES) throw invalidEntry(`longer than ${MAX_LINE_BYTES} bytes`);
    return { record: rec as AuditRecord, line, hash: sha256Hex(line) };
  }

  #buildCheckpoint(count: number, head: string): Built {
    const text = checkpointText(this.#origin, count, head);
    const sig = Buffer.from(this.#signer.sign(Buffer.from(text, 'utf8'))).toString('base64url');
    return this.#build({ event: 'checkpoint', checkpoint: { count, head, kid: this.#signer.kid, sig } }, count, head);
  }

  #enqueue(built: Built): Promise<AuditRecord> {
    this.#nextSeq = built.record.seq + 1;
    this.#prev = built.hash;
    if (built.record.event === 'checkpoint') this.#unsigned = 0;
    // Fields named, not spread: one object shape for every queued record (a spread here cost ~2% of a mint's CPU).
    const p = new Promise<AuditRecord>((resolve, reject) => this.#queue.push({ record: built.record, line: built.line, hash: built.hash, resolve, reject }));
    this.#kick();
    return p;
  }

  /**
   * Starts the next batch on a microtask (so a synchronous burst shares it) when nothing is syncing, or (with
   * SYNCS_IN_FLIGHT above one) when a batch is and the queue has grown as large as it: a flush costs CPU too, and a trickle of one-record batches
   * behind a big one would spend more of it than the overlap saves.
   */
  #kick(): void {
    if (this.#pumping || this.#inFlight >= SYNCS_IN_FLIGHT || this.#queue.length === 0) return;
    if (this.#inFlight > 0 && this.#queue.length < this.#lastBatch) return;
    this.#pumping = true;
    queueMicrotask(() => void this.#pump());
  }

  /**
   * The single writer: one write and one fdatasync per batch; appends made meanwhile form the next batch.
   * Two batches may be syncing at once (a second sync of overwritten blocks nearly doubles what the disk completes
   * here), and batches are acknowledged strictly in file order: none before every earlier one is durable.
   */
  async #pump(): Promise<void> {
    try {
      const batch = this.#queue;
      this.#queue = [];
      if (batch.length === 0) return;
      if (this.#failed) {
        const err = this.#fail(this.#failure);
        for (const p of batch) p.reject(err);
        return;
      }
      let synced: Promise<void>;
      const at: BatchStart = {};
      try {
        ({ synced } = await this.#write(batch, at));
      } catch (e) {
        // Some of this batch may be in the write-ahead file or the log, even whole lines: taken back before anyone hears of it.
        const err = this.#fail(e);
        await this.#unwind(at);
        for (const p of batch) p.reject(err);
        for (const p of this.#queue) p.reject(err);
        this.#queue = [];
        return;
      }
      // Handled now: it may fail while an earlier batch is still syncing, before the chain below reaches it.
      synced.catch(noop);
      this.#inFlight++;
      this.#lastBatch = batch.length;
      this.#settled = this.#settled
        .then(() => synced)
        .then(
          () => this.#acknowledge(batch, at),
          async (e: unknown) => {
            const err = this.#fail(e);
            await this.#unwind(at);
            for (const p of batch) p.reject(err);
          },
        )
        .finally(() => {
          this.#inFlight--;
          this.#kick();
          this.#notifyIdle();
        });
    } finally {
      this.#pumping = false;
      this.#kick();
      this.#notifyIdle();
    }
  }

  /**
   * Writes the batch (the write-ahead file first, then the log: page cache, microseconds) and starts its flush,
   * returned unawaited (in an object: an async function would otherwise wait for it).
   */
  async #write(batch: readonly Pending[], at: BatchStart): Promise<{ synced: Promise<void> }> {
    let text = '';
    for (const p of batch) text += p.line + '\n';
    const bytes = Buffer.from(text, 'utf8');
    const wal = this.#wal;
    if (wal && AuditWal.holds(bytes.length)) {
      if (!wal.fits(bytes.length)) {
        // A new generation starts on the log as every earlier batch left it.
        await this.#settled;
        if (this.#failed) throw this.#failure;
        await this.#rebase(this.#count, this.#head);
      }
      // The write-ahead file first: whatever reaches the log is then also there to restore from.
      at.wal = wal.position;
      at.log = this.#end;
      wal.write(bytes, batch[batch.length - 1]!.hash);
      this.#end += bytes.length; // first: a write that fails half way is then cut back by #unwind
      writeAllSync(this.#fh.fd, bytes);
      return { synced: wal.sync() };
    }
    if (wal) {
      await this.#settled;
      if (this.#failed) throw this.#failure;
      // Both regions are about to be given up: the one before the current must have reached the log first.
      await this.#logSynced;
    }
    at.log = this.#end;
    this.#end += bytes.length;
    writeAllSync(this.#fh.fd, bytes);
    if (!this.#fsync) return { synced: Promise.resolve() };
    if (!wal) return { synced: datasync(this.#fh.fd) };
    // A batch too big for the write-ahead file is made durable in the log itself; the next generation starts after it.
    const last = batch[batch.length - 1]!;
    await this.#syncLog();
    try {
      at.begun = true;
      await wal.begin(this.#ino, { offset: this.#end, count: last.record.seq + 1, head: last.hash });
    } catch (e) {
      // The header may now name a base past this batch, which is about to be cut from the log: the next open would
      // find the log not beginning with it. The log before the batch is durable (synced just now): start there.
      try {
        await wal.begin(this.#ino, { offset: at.log, count: this.#count, head: this.#head });
      } catch {
        await setAside(this.path); // the next open then refuses, saying why, until someone looks
      }
      throw e;
    }
    return { synced: Promise.resolve() };
  }

  #acknowledge(batch: readonly Pending[], at: BatchStart): Promise<void> | undefined {
    // A later sync can succeed after an earlier one failed (the error is reported once): the log stops at the first.
    if (this.#failed) {
      const err = this.#fail(this.#failure);
      return this.#unwind(at).then(() => {
        for (const p of batch) p.reject(err);
      });
    }
    for (const p of batch) {
      this.#count = p.record.seq + 1;
      this.#head = p.hash;
      if (this.#onRecord) {
        try {
          this.#onRecord(p.record);
        } catch {
          // A listener's bug must not turn a durable record into a failed one.
        }
      }
      p.resolve(p.record);
    }
  }

  #notifyIdle(): void {
    if (this.#pumping || this.#inFlight > 0 || this.#queue.length > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Takes a batch that is about to be rejected, and any written after it, back out of the write-ahead file (zeroed
   * and synced: the next open cannot restore it) and then out of the log (cut to where the batch began). If the
   * write-ahead file cannot be cut it is set aside, and the next open refuses to start until someone looks.
   * Never rejects: the batch is rejected either way.
   */
  #unwind(at: BatchStart): Promise<void> {
    this.#unwound = this.#unwound.then(async () => {
      const wal = this.#wal;
      if (wal && at.wal !== undefined && at.wal < wal.position) {
        try {
          await wal.cut(at.wal);
        } catch {
          await setAside(this.path);
        }
      }
      if (this.#ino !== '' && at.log !== undefined && at.log < this.#end) {
        try {
          await this.#fh.truncate(at.log);
          this.#end = at.log;
          await this.#syncLog();
          // A generation begun after a batch too big for the write-ahead file names a base past it: the next open
          // would find the log, cut back, not beginning with it. Begin one again where the batch began.
          if (wal && at.begun) await wal.begin(this.#ino, { offset: at.log, count: this.#count, head: this.#head }).catch(() => setAside(this.path));
        } catch {
          // Nothing more to try: the log is failed, and its tail is checked at the next open.
        }
      }
    });
    return this.#unwound;
  }

  /**
   * Syncs the log. A failure fails the log and sets the write-ahead file aside: Linux reports a writeback error to
   * one sync only, so a later one (this run's, or the next run's at open) succeeds over pages that never reached the
   * disk, and the next open would start a generation over what may be their only copy. The next open refuses until
   * someone compares the two.
   */
  #syncLog(): Promise<void> {
    return datasync(this.#fh.fd).catch(async (e: unknown) => {
      this.#fail(e);
      if (this.#wal) await setAside(this.path);
      throw e;
    });
  }

  /**
   * Starts the write-ahead file's next generation, in its other region, on the log as it stands. That region may be
   * overwritten once the log is durable up to where the current generation began: the sync started when it began,
   * long done by now. The log's sync up to here starts now and runs behind the batches that follow.
   */
  async #rebase(count: number, head: string): Promise<void> {
    await this.#logSynced;
    const base = { offset: this.#end, count, head };
    const synced = this.#syncLog();
    synced.catch(noop); // its failure fails the log at once; awaited at the next generation or at close
    this.#logSynced = synced;
    await this.#wal!.next(this.#ino, base);
  }

  #whenIdle(): Promise<void> {
    if (!this.#pumping && this.#inFlight === 0 && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }
}

function writeFailed(path: string, message: string, cause: unknown): WritError {
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  return new WritError('WRIT_AUDIT_WRITE_FAILED', `${message}${typeof errno === 'string' ? ` (${errno})` : ''}: ${path}`, {
    cause,
  });
}

function invalidEntry(why: string): WritError {
  return new WritError('WRIT_AUDIT_WRITE_FAILED', `audit entry rejected: ${why}`);
}

function writeAllSync(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) {
    const written = writeSync(fd, buf, off, buf.length - off, null);
    if (written <= 0) throw new Error('audit log: write made no progress');
    off += written;
  }
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
}

async function syncDir(dir: string): Promise<void> {
  const d = await openFile(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** Moves the write-ahead file aside (`walSetAsidePath`): the next open refuses while it is there. Never rejects. */
async function setAside(path: string): Promise<void> {
  try {
    await rename(walPath(path), walSetAsidePath(path));
    await syncDir(dirname(path));
  } catch {
    // The rename alone already keeps the next open from replaying; nothing more can be done without the disk.
  }
}

/** A sync of the log at open (before its first generation, or after a replay): if it fails, the file is set aside. */
async function asideOnFailure(path: string, sync: () => Promise<void>): Promise<void> {
  try {
    await sync();
  } catch (e) {
    await setAside(path);
    throw e;
  }
}

/** A write-ahead file set aside (setAside) may hold rejected records: never replayed, never dropped unseen. */
async function refuseSetAside(path: string): Promise<void> {
  const aside = walSetAsidePath(path);
  const there = await access(aside).then(
    () => true,
    () => false,
  );
  if (!there) return;
  throw new WritError(
    'WRIT_AUDIT_CORRUPT',
    `audit log ${path}: its write-ahead file was set aside as ${aside} when a write or sync failed (a batch reported as failed that could not be cut, ` +
      "or the log's own sync): it may hold acknowledged records the log lost. Compare it with the log (`writ audit wal`), then remove it, or rename it back to restore what the log lacks, to open the log",
  );
}

/**
 * A write-ahead file whose header names a prefix the log does not begin with. Nothing of it was restored, and it is
 * left as it is: it may hold records the log it was written for lost.
 */
function walMismatch(path: string, base: WalBase): WritError {
  const file = walPath(path);
  return new WritError(
    'WRIT_AUDIT_CORRUPT',
    `audit log ${path}: its write-ahead file ${file} was written for a log whose first ${base.count} records (${base.offset} bytes) this one does not begin with: ` +
      `it is another log's, or this log was replaced or moved aside. Nothing was restored from it. Move ${file} aside (keep it with the log it came from: it may hold records that log lost; \`writ audit wal --file LOG --wal FILE\` compares the two) to open this log`,
    { data: { count: base.count, offset: base.offset } },
  );
}

/** A log that lost records its write-ahead file holds and has records of its own after them: neither is touched. */
function walHole(path: string, seq: number): WritError {
  const file = walPath(path);
  return new WritError(
    'WRIT_AUDIT_CORRUPT',
    `audit log ${path}: it lost records from seq ${seq} on that its write-ahead file ${file} holds, and has records after them that the write-ahead file does not: ` +
      `it was written to by something else. Nothing was restored. Run \`writ audit verify\` on it, and keep both files as evidence; move them aside to start a new log`,
    { data: { seq } },
  );
}

/** Whether the log's first `base.offset` bytes are `base.count` whole records, the last of them hashing to `base.head`. */
async function holdsPrefix(fh: FileHandle, size: number, base: WalBase, path: string): Promise<boolean> {
  if (base.offset > size) return false;
  if (base.offset === 0) return base.count === 0 && base.head === ZERO_HASH;
  const prefix = await readTail(fh, base.offset, path).catch(() => undefined);
  return prefix !== undefined && prefix.torn === 0 && prefix.count === base.count && prefix.head === base.head;
}

function corrupt(path: string, offset: number, why: string): WritError {
  return new WritError('WRIT_AUDIT_CORRUPT', `audit log ${path}: ${why} (line at byte offset ${offset})`, {
    data: { offset },
  });
}

/**
 * Index of the last '\n' before `end`, reading backwards in chunks; -1 if the file start comes first.
 * Gives up (null) after MAX_LINE_BYTES: no record is that long.
 */
async function lastNewline(fh: FileHandle, end: number): Promise<number | null> {
  const stop = Math.max(0, end - MAX_LINE_BYTES - 1);
  const buf = Buffer.allocUnsafe(TAIL_CHUNK);
  for (let hi = end; hi > stop; ) {
    const lo = Math.max(stop, hi - TAIL_CHUNK);
    const { bytesRead } = await fh.read(buf, 0, hi - lo, lo);
    const i = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (i !== -1) return lo + i;
    hi = lo;
  }
  return stop === 0 ? -1 : null;
}

/** Where the run of zero bytes that ends the file's first `size` bytes begins (`size` when it ends in none). */
async function zerosFrom(fh: FileHandle, size: number): Promise<number> {
  const buf = Buffer.allocUnsafe(TAIL_CHUNK);
  for (let hi = size; hi > 0; ) {
    const lo = Math.max(0, hi - TAIL_CHUNK);
    const { bytesRead } = await fh.read(buf, 0, hi - lo, lo);
    for (let i = bytesRead - 1; i >= 0; i--) if (buf[i] !== 0) return lo + i + 1;
    hi = lo;
  }
  return 0;
}

/**
 * Whether a parsed line is a checkpoint that counts: signed by one of `keys` over its own count and head (any
 * checkpoint line when there are no keys). Its place in the chain is `writ audit verify`'s to check.
 */
function checkpointCheck(keys: ReadonlyMap<string, KeyObject> | undefined, origin: string): (r: unknown) => boolean {
  return (r) => {
    const c = r as { event?: unknown; seq?: unknown; prev?: unknown; checkpoint?: { count?: unknown; head?: unknown; kid?: unknown; sig?: unknown } } | null;
    if (c?.event !== 'checkpoint') return false;
    if (keys === undefined) return true;
    const cp = c.checkpoint;
    if (typeof cp?.kid !== 'string' || typeof cp.sig !== 'string' || typeof cp.head !== 'string' || typeof cp.count !== 'number' || cp.count !== c.seq || cp.head !== c.prev) return false;
    return checkpointSigned(keys.get(cp.kid), origin, { count: cp.count, head: cp.head, sig: cp.sig });
  };
}

/**
 * Records after the last checkpoint, counted back from `end` (just after the last line's newline) through whole
 * lines: at most `limit + 1`, where it stops looking. A line that does not parse counts as unsigned.
 */
async function unsignedRecords(fh: FileHandle, end: number, limit: number, path: string, signed: (r: unknown) => boolean): Promise<number> {
  let n = 0;
  let carry = Buffer.alloc(0); // the first, partial line of what was read last: it starts in an earlier chunk
  for (let hi = end; hi > 0; ) {
    const lo = Math.max(0, hi - 4 * TAIL_CHUNK);
    const chunk = Buffer.allocUnsafe(hi - lo);
    for (let off = 0; off < chunk.length; ) {
      const { bytesRead } = await fh.read(chunk, off, chunk.length - off, lo + off);
      if (bytesRead <= 0) throw corrupt(path, lo + off, 'the file ended while reading it');
      off += bytesRead;
    }
    const data = carry.length > 0 ? Buffer.concat([chunk, carry]) : chunk;
    let stop = data.length; // data[stop - 1] ends the line being looked at
    for (;;) {
      const nl = stop >= 2 ? data.lastIndexOf(0x0a, stop - 2) : -1;
      if (nl === -1 && lo > 0) break;
      let record: unknown;
      try {
        record = JSON.parse(data.toString('utf8', nl + 1, stop - 1));
      } catch {
        record = undefined;
      }
      if (signed(record)) return n;
      if (++n > limit || nl === -1) return n;
      stop = nl + 1;
    }
    carry = data.subarray(0, stop);
    if (carry.length > MAX_LINE_BYTES) throw corrupt(path, lo, 'a line is too long');
    hi = lo;
  }
  return n;
}

/** Finds the last complete line without reading the rest of the file. */
async function readTail(fh: FileHandle, size: number, path: string): Promise<Tail> {
  const empty: Tail = { end: 0, torn: 0, count: 0, head: ZERO_HASH, signed: true };
  if (size === 0) return empty;
  // A run of zeros at the end (pages a power cut kept from the disk while the file's size held) is never a record:
  // the line end is looked for before it, and the zeros go with the torn line.
  const nl = (await lastNewline(fh, size)) ?? (await lastNewline(fh, await zerosFrom(fh, size)));
  if (nl === null) throw corrupt(path, Math.max(0, size - MAX_LINE_BYTES), 'no line end near the end of the file');
  if (nl === -1) return { ...empty, torn: size }; // one torn line and nothing else
  const before = await lastNewline(fh, nl);
  if (before === null) throw corrupt(path, Math.max(0, nl - MAX_LINE_BYTES), 'last line is too long');
  const start = before + 1;
  const bytes = Buffer.alloc(nl - start);
  await fh.read(bytes, 0, bytes.length, start);
  // No `cause`: JSON.parse's message quotes the line, and the content must not leak into errors.
  let parsed: ReturnType<typeof AuditRecord.safeParse> | undefined;
  try {
    parsed = AuditRecord.safeParse(JSON.parse(bytes.toString('utf8')));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) throw corrupt(path, start, 'last line is not an audit record');
  const record = parsed.data;
  return {
    end: nl + 1,
    torn: size - (nl + 1),
    count: record.seq + 1,
    head: sha256Hex(bytes),
    signed: record.event === 'checkpoint',
  };
}

/**
 * Restores what the write-ahead file holds and the log lost (a power cut before the log reached the disk):
 * keeps the log up to where it stops matching the write-ahead records, writes the rest of them after it.
 * The file's base is this log's prefix (`holdsPrefix`, checked first). Records after the write-ahead file's end
 * that continue its chain, or follow a lost page with higher sequence numbers, are a batch never acknowledged, and
 * are cut (counted in `cut`). Undefined when nothing acknowledged was lost and there is no hole, or when the log
 * holds a record of its own beyond what matched and no hole before it: then nothing is cut on a guess. Throws
 * (`walHole`, nothing touched) when a record of the log's own follows a hole the write-ahead file could fill.
 */
async function replay(fh: FileHandle, size: number, wal: WalRecords, path: string): Promise<Tail | undefined> {
  const { base } = wal;
  const rest = Buffer.alloc(size - base.offset);
  for (let off = 0; off < rest.length; ) {
    const { bytesRead } = await fh.read(rest, off, rest.length - off, base.offset + off);
    if (bytesRead <= 0) break;
    off += bytesRead;
  }
  // Whole write-ahead lines the log holds byte for byte.
  let kept = 0;
  for (const end of wal.ends) {
    if (end > rest.length || rest.compare(wal.bytes, kept, end, kept, end) !== 0) break;
    kept = end;
  }
  const lost = kept < wal.bytes.length;
  // What follows in the log may be zeros, a torn line, the same records again, or records that continue their chain
  // past the write-ahead file's end: a batch whose log write reached the disk and whose write-ahead copy did not
  // (never acknowledged: it goes, as a torn line would). A record of its own is not ours to cut.
  const known = new Set(wal.ends.map((end, i) => wal.bytes.toString('latin1', i === 0 ? 0 : wal.ends[i - 1], end - 1)));
  const after = rest.subarray(kept);
  let seq = wal.count;
  let head = wal.head;
  let gap = false;
  /** Right after a gap: the next record may jump past what was seen (the ones between were lost); later ones chain. */
  let jump = false;
  let cut = 0;
  for (let start = 0, nl = after.indexOf(0x0a); nl !== -1; start = nl + 1, nl = after.indexOf(0x0a, start)) {
    const line = after.subarray(start, nl);
    if (known.has(line.toString('latin1'))) {
      jump = false; // a lost first line of the batch in flight makes a gap of its own
      continue;
    }
    let record: AuditRecord | undefined;
    try {
      if (!line.includes(0)) {
        const parsed = AuditRecord.safeParse(JSON.parse(line.toString('utf8')));
        if (parsed.success) record = parsed.data;
      }
    } catch {
      record = undefined;
    }
    if (record === undefined) {
      // With nothing lost, only a page the disk never got (zeros) is cut; other text is the tail check's to refuse.
      if (!lost && !line.includes(0)) return undefined;
      gap = true;
      jump = true;
      continue;
    }
    // Right after a gap the in-flight batch's next line cannot be chained to (the one before is gone): a record
    // past what has been seen is still that batch's, and the batch's lines after it chain on from it.
    if ((record.seq === seq && record.prev === head) || (jump && record.seq > seq)) {
      seq = record.seq + 1;
      head = sha256Hex(line);
      jump = false;
      cut++;
      continue;
    }
    if (!lost) return undefined;
    // The log's own record after lost ones: restoring would cut it, opening as it is would keep a hole.
    if (gap) throw walHole(path, base.count + wal.ends.findIndex((end) => end > kept));
    return undefined;
  }
  // An unterminated tail longer than any record (pages of an unacknowledged batch lost, the file's size kept) is
  // more than the tail check reads back for a line end, and it would refuse the log: past the write-ahead file's
  // end, it was never acknowledged, and it goes as a torn line does.
  if (!lost && !gap && after.length - (after.lastIndexOf(0x0a) + 1) > MAX_LINE_BYTES) gap = true;
  if (!lost && !gap) return undefined; // nothing lost, no hole: the ordinary tail check handles the rest
  await fh.truncate(base.offset + kept);
  const missing = wal.bytes.subarray(kept);
  writeAllSync(fh.fd, missing);
  // A failed write above leaves the write-ahead file to replay from at the next open; a failed sync may not (it is
  // reported once), so that sets the file aside.
  await asideOnFailure(path, () => datasync(fh.fd));
  return {
    end: base.offset + wal.bytes.length,
    torn: size - (base.offset + kept),
    replayed: wal.ends.filter((end) => end > kept).length,
    cut,
    count: wal.count,
    head: wal.head,
    signed: wal.signed,
  };
}
