// The pure half of the signing key set: the stored JSON, its validation, kids and JWKS windows. No keychain.
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import { describe, expect, it } from 'vitest';
import { isWritError } from '../../broker/errors';
import { ManualClock } from '../../broker/core/clock';
import { KeySet, ed25519Kid, newSigningKey, parseKeySet, rotatedKeySet, serializeKeySet } from '../../broker/core/keys';
import type { RetiredKey } from '../../broker/core/keys';

const T0 = Date.UTC(2026, 0, 1);

async function expectCorrupt(text: string, secretParts: string[] = []): Promise<void> {
  const e = await parseKeySet(text).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isWritError(e, 'WRIT_KEYCHAIN_CORRUPT'), `expected WRIT_KEYCHAIN_CORRUPT, got ${String(e)}`).toBe(true);
  const err = e as Error;
  for (const s of secretParts) {
    expect(err.message).not.toContain(s);
    expect(JSON.stringify(err)).not.toContain(s);
    expect(String(err.cause ?? '')).not.toContain(s);
  }
}

function freshKeyJwk(): { d: string; x: string } {
  const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  return { d: jwk.d!, x: jwk.x! };
}

async function storedText(): Promise<{ text: string; d: string; x: string; kid: string }> {
  const { d, x } = freshKeyJwk();
  const kid = await ed25519Kid(x);
  return { text: JSON.stringify({ v: 1, active: { kid, d, x, createdAt: T0 }, retired: [] }), d, x, kid };
}

describe('keys: stored form', () => {
  it('serializes to exactly {v, active:{kid,d,x,createdAt}, retired:[{kid,x,createdAt,retiredAt}]}', async () => {
    const clock = new ManualClock(T0);
    const ks1 = new KeySet(await newSigningKey(clock.now()), []);
    clock.advance(60_000);
    const ks2 = await rotatedKeySet(ks1, clock.now());
    const stored = JSON.parse(serializeKeySet(ks2)) as Record<string, unknown>;
    expect(Object.keys(stored)).toEqual(['v', 'active', 'retired']);
    expect(stored.v).toBe(1);
    const active = stored.active as Record<string, unknown>;
    expect(Object.keys(active)).toEqual(['kid', 'd', 'x', 'createdAt']);
    expect(active).toMatchObject({ kid: ks2.active.kid, x: ks2.active.publicJwk.x, createdAt: T0 + 60_000 });
    // A retired key keeps only its public half.
    expect(stored.retired).toEqual([{ kid: ks1.active.kid, x: ks1.active.publicJwk.x, createdAt: T0, retiredAt: T0 + 60_000 }]);
  });

  it('round-trips: the parsed key set signs and verifies like the original', async () => {
    const clock = new ManualClock(T0);
    let ks = new KeySet(await newSigningKey(clock.now()), []);
    clock.advance(1000);
    ks = await rotatedKeySet(ks, clock.now());
    clock.advance(1000);
    ks = await rotatedKeySet(ks, clock.now());
    const text = serializeKeySet(ks);
    const back = await parseKeySet(text);

    expect(back.active.kid).toBe(ks.active.kid);
    expect(back.active.createdAt).toBe(ks.active.createdAt);
    expect(back.active.publicJwk).toEqual(ks.active.publicJwk);
    expect(back.retired.map((r) => [r.kid, r.createdAt, r.retiredAt])).toEqual(ks.retired.map((r) => [r.kid, r.createdAt, r.retiredAt]));
    expect(serializeKeySet(back)).toBe(text);

    const data = Buffer.from('checkpoint');
    expect(verify(null, data, ks.active.publicKey, sign(null, data, back.active.privateKey))).toBe(true);
    for (const r of back.retired) {
      expect(r.publicKey.export({ format: 'jwk' }).x).toBe(r.publicJwk.x);
    }
  });

  it('publicJwk is the OKP/Ed25519 JWK with kid, alg and use, and no private part', async () => {
    const k = await newSigningKey(T0);
    expect(k.publicJwk).toEqual({ kty: 'OKP', crv: 'Ed25519', x: k.publicKey.export({ format: 'jwk' }).x, kid: k.kid, alg: 'EdDSA', use: 'sig' });
    expect(k.publicJwk).not.toHaveProperty('d');
  });

  it("kid is jose's RFC 7638 thumbprint of the public key", async () => {
    const k = await newSigningKey(T0);
    expect(k.kid).toBe(await calculateJwkThumbprint(k.publicKey.export({ format: 'jwk' }) as never, 'sha256'));
    // Known vector shape: 43 base64url characters (SHA-256).
    expect(k.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const { x } = freshKeyJwk();
    expect(await ed25519Kid(x)).toBe(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x }, 'sha256'));
  });
});

