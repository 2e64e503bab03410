// One error class for Writ, with a stable code from a closed union (the model is jose's errors).
// The wire and the audit log get the code and the safe message; `cause` stays in-process.

export const ERROR_CODES = [
  // protocol and input
  'WRIT_BAD_REQUEST', // a message failed its schema; `path` names the field
  'WRIT_FRAME_TOO_LARGE',
  'WRIT_PARSE_ERROR', // not JSON
  'WRIT_METHOD_NOT_FOUND',
  'WRIT_NOT_INTRODUCED', // an agent called a method before `hello`
  'WRIT_UNSUPPORTED_VERSION',
  'WRIT_FORBIDDEN_ORIGIN', // browser Origin, non-loopback Host or peer
  'WRIT_RATE_LIMITED',
  // scopes
  'WRIT_SCOPE_INVALID',
  'WRIT_SCOPE_NOT_COVERED',
  // approvals and grants
  'WRIT_DENIED', // the developer said no
  'WRIT_APPROVAL_TIMEOUT', // nobody decided in time: a denial
  'WRIT_NO_APPROVER', // no editor attached and no terminal: a denial
  'WRIT_GRANT_NOT_FOUND',
  'WRIT_GRANT_EXPIRED',
  'WRIT_TOO_MANY_PENDING',
  'WRIT_SESSION_INVALID', // an agent session credential that is unknown or revoked
  'WRIT_AGENT_NOT_FOUND',
  'WRIT_AGENT_BLOCKED', // the developer blocked this agent identity: refused without a prompt
  'WRIT_INVENTORY_CORRUPT',
  'WRIT_INVENTORY_WRITE_FAILED', // a block or unblock holds in this run but could not be saved: not acknowledged
  'WRIT_INVENTORY_FULL', // a new agent identity, and every remembered one is blocked or connected: refused
  'WRIT_DEPTH_EXCEEDED', // sub-agent chain too deep
  // tokens
  'WRIT_TOKEN_INVALID',
  'WRIT_TOKEN_EXPIRED',
  'WRIT_TOKEN_REVOKED',
  'WRIT_TOKEN_NOT_YOURS', // presented by an agent that is neither the token's agent nor its ancestor or descendant
  'WRIT_AUDIENCE_MISMATCH',
  'WRIT_TTL_INVALID',
  // keychain
  'WRIT_KEYCHAIN_UNAVAILABLE', // no D-Bus session, no Secret Service
  'WRIT_KEYCHAIN_LOCKED',
  'WRIT_KEYCHAIN_TIMEOUT',
  'WRIT_KEYCHAIN_CORRUPT', // an entry exists but does not parse: never replaced silently
  'WRIT_KEYCHAIN_ERROR',
  // audit
  'WRIT_AUDIT_WRITE_FAILED', // fail closed: no record, no answer
  'WRIT_AUDIT_CORRUPT',
  'WRIT_AUDIT_UNVERIFIABLE', // nothing found broken, but checkpoints name keys a partial key set (a broker's JWKS) lacks
  'WRIT_AUDIT_UNSIGNED', // nothing found broken, but records no signed checkpoint covers and no running broker vouches for
  'WRIT_AUDIT_UNREADABLE', // the audit log or write-ahead file named is missing, not a file, or not this user's to read
  // broker and CLI
  'WRIT_BROKER_UNREACHABLE',
  'WRIT_BROKER_RUNNING',
  'WRIT_STATE_LOCKED', // another broker, or an offline CLI command, is writing the same state folder
  'WRIT_RUNTIME_DIR_UNSAFE',
  'WRIT_USAGE',
  'WRIT_COMMAND_NOT_FOUND', // `writ exec`: no such command (a path that does not exist, or a name not in PATH); exit 127
  'WRIT_COMMAND_NOT_EXECUTABLE', // `writ exec`: the command exists but this user may not execute it (or a directory); exit 126
  // the credential-injecting proxy
  'WRIT_SECRET_NOT_FOUND', // no secret of that name is configured (or its keychain entry is gone)
  'WRIT_SECRET_AMBIGUOUS', // two secrets serve one upstream: a token names the upstream, not which secret
  'WRIT_SECRETS_CORRUPT', // secrets.json does not parse or match its schema (a hand edit): the proxy serves no secret until fixed
  'WRIT_UPSTREAM_TIMEOUT', // the upstream sent no response headers (or went quiet) within the proxy's timeout
  'WRIT_UPSTREAM_UNREACHABLE', // the upstream refused the connection or failed mid-way
  'WRIT_INTERNAL',
] as const;

export type WritErrorCode = (typeof ERROR_CODES)[number];

export interface WritErrorOptions {
  cause?: unknown;
  /** The field path for schema errors, e.g. `params.scopes.0`. Never the field's value. */
  path?: string;
  /** Safe, structured detail for the wire (ids and names only, never a secret). */
  data?: Record<string, unknown>;
}

export class WritError extends Error {
  override readonly name = 'WritError';
  readonly code: WritErrorCode;
  readonly path: string | undefined;
  readonly data: Record<string, unknown> | undefined;

  constructor(code: WritErrorCode, message: string, options: WritErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path;
    this.data = options.data;
  }

  toJSON(): { code: WritErrorCode; message: string; path?: string; data?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.path === undefined ? {} : { path: this.path }),
      ...(this.data === undefined ? {} : { data: this.data }),
    };
  }
}

export function isWritError(e: unknown, code?: WritErrorCode): e is WritError {
  return e instanceof WritError && (code === undefined || e.code === code);
}

/** Any thrown value as a WritError; unknown failures become WRIT_INTERNAL with the original kept as `cause`. */
export function asWritError(e: unknown): WritError {
  if (e instanceof WritError) return e;
  return new WritError('WRIT_INTERNAL', 'internal error', { cause: e });
}
