// Stopping a revoked agent's whole process tree (`writ exec`). The child runs in its own process group when it
// can (not on a terminal: a background group reading the TTY would be stopped by SIGTTIN, and Node cannot hand
// it the foreground). The tree is: that group, plus every descendant found through /proc (Linux) — so a
// grandchild that left the group is still found while its parent lives. SIGTERM to all, then SIGKILL to
// whatever outlived the grace period. Not covered: a descendant that both left the group (setsid) and was
// orphaned before the kill (it is reparented away from the tree and /proc no longer links it).
import { readdirSync } from 'node:fs';
import { isAlive, isSameAlive, readStat, startOf } from '../procfs';
import type { ProcStat } from '../procfs';

export { isAlive };

function allStats(): ProcStat[] {
  if (process.platform !== 'linux') return [];
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** The root, its descendants by parent link, and (if `group`) every member of the process group `root`. */
export function treeOf(root: number, group: boolean): number[] {
  const stats = allStats();
  const children = new Map<number, number[]>();
  for (const s of stats) {
    const list = children.get(s.ppid) ?? [];
    list.push(s.pid);
    children.set(s.ppid, list);
  }
  const found = new Set<number>([root]);
  const queue = [root];
  while (queue.length > 0) {
    for (const c of children.get(queue.pop()!) ?? []) {
      if (!found.has(c)) {
        found.add(c);
        queue.push(c);
      }
    }
  }
  if (group) for (const s of stats) if (s.pgrp === root) found.add(s.pid);
  return [...found];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TreeStopResult {
  /** The last signal sent: SIGKILL when something outlived the grace period. */
  signal: 'SIGTERM' | 'SIGKILL';
  /** Processes signalled. */
  processes: number;
  /** True when none of them (nor any group member) is alive afterwards. */
  treeStopped: boolean;
}

export async function stopTree(root: number, opts: { group: boolean; graceMs?: number }): Promise<TreeStopResult> {
  const grace = opts.graceMs ?? 2000;
  // pid → its start time when first seen: signals go only to that process, never to one that reused its pid.
  const targets = new Map<number, number | undefined>();
  const find = () => {
    for (const p of treeOf(root, opts.group)) if (!targets.has(p)) targets.set(p, startOf(p));
  };
  find();
  const collect = () => {
    // Keep finding: a process forked during the grace period joins the tree.
    find();
    return [...targets].filter(([p, start]) => isSameAlive(p, start)).map(([p]) => p);
  };
  if (opts.group) signal(-root, 'SIGTERM');
  for (const p of targets.keys()) signal(p, 'SIGTERM');
  let last: 'SIGTERM' | 'SIGKILL' = 'SIGTERM';
  const deadline = Date.now() + grace;
  let alive = collect();
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = collect();
  }
  if (alive.length > 0) {
    last = 'SIGKILL';
    if (opts.group) signal(-root, 'SIGKILL');
    for (const p of alive) signal(p, 'SIGKILL');
    const until = Date.now() + 1000;
    while (alive.length > 0 && Date.now() < until) {
      await sleep(25);
      alive = collect();
    }
  }
  return { signal: last, processes: targets.size, treeStopped: alive.length === 0 };
}
