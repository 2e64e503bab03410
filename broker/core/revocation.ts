// Revocations: what is revoked (a token, a grant, a task, an agent and so its sub-agents, or everything issued so
// far), checked from a token's claims alone, and persisted so a restart keeps them until what they cover expires.
import { fdatasync, openSync, writeSync, fsyncSync, closeSync, readFileSync, renameSync, constants } from 'node:fs';
import { z } from 'zod';
import { WritError } from '../errors';
import type { Clock } from './clock';
import { seconds } from './clock';
import { CLOCK_TOLERANCE_SECONDS } from './tokens';

const Entry = z.strictObject({
  kind: z.enum(['token', 'grant', 'task', 'agent', 'all']),
  /** jti, grant id, task id or agent id; empty for `all`. */
  id: z.string(),
  /** Epoch seconds the revocation was made. */
  at: z.number().int(),
  /** Epoch seconds after which no token it covers can still be live: the entry may be forgotten. */
  until: z.number().int(),
  /**
   * An `agent` entry's session credential, by its SHA-256 (hex; never the credential): a broker run after this one
   * refuses it rather than take it as a new agent's (authority.ts, `introduce`), as long as the entry is kept.
   */
  session: z.string().regex(/^[0-9a-f]{64}$/).optional(),
}).refine((e) => e.session === undefined || e.kind === 'agent', { message: 'only an agent entry names a session' });
export type RevocationEntry = z.infer<typeof Entry>;

export interface RevocableClaims {
  jti: string;
  grant_id: string;
  /** The task the token was issued for (`task_id`; an exchanged token keeps its parent token's). */
  task_id: string;
  /** The grants above `grant_id` (an exchanged token's `parent_grant_ids`). */
  parent_grant_ids?: readonly string[];
  iat: number;
  /** The agent chain, current first. */
  chain: readonly string[];
}

export class RevocationStore {
  private readonly tokens = new Map<string, number>();
  private readonly grants = new Map<string, number>();
  private readonly tasks = new Map<string, number>();
  private readonly agents = new Map<string, number>();
  /** An agent's session hash, for the revoked agents that had one; and each such hash → the `until` of its entry. */
  private readonly agentSessions = new Map<string, string>();
  private readonly sessions = new Map<string, number>();
  /**
   * Tokens issued strictly before this second are revoked. The broker dates a revocation of everything a second
   * after the latest token it issued (and mints nothing until then); entries of older brokers are dated in their
   * own second, whose tokens they named one by one.
   */
  private everythingBefore = -1;
  private allUntil = -1;
  private readonly recordListeners = new Set<(e: RevocationEntry) => void>();
  /** The list, held open for appending from the end of `open` (one write and one fdatasync per revocation). */
  private fd = -1;

  private constructor(
    private readonly path: string,
    private readonly clock: Clock,
  ) {}

