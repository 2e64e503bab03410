// `writ`: the command line. Tokens go to stdout and nowhere else; everything for people goes to stderr.
// Exit codes: 0 ok, 1 refused or failed (the code is printed), 2 usage, 3 `audit verify` found nothing broken but
// could not check every checkpoint (the keys at hand are only the broker's JWKS); `exec` passes its command's code
// through, or, as a shell, 127 for a command not found and 126 for one found but not executable.
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { spawn } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Discovery } from './protocol';
import { writeFileSync, renameSync, createWriteStream, existsSync, statSync, openSync, fchmodSync, constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { basename, join } from 'node:path';
import { WritError, asWritError, isWritError } from './errors';
import { systemClock } from './core/clock';
import { resolvePaths, readRuntimeFile, ensurePrivateDir } from './paths';
import { WritClient, ENV_BROKER, ENV_SESSION, ENV_TOKEN, brokerAddress, readDiscovery } from './sdk/client';
import type { RevokeTarget } from './protocol';
import { SECRET_HELP } from './proxy/cli';
import { cmdAgents, AGENTS_HELP } from './cli-agents';
import { ExecLine, heldToken } from './exec-line';
import { exitCodeFor, resolveCommand } from './command-path';

const HELP: Record<string, string> = {
  secret: SECRET_HELP,
  main: `writ: scoped, delegated, auditable, revocable credentials for AI coding agents

Usage: writ <command> [options]

Commands:
  serve          run the broker (approvals in this terminal when no editor is attached)
  token          ask for a token for a task; prints the token and nothing else
  exec -- CMD    run CMD as an agent with a token (WRIT_TOKEN) and a session in its environment
  revoke         revoke a token, a grant, a task, an agent (and its sub-agents) or everything
  agents         the agent inventory (across runs), live agents, export, block and unblock
  status         show the running broker's state
  audit verify   check the audit log's hash chain and signed checkpoints
  audit export   write the audit log as JSON Lines, CSV or OCSF
  key rotate     add a new signing key (the old one stays in the JWKS for an hour, its tokens' longest life)
  secret         store an upstream secret (stdin → OS keychain) for the broker's credential-injecting proxy
  mcp            serve MCP on stdio: agents ask for approved tokens by a tool call
  gate -- CMD    guard an MCP server: every tools/call needs a Writ token with mcp:call:<server>/<tool>

Run \`writ <command> --help\` for a command's options.`,
  serve: `Usage: writ serve [--port N] [--user EMAIL] [--default-ttl SECONDS] [--max-ttl SECONDS]
                  [--approval-timeout SECONDS] [--state-dir DIR] [--runtime-dir DIR]

Runs the broker on a Unix socket in the runtime folder and on 127.0.0.1 (a random port unless --port).
The signing key is read from the OS keychain (created there on first start) and nowhere else.
Approvals come from the editor that started the broker, else from this terminal; with neither, every
request is denied.`,
  token: `Usage: writ token --task TEXT --scope SCOPE [--scope SCOPE …] --aud AUDIENCE [--ttl SECONDS]
                  [--agent NAME] [--kind KIND]

Asks the broker for a token and blocks until the developer decides. Prints only the token on stdout.
Within a live grant for the same agent (WRIT_SESSION, or this CLI's remembered session) no prompt is shown.
A broker that stops answering (no pong within WRIT_BROKER_TIMEOUT_MS, 30 s by default) ends the wait with
WRIT_BROKER_UNREACHABLE; one that answers pings is waited for as long as the developer takes.`,
  exec: `Usage: writ exec --task TEXT --scope SCOPE … --aud AUDIENCE [--ttl SECONDS] [--agent NAME] [--kind KIND]
                 -- CMD [ARGS…]

Runs CMD with WRIT_TOKEN (the token), WRIT_SESSION (its agent session: \`writ token\` inside reuses the
grant) and WRIT_BROKER set. CMD is looked for first, as a shell does (a name with a / is a path, any other is
searched in PATH): not found exits 127 (WRIT_COMMAND_NOT_FOUND), found but not executable 126
(WRIT_COMMAND_NOT_EXECUTABLE), before the broker is asked (no prompt, no token). Its exit code passes through; SIGTERM and SIGHUP (and, without a terminal,
SIGINT and SIGQUIT) are passed on to it. If the agent is revoked, CMD's whole process tree is stopped (its
process group and descendants: SIGTERM, then SIGKILL after 2 s) and the broker's audit log records it
(agent.stopped). On a terminal CMD stays in the foreground group and the tree is found via /proc.
If the broker goes away (a crash, a restart, no answer within WRIT_BROKER_TIMEOUT_MS), CMD keeps running: its
token stays valid until it expires, and no revocation can reach it until writ reconnects (with backoff, saying
hello with the agent's session). A session refused then (revoked meanwhile) stops CMD as a revocation does. A
restarted broker no longer knows the session: the agent comes back as a new one under its name, and revoking
it, or the agent it was (by its old id), stops CMD. stderr says each step; never a token or a session.
Run inside an agent session (WRIT_SESSION set), it starts a sub-agent: its scopes must be covered by the
parent's grants (no prompt), its token's act chain names both, and revoking the parent stops it too.`,
  revoke: `Usage: writ revoke (--token JTI | --grant ID | --task ID | --agent ID | --all) [--reason TEXT]

Revocation takes effect before this returns: minting, exchange and introspection refuse what it covers,
subscribed verifiers are told at once, and the revoked agent's connections are closed.`,
  agents: AGENTS_HELP,
  status: `Usage: writ status [--json]`,
  audit: `Usage: writ audit verify [--file PATH]
       writ audit export [--format jsonl|csv|ocsf] [--out PATH] [--session ID] [--agent ID]
                         [--since ISO-TIME] [--until ISO-TIME] [--file PATH]
       writ audit wal [--file PATH] [--wal PATH] [--missing]

verify checks the hash chain and the signed checkpoints of the running broker's log, the default one, or
--file. The public keys come from the keychain (every key ever held). Where the keychain is not reachable,
a running broker's JWKS stands in; it holds a retired key for an hour only, so a checkpoint signed by a key
it lacks cannot be checked: that is "unverifiable", not "broken" (and fine when a later checkpoint that
verifies covers it: its signed head commits to every line before). The chain is still checked to the end,
and a real break wins.
Exit codes: 0 intact, 1 broken (WRIT_AUDIT_CORRUPT, the first bad line named) or an error,
3 unverifiable (WRIT_AUDIT_UNVERIFIABLE, the first unchecked checkpoint named).

wal compares a write-ahead file with the log (both only read): --wal, else the one the broker set aside
(audit.jsonl.wal.rejected) if there is one, else audit.jsonl.wal. A broker refuses to open a log beside a file
set aside, or beside one written for another log, until you have done this: the file may hold records the log
lost. It says which of its records the log holds as written, which the log lacks or holds otherwise, and
whether renaming the file back to audit.jsonl.wal makes the next start restore them. --missing prints the
records the log lacks on stdout, as JSON Lines, exactly as the file holds them.
Exit codes: 0 the log holds every record the file does (removing the file loses none), 1 an error,
3 the file holds records the log lacks or holds otherwise (keep it).`,
  key: `Usage: writ key rotate

Adds a new Ed25519 signing key to the keychain entry; the old public key stays in the JWKS for an hour,
the longest any token it signed can live. Stop the broker first.`,
  mcp: `Usage: writ mcp [--agent NAME]

An MCP server on stdin/stdout for a coding agent (add it like any other MCP server). Tools:
request_credentials {task, scopes, audience, ttl?} (waits for the developer; returns the token and its expiry),
list_grants, revoke_grant {grantId}. Connects as agent NAME (default mcp-agent, kind mcp); honours WRIT_SESSION
and WRIT_BROKER. Logs go to stderr.`,
  gate: `Usage: writ gate --server NAME [--audience AUD] [--port N] [--broker URL] -- CMD [ARGS…]
       writ gate --server NAME --upstream-url URL [--audience AUD] [--port N] [--broker URL]

Serves the upstream MCP server (a stdio command, or a streamable HTTP URL) on http://127.0.0.1:PORT/mcp and
lets a tools/call through only with a Writ token (Authorization: Bearer) for the audience (default that URL)
whose scopes allow mcp:call:NAME/<tool>. No or a bad token: 401 with RFC 9728 metadata at
/.well-known/oauth-protected-resource; a tool not granted: 403 insufficient_scope. Each call is audited (tool
and outcome, never the arguments); a revoked token is refused at once, and a tool call already forwarded ends when
its token is revoked or expires (a JSON-RPC error with WRIT_TOKEN_REVOKED or WRIT_TOKEN_EXPIRED; the upstream is
told to cancel). The token is never sent upstream.`,
};

class UsageError extends Error {}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, positionals = false) {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: positionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const out = (s: string) => process.stdout.write(s + '\n');
const err = (s: string) => process.stderr.write(s + '\n');

async function cmdServe(args: string[]): Promise<number> {
  const { values } = parse(args, {
    port: { type: 'string' },
    user: { type: 'string' },
    'default-ttl': { type: 'string' },
    'max-ttl': { type: 'string' },
    'approval-timeout': { type: 'string' },
    'state-dir': { type: 'string' },
    'runtime-dir': { type: 'string' },
  });
  if (values.help) return (err(HELP.serve!), 0);
  const num = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number`);
    return n;
  };
  const { startBroker, VERSION } = await import('./root');
  const timeout = num(values['approval-timeout'], 'approval-timeout');
  const broker = await startBroker({
    ...(values.port === undefined ? {} : { port: num(values.port, 'port')! }),
    ...(values.user === undefined ? {} : { user: values.user }),
    ...(values['default-ttl'] === undefined ? {} : { defaultTtlSeconds: num(values['default-ttl'], 'default-ttl')! }),
    ...(values['max-ttl'] === undefined ? {} : { maxTtlSeconds: num(values['max-ttl'], 'max-ttl')! }),
    ...(timeout === undefined ? {} : { approvalTimeoutMs: timeout * 1000 }),
    ...(values['state-dir'] === undefined ? {} : { stateDir: values['state-dir'] }),
    ...(values['runtime-dir'] === undefined ? {} : { runtimeDir: values['runtime-dir'] }),
  });
  const s = broker.authority;
  const approvals = s.approverKind === 'ipc' ? 'the editor that started this broker' : s.approverKind === 'tty' ? 'this terminal' : 'none (no terminal, no editor): every request is denied';
  out(`Writ broker ${VERSION} for ${s.config.user} (pid ${process.pid})`);
  out(`  socket     ${broker.listeners.socketPath}`);
  out(`  http       ${broker.listeners.httpUrl}  (metadata: /.well-known/oauth-authorization-server)`);
  out(`  discovery  ${broker.paths.discoveryPath}`);
  out(`  audit log  ${broker.paths.auditPath}`);
  out(`  approvals  ${approvals}`);
  if (process.env.WRIT_KEYRING === 'throwaway') out('  keychain   a private, throwaway keyring: the key and the tokens it signs end with this command');
  out(`In another terminal: npx writ token --task "fix issue 12" --scope repo:read:acme/web --aud https://api.example`);
  await new Promise<void>((resolve) => {
    const stop = () => void broker.stop().then(resolve);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.once('disconnect', stop); // the parent editor went away
  });
  return 0;
}

interface TokenArgs {
  task: string;
  scopes: string[];
  aud: string;
  ttl: number | undefined;
  agent: string;
  kind: string;
}

function tokenArgs(values: Record<string, unknown>, defaultAgent: string): TokenArgs {
  const task = values.task as string | undefined;
  const scopes = (values.scope as string[] | undefined) ?? [];
  const aud = values.aud as string | undefined;
  if (!task) throw new UsageError('--task is required: say what the credentials are for');
  if (scopes.length === 0) throw new UsageError('at least one --scope is required');
  if (!aud) throw new UsageError('--aud is required: the API or tool the token is for');
  let ttl: number | undefined;
  if (values.ttl !== undefined) {
    ttl = Number(values.ttl);
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600) throw new UsageError('--ttl must be 1 to 3600 seconds');
  }
  return { task, scopes, aud, ttl, agent: (values.agent as string | undefined) ?? defaultAgent, kind: (values.kind as string | undefined) ?? 'cli' };
}

