// The resource side (`writ/verify`): accept a Writ token only if the broker signed it for this audience, it is
// within its lifetime, nothing has revoked it, and its scopes cover what is asked. Keys come from the broker's
// RFC 8414 metadata and JWKS; revocations arrive over a WebSocket subscription; each use is reported back:
// `verify` reports it without waiting (findings only), `authorize` waits until the broker has recorded it.
//
// Fail closed: a token never seen before is refused while the subscription is down (its revocation cannot be
// known), and a revocation event that does not parse takes the subscription down until a fresh snapshot is in.
// Tokens already verified keep working on expiry alone until the broker is back.
import { createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { z } from 'zod';
import { WritError, isWritError } from '../errors';
import type { WritErrorCode } from '../errors';
import { MAX_CALLS_PER_USE_REPORT, MAX_FRAME_BYTES } from '../protocol';
import type { BlockEvent, ConcreteCall, MethodParams, RevocationEvent, RevocationJournalPlace, RevocationSnapshot, USE_END_OUTCOMES } from '../protocol';
import { allowsCall, formatScope, parseScope, scopesCover, uncoveredScopes } from '../core/scopes';
import type { Scope } from '../core/scopes';
import { CLOCK_TOLERANCE_SECONDS, MAX_TTL_CEILING_SECONDS, chainFromAct, verifyToken } from '../core/tokens';
import type { WritClaims } from '../core/tokens';
import { WritClient, readDiscovery } from './client';
import { JournalReader } from './journal';

export { WritError, isWritError } from '../errors';
export type { BlockEvent } from '../protocol';
export type { WritErrorCode } from '../errors';

export interface VerifierOptions {
  /** The broker's base URL, `http://127.0.0.1:PORT` (its metadata is under it). Omitted: the discovery file. */
  broker?: string;
  /**
   * Where the discovery file is looked for when `broker` is omitted (WRIT_RUNTIME_DIR, XDG_RUNTIME_DIR). It is
   * trusted only in a folder of this user's, 0700: otherwise no broker is reached (WRIT_RUNTIME_DIR_UNSAFE).
   */
  env?: NodeJS.ProcessEnv;
  /** This resource: a token for another audience is refused. */
  audience: string;
  /** The expected `iss`; by default the issuer the broker's metadata names. */
  issuer?: string;
  /** Leeway for `exp` and `nbf`, seconds: a finite number ≥ 0 (a TypeError otherwise). Default 5. */
  clockToleranceSeconds?: number;
  /** Hear revocations over a WebSocket (default true). Without it, revoked tokens pass until they expire. */
  subscribe?: boolean;
  /**
   * Report each `verify` to the broker's audit log (default true), without waiting: for the broker's findings and
   * the log, not a guarantee (reports over `maxReportsPerSecond` or made while the broker is away are dropped).
   * A use that must be on record before it happens goes through `authorize`, which needs this left on.
   */
  reportUse?: boolean;
  /** Milliseconds since the epoch; injected by tests. */
  now?: () => number;
  /** Verified tokens kept (default 10,000); the oldest go first. A whole number ≥ 0. */
  maxCachedTokens?: number;
  /** `verify` use reports sent per second (default 100, the broker's own bound); the rest are counted and dropped. A whole number ≥ 0. */
  maxReportsPerSecond?: number;
}

export interface VerifyRequest {
  /** Scopes the token must cover (`repo:read:acme/web`, globs allowed in the target). */
  scope?: string | readonly string[];
  /** A concrete call the token must allow: `{ resource: 'repo', action: 'read', target: 'acme/web' }`. */
  call?: ConcreteCall;
  /**
   * The connection the token arrived on, e.g. an HTTP request's `req.socket`: its addresses and ports go with the
   * use report, and the broker finds the presenting process from the kernel (loopback TCP on Linux), names it in
   * the audit record and holds it to the token's process rules. Nothing is taken on trust from these fields.
   */
  connection?: UseConnection;
}

/** What a socket says of itself (a `net.Socket` is one). */
export interface UseConnection {
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
}

export interface AuthorizeRequest {
  /** The calls this request makes (at least one): the token must allow every one, and each is recorded. */
  calls: readonly ConcreteCall[];
  /** Scopes the token must cover besides. */
  scope?: string | readonly string[];
  /** As for `verify`: the connection the token arrived on. */
  connection?: UseConnection;
}

export interface VerifiedToken {
  readonly jti: string;
  readonly issuer: string;
  /** The user the agents act for (`sub`). */
  readonly subject: string;
  readonly audience: string;
  /** The agent acting now (`client_id`). */
  readonly agentId: string;
  /** The delegation chain from nested `act`: the acting agent first, the root agent last. */
  readonly actors: readonly string[];
  readonly scopes: readonly string[];
  readonly taskId: string;
  readonly grantId: string;
  /** For a sub-agent's exchanged token: the grants above `grantId`, nearest first; empty otherwise. */
  readonly parentGrantIds: readonly string[];
  /** Epoch seconds. */
  readonly issuedAt: number;
  readonly notBefore: number;
  readonly expiresAt: number;
  readonly claims: Readonly<WritClaims>;
}

/** How a call `authorize` recorded ended (`Verifier.ended`). */
export type UseEndOutcome = (typeof USE_END_OUTCOMES)[number];

/** One call `authorize` recorded: what `ended` reports the end of. */
export interface RecordedUse {
  /** The broker's id for it (in its `token.used` record); absent from a broker that names none. */
  readonly id?: string;
  readonly jti: string;
  readonly expiresAt: number;
  readonly call: ConcreteCall;
  /** When the broker said it was recorded (the verifier's clock, ms): the end's duration counts from here. */
  readonly recordedAt: number;
}

/** What `authorize` resolves with: the token, and each call's recorded use in the order of `calls`. */
export interface AuthorizedToken extends VerifiedToken {
  readonly uses: readonly RecordedUse[];
}

export interface VerifierStatus {
  /** The broker is reachable and (with `subscribe`) revocations are being heard. */
  connected: boolean;
  /** Revoked token ids, grants and agents known here (plus one for a revoke-all). */
  revocationsKnown: number;
  /** Identities blocked, as the broker last said (0 from a broker before blocks). */
  blockedIdentities: number;
  cachedTokens: number;
  /** Use reports not sent: over the rate bound, or while the broker was unreachable. */
  reportsDropped: number;
  /**
   * Revocation events that did not match the protocol. None is applied in part, and each ends the subscription:
   * what it revoked is unknown, so the verifier is not live (tokens not seen before are refused) until it has
   * subscribed again and applied a fresh snapshot.
   */
  revocationsMalformed: number;
  /**
   * Connected, and reading the broker's revocation journal at each check (a broker on this machine that keeps
   * one): a token is refused from the moment its revocation is written there, before the push reaches this process.
   */
  journal: boolean;
}

export interface Verifier {
  /**
   * The verified token, or a WritError with its code (WRIT_TOKEN_INVALID, …_EXPIRED, …_REVOKED, …). The use is
   * reported to the broker without waiting (`reportUse`): it may go unrecorded. See `authorize`.
   */
  verify(token: string, request?: VerifyRequest): Promise<VerifiedToken>;
  /**
   * No record, no call: checks the token as `verify` does for every call of one request, then reports them all
   * in one awaited report and resolves only once the broker has each call's `token.used` record on disk. Refused
   * with the token's code (a call it does not allow: WRIT_SCOPE_NOT_COVERED, `data.call` naming it; that refusal
   * is reported, and no call of the request is reported as allowed), or, when the use cannot be recorded,
   * WRIT_BROKER_UNREACHABLE (the broker is away, even for a token verified before), WRIT_RATE_LIMITED (a full
   * broker closed the connection) or WRIT_AUDIT_WRITE_FAILED: then run none of the calls.
   */
  authorize(token: string, request: AuthorizeRequest): Promise<AuthorizedToken>;
  /**
   * Reports how a call `authorize` recorded ended (`token.use.ended`: the call, the outcome and its duration, never
   * its arguments or result), without waiting: dropped (counted in `reportsDropped`) while the broker is away or
   * after `close`; `close` waits (a few seconds at most) for those sent before it to be on record. Once per use. `authorize` reports `not-forwarded` itself for calls it recorded and then refused (a revocation heard
   * while the record was written); a resource that refuses a recorded call later reports it the same way.
   */
  ended(use: RecordedUse, outcome: UseEndOutcome, code?: WritErrorCode): void;
  /**
   * Whether a revocation this verifier has applied covers a token it verified (by jti, grant or a grant above it,
   * task, an agent of its chain, or everything issued before), or a block it has heard names one of the token's
   * identities (`agent_identity`, `parent_identities`; a block lasts until the developer lifts it): no network, no
   * report. With `onRevocation`, `onBlocks` and `onStatus` (a snapshot read on reconnecting may name it) a
   * resource ends what the token opened, e.g. a call still running. Expiry is the caller's to watch (`expiresAt`).
   */
  revoked(token: VerifiedToken): boolean;
  close(): Promise<void>;
  status(): VerifierStatus;
  /** Settles once the first connection attempt has (true if it succeeded). */
  ready(): Promise<boolean>;
  /**
   * Called after a revocation event has been applied (the next `verify` already sees it) and before it is
   * acknowledged: a revoke call returns only once every acknowledging verifier's listeners have run, so a
   * resource may end what the token opened here. Keep listeners short: the broker waits at most 1 s.
   */
  onRevocation(listener: (event: RevocationEvent) => void): () => void;
  /**
   * Called after a block or an unblock of an identity has been applied (the next `verify` refuses, or again
   * takes, the tokens naming it) and before it is acknowledged, as `onRevocation` is. A broker before blocks sends none.
   */
  onBlocks(listener: (event: BlockEvent) => void): () => void;
  /** Called whenever `status().connected` changes. */
  onStatus(listener: (status: VerifierStatus) => void): () => void;
}

const DEFAULT_MAX_CACHED = 10_000;
const DEFAULT_MAX_REPORTS = 100;
const HTTP_TIMEOUT_MS = 3_000;
const SUBSCRIBE_TIMEOUT_MS = 5_000;
/** How long `authorize` waits for the broker to record a use: a durable write, so generous. */
const RECORD_TIMEOUT_MS = 10_000;
/** How long `close` waits for the broker to answer the end reports still on their way (their records written). */
const ENDS_FLUSH_MS = 3_000;
/** A token signed by an unknown kid refetches the JWKS at most this often. */
const KEY_REFETCH_INTERVAL_MS = 10_000;
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;
const MAX_DECISIONS_PER_TOKEN = 64;
const MAX_PARSED_SCOPES = 1_024;
/** A revocation may be forgotten once every token it could cover has expired. */
const REVOCATION_MEMORY_MS = (MAX_TTL_CEILING_SECONDS + 60) * 1000;

const Metadata = z.object({ issuer: z.string().min(1), jwks_uri: z.string().url() });
const Jwks = z.object({ keys: z.array(z.object({ kty: z.string(), crv: z.string().optional(), x: z.string().optional(), kid: z.string().optional() })) });

function unreachable(message: string, cause?: unknown): WritError {
  return new WritError('WRIT_BROKER_UNREACHABLE', message, cause === undefined ? {} : { cause });
}

/** What is revoked, as far as events and snapshots have told: checked from a token's claims alone. */
class RevocationView {
  /** Bumped on every change, so a cached token re-checks only when something new was revoked. */
  version = 0;
  private readonly jtis = new Map<string, number>();
  private readonly grants = new Map<string, number>();
  private readonly tasks = new Map<string, number>();
  private readonly agents = new Map<string, number>();
  /** Identities the developer has blocked, as the broker last said (snapshot, then each `blocks` event). */
  private blocked = new Set<string>();
  private allBefore = -1;
  private lastSweep = 0;

  constructor(private readonly now: () => number) {}

  get size(): number {
    return this.jtis.size + this.grants.size + this.tasks.size + this.agents.size + (this.allBefore >= 0 ? 1 : 0);
  }

  applyEvent(e: RevocationEvent): void {
    const forget = this.now() + REVOCATION_MEMORY_MS;
    for (const id of e.jtis) this.jtis.set(id, forget);
    for (const id of e.agentIds) this.agents.set(id, forget);
    for (const id of e.grantIds ?? []) this.grants.set(id, forget);
    for (const id of e.taskIds) this.tasks.set(id, forget);
    if (e.target.kind === 'grant') this.grants.set(e.target.id, forget); // also from a broker without grantIds
    if (e.target.kind === 'token') this.jtis.set(e.target.jti, forget);
    if (e.target.kind === 'agent') this.agents.set(e.target.id, forget);
    if (e.target.kind === 'all') this.allBefore = Math.max(this.allBefore, e.at);
    this.changed();
  }

  applySnapshot(s: RevocationSnapshot): void {
    const forget = this.now() + REVOCATION_MEMORY_MS;
    for (const id of s.jtis) this.jtis.set(id, forget);
    for (const id of s.grantIds) this.grants.set(id, forget);
    for (const id of s.taskIds ?? []) this.tasks.set(id, forget);
    for (const id of s.agentIds) this.agents.set(id, forget);
    if (s.allBefore !== undefined) this.allBefore = Math.max(this.allBefore, s.allBefore);
    this.changed();
  }

  applyBlock(e: BlockEvent): void {
    if (e.blocked) this.blocked.add(e.identity);
    else this.blocked.delete(e.identity);
    this.changed();
  }

  /** A (re)subscription's blocked identities, with the changes heard since it was taken: they replace the last. */
  replaceBlocks(blocked: Set<string>): void {
    this.blocked = blocked;
    this.changed();
  }

  get blockedCount(): number {
    return this.blocked.size;
  }

  /** Whether a block names the token's agent's identity or one above it. Unlike a revocation, it can be lifted. */
  blocks(t: VerifiedToken): boolean {
    if (this.blocked.size === 0) return false;
    const c = t.claims;
    if (c.agent_identity !== undefined && this.blocked.has(c.agent_identity)) return true;
    if (c.parent_identities) for (const id of c.parent_identities) if (this.blocked.has(id)) return true;
    return false;
  }

  covers(t: VerifiedToken): boolean {
    if (this.jtis.has(t.jti) || this.grants.has(t.grantId) || this.tasks.has(t.taskId)) return true;
    for (const g of t.parentGrantIds) if (this.grants.has(g)) return true;
    // As the broker's own list: `all` covers tokens issued strictly before its `at` (an older broker named that second's by jti).
    if (t.issuedAt < this.allBefore) return true;
    for (const a of t.actors) if (this.agents.has(a)) return true;
    return false;
  }

  private changed(): void {
    this.version++;
    const now = this.now();
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const m of [this.jtis, this.grants, this.tasks, this.agents]) for (const [id, until] of m) if (until <= now) m.delete(id);
  }
}

