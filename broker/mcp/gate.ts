// `writ gate`: a proxy in front of any MCP server (stdio or streamable HTTP) that lets a call through only with a
// Writ token whose scopes cover it (`mcp:call:<server>/<tool>`). It serves MCP over streamable HTTP on loopback,
// answers refusals the way the MCP authorization spec says (401 + RFC 9728 resource metadata, 403
// insufficient_scope), records every tool call in the broker's audit log through the verifier (tool name and
// outcome, never the arguments) before it forwards any (no record, no forward: 503 otherwise), and sees
// revocations the instant the broker pushes them: a tool call already forwarded ends then (or when its token
// expires) with a JSON-RPC error naming why, and the upstream is told to cancel it. A client's
// `notifications/cancelled` (with a token of the same jti) cancels its forwarded call upstream the same way. How
// each recorded call ended goes on record too (`token.use.ended`: answered, error, revoked, expired, cancelled,
// closed when the gate stops with it in flight, or not forwarded after all).
//
// The caller's token stops here: the upstream server is reached with the gate's own transport and never sees it.
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse, Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { MAX_BATCH_SIZE } from '@modelcontextprotocol/sdk/server/requestBody.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { CallToolRequestSchema, CallToolResultSchema, ListToolsRequestSchema, McpError, ErrorCode } from '@modelcontextprotocol/sdk/types.js';
import type { CallToolRequest, CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import { WritError, asWritError } from '../errors';
import type { WritErrorCode } from '../errors';
import { allowsCall, parseScope } from '../core/scopes';
import type { Scope } from '../core/scopes';
import { createVerifier } from '../sdk/verify';
import type { RecordedUse, UseEndOutcome, Verifier, VerifiedToken } from '../sdk/verify';
import { readDiscovery } from '../sdk/client';

export type Upstream = { kind: 'stdio'; command: string; args: string[] } | { kind: 'http'; url: string };

export interface GateOptions {
  /** The upstream server's name in scopes: `mcp:call:<server>/<tool>`. */
  server: string;
  upstream: Upstream;
  /** The audience tokens must carry; default the gate's own resource URL (`http://127.0.0.1:PORT/mcp`). */
  audience?: string;
  /** 0 or omitted: a free port. */
  port?: number;
  /** The broker's http:// base URL; default the discovery file's. */
  broker?: string;
  env?: NodeJS.ProcessEnv;
  version: string;
  log?: (line: string) => void;
}

export interface Gate {
  /** The MCP endpoint: `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  readonly audience: string;
  readonly metadataUrl: string;
  /** Settles when the upstream went away (the gate cannot serve without it). */
  readonly upstreamClosed: Promise<void>;
  close(): Promise<void>;
}

/** A server name usable in a scope target segment. */
export const SERVER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const MAX_TOOL_NAME = 128;
/** Env vars that carry Writ credentials: never handed to the upstream process. */
const WRIT_SECRETS = ['WRIT_TOKEN', 'WRIT_SESSION'];

const quoteParam = (s: string) => s.replace(/[\\"]/g, '\\$&').replace(/[\r\n]/g, ' ');

interface JsonRpcMsg {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
}

function toolTarget(server: string, tool: string): string {
  return `${server}/${tool}`;
}

function scopesOf(t: VerifiedToken): Scope[] {
  const out: Scope[] = [];
  for (const s of t.scopes) {
    try {
      out.push(parseScope(s));
    } catch {
      /* the verifier already refused tokens with malformed scopes */
    }
  }
  return out;
}

async function connectUpstream(u: Upstream, env: NodeJS.ProcessEnv, version: string): Promise<Client> {
  const client = new Client({ name: 'writ-gate', version });
  if (u.kind === 'stdio') {
    const childEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (v !== undefined && !WRIT_SECRETS.includes(k)) childEnv[k] = v;
    await client.connect(new StdioClientTransport({ command: u.command, args: u.args, env: childEnv, stderr: 'inherit' }));
  } else {
    await client.connect(new StreamableHTTPClientTransport(new URL(u.url)));
  }
  return client;
}

async function listAllTools(upstream: Client): Promise<Tool[]> {
  const tools: Tool[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const r = await upstream.listTools(cursor === undefined ? {} : { cursor });
    tools.push(...r.tools);
    cursor = r.nextCursor;
    if (!cursor) break;
  }
  return tools;
}

function readBody(req: IncomingMessage): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) over = true;
      else chunks.push(c);
    });
    req.on('end', () => resolve(over ? 'too-large' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** Why a forwarded call was ended before the upstream answered (`closed`: the gate is stopping). */
type StopReason = 'revoked' | 'expired' | 'cancelled' | 'closed';

/**
 * A tools/call forwarded upstream and not yet answered: ended when its token is revoked or expires, or when the
 * client cancels it (`key`: its token's jti and the client's request id).
 */
interface InFlight {
  token: VerifiedToken;
  key: string;
  stop: (reason: StopReason) => void;
  /** Settles once the client's answer is decided (and its end reported). */
  settled: Promise<void>;
}

/** How long `close` waits for the calls it ended to be answered before it drops the clients' connections. */
const CLOSE_ANSWERS_MS = 2_000;

/** A forwarded call's key: a cancellation must come with a token of the same jti, naming the same request id. */
function callKey(jti: string, requestId: unknown): string | undefined {
  if (typeof requestId === 'string') return `${jti}\ns:${requestId}`;
  if (typeof requestId === 'number') return `${jti}\nn:${requestId}`;
  return undefined;
}

/**
 * What the MCP client is answered for a call it cancelled. MCP says not to answer a cancelled request (the SDK's
 * server then sends nothing), but a JSON response still owes the HTTP request its body: the error JSON-RPC
 * implementations use for a cancelled request, which the SDK's client drops (it stopped waiting at once).
 */
function callCancelled(): Error & { code: number } {
  return Object.assign(new Error('Request cancelled'), { code: -32800 });
}

/** What the MCP client is answered for a call ended (or not forwarded) because the gate is stopping. */
function gateStopping(when: 'during' | 'before'): Error & { code: number } {
  return Object.assign(new Error(`Service unavailable: writ gate stopped ${when === 'during' ? 'during the call' : 'before the call was forwarded'}`), { code: -32002 });
}

/** What the MCP client is answered for a call its token no longer covers (the transport sends code, message, data). */
function callEnded(reason: 'revoked' | 'expired', when: 'during' | 'before'): Error & { code: number; data: { code: WritErrorCode } } {
  const code: WritErrorCode = reason === 'revoked' ? 'WRIT_TOKEN_REVOKED' : 'WRIT_TOKEN_EXPIRED';
  const what = reason === 'revoked' ? 'was revoked' : 'expired';
  const message = when === 'during' ? `Unauthorized: the token ${what} during the call` : `Unauthorized: the token ${what} before the call was forwarded`;
  return Object.assign(new Error(message), { code: -32001, data: { code } });
}

function rpcError(id: unknown, code: number, message: string, data?: Record<string, unknown>) {
  return { jsonrpc: '2.0', id: typeof id === 'string' || typeof id === 'number' ? id : null, error: { code, message, ...(data ? { data } : {}) } };
}

/** The uses `authorize` recorded for one HTTP request's tools/calls, each taken once by the call of its request id. */
class RecordedUses {
  private readonly byId = new Map<string, RecordedUse[]>();

  constructor(entries: readonly (readonly [unknown, RecordedUse])[]) {
    for (const [id, use] of entries) {
      const k = callKey('', id) ?? '';
      const list = this.byId.get(k);
      if (list === undefined) this.byId.set(k, [use]);
      else list.push(use);
    }
  }

  take(id: unknown): RecordedUse | undefined {
    return this.byId.get(callKey('', id) ?? '')?.shift();
  }

  /** The uses no call took; taken now. */
  rest(): RecordedUse[] {
    const rest = [...this.byId.values()].flat();
    this.byId.clear();
    return rest;
  }
}

export async function startGate(opts: GateOptions): Promise<Gate> {
  if (!SERVER_NAME_RE.test(opts.server)) throw new WritError('WRIT_USAGE', 'the server name must be 1-64 of A-Z a-z 0-9 _ . - (it is part of the scope mcp:call:<server>/<tool>)');
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  // Without --broker the broker is found by its discovery file, re-read as needed: a restarted broker has a new port.
  let brokerHttp = opts.broker ?? readDiscovery(env).httpUrl;
  const currentBroker = (): string => {
    if (opts.broker !== undefined) return opts.broker;
    try {
      brokerHttp = readDiscovery(env).httpUrl;
    } catch {
      /* keep the last known address */
    }
    return brokerHttp;
  };

  const upstream = await connectUpstream(opts.upstream, env, opts.version);
  let upstreamGone!: () => void;
  const upstreamClosed = new Promise<void>((r) => (upstreamGone = r));
  upstream.onclose = () => upstreamGone();
  const known = await listAllTools(upstream).catch(() => [] as Tool[]);

  const http: HttpServer = createServer();
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  const url = `${origin}/mcp`;
  const audience = opts.audience ?? url;
  const metadataUrl = `${origin}/.well-known/oauth-protected-resource`;
  const allowedHosts = new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`]);
  const metadata = () => ({
    resource: audience,
    authorization_servers: [currentBroker()],
    scopes_supported: known.map((t) => `mcp:call:${toolTarget(opts.server, t.name)}`),
    bearer_methods_supported: ['header'],
    resource_name: `${opts.server} (through writ gate)`,
  });

  const verifier: Verifier = createVerifier({ audience, env, ...(opts.broker === undefined ? {} : { broker: opts.broker }) });
  let wasConnected: boolean | undefined;
  const sayStatus = (connected: boolean) => {
    if (connected === wasConnected) return;
    wasConnected = connected;
    log(
      connected
        ? 'writ gate: connected to the broker (live revocation)'
        : 'writ gate: lost the broker: tool calls are refused (503) until it is back, since they cannot be recorded',
    );
  };
  // Tool calls forwarded and not yet answered. A revocation event, or the snapshot read on reconnecting, that covers
  // one's token ends it; a timer ends it at its token's `exp`; `close` ends all of them.
  const inFlight = new Set<InFlight>();
  /** Set by `close`: nothing more is forwarded. */
  let closing = false;
  /** The same calls by `callKey`, for the client's cancellations. */
  const byKey = new Map<string, Set<InFlight>>();
  const hold = (c: InFlight) => {
    inFlight.add(c);
    let same = byKey.get(c.key);
    if (same === undefined) byKey.set(c.key, (same = new Set()));
    same.add(c);
  };
  const release = (c: InFlight): boolean => {
    if (!inFlight.delete(c)) return false;
    const same = byKey.get(c.key);
    same?.delete(c);
    if (same?.size === 0) byKey.delete(c.key);
    return true;
  };
  const sweep = () => {
    for (const c of [...inFlight]) if (verifier.revoked(c.token)) c.stop('revoked');
  };
  void verifier.ready().then(sayStatus);
  verifier.onStatus((s) => {
    sayStatus(s.connected);
    if (s.connected) sweep();
  });
  // Runs before the event is acknowledged, so the broker's revoke call returns only after the calls were ended.
  verifier.onRevocation(sweep);
  // A block of the caller's identity ends its calls the same way (as revoked: the token is no longer taken).
  verifier.onBlocks((e) => e.blocked && sweep());

  /**
   * Forwards one allowed tools/call and answers with the upstream's result, unless its token is revoked or expires
   * first, or the client cancels it: then the upstream request is cancelled (notifications/cancelled; an answer
   * that still comes is dropped) and the client gets a JSON-RPC error naming WRIT_TOKEN_REVOKED or
   * WRIT_TOKEN_EXPIRED, or -32800 for its own cancellation. How it ended is reported for its use's record.
   */
  async function forwardCall(token: VerifiedToken, requestId: unknown, params: CallToolRequest['params'], use: RecordedUse | undefined): Promise<CallToolResult> {
    const target = toolTarget(opts.server, params.name);
    const end = (outcome: UseEndOutcome, code?: WritErrorCode) => {
      if (use !== undefined) verifier.ended(use, outcome, code);
    };
    // Revoked while its use was recorded and the request routed here, or past `exp` (the check allows a few seconds
    // of clock skew): a call that would be ended at once is not started.
    if (closing) {
      log(`writ gate: did not forward ${target}: the gate is stopping`);
      end('not-forwarded');
      throw gateStopping('before');
    }
    const early = verifier.revoked(token) ? 'revoked' : token.expiresAt * 1000 <= Date.now() ? 'expired' : undefined;
    if (early !== undefined) {
      const answer = callEnded(early, 'before');
      log(`writ gate: did not forward ${target}: ${answer.message} (${answer.data.code})`);
      end('not-forwarded', answer.data.code);
      throw answer;
    }
    const cancel = new AbortController();
    let ended: StopReason | undefined;
    let settle!: () => void;
    const held: InFlight = {
      settled: new Promise<void>((r) => (settle = r)),
      token,
      // A request id that is neither string nor number never reaches here (the SDK refuses it): no key matches it.
      key: callKey(token.jti, requestId) ?? '',
      stop: (reason) => {
        if (!release(held)) return;
        ended = reason;
        if (reason === 'cancelled') {
          log(`writ gate: ended ${target} in flight: cancelled by the client`);
          cancel.abort('cancelled by the client');
          return;
        }
        if (reason === 'closed') {
          log(`writ gate: ended ${target} in flight: the gate is stopping`);
          cancel.abort('writ gate is stopping');
          return;
        }
        const answer = callEnded(reason, 'during');
        // Said before the upstream is told to cancel, so the two lines on a shared stderr come in that order.
        log(`writ gate: ended ${target} in flight: ${answer.message} (${answer.data.code})`);
        cancel.abort(`${answer.data.code}: the caller's token ${reason === 'revoked' ? 'was revoked' : 'expired'}`);
      },
    };
    hold(held);
    const expiry = setTimeout(() => held.stop('expired'), Math.min(Math.max(0, token.expiresAt * 1000 - Date.now()), 2 ** 31 - 1));
    expiry.unref();
    try {
      const result = await upstream.request({ method: 'tools/call', params }, CallToolResultSchema, { signal: cancel.signal });
      end('answered');
      return result;
    } catch (e) {
      if (ended === undefined) {
        end('error');
        throw e;
      }
      end(ended);
      throw ended === 'cancelled' ? callCancelled() : ended === 'closed' ? gateStopping('during') : callEnded(ended, 'during');
    } finally {
      release(held);
      clearTimeout(expiry);
      settle();
    }
  }

  /** The client's `notifications/cancelled`, with a token that verified: ends its call of that id, if forwarded. */
  function cancelCalls(token: VerifiedToken, messages: readonly JsonRpcMsg[]): void {
    for (const msg of messages) {
      if (msg.method !== 'notifications/cancelled') continue;
      const key = callKey(token.jti, (msg.params as { requestId?: unknown } | undefined)?.requestId);
      const same = key === undefined ? undefined : byKey.get(key);
      if (same !== undefined) for (const c of [...same]) c.stop('cancelled');
    }
  }

  const challenge = (extra = '') => `Bearer resource_metadata="${metadataUrl}"${extra}`;

  /** The MCP server for one request (stateless): tools come from upstream, filtered and checked by the token. */
  function gateServer(): Server {
    const s = new Server({ name: `writ-gate/${opts.server}`, version: opts.version }, { capabilities: { tools: {} } });
    s.setRequestHandler(ListToolsRequestSchema, async (request, extra) => {
      const scopes = (extra.authInfo?.extra?.scopes as Scope[] | undefined) ?? [];
      const r = await upstream.listTools(request.params);
      // Only the tools this token may call: an agent is not shown what it cannot use.
      return { ...r, tools: r.tools.filter((t) => allowsCall(scopes, 'mcp', 'call', toolTarget(opts.server, t.name))) };
    });
    s.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
      const scopes = (extra.authInfo?.extra?.scopes as Scope[] | undefined) ?? [];
      // Checked (and audited) before the request reached here; checked again so nothing can route around it.
      const token = extra.authInfo?.extra?.verified as VerifiedToken | undefined;
      const use = (extra.authInfo?.extra?.uses as RecordedUses | undefined)?.take(extra.requestId);
      if (token === undefined || !allowsCall(scopes, 'mcp', 'call', toolTarget(opts.server, request.params.name))) {
        if (use !== undefined) verifier.ended(use, 'not-forwarded', 'WRIT_SCOPE_NOT_COVERED');
        throw new McpError(ErrorCode.InvalidRequest, 'WRIT_SCOPE_NOT_COVERED: the token does not allow this tool');
      }
      return forwardCall(token, extra.requestId, request.params, use);
    });
    return s;
  }

  async function handleMcp(req: IncomingMessage & { auth?: AuthInfo }, res: ServerResponse): Promise<void> {
    let body: unknown;
    let messages: JsonRpcMsg[] = [];
    if (req.method === 'POST') {
      const raw = await readBody(req);
      if (raw === 'too-large') return sendJson(res, 413, rpcError(null, -32600, 'request body too large'));
      // Parsed before the token is checked only to know which tools are called; nothing in it is acted on yet.
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        body = undefined;
      }
      if (body !== undefined) messages = (Array.isArray(body) ? body : [body]).filter((m): m is JsonRpcMsg => typeof m === 'object' && m !== null);
    }

    const m = /^Bearer[ ]+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) {
      return sendJson(res, 401, rpcError(messages[0]?.id, -32001, 'Unauthorized: a Writ token is required (Authorization: Bearer …)', { code: 'WRIT_TOKEN_INVALID' }), {
        'www-authenticate': challenge(),
      });
    }
    const token = m[1]!;
    if (req.method === 'POST' && body === undefined) return sendJson(res, 400, rpcError(null, -32700, 'Parse error: the body is not JSON'));
    // The SDK refuses a larger batch whole, after its calls would have been recorded as allowed: refused here first.
    if (Array.isArray(body) && body.length > MAX_BATCH_SIZE) {
      return sendJson(res, 400, rpcError(null, -32600, `Invalid Request: a batch holds at most ${MAX_BATCH_SIZE} messages; nothing in it was recorded or forwarded`, { code: 'WRIT_BAD_REQUEST' }));
    }

    const calls: { id: unknown; tool: string }[] = [];
    for (const msg of messages) {
      if (msg.method !== 'tools/call') continue;
      const name = (msg.params as { name?: unknown } | undefined)?.name;
      if (typeof name !== 'string' || name.length === 0 || name.length > MAX_TOOL_NAME) {
        return sendJson(res, 400, rpcError(msg.id, -32602, 'Invalid params: tools/call needs a tool name'));
      }
      calls.push({ id: msg.id, tool: name });
    }

    let verified: VerifiedToken;
    let uses: RecordedUses | undefined;
    try {
      // The use reports name this connection, so the broker can name the process that presented the token.
      const connection = req.socket;
      if (calls.length === 0) verified = await verifier.verify(token, { connection });
      // Every call checked, then all recorded in one awaited report (tool and outcome, no arguments): nothing is
      // forwarded before the broker has each call's record on disk.
      else {
        const authorized = await verifier.authorize(token, { calls: calls.map((c) => ({ resource: 'mcp', action: 'call', target: toolTarget(opts.server, c.tool) })), connection });
        verified = authorized;
        uses = new RecordedUses(calls.map((c, i) => [c.id, authorized.uses[i]!]));
      }
    } catch (e) {
      const w = asWritError(e);
      const refusedTarget = (w.data?.call as { target?: unknown } | undefined)?.target;
      const refused = calls.find((c) => toolTarget(opts.server, c.tool) === refusedTarget);
      const id = refused?.id ?? messages[0]?.id;
      if (w.code === 'WRIT_SCOPE_NOT_COVERED' && refused !== undefined) {
        const scope = `mcp:call:${toolTarget(opts.server, refused.tool)}`;
        log(`writ gate: refused ${opts.server}/${refused.tool}: scope ${scope} not granted`);
        return sendJson(res, 403, rpcError(id, -32003, `Forbidden: the token does not allow ${scope}`, { code: w.code, scope }), {
          'www-authenticate': `Bearer error="insufficient_scope", scope="${quoteParam(scope)}", resource_metadata="${metadataUrl}", error_description="the token does not allow this tool"`,
        });
      }
      // The token may be good, but the use could not be checked or recorded: nothing is forwarded, try again.
      if (w.code === 'WRIT_BROKER_UNREACHABLE' || w.code === 'WRIT_AUDIT_WRITE_FAILED' || w.code === 'WRIT_RATE_LIMITED') {
        return sendJson(res, 503, rpcError(id, -32002, `Service unavailable: ${w.message}`, { code: w.code }), { 'retry-after': '1' });
      }
      if (w.code === 'WRIT_SCOPE_INVALID' || w.code === 'WRIT_BAD_REQUEST' || w.code === 'WRIT_INTERNAL') return sendJson(res, 400, rpcError(id, -32600, w.message, { code: w.code }));
      log(`writ gate: refused a token: ${w.code}`);
      return sendJson(res, 401, rpcError(id, -32001, `Unauthorized: ${w.message}`, { code: w.code }), {
        'www-authenticate': challenge(`, error="invalid_token", error_description="${quoteParam(`${w.code}: ${w.message}`)}"`),
      });
    }

    cancelCalls(verified, messages);
    req.auth = { token, clientId: verified.agentId, scopes: [...verified.scopes], expiresAt: verified.expiresAt, extra: { scopes: scopesOf(verified), jti: verified.jti, verified, uses } };
    const server = gateServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      // A recorded call the SDK answered without running it (params its schema refused, a request it would not
      // take): on record as not forwarded, so its `token.used` does not stand alone as allowed.
      for (const use of uses?.rest() ?? []) verifier.ended(use, 'not-forwarded');
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  http.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    // DNS rebinding: only loopback names, and no browser page from elsewhere.
    const o = req.headers.origin;
    if (!allowedHosts.has(req.headers.host ?? '') || (o !== undefined && !/^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/.test(o))) {
      return sendJson(res, 403, { error: 'forbidden', error_description: 'loopback hosts only' });
    }
    if (path === '/.well-known/oauth-protected-resource' || path === '/.well-known/oauth-protected-resource/mcp') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method_not_allowed' }, { allow: 'GET' });
      return sendJson(res, 200, metadata(), { 'cache-control': 'max-age=60' });
    }
    if (path !== '/mcp') return sendJson(res, 404, { error: 'not_found' });
    handleMcp(req, res).catch((e) => {
      log(`writ gate: ${asWritError(e).code}: ${(e as Error)?.message ?? e}`);
      if (!res.headersSent) sendJson(res, 500, rpcError(null, -32603, 'Internal error'));
      else res.end();
    });
  });

  log(`writ gate: ${known.length} tool(s) upstream: ${known.map((t) => t.name).join(', ') || '(none)'}`);

  return {
    url,
    audience,
    metadataUrl,
    upstreamClosed,
    // Calls in flight end on record before anything goes: each is ended (`closed`, the upstream told to cancel, the
    // client answered), its end reported, and the verifier waits for those reports to be written (a few seconds at
    // most) before it closes; the upstream goes last. A request whose use is still being recorded is not forwarded.
    close: async () => {
      closing = true;
      const stopped = new Promise<void>((r) => http.close(() => r()));
      const calls = [...inFlight];
      for (const c of calls) c.stop('closed');
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(calls.map((c) => c.settled)), new Promise<void>((r) => (waited = setTimeout(r, CLOSE_ANSWERS_MS)))]);
      clearTimeout(waited);
      // The answers are written on later turns (the SDK's transport), then the connections go.
      await new Promise<void>((r) => setImmediate(r));
      http.closeAllConnections();
      await stopped;
      await verifier.close();
      await upstream.close().catch(() => undefined);
    },
  };
}

/** `writ gate` until SIGINT/SIGTERM or the upstream goes away. */
export async function runGate(opts: GateOptions): Promise<number> {
  const gate = await startGate(opts);
  opts.log?.(`writ gate: serving MCP for "${opts.server}" at ${gate.url} (audience ${gate.audience}; metadata ${gate.metadataUrl})`);
  const why = await new Promise<'signal' | 'upstream'>((resolve) => {
    process.once('SIGINT', () => resolve('signal'));
    process.once('SIGTERM', () => resolve('signal'));
    void gate.upstreamClosed.then(() => resolve('upstream'));
  });
  if (why === 'upstream') opts.log?.('writ gate: the upstream MCP server went away; stopping');
  await gate.close();
  return why === 'upstream' ? 1 : 0;
}
