// The revocation journal: a file in the broker's runtime folder to which the broker appends each entry of the
// revocation list the moment it applies it, before it pushes the same event to subscribed verifiers. A verifier on
// this machine reads what is new in it at each check (JournalReader in broker/sdk/journal.ts), so it refuses a revoked
// token from the moment the line is written, however long its process takes to be woken by the push: sixteen
// verifier processes on two cores take milliseconds to wake one after another, a write takes microseconds.
//
// It only adds: a verifier that cannot read it (elsewhere, another user, a file gone) has the push, which stays the
// channel that is acknowledged and waited for. What is in it is public to this user (ids of revoked tokens,
// grants, agents), never a token or a key. Nothing in it outlives the broker: it is removed when the broker stops,
// and a journal left by a broker that died is removed by the next one.
//
// The format (RevocationJournalPlace in broker/protocol.ts): one JSON RevocationEvent per line; once the file has
// grown past `maxBytes`, a last line `{"next": {path, ino}}` names the file that continues it.
import { closeSync, fstatSync, openSync, readdirSync, unlinkSync, writeSync, constants } from 'node:fs';
import { join } from 'node:path';
import { REVOCATION_JOURNAL_MAX_BYTES } from '../protocol';
import type { RevocationEvent, RevocationJournalFile, RevocationJournalPlace } from '../protocol';

const NAME = /^revocations-([0-9]+)-([0-9]+)\.journal$/;
/** Journal files this process has made (and not yet removed): never taken for another process's leftovers. */
const MADE = new Set<string>();

export class RevocationJournal {
  private fd: number | undefined;
  private file: RevocationJournalFile | undefined;
  private size = 0;
  private part = 0;
  /** Files of this journal that could not be removed when they were done with: tried again at close. */
  private readonly unremoved = new Set<string>();
  /**
   * The file before the current one, kept until the next is made: a subscriber told of it just before it was
   * continued still opens it and follows its `next`, as does a reader that missed one change of file.
   */
  private previous: string | undefined;

  private constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * A new journal in `dir` (the broker's private runtime folder), after removing those of brokers no longer
   * running. A journal that cannot be made is no journal (the push alone, as before it), said once in the log.
   */
  static open(dir: string, log: (line: string) => void, opts: { maxBytes?: number; isRunning?: (pid: number) => boolean } = {}): RevocationJournal {
    const j = new RevocationJournal(dir, opts.maxBytes ?? REVOCATION_JOURNAL_MAX_BYTES, log);
    j.removeLeftovers(opts.isRunning ?? running);
    j.start();
    return j;
  }

  /**
   * Where a subscriber taking its snapshot now starts reading, or undefined while there is no journal. The
   * file's own size: anything another process of this user appended is before it, not in the middle of a line.
   */
  place(): RevocationJournalPlace | undefined {
    if (this.fd === undefined || this.file === undefined) return undefined;
    try {
      return { ...this.file, offset: fstatSync(this.fd).size };
    } catch {
      return undefined;
    }
  }

  /** Appends one entry's event; never throws (a write that fails ends the journal, and the push still goes). */
  append(event: RevocationEvent): void {
    if (this.fd === undefined) return;
    try {
      if (this.size >= this.maxBytes) this.continueInNewFile();
      if (this.fd === undefined) return; // it could not be continued: ended
      this.write(JSON.stringify(event) + '\n');
    } catch (e) {
      // Nothing here is expected to throw (each step ends the journal itself); should one, the push must still go.
      this.fail('the revocation journal failed', e);
    }
  }

  /** Removes the journal (the broker is stopping): a reader holding it open reads nothing more from it. */
  close(): void {
    const file = this.file;
    this.end();
    if (file !== undefined) this.remove(file.path);
    if (this.previous !== undefined) this.remove(this.previous);
    for (const path of [...this.unremoved]) this.remove(path);
  }

  private start(): void {
    const made = this.create();
    if (made !== undefined) [this.fd, this.file, this.size] = [made.fd, made.file, 0];
  }

  private create(): { fd: number; file: RevocationJournalFile } | undefined {
    const path = join(this.dir, `revocations-${process.pid}-${++this.part}.journal`);
    try {
      // Made here and now, by this process alone (O_EXCL, no link followed), readable by this user only. Each
      // line goes at the end (O_APPEND), whatever else was written there: none is ever written over.
      const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_APPEND, 0o600);
      MADE.add(path);
      try {
        return { fd, file: { path, ino: String(fstatSync(fd, { bigint: true }).ino) } };
      } catch (e) {
        closeQuietly(fd);
        this.remove(path);
        throw e;
      }
    } catch (e) {
      this.fail(`could not make the revocation journal ${path}`, e);
      return undefined;
    }
  }

  /**
   * The old file's last line names the new one; the old one is kept as `previous`, and the one before it
   * removed (its readers hold it open and follow on).
   */
  private continueInNewFile(): void {
    const old = this.file!.path;
    const next = this.create();
    const linked = next !== undefined && this.write(JSON.stringify({ next: next.file }) + '\n');
    this.end();
    if (this.previous !== undefined) this.remove(this.previous);
    this.previous = linked ? old : undefined;
    if (!linked) {
      this.remove(old);
      // No new file, or the old one could not name it: readers go on by the push alone, new subscribers too.
      if (next !== undefined) {
        closeQuietly(next.fd);
        this.remove(next.file.path);
      }
      return;
    }
    [this.fd, this.file, this.size] = [next.fd, next.file, 0];
  }

  /** One line at the end, in one write: a reader never takes a line until its newline is there. */
  private write(line: string): boolean {
    const bytes = Buffer.from(line);
    try {
      const n = writeSync(this.fd!, bytes, 0, bytes.length);
      this.size += n;
      if (n !== bytes.length) throw new Error(`only ${n} of ${bytes.length} bytes were written`);
      return true;
    } catch (e) {
      // A line left half written is never completed: a reader stops at its missing newline, so nothing after it
      // is read from this journal, and the push carries it all.
      this.fail('could not append to the revocation journal', e);
      return false;
    }
  }

  private fail(what: string, e: unknown): void {
    try {
      this.log(`writ: ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); verifiers learn of revocations by the push alone`);
    } catch {
      // Nothing the log does may keep the push from going: append never throws.
    }
    const file = this.file;
    this.end();
    if (file !== undefined) this.remove(file.path);
  }

  private end(): void {
    if (this.fd !== undefined) closeQuietly(this.fd);
    this.fd = undefined;
    this.file = undefined;
  }

  private remove(path: string): void {
    if (removeQuietly(path)) this.unremoved.delete(path);
    else this.unremoved.add(path);
  }

  private removeLeftovers(isRunning: (pid: number) => boolean): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      const m = NAME.exec(name);
      if (!m) continue;
      const path = join(this.dir, name);
      // This pid's own: one left by a process that had this pid before (a broker restarted in a container is
      // often the same pid), unless this process made it (another broker in it, as in tests).
      const own = Number(m[1]) === process.pid;
      if (own ? !MADE.has(path) : !isRunning(Number(m[1]))) removeQuietly(path);
    }
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // closed, or its last writes lost: the file is being let go either way
  }
}

function removeQuietly(path: string): boolean {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return false;
  }
  MADE.delete(path);
  return true;
}