interface Entry {
  token: string;
  /** The key that signed it and its issuer: once the broker no longer publishes that key or names that issuer, it goes. */
  kid: string;
  key: KeyObject;
  iss: string;
  /** WritVerifier.keyGeneration when the key and issuer were last found current. */
  keysChecked: number;
  result: VerifiedToken;
  scopes: Scope[];
  /** RevocationView.version when last checked. */
  checked: number;
  revoked: boolean;
  /** A block names one of its identities (checked again at each change: an unblock takes it back). */
  blocked: boolean;
  /** Scope and call decisions already made for this token. */
  decisions: Map<string, boolean>;
}

interface Asked {
  raw: string[];
  scopes: Scope[];
  key: string;
}


/** `verify(token)` without a request: one shared empty request rather than a fresh one per call. */
const NO_REQUEST: VerifyRequest = Object.freeze({});

class WritVerifier implements Verifier {
  private readonly now: () => number;
  private readonly tolerance: number;
  private readonly subscribe: boolean;
  private readonly reportUse: boolean;
  private readonly maxCached: number;
  private readonly maxReports: number;
  private readonly revocations: RevocationView;
  private readonly cache = new Map<string, Entry>();
  private readonly parsedScopes = new Map<string, Scope>();
  private readonly revocationListeners = new Set<(e: RevocationEvent) => void>();
  private readonly blockListeners = new Set<(e: BlockEvent) => void>();
  private readonly statusListeners = new Set<(s: VerifierStatus) => void>();
  private readonly first: Promise<boolean>;