const TOKEN_OPTIONS = {
  task: { type: 'string' },
  scope: { type: 'string', multiple: true },
  aud: { type: 'string' },
  ttl: { type: 'string' },
  agent: { type: 'string' },
  kind: { type: 'string' },
} as const;

/**
 * The CLI remembers its agent session per agent name in the private runtime folder, so a rerun reuses a live
 * grant. The folders are made or checked first (ours, no symlink, 0700): a session is never read from or
 * written into a folder another user made in /tmp.
 */
function sessionCache(agent: string): { dir: string; path: string } {
  const { runtimeDir, cliSessionsDir } = resolvePaths();
  ensurePrivateDir(runtimeDir);
  ensurePrivateDir(cliSessionsDir);
  return { dir: cliSessionsDir, path: join(cliSessionsDir, createHash('sha256').update(agent).digest('hex').slice(0, 32)) };
}

/**
 * As a sub-agent (`writ exec` inside an agent session): a new agent whose parent is the session in the
 * environment, bounded by the parent's grants and never prompting; it gets its own session for its child.
 */
async function requestSubAgentToken(a: TokenArgs, parentSession: string): Promise<{ client: WritClient; token: string; jti: string; session: string | undefined; agentId: string }> {
  const { client, hello } = await WritClient.asAgent({ name: a.agent, kind: a.kind, parentSession });
  const r = await client.call('task.request', { task: a.task, scopes: a.scopes, audience: a.aud, ...(a.ttl === undefined ? {} : { ttl: a.ttl }) });
  return { client, token: r.token.token, jti: r.token.jti, session: r.session, agentId: hello.agentId };
}

