// What agents, the CLI and resource verifiers import to talk to the broker: find it, connect, call typed
// methods, hear revocations. Reaches no broker internals: only the protocol.
import WebSocket from 'ws';
import { WritError, ERROR_CODES } from '../errors';
import type { WritErrorCode } from '../errors';
import { BlockEvent, Discovery, JsonRpcResponse, Methods, PROTOCOL_VERSION, parseRevocationEvent } from '../protocol';
import type { AgentInfo, MethodName, MethodParams, MethodResult, RevocationEvent } from '../protocol';
import { resolvePaths, readRuntimeFile } from '../paths';

/** Env var naming the broker: `unix:/path/to/writ.sock` or `ws://127.0.0.1:PORT/`. `writ exec` sets it. */
export const ENV_BROKER = 'WRIT_BROKER';
/** Env var holding an agent session credential (set by `writ exec`); never a token. */
export const ENV_SESSION = 'WRIT_SESSION';
export const ENV_TOKEN = 'WRIT_TOKEN';
/**
 * Env var: how long, in milliseconds, a client waits for a sign of life from the broker (the answer to its
 * WebSocket handshake, a pong, any frame) before it gives up with WRIT_BROKER_UNREACHABLE. A call that waits
 * for the developer's approval is not cut off: the broker answers pings meanwhile.
 */
export const ENV_BROKER_TIMEOUT = 'WRIT_BROKER_TIMEOUT_MS';
export const DEFAULT_BROKER_TIMEOUT_MS = 30_000;

/** The client's liveness window: WRIT_BROKER_TIMEOUT_MS, else 30 s. A value that is no whole number ≥ 100 is a usage error. */
export function brokerTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[ENV_BROKER_TIMEOUT];
  if (raw === undefined || raw === '') return DEFAULT_BROKER_TIMEOUT_MS;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 100) throw new WritError('WRIT_USAGE', `${ENV_BROKER_TIMEOUT} must be a whole number of milliseconds, at least 100`);
  return n;
}

/**
 * The running broker's discovery file. Only from a runtime folder owned by this user and closed to others
 * (`readRuntimeFile`): otherwise WRIT_RUNTIME_DIR_UNSAFE, never a fall back to what the file says.
 */
export function readDiscovery(env: NodeJS.ProcessEnv = process.env): Discovery {
  const { runtimeDir, discoveryPath } = resolvePaths(env);
  let text: string | undefined;
  try {
    text = readRuntimeFile(runtimeDir, discoveryPath);
  } catch (e) {
    if (e instanceof WritError) throw e;
    throw new WritError('WRIT_BROKER_UNREACHABLE', `cannot read ${discoveryPath}`, { cause: e });
  }
  if (text === undefined) {
    throw new WritError('WRIT_BROKER_UNREACHABLE', `no Writ broker found (${discoveryPath} is missing): start one with \`writ serve\` or the Writ extension`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    raw = undefined;
  }
  const d = Discovery.safeParse(raw);
  if (!d.success) throw new WritError('WRIT_BROKER_UNREACHABLE', `${discoveryPath} is not a Writ discovery file`);
  return d.data;
}

/** The broker's address: WRIT_BROKER if set, else the discovery file's Unix socket. */
export function brokerAddress(env: NodeJS.ProcessEnv = process.env): string {
  return env[ENV_BROKER] || `unix:${readDiscovery(env).socketPath}`;
}

function wsUrlFor(address: string): string {
  if (address.startsWith('unix:')) return `ws+unix://${address.slice('unix:'.length)}:/`;
  if (address.startsWith('ws://')) return address;
  throw new WritError('WRIT_USAGE', `${ENV_BROKER} must be unix:/path or ws://127.0.0.1:PORT/`);
}

/** How much of a refused upgrade's answer is read for its code. */
const MAX_REFUSAL_BYTES = 16 * 1024;

/** The error for a non-101 answer to the WebSocket upgrade: the broker's `writ_code` if it gave a known one. */
export function refusalError(status: number, body: string): WritError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = undefined;
  }
  const o = typeof parsed === 'object' && parsed !== null ? (parsed as { writ_code?: unknown; error_description?: unknown }) : {};
  const code = o.writ_code;
  if (typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code) && code !== 'WRIT_BROKER_UNREACHABLE') {
    const why = typeof o.error_description === 'string' ? o.error_description.slice(0, 300) : `HTTP ${status}`;
    return new WritError(code as WritErrorCode, `the Writ broker refused the connection: ${why}`);
  }
  return new WritError('WRIT_BROKER_UNREACHABLE', `cannot reach the Writ broker: it answered HTTP ${status}`);
}

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

