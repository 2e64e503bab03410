// The audit log's write-ahead file (`audit.jsonl.wal`): each batch of records is written here and to the log, and
// only this file is fdatasync-ed per batch. It is overwritten in place inside blocks written once, so the sync
// flushes data alone; an append to the log also changes its size, which makes every fdatasync commit the
// filesystem journal (measured 1.3-2.6x slower per batch on ext4 here). The log itself stays plain JSON Lines
// that grows as records arrive (`tail -f`, jq, shippers and every reader in this project see no difference);
// it is fdatasync-ed in the background each time a generation starts, at close, and when the log is opened.
//
// Layout: two regions of WAL_REGION_BYTES, used in turn. Each begins with a header block naming the log's prefix
// when its generation began (its inode, byte length, record count and head hash) and the generation's number, then
// holds the generation's records as the log's own lines, each batch followed by a seal naming its last line's hash
// (the chain's `prev` vouches for every other line), then stale bytes or zeros. A full region hands over to the
// other at once: the new header goes down with one small sync, and the log's own sync runs behind it, so minting
// does not wait for the log (with one region it waited 5-7 ms at each wrap, about once a second under load). A
// region is overwritten only once the log is durable up to where the generation after it began, so the two together
// always hold what the log may have lost: after a crash, the records that chain on from the newest generation's
// base, and if the log does not reach that base, first those of the generation before, which chain on to it. The
// first line that does not chain (torn, zeros, or an older generation's record), or a batch without its seal, ends a
// generation. A log that does not begin with a base is not the one this file was written for, and is not opened
// beside it (audit/log.ts). Version 1 (one region, no generation number) and 2 files (no seals) are still read;
// Writ before version 3 does not read a version 3 file (it starts a new generation over it: downgrade after a clean
// stop, which leaves the log holding every record).
import { closeSync, constants as fsc, fdatasync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { AuditRecord } from '../protocol';

/**
 * Each batch ends with a seal, `{"head":"<sha-256 of its last line>"}` (version 3 on): the chain's `prev` vouches
 * for every line of a batch but its last, which a power cut may leave part new and part an older generation's
 * bytes (regions are overwritten in place) and still parse; the seal vouches for it. A batch without its seal was
 * never acknowledged and is not restored.
 */
const SEAL_BYTES = '{"head":""}\n'.length + 64;
const SEAL = /^\{"head":"([0-9a-f]{64})"\}$/;

/** The header block; records start after it. One sector, so a header write is never torn in half. */
export const WAL_HEADER_BYTES = 512;
/** What a new generation writes at its region's start: the header, then zeros. */
const WAL_FIRST_PAGE_BYTES = 4096;
/** A region grows in steps of this many zeroed bytes up to WAL_REGION_BYTES; a batch that does not fit starts the other. */
const WAL_CHUNK_BYTES = 256 * 1024;
export const WAL_REGION_BYTES = 4 * 1024 * 1024;
const REGIONS = 2;

/** The log's durable prefix at a generation's start. */
export interface WalBase {
  /** Byte length of the log. */
  offset: number;
  /** Records in it, and the hash of its last line (zeros when empty). */
  count: number;
  head: string;
}

interface WalHeader extends WalBase {
  /** The log's inode number, in decimal: exact however large (a bigint stat). */
  ino: string;
  /** The generation: each new one is numbered one past the highest in the file (a version 1 header is 0). */
  gen: number;
  /** Version 3: each batch ends with its seal. */
  sealed: boolean;
}

/** Records found in the write-ahead file that chain on from its base. */
export interface WalRecords {
  /** The inode of the log the header names, in decimal. */
  ino: string;
  base: WalBase;
  /** The lines, each with its newline, exactly as written. */
  bytes: Buffer;
  /** Byte offset in `bytes` after each line. */
  ends: number[];
  count: number;
  head: string;
  /** Whether the last record is a checkpoint. */
  signed: boolean;
}

/** What a write-ahead file holds: its newest generation, and the one before it if its region still has it. */
export interface WalFound {
  newest: WalRecords;
  older?: WalRecords;
}

export function walPath(logPath: string): string {
  return `${logPath}.wal`;
}

/**
 * Where the write-ahead file goes when a rejected batch could not be cut from it: it may hold records reported as
 * failed, so the log refuses to open while it is there rather than replay them (or lose the acknowledged ones).
 */
export function walSetAsidePath(logPath: string): string {
  return `${logPath}.wal.rejected`;
}

export class AuditWal {
  /** The region the current generation is in, and its number. */
  #region = 0;
  #gen = 0;
  /** Where the next batch goes. */
  #pos = WAL_HEADER_BYTES;
  /** Bytes of the file already written (zeros or data): overwriting inside it changes no metadata. */
  #allocated: number;

  private constructor(
    readonly fd: number,
    allocated: number,
  ) {
    this.#allocated = allocated;
  }

  /** Opens or creates (0600) the file; nothing is written until `begin`. */
  static open(path: string): { wal: AuditWal; created: boolean } {
    let created = true;
    let fd: number;
    try {
      fd = openSync(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      created = false;
      fd = openSync(path, fsc.O_RDWR, 0o600);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('audit write-ahead file is not a regular file');
      return { wal: new AuditWal(fd, st.size), created };
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /**
   * The newest generation whose header was written whole, its records that chain on from its base, and the
   * generation before it if the other region holds it; undefined if no header was ever written whole. Whether a
   * generation is this log's is the caller's to check (the inode, and the base against the log). The next `begin`
   * numbers its generation past every one found here.
   */
  recover(hash: (line: Uint8Array) => string): WalFound | undefined {
    const found = generations(readRegions(this.fd, this.#allocated), hash);
    if (found.length === 0) return undefined;
    this.#gen = Math.max(...found.map((g) => g.gen));
    const { newest, older } = newestGenerations(found)!;
    return older ? { newest: newest.records, older: older.records } : { newest: newest.records };
  }

  /**
   * Starts a generation on the log's durable prefix `base`, in the first region (at open, or after the log alone
   * took a batch too big for this file): the header is on disk before any record follows it.
   */
  begin(ino: string, base: WalBase): Promise<void> {
    return this.#start(0, ino, base);
  }

  /**
   * Starts the next generation in the other region, on `base`: everything written so far. The caller has made the
   * log durable up to where the current generation began (the other region's records are then in the log), and
   * starts the log's sync up to `base` now, which must end before the next `next`.
   */
  next(ino: string, base: WalBase): Promise<void> {
    return this.#start((this.#region + 1) % REGIONS, ino, base);
  }

  #start(region: number, ino: string, base: WalBase): Promise<void> {
    const gen = this.#gen + 1;
    const text = `${JSON.stringify({ wal: 3, gen, ino, offset: base.offset, count: base.count, head: base.head })}\n`;
    // Zeros after the header, in the same page and write: the first line after it can then never be a stale one,
    // which would chain on from a base of 0 (a removed log's records after a new log's first header).
    const block = Buffer.alloc(WAL_FIRST_PAGE_BYTES);
    block.write(text, 'utf8');
    const start = region * WAL_REGION_BYTES;
    if (start > this.#allocated) writeAt(this.fd, Buffer.alloc(start - this.#allocated), this.#allocated);
    writeAt(this.fd, block, start);
    this.#allocated = Math.max(this.#allocated, start + WAL_FIRST_PAGE_BYTES);
    this.#region = region;
    this.#gen = gen;
    this.#pos = start + WAL_HEADER_BYTES;
    return datasync(this.fd);
  }

  /** True if a batch of `length` bytes fits before its region's end; if not, the caller starts the next generation. */
  fits(length: number): boolean {
    return this.#pos + length + SEAL_BYTES <= (this.#region + 1) * WAL_REGION_BYTES;
  }

  /** True if a batch of `length` bytes could ever fit (else it goes to the log alone, synced there). */
  static holds(length: number): boolean {
    return WAL_HEADER_BYTES + length + SEAL_BYTES <= WAL_REGION_BYTES;
  }

  /** Where the next batch goes: `cut(position)` takes back every batch written from here on. */
  get position(): number {
    return this.#pos;
  }

  /**
   * Writes a batch after the last, sealed with the hash of its last line (`head`); zeroes ahead first when the file
   * must grow (that sync then commits its size).
   */
  write(lines: Buffer, head: string): void {
    const batch = Buffer.concat([lines, Buffer.from(`{"head":"${head}"}\n`, 'latin1')], lines.length + SEAL_BYTES);
    const end = this.#pos + batch.length;
    if (end > this.#allocated) {
      const target = Math.min((this.#region + 1) * WAL_REGION_BYTES, Math.ceil(end / WAL_CHUNK_BYTES) * WAL_CHUNK_BYTES);
      writeAt(this.fd, Buffer.alloc(target - this.#allocated), this.#allocated);
      this.#allocated = target;
    }
    // Moved first: a write that fails half way still leaves its bytes inside what `cut` zeroes.
    const start = this.#pos;
    this.#pos = end;
    writeAt(this.fd, batch, start);
  }

  /**
   * Zeroes what was written from `from` on (batches that were not acknowledged) and syncs it: recovery stops at a
   * line with zeros, so none of them can be restored. Only on a failure path; rejects if the write or sync fails.
   */
  cut(from: number): Promise<void> {
    if (from < this.#pos) writeAt(this.fd, Buffer.alloc(this.#pos - from), from);
    this.#pos = Math.min(from, this.#pos);
    return datasync(this.fd);
  }

  sync(): Promise<void> {
    return datasync(this.fd);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * One record stream from two generations: the older's records, which must end where the newer began (its base),
 * then the newer's. For a log that lost the tail the newer generation began on: the older one's base is then the
 * prefix to check against the log. Undefined if the older does not lead on to the newer.
 */
export function joinGenerations(older: WalRecords, newer: WalRecords): WalRecords | undefined {
  const leads = older.ino === newer.ino && older.count === newer.base.count && older.head === newer.base.head && older.base.offset + older.bytes.length === newer.base.offset;
  if (!leads) return undefined;
  const cut = older.bytes.length;
  return {
    ino: newer.ino,
    base: older.base,
    bytes: Buffer.concat([older.bytes, newer.bytes]),
    ends: [...older.ends, ...newer.ends.map((end) => end + cut)],
    count: newer.count,
    head: newer.head,
    signed: newer.ends.length > 0 ? newer.signed : older.signed,
  };
}

export interface Generation {
  /** Its number (0: a version 1 header). */
  gen: number;
  /** The region it is in (0 or 1), and whether its batches are sealed (version 3). */
  region: number;
  sealed: boolean;
  records: WalRecords;
}

/**
 * Which of the generations found is the newest, and the one before it if the other region holds it (numbered one
 * less): what a start restores from. An older Writ run after this one rewrites the first region only as far as it
 * knows, and numbers past only the headers it can read: a version 1 header in the first region, or a version 2
 * one there beside a version 3 one in the second (version 3 always begins in the first region, so a version 2 run
 * came after it), is the newest whatever number the second region's stale header has.
 */
export function newestGenerations(found: readonly Generation[]): { newest: Generation; older?: Generation } | undefined {
  if (found.length === 0) return undefined;
  const first = found[0]!;
  if (first.region === 0 && (first.gen === 0 || (!first.sealed && found.some((g) => g.region === 1 && g.sealed)))) return { newest: first };
  const [newest, older] = [...found].sort((x, y) => y.gen - x.gen) as [Generation, Generation | undefined];
  return older && older.gen === newest.gen - 1 ? { newest, older } : { newest };
}

/**
 * Every generation a write-ahead file holds, read without changing it (for `writ audit wal`, which compares a file
 * set aside with its log): in region order, each with the records that chain on from its base. A file that is not
 * a regular file is refused.
 */
export function readWalFile(path: string, hash: (line: Uint8Array) => string): { generations: Generation[]; bytes: Buffer } {
  // Non-blocking: a FIFO put in its place would otherwise hold the open (and the event loop) until a writer came.
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EISDIR' });
    const bytes = readRegions(fd, st.size);
    return { generations: generations(bytes, hash), bytes };
  } finally {
    closeSync(fd);
  }
}

/**
 * Every whole line in the file's regions that is an audit record, chained or not (stale lines after a generation's
 * end, records after a page lost from the file, a region whose header was lost): `writ audit wal` looks each up
 * in the log before it says removing the file loses nothing.
 */
export function anyRecords(bytes: Buffer): { seq: number; line: Buffer }[] {
  const out: { seq: number; line: Buffer }[] = [];
  for (let start = 0, nl = bytes.indexOf(0x0a); nl !== -1; start = nl + 1, nl = bytes.indexOf(0x0a, start)) {
    // After zeros (a lost page, or the zeros a new generation writes), a line may begin right where they end.
    const whole = bytes.subarray(start, nl);
    const line = whole.subarray(whole.lastIndexOf(0) + 1);
    if (line.length === 0 || line[0] !== 0x7b) continue;
    try {
      const parsed = AuditRecord.safeParse(JSON.parse(line.toString('utf8')));
      if (parsed.success) out.push({ seq: parsed.data.seq, line });
    } catch {
      // not a record
    }
  }
  return out;
}

/** The file's first `size` bytes, up to its two regions. */
function readRegions(fd: number, allocated: number): Buffer {
  const size = Math.min(allocated, REGIONS * WAL_REGION_BYTES);
  const buf = Buffer.alloc(Math.max(0, size));
  for (let off = 0; off < size; ) {
    const n = readSync(fd, buf, off, size - off, off);
    if (n <= 0) return buf.subarray(0, off);
    off += n;
  }
  return buf;
}

/** The generations whose header was written whole, in region order. */
function generations(buf: Buffer, hash: (line: Uint8Array) => string): Generation[] {
  const found: Generation[] = [];
  for (let r = 0; r < REGIONS; r++) {
    const start = r * WAL_REGION_BYTES;
    if (start + WAL_HEADER_BYTES > buf.length) break;
    const region = buf.subarray(start, Math.min(buf.length, start + WAL_REGION_BYTES));
    const header = parseHeader(region.subarray(0, WAL_HEADER_BYTES));
    // A version 1 file has one region: what lies past it is not a header.
    if (header === undefined || (r > 0 && header.gen === 0)) continue;
    found.push({ ...generation(region, header, hash), region: r, sealed: header.sealed });
  }
  return found;
}

/**
 * A region's records that chain on from its header's base; in a sealed (version 3) region only whole batches, each
 * up to a seal naming its last line's hash. The records' lines come out as the log holds them (no seals).
 */
function generation(region: Buffer, header: WalHeader, hash: (line: Uint8Array) => string): Omit<Generation, 'region' | 'sealed'> {
  const { ino, gen, sealed, ...base } = header;
  const lines: Buffer[] = [];
  const ends: number[] = [];
  let length = 0;
  let count = header.count;
  let head = header.head;
  let signed = false;
  // The batch read since the last seal (sealed regions): taken only when its seal is found.
  let batch: { line: Buffer; checkpoint: boolean }[] = [];
  let batchHead = head;
  const take = (line: Buffer, checkpoint: boolean): void => {
    lines.push(line);
    length += line.length + 1;
    ends.push(length);
    count++;
    signed = checkpoint;
  };
  let start = WAL_HEADER_BYTES;
  for (let nl = region.indexOf(0x0a, start); nl !== -1; start = nl + 1, nl = region.indexOf(0x0a, start)) {
    const line = region.subarray(start, nl);
    if (line.includes(0)) break;
    if (sealed) {
      const seal = SEAL.exec(line.toString('latin1'));
      if (seal) {
        if (batch.length === 0 || seal[1] !== batchHead) break;
        for (const b of batch) take(b.line, b.checkpoint);
        head = batchHead;
        batch = [];
        continue;
      }
    }
    let record: AuditRecord;
    try {
      const parsed = AuditRecord.safeParse(JSON.parse(line.toString('utf8')));
      if (!parsed.success) break;
      record = parsed.data;
    } catch {
      break;
    }
    if (!sealed) {
      if (record.seq !== count || record.prev !== head) break;
      take(line, record.event === 'checkpoint');
      head = hash(line);
      continue;
    }
    if (record.seq !== count + batch.length || record.prev !== batchHead) break;
    batch.push({ line, checkpoint: record.event === 'checkpoint' });
    batchHead = hash(line);
  }
  // Each line with its newline, exactly as written (one copy, at recovery only).
  const bytes = Buffer.alloc(length);
  let at = 0;
  for (const line of lines) {
    line.copy(bytes, at);
    bytes[at + line.length] = 0x0a;
    at += line.length + 1;
  }
  return { gen, records: { ino, base, bytes, ends, count, head, signed } };
}

function parseHeader(block: Buffer): WalHeader | undefined {
  const nl = block.indexOf(0x0a);
  if (nl === -1) return undefined;
  try {
    const h = JSON.parse(block.subarray(0, nl).toString('utf8')) as Record<string, unknown>;
    const int = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
    // Version 1 (one region) has no generation number: it is generation 0.
    const gen = h.wal === 1 ? 0 : (h.wal === 2 || h.wal === 3) && int(h.gen) && (h.gen as number) > 0 ? (h.gen as number) : undefined;
    if (gen === undefined || typeof h.ino !== 'string' || !/^\d{1,20}$/.test(h.ino) || !int(h.offset) || !int(h.count)) return undefined;
    if (typeof h.head !== 'string' || !/^[0-9a-f]{64}$/.test(h.head)) return undefined;
    return { ino: h.ino, gen, sealed: h.wal === 3, offset: h.offset, count: h.count, head: h.head };
  } catch {
    return undefined;
  }
}

function writeAt(fd: number, buf: Buffer, position: number): void {
  for (let off = 0; off < buf.length; ) {
    const written = writeSync(fd, buf, off, buf.length - off, position + off);
    if (written <= 0) throw new Error('audit write-ahead file: write made no progress');
    off += written;
  }
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
}