  /** Loads the file, drops what has expired and rewrites it compacted. A corrupt line is an error, not a reset. */
  static async open(path: string, clock: Clock): Promise<RevocationStore> {
    const store = new RevocationStore(path, clock);
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const now = seconds(clock.now());
    const lines = text.split('\n');
    const complete = text.endsWith('\n') ? lines.slice(0, -1) : lines.slice(0, -1); // a torn last line was never acknowledged
    complete.forEach((line, i) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = undefined;
      }
      const r = Entry.safeParse(parsed);
      if (!r.success) {
        throw new WritError('WRIT_INTERNAL', `revocation list ${path} is corrupt at line ${i + 1}; refusing to start without it`);
      }
      // A token is still taken a few seconds past its `exp` (the clock tolerance): so is the entry that covers it.
      if (r.data.until + CLOCK_TOLERANCE_SECONDS > now) store.apply(r.data);
    });
    // Compact: write the live entries to a new file, fsync, rename over the old one.
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    try {
      const live = store.entries().map((e) => JSON.stringify(e) + '\n').join('');
      if (live) writeSync(fd, live);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    store.fd = openSync(path, constants.O_WRONLY | constants.O_APPEND, 0o600);
    return store;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  /**
   * Called for each revocation as it is applied, before it is written: what the broker pushes to verifiers at
   * once, so they refuse while the fsync is still under way. Every revocation's coverage passes through here.
   */
  onRecord(listener: (e: RevocationEntry) => void): () => void {
    this.recordListeners.add(listener);
    return () => this.recordListeners.delete(listener);
  }

  private apply(e: RevocationEntry): void {
    switch (e.kind) {
      case 'token':
        this.tokens.set(e.id, Math.max(e.until, this.tokens.get(e.id) ?? 0));
        break;
      case 'grant':
        this.grants.set(e.id, Math.max(e.until, this.grants.get(e.id) ?? 0));
        break;
      case 'task':
        this.tasks.set(e.id, Math.max(e.until, this.tasks.get(e.id) ?? 0));
        break;
      case 'agent':
        this.agents.set(e.id, Math.max(e.until, this.agents.get(e.id) ?? 0));
        if (e.session !== undefined) {
          this.agentSessions.set(e.id, e.session);
          this.sessions.set(e.session, Math.max(e.until, this.sessions.get(e.session) ?? 0));
        }
        break;
      case 'all':
        this.everythingBefore = Math.max(this.everythingBefore, e.at);
        this.allUntil = Math.max(this.allUntil, e.until);
        break;
    }
  }

  entries(): RevocationEntry[] {
    const out: RevocationEntry[] = [];
    const now = seconds(this.clock.now());
    for (const [id, until] of this.tokens) out.push({ kind: 'token', id, at: now, until });
    for (const [id, until] of this.grants) out.push({ kind: 'grant', id, at: now, until });
    for (const [id, until] of this.tasks) out.push({ kind: 'task', id, at: now, until });
    for (const [id, until] of this.agents) {
      const session = this.agentSessions.get(id);
      out.push({ kind: 'agent', id, at: now, until, ...(session === undefined ? {} : { session }) });
    }
    if (this.everythingBefore >= 0) out.push({ kind: 'all', id: '', at: this.everythingBefore, until: this.allUntil });
    return out;
  }

  /**
   * Applies a revocation, tells the record listeners, and resolves once it is durable (written and fdatasync-ed),
   * so it is never lost to a crash after the caller is answered. Applied first: from this moment the broker and
   * anyone told refuse what it covers. A crash before the fsync loses only a revocation whose caller was never
   * answered; verifiers told early keep refusing (the safe side).
   */
  async add(kind: RevocationEntry['kind'], id: string, until: number, at: number = seconds(this.clock.now())): Promise<RevocationEntry> {
    return (await this.write([{ kind, id, at, until }]))[0]!;
  }

  /** Several revocations at once (an agent and its sub-agents, a task's grants): applied together, one write, one fdatasync. */
  addMany(items: readonly { kind: RevocationEntry['kind']; id: string; session?: string }[], until: number): Promise<RevocationEntry[]> {
    const at = seconds(this.clock.now());
    return this.write(items.map(({ kind, id, session }) => ({ kind, id, at, until, ...(session === undefined ? {} : { session }) })));
  }

  private async write(entries: RevocationEntry[]): Promise<RevocationEntry[]> {
    if (this.fd < 0) throw new WritError('WRIT_INTERNAL', 'the revocation list is closed');
    for (const e of entries) {
      this.apply(e);
      for (const l of this.recordListeners) {
        try {
          l(e);
        } catch {
          // telling others is best effort; the durable record below is not
        }
      }
    }
    if (entries.length === 0) return entries;
    // Lines of a few hundred bytes to the page cache: one short syscall here, the wait is in the fdatasync.
    let text = '';
    for (const e of entries) text += JSON.stringify(e) + '\n';
    writeSync(this.fd, text);
    const fd = this.fd;
    await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    return entries;
  }

  /** Epoch seconds: every token issued before this second is revoked (an `all` entry); -1 when there is none. */
  get allBefore(): number {
    return this.everythingBefore;
  }

  isAgentRevoked(agentId: string): boolean {
    return this.agents.has(agentId);
  }

  /** Whether a revoked agent's entry names this session (its SHA-256, hex). */
  isSessionRevoked(sessionHash: string): boolean {
    return this.sessions.has(sessionHash);
  }

  /** Whether this task was revoked (a `task` entry). */
  isTaskRevoked(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  /** Whether this jti was revoked by itself (a `token` entry). */
  hasToken(jti: string): boolean {
    return this.tokens.has(jti);
  }

  isRevoked(c: RevocableClaims): boolean {
    if (this.tokens.has(c.jti) || this.grants.has(c.grant_id) || this.tasks.has(c.task_id)) return true;
    if (c.parent_grant_ids) for (const g of c.parent_grant_ids) if (this.grants.has(g)) return true;
    if (c.iat < this.everythingBefore) return true;
    for (const a of c.chain) if (this.agents.has(a)) return true;
    return false;
  }
}
