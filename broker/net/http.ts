// The loopback HTTP surface: RFC 8414 metadata, the JWKS, RFC 7662 introspection, RFC 7009 revocation and
// RFC 8693 token exchange. Requests from browsers (an Origin) or for a non-loopback Host never get this far.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { WritError, isWritError } from '../errors';
import type { PeerProcess } from '../protocol';
import type { Authority } from '../core/authority';
import type { Clock } from '../core/clock';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const MAX_BODY = 16 * 1024;

export interface HttpDeps {
  authority: Authority;
  clock: Clock;
  issuer: string;
  /** The base URL of the loopback listener, for the metadata document. */
  baseUrl: () => string;
  jwks: () => { keys: unknown[] };
  /** The process on the other end of a request's socket (kernel-derived, looked up on first use), where known. */
  peer?: (socket: Socket) => () => Promise<PeerProcess | undefined>;
  /** The credential-injecting proxy (broker/proxy): every request under /proxy/ goes to it. */
  proxy?: (req: IncomingMessage, res: ServerResponse) => void;
}

/**
 * A JSON answer with its length: without one Node frames the body as chunked, and the head, chunk size, body and
 * terminator leave in a writev of four buffers; with it, no chunk framing, and head and body leave together.
 */
function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(text);
}

/** RFC 6749 §5.2 error bodies, with Writ's stable code beside the OAuth one. */
/**
 * The request target as a URL, or undefined when it is not a path (RFC 9112 §3.2.1 origin-form). Parsed against
 * a fixed origin, never as a URL of its own: `//`, `//@` or `//:99999` are paths here, and `new URL('//', base)`
 * throws. Everything on the listeners that reads the target goes through this.
 */
export function requestUrl(target: string | undefined): URL | undefined {
  if (target === undefined || !target.startsWith('/')) return undefined;
  try {
    return new URL(`http://localhost${target}`);
  } catch {
    return undefined;
  }
}

function oauthError(res: ServerResponse, status: number, error: string, e: WritError): void {
  send(res, status, { error, error_description: e.message, writ_code: e.code });
}

/**
 * The urlencoded body, read with stream events (an async iterator over the request cost more than the rest of the
 * read on every exchange). Over MAX_BODY the request is destroyed, as a refused upload should be, and rejected.
 */
