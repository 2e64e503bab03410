// revocationAckSeq: the broker's quick path for a verifier's `revocation.ack`. It may take only notifications the
// schemas (JsonRpcRequest, then the method's params) accept, with the same seq; anything else goes the long way.
import { describe, expect, it } from 'vitest';
import { revocationAckSeq } from '../../broker/net/rpc';
import { JsonRpcRequest, Methods } from '../../broker/protocol';

const ACK = { jsonrpc: '2.0', method: 'revocation.ack', params: { seq: 7 } };

/** What the long way makes of a frame: the seq of a valid ack notification, or undefined. */
function bySchemas(raw: unknown): number | undefined {
  const r = JsonRpcRequest.safeParse(raw);
  if (!r.success || r.data.id !== undefined || r.data.method !== 'revocation.ack') return undefined;
  const p = Methods['revocation.ack'].params.safeParse(r.data.params);
  return p.success ? p.data.seq : undefined;
}

describe('revocationAckSeq', () => {
  it('takes an ack notification with exactly its seq', () => {
    expect(revocationAckSeq(ACK)).toBe(7);
    expect(revocationAckSeq(JSON.parse('{"params":{"seq":0},"method":"revocation.ack","jsonrpc":"2.0"}'))).toBe(0);
  });

  it.each([
    ['a call (with an id: it is answered, the long way)', { ...ACK, id: 1 }],
    ['another method', { ...ACK, method: 'revoke' }],
    ['jsonrpc 1.0', { ...ACK, jsonrpc: '1.0' }],
    ['an extra key', { ...ACK, extra: true }],
    ['no params', { jsonrpc: '2.0', method: 'revocation.ack' }],
    ['params null', { ...ACK, params: null }],
    ['params an array', { ...ACK, params: [7] }],
    ['seq a string', { ...ACK, params: { seq: '7' } }],
    ['seq a fraction', { ...ACK, params: { seq: 7.5 } }],
    ['seq past the safe integers', { ...ACK, params: { seq: 2 ** 53 } }],
    ['an extra key in params', { ...ACK, params: { seq: 7, more: 1 } }],
    ['an array', [ACK]],
    ['null', null],
  ])('leaves %s to the schemas', (_name, raw) => {
    expect(revocationAckSeq(raw)).toBeUndefined();
  });

  it('never takes what the schemas refuse, nor gives another seq, on 3,000 mutations (a fixed seed)', () => {
    let seed = 0xacc;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return (seed >>> 16) % n;
    };
    const values: unknown[] = [undefined, null, 0, 1, -3, 1.5, 2 ** 53, '2.0', 'revocation.ack', 'x', [], {}, { seq: 1 }, { seq: '1' }, { seq: 2, x: 1 }];
    const keys = ['jsonrpc', 'method', 'params', 'id', 'extra'];
    let taken = 0;
    for (let i = 0; i < 3000; i++) {
      const m: Record<string, unknown> = structuredClone(ACK);
      for (let n = rnd(3); n >= 0; n--) {
        const which = rnd(3);
        if (which === 0) m[keys[rnd(keys.length)]!] = values[rnd(values.length)];
        else if (which === 1) delete m[keys[rnd(keys.length)]!];
      }
      const quick = revocationAckSeq(m);
      if (quick !== undefined) {
        taken++;
        expect(bySchemas(m), JSON.stringify(m)).toBe(quick);
      }
    }
    expect(taken).toBeGreaterThan(300);
  });
});
