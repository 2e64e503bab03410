// The tokens the broker issued and still answers for, each until it expires: its grant, its scopes when fewer than
// the grant's, and the process it was minted for. Revoke by jti, use reports, the editor's token list, the live
// counts and the process-mismatch rule read it.
//
// Kept in one small map per second of expiry, not in one map per question. A broker minting thousands of tokens a
// second with lifetimes of minutes holds millions; a JavaScript Map that size stalls the event loop for tens of
// milliseconds whenever it grows or compacts (measured under the benchmark: 10-44 ms runs in `holdToken` and the
// old bounded binding store, the WebSocket p99's largest item after the signature), and sweeping it for expired
// entries is a pass over all of them. Here no map holds more than one second's tokens, and a second that has passed
// is dropped whole, its counts settled per grant, not per token: exact counts at O(1) per token, no pass, no stall.
import type { ProcessBinding } from './binding';

export interface HeldToken<G> {
  readonly grant: G;
  /** Epoch seconds. */
  readonly exp: number;
  /** The token's scopes when fewer than its grant's (shared between the tokens asked with the same ones). */
  readonly scopes: readonly string[] | undefined;
  /** The process it was minted for, where the kernel said which. */
  readonly binding: ProcessBinding | undefined;
}

interface Second<G> {
  readonly tokens: Map<string, HeldToken<G>>;
  /** Tokens per grant in this second: what dropping it takes off each grant's count. */
  readonly perGrant: Map<G, number>;
}

export class TokenLedger<G> {
  private readonly seconds = new Map<number, Second<G>>();
  /** Live tokens per grant (entries > 0 only). */
  private readonly perGrant = new Map<G, number>();
  private held = 0;
  /** No second below this holds tokens: everything up to it has been dropped. */
  private floor = -Infinity;

  /** Holds a token until `exp` (epoch seconds). A jti is held once: minted ids are unique. */
  add(jti: string, token: HeldToken<G>, now: number): void {
    this.expire(now);
    if (token.exp <= now) return; // expired already: nothing to answer for
    let s = this.seconds.get(token.exp);
    if (s === undefined) {
      s = { tokens: new Map(), perGrant: new Map() };
      this.seconds.set(token.exp, s);
      // A clock set back issues tokens expiring below the floor: the walk must start at their second again.
      if (token.exp < this.floor) this.floor = token.exp;
    }
    if (s.tokens.has(jti)) return;
    s.tokens.set(jti, token);
    s.perGrant.set(token.grant, (s.perGrant.get(token.grant) ?? 0) + 1);
    this.perGrant.set(token.grant, (this.perGrant.get(token.grant) ?? 0) + 1);
    this.held++;
  }

  /** The live token `jti` whose expiry is `exp` (the claims say which): one lookup. */
  get(jti: string, exp: number, now: number): HeldToken<G> | undefined {
    if (exp <= now) return undefined;
    return this.seconds.get(exp)?.tokens.get(jti);
  }

  /** The live token `jti`, its expiry unknown (a revoke by jti, a use report): one lookup per second held. */
  find(jti: string, now: number): HeldToken<G> | undefined {
    this.expire(now);
    for (const s of this.seconds.values()) {
      const t = s.tokens.get(jti);
      if (t !== undefined) return t;
    }
    return undefined;
  }

  /** Lets go of a token before it expires (revoked by jti). */
  delete(jti: string, token: HeldToken<G>): boolean {
    const s = this.seconds.get(token.exp);
    if (s === undefined || s.tokens.get(jti) !== token) return false;
    s.tokens.delete(jti);
    this.uncount(s.perGrant, token.grant, 1);
    this.uncount(this.perGrant, token.grant, 1);
    this.held--;
    return true;
  }

  /** A grant's live tokens. */
  count(grant: G, now: number): number {
    this.expire(now);
    return this.perGrant.get(grant) ?? 0;
  }

  /** Every live token held. */
  size(now: number): number {
    this.expire(now);
    return this.held;
  }

  /** Drops every second that has passed (a token is expired at its `exp`), settling the counts per grant. */
  private expire(now: number): void {
    if (now < this.floor) return;
    // Usually a second or two since the last call; after a long quiet (or a clock jump), the held seconds instead.
    if (now - this.floor <= this.seconds.size) {
      for (let t = this.floor; t <= now; t++) this.drop(t);
    } else {
      for (const t of [...this.seconds.keys()]) if (t <= now) this.drop(t);
    }
    this.floor = now + 1;
  }

  private drop(t: number): void {
    const s = this.seconds.get(t);
    if (s === undefined) return;
    this.seconds.delete(t);
    for (const [g, n] of s.perGrant) this.uncount(this.perGrant, g, n);
    this.held -= s.tokens.size;
  }

  private uncount(m: Map<G, number>, g: G, n: number): void {
    const left = (m.get(g) ?? 0) - n;
    if (left > 0) m.set(g, left);
    else m.delete(g);
  }
}
