// The watch: scores what each agent identity does as it happens and raises findings for behaviour a
// developer should see (scope creep, bursts, bad tokens, a process that is not the one a token was minted
// for, a flood of prompts). Pure logic with an injected clock; the authority acts on what it returns.
import type { Clock, IdSource } from './clock';
import { parseScopes, scopesCover, formatScope } from './scopes';

export const FINDING_KINDS = ['scope-creep', 'scope-burst', 'request-burst', 'mint-burst', 'bad-token', 'process-mismatch', 'pending-flood'] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];
export type FindingAction = 'warn' | 'block' | 'stop';

export interface Finding {
  id: string;
  kind: FindingKind;
  /** Inventory identity and the run's agent id. */
  identity: string;
  agentId: string;
  at: number;
  action: FindingAction;
  /** Safe facts that explain it (scopes, counts, rates, codes): never a token. */
  evidence: Record<string, unknown>;
}

export interface WatchConfig {
  /** New scopes (never granted to this identity before) in `scopeBurstWindowMs` that make a scope burst. */
  scopeBurstCount: number;
  scopeBurstWindowMs: number;
  /** A burst: more than `min` events in `windowMs`, and more than `factor` times the identity's own baseline rate. */
  requestBurst: { windowMs: number; min: number; factor: number };
  mintBurst: { windowMs: number; min: number; factor: number };
  /** How long the baseline rate looks back. */
  baselineMs: number;
  /** Pending approvals one agent may have before it is flagged (the hard bound is the authority's). */
  pendingFlood: number;
  actions: Record<FindingKind, FindingAction>;
}

export const DEFAULT_WATCH_CONFIG: WatchConfig = {
  scopeBurstCount: 5,
  scopeBurstWindowMs: 60_000,
  requestBurst: { windowMs: 10_000, min: 30, factor: 10 },
  mintBurst: { windowMs: 10_000, min: 600, factor: 10 },
  baselineMs: 10 * 60_000,
  pendingFlood: 3,
  actions: {
    'scope-creep': 'warn',
    'scope-burst': 'warn',
    'request-burst': 'block',
    'mint-burst': 'warn',
    'bad-token': 'warn',
    'process-mismatch': 'warn',
    'pending-flood': 'warn',
  },
};

/**
 * Event counts per identity in one-second buckets over the baseline window: constant memory and O(1)
 * per event however fast an agent goes (a list of timestamps grew to millions at mint rates).
 */
class Series {
  private readonly counts: number[];
  private readonly stamps: number[];
  /** The newest bucket written; -1 when none. */
  private last = -1;

  constructor(
    private readonly keepMs: number,
    private readonly bucketMs = 1000,
  ) {
    const n = Math.ceil(keepMs / bucketMs) + 1;
    this.counts = new Array<number>(n).fill(0);
    this.stamps = new Array<number>(n).fill(-1);
  }

  add(at: number): void {
    const b = Math.floor(at / this.bucketMs);
    const i = b % this.counts.length;
    if (this.stamps[i] !== b) {
      this.stamps[i] = b;
      this.counts[i] = 0;
    }
    this.counts[i]!++;
    this.last = Math.max(this.last, b);
  }

  /** Every event has left the window: the series counts nothing and may be dropped. */
  idle(now: number): boolean {
    return this.last < Math.floor(now / this.bucketMs) - this.counts.length + 1;
  }

  /** Events in buckets from `since` to `now` (bucket granularity); costs the number of buckets in range. */
  countBetween(since: number, now: number): number {
    const to = Math.floor(now / this.bucketMs);
    const from = Math.max(Math.floor(since / this.bucketMs), to - this.counts.length + 1);
    let n = 0;
    for (let b = from; b <= to; b++) {
      const i = b % this.counts.length;
      if (this.stamps[i] === b) n += this.counts[i]!;
    }
    return n;
  }

  /** Start of the oldest bucket still held, or undefined when empty. */
  first(now: number): number | undefined {
    const oldest = Math.floor(now / this.bucketMs) - this.counts.length + 1;
    let min: number | undefined;
    for (let i = 0; i < this.counts.length; i++) {
      const b = this.stamps[i]!;
      if (b >= oldest && this.counts[i]! > 0 && (min === undefined || b < min)) min = b;
    }
    return min === undefined ? undefined : min * this.bucketMs;
  }
}

/** New series between drops of idle ones. */
const SERIES_SWEEP_EVERY = 256;

export class Watch {
  private readonly requests = new Map<string, Series>();
  private readonly mints = new Map<string, Series>();
  private readonly newScopes = new Map<string, Series>();
  /** One open finding per (identity, kind): repeats add nothing until it is dismissed. */
  private readonly open = new Map<string, Finding>();
  /** Series created since idle ones were last dropped. */
  private created = 0;

  constructor(
    readonly config: WatchConfig,
    private readonly clock: Clock,
    private readonly ids: IdSource,
  ) {}

  /** `variant` splits one kind into separately open findings (a leaked token is not hidden by an open expired one). */
  private raise(kind: FindingKind, identity: string, agentId: string, evidence: Record<string, unknown>, variant = ''): Finding[] {
    const key = `${identity}\n${kind}\n${variant}`;
    if (this.open.has(key)) return [];
    const f: Finding = { id: this.ids.id('fnd'), kind, identity, agentId, at: this.clock.now(), action: this.config.actions[kind], evidence };
    this.open.set(key, f);
    return [f];
  }

