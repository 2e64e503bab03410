// Time and randomness are injected so TTL logic and ids are testable (jose's `currentDate` idea).
import { randomBytes } from 'node:crypto';

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock that tests move by hand. */
export class ManualClock implements Clock {
  constructor(private t: number = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
  set(t: number): void {
    this.t = t;
  }
}

export interface IdSource {
  /** A random, URL-safe identifier with a readable prefix, e.g. `agt_3k9…`. */
  id(prefix: string): string;
  /** A secret: 32 random bytes, base64url. */
  secret(prefix: string): string;
}

/**
 * Ids draw from a pooled buffer of CSPRNG bytes: one randomBytes call per 341 ids instead of one per mint,
 * which showed up on the mint path. Secrets always get their own fresh call.
 */
function pooledIds(): IdSource {
  let pool = Buffer.alloc(0);
  let offset = 0;
  return {
    id: (prefix) => {
      if (offset + 12 > pool.length) {
        pool = randomBytes(4092);
        offset = 0;
      }
      const s = pool.toString('base64url', offset, offset + 12);
      offset += 12;
      return `${prefix}_${s}`;
    },
    secret: (prefix) => `${prefix}_${randomBytes(32).toString('base64url')}`,
  };
}

export const randomIds: IdSource = pooledIds();

export const seconds = (ms: number): number => Math.floor(ms / 1000);
