// The broker's Ed25519 signing keys, kept in ONE OS keychain entry and nowhere else.
//
// Stored JSON: {v:1, active:{kid,d,x,createdAt}, retired:[{kid,x,createdAt,retiredAt}]}. A retired key keeps
// only its public half: it signs nothing any more, but tokens it signed may still be live (JWKS) and audit
// checkpoints it signed must stay verifiable forever (publicKeys()).
//
// Rules from the recipe: a key is created only after a DEFINITE "no entry" (a failed or empty read may be a
// locked keyring, not an absent key); an entry that exists but does not validate is never overwritten; no
// private key material in any error or log line (JSON.parse's own message quotes its input, so it is
// never passed on).
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import type { JWK } from 'jose';
import { z } from 'zod';
import { WritError } from '../errors';
import type { Clock } from './clock';
import { keychainGet, keychainSet } from './keychain';
import { MAX_TTL_CEILING_SECONDS } from './tokens';
import type { KeychainRef } from './keychain';

export const DEFAULT_KEYCHAIN_SERVICE = 'writ';
export const DEFAULT_KEYCHAIN_ACCOUNT = 'signing-keys';

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** {kty:'OKP', crv:'Ed25519', x, kid, alg:'EdDSA', use:'sig'} */
  publicJwk: JWK;
  /** ms since the epoch */
  createdAt: number;
}

export interface RetiredKey {
  kid: string;
  publicKey: KeyObject;
  publicJwk: JWK;
  createdAt: number;
  retiredAt: number;
}

export class KeySet {
  constructor(
    readonly active: SigningKey,
    readonly retired: readonly RetiredKey[],
  ) {}

  /**
   * The active key, plus retired keys whose tokens may still be live: retiredAt + an hour > now. An hour, the
   * ceiling of any token's lifetime, not this run's maximum: a run that lowered it still has tokens of an earlier
   * run, signed under a higher one, to verify.
   */
  jwks(nowMs: number): { keys: JWK[] } {
    const live = this.retired.filter((r) => r.retiredAt + MAX_TTL_CEILING_SECONDS * 1000 > nowMs);
    return { keys: [{ ...this.active.publicJwk }, ...live.map((r) => ({ ...r.publicJwk }))] };
  }

  /** Every key ever held, active and retired, by kid (audit checkpoints may be signed by any of them). */
  publicKeys(): Map<string, KeyObject> {
    const m = new Map<string, KeyObject>();
    for (const r of this.retired) m.set(r.kid, r.publicKey);
    m.set(this.active.kid, this.active.publicKey);
    return m;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pure parts: the stored form, testable without a keychain.
// ---------------------------------------------------------------------------------------------------------

// An Ed25519 key (public x or private d) is 32 bytes: 43 base64url characters, no padding.
const b64key = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const kid = z.string().regex(/^[A-Za-z0-9_-]{43}$/); // a SHA-256 thumbprint, base64url
const ms = z.number().int().nonnegative();

const StoredKeySet = z.strictObject({
  v: z.literal(1),
  active: z.strictObject({ kid, d: b64key, x: b64key, createdAt: ms }),
  retired: z.array(z.strictObject({ kid, x: b64key, createdAt: ms, retiredAt: ms })),
});
export type StoredKeySet = z.infer<typeof StoredKeySet>;

function corrupt(why: string): WritError {
  return new WritError(
    'WRIT_KEYCHAIN_CORRUPT',
    `the keychain entry for Writ's signing keys exists but is not a valid key set (${why}); Writ will not overwrite it: restore it, or delete it yourself to start over with a new key`,
  );
}

/** RFC 7638 thumbprint of an Ed25519 public key: the kid. */
export function ed25519Kid(x: string): Promise<string> {
  return calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x }, 'sha256');
}

function publicJwk(x: string, kidValue: string): JWK {
  return { kty: 'OKP', crv: 'Ed25519', x, kid: kidValue, alg: 'EdDSA', use: 'sig' };
}

function publicKeyFromX(x: string): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
}

/** A fresh Ed25519 signing key. */
export async function newSigningKey(createdAt: number): Promise<SigningKey> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const x = publicKey.export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new WritError('WRIT_INTERNAL', 'could not export a new Ed25519 public key');
  const k = await ed25519Kid(x);
  return { kid: k, privateKey, publicKey, publicJwk: publicJwk(x, k), createdAt };
}

