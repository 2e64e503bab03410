// The credential-injecting proxy on the broker's loopback listener:
//   <method> http://127.0.0.1:PORT/proxy/NAME/<path>?<query>   with   Authorization: Bearer <Writ token>
// is forwarded to <upstream of NAME>/<path>?<query> with the real credential from the keychain, if the token
// verifies (signature, expiry, revocation, audience = the upstream base URL) and its scopes cover
// `http:<METHOD>:<upstream>/<path>` (the query is not part of the scope target). Bodies stream both ways with
// backpressure; a form or JSON body is read whole first (at most MAX_FORM_BODY), to refuse a `_method` field in it,
// and a multipart body is scanned for a part of that name as it goes (body-check.ts).
// Every call is audited as `proxy.call` (method, URL without the query, jti): a refusal before it is answered, an
// allowed call before anything goes upstream (no record, no forward); an allowed call's end, once the response
// and the upload have both ended, as `proxy.ended` (status, bytes each way, why it ended). Never a header value,
// the token or the secret.
//
// The secret is read from the keychain (a bounded child process, one at a time per secret) on first use and kept
// in memory for the broker's life, keyed by the config's `rev` (secrets.ts, SecretCache).
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage, ServerResponse, OutgoingHttpHeaders, ClientRequest } from 'node:http';
import { WritError, isWritError } from '../errors';
import type { WritErrorCode } from '../errors';
import type { AuditEntry, PeerProcess, ProxyCallDetail, ProxyEndedDetail } from '../protocol';
import type { Socket } from 'node:net';
import type { Authority } from '../core/authority';
import { systemClock } from '../core/clock';
import type { Clock } from '../core/clock';
import type { RevocableClaims } from '../core/revocation';
import { keychainGet } from '../core/keychain';
import { allowsCall, parseScope, parseScopes } from '../core/scopes';
import type { Scope } from '../core/scopes';
import { SecretCache, keychainRefFor, normalizeUpstream, readSecrets, sharedUpstream } from './secrets';
import { MAX_BOUNDARIES, MAX_PART_HEADERS, MultipartScanner, OVERRIDE_KEYS_TEXT, jsonBytesNotUtf8, jsonCharsetIsUtf8, jsonNamesOverride, multipartDelimiters, namesOverride, rackReadsBoundary } from './body-check';
import type { PartVerdict } from './body-check';
import type { SecretConfig } from './secrets';

export const PROXY_PREFIX = '/proxy/';
export const DEFAULT_PROXY_TIMEOUT_MS = 30_000;

export const DEFAULT_PROXY_MAX_CALLS = 32;

/** WRIT_PROXY_MAX_CALLS (1 to 1024): calls in flight per agent (with its sub-agents), else 32. */
export function proxyMaxCalls(env: NodeJS.ProcessEnv): number {
  const n = Number(env.WRIT_PROXY_MAX_CALLS);
  return Number.isInteger(n) && n >= 1 && n <= 1024 ? n : DEFAULT_PROXY_MAX_CALLS;
}

/**
 * Refusals of requests with no live token (none, a forged, expired or revoked one, one for another audience or
 * agent, an unknown secret, a bad path) are recorded
 * one by one up to this many a second. Past it they are answered 429 WRIT_RATE_LIMITED without a record of their
 * own, and counted in one summary `proxy.call` record a second (`unrecorded`): any local process can send them,
 * and must not make the broker write without bound.
 */
export const UNVERIFIED_RECORDS_PER_SECOND = 20;

/** WRIT_PROXY_TIMEOUT_MS (100 ms to 10 min), else 30 s. */
export function proxyTimeoutMs(env: NodeJS.ProcessEnv): number {
  const n = Number(env.WRIT_PROXY_TIMEOUT_MS);
  return Number.isInteger(n) && n >= 100 && n <= 600_000 ? n : DEFAULT_PROXY_TIMEOUT_MS;
}

type ProxyEndReason = ProxyEndedDetail['reason'];

/** RFC 7230 §6.1 hop-by-hop headers, plus what the proxy sets itself or must never pass on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection', 'expect']);

export interface ProxyDeps {
  authority: Pick<Authority, 'check' | 'recordFor' | 'listGrants' | 'onRevocation' | 'isRevoked' | 'onBlockChange' | 'namesBlocked'>;
  /** When a call's token expires (its `exp`): the call is ended then. */
  clock?: Clock;
  stateDir: string;
  env: NodeJS.ProcessEnv;
  /** No response headers (or no body bytes for this long) from the upstream → 504. */
  timeoutMs: number;
  /** Calls in flight per agent (with its sub-agents); one more is refused 429 WRIT_RATE_LIMITED. Default 32. */
  maxCallsPerAgent?: number;
  log?: (line: string) => void;
  /** The agent's process (kernel-derived, on first use): a token used from a process it was not minted for is a finding. */
  peer?: (socket: Socket) => () => Promise<PeerProcess | undefined>;
}

interface CallFacts {
  secret: string;
  method: string;
  /** The token verified and is live (its refusals, e.g. of scope, are always recorded). */
  live?: boolean;
  url?: string;
  hasQuery?: boolean;
  /** The status a refusal was answered with. */
  status?: number;
  jti?: string;
  agentId?: string;
  grantId?: string;
  /** The grant's task, looked up once: a revoked grant is no longer listed when the call's end is recorded. */
  task?: { id: string; description: string };
  audience?: string;
  code?: WritErrorCode;
}

