// The wire: every message between agents, the broker, the extension and the webview, as zod schemas.
// Each schema says which side sends it. TypeScript types come from z.infer; nothing here does I/O.
import { z } from 'zod';
import { ERROR_CODES } from './errors';

export const PROTOCOL_VERSION = 'writ/1';
/** Frames above this are refused before parsing. */
export const MAX_FRAME_BYTES = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Shared shapes
// ---------------------------------------------------------------------------------------------

const shortText = (max: number) => z.string().min(1).max(max);
/** A scope string; its grammar is checked by core/scopes (this only bounds its size). */
export const ScopeString = shortText(512);
export const ScopeList = z.array(ScopeString).min(1).max(32);
/** Seconds. The broker clamps to its configured maximum (never above an hour). */
export const TtlSeconds = z.number().int().min(1).max(3600);
export const Audience = shortText(512);

export const AgentInfo = z.strictObject({
  name: shortText(100),
  kind: shortText(50).default('script'),
  version: z.string().max(50).optional(),
});
export type AgentInfo = z.infer<typeof AgentInfo>;

export const GrantMode = z.enum(['task', 'session']);
export type GrantMode = z.infer<typeof GrantMode>;

/** What the broker knows of the process on the other end of a connection (kernel-derived, never declared). */
export const PeerProcess = z.strictObject({
  pid: z.number().int(),
  /** Effective uid, from /proc/<pid>/status. */
  uid: z.number().int().optional(),
  /** The executable's path (/proc/<pid>/exe); absent when unreadable, never guessed. */
  exe: z.string().optional(),
  /** Clock ticks after boot (/proc/<pid>/stat field 22): with pid, names the process across PID reuse. */
  startTime: z.number().optional(),
  /** SHA-256 (hex) of the executable; absent when unreadable or over the size bound. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** Parent processes, nearest first, up to 8: pid and the executable's file name where readable. */
  ppidChain: z.array(z.strictObject({ pid: z.number().int(), name: z.string().optional() })).max(8).optional(),
});
export type PeerProcess = z.infer<typeof PeerProcess>;

export const AgentView = z.strictObject({
  id: z.string(),
  name: z.string(),
  kind: z.string(),
  version: z.string().optional(),
  /** Agent ids from this agent's parent up to the root agent. */
  parents: z.array(z.string()),
  /** Inventory identity (stable across runs). */
  identity: z.string().optional(),
  connected: z.boolean(),
  revoked: z.boolean(),
  grants: z.number().int(),
  liveTokens: z.number().int(),
  process: PeerProcess.optional(),
});
export type AgentView = z.infer<typeof AgentView>;

export const GrantView = z.strictObject({
  id: z.string(),
  taskId: z.string(),
  task: z.string(),
  agentId: z.string(),
  scopes: z.array(z.string()),
  audience: z.string(),
  mode: GrantMode,
  /** Longest token lifetime this grant allows, seconds. */
  ttl: z.number().int(),
  /** Epoch seconds after which no token is minted from this grant. */
  expiresAt: z.number().int(),
});
export type GrantView = z.infer<typeof GrantView>;

/** A live token of a grant as the editor lists it: its id, expiry and scopes, never the token itself. */
export const TokenView = z.strictObject({
  jti: z.string(),
  /** Epoch seconds. */
  expiresAt: z.number().int(),
  scopes: z.array(z.string()),
});
export type TokenView = z.infer<typeof TokenView>;

export const TokenResult = z.strictObject({
  token: z.string(),
  jti: z.string(),
  scopes: z.array(z.string()),
  audience: z.string(),
  /** Epoch seconds. */
  expiresAt: z.number().int(),
});
export type TokenResult = z.infer<typeof TokenResult>;

export const RevokeTarget = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('token'), jti: shortText(200) }),
  z.strictObject({ kind: z.literal('grant'), id: shortText(200) }),
  z.strictObject({ kind: z.literal('task'), id: shortText(200) }),
  z.strictObject({ kind: z.literal('agent'), id: shortText(200) }),
  z.strictObject({ kind: z.literal('all') }),
]);
export type RevokeTarget = z.infer<typeof RevokeTarget>;

/**
 * Where the broker's revocation journal is and where this subscription's snapshot ends in it. The journal is a
 * file in the broker's runtime folder (0600, this user's) to which the broker appends each entry of the revocation
 * list as it applies it, before it pushes the same event: one RevocationEvent (with its `seq`) per line, in JSON.
 * A verifier on this machine reads what was appended since its last check at each check, so it refuses a revoked
 * token from the moment the line is written, without waiting to be woken by the push. The push stays the channel
 * that counts (acknowledged, and what a verifier elsewhere has): the journal can only make a verifier refuse
 * sooner. Its last line, once it has grown past its size, is `{"next": RevocationJournalFile}`: the file that
 * continues it (the old one is then removed; a reader holding it open reads on to that line).
 */
/** Past this size the broker continues its journal in a new file: a long-lived broker's journal stays small to read. */
export const REVOCATION_JOURNAL_MAX_BYTES = 4 * 1024 * 1024;
export const RevocationJournalFile = z.strictObject({
  path: z.string().min(1).max(4096),
  /** The file's inode number, in decimal: a reader checks the file it opened is the one the broker named. */
  ino: z.string().regex(/^[0-9]{1,20}$/),
});
export type RevocationJournalFile = z.infer<typeof RevocationJournalFile>;
export const RevocationJournalPlace = RevocationJournalFile.extend({
  /** Bytes of the file written before the snapshot was taken: its reader starts there. */
  offset: z.number().int().nonnegative(),
});
export type RevocationJournalPlace = z.infer<typeof RevocationJournalPlace>;
export const RevocationJournalNext = z.strictObject({ next: RevocationJournalFile });

