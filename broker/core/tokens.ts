// Access tokens: RFC 9068 JWTs (`typ: at+jwt`), EdDSA, naming the user (`sub`) and the acting agent chain
// (`act`, nested per RFC 8693). Minting and checking live here; who may mint what is decided elsewhere.
import { verify as edVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { WritError } from '../errors';
import type { Clock, IdSource } from './clock';
import { seconds } from './clock';
import { inlineSigner } from './signer';
import type { Signer } from './signer';

export const TOKEN_TYPE = 'at+jwt';
export const DEFAULT_TTL_SECONDS = 300;
/** Hard ceiling for any configured maximum lifetime. */
export const MAX_TTL_CEILING_SECONDS = 3600;
/** How far past `exp` (and before `nbf`) a token is still taken, for clocks that differ a little (the default). */
export const CLOCK_TOLERANCE_SECONDS = 5;

/** `{ sub: current }`, with earlier actors nested inside: outermost is the one acting now. */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

export interface WritClaims {
  iss: string;
  sub: string;
  aud: string;
  client_id: string;
  scope: string;
  act: ActClaim;
  task_id: string;
  grant_id: string;
  /**
   * On a sub-agent's exchanged token: the grants above `grant_id`, nearest first (the parent token's grant, its
   * parent's, ...). Revoking any of them revokes this token, wherever it is checked and after a broker restart.
   */
  parent_grant_ids?: string[];
  /**
   * The inventory identity of `client_id` (when the broker keeps an inventory): a sub-agent exchanged from this
   * token after a broker restart, when the broker no longer holds its agent, gets the identity it had before, so a
   * block of that identity still holds. A check refuses the token while this identity is blocked
   * (WRIT_AGENT_BLOCKED), also in a run that holds none of its agents.
   */
  agent_identity?: string;
  /**
   * The inventory identities of the agents above `client_id` that the broker knew, nearest first (fewer than the
   * `act` chain's agents): a check refuses the token while any of them is blocked, so a block of a parent
   * identity covers its sub-agents' tokens after a restart too.
   */
  parent_identities?: string[];
  jti: string;
  iat: number;
  nbf: number;
  exp: number;
}

/** Builds nested `act` from an agent chain, current agent first. */
export function actFromChain(chain: readonly string[]): ActClaim {
  if (chain.length === 0) throw new TypeError('an actor chain needs at least one agent');
  let act: ActClaim | undefined;
  for (let i = chain.length - 1; i >= 0; i--) {
    act = act === undefined ? { sub: chain[i]! } : { sub: chain[i]!, act };
  }
  return act!;
}

/** The agent chain named by `act`, current agent first. Malformed or over-deep chains are refused. */
export function chainFromAct(act: unknown, maxDepth = 16): string[] {
  const chain: string[] = [];
  let cur: unknown = act;
  while (cur !== undefined) {
    if (typeof cur !== 'object' || cur === null || typeof (cur as { sub?: unknown }).sub !== 'string') {
      throw new WritError('WRIT_TOKEN_INVALID', 'token has a malformed act claim');
    }
    chain.push((cur as { sub: string }).sub);
    if (chain.length > maxDepth) throw new WritError('WRIT_TOKEN_INVALID', 'token act chain is too deep');
    cur = (cur as { act?: unknown }).act;
  }
  if (chain.length === 0) throw new WritError('WRIT_TOKEN_INVALID', 'token has no act claim');
  return chain;
}

export interface MintRequest {
  user: string;
  /** Agent ids, current first. */
  chain: readonly string[];
  audience: string;
  scopes: readonly string[];
  taskId: string;
  grantId: string;
  /** For an exchanged token: the grants above `grantId`, nearest first (becomes `parent_grant_ids`). */
  parentGrantIds?: readonly string[];
  /** The current agent's inventory identity (becomes `agent_identity`). */
  identity?: string;
  /** The inventory identities above it, nearest first (becomes `parent_identities`). */
  parentIdentities?: readonly string[];
  ttlSeconds: number;
}

export interface SigningKeyLike {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

export interface Minted {
  /** Settles once signed: the claims (and the jti to audit) are known at once, the signature may come later. */
  token: Promise<string>;
  claims: WritClaims;
}

const b64json = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

export class TokenMinter {
  private header: { kid: string; b64: string } | undefined;

  constructor(
    private readonly issuer: string,
    private readonly key: () => SigningKeyLike,
    private readonly clock: Clock,
    private readonly ids: IdSource,
    /** Where signatures are made: the broker uses a TurnSigner, so signing overlaps the audit record's sync. */
    private readonly signer: Signer = inlineSigner,
  ) {}

  mint(req: MintRequest): Minted {
    const iat = seconds(this.clock.now());
    const claims: WritClaims = {
      iss: this.issuer,
      sub: req.user,
      aud: req.audience,
      client_id: req.chain[0]!,
      scope: req.scopes.join(' '),
      act: actFromChain(req.chain),
      task_id: req.taskId,
      grant_id: req.grantId,
      ...(req.parentGrantIds?.length ? { parent_grant_ids: [...req.parentGrantIds] } : {}),
      ...(req.identity === undefined ? {} : { agent_identity: req.identity }),
      ...(req.parentIdentities?.length ? { parent_identities: [...req.parentIdentities] } : {}),
      jti: this.ids.id('tok'),
      iat,
      nbf: iat,
      exp: iat + req.ttlSeconds,
    };
    const key = this.key();
    // Compact JWS (RFC 7515) signed with node:crypto directly: the same bytes jose's SignJWT produces, without
    // its WebCrypto round trip, which costs more than the signature on the mint path. Tests verify with jose.
    if (this.header?.kid !== key.kid) {
      this.header = { kid: key.kid, b64: b64json({ alg: 'EdDSA', typ: TOKEN_TYPE, kid: key.kid }) };
    }
    const input = `${this.header.b64}.${b64json(claims)}`;
    const token = this.signer.sign(key.privateKey, input).then((sig) => `${input}.${sig}`);
    return { token, claims };
  }
}

export interface VerifyOptions {
  issuer: string;
  /** Public keys by kid (the JWKS the broker serves). */
  keys: (kid: string) => KeyObject | undefined;
  clock: Clock;
  audience?: string;
  clockToleranceSeconds?: number;
}

const B64URL = /^[A-Za-z0-9_-]+$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'scope', 'act'] as const;
const STRING_CLAIMS = ['sub', 'aud', 'client_id', 'scope', 'jti', 'task_id', 'grant_id'] as const;

const invalid = (why: string, cause?: unknown): WritError =>
  new WritError('WRIT_TOKEN_INVALID', why, cause === undefined ? undefined : { cause });

/** A base64url segment as JSON, or undefined; strict UTF-8, so no two encodings decode alike. */
function jsonSegment(segment: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(utf8.decode(Buffer.from(segment, 'base64url')));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function numericDate(p: Record<string, unknown>, name: 'iat' | 'nbf' | 'exp'): number | undefined {
  const v = p[name];
  if (v !== undefined && typeof v !== 'number') throw invalid(`token claim ${name} must be a number`);
  return v as number | undefined;
}

/**
 * Checks signature, `typ`, issuer, time and the claims Writ relies on. Revocation is the caller's job
 * (it needs the broker's state). Each failure is a WritError with its own code.
 *
 * The checks are jose's jwtVerify (alg EdDSA, typ at+jwt, RFC 7519 time claims with the tolerance), done with
 * node:crypto in one synchronous step: jose goes through WebCrypto, whose promise round trip cost more than the
 * Ed25519 verification itself on every token the broker is shown (exchange, introspection, the verifier SDK).
 * As there, the signature is checked before any claim, so an expired token is only called expired if it is genuine.
 */
export async function verifyToken(token: string, opts: VerifyOptions, seen?: VerifiedTokens): Promise<WritClaims> {
  if (typeof token !== 'string' || token.length > 8192) throw invalid('token is not a compact JWT');
  const known = seen?.get(token, opts.keys);
  return checkClaims(known ?? verifySignature(token, opts, seen), opts);
}

/** The signature, header and claims-set form of a compact JWT; its claims as an object once all three are good. */
function verifySignature(token: string, opts: VerifyOptions, seen: VerifiedTokens | undefined): Record<string, unknown> {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((s) => B64URL.test(s))) throw invalid('token is not a compact JWT');
  const [h, p, s] = parts as [string, string, string];
  const header = jsonSegment(h);
  if (header === undefined) throw invalid('token is not a compact JWT');
  const kid = header.kid;
  const key = typeof kid === 'string' ? opts.keys(kid) : undefined;
  if (key === undefined) throw invalid('token is signed by an unknown key');
  // No extensions are understood (RFC 7515 §4.1.11), and only EdDSA keys sign Writ tokens.
  if (header.alg !== 'EdDSA' || header.crit !== undefined || header.b64 !== undefined || key.asymmetricKeyType !== 'ed25519') {
    throw invalid('token failed verification');
  }
  const sig = Buffer.from(s, 'base64url');
  // Canonical only: a token string has one spelling, as the signature has one value.
  if (sig.length !== 64 || sig.toString('base64url') !== s) throw invalid('token failed verification');
  let good: boolean;
  try {
    good = edVerify(null, Buffer.from(`${h}.${p}`, 'ascii'), key, sig);
  } catch (e) {
    throw invalid('token failed verification', e);
  }
  if (!good) throw invalid('token failed verification');
  if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== TOKEN_TYPE) throw invalid('token is not an access token (typ)');
  const payload = jsonSegment(p);
  if (payload === undefined) throw invalid('token claims are not a JSON object');
  seen?.set(token, kid as string, key, payload);
  return payload;
}

