// A verifier's reader of the broker's revocation journal (broker/core/journal.ts): at each check it reads what
// the broker has appended since the last one, so a token revoked a moment ago is refused even while the push of
// that revocation still waits for this process to be woken. One pread when nothing is new.
//
// It only ever adds revocations: a line that does not parse is skipped (its push, read by the strict path, fails
// closed), and a journal that goes away, is cut short or cannot be read leaves the verifier with the push alone.
import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs';
import { REVOCATION_JOURNAL_MAX_BYTES, isRecord, parseRevocationEvent } from '../protocol';
import type { RevocationEvent, RevocationJournalFile } from '../protocol';
import { currentUid, untrustedReason } from '../paths';

/** Bytes read at once; a line longer than this (the broker writes none) ends reading. */
const CHUNK = 64 * 1024;
/**
 * The most read from one file: twice what the broker lets one grow to before it continues in another. A file
 * past it is no journal of the broker's, and is let go rather than read on (however large it is).
 */
const MAX_FILE_BYTES = 2 * REVOCATION_JOURNAL_MAX_BYTES;
/**
 * Files followed in one read: the broker keeps the file before its current one, so a reader that still holds
 * the one before that (read up to its `next` line) needs two.
 */
const MAX_FOLLOWS = 2;

export class JournalReader {
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  /** The start of a line whose newline is not written yet. */
  private partial: Buffer | undefined;
  private fd: number | undefined;
  private offset: number;
  /** When the file's link count was last looked at (Date.now). */
  private linksChecked = 0;

  private constructor(
    fd: number,
    offset: number,
    /** The inode of the file being read: a `next` naming it is skipped. */
    private ino: string,
  ) {
    this.fd = fd;
    this.offset = offset;
  }

  /**
   * The journal the broker named, from `offset`, or undefined when it is not the file named (another inode), not
   * this user's, writable by others, or not there to open: the verifier then has the push alone.
   */
  static open(file: RevocationJournalFile, offset: number): JournalReader | undefined {
    let fd: number | undefined;
    try {
      // Non-blocking: a FIFO put there would otherwise hold this thread in open(2) until someone writes to it.
      // Nor may a terminal put there become this process's controlling terminal (O_NOCTTY).
      fd = openSync(file.path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
      const st = fstatSync(fd, { bigint: true });
      const own = fstatSync(fd);
      if (String(st.ino) !== file.ino || untrustedReason('file', own, currentUid()) !== undefined) throw new Error('not the journal named');
      return new JournalReader(fd, offset, file.ino);
    } catch {
      if (fd !== undefined) closeSync(fd);
      return undefined;
    }
  }

  /** Whether it is still reading a journal (false once that ended: gone, unreadable, or a line too long). */
  get reading(): boolean {
    return this.fd !== undefined;
  }

  /**
   * Applies every whole line appended since the last read, in order, following a `next` to the file after. One
   * read reads at most MAX_FOLLOWS files after the first (each at most MAX_FILE_BYTES), then leaves the rest for
   * the next: a `next` naming a file already read (written there by another process of this user) costs a
   * bounded re-read per check, never a loop.
   */
  read(apply: (e: RevocationEvent) => void): void {
    let follows = 0;
    while (this.fd !== undefined) {
      let n: number;
      try {
        n = readSync(this.fd, this.buf, 0, CHUNK, this.offset);
      } catch {
        this.close();
        return;
      }
      if (n === 0) {
        this.endedWithoutNext();
        return;
      }
      this.offset += n;
      if (this.offset > MAX_FILE_BYTES) {
        this.close();
        return;
      }
      const data = this.partial === undefined ? this.buf.subarray(0, n) : Buffer.concat([this.partial, this.buf.subarray(0, n)]);
      this.partial = undefined;
      let start = 0;
      let next: RevocationJournalFile | undefined;
      for (let nl = data.indexOf(10); nl !== -1 && next === undefined; nl = data.indexOf(10, start)) {
        next = this.line(data.toString('utf8', start, nl), apply);
        start = nl + 1;
      }
      if (next !== undefined) {
        // The broker continues in another file, from its start; nothing more is written to this one.
        this.follow(next);
        if (++follows > MAX_FOLLOWS) return;
        continue;
      }
      if (start < data.length) {
        // Copied: `buf` is read into again. A line as long as a whole chunk is none the broker writes.
        if (data.length - start >= CHUNK) {
          this.close();
          return;
        }
        this.partial = Buffer.from(data.subarray(start));
      }
      if (n < CHUNK) return;
    }
  }

  /**
   * At the end of what is written: a file the broker has removed without naming a next one (it stopped, or ended
   * its journal when a write failed) gets nothing more, so it is let go and `reading` says so. Looked at once a
   * second at most: one fstat, where a check is otherwise one pread.
   */
  private endedWithoutNext(): void {
    const now = Date.now();
    if (now - this.linksChecked < 1000) return;
    this.linksChecked = now;
    try {
      if (fstatSync(this.fd!).nlink > 0) return;
    } catch {
      // unreadable: let go as well
    }
    this.close();
  }

  close(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {
        // closed already
      }
    }
    this.fd = undefined;
    this.partial = undefined;
  }

  private line(text: string, apply: (e: RevocationEvent) => void): RevocationJournalFile | undefined {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return undefined; // not JSON: damaged, or another process's
    }
    const event = parseRevocationEvent(value);
    if (event !== undefined) {
      apply(event);
      return undefined;
    }
    if (isRecord(value) && Object.keys(value).length === 1 && isRecord(value.next)) {
      const { path, ino } = value.next;
      // One naming this same file (another process's line, never the broker's) would have it read again and again.
      if (typeof path === 'string' && typeof ino === 'string' && Object.keys(value.next).length === 2 && ino !== this.ino) return { path, ino };
    }
    return undefined; // neither an event nor a `next`: a newer broker's line, or damaged, skipped
  }

  private follow(next: RevocationJournalFile): void {
    const reader = JournalReader.open(next, 0);
    this.close();
    if (reader === undefined) return;
    this.fd = reader.fd;
    this.offset = 0;
    this.ino = reader.ino;
  }
}
