// The signing thread: what it signs verifies with the right key for the right input, however many arrive at once,
// and nothing it owes is lost when it goes away.
import { generateKeyPairSync, verify } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ThreadSigner } from '../../broker/core/signer';

const a = generateKeyPairSync('ed25519');
const b = generateKeyPairSync('ed25519');
const valid = (pub: typeof a.publicKey, input: string, sig: string) => verify(null, Buffer.from(input, 'latin1'), pub, Buffer.from(sig, 'base64url'));

describe('ThreadSigner', () => {
  let signer: ThreadSigner | undefined;
  afterEach(async () => {
    await signer?.close();
    signer = undefined;
  });

  it('signs a burst in one turn, each signature for its own input', async () => {
    signer = new ThreadSigner();
    const inputs = Array.from({ length: 200 }, (_, i) => `header.payload-${i}`);
    const sigs = await Promise.all(inputs.map((input) => signer!.sign('k1', a.privateKey, input)));
    expect(signer.threaded).toBe(true);
    expect(sigs.every((sig, i) => valid(a.publicKey, inputs[i]!, sig))).toBe(true);
    // Not interchangeable: a signature belongs to its input.
    expect(valid(a.publicKey, inputs[1]!, sigs[0]!)).toBe(false);
    expect(new Set(sigs).size).toBe(200);
  });

  it('keeps keys apart by kid, and takes a new key under a kid it has seen', async () => {
    signer = new ThreadSigner();
    const [s1, s2] = await Promise.all([signer.sign('k1', a.privateKey, 'x.y'), signer.sign('k2', b.privateKey, 'x.y')]);
    expect(valid(a.publicKey, 'x.y', s1)).toBe(true);
    expect(valid(b.publicKey, 'x.y', s2)).toBe(true);
    expect(valid(b.publicKey, 'x.y', s1)).toBe(false);
    const s3 = await signer.sign('k1', b.privateKey, 'x.y');
    expect(valid(b.publicKey, 'x.y', s3)).toBe(true);
  });

  it('signs what it owed on the calling thread when the worker goes, and every later request too', async () => {
    signer = new ThreadSigner();
    await signer.sign('k1', a.privateKey, 'warm');
    const owed = Array.from({ length: 50 }, (_, i) => signer!.sign('k1', a.privateKey, `owed-${i}`));
    await signer.close();
    expect(signer.threaded).toBe(false);
    const sigs = await Promise.all(owed);
    expect(sigs.every((sig, i) => valid(a.publicKey, `owed-${i}`, sig))).toBe(true);
    expect(valid(a.publicKey, 'after', await signer.sign('k1', a.privateKey, 'after'))).toBe(true);
  });

  it('rejects a job whose key cannot sign, and goes on signing the others', async () => {
    signer = new ThreadSigner();
    const x = generateKeyPairSync('x25519'); // a key that cannot make signatures
    const [bad, good] = await Promise.allSettled([signer.sign('kx', x.privateKey, 'x.y'), signer.sign('k1', a.privateKey, 'x.y')]);
    expect(bad.status).toBe('rejected');
    expect(good.status === 'fulfilled' && valid(a.publicKey, 'x.y', good.value)).toBe(true);
    expect(signer.threaded).toBe(true);
  });
});
