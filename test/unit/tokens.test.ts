// Access tokens: what TokenMinter signs and what verifyToken accepts. verifyToken checks with node:crypto directly;
// these tests hold it to jose's jwtVerify semantics (tokens signed by jose are the reference) and to its codes.
import { generateKeyPairSync, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { ManualClock, randomIds } from '../../broker/core/clock';
import { TokenMinter, VerifiedTokens, verifyToken } from '../../broker/core/tokens';
import { TurnSigner, inlineSigner } from '../../broker/core/signer';
import type { VerifyOptions } from '../../broker/core/tokens';
import { codeOf } from '../helpers/codes';

const T0 = Date.UTC(2026, 0, 1);
const ISS = 'urn:writ:test';
const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const KID = 'k1';

const clock = new ManualClock(T0);
const opts = (extra: Partial<VerifyOptions> = {}): VerifyOptions => ({
  issuer: ISS,
  keys: (kid) => (kid === KID ? publicKey : undefined),
  clock,
  ...extra,
});

const iat = Math.floor(T0 / 1000);
const CLAIMS = {
  iss: ISS,
  sub: 'dev@example.com',
  aud: AUD,
  client_id: 'agt_child',
  scope: 'repo:read:acme/web',
  act: { sub: 'agt_child', act: { sub: 'agt_parent' } },
  task_id: 'task_1',
  grant_id: 'grt_1',
  jti: 'tok_1',
  iat,
  nbf: iat,
  exp: iat + 300,
};

function joseToken(claims: Record<string, unknown> = CLAIMS, header: Record<string, unknown> = {}, key: KeyObject = privateKey): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: KID, ...header }).sign(key);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Signed by hand, for headers jose refuses to produce. */
function rawToken(header: Record<string, unknown>, claims: Record<string, unknown> = CLAIMS): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