/** The stored JSON for a key set. The result holds the private key: a secret, for the keychain only. */
export function serializeKeySet(keys: KeySet): string {
  const jwk = keys.active.privateKey.export({ format: 'jwk' });
  if (typeof jwk.d !== 'string' || typeof jwk.x !== 'string') {
    throw new WritError('WRIT_INTERNAL', 'the active signing key is not an Ed25519 private key');
  }
  const stored: StoredKeySet = {
    v: 1,
    active: { kid: keys.active.kid, d: jwk.d, x: jwk.x, createdAt: keys.active.createdAt },
    retired: keys.retired.map((r) => ({ kid: r.kid, x: String(r.publicJwk.x), createdAt: r.createdAt, retiredAt: r.retiredAt })),
  };
  return JSON.stringify(stored);
}

/** Parse and fully validate the stored JSON; anything off is WRIT_KEYCHAIN_CORRUPT (never with key material). */
export async function parseKeySet(text: string): Promise<KeySet> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  const parsed = StoredKeySet.safeParse(raw);
  if (!parsed.success) {
    // Only the path of the first problem: zod's messages are safe, but the path says enough.
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'top level';
    throw corrupt(`bad field: ${where}`);
  }
  const s = parsed.data;

  let privateKey: KeyObject;
  let publicKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: s.active.d, x: s.active.x }, format: 'jwk' });
    publicKey = createPublicKey(privateKey);
  } catch {
    throw corrupt('active key does not load');
  }
  // The public half must be the one the private half implies (Node's JWK import does not check x).
  if (publicKey.export({ format: 'jwk' }).x !== s.active.x) throw corrupt('active key halves do not match');
  if ((await ed25519Kid(s.active.x)) !== s.active.kid) throw corrupt('active kid is not the key thumbprint');

  const seen = new Set<string>([s.active.kid]);
  const retired: RetiredKey[] = [];
  for (const [i, r] of s.retired.entries()) {
    if (seen.has(r.kid)) throw corrupt(`retired.${i}: duplicate kid`);
    seen.add(r.kid);
    if ((await ed25519Kid(r.x)) !== r.kid) throw corrupt(`retired.${i}: kid is not the key thumbprint`);
    if (r.retiredAt < r.createdAt) throw corrupt(`retired.${i}: retired before it was created`);
    let pk: KeyObject;
    try {
      pk = publicKeyFromX(r.x);
    } catch {
      throw corrupt(`retired.${i}: public key does not load`);
    }
    retired.push({ kid: r.kid, publicKey: pk, publicJwk: publicJwk(r.x, r.kid), createdAt: r.createdAt, retiredAt: r.retiredAt });
  }

  const active: SigningKey = {
    kid: s.active.kid,
    privateKey,
    publicKey,
    publicJwk: publicJwk(s.active.x, s.active.kid),
    createdAt: s.active.createdAt,
  };
  return new KeySet(active, retired);
}

/** A new key set whose active key is fresh and whose previous active key is retired at `nowMs`. */
export async function rotatedKeySet(keys: KeySet, nowMs: number): Promise<KeySet> {
  const next = await newSigningKey(nowMs);
  const old = keys.active;
  const retiredOld: RetiredKey = {
    kid: old.kid,
    publicKey: old.publicKey,
    publicJwk: { ...old.publicJwk },
    createdAt: old.createdAt,
    retiredAt: nowMs,
  };
  return new KeySet(next, [...keys.retired, retiredOld]);
}

// ---------------------------------------------------------------------------------------------------------
// Keychain parts.
// ---------------------------------------------------------------------------------------------------------

function resolveRef(ref: Partial<KeychainRef> = {}): KeychainRef {
  const env = ref.env ?? process.env;
  return {
    ...ref,
    service: ref.service ?? (env.WRIT_KEYCHAIN_SERVICE || DEFAULT_KEYCHAIN_SERVICE),
    account: ref.account ?? DEFAULT_KEYCHAIN_ACCOUNT,
  };
}

function where(ref: KeychainRef): string {
  return `service "${ref.service}", account "${ref.account}"`;
}