/** Everything revoked that may still cover a live token: what a verifier needs when it (re)subscribes. */
export const RevocationSnapshot = z.strictObject({
  jtis: z.array(z.string()),
  grantIds: z.array(z.string()),
  /** Revoked agents: any token whose `act` chain names one of them is revoked. */
  agentIds: z.array(z.string()),
  /** Revoked tasks: any token whose `task_id` is one of them is revoked (absent from an older broker). */
  taskIds: z.array(z.string()).optional(),
  /** Epoch seconds: tokens issued strictly before it are revoked (`all`); absent if never used. */
  allBefore: z.number().int().optional(),
  /**
   * Only to a subscriber to `blocks`: the inventory identities the developer has blocked now. A token naming one,
   * as `agent_identity` or in `parent_identities`, is refused while the block lasts. Unlike the revocations, this
   * list replaces what the subscriber held: an identity unblocked while it was away is in none of it.
   */
  blockedIdentities: z.array(z.string()).optional(),
  /**
   * Only to a subscriber that asked for `paged`: true when the ids did not all fit in one frame of MAX_FRAME_BYTES.
   * The rest come from `revocations.page`, asked with `after` = the ids received so far (all four lists counted),
   * until an answer without `more`. A verifier goes live only after.
   */
  more: z.literal(true).optional(),
});
export type RevocationSnapshot = z.infer<typeof RevocationSnapshot>;

/** A use of a token, as a resource's verifier saw it (never the token itself). */
export const ConcreteCall = z.strictObject({
  resource: shortText(64),
  action: shortText(64),
  target: z.string().max(512),
});
export type ConcreteCall = z.infer<typeof ConcreteCall>;

/** The connection a token arrived on, as the resource's socket sees it (`token.used`, `token.uses`). */
export const UseConnection = z.strictObject({
  localAddress: shortText(64),
  localPort: z.number().int().min(1).max(65535),
  remoteAddress: shortText(64),
  remotePort: z.number().int().min(1).max(65535),
});

/** Calls one awaited use report (`token.uses`) may list; a resource with more sends several. */
export const MAX_CALLS_PER_USE_REPORT = 256;

/** The broker's name for one recorded use (`token.uses.open`): its `token.used` record and its `token.use.ended` share it. */
export const UseId = z.string().regex(/^use_[A-Za-z0-9_-]{1,64}$/);

/** An awaited use report (`token.uses`, `token.uses.open`): the calls one request makes, all allowed by one token. */
export const UsesReport = z.strictObject({
  jti: shortText(200),
  exp: z.number().int().optional(),
  audience: Audience.optional(),
  calls: z.array(ConcreteCall).min(1).max(MAX_CALLS_PER_USE_REPORT),
  /** The scopes asked besides the calls, if any. */
  scopes: z.array(ScopeString).max(32).optional(),
  connection: UseConnection.optional(),
});

export const USE_END_OUTCOMES = [
  'answered', // the resource answered the call (for an MCP tool: a result, an error result included)
  'error', // the call failed at the resource (the upstream answered with an error, went away or timed out)
  'revoked', // its token was revoked while the call ran: ended, its answer not delivered
  'expired', // its token expired while the call ran (the same)
  'cancelled', // the caller cancelled it (MCP notifications/cancelled)
  'not-forwarded', // recorded as allowed, then refused before it ran: its token was revoked (or expired) in between
  'closed', // the resource stopped while the call ran (`writ gate` on SIGTERM): ended, its answer not delivered
] as const;

/** One agent identity in the inventory, across broker runs (persisted in the state folder). */
export const InventoryEntry = z.strictObject({
  /** Stable across runs: derived from owner, name, kind and parent identity. */
  id: z.string(),
  name: z.string(),
  kind: z.string(),
  owner: z.string(),
  firstSeen: z.string(),
  lastSeen: z.string(),
  /** Connections over all runs. */
  sessions: z.number().int().nonnegative(),
  processes: z.array(z.strictObject({ exe: z.string(), sha256: z.string().optional() })),
  parents: z.array(z.string()),
  subAgents: z.array(z.string()),
  scopesGranted: z.array(z.string()),
  /** Set when the developer blocked this identity: its requests are refused without a prompt. */
  blocked: z.strictObject({ at: z.string(), reason: z.string().optional() }).nullable(),
  /** The last run ended in a revocation of this agent. */
  stopped: z.boolean(),
});
export type InventoryEntry = z.infer<typeof InventoryEntry>;

export const InventoryView = InventoryEntry.extend({
  status: z.enum(['active', 'idle', 'stopped', 'blocked']),
  tokensNow: z.number().int(),
  /** This run's agent ids for the identity (what `revoke --agent` takes). */
  live: z.array(z.string()),
});
export type InventoryView = z.infer<typeof InventoryView>;

export const FindingView = z.strictObject({
  id: z.string(),
  kind: z.string(),
  identity: z.string(),
  agentId: z.string(),
  at: z.number(),
  action: z.enum(['warn', 'block', 'stop']),
  evidence: z.record(z.string(), z.unknown()),
});
export type FindingView = z.infer<typeof FindingView>;

// ---------------------------------------------------------------------------------------------
// JSON-RPC 2.0 envelope (agent ⇄ broker over the WebSocket)
// ---------------------------------------------------------------------------------------------

export const JsonRpcId = z.union([z.string().max(128), z.number().int()]);
export const JsonRpcRequest = z.strictObject({
  jsonrpc: z.literal('2.0'),
  id: JsonRpcId.optional(),
  method: z.string().max(64),
  params: z.unknown().optional(),
});
export type JsonRpcRequest = z.infer<typeof JsonRpcRequest>;

export const WritErrorCodeSchema = z.enum(ERROR_CODES);

