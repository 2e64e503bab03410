// The broker's signer: what it signs verifies with the right key for the right input, however many arrive at once;
// a turn's signatures are made after that turn's other work (the audit records' writes) has been done.
import { generateKeyPairSync, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TurnSigner } from '../../broker/core/signer';

const a = generateKeyPairSync('ed25519');
const b = generateKeyPairSync('ed25519');
const valid = (pub: typeof a.publicKey, input: string, sig: string) => verify(null, Buffer.from(input, 'latin1'), pub, Buffer.from(sig, 'base64url'));

describe('TurnSigner', () => {
  it('signs a burst in one turn, each signature for its own input', async () => {
    const signer = new TurnSigner();
    const inputs = Array.from({ length: 200 }, (_, i) => `header.payload-${i}`);
    const sigs = await Promise.all(inputs.map((input) => signer.sign(a.privateKey, input)));
    expect(sigs.every((sig, i) => valid(a.publicKey, inputs[i]!, sig))).toBe(true);
    // Not interchangeable: a signature belongs to its input.
    expect(valid(a.publicKey, inputs[1]!, sigs[0]!)).toBe(false);
    expect(new Set(sigs).size).toBe(200);
  });

  it('signs with the key each job names', async () => {
    const signer = new TurnSigner();
    const [s1, s2] = await Promise.all([signer.sign(a.privateKey, 'x.y'), signer.sign(b.privateKey, 'x.y')]);
    expect(valid(a.publicKey, 'x.y', s1)).toBe(true);
    expect(valid(b.publicKey, 'x.y', s2)).toBe(true);
    expect(valid(b.publicKey, 'x.y', s1)).toBe(false);
  });

  it("signs after the turn's microtasks and I/O callbacks, so a mint's record is already syncing", async () => {
    const signer = new TurnSigner();
    const order: string[] = [];
    const signed = signer.sign(a.privateKey, 'x.y').then(() => order.push('signed'));
    // The audit log starts its write (and its sync) in a microtask of the same turn.
    queueMicrotask(() => order.push('audit write'));
    process.nextTick(() => order.push('next tick'));
    await signed;
    expect(order).toHaveLength(3);
    expect(order[2]).toBe('signed');
  });

  it('keeps signing in later turns', async () => {
    const signer = new TurnSigner();
    const first = await signer.sign(a.privateKey, 'one.1');
    await new Promise((r) => setImmediate(r));
    const second = await signer.sign(a.privateKey, 'two.2');
    expect(valid(a.publicKey, 'one.1', first)).toBe(true);
    expect(valid(a.publicKey, 'two.2', second)).toBe(true);
  });

  it('rejects a job whose key cannot sign, and signs the others of its turn', async () => {
    const signer = new TurnSigner();
    const x = generateKeyPairSync('x25519'); // a key that cannot make signatures
    const [bad, good] = await Promise.allSettled([signer.sign(x.privateKey, 'x.y'), signer.sign(a.privateKey, 'x.y')]);
    expect(bad.status).toBe('rejected');
    expect(good.status === 'fulfilled' && valid(a.publicKey, 'x.y', good.value)).toBe(true);
  });
});