/** A call in flight: ended when its token is revoked or expires. */
interface LiveCall {
  claims: RevocableClaims & { agent_identity?: string; parent_identities?: string[] };
  /** The agent whose count of calls in flight it holds. */
  owner: string;
  /** Set once its token is revoked or expired, even before the call is forwarded (checked then). */
  stopped?: 'revoked' | 'expired';
  /** Cuts the call off: set once it is forwarded. */
  onStop?: (reason: 'revoked' | 'expired') => void;
}

/** A multipart body past MAX_FORM_BODY: what was read of it (scanned, not yet sent), and its scanner, to go on with. */
interface Streamed {
  head: Buffer[];
  scanner: MultipartScanner;
}

/** How an allowed call went, for its `proxy.ended` record. */
interface CallEnd {
  status?: number;
  bytesUp: number;
  bytesDown: number;
  code?: WritErrorCode;
}

function stoppedError(reason: 'revoked' | 'expired'): WritError {
  return reason === 'revoked' ? new WritError('WRIT_TOKEN_REVOKED', 'the token was revoked during the call') : new WritError('WRIT_TOKEN_EXPIRED', 'the token expired during the call');
}

function sendJson(res: ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function auditFailed(res: ServerResponse, headers: Record<string, string> = {}): void {
  sendJson(res, 500, { error: 'server_error', error_description: 'the audit log could not be written', writ_code: 'WRIT_AUDIT_WRITE_FAILED' }, headers);
}

/** Names a forwarded call in its `proxy.call` and `proxy.ended` records. */
function newCallId(): string {
  return `pxc_${randomBytes(12).toString('base64url')}`;
}

/** RFC 6750 §3 errors for the agent, with Writ's stable code beside them (and the part of the request at fault). */
function refuse(res: ServerResponse, status: number, e: WritError, scope?: string, headers: Record<string, string> = {}): void {
  const at = e.path === undefined ? {} : { writ_path: e.path };
  if (status === 401 || status === 403) {
    const error = status === 401 ? 'invalid_token' : 'insufficient_scope';
    const challenge = `Bearer realm="writ-proxy", error="${error}"${scope ? `, scope="${scope.replace(/["\\]/g, '')}"` : ''}`;
    sendJson(res, status, { error, error_description: e.message, writ_code: e.code, ...at }, { 'www-authenticate': challenge, ...headers });
    return;
  }
  const error = status === 404 ? 'not_found' : status === 400 || status === 408 || status === 413 || status === 415 ? 'invalid_request' : status === 429 ? 'rate_limited' : status === 504 ? 'upstream_timeout' : status === 502 ? 'bad_gateway' : 'server_error';
  sendJson(res, status, { error, error_description: e.message, writ_code: e.code, ...at }, headers);
}

/**
 * Whether a path ending in `/` may be forwarded: many upstreams read `/items/` as `/items` (Express by default,
 * Spring 5), so only where the scopes cover the path without its `/` as well, either as they are or with a
 * scope's trailing `/` dropped (a grant for `/items/42/` covers `/items/42`): `items/**` does not reach `/items`
 * by way of `/items/`.
 */
function trailingSlashAllowed(scopes: readonly Scope[], method: string, target: string): boolean {
  const bare = scopes.map((s) => (s.target !== null && s.target.length > 1 && s.target.endsWith('/') ? parseScope(`${s.resource}:${s.action}:${s.target.slice(0, -1)}`) : s));
  return allowsCall(bare, 'http', method, target.slice(0, -1));
}

/** RFC 3986 §3.3 path characters: unreserved, pct-encoded, sub-delims, ':', '@', and '/'. */
const PATH_CHARS = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;

/**
 * A form or JSON body is read whole, to see a `_method` field, up to this many bytes; a larger one is refused (413
 * WRIT_FRAME_TOO_LARGE). A multipart body is read this far before anything goes upstream, and scanned as it
 * streams past it. Every other body streams unread.
 */
export const MAX_FORM_BODY = 1024 * 1024;
const FORM = 'application/x-www-form-urlencoded';

/** How a request's body is read before it goes upstream, to see a method named in it. */
interface BodyChecks {
  /** Read whole (at most MAX_FORM_BODY) and checked as a form, as JSON, or (the types can overlap) as both. */
  form: boolean;
  json: boolean;
  /** Scanned for parts named for another method, with these delimiters (from the Content-Type). */
  multipart?: Buffer[];
}

/**
 * What a framework would parse this request's body as, its Content-Type read as loosely as any reads it. A form:
 * the urlencoded media type (cut at ';', ',' or white space, as Rack and PHP cut it), a POST without a
 * Content-Type, which Rack parses as one, and a `multipart/` type without a boundary Rack can read, which Rack
 * parses as one too. JSON: `/json` or `+json` anywhere in the Content-Type (Laravel's isJson(), which takes
 * `application/json` and every `+json` type, and more). Multipart: any `multipart/` type (Rack parses mixed and
 * related as well as form-data) with a boundary some parser takes. Only a request that has a body.
 */
function bodyChecks(req: IncomingMessage, method: string): BodyChecks | undefined {
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) return undefined;
  if (req.headers['content-length'] === '0') return undefined;
  const header = (req.headers['content-type'] ?? '').trim();
  const lower = header.toLowerCase();
  const type = lower.split(/[;,\s]/, 1)[0]!;
  const multipart = type.startsWith('multipart/');
  const form = type === FORM || (type === '' && method === 'POST') || (multipart && !rackReadsBoundary(header));
  const json = lower.includes('/json') || lower.includes('+json');
  const delimiters = multipart ? multipartDelimiters(header) : [];
  if (!form && !json && delimiters.length === 0) return undefined;
  return { form, json, ...(delimiters.length > 0 ? { multipart: delimiters } : {}) };
}