  private keys = new Map<string, KeyObject>();
  private issuer: string | undefined;
  /** Bumped each time a fetched key set replaces `keys`: a token checked under an earlier set is checked again. */
  private keyGeneration = 0;
  /** Key fetches started, and the one whose answer `keys` holds: an answer that lands after a later one's is stale. */
  private keyFetches = 0;
  private keysFrom = 0;
  private client: WritClient | undefined;
  private live = false;
  /** A revocation event could not be read: what it revoked is unknown until the next snapshot (every token refused). */
  private stale = false;
  private closed = false;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private lastKeyFetch = Number.NEGATIVE_INFINITY;
  private reportWindow = { second: -1, count: 0 };
  /** End reports sent and not yet answered: `close` waits for them (ENDS_FLUSH_MS at most). */
  private readonly endsSent = new Set<Promise<void>>();
  /** The connection whose broker has no `token.uses.open` (it predates use ids): a later connection asks again. */
  private noOpenUses: WritClient | undefined;
  private dropped = 0;
  private malformed = 0;
  /** Connections on which a revocation or block frame did not parse: never made live (see connect). */
  private readonly unreadable = new WeakSet<WritClient>();
  /** The broker's revocation journal, read at each check (none: the push alone). Replaced at each subscription. */
  private journal: JournalReader | undefined;
  private readonly applyJournal = (e: RevocationEvent): void => this.revocations.applyEvent(e);

