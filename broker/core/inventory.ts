// The agent inventory: every agent identity the broker has seen, across runs, with its owner, processes,
// family, the scopes it has ever been granted, and whether the developer blocked it. Persisted atomically;
// a corrupt file is an error, never an empty inventory. Bounded: past MAX_IDENTITIES the least recently seen
// identity that is neither blocked nor in use is forgotten; when there is none, the new identity is refused
// (WRIT_INVENTORY_FULL) rather than let blocks grow the file without end.
//
// Saving is off the hot path: every hello changes the inventory, and at the cap the file is ~5 MB, so changes
// are coalesced into one write at most every `coalesceMs`, written with async fs calls a slice of entries at a
// time (the event loop serves other clients between slices), one write in flight. A block or unblock does not
// wait for the window: it resolves once a write that includes it is on disk. So a crash loses at most the last
// window's last-seen times, session counts, new identities and granted scopes, never a block or an unblock.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { WritError } from '../errors';
import { InventoryEntry } from '../protocol';
import type { Clock } from './clock';
import { normalizeScopes } from './scopes';

const MAX_PROCESSES = 16;
const MAX_SCOPES = 256;
const MAX_FAMILY = 64;
/** Identities kept. Agents name themselves, so a script saying hello with random names would grow it forever. */
export const MAX_IDENTITIES = 10_000;
/** How long ordinary changes (hello, grant, stop) wait to be written with the ones after them. */
export const SAVE_COALESCE_MS = 1000;
/** Entries serialized per write call: ~0.5 ms of the event loop each at the cap, on this machine. */
const ENTRIES_PER_SLICE = 256;

const InventoryFile = z.strictObject({ v: z.literal(1), agents: z.array(InventoryEntry) });

export type AgentStatus = 'active' | 'idle' | 'stopped' | 'blocked';

/** Errors of `Inventory.unblock` whose failure put the block back (see there). */
const putBack = new WeakSet<object>();

/** Whether this failed unblock put the block back: then what its window let in is to be ended. */
export function blockPutBack(err: unknown): boolean {
  return typeof err === 'object' && err !== null && putBack.has(err);
}

/**
 * An agent's identity. Names are what agents declare, so this groups runs of "the same agent" for the
 * developer's inventory; where the kernel tells the broker the process, that is recorded beside it.
 */
export function identityOf(owner: string, name: string, kind: string, parentIdentity?: string): string {
  const h = createHash('sha256').update(JSON.stringify([owner, name, kind, parentIdentity ?? null])).digest('hex');
  return `inv_${h.slice(0, 20)}`;
}

const pushBounded = <T>(list: T[], item: T, max: number, same: (a: T) => boolean): void => {
  if (list.some(same)) return;
  list.push(item);
  if (list.length > max) list.shift();
};

/**
 * Writes `slices` to a temporary file beside `path` (mode 0600), fsyncs it, renames it over `path` and fsyncs the
 * folder, so a reader sees the old file or the new one, never a torn one, and the rename outlives a power cut.
 * Each slice is produced just before it is written: the caller's work between writes yields the event loop.
 */
export async function writeFileAtomic(path: string, slices: Iterable<string>): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    for (const slice of slices) await fh.write(slice);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export interface InventoryOptions {
  /** How long ordinary changes wait to be written together; SAVE_COALESCE_MS unless a test says otherwise. */
  coalesceMs?: number;
  /** Where a failed background save is reported (never with an entry's contents). */
  log?: (line: string) => void;
  /** The file writer; tests wrap writeFileAtomic to count or fail writes. */
  write?: (path: string, slices: Iterable<string>) => Promise<void>;
}