export const JsonRpcErrorObject = z.strictObject({
  code: z.number().int(),
  message: z.string(),
  data: z
    .strictObject({
      code: WritErrorCodeSchema,
      path: z.string().optional(),
      detail: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
});
export type JsonRpcErrorObject = z.infer<typeof JsonRpcErrorObject>;

export const JsonRpcResponse = z.union([
  z.strictObject({ jsonrpc: z.literal('2.0'), id: JsonRpcId.nullable(), result: z.unknown() }),
  z.strictObject({ jsonrpc: z.literal('2.0'), id: JsonRpcId.nullable(), error: JsonRpcErrorObject }),
]);
export type JsonRpcResponse = z.infer<typeof JsonRpcResponse>;

/** JSON-RPC's numeric codes; Writ's stable string code travels in `error.data.code`. */
export const RPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL: -32603,
  /** Every Writ-level refusal (denied, revoked, …). */
  APPLICATION: -32000,
} as const;

// ---------------------------------------------------------------------------------------------
// Methods an agent calls (agent → broker), each with its params and result
// ---------------------------------------------------------------------------------------------

export const Methods = {
  /** First call on a connection: who the agent says it is, and the credential that proves continuity. */
  hello: {
    params: z.strictObject({
      protocol: z.literal(PROTOCOL_VERSION),
      agent: AgentInfo,
      /**
       * An agent session credential from an earlier approval (or `writ exec`): same agent, same grants. One this run
       * does not know (the broker restarted) is taken by the new agent, if shaped as the broker's and not named by
       * the revocation list; the hello that names it first takes it (the agent's command may, before `writ exec`).
       */
      session: z.string().max(200).optional(),
      /**
       * The parent's session credential, for a sub-agent; its grants bound the child's. Said again with `session`
       * after a restart, it puts the agent under the one holding it now (or, once it comes back, under that one),
       * also on a hello that resumes an agent which took its session in this run and is top-level.
       */
      parentSession: z.string().max(200).optional(),
    }),
    result: z.strictObject({
      protocol: z.literal(PROTOCOL_VERSION),
      agentId: z.string(),
      /** True when `session` named a live agent session. */
      resumed: z.boolean(),
      issuer: z.string(),
      user: z.string(),
    }),
  },
  /** Ask for credentials for a task. Blocks until the developer decides (timeout means deny). */
  'task.request': {
    params: z.strictObject({
      task: shortText(500),
      scopes: ScopeList,
      audience: Audience,
      ttl: TtlSeconds.optional(),
    }),
    result: z.strictObject({
      grant: GrantView,
      /** True when a live grant already covered the request: no prompt was shown. */
      reused: z.boolean(),
      /** The agent session credential, handed out once per agent; present it in `hello` to resume. */
      session: z.string().optional(),
      token: TokenResult,
    }),
  },
  /** Mint another token from a live grant: same or fewer scopes, never more. */
  'token.mint': {
    params: z.strictObject({
      grantId: shortText(200),
      scopes: ScopeList.optional(),
      ttl: TtlSeconds.optional(),
    }),
    result: TokenResult,
  },
  'grants.list': {
    params: z.strictObject({}).optional(),
    result: z.strictObject({ grants: z.array(GrantView) }),
  },
  'agents.list': {
    params: z.strictObject({}).optional(),
    result: z.strictObject({ agents: z.array(AgentView) }),
  },
  /** Revocation only ever takes away, so any local caller may ask; each is audited with who asked. */
  revoke: {
    params: z.strictObject({ target: RevokeTarget, reason: z.string().max(200).optional() }),
    result: z.strictObject({ revokedTokens: z.number().int(), revokedGrants: z.number().int(), revokedAgents: z.number().int() }),
  },
  /**
   * The rest of this connection's paged `subscribe` snapshot, when it said `more`: its ids from `after` on (counted
   * across the lists in the order blockedIdentities, grantIds, taskIds, agentIds, jtis), as many as fit in one
   * frame. `blockedIdentities` is there only for a subscriber to `blocks`, and only in a page that has some.
   */
  'revocations.page': {
    params: z.strictObject({ after: z.number().int().nonnegative() }),
    result: z.strictObject({
      blockedIdentities: z.array(z.string()).optional(),
      grantIds: z.array(z.string()),
      taskIds: z.array(z.string()),
      agentIds: z.array(z.string()),
      jtis: z.array(z.string()),
      more: z.literal(true).optional(),
    }),
  },
  /** A subscriber applied revocation event `seq` (sent as a notification, no answer). */
  'revocation.ack': {
    params: z.strictObject({ seq: z.number().int() }),
    result: z.strictObject({}),
  },
  /** Every agent identity the broker has seen, across runs, with its status now. */
  'inventory.list': {
    params: z.strictObject({}).optional(),
    result: z.strictObject({ agents: z.array(InventoryView) }),
  },
  'findings.list': {
    params: z.strictObject({}).optional(),
    result: z.strictObject({ findings: z.array(FindingView) }),
  },
  /** Block an identity: it only takes away, so any local caller may. Unblocking is for the approval channel. */
  'agents.block': {
    params: z.strictObject({ identity: shortText(100), reason: z.string().max(200).optional() }),
    result: InventoryView,
  },
  /** Receive `revocation` notifications on this connection (resource verifiers use it). */
  subscribe: {
    params: z.strictObject({
      /**
       * `revocation` (always sent to a subscriber); `blocks` also: the identities blocked in the snapshot
       * (`blockedIdentities`) and each block and unblock as a `blocks` notification, numbered and acknowledged
       * like a revocation when `acknowledge` is set. A broker before blocks refuses `blocks` (WRIT_BAD_REQUEST).
       */
      events: z.array(z.enum(['revocation', 'blocks'])).min(1),
      /**
       * Promise to acknowledge each revocation event (`revocation.ack`): the broker's revoke call then returns
       * only once every acknowledging subscriber has applied it (bounded by a timeout). Verifiers set it.
       * An acknowledging subscriber is sent one event per entry of the revocation list (a token, grant, agent
       * of the tree, or `all`) as soon as the broker applies it, before it is durable, instead of one per call.
       * Others get one event per call once it is durable, split into several if it would pass MAX_FRAME_BYTES.
       */
      acknowledge: z.boolean().optional(),
      /**
       * Take the snapshot in frames of at most MAX_FRAME_BYTES: the answer holds what fits and says `more`, and
       * `revocations.page` gives the rest. Without it the snapshot comes whole in the answer, however large.
       */
      paged: z.boolean().optional(),
      /**
       * Also name the broker's revocation journal (`journal` in the answer), for a verifier on this machine that
       * reads it at each check. A broker before the journal refuses the key (WRIT_BAD_REQUEST).
       */
      journal: z.boolean().optional(),
    }),
    result: z.strictObject({
      subscribed: z.array(z.string()),
      /** What was revoked before this subscription (and while a verifier was away); events follow. */
      revocations: RevocationSnapshot.optional(),
      /** Only to a subscriber that asked, and only while the broker keeps one: see RevocationJournalPlace. */
      journal: RevocationJournalPlace.optional(),
    }),
  },
  /**
   * A resource's verifier reports that a token was presented (allowed or refused), so the audit log shows use,
   * not only issuance. Open before `hello`; bounded per connection (excess reports are dropped, not queued).
   */
  'token.used': {
    params: z.strictObject({
      jti: shortText(200),
      /** The token's `exp` claim, when the verifier read it: the broker finds the token by jti and expiry at once. */
      exp: z.number().int().optional(),
      allowed: z.boolean(),
      /** The verifier's audience (the resource). */
      audience: Audience.optional(),
      /** The concrete call checked, if any. */
      call: ConcreteCall.optional(),
      /** The scopes asked, if checked by scope. */
      scopes: z.array(ScopeString).max(32).optional(),
      /** Why it was refused. */
      code: WritErrorCodeSchema.optional(),
      /**
       * The connection the token arrived on, as the resource's socket sees it (its addresses and ports): the broker
       * finds the presenting process from the kernel, names it in the record and holds it to the token's process
       * rules. Never taken on trust: a connection the kernel does not show is recorded as not found.
       */
      connection: UseConnection.optional(),
    }),
    result: z.strictObject({ recorded: z.boolean() }),
  },
  /**
   * A resource reports the calls it is about to let through for one request, all allowed by one token, and waits:
   * the broker answers only once a `token.used` record for each call is durable (WRIT_AUDIT_WRITE_FAILED if the
   * write fails), so the resource runs nothing that is not recorded (`Verifier.authorize`; `writ gate` uses it).
   * Open before `hello`; never dropped (its caller waits for the answer, which is what bounds it); at most
   * MAX_CALLS_PER_USE_REPORT calls. Refusals are reported over `token.used`. Its answer is `{recorded}` and nothing
   * else, as verifiers before use ids parse it strictly: use ids come from `token.uses.open`.
   */
  'token.uses': {
    params: UsesReport,
    /** How many `token.used` records were written: one per call. */
    result: z.strictObject({ recorded: z.number().int().min(0) }),
  },
  /**
   * `token.uses`, and each call's use stays open until the resource reports its end (`token.use.ended`) on this same
   * connection: the answer names each call's use id, in the order of `calls`, which its `token.used` record carries
   * too. Open uses belong to the connection that recorded them: at most MAX_OPEN_USES_PER_CONNECTION (4,096) each,
   * past which its own oldest is forgotten, and all of them forgotten when it closes; an end for a forgotten use is
   * recorded as of an unknown one. Bounded and refused as `token.uses` is (the two share the connection's calls a
   * second). A verifier asks this first and, on WRIT_METHOD_NOT_FOUND (a broker before use ids), sends `token.uses`
   * instead and reports ends without ids.
   */
  'token.uses.open': {
    params: UsesReport,
    result: z.strictObject({ recorded: z.number().int().min(0), uses: z.array(UseId).max(MAX_CALLS_PER_USE_REPORT) }),
  },
  /**
   * A resource reports how a call it recorded through `token.uses.open` ended (after the fact, without waiting).
   * Open before `hello`; a use id open on this connection (recorded through its `token.uses.open`, not ended yet)
   * is recorded once (bounded by `token.uses.open` itself); a use id open on another connection is refused
   * (WRIT_BAD_REQUEST at `params.use`: only the connection that recorded a use ends it); anything else (an id
   * forgotten at the cap or with its connection, from before a restart, ended already, made up; none) is recorded
   * as of an unknown use, counted against the connection's `token.used` budget and dropped past it. Never the
   * call's arguments or result.
   */
  'token.use.ended': {
    params: z.strictObject({
      /** From the `token.uses.open` answer on this connection; must name this jti and call. */
      use: UseId.optional(),
      jti: shortText(200),
      exp: z.number().int().optional(),
      audience: Audience.optional(),
      call: ConcreteCall,
      outcome: z.enum(USE_END_OUTCOMES),
      /** From the use's record to its end. */
      durationMs: z.number().int().nonnegative().max(2 ** 31),
      /** Why it ended so, if a Writ code says it (revoked: WRIT_TOKEN_REVOKED, …). */
      code: WritErrorCodeSchema.optional(),
    }),
    result: z.strictObject({ recorded: z.boolean() }),
  },
  /**
   * `writ exec` reports that it stopped a revoked agent's process tree (its child's process group and every
   * descendant it found). Open before `hello` (the agent's own connection is closed by then); the broker
   * records it with the reporter's kernel-derived identity, as a report, beside its own `revoked` record.
   */
  'agent.stopped': {
    params: z.strictObject({
      agentId: shortText(200),
      /** The child `writ exec` started (the process group leader). */
      pid: z.number().int().positive(),
      /** The last signal sent to the tree: SIGKILL when something outlived the grace period. */
      signal: z.enum(['SIGTERM', 'SIGKILL']),
      /** Processes signalled (the child and its descendants). */
      processes: z.number().int().nonnegative(),
      /** True when no process of the tree was left alive afterwards. */
      treeStopped: z.boolean(),
      exitCode: z.number().int().nullable(),
      exitSignal: z.string().max(20).nullable(),
    }),
    result: z.strictObject({ recorded: z.boolean() }),
  },
  status: {
    params: z.strictObject({}).optional(),
    result: z.strictObject({
      version: z.string(),
      protocol: z.string(),
      pid: z.number().int(),
      issuer: z.string(),
      user: z.string(),
      session: z.string(),
      approver: z.enum(['ipc', 'tty', 'none']),
      agents: z.number().int(),
      grants: z.number().int(),
      pendingApprovals: z.number().int(),
      auditRecords: z.number().int(),
      /**
       * The durable count and the SHA-256 hex of the last durable record, signed as a checkpoint's text is (its kid
       * and signature): `writ audit verify` checks it with the keychain's keys and compares it with the file (the
       * discovery file names it), so records after the last signed checkpoint are vouched for by the broker that
       * wrote them, and by nothing that merely answers on its socket. Optional: older brokers do not send it.
       */
      auditSeal: z
        .object({ count: z.number().int().nonnegative(), head: z.string().regex(/^[0-9a-f]{64}$/), kid: z.string(), sig: z.string() })
        .optional(),
      /** Open findings of the watch (see findings.list). */
      findings: z.number().int(),
      kid: z.string(),
    }),
  },
} as const;

export type MethodName = keyof typeof Methods;
export type MethodParams<M extends MethodName> = z.infer<(typeof Methods)[M]['params']>;
export type MethodResult<M extends MethodName> = z.infer<(typeof Methods)[M]['result']>;

/**
 * Notifications the broker sends (broker → agent). A `revocation` frame is at most MAX_FRAME_BYTES: a revocation
 * with more ids than fit comes as several events with the same target and `at`, each applied as it arrives; their
 * union is the revocation (none covers anything it does not). An acknowledging subscriber gets one event per
 * entry of the revocation list, each with its own `seq`, so a split never needs acknowledging as one.
 */
export const RevocationEvent = z.strictObject({
  target: RevokeTarget,
  /**
   * Epoch seconds. For `all`: tokens issued strictly before this second are covered. A broker since this one puts
   * it a second after the revocation and mints nothing until then; one before named the tokens of its own second in `jtis`.
   */
  at: z.number().int(),
  /**
   * Tokens revoked one by one: a `token` target's (an `all` revocation of an older broker named its own second's). A grant,
   * task or agent revocation names none (a broker before this one listed every live token here): each token it
   * takes carries one of `grantIds` as `grant_id` (or in `parent_grant_ids`), `taskIds` as `task_id`, or an
   * agent of `agentIds` in its `act` chain.
   */
  jtis: z.array(z.string()),
  agentIds: z.array(z.string()),
  taskIds: z.array(z.string()),
  /** Grants revoked: any token carrying one of these `grant_id`s is revoked. */
  grantIds: z.array(z.string()).optional(),
  /** Sequence number an acknowledging subscriber echoes in `revocation.ack`. */
  seq: z.number().int().optional(),
});
export type RevocationEvent = z.infer<typeof RevocationEvent>;

/**
 * A `blocks` notification (broker → a subscriber to `blocks`): the developer blocked an inventory identity, or
 * unblocked it. A block is sent the moment it holds in the broker (before it is on disk), an unblock once it is on
 * disk. A token naming a blocked identity (`agent_identity`, `parent_identities`) is refused while the block
 * lasts, and taken again after the unblock if it has not expired. With `seq`, acknowledged by `revocation.ack`
 * (one numbering for both): the block's call returns once every acknowledging subscriber to `blocks` has applied it.
 */
export const BlockEvent = z.strictObject({
  identity: z.string().min(1).max(128),
  blocked: z.boolean(),
  seq: z.number().int().optional(),
});
export type BlockEvent = z.infer<typeof BlockEvent>;

/**
 * `RevocationEvent.safeParse` written out by hand, for the verifier's hot path: handling this one frame is the
 * time a revocation takes to reach a resource, and zod's generic walk was a fifth of it in a verifier process.
 * Exactly as strict (the unit tests hold it to the schema): an unknown key, a wrong type, an id out of 1..200
 * code points or a number that is not a safe integer gives undefined, and nothing of the event is used.
 */
export function parseRevocationEvent(input: unknown): RevocationEvent | undefined {
  if (!isRecord(input)) return undefined;
  for (const key of Object.keys(input)) if (!EVENT_KEYS.has(key)) return undefined;
  const target = parseRevokeTarget(input.target);
  const { at, jtis, agentIds, taskIds, grantIds, seq } = input;
  if (target === undefined || !Number.isSafeInteger(at) || !isStringArray(jtis) || !isStringArray(agentIds) || !isStringArray(taskIds)) return undefined;
  if ((grantIds !== undefined && !isStringArray(grantIds)) || (seq !== undefined && !Number.isSafeInteger(seq))) return undefined;
  const event: RevocationEvent = { target, at: at as number, jtis, agentIds, taskIds };
  if (grantIds !== undefined) event.grantIds = grantIds;
  if (seq !== undefined) event.seq = seq as number;
  return event;
}

const EVENT_KEYS = new Set(['target', 'at', 'jtis', 'agentIds', 'taskIds', 'grantIds', 'seq']);
/** RevokeTarget's ids: shortText(200), measured as zod measures, in code points. */
const TARGET_ID_MAX = 200;

function parseRevokeTarget(v: unknown): RevokeTarget | undefined {
  if (!isRecord(v)) return undefined;
  const keys = Object.keys(v);
  switch (v.kind) {
    case 'all':
      return keys.length === 1 ? { kind: 'all' } : undefined;
    case 'token':
      return keys.length === 2 && isTargetId(v.jti) ? { kind: 'token', jti: v.jti } : undefined;
    case 'grant':
    case 'task':
    case 'agent':
      return keys.length === 2 && isTargetId(v.id) ? { kind: v.kind, id: v.id } : undefined;
    default:
      return undefined;
  }
}

/** A non-null, non-array object (zod's own test for an object). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringArray(v: unknown): v is string[] {
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string') return false;
  return true;
}

function isTargetId(v: unknown): v is string {
  if (typeof v !== 'string' || v.length === 0) return false;
  if (v.length <= TARGET_ID_MAX) return true;
  if (v.length > 2 * TARGET_ID_MAX) return false;
  let points = v.length; // a surrogate pair is one code point
  for (let i = 0; i < v.length - 1; i++) {
    if ((v.charCodeAt(i) & 0xfc00) === 0xd800 && (v.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      points--;
      i++;
    }
  }
  return points <= TARGET_ID_MAX;
}

// ---------------------------------------------------------------------------------------------
// The approval channel: the parent process's IPC pipe (extension ⇄ broker). Never on a socket.
// ---------------------------------------------------------------------------------------------

export const ApprovalRequest = z.strictObject({
  requestId: z.string(),
  agent: z.strictObject({
    id: z.string(),
    name: z.string(),
    kind: z.string(),
    version: z.string().optional(),
    /** Parent agents, nearest first, by name and id. */
    parents: z.array(z.strictObject({ id: z.string(), name: z.string() })),
    process: PeerProcess.optional(),
  }),
  task: z.string(),
  scopes: z.array(z.string()),
  audience: z.string(),
  /** Seconds asked (already clamped to the maximum). */
  ttl: z.number().int(),
  maxTtl: z.number().int(),
  /** Epoch ms when the request is denied by timeout. */
  deadline: z.number().int(),
});
export type ApprovalRequest = z.infer<typeof ApprovalRequest>;

