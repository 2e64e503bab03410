// JSON-RPC 2.0 over one WebSocket: parse, validate against the protocol's schemas, dispatch to the
// authority, answer. A bad frame gets a coded error naming the field, never an echo; the connection lives on.
import type { WebSocket, RawData } from 'ws';
import { WritError, asWritError } from '../errors';
import { JsonRpcRequest, MAX_FRAME_BYTES, Methods, PROTOCOL_VERSION, RPC, issuePath } from '../protocol';
import type { BlockEvent, JsonRpcErrorObject, MethodName, PeerProcess, RevocationEvent, RevocationSnapshot } from '../protocol';
import type { RevocationEntry } from '../core/revocation';
import type { Authority } from '../core/authority';
import { OpenUses } from '../core/authority';

export interface RpcServices {
  authority: Authority;
  status: () => import('../protocol').MethodResult<'status'>;
  /** Kernel-derived identity of the peer, where known. */
  peer?: () => Promise<PeerProcess | undefined>;
  /** The client process of a connection a resource reports a token came on (`token.used`), from the kernel. */
  presenter?: (c: NonNullable<import('../protocol').MethodParams<'token.used'>['connection']>) => Promise<{ process: PeerProcess } | { notFound: string }>;
  /** Milliseconds since the epoch, for the use-report window. */
  now?: () => number;
  /** The revocation journal's place now (RevocationJournal.place), for a subscriber that asks for it. */
  journal?: () => import('../protocol').RevocationJournalPlace | undefined;
}

/**
 * Methods usable before `hello`: read-only views, revocation (it only takes away), subscriptions and use reports
 * (resource verifiers are not agents; their reports are bounded below).
 */
/** Calls worked on at once per connection, and calls that may wait behind them before refusals start. */
export const MAX_INFLIGHT = 16;
export const MAX_QUEUED = 1024;

/** Calls a connection may have recorded through `token.uses` in one second. */
export const USES_PER_SECOND = 2000;

const OPEN_METHODS = new Set<MethodName>(['hello', 'status', 'agents.list', 'revoke', 'subscribe', 'revocations.page', 'token.used', 'token.uses', 'token.uses.open', 'token.use.ended', 'agent.stopped', 'inventory.list', 'findings.list', 'agents.block', 'revocation.ack']);
/** Room left in a frame for the answer around a snapshot's or a page's jtis (envelope, id, other lists' keys). */
const PAGE_BYTES = MAX_FRAME_BYTES - 1024;

/** A snapshot's ids in paging order: every list, the ones that cover most first. */
type SnapshotId = { list: 'blockedIdentities' | 'grantIds' | 'taskIds' | 'agentIds' | 'jtis'; id: string };
const SNAPSHOT_LISTS = ['blockedIdentities', 'grantIds', 'taskIds', 'agentIds', 'jtis'] as const;
/** `blockedIdentities` only in a page that has some: a subscriber not to `blocks` never gets the key. */
type SnapshotPage = { blockedIdentities?: string[]; grantIds: string[]; taskIds: string[]; agentIds: string[]; jtis: string[] };

function snapshotIds(snap: RevocationSnapshot): SnapshotId[] {
  return SNAPSHOT_LISTS.flatMap((list) => (snap[list] ?? []).map((id) => ({ list, id })));
}

/** The ids from `from` on that fit in `budget` bytes of lists (at least one, so paging always moves), and where it ended. */
function page(ids: readonly SnapshotId[], from: number, budget: number): { lists: SnapshotPage; end: number } {
  const lists: SnapshotPage = { grantIds: [], taskIds: [], agentIds: [], jtis: [] };
  let bytes = 0;
  let i = from;
  for (; i < ids.length; i++) {
    // The id as JSON and a comma: an upper bound on what it adds to its list.
    const cost = Buffer.byteLength(JSON.stringify(ids[i]!.id)) + 1;
    if (i > from && bytes + cost > budget) break;
    bytes += cost;
    (lists[ids[i]!.list] ??= []).push(ids[i]!.id);
  }
  return { lists, end: i };
}

