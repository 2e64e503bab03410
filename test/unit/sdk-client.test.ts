// The SDK client between the broker's close frame and the end of the connection: a call made in that window must
// get the reason the broker gave (revoked), not "unreachable". The e2e suite caught an agent told
// WRIT_BROKER_UNREACHABLE when it was stopped, because its next call landed after the close frame arrived.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { WritClient } from '../../broker/sdk/client';
import { asWritError } from '../../broker/errors';

let server: Server | undefined;
const clients: WritClient[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  for (const s of sockets.splice(0)) s.destroy();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/**
 * A WebSocket server written by hand, so the test holds the connection half-closed: it answers the handshake,
 * sends a close frame with `code`, and ends the TCP connection only `endAfterMs` later (a real broker's end
 * follows the close frame by one round trip; the window is the same, only wider).
 */
function halfClosingServer(code: number, endAfterMs: number | 'never'): Promise<{ url: string; closeSent: Promise<void> }> {
  let sent!: () => void;
  const closeSent = new Promise<void>((r) => (sent = r));
  server = createServer();
  server.on('upgrade', (req, socket: Socket) => {
    sockets.push(socket);
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    setTimeout(() => {
      socket.write(Buffer.from([0x88, 0x02, code >> 8, code & 0xff]), () => sent());
      if (endAfterMs !== 'never') setTimeout(() => socket.end(), endAfterMs);
    }, 50);
    socket.on('error', () => {});
  });
  return new Promise((resolve) =>
    server!.listen(0, '127.0.0.1', () => {
      const { port } = server!.address() as { port: number };
      resolve({ url: `ws://127.0.0.1:${port}/`, closeSent });
    }),
  );
}

test('a call made after the broker closed the connection as revoked (4001), before the connection ends, is refused WRIT_TOKEN_REVOKED', async () => {
  const { url, closeSent } = await halfClosingServer(4001, 500);
  const client = await WritClient.connect(url, {}, 5_000);
  clients.push(client);
  const closed = new Promise<number>((r) => client.onClose((c) => r(c)));
  await closeSent;
  await new Promise((r) => setTimeout(r, 100)); // the close frame is read; the socket is still open
  const err = await client.call('status').then(
    () => undefined,
    (e: unknown) => asWritError(e),
  );
  expect(err?.code).toBe('WRIT_TOKEN_REVOKED');
  expect(err?.message).toBe('this agent was revoked');
  expect(await closed).toBe(4001);
  // After the end, a call is refused at once with the same reason.
  const after = await client.call('status').then(
    () => undefined,
    (e: unknown) => asWritError(e),
  );
  expect(after?.code).toBe('WRIT_TOKEN_REVOKED');
});

test('a call in that window on a connection the broker closed for another reason is refused WRIT_BROKER_UNREACHABLE', async () => {
  const { url, closeSent } = await halfClosingServer(1001, 500);
  const client = await WritClient.connect(url, {}, 5_000);
  clients.push(client);
  await closeSent;
  await new Promise((r) => setTimeout(r, 100));
  const err = await client.call('status').then(
    () => undefined,
    (e: unknown) => asWritError(e),
  );
  expect(err?.code).toBe('WRIT_BROKER_UNREACHABLE');
  expect(err?.message).toBe('the broker closed the connection');
});

test('a broker that sent its close frame (4001) and then froze: a call made meanwhile is refused WRIT_TOKEN_REVOKED within the liveness window, not left waiting', async () => {
  const { url, closeSent } = await halfClosingServer(4001, 'never');
  const client = await WritClient.connect(url, {}, 500); // a 0.5 s window (ws's own close timeout is 30 s)
  clients.push(client);
  await closeSent;
  await new Promise((r) => setTimeout(r, 100));
  const settled = await Promise.race([
    client.call('status').then(
      () => 'answered',
      (e: unknown) => asWritError(e).code,
    ),
    new Promise((r) => setTimeout(() => r('still pending after 10 s'), 10_000)),
  ]);
  expect(settled).toBe('WRIT_TOKEN_REVOKED');
}, 40_000);

/** A server that answers every WebSocket upgrade with `status` and `body`, as the broker refuses one. */
function refusingServer(status: string, body: string): Promise<string> {
  server = createServer();
  server.on('upgrade', (_req, socket: Socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  return new Promise((resolve) => server!.listen(0, '127.0.0.1', () => resolve(`ws://127.0.0.1:${(server!.address() as { port: number }).port}/`)));
}

const connectError = (url: string) =>
  WritClient.connect(url, {}, 5_000).then(
    (c) => {
      clients.push(c);
      return undefined;
    },
    (e: unknown) => asWritError(e),
  );

test('an upgrade the broker refuses with a writ_code (503 WRIT_RATE_LIMITED when full) is reported with that code, not as unreachable', async () => {
  const url = await refusingServer('503 Service Unavailable', JSON.stringify({ error: 'temporarily_unavailable', error_description: 'the broker has 4096 connections open: try again later', writ_code: 'WRIT_RATE_LIMITED' }));
  const err = await connectError(url);
  expect(err?.code).toBe('WRIT_RATE_LIMITED');
  expect(err?.message).toContain('4096 connections open');
});

test('a refused upgrade with a 403 writ_code keeps it; one without a known writ_code is WRIT_BROKER_UNREACHABLE', async () => {
  const forbidden = await refusingServer('403 Forbidden', JSON.stringify({ error: 'forbidden', error_description: 'requests from web pages are refused', writ_code: 'WRIT_FORBIDDEN_ORIGIN' }));
  expect((await connectError(forbidden))?.code).toBe('WRIT_FORBIDDEN_ORIGIN');
  await new Promise<void>((r) => server!.close(() => r()));
  const unknown = await refusingServer('503 Service Unavailable', JSON.stringify({ writ_code: 'NOT_A_CODE' }));
  const err = await connectError(unknown);
  expect(err?.code).toBe('WRIT_BROKER_UNREACHABLE');
  expect(err?.message).toContain('HTTP 503');
  await new Promise<void>((r) => server!.close(() => r()));
  const plain = await refusingServer('502 Bad Gateway', 'not json');
  expect((await connectError(plain))?.code).toBe('WRIT_BROKER_UNREACHABLE');
});