export const ApprovalDecision = z.discriminatedUnion('decision', [
  z.strictObject({
    requestId: z.string(),
    decision: z.literal('approve'),
    /** A subset of the scopes asked (narrowing); omitted means all asked. */
    scopes: z.array(ScopeString).min(1).optional(),
    ttl: TtlSeconds.optional(),
    mode: GrantMode.default('task'),
    /** Who decided: the developer (the default), or a workspace rule the developer trusted. Recorded in `task.approved`. */
    by: z.enum(['developer', 'workspace-rule']).optional(),
  }),
  z.strictObject({ requestId: z.string(), decision: z.literal('deny'), reason: z.string().max(200).optional() }),
]);
export type ApprovalDecision = z.infer<typeof ApprovalDecision>;

/** Pairs an editor action (block, unblock, dismiss) with its `action.result`. */
const ActionRequestId = z.string().min(1).max(100);

/** Most audit records one `audit.records` IPC message carries. */
export const AUDIT_RECORDS_PER_MESSAGE = 512;
/**
 * Token activity alone (minted, exchanged, used, proxy calls) changes only counts: the broker says so at most once
 * in this many milliseconds (`audit.activity`), and the editor's views catch up as often.
 */
export const COUNTS_ACTIVITY_MS = 1000;
/** Most live tokens one `tokens` answer lists; `more` says how many it left out. */
export const TOKENS_PER_ANSWER = 100; // below RECENT_TOKENS (broker/core/authority.ts): the ring it is read from