/**
 * The `subscribe` answer for a subscriber that pages: as many ids as fit in one frame, every list counted, and
 * `more` if some are left for `revocations.page`. A broker that revoked thousands of tokens (or grants, or agents)
 * one by one within their lifetime would otherwise answer past the frame limit it holds subscribers to.
 */
export function firstPage(snap: RevocationSnapshot): { snapshot: RevocationSnapshot; rest: readonly SnapshotId[] | undefined } {
  if (Buffer.byteLength(JSON.stringify(snap)) <= PAGE_BYTES) return { snapshot: snap, rest: undefined };
  const ids = snapshotIds(snap);
  const { lists, end } = page(ids, 0, PAGE_BYTES);
  // A subscriber to blocks gets the key even when its first page has none of them: the list is the whole of it.
  const blocked = snap.blockedIdentities === undefined || lists.blockedIdentities !== undefined ? {} : { blockedIdentities: [] };
  const snapshot: RevocationSnapshot = { ...blocked, ...lists, ...(snap.allBefore === undefined ? {} : { allBefore: snap.allBefore }) };
  if (end < ids.length) snapshot.more = true;
  return { snapshot, rest: end < ids.length ? ids : undefined };
}

/** Page `after` of a snapshot whose answer said `more`: the next ids that fit in one frame. */
export function nextPage(ids: readonly SnapshotId[], after: number): SnapshotPage & { more?: true } {
  const { lists, end } = page(ids, after, PAGE_BYTES);
  return end < ids.length ? { ...lists, more: true } : lists;
}

/**
 * Answers waiting in the broker for a peer that does not read them, past which the connection is ended: a
 * client that sends calls and never reads the answers would otherwise grow the broker's memory until the
 * heartbeat noticed (the kernel's socket buffers come on top of this).
 */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** How long a revoke call waits for acknowledging subscribers before it returns anyway. */
export const REVOCATION_ACK_TIMEOUT_MS = 1000;

/** `token.used` reports audited per connection per second; the rest are dropped (a report is never worth a stall). */
export const MAX_USE_REPORTS_PER_SECOND = 100;

/** The `revocation` notification, serialised and encoded once: the same bytes go to every subscriber. */
export function revocationFrame(event: RevocationEvent): Buffer {
  return Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'revocation', params: event }));
}

const EVENT_LISTS = ['jtis', 'agentIds', 'taskIds', 'grantIds'] as const;

/**
 * A revocation as `revocation` notifications of at most `maxBytes` each, for subscribers that do not acknowledge:
 * one frame when it fits (a grant, task or agent revocation names no jtis, so nearly always), else several with
 * the event's target and `at`, whose lists together are exactly the event's, in order. A subscriber applies each
 * as it comes, so a frame limit of its own (or the 4 MiB this side buffers) no longer cuts it off mid-revocation.
 * An event with a `seq` is one entry of the revocation list, acknowledged as one: it is never split.
 */
export function revocationFrames(event: RevocationEvent, maxBytes = MAX_FRAME_BYTES): Buffer[] {
  if (event.seq !== undefined) throw new TypeError('revocationFrames: an acknowledged event (seq) is never split');
  const whole = revocationFrame(event);
  if (whole.byteLength <= maxBytes) return [whole];
  const empty = (): RevocationEvent => ({
    target: event.target,
    at: event.at,
    jtis: [],
    agentIds: [],
    taskIds: [],
    ...(event.grantIds === undefined ? {} : { grantIds: [] }),
  });
  const base = revocationFrame(empty()).byteLength;
  const frames: Buffer[] = [];
  let part = empty();
  let bytes = base;
  let ids = 0;
  for (const list of EVENT_LISTS) {
    for (const id of event[list] ?? []) {
      // The id as JSON, and a comma: an upper bound on what it adds (the first of a list has no comma).
      const cost = Buffer.byteLength(JSON.stringify(id)) + 1;
      if (ids > 0 && bytes + cost > maxBytes) {
        frames.push(revocationFrame(part));
        part = empty();
        bytes = base;
        ids = 0;
      }
      // Never dropped, even if alone it would pass the bound (ids are at most 200 code points: it cannot).
      part[list]!.push(id);
      bytes += cost;
      ids++;
    }
  }
  if (ids > 0) frames.push(revocationFrame(part));
  return frames;
}