export class WritClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly revocationListeners = new Set<(e: RevocationEvent) => void>();
  private readonly blockListeners = new Set<(e: BlockEvent) => void>();
  private readonly malformedListeners = new Set<() => void>();
  private readonly closeListeners = new Set<(code: number, reason: string) => void>();
  /** Why the connection ended: later calls fail at once with it instead of waiting forever. */
  private closedError: WritError | undefined;
  /** Set when this side ended a connection to a broker that stopped answering: the reason calls are given. */
  private silentError: WritError | undefined;
  private readonly liveness: NodeJS.Timeout;

  private constructor(
    private readonly ws: WebSocket,
    private readonly timeoutMs: number,
  ) {
    ws.on('message', (data) => this.onMessage(data.toString()));
    this.liveness = this.watch();
    ws.on('close', (code, reason) => {
      clearInterval(this.liveness);
      const err =
        this.silentError ??
        (code === 4001
          ? new WritError('WRIT_TOKEN_REVOKED', 'this agent was revoked')
          : code === 4029
            ? new WritError('WRIT_RATE_LIMITED', 'the broker refused this connection: this process holds too many')
            : code === 4008
              ? new WritError('WRIT_RATE_LIMITED', `the broker closed this connection: ${reason.toString() || 'no call in time'}`)
              : new WritError('WRIT_BROKER_UNREACHABLE', 'the broker closed the connection'));
      this.closedError = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      for (const l of this.closeListeners) l(code, reason.toString());
    });
  }

  /**
   * A frozen broker (stopped, or its event loop stuck) keeps the socket open and answers nothing: without this a
   * call would wait forever. A ping goes out every third of the window; one left unanswered for the whole window
   * ends the connection (WRIT_BROKER_UNREACHABLE). Any frame from the broker counts as an answer, so a call that
   * waits minutes for the developer's approval is never cut off while the broker is alive. The verdict waits one
   * turn of the event loop (`setImmediate` runs after the poll for I/O), so a pong that arrived while this
   * process itself was busy is read before the broker is called silent. The clock is performance.now(), which on
   * Linux is CLOCK_MONOTONIC and stands still while the machine is suspended: a laptop waking from sleep does not
   * find its last ping an hour old.
   */
  private watch(): NodeJS.Timeout {
    let pingedAt: number | undefined; // when the oldest unanswered ping went out
    const alive = () => (pingedAt = undefined);
    this.ws.on('pong', alive);
    this.ws.on('ping', alive);
    this.ws.on('message', alive);
    let closingSince: number | undefined; // when the broker's close frame came in, if the connection has not ended
    const timer = setInterval(() => {
      if (this.ws.readyState === WebSocket.CLOSING) {
        // A broker that sent its close frame and then froze never ends the connection; calls made meanwhile wait
        // for the end (they get the close frame's reason): it comes within the window, not ws's own 30 s.
        closingSince ??= performance.now();
        if (performance.now() - closingSince >= this.timeoutMs) this.ws.terminate();
        return;
      }
      if (this.ws.readyState !== WebSocket.OPEN) return;
      if (pingedAt === undefined) {
        pingedAt = performance.now();
        this.ws.ping();
        return;
      }
      if (performance.now() - pingedAt < this.timeoutMs) return;
      setImmediate(() => {
        if (pingedAt === undefined || performance.now() - pingedAt < this.timeoutMs || this.ws.readyState === WebSocket.CLOSED) return;
        this.silentError = new WritError('WRIT_BROKER_UNREACHABLE', `the broker did not answer for ${this.timeoutMs / 1000} s (stopped or stuck)`);
        this.ws.terminate();
      });
    }, Math.max(50, Math.floor(this.timeoutMs / 3)));
    timer.unref();
    return timer;
  }

  /**
   * Connects within WRIT_BROKER_TIMEOUT_MS (a broker that is stopped still has its socket accept, but never
   * answers the handshake). `timeoutMs` overrides the environment.
   */
  static connect(address?: string, env: NodeJS.ProcessEnv = process.env, timeoutMs: number = brokerTimeoutMs(env)): Promise<WritClient> {
    const url = wsUrlFor(address ?? brokerAddress(env));
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, headers: { host: 'localhost' } });
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new WritError('WRIT_BROKER_UNREACHABLE', `the Writ broker did not answer within ${timeoutMs / 1000} s (stopped or stuck)`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve(new WritClient(ws, timeoutMs));
      });
      ws.once('error', (e) => {
        clearTimeout(timer);
        reject(new WritError('WRIT_BROKER_UNREACHABLE', 'cannot reach the Writ broker: is it running?', { cause: e }));
      });
      // The broker refused the upgrade with an answer of its own (503 WRIT_RATE_LIMITED when full, 403 for a
      // refused origin): that code is the reason, not "is it running?". An answer without one is unreachable.
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (body.length < MAX_REFUSAL_BYTES) body += chunk;
        });
        const settle = () => {
          clearTimeout(timer);
          ws.terminate();
          reject(refusalError(res.statusCode ?? 0, body));
        };
        res.once('end', settle);
        res.once('error', settle);
        res.once('close', settle);
      });
    });
  }

  /** Connects and introduces the agent in one step. A refused hello closes the connection it was sent on. */
  static async asAgent(agent: AgentInfo & { session?: string; parentSession?: string }, address?: string, env?: NodeJS.ProcessEnv): Promise<{ client: WritClient; hello: MethodResult<'hello'> }> {
    const client = await WritClient.connect(address, env);
    const { session, parentSession, ...info } = agent;
    try {
      const hello = await client.call('hello', {
        protocol: PROTOCOL_VERSION,
        agent: info,
        ...(session ? { session } : {}),
        ...(parentSession ? { parentSession } : {}),
      });
      return { client, hello };
    } catch (e) {
      client.terminate();
      throw e;
    }
  }

  call<M extends MethodName>(method: M, params?: MethodParams<M>): Promise<MethodResult<M>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {
        resolve: (v) => {
          const r = Methods[method].result.safeParse(v);
          if (r.success) resolve(r.data as MethodResult<M>);
          else reject(new WritError('WRIT_BAD_REQUEST', `the broker's answer to ${method} did not match the protocol`));
        },
        reject,
      });
      // Closing: the broker's close frame is in, the connection not yet ended. The call stays pending and the
      // 'close' handler refuses it with the broker's reason (revoked, or closed), which is known only then.
      if (this.ws.readyState === WebSocket.CLOSING) return;
      if (this.ws.readyState !== WebSocket.OPEN) {
        this.pending.delete(id);
        return reject(this.closedError ?? new WritError('WRIT_BROKER_UNREACHABLE', 'the connection to the broker is closed'));
      }
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) }), (e) => {
        if (e && this.pending.delete(id)) reject(new WritError('WRIT_BROKER_UNREACHABLE', 'could not send to the broker', { cause: e }));
      });
    });
  }

  /** A JSON-RPC notification: nothing is answered or awaited (use reports, which must never slow their caller). */
  notify<M extends MethodName>(method: M, params?: MethodParams<M>): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ jsonrpc: '2.0', method, ...(params === undefined ? {} : { params }) }));
  }

  /**
   * `blocks` notifications (after `subscribe` with `blocks`). One that does not match the protocol goes to the
   * `malformed` listeners of onRevocation, as a malformed revocation does: what it blocked is unknown.
   */
  onBlocks(listener: (e: BlockEvent) => void): () => void {
    this.blockListeners.add(listener);
    return () => this.blockListeners.delete(listener);
  }

  /**
   * Called for each `revocation` notification, synchronously in the socket's message handler (no hop in between).
   * One whose params do not match RevocationEvent is not delivered; `malformed` hears of it instead.
   */
  onRevocation(listener: (e: RevocationEvent) => void, malformed?: () => void): () => void {
    this.revocationListeners.add(listener);
    if (malformed) this.malformedListeners.add(malformed);
    return () => {
      this.revocationListeners.delete(listener);
      if (malformed) this.malformedListeners.delete(malformed);
    };
  }

  onClose(listener: (code: number, reason: string) => void): void {
    this.closeListeners.add(listener);
  }

  /** A clean close; a broker that does not answer it within the liveness window has the connection dropped. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => this.ws.terminate(), this.timeoutMs);
      this.ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(1000);
    });
  }

  /** Drops the connection at once, without the closing handshake. */
  terminate(): void {
    this.ws.terminate();
  }

  private onMessage(text: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof raw === 'object' && raw !== null && (raw as { method?: unknown }).method === 'revocation') {
      const e = parseRevocationEvent((raw as { params?: unknown }).params);
      if (e === undefined) for (const l of this.malformedListeners) l();
      else for (const l of this.revocationListeners) l(e);
      return;
    }
    if (typeof raw === 'object' && raw !== null && (raw as { method?: unknown }).method === 'blocks') {
      const e = BlockEvent.safeParse((raw as { params?: unknown }).params);
      if (!e.success) for (const l of this.malformedListeners) l();
      else for (const l of this.blockListeners) l(e.data);
      return;
    }
    // Results are checked against their method's schema in call(); only errors need the envelope schema.
    const id = (raw as { id?: unknown }).id;
    const p = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!p) return;
    this.pending.delete(id as number);
    if (!('error' in (raw as object))) return p.resolve((raw as { result?: unknown }).result);
    const r = JsonRpcResponse.safeParse(raw);
    if (!r.success || !('error' in r.data)) {
      return p.reject(new WritError('WRIT_BAD_REQUEST', 'the broker sent an error that did not match the protocol'));
    }
    const code: WritErrorCode = r.data.error.data?.code ?? 'WRIT_INTERNAL';
    p.reject(
      new WritError((ERROR_CODES as readonly string[]).includes(code) ? code : 'WRIT_INTERNAL', r.data.error.message, {
        ...(r.data.error.data?.path === undefined ? {} : { path: r.data.error.data.path }),
        ...(r.data.error.data?.detail === undefined ? {} : { data: r.data.error.data.detail }),
      }),
    );
  }
}
