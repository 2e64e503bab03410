// What the audit panel posts to its webview, and when, without the editor: the log on disk at once (reading it
// needs no broker), then, once the broker follows, what it wrote in between, then its live records, each record
// once by `seq`. A broker that does not take the follow in time, or that the supervisor calls unresponsive, is said
// in the panel: the developer looking at what a runaway agent did sees the log, not an empty panel.
import { AuditRecord } from '../broker/protocol';
import type { ExtensionToWebview, VerifyView } from '../broker/protocol';
import { readAuditLines, tailStart } from '../broker/audit/lines';
import { MAX_PANEL_RECORDS } from './auditRows';

/** Records posted per message while reading the file: keeps each postMessage small. */
const LOAD_CHUNK = 5000;
/**
 * How long the broker may take to follow before the panel says it is not answering. A live broker takes it in
 * milliseconds; the supervisor's `unresponsive` comes only after 15 s of silence, too late for a developer who
 * opened the panel to see what just happened.
 */
export const FOLLOW_NOTE_MS = 2000;

export interface AuditFeedDeps {
  /** The live log of this window's broker. */
  auditPath(): string;
  /**
   * Follow the broker's audit records (on) or stop (off). Resolves once the broker follows (every record it writes
   * from then on comes to append()), or at once when there is none. May never settle while the broker is silent.
   */
  follow(on: boolean): Promise<void>;
  post(msg: ExtensionToWebview): void;
  /** Agents that can be stopped now (live, not revoked): only their rows offer Stop. */
  liveAgents(): string[];
  verify(): Promise<VerifyView>;
  log(line: string): void;
  /** Overrides FOLLOW_NOTE_MS; Infinity: only the supervisor's phase says the broker is silent. */
  silentAfterMs?: number;
  /** Live records held while a load reads the file, past which they are dropped and the file read once more (tests). */
  maxBacklog?: number;
}

export class AuditFeed {
  private opened = false;
  /** The webview said `ready` (it can be loaded), and how many loads were started: only the latest may post. */
  private webviewReady = false;
  private loads = 0;
  /** False until the file is read and the broker follows: live records wait in `backlog`. */
  private streaming = false;
  private backlog: AuditRecord[] = [];
  /** The backlog overflowed while a load read the file: what it dropped is in the file, for one more read. */
  private backlogDropped = false;
  /** The newest record posted, and the byte offset just past the last whole line read from the file. */
  private lastSeq = -1;
  private offset = 0;
  /** The latest follow(true), settled or not (never rejects), and its round: a later one supersedes it. */
  private following: Promise<void> = Promise.resolve();
  private followRound = 0;
  private followTimer: NodeJS.Timeout | undefined;
  /** A follow went unanswered past silentAfterMs; cleared once live records flow again (a new broker's follow too). */
  private followOverdue = false;
  /** The supervisor's phase is `unresponsive`. */
  private phaseSilent = false;
  /** What the webview shows: it starts with no note. */
  private postedAnswering = true;
  private flushTimer: NodeJS.Timeout | undefined;
  /** The live agents last posted: state refreshes come every 100 ms while agents work, changes rarely. */
  private postedLive: string | undefined;

  constructor(private readonly deps: AuditFeedDeps) {}

  /** The panel was created: records written from here on come in (and duplicates go). */
  open(): void {
    this.opened = true;
    this.startFollow();
  }

  /** The webview listens: load the log. */
  ready(): void {
    if (!this.opened) return;
    this.webviewReady = true;
    void this.load();
  }

  /** A record the broker just wrote. */
  append(r: AuditRecord): void {
    // Before the webview is ready nothing is read yet: the first read takes every record from the file.
    if (!this.opened || !this.webviewReady) return;
    if (!this.streaming && this.backlog.length >= (this.deps.maxBacklog ?? MAX_PANEL_RECORDS)) {
      // A load is reading the file: rather than hold more, read the file once more after it (load() does).
      this.backlog = [];
      this.backlogDropped = true;
    }
    this.backlog.push(r);
    if (this.streaming) this.scheduleFlush();
  }

  agentsChanged(): void {
    if (this.streaming) this.postAgents(false);
  }

  /** A new broker (which follows nothing yet), and a new log (a restart may have recovered it): follow, load again. */
  reload(): void {
    if (!this.opened) return;
    this.startFollow();
    if (this.webviewReady) void this.load();
  }

  /** The supervisor calls the broker unresponsive (true) or running again (false). */
  brokerSilent(silent: boolean): void {
    this.phaseSilent = silent;
    this.postNote();
  }

  async verify(): Promise<void> {
    this.deps.post({ type: 'verify', result: { state: 'running' } });
    const result = await this.deps.verify();
    if (this.opened) this.deps.post({ type: 'verify', result });
  }