/**
 * Resolves once every one of `subscribers` has acknowledged revocation `seq` or has gone, or after `timeoutMs`:
 * one timer for them all, and nothing of the wait kept after it.
 */
export function acknowledged(subscribers: readonly RpcConnection[], seq: number, timeoutMs = REVOCATION_ACK_TIMEOUT_MS): Promise<void> {
  return new Promise<void>((resolve) => {
    let left = subscribers.length;
    const forget: (() => void)[] = [];
    const finish = () => {
      clearTimeout(timer);
      for (const f of forget) f();
      resolve();
    };
    const timer = setTimeout(finish, timeoutMs);
    for (const s of subscribers) forget.push(s.onAck(seq, () => --left === 0 && finish()));
    if (left === 0) finish();
  });
}

/** The `blocks` notification for one block change, serialised once for every subscriber to blocks. */
export function blockFrame(event: BlockEvent): Buffer {
  return Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'blocks', params: event }));
}

/** One entry of the revocation list as an event: what a verifier needs to refuse every token it covers. */
export function eventOfEntry(e: RevocationEntry): RevocationEvent {
  return {
    target: e.kind === 'token' ? { kind: 'token', jti: e.id } : e.kind === 'all' ? { kind: 'all' } : { kind: e.kind, id: e.id },
    at: e.at,
    jtis: e.kind === 'token' ? [e.id] : [],
    agentIds: e.kind === 'agent' ? [e.id] : [],
    taskIds: e.kind === 'task' ? [e.id] : [],
    grantIds: e.kind === 'grant' ? [e.id] : [],
  };
}

/**
 * The `seq` of a `revocation.ack` notification in exactly the shape JsonRpcRequest and the method's params accept
 * (`{"jsonrpc":"2.0","method":"revocation.ack","params":{"seq":N}}`, no id, no other key); undefined for anything else.
 */
export function revocationAckSeq(raw: unknown): number | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const m = raw as Record<string, unknown>;
  if (m.method !== 'revocation.ack' || m.jsonrpc !== '2.0' || Object.keys(m).length !== 3) return undefined;
  const p = m.params;
  if (typeof p !== 'object' || p === null || Array.isArray(p) || Object.keys(p).length !== 1) return undefined;
  const seq = (p as Record<string, unknown>).seq;
  return Number.isSafeInteger(seq) ? (seq as number) : undefined;
}

export class RpcConnection {
  agentId: string | undefined;
  /** A `hello` is being answered on this connection. */
  private introducing = false;
  /** The peer process as of `hello`: what the tokens minted on this connection are bound to. */
  private process: PeerProcess | undefined;
  subscribed = false;
  /** This connection's `subscribe` snapshot, while it pages through it (`revocations.page`). */
  private snapshotIds: readonly SnapshotId[] | undefined;
  private readonly gone = new AbortController();
  private useWindow = { second: -1, count: 0 };
  /** `agent.stopped` reports on this connection (a few at most: one `writ exec` stops one tree). */
  private stopReports = 0;
  /** Calls recorded through `token.uses` and `token.uses.open` in the current second (USES_PER_SECOND). */
  private usesWindow = { second: -1, calls: 0 };
  /** The uses this connection recorded through `token.uses.open` and has not ended: forgotten when it closes. */
  private readonly openUses = new OpenUses();

