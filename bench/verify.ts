// The resource side: the verifier library (`writ/verify`) on a token it has seen (cached: expiry, revocation and
// scope only, and a read of the broker's revocation journal) and on tokens it has not (signature, claims, scopes
// parsed), against a bare Ed25519 signature check with node:crypto. All three on one core of this process; use
// reports on, as a resource would run it.
import { createPublicKey, verify as edVerify } from 'node:crypto';
import { createVerifier } from '../broker/sdk/verify';
import { opsPerSecond } from './stats';
import { AUDIENCE, SCOPE } from './mint';
import type { Bench } from './mint';

export interface VerifyFigures {
  raw: number;
  cached: number;
  firstSeen: number;
}

export async function verifyFigures(bench: Bench): Promise<VerifyFigures> {
  const { client, grantId } = bench.agents[0]!;
  // A pool of distinct tokens, cycled through a verifier that keeps one: every verify is a first sight.
  const pool: string[] = [];
  for (let i = 0; i < 512; i++) pool.push((await client.call('token.mint', { grantId })).token);
  const ask = { scope: SCOPE };
  const broker = bench.broker.discovery.httpUrl;

  const cachedVerifier = createVerifier({ broker, audience: AUDIENCE });
  // Subscribed first: each cached check then also reads the broker's revocation journal (one pread), as in use.
  await cachedVerifier.ready();
  await cachedVerifier.verify(pool[0]!, ask);
  const cached = await opsPerSecond(() => cachedVerifier.verify(pool[0]!, ask), 1000);
  await cachedVerifier.close();

  const fresh = createVerifier({ broker, audience: AUDIENCE, maxCachedTokens: 1 });
  await fresh.ready();
  let i = 0;
  const firstSeen = await opsPerSecond(() => fresh.verify(pool[i++ % pool.length]!, ask), 100);
  await fresh.close();

  const jwks = (await (await fetch(`${broker}/.well-known/jwks.json`)).json()) as { keys: import('node:crypto').JsonWebKey[] };
  const key = createPublicKey({ key: jwks.keys[0]!, format: 'jwk' });
  const token = pool[0]!;
  const dot = token.lastIndexOf('.');
  const input = Buffer.from(token.slice(0, dot));
  const sig = Buffer.from(token.slice(dot + 1), 'base64url');
  const raw = await opsPerSecond(() => {
    if (!edVerify(null, input, key, sig)) throw new Error('the signature did not verify');
  });
  return { raw, cached, firstSeen };
}