  private series(map: Map<string, Series>, identity: string, keepMs: number): Series {
    let s = map.get(identity);
    if (!s) {
      // Each series is a few KB; identities that went quiet hold nothing, so they are dropped (amortised).
      if (++this.created >= SERIES_SWEEP_EVERY) this.dropIdle();
      map.set(identity, (s = new Series(keepMs)));
    }
    return s;
  }

  private dropIdle(): void {
    this.created = 0;
    const now = this.clock.now();
    for (const map of [this.requests, this.mints, this.newScopes]) {
      for (const [id, s] of map) if (s.idle(now)) map.delete(id);
    }
  }

  /** The inventory forgot this identity: its rate history and open findings go with it. */
  forget(identity: string): void {
    this.requests.delete(identity);
    this.mints.delete(identity);
    this.newScopes.delete(identity);
    for (const [key, f] of this.open) if (f.identity === identity) this.open.delete(key);
  }

  /** Per-identity series held (requests, mints, new scopes): for tests of the bounds. */
  trackedSeries(): number {
    return this.requests.size + this.mints.size + this.newScopes.size;
  }

  private burst(map: Map<string, Series>, identity: string, rule: WatchConfig['requestBurst']): { count: number; baselinePerWindow: number } | null {
    const now = this.clock.now();
    const s = this.series(map, identity, this.config.baselineMs);
    s.add(now);
    const windowStart = now - rule.windowMs;
    const count = s.countBetween(windowStart + 1, now);
    if (count <= rule.min) return null;
    // The identity's own rate before this window, scaled to one window. A new identity has no history, so
    // its baseline is the floor min/factor: it must exceed `min` to be flagged at all.
    const first = s.first(now) ?? now;
    const before = s.countBetween(first, windowStart);
    const span = Math.max(rule.windowMs, windowStart - first);
    const baselinePerWindow = Math.max(rule.min / rule.factor, (before * rule.windowMs) / span);
    if (count <= rule.factor * baselinePerWindow) return null;
    return { count, baselinePerWindow: Math.round(baselinePerWindow * 100) / 100 };
  }

  /** A task request: scope creep against what this identity was granted before, scope bursts, request bursts. */
  onRequest(identity: string, agentId: string, asked: readonly string[], grantedBefore: readonly string[]): Finding[] {
    const out: Finding[] = [];
    const b = this.burst(this.requests, identity, this.config.requestBurst);
    if (b) out.push(...this.raise('request-burst', identity, agentId, { requests: b.count, windowMs: this.config.requestBurst.windowMs, baselinePerWindow: b.baselinePerWindow }));
    if (grantedBefore.length > 0) {
      const before = parseScopes(grantedBefore);
      const fresh = parseScopes(asked).filter((s) => !scopesCover(before, [s]));
      if (fresh.length > 0) {
        out.push(...this.raise('scope-creep', identity, agentId, { newScopes: fresh.map(formatScope), grantedBefore: grantedBefore.length }));
        const now = this.clock.now();
        const s = this.series(this.newScopes, identity, this.config.scopeBurstWindowMs);
        for (let i = 0; i < fresh.length; i++) s.add(now);
        const n = s.countBetween(now - this.config.scopeBurstWindowMs + 1, now);
        if (n >= this.config.scopeBurstCount) {
          out.push(...this.raise('scope-burst', identity, agentId, { newScopes: n, windowMs: this.config.scopeBurstWindowMs }));
        }
      }
    }
    return out;
  }

  onMint(identity: string, agentId: string): Finding[] {
    const b = this.burst(this.mints, identity, this.config.mintBurst);
    return b ? this.raise('mint-burst', identity, agentId, { mints: b.count, windowMs: this.config.mintBurst.windowMs, baselinePerWindow: b.baselinePerWindow }) : [];
  }

  /**
   * A revoked or expired token, or one minted for another agent, presented back to the broker. `identity` and
   * `agentId` are the agent the token was minted for; `more` names the presenter where that is the point.
   */
  onBadToken(identity: string, agentId: string, code: string, jti?: string, more: Record<string, unknown> = {}): Finding[] {
    return this.raise('bad-token', identity, agentId, { code, ...(jti ? { jti } : {}), ...more }, code);
  }

  /** A token presented by a process that is neither the one it was minted for nor one of that process's descendants. */
  onProcessMismatch(
    identity: string,
    agentId: string,
    expected: { pid: number; exe?: string },
    actual: { pid: number; exe?: string },
    more: Record<string, unknown> = {},
  ): Finding[] {
    return this.raise('process-mismatch', identity, agentId, { expected, actual, ...more });
  }

  onPending(identity: string, agentId: string, pending: number): Finding[] {
    return pending >= this.config.pendingFlood ? this.raise('pending-flood', identity, agentId, { pending }) : [];
  }

  openFindings(): Finding[] {
    return [...this.open.values()];
  }

  /** The developer looked and says it is expected: the finding closes and may be raised again later. */
  dismiss(findingId: string): Finding | undefined {
    for (const [key, f] of this.open) {
      if (f.id === findingId) {
        this.open.delete(key);
        return f;
      }
    }
    return undefined;
  }
}