  constructor(private readonly opts: VerifierOptions) {
    if (typeof opts.audience !== 'string' || opts.audience.length === 0) throw new TypeError('createVerifier: audience is required');
    if (opts.broker !== undefined) {
      const u = new URL(opts.broker); // a TypeError for a malformed URL: the caller's mistake
      if (u.protocol !== 'http:') throw new TypeError('createVerifier: broker must be the http:// URL of the broker (its metadata base)');
    }
    if (opts.now !== undefined && typeof opts.now !== 'function') throw new TypeError('createVerifier: now must be a function');
    this.now = opts.now ?? Date.now;
    // NaN here would make every comparison with it false: tokens that never expire. Refused, as is any non-number.
    this.tolerance = numberOption('clockToleranceSeconds', opts.clockToleranceSeconds, CLOCK_TOLERANCE_SECONDS, false);
    this.subscribe = opts.subscribe ?? true;
    this.reportUse = opts.reportUse ?? true;
    this.maxCached = numberOption('maxCachedTokens', opts.maxCachedTokens, DEFAULT_MAX_CACHED, true);
    this.maxReports = numberOption('maxReportsPerSecond', opts.maxReportsPerSecond, DEFAULT_MAX_REPORTS, true);
    this.revocations = new RevocationView(this.now);
    this.first = this.connect().then(() => this.live);
  }

  // -------------------------------------------------------------------------------------------
  // Verification
  // -------------------------------------------------------------------------------------------

  async verify(token: string, request: VerifyRequest = NO_REQUEST): Promise<VerifiedToken> {
    if (this.closed) throw unreachable('this verifier is closed');
    const asked = this.asked(request.scope);
    if (request.call !== undefined) checkCall(request.call, 'verify');
    if (typeof token !== 'string') throw new WritError('WRIT_TOKEN_INVALID', 'token is not a compact JWT');
    // The request itself travels with the scopes parsed from it: nothing more is made per call on the cached path.
    const hit = this.cache.get(token);
    return this.admit(hit ?? (await this.verifyNew(token, asked, request)), asked, request, true);
  }

  async authorize(token: string, request: AuthorizeRequest): Promise<AuthorizedToken> {
    if (this.closed) throw unreachable('this verifier is closed');
    if (!this.reportUse) throw new TypeError('authorize: it records each use, so the verifier needs reportUse');
    const calls = request?.calls;
    if (!Array.isArray(calls) || calls.length === 0) throw new TypeError('authorize: calls must be a non-empty list');
    for (const call of calls) checkCall(call, 'authorize');
    const asked = this.asked(request.scope);
    if (typeof token !== 'string') throw new WritError('WRIT_TOKEN_INVALID', 'token is not a compact JWT');
    const { connection } = request;
    const entry = this.cache.get(token) ?? (await this.verifyNew(token, asked, { connection }));
    // Every call is checked before any is reported: a request refused at its third call has reported no call allowed.
    let t = entry.result;
    for (const call of calls) t = this.admit(entry, asked, { call, connection }, false);
    const ids = await this.record(t, calls, asked, connection);
    const recordedAt = this.now();
    const uses = calls.map((call, i): RecordedUse => Object.freeze({ ...(ids[i] === undefined ? {} : { id: ids[i] }), jti: t.jti, expiresAt: t.expiresAt, call: trimCall(call), recordedAt }));
    // A revocation applied while the record was written (and perhaps acknowledged, so its revoke call returned):
    // checked again, so nothing runs after it; the records that say allowed get an end that says it did not run.
    try {
      t = this.admit(entry, asked, { call: calls[calls.length - 1]!, connection }, false);
    } catch (e) {
      for (const use of uses) this.ended(use, 'not-forwarded', isWritError(e) ? e.code : undefined);
      throw e;
    }
    return Object.freeze({ ...t, uses: Object.freeze(uses) });
  }

  ended(use: RecordedUse, outcome: UseEndOutcome, code?: WritErrorCode): void {
    if (!this.reportUse) return;
    const client = this.client;
    if (client === undefined || !this.live || this.closed) {
      this.dropped++;
      return;
    }
    // A call, not a notification: its answer says the record is written, which `close` waits for. Not awaited here.
    const sent = client.call('token.use.ended', {
      ...(use.id === undefined ? {} : { use: use.id }),
      jti: use.jti,
      ...(Number.isSafeInteger(use.expiresAt) ? { exp: use.expiresAt } : {}),
      audience: this.opts.audience.slice(0, 512),
      call: use.call,
      outcome,
      durationMs: Math.min(2 ** 31, Math.max(0, Math.round(this.now() - use.recordedAt))),
      ...(code === undefined || outcome === 'answered' ? {} : { code }),
    }).then(
      (r) => {
        if (!r.recorded) this.dropped++; // past the broker's budget for ends of unknown uses
      },
      () => {
        this.dropped++; // the connection went, or a broker before use ids (no such method)
      },
    );
    this.endsSent.add(sent);
    void sent.finally(() => this.endsSent.delete(sent));
  }

  /**
   * A token verified before: only time, revocation and the scopes asked this time are left to check. A refusal
   * is reported; an allowed use only if `reportAllowed` (`authorize` records its calls itself, once all pass).
   */
  private admit(entry: Entry, asked: Asked | undefined, use: VerifyRequest, reportAllowed: boolean): VerifiedToken {
    const call = use.call;
    const t = entry.result;
    if (this.stale) throw unreachable('a revocation from the broker could not be read: every token is refused until its list is read again');
    // Also for an entry held across an await (`authorize` recording its use) while a refetch dropped its key.
    this.checkKey(entry);
    if (t.expiresAt <= Math.floor(this.now() / 1000) - this.tolerance) {
      this.cache.delete(entry.token);
      throw this.refuse('WRIT_TOKEN_EXPIRED', 'token has expired', t, asked, use);
    }
    // What the broker has written since the last check, whether or not its push has woken this process yet.
    this.journal?.read(this.applyJournal);
    if (entry.checked !== this.revocations.version) {
      entry.checked = this.revocations.version;
      if (!entry.revoked && this.revocations.covers(t)) entry.revoked = true;
      entry.blocked = this.revocations.blocks(t);
    }
    if (entry.revoked) throw this.refuse('WRIT_TOKEN_REVOKED', 'token has been revoked', t, asked, use);
    if (entry.blocked) throw this.refuse('WRIT_AGENT_BLOCKED', 'the developer blocked the agent of this token (or one it acts for)', t, asked, use);
    if (asked !== undefined && !this.decide(entry, asked.key, () => scopesCover(entry.scopes, asked.scopes))) {
      throw this.refuse('WRIT_SCOPE_NOT_COVERED', "the token's scopes do not cover the scopes asked", t, asked, use, {
        uncovered: uncoveredScopes(entry.scopes, asked.scopes).map(formatScope),
      });
    }
    if (call !== undefined) {
      const key = `\0${call.resource}\0${call.action}\0${call.target}`;
      if (!this.decide(entry, key, () => allowsCall(entry.scopes, call.resource, call.action, call.target))) {
        throw this.refuse('WRIT_SCOPE_NOT_COVERED', "the token's scopes do not allow this call", t, asked, use, { call: { ...call } });
      }
    }
    if (reportAllowed) this.report(t, true, asked, use);
    return t;
  }

