// Hostile input at every socket the broker serves: generated JSON-RPC frames, raw bytes, deep JSON, random
// HTTP bodies and paths, slow writers. Nothing crashes, every request gets one coded answer, and other
// clients keep being served. Bounded in count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { connect } from 'node:net';
import WebSocket from 'ws';
import { BrokerProcess, approveAll, requireKeyring } from '../helpers/broker';
import { ERROR_CODES } from '../../broker/errors';
import { Methods } from '../../broker/protocol';

requireKeyring();

const CODES = new Set<string>(ERROR_CODES);

describe('hostile input', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
  });
  afterAll(async () => {
    await b.stop();
  });

  function rawClient(): Promise<{ ws: WebSocket; request: (frame: string | Buffer, id: unknown) => Promise<any> }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(b.discovery.wsUrl, { maxPayload: 2 * 1024 * 1024 });
      const byId = new Map<string, (m: any) => void>();
      const anonymous: ((m: any) => void)[] = [];
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString());
        const key = JSON.stringify(m.id ?? null);
        const w = byId.get(key);
        if (w) {
          byId.delete(key);
          w(m);
        } else anonymous.shift()?.(m);
      });
      ws.on('open', () =>
        resolve({
          ws,
          request: (frame, id) =>
            new Promise((r) => {
              if (id === undefined || id === null) anonymous.push(r);
              else byId.set(JSON.stringify(id), r);
              ws.send(frame);
            }),
        }),
      );
      ws.on('error', reject);
    });
  }

  const expectCoded = (m: any) => {
    expect(m.jsonrpc).toBe('2.0');
    if ('error' in m) expect(CODES.has(m.error.data.code), JSON.stringify(m.error)).toBe(true);
    else expect('result' in m).toBe(true);
  };

  it('answers generated JSON-RPC frames with a result or a coded error, one each', async () => {
    const { ws, request } = await rawClient();
    const methods = [...Object.keys(Methods), 'approval.decision', 'constructor', '__proto__', 'x'];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...methods),
        fc.oneof(fc.jsonValue(), fc.record({ protocol: fc.constant('writ/1'), agent: fc.jsonValue() }), fc.record({ task: fc.string(), scopes: fc.array(fc.string()), audience: fc.string() })),
        async (method, params) => {
          const id = ++n;
          // task.request with valid params would wait for a decision: approveAll answers at once.
          const m = await request(JSON.stringify({ jsonrpc: '2.0', id, method, params }), id);
          expect(m.id).toBe(id);
          expectCoded(m);
        },
      ),
      { numRuns: 300 },
    );
    // Envelopes that are not JSON-RPC at all.
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (v) => {
        const m = await request(JSON.stringify(v), null);
        expectCoded(m);
      }),
      { numRuns: 200 },
    );
    ws.close();
  });

  it('refuses raw bytes, deep nesting and near-limit frames, and the connection lives on', async () => {
    const { ws, request } = await rawClient();
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 2048 }), async (bytes) => {
        const m = await request(Buffer.from(bytes), null);
        expect(['WRIT_BAD_REQUEST']).toContain(m.error.data.code);
      }),
      { numRuns: 50 },
    );
    const deep = '['.repeat(30_000) + ']'.repeat(30_000);
    const nested = await request(`{"jsonrpc":"2.0","id":"d","method":"status","params":${deep}}`, 'd');
    expect(nested.error.data).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params' });
    const big = JSON.stringify({ jsonrpc: '2.0', id: 'big', method: 'status', params: { p: 'x'.repeat(1_000_000) } });
    expect((await request(big, null)).error.data.code).toBe('WRIT_FRAME_TOO_LARGE');
    expect((await request(JSON.stringify({ jsonrpc: '2.0', id: 's', method: 'status' }), 's')).result.protocol).toBe('writ/1');
    ws.close();
  });

  it('answers random HTTP requests without a server error', async () => {
    const paths = ['/oauth2/introspect', '/oauth2/revoke', '/oauth2/token', '/.well-known/jwks.json', '/', '/x/../oauth2/token'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...paths),
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE'),
        fc.dictionary(fc.constantFrom('token', 'grant_type', 'subject_token', 'subject_token_type', 'scope', 'audience', 'actor_name', 'x'), fc.string()),
        async (path, method, body) => {
          const res = await fetch(`${b.discovery.httpUrl}${path}`, {
            method,
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            ...(method === 'GET' ? {} : { body: new URLSearchParams(body).toString() }),
          });
          expect(res.status).toBeLessThan(500);
          await res.arrayBuffer();
        },
      ),
      { numRuns: 200 },
    );
  });

  it('slow writers do not hold up other clients', async () => {
    const sockets = Array.from({ length: 20 }, () => {
      const s = connect(b.discovery.socketPath);
      s.on('error', () => undefined);
      s.write('GET /.well-known/jwks.json HTTP/1.1\r\nHost: local');
      return s;
    });
    const { ws, request } = await rawClient();
    expect((await request(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'status' }), 1)).result.pid).toBe(b.child.pid);
    expect((await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`)).status).toBe(200);
    ws.close();
    for (const s of sockets) s.destroy();
    expect(b.child.exitCode).toBe(null);
  });
});
