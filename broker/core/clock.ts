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

export const randomIds: IdSource = {
  id: (prefix) => `${prefix}_${randomBytes(12).toString('base64url')}`,
  secret: (prefix) => `${prefix}_${randomBytes(32).toString('base64url')}`,
};

export const seconds = (ms: number): number => Math.floor(ms / 1000);
