// Nothing beyond loopback reaches the broker. Proved with real TCP connections from this machine's own
// non-loopback IPv4 address (the kernel lets a socket bound to a local address reach 127.0.0.1, so the listener
// really sees a foreign peer), and with a connection to that address, which the 127.0.0.1-only bind refuses.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import WebSocket from 'ws';
import { BrokerProcess, approveAll, requireKeyring } from '../helpers/broker';

requireKeyring();

/** A non-loopback IPv4 address of this machine, or undefined (the tests that need one are skipped, saying why). */
function nonLoopbackAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.')) return a.address;
  }
  return undefined;
}
const foreign = nonLoopbackAddress();
const skipReason = 'this machine has no non-loopback IPv4 address to connect from';
if (!foreign) console.warn(`network.test.ts: skipping the non-loopback peer tests: ${skipReason}`);

/** One HTTP request to the broker's port, from `localAddress`; the Host header names loopback, as a local agent's would. */
function get(port: number, path: string, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress, headers: { host: `127.0.0.1:${port}` } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A WebSocket upgrade from `localAddress`: resolves with the HTTP status the server answered instead of upgrading. */
function upgrade(url: string, localAddress: string): Promise<{ opened: boolean; status?: number; body?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { localAddress });
    ws.on('open', () => {
      ws.terminate();
      resolve({ opened: true });
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ opened: false, status: res.statusCode!, body }));
    });
    ws.on('error', reject);
  });
}

describe('non-loopback peers', () => {
  let b: BrokerProcess;
  let port: number;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
    port = Number(new URL(b.discovery.httpUrl).port);
  });
  afterAll(async () => {
    await b.stop();
  });

  it.skipIf(!foreign)(`refuses HTTP from a non-loopback source address with 403 WRIT_FORBIDDEN_ORIGIN, before any handler (skipped if ${skipReason})`, async () => {
    const before = b.auditLines().length;
    // The same request from loopback is served: what differs is only the source address.
    expect((await get(port, '/.well-known/jwks.json', '127.0.0.1')).status).toBe(200);
    for (const path of ['/.well-known/jwks.json', '/.well-known/oauth-authorization-server', '/oauth2/introspect']) {
      const r = await get(port, path, foreign!);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toEqual({ error: 'forbidden', error_description: 'only loopback peers are served', writ_code: 'WRIT_FORBIDDEN_ORIGIN' });
    }
    // Refused before any handler: nothing audited, nothing logged with the peer, and the broker lives on.
    expect(b.auditLines().length).toBe(before);
    expect(b.stderr).not.toContain(foreign!);
    expect(b.child.exitCode).toBe(null);
  });

  it.skipIf(!foreign)(`refuses a WebSocket upgrade from a non-loopback source address with 403 WRIT_FORBIDDEN_ORIGIN (skipped if ${skipReason})`, async () => {
    const before = b.auditLines().length;
    const refused = await upgrade(b.discovery.wsUrl, foreign!);
    expect(refused).toEqual({
      opened: false,
      status: 403,
      body: JSON.stringify({ error: 'forbidden', error_description: 'only loopback peers are served', writ_code: 'WRIT_FORBIDDEN_ORIGIN' }),
    });
    expect(await upgrade(b.discovery.wsUrl, '127.0.0.1')).toEqual({ opened: true });
    expect(b.auditLines().length).toBe(before);
    const s = await (await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`)).json();
    expect(s.keys).toHaveLength(1);
  });

  it.skipIf(!foreign)(`is not listening on the machine's non-loopback address: the kernel refuses the connection (skipped if ${skipReason})`, async () => {
    const code = await new Promise<string | undefined>((resolve) => {
      const s = connect({ host: foreign!, port });
      s.on('connect', () => {
        s.destroy();
        resolve(undefined);
      });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
    });
    expect(code).toBe('ECONNREFUSED');
  });
});
