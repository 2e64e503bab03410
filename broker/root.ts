// The composition root: reads the key from the keychain, opens the audit log and revocation list, builds the
// authority, starts the listeners and the approval channel, writes the discovery file, and stops it all in order.
import { isAlive } from './procfs';
import { sign as edSign } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { WritError, asWritError } from './errors';
import { Discovery, PROTOCOL_VERSION, TOKENS_PER_ANSWER } from './protocol';
import type { AuditEntry, MethodResult, ParentToBroker } from './protocol';
import { resolvePaths, ensurePrivateDir } from './paths';
import type { WritPaths } from './paths';
import { acquireStateLock } from './statelock';
import type { StateLock } from './statelock';
import { systemClock, randomIds } from './core/clock';
import type { Clock, IdSource } from './core/clock';
import { loadKeySet } from './core/keys';
import type { KeychainRef } from './core/keychain';
import { RevocationStore } from './core/revocation';
import { RevocationJournal } from './core/journal';
import { Inventory, saveFailure } from './core/inventory';
import { Watch, DEFAULT_WATCH_CONFIG, FINDING_KINDS } from './core/watch';
import type { FindingAction, FindingKind, WatchConfig } from './core/watch';
import { Oversight } from './core/oversight';
import { TokenMinter, DEFAULT_TTL_SECONDS, MAX_TTL_CEILING_SECONDS } from './core/tokens';
import { TurnSigner } from './core/signer';
import { Authority, DEFAULT_AUTHORITY_CONFIG } from './core/authority';
import type { Approver } from './core/authority';
import { AuditLog } from './audit/log';
import { CLOSE_TOO_MANY, FIRST_CALL_TIMEOUT_MS, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PROCESS, listen } from './net/server';
import type { Listeners } from './net/server';
import { RpcConnection, acknowledged, blockFrame, eventOfEntry, revocationFrame, revocationFrames } from './net/rpc';
import { ConnectionLookup, PeerIdentifier, procTable } from './net/peer';
import { createHttpHandler } from './net/http';
import { IpcApprover, TtyApprover, noApprover } from './net/approvers';
import { createProxy, proxyMaxCalls, proxyTimeoutMs } from './proxy/proxy';
import { parentChannel } from './net/parent';
import type { ParentChannel } from './net/parent';

export const VERSION = '0.1.0';

export interface BrokerOptions {
  stateDir?: string;
  runtimeDir?: string;
  port?: number;
  user?: string;
  issuer?: string;
  defaultTtlSeconds?: number;
  maxTtlSeconds?: number;
  approvalTimeoutMs?: number;
  keychain?: Partial<KeychainRef>;
  /** 'auto' picks the parent's IPC pipe, else the terminal, else none (every request denied). */
  approver?: 'auto' | 'none';
  clock?: Clock;
  ids?: IdSource;
  env?: NodeJS.ProcessEnv;
  /** Where human-readable lines go (never a secret). */
  log?: (line: string) => void;
}

export interface RunningBroker {
  paths: WritPaths;
  listeners: Listeners;
  authority: Authority;
  audit: AuditLog;
  discovery: Discovery;
  stop(): Promise<void>;
}