async function requestToken(a: TokenArgs): Promise<{ client: WritClient; token: string; jti: string; session: string | undefined; agentId: string }> {
  let session = process.env[ENV_SESSION] || undefined;
  const fromEnv = session !== undefined;
  const cache = fromEnv ? undefined : sessionCache(a.agent);
  if (cache) session = readRuntimeFile(cache.dir, cache.path)?.trim() || undefined;
  const { client, hello } = await WritClient.asAgent({ name: a.agent, kind: a.kind, ...(session ? { session } : {}) }).catch(async (e) => {
    // This CLI's own remembered session was revoked: start afresh as a new agent, which the developer must
    // approve again. A session handed down in the environment (an agent's process) stays refused.
    if (session && !fromEnv && asWritError(e).code === 'WRIT_SESSION_INVALID') return WritClient.asAgent({ name: a.agent, kind: a.kind });
    throw e;
  });
  const r = await client.call('task.request', { task: a.task, scopes: a.scopes, audience: a.aud, ...(a.ttl === undefined ? {} : { ttl: a.ttl }) });
  if (r.session) {
    session = r.session;
    if (cache) {
      // A new file renamed over the old: a symlink left in its place is replaced, never followed.
      const tmp = `${cache.path}.${process.pid}.tmp`;
      writeFileSync(tmp, r.session, { mode: 0o600, flag: 'wx' });
      renameSync(tmp, cache.path);
    }
  }
  return { client, token: r.token.token, jti: r.token.jti, session, agentId: hello.agentId };
}

async function cmdToken(args: string[]): Promise<number> {
  const { values } = parse(args, TOKEN_OPTIONS);
  if (values.help) return (err(HELP.token!), 0);
  const { client, token } = await requestToken(tokenArgs(values, 'writ-cli'));
  await client.close();
  out(token);
  return 0;
}