/** Everything about a token that depends on the time, the audience asked for, or the claims themselves. */
function checkClaims(payload: Record<string, unknown>, opts: VerifyOptions): WritClaims {
  for (const name of REQUIRED_CLAIMS) {
    if (!Object.hasOwn(payload, name)) throw invalid(`token claim ${name} is missing`);
  }
  if (payload.iss !== opts.issuer) throw invalid('token is from another issuer');
  if (opts.audience !== undefined && !audienceHas(payload.aud, opts.audience)) {
    throw new WritError('WRIT_AUDIENCE_MISMATCH', 'token is for another audience');
  }
  const tolerance = opts.clockToleranceSeconds ?? CLOCK_TOLERANCE_SECONDS;
  const now = seconds(opts.clock.now());
  numericDate(payload, 'iat');
  const nbf = numericDate(payload, 'nbf');
  if (nbf !== undefined && nbf > now + tolerance) throw invalid('token is not valid yet (nbf)');
  const exp = numericDate(payload, 'exp');
  if (exp !== undefined && exp <= now - tolerance) throw new WritError('WRIT_TOKEN_EXPIRED', 'token has expired');
  for (const name of STRING_CLAIMS) {
    if (typeof payload[name] !== 'string') throw invalid(`token claim ${name} is missing or not a string`);
  }
  const chain = chainFromAct(payload.act);
  if (chain[0] !== payload.client_id) throw invalid('token client_id is not its current actor');
  // Never more grants above it than agents above it (each exchange adds one of each).
  const parents = payload.parent_grant_ids;
  if (parents !== undefined && !(Array.isArray(parents) && parents.length >= 1 && parents.length < chain.length && parents.every(isGrantId))) {
    throw invalid('token claim parent_grant_ids is malformed');
  }
  // Blocks are looked up by these: a token naming them wrongly is not taken (they name no more agents than `act`).
  if (payload.agent_identity !== undefined && !isIdentity(payload.agent_identity)) throw invalid('token claim agent_identity is malformed');
  const identities = payload.parent_identities;
  if (identities !== undefined && !(Array.isArray(identities) && identities.length >= 1 && identities.length < chain.length && identities.every(isIdentity))) {
    throw invalid('token claim parent_identities is malformed');
  }
  return payload as unknown as WritClaims;
}