function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    return Promise.reject(new WritError('WRIT_BAD_REQUEST', 'the body must be application/x-www-form-urlencoded', { path: 'content-type' }));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (e: unknown): void => {
      if (done) return;
      done = true;
      reject(e);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > MAX_BODY) {
        fail(new WritError('WRIT_FRAME_TOO_LARGE', `the body exceeds ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(new URLSearchParams((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8')));
    });
    req.on('error', fail);
    // Every request closes; only one that closes before its end is refused (and only then is the error built).
    req.on('close', () => done || fail(new WritError('WRIT_BAD_REQUEST', 'the request ended before its body')));
  });
}

function oauthCodeFor(e: WritError): [number, string] {
  switch (e.code) {
    case 'WRIT_SCOPE_NOT_COVERED':
    case 'WRIT_SCOPE_INVALID':
      return [400, 'invalid_scope'];
    case 'WRIT_AUDIENCE_MISMATCH':
      return [400, 'invalid_target'];
    case 'WRIT_TOKEN_INVALID':
    case 'WRIT_TOKEN_EXPIRED':
    case 'WRIT_TOKEN_REVOKED':
    case 'WRIT_TOKEN_NOT_YOURS':
    case 'WRIT_AGENT_BLOCKED':
    case 'WRIT_DEPTH_EXCEEDED':
      return [400, 'invalid_grant'];
    case 'WRIT_FRAME_TOO_LARGE':
    case 'WRIT_BAD_REQUEST':
      return [400, 'invalid_request'];
    case 'WRIT_INVENTORY_FULL': // no room for the sub-agent's identity until the developer unblocks some
      return [503, 'temporarily_unavailable'];
    default:
      return [500, 'server_error'];
  }
}

export function createHttpHandler(deps: HttpDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const metadata = () => {
    const base = deps.baseUrl();
    return {
      issuer: deps.issuer,
      jwks_uri: `${base}/.well-known/jwks.json`,
      token_endpoint: `${base}/oauth2/token`,
      introspection_endpoint: `${base}/oauth2/introspect`,
      revocation_endpoint: `${base}/oauth2/revoke`,
      grant_types_supported: [TOKEN_EXCHANGE],
      response_types_supported: [],
      token_endpoint_auth_methods_supported: ['none'],
      introspection_endpoint_auth_methods_supported: ['none'],
      revocation_endpoint_auth_methods_supported: ['none'],
      access_token_signing_alg_values_supported: ['EdDSA'],
      scopes_supported: [],
    };
  };

  return (req, res) => {
    const url = requestUrl(req.url);
    if (url === undefined) return oauthError(res, 400, 'invalid_request', new WritError('WRIT_BAD_REQUEST', 'the request target must be a path'));
    if (deps.proxy && (req.url ?? '').startsWith('/proxy/')) return deps.proxy(req, res);
    const route = `${req.method} ${url.pathname}`;
    // One look at the calling process per request, however many checks ask (the holder rules, the new token's binding).
    const presenter = deps.peer ? { process: once(deps.peer(req.socket)) } : undefined;
    const run = async () => {
      switch (route) {
        case 'GET /.well-known/oauth-authorization-server':
          return send(res, 200, metadata());
        case 'GET /.well-known/jwks.json':
          return send(res, 200, deps.jwks());
        case 'POST /oauth2/introspect': {
          const form = await readForm(req);
          const token = form.get('token');
          if (!token) throw new WritError('WRIT_BAD_REQUEST', 'token is required', { path: 'token' });
          return send(res, 200, await deps.authority.introspect(token, presenter));
        }
        case 'POST /oauth2/revoke': {
          // RFC 7009: 200 whatever the token was, so the endpoint is no oracle. Holding a token is the right to revoke it.
          const form = await readForm(req);
          const token = form.get('token');
          if (!token) throw new WritError('WRIT_BAD_REQUEST', 'token is required', { path: 'token' });
          try {
            // Also a token of a blocked identity: refused while blocked, it stays revoked once unblocked.
            const claims = await deps.authority.check(token, undefined, undefined, 'ignore');
            await deps.authority.revoke({ kind: 'token', jti: claims.jti }, 'http:rfc7009', undefined, claims.exp);
          } catch (e) {
            if (!isWritError(e) || e.code === 'WRIT_AUDIT_WRITE_FAILED' || e.code === 'WRIT_INTERNAL') throw e;
          }
          res.writeHead(200, { 'cache-control': 'no-store' });
          return res.end();
        }
        case 'POST /oauth2/token': {
          const form = await readForm(req);
          const grantType = form.get('grant_type');
          if (grantType !== TOKEN_EXCHANGE) {
            return send(res, 400, {
              error: 'unsupported_grant_type',
              error_description: 'only token exchange (RFC 8693) is served here',
              writ_code: 'WRIT_BAD_REQUEST',
            });
          }
          const subject = form.get('subject_token');
          if (!subject) throw new WritError('WRIT_BAD_REQUEST', 'subject_token is required', { path: 'subject_token' });
          const subjectType = form.get('subject_token_type');
          if (subjectType !== ACCESS_TOKEN_TYPE && subjectType !== 'urn:ietf:params:oauth:token-type:jwt') {
            throw new WritError('WRIT_BAD_REQUEST', 'subject_token_type must be an access token', { path: 'subject_token_type' });
          }
          const requested = form.get('requested_token_type');
          if (requested !== null && requested !== ACCESS_TOKEN_TYPE) {
            throw new WritError('WRIT_BAD_REQUEST', 'only access tokens are issued', { path: 'requested_token_type' });
          }
          const scope = form.get('scope');
          const audience = form.get('audience') ?? form.get('resource') ?? undefined;
          const actor = form.get('actor_name') ?? undefined;
          if (actor !== undefined && (actor.length === 0 || actor.length > 100)) {
            throw new WritError('WRIT_BAD_REQUEST', 'actor_name must be 1 to 100 characters', { path: 'actor_name' });
          }
          const out = await deps.authority.exchange(subject, {
            ...(scope ? { scopes: scope.split(' ').filter(Boolean) } : {}),
            ...(audience === undefined ? {} : { audience }),
            ...(actor === undefined ? {} : { actorName: actor }),
          }, presenter);
          return send(res, 200, {
            access_token: out.token,
            issued_token_type: ACCESS_TOKEN_TYPE,
            token_type: 'Bearer',
            expires_in: Math.max(0, out.expiresAt - Math.floor(deps.clock.now() / 1000)),
            scope: out.scope,
          });
        }
        default:
          return send(res, 404, { error: 'not_found', writ_code: 'WRIT_METHOD_NOT_FOUND' });
      }
    };
    run().catch((e: unknown) => {
      if (res.headersSent) return res.destroy();
      const err = isWritError(e) ? e : new WritError('WRIT_INTERNAL', 'internal error', { cause: e });
      const [status, code] = oauthCodeFor(err);
      oauthError(res, status, code, err.code === 'WRIT_INTERNAL' ? new WritError('WRIT_INTERNAL', 'internal error') : err);
    });
  };
}

/** The first call's promise, shared by the later ones. */
function once<T>(f: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= f());
}