/** broker → parent over IPC */
export const BrokerToParent = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('ready'),
    pid: z.number().int(),
    socketPath: z.string(),
    httpUrl: z.string(),
    wsUrl: z.string(),
    issuer: z.string(),
    /** This run's id, as every audit record it writes names it (`session`): "this session" in an export. */
    session: z.string(),
  }),
  z.strictObject({ type: z.literal('approval.request'), request: ApprovalRequest }),
  /** The request ended without this parent's decision (agent gone, timeout, revoked). */
  z.strictObject({ type: z.literal('approval.closed'), requestId: z.string(), reason: WritErrorCodeSchema.or(z.literal('decided')) }),
  /**
   * Audit records as they become durable, in log order, only while the parent follows (`audit.follow`): one message
   * per flush, not per record (a minting agent's IPC).
   */
  z.strictObject({ type: z.literal('audit.records'), records: z.array(z.lazy(() => AuditRecord)).min(1).max(AUDIT_RECORDS_PER_MESSAGE) }),
  /**
   * Records were written (`records` of them since the last such message; checkpoints and introspections alone say
   * nothing), followed or not: the editor's cue to refresh its views. `changes` when any was more than token
   * activity (minted, exchanged, used, proxy.call). Coalesced: at most one per 5 ms, and token activity alone at
   * most one per COUNTS_ACTIVITY_MS.
   */
  z.strictObject({ type: z.literal('audit.activity'), records: z.number().int().positive(), changes: z.boolean() }),
  /**
   * The answer to `tokens.request`: the grant's live tokens, newest first, at most TOKENS_PER_ANSWER; `more` live
   * ones were left out. Empty for a grant that is unknown, revoked, or has none.
   */
  z.strictObject({ type: z.literal('tokens'), requestId: z.string(), tokens: z.array(TokenView).max(TOKENS_PER_ANSWER), more: z.number().int().nonnegative() }),
  z.strictObject({ type: z.literal('fatal'), code: WritErrorCodeSchema, message: z.string() }),
  /** The answer to `ping`, from the broker's event loop: it is alive and serving. */
  z.strictObject({ type: z.literal('pong'), id: z.string() }),
  /** The watch raised a finding (already audited, and acted on per its action). */
  z.strictObject({ type: z.literal('finding'), finding: FindingView }),
  /**
   * The answer to `state.request`: every agent and every live grant, the watch's open findings and the agent
   * inventory (every identity across runs), for the editor's views.
   */
  z.strictObject({
    type: z.literal('state'),
    requestId: z.string(),
    agents: z.array(AgentView),
    grants: z.array(GrantView),
    pendingApprovals: z.number().int(),
    findings: z.array(FindingView),
    inventory: z.array(InventoryView),
  }),
  /** The answer to an `agent.block`, `agent.unblock` or `finding.dismiss` that carried a requestId: done, or why not. */
  z.strictObject({
    type: z.literal('action.result'),
    requestId: z.string(),
    error: z.strictObject({ code: WritErrorCodeSchema, message: z.string() }).optional(),
  }),
]);
export type BrokerToParent = z.infer<typeof BrokerToParent>;