/** Write, then read back and check the stored text is exactly ours before anyone signs with it. */
async function storeAndConfirm(ref: KeychainRef, keys: KeySet): Promise<KeySet> {
  const text = serializeKeySet(keys);
  await keychainSet(ref, text);
  const back = await keychainGet(ref);
  if (back === null) {
    throw new WritError('WRIT_KEYCHAIN_ERROR', `the keychain accepted the signing keys (${where(ref)}) but did not return them on reading back: check your Secret Service, then try again`);
  }
  if (back !== text) {
    // Most likely another Writ process wrote at the same moment; do not use a key the keychain does not hold.
    throw new WritError('WRIT_KEYCHAIN_ERROR', `the signing keys read back from the keychain (${where(ref)}) differ from those just written (another Writ process at the same time?): start Writ again`);
  }
  const parsed = await parseKeySet(back);
  if (parsed.active.kid !== keys.active.kid) {
    throw new WritError('WRIT_KEYCHAIN_ERROR', `the signing key read back from the keychain (${where(ref)}) is not the one written: start Writ again`);
  }
  return parsed;
}

function noKey(ref: KeychainRef): WritError {
  return new WritError('WRIT_KEYCHAIN_ERROR', `there is no Writ signing key in the keychain (${where(ref)}) yet: start the broker once (writ serve) to create it`, {
    data: { service: ref.service, account: ref.account, missing: true },
  });
}

/** How long a new key waits before it is used, for another process creating one at the same moment (first start). */
export const KEY_SETTLE_MS = 1000;

export async function loadKeySet(opts: { ref?: Partial<KeychainRef>; clock: Clock; create: boolean; settleMs?: number }): Promise<{ keys: KeySet; created: boolean }> {
  const ref = resolveRef(opts.ref);
  // Throws on every failure (locked, unavailable, timeout...): only a definite "no entry" comes back null.
  const text = await keychainGet(ref);
  const settle = opts.settleMs ?? KEY_SETTLE_MS;
  if (text !== null) {
    const found = await parseKeySet(text);
    // A first key created moments ago by a broker starting beside this one may yet be overwritten by a third that
    // found none either (below): a broker that will sign with it waits until all such writes are in, and reads again.
    const fresh = found.retired.length === 0 ? found.active.createdAt + 2 * settle - opts.clock.now() : 0;
    if (!opts.create || settle <= 0 || fresh <= 0) return { keys: found, created: false };
    await new Promise((r) => setTimeout(r, Math.min(fresh, 2 * settle)));
    const now = await keychainGet(ref);
    if (now === null) throw new WritError('WRIT_KEYCHAIN_ERROR', `the signing keys in the keychain (${where(ref)}) are gone: start Writ again`);
    return { keys: now === text ? found : await parseKeySet(now), created: false };
  }
  if (!opts.create) throw noKey(ref);
  const fresh = new KeySet(await newSigningKey(opts.clock.now()), []);
  if (settle <= 0) return { keys: await storeAndConfirm(ref, fresh), created: true };
  // Two brokers starting at once on a fresh machine (an editor restoring several windows) both find no key and
  // both create one; the later write wins in the keychain. Each waits longer than another's read-then-write
  // takes and only then reads back, before signing anything: all end on the key the keychain holds. (Reading
  // back at once would fail a broker whose write the other's overtook a moment later.)
  const written = serializeKeySet(fresh);
  await keychainSet(ref, written);
  await new Promise((r) => setTimeout(r, settle));
  const now = await keychainGet(ref);
  if (now === null) {
    throw new WritError('WRIT_KEYCHAIN_ERROR', `the keychain accepted the signing keys (${where(ref)}) but did not return them on reading back: check your Secret Service, then start Writ again`);
  }
  // Ours or the other broker's, the key is parsed from what the keychain returned, never from memory.
  return { keys: await parseKeySet(now), created: now === written };
}

export async function rotateKeySet(opts: { ref?: Partial<KeychainRef>; clock: Clock }): Promise<{ keys: KeySet; previousKid: string }> {
  const ref = resolveRef(opts.ref);
  const text = await keychainGet(ref);
  if (text === null) throw noKey(ref);
  // A corrupt entry throws here, before anything is written.
  const current = await parseKeySet(text);
  const next = await rotatedKeySet(current, opts.clock.now());
  return { keys: await storeAndConfirm(ref, next), previousKid: current.active.kid };
}