  /** A token not seen before: its signature and claims checked, then cached (not yet admitted for this use). */
  private async verifyNew(token: string, asked: Asked | undefined, use: VerifyRequest): Promise<Entry> {
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch (e) {
      throw new WritError('WRIT_TOKEN_INVALID', 'token is not a compact JWT', { cause: e });
    }
    if (typeof kid !== 'string') throw new WritError('WRIT_TOKEN_INVALID', 'token names no key (kid)');
    await this.first;
    if (!this.keys.has(kid)) await this.refetchKeys();
    if (this.issuer === undefined || this.keys.size === 0) throw unreachable('the broker is unreachable and no keys are known: the token cannot be checked');
    const key = this.keys.get(kid);
    if (key === undefined) throw new WritError('WRIT_TOKEN_INVALID', 'token is signed by an unknown key');
    const keysChecked = this.keyGeneration;

    let claims: WritClaims;
    try {
      claims = await verifyToken(token, {
        issuer: this.opts.issuer ?? this.issuer,
        keys: (k) => (k === kid ? key : undefined),
        clock: { now: this.now },
        audience: this.opts.audience,
        clockToleranceSeconds: this.tolerance,
      });
    } catch (e) {
      // The signature was good for these two (jose checks it before the claims): the jti is the broker's.
      if (isWritError(e, 'WRIT_TOKEN_EXPIRED') || isWritError(e, 'WRIT_AUDIENCE_MISMATCH')) this.report(idOf(token), false, asked, use, e.code);
      throw e;
    }
    const result: VerifiedToken = Object.freeze({
      jti: claims.jti,
      issuer: claims.iss,
      subject: claims.sub,
      audience: claims.aud,
      agentId: claims.client_id,
      actors: Object.freeze(chainFromAct(claims.act)),
      scopes: Object.freeze(claims.scope.split(' ').filter(Boolean)),
      taskId: claims.task_id,
      grantId: claims.grant_id,
      parentGrantIds: Object.freeze([...(claims.parent_grant_ids ?? [])]),
      issuedAt: claims.iat,
      notBefore: claims.nbf,
      expiresAt: claims.exp,
      claims: Object.freeze({ ...claims }),
    });
    let scopes: Scope[];
    try {
      scopes = result.scopes.map((s) => this.parsed(s));
    } catch (e) {
      throw new WritError('WRIT_TOKEN_INVALID', 'token carries a malformed scope', { cause: e });
    }
    if (this.subscribe && !this.live) {
      // Signed and in time, but whether it was revoked cannot be known now: refuse rather than guess.
      throw unreachable('the broker is unreachable: a token not seen before cannot be checked for revocation');
    }
    const entry: Entry = { token, kid, key, iss: claims.iss, keysChecked, result, scopes, checked: -1, revoked: false, blocked: false, decisions: new Map() };
    // Keys refetched while it was checked may have dropped its key: then it is refused like any token of a dropped
    // key, and never cached (where it would pass until the next refetch).
    this.checkKey(entry);
    if (this.cache.size >= this.maxCached) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, entry);
    return entry;
  }

  /**
   * Refuses a token whose key (or issuer) the broker no longer publishes, with the code an unknown key gets, and
   * forgets it. Only when the key set has changed since the entry was last found current: one comparison otherwise.
   */
  private checkKey(entry: Entry): void {
    if (entry.keysChecked === this.keyGeneration) return;
    const published = this.published(entry);
    if (published === true) {
      entry.keysChecked = this.keyGeneration;
      return;
    }
    if (this.cache.get(entry.token) === entry) this.cache.delete(entry.token);
    throw new WritError('WRIT_TOKEN_INVALID', published);
  }

  /** True if the current key set still holds the very key that verified the entry and its issuer is still the broker's; else why not. */
  private published(entry: Entry): true | string {
    if (this.keys.get(entry.kid)?.equals(entry.key) !== true) return 'token is signed by an unknown key';
    if (entry.iss !== (this.opts.issuer ?? this.issuer)) return 'token is from another issuer';
    return true;
  }

  private decide(entry: Entry, key: string, compute: () => boolean): boolean {
    const known = entry.decisions.get(key);
    if (known !== undefined) return known;
    const answer = compute();
    if (entry.decisions.size < MAX_DECISIONS_PER_TOKEN) entry.decisions.set(key, answer);
    return answer;
  }

  private parsed(raw: string): Scope {
    let s = this.parsedScopes.get(raw);
    if (s === undefined) {
      s = parseScope(raw);
      if (this.parsedScopes.size >= MAX_PARSED_SCOPES) this.parsedScopes.clear();
      this.parsedScopes.set(raw, s);
    }
    return s;
  }

  /** The scopes asked, parsed (WRIT_SCOPE_INVALID for a malformed one: the caller's input). */
  private asked(scope: VerifyRequest['scope']): Asked | undefined {
    if (scope === undefined) return undefined;
    const raw = typeof scope === 'string' ? [scope] : [...scope];
    if (raw.some((s) => typeof s !== 'string')) throw new TypeError('verify: scope must be a string or a list of strings');
    return { raw, scopes: raw.map((s) => this.parsed(s)), key: raw.join(' ') };
  }

  private refuse(code: WritErrorCode, message: string, t: TokenId, asked: Asked | undefined, use: VerifyRequest, data?: Record<string, unknown>): WritError {
    this.report(t, false, asked, use, code);
    return new WritError(code, message, data === undefined ? {} : { data });
  }

  // -------------------------------------------------------------------------------------------
  // Use reports
  // -------------------------------------------------------------------------------------------

  private report(t: TokenId | undefined, allowed: boolean, asked: Asked | undefined, { call, connection: socket }: VerifyRequest, code?: WritErrorCode): void {
    if (!this.reportUse || t === undefined) return;
    const client = this.client;
    if (client === undefined || !this.live) {
      this.dropped++;
      return;
    }
    const second = Math.floor(this.now() / 1000);
    if (second !== this.reportWindow.second) this.reportWindow = { second, count: 0 };
    if (++this.reportWindow.count > this.maxReports) {
      this.dropped++;
      return;
    }
    client.notify('token.used', {
      jti: t.jti.slice(0, 200),
      ...(Number.isSafeInteger(t.expiresAt) ? { exp: t.expiresAt } : {}),
      allowed,
      audience: this.opts.audience.slice(0, 512),
      ...(call === undefined ? {} : { call: { resource: call.resource.slice(0, 64), action: call.action.slice(0, 64), target: call.target.slice(0, 512) } }),
      ...(asked === undefined ? {} : { scopes: asked.raw.slice(0, 32).map((s) => s.slice(0, 512)) }),
      ...(code === undefined ? {} : { code }),
      ...(connectionOf(socket) ?? {}),
    });
  }

  /**
   * The awaited report of `authorize`: resolves once the broker has written every call's `token.used` record.
   * Anything else is a refusal: the calls must not run.
   */
  private async record(t: VerifiedToken, calls: readonly ConcreteCall[], asked: Asked | undefined, socket: UseConnection | undefined): Promise<(string | undefined)[]> {
    const base = {
      jti: t.jti,
      exp: t.expiresAt,
      audience: this.opts.audience.slice(0, 512),
      ...(asked === undefined ? {} : { scopes: asked.raw.slice(0, 32).map((s) => s.slice(0, 512)) }),
      ...(connectionOf(socket) ?? {}),
    };
    const ids: (string | undefined)[] = [];
    for (const part of reportParts(calls, MAX_FRAME_BYTES - Buffer.byteLength(JSON.stringify(base)) - 512)) {
      const client = this.client;
      if (client === undefined || !this.live) throw unreachable('the broker is unreachable: this use cannot be recorded, so it must not happen');
      let recorded: number;
      try {
        const answer = await withTimeout(this.recordPart(client, { ...base, calls: part }), RECORD_TIMEOUT_MS);
        recorded = answer.recorded;
        for (let i = 0; i < part.length; i++) ids.push(answer.uses?.length === part.length ? answer.uses[i] : undefined);
      } catch (e) {
        // The broker's own refusal keeps its code (a failed write, a full queue, a report it would not take).
        if (isWritError(e) && (e.code === 'WRIT_AUDIT_WRITE_FAILED' || e.code === 'WRIT_RATE_LIMITED' || e.code === 'WRIT_BAD_REQUEST')) {
          throw new WritError(e.code, 'the broker did not record this use: it must not happen', { cause: e });
        }
        throw unreachable('the broker did not record this use (unreachable or too slow): it must not happen', e);
      }
      if (recorded !== part.length) throw new WritError('WRIT_AUDIT_WRITE_FAILED', `the broker recorded ${recorded} of ${part.length} calls`);
    }
    return ids;
  }

  /**
   * One part of an awaited report: `token.uses.open` (the broker names each call's use id), or `token.uses` on a
   * broker before use ids (WRIT_METHOD_NOT_FOUND, which records nothing), remembered for that connection.
   */
  private async recordPart(client: WritClient, report: MethodParams<'token.uses'>): Promise<{ recorded: number; uses?: string[] }> {
    if (this.noOpenUses !== client) {
      try {
        return await client.call('token.uses.open', report);
      } catch (e) {
        if (!isWritError(e, 'WRIT_METHOD_NOT_FOUND')) throw e;
        this.noOpenUses = client;
      }
    }
    return client.call('token.uses', report);
  }

  // -------------------------------------------------------------------------------------------
  // The broker: metadata and keys over HTTP, revocations over a WebSocket, reconnecting with backoff
  // -------------------------------------------------------------------------------------------

  private endpoints(): { http: string; ws: string } {
    if (this.opts.broker !== undefined) {
      const u = new URL(this.opts.broker);
      return { http: u.origin, ws: `ws://${u.host}/` };
    }
    // Re-read each time: a restarted broker has a new port.
    const d = readDiscovery(this.opts.env ?? process.env);
    return { http: d.httpUrl, ws: `unix:${d.socketPath}` };
  }

  private async connect(): Promise<void> {
    let client: WritClient | undefined;
    let place: RevocationJournalPlace | undefined;
    try {
      const ep = this.endpoints();
      await this.fetchKeys(ep.http);
      if (this.subscribe || this.reportUse) {
        const c = await WritClient.connect(ep.ws);
        client = c;
        // Listeners first: an event racing the subscription's answer is applied either way (a union).
        c.onRevocation(
          (e) => this.onRevocationEvent(e, c),
          () => this.onMalformedEvent(c),
        );
        // Block changes heard before the snapshot is whole: applied at once, and again on top of the snapshot's
        // blocked identities when those replace the ones held (the snapshot was taken before any of them).
        let heard: BlockEvent[] | undefined = [];
        c.onBlocks((e) => {
          heard?.push(e);
          this.onBlockEvent(e, c);
        });
        c.onClose(() => this.lost(c));
        if (this.subscribe) {
          const subscribe = (events: ('revocation' | 'blocks')[], journal: boolean) =>
            withTimeout(c.call('subscribe', { events, acknowledge: true, paged: true, ...(journal ? { journal } : {}) }), SUBSCRIBE_TIMEOUT_MS);
          let r: Awaited<ReturnType<typeof subscribe>>;
          for (let events: ('revocation' | 'blocks')[] = ['revocation', 'blocks'], journal = true; ; ) {
            try {
              r = await subscribe(events, journal);
              break;
            } catch (e) {
              if (!isWritError(e, 'WRIT_BAD_REQUEST')) throw e;
              // A broker before the journal refuses the key (an unknown key is at `params` itself): the push alone.
              if (journal && e.path === 'params') journal = false;
              // A broker before blocks refuses the event's name: revocations alone, as from it before.
              else if (events.length > 1 && /^(params\.)?events\b/.test(e.path ?? '')) events = ['revocation'];
              else throw e;
            }
          }
          place = r.journal;
          const blocked = new Set<string>();
          if (r.revocations) {
            this.revocations.applySnapshot(r.revocations);
            for (const id of r.revocations.blockedIdentities ?? []) blocked.add(id);
            // A snapshot past one frame comes in pages: all of it is applied before this verifier says it is live.
            const count = (s: { blockedIdentities?: string[]; grantIds: string[]; taskIds?: string[]; agentIds: string[]; jtis: string[] }) =>
              (s.blockedIdentities?.length ?? 0) + s.grantIds.length + (s.taskIds?.length ?? 0) + s.agentIds.length + s.jtis.length;
            let got = count(r.revocations);
            for (let more = r.revocations.more === true; more; ) {
              const page = await withTimeout(c.call('revocations.page', { after: got }), SUBSCRIBE_TIMEOUT_MS);
              const n = count(page);
              // A page that brings nothing yet says more would never end: not live on a partial snapshot, try again.
              if (n === 0) throw unreachable('the broker paged its revocations without progress');
              this.revocations.applySnapshot(page);
              for (const id of page.blockedIdentities ?? []) blocked.add(id);
              got += n;
              more = page.more === true;
            }
          }
          // The broker's blocks now (none from a broker before blocks: it tells verifiers of none; its own checks
          // still refuse such tokens at exchange, introspection and the proxy).
          if (r.subscribed.includes('blocks')) for (const e of heard) e.blocked ? blocked.add(e.identity) : blocked.delete(e.identity);
          this.revocations.replaceBlocks(blocked);
          heard = undefined;
        } else {
          // Only for use reports: a first frame now, or the broker closes a connection that says nothing (4008).
          // Its answer is not needed (nor waited for).
          c.call('status', {}).catch(() => undefined);
        }
        if (this.closed) throw unreachable('closed while connecting');
        // A frame that did not parse on this connection while it subscribed: the answers already queued behind it
        // still came, but what it said is in none of them. Not live on it; the next attempt reads the list afresh.
        if (this.unreadable.has(c)) throw unreachable('a frame from the broker could not be read while subscribing');
        this.client = c;
        // This broker's journal, from where its snapshot ends; the last broker's (gone, or this one's before a
        // reconnection) is let go. Opened after the snapshot is applied: none of it is read before what precedes it.
        this.journal?.close();
        this.journal = place === undefined ? undefined : JournalReader.open(place, place.offset);
      }
      this.attempt = 0;
      this.stale = false; // a whole list read again: a malformed event missed nothing it does not now hold
      this.setLive(true);
    } catch {
      if (client !== undefined && client !== this.client) void client.close();
      this.setLive(false);
      this.scheduleRetry();
    }
  }

  private lost(client: WritClient): void {
    if (client !== this.client) return; // a half-made connection: connect() handles its failure
    this.client = undefined;
    this.setLive(false);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer !== undefined) return;
    const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.attempt++);
    const delay = base / 2 + Math.random() * (base / 2); // jitter, so verifiers do not reconnect in step
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect();
    }, delay);
    this.retryTimer.unref();
  }

  private async fetchKeys(http: string): Promise<void> {
    const started = ++this.keyFetches;
    this.lastKeyFetch = this.now();
    const meta = Metadata.safeParse(await getJson(`${http}/.well-known/oauth-authorization-server`));
    if (!meta.success) throw unreachable('the broker metadata is not RFC 8414 metadata');
    if (this.opts.issuer !== undefined && meta.data.issuer !== this.opts.issuer) {
      throw unreachable(`the broker at ${http} is not the issuer this verifier expects`);
    }
    if (new URL(meta.data.jwks_uri).origin !== new URL(http).origin) throw unreachable('the broker metadata points its JWKS elsewhere');
    const jwks = Jwks.safeParse(await getJson(meta.data.jwks_uri));
    if (!jwks.success) throw unreachable('the broker JWKS does not parse');
    const keys = new Map<string, KeyObject>();
    for (const k of jwks.data.keys) {
      if (k.kty !== 'OKP' || k.crv !== 'Ed25519' || !k.x || !k.kid) continue;
      try {
        keys.set(k.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.x }, format: 'jwk' }));
      } catch {
        // a malformed key is skipped; tokens it would have verified are refused as signed by an unknown key
      }
    }
    // A slow answer overtaken by a later fetch's (a refetch and a reconnect at once) would bring back keys the
    // broker has dropped since: the later set stays.
    if (started < this.keysFrom) return;
    this.keysFrom = started;
    this.keys = keys;
    this.issuer = meta.data.issuer;
    this.keyGeneration++;
    // A token verified under a key the broker has dropped (a new key after a restart, one removed after a leak) or
    // from an issuer it no longer is: checked afresh on its next use, so refused, instead of passing from the cache.
    // Tokens being checked or recorded meanwhile are held to the new set by `checkKey` before they are cached or returned.
    for (const [token, e] of this.cache) {
      if (this.published(e) === true) e.keysChecked = this.keyGeneration;
      else this.cache.delete(token);
    }
  }

  /** An unknown kid may be a rotated key: refetch, at most every KEY_REFETCH_INTERVAL_MS. */
  private async refetchKeys(): Promise<void> {
    if (this.now() - this.lastKeyFetch < KEY_REFETCH_INTERVAL_MS) return;
    let ep: { http: string };
    try {
      ep = this.endpoints();
      await this.fetchKeys(ep.http);
    } catch (e) {
      if (this.keys.size === 0) throw isWritError(e) ? e : unreachable('the broker is unreachable', e);
      // Keys are known but the broker is gone: the token stays signed by an unknown key.
    }
  }

  /**
   * A revocation event that does not parse (a newer broker's field, a damaged frame) revoked something unknown:
   * failing open on it would let that token pass. The subscription is ended and made again, and its snapshot
   * says what is revoked; until then this verifier is not live, as when the broker is unreachable. Not acknowledged.
   */
  private onMalformedEvent(via: WritClient): void {
    this.malformed++;
    this.unreadable.add(via);
    // Tokens verified before are refused too (not only new ones) until the list is read again.
    this.stale = true;
    // Not live from this instant (the next verify already sees it); a half-made connection fails its connect().
    if (via === this.client) this.lost(via);
    void via.close();
  }

  private onBlockEvent(e: BlockEvent, via: WritClient): void {
    this.revocations.applyBlock(e);
    this.heard(e, this.blockListeners, via);
  }

  private onRevocationEvent(e: RevocationEvent, via: WritClient): void {
    this.revocations.applyEvent(e);
    this.heard(e, this.revocationListeners, via);
  }

  /**
   * An event already applied: its listeners are told, then the broker, whose revoke or block call waits for the
   * acknowledgement before it returns (one numbering for both).
   */
  private heard<E extends { seq?: number }>(e: E, listeners: ReadonlySet<(e: E) => void>, via: WritClient): void {
    try {
      for (const l of listeners) l(e);
    } finally {
      if (e.seq !== undefined) via.notify('revocation.ack', { seq: e.seq });
    }
  }

  private setLive(live: boolean): void {
    if (this.live === live) return;
    this.live = live;
    const s = this.status();
    for (const l of this.statusListeners) l(s);
  }

  // -------------------------------------------------------------------------------------------
  // The rest of the surface
  // -------------------------------------------------------------------------------------------

  status(): VerifierStatus {
    return { connected: this.live, revocationsKnown: this.revocations.size, blockedIdentities: this.revocations.blockedCount, cachedTokens: this.cache.size, reportsDropped: this.dropped, revocationsMalformed: this.malformed, journal: this.live && this.journal?.reading === true };
  }

  ready(): Promise<boolean> {
    return this.first;
  }

  revoked(token: VerifiedToken): boolean {
    this.journal?.read(this.applyJournal);
    return this.revocations.covers(token) || this.revocations.blocks(token);
  }

  onRevocation(listener: (event: RevocationEvent) => void): () => void {
    this.revocationListeners.add(listener);
    return () => this.revocationListeners.delete(listener);
  }

  onBlocks(listener: (event: BlockEvent) => void): () => void {
    this.blockListeners.add(listener);
    return () => this.blockListeners.delete(listener);
  }

  onStatus(listener: (status: VerifierStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    // Ends reported just before (a resource ending its calls as it stops): on record before the connection goes.
    if (this.endsSent.size > 0) await withTimeout(Promise.allSettled([...this.endsSent]), ENDS_FLUSH_MS).catch(() => undefined);
    const client = this.client;
    this.client = undefined;
    this.setLive(false);
    this.cache.clear();
    this.journal?.close();
    this.journal = undefined;
    await client?.close();
  }
}