export class Inventory {
  /** Least recently seen first: every update of `lastSeen` moves its entry to the end. */
  private readonly entries = new Map<string, InventoryEntry>();
  private readonly forgetListeners = new Set<(id: string) => void>();
  private readonly blockListeners = new Set<(id: string, blocked: boolean) => void>();
  /**
   * Identities verifiers were told are blocked and not since told unblocked, with the block told: in every snapshot
   * (blockedIds), never forgotten by the cap, and what a failed unblock puts back.
   */
  private readonly toldBlocked = new Map<string, NonNullable<InventoryEntry['blocked']>>();
  /** Bumped at each block and unblock of an identity: an unblock tells, or undoes itself, only if none came after. */
  private readonly blockGen = new Map<string, number>();
  /** Bumped at each block of an identity only (blockGen counts unblocks too). */
  private readonly blockCount = new Map<string, number>();
  /**
   * Identities an unblock of which is on disk, with no block since, though a later unblock (the last call, which
   * decides) is still being written: if that one's write fails, the identity stays unblocked, as the file says.
   */
  private readonly unblockLanded = new Set<string>();
  /** Changes made so far, and how many of them a finished write holds: the file is current when they are equal. */
  private changes = 0;
  private saved = 0;
  /** The write in flight (at most one), and the timer that starts the next coalesced one. */
  private writing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly coalesceMs: number;
  private readonly log: (line: string) => void;
  private readonly write: (path: string, slices: Iterable<string>) => Promise<void>;

  private constructor(
    readonly path: string,
    private readonly clock: Clock,
    options: InventoryOptions,
  ) {
    this.coalesceMs = options.coalesceMs ?? SAVE_COALESCE_MS;
    this.log = options.log ?? ((line) => process.stderr.write(line + '\n'));
    this.write = options.write ?? writeFileAtomic;
  }