async function cmdExec(args: string[]): Promise<number> {
  const dash = args.indexOf('--');
  const own = dash < 0 ? args : args.slice(0, dash);
  const cmd = dash < 0 ? [] : args.slice(dash + 1);
  const { values } = parse(own, TOKEN_OPTIONS);
  if (values.help) return (err(HELP.exec!), 0);
  if (cmd.length === 0) throw new UsageError('give the command after --, e.g. writ exec --task … -- npm test');
  const a = tokenArgs(values, basename(cmd[0]!));
  // Found before the broker is asked: a command that cannot start is refused with no prompt, no grant and no token
  // (127 not found, 126 not executable, as a shell says). Windows' search (PATHEXT) is left to spawn, as before.
  if (process.platform !== 'win32') {
    try {
      resolveCommand(cmd[0]!, process.env);
    } catch (e) {
      if (!isWritError(e, 'WRIT_COMMAND_NOT_FOUND') && !isWritError(e, 'WRIT_COMMAND_NOT_EXECUTABLE')) throw e;
      err(`writ: ${e.message} (${e.code})`);
      return exitCodeFor(e.code);
    }
  }
  const address = brokerAddress();
  // Inside an agent session this command starts a sub-agent; `writ token` there acts as the agent itself.
  const parentSession = process.env[ENV_SESSION];
  const { client, token, jti, session, agentId } = parentSession ? await requestSubAgentToken(a, parentSession) : await requestToken(a);
  const held = heldToken(token); // before the command starts: nothing may fail between its start and its line
  // Its own process group (so a revocation stops the whole tree), except on a terminal: a background group
  // reading the TTY would be stopped by SIGTTIN. There the tree is found through /proc (process-tree.ts).
  const group = !process.stdin.isTTY && process.platform !== 'win32';
  const child = spawn(cmd[0]!, cmd.slice(1), {
    stdio: 'inherit',
    detached: group,
    env: { ...process.env, [ENV_TOKEN]: token, [ENV_BROKER]: address, ...(session ? { [ENV_SESSION]: session } : {}) },
  });
  // The broker closes a revoked agent's connection with 4001: stop the agent's process tree with it. Any other close
  // is no revocation: the line reconnects (exec-line.ts) and the command runs on meanwhile, its token valid until it expires.
  let stopping: Promise<import('./proxy/process-tree').TreeStopResult> | undefined;
  const line = new ExecLine({
    client,
    agent: { name: a.agent, kind: a.kind },
    session,
    parentSession,
    agentId,
    token: held,
    address: () => brokerAddress(),
    log: err,
    onRevoked: (why) => {
      if (child.pid === undefined || stopping) return;
      err(`writ: ${why}; stopping its process tree`);
      stopping = import('./proxy/process-tree').then(({ stopTree }) => stopTree(child.pid!, { group, graceMs: 2000 }));
    },
  });
  const forward = (sig: NodeJS.Signals) => () => {
    if (group && child.pid !== undefined) {
      try {
        process.kill(-child.pid, sig);
        return;
      } catch {
        // the group is gone: fall through to the child
      }
    }
    child.kill(sig);
  };
  // On a terminal the child is in this process group, so the terminal's own Ctrl-C (and Ctrl-\) already reached
  // it: sending it again made a program that quits on a second Ctrl-C (an agent's REPL) quit on one. Only kept
  // from killing writ. SIGTERM and SIGHUP may come from anywhere (kill, a closed ssh session, a supervisor): without
  // a terminal the child is in a session of its own, so one not passed on would leave it running, orphaned.
  const keyboard = group ? forward : () => () => undefined;
  process.on('SIGINT', keyboard('SIGINT'));
  if (process.platform !== 'win32') process.on('SIGQUIT', keyboard('SIGQUIT')); // libuv has no SIGQUIT there
  process.on('SIGTERM', forward('SIGTERM'));
  process.on('SIGHUP', forward('SIGHUP'));
  const exit = await new Promise<{ code: number; exitCode: number | null; signal: string | null; spawnFailed?: boolean }>((resolve) => {
    child.on('error', (e) => {
      // Found and executable a moment ago, yet it did not start (changed since, a missing interpreter): as a shell.
      const code = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'WRIT_COMMAND_NOT_FOUND' : 'WRIT_COMMAND_NOT_EXECUTABLE';
      err(`writ: cannot run ${cmd[0]}: ${e.message} (${code})`);
      resolve({ code: exitCodeFor(code), exitCode: null, signal: null, spawnFailed: true });
    });
    child.on('exit', (c, sig) =>
      // As a shell reports it: 128 + the signal's number (SIGSEGV 139, SIGABRT 134, SIGPIPE 141, ...).
      resolve({ code: c ?? 128 + (sig ? (osConstants.signals[sig] ?? 1) : 1), exitCode: c, signal: sig }),
    );
  });
  const code = exit.code;
  if (stopping && child.pid !== undefined) {
    const stopped = await stopping;
    if (!stopped.treeStopped) err('writ: some of the agent\'s processes could not be stopped');
    // The agent's own connection is closed: report on a fresh one, so the audit log says the tree was stopped. After
    // the line's revocations of the agent's other ids, so the record says whether the agent it is now was revoked.
    await line.otherIdsRevoked();
    try {
      const reporter = await WritClient.connect(brokerAddress());
      try {
        await reporter.call('agent.stopped', { agentId: line.agentId, pid: child.pid, ...stopped, exitCode: exit.exitCode, exitSignal: exit.signal });
      } finally {
        await reporter.close();
      }
    } catch (e) {
      err(`writ: could not report the stop to the broker (${asWritError(e).code})`);
    }
  }
  if (exit.spawnFailed) {
    // Minted for a command that never started: nothing holds the token, so it is revoked now, not left live until it expires.
    try {
      const revoker = await WritClient.connect(brokerAddress());
      try {
        await revoker.call('revoke', { target: { kind: 'token', jti }, reason: `writ exec could not start ${basename(cmd[0]!)}` });
      } finally {
        await revoker.close();
      }
    } catch (e) {
      err(`writ: could not revoke the unused token ${jti} (${asWritError(e).code}): revoke it with \`writ revoke --token ${jti}\``);
    }
  }
  await line.close();
  return code;
}