/**
 * The calls of one `authorize`, trimmed as the protocol bounds them, in reports of at most
 * MAX_CALLS_PER_USE_REPORT calls and about `budget` bytes each (the broker's frame limit).
 */
function reportParts(calls: readonly ConcreteCall[], budget: number): ConcreteCall[][] {
  const parts: ConcreteCall[][] = [];
  let part: ConcreteCall[] = [];
  let bytes = 0;
  for (const c of calls) {
    const call = trimCall(c);
    const cost = Buffer.byteLength(JSON.stringify(call)) + 1;
    if (part.length > 0 && (part.length === MAX_CALLS_PER_USE_REPORT || bytes + cost > budget)) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(call);
    bytes += cost;
  }
  parts.push(part);
  return parts;
}

/** A numeric option: its default when omitted, else a finite number ≥ 0 (whole if `whole`), or a TypeError. */
function numberOption(name: string, value: unknown, fallback: number, whole: boolean): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (whole && !Number.isInteger(value))) {
    throw new TypeError(`createVerifier: ${name} must be a ${whole ? 'whole' : 'finite'} number ≥ 0`);
  }
  return value;
}

/** A call as the protocol bounds it in use reports. */
function trimCall(c: ConcreteCall): ConcreteCall {
  return { resource: c.resource.slice(0, 64), action: c.action.slice(0, 64), target: c.target.slice(0, 512) };
}