/** Why a multipart body is refused, for the agent and the record. */
function partRefusal(verdict: PartVerdict): WritError {
  return verdict === 'override'
    ? new WritError('WRIT_BAD_REQUEST', `the multipart body must not hold a part named for another method (${OVERRIDE_KEYS_TEXT})`, { path: 'body' })
    : new WritError('WRIT_BAD_REQUEST', `the multipart body's part headers must end within ${MAX_PART_HEADERS} bytes (they are read to check the method a part names)`, { path: 'body' });
}

type BodyKind = 'form' | 'JSON' | 'multipart';

const JSON_NOT_UTF8 = 'a JSON body must be UTF-8 (charset utf-8 or us-ascii, or none; no UTF-16 or UTF-32 byte order mark): it is read to check the method it names';

/** The body read whole; or, for a multipart body past MAX_FORM_BODY, what was read of it (the request then paused). */
type BodyRead = { body: Buffer } | { head: Buffer[] } | { status: number; error: WritError };

/**
 * The body, read whole: over MAX_FORM_BODY (declared or as it arrives), a content coding the check cannot read,
 * or no byte for `idleMs`, and it is a refusal instead. `onStop` ends the read early (the token was revoked). A
 * multipart body (`scanner`) is scanned as it arrives, refused at the first part named for another method, and
 * past MAX_FORM_BODY handed back as read so far, to stream on.
 */
function readBody(req: IncomingMessage, idleMs: number, kind: BodyKind, onStop: (cancel: (e: BodyRead) => void) => void, scanner?: MultipartScanner): Promise<BodyRead> {
  const streams = kind === 'multipart';
  const tooLarge: BodyRead = {
    status: 413,
    error: new WritError(
      'WRIT_FRAME_TOO_LARGE',
      kind === 'form'
        ? `a form body (${FORM}, a POST without a Content-Type, or a multipart/ type without a boundary Rack reads) is read whole to check the method it names: at most ${MAX_FORM_BODY} bytes`
        : `a JSON body (a Content-Type with /json or +json) is read whole to check the method it names: at most ${MAX_FORM_BODY} bytes`,
    ),
  };
  const coding = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (coding !== '' && coding !== 'identity') {
    return Promise.resolve({ status: 415, error: new WritError('WRIT_BAD_REQUEST', `a ${kind} body must not be content-encoded (it is read to check the method it names)`, { path: 'content-encoding' }) });
  }
  const declared = Number(req.headers['content-length']);
  if (!streams && Number.isFinite(declared) && declared > MAX_FORM_BODY) return Promise.resolve(tooLarge);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let timer: NodeJS.Timeout | undefined;
    const settle = (r: BodyRead) => {
      if (timer === undefined) return;
      clearTimeout(timer);
      timer = undefined;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      resolve(r);
    };
    const idle = () => settle({ status: 408, error: new WritError('WRIT_BAD_REQUEST', `no byte of the ${kind} body arrived for ${idleMs} ms`) });
    const onData = (c: Buffer) => {
      size += c.length;
      const verdict = scanner?.write(c);
      if (verdict !== undefined) return settle({ status: 400, error: partRefusal(verdict) });
      if (size > MAX_FORM_BODY && !streams) return settle(tooLarge);
      chunks.push(c);
      if (size > MAX_FORM_BODY) {
        // Paused before its listener goes, so no byte is lost until the call is forwarded and reads on.
        req.pause();
        return settle({ head: chunks });
      }
      timer?.refresh();
    };
    const onEnd = () => settle({ body: Buffer.concat(chunks) });
    const onClose = () => settle({ status: 400, error: new WritError('WRIT_BAD_REQUEST', 'the request ended before its body') });
    timer = setTimeout(idle, idleMs);
    timer.unref();
    onStop(settle);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
  });
}

/** The path after /proxy/NAME, refused if it could be read two ways (dot segments, empty segments, encoded separators). */
function splitTarget(rawUrl: string): { name: string; path: string; query: string } {
  const q = rawUrl.indexOf('?');
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = q < 0 ? '' : rawUrl.slice(q);
  const rest = rawPath.slice(PROXY_PREFIX.length);
  const slash = rest.indexOf('/');
  const name = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  // A segment's parameters (`..;x`) are cut off by Tomcat, Jetty and Spring before they resolve dot segments.
  if (/%2e|%2f|%5c|\\/i.test(path) || path.split('/').some((s) => /^\.\.?(?:;|$)/.test(s))) {
    throw new WritError('WRIT_BAD_REQUEST', 'the path must not hold dot segments or encoded separators', { path: 'path' });
  }
  // Encoded twice (`%252e%252e`): an upstream that decodes twice (nginx before Tomcat, some routers) reads `..`.
  if (/%25(?:2e|2f|5c|3b|25)/i.test(path)) throw new WritError('WRIT_BAD_REQUEST', 'the path must not hold a dot, separator or percent encoded twice', { path: 'path' });
  // An empty segment is another resource to many upstreams (nginx merges `//`, and Tomcat and Jetty cut `/;x` to
  // `/`), while a one-segment glob never matches it. A trailing `/` is checked against the scopes (trailingSlash).
  const segments = path.split('/');
  if (segments.some((s, i) => i > 0 && (s.startsWith(';') || (s === '' && i < segments.length - 1)))) {
    throw new WritError('WRIT_BAD_REQUEST', 'the path must not hold an empty segment (`//`, or `/;` before parameters)', { path: 'path' });
  }
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) throw new WritError('WRIT_BAD_REQUEST', 'the path must be printable ASCII', { path: 'path' });
  }
  // Only what RFC 3986 allows in a path: a '#' (or '[', '"', '{', ...) would be read one way by the scope check
  // and another by the URL sent upstream ('#' starts a fragment, which is never sent).
  if (!PATH_CHARS.test(path)) throw new WritError('WRIT_BAD_REQUEST', 'the path may hold only the characters RFC 3986 allows in a path', { path: 'path' });
  if (query.includes('#')) throw new WritError('WRIT_BAD_REQUEST', 'the query must not hold a fragment', { path: 'query' });
  // The method the scope allows is the method sent: a query key frameworks read as the real one (Rails, Laravel,
  // Express method-override) would make a POST a DELETE upstream, as the override headers would.
  if (namesOverride(query.slice(1))) throw new WritError('WRIT_BAD_REQUEST', `the query must not name another method (${OVERRIDE_KEYS_TEXT})`, { path: 'query' });
  return { name, path, query };
}