  close(): void {
    if (this.opened) void this.deps.follow(false).catch(() => undefined);
    this.opened = false;
    this.webviewReady = false;
    this.streaming = false;
    this.backlog = [];
    this.backlogDropped = false;
    this.postedLive = undefined;
    this.postedAnswering = true;
    this.followOverdue = false;
    this.followRound++;
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  private startFollow(): void {
    const round = ++this.followRound;
    clearTimeout(this.followTimer);
    this.followTimer = undefined;
    const settled = (): void => {
      if (round !== this.followRound) return;
      clearTimeout(this.followTimer);
      this.followTimer = undefined;
    };
    this.following = this.deps.follow(true).then(settled, settled);
    const ms = this.deps.silentAfterMs ?? FOLLOW_NOTE_MS;
    if (!Number.isFinite(ms)) return;
    this.followTimer = setTimeout(() => {
      this.followTimer = undefined;
      if (round !== this.followRound) return;
      this.followOverdue = true;
      this.postNote();
    }, ms);
  }

  /** Tells the webview whether the broker answers, when that changed. */
  private postNote(): void {
    if (!this.webviewReady) return;
    const answering = !this.phaseSilent && !this.followOverdue;
    if (answering === this.postedAnswering) return;
    this.postedAnswering = answering;
    this.deps.post({ type: 'broker', answering });
  }

  /**
   * The file now, then (once the broker follows) the file again from where that read stopped, then the stream.
   * The second read is what loses nothing: a record the broker wrote before it took the follow is in the file by
   * then, and one written after comes live; the stream's copies of records already read go by `seq`. A later load
   * (a new broker) supersedes one still running, which stops posting.
   */
  private async load(): Promise<void> {
    const load = ++this.loads;
    const current = (): boolean => this.opened && load === this.loads;
    this.streaming = false;
    this.postNote();
    if (!(await this.readLog(current, true))) return;
    this.postAgents(true);
    void this.verify();
    await this.following;
    if (!current()) return;
    do {
      this.backlogDropped = false;
      if (!(await this.readLog(current, false))) return;
    } while (this.backlogDropped);
    this.followOverdue = false;
    this.streaming = true;
    this.flush();
    this.postNote();
  }

  /**
   * Posts the log's records: its tail when `fresh` (replacing what the panel holds), else those after the last
   * read. False when a later load superseded this one; only a current read updates where the next one starts.
   */
  private async readLog(current: () => boolean, fresh: boolean): Promise<boolean> {
    const path = this.deps.auditPath();
    const records: AuditRecord[] = [];
    let reset = fresh;
    let lastSeq = fresh ? -1 : this.lastSeq;
    let at = fresh ? 0 : this.offset;
    const post = (): void => {
      // A record's seq is its position in the log: the first one of a fresh load says how many come before it.
      const older = reset ? records[0]?.seq : undefined;
      this.deps.post({ type: 'records', reset, records: records.splice(0), ...(older === undefined ? {} : { older }) });
      reset = false;
    };
    try {
      // Only what the panel holds: a log of millions of records is read from its tail, not parsed whole.
      if (fresh) at = await tailStart(path, MAX_PANEL_RECORDS);
      for await (const l of readAuditLines(path, { start: at })) {
        if (!l.terminated) break; // being written: the next read starts at it
        at += l.length + 1;
        let value: unknown;
        try {
          value = JSON.parse(l.bytes.toString('utf8'));
        } catch {
          continue; // verification reports a bad line; the panel shows what it can
        }
        const r = AuditRecord.safeParse(value);
        if (!r.success || r.data.seq <= lastSeq) continue;
        records.push(r.data);
        lastSeq = r.data.seq;
        if (records.length >= LOAD_CHUNK) {
          if (!current()) return false;
          post();
        }
      }
    } catch (e) {
      // Not there yet (a broker that has not started): nothing to show, nothing to say.
      const missing = (e as NodeJS.ErrnoException).code === 'ENOENT' || ((e as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT');
      if (!missing) this.deps.log(`writ: cannot read the audit log: ${(e as Error).message}`);
    }
    if (!current()) return false;
    if (reset || records.length > 0) post();
    this.lastSeq = lastSeq;
    this.offset = at;
    return true;
  }

  private postAgents(always: boolean): void {
    const live = this.deps.liveAgents();
    const key = [...live].sort().join(' ');
    if (!always && key === this.postedLive) return;
    this.postedLive = key;
    this.deps.post({ type: 'agents', live });
  }

  private scheduleFlush(): void {
    // One post per burst, well inside the 100 ms from the broker's write to the row.
    this.flushTimer ??= setTimeout(() => this.flush(), 15);
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    // A timer set while streaming may fire during a later load: that load posts the file's records and then flushes.
    if (!this.streaming) return;
    const fresh = this.backlog.filter((r) => r.seq > this.lastSeq);
    this.backlog = [];
    if (fresh.length === 0) return;
    this.lastSeq = fresh[fresh.length - 1]!.seq;
    this.deps.post({ type: 'records', reset: false, records: fresh });
  }
}
