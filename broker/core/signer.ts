// Ed25519 signatures for tokens. Signing is the largest single cost of a mint (about 28 µs here); it is made on the
// broker's own thread, after the poll phase of the turn in which the requests arrived: by then each of those
// mints has appended its audit record and the record's fdatasync has started on libuv's pool, so the signatures
// are made while the disk works, and the token leaves once both are done.
//
// Until this change the signatures were made on a worker thread holding a clone of the private key. Measured
// against it in the same run (bench/ab.ts, 16 clients, three runs): the broker's CPU per mint 0.79-0.87x, tokens/s
// 1.04-1.11x over the WebSocket and 0.96-1.10x over HTTP, p99 unchanged. The worker's own CPU per token was about
// twice the signature's (the messages each way), and on two cores it competed with the sync threads and the
// event loop for the same cores. The key now stays in one isolate.
import { sign as edSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

export interface Signer {
  /** The base64url Ed25519 signature of `input` (ASCII: a JWS signing input). */
  sign(key: KeyObject, input: string): Promise<string>;
}

export function signNow(key: KeyObject, input: string): string {
  return edSign(null, Buffer.from(input, 'latin1'), key).toString('base64url');
}

/** Signs at once, on the calling thread (tests and tools). */
export const inlineSigner: Signer = {
  sign: (key, input) => {
    try {
      return Promise.resolve(signNow(key, input));
    } catch (e) {
      return Promise.reject(e);
    }
  },
};

interface Job {
  key: KeyObject;
  input: string;
  resolve(sig: string): void;
  reject(e: unknown): void;
}

/**
 * The broker's signer: signs, on this thread, every job of a turn of the event loop together in its check phase
 * (setImmediate), after what those requests wrote to the audit log has gone to the disk to sync.
 */
export class TurnSigner implements Signer {
  #queue: Job[] = [];

  sign(key: KeyObject, input: string): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.#queue.push({ key, input, resolve, reject }) === 1) setImmediate(() => this.#flush());
    });
  }

  #flush(): void {
    const jobs = this.#queue;
    this.#queue = [];
    signInline(jobs);
  }
}

function signInline(jobs: readonly Job[]): void {
  for (const j of jobs) {
    try {
      j.resolve(signNow(j.key, j.input));
    } catch (e) {
      j.reject(e);
    }
  }
}
