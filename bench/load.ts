// Starts bench/load-worker.ts in a worker thread and asks it for load figures: the agents' side of the benchmark,
// apart from the editor's (the test helper that answers approvals and receives the audit stream on this thread).
import { Worker } from 'node:worker_threads';
import type { LoadFigure } from './stats';

export type LoadRequest =
  | { op: 'connect'; address: string; agents: { name: string; session: string; grantId: string }[] }
  /** token.mint over each agent's WebSocket, one call in flight per client; `rate` paces them (calls/s in all). */
  | { op: 'ws'; clients: number; seconds?: number; rate?: number }
  /** RFC 8693 exchange at `url` (POST /oauth2/token), each client with its own agent's parent token. */
  | { op: 'exchange'; url: string; clients: number; seconds?: number }
  /** A form POST that answers an access token (oidc-provider's token endpoint). */
  | { op: 'post'; url: string; body: string; headers: Record<string, string>; clients: number; seconds?: number }
  /** The floor (bench/mint-floor.mjs): the same token.mint frame over bare `ws` clients on the floor's socket. */
  | { op: 'floor'; socket: string; clients: number; seconds?: number; rate?: number }
  | { op: 'close' };

const WORKER = new URL('./load-worker.ts', import.meta.url).href;

export class LoadWorker {
  #next = 0;
  readonly #waiting = new Map<number, { resolve(f: LoadFigure | null): void; reject(e: Error): void }>();

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: { id: number; figure?: LoadFigure | null; error?: string }) => {
      const w = this.#waiting.get(m.id);
      this.#waiting.delete(m.id);
      if (m.error !== undefined) w?.reject(new Error(m.error));
      else w?.resolve(m.figure ?? null);
    });
    worker.on('error', (e) => {
      for (const w of this.#waiting.values()) w.reject(e);
      this.#waiting.clear();
    });
  }

  /** The bench runs under tsx, whose loader a worker does not inherit: the worker registers it, then loads the file. */
  static start(): LoadWorker {
    const boot = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(WORKER)}); })`;
    return new LoadWorker(new Worker(boot, { eval: true }));
  }

  request(req: Extract<LoadRequest, { op: 'ws' | 'exchange' | 'post' | 'floor' }>): Promise<LoadFigure>;
  request(req: Extract<LoadRequest, { op: 'connect' | 'close' }>): Promise<null>;
  request(req: LoadRequest): Promise<LoadFigure | null> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  async stop(): Promise<void> {
    await this.request({ op: 'close' });
    await this.worker.terminate();
  }
}
