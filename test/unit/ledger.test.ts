// The ledger of live tokens (broker/core/ledger.ts): exact per-grant counts whatever the lifetimes, lookups with
// and without the expiry, early release (revoke by jti), and agreement with a plain model under random use.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TokenLedger } from '../../broker/core/ledger';
import type { HeldToken } from '../../broker/core/ledger';

type G = { id: string };
const A: G = { id: 'a' };
const B: G = { id: 'b' };
const held = (grant: G, exp: number, scopes?: readonly string[]): HeldToken<G> => ({ grant, exp, scopes, binding: undefined });

describe('TokenLedger', () => {
  it('counts exactly with mixed lifetimes: a short-lived token minted after a long-lived one leaves at its own expiry', () => {
    const l = new TokenLedger<G>();
    l.add('long', held(A, 1060), 1000);
    l.add('short', held(A, 1010), 1000);
    l.add('other', held(B, 1010), 1000);
    expect([l.count(A, 1000), l.count(B, 1000), l.size(1000)]).toEqual([2, 1, 3]);
    expect([l.count(A, 1009), l.count(B, 1009)]).toEqual([2, 1]);
    // A token is expired at its exp (as a verifier says).
    expect([l.count(A, 1010), l.count(B, 1010), l.size(1010)]).toEqual([1, 0, 1]);
    expect(l.get('short', 1010, 1010)).toBeUndefined();
    expect(l.find('long', 1010)?.exp).toBe(1060);
    expect([l.count(A, 1060), l.size(1060)]).toEqual([0, 0]);
    expect(l.find('long', 1060)).toBeUndefined();
  });

  it('finds a token by jti alone or with its expiry, and lets one go early exactly once', () => {
    const l = new TokenLedger<G>();
    const narrowed = ['repo:read:a'];
    const t = held(A, 2000, narrowed);
    l.add('j1', t, 1000);
    l.add('j2', held(A, 1500), 1000);
    expect(l.get('j1', 2000, 1000)).toBe(t);
    expect(l.get('j1', 1999, 1000)).toBeUndefined(); // another second: not this token
    expect(l.find('j1', 1000)).toBe(t);
    expect(l.find('nope', 1000)).toBeUndefined();
    expect(l.delete('j1', t)).toBe(true);
    expect(l.delete('j1', t)).toBe(false);
    expect([l.find('j1', 1000), l.count(A, 1000), l.size(1000)]).toEqual([undefined, 1, 1]);
    // A jti is held once: adding it again changes nothing.
    l.add('j2', held(A, 1500), 1000);
    expect(l.count(A, 1000)).toBe(1);
    // Already expired when added: not held.
    l.add('old', held(B, 1000), 1000);
    expect([l.count(B, 1000), l.find('old', 1000)]).toEqual([0, undefined]);
  });

  it('after a long quiet or a clock jump forward, drops every second passed; a clock set back drops nothing more', () => {
    const l = new TokenLedger<G>();
    for (let i = 0; i < 50; i++) l.add(`j${i}`, held(i % 2 ? A : B, 1001 + i * 100), 1000);
    expect(l.size(1000)).toBe(50);
    expect(l.size(3050)).toBe(29); // exp 1001..3001 gone (21), 3101..5901 held
    expect(l.size(2000)).toBe(29); // back in time: what was dropped stays dropped
    expect(l.get('j49', 5901, 2000)).toBeDefined();
    expect(l.size(1_000_000)).toBe(0);
    expect([l.count(A, 1_000_000), l.count(B, 1_000_000)]).toEqual([0, 0]);
  });

  it('a token issued while the clock was set back leaves at its own expiry once the clock passes it', () => {
    const l = new TokenLedger<G>();
    l.add('before', held(A, 1010), 1000);
    // The clock steps back 10 s and a 5 s token is issued: it expires below what was already walked.
    l.add('behind', held(A, 995), 990);
    expect(l.count(A, 990)).toBe(2);
    for (let now = 991; now <= 1009; now++) l.count(A, now);
    expect([l.count(A, 1009), l.find('behind', 1009)]).toEqual([1, undefined]);
    expect([l.count(A, 1100), l.size(1100), l.find('before', 1100)]).toEqual([0, 0, undefined]);
  });

  it('agrees with a plain list of tokens under random adds, early releases and clock steps (a fixed seed)', () => {
    type Op = { kind: 'add'; grant: number; ttl: number } | { kind: 'release'; pick: number } | { kind: 'tick'; by: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: fc.record({ kind: fc.constant('add' as const), grant: fc.integer({ min: 0, max: 2 }), ttl: fc.integer({ min: 1, max: 40 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }) },
      // Mostly forward; now and then the clock is set back (as NTP may step it).
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('tick' as const), by: fc.integer({ min: -30, max: 25 }) }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const grants: G[] = [{ id: 'g0' }, { id: 'g1' }, { id: 'g2' }];
        const l = new TokenLedger<G>();
        // A token is gone once the clock has been at or past its expiry: a clock set back later does not revive it.
        const model: { jti: string; t: HeldToken<G>; gone: boolean }[] = [];
        let now = 5_000;
        let n = 0;
        for (const o of ops) {
          if (o.kind === 'tick') now += o.by;
          else if (o.kind === 'add') {
            const t = held(grants[o.grant]!, now + o.ttl);
            const jti = `j${n++}`;
            l.add(jti, t, now);
            model.push({ jti, t, gone: false });
          } else if (model.length > 0) {
            const { jti, t, gone } = model.splice(o.pick % model.length, 1)[0]!;
            expect(l.delete(jti, t)).toBe(!gone && t.exp > now);
          }
          for (const m of model) if (m.t.exp <= now) m.gone = true;
          const live = model.filter((m) => !m.gone);
          expect(l.size(now)).toBe(live.length);
          for (const g of grants) expect(l.count(g, now)).toBe(live.filter((m) => m.t.grant === g).length);
          for (const m of model) expect(l.find(m.jti, now)).toBe(m.gone ? undefined : m.t);
        }
      }),
      { seed: 20261129, numRuns: 300 },
    );
  });
});