async function cmdRevoke(args: string[]): Promise<number> {
  const { values } = parse(args, {
    token: { type: 'string' },
    grant: { type: 'string' },
    task: { type: 'string' },
    agent: { type: 'string' },
    all: { type: 'boolean' },
    reason: { type: 'string' },
  });
  if (values.help) return (err(HELP.revoke!), 0);
  const targets: RevokeTarget[] = [];
  if (values.token) targets.push({ kind: 'token', jti: values.token });
  if (values.grant) targets.push({ kind: 'grant', id: values.grant });
  if (values.task) targets.push({ kind: 'task', id: values.task });
  if (values.agent) targets.push({ kind: 'agent', id: values.agent });
  if (values.all) targets.push({ kind: 'all' });
  if (targets.length !== 1) throw new UsageError('name exactly one of --token, --grant, --task, --agent, --all');
  const client = await WritClient.connect();
  try {
    const r = await client.call('revoke', { target: targets[0]!, ...(values.reason ? { reason: values.reason } : {}) });
    err(`revoked: ${r.revokedAgents} agent(s), ${r.revokedGrants} grant(s), ${r.revokedTokens} live token(s)`);
  } finally {
    await client.close();
  }
  return 0;
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } });
  if (values.help) return (err(HELP.status!), 0);
  const d = readDiscovery();
  const client = await WritClient.connect();
  try {
    const s = await client.call('status', {});
    if (values.json) {
      const { findings } = await client.call('findings.list', {});
      return (out(JSON.stringify({ ...s, socketPath: d.socketPath, httpUrl: d.httpUrl, openFindings: findings }, null, 2)), 0);
    }
    out(`Writ broker ${s.version} (pid ${s.pid}) for ${s.user}`);
    out(`  socket ${d.socketPath}   http ${d.httpUrl}`);
    out(`  approvals: ${s.approver}   agents: ${s.agents}   live grants: ${s.grants}   waiting approvals: ${s.pendingApprovals}`);
    out(`  audit records: ${s.auditRecords}   signing key: ${s.kid}`);
    if (s.findings > 0) {
      const { findings } = await client.call('findings.list', {});
      out(`  findings (${findings.length}):`);
      for (const f of findings) out(`    ${f.id}  ${f.kind}  agent ${f.agentId} (${f.identity})  action ${f.action}  ${JSON.stringify(f.evidence)}`);
    }
  } finally {
    await client.close();
  }
  return 0;
}

/** The running broker's discovery, or undefined when none is running. */
function runningBroker() {
  try {
    const d = readDiscovery();
    process.kill(d.pid, 0);
    return d;
  } catch (e) {
    // A discovery file in a folder that may be another user's is said, not taken as "no broker".
    if (asWritError(e).code === 'WRIT_RUNTIME_DIR_UNSAFE') throw e;
    return undefined;
  }
}

/** The audit log to read: --file, else the running broker's, else the default location. */
function auditFile(file: string | undefined): string {
  return file ?? runningBroker()?.auditPath ?? resolvePaths().auditPath;
}

/**
 * What the running broker named by the discovery file (its own socket, its pid) says it has made durable in its
 * live log, as a statement signed like a checkpoint (`status.auditSeal`) and checked here with `keys`: nothing else
 * answering on a socket can vouch for records. Undefined when it does not answer in time, or its statement does
 * not verify (said on stderr).
 */
async function brokerSeal(broker: Discovery, keys: ReadonlyMap<string, KeyObject>): Promise<{ count: number; head: string } | undefined> {
  const { checkpointSigned, DEFAULT_AUDIT_ORIGIN } = await import('./audit/log');
  let client: WritClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), JWKS_TIMEOUT_MS);
  });
  try {
    const answer = (async () => {
      client = await WritClient.connect(`unix:${broker.socketPath}`);
      return client.call('status', {});
    })();
    const s = await Promise.race([answer, timeout]);
    const seal = s?.auditSeal;
    if (!s || !seal || s.pid !== broker.pid) return undefined;
    if (!checkpointSigned(keys.get(seal.kid), DEFAULT_AUDIT_ORIGIN, seal)) {
      err(`writ: the running broker's (pid ${broker.pid}) statement of its log does not verify with these keys: it vouches for nothing`);
      return undefined;
    }
    return { count: seal.count, head: seal.head };
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
    void client?.close();
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/** How long `audit verify` waits for a running broker's JWKS. */
const JWKS_TIMEOUT_MS = 5000;

/**
 * The public keys a running broker publishes, each an Ed25519 JWK with a kid. A broker that does not answer in
 * time, or answers with anything else, is WRIT_BROKER_UNREACHABLE: never a crash, never keys taken on trust.
 */
async function brokerJwks(httpUrl: string): Promise<Map<string, KeyObject>> {
  const url = `${httpUrl}/.well-known/jwks.json`;
  const unreachable = (why: string, cause?: unknown) =>
    new WritError('WRIT_BROKER_UNREACHABLE', `could not read the running broker's keys at ${url} (${why}); run this where the keychain is reachable`, { cause });
  let body: unknown;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(JWKS_TIMEOUT_MS) });
    if (!res.ok) throw unreachable(`HTTP ${res.status}`);
    body = await res.json();
  } catch (e) {
    if (isWritError(e)) throw e;
    throw unreachable((e as Error).name === 'TimeoutError' ? `no answer within ${JWKS_TIMEOUT_MS / 1000} s` : 'no JSON answer', e);
  }
  const keys = new Map<string, KeyObject>();
  const list = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list)) throw unreachable('no key list');
  for (const jwk of list as Record<string, unknown>[]) {
    if (typeof jwk !== 'object' || jwk === null || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string' || typeof jwk.kid !== 'string') {
      throw unreachable('a key that is not an Ed25519 JWK with a kid');
    }
    try {
      keys.set(jwk.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
    } catch (e) {
      throw unreachable('a key that is not an Ed25519 JWK with a kid', e);
    }
  }
  return keys;
}