/** The developer the broker acts for: configured, else `git config user.email`, else the OS account. */
export function defaultUser(env: NodeJS.ProcessEnv): string {
  if (env.WRIT_USER) return env.WRIT_USER;
  try {
    const email = execFileSync('git', ['config', '--get', 'user.email'], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (email) return email;
  } catch {
    // no git, or no email configured
  }
  return userInfo().username;
}

/** Refuses to start a second broker on the same runtime folder. A stale discovery file is removed. */
function checkNotRunning(paths: WritPaths): void {
  let text: string;
  try {
    text = readFileSync(paths.discoveryPath, 'utf8');
  } catch {
    return;
  }
  const d = Discovery.safeParse((() => { try { return JSON.parse(text); } catch { return null; } })());
  if (d.success && d.data.pid !== process.pid && isAlive(d.data.pid)) {
    throw new WritError('WRIT_BROKER_RUNNING', `a Writ broker is already running (pid ${d.data.pid}): stop it first`);
  }
  try {
    unlinkSync(paths.discoveryPath);
  } catch {
    // raced with its owner's cleanup
  }
}

/** What the parent sends besides decisions (already parsed against ParentToBroker by the IpcApprover). */
type ParentRequest = Exclude<ParentToBroker, { type: 'approval.decision' }>;

function chooseApprover(mode: 'auto' | 'none', parent: ParentChannel | undefined, onParentMessage: (m: ParentRequest) => void, stop: () => void): Approver {
  if (mode === 'none') return noApprover;
  if (parent) {
    const ipc = new IpcApprover(parent.post, (msg) => onParentMessage(msg));
    process.on('message', (m) => ipc.receive(m));
    return ipc;
  }
  if (process.stdin.isTTY) return new TtyApprover(process.stdin, process.stderr, stop);
  return noApprover;
}

/**
 * The watch's settings: defaults, with each finding kind's action overridable by WRIT_WATCH_ACTIONS
 * (e.g. `request-burst=stop,scope-creep=block`) and thresholds by WRIT_WATCH_CONFIG (a JSON object).
 */
export function watchConfig(env: NodeJS.ProcessEnv): WatchConfig {
  let config: WatchConfig = { ...DEFAULT_WATCH_CONFIG, actions: { ...DEFAULT_WATCH_CONFIG.actions } };
  if (env.WRIT_WATCH_CONFIG) {
    let raw: unknown;
    try {
      raw = JSON.parse(env.WRIT_WATCH_CONFIG);
    } catch {
      throw new WritError('WRIT_USAGE', 'WRIT_WATCH_CONFIG must be a JSON object of watch thresholds');
    }
    if (typeof raw !== 'object' || raw === null) throw new WritError('WRIT_USAGE', 'WRIT_WATCH_CONFIG must be a JSON object of watch thresholds');
    config = { ...config, ...(raw as Partial<WatchConfig>), actions: config.actions };
  }
  for (const pair of (env.WRIT_WATCH_ACTIONS ?? '').split(',').filter(Boolean)) {
    const [kind, action] = pair.split('=').map((x) => x.trim());
    if (!(FINDING_KINDS as readonly string[]).includes(kind ?? '') || !['warn', 'block', 'stop'].includes(action ?? '')) {
      throw new WritError('WRIT_USAGE', `WRIT_WATCH_ACTIONS: "${pair}" is not kind=warn|block|stop (kinds: ${FINDING_KINDS.join(', ')})`);
    }
    config.actions[kind as FindingKind] = action as FindingAction;
  }
  return config;
}

/** How deep sub-agents may nest (WRIT_MAX_DELEGATION_DEPTH, 1 to 16; default 4). */
function delegationDepth(env: NodeJS.ProcessEnv): number {
  if (env.WRIT_MAX_DELEGATION_DEPTH === undefined) return DEFAULT_AUTHORITY_CONFIG.maxDelegationDepth;
  const n = Number(env.WRIT_MAX_DELEGATION_DEPTH);
  if (!Number.isInteger(n) || n < 1 || n > 16) throw new WritError('WRIT_USAGE', 'WRIT_MAX_DELEGATION_DEPTH must be a whole number from 1 to 16');
  return n;
}

export async function startBroker(options: BrokerOptions = {}): Promise<RunningBroker> {
  const env = options.env ?? process.env;
  const paths = resolvePaths(env, { ...(options.stateDir ? { stateDir: options.stateDir } : {}), ...(options.runtimeDir ? { runtimeDir: options.runtimeDir } : {}) });
  ensurePrivateDir(paths.stateDir);
  // Before anything in the state folder is opened, and held until stop(): one writer per state folder, whatever
  // runtime folder each broker was given.
  const stateLock = acquireStateLock(paths.stateDir, 'broker');
  try {
    return await openBroker(options, paths, stateLock);
  } catch (e) {
    stateLock.release();
    throw e;
  }
}

async function openBroker(options: BrokerOptions, paths: WritPaths, stateLock: StateLock): Promise<RunningBroker> {
  const env = options.env ?? process.env;
  const clock = options.clock ?? systemClock;
  const ids = options.ids ?? randomIds;
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  ensurePrivateDir(paths.runtimeDir);
  checkNotRunning(paths);
  // Process identity of peers; the broker's own executable is hashed now, while the keychain is read.
  const peers = new PeerIdentifier();
  peers.prewarm();
  // The processes that presented tokens at resources, from the connections the resources' use reports name.
  const presenters = new ConnectionLookup((addr) => peers.identify(addr));

  const maxTtl = options.maxTtlSeconds ?? Number(env.WRIT_MAX_TTL ?? MAX_TTL_CEILING_SECONDS);
  if (!Number.isInteger(maxTtl) || maxTtl < 1 || maxTtl > MAX_TTL_CEILING_SECONDS) {
    throw new WritError('WRIT_USAGE', `the maximum token lifetime must be 1 to ${MAX_TTL_CEILING_SECONDS} seconds`);
  }
  const user = options.user ?? defaultUser(env);

  // The key first: without it there is no broker (fail closed, with the keychain's own advice).
  const keychainRef: Partial<KeychainRef> = { ...(env.WRIT_KEYCHAIN_SERVICE ? { service: env.WRIT_KEYCHAIN_SERVICE } : {}), ...options.keychain };
  const settleMs = env.WRIT_KEY_SETTLE_MS === undefined ? undefined : Number(env.WRIT_KEY_SETTLE_MS);
  const { keys, created } = await loadKeySet({ ref: keychainRef, clock, create: true, ...(settleMs === undefined || !Number.isFinite(settleMs) ? {} : { settleMs }) });
  const issuer = options.issuer ?? env.WRIT_ISSUER ?? `urn:writ:${user}`;
  const session = ids.id('ses');

  const revocations = await RevocationStore.open(paths.revocationsPath, clock);
  // The editor may be gone when news is sent: it closes the pipe as it asks the broker to stop, or it crashed. The
  // message then has nobody to read it; a send error goes to the callback, never to an unhandled 'error' event that
  // would crash the broker before its stop is on record.
  const parent =
    typeof process.send === 'function'
      ? parentChannel((msg) => {
          if (process.connected) process.send?.(msg, (e: Error | null) => void e);
        })
      : undefined;
  const parentPost = parent?.post;
  const audit = await AuditLog.open({
    path: paths.auditPath,
    session,
    user,
    clock,
    signer: { kid: keys.active.kid, sign: (data) => edSign(null, data, keys.active.privateKey) },
    ...(parent ? { onRecord: parent.record } : {}),
    checkpointKeys: keys.publicKeys(),
  });
  // What a crash of the last run left unsigned (never more than CHECKPOINT_EVERY records: a longer unsigned tail
  // is refused by open) is signed now, not in ten seconds: a crash in this run's first seconds would otherwise add
  // its own unsigned records to them. Said first: this broker did not write them, and signs them only as found.
  const adopted = audit.unsignedAtOpen;
  if (adopted) await audit.append({ event: 'audit.adopted', detail: { firstSeq: adopted.firstSeq, records: adopted.records } });
  await audit.checkpoint();
  const auditSink = { append: (e: AuditEntry) => audit.append(e) };

  /** An editor action's outcome goes back when it asked (requestId); the wire gets the code and safe message only. */
  const answer = (requestId: string | undefined, done: Promise<unknown>): void => {
    void done.then(
      () => requestId && parentPost?.({ type: 'action.result', requestId }),
      (e: unknown) => {
        const w = asWritError(e);
        if (w.code === 'WRIT_INTERNAL') log(`writ: an editor action failed: ${(e as Error)?.message ?? String(e)}`);
        if (requestId) parentPost?.({ type: 'action.result', requestId, error: { code: w.code, message: w.message } });
      },
    );
  };

  let stopping: Promise<void> | undefined;
  const stopRef = { stop: (): Promise<void> => Promise.resolve() };
  const approver = chooseApprover(
    options.approver ?? 'auto',
    parent,
    (m) => {
      switch (m.type) {
        case 'revoke':
          void authority.revoke(m.target, 'ipc', m.reason).catch(() => undefined);
          return;
        case 'shutdown':
          void stopRef.stop();
          return;
        case 'agent.block':
          answer(m.requestId, oversight.block(m.identity, m.reason, 'ipc'));
          return;
        case 'agent.unblock':
          answer(m.requestId, oversight.unblock(m.identity, 'ipc'));
          return;
        case 'finding.dismiss':
          answer(m.requestId, oversight.dismiss(m.id, 'ipc'));
          return;
        case 'state.request':
          parentPost?.({
            type: 'state',
            requestId: m.requestId,
            agents: authority.listAgents(),
            grants: authority.listGrants(),
            pendingApprovals: authority.counts().pendingApprovals,
            findings: oversight.findings(),
            inventory: authority.inventoryView(),
          });
          return;
        case 'audit.follow':
          parent?.follow(m.on);
          return;
        case 'tokens.request':
          parentPost?.({ type: 'tokens', requestId: m.requestId, ...authority.liveTokens(m.grantId, TOKENS_PER_ANSWER) });
          return;
        case 'ping':
          parentPost?.({ type: 'pong', id: m.id });
          return;
      }
    },
    () => void stopRef.stop(),
  );

  // The inventory outlives runs; a corrupt one stops the broker rather than forgetting blocks.
  // Its saves are coalesced off the hot path (blocks excepted: they are on disk before they are answered).
  const inventory = Inventory.load(join(paths.stateDir, 'agents.json'), clock, { log });
  const watch = new Watch(watchConfig(env), clock, ids);
  const stopIdentity = { fn: async (_identity: string, _reason: string): Promise<void> => undefined };
  const blocksHeard = { fn: async (): Promise<unknown> => undefined };
  const oversight = new Oversight({
    user,
    inventory,
    watch,
    audit: (e) => audit.append(e),
    stopIdentity: (identity, reason) => stopIdentity.fn(identity, reason),
    blocksHeard: () => blocksHeard.fn(),
  });
  oversight.onFinding((f) => parentPost?.({ type: 'finding', finding: f }));

  const signer = new TurnSigner();
  const minter = new TokenMinter(issuer, () => keys.active, clock, ids, signer);
  const authority = new Authority(
    {
      ...DEFAULT_AUTHORITY_CONFIG,
      issuer,
      user,
      defaultTtlSeconds: Math.min(options.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS, maxTtl),
      maxTtlSeconds: maxTtl,
      approvalTimeoutMs: options.approvalTimeoutMs ?? Number(env.WRIT_APPROVAL_TIMEOUT_MS ?? DEFAULT_AUTHORITY_CONFIG.approvalTimeoutMs),
      maxDelegationDepth: delegationDepth(env),
    },
    {
      clock,
      ids,
      audit: auditSink,
      minter,
      revocations,
      approver,
      publicKey: (kid) => keys.publicKeys().get(kid),
      oversight,
      processes: procTable,
    },
  );
  stopIdentity.fn = (identity, reason) => authority.stopIdentity(identity, reason);

  await audit.append({ event: 'broker.started', outcome: 'success', detail: { version: VERSION, pid: process.pid, kid: keys.active.kid, approver: approver.kind } });
  if (created) await audit.append({ event: 'key.created', outcome: 'success', detail: { kid: keys.active.kid } });

  const connections = new Set<RpcConnection>();
  const status = (): MethodResult<'status'> => ({
    version: VERSION,
    protocol: PROTOCOL_VERSION,
    pid: process.pid,
    issuer,
    user,
    session,
    approver: approver.kind,
    ...authority.counts(),
    auditRecords: audit.count,
    auditSeal: audit.seal(),
    findings: oversight.findings().length,
    kid: keys.active.kid,
  });
  let listeners: Listeners | undefined;
  let journal: RevocationJournal | undefined;
  const http = createHttpHandler({
    authority,
    clock,
    issuer,
    baseUrl: () => listeners?.httpUrl ?? '',
    jwks: () => keys.jwks(clock.now()),
    // Both only hand the caller to the token checks, which read its start time again from /proc themselves.
    peer: (socket) => peers.forSocket(socket, { recheck: false }),
    proxy: createProxy({ authority, clock, stateDir: paths.stateDir, env, timeoutMs: proxyTimeoutMs(env), maxCallsPerAgent: proxyMaxCalls(env), log, peer: (socket) => peers.forSocket(socket, { recheck: false }) }),
  });
  const heartbeatMs = Number(env.WRIT_HEARTBEAT_MS ?? 15_000);
  const firstCallMs = Number(env.WRIT_FIRST_CALL_TIMEOUT_MS ?? FIRST_CALL_TIMEOUT_MS);
  const perProcessCap = Number(env.WRIT_MAX_CONNECTIONS_PER_PROCESS ?? MAX_CONNECTIONS_PER_PROCESS);
  const maxPerProcess = Number.isInteger(perProcessCap) && perProcessCap >= 1 ? perProcessCap : MAX_CONNECTIONS_PER_PROCESS;
  const totalCap = Number(env.WRIT_MAX_CONNECTIONS ?? MAX_CONNECTIONS);
  const maxConnections = Number.isInteger(totalCap) && totalCap >= 16 ? totalCap : MAX_CONNECTIONS;
  listeners = await listen({
    socketPath: paths.socketPath,
    heartbeatMs: Number.isInteger(heartbeatMs) && heartbeatMs >= 50 ? heartbeatMs : 15_000,
    firstCallTimeoutMs: Number.isInteger(firstCallMs) && firstCallMs >= 50 ? firstCallMs : FIRST_CALL_TIMEOUT_MS,
    maxConnections,
    ...(options.port === undefined ? {} : { port: options.port }),
    http,
    onConnection: (ws, ctx) => {
      // Who is on the other end, from the kernel: looked up once, now, and bound to this connection.
      // A connection closed before its lookup's turn comes (a flood's, given way to newer ones) costs no lookup.
      const gone = new AbortController();
      ws.once('close', () => gone.abort());
      const peer = ctx.peer === undefined ? undefined : peers.forConnection(ctx.peer, gone.signal);
      const conn = new RpcConnection(ws, { authority, status, now: () => clock.now(), presenter: (c) => presenters.find(c), journal: () => journal?.place(), ...(peer === undefined ? {} : { peer }) });
      connections.add(conn);
      ws.on('close', () => connections.delete(conn));
      // One process may hold maxPerProcess connections; the next is closed once its process is known, at once
      // (not after calls under way), so a runaway or hostile process cannot take every one of the broker's
      // connections. The listener counts them (a connection being closed counts for no one) and, when full,
      // makes room from the process holding the most.
      // The process comes from the kernel's tables alone, with no timeout: a flood that slows lookups down
      // cannot slip past the cap (`hello` alone gives up waiting, after PEER_LOOKUP_TIMEOUT_MS).
      void peer?.owner.then((owner) => {
        if (owner === undefined || conn.closed) return;
        const held = ctx.own(owner);
        if (held > maxPerProcess) {
          gone.abort();
          ws.close(CLOSE_TOO_MANY, `more than ${maxPerProcess} connections from this process`);
        }
      });
    },
  });

  // Opened as the listeners start, before any connection is handled: every subscriber is told of it.
  journal = RevocationJournal.open(paths.runtimeDir, log);

  // Acknowledging subscribers (verifiers) are sent each entry of the revocation list, numbered, the moment it is
  // applied: before its fsync and the audit record, so they refuse while those are under way. The revoke call
  // returns once it is durable and each of them has acknowledged (or timed out): no token they check is accepted
  // after that. Other subscribers get one event per revoke call, once it is durable, in frames of at most
  // MAX_FRAME_BYTES (revocationFrames), serialised only if one of them is connected.
  let revocationSeq = 0;
  const unacknowledged = new Set<Promise<void>>();
  revocations.onRecord((entry) => {
    const seq = ++revocationSeq;
    const event = { ...eventOfEntry(entry), seq };
    // In the journal first: from this write on, a verifier on this machine refuses the token at its next check,
    // whenever its process is woken by the frame.
    journal?.append(event);
    const frame = revocationFrame(event);
    // Every frame is written before anything else is done (the waits, the fsync, the audit record): each write
    // wakes a verifier, and on a busy machine the work in between would hold back the frames still to go.
    const told: RpcConnection[] = [];
    for (const conn of connections) if (conn.acknowledging && conn.pushRevocation(frame)) told.push(conn);
    if (told.length === 0) return;
    // No ack can arrive before this turn of the event loop ends, so waiting from here misses none.
    const ack = acknowledged(told, seq);
    unacknowledged.add(ack);
    void ack.then(() => unacknowledged.delete(ack));
  });
  // Block changes go the same way to subscribers to `blocks`, in the same numbering: a block the moment it holds,
  // an unblock once it is on disk (Inventory.onBlockChange). A block is answered once they have acknowledged it
  // (Oversight.block waits for `blocksHeard`), so a token naming the identity is refused by every verifier that
  // hears blocks, also one of a run before this one whose agents this run never held.
  inventory.onBlockChange((identity, blocked) => {
    const seq = ++revocationSeq;
    const frame = blockFrame({ identity, blocked, seq });
    const told: RpcConnection[] = [];
    for (const conn of connections) if (conn.pushBlock(frame) && conn.acknowledging) told.push(conn);
    if (told.length === 0) return;
    const ack = acknowledged(told, seq);
    unacknowledged.add(ack);
    void ack.then(() => unacknowledged.delete(ack));
  });
  blocksHeard.fn = () => Promise.all([...unacknowledged]);
  authority.onRevocation(async (event) => {
    // Every entry of this revocation was pushed before this point: waiting for all outstanding acks covers them
    // (and perhaps a concurrent revocation's too, which only waits longer).
    const waiting = [...unacknowledged];
    const closing = new Set<string>();
    for (const id of event.agentIds) for (const t of authority.agentTree(id)) closing.add(t);
    let frames: Buffer[] | undefined;
    for (const conn of connections) {
      if (conn.subscribed && !conn.acknowledging) for (const f of (frames ??= revocationFrames(event))) if (!conn.pushRevocation(f)) break;
      if (conn.agentId !== undefined && closing.has(conn.agentId)) conn.close(4001, 'agent revoked');
    }
    await Promise.all(waiting);
  });

  const discovery: Discovery = {
    protocol: PROTOCOL_VERSION,
    pid: process.pid,
    socketPath: listeners.socketPath,
    httpUrl: listeners.httpUrl,
    wsUrl: listeners.wsUrl,
    issuer,
    startedAt: new Date(clock.now()).toISOString(),
    auditPath: paths.auditPath,
  };
  const tmp = `${paths.discoveryPath}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(discovery, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, paths.discoveryPath);
  parentPost?.({ type: 'ready', pid: process.pid, socketPath: listeners.socketPath, httpUrl: listeners.httpUrl, wsUrl: listeners.wsUrl, issuer, session });

  const running: RunningBroker = {
    paths,
    listeners,
    authority,
    audit,
    discovery,
    stop: () => {
      stopping ??= (async () => {
        if (approver instanceof TtyApprover) approver.close();
        try {
          unlinkSync(paths.discoveryPath);
        } catch {
          // already gone
        }
        await listeners!.close();
        journal?.close();
        // No client is left to change it: the last coalesced changes (last-seen times, grants) go to disk now.
        await inventory.close().catch((e: unknown) => log(`writ: could not save the agent inventory as the broker stopped: ${saveFailure(e)}`));
        await audit.append({ event: 'broker.stopped', outcome: 'success' }).catch(() => undefined);
        await audit.close();
        parent?.flush(); // the last records (or the news of them) reach the editor before the process exits
        revocations.close();
        stateLock.release(); // last: every file in the state folder is closed
        log('writ: broker stopped');
      })();
      return stopping;
    },
  };
  stopRef.stop = running.stop;
  return running;
}
