// Claims a broker slot for this window (see brokerDirs.ts): an exclusive lock file holding the extension host's
// pid. No vscode import: the folders and the liveness check are passed in, so tests drive it directly.
import { mkdirSync, openSync, writeSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import type { BrokerDirs } from './brokerDirs';

export interface ClaimedSlot {
  slot: number;
  dirs: BrokerDirs;
  release(): void;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryLock(path: string, pid: number): boolean {
  try {
    const fd = openSync(path, 'wx', 0o600);
    writeSync(fd, String(pid));
    closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

function holder(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** The first slot whose lock is free, stale (dead pid) or already ours. Throws after `maxSlots` busy slots. */
export function claimSlot(dirsFor: (slot: number) => BrokerDirs, pid: number, alive: (pid: number) => boolean = pidAlive, maxSlots = 32): ClaimedSlot {
  for (let slot = 0; slot < maxSlots; slot++) {
    const dirs = dirsFor(slot);
    mkdirSync(dirs.slotDir, { recursive: true, mode: 0o700 });
    let ok = tryLock(dirs.lockPath, pid);
    if (!ok) {
      const owner = holder(dirs.lockPath);
      if (owner === pid) ok = true;
      else if (owner === null || !alive(owner)) {
        try {
          unlinkSync(dirs.lockPath);
        } catch {
          // another window removed it first; the exclusive create below decides who wins
        }
        ok = tryLock(dirs.lockPath, pid);
      }
    }
    if (ok) {
      return {
        slot,
        dirs,
        release: () => {
          if (holder(dirs.lockPath) !== pid) return;
          try {
            unlinkSync(dirs.lockPath);
          } catch {
            // already gone
          }
        },
      };
    }
  }
  throw new Error(`all ${maxSlots} Writ broker slots for this workspace are held by other windows`);
}