/**
 * The keys that may have signed checkpoints: every key ever, from the keychain. Where this terminal cannot
 * reach the keychain (another session, a throwaway demo keyring), the running broker's JWKS stands in:
 * it holds the active key and those whose tokens may still be live, so it is a partial set (a key retired over an
 * hour ago is missing), and the output says so.
 */
async function publicKeys(): Promise<{ keys: Map<string, KeyObject>; keySet: 'complete' | 'partial'; source: string }> {
  const { loadKeySet } = await import('./core/keys');
  const service = process.env.WRIT_KEYCHAIN_SERVICE;
  try {
    const { keys } = await loadKeySet({ ref: service ? { service } : {}, clock: systemClock, create: false });
    return { keys: keys.publicKeys(), keySet: 'complete', source: 'the keychain' };
  } catch (e) {
    const w = asWritError(e);
    const broker = runningBroker();
    if (!broker || !['WRIT_KEYCHAIN_UNAVAILABLE', 'WRIT_KEYCHAIN_LOCKED', 'WRIT_KEYCHAIN_TIMEOUT'].includes(w.code)) throw w;
    return { keys: await brokerJwks(broker.httpUrl), keySet: 'partial', source: `the running broker's JWKS (the keychain is not reachable here: ${w.code})` };
  }
}