/** parent → broker over IPC */
export const ParentToBroker = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('approval.decision'), decision: ApprovalDecision }),
  z.strictObject({ type: z.literal('revoke'), target: RevokeTarget, reason: z.string().max(200).optional() }),
  z.strictObject({ type: z.literal('shutdown') }),
  /** Ask for a `state` snapshot (all agents and grants: the socket's grants.list only shows the caller's own). */
  z.strictObject({ type: z.literal('state.request'), requestId: z.string().min(1).max(100) }),
  /**
   * Block an inventory identity: its live agents are revoked and its requests refused, across restarts, until
   * unblocked. With a requestId the broker answers `action.result`.
   */
  z.strictObject({ type: z.literal('agent.block'), identity: z.string().min(1).max(100), reason: z.string().min(1).max(200).optional(), requestId: ActionRequestId.optional() }),
  /** Giving back is for the developer only: unblocking and dismissing come over this channel, never a socket. */
  z.strictObject({ type: z.literal('agent.unblock'), identity: z.string().min(1).max(100), requestId: ActionRequestId.optional() }),
  z.strictObject({ type: z.literal('finding.dismiss'), id: z.string().min(1).max(100), requestId: ActionRequestId.optional() }),
  /**
   * Send `audit.records` (on) or stop (off). A broker starts not following: the editor follows while its audit
   * panel is open, and turns it on before the panel reads the file (the panel drops records it already holds).
   */
  z.strictObject({ type: z.literal('audit.follow'), on: z.boolean() }),
  /** Is the broker serving? Answered by `pong` from its event loop (the editor's liveness check). */
  z.strictObject({ type: z.literal('ping'), id: z.string().min(1).max(100) }),
  /** Ask for a grant's live tokens (answered by `tokens`): the editor lists them when the grant is expanded. */
  z.strictObject({ type: z.literal('tokens.request'), requestId: z.string().min(1).max(100), grantId: z.string().min(1).max(100) }),
]);
export type ParentToBroker = z.infer<typeof ParentToBroker>;

