// One writer per state folder. The audit log, its write-ahead file, the revocation list and agents.json have a
// single writer each: a broker for its whole life, or a CLI command that writes them with no broker running
// (key rotation, unblocking) for the length of the operation. Two brokers with different runtime folders
// (XDG_RUNTIME_DIR set in one terminal and not under ssh) would otherwise share one state folder: their audit
// records interleave and break the chain, and each rewrites agents.json from memory, erasing the other's blocks.
//
// The lock is a file, `lock`, made whole by link(2) (atomic, fails if it exists) from a private temporary file, so
// a reader never sees it half written. It names the holder's pid, the kernel's start time of that pid and the boot:
// a holder that is gone, or a pid now used by another process, leaves a stale lock the next writer takes over.
// flock(2) would need a native module; this needs none. Only the writer holding `lock.takeover` (made the same way)
// may delete a `lock` that is not its own, and it deletes it only if it is still the one judged stale: so a live lock
// is never moved or deleted, however many writers take over at once. A takeover file is held for a few system calls;
// one left by a process that died in them is itself stale, and is cleared by renaming it aside and checking that what
// moved is what was judged stale (a third writer in that same instant could still slip in: it needs a crash in the
// middle of a takeover as well).
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { WritError } from './errors';
import { isAlive, startOf } from './procfs';

export const LOCK_FILE = 'lock';

const LockRecord = z.object({
  pid: z.number().int().positive(),
  /** /proc/PID/stat field 22 (clock ticks after boot), or null where there is no /proc. */
  start: z.string().nullable(),
  /** /proc/sys/kernel/random/boot_id, or null: a lock from before a reboot is stale whatever its pid. */
  boot: z.string().nullable(),
  /** Who holds it: `broker`, or the CLI command writing offline. */
  holder: z.string().max(64),
  /** Tells this taking of the lock from any other by the same process. */
  nonce: z.string(),
});
type LockRecord = z.infer<typeof LockRecord>;

export interface StateLock {
  readonly stateDir: string;
  readonly path: string;
  /** Deletes the lock if it is still this one. Idempotent. */
  release(): void;
}

function bootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
  } catch {
    return null;
  }
}

/**
 * Whether the process a lock names still runs: same boot, pid alive and not a zombie (a SIGKILLed broker whose
 * parent has not reaped it yet), and (with /proc) the same start time, so a reused pid is not mistaken for it.
 */
export function holderAlive(r: LockRecord): boolean {
  const boot = bootId();
  if (r.boot !== null && boot !== null && r.boot !== boot) return false;
  // Alive and not a zombie (a SIGKILLed broker whose parent has not reaped it yet); with /proc, the same start time.
  if (!isAlive(r.pid)) return false;
  if (r.start === null) return true;
  const start = startOf(r.pid);
  return start === undefined ? process.platform !== 'linux' : String(start) === r.start;
}