async function cmdAudit(args: string[]): Promise<number> {
  const sub = args[0];
  if (sub === '--help' || sub === '-h') return (err(HELP.audit!), 0);
  if (sub === 'verify') {
    const { values } = parse(args.slice(1), { file: { type: 'string' } });
    if (values.help) return (err(HELP.audit!), 0);
    const { verifyAuditFile, judge } = await import('./audit/verify');
    const file = auditFile(values.file);
    const { keys, keySet, source } = await publicKeys();
    // The live log of a running broker: its signed count and head, asked before the file is read (every record it
    // counts is then in the file) and again after (records past that second count are none of its own).
    const live = runningBroker();
    const writer = live && sameFile(live.auditPath, file) ? live : undefined;
    const before = writer ? await brokerSeal(writer, keys) : undefined;
    const r = await verifyAuditFile(file, keys, { keySet, ...(before && before.count > 0 ? { headOf: before.count - 1 } : {}) });
    const after = writer && before ? await brokerSeal(writer, keys) : undefined;
    const vouch = writer && before && before.count > 0 ? { pid: writer.pid, count: before.count, head: before.head, upTo: Math.max(before.count, after?.count ?? 0) } : undefined;
    const j = judge(r, vouch);
    if (j.verdict === 'broken') {
      err(`writ: audit log BROKEN at line ${j.error.line}${j.error.seq === null ? '' : ` (seq ${j.error.seq})`}: ${j.error.reason}: ${j.error.message} (WRIT_AUDIT_CORRUPT)`);
      return 1;
    }
    err(`${file}: checkpoint signatures checked with keys from ${source}`);
    if (r.skippedCheckpoints && j.verdict === 'intact') {
      err(`${r.skippedCheckpoints} checkpoint(s) name keys not among them, each covered by a later checkpoint that verifies`);
    }
    if (j.verdict === 'unverifiable') {
      const u = j.unverifiable;
      // Not "broken": the chain holds to the end, but the records after the last verified checkpoint rest on it alone.
      err(
        `writ: audit log UNVERIFIABLE from line ${u.line} (seq ${u.seq}): ${u.message}; no break found: the hash chain holds for all ${r.records} records, ` +
          `but the ${r.unsignedTail} after the last verified checkpoint rest on the chain alone; run it where the keychain is reachable to check them (WRIT_AUDIT_UNVERIFIABLE)`,
      );
      return 3;
    }
    if (j.verdict === 'unsigned') {
      // Not "broken" either: nothing contradicts the chain, but nothing the key signed, nor the broker, vouches for these.
      err(`writ: audit log UNSIGNED from line ${j.line} (seq ${j.seq}): ${j.message} (WRIT_AUDIT_UNSIGNED)`);
      return 4;
    }
    if (r.adopted) {
      err(
        `note: ${r.adopted.records} record(s) a crash left unsigned were signed by the next broker as it started, not by the run that wrote them ` +
          `(audit.adopted, first at line ${r.adopted.line}): they rest on the hash chain alone`,
      );
    }
    const tail = j.vouched > 0 ? `, ${j.vouched} after it vouched for by the running broker (pid ${vouch!.pid})` : '';
    out(`audit log intact: ${r.records} records, ${r.checkpoints} signed checkpoints${tail}`);
    return 0;
  }
  if (sub === 'export') {
    const { values } = parse(args.slice(1), {
      format: { type: 'string' },
      out: { type: 'string' },
      session: { type: 'string' },
      agent: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      file: { type: 'string' },
    });
    if (values.help) return (err(HELP.audit!), 0);
    const format = values.format ?? 'jsonl';
    if (format !== 'jsonl' && format !== 'csv' && format !== 'ocsf') throw new UsageError('--format is jsonl, csv or ocsf');
    const time = (v: string | undefined, name: string) => {
      if (v === undefined) return undefined;
      const t = Date.parse(v);
      if (Number.isNaN(t)) throw new UsageError(`--${name} must be an ISO 8601 time`);
      return t;
    };
    const since = time(values.since, 'since');
    const until = time(values.until, 'until');
    const { exportAuditFile } = await import('./audit/export');
    const stream = values.out ? createWriteStream('', { fd: openExport(values.out) }) : process.stdout;
    const r = await exportAuditFile(auditFile(values.file), stream, format, {
      ...(values.session ? { session: values.session } : {}),
      ...(values.agent ? { agentId: values.agent } : {}),
      ...(since === undefined ? {} : { since }),
      ...(until === undefined ? {} : { until }),
    });
    if (values.out) await new Promise<void>((resolve, reject) => (stream as import('node:fs').WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
    err(`exported ${r.exported} records as ${format}`);
    return 0;
  }
  if (sub === 'wal') {
    const { values } = parse(args.slice(1), { file: { type: 'string' }, wal: { type: 'string' }, missing: { type: 'boolean' } });
    if (values.help) return (err(HELP.audit!), 0);
    const { compareWal } = await import('./audit/walcheck');
    const { walPath, walSetAsidePath } = await import('./audit/wal');
    const log = auditFile(values.file);
    const file = values.wal ?? (existsSync(walSetAsidePath(log)) ? walSetAsidePath(log) : walPath(log));
    const c = await compareWal(log, file);
    const live = runningBroker();
    if (live && sameFile(live.auditPath, log)) err(`note: a broker (pid ${live.pid}) is writing this log: what it writes meanwhile may show as missing; stop it for an exact answer`);
    const odd = c.logUnreadableLines ? `, and ${c.logUnreadableLines} line(s) that are not records` : '';
    err(`${file}: compared with the audit log ${log} (${c.logRecords} records${odd})`);
    if (c.generations.length === 0) err('  no generation header in it could be read: a start restores nothing from it');
    for (const g of c.generations) {
      err(
        `  generation ${g.gen}${g.read ? '' : ' (stale: a start does not read it)'}: ${g.records} record(s)${g.records > 0 ? ` from seq ${g.base.count}` : ''}; written for ${g.sameFile ? 'this log file' : 'another file (not this log, or this log replaced)'}; ` +
          `the log ${g.logHoldsBase ? 'begins' : 'does not begin'} with the ${g.base.count} records (${g.base.offset} bytes) it began on`,
      );
    }
    const parts = [`${c.inLog} in the log as written`, `${c.missing.length} missing from it${c.missing.length ? ` (seq ${seqRanges(c.missing.map((m) => m.seq))})` : ''}`];
    if (c.differs.length) parts.push(`${c.differs.length} the log holds otherwise (seq ${seqRanges(c.differs)})`);
    err(`${c.records} record(s) in its generations: ${parts.join(', ')}`);
    const lacking = c.unchained.lacking;
    if (c.unchained.records > 0) {
      err(`${c.unchained.records} more record(s) that chain on from no generation (stale, or after a page the file lost): ${lacking.length} of them the log lacks${lacking.length ? ` (seq ${seqRanges([...new Set(lacking.map((u) => u.seq))])})` : ''}`);
    }
    if (values.missing) for (const m of [...c.missing, ...lacking]) process.stdout.write(Buffer.concat([m.line, Buffer.from('\n')]));
    if (c.missing.length === 0 && c.differs.length === 0 && lacking.length === 0) {
      out('the log holds every record the write-ahead file does: removing the file loses none');
      return 0;
    }
    const said: string[] = [];
    if (c.restorable) {
      const where = file === walPath(log) ? 'the next start restores them from this file' : `renamed to ${walPath(log)}, the file is restored from at the next start`;
      const aside = file !== walSetAsidePath(log) && existsSync(walSetAsidePath(log)) ? ` (but no start opens the log while ${walSetAsidePath(log)} is there)` : '';
      said.push(
        `the ${c.missing.length} record(s) missing continue the log from its last record (seq ${c.logLastSeq}): ${where}${aside}. ` +
          'Some may be records the broker reported as failed when a sync failed (it returned no token for them)',
      );
      if (lacking.length) said.push(`the ${lacking.length} record(s) the log lacks that chain on from no generation would not be restored: keep a copy of the file`);
    } else {
      said.push(
        `the file holds records the log lacks or holds otherwise, and this check cannot confirm that a start would restore them: keep the file with the log as evidence${values.missing ? '' : ' (--missing prints those the log lacks)'}`,
      );
    }
    out(said.join('\n'));
    return 3;
  }
  throw new UsageError('writ audit verify | writ audit export | writ audit wal');
}

/** `1-3, 7, 9-10`: ascending seqs as ranges, the first twelve. */
function seqRanges(seqs: readonly number[]): string {
  const ranges: string[] = [];
  for (let i = 0; i < seqs.length; ) {
    let j = i;
    while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++;
    ranges.push(j === i ? String(seqs[i]) : `${seqs[i]}-${seqs[j]}`);
    i = j + 1;
  }
  return ranges.length > 12 ? `${ranges.slice(0, 12).join(', ')}, …` : ranges.join(', ');
}

/**
 * The export's file, for this user only: created 0600, or an existing file truncated and narrowed to 0600 (its old
 * mode may let others read it). Never through a symbolic link, which could point anywhere this user can write.
 */
function openExport(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new WritError('WRIT_BAD_REQUEST', `--out ${path} is a symbolic link: the export is not written through one`, { path: 'out' });
    throw new WritError('WRIT_BAD_REQUEST', `cannot write the export to ${path}${typeof code === 'string' ? ` (${code})` : ''}`, { path: 'out' });
  }
  fchmodSync(fd, 0o600);
  return fd;
}

async function cmdMcp(args: string[]): Promise<number> {
  const { values } = parse(args, { agent: { type: 'string' } });
  if (values.help) return (err(HELP.mcp!), 0);
  const { runMcpStdio } = await import('./mcp/server');
  const { VERSION } = await import('./root');
  await runMcpStdio({ agent: values.agent ?? 'mcp-agent', version: VERSION, log: err });
  return 0;
}

async function cmdGate(args: string[]): Promise<number> {
  const dash = args.indexOf('--');
  const own = dash < 0 ? args : args.slice(0, dash);
  const cmd = dash < 0 ? [] : args.slice(dash + 1);
  const { values } = parse(own, { server: { type: 'string' }, audience: { type: 'string' }, port: { type: 'string' }, 'upstream-url': { type: 'string' }, broker: { type: 'string' } });
  if (values.help) return (err(HELP.gate!), 0);
  if (!values.server) throw new UsageError('--server NAME is required (scopes name it: mcp:call:NAME/<tool>)');
  const upstreamUrl = values['upstream-url'];
  if ((cmd.length > 0) === (upstreamUrl !== undefined)) throw new UsageError('give the upstream either as -- CMD ARGS… or as --upstream-url URL');
  let port: number | undefined;
  if (values.port !== undefined) {
    port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be 0 to 65535');
  }
  const { runGate, SERVER_NAME_RE } = await import('./mcp/gate');
  if (!SERVER_NAME_RE.test(values.server)) throw new UsageError('--server must be 1-64 of A-Z a-z 0-9 _ . - (it is part of the scope mcp:call:<server>/<tool>)');
  const { VERSION } = await import('./root');
  return runGate({
    server: values.server,
    upstream: upstreamUrl !== undefined ? { kind: 'http', url: upstreamUrl } : { kind: 'stdio', command: cmd[0]!, args: cmd.slice(1) },
    ...(values.audience ? { audience: values.audience } : {}),
    ...(port === undefined ? {} : { port }),
    ...(values.broker ? { broker: values.broker } : {}),
    version: VERSION,
    log: err,
  });
}

async function cmdSecretCli(args: string[]): Promise<number> {
  const { cmdSecret } = await import('./proxy/cli');
  try {
    return await cmdSecret(args, { out, err });
  } catch (e) {
    if (e instanceof WritError && e.code === 'WRIT_USAGE') throw new UsageError(e.message);
    throw e;
  }
}

async function cmdKey(args: string[]): Promise<number> {
  if (args[0] !== 'rotate') {
    err(HELP.key!);
    return args[0] === '--help' || args[0] === '-h' ? 0 : 2;
  }
  const { values } = parse(args.slice(1), {});
  if (values.help) return (err(HELP.key!), 0);
  try {
    const d = readDiscovery();
    try {
      process.kill(d.pid, 0);
      throw new WritError('WRIT_BROKER_RUNNING', `stop the running broker (pid ${d.pid}) before rotating its key`);
    } catch (e) {
      if (e instanceof WritError) throw e;
    }
  } catch (e) {
    if (e instanceof WritError && e.code === 'WRIT_BROKER_RUNNING') throw e;
  }
  const { rotateKeySet } = await import('./core/keys');
  const { appendOffline } = await import('./audit/offline');
  const { defaultUser } = await import('./root');
  const { withStateLock } = await import('./statelock');
  const service = process.env.WRIT_KEYCHAIN_SERVICE;
  // The lock before the keychain: a broker on this state folder (found through another runtime folder, or none)
  // refuses the rotation before the key changes, not after with its record missing from the log.
  return withStateLock(resolvePaths().stateDir, 'key rotate', async (lock) => {
    const { keys, previousKid } = await rotateKeySet({ ref: service ? { service } : {}, clock: systemClock });
    await appendOffline(lock, { event: 'key.rotated', outcome: 'success', detail: { kid: keys.active.kid, previousKid } }, defaultUser(process.env), keys.active);
    err(`rotated: new signing key ${keys.active.kid}; ${previousKid} stays in the JWKS for an hour, the longest its tokens can live`);
    return 0;
  });
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        return await cmdServe(rest);
      case 'token':
        return await cmdToken(rest);
      case 'exec':
        return await cmdExec(rest);
      case 'revoke':
        return await cmdRevoke(rest);
      case 'agents':
        return await cmdAgents(rest, (m) => new UsageError(m));
      case 'status':
        return await cmdStatus(rest);
      case 'audit':
        return await cmdAudit(rest);
      case 'key':
        return await cmdKey(rest);
      case 'secret':
        return await cmdSecretCli(rest);
      case 'mcp':
        return await cmdMcp(rest);
      case 'gate':
        return await cmdGate(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        err(HELP.main!);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`writ: ${e.message}`);
      err(`Run \`writ ${command ?? ''} --help\`.`.replace('  ', ' '));
      return 2;
    }
    const w = asWritError(e);
    err(`writ: ${w.message} (${w.code})`);
    if (w.code === 'WRIT_INTERNAL' && process.env.WRIT_DEBUG) err(String((e as Error)?.stack ?? e));
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // `serve` has closed its servers; the other commands have nothing left. Exit promptly either way.
    setImmediate(() => process.exit(code));
  },
  (e) => {
    err(`writ: ${String(e)}`);
    process.exit(1);
  },
);