// ---------------------------------------------------------------------------------------------
// Audit records (broker → disk; read back by `writ audit`, the extension and the webview)
// ---------------------------------------------------------------------------------------------

export const AUDIT_EVENTS = [
  'broker.started',
  'broker.stopped',
  'agent.connected',
  'agent.disconnected',
  'task.requested',
  'task.approved',
  'task.denied',
  'token.minted',
  'token.exchanged',
  'token.introspected',
  /** A resource's verifier accepted or refused a token (reported over `token.used`, or `token.uses` awaited). */
  'token.used',
  /** How a call recorded through `token.uses` ended (TokenUseEndedDetail), reported by the resource after it. */
  'token.use.ended',
  'revoked',
  /** `writ exec` stopped a revoked agent's process tree (reported over `agent.stopped`). */
  'agent.stopped',
  /**
   * A call through the credential-injecting proxy, decided (ProxyCallDetail): a refusal, or an allowed call written
   * before anything reaches the upstream. Never a header value, the query, the token or the secret.
   */
  'proxy.call',
  /** How an allowed proxy call ended (ProxyEndedDetail): status, bytes each way, and why it ended. */
  'proxy.ended',
  'key.created',
  'key.rotated',
  'audit.recovered',
  /** A broker's start signed records the last run left unsigned (a crash): `detail.firstSeq`, `detail.records`. */
  'audit.adopted',
  'checkpoint',
  'finding',
  'finding.dismissed',
  'agent.blocked',
  'agent.unblocked',
] as const;
export const AuditEvent = z.enum(AUDIT_EVENTS);
export type AuditEvent = z.infer<typeof AuditEvent>;

export const AuditAgent = z.strictObject({
  id: z.string(),
  name: z.string(),
  kind: z.string(),
  /** Parent agent ids, nearest first: the delegation chain behind this actor. */
  parents: z.array(z.string()),
  process: PeerProcess.optional(),
});
export type AuditAgent = z.infer<typeof AuditAgent>;

export const AuditCheckpoint = z.strictObject({
  /** Records before this one. */
  count: z.number().int().nonnegative(),
  /** SHA-256 (hex) of the record before this one: equal to `prev`. */
  head: z.string().regex(/^[0-9a-f]{64}$/),
  kid: z.string(),
  /** Ed25519 signature (base64url) over `checkpointText(origin, count, head)`. */
  sig: z.string(),
});

/** One line of the audit log. Never holds a token, key or secret: tokens appear only by `jti`. */
export const AuditRecord = z.strictObject({
  v: z.literal(1),
  /** 0-based position in the log. */
  seq: z.number().int().nonnegative(),
  /** ISO 8601 time of the event. */
  ts: z.string(),
  /** The broker run that wrote it. */
  session: z.string(),
  event: AuditEvent,
  /** The delegating user (`sub` of the tokens). */
  user: z.string(),
  agent: AuditAgent.optional(),
  task: z.strictObject({ id: z.string(), description: z.string() }).optional(),
  grantId: z.string().optional(),
  scopes: z.array(z.string()).optional(),
  audience: z.string().optional(),
  jti: z.string().optional(),
  /** Epoch seconds a minted token expires. */
  exp: z.number().int().optional(),
  outcome: z.enum(['success', 'failure']).optional(),
  code: WritErrorCodeSchema.optional(),
  /** Small, safe, event-specific facts (mode, ttl, counts, kid, revocation target). */
  detail: z.record(z.string(), z.unknown()).optional(),
  checkpoint: AuditCheckpoint.optional(),
  /** SHA-256 (hex) of the previous line's bytes; 64 zeros for the first record. */
  prev: z.string().regex(/^[0-9a-f]{64}$/),
});
export type AuditRecord = z.infer<typeof AuditRecord>;

/** `detail` of a `proxy.call` record. */
export const ProxyCallDetail = z.strictObject({
  /** True only for a call that is forwarded (its record is written first); a refusal is never recorded as allowed. */
  allowed: z.boolean(),
  /** Links an allowed call to its `proxy.ended` record. */
  call: z.string().optional(),
  /** The secret's name (absent in a summary). */
  secret: z.string().optional(),
  method: z.string().optional(),
  /** The upstream URL without the query. */
  url: z.string().optional(),
  /** A query was sent (its text never is recorded). */
  query: z.literal(true).optional(),
  /** The status a refusal was answered with. */
  status: z.number().int().optional(),
  /**
   * A summary: this many refusals of requests without a verified token were answered 429 and not recorded one by
   * one (past the budget of such records a second). Only the summary's other fields are absent.
   */
  unrecorded: z.number().int().positive().optional(),
});
export type ProxyCallDetail = z.infer<typeof ProxyCallDetail>;

