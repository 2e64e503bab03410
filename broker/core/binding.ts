// Which process a token was minted for, and whether the process presenting it is that one (or one it spawned);
// and whether an agent presenting a token may hold it at all. Pure logic over an injected process table, so the
// watch's two "whose token is this" rules test without /proc; the broker's table reads /proc (net/peer.ts).
import type { PeerProcess } from '../protocol';

/** A process named across PID reuse: its pid and its start time (clock ticks after boot). */
export interface ProcessRef {
  pid: number;
  startTime: number;
}

/** The process table as it is now. */
export interface ProcessTable {
  /** The process and its ancestors, nearest first, each with its start time; [] when the pid is gone or unreadable. */
  lineage(pid: number): ProcessRef[];
  /**
   * The same for a process just seen on an open connection, which may be briefly cached (never for a different
   * start time). Absent: `lineage`.
   */
  connectedLineage?(p: ProcessRef): ProcessRef[];
}

/** The process a token was minted for: the minting connection's peer, and its ancestors at that moment. */
export interface ProcessBinding {
  process: ProcessRef & { exe?: string };
  /** Nearest first, the minting process excluded. */
  ancestors: ProcessRef[];
}

/** Ancestors kept with a binding: enough to pass `npx`, a shell and a subshell above a one-shot `writ token`. */
export const BINDING_ANCESTORS = 16;

const same = (a: ProcessRef, b: ProcessRef) => a.pid === b.pid && a.startTime === b.startTime;

/** A binding for a peer whose start time is known (else undefined: the process is not identified well enough). */
export function bindingFor(peer: PeerProcess | undefined, table: ProcessTable): ProcessBinding | undefined {
  if (peer === undefined || peer.startTime === undefined) return undefined;
  const line = table.lineage(peer.pid);
  // Gone already, or the pid names another process now: no binding rather than a wrong one.
  if (line.length === 0 || line[0]!.startTime !== peer.startTime) return undefined;
  return {
    process: { pid: peer.pid, startTime: peer.startTime, ...(peer.exe === undefined ? {} : { exe: peer.exe }) },
    ancestors: line.slice(1, 1 + BINDING_ANCESTORS),
  };
}

/**
 * The live process a token belongs to now: the minting process while it runs; once it has exited, the nearest of
 * its recorded ancestors still running (a one-shot `writ token` prints the token for the shell that ran it).
 * Undefined when none of them runs any more.
 */
export function boundRoot(b: ProcessBinding, table: ProcessTable): ProcessRef | undefined {
  for (const p of [b.process, ...b.ancestors]) {
    const now = table.lineage(p.pid)[0];
    if (now !== undefined && now.startTime === p.startTime) return { pid: p.pid, startTime: p.startTime };
  }
  return undefined;
}

export type PresenterVerdict =
  | { verdict: 'same' }
  | { verdict: 'unknown' }
  | { verdict: 'mismatch'; expected: { pid: number; exe?: string }; actual: { pid: number; exe?: string } };

/**
 * Is the presenting process the one the token was minted for, or a descendant of it (a child process is a
 * sub-agent, which is normal)? `unknown` when either side is not identified well enough to say.
 */
export function checkPresenter(
  b: ProcessBinding,
  presenter: PeerProcess | undefined,
  table: ProcessTable,
  /** The presenter's lineage when the caller has just read it. */
  line: ProcessRef[] | undefined = presenter === undefined ? undefined : table.lineage(presenter.pid),
): PresenterVerdict {
  if (presenter === undefined || presenter.startTime === undefined || line === undefined) return { verdict: 'unknown' };
  if (line.length === 0 || line[0]!.startTime !== presenter.startTime) return { verdict: 'unknown' };
  // The usual case, the minting process itself or a child of it presenting: no need to ask whether it still runs.
  if (line.some((p) => same(p, b.process))) return { verdict: 'same' };
  const root = boundRoot(b, table);
  if (root === undefined) return { verdict: 'unknown' };
  if (line.some((p) => same(p, root))) return { verdict: 'same' };
  return {
    verdict: 'mismatch',
    expected: { pid: b.process.pid, ...(b.process.exe === undefined ? {} : { exe: b.process.exe }) },
    actual: { pid: presenter.pid, ...(presenter.exe === undefined ? {} : { exe: presenter.exe }) },
  };
}

/**
 * May agent `x` hold a token whose delegation chain is `chain` (`[client_id, parent, …]`, from its `act`)? Yes if
 * it is that agent, one of its ancestors (a parent hands a sub-agent a token it exchanged for it), or one of its
 * descendants (a sub-agent exchanging its parent's token). A sibling or a stranger may not.
 */
export function mayHold(x: { id: string; parents: readonly string[] }, chain: readonly string[]): boolean {
  const holder = chain[0];
  if (holder === undefined) return false;
  return chain.includes(x.id) || x.parents.includes(holder);
}
