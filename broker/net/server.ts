// Listeners: one handler on a Unix socket (0600, in a 0700 folder) and on 127.0.0.1. WebSocket upgrades are
// checked in the HTTP server's `upgrade` event (ws's recommended place); frames are JSON-RPC 2.0 (see rpc.ts).
import { createServer } from 'node:http';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { chmodSync, unlinkSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { WritError } from '../errors';
import { requestUrl } from './http';
import { peerAddressOf } from './peer';
import type { PeerAddress } from './peer';

/** ws closes a connection whose frame exceeds this; smaller frames over MAX_FRAME_BYTES get an error reply instead. */
export const HARD_FRAME_LIMIT = 1024 * 1024;

/**
 * WebSocket connections open at once, however busy (`WRIT_MAX_CONNECTIONS` lowers or raises it). A connection
 * being closed does not count. A new one past this makes room instead of being refused: the oldest connection
 * waiting for its first frame is closed (CLOSE_NO_CALL), else the oldest of the process holding the most
 * (CLOSE_TOO_MANY). So a flood from a few processes cannot keep out one honest connection. Only when nothing can
 * be closed (every slot is an upgrade under way) is the upgrade refused: 503 with `WRIT_RATE_LIMITED`.
 */
export const MAX_CONNECTIONS = 4096;
/**
 * Of MAX_CONNECTIONS, this many are the Unix socket's alone (0600, in a 0700 folder: this user's processes): loopback
 * TCP, which any local user may reach, holds at most the rest, and makes room only among TCP connections.
 */
export const UNIX_RESERVED_CONNECTIONS = 64;
/**
 * The broker's own close (CLOSE_NO_CALL, CLOSE_TOO_MANY, or any other) waits this long for the peer's close frame,
 * then drops the connection: ws would wait 30 s, and a peer that never answers would hold its slot meanwhile.
 * A connection being closed no longer counts toward any limit.
 */
export const CLOSE_GRACE_MS = 1_000;
/**
 * Connections that have not sent their first frame yet. A new one past this closes the oldest of them
 * (CLOSE_NO_CALL), so a flood of connections that never call cannot keep a client that does call out.
 */
export const MAX_IDLE_CONNECTIONS = 1024;
/**
 * How long a WebSocket connection may stay open without sending its first frame; it is then closed with
 * CLOSE_NO_CALL. Every Writ client (the CLI, agents, `writ exec`, verifiers, `writ gate`) calls at once.
 */
export const FIRST_CALL_TIMEOUT_MS = 10_000;
/** How long a new connection has to send its first frame before a full broker may close it to make room. */
export const FIRST_FRAME_GRACE_MS = 1_000;
/** Close code of a connection that sent nothing within FIRST_CALL_TIMEOUT_MS. */
export const CLOSE_NO_CALL = 4008;
/** Close code of a connection past MAX_CONNECTIONS_PER_PROCESS from one process (root.ts). */
export const CLOSE_TOO_MANY = 4029;
/** WebSocket connections one process (pid and start time, from the kernel) may hold open at once. */
export const MAX_CONNECTIONS_PER_PROCESS = 128;

/** A Host header the broker answers: a loopback name, exactly, with an optional port (DNS rebinding). */
const LOOPBACK_HOST = /^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/;

export interface ConnectionContext {
  transport: 'unix' | 'tcp';
  /** The client's port on loopback TCP (for finding its process), else undefined. */
  remotePort: number | undefined;
  /** Taken from the raw socket at accept time: what peer.ts needs to find the process on the other end. */
  peer?: PeerAddress;
  /**
   * Names the process holding this connection (`pid:startTime`, from the kernel) once it is known: connections
   * are made room for from the process holding the most. Returns how many open connections that process holds,
   * this one included.
   */
  own(owner: string): number;
}

/**
 * ws's WebSocket, told when it starts closing: whoever closes it (the broker, or ws answering the peer's close
 * frame). ws calls `close()` on the instance for both.
 */
class TrackedWebSocket extends WebSocket {
  onClosing: (() => void) | undefined;

  override close(code?: number, data?: string | Buffer): void {
    super.close(code, data);
    const hook = this.onClosing;
    this.onClosing = undefined;
    hook?.();
  }
}

/** Why a request is refused before any handler sees it, or null when it may proceed. */
export function refuseReason(req: IncomingMessage, transport: 'unix' | 'tcp'): WritError | null {
  // Browsers always send Origin on WebSocket upgrades and on cross-site POSTs; agents and CLIs do not.
  if (req.headers.origin !== undefined) {
    return new WritError('WRIT_FORBIDDEN_ORIGIN', 'requests from web pages are refused');
  }
  if (!LOOPBACK_HOST.test((req.headers.host ?? '').toLowerCase())) {
    return new WritError('WRIT_FORBIDDEN_ORIGIN', 'the Host header must name a loopback address');
  }
  if (transport === 'tcp') {
    const addr = req.socket.remoteAddress ?? '';
    if (!(addr.startsWith('127.') || addr === '::1' || addr.startsWith('::ffff:127.'))) {
      return new WritError('WRIT_FORBIDDEN_ORIGIN', 'only loopback peers are served');
    }
  }
  return null;
}

function refusalBody(refused: WritError, error = 'forbidden'): string {
  return JSON.stringify({ error, error_description: refused.message, writ_code: refused.code });
}

/** A whole HTTP answer written on a raw socket, which is then closed. */
function rawAnswer(status: string, body: string): string {
  return `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/**
 * The answer to a request Node could not parse (its `clientError`): headers past Node's limit (16 KB) 431, a
 * Content-Length too large to be a number 413 (`WRIT_FRAME_TOO_LARGE`); any other framing fault (Transfer-Encoding
 * with Content-Length, two Content-Lengths, a bad chunk size, a bad header) 400 `WRIT_BAD_REQUEST`. Undefined for
 * what is not a parse error (a reset, a timeout): the connection is then just closed.
 */
export function clientErrorAnswer(err: { code?: string; reason?: string; message?: string }): string | undefined {
  const code = err.code ?? '';
  const why = err.reason ?? err.message ?? '';
  if (code === 'HPE_HEADER_OVERFLOW') {
    return rawAnswer('431 Request Header Fields Too Large', JSON.stringify({ error: 'invalid_request', error_description: 'the request headers are too large', writ_code: 'WRIT_FRAME_TOO_LARGE' }));
  }
  if (code === 'HPE_INVALID_CONTENT_LENGTH' && /overflow/i.test(why)) {
    return rawAnswer('413 Payload Too Large', JSON.stringify({ error: 'invalid_request', error_description: 'the request body is too large', writ_code: 'WRIT_FRAME_TOO_LARGE' }));
  }
  if (code.startsWith('HPE_')) {
    return rawAnswer('400 Bad Request', JSON.stringify({ error: 'invalid_request', error_description: 'the request is not well-formed HTTP/1.1', writ_code: 'WRIT_BAD_REQUEST' }));
  }
  return undefined;
}

export interface Listeners {
  socketPath: string;
  port: number;
  httpUrl: string;
  wsUrl: string;
  close(): Promise<void>;
}

export interface ListenOptions {
  socketPath: string;
  host?: string;
  port?: number;
  heartbeatMs?: number;
  /** MAX_CONNECTIONS, UNIX_RESERVED_CONNECTIONS and MAX_IDLE_CONNECTIONS unless given. */
  maxConnections?: number;
  unixReserved?: number;
  maxIdleConnections?: number;
  /** FIRST_CALL_TIMEOUT_MS unless given. */
  firstCallTimeoutMs?: number;
  http: (req: IncomingMessage, res: import('node:http').ServerResponse) => void;
  onConnection: (ws: WebSocket, ctx: ConnectionContext) => void;
}

export async function listen(opts: ListenOptions): Promise<Listeners> {
  const wss = new WebSocketServer({ noServer: true, maxPayload: HARD_FRAME_LIMIT, perMessageDeflate: false, WebSocket: TrackedWebSocket });
  const alive = new WeakMap<WebSocket, boolean>();
  const maxConnections = opts.maxConnections ?? MAX_CONNECTIONS;
  const unixReserved = Math.min(opts.unixReserved ?? UNIX_RESERVED_CONNECTIONS, Math.floor(maxConnections / 2));
  const limitOf = (transport: 'unix' | 'tcp') => (transport === 'unix' ? maxConnections : maxConnections - unixReserved);
  const maxIdle = opts.maxIdleConnections ?? MAX_IDLE_CONNECTIONS;
  const firstCallMs = opts.firstCallTimeoutMs ?? FIRST_CALL_TIMEOUT_MS;
  /** Open connections that have sent nothing yet, oldest first, with when they opened (performance.now()). */
  const idle = new Map<WebSocket, { timer: NodeJS.Timeout; at: number }>();
  const called = (ws: WebSocket) => {
    clearTimeout(idle.get(ws)?.timer);
    idle.delete(ws);
  };
  /** A client is given this long to send its first frame before a full broker may close it for a newcomer. */
  const grace = Math.min(FIRST_FRAME_GRACE_MS, firstCallMs / 2);
  /** Upgrades accepted and not yet open (ws finishes them later): counted against the cap with the open ones. */
  const upgrading = { unix: 0, tcp: 0 };
  /** Open connections not being closed, oldest first, with their transport and owning process ('' until known). */
  const live = new Map<WebSocket, { transport: 'unix' | 'tcp'; owner: string }>();
  let tcpCount = 0;
  /** owner → its live connections, oldest first. */
  const byOwner = new Map<string, Set<WebSocket>>();
  const unown = (ws: WebSocket, owner: string) => {
    const set = byOwner.get(owner);
    set?.delete(ws);
    if (set?.size === 0) byOwner.delete(owner);
  };
  /** Takes a connection out of every count, at once: it is closing (or closed). */
  const forget = (ws: WebSocket) => {
    const entry = live.get(ws);
    if (entry === undefined) return;
    live.delete(ws);
    if (entry.transport === 'tcp') tcpCount--;
    unown(ws, entry.owner);
    called(ws);
  };
  const inUse = (transport: 'unix' | 'tcp') =>
    transport === 'unix' ? live.size + upgrading.unix + upgrading.tcp : tcpCount + upgrading.tcp;
  /**
   * The connection to close to make room for a new one on `transport`: the oldest still waiting for its first
   * frame, else the oldest of the process holding the most (connections whose process is not known yet count as
   * one process). A TCP newcomer only displaces TCP connections (the Unix socket's share is its own).
   */
  const victim = (transport: 'unix' | 'tcp'): { ws: WebSocket; idle: boolean } | undefined => {
    const fits = (ws: WebSocket) => transport === 'unix' || live.get(ws)?.transport === 'tcp';
    // First one that has had its grace and still sent nothing; then the oldest of the process holding the most, if
    // it holds more than one; only then one still in its grace (a client that has just connected and not yet said
    // hello, as every honest client is for a moment, is not what a flood of callers makes room with).
    const now = performance.now();
    for (const [ws, w] of idle) if (fits(ws) && now - w.at >= grace) return { ws, idle: true };
    let best: WebSocket | undefined;
    let most = 1;
    for (const set of byOwner.values()) {
      if (set.size <= most) continue;
      for (const ws of set) {
        if (!fits(ws)) continue;
        best = ws;
        most = set.size;
        break;
      }
    }
    if (best !== undefined) return { ws: best, idle: false };
    for (const ws of idle.keys()) if (fits(ws)) return { ws, idle: true };
    return undefined;
  };

  const attach = (server: Server, transport: 'unix' | 'tcp') => {
    server.on('request', (req, res) => {
      const refused = refuseReason(req, transport);
      if (refused) {
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end(refusalBody(refused));
        return;
      }
      opts.http(req, res);
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      const refused = refuseReason(req, transport);
      if (refused) {
        // The same coded body as a refused plain request, so a client learns why its upgrade failed.
        const body = refusalBody(refused);
        socket.end(`HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        return;
      }
      if (requestUrl(req.url)?.pathname !== '/') {
        socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      while (inUse(transport) >= limitOf(transport)) {
        const v = victim(transport);
        if (v === undefined) {
          const refusal = new WritError('WRIT_RATE_LIMITED', `the broker has ${maxConnections} connections open: try again later`);
          socket.end(rawAnswer('503 Service Unavailable', refusalBody(refusal, 'temporarily_unavailable')));
          return;
        }
        // Closing takes it out of the counts at once (TrackedWebSocket), so the loop ends.
        if (v.idle) v.ws.close(CLOSE_NO_CALL, 'the broker is full: closed for waiting for a first call');
        else v.ws.close(CLOSE_TOO_MANY, 'the broker is full: this process holds the most connections');
        forget(v.ws);
      }
      // Read now, while the socket's fd is certainly this connection's.
      const peer = peerAddressOf(req.socket, transport);
      upgrading[transport]++;
      let counted = true;
      const uncount = () => {
        if (counted) upgrading[transport]--;
        counted = false;
      };
      socket.once('close', uncount);
      wss.handleUpgrade(req, socket, head, (ws) => {
        uncount();
        alive.set(ws, true);
        ws.on('pong', () => alive.set(ws, true));
        live.set(ws, { transport, owner: '' });
        if (transport === 'tcp') tcpCount++;
        let owners = byOwner.get('');
        if (owners === undefined) byOwner.set('', (owners = new Set()));
        owners.add(ws);
        // Whoever starts the close (the broker, or the peer's close frame), the connection stops counting now and
        // is dropped if the peer has not finished the closing handshake within CLOSE_GRACE_MS.
        (ws as TrackedWebSocket).onClosing = () => {
          forget(ws);
          setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
        };
        ws.once('close', () => forget(ws));
        // A connection that never calls holds a socket, a WebSocket and a process lookup: it gets a few seconds,
        // and the oldest such gives way to a new connection past MAX_IDLE_CONNECTIONS.
        if (idle.size >= maxIdle) {
          const [oldest] = idle.keys();
          called(oldest!);
          oldest!.close(CLOSE_NO_CALL, 'too many connections waiting for a first call');
        }
        const timer = setTimeout(() => {
          called(ws);
          ws.close(CLOSE_NO_CALL, `no call within ${Math.round(firstCallMs / 1000)} s`);
        }, firstCallMs);
        timer.unref();
        idle.set(ws, { timer, at: performance.now() });
        ws.once('message', () => called(ws));
        const own = (owner: string): number => {
          const entry = live.get(ws);
          if (entry === undefined) return 0; // closing: counts for no one
          unown(ws, entry.owner);
          entry.owner = owner;
          let set = byOwner.get(owner);
          if (set === undefined) byOwner.set(owner, (set = new Set()));
          set.add(ws);
          return set.size;
        };
        opts.onConnection(ws, { transport, remotePort: transport === 'tcp' ? req.socket.remotePort : undefined, ...(peer ? { peer } : {}), own });
      });
    });
    server.on('clientError', (err: NodeJS.ErrnoException & { reason?: string }, socket) => {
      // A request Node's parser refuses gets an answer with a code, then the connection is closed: never a bare
      // reset. Only when no reply is under way on the socket, as Node's own handler decides: a kept-alive socket
      // has written earlier replies, whole, and takes this one after them.
      const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
      const answer = socket.writable && (!inFlight || !inFlight.headersSent) ? clientErrorAnswer(err) : undefined;
      if (answer === undefined) {
        socket.destroy();
        return;
      }
      socket.end(answer);
    });
  };

  const unixServer = createServer();
  const tcpServer = createServer();
  attach(unixServer, 'unix');
  attach(tcpServer, 'tcp');

  try {
    unlinkSync(opts.socketPath);
  } catch {
    // absent: nothing stale to remove
  }
  await new Promise<void>((resolve, reject) => {
    unixServer.once('error', reject);
    unixServer.listen(opts.socketPath, () => resolve());
  });
  if (process.platform !== 'win32') chmodSync(opts.socketPath, 0o600);
  await new Promise<void>((resolve, reject) => {
    tcpServer.once('error', reject);
    tcpServer.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (tcpServer.address() as AddressInfo).port;

  // Dead peers are found by ping/pong: one missed pong and the connection is ended.
  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, opts.heartbeatMs ?? 15_000);
  heartbeat.unref();

  return {
    socketPath: opts.socketPath,
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/`,
    async close() {
      clearInterval(heartbeat);
      for (const ws of wss.clients) ws.close(1001, 'broker stopping');
      await Promise.all(
        [unixServer, tcpServer].map(
          (s) =>
            new Promise<void>((resolve) => {
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      );
      wss.close();
      try {
        unlinkSync(opts.socketPath);
      } catch {
        // already gone
      }
    },
  };
}