describe('verifyToken', () => {
  it.each([
    ['on the calling thread', () => inlineSigner],
    ['in the check phase (the broker\'s)', () => new TurnSigner()],
  ])('accepts what TokenMinter signs %s, and jose agrees on the same token', async (_where, signer) => {
    const s = signer();
    const minter = new TokenMinter(ISS, () => ({ kid: KID, privateKey }), clock, randomIds, s);
    const { token: signed, claims } = minter.mint({
      user: 'dev@example.com',
      chain: ['agt_child', 'agt_parent'],
      audience: AUD,
      scopes: ['repo:read:acme/web'],
      taskId: 'task_1',
      grantId: 'grt_1',
      ttlSeconds: 300,
    });
    const token = await signed;
    expect(await verifyToken(token, opts({ audience: AUD }))).toEqual(claims);
    const { payload, protectedHeader } = await jwtVerify(token, publicKey, { typ: 'at+jwt', issuer: ISS, audience: AUD, currentDate: new Date(T0) });
    expect(payload).toEqual(claims);
    expect(protectedHeader).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid: KID });
  });

  it('accepts a token jose signed with the same claims, typ spelled as a media type', async () => {
    expect(await verifyToken(await joseToken(), opts())).toEqual(CLAIMS);
    expect(await verifyToken(await joseToken(CLAIMS, { typ: 'application/AT+JWT' }), opts())).toEqual(CLAIMS);
  });

  it('checks the signature before the claims: a forged expired token is invalid, a genuine one expired', async () => {
    const expired = { ...CLAIMS, exp: iat - 10 };
    expect(await codeOf(verifyToken(await joseToken(expired), opts()))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await codeOf(verifyToken(await joseToken(expired, {}, other.privateKey), opts()))).toBe('WRIT_TOKEN_INVALID');
    const wrongAud = { ...CLAIMS, aud: 'https://elsewhere.example' };
    expect(await codeOf(verifyToken(await joseToken(wrongAud), opts({ audience: AUD })))).toBe('WRIT_AUDIENCE_MISMATCH');
    expect(await codeOf(verifyToken(await joseToken(wrongAud, {}, other.privateKey), opts({ audience: AUD })))).toBe('WRIT_TOKEN_INVALID');
  });

  it('applies the clock tolerance as jose does: exp <= now - tolerance is expired, nbf > now + tolerance is invalid', async () => {
    const at = (sec: number) => ({ ...opts(), clock: { now: () => (iat + sec) * 1000 } });
    const token = await joseToken();
    expect(await codeOf(verifyToken(token, at(304)))).toBe('resolved');
    expect(await codeOf(verifyToken(token, at(305)))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await codeOf(verifyToken(token, { ...at(300), clockToleranceSeconds: 0 }))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await codeOf(verifyToken(token, at(-5)))).toBe('resolved');
    expect(await codeOf(verifyToken(token, at(-6)))).toBe('WRIT_TOKEN_INVALID');
  });

  it('refuses tampering, other algorithms, unknown keys and extensions with WRIT_TOKEN_INVALID', async () => {
    const token = await joseToken();
    const [h, p, s] = token.split('.') as [string, string, string];
    const bad = [
      '',
      'not-a-token',
      `${h}.${p}`,
      `${h}.${p}.${s}.x`,
      `${h}.${b64({ ...CLAIMS, scope: 'repo:write:acme/web' })}.${s}`,
      `${b64({ alg: 'EdDSA', typ: 'at+jwt', kid: 'k2' })}.${p}.${s}`,
      `${b64({ alg: 'none', typ: 'at+jwt', kid: KID })}.${p}.`,
      `${h}.${p}.${s.slice(0, -1)}`,
      // The same signature bytes spelled another way (a padding character, or different trailing bits).
      `${h}.${p}.${s}=`,
      `${h}.${p}.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`,
      `${h}.${p}.${s.replace(/.$/, (c) => String.fromCharCode(c.charCodeAt(0) ^ 1))}`,
      'x'.repeat(8193),
    ];
    for (const t of bad) expect(await codeOf(verifyToken(t, opts())), t.slice(0, 60)).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(42 as unknown as string, opts()))).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(rawToken({ alg: 'EdDSA', typ: 'at+jwt', kid: KID }), opts()))).toBe('resolved');
    expect(await codeOf(verifyToken(rawToken({ alg: 'EdDSA', typ: 'at+jwt', kid: KID, crit: ['exp'], exp: 1 }), opts()))).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(rawToken({ alg: 'EdDSA', typ: 'at+jwt', kid: KID, b64: false }), opts()))).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(rawToken({ alg: 'Ed25519', typ: 'at+jwt', kid: KID }), opts()))).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(await joseToken(CLAIMS, { typ: 'JWT' }), opts()))).toBe('WRIT_TOKEN_INVALID');
    // An RSA key under a known kid is not an Ed25519 key, whatever the header says.
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    expect(await codeOf(verifyToken(token, { ...opts(), keys: () => rsa }))).toBe('WRIT_TOKEN_INVALID');
  });

  it('refuses missing, mistyped and inconsistent claims with WRIT_TOKEN_INVALID', async () => {
    const variants: Record<string, unknown>[] = [
      { ...CLAIMS, iss: 'urn:other' },
      { ...CLAIMS, exp: String(iat + 300) },
      { ...CLAIMS, iat: 'now' },
      { ...CLAIMS, act: { sub: 'agt_someone_else' } },
      { ...CLAIMS, act: { sub: 42 } },
      { ...CLAIMS, scope: ['repo:read:acme/web'] },
      // The grants above an exchanged token's: a non-empty list of ids, fewer than the agents in its chain.
      { ...CLAIMS, parent_grant_ids: 'grt_0' },
      { ...CLAIMS, parent_grant_ids: [] },
      { ...CLAIMS, parent_grant_ids: [42] },
      { ...CLAIMS, parent_grant_ids: [''] },
      { ...CLAIMS, parent_grant_ids: ['x'.repeat(129)] },
      { ...CLAIMS, parent_grant_ids: ['grt_0', 'grt_00'] },
      // The identities blocks are looked up by: an id, and those above it fewer than the agents above it.
      { ...CLAIMS, agent_identity: 42 },
      { ...CLAIMS, agent_identity: '' },
      { ...CLAIMS, parent_identities: 'inv_0' },
      { ...CLAIMS, parent_identities: [] },
      { ...CLAIMS, parent_identities: [7] },
      { ...CLAIMS, parent_identities: ['inv_0', 'inv_00'] },
    ];
    for (const name of ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'scope', 'act', 'task_id', 'grant_id']) {
      const { [name]: _, ...rest } = CLAIMS as Record<string, unknown>;
      variants.push(rest);
    }
    for (const v of variants) expect(await codeOf(verifyToken(await joseToken(v), opts())), JSON.stringify(v)).toBe('WRIT_TOKEN_INVALID');
  });

  it('skips only the signature for a token seen before: time, audience and the key are checked on every call', async () => {
    const seen = new VerifiedTokens();
    const token = await joseToken();
    expect(await verifyToken(token, opts(), seen)).toEqual(CLAIMS);
    expect(seen.size).toBe(1);
    expect(await verifyToken(token, opts(), seen)).toEqual(CLAIMS);
    expect(await codeOf(verifyToken(token, opts({ audience: 'https://elsewhere.example' }), seen))).toBe('WRIT_AUDIENCE_MISMATCH');
    expect(await codeOf(verifyToken(token, { ...opts(), clock: { now: () => (iat + 305) * 1000 } }, seen))).toBe('WRIT_TOKEN_EXPIRED');
    expect(await codeOf(verifyToken(token, opts({ issuer: 'urn:other' }), seen))).toBe('WRIT_TOKEN_INVALID');
    // The kid now names another key (a key set reloaded or replaced): verified afresh, and it fails.
    expect(await codeOf(verifyToken(token, { ...opts(), keys: () => other.publicKey }, seen))).toBe('WRIT_TOKEN_INVALID');
    expect(await codeOf(verifyToken(token, { ...opts(), keys: () => undefined }, seen))).toBe('WRIT_TOKEN_INVALID');
    expect(seen.size).toBe(0);
    // A forged token is never remembered; the claims handed out cannot be changed for the next caller.
    expect(await codeOf(verifyToken(await joseToken(CLAIMS, {}, other.privateKey), opts(), seen))).toBe('WRIT_TOKEN_INVALID');
    expect(seen.size).toBe(0);
    const first = await verifyToken(token, opts(), seen);
    expect(() => ((first as { scope: string }).scope = 'repo:write:acme/web')).toThrow(TypeError);
    expect(() => ((first.act as { sub: string }).sub = 'agt_x')).toThrow(TypeError);
    expect((await verifyToken(token, opts(), seen)).scope).toBe('repo:read:acme/web');
  });

  it('holds at most its bound of tokens, dropping the oldest', async () => {
    const seen = new VerifiedTokens(2);
    const tokens = await Promise.all([1, 2, 3].map((i) => joseToken({ ...CLAIMS, jti: `tok_${i}` })));
    for (const t of tokens) await verifyToken(t, opts(), seen);
    expect(seen.size).toBe(2);
    expect(seen.get(tokens[0]!, opts().keys)).toBeUndefined();
    expect(seen.get(tokens[2]!, opts().keys)).toMatchObject({ jti: 'tok_3' });
  });
});
