// Ed25519 signatures for tokens, made off the event loop. Signing is the largest single cost of a mint (about
// 28 µs of the event loop's time here); on a worker thread, in batches of what arrived together, the event loop
// spends 23 µs per token on it alone and 2.5 µs in batches of 16 (measured; a mint under load sees batches of
// 4-6, ~7-13 µs), and the signature is made while the mint's audit record is being synced. The worker's own
// CPU per token is about twice the signature's: worth it while the event loop is what runs out.
//
// The private KeyObject is cloned into the worker (same process, same memory protection; never serialized to a
// file or a pipe). If the worker fails, every signature it owed and every later one is made on the event loop:
// slower, never lost, never refused.
import { sign as edSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface Signer {
  /** The base64url Ed25519 signature of `input` (ASCII: a JWS signing input). */
  sign(kid: string, key: KeyObject, input: string): Promise<string>;
  close(): Promise<void>;
}

export function signNow(key: KeyObject, input: string): string {
  return edSign(null, Buffer.from(input, 'latin1'), key).toString('base64url');
}

/** Signs on the calling thread (tests, tools, and the fallback when the worker is gone). */
export const inlineSigner: Signer = {
  sign: (_kid, key, input) => {
    try {
      return Promise.resolve(signNow(key, input));
    } catch (e) {
      return Promise.reject(e);
    }
  },
  close: () => Promise.resolve(),
};

// Plain CommonJS, evaluated by the Worker: the broker's bundle has no second entry point to point it at.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { sign } = require('node:crypto');
const keys = new Map();
parentPort.on('message', (m) => {
  for (const [kid, key] of m.keys) keys.set(kid, key);
  const out = [];
  for (const [kid, input] of m.jobs) {
    // null: the caller signs it itself, and gets the error there if there is one.
    try {
      out.push(sign(null, Buffer.from(input, 'latin1'), keys.get(kid)).toString('base64url'));
    } catch {
      out.push(null);
    }
  }
  parentPort.postMessage({ id: m.id, out });
});
`;

interface Job {
  kid: string;
  key: KeyObject;
  input: string;
  resolve(sig: string): void;
  reject(e: unknown): void;
}

/** One worker thread; jobs that arrive in one turn of the event loop go to it as one message. */
export class ThreadSigner implements Signer {
  #worker: Worker | undefined;
  /** The key object the worker holds for each kid (a rotated kid is sent again). */
  readonly #sent = new Map<string, KeyObject>();
  #queue: Job[] = [];
  readonly #inFlight = new Map<number, Job[]>();
  #next = 0;
  #scheduled = false;

  constructor() {
    const worker = new Worker(WORKER_SOURCE, { eval: true, name: 'writ-signer' });
    worker.unref();
    worker.on('message', (m: { id: number; out: (string | null)[] }) => this.#done(m));
    worker.on('error', () => this.#lost());
    worker.on('exit', () => this.#lost());
    this.#worker = worker;
  }

  /** True while signatures are made on the worker (false once it failed or was closed). */
  get threaded(): boolean {
    return this.#worker !== undefined;
  }

  sign(kid: string, key: KeyObject, input: string): Promise<string> {
    if (this.#worker === undefined) return inlineSigner.sign(kid, key, input);
    return new Promise((resolve, reject) => {
      this.#queue.push({ kid, key, input, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        // After the poll phase: every request read in this turn shares the message.
        setImmediate(() => this.#flush());
      }
    });
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    this.#lost();
    await worker?.terminate();
  }

  #flush(): void {
    this.#scheduled = false;
    const jobs = this.#queue;
    this.#queue = [];
    if (jobs.length === 0) return;
    const worker = this.#worker;
    if (worker === undefined) return signInline(jobs);
    const keys: [string, KeyObject][] = [];
    for (const j of jobs) {
      if (this.#sent.get(j.kid) !== j.key) {
        this.#sent.set(j.kid, j.key);
        keys.push([j.kid, j.key]);
      }
    }
    const id = this.#next++;
    this.#inFlight.set(id, jobs);
    try {
      worker.postMessage({ id, keys, jobs: jobs.map((j) => [j.kid, j.input]) });
    } catch {
      this.#lost();
    }
  }

  #done(m: { id: number; out: (string | null)[] }): void {
    const jobs = this.#inFlight.get(m.id);
    if (jobs === undefined) return;
    this.#inFlight.delete(m.id);
    jobs.forEach((j, i) => {
      const sig = m.out[i];
      if (typeof sig === 'string') j.resolve(sig);
      else signInline([j]);
    });
  }

  /** The worker is gone: what it owed, and what waits for it, is signed here. */
  #lost(): void {
    if (this.#worker === undefined) return;
    this.#worker = undefined;
    this.#sent.clear();
    const owed = [...this.#inFlight.values()].flat();
    this.#inFlight.clear();
    signInline(owed);
    // Queued jobs are signed by the pending flush, which now finds no worker.
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
