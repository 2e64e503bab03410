// The agent inventory: every agent identity the broker has seen, across runs, with its owner, processes,
// family, the scopes it has ever been granted, and whether the developer blocked it. Persisted atomically;
// a corrupt file is an error, never an empty inventory. Bounded: past MAX_IDENTITIES the least recently seen
// identity that is neither blocked nor in use is forgotten.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync, constants } from 'node:fs';
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

const InventoryFile = z.strictObject({ v: z.literal(1), agents: z.array(InventoryEntry) });

export type AgentStatus = 'active' | 'idle' | 'stopped' | 'blocked';

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

export class Inventory {
  /** Least recently seen first: every update of `lastSeen` moves its entry to the end. */
  private readonly entries = new Map<string, InventoryEntry>();
  private readonly forgetListeners = new Set<(id: string) => void>();

  private constructor(
    readonly path: string,
    private readonly clock: Clock,
  ) {}

  static load(path: string, clock: Clock): Inventory {
    const inv = new Inventory(path, clock);
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
    for (const e of oldestFirst) inv.entries.set(e.id, e);
    inv.trim(undefined, () => false);
    return inv;
  }

  /** Called with each identity the cap forgets (the watch forgets its state for it). */
  onForget(listener: (id: string) => void): () => void {
    this.forgetListeners.add(listener);
    return () => this.forgetListeners.delete(listener);
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
   * not in use (an agent of this run has it) and not `newest`. Blocked ones alone may exceed the cap.
   */
  private trim(newest: string | undefined, inUse: (id: string) => boolean): void {
    if (this.entries.size <= MAX_IDENTITIES) return;
    for (const [id, e] of this.entries) {
      if (this.entries.size <= MAX_IDENTITIES) break;
      if (e.blocked !== null || id === newest || inUse(id)) continue;
      this.entries.delete(id);
      for (const l of this.forgetListeners) l(id);
    }
  }

  /** Writes the whole inventory to a temporary file, fsyncs it and renames it over the old one. */
  save(): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    try {
      writeSync(fd, JSON.stringify({ v: 1, agents: [...this.entries.values()] }, null, 1) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }

  /**
   * Records a connection of an agent; returns its entry (created on first sight, which may forget the least
   * recently seen identity past the cap; `inUse` names identities that must stay).
   */
  seen(
    a: { name: string; kind: string; owner: string; parentIdentity?: string; process?: { exe?: string; sha256?: string } },
    inUse: (id: string) => boolean = () => false,
  ): InventoryEntry {
    const id = identityOf(a.owner, a.name, a.kind, a.parentIdentity);
    let e: InventoryEntry | undefined = this.entries.get(id);
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
    this.trim(id, (x) => x === a.parentIdentity || inUse(x));
    return e;
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
  }

  stopped(id: string): void {
    const e = this.entries.get(id);
    if (e) e.stopped = true;
  }

  block(id: string, reason?: string): InventoryEntry {
    const e = this.entries.get(id);
    if (!e) throw new WritError('WRIT_AGENT_NOT_FOUND', 'no agent with that identity in the inventory');
    e.blocked = { at: this.now(), ...(reason ? { reason } : {}) };
    this.save();
    return e;
  }

  unblock(id: string): InventoryEntry {
    const e = this.entries.get(id);
    if (!e) throw new WritError('WRIT_AGENT_NOT_FOUND', 'no agent with that identity in the inventory');
    e.blocked = null;
    this.save();
    return e;
  }

  isBlocked(id: string): boolean {
    return this.entries.get(id)?.blocked != null;
  }

  list(): InventoryEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : a.id.localeCompare(b.id)));
  }
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
