// The broker's decisions: agents and their sessions, task requests and the developer's approvals, grants,
// minting, sub-agent exchange, introspection and revocation. No sockets here: the net layer calls in.
import { createHash } from 'node:crypto';
import { WritError, isWritError } from '../errors';
import type { WritErrorCode } from '../errors';
import type {
  AgentInfo,
  AgentView,
  ApprovalDecision,
  ApprovalRequest,
  AuditAgent,
  AuditEntry,
  ConcreteCall,
  GrantMode,
  GrantView,
  InventoryView,
  MethodParams,
  MethodResult,
  PeerProcess,
  RevocationEvent,
  RevocationSnapshot,
  RevokeTarget,
  TokenResult,
  TokenUseEndedDetail,
  TokenView,
} from '../protocol';
import { ScopeList } from '../protocol';
import type { Clock, IdSource } from './clock';
import { seconds } from './clock';
import { parseScopes, scopesCover, uncoveredScopes, normalizeScopes, formatScope } from './scopes';
import type { Scope } from './scopes';
import type { TokenMinter, WritClaims } from './tokens';
import { verifyToken, chainFromAct, MAX_TTL_CEILING_SECONDS, VerifiedTokens } from './tokens';
import type { RevocableClaims, RevocationStore } from './revocation';
import type { Oversight } from './oversight';
import { statusOf } from './inventory';
import { bindingFor, checkPresenter, mayHold } from './binding';
import type { ProcessBinding, ProcessRef, ProcessTable } from './binding';
import { TokenLedger } from './ledger';

/** Where approvals come from: the parent's IPC pipe or the broker's own terminal. Never a socket. */
export interface Approver {
  readonly kind: 'ipc' | 'tty' | 'none';
  /** Resolves with the developer's decision; the signal aborts when the request ends without one. */
  ask(request: ApprovalRequest, signal: AbortSignal): Promise<ApprovalDecision>;
}

export interface AuditSink {
  append(entry: AuditEntry): Promise<unknown>;
}

export interface AuthorityConfig {
  issuer: string;
  user: string;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  approvalTimeoutMs: number;
  /** How long a `task` grant lets its agent mint more tokens; `session` grants last while the broker runs. */
  taskGrantSeconds: number;
  maxPendingPerAgent: number;
  maxPendingTotal: number;
  maxDelegationDepth: number;
}

/**
 * How many of a grant's latest tokens it keeps a ring of, for the editor's list (`tokens.request`, at most
 * TOKENS_PER_ANSWER): a few more than that, so tokens revoked one by one do not leave the list short.
 */
export const RECENT_TOKENS = 128;

export const DEFAULT_AUTHORITY_CONFIG: Omit<AuthorityConfig, 'issuer' | 'user'> = {
  defaultTtlSeconds: 300,
  maxTtlSeconds: 3600,
  approvalTimeoutMs: 120_000,
  taskGrantSeconds: 3600,
  maxPendingPerAgent: 4,
  maxPendingTotal: 64,
  maxDelegationDepth: 4,
};

/** `session` grants end with the broker run; expressed as a far bound so views stay numeric. */
const SESSION_GRANT_SECONDS = 7 * 24 * 3600;

interface Agent {
  id: string;
  info: AgentInfo;
  /** Parent agent ids, nearest first. */
  parents: string[];
  sessionHash: string | undefined;
  revoked: boolean;
  connections: number;
  process: PeerProcess | undefined;
  /** Every process this agent said hello from (pid + start time), newest last, a few at most: who it is on HTTP. */
  seenFrom: ProcessRef[];
  /** When it was made, relative to the others: the order presenters are named in. */
  order: number;
  grants: Set<string>;
  /** Inventory identity (stable across runs), when oversight is on. */
  identity: string | undefined;
  /** Its key in `subAgents` when an exchange made it, so forgetting it forgets the key. */
  subAgentKey: string | undefined;
  /**
   * Made by exchange from a token of an earlier run (its parent not held): the inventory identities that token
   * named, its agent's first. Its tokens carry them in `parent_identities`, so a block of any of them holds.
   */
  inheritedIdentities: readonly string[] | undefined;
  /**
   * Back after a restart before its parent: sha256 of the parent session it proved it holds, which no agent of
   * this run holds yet. Top-level and refused grants until the parent says hello with that session (its key in
   * `awaitingParent`).
   */
  awaitingParent: string | undefined;
  /**
   * The name and kind of the hello that named the parent it waits for (its `writ exec`'s), taken once that parent
   * says hello with the session and the link is made: a parent session of the right shape proves nothing until then.
   */
  renameOnLink: AgentInfo | undefined;
  /**
   * It took its session in this run (one of an earlier run: the broker restarted) and has not named a parent yet.
   * While top-level and not waiting for a parent, one hello with that session may still name its parent's
   * (`claimParent`): its `writ exec`, when its command said hello with the session first. One claim per taken session.
   */
  sessionTaken: boolean;
}

interface Grant {
  id: string;
  taskId: string;
  task: string;
  agentId: string;
  scopes: string[];
  audience: string;
  mode: GrantMode;
  ttl: number;
  /** Epoch seconds. */
  expiresAt: number;
  revoked: boolean;
  /** The narrower scopes last held: the set usually asked again, whose array the next such token shares. */
  lastNarrowed: readonly string[] | undefined;
  /**
   * The jtis of the latest RECENT_TOKENS tokens and their expiry, a ring written at `recentNext`: the editor's
   * list, without a pass over every token the grant holds (those are in the ledger, by second of expiry).
   */
  recent: string[];
  recentExp: number[];
  recentNext: number;
  /**
   * A sub-agent's grant (by exchange, or asked for by a sub-agent and covered by its parent's): the grant it comes
   * from, whose revocation takes this one too, while that one is held.
   */
  parentGrantId: string | undefined;
  /** The grants above this one, nearest first; its tokens carry them as `parent_grant_ids`. */
  ancestors: readonly string[];
  /** Sub-agents' grants made from this one, while held. */
  children: Set<string> | undefined;
  /** An exchange grant's key in `exchangeGrants`, so forgetting the grant forgets the key. */
  exchangeKey: string | undefined;
}

interface Pending {
  requestId: string;
  agentId: string;
  /** The task it asks for: revoking that task ends the wait. */
  taskId: string;
  controller: AbortController;
}

export interface Caller {
  agentId: string;
  /** Aborts when the caller's connection goes away: its pending approvals end with it. */
  signal?: AbortSignal;
  /** The calling connection's process (kernel-derived): the process the tokens it gets are minted for. */
  process?: PeerProcess;
}

/**
 * A token presented back to the broker by a connection: how (for the evidence) and its process, looked up on
 * demand. `introspect` is how resources ask too, so only an agent introspecting another's token counts there.
 */
export interface Presenter {
  /** `use`: a resource's verifier reported the token used, and the connection it came on (`token.used`). */
  via: 'exchange' | 'proxy' | 'introspect' | 'use';
  process: () => Promise<PeerProcess | undefined>;
}

/** Processes an agent is remembered to have said hello from. */
const SEEN_FROM = 4;
/** Records of a token's life, written per token: their agent names its process by reference (auditAgent). */
const TOKEN_EVENTS: ReadonlySet<AuditEntry['event']> = new Set(['token.minted', 'token.exchanged', 'token.introspected', 'token.used', 'token.use.ended']);
/** Process bindings kept ready per (pid, start time), so a burst of mints reads /proc once. */
const BINDING_CACHE = 256;
/** Distinct parent-token scope strings whose parsed forms are kept for exchange; past it, the memo starts over. */
const SCOPE_FORMS = 256;
/** New grants, and new agents, between sweeps of what can no longer matter. */
const SWEEP_EVERY = 256;

/** May return a promise: the revoke call waits for it (subscribers acknowledging the event). */
export type RevocationListener = (event: RevocationEvent) => void | Promise<unknown>;

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
/**
 * The shape of a session credential this broker issues (`wss_` and 32 random bytes, base64url): the only one a
 * session unknown to this run may be taken as. Its randomness cannot be checked; the shape keeps out an empty or
 * short string that another process could guess to resume the agent.
 */
const SESSION_SHAPE = /^wss_[A-Za-z0-9_-]{43}$/;
const processKey = (r: ProcessRef): string => `${r.pid}:${r.startTime}`;
/** A compact JWS (header `eyJ…` then two more dot-separated parts): never written to the audit log. */
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\./;

/**
 * Recorded uses one connection keeps waiting for their `token.use.ended`: past this its own oldest is forgotten (a
 * resource that never reports ends, or more calls at once than any gate runs), and that use's end, if it still
 * comes, is recorded as of an unknown use. Only that connection's own: no other can push them out.
 */
export const MAX_OPEN_USES_PER_CONNECTION = 4_096;

/** A use recorded through `token.uses.open`, until its end is reported. */
interface OpenUse {
  jti: string;
  call: ConcreteCall;
}

/**
 * The uses one reporting connection recorded through `token.uses.open` and has not reported the end of, oldest
 * first. Its end is taken as of a known use only from this connection; they are forgotten when it closes
 * (`Authority.forgetOpenUses`): a resource that reconnects reports its earlier calls' ends as of unknown uses.
 */
export class OpenUses {
  readonly uses = new Map<string, OpenUse>();
  /** Uses pushed out by later ones at the cap. */
  forgotten = 0;
  closed = false;

  constructor(readonly max = MAX_OPEN_USES_PER_CONNECTION) {}
}

export class Authority {
  private readonly agents = new Map<string, Agent>();
  private readonly sessions = new Map<string, string>(); // sha256(session credential) → agent id
  /** sha256 of the sessions of revoked agents since forgotten: still refused, never seen as new. */
  private readonly revokedSessions = new Set<string>();
  /** Every live token issued: its grant, narrower scopes and binding (revoke by jti, use reports, counts, lists). */
  private readonly ledger = new TokenLedger<Grant>();
  /** The latest `iat` this run has issued: a revocation of everything covers it even if the clock went back since. */
  private latestIat = 0;
  /** Inventory identity → agents held in memory with it: the inventory never forgets an identity in use. */
  private readonly identityAgents = new Map<string, number>();
  private readonly grants = new Map<string, Grant>();
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<RevocationListener>();
  private readonly subAgents = new Map<string, string>(); // `${parent}\n${name}` → child id (exchange)
  /** sha256(parent session) → the agents back after a restart that named it before their parent came back. */
  private readonly awaitingParent = new Map<string, Set<Agent>>();
  /** `${pid}:${startTime}` → the agents that said hello from that process (their `seenFrom`), for the holder rules. */
  private readonly agentsByProcess = new Map<string, Set<Agent>>();
  /** A parent token's `scope` claim → its scopes parsed and normalized (heldScopes); bounded by SCOPE_FORMS. */
  private readonly scopeForms = new Map<string, { held: Scope[]; normalized: string[] }>();
  private agentsMade = 0;
  /**
   * `${sub-agent}\n${parent grant}\n${scope}` → the grant its exchanges share while it is live: one grant per
   * delegation rather than per exchange, as a WebSocket grant holds all its mints.
   */
  private readonly exchangeGrants = new Map<string, Grant>();
  private readonly bindingCache = new Map<string, ProcessBinding>();
  private readonly verified = new VerifiedTokens(); // signatures already checked (tokens presented again)
  /**
   * Every connection's open uses by use id, to its connection: an end for one from another connection is refused.
   * As large as the connections' own sets together (each bounded by its `max`), emptied as they close.
   */
  private readonly openUses = new Map<string, OpenUses>();

  constructor(
    readonly config: AuthorityConfig,
    private readonly deps: {
      clock: Clock;
      ids: IdSource;
      audit: AuditSink;
      minter: TokenMinter;
      revocations: RevocationStore;
      approver: Approver;
      publicKey: (kid: string) => import('node:crypto').KeyObject | undefined;
      /** Inventory and watch; optional so the decision logic can be tested alone. */
      oversight?: Oversight;
      /** The process table (/proc), for binding tokens to the process they were minted for; absent: no binding. */
      processes?: ProcessTable;
      /** Waits `ms` of the clock's time (tests with a manual clock move it); default setTimeout. */
      sleep?: (ms: number) => Promise<void>;
    },
  ) {
    if (config.maxTtlSeconds > MAX_TTL_CEILING_SECONDS) {
      throw new TypeError(`maxTtlSeconds may not exceed ${MAX_TTL_CEILING_SECONDS}`);
    }
  }

