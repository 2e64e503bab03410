// Access tokens: RFC 9068 JWTs (`typ: at+jwt`), EdDSA, naming the user (`sub`) and the acting agent chain
// (`act`, nested per RFC 8693). Minting and checking live here; who may mint what is decided elsewhere.
import { sign as edSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { jwtVerify, decodeProtectedHeader, errors as joseErrors } from 'jose';
import { WritError } from '../errors';
import type { Clock, IdSource } from './clock';
import { seconds } from './clock';

export const TOKEN_TYPE = 'at+jwt';
export const DEFAULT_TTL_SECONDS = 300;
/** Hard ceiling for any configured maximum lifetime. */
export const MAX_TTL_CEILING_SECONDS = 3600;

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
  ttlSeconds: number;
}

export interface SigningKeyLike {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

export interface Minted {
  token: string;
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
    const token = `${input}.${edSign(null, Buffer.from(input), key.privateKey).toString('base64url')}`;
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

/**
 * Checks signature, `typ`, issuer, time and the claims Writ relies on. Revocation is the caller's job
 * (it needs the broker's state). Each failure is a WritError with its own code.
 */
export async function verifyToken(token: string, opts: VerifyOptions): Promise<WritClaims> {
  if (typeof token !== 'string' || token.length > 8192) {
    throw new WritError('WRIT_TOKEN_INVALID', 'token is not a compact JWT');
  }
  let kid: string | undefined;
  try {
    kid = decodeProtectedHeader(token).kid;
  } catch (e) {
    throw new WritError('WRIT_TOKEN_INVALID', 'token is not a compact JWT', { cause: e });
  }
  const key = kid === undefined ? undefined : opts.keys(kid);
  if (key === undefined) throw new WritError('WRIT_TOKEN_INVALID', 'token is signed by an unknown key');
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: ['EdDSA'],
      typ: TOKEN_TYPE,
      issuer: opts.issuer,
      ...(opts.audience === undefined ? {} : { audience: opts.audience }),
      currentDate: new Date(opts.clock.now()),
      clockTolerance: opts.clockToleranceSeconds ?? 5,
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'scope', 'act'],
    });
    const p = payload as Record<string, unknown>;
    for (const name of ['sub', 'aud', 'client_id', 'scope', 'jti', 'task_id', 'grant_id'] as const) {
      if (typeof p[name] !== 'string') throw new WritError('WRIT_TOKEN_INVALID', `token claim ${name} is missing or not a string`);
    }
    const chain = chainFromAct(p.act);
    if (chain[0] !== p.client_id) throw new WritError('WRIT_TOKEN_INVALID', 'token client_id is not its current actor');
    return payload as unknown as WritClaims;
  } catch (e) {
    if (e instanceof WritError) throw e;
    if (e instanceof joseErrors.JWTExpired) throw new WritError('WRIT_TOKEN_EXPIRED', 'token has expired', { cause: e });
    if (e instanceof joseErrors.JWTClaimValidationFailed && e.claim === 'aud') {
      throw new WritError('WRIT_AUDIENCE_MISMATCH', 'token is for another audience', { cause: e });
    }
    throw new WritError('WRIT_TOKEN_INVALID', 'token failed verification', { cause: e });
  }
}