export const PROXY_END_REASONS = [
  'complete', // the response reached the agent whole, and the agent's body the upstream (or the upstream, having answered, stopped reading it)
  'client-closed', // the agent closed its connection first
  'upstream-failed', // the upstream's connection failed mid-way
  'upstream-unreachable', // no connection to the upstream (502)
  'upstream-timeout', // no response (504), or no bytes either way (also an upload that stalls after the answer), within WRIT_PROXY_TIMEOUT_MS
  'revoked', // the token was revoked while the call was in flight (also an upload the upstream goes on reading after it answered)
  'expired', // the token expired while the call was in flight (the same)
  'body-refused', // a multipart body forwarded as it streamed past 1 MiB held a part named for another method later on (or part headers too long to check): the upstream request was destroyed before the body's end, the agent got 400 (its connection cut, if the upstream had answered)
] as const;

/** `detail` of a `proxy.ended` record. */
export const ProxyEndedDetail = z.strictObject({
  call: z.string(),
  secret: z.string(),
  method: z.string(),
  url: z.string(),
  /** The status the agent got (the upstream's, or the proxy's own 401/502/504); absent if it got none. */
  status: z.number().int().optional(),
  bytesUp: z.number().int().nonnegative(),
  bytesDown: z.number().int().nonnegative(),
  reason: z.enum(PROXY_END_REASONS),
  /** The response to the agent was cut before its end. */
  incomplete: z.literal(true).optional(),
});
export type ProxyEndedDetail = z.infer<typeof ProxyEndedDetail>;

/** `detail` of a `token.use.ended` record: the call and how it ended, never its arguments or result. */
export const TokenUseEndedDetail = z.strictObject({
  /** The use id its `token.used` record carries (`detail.use`); absent if the resource had none. */
  use: UseId.optional(),
  call: ConcreteCall,
  outcome: z.enum(USE_END_OUTCOMES),
  durationMs: z.number().int().nonnegative(),
  /** No use of this id is open on the reporting connection: made up, ended already, forgotten (at its connection's cap, or as it closed) or from before a restart. */
  unknownUse: z.literal(true).optional(),
});
export type TokenUseEndedDetail = z.infer<typeof TokenUseEndedDetail>;

/** The fields a caller supplies; the log fills v, seq, ts, session, user and prev. */
export type AuditEntry = Omit<AuditRecord, 'v' | 'seq' | 'ts' | 'session' | 'user' | 'prev'>;

// ---------------------------------------------------------------------------------------------
// The audit panel: extension ⇄ webview (postMessage). Both sides parse with these.
// ---------------------------------------------------------------------------------------------

export const VerifyView = z.discriminatedUnion('state', [
  z.strictObject({ state: z.literal('running') }),
  z.strictObject({ state: z.literal('intact'), message: z.string() }),
  z.strictObject({ state: z.literal('broken'), message: z.string(), line: z.number().int().optional() }),
  /** Nothing broken, but some checkpoints name keys the verifier lacked (the keychain out of reach): not proven. */
  z.strictObject({ state: z.literal('unverifiable'), message: z.string(), line: z.number().int().optional() }),
  z.strictObject({ state: z.literal('error'), message: z.string() }),
]);
export type VerifyView = z.infer<typeof VerifyView>;

/** webview → extension */
export const WebviewToExtension = z.discriminatedUnion('type', [
  /** The script is loaded and listening: only now does the extension post. */
  z.strictObject({ type: z.literal('ready') }),
  z.strictObject({ type: z.literal('stopAgent'), agentId: shortText(200) }),
  /** The developer says a finding is expected; the extension passes it to the broker, which audits it. */
  z.strictObject({ type: z.literal('dismissFinding'), id: shortText(100) }),
  z.strictObject({ type: z.literal('export') }),
  z.strictObject({ type: z.literal('verify') }),
]);
export type WebviewToExtension = z.infer<typeof WebviewToExtension>;

/** extension → webview */
export const ExtensionToWebview = z.discriminatedUnion('type', [
  /**
   * Records in log order; `reset` replaces what the panel holds (a fresh load), else they are appended. A reset
   * may say how many older records the log holds before these (`older`): the panel loads only the newest.
   */
  z.strictObject({ type: z.literal('records'), reset: z.boolean(), records: z.array(AuditRecord), older: z.number().int().nonnegative().optional() }),
  z.strictObject({ type: z.literal('verify'), result: VerifyView }),
  /** Agents that can still be stopped: not revoked, and connected or holding a live grant (agentState.activeAgents). */
  z.strictObject({ type: z.literal('agents'), live: z.array(z.string()) }),
  /**
   * Whether the broker answers: false while it has not taken the panel's follow in time or the editor calls it
   * unresponsive (the panel then shows the log on disk and says so); true again once live records flow.
   */
  z.strictObject({ type: z.literal('broker'), answering: z.boolean() }),
]);
export type ExtensionToWebview = z.infer<typeof ExtensionToWebview>;

/** The discovery file (0600) in the runtime folder: where agents reach the broker. Holds no secret. */
export const Discovery = z.strictObject({
  protocol: z.literal(PROTOCOL_VERSION),
  pid: z.number().int(),
  socketPath: z.string(),
  httpUrl: z.string(),
  wsUrl: z.string(),
  issuer: z.string(),
  startedAt: z.string(),
  /** The audit log this broker writes, so `writ audit` in another terminal reads the right one. */
  auditPath: z.string(),
});
export type Discovery = z.infer<typeof Discovery>;

/** A zod failure as a field path only (never the value: it may be a secret). */
export function issuePath(error: z.ZodError): string {
  const first = error.issues[0];
  if (!first) return '';
  return first.path.map(String).join('.');
}
