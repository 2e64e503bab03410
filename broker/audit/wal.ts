// The audit log's write-ahead file (`audit.jsonl.wal`): each batch of records is written here and to the log, and
// only this file is fdatasync-ed per batch. It is overwritten in place inside blocks written once, so the sync
// flushes data alone; an append to the log also changes its size, which makes every fdatasync commit the
// filesystem journal (measured 1.3-2.6x slower per batch on ext4 here). The log itself stays plain JSON Lines
// that grows as records arrive (`tail -f`, jq, shippers and every reader in this project see no difference);
// it is fdatasync-ed when this file wraps, at close, and when the log is opened.
//
// Layout: a header block naming the log's durable prefix when this generation began (its inode, byte length,
// record count and head hash), then the generation's records as the log's own lines, then stale bytes or zeros.
// After a crash the records that chain on from that prefix are the ones the log may have lost; the first line
// that does not chain (torn, zeros, or an older generation's record) ends them. A log that does not begin with that
// prefix is not the one this file was written for, and is not opened beside it (audit/log.ts).
import { closeSync, constants as fsc, fdatasync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { AuditRecord } from '../protocol';

/** The header block; records start after it. One sector, so a header write is never torn in half. */
export const WAL_HEADER_BYTES = 512;
/** The file grows in steps of this many zeroed bytes up to WAL_MAX_BYTES, then wraps. */
const WAL_CHUNK_BYTES = 256 * 1024;
export const WAL_MAX_BYTES = 4 * 1024 * 1024;

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
   * The header of the last generation and its records that chain on from its base; undefined if no header was ever
   * written whole. Whether it is this log's is the caller's to check (the inode, and the base against the log).
   */
  recover(hash: (line: Uint8Array) => string): WalRecords | undefined {
    const size = Math.min(this.#allocated, WAL_MAX_BYTES);
    if (size < WAL_HEADER_BYTES) return undefined;
    const buf = Buffer.alloc(size);
    for (let off = 0; off < size; ) {
      const n = readSync(this.fd, buf, off, size - off, off);
      if (n <= 0) break;
      off += n;
    }
    const header = parseHeader(buf.subarray(0, WAL_HEADER_BYTES));
    if (header === undefined) return undefined;
    const ends: number[] = [];
    let count = header.count;
    let head = header.head;
    let signed = false;
    let start = WAL_HEADER_BYTES;
    for (let nl = buf.indexOf(0x0a, start); nl !== -1; nl = buf.indexOf(0x0a, start)) {
      const line = buf.subarray(start, nl);
      if (line.includes(0)) break;
      let record: AuditRecord;
      try {
        const parsed = AuditRecord.safeParse(JSON.parse(line.toString('utf8')));
        if (!parsed.success) break;
        record = parsed.data;
      } catch {
        break;
      }
      if (record.seq !== count || record.prev !== head) break;
      count++;
      head = hash(line);
      signed = record.event === 'checkpoint';
      ends.push(nl + 1 - WAL_HEADER_BYTES);
      start = nl + 1;
    }
    const { ino, ...base } = header;
    return { ino, base, bytes: buf.subarray(WAL_HEADER_BYTES, start), ends, count, head, signed };
  }

  /** Starts a generation on the log's durable prefix `base`: the header is on disk before any record follows it. */
  begin(ino: string, base: WalBase): Promise<void> {
    const text = `${JSON.stringify({ wal: 1, ino, offset: base.offset, count: base.count, head: base.head })}\n`;
    const block = Buffer.alloc(WAL_HEADER_BYTES);
    block.write(text, 'utf8');
    writeAt(this.fd, block, 0);
    this.#allocated = Math.max(this.#allocated, WAL_HEADER_BYTES);
    this.#pos = WAL_HEADER_BYTES;
    return datasync(this.fd);
  }

  /** True if a batch of `length` bytes fits before the file's end; if not, the caller starts a new generation. */
  fits(length: number): boolean {
    return this.#pos + length <= WAL_MAX_BYTES;
  }

  /** True if a batch of `length` bytes could ever fit (else it goes to the log alone, synced there). */
  static holds(length: number): boolean {
    return WAL_HEADER_BYTES + length <= WAL_MAX_BYTES;
  }

  /** Where the next batch goes: `cut(position)` takes back every batch written from here on. */
  get position(): number {
    return this.#pos;
  }

  /** Writes a batch after the last; zeroes ahead first when the file must grow (that sync then commits its size). */
  write(batch: Buffer): void {
    const end = this.#pos + batch.length;
    if (end > this.#allocated) {
      const target = Math.min(WAL_MAX_BYTES, Math.ceil(end / WAL_CHUNK_BYTES) * WAL_CHUNK_BYTES);
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

function parseHeader(block: Buffer): WalHeader | undefined {
  const nl = block.indexOf(0x0a);
  if (nl === -1) return undefined;
  try {
    const h = JSON.parse(block.subarray(0, nl).toString('utf8')) as Record<string, unknown>;
    const int = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
    if (h.wal !== 1 || typeof h.ino !== 'string' || !/^\d{1,20}$/.test(h.ino) || !int(h.offset) || !int(h.count)) return undefined;
    if (typeof h.head !== 'string' || !/^[0-9a-f]{64}$/.test(h.head)) return undefined;
    return { ino: h.ino, offset: h.offset, count: h.count, head: h.head };
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
