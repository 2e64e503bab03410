// The kernel's view of a process, from /proc (Linux): its state, parent, group and start time. A pid with its start
// time names one process; a pid alone may be a recycled one. Where there is no /proc, liveness comes from kill(0).
import { readFileSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
  /** Start time in clock ticks since boot (field 22): with the pid, names one process, not a recycled pid. */
  start: number;
}

export function readStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm is in parentheses and may hold spaces or ')': the fields after the LAST ')' are fixed.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { pid, state: rest[0]!, ppid: Number(rest[1]), pgrp: Number(rest[2]), start: Number(rest[19]) };
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a zombie has exited: it only waits for its parent to reap it). */
export function isAlive(pid: number): boolean {
  if (process.platform === 'linux') {
    const s = readStat(pid);
    return s !== undefined && s.state !== 'Z' && s.state !== 'X';
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Alive, not a zombie, and still the process first seen under that pid (same start time): a pid freed and reused
 * by an unrelated process during the grace period is never signalled. `start` undefined (no /proc) checks liveness only.
 */
export function isSameAlive(pid: number, start: number | undefined): boolean {
  if (start === undefined || process.platform !== 'linux') return isAlive(pid);
  const s = readStat(pid);
  return s !== undefined && s.state !== 'Z' && s.state !== 'X' && s.start === start;
}

/** The start time of `pid` (Linux), or undefined. */
export function startOf(pid: number): number | undefined {
  return process.platform === 'linux' ? readStat(pid)?.start : undefined;
}