  static load(path: string, clock: Clock, options: InventoryOptions = {}): Inventory {
    const inv = new Inventory(path, clock, options);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return inv;
      throw new WritError('WRIT_INVENTORY_CORRUPT', `cannot read the agent inventory ${path}`, { cause: e });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      raw = undefined;
    }
    const parsed = InventoryFile.safeParse(raw);
    if (!parsed.success) {
      throw new WritError(
        'WRIT_INVENTORY_CORRUPT',
        `the agent inventory ${path} is corrupt; refusing to start with an empty one (move it aside to start afresh; blocks in it would be lost)`,
      );
    }
    const oldestFirst = [...parsed.data.agents].sort((a, b) => (a.lastSeen < b.lastSeen ? -1 : a.lastSeen > b.lastSeen ? 1 : 0));
    for (const e of oldestFirst) {
      inv.entries.set(e.id, e);
      // A block loaded is in every subscriber's snapshot: its unblock is told like any other.
      if (e.blocked != null) inv.toldBlocked.set(e.id, e.blocked);
    }
    inv.trim(undefined, () => false);
    return inv;
  }

  /** Called with each identity the cap forgets (the watch forgets its state for it). */
  onForget(listener: (id: string) => void): () => void {
    this.forgetListeners.add(listener);
    return () => this.forgetListeners.delete(listener);
  }

  /**
   * Called with each block as it takes hold (before it is on disk: whoever is told refuses from then on), and each
   * unblock once a write made after it (and after any later block or unblock of the identity) is on disk. Not called
   * for a block of an identity already told blocked, nor for an unblock that a later block or unblock overtook (that
   * one tells). An unblock whose write failed puts the block back and is called blocked again (a repeat to those
   * told, news to what the window let through), unless an earlier unblock is on disk with no block since: then the
   * identity is unblocked, as the file says, and that is called.
   */
  onBlockChange(listener: (id: string, blocked: boolean) => void): () => void {
    this.blockListeners.add(listener);
    return () => this.blockListeners.delete(listener);
  }

  /** The identities blocked now, and those whose unblock is not yet told (what subscribers are given). */
  blockedIds(): string[] {
    const out: string[] = [];
    for (const [id, e] of this.entries) if (e.blocked != null || this.toldBlocked.has(id)) out.push(id);
    return out;
  }

  private bumpBlockGen(id: string): number {
    const gen = (this.blockGen.get(id) ?? 0) + 1;
    this.blockGen.set(id, gen);
    return gen;
  }

  private tellBlock(id: string, blocked: boolean): void {
    for (const l of this.blockListeners) {
      try {
        l(id, blocked);
      } catch {
        // telling others is best effort; the block itself holds
      }
    }
  }

  get size(): number {
    return this.entries.size;
  }

  private touch(e: InventoryEntry): void {
    e.lastSeen = this.now();
    this.entries.delete(e.id);
    this.entries.set(e.id, e);
  }

  /**
   * Past the cap, forgets the least recently seen identities that are not blocked (a block is never lost),
   * not in use (an agent of this run has it) and not `newest`. Only a file loaded with more blocked identities
   * than the cap stays over it; `seen` refuses a new identity that nothing can make room for.
   */
  private trim(newest: string | undefined, inUse: (id: string) => boolean): void {
    if (this.entries.size <= MAX_IDENTITIES) return;
    for (const [id, e] of this.entries) {
      if (this.entries.size <= MAX_IDENTITIES) break;
      if (e.blocked !== null || this.toldBlocked.has(id) || id === newest || inUse(id)) continue;
      this.entries.delete(id);
      this.blockGen.delete(id);
      this.blockCount.delete(id);
      this.unblockLanded.delete(id);
      for (const l of this.forgetListeners) l(id);
    }
  }

  /** Whether changes are waiting to be written (or their write failed and waits for the next change). */
  get pending(): boolean {
    return this.saved < this.changes;
  }

  /** An ordinary change: written within `coalesceMs`, together with every other change made by then. */
  private changed(): void {
    this.changes++;
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // A failure is logged and left pending: the next change starts another write, and so does close().
      this.flush().catch((e: unknown) => this.log(`writ: could not save the agent inventory ${this.path}: ${saveFailure(e)}; retrying with the next change`));
    }, this.coalesceMs);
    // Pending changes alone keep no process alive: the broker flushes them when it stops.
    this.timer.unref();
  }

  /**
   * Resolves once every change made before the call is on disk: after the write in flight, if it started too
   * early to hold them all, one more. Rejects if that write fails (the changes stay pending).
   */
  async flush(): Promise<void> {
    const target = this.changes;
    while (this.saved < target) {
      if (this.writing) {
        await this.writing;
        continue;
      }
      await this.startWrite();
    }
  }

  /** Flushes what is pending and stops the coalescing timer (the broker calls it as it stops). */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private startWrite(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const upTo = this.changes;
    // The entries as they are now; each is serialized whole when its slice is written, so a change made while
    // the write runs may or may not be in it, and is written again by the next write either way.
    const agents = [...this.entries.values()];
    const done = this.write(this.path, slicesOf(agents)).then(() => {
      this.saved = Math.max(this.saved, upTo);
    });
    // What flush() waits on: settles when the write does, never rejects (the failure is `done`'s to report).
    this.writing = done.then(
      () => undefined,
      () => undefined,
    );
    void this.writing.then(() => (this.writing = undefined));
    return done;
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }

  /**
   * Records a connection of an agent; returns its entry (created on first sight, which may forget the least
   * recently seen identity past the cap; `inUse` names identities that must stay). A new identity for which no
   * identity can be forgotten (every other one is blocked or in use) is refused with WRIT_INVENTORY_FULL: blocks
   * are never dropped to make room, and an agent that could mint identities and get each blocked (by a watch rule
   * or over the socket) must not grow the inventory, and the file written every second, without bound.
   */
  seen(
    a: { name: string; kind: string; owner: string; parentIdentity?: string; process?: { exe?: string; sha256?: string } },
    inUse: (id: string) => boolean = () => false,
  ): InventoryEntry {
    const id = identityOf(a.owner, a.name, a.kind, a.parentIdentity);
    let e: InventoryEntry | undefined = this.entries.get(id);
    const keep = (x: string) => x === a.parentIdentity || inUse(x);
    if (!e && this.entries.size >= MAX_IDENTITIES && !this.canForget(keep)) {
      throw new WritError(
        'WRIT_INVENTORY_FULL',
        `the agent inventory holds ${this.entries.size} identities, each blocked or connected, and forgets no block to make room: unblock identities you no longer need (in the editor, or writ agents unblock IDENTITY) or stop connected agents`,
      );
    }
    if (!e) {
      e = {
        id,
        name: a.name,
        kind: a.kind,
        owner: a.owner,
        firstSeen: this.now(),
        lastSeen: this.now(),
        sessions: 0,
        processes: [],
        parents: [],
        subAgents: [],
        scopesGranted: [],
        blocked: null,
        stopped: false,
      };
      this.entries.set(id, e);
    }
    e.sessions++;
    this.touch(e);
    e.stopped = false;
    if (a.process?.exe) {
      const p = { exe: a.process.exe, ...(a.process.sha256 ? { sha256: a.process.sha256 } : {}) };
      pushBounded(e.processes, p, MAX_PROCESSES, (x) => x.exe === p.exe && x.sha256 === p.sha256);
    }
    if (a.parentIdentity) {
      pushBounded(e.parents, a.parentIdentity, MAX_FAMILY, (x) => x === a.parentIdentity);
      const parent = this.entries.get(a.parentIdentity);
      if (parent) pushBounded(parent.subAgents, id, MAX_FAMILY, (x) => x === id);
    }
    this.trim(id, keep);
    this.changed();
    return e;
  }

  /** Whether `trim` would find an identity to forget: one neither blocked nor kept. */
  private canForget(keep: (id: string) => boolean): boolean {
    for (const [id, e] of this.entries) if (e.blocked === null && !this.toldBlocked.has(id) && !keep(id)) return true;
    return false;
  }

  get(id: string): InventoryEntry | undefined {
    return this.entries.get(id);
  }

  /** Scopes this identity has been granted before, in any run (the baseline for scope-creep findings). */
  grantedBefore(id: string): string[] {
    return this.entries.get(id)?.scopesGranted ?? [];
  }

  granted(id: string, scopes: readonly string[]): void {
    const e = this.entries.get(id);
    if (!e) return;
    const merged = normalizeScopes([...e.scopesGranted, ...scopes]);
    e.scopesGranted = merged.slice(-MAX_SCOPES);
    this.touch(e);
    this.changed();
  }

  stopped(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.stopped = true;
    this.changed();
  }

  /**
   * Blocks the identity at once (isBlocked is true when this returns) and resolves once the block is on disk, so
   * whoever is told it is blocked can rely on it after a crash. If the write fails the block still holds in this
   * run and the promise rejects; the next change or close() tries again.
   */
  block(id: string, reason?: string): Promise<InventoryEntry> {
    const e = this.entries.get(id);
    if (!e) return Promise.reject(new WritError('WRIT_AGENT_NOT_FOUND', 'no agent with that identity in the inventory'));
    e.blocked = { at: this.now(), ...(reason ? { reason } : {}) };
    this.bumpBlockGen(id);
    this.blockCount.set(id, (this.blockCount.get(id) ?? 0) + 1);
    this.unblockLanded.delete(id);
    const told = this.toldBlocked.has(id);
    this.toldBlocked.set(id, e.blocked);
    if (!told) this.tellBlock(id, true);
    return this.durably(e);
  }

  /**
   * Unblocks at once and resolves once that is on disk (a crash must not bring a block back unannounced). A write
   * that fails puts the block back (the file still has it), tells it again and rejects with an error for which
   * `blockPutBack` is true; unless a block or unblock came after this one (that one decides), or an earlier unblock
   * is on disk with nothing blocked since (then it resolves: the file has what was asked).
   */
  unblock(id: string): Promise<InventoryEntry> {
    const e = this.entries.get(id);
    if (!e) return Promise.reject(new WritError('WRIT_AGENT_NOT_FOUND', 'no agent with that identity in the inventory'));
    e.blocked = null;
    const gen = this.bumpBlockGen(id);
    const blocks = this.blockCount.get(id) ?? 0;
    if (!this.toldBlocked.has(id)) return this.durably(e);
    // Told once on disk: a crash before would bring the block back after the verifiers had let go of it. Until
    // then a new subscriber's snapshot still has it blocked (blockedIds), as those already told hold it. A block or
    // unblock after this one decides instead: the write that lands may hold either.
    const last = () => this.blockGen.get(id) === gen;
    const toldUnblocked = () => {
      this.toldBlocked.delete(id);
      this.unblockLanded.delete(id);
      this.tellBlock(id, false);
    };
    return this.durably(e).then(
      (r) => {
        if (last()) toldUnblocked();
        // Written after this unblock with no block since: the file has it, whatever a later unblock's write does.
        else if (this.blockCount.get(id) === blocks) this.unblockLanded.add(id);
        return r;
      },
      (err: unknown) => {
        if (!last()) throw err;
        // An earlier unblock is on disk, and nothing blocked since: this one asked for what the file already says.
        if (this.unblockLanded.has(id)) {
          toldUnblocked();
          return e;
        }
        // The block told comes back, in memory and in the next write, and takes hold again in this process: what
        // the window let through (an agent, a proxied call) is ended as at a block (Oversight.unblock, the proxy).
        e.blocked = this.toldBlocked.get(id)!;
        this.changed();
        this.tellBlock(id, true);
        if (typeof err === 'object' && err !== null) putBack.add(err);
        throw err;
      },
    );
  }

  private async durably(e: InventoryEntry): Promise<InventoryEntry> {
    this.changes++;
    try {
      await this.flush();
    } catch (cause) {
      throw new WritError('WRIT_INVENTORY_WRITE_FAILED', `could not save the agent inventory ${this.path}: ${saveFailure(cause)}`, { cause });
    }
    return e;
  }

  isBlocked(id: string): boolean {
    return this.entries.get(id)?.blocked != null;
  }

  list(): InventoryEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : a.id.localeCompare(b.id)));
  }
}