describe('keys: a corrupt entry is WRIT_KEYCHAIN_CORRUPT, without key material in the error', () => {
  it('not JSON, empty, or JSON of the wrong kind', async () => {
    const { text, d } = await storedText();
    await expectCorrupt('');
    await expectCorrupt('not json');
    await expectCorrupt(text.slice(0, -3), [d]); // truncated: JSON.parse would quote the input
    await expectCorrupt('null');
    await expectCorrupt('[]');
    await expectCorrupt('"a string"');
  });

  it('schema violations', async () => {
    const { text, d } = await storedText();
    const base = JSON.parse(text) as { v: number; active: Record<string, unknown>; retired: unknown[] };
    const variants: unknown[] = [
      { ...base, v: 2 },
      { ...base, active: { ...base.active, d: undefined } },
      { ...base, active: { ...base.active, d: `${d}A` } }, // 33 bytes
      { ...base, active: { ...base.active, x: 'short' } },
      { ...base, active: { ...base.active, createdAt: -1 } },
      { ...base, active: { ...base.active, createdAt: 1.5 } },
      { ...base, active: { ...base.active, extra: true } },
      { ...base, retired: [{ kid: base.active.kid, x: base.active.x, createdAt: T0 }] }, // no retiredAt
      { ...base, retired: [{ kid: base.active.kid, x: base.active.x, d, createdAt: T0, retiredAt: T0 }] }, // a retired private half
      { v: 1, active: base.active }, // no retired list
    ];
    for (const v of variants) await expectCorrupt(JSON.stringify(v), [d]);
  });

  it('keys that do not hang together', async () => {
    const a = await storedText();
    const other = freshKeyJwk();
    const otherKid = await ed25519Kid(other.x);
    const base = JSON.parse(a.text) as { v: number; active: { kid: string; d: string; x: string; createdAt: number }; retired: unknown[] };
    // d of one key with x (and kid) of another.
    await expectCorrupt(JSON.stringify({ ...base, active: { ...base.active, x: other.x, kid: otherKid } }), [a.d]);
    // kid that is not the thumbprint.
    await expectCorrupt(JSON.stringify({ ...base, active: { ...base.active, kid: otherKid } }), [a.d]);
    // retired key: wrong kid, duplicate kid, retired before created.
    await expectCorrupt(JSON.stringify({ ...base, retired: [{ kid: a.kid, x: other.x, createdAt: T0, retiredAt: T0 }] }), [a.d]);
    await expectCorrupt(JSON.stringify({ ...base, retired: [{ kid: a.kid, x: a.x, createdAt: T0, retiredAt: T0 }] }), [a.d]);
    await expectCorrupt(JSON.stringify({ ...base, retired: [{ kid: otherKid, x: other.x, createdAt: T0, retiredAt: T0 - 1 }] }), [a.d]);
    // The well-formed original still parses.
    expect((await parseKeySet(a.text)).active.kid).toBe(a.kid);
  });
});

describe('keys: JWKS windows', () => {
  // Three keys: k1 created at T0 and retired at T0+1h, k2 created at T0+1h and retired at T0+3h, k3 active.
  const HOUR = 3_600_000;
  const MAX_TTL = 3600; // seconds: a retired key stays published an hour (the ceiling of any token's lifetime)

  async function threeKeys(): Promise<{ ks: KeySet; k1: string; k2: string; k3: string }> {
    const clock = new ManualClock(T0);
    const first = new KeySet(await newSigningKey(clock.now()), []);
    clock.set(T0 + HOUR);
    const second = await rotatedKeySet(first, clock.now());
    clock.set(T0 + 3 * HOUR);
    const third = await rotatedKeySet(second, clock.now());
    return { ks: third, k1: first.active.kid, k2: second.active.kid, k3: third.active.kid };
  }

  const kids = (ks: KeySet, now: number): string[] => ks.jwks(now).keys.map((k) => k.kid!);

  it('keeps a retired key exactly while tokens it signed may be live', async () => {
    const { ks, k1, k2, k3 } = await threeKeys();
    expect(ks.retired.map((r: RetiredKey) => [r.kid, r.createdAt, r.retiredAt])).toEqual([
      [k1, T0, T0 + HOUR],
      [k2, T0 + HOUR, T0 + 3 * HOUR],
    ]);
    // k1 retired at T0+1h: published until T0+2h (exclusive), whatever this run's maximum lifetime.
    expect(kids(ks, T0 + HOUR + MAX_TTL * 1000 - 1)).toEqual([k3, k1, k2]);
    expect(kids(ks, T0 + HOUR + MAX_TTL * 1000)).toEqual([k3, k2]);
    // k2 retired at T0+3h: published until T0+4h (exclusive).
    expect(kids(ks, T0 + 3 * HOUR)).toEqual([k3, k2]);
    expect(kids(ks, T0 + 3 * HOUR + MAX_TTL * 1000 - 1)).toEqual([k3, k2]);
    expect(kids(ks, T0 + 3 * HOUR + MAX_TTL * 1000)).toEqual([k3]);
    expect(kids(ks, T0 + 365 * 24 * HOUR)).toEqual([k3]);
  });

  it('publishes public JWKs only, as copies', async () => {
    const { ks } = await threeKeys();
    const set = ks.jwks(T0 + 3 * HOUR);
    for (const k of set.keys) {
      expect(Object.keys(k).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x']);
      // Each published key is the key its kid names.
      expect(await calculateJwkThumbprint(k, 'sha256')).toBe(k.kid);
    }
    set.keys[0]!.kid = 'tampered';
    expect(ks.active.publicJwk.kid).not.toBe('tampered');
  });

  it('publicKeys() holds every key ever, whatever the time', async () => {
    const { ks, k1, k2, k3 } = await threeKeys();
    const m = ks.publicKeys();
    expect([...m.keys()].sort()).toEqual([k1, k2, k3].sort());
    for (const [kid, key] of m) {
      expect(await calculateJwkThumbprint(key.export({ format: 'jwk' }) as never, 'sha256')).toBe(kid);
    }
    expect(m.get(k3)!.export({ format: 'jwk' })).toEqual(createPublicKey(ks.active.privateKey).export({ format: 'jwk' }));
  });

  it('rotation retires the active key at the given time and makes a new one', async () => {
    const ks = new KeySet(await newSigningKey(T0), []);
    const next = await rotatedKeySet(ks, T0 + 5000);
    expect(next.active.kid).not.toBe(ks.active.kid);
    expect(next.active.createdAt).toBe(T0 + 5000);
    expect(next.retired).toHaveLength(1);
    expect(next.retired[0]).toMatchObject({ kid: ks.active.kid, createdAt: T0, retiredAt: T0 + 5000 });
    expect(next.retired[0]).not.toHaveProperty('privateKey');
  });
});