function checkCall(call: ConcreteCall, where: string): void {
  if (typeof call !== 'object' || call === null || typeof call.resource !== 'string' || typeof call.action !== 'string' || typeof call.target !== 'string') {
    throw new TypeError(`${where}: call needs string resource, action and target`);
  }
}

/** A token as a use report names it: its jti, and its expiry when known (the broker's lookup key). */
type TokenId = { jti: string; expiresAt?: number };

/** The jti and exp of a token whose signature verified but whose claims were refused. */
function idOf(token: string): TokenId | undefined {
  try {
    const { jti, exp } = decodeJwt(token);
    if (typeof jti !== 'string') return undefined;
    return typeof exp === 'number' ? { jti, expiresAt: exp } : { jti };
  } catch {
    return undefined;
  }
}

async function getJson(url: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  } catch (e) {
    throw unreachable(`cannot reach the Writ broker at ${new URL(url).origin}`, e);
  }
  if (!res.ok) throw unreachable(`the Writ broker answered ${res.status} for ${new URL(url).pathname}`);
  try {
    return await res.json();
  } catch (e) {
    throw unreachable('the Writ broker sent something other than JSON', e);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(unreachable('the broker did not answer in time')), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A verifier for one audience. It starts connecting at once; `verify` waits for that first attempt before
 * judging a token it has not seen.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  return new WritVerifier(options);
}

/** A use report's `connection`: a socket's four address fields, when it has them all (a closed socket may not). */
function connectionOf(c: UseConnection | undefined): { connection: NonNullable<MethodParams<'token.used'>['connection']> } | undefined {
  if (c === undefined) return undefined;
  const { localAddress, localPort, remoteAddress, remotePort } = c;
  const port = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;
  const address = (a: unknown): a is string => typeof a === 'string' && a.length > 0 && a.length <= 64;
  if (!address(localAddress) || !address(remoteAddress) || !port(localPort) || !port(remotePort)) return undefined;
  return { connection: { localAddress, localPort, remoteAddress, remotePort } };
}