/** The file, an entry per line, produced a slice at a time as the writer asks for it. */
function* slicesOf(agents: readonly InventoryEntry[]): Generator<string> {
  yield '{"v":1,"agents":[\n';
  for (let i = 0; i < agents.length; i += ENTRIES_PER_SLICE) {
    const slice = agents.slice(i, i + ENTRIES_PER_SLICE).map((e) => JSON.stringify(e));
    yield slice.join(',\n') + (i + ENTRIES_PER_SLICE < agents.length ? ',\n' : '\n');
  }
  yield ']}\n';
}

/** An fs error's code (ENOSPC, EACCES, ...) for a log line: never the entries it was writing. */
export function saveFailure(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'write failed';
}

export function statusOf(e: InventoryEntry, live: { connected: boolean; tokens: number }): AgentStatus {
  if (e.blocked) return 'blocked';
  if (e.stopped) return 'stopped';
  return live.connected || live.tokens > 0 ? 'active' : 'idle';
}

const CSV_COLUMNS = ['id', 'name', 'kind', 'owner', 'status', 'first_seen', 'last_seen', 'sessions', 'tokens_now', 'executables', 'parents', 'sub_agents', 'scopes_granted', 'blocked_at'] as const;

function csvCell(v: string): string {
  const guarded = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(guarded) ? `"${guarded.replace(/"/g, '""')}"` : guarded;
}

/** For a team's non-human-identity inventory: one row per agent identity. */
export function inventoryCsv(rows: readonly (InventoryEntry & { status: AgentStatus; tokensNow: number })[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of rows) {
    lines.push(
      [
        r.id,
        r.name,
        r.kind,
        r.owner,
        r.status,
        r.firstSeen,
        r.lastSeen,
        String(r.sessions),
        String(r.tokensNow),
        r.processes.map((p) => (p.sha256 ? `${p.exe}#${p.sha256}` : p.exe)).join(' '),
        r.parents.join(' '),
        r.subAgents.join(' '),
        r.scopesGranted.join(' '),
        r.blocked?.at ?? '',
      ]
        .map(csvCell)
        .join(','),
    );
  }
  return lines.join('\r\n') + '\r\n';
}