  get oversight(): Oversight | undefined {
    return this.deps.oversight;
  }

  onRevocation(listener: RevocationListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get approverKind(): Approver['kind'] {
    return this.deps.approver.kind;
  }

  // -------------------------------------------------------------------------------------------
  // Agents
  // -------------------------------------------------------------------------------------------

  /**
   * `hello`: resume the agent a session credential names, or register a new one (a sub-agent if a parent is proven).
   *
   * A session this run does not know (sessions live in memory: the broker restarted, or it forgot an agent that
   * held nothing) is taken by the new agent, so the agent keeps the credential it and its sub-agents hold: a
   * sub-agent coming back says hello with its parent's session too, as on its first hello, and is put under the
   * agent that holds it now (`claimParent`). That proof is the only source of a parent link: a process can claim as
   * parent only an agent whose session it holds, which the parent itself handed down. One that comes back before
   * its parent waits top-level, refused grants, until an agent says hello with that parent session
   * (`linkAwaiting`). The sub-agent's own command may say hello with its session first (its `writ token`, with no
   * parent session): its `writ exec` then resumes that agent and names the parent, which counts as on a first hello.
   * A session revoked in this run or an earlier one (the revocation list keeps its hash) is refused.
   */
  async introduce(params: MethodParams<'hello'>, process?: PeerProcess): Promise<{ agentId: string; resumed: boolean }> {
    let adopted: string | undefined;
    if (params.session !== undefined) {
      const hash = sha256(params.session);
      const id = this.sessions.get(hash);
      const agent = id === undefined ? undefined : this.agents.get(id);
      if (agent?.revoked || this.sessionRevoked(hash)) throw new WritError('WRIT_SESSION_INVALID', 'this agent session was revoked');
      if (agent) {
        const claimed =
          params.parentSession !== undefined && agent.sessionTaken && agent.parents.length === 0 && agent.awaitingParent === undefined
            ? await this.claimParent(agent, params.parentSession, params.agent)
            : {};
        agent.connections++;
        if (process) {
          agent.process = process;
          this.rememberProcess(agent, process);
        }
        await this.audit('agent.connected', agent, { detail: { resumed: true, ...claimed } });
        return { agentId: agent.id, resumed: true };
      }
      if (SESSION_SHAPE.test(params.session)) adopted = hash;
    }
    if (adopted === undefined) {
      // A first hello: a new agent, whose session (if any) is issued with its first grant.
      let parents: string[] = [];
      if (params.parentSession !== undefined) {
        const hash = sha256(params.parentSession);
        const parentId = this.sessions.get(hash);
        const parent = parentId === undefined ? undefined : this.agents.get(parentId);
        if (!parent || parent.revoked || this.sessionRevoked(hash)) throw new WritError('WRIT_SESSION_INVALID', 'the parent agent session is unknown or revoked');
        parents = [parent.id, ...parent.parents];
        if (parents.length > this.config.maxDelegationDepth) {
          throw new WritError('WRIT_DEPTH_EXCEEDED', `sub-agents may nest at most ${this.config.maxDelegationDepth} deep`);
        }
      }
      const agent = this.newAgent(params.agent, parents, process);
      agent.connections = 1;
      await this.audit('agent.connected', agent, { detail: { resumed: false } });
      return { agentId: agent.id, resumed: false };
    }
    // Back after a restart. A parent session unknown and of another shape than the broker's is refused before the
    // agent is made; a revoked one once it is (claimParent revokes it).
    if (params.parentSession !== undefined) {
      const p = this.parentFor(params.parentSession, adopted);
      if ('refused' in p && p.refused === 'unknown') throw new WritError('WRIT_SESSION_INVALID', 'the parent agent session is unknown or revoked');
    }
    const agent = this.newAgent(params.agent, [], process);
    agent.sessionHash = adopted;
    agent.sessionTaken = true;
    this.sessions.set(adopted, agent.id);
    const claimed = params.parentSession === undefined ? {} : await this.claimParent(agent, params.parentSession);
    agent.connections = 1;
    const { linked, renamed } = this.linkAwaiting(agent);
    await this.audit('agent.connected', agent, {
      detail: {
        resumed: false,
        sessionTaken: true,
        ...claimed,
        ...(linked.length === 0 ? {} : { subAgentsBack: linked }),
        ...(renamed.length === 0 ? {} : { subAgentsRenamed: renamed }),
      },
    });
    return { agentId: agent.id, resumed: false };
  }

  /** Revoked in this run, or in an earlier one whose revocation list still names it (an agent's entry keeps its session's hash). */
  private sessionRevoked(hash: string): boolean {
    return this.revokedSessions.has(hash) || this.deps.revocations.isSessionRevoked(hash);
  }

  /**
   * The parent session named by an agent back after a restart: the agent holding it now; one to wait for (shaped
   * as the broker's, held by no agent of this run yet, and not the agent's own); or refused: revoked (in this run
   * or an earlier one), or of another shape.
   */
  private parentFor(parentSession: string, own: string | undefined): { parent: Agent } | { awaiting: string } | { none: true } | { refused: 'revoked' | 'unknown' } {
    const hash = sha256(parentSession);
    const id = this.sessions.get(hash);
    const parent = id === undefined ? undefined : this.agents.get(id);
    if (parent?.revoked || this.sessionRevoked(hash)) return { refused: 'revoked' };
    if (hash === own) return { none: true };
    if (parent) return { parent };
    return SESSION_SHAPE.test(parentSession) ? { awaiting: hash } : { refused: 'unknown' };
  }

  /**
   * A top-level agent that took its session in this run names its parent's session: it is put under the agent
   * holding it now (with its sub-agents; not when that would make a cycle or nest deeper than allowed: it stays
   * top-level, as in `linkAwaiting`), or waits for it, refused grants. `info`: the name and kind of the hello
   * naming the parent (its `writ exec`'s, as on its first hello), which replace those of the hello that took the
   * session (its command's `writ token`, say) once the link is made: at once under a parent holding the session,
   * when that parent comes back for one waiting; never when no link is made (its own session named as its parent's,
   * a link refused), so holding its own session lets no agent rename itself. One claim per taken session, whatever
   * its outcome. A parent revoked, in this run or before the restart, refuses the hello (WRIT_SESSION_INVALID) and
   * revokes the agent, as the cascade would have had it been under it then. Returns the facts for its
   * `agent.connected` record.
   */
  private async claimParent(agent: Agent, parentSession: string, info?: AgentInfo): Promise<Record<string, unknown>> {
    agent.sessionTaken = false;
    const p = this.parentFor(parentSession, agent.sessionHash);
    if ('refused' in p) {
      if (p.refused === 'revoked') {
        await this.revoke({ kind: 'agent', id: agent.id }, 'broker', 'it came back after a broker restart under a parent that was revoked');
      }
      throw new WritError('WRIT_SESSION_INVALID', 'the parent agent session is unknown or revoked');
    }
    const rename = info !== undefined && (info.name !== agent.info.name || info.kind !== agent.info.kind) ? info : undefined;
    if ('awaiting' in p) {
      agent.awaitingParent = p.awaiting;
      agent.renameOnLink = rename;
      const set = this.awaitingParent.get(p.awaiting);
      if (set) set.add(agent);
      else this.awaitingParent.set(p.awaiting, new Set([agent]));
      return { awaitingParent: true };
    }
    if ('none' in p || !this.linkUnder(agent, p.parent)) return {};
    const facts: Record<string, unknown> = { underParent: true };
    if (rename) {
      facts.formerly = { name: agent.info.name, kind: agent.info.kind };
      agent.info = rename;
    }
    this.reidentifyTree(agent);
    return facts;
  }

  /**
   * Puts the agents waiting for this one's session (back after a restart before it) under it, with their own
   * sub-agents: they held that session, as this one does. Each takes the name and kind its `writ exec` gave when it
   * named that session (`renameOnLink`). Returns the ids put under it, and those renamed with their former names.
   */
  private linkAwaiting(parent: Agent): { linked: string[]; renamed: { id: string; formerly: AgentInfo }[] } {
    const linked: string[] = [];
    const renamed: { id: string; formerly: AgentInfo }[] = [];
    const waiting = parent.sessionHash === undefined ? undefined : this.awaitingParent.get(parent.sessionHash);
    if (!waiting) return { linked, renamed };
    this.awaitingParent.delete(parent.sessionHash!);
    for (const child of waiting) {
      const rename = child.renameOnLink;
      child.awaitingParent = undefined;
      child.renameOnLink = undefined;
      if (!this.linkUnder(child, parent)) continue;
      if (rename) {
        renamed.push({ id: child.id, formerly: { name: child.info.name, kind: child.info.kind } });
        child.info = rename;
      }
      this.reidentifyTree(child);
      linked.push(child.id);
    }
    return { linked, renamed };
  }

  /**
   * Puts a top-level agent, with its sub-agents, under `parent`. Not when the link would make a cycle or nest
   * deeper than allowed (both need sessions only the same hands hold): it stays top-level. True if put under it.
   */
  private linkUnder(child: Agent, parent: Agent): boolean {
    const chain = [parent.id, ...parent.parents];
    if (child.revoked || child.parents.length > 0 || this.agents.get(child.id) !== child || chain.includes(child.id)) return false;
    // The child is top-level: its sub-agents' chains end with it.
    const below = this.descendants(child);
    if (chain.length + Math.max(...below.map((d) => d.parents.length)) > this.config.maxDelegationDepth) return false;
    for (const d of below) d.parents = [...d.parents, ...chain];
    return true;
  }

  /** Its inventory identity and its sub-agents' (blocks key on them) after its name or parent changed: nearest first. */
  private reidentifyTree(root: Agent): void {
    for (const d of this.descendants(root).sort((x, y) => x.parents.length - y.parents.length)) this.reidentify(d);
  }

  private reidentify(agent: Agent): void {
    const o = this.deps.oversight;
    const parentIdentity = agent.parents[0] === undefined ? undefined : this.agents.get(agent.parents[0])?.identity;
    if (!o || agent.identity === undefined) return;
    let identity: string;
    try {
      identity = o.identify(
        {
          name: agent.info.name,
          kind: agent.info.kind,
          ...(parentIdentity === undefined ? {} : { parentIdentity }),
          ...(agent.process?.exe ? { process: { exe: agent.process.exe, ...(agent.process.sha256 ? { sha256: agent.process.sha256 } : {}) } } : {}),
        },
        (id) => this.identityAgents.has(id),
      );
    } catch {
      return; // the inventory is full (WRIT_INVENTORY_FULL): the identity it came back with stays
    }
    if (identity === agent.identity) return;
    const n = (this.identityAgents.get(agent.identity) ?? 1) - 1;
    if (n > 0) this.identityAgents.set(agent.identity, n);
    else this.identityAgents.delete(agent.identity);
    agent.identity = identity;
    this.identityAgents.set(identity, (this.identityAgents.get(identity) ?? 0) + 1);
  }

  /**
   * `parentIdentity`: the parent's inventory identity when this run does not hold the parent (a sub-agent made by
   * exchange from a token of an earlier run); otherwise it is the identity of the agent `parents[0]` names.
   */
  private newAgent(info: AgentInfo, parents: string[], process?: PeerProcess, parentIdentity?: string): Agent {
    const agent: Agent = {
      id: this.deps.ids.id('agt'),
      info,
      parents,
      sessionHash: undefined,
      revoked: false,
      connections: 0,
      process,
      seenFrom: [],
      order: this.agentsMade++,
      grants: new Set(),
      identity: undefined,
      subAgentKey: undefined,
      inheritedIdentities: undefined,
      awaitingParent: undefined,
      renameOnLink: undefined,
      sessionTaken: false,
    };
    if (process) this.rememberProcess(agent, process);
    agent.identity = this.deps.oversight?.identify(
      {
        name: info.name,
        kind: info.kind,
        ...(parents[0] && this.agents.get(parents[0])?.identity
          ? { parentIdentity: this.agents.get(parents[0])!.identity! }
          : parentIdentity !== undefined
            ? { parentIdentity }
            : {}),
        ...(process?.exe ? { process: { exe: process.exe, ...(process.sha256 ? { sha256: process.sha256 } : {}) } } : {}),
      },
      (identity) => this.identityAgents.has(identity),
    );
    if (agent.identity !== undefined) this.identityAgents.set(agent.identity, (this.identityAgents.get(agent.identity) ?? 0) + 1);
    this.agents.set(agent.id, agent);
    // The new agent has no connection or grant yet: the sweep keeps it (and its ancestors) by name.
    if (++this.agentsSinceSweep >= SWEEP_EVERY) this.sweep(seconds(this.deps.clock.now()), agent);
    return agent;
  }

  private rememberProcess(agent: Agent, p: PeerProcess): void {
    if (p.startTime === undefined) return;
    const ref = { pid: p.pid, startTime: p.startTime };
    const seen = [...agent.seenFrom.filter((r) => r.pid !== ref.pid || r.startTime !== ref.startTime), ref];
    for (const gone of seen.slice(0, -SEEN_FROM)) this.forgetProcess(agent, gone);
    agent.seenFrom = seen.slice(-SEEN_FROM);
    const key = processKey(ref);
    const set = this.agentsByProcess.get(key);
    if (set) set.add(agent);
    else this.agentsByProcess.set(key, new Set([agent]));
  }

  private forgetProcess(agent: Agent, ref: ProcessRef): void {
    const key = processKey(ref);
    const set = this.agentsByProcess.get(key);
    if (set?.delete(agent) && set.size === 0) this.agentsByProcess.delete(key);
  }

  async disconnected(agentId: string): Promise<void> {
    const agent = this.agents.get(agentId);
    if (!agent) return;
    agent.connections = Math.max(0, agent.connections - 1);
    await this.audit('agent.disconnected', agent, {}).catch(() => undefined);
  }

  private agentOf(id: string): Agent {
    const agent = this.agents.get(id);
    if (!agent) throw new WritError('WRIT_AGENT_NOT_FOUND', 'no such agent');
    if (agent.revoked) throw new WritError('WRIT_TOKEN_REVOKED', 'this agent has been revoked');
    return agent;
  }

  // -------------------------------------------------------------------------------------------
  // Tasks, approvals, grants
  // -------------------------------------------------------------------------------------------

  async requestTask(caller: Caller, params: MethodParams<'task.request'>): Promise<MethodResult<'task.request'>> {
    const agent = this.agentOf(caller.agentId);
    const asked = normalizeScopes(parseScopes(params.scopes, 'params.scopes').map(formatScope));
    const ttl = this.clampTtl(params.ttl);
    const taskId = this.deps.ids.id('task');
    const task = { id: taskId, description: params.task };
    await this.audit('task.requested', agent, { task, scopes: asked, audience: params.audience, detail: { ttl } });
    const oversight = this.deps.oversight;
    if (oversight && agent.identity) {
      try {
        await oversight.beforeRequest(agent.identity, this.auditAgent(agent), asked);
      } catch (e) {
        if (isWritError(e) && e.code !== 'WRIT_AUDIT_WRITE_FAILED') {
          await this.audit('task.denied', agent, { task, scopes: asked, audience: params.audience, outcome: 'failure', code: e.code });
        }
        throw e;
      }
    }

    const reusable = this.findReusableGrant(agent, params.task, params.audience, asked);
    if (reusable) {
      const token = await this.mintFrom(agent, reusable, asked, Math.min(ttl, reusable.ttl), { reused: true, taskId, minter: caller.process });
      return { grant: this.grantView(reusable), reused: true, token };
    }

    let grant: Grant;
    if (agent.awaitingParent !== undefined) {
      // A sub-agent whose parent has not come back since the restart: it holds nothing that could cover this.
      await this.audit('task.denied', agent, { task, scopes: asked, audience: params.audience, outcome: 'failure', code: 'WRIT_SCOPE_NOT_COVERED' });
      throw new WritError('WRIT_SCOPE_NOT_COVERED', 'this sub-agent came back after a broker restart before its parent did: it may ask only once its parent is back, for what the parent holds', {
        data: { uncovered: asked },
      });
    } else if (agent.parents.length > 0) {
      grant = await this.grantFromParent(agent, task, asked, params.audience, ttl);
    } else {
      const decision = await this.askDeveloper(caller, agent, params, asked, ttl, task);
      const approved = decision.scopes
        ? normalizeScopes(parseScopes(decision.scopes, 'decision.scopes').map(formatScope))
        : asked;
      const grantTtl = this.clampTtl(decision.ttl ?? ttl);
      if (!scopesCover(parseScopes(asked), parseScopes(approved))) {
        // The approver may only narrow. A wider answer is a bug on that side: fail closed.
        await this.audit('task.denied', agent, { task, scopes: asked, outcome: 'failure', code: 'WRIT_SCOPE_NOT_COVERED' });
        throw new WritError('WRIT_DENIED', 'the approval was wider than the request and was refused');
      }
      grant = this.newGrant(agent, task, approved, params.audience, decision.mode, grantTtl);
      await this.audit('task.approved', agent, {
        task,
        grantId: grant.id,
        scopes: approved,
        audience: params.audience,
        outcome: 'success',
        detail: { mode: decision.mode, ttl: grantTtl, by: decision.by ?? 'developer', narrowed: approved.length !== asked.length || approved.some((s: string, i: number) => s !== asked[i]) },
      });
    }
    // Revoked while the approval was being recorded (the agent, the task, or the grant with them): nothing is
    // counted as granted and no token is minted.
    if (agent.revoked || grant.revoked || this.deps.revocations.isTaskRevoked(grant.taskId)) {
      throw new WritError('WRIT_TOKEN_REVOKED', agent.revoked ? 'the agent was revoked' : 'the task was revoked');
    }
    if (oversight && agent.identity) oversight.granted(agent.identity, grant.scopes);
    const session = agent.sessionHash === undefined ? this.issueSession(agent) : undefined;
    const token = await this.mintFrom(agent, grant, grant.scopes, grant.ttl, { reused: false, taskId, minter: caller.process });
    return { grant: this.grantView(grant), reused: false, ...(session === undefined ? {} : { session }), token };
  }

  private clampTtl(ttl: number | undefined): number {
    const t = ttl ?? this.config.defaultTtlSeconds;
    return Math.max(1, Math.min(t, this.config.maxTtlSeconds));
  }

  private findReusableGrant(agent: Agent, task: string, audience: string, asked: string[]): Grant | undefined {
    const now = seconds(this.deps.clock.now());
    const askedScopes = parseScopes(asked);
    for (const id of agent.grants) {
      const g = this.grants.get(id);
      if (!g || g.revoked || g.expiresAt <= now || g.audience !== audience) continue;
      if (g.mode === 'task' && g.task !== task) continue;
      if (scopesCover(parseScopes(g.scopes), askedScopes)) return g;
    }
    return undefined;
  }

  /** A sub-agent gets at most what its parent holds for that audience, and never a prompt. */
  private async grantFromParent(
    agent: Agent,
    task: { id: string; description: string },
    asked: string[],
    audience: string,
    ttl: number,
  ): Promise<Grant> {
    // Revoked (the task, or the sub-agent: also by its parent's revocation) while its request was being recorded: no
    // grant is made for it.
    if (agent.revoked || this.deps.revocations.isTaskRevoked(task.id)) {
      await this.audit('task.denied', agent, { task, scopes: asked, audience, outcome: 'failure', code: 'WRIT_TOKEN_REVOKED' });
      throw new WritError('WRIT_TOKEN_REVOKED', agent.revoked ? 'the agent was revoked' : 'the task was revoked');
    }
    const parent = this.agentOf(agent.parents[0]!);
    const now = seconds(this.deps.clock.now());
    const live = [...parent.grants]
      .map((id) => this.grants.get(id))
      .filter((g): g is Grant => g !== undefined && !g.revoked && g.expiresAt > now && g.audience === audience);
    const covering = live.find((g) => scopesCover(parseScopes(g.scopes), parseScopes(asked)));
    if (!covering) {
      await this.audit('task.denied', agent, { task, scopes: asked, audience, outcome: 'failure', code: 'WRIT_SCOPE_NOT_COVERED' });
      throw new WritError('WRIT_SCOPE_NOT_COVERED', 'a sub-agent may only ask for scopes its parent holds for that audience', {
        data: { uncovered: uncoveredScopes(live.flatMap((g) => parseScopes(g.scopes)), parseScopes(asked)).map(formatScope) },
      });
    }
    const grant = this.newGrant(agent, task, asked, audience, 'task', Math.min(ttl, covering.ttl));
    grant.expiresAt = Math.min(grant.expiresAt, covering.expiresAt);
    // Revoking the parent's grant (or its task) revokes this one, and its tokens name the parent's grant.
    grant.ancestors = [covering.id, ...covering.ancestors];
    this.linkGrant(grant, covering);
    await this.audit('task.approved', agent, {
      task,
      grantId: grant.id,
      scopes: asked,
      audience,
      outcome: 'success',
      detail: { mode: 'task', ttl: grant.ttl, by: 'parent-grant', parentGrantId: covering.id },
    });
    return grant;
  }

  private async askDeveloper(
    caller: Caller,
    agent: Agent,
    params: MethodParams<'task.request'>,
    asked: string[],
    ttl: number,
    task: { id: string; description: string },
  ): Promise<Extract<ApprovalDecision, { decision: 'approve' }>> {
    const deny = async (code: WritErrorCode, message: string): Promise<never> => {
      await this.audit('task.denied', agent, { task, scopes: asked, audience: params.audience, outcome: 'failure', code });
      throw new WritError(code, message);
    };
    if (this.deps.approver.kind === 'none') {
      return deny('WRIT_NO_APPROVER', 'no one can approve: start the broker in a terminal or from the Writ extension');
    }
    const mine = [...this.pending.values()].filter((p) => p.agentId === agent.id).length;
    if (mine >= this.config.maxPendingPerAgent) {
      return deny('WRIT_TOO_MANY_PENDING', `at most ${this.config.maxPendingPerAgent} requests per agent may wait for approval`);
    }
    if (this.pending.size >= this.config.maxPendingTotal) {
      return deny('WRIT_TOO_MANY_PENDING', 'too many requests are waiting for approval');
    }
    const requestId = this.deps.ids.id('req');
    const controller = new AbortController();
    this.pending.set(requestId, { requestId, agentId: agent.id, taskId: task.id, controller });
    // Revoked while its request was being recorded (before it was pending, so the revocation found nothing to end):
    // no prompt. A revocation after this line finds the pending request and ends it.
    if (agent.revoked || this.deps.revocations.isTaskRevoked(task.id)) {
      this.pending.delete(requestId);
      return deny('WRIT_TOKEN_REVOKED', agent.revoked ? 'the agent was revoked' : 'the task was revoked');
    }
    if (this.deps.oversight && agent.identity) {
      // Counted after registering, so requests arriving together see each other.
      const waiting = [...this.pending.values()].filter((p) => p.agentId === agent.id).length;
      try {
        await this.deps.oversight.onPending(agent.identity, this.auditAgent(agent), waiting);
      } catch (e) {
        this.pending.delete(requestId);
        if (isWritError(e) && e.code !== 'WRIT_AUDIT_WRITE_FAILED') return deny(e.code, e.message);
        throw e;
      }
    }
    const deadline = this.deps.clock.now() + this.config.approvalTimeoutMs;
    const timer = setTimeout(
      () => controller.abort(new WritError('WRIT_APPROVAL_TIMEOUT', 'no decision before the approval timeout: denied')),
      this.config.approvalTimeoutMs,
    );
    const onCallerGone = () => controller.abort(new WritError('WRIT_DENIED', 'the agent went away before a decision'));
    caller.signal?.addEventListener('abort', onCallerGone, { once: true });
    const request: ApprovalRequest = {
      requestId,
      agent: {
        id: agent.id,
        name: agent.info.name,
        kind: agent.info.kind,
        ...(agent.info.version === undefined ? {} : { version: agent.info.version }),
        parents: agent.parents.map((id) => ({ id, name: this.agents.get(id)?.info.name ?? 'unknown' })),
        ...(agent.process === undefined ? {} : { process: agent.process }),
      },
      task: params.task,
      scopes: asked,
      audience: params.audience,
      ttl,
      maxTtl: this.config.maxTtlSeconds,
      deadline,
    };
    let decision: ApprovalDecision;
    try {
      const aborted = new Promise<never>((_, reject) => {
        const fail = () => reject(controller.signal.reason);
        if (controller.signal.aborted) fail();
        else controller.signal.addEventListener('abort', fail, { once: true });
      });
      aborted.catch(() => undefined); // it settles after the race when the decision came first
      decision = await Promise.race([this.deps.approver.ask(request, controller.signal), aborted]);
    } catch (e) {
      // Timeout, the agent leaving, its revocation, or a broken approval channel: each is a denial.
      const err = isWritError(e) && e.code !== 'WRIT_INTERNAL' ? e : new WritError('WRIT_DENIED', 'the approval channel failed: denied');
      return await deny(err.code, err.message);
    } finally {
      clearTimeout(timer);
      caller.signal?.removeEventListener('abort', onCallerGone);
      if (!controller.signal.aborted) controller.abort(new WritError('WRIT_DENIED', 'decided'));
      this.pending.delete(requestId);
    }
    if (decision.decision === 'deny') return deny('WRIT_DENIED', 'the developer denied this request');
    // An approval that landed with the revocation of its task or agent (or of everything, which takes every agent),
    // applied before its wait ended, makes no grant: nothing approved, minted, listed or counted as granted.
    if (agent.revoked) return deny('WRIT_TOKEN_REVOKED', 'the agent was revoked while waiting');
    if (this.deps.revocations.isTaskRevoked(task.id)) return deny('WRIT_TOKEN_REVOKED', 'the task was revoked while waiting');
    return decision;
  }

  private newGrant(
    agent: Agent,
    task: { id: string; description: string },
    scopes: string[],
    audience: string,
    mode: GrantMode,
    ttl: number,
  ): Grant {
    const now = seconds(this.deps.clock.now());
    const grant: Grant = {
      id: this.deps.ids.id('grt'),
      taskId: task.id,
      task: task.description,
      agentId: agent.id,
      scopes,
      audience,
      mode,
      ttl,
      expiresAt: now + (mode === 'session' ? SESSION_GRANT_SECONDS : this.config.taskGrantSeconds),
      revoked: false,
      lastNarrowed: undefined,
      recent: [],
      recentExp: [],
      recentNext: 0,
      parentGrantId: undefined,
      ancestors: [],
      children: undefined,
      exchangeKey: undefined,
    };
    this.grants.set(grant.id, grant);
    agent.grants.add(grant.id);
    if (++this.grantsSinceSweep >= SWEEP_EVERY) this.sweep(now);
    return grant;
  }

  private grantsSinceSweep = 0;
  private agentsSinceSweep = 0;

  /** Grants held in memory (live or not yet swept): for status and tests of the sweep. */
  retainedGrants(): number {
    return this.grants.size;
  }

  /** Live tokens held (each until it expires, or is revoked by jti). */
  retainedTokens(): number {
    return this.ledger.size(seconds(this.deps.clock.now()));
  }

  /** Agents held in memory, and the tombstones of forgotten revoked sessions. */
  retainedAgents(): { agents: number; sessions: number; revokedSessions: number } {
    return { agents: this.agents.size, sessions: this.sessions.size, revokedSessions: this.revokedSessions.size };
  }

  private sweep(now: number, newest?: Agent): void {
    this.sweepGrants(now);
    this.sweepAgents(newest);
  }

  /**
   * Forgets grants that can mint nothing more and whose tokens have all expired, so a long-running broker
   * does not grow without bound. Revoked ones stay covered by the revocation list, which outlives them until
   * what they covered has expired.
   */
  private sweepGrants(now: number): void {
    this.grantsSinceSweep = 0;
    for (const [id, g] of this.grants) {
      if (g.expiresAt > now) continue;
      // Revoked grants too: kept while the ledger holds tokens of theirs.
      if (this.ledger.count(g, now) > 0) continue;
      this.grants.delete(id);
      this.agents.get(g.agentId)?.grants.delete(id);
      if (g.exchangeKey !== undefined && this.exchangeGrants.get(g.exchangeKey) === g) this.exchangeGrants.delete(g.exchangeKey);
      if (g.parentGrantId !== undefined) this.grants.get(g.parentGrantId)?.children?.delete(id);
    }
  }

  /**
   * Forgets agents that can no longer matter: not connected, no grant held, nothing waiting, and no descendant
   * held (ancestors stay: chains, cascades and sub-agent grants refer to them). Tokens already issued stay
   * covered by the revocation list, which names agents by id. A revoked agent's session leaves a tombstone.
   */
  private sweepAgents(newest?: Agent): void {
    this.agentsSinceSweep = 0;
    const keep = new Set<string>(newest ? [newest.id, ...newest.parents] : []);
    for (const p of this.pending.values()) keep.add(p.agentId);
    for (const a of this.agents.values()) {
      if (a.connections > 0 || a.grants.size > 0 || keep.has(a.id)) {
        keep.add(a.id);
        for (const id of a.parents) keep.add(id);
      }
    }
    for (const [id, a] of this.agents) {
      if (keep.has(id)) continue;
      this.agents.delete(id);
      for (const ref of a.seenFrom) this.forgetProcess(a, ref);
      if (a.sessionHash !== undefined && this.sessions.get(a.sessionHash) === id) {
        this.sessions.delete(a.sessionHash);
        if (a.revoked) this.revokedSessions.add(a.sessionHash);
      }
      if (a.subAgentKey !== undefined && this.subAgents.get(a.subAgentKey) === id) this.subAgents.delete(a.subAgentKey);
      if (a.awaitingParent !== undefined) {
        const set = this.awaitingParent.get(a.awaitingParent);
        if (set?.delete(a) && set.size === 0) this.awaitingParent.delete(a.awaitingParent);
      }
      if (a.identity !== undefined) {
        const n = (this.identityAgents.get(a.identity) ?? 1) - 1;
        if (n > 0) this.identityAgents.set(a.identity, n);
        else this.identityAgents.delete(a.identity);
      }
    }
  }

  /**
   * Waits out the rest of a second that a revocation of everything covers (its entry refuses every `iat` before the
   * next second), so a token minted meanwhile, for a grant made after it, is not born revoked. At most a second,
   * and only right after a revoke-all.
   */
  private async notInRevokedSecond(): Promise<void> {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    for (let i = 0; i < 3; i++) {
      const ms = this.deps.revocations.allBefore * 1000 - this.deps.clock.now();
      if (ms <= 0) return;
      // More than the rest of a second: the clock went back after the revocation (or the list is from a clock
      // ahead of this one). A token now would be born revoked; say so rather than wait out the gap.
      if (ms > 1000) {
        throw new WritError('WRIT_TOKEN_REVOKED', `every token issued before ${new Date(this.deps.revocations.allBefore * 1000).toISOString()} is revoked and this clock is behind that: minting resumes once it passes it`);
      }
      await sleep(ms + 1);
    }
    throw new WritError('WRIT_INTERNAL', 'the clock did not pass the second of a revocation of everything');
  }

  /** Records a token a grant issued, with the process it was minted for, until it expires (the ledger). */
  private holdToken(grant: Grant, claims: { jti: string; iat: number; exp: number }, scopes: readonly string[], binding: ProcessBinding | undefined): void {
    const { jti, exp } = claims;
    if (claims.iat > this.latestIat) this.latestIat = claims.iat;
    if (grant.recent.length < RECENT_TOKENS) {
      grant.recent.push(jti);
      grant.recentExp.push(exp);
    } else {
      grant.recent[grant.recentNext] = jti;
      grant.recentExp[grant.recentNext] = exp;
      grant.recentNext = (grant.recentNext + 1) % RECENT_TOKENS;
    }
    let narrowed: readonly string[] | undefined;
    if (scopes !== grant.scopes && !sameScopes(scopes, grant.scopes)) {
      if (grant.lastNarrowed === undefined || !sameScopes(scopes, grant.lastNarrowed)) grant.lastNarrowed = scopes;
      narrowed = grant.lastNarrowed;
    }
    this.ledger.add(jti, { grant, exp, scopes: narrowed, binding }, seconds(this.deps.clock.now()));
  }

  /**
   * A grant's live tokens for the editor, newest first: at most `limit`, and how many live ones were left out.
   * Empty for a grant that is unknown (or swept), revoked, or holds none. Read from the grant's ring of its latest
   * RECENT_TOKENS tokens, so it costs `limit`, not a pass over every token the grant holds.
   */
  liveTokens(grantId: string, limit: number): { tokens: TokenView[]; more: number } {
    const g = this.grants.get(grantId);
    if (g === undefined || g.revoked || limit < 1) return { tokens: [], more: 0 };
    const now = seconds(this.deps.clock.now());
    const live = this.liveCount(g, now);
    const tokens: TokenView[] = [];
    // Newest first, from the ring of the latest: those since revoked by jti or expired are no longer in the ledger.
    const ring = g.recent;
    for (let i = 1; i <= ring.length && tokens.length < limit; i++) {
      const at = (g.recentNext - i + ring.length) % ring.length;
      const jti = ring[at]!;
      const held = this.ledger.get(jti, g.recentExp[at]!, now);
      if (held === undefined) continue;
      tokens.push({ jti, expiresAt: held.exp, scopes: (held.scopes ?? g.scopes) as string[] });
    }
    return { tokens, more: Math.max(0, live - tokens.length) };
  }

  /** A grant's live tokens, exactly, whatever their lifetimes (none once it is revoked): O(1). */
  private liveCount(g: Grant, now: number): number {
    return g.revoked ? 0 : this.ledger.count(g, now);
  }

  private issueSession(agent: Agent): string {
    const secret = this.deps.ids.secret('wss');
    agent.sessionHash = sha256(secret);
    this.sessions.set(agent.sessionHash, agent.id);
    return secret;
  }

  async mint(caller: Caller, params: MethodParams<'token.mint'>): Promise<TokenResult> {
    const agent = this.agentOf(caller.agentId);
    const grant = this.grants.get(params.grantId);
    if (!grant || grant.agentId !== agent.id) throw new WritError('WRIT_GRANT_NOT_FOUND', 'no such grant for this agent');
    if (grant.revoked) throw new WritError('WRIT_TOKEN_REVOKED', 'this grant has been revoked');
    if (grant.expiresAt <= seconds(this.deps.clock.now())) throw new WritError('WRIT_GRANT_EXPIRED', 'this grant has expired');
    let scopes = grant.scopes;
    if (params.scopes) {
      const asked = parseScopes(params.scopes, 'params.scopes');
      if (!scopesCover(parseScopes(grant.scopes), asked)) {
        throw new WritError('WRIT_SCOPE_NOT_COVERED', 'the grant does not cover these scopes', {
          data: { uncovered: uncoveredScopes(parseScopes(grant.scopes), asked).map(formatScope) },
        });
      }
      scopes = normalizeScopes(asked.map(formatScope));
    }
    const ttl = Math.min(grant.ttl, params.ttl ?? grant.ttl);
    return this.mintFrom(agent, grant, scopes, ttl, { reused: true, taskId: grant.taskId, minter: caller.process });
  }

  /** Signs and makes the mint record durable; only once both are done does the token leave this function. */
  private async mintFrom(
    agent: Agent,
    grant: Grant,
    scopes: readonly string[],
    ttl: number,
    ctx: { reused: boolean; taskId: string; minter: PeerProcess | undefined },
  ): Promise<TokenResult> {
    if (this.deps.revocations.allBefore * 1000 > this.deps.clock.now()) await this.notInRevokedSecond();
    const { token: signed, claims } = this.deps.minter.mint({
      user: this.config.user,
      chain: [agent.id, ...agent.parents],
      audience: grant.audience,
      scopes,
      taskId: ctx.taskId,
      grantId: grant.id,
      parentGrantIds: grant.ancestors,
      ...(agent.identity === undefined ? {} : { identity: agent.identity, parentIdentities: this.identitiesAbove(agent) }),
      ttlSeconds: ttl,
    });
    // The signature is made while the record is synced; the token leaves only once both are done.
    const [token] = await Promise.all([
      signed,
      this.audit('token.minted', agent, {
        task: { id: ctx.taskId, description: grant.task },
        grantId: grant.id,
        scopes: [...scopes],
        audience: grant.audience,
        jti: claims.jti,
        exp: claims.exp,
        outcome: 'success',
        detail: { reused: ctx.reused },
      }),
    ]);
    // The watch may stop the agent on a burst; the revocation then covers this token too.
    if (this.deps.oversight && agent.identity) await this.deps.oversight.onMint(agent.identity, agent.id, () => this.auditAgent(agent));
    // A revocation may have landed while the record was being written: never hand out a revoked token, by anything
    // its claims name (its jti too: the mint record, with the jti, is in the audit stream before the token leaves;
    // its task, which may have been revoked before this grant was made).
    if (grant.revoked || agent.revoked || this.isRevoked({ jti: claims.jti, grant_id: claims.grant_id, task_id: claims.task_id, parent_grant_ids: claims.parent_grant_ids, iat: claims.iat, chain: [agent.id, ...agent.parents] })) {
      throw new WritError('WRIT_TOKEN_REVOKED', 'revoked while minting');
    }
    // `writ mcp` hands its tokens to its MCP client over stdio, a process the broker cannot name: not bound.
    this.holdToken(grant, claims, scopes, agent.info.kind === 'mcp' ? undefined : this.bindingOf(ctx.minter));
    return { token, jti: claims.jti, scopes: [...scopes], audience: grant.audience, expiresAt: claims.exp };
  }

  /**
   * The process a token is minted for (where the kernel said which), kept with the token for the process-mismatch
   * rule; one object per process, shared by its tokens.
   */
  private bindingOf(minter: PeerProcess | undefined): ProcessBinding | undefined {
    const table = this.deps.processes;
    if (!table || minter?.startTime === undefined) return undefined;
    const key = `${minter.pid}:${minter.startTime}`;
    let b = this.bindingCache.get(key);
    if (b === undefined) {
      b = bindingFor(minter, table);
      if (b === undefined) return undefined;
      this.bindingCache.set(key, b);
      if (this.bindingCache.size > BINDING_CACHE) this.bindingCache.delete(this.bindingCache.keys().next().value!);
    }
    return b;
  }

  // -------------------------------------------------------------------------------------------
  // Tokens presented back to the broker: introspection and exchange
  // -------------------------------------------------------------------------------------------

  /**
   * Verifies a token and that nothing revoked it. Throws the specific WritError otherwise. With a presenter, also
   * whose hands it is in: an agent holding another agent's token is refused (WRIT_TOKEN_NOT_YOURS), and a
   * process other than the one it was minted for is a process-mismatch finding.
   */
  async check(token: string, audience?: string, presenter?: Presenter, blocks: 'refuse' | 'ignore' = 'refuse'): Promise<WritClaims & { chain: string[] }> {
    return this.checkToken(token, audience, presenter, blocks === 'refuse' ? async () => undefined : undefined);
  }

  /**
   * check(); `onBlocked` (absent: blocks are not looked at) is told the claims of a token naming a blocked identity
   * before it is refused WRIT_AGENT_BLOCKED.
   */
  private async checkToken(
    token: string,
    audience: string | undefined,
    presenter: Presenter | undefined,
    onBlocked: ((claims: WritClaims, identity: string) => Promise<void>) | undefined,
  ): Promise<WritClaims & { chain: string[] }> {
    const opts = { issuer: this.config.issuer, keys: this.deps.publicKey, clock: this.deps.clock, ...(audience === undefined ? {} : { audience }) };
    let claims: WritClaims;
    try {
      claims = await verifyToken(token, opts, this.verified);
    } catch (e) {
      if (isWritError(e, 'WRIT_TOKEN_EXPIRED')) await this.expiredPresented(token, opts);
      throw e;
    }
    const chain = chainFromAct(claims.act);
    if (this.isRevoked({ jti: claims.jti, grant_id: claims.grant_id, task_id: claims.task_id, parent_grant_ids: claims.parent_grant_ids, iat: claims.iat, chain })) {
      // A revoked token presented again is worth a finding against the agent it was minted for.
      const holder = this.agents.get(chain[0]!);
      if (this.deps.oversight && holder?.identity) {
        await this.deps.oversight.onBadToken(holder.identity, this.auditAgent(holder), 'WRIT_TOKEN_REVOKED', claims.jti);
      }
      throw new WritError('WRIT_TOKEN_REVOKED', 'token has been revoked');
    }
    // A block outlives the broker: blocking revokes the agents this run holds, and a token of an earlier run (whose
    // agents no run holds now) is refused by the identities it names, its agent's and those above it.
    if (onBlocked !== undefined) {
      const blocked = this.blockedIn(claims);
      if (blocked !== undefined) {
        await onBlocked(claims, blocked);
        throw new WritError('WRIT_AGENT_BLOCKED', 'the developer blocked this agent (or one it acts for); its tokens are refused until unblocked');
      }
    }
    if (presenter) await this.checkHolder(claims.jti, claims.exp, chain, presenter);
    return { ...claims, chain };
  }

  /**
   * Each block as it takes hold (and unblock): what is in flight under a token naming the identity ends then, as on
   * a revocation (the proxy), also for a token of an earlier run, whose agents no revocation of this run names.
   */
  onBlockChange(listener: (identity: string, blocked: boolean) => void): () => void {
    return this.deps.oversight?.onBlockChange(listener) ?? (() => undefined);
  }

  /** Whether a token names a blocked identity (its agent's or one above it): refused while the block lasts. */
  namesBlocked(c: Pick<WritClaims, 'agent_identity' | 'parent_identities'>): boolean {
    return this.blockedIn(c) !== undefined;
  }

  /** The first blocked inventory identity a token names (its agent's, then those above it), if any. */
  private blockedIn(c: Pick<WritClaims, 'agent_identity' | 'parent_identities'>): string | undefined {
    const o = this.deps.oversight;
    if (o === undefined) return undefined;
    if (c.agent_identity !== undefined && o.isBlocked(c.agent_identity)) return c.agent_identity;
    return c.parent_identities?.find((id) => o.isBlocked(id));
  }

  /**
   * The inventory identities of the agents above this one, nearest first, for its tokens' `parent_identities`: of
   * those this run holds, then (past the first it does not) those the token it was exchanged from named.
   */
  private identitiesAbove(agent: Agent): string[] | undefined {
    if (agent.parents.length === 0) return undefined;
    const out: string[] = [];
    let last = agent;
    for (const id of agent.parents) {
      const p = this.agents.get(id);
      if (p === undefined) break;
      if (p.identity !== undefined) out.push(p.identity);
      last = p;
    }
    if (out.length < agent.parents.length && last.inheritedIdentities !== undefined) out.push(...last.inheritedIdentities);
    return out.length > agent.parents.length ? out.slice(0, agent.parents.length) : out;
  }

  /**
   * Whether a token that verified is revoked now: by jti, grant (or a grant above it), task, an agent of its chain,
   * or everything issued before it. No finding and no record: for callers that hold a token in use (the proxy, on
   * each revocation, for the calls it has in flight).
   */
  isRevoked(c: RevocableClaims): boolean {
    return this.deps.revocations.isRevoked(c) || this.grants.get(c.grant_id)?.revoked === true || c.chain.some((id) => this.agents.get(id)?.revoked === true);
  }

  /**
   * The two "whose token is this" rules, for a token that verified. The presenter counts as every agent that said
   * hello from its process or one of its ancestors (a tool an agent runs is that agent; for introspection, only its
   * own process); if there are some and none may hold the token, it is refused. Either rule is a finding against
   * the token's own agent (its token leaked), naming the presenter.
   */
  private async checkHolder(jti: string, exp: number | undefined, chain: string[], presenter: Presenter): Promise<void> {
    const table = this.deps.processes;
    if (!table) return;
    const proc = await presenter.process();
    if (proc?.startTime === undefined) return;
    const ref = { pid: proc.pid, startTime: proc.startTime };
    const line = table.connectedLineage?.(ref) ?? table.lineage(proc.pid);
    if (line[0]?.startTime !== proc.startTime) return;
    // Introspection is how resources ask too, and an agent may run a resource: there only the process itself counts.
    const counted = presenter.via === 'introspect' ? line.slice(0, 1) : line;
    // Looked up by process, not by walking every agent: this runs on every exchange. Any presenter that may hold
    // the token settles it; the presenters are listed (for the finding) only when none may.
    let presented = false;
    let mayAnyHold = false;
    for (let i = 0; i < counted.length && !mayAnyHold; i++) {
      for (const a of this.agentsByProcess.get(processKey(counted[i]!)) ?? []) {
        presented = true;
        if (mayHold(a, chain)) {
          mayAnyHold = true;
          break;
        }
      }
    }
    const notYours = presented && !mayAnyHold;
    const binding = presenter.via === 'introspect' || exp === undefined ? undefined : this.ledger.get(jti, exp, seconds(this.deps.clock.now()))?.binding;
    const verdict = binding === undefined ? undefined : checkPresenter(binding, proc, table, line);

    const holder = this.agents.get(chain[0]!);
    const oversight = this.deps.oversight;
    const actual = { pid: proc.pid, ...(proc.exe === undefined ? {} : { exe: proc.exe }) };
    if (notYours && oversight && holder?.identity) {
      await oversight.onBadToken(holder.identity, this.auditAgent(holder), 'WRIT_TOKEN_NOT_YOURS', jti, {
        via: presenter.via,
        presenter: { agentIds: this.agentsIn(counted).map((a) => a.id), ...actual },
      });
    }
    let refusal: unknown;
    if (verdict?.verdict === 'mismatch' && oversight && holder?.identity) {
      try {
        await oversight.onProcessMismatch(holder.identity, this.auditAgent(holder), verdict.expected, verdict.actual, { jti, via: presenter.via });
      } catch (e) {
        refusal = e;
      }
    }
    if (notYours) throw new WritError('WRIT_TOKEN_NOT_YOURS', 'this token was minted for another agent');
    if (refusal !== undefined) throw refusal;
  }

  /** The agents that said hello from any of these processes, in the order they were made. */
  private agentsIn(processes: readonly ProcessRef[]): Agent[] {
    const found = new Set<Agent>();
    for (const p of processes) for (const a of this.agentsByProcess.get(processKey(p)) ?? []) found.add(a);
    return [...found].sort((a, b) => a.order - b.order);
  }

  /**
   * An expired token presented again is a finding against the agent it was minted for. Attributed only when
   * its signature verifies (checked as of its last valid second), so nobody can pin one on another agent.
   */
  private async expiredPresented(token: string, opts: Parameters<typeof verifyToken>[1]): Promise<void> {
    if (!this.deps.oversight) return;
    let exp: unknown;
    try {
      exp = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')).exp;
    } catch {
      return;
    }
    if (typeof exp !== 'number') return;
    const atExpiry = await verifyToken(token, { ...opts, clock: { now: () => (exp as number) * 1000 - 1000 } }).catch(() => undefined);
    const holder = atExpiry ? this.agents.get(atExpiry.client_id) : undefined;
    if (atExpiry && holder?.identity) {
      await this.deps.oversight.onBadToken(holder.identity, this.auditAgent(holder), 'WRIT_TOKEN_EXPIRED', atExpiry.jti);
    }
  }

  /** RFC 7662: the claims of an active token, or `{ active: false }` and nothing else. */
  async introspect(token: string, presenter?: Omit<Presenter, 'via'>): Promise<Record<string, unknown>> {
    try {
      const c = await this.check(token, undefined, presenter && { ...presenter, via: 'introspect' });
      // Without the clock tolerance the other checks allow past `exp`: active means not expired by this clock.
      if (c.exp <= seconds(this.deps.clock.now())) throw new WritError('WRIT_TOKEN_EXPIRED', 'token has expired');
      await this.auditRaw({ event: 'token.introspected', jti: c.jti, outcome: 'success', agent: this.auditAgentById(c.client_id, 'ref') });
      return {
        active: true,
        iss: c.iss,
        sub: c.sub,
        aud: c.aud,
        client_id: c.client_id,
        scope: c.scope,
        act: c.act,
        task_id: c.task_id,
        grant_id: c.grant_id,
        ...(c.parent_grant_ids ? { parent_grant_ids: c.parent_grant_ids } : {}),
        jti: c.jti,
        iat: c.iat,
        nbf: c.nbf,
        exp: c.exp,
        token_type: 'Bearer',
      };
    } catch (e) {
      if (!isWritError(e) || e.code === 'WRIT_AUDIT_WRITE_FAILED' || e.code === 'WRIT_INTERNAL') throw e;
      await this.auditRaw({ event: 'token.introspected', outcome: 'failure', code: e.code });
      return { active: false };
    }
  }

  /** RFC 8693: a narrower token for a sub-agent, its chain recorded in nested `act`. Never wider, never longer. */
  async exchange(
    subjectToken: string,
    req: { scopes?: string[]; audience?: string; actorName?: string },
    presenter?: Omit<Presenter, 'via'>,
  ): Promise<TokenResult & { scope: string }> {
    // A token naming a blocked identity (its agent's or one above it, also of an earlier run) is refused, on record.
    const subject = await this.checkToken(subjectToken, undefined, presenter && { ...presenter, via: 'exchange' }, (c, identity) =>
      this.exchangeDenied(c, 'WRIT_AGENT_BLOCKED', this.agents.get(c.client_id), c.scope.split(' '), { blockedIdentity: identity }),
    );
    const parent = this.agents.get(subject.client_id);
    const name = req.actorName ?? 'sub-agent';
    // Refusals of a token that verified are on record as a refused request is, under the token's agent (the
    // sub-agent is not made yet); a malformed request (WRIT_BAD_REQUEST) is not.
    const refuse = async (e: WritError): Promise<never> => {
      await this.exchangeDenied(subject, e.code, parent, req.scopes ?? subject.scope.split(' '), { actorName: name });
      throw e;
    };
    // As many as a task request may ask for (covering and normalizing are quadratic in the count), and scopes that
    // parse, before any refusal that goes on record with them: a malformed list is refused and not recorded.
    if (req.scopes !== undefined && !ScopeList.safeParse(req.scopes).success) {
      throw new WritError('WRIT_BAD_REQUEST', 'scope must name 1 to 32 scopes of at most 512 characters each', { path: 'scope' });
    }
    const parsed = req.scopes ? parseScopes(req.scopes, 'scope') : undefined;
    if (req.audience !== undefined && req.audience !== subject.aud) {
      await refuse(new WritError('WRIT_AUDIENCE_MISMATCH', 'a sub-agent token keeps its parent token audience'));
    }
    if (subject.chain.length > this.config.maxDelegationDepth) {
      await refuse(new WritError('WRIT_DEPTH_EXCEEDED', `sub-agents may nest at most ${this.config.maxDelegationDepth} deep`));
    }
    const { held, normalized } = this.heldScopes(subject.scope);
    const asked = parsed ?? held;
    if (req.scopes && !scopesCover(held, asked)) {
      await refuse(new WritError('WRIT_SCOPE_NOT_COVERED', 'a sub-agent may only receive scopes its parent token holds', {
        data: { uncovered: uncoveredScopes(held, asked).map(formatScope) },
      }));
    }
    const key = `${subject.client_id}\n${name}`;
    let child = this.agents.get(this.subAgents.get(key) ?? '');
    if (!child) {
      // Its identity hangs on its parent's, as on its first exchange: that of the token's agent when this run holds
      // it, else (a token of an earlier run) the one the token names, so a block of the sub-agent still matches.
      const parentIdentity = parent === undefined && typeof subject.agent_identity === 'string' ? subject.agent_identity : undefined;
      child = this.newAgent({ name, kind: 'sub-agent' }, subject.chain, undefined, parentIdentity);
      child.subAgentKey = key;
      if (parentIdentity !== undefined) child.inheritedIdentities = [parentIdentity, ...(subject.parent_identities ?? [])];
      this.subAgents.set(key, child.id);
    }
    const scopes = req.scopes ? normalizeScopes(asked.map(formatScope)) : normalized;
    // A blocked identity gets nothing under its name: its agent may be revoked by the block (this run), forgotten
    // since (a sweep) or be of an earlier run (a restart), the one made for it now not revoked. Refused without a
    // grant or token, recorded as a request is, with the same code whichever it is.
    const oversight = this.deps.oversight;
    if (oversight && child.identity !== undefined && oversight.isBlocked(child.identity)) {
      await this.exchangeDenied(subject, 'WRIT_AGENT_BLOCKED', child, scopes);
      throw new WritError('WRIT_AGENT_BLOCKED', 'the developer blocked this sub-agent; it is refused until unblocked');
    }
    // Nor does a revoked sub-agent, again.
    if (child.revoked) {
      await this.exchangeDenied(subject, 'WRIT_TOKEN_REVOKED', child, scopes);
      throw new WritError('WRIT_TOKEN_REVOKED', 'the sub-agent has been revoked');
    }
    const now = seconds(this.deps.clock.now());
    const remaining = subject.exp - now;
    if (remaining <= 0) throw new WritError('WRIT_TOKEN_EXPIRED', 'token has expired');
    const grant = this.exchangeGrant(child, subject, scopes, now, parent !== undefined);
    const task = { id: grant.taskId, description: grant.task };
    if (this.deps.revocations.allBefore * 1000 > this.deps.clock.now()) await this.notInRevokedSecond();
    const { token: signed, claims } = this.deps.minter.mint({
      user: this.config.user,
      chain: [child.id, ...subject.chain],
      audience: subject.aud,
      scopes,
      taskId: subject.task_id,
      grantId: grant.id,
      // Revoking the parent's grant (or any above it) revokes this token too, by its claims alone.
      parentGrantIds: grant.ancestors,
      ...(child.identity === undefined ? {} : { identity: child.identity, parentIdentities: this.identitiesAbove(child) }),
      ttlSeconds: Math.min(remaining, this.config.maxTtlSeconds),
    });
    // The sub-agent's token is for the process that asked for it (the sub-agent, or its parent handing it down).
    const [token, , minter] = await Promise.all([
      signed,
      this.audit('token.exchanged', child, {
        task,
        grantId: grant.id,
        scopes,
        audience: subject.aud,
        jti: claims.jti,
        exp: claims.exp,
        outcome: 'success',
        detail: { subjectJti: subject.jti, parentGrantId: subject.grant_id },
      }),
      presenter?.process(),
    ]);
    // The grant is revoked with the parent's grant (or its own, or a token of it by jti) while the record was written.
    // So is the subject token itself (by jti, or by a revocation of everything, which names no agent a restarted
    // broker may not hold): checked before the awaits above, it must still hold after them.
    if (grant.revoked || this.isRevokedChain(claims) || this.deps.revocations.isRevoked(subject) || this.deps.revocations.hasToken(claims.jti)) {
      throw new WritError('WRIT_TOKEN_REVOKED', 'revoked while exchanging');
    }
    this.holdToken(grant, claims, scopes, this.bindingOf(minter));
    return { token, jti: claims.jti, scopes, audience: subject.aud, expiresAt: claims.exp, scope: scopes.join(' ') };
  }

  /** An exchange refused after its subject token verified: recorded as a refused request is (`task.denied`). */
  private async exchangeDenied(subject: WritClaims, code: WritErrorCode, agent: Agent | undefined, scopes: readonly string[], more: Record<string, unknown> = {}): Promise<void> {
    const description = this.agents.has(subject.client_id) ? this.grants.get(subject.grant_id)?.task ?? '' : '';
    await this.auditRaw({
      event: 'task.denied',
      ...(agent === undefined ? {} : { agent: this.auditAgent(agent) }),
      task: { id: subject.task_id, description },
      scopes: [...scopes],
      audience: subject.aud,
      outcome: 'failure',
      code,
      detail: { via: 'exchange', subjectJti: subject.jti, parentGrantId: subject.grant_id, ...more },
    });
  }

  /**
   * A parent token's scopes, parsed and in canonical form: the same few scope strings come with every exchange,
   * and parsing, covering and normalizing them again each time cost more than the rest of the scope logic.
   */
  private heldScopes(scope: string): { held: Scope[]; normalized: string[] } {
    let e = this.scopeForms.get(scope);
    if (e === undefined) {
      const held = parseScopes(scope.split(' '));
      // Frozen: the arrays are shared by every exchange of that scope (grant, record, answer), never changed.
      e = { held, normalized: Object.freeze(normalizeScopes(held.map(formatScope))) as string[] };
      if (this.scopeForms.size >= SCOPE_FORMS) this.scopeForms.clear();
      this.scopeForms.set(scope, e);
    }
    return e;
  }

  /**
   * The grant a sub-agent's exchanged tokens belong to: one per (sub-agent, parent grant, scopes), shared while
   * live and kept as long as the latest parent token exchanged on it. Revoking one exchanged token (by jti) leaves
   * its siblings; revoking this grant, the parent's grant or the sub-agent ends them all. A revoked or expired one
   * is replaced by a fresh grant, as each exchange had one of its own before.
   */
  private exchangeGrant(child: Agent, subject: WritClaims, scopes: string[], now: number, parentKnown: boolean): Grant {
    const key = `${child.id}\n${subject.grant_id}\n${scopes.join(' ')}`;
    const ttl = Math.min(subject.exp - now, this.config.maxTtlSeconds);
    const until = Math.min(now + this.config.taskGrantSeconds, subject.exp);
    let grant = this.exchangeGrants.get(key);
    if (grant !== undefined && !grant.revoked && grant.expiresAt > now) {
      if (until > grant.expiresAt) grant.expiresAt = until;
      if (ttl > grant.ttl) grant.ttl = ttl;
      return grant;
    }
    // Linked to the parent's grant while it is held (a token of an earlier run names a grant no longer in memory:
    // the revocation list still covers that grant's id, and the chain covers the agents).
    const held = this.grants.get(subject.grant_id);
    grant = this.newGrant(child, { id: subject.task_id, description: parentKnown ? held?.task ?? '' : '' }, scopes, subject.aud, 'task', ttl);
    grant.expiresAt = Math.min(grant.expiresAt, subject.exp);
    grant.exchangeKey = key;
    this.exchangeGrants.set(key, grant);
    grant.ancestors = [subject.grant_id, ...(subject.parent_grant_ids ?? [])];
    if (held !== undefined) this.linkGrant(grant, held);
    return grant;
  }

  private linkGrant(child: Grant, parent: Grant): void {
    child.parentGrantId = parent.id;
    (parent.children ??= new Set()).add(child.id);
  }

  private isRevokedChain(c: WritClaims): boolean {
    return chainFromAct(c.act).some((id) => this.agents.get(id)?.revoked === true);
  }

  // -------------------------------------------------------------------------------------------
  // Revocation
  // -------------------------------------------------------------------------------------------

  /**
   * Durable before it returns: the revocation list is fsynced and the audit record written, then every
   * listener (connections, verifiers) hears of it. `by` names who asked, for the audit.
   *
   * The event names only what a verifier cannot find from a token's claims: a grant, task or agent revocation
   * names its grants, task and agents (every token it takes carries one of them as `grant_id`, `task_id` or in
   * its `act` chain) and no jti, however many live tokens it ends; a token revocation names its jti; `all` names
   * none (its `at` is the second after it, and nothing is minted before that second). So its size follows the
   * grants and agents taken, never their tokens.
   *
   * `tokenExp`: a `token` target's `exp`, when the caller verified the token (RFC 7009 revocation): its entry is
   * kept until then, as for a token this run holds.
   */
  async revoke(target: RevokeTarget, by: string, reason?: string, tokenExp?: number): Promise<MethodResult<'revoke'>> {
    const now = seconds(this.deps.clock.now());
    // Kept until every token it may cover has expired: also those issued while the clock was ahead of now, and those
    // of an earlier run whose maximum lifetime was higher than this run's (--max-ttl is lowered across a restart):
    // so by the ceiling of any run's maximum, never this run's own.
    const until = Math.max(now, this.latestIat) + MAX_TTL_CEILING_SECONDS;
    /** Live tokens ended, counted: each is held by a grant the event names (its `grant_id`). */
    let tokens = 0;
    /** The tokens the event names one by one (a `token` target's). */
    const jtis: string[] = [];
    let at = now;
    const agentIds: string[] = [];
    const grantIds: string[] = [];
    // Whose credentials these were, for the audit record (the agent filter of an export finds it).
    let subject: Agent | undefined = target.kind === 'agent' ? this.agents.get(target.id) : undefined;
    const takeGrant = (g: Grant) => {
      if (!g.revoked) {
        // Its live tokens, counted before it is marked (a revoked grant counts none). The ledger keeps them, with
        // their bindings, until they expire; the grant stays until then too, then is swept.
        tokens += this.liveCount(g, now);
        g.revoked = true;
        grantIds.push(g.id);
        // Kept (a mint on it answers WRIT_TOKEN_REVOKED) until everything it issued has expired, then swept.
        g.expiresAt = Math.min(g.expiresAt, until);
      }
    };
    const takeAgent = (a: Agent) => {
      if (!a.revoked) {
        a.revoked = true;
        agentIds.push(a.id);
        if (a.identity) this.deps.oversight?.stopped(a.identity);
      }
      // The session mapping stays (a tombstone once the agent is swept), so a revoked agent reconnecting is
      // refused rather than seen as new.
      for (const id of a.grants) {
        const g = this.grants.get(id);
        if (g) takeGrant(g);
      }
      for (const p of this.pending.values()) {
        if (p.agentId === a.id) p.controller.abort(new WritError('WRIT_TOKEN_REVOKED', 'the agent was revoked while waiting'));
      }
    };

    switch (target.kind) {
      case 'token': {
        // Kept until the token's own expiry when that is known (held, or its verified claims at hand: later than
        // `until` for a token of an earlier run minted while the clock was ahead of now), else as long as any may live.
        const held = this.ledger.find(target.jti, now);
        const exp = held?.exp ?? tokenExp ?? until;
        if (held !== undefined) {
          this.ledger.delete(target.jti, held);
          subject = this.agents.get(held.grant.agentId);
        }
        tokens = 1;
        jtis.push(target.jti);
        await this.deps.revocations.add('token', target.jti, exp);
        break;
      }
      case 'grant':
      case 'task': {
        const matched = target.kind === 'grant'
          ? [this.grants.get(target.id)].filter((g): g is Grant => g !== undefined)
          : [...this.grants.values()].filter((g) => g.taskId === target.id);
        // The exchange grants made from tokens of these (and from theirs), as revoking an agent takes its sub-agents.
        const seen = new Set(matched);
        for (let i = 0; i < matched.length; i++) {
          for (const id of matched[i]!.children ?? []) {
            const child = this.grants.get(id);
            if (child && !seen.has(child)) {
              seen.add(child);
              matched.push(child);
            }
          }
        }
        const entries: { kind: 'grant' | 'task'; id: string }[] = [];
        if (target.kind === 'grant' && matched.length === 0) {
          entries.push({ kind: 'grant', id: target.id });
          grantIds.push(target.id);
        }
        // Every token issued for the task, by its task_id: also those of a grant another task made and this one
        // reused, those exchanged from them, and those of an earlier run this broker holds nothing of.
        if (target.kind === 'task') entries.push({ kind: 'task', id: target.id });
        // A request for the task still waiting for its approval ends as one whose agent is revoked does.
        if (target.kind === 'task') {
          for (const p of this.pending.values()) {
            if (p.taskId === target.id) p.controller.abort(new WritError('WRIT_TOKEN_REVOKED', 'the task was revoked while waiting'));
          }
        }
        // All of them taken and applied before anything waits: no grant of the set mints while another's entry syncs.
        for (const g of matched) {
          subject ??= this.agents.get(g.agentId);
          takeGrant(g);
          entries.push({ kind: 'grant', id: g.id });
        }
        await this.deps.revocations.addMany(entries, until);
        break;
      }
      case 'agent': {
        const root = this.agents.get(target.id);
        // Unknown ids are still recorded: a token from an earlier run may name that agent.
        const tree = root ? this.descendants(root) : [];
        if (!root) agentIds.push(target.id);
        for (const a of tree) takeAgent(a);
        // Each with its session's hash, if it had one: a broker run after this one refuses that session, rather than
        // take it as a new agent's, while the entry is kept.
        await this.deps.revocations.addMany(
          root ? tree.map((a) => ({ kind: 'agent' as const, id: a.id, ...(a.sessionHash === undefined ? {} : { session: a.sessionHash }) })) : [{ kind: 'agent' as const, id: target.id }],
          until,
        );
        break;
      }
      case 'all': {
        for (const a of this.agents.values()) takeAgent(a);
        // One entry for every token issued up to the end of this second (`iat` is in whole seconds): no token is
        // named, however many were minted this second. Tokens minted later this second wait for the next one
        // (notInRevokedSecond), so the entry never covers a token issued after it.
        const all = await this.deps.revocations.add('all', '', until, Math.max(seconds(this.deps.clock.now()), this.latestIat) + 1);
        at = all.at;
        break;
      }
    }
    await this.auditRaw({
      event: 'revoked',
      outcome: 'success',
      detail: {
        target,
        by,
        ...(reason === undefined ? {} : { reason }),
        tokens,
        grants: grantIds.length,
        agents: agentIds.length,
      },
      ...(subject ? { agent: this.auditAgent(subject) } : {}),
      ...(target.kind === 'token' ? { jti: target.jti } : {}),
      ...(target.kind === 'grant' ? { grantId: target.id } : {}),
    });
    const event: RevocationEvent = { target, at, jtis, agentIds, taskIds: target.kind === 'task' ? [target.id] : [], grantIds };
    await Promise.all([...this.listeners].map((l) => l(event)));
    return { revokedTokens: tokens, revokedGrants: grantIds.length, revokedAgents: agentIds.length };
  }

  /**
   * Every revocation that may still cover a live token, from the durable list: a new subscriber's starting point.
   * With `blocks` (a subscriber to them), also the identities blocked now.
   */
  revocationSnapshot(blocks = false): RevocationSnapshot {
    const snap: RevocationSnapshot = { jtis: [], grantIds: [], agentIds: [], taskIds: [] };
    if (blocks) snap.blockedIdentities = this.deps.oversight?.blockedIdentities() ?? [];
    for (const e of this.deps.revocations.entries()) {
      if (e.kind === 'token') snap.jtis.push(e.id);
      else if (e.kind === 'grant') snap.grantIds.push(e.id);
      else if (e.kind === 'task') snap.taskIds!.push(e.id);
      else if (e.kind === 'agent') snap.agentIds.push(e.id);
      else snap.allBefore = e.at;
    }
    return snap;
  }

  // -------------------------------------------------------------------------------------------
  // Use, as resources report it
  // -------------------------------------------------------------------------------------------

  /**
   * `token.used`: a resource's verifier saw a token (by jti) and allowed or refused it. Whose token it was comes
   * from the broker's own records, not the report; who reported it is the reporting connection's identity.
   * With the connection the token came on, `presenter` asks the kernel what is on its other end (only for a
   * report that is well formed): the process is named in the record and held to the token's process rules
   * (another agent's process: a bad-token finding; not the process it was minted for: a process-mismatch
   * finding), each acting as configured. The use already happened at the resource: nothing is refused here, a
   * finding's block or stop ends the rest.
   */
  async recordUse(
    report: MethodParams<'token.used'>,
    reporter: { agentId?: string; process?: PeerProcess },
    presenter?: () => Promise<{ process: PeerProcess } | { notFound: string }>,
  ): Promise<void> {
    const { call, ...use } = report;
    await this.writeUses(use, [call], this.heldFor(use), reporter, presenter);
  }

  /** A reported token's entry in the ledger (this run's live tokens): by jti and expiry when given, else by jti. */
  private heldFor(use: { jti: string; exp?: number | undefined }): ReturnType<TokenLedger<Grant>['get']> {
    const now = seconds(this.deps.clock.now());
    return use.exp === undefined ? this.ledger.find(use.jti, now) : this.ledger.get(use.jti, use.exp, now);
  }

  /**
   * `token.uses`: a resource is about to let these calls through for one request, all allowed. One `token.used`
   * record per call, every one durable before this resolves (they go out in one group commit), so the resource
   * runs nothing unrecorded; a failed write rejects with WRIT_AUDIT_WRITE_FAILED and the resource refuses the
   * request. The presenter is looked up, and held to the token's process rules, once for the request. Resolves
   * with how many were recorded.
   */
  async recordUses(
    report: MethodParams<'token.uses'>,
    reporter: { agentId?: string; process?: PeerProcess },
    presenter?: () => Promise<{ process: PeerProcess } | { notFound: string }>,
  ): Promise<number> {
    await this.recordAllowedUses(report, reporter, presenter);
    return report.calls.length;
  }

  /**
   * `token.uses.open`: as `recordUses`, and each call gets a use id (in its `token.used` record), open until the
   * resource reports its end (`recordUseEnded`). Resolves with the ids, in the order of the calls.
   */
  async recordOpenUses(
    report: MethodParams<'token.uses.open'>,
    reporter: { agentId?: string; process?: PeerProcess },
    presenter: (() => Promise<{ process: PeerProcess } | { notFound: string }>) | undefined,
    open: OpenUses,
  ): Promise<string[]> {
    const uses = report.calls.map(() => this.deps.ids.id('use'));
    await this.recordAllowedUses(report, reporter, presenter, uses);
    // Open only once on record (an end reported for a use whose record failed names nothing), and only while its
    // connection is there to report the end (one that closed meanwhile was forgotten already).
    if (open.closed) return uses;
    report.calls.forEach((call, i) => {
      if (open.uses.size >= open.max) {
        const oldest = open.uses.keys().next().value!;
        open.uses.delete(oldest);
        this.openUses.delete(oldest);
        open.forgotten++;
      }
      open.uses.set(uses[i]!, { jti: report.jti, call });
      this.openUses.set(uses[i]!, open);
    });
    return uses;
  }

  /** A reporting connection closed: its open uses are forgotten (an end that still comes is of an unknown use). */
  forgetOpenUses(open: OpenUses): void {
    open.closed = true;
    for (const use of open.uses.keys()) this.openUses.delete(use);
    open.uses.clear();
  }

  private async recordAllowedUses(
    report: MethodParams<'token.uses'>,
    reporter: { agentId?: string; process?: PeerProcess },
    presenter: (() => Promise<{ process: PeerProcess } | { notFound: string }>) | undefined,
    uses?: readonly string[],
  ): Promise<void> {
    const { calls, ...use } = report;
    // Never "allowed" for a token this broker knows to be revoked: by jti, or (for a token it minted this run) by
    // its grant or an agent of its chain. A jti it does not hold (minted before a restart, or made up) is recorded
    // as such (`detail.unknownToken`), within the connection's budget for reports.
    const held = this.heldFor(use);
    const grant = held?.grant;
    const revoked =
      this.deps.revocations.hasToken(use.jti) ||
      grant?.revoked === true ||
      (grant !== undefined && [grant.agentId, ...(this.agents.get(grant.agentId)?.parents ?? [])].some((id) => this.agents.get(id)?.revoked === true));
    if (revoked) throw new WritError('WRIT_TOKEN_REVOKED', 'token has been revoked');
    await this.writeUses({ ...use, allowed: true }, calls, held, reporter, presenter, held === undefined, uses);
  }

  /**
   * Whether `token.use.ended` for this use id from this connection would be recorded as of a known use (the rpc
   * bounds the others).
   */
  isOpenUse(use: string | undefined, open: OpenUses): boolean {
    return use !== undefined && open.uses.has(use);
  }

  /**
   * `token.use.ended`: how a call recorded through `token.uses.open` ended, reported by the resource after it. A use
   * id open on this connection must name the jti and call it was recorded for, and one open on another connection
   * is not this one's to end (WRIT_BAD_REQUEST at `params.use` for both, nothing written); it ends once. Any other
   * report (an id forgotten, ended already or made up; none) is recorded as of an unknown use. Whose token it was
   * comes from the broker's own records, as for `token.used`.
   */
  async recordUseEnded(report: MethodParams<'token.use.ended'>, from: OpenUses): Promise<void> {
    const { call } = report;
    if ([report.jti, report.audience, call.resource, call.action, call.target].some((t) => t !== undefined && JWT_SHAPE.test(t))) {
      throw new WritError('WRIT_BAD_REQUEST', 'a use report must not hold a token', { path: 'params' });
    }
    const owner = report.use === undefined ? undefined : this.openUses.get(report.use);
    if (owner !== undefined && owner !== from) throw new WritError('WRIT_BAD_REQUEST', 'this use was recorded on another connection: only that one reports its end', { path: 'params.use' });
    const open = report.use === undefined ? undefined : from.uses.get(report.use);
    if (open !== undefined) {
      const same = open.jti === report.jti && open.call.resource === call.resource && open.call.action === call.action && open.call.target === call.target;
      if (!same) throw new WritError('WRIT_BAD_REQUEST', 'this use was recorded for another token or call', { path: 'params.use' });
      from.uses.delete(report.use!);
      this.openUses.delete(report.use!);
    }
    const grant = this.heldFor(report)?.grant;
    const agent = grant === undefined ? undefined : this.agents.get(grant.agentId);
    const code: WritErrorCode | undefined =
      report.outcome === 'revoked' ? 'WRIT_TOKEN_REVOKED' : report.outcome === 'expired' ? 'WRIT_TOKEN_EXPIRED' : report.outcome === 'answered' ? undefined : report.code;
    const detail: TokenUseEndedDetail = {
      ...(report.use === undefined ? {} : { use: report.use }),
      call: { resource: call.resource, action: call.action, target: call.target },
      outcome: report.outcome,
      durationMs: report.durationMs,
      ...(open === undefined ? { unknownUse: true as const } : {}),
    };
    await this.auditRaw({
      event: 'token.use.ended',
      jti: report.jti,
      outcome: report.outcome === 'answered' ? 'success' : 'failure',
      ...(code === undefined ? {} : { code }),
      ...(agent ? { agent: this.auditAgent(agent, 'ref') } : {}),
      ...(grant ? { grantId: grant.id, task: { id: grant.taskId, description: grant.task } } : {}),
      ...(report.audience === undefined ? {} : { audience: report.audience }),
      detail,
    });
  }

  /** The `token.used` records of one report, one per call (`undefined`: a use checked by scope alone). */
  private async writeUses(
    report: Omit<MethodParams<'token.used'>, 'call'>,
    calls: readonly (ConcreteCall | undefined)[],
    held: ReturnType<TokenLedger<Grant>['get']>,
    reporter: { agentId?: string; process?: PeerProcess },
    presenter?: () => Promise<{ process: PeerProcess } | { notFound: string }>,
    unknownToken = false,
    /** `token.uses.open`: each call's use id, in order. */
    uses?: readonly string[],
  ): Promise<void> {
    const texts = [report.jti, report.audience, ...(report.scopes ?? [])];
    for (const c of calls) if (c !== undefined) texts.push(c.resource, c.action, c.target);
    if (texts.some((t) => t !== undefined && JWT_SHAPE.test(t))) {
      // A report holds ids and names only; something shaped like a token is refused, never written.
      throw new WritError('WRIT_BAD_REQUEST', 'a use report must not hold a token', { path: 'params' });
    }
    const presented = presenter === undefined ? undefined : await presenter();
    const grant = held?.grant;
    const agent = grant === undefined ? undefined : this.agents.get(grant.agentId);
    const record = (call: ConcreteCall | undefined, i: number): AuditEntry => ({
      event: 'token.used',
      jti: report.jti,
      outcome: report.allowed ? 'success' : 'failure',
      ...(report.allowed || report.code === undefined ? {} : { code: report.code }),
      ...(agent ? { agent: this.auditAgent(agent, 'ref') } : {}),
      ...(grant ? { grantId: grant.id, task: { id: grant.taskId, description: grant.task } } : {}),
      ...(report.audience === undefined ? {} : { audience: report.audience }),
      detail: {
        allowed: report.allowed,
        ...(unknownToken ? { unknownToken: true } : {}),
        ...(uses?.[i] === undefined ? {} : { use: uses[i] }),
        ...(call === undefined ? {} : { call }),
        ...(report.scopes === undefined ? {} : { asked: report.scopes }),
        reporter: {
          ...(reporter.agentId === undefined ? {} : { agentId: reporter.agentId }),
          ...(reporter.process === undefined ? {} : { pid: reporter.process.pid, ...(reporter.process.exe === undefined ? {} : { exe: reporter.process.exe }) }),
        },
        ...(presented === undefined ? {} : { presenter: presenterView(presented) }),
      },
    });
    // Appended in order in one turn (the log fixes file order at append), made durable together.
    await Promise.all(calls.map((c, i) => this.auditRaw(record(c, i))));
    if (presented === undefined || !('process' in presented) || agent === undefined) return;
    try {
      await this.checkHolder(report.jti, held?.exp, [agent.id, ...agent.parents], { via: 'use', process: async () => presented.process });
    } catch (e) {
      // The finding is recorded and its action taken; the refusal itself has no one to go to.
      if (!isWritError(e) || e.code === 'WRIT_AUDIT_WRITE_FAILED' || e.code === 'WRIT_INTERNAL') throw e;
    }
  }

  /**
   * `agent.stopped`: `writ exec` reports it stopped a revoked agent's process tree. Recorded as a report (with the
   * reporter's kernel-derived process); only for an agent this broker knows, or one of an earlier run that its
   * revocation list names (its `writ exec` was refused the session after a restart): that record names it by id
   * in `detail.agentId`, as this run knows nothing else of it, and is marked `detail.unknownAgent`: any local process
   * may revoke an id and then report it stopped, and nothing proves the reporter ran that agent (the record's
   * `reporter` names who said so).
   */
  async recordAgentStopped(report: MethodParams<'agent.stopped'>, reporter: PeerProcess | undefined): Promise<void> {
    const agent = this.agents.get(report.agentId);
    const { agentId, ...facts } = report;
    const by = reporter === undefined ? {} : { reporter: { pid: reporter.pid, ...(reporter.exe === undefined ? {} : { exe: reporter.exe }) } };
    const outcome = report.treeStopped ? 'success' : 'failure';
    if (agent === undefined) {
      if (!this.deps.revocations.isAgentRevoked(agentId)) throw new WritError('WRIT_AGENT_NOT_FOUND', 'no such agent');
      await this.auditRaw({ event: 'agent.stopped', outcome, detail: { agentId, ...facts, revoked: true, unknownAgent: true, ...by } });
      return;
    }
    await this.audit('agent.stopped', agent, { outcome, detail: { ...facts, revoked: agent.revoked, ...by } });
  }

  /** A record written by another part of the broker (the proxy): the agent named from the broker's own records. */
  async recordFor(agentId: string | undefined, entry: AuditEntry): Promise<void> {
    const agent = agentId === undefined ? undefined : this.auditAgentById(agentId);
    await this.auditRaw({ ...entry, ...(agent === undefined ? {} : { agent }) });
  }

  /** The agent and every sub-agent below it (the Vault token tree). */
  private descendants(root: Agent): Agent[] {
    return [...this.agents.values()].filter((a) => a.id === root.id || a.parents.includes(root.id));
  }

  // -------------------------------------------------------------------------------------------
  // Views
  // -------------------------------------------------------------------------------------------

  /** Revokes every live agent of an inventory identity (blocking, or a finding whose action is stop). */
  async stopIdentity(identity: string, reason: string): Promise<void> {
    for (const a of [...this.agents.values()]) {
      // Its own, or one above it: a sub-agent this run made from an earlier run's token of that identity, which
      // no revocation of this run's agents reaches (the broker refuses its tokens by claim; verifiers need this).
      if (!a.revoked && (a.identity === identity || this.identitiesAbove(a)?.includes(identity))) await this.revoke({ kind: 'agent', id: a.id }, 'watch', reason);
    }
  }

  /** The inventory with each identity's status now and this run's agent ids. */
  inventoryView(): InventoryView[] {
    const o = this.deps.oversight;
    if (!o) return [];
    const now = seconds(this.deps.clock.now());
    const byIdentity = new Map<string, Agent[]>();
    for (const a of this.agents.values()) {
      if (a.identity === undefined) continue;
      const list = byIdentity.get(a.identity);
      if (list) list.push(a);
      else byIdentity.set(a.identity, [a]);
    }
    return o.inventory().map((e) => {
      const live = byIdentity.get(e.id) ?? [];
      const tokensNow = live.reduce(
        (n, a) => n + [...a.grants].reduce((m, id) => {
          const g = this.grants.get(id);
          return m + (g ? this.liveCount(g, now) : 0);
        }, 0),
        0,
      );
      const connected = live.some((a) => a.connections > 0 && !a.revoked);
      return { ...e, status: statusOf(e, { connected, tokens: tokensNow }), tokensNow, live: live.map((a) => a.id) };
    });
  }

  grantView(g: Grant): GrantView {
    return {
      id: g.id,
      taskId: g.taskId,
      task: g.task,
      agentId: g.agentId,
      scopes: [...g.scopes],
      audience: g.audience,
      mode: g.mode,
      ttl: g.ttl,
      expiresAt: g.expiresAt,
    };
  }

  listGrants(agentId?: string): GrantView[] {
    const now = seconds(this.deps.clock.now());
    return [...this.grants.values()]
      .filter((g) => !g.revoked && g.expiresAt > now && (agentId === undefined || g.agentId === agentId))
      .map((g) => this.grantView(g));
  }

  listAgents(): AgentView[] {
    const now = seconds(this.deps.clock.now());
    return [...this.agents.values()].map((a) => {
      const grants = [...a.grants].map((id) => this.grants.get(id)).filter((g): g is Grant => !!g && !g.revoked && g.expiresAt > now);
      return {
        id: a.id,
        name: a.info.name,
        kind: a.info.kind,
        ...(a.info.version === undefined ? {} : { version: a.info.version }),
        parents: [...a.parents],
        ...(a.identity === undefined ? {} : { identity: a.identity }),
        connected: a.connections > 0,
        revoked: a.revoked,
        grants: grants.length,
        liveTokens: grants.reduce((n, g) => n + this.liveCount(g, now), 0),
        ...(a.process === undefined ? {} : { process: a.process }),
      };
    });
  }

  counts(): { agents: number; grants: number; pendingApprovals: number } {
    return { agents: this.agents.size, grants: this.listGrants().length, pendingApprovals: this.pending.size };
  }

  isAgentRevoked(id: string): boolean {
    return this.agents.get(id)?.revoked === true;
  }

  /** Every agent id under (and including) this one: the connections to close on revocation. */
  agentTree(id: string): string[] {
    const a = this.agents.get(id);
    return a ? this.descendants(a).map((x) => x.id) : [id];
  }

  // -------------------------------------------------------------------------------------------
  // Audit helpers
  // -------------------------------------------------------------------------------------------

  /**
   * The agent as a record names it. `ref`: its process by pid, start time and executable only; the records of
   * each use of a token (minted, exchanged, introspected, used) come thousands a second, and the rest (uid, hash,
   * parent chain) is in the `agent.connected` record of that process, which the pid and start time name. That
   * halves those records (~940 to ~560 bytes), and every byte is serialized, hashed, written twice and sent to the editor.
   */
  private auditAgent(a: Agent, process: 'full' | 'ref' = 'full'): AuditAgent {
    const p = a.process;
    return {
      id: a.id,
      name: a.info.name,
      kind: a.info.kind,
      parents: [...a.parents],
      ...(p === undefined
        ? {}
        : {
            process:
              process === 'full'
                ? p
                : { pid: p.pid, ...(p.startTime === undefined ? {} : { startTime: p.startTime }), ...(p.exe === undefined ? {} : { exe: p.exe }) },
          }),
    };
  }

  private auditAgentById(id: string, process: 'full' | 'ref' = 'full'): AuditAgent | undefined {
    const a = this.agents.get(id);
    return a ? this.auditAgent(a, process) : undefined;
  }

  private audit(event: AuditEntry['event'], agent: Agent, rest: Omit<AuditEntry, 'event' | 'agent'>): Promise<unknown> {
    return this.auditRaw({ event, agent: this.auditAgent(agent, TOKEN_EVENTS.has(event) ? 'ref' : 'full'), ...rest });
  }

  private auditRaw(entry: AuditEntry): Promise<unknown> {
    // Members left undefined are left out of the record by the log itself (AuditLog #build): records stay canonical.
    return this.deps.audit.append(entry);
  }
}

/** Same scopes in the same order (both normalized: sorted and without duplicates). */
function sameScopes(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The presenting process in a `token.used` record: by reference, as the token's own agent is, or why it is unknown. */
function presenterView(p: { process: PeerProcess } | { notFound: string }): Record<string, unknown> {
  if (!('process' in p)) return { found: false, reason: p.notFound };
  const { pid, startTime, exe } = p.process;
  return { pid, ...(startTime === undefined ? {} : { startTime }), ...(exe === undefined ? {} : { exe }) };
}