/**
 * Tokens whose signature has been checked, so a token shown again (a parent exchanging for each of its
 * sub-agents, a resource introspecting the token it holds) skips the Ed25519 verification, the costliest step.
 * Only that is skipped: every claim (time, audience, issuer, chain) is checked on every call, and an entry
 * counts only while its kid still resolves to the very key that verified it. Bounded; oldest out first.
 */
export class VerifiedTokens {
  readonly #entries = new Map<string, { kid: string; key: KeyObject; payload: Record<string, unknown> }>();

  constructor(private readonly max = 1024) {}

  get size(): number {
    return this.#entries.size;
  }

  get(token: string, keys: (kid: string) => KeyObject | undefined): Record<string, unknown> | undefined {
    const e = this.#entries.get(token);
    if (e === undefined) return undefined;
    if (keys(e.kid) !== e.key) {
      this.#entries.delete(token);
      return undefined;
    }
    return e.payload;
  }

  set(token: string, kid: string, key: KeyObject, payload: Record<string, unknown>): void {
    if (this.#entries.size >= this.max) this.#entries.delete(this.#entries.keys().next().value!);
    // Callers get this object on every hit: frozen, so none can change what the next one reads.
    this.#entries.set(token, { kid, key, payload: deepFreeze(payload) });
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/** RFC 8725 §3.11 media type compare, as jose does it: case-insensitive, `application/` optional. */
function normalizeTyp(typ: string): string {
  const t = typ.toLowerCase();
  return t.startsWith('application/') ? t.slice('application/'.length) : t;
}

const isGrantId = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= 128;
const isIdentity = isGrantId;

function audienceHas(aud: unknown, want: string): boolean {
  return typeof aud === 'string' ? aud === want : Array.isArray(aud) && aud.includes(want);
}