/** The lock file's text, or undefined if there is none. */
function readLock(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function parseLock(text: string): LockRecord | undefined {
  try {
    const r = LockRecord.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

function lockedError(stateDir: string, r: LockRecord, holder: string): WritError {
  const who = r.holder === 'broker' ? 'a Writ broker' : `\`writ ${r.holder}\``;
  const advice =
    holder === 'broker'
      ? 'only one broker may use a state folder: stop that one first (brokers with different runtime folders still share this state folder)'
      : r.holder === 'broker'
        ? 'do it through that broker (the Writ view in the editor), or stop the broker and run this again'
        : 'wait for it to finish and run this again';
  return new WritError('WRIT_STATE_LOCKED', `the state folder ${stateDir} is in use by ${who} (pid ${r.pid}): ${advice}`, {
    data: { pid: r.pid, stateDir, holder: r.holder },
  });
}

/**
 * Takes the state folder's lock for `holder` (`broker`, or the CLI command's name), or throws WRIT_STATE_LOCKED
 * naming the pid that holds it. A stale lock (its process gone, or its pid reused) is taken over. The folder must
 * exist. Synchronous: nothing else in the process runs between the check and the taking.
 */
export function acquireStateLock(stateDir: string, holder: string): StateLock {
  const path = join(stateDir, LOCK_FILE);
  const mine: LockRecord = {
    pid: process.pid,
    start: startOf(process.pid)?.toString() ?? null,
    boot: bootId(),
    holder,
    nonce: randomBytes(12).toString('hex'),
  };
  const text = JSON.stringify(mine) + '\n';
  const tmp = `${path}.${process.pid}.${mine.nonce}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    for (let attempt = 0; attempt < 8; attempt++) {
      try {
        linkSync(tmp, path);
        return held(stateDir, path, text);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const seen = readLock(path);
      if (seen === undefined) continue; // released between our link and our read
      const other = parseLock(seen);
      // A lock that does not parse was never written by this code (link makes it whole): treat it as stale.
      if (other !== undefined && holderAlive(other)) throw lockedError(stateDir, other, holder);
      if (!removeStale(path, tmp, text, seen)) pause(attempt);
    }
    throw new WritError('WRIT_STATE_LOCKED', `the state folder ${stateDir} is being locked and unlocked by other Writ processes: run this again`, {
      data: { stateDir },
    });
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
  }
}

/**
 * Deletes `lock` if it is still `stale`, holding the takeover file while it looks and deletes, so no other writer
 * can delete a lock in between. False when another writer holds the takeover file (it may be taking over this very
 * lock): the caller looks again. `tmp` holds this writer's record (`text`), linked in as the takeover file.
 */
function removeStale(path: string, tmp: string, text: string, stale: string): boolean {
  const takeover = `${path}.takeover`;
  try {
    linkSync(tmp, takeover);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const seen = readLock(takeover);
    const other = seen === undefined ? undefined : parseLock(seen);
    // Its writer died in the middle of a takeover: the file is stale too.
    if (seen !== undefined && (other === undefined || !holderAlive(other))) renameAsideIfStill(takeover, seen);
    return false;
  }
  try {
    // Only a takeover deletes a lock not its own, and this writer holds the one takeover: a lock that still reads
    // as the stale one is the stale one. One that changed was released, or taken by a writer after a takeover.
    if (readLock(path) === stale) unlinkSync(path);
    return true;
  } finally {
    if (readLock(takeover) === text) unlinkSync(takeover);
  }
}

/** Waits a little without giving up the thread (nothing else in the process may run between look and take). */
function pause(attempt: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.min(2 ** attempt, 50));
}

/**
 * Removes a stale takeover file, only if it is still the one judged stale: renamed aside, then checked (another
 * writer may have cleared it and taken its own meanwhile, which is put back).
 */
function renameAsideIfStill(path: string, stale: string): void {
  const aside = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.stale`;
  try {
    renameSync(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const moved = readLock(aside);
  if (moved !== stale) {
    // Someone else took over first and this moved their live takeover file: put it back (fails only if a third got in).
    try {
      linkSync(aside, path);
    } catch {
      // the next attempt sees whoever holds it now
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    // already gone
  }
}

const heldLocks = new Set<StateLock>();
let exitHookInstalled = false;

function held(stateDir: string, path: string, text: string): StateLock {
  let released = false;
  const lock: StateLock = {
    stateDir,
    path,
    release() {
      if (released) return;
      released = true;
      heldLocks.delete(lock);
      // Only our own: after a takeover by someone who judged us dead, the file is theirs.
      if (readLock(path) !== text) return;
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
  heldLocks.add(lock);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A process that exits without stopping cleanly (an uncaught error) still leaves no lock behind; SIGKILL does,
    // and the next writer takes that one over.
    process.on('exit', () => {
      for (const l of [...heldLocks]) l.release();
    });
  }
  return lock;
}

/**
 * Runs `fn` holding the state folder's lock for an offline CLI command (made first if there is no folder yet),
 * releasing it however `fn` ends.
 */
export async function withStateLock<T>(stateDir: string, holder: string, fn: (lock: StateLock) => Promise<T>): Promise<T> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const lock = acquireStateLock(stateDir, holder);
  try {
    return await fn(lock);
  } finally {
    lock.release();
  }
}