  constructor(
    private readonly ws: WebSocket,
    private readonly services: RpcServices,
  ) {
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', () => {
      this.gone.abort(new WritError('WRIT_DENIED', 'connection closed'));
      // A subscriber that has gone is waited for no longer.
      const waiting = [...this.acks.values()];
      this.acks.clear();
      for (const done of waiting) done();
      if (this.agentId !== undefined) void services.authority.disconnected(this.agentId);
      services.authority.forgetOpenUses(this.openUses);
    });
    ws.on('error', () => ws.terminate());
  }

  get closed(): boolean {
    return this.gone.signal.aborted;
  }

  /** A subscriber that promised to acknowledge each revocation it applies (a verifier). */
  get acknowledging(): boolean {
    return this.subscribed && this.acknowledges && !this.closed;
  }

  /**
   * Sends a `revocation` notification, its bytes encoded once by the caller for every subscriber. Nothing else
   * happens here: the caller writes every subscriber's frame before it sets up any wait (`acknowledged`).
   * False if this connection is not subscribed or could not be written to.
   */
  pushRevocation(frame: Buffer): boolean {
    return this.subscribed && this.sendFrame(frame);
  }

  /** Sends a `blocks` notification (encoded once by the caller); false if this connection does not hear blocks. */
  pushBlock(frame: Buffer): boolean {
    return this.subscribed && this.hearsBlocks && !this.closed && this.sendFrame(frame);
  }

  /**
   * Calls `done` once, when this subscriber acknowledges revocation `seq` or goes (at once if it has gone).
   * The function returned forgets the wait.
   */
  onAck(seq: number, done: () => void): () => void {
    if (this.closed) {
      done();
      return () => undefined;
    }
    this.acks.set(seq, done);
    return () => this.acks.delete(seq);
  }

  /** Who sends a use report (this connection), and how the presenting process of its `connection` is found. */
  private async useReporter(connection: import('../protocol').MethodParams<'token.used'>['connection']) {
    const process = this.services.peer ? await this.services.peer() : undefined;
    const lookup = this.services.presenter;
    const presenter =
      connection === undefined ? undefined : lookup ? () => lookup(connection) : async () => ({ notFound: 'not looked up on this platform' });
    const reporter = { ...(this.agentId === undefined ? {} : { agentId: this.agentId }), ...(process === undefined ? {} : { process }) };
    return { reporter, presenter };
  }

  private acknowledges = false;
  /** Subscribed to `blocks` too: sent each block change and the blocked identities in its snapshot. */
  private hearsBlocks = false;
  private readonly acks = new Map<number, () => void>();

  private acknowledge(seq: number): void {
    const done = this.acks.get(seq);
    if (done === undefined) return;
    this.acks.delete(seq); // a second ack for the same event counts for nothing
    done();
  }

  /**
   * Closes after the calls already in flight are answered (they fail: the agent is revoked by now), so the
   * agent learns why (e.g. WRIT_AGENT_BLOCKED) rather than seeing a bare close. Bounded by a short timer.
   */
  close(code: number, reason: string): void {
    if (this.inflight === 0) return this.ws.close(code, reason);
    this.closeWhenIdle = () => this.ws.close(code, reason);
    setTimeout(() => this.closeWhenIdle?.(), 1000).unref();
  }

  private inflight = 0;
  private closeWhenIdle: (() => void) | undefined;

  private settled(): void {
    this.inflight--;
    const next = this.queued.shift();
    // The next queued call starts on a later turn, so other connections' frames get the loop in between.
    if (next) setImmediate(() => (this.closed ? undefined : this.run(next)));
    else if (this.inflight === 0 && this.closeWhenIdle) {
      const close = this.closeWhenIdle;
      this.closeWhenIdle = undefined;
      close();
    }
  }

  private send(msg: unknown): void {
    this.sendFrame(JSON.stringify(msg));
  }

  /** A Buffer is sent as a text frame too: every frame of this protocol is JSON text. */
  private sendFrame(frame: string | Buffer): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.ws.terminate(); // the peer is not reading: drop the connection and what waits for it
      return false;
    }
    this.ws.send(frame, { binary: false });
    return true;
  }

  private sendError(id: string | number | null, rpcCode: number, e: WritError): void {
    const error: JsonRpcErrorObject = {
      code: rpcCode,
      message: e.message,
      data: {
        code: e.code,
        ...(e.path === undefined ? {} : { path: e.path }),
        ...(e.data === undefined ? {} : { detail: e.data }),
      },
    };
    this.send({ jsonrpc: '2.0', id, error });
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength;
    if (size > MAX_FRAME_BYTES) {
      return this.sendError(null, RPC.INVALID_REQUEST, new WritError('WRIT_FRAME_TOO_LARGE', `frames are limited to ${MAX_FRAME_BYTES} bytes`));
    }
    if (isBinary) return this.sendError(null, RPC.INVALID_REQUEST, new WritError('WRIT_BAD_REQUEST', 'frames must be text'));
    let raw: unknown;
    try {
      raw = JSON.parse(data.toString());
    } catch {
      return this.sendError(null, RPC.PARSE_ERROR, new WritError('WRIT_PARSE_ERROR', 'the frame is not JSON'));
    }
    // Every verifier's ack arrives while others are still being told of the revocation: taken here, without the
    // schema walk and the call machinery, when it is exactly the notification the schemas accept. Else, below.
    const seq = revocationAckSeq(raw);
    if (seq !== undefined) return this.acknowledge(seq);
    const envelope = JsonRpcRequest.safeParse(raw);
    if (!envelope.success) {
      const id = typeof raw === 'object' && raw !== null && 'id' in raw ? (raw as { id: unknown }).id : null;
      const safeId = typeof id === 'number' || (typeof id === 'string' && id.length <= 128) ? id : null;
      return this.sendError(safeId, RPC.INVALID_REQUEST, new WritError('WRIT_BAD_REQUEST', 'not a JSON-RPC 2.0 request', { path: issuePath(envelope.error) }));
    }
    const req = envelope.data;
    // Fairness: one connection has at most MAX_INFLIGHT calls being worked on; more wait in a bounded queue,
    // and past that they are refused at once. Without this a flood of frames on one socket held the event
    // loop and the audit batches, and another agent's request waited for the whole flood.
    if (this.inflight >= MAX_INFLIGHT) {
      if (this.queued.length >= MAX_QUEUED) {
        if (req.id !== undefined) this.answerError(req.id, new WritError('WRIT_RATE_LIMITED', `more than ${MAX_INFLIGHT + MAX_QUEUED} calls are waiting on this connection`));
        return;
      }
      this.queued.push(req);
      return;
    }
    this.run(req);
  }

  private readonly queued: JsonRpcRequest[] = [];

  private run(req: JsonRpcRequest): void {
    this.inflight++;
    void this.dispatch(req).then(
      (result) => {
        if (req.id !== undefined) this.send({ jsonrpc: '2.0', id: req.id, result });
        this.settled();
      },
      (e: unknown) => {
        const err = asWritError(e);
        try {
          if (req.id !== undefined) this.answerError(req.id, err);
        } finally {
          this.settled();
        }
      },
    );
  }

  private answerError(id: string | number, err: WritError): void {
    const rpcCode =
      err.code === 'WRIT_METHOD_NOT_FOUND'
        ? RPC.METHOD_NOT_FOUND
        : err.code === 'WRIT_BAD_REQUEST'
          ? RPC.INVALID_PARAMS
          : err.code === 'WRIT_INTERNAL'
            ? RPC.INTERNAL
            : RPC.APPLICATION;
    // Internal detail stays in-process; the wire gets the code.
    this.sendError(id, rpcCode, err.code === 'WRIT_INTERNAL' ? new WritError('WRIT_INTERNAL', 'internal error') : err);
  }


  private async dispatch(req: JsonRpcRequest): Promise<unknown> {
    if (!Object.hasOwn(Methods, req.method)) throw new WritError('WRIT_METHOD_NOT_FOUND', 'no such method');
    const method = req.method as MethodName;
    const parsed = Methods[method].params.safeParse(req.params);
    if (!parsed.success) {
      const path = issuePath(parsed.error);
      throw new WritError('WRIT_BAD_REQUEST', `invalid params${path ? ` at ${path}` : ''}`, { path: path ? `params.${path}` : 'params' });
    }
    if (!OPEN_METHODS.has(method) && this.agentId === undefined) {
      throw new WritError('WRIT_NOT_INTRODUCED', 'call hello first');
    }
    const a = this.services.authority;
    const caller = () => ({ agentId: this.agentId!, signal: this.gone.signal, ...(this.process === undefined ? {} : { process: this.process }) });
    switch (method) {
      case 'hello': {
        // Set before the first await: a second hello sent before the first is answered is refused too (it left
        // the first agent counted as connected for good).
        if (this.agentId !== undefined || this.introducing) throw new WritError('WRIT_BAD_REQUEST', 'hello was already called on this connection', { path: 'method' });
        this.introducing = true;
        const p = parsed.data as import('../protocol').MethodParams<'hello'>;
        let introduced: Awaited<ReturnType<typeof a.introduce>>;
        let peer: Awaited<ReturnType<NonNullable<typeof this.services.peer>>> | undefined;
        try {
          peer = this.services.peer ? await this.services.peer() : undefined;
          introduced = await a.introduce(p, peer);
        } catch (e) {
          this.introducing = false;
          throw e;
        }
        const { agentId, resumed } = introduced;
        if (this.closed) {
          void a.disconnected(agentId);
          throw new WritError('WRIT_DENIED', 'connection closed');
        }
        this.agentId = agentId;
        this.process = peer;
        return { protocol: PROTOCOL_VERSION, agentId, resumed, issuer: a.config.issuer, user: a.config.user };
      }
      case 'task.request':
        return a.requestTask(caller(), parsed.data as import('../protocol').MethodParams<'task.request'>);
      case 'token.mint':
        return a.mint(caller(), parsed.data as import('../protocol').MethodParams<'token.mint'>);
      case 'grants.list':
        return { grants: a.listGrants(this.agentId) };
      case 'agents.list':
        return { agents: a.listAgents() };
      case 'revoke': {
        const p = parsed.data as import('../protocol').MethodParams<'revoke'>;
        return a.revoke(p.target, this.agentId === undefined ? 'socket' : `agent:${this.agentId}`, p.reason);
      }
      case 'revocation.ack':
        this.acknowledge((parsed.data as import('../protocol').MethodParams<'revocation.ack'>).seq);
        return {};
      case 'subscribe': {
        const p = parsed.data as import('../protocol').MethodParams<'subscribe'>;
        this.subscribed = true;
        this.acknowledges = p.acknowledge === true;
        this.hearsBlocks = p.events.includes('blocks');
        const subscribed = this.hearsBlocks ? ['revocation', 'blocks'] : ['revocation'];
        // Set before the snapshot is taken: a revocation landing in between is both in it and pushed (a union); a
        // block change after it is pushed, and the subscriber applies it on top of the snapshot.
        const whole = a.revocationSnapshot(this.hearsBlocks);
        // Taken with the snapshot, in the same turn: what the journal gets after this offset is after the snapshot.
        const place = p.journal === true ? this.services.journal?.() : undefined;
        const journal = place === undefined ? {} : { journal: place };
        if (p.paged !== true) return { subscribed, revocations: whole, ...journal };
        const { snapshot, rest } = firstPage(whole);
        this.snapshotIds = rest;
        return { subscribed, revocations: snapshot, ...journal };
      }
      case 'revocations.page': {
        const { after } = parsed.data as import('../protocol').MethodParams<'revocations.page'>;
        const ids = this.snapshotIds;
        if (ids === undefined) throw new WritError('WRIT_BAD_REQUEST', 'no snapshot is being paged on this connection: subscribe with paged first', { path: 'after' });
        if (after >= ids.length) throw new WritError('WRIT_BAD_REQUEST', `after must be below the snapshot's ${ids.length} ids`, { path: 'after' });
        const answer = nextPage(ids, after);
        // Kept until the last page is given; a subscriber that stops early leaves it until it subscribes again or goes.
        if (answer.more === undefined) this.snapshotIds = undefined;
        return answer;
      }
      case 'token.used': {
        const second = Math.floor((this.services.now ?? Date.now)() / 1000);
        if (second !== this.useWindow.second) this.useWindow = { second, count: 0 };
        if (++this.useWindow.count > MAX_USE_REPORTS_PER_SECOND) return { recorded: false };
        const report = parsed.data as import('../protocol').MethodParams<'token.used'>;
        const { reporter, presenter } = await this.useReporter(report.connection);
        await a.recordUse(report, reporter, presenter);
        return { recorded: true };
      }
      case 'token.uses':
      case 'token.uses.open': {
        // Not dropped like `token.used` past its rate: the resource waits for this answer before it runs the calls.
        // Bounded in calls per second per connection instead (any local process may call it before hello), with a
        // refusal the resource turns into its own (the gate: 503).
        const report = parsed.data as import('../protocol').MethodParams<'token.uses'>;
        const second = Math.floor(Date.now() / 1000);
        if (second !== this.usesWindow.second) this.usesWindow = { second, calls: 0 };
        this.usesWindow.calls += report.calls.length;
        if (this.usesWindow.calls > USES_PER_SECOND) {
          throw new WritError('WRIT_RATE_LIMITED', `more than ${USES_PER_SECOND} recorded uses a second on this connection`);
        }
        const { reporter, presenter } = await this.useReporter(report.connection);
        // `token.uses` answers exactly `{recorded}`: a verifier before use ids parses it strictly.
        if (method === 'token.uses') return { recorded: await a.recordUses(report, reporter, presenter) };
        const uses = await a.recordOpenUses(report, reporter, presenter, this.openUses);
        return { recorded: uses.length, uses };
      }
      case 'token.use.ended': {
        // The end of a use this connection recorded is written once: bounded by `token.uses.open` itself. One open on
        // another connection is refused (not this one's to end). Any other report (a use forgotten, ended or made up;
        // none) shares the `token.used` budget and is dropped past it.
        const report = parsed.data as import('../protocol').MethodParams<'token.use.ended'>;
        if (!a.isOpenUse(report.use, this.openUses)) {
          const second = Math.floor((this.services.now ?? Date.now)() / 1000);
          if (second !== this.useWindow.second) this.useWindow = { second, count: 0 };
          if (++this.useWindow.count > MAX_USE_REPORTS_PER_SECOND) return { recorded: false };
        }
        await a.recordUseEnded(report, this.openUses);
        return { recorded: true };
      }
      case 'agent.stopped': {
        if (++this.stopReports > 4) return { recorded: false };
        const process = this.services.peer ? await this.services.peer() : undefined;
        await a.recordAgentStopped(parsed.data as import('../protocol').MethodParams<'agent.stopped'>, process);
        return { recorded: true };
      }
      case 'inventory.list':
        return { agents: a.inventoryView() };
      case 'findings.list':
        return { findings: a.oversight?.findings() ?? [] };
      case 'agents.block': {
        const p = parsed.data as import('../protocol').MethodParams<'agents.block'>;
        if (!a.oversight) throw new WritError('WRIT_AGENT_NOT_FOUND', 'this broker keeps no inventory');
        await a.oversight.block(p.identity, p.reason, this.agentId === undefined ? 'socket' : `agent:${this.agentId}`);
        const view = a.inventoryView().find((v) => v.id === p.identity);
        if (!view) throw new WritError('WRIT_AGENT_NOT_FOUND', 'no agent with that identity in the inventory');
        return view;
      }
      case 'status':
        return this.services.status();
    }
  }
}