/** The `jti` of a token whose signature the authority has already verified (never of an unverified one). */
function signedJti(token: string): string | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { jti?: unknown };
    return typeof payload.jti === 'string' && payload.jti.length <= 200 && !payload.jti.includes('.') ? payload.jti : undefined;
  } catch {
    return undefined;
  }
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(h.trim());
  return m?.[1];
}

/**
 * Request headers a framework or a proxy in front of the upstream may read as another method, path, host or client
 * than the one the scope check saw (`X-HTTP-Method-Override: DELETE` on an allowed GET). Never forwarded. A deny list,
 * not an allow list: APIs take headers of their own (`X-GitHub-Api-Version`, `If-None-Match`, `Idempotency-Key`) that
 * an allow list would break; what is dropped is what rewrites the request.
 */
const OVERRIDE_HEADERS = new Set([
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
  'x-override-url',
  'forwarded',
  'x-host',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'client-ip',
  'x-cluster-client-ip',
  'front-end-https',
]);
const OVERRIDE_PREFIXES = ['x-forwarded-', 'x-original-'];

function isOverrideHeader(key: string): boolean {
  return OVERRIDE_HEADERS.has(key) || OVERRIDE_PREFIXES.some((p) => key.startsWith(p));
}

/**
 * Credentials the agent sends of its own, dropped as silently as hop-by-hop headers: the only credential the
 * upstream sees is the one Writ injects. The agent's `Authorization` is its Writ token; a `Cookie` would be a
 * session got anywhere, used upstream under the secret's name and this task's record. Dropped rather than refused,
 * as the agent's Authorization and Proxy-Authorization always were: HTTP clients send a cookie jar unasked.
 */
const AGENT_CREDENTIALS = new Set(['authorization', 'proxy-authorization', 'cookie', 'cookie2']);

function forwardHeaders(req: IncomingMessage, config: SecretConfig, secret: string, host: string): OutgoingHttpHeaders {
  const named = new Set<string>();
  const conn = req.headers.connection;
  if (typeof conn === 'string') for (const n of conn.split(',')) named.add(n.trim().toLowerCase());
  const out: OutgoingHttpHeaders = {};
  const injected = config.header.toLowerCase();
  for (const [k, v] of Object.entries(req.headers)) {
    const key = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(key) || named.has(key) || isOverrideHeader(key) || AGENT_CREDENTIALS.has(key) || key === 'host' || key === injected) continue;
    out[key] = v;
  }
  out.host = host;
  out[injected] = config.scheme ? `${config.scheme} ${secret}` : secret;
  return out;
}

/**
 * Response headers for the agent: hop-by-hop ones dropped, and `Set-Cookie`, since a session the upstream mints
 * from the injected secret would be a credential usable without the proxy (no scope check, no revocation, no record).
 */
function responseHeaders(up: IncomingMessage): OutgoingHttpHeaders {
  const named = new Set<string>();
  const conn = up.headers.connection;
  if (typeof conn === 'string') for (const n of conn.split(',')) named.add(n.trim().toLowerCase());
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(up.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k) || k === 'set-cookie' || k === 'set-cookie2') continue;
    out[k] = v;
  }
  return out;
}

export function createProxy(deps: ProxyDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const log = deps.log ?? (() => undefined);
  const clock = deps.clock ?? systemClock;
  const secretValues = new SecretCache((name) => keychainGet(keychainRefFor(name, deps.env)), clock);
  const maxCalls = deps.maxCallsPerAgent ?? DEFAULT_PROXY_MAX_CALLS;
  /** Calls in flight per agent tree (the root of the token's `act` chain): a sub-agent's count against it. */
  const perAgent = new Map<string, number>();

  // Calls in flight, ended on the revocation of their token (by jti, grant, task, agent or all): the authority
  // says after each revocation is durable, and decides for each call's claims whether it now covers them.
  const live = new Set<LiveCall>();
  const stop = (c: LiveCall, reason: 'revoked' | 'expired') => {
    if (c.stopped !== undefined) return;
    c.stopped = reason;
    c.onStop?.(reason);
  };
  deps.authority.onRevocation(() => {
    for (const c of [...live]) if (deps.authority.isRevoked(c.claims)) stop(c, 'revoked');
  });
  // A block ends them as a revocation does (told as revoked): also a token of an earlier run, which no revocation
  // of this run names.
  deps.authority.onBlockChange((_, blocked) => {
    if (blocked) for (const c of [...live]) if (deps.authority.namesBlocked(c.claims)) stop(c, 'revoked');
  });

  const unverified = { second: -1, recorded: 0, unrecorded: 0, summary: undefined as NodeJS.Timeout | undefined };
  const summarize = () => {
    unverified.summary = undefined;
    const n = unverified.unrecorded;
    unverified.unrecorded = 0;
    const detail: ProxyCallDetail = { allowed: false, unrecorded: n };
    void record(undefined, { event: 'proxy.call', outcome: 'failure', code: 'WRIT_RATE_LIMITED', detail }).catch(() => undefined);
  };
  /** Whether a refusal with no verified token may have its own record (else it is counted for the summary). */
  const mayRecordUnverified = (): boolean => {
    const second = Math.floor(clock.now() / 1000);
    if (second !== unverified.second) {
      unverified.second = second;
      unverified.recorded = 0;
    }
    if (unverified.recorded < UNVERIFIED_RECORDS_PER_SECOND) {
      unverified.recorded++;
      return true;
    }
    unverified.unrecorded++;
    if (unverified.summary === undefined) {
      unverified.summary = setTimeout(summarize, 1000);
      unverified.summary.unref();
    }
    return false;
  };

  const release = (c: LiveCall) => {
    if (!live.delete(c)) return;
    const n = (perAgent.get(c.owner) ?? 1) - 1;
    if (n > 0) perAgent.set(c.owner, n);
    else perAgent.delete(c.owner);
  };

  const record = async (agentId: string | undefined, entry: AuditEntry): Promise<void> => {
    try {
      await deps.authority.recordFor(agentId, entry);
    } catch (e) {
      log(`writ: proxy: could not write the audit record (${isWritError(e) ? e.code : 'WRIT_INTERNAL'})`);
      throw e;
    }
  };

  /** The token's facts every record of a call carries. */
  const about = (f: CallFacts): Partial<AuditEntry> => {
    return {
      ...(f.jti === undefined ? {} : { jti: f.jti }),
      ...(f.grantId === undefined ? {} : { grantId: f.grantId }),
      ...(f.task === undefined ? {} : { task: f.task }),
      ...(f.audience === undefined ? {} : { audience: f.audience }),
    };
  };

  /** `proxy.call`: a refusal (with the status it is answered with), or an allowed call about to be forwarded. */
  const callEntry = (f: CallFacts, call?: string): AuditEntry => {
    const detail: ProxyCallDetail = {
      allowed: call !== undefined,
      ...(call === undefined ? {} : { call }),
      secret: f.secret,
      method: f.method,
      ...(f.url === undefined ? {} : { url: f.url }),
      ...(f.hasQuery ? { query: true as const } : {}),
      ...(call === undefined && f.status !== undefined ? { status: f.status } : {}),
    };
    return { event: 'proxy.call', outcome: call === undefined ? 'failure' : 'success', ...(f.code === undefined || call !== undefined ? {} : { code: f.code }), ...about(f), detail };
  };

  const endedEntry = (f: CallFacts & { url: string }, call: string, end: CallEnd, reason: ProxyEndReason, incomplete: boolean): AuditEntry => {
    const detail: ProxyEndedDetail = {
      call,
      secret: f.secret,
      method: f.method,
      url: f.url,
      ...(end.status === undefined ? {} : { status: end.status }),
      bytesUp: end.bytesUp,
      bytesDown: end.bytesDown,
      reason,
      ...(incomplete ? { incomplete: true as const } : {}),
    };
    const ok = reason === 'complete' && end.status !== undefined && end.status < 500;
    return { event: 'proxy.ended', outcome: ok ? 'success' : 'failure', ...(end.code === undefined ? {} : { code: end.code }), ...about(f), detail };
  };

  return (req, res) => {
    const method = (req.method ?? 'GET').toUpperCase();
    const facts: CallFacts = { secret: '', method };

    const fail = async (status: number, e: WritError, scope?: string, headers?: Record<string, string>) => {
      facts.code = e.code;
      facts.status = status;
      // A token that is not live (none, forged, expired, revoked, for another audience or agent) counts as none:
      // one old token must not let any local process make the broker write without bound.
      if (!facts.live && !mayRecordUnverified()) {
        return refuse(res, 429, new WritError('WRIT_RATE_LIMITED', 'too many refused requests without a valid token: try again in a second'), undefined, { 'retry-after': '1' });
      }
      // Fail closed: a refusal is only answered once it is on record (or, past the budget above, counted for one).
      try {
        await record(facts.agentId, callEntry(facts));
      } catch {
        return auditFailed(res);
      }
      refuse(res, status, e, scope, headers);
    };

    const run = async () => {
      const { name, path, query } = splitTarget(req.url ?? '/');
      facts.secret = name.slice(0, 64);
      const token = bearer(req);
      const secrets = readSecrets(deps.stateDir).secrets;
      const config = Object.hasOwn(secrets, name) ? secrets[name] : undefined;
      if (config === undefined) {
        return fail(404, new WritError('WRIT_SECRET_NOT_FOUND', `no secret named ${JSON.stringify(name.slice(0, 64))} is configured (writ secret list)`));
      }
      // Re-checked here as well as at `secret set`: a hand-edited secrets.json must not turn the proxy into plain http.
      const upstream = normalizeUpstream(config.upstream);
      const other = sharedUpstream({ v: 1, secrets }, name, upstream);
      if (other !== undefined) {
        return fail(500, new WritError('WRIT_SECRET_AMBIGUOUS', `secrets ${JSON.stringify(name.slice(0, 64))} and ${JSON.stringify(other.slice(0, 64))} serve the same upstream: a token cannot say which; remove one (writ secret rm)`));
      }
      const target = `${upstream}${path}`;
      facts.url = target;
      facts.hasQuery = query.length > 1;
      facts.audience = upstream;
      if (token === undefined) return fail(401, new WritError('WRIT_TOKEN_INVALID', 'send a Writ token: Authorization: Bearer <token>'));
      let claims: Awaited<ReturnType<Authority['check']>>;
      try {
        claims = await deps.authority.check(token, upstream, deps.peer ? { via: 'proxy', process: deps.peer(req.socket) } : undefined);
      } catch (e) {
        if (!isWritError(e) || e.code === 'WRIT_INTERNAL' || e.code === 'WRIT_AUDIT_WRITE_FAILED') throw e;
        // These are decided after the signature verified, so the token's own jti may go on record.
        if (e.code === 'WRIT_TOKEN_REVOKED' || e.code === 'WRIT_TOKEN_EXPIRED' || e.code === 'WRIT_AUDIENCE_MISMATCH' || e.code === 'WRIT_TOKEN_NOT_YOURS' || e.code === 'WRIT_AGENT_BLOCKED') {
          const jtiOf = signedJti(token);
          if (jtiOf !== undefined) facts.jti = jtiOf;
        }
        return fail(401, e);
      }
      facts.jti = claims.jti;
      facts.live = true;
      facts.agentId = claims.client_id;
      facts.grantId = claims.grant_id;
      const grant = deps.authority.listGrants().find((g) => g.id === claims.grant_id);
      if (grant) facts.task = { id: grant.taskId, description: grant.task };
      const asked = `http:${method}:${target}`;
      let scopes: ReturnType<typeof parseScopes>;
      try {
        scopes = parseScopes(claims.scope.split(' ').filter(Boolean));
      } catch {
        scopes = [];
      }
      if (!/^[A-Z]{1,20}$/.test(method) || !allowsCall(scopes, 'http', method, target)) {
        return fail(403, new WritError('WRIT_SCOPE_NOT_COVERED', `the token's scopes do not cover ${method} ${target}`), asked);
      }
      const url = new URL(`${target}${query}`);
      // What is sent is what was checked: the URL parser must not have read the path any other way.
      const sent = `${url.origin}${url.pathname}`;
      if (sent !== target && !(path === '' && sent === `${target}/`)) {
        return fail(400, new WritError('WRIT_BAD_REQUEST', 'the path reads differently as a URL than as checked', { path: 'path' }));
      }
      if (url.pathname !== '/' && url.pathname.endsWith('/') && !trailingSlashAllowed(scopes, method, target)) {
        return fail(400, new WritError('WRIT_BAD_REQUEST', 'a path ending in `/` is forwarded only where the scopes cover it without the `/` too (many servers read `/items/` as `/items`)', { path: 'path' }));
      }
      let secret: string;
      try {
        secret = await secretValues.get(name, config.rev);
      } catch (e) {
        const w = isWritError(e) ? e : new WritError('WRIT_INTERNAL', 'internal error', { cause: e });
        return fail(w.code === 'WRIT_SECRET_NOT_FOUND' ? 404 : 502, w.code === 'WRIT_INTERNAL' ? w : new WritError(w.code, w.message));
      }

      // The check allows a few seconds of clock skew; a call that would end at `exp` does not start after it.
      if (claims.exp * 1000 <= clock.now()) return fail(401, new WritError('WRIT_TOKEN_EXPIRED', 'token has expired'));
      const owner = claims.chain.at(-1) ?? claims.client_id;
      if ((perAgent.get(owner) ?? 0) >= maxCalls) {
        return fail(429, new WritError('WRIT_RATE_LIMITED', `at most ${maxCalls} proxied calls at a time per agent (with its sub-agents): wait for one to end`), undefined, { 'retry-after': '1' });
      }
      const checks = bodyChecks(req, method);
      if (checks?.multipart && checks.multipart.length > MAX_BOUNDARIES) {
        return fail(400, new WritError('WRIT_BAD_REQUEST', `the Content-Type must not name more than ${MAX_BOUNDARIES} boundaries`, { path: 'content-type' }), undefined, { connection: 'close' });
      }
      // A JSON body is scanned as UTF-8: one a parser decodes from another charset is refused as unreadable, as a
      // content-encoded one is.
      if (checks?.json && !jsonCharsetIsUtf8(req.headers['content-type'] ?? '')) {
        return fail(415, new WritError('WRIT_BAD_REQUEST', JSON_NOT_UTF8, { path: 'content-type' }), undefined, { connection: 'close' });
      }
      const call = newCallId();
      // In flight from here: a revocation while the record is written stops it before it is forwarded.
      const held: LiveCall = {
        claims: {
          jti: claims.jti,
          grant_id: claims.grant_id,
          task_id: claims.task_id,
          parent_grant_ids: claims.parent_grant_ids,
          iat: claims.iat,
          chain: claims.chain,
          agent_identity: claims.agent_identity,
          parent_identities: claims.parent_identities,
        },
        owner,
      };
      live.add(held);
      perAgent.set(owner, (perAgent.get(owner) ?? 0) + 1);
      // A form, JSON or multipart body is read before the call is recorded as allowed: a `_method` field in it
      // (Rails, Laravel) would turn the allowed method into another upstream, so it is refused like the query form,
      // and nothing goes up. A multipart body past MAX_FORM_BODY is the exception: it is forwarded as it goes on
      // being scanned (forward()).
      let body: Buffer | undefined;
      let streamed: Streamed | undefined;
      if (checks !== undefined) {
        const scanner = checks.multipart && new MultipartScanner(checks.multipart);
        const kind: BodyKind = checks.form ? 'form' : checks.json ? 'JSON' : 'multipart';
        const read = await readBody(
          req,
          deps.timeoutMs,
          kind,
          (cancel) => {
            held.onStop = (reason) => cancel({ status: 401, error: stoppedError(reason) });
          },
          scanner,
        );
        held.onStop = undefined;
        let refusal = 'status' in read ? read : undefined;
        if (refusal === undefined && held.stopped !== undefined) refusal = { status: 401, error: stoppedError(held.stopped) };
        if (refusal === undefined && 'body' in read) {
          const text = read.body.toString('utf8');
          const verdict = scanner?.end();
          if (checks.json && jsonBytesNotUtf8(read.body)) {
            refusal = { status: 415, error: new WritError('WRIT_BAD_REQUEST', JSON_NOT_UTF8, { path: 'body' }) };
          } else if (checks.form && namesOverride(text)) {
            refusal = { status: 400, error: new WritError('WRIT_BAD_REQUEST', `the form body must not name another method (${OVERRIDE_KEYS_TEXT})`, { path: 'body' }) };
          } else if (checks.json && jsonNamesOverride(text)) {
            refusal = { status: 400, error: new WritError('WRIT_BAD_REQUEST', `the JSON body must not name another method at its top level (${OVERRIDE_KEYS_TEXT})`, { path: 'body' }) };
          } else if (verdict !== undefined) {
            refusal = { status: 400, error: partRefusal(verdict) };
          } else body = read.body;
        }
        if (refusal === undefined && 'head' in read && scanner) streamed = { head: read.head, scanner };
        if (refusal !== undefined) {
          release(held);
          // A body not read to its end would be read as the next request on this connection: close it.
          return fail(refusal.status, refusal.error, undefined, 'body' in read ? {} : { connection: 'close' });
        }
      }
      // No record, no forward: the allowed call is on disk before a byte goes upstream, so a broker killed
      // mid-call (or a POST whose answer never comes) still leaves it on record.
      try {
        await record(facts.agentId, callEntry(facts, call));
      } catch {
        release(held);
        return auditFailed(res, streamed ? { connection: 'close' } : {});
      }
      forward(call, held, claims.exp, url, config, secret, { ...facts, url: target }, body, streamed);
    };

    /**
     * Streams the allowed call both ways (a body read whole is sent as read; a multipart body past MAX_FORM_BODY
     * as read so far, then as it goes on being scanned) and records how it ended
     * (`proxy.ended`) once both ways have: the response reached the agent and the agent's body the upstream. Until
     * then the call is in flight, so a revocation also cuts an upload the upstream goes on reading after it answered.
     */
    const forward = (call: string, held: LiveCall, exp: number, url: URL, config: SecretConfig, secret: string, f: CallFacts & { url: string }, body?: Buffer, streamed?: Streamed) => {
      const end: CallEnd = { bytesUp: 0, bytesDown: 0 };
      const requestFn = url.protocol === 'https:' ? httpsRequest : httpRequest;
      let upstreamReq: ClientRequest | undefined;
      let settled = false;
      /** The response has reached the agent whole. */
      let answered = false;
      /** The agent's body has gone upstream whole. */
      let uploaded = false;
      let timer: NodeJS.Timeout | undefined;
      let expiry: NodeJS.Timeout | undefined;
      const finish = (reason: ProxyEndReason, incomplete: boolean, code?: WritErrorCode) => {
        if (settled) return;
        settled = true;
        release(held);
        if (timer) clearTimeout(timer);
        if (expiry) clearTimeout(expiry);
        if (code !== undefined) end.code = code;
        // The answer has streamed: a failed write here is logged by `record` and cannot be taken back.
        void record(f.agentId, endedEntry(f, call, end, reason, incomplete)).catch(() => undefined);
      };
      /**
       * The idle timeout: runs until the call has ended both ways, restarted by every byte that moves either way (the
       * response, the agent's body, a drained socket). It ends a call whose upload stalls after the answer as well
       * (the agent went quiet with its connection open, or the upstream stopped reading): held, it would keep one of
       * the agent's WRIT_PROXY_MAX_CALLS until the token's exp, with no `proxy.ended` on record.
       */
      const arm = () => {
        if (settled) return;
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          const e = new WritError('WRIT_UPSTREAM_TIMEOUT', res.headersSent ? `no bytes moved either way within ${deps.timeoutMs} ms` : `the upstream sent no response within ${deps.timeoutMs} ms`);
          upstreamReq?.destroy(e);
          if (!res.headersSent) {
            end.status = 504;
            refuse(res, 504, e);
            finish('upstream-timeout', false, e.code);
          } else {
            res.destroy();
            req.socket.destroy();
            finish('upstream-timeout', !answered, e.code);
          }
        }, deps.timeoutMs);
        timer.unref();
      };

      // A revoked or expired token ends the call however busy it is (the idle timeout restarts on every byte):
      // before the upstream answered, the agent gets 401 and the connection closes; after that, the upstream
      // request and the agent's connection are destroyed, mid-response or mid-upload alike.
      const cut = (reason: 'revoked' | 'expired') => {
        if (settled) return;
        const e = stoppedError(reason);
        upstreamReq?.destroy(e);
        if (!res.headersSent) {
          end.status = 401;
          refuse(res, 401, e, undefined, { connection: 'close' });
          finish(reason, false, e.code);
        } else {
          res.destroy();
          req.socket.destroy();
          finish(reason, !answered, e.code);
        }
      };
      held.onStop = cut;
      // A revocation after the token was checked but before the call was held (the secret lookup) was not heard.
      if (held.stopped === undefined && (deps.authority.isRevoked(held.claims) || deps.authority.namesBlocked(held.claims))) held.stopped = 'revoked';
      if (held.stopped === undefined && exp * 1000 <= clock.now()) held.stopped = 'expired';
      if (held.stopped !== undefined) return cut(held.stopped);
      if (res.destroyed || req.socket.destroyed) return finish('client-closed', false);
      expiry = setTimeout(() => stop(held, 'expired'), Math.min(Math.max(0, exp * 1000 - clock.now()), 2 ** 31 - 1));
      expiry.unref();
      try {
        upstreamReq = requestFn(url, { method: f.method, headers: forwardHeaders(req, config, secret, url.host) });
      } catch (e) {
        // Already recorded as allowed: it ends as unreachable, not as a refusal.
        const w = new WritError('WRIT_UPSTREAM_UNREACHABLE', 'the upstream could not be reached', { cause: e });
        end.status = 502;
        refuse(res, 502, w, undefined, streamed ? { connection: 'close' } : {});
        return finish('upstream-unreachable', false, w.code);
      }
      const sending = upstreamReq;
      arm();
      sending.on('response', (up) => {
        arm();
        end.status = up.statusCode ?? 502;
        res.writeHead(end.status, responseHeaders(up));
        up.on('data', (c: Buffer) => {
          end.bytesDown += c.length;
          arm();
        });
        up.on('end', arm);
        const broken = () => {
          if (up.complete) return;
          res.destroy();
          finish('upstream-failed', true);
        };
        up.on('error', broken);
        up.on('aborted', broken);
        up.pipe(res);
      });
      sending.on('error', (e) => {
        if (settled || answered) return;
        if (!res.headersSent) {
          const w = new WritError('WRIT_UPSTREAM_UNREACHABLE', 'the upstream could not be reached', { cause: e });
          end.status = 502;
          refuse(res, 502, w);
          finish('upstream-unreachable', false, w.code);
        } else {
          res.destroy();
          finish('upstream-failed', true);
        }
      });
      res.on('drain', arm);
      res.on('finish', () => {
        answered = true;
        if (uploaded) finish('complete', false);
      });
      res.on('close', () => {
        if (!res.writableFinished) {
          sending.destroy();
          finish('client-closed', true);
        }
      });
      sending.on('finish', () => {
        uploaded = true;
        if (answered) finish('complete', false);
      });
      // Not pipe(): once the upstream has answered, Node no longer relays its socket's 'drain' to the request, so a
      // piped upload that filled the socket would stall there, its end never sent. The socket's own 'drain' resumes
      // it as well. After the call has ended, what still comes is read and dropped.
      let waiting = false;
      const resume = () => {
        if (!waiting) return;
        waiting = false;
        sending.off('drain', resume);
        sending.socket?.off('drain', resume);
        arm();
        req.resume();
      };
      // Answered whole, then the upstream request closed before the agent's body was all sent: the upstream
      // stopped reading (an early 413, say), or the agent went. The rest of the body is read and dropped.
      sending.on('close', () => {
        if (settled || !answered || uploaded) return;
        const gone = !req.complete && req.destroyed;
        resume();
        finish(gone ? 'client-closed' : 'complete', false);
      });
      if (body !== undefined) {
        end.bytesUp = body.length;
        sending.end(body);
        return;
      }
      const send = (c: Buffer) => {
        end.bytesUp += c.length;
        // A large upload in progress is not a hung upstream: the clock runs from the last byte either way.
        arm();
        if (!sending.write(c) && !waiting) {
          waiting = true;
          req.pause();
          sending.once('drain', resume);
          sending.socket?.once('drain', resume);
        }
      };
      // A multipart body past MAX_FORM_BODY is scanned on as it streams: each chunk before it is sent, and the last
      // chunk scanned is held back until the next has been, or the body's end, so a part named for another method,
      // however late, stops the call while the upstream still lacks the body's end. Its request is then destroyed,
      // never ended: the upstream sees it cut short, never whole.
      const scanner = streamed?.scanner;
      let last: Buffer | undefined;
      const refused = (verdict: PartVerdict) => {
        if (settled) return;
        const e = partRefusal(verdict);
        sending.destroy(e);
        if (!res.headersSent) {
          end.status = 400;
          refuse(res, 400, e, undefined, { connection: 'close' });
          finish('body-refused', false, e.code);
        } else {
          // The upstream answered before the body's end: the agent's connection is cut instead.
          res.destroy();
          req.socket.destroy();
          finish('body-refused', !answered, e.code);
        }
      };
      const next = (c: Buffer) => {
        if (last !== undefined) send(last);
        last = c;
      };
      for (const c of streamed?.head ?? []) next(c);
      req.on('data', (c: Buffer) => {
        if (settled || sending.destroyed) return;
        if (scanner === undefined) return send(c);
        const verdict = scanner.write(c);
        if (verdict !== undefined) return refused(verdict);
        next(c);
      });
      req.on('end', () => {
        if (settled || sending.destroyed) return;
        const verdict = scanner?.end();
        if (verdict !== undefined) return refused(verdict);
        if (last !== undefined) send(last);
        sending.end();
      });
      req.on('aborted', () => sending.destroy());
      // The head was read with the request paused (readBody); it reads on unless the upstream is not keeping up.
      if (streamed !== undefined && !waiting) req.resume();
    };

    run().catch((e: unknown) => {
      const w = isWritError(e) ? e : new WritError('WRIT_INTERNAL', 'internal error', { cause: e });
      const status = w.code === 'WRIT_BAD_REQUEST' ? 400 : 500;
      void fail(status, w.code === 'WRIT_INTERNAL' ? new WritError('WRIT_INTERNAL', 'internal error') : w).catch(() => res.destroy());
    });
  };
}
