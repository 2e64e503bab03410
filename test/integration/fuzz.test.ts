// Hostile input at every socket the broker serves: generated JSON-RPC frames, raw bytes, deep JSON, random
// HTTP bodies and paths, slow writers. Nothing crashes, every request gets one coded answer, other clients
// keep being served, and the broker's memory stays bounded across waves of it. Bounded in count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import { parseProcNetTcpLine } from '../../broker/net/peer';
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

  it('answers request targets that are not plain paths (//, //@, //:99999, absolute URLs) and goes on serving', async () => {
    /** One raw HTTP/1.1 request on a fresh connection; resolves with the status code and body of the answer. */
    const raw = (target: string, where: 'tcp' | 'unix', upgrade = false) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const s = where === 'tcp' ? connect(Number(new URL(b.discovery.httpUrl).port), '127.0.0.1') : connect(b.discovery.socketPath);
        let text = '';
        s.on('data', (d) => (text += d));
        s.on('error', reject);
        s.on('close', () => {
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
          resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
        });
        const headers = upgrade
          ? 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
          : 'Connection: close\r\n';
        s.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\n`);
      });
    for (const where of ['tcp', 'unix'] as const) {
      // Paths, odd ones: not found, as any unknown route.
      for (const target of ['//', '///', '//@', '//:99999', '//evil.example/x']) {
        const r = await raw(target, where);
        expect([target, where, r.status, JSON.parse(r.body).writ_code]).toEqual([target, where, 404, 'WRIT_METHOD_NOT_FOUND']);
        expect([target, (await raw(target, where, true)).status]).toEqual([target, 404]);
      }
      // Not a path at all (absolute-form): refused as a bad request.
      const abs = await raw('http://evil.example/oauth2/token', where);
      expect([abs.status, JSON.parse(abs.body).writ_code]).toEqual([400, 'WRIT_BAD_REQUEST']);
    }
    expect(b.child.exitCode).toBeNull();
    expect((await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`)).status).toBe(200);
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

// ---------------------------------------------------------------------------------------------
// Memory: the broker's live heap (after a full collection, asked through the inspector) and its resident set
// (/proc/<pid>/status VmRSS), after a warm-up wave and after WAVES more waves of hostile input. Anything the
// broker kept per connection, per frame or per refused request would grow with the waves.
// ---------------------------------------------------------------------------------------------

const WAVES = Number(process.env.WRIT_MEMORY_WAVES ?? 6);
/**
 * Live heap growth allowed across all the waves after the warm-up. Measured here: about 1 MB (one new agent
 * record a wave, and code), flat from the sixth wave to the sixteenth; keeping each closed connection's
 * RpcConnection (a leak tried on purpose) grew it by 7 MB.
 */
const HEAP_GROWTH_BOUND_MB = 3;
/** Resident set growth allowed (the allocator keeps freed pages; a leak of the waves' size would pass it). */
const RSS_GROWTH_BOUND_MB = 64;

function rssMb(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) / 1024;
}

/** The broker's V8 inspector (started with --inspect=127.0.0.1:0): full collection, then the live heap in MB. */
async function liveHeapMb(inspectorUrl: string): Promise<number> {
  const ws = new WebSocket(inspectorUrl);
  await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
  let id = 0;
  const call = (method: string) =>
    new Promise<any>((resolve) => {
      const mine = ++id;
      const on = (d: WebSocket.RawData) => {
        const m = JSON.parse(d.toString());
        if (m.id !== mine) return;
        ws.off('message', on);
        resolve(m.result);
      };
      ws.on('message', on);
      ws.send(JSON.stringify({ id: mine, method }));
    });
  // Twice: weak references and finalizers freed by the first are collected by the second.
  await call('HeapProfiler.collectGarbage');
  await call('HeapProfiler.collectGarbage');
  const usage = await call('Runtime.getHeapUsage');
  ws.close();
  return usage.usedSize / (1024 * 1024);
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens a WebSocket to the broker and resolves once it has closed (or opens and is closed by `use`). */
function wsSession(url: string, use: (ws: WebSocket) => Promise<void> | void): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { maxPayload: 2 * 1024 * 1024 });
    ws.on('error', () => undefined);
    ws.on('close', () => resolve());
    ws.on('open', () => void Promise.resolve(use(ws)).catch(() => ws.terminate()));
  });
}

/** Sends frames and waits for `answers` replies (or the close), then closes. */
function exchange(ws: WebSocket, frames: (string | Buffer)[], answers: number): Promise<void> {
  return new Promise((resolve) => {
    let left = answers;
    const done = () => (ws.close(), resolve());
    ws.on('message', () => --left === 0 && done());
    ws.on('close', () => resolve());
    for (const f of frames) ws.send(f);
    if (answers === 0) done();
  });
}

/** One wave of everything hostile the sockets may see; every socket it opens is gone when it resolves. */
async function hostileWave(b: BrokerProcess, wave: number): Promise<void> {
  const { wsUrl, httpUrl, socketPath } = b.discovery;
  const port = Number(new URL(httpUrl).port);
  const deep = `{"jsonrpc":"2.0","id":1,"method":"status","params":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
  const nearLimit = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'status', params: { p: 'x'.repeat(1_000_000) } });
  const tasks: Promise<unknown>[] = [];
  // Huge frames (answered WRIT_FRAME_TOO_LARGE), deep JSON, random binary and text: 24 connections.
  for (let i = 0; i < 24; i++) {
    tasks.push(wsSession(wsUrl, (ws) => exchange(ws, [nearLimit, deep, randomBytes(4096), randomBytes(2048).toString('latin1'), nearLimit], 5)));
  }
  // Over the hard limit: ws closes the connection (1009) without an answer.
  for (let i = 0; i < 8; i++) tasks.push(wsSession(wsUrl, (ws) => void ws.send(Buffer.alloc(1_100_000, 0x20))));
  // A flood of calls from a client that never reads its answers, then vanishes without a close frame.
  for (let i = 0; i < 8; i++) {
    tasks.push(
      wsSession(wsUrl, async (ws) => {
        (ws as unknown as { _socket: Socket })._socket.pause();
        for (let k = 0; k < 2_000; k++) ws.send(`{"jsonrpc":"2.0","id":${k},"method":"status"}`);
        await settle(200);
        ws.terminate();
      }),
    );
  }
  // Subscribed (acknowledging) connections dropped mid-way, without a close frame.
  for (let i = 0; i < 8; i++) {
    tasks.push(
      wsSession(wsUrl, async (ws) => {
        ws.send('{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"events":["revocation"],"acknowledge":true}}');
        await settle(50);
        ws.terminate();
      }),
    );
  }
  // Use reports past the per-connection rate bound (the rest are dropped, the window is per connection).
  for (let i = 0; i < 4; i++) {
    const reports = Array.from({ length: 150 }, (_, k) => JSON.stringify({ jsonrpc: '2.0', id: k, method: 'token.used', params: { jti: `jti-${i}-${k}-${'j'.repeat(150)}`, allowed: false, code: 'WRIT_TOKEN_INVALID' } }));
    tasks.push(wsSession(wsUrl, (ws) => exchange(ws, reports, reports.length)));
  }
  // Churn: connections that ask once and drop without a close frame (per-connection state must go with them).
  for (let i = 0; i < 96; i++) {
    tasks.push(
      wsSession(wsUrl, (ws) => {
        ws.once('message', () => ws.terminate());
        ws.send('{"jsonrpc":"2.0","id":1,"method":"status"}');
      }),
    );
  }
  // Raw bytes, slow writers and half-open upgrades on both listeners, each dropped at the end.
  const raw: Socket[] = [];
  for (let i = 0; i < 16; i++) {
    const s = i % 2 ? connect(socketPath) : connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    if (i % 4 === 0) s.write(randomBytes(8192));
    else if (i % 4 === 1) s.write(`GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n`);
    else if (i % 4 === 2) s.write('POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nsubject_token=');
    else s.end('GET /.well-known/jwks.json HTTP/1.1\r\nHost: loc'); // half-closed mid-header
    raw.push(s);
  }
  // Oversized and random HTTP bodies.
  for (let i = 0; i < 16; i++) {
    tasks.push(
      fetch(`${httpUrl}${i % 2 ? '/oauth2/token' : '/oauth2/introspect'}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: i % 4 === 0 ? 'token=' + 'a'.repeat(200_000) : randomBytes(1024).toString('base64'),
      })
        .then((r) => r.arrayBuffer())
        .catch(() => undefined),
    );
  }
  await Promise.all(tasks);
  await settle(300);
  for (const s of raw) s.destroy();
  await vanishingAgent(b, wave);
  await settle(300);
}

/**
 * An agent whose approval requests wait on the developer, gone without a close frame: its requests must be
 * withdrawn. A new name each wave: the watch would block one identity asking this often (a pending flood).
 */
async function vanishingAgent(b: BrokerProcess, wave: number): Promise<void> {
  const ws = new WebSocket(b.discovery.wsUrl);
  ws.on('error', () => undefined);
  await new Promise((resolve) => ws.once('open', resolve));
  const hello = new Promise<string>((r) => ws.once('message', (d) => r(JSON.parse(d.toString()).result.agentId)));
  ws.send(`{"jsonrpc":"2.0","id":0,"method":"hello","params":{"protocol":"writ/1","agent":{"name":"vanishing-${wave}","kind":"script"}}}`);
  const agentId = await hello;
  for (let k = 1; k <= 3; k++) {
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: k, method: 'task.request', params: { task: `${k} ${'w'.repeat(480)}`, scopes: ['repo:read:a'], audience: 'https://api.example' } }));
  }
  for (let i = 0; i < 1_500 && b.requests.filter((r) => r.agent.id === agentId).length < 3; i++) await settle(20);
  ws.terminate();
}

describe('memory under hostile input', () => {
  let b: BrokerProcess;
  let inspector: string;
  beforeAll(async () => {
    // The heartbeat at its floor, so connections whose peer vanished are found within the test.
    b = await BrokerProcess.start(freshEnv({ WRIT_HEARTBEAT_MS: '200' }), [], ['--inspect=127.0.0.1:0']);
    // The developer answers nobody: the vanishing agents' requests stay waiting until they go.
    b.decide = () => null;
    const url = /ws:\/\/127\.0\.0\.1:\d+\/[0-9a-f-]+/.exec(b.stderr)?.[0];
    if (url === undefined) throw new Error(`the broker printed no inspector address: ${b.stderr}`);
    inspector = url;
  });
  afterAll(async () => {
    await b.stop();
  });

  it(`stays bounded over ${WAVES} waves of huge frames, deep JSON, random bytes, unread floods, use reports, churn, slow writers and half-open connections: live heap +${HEAP_GROWTH_BOUND_MB} MB, RSS +${RSS_GROWTH_BOUND_MB} MB at most`, async () => {
    await hostileWave(b, 0); // warm-up: code compiled, pools and buffers at their working size
    await settle(1_000);
    const heap0 = await liveHeapMb(inspector);
    const rss0 = rssMb(b.child.pid!);
    const heaps: number[] = [];
    for (let w = 0; w < WAVES; w++) {
      await hostileWave(b, w + 1);
      heaps.push(await liveHeapMb(inspector));
    }
    await settle(1_000);
    const heap1 = await liveHeapMb(inspector);
    const rss1 = rssMb(b.child.pid!);
    console.log(`memory under hostile input: live heap ${heap0.toFixed(1)} → ${heap1.toFixed(1)} MB (per wave ${heaps.map((h) => h.toFixed(1)).join(', ')}), RSS ${rss0.toFixed(0)} → ${rss1.toFixed(0)} MB`);
    expect(heap1 - heap0).toBeLessThan(HEAP_GROWTH_BOUND_MB);
    expect(rss1 - rss0).toBeLessThan(RSS_GROWTH_BOUND_MB);
    // Every request of an agent that vanished was withdrawn (nothing waits on a closed connection).
    const asked = b.requests.filter((r) => r.agent.name.startsWith('vanishing-')).map((r) => r.requestId);
    expect(asked).toHaveLength(3 * (WAVES + 1));
    const withdrawn = new Map(b.closed.map((c) => [c.requestId, c.reason]));
    expect(asked.map((id) => withdrawn.get(id))).toEqual(asked.map(() => 'WRIT_DENIED'));
    // Still serving, and nothing crashed.
    const c = await WritClientLike(b);
    expect(c.pid).toBe(b.child.pid);
    expect(b.child.exitCode).toBe(null);
  }, 300_000);
});

describe('a client that never reads its answers', () => {
  /** The kernel's state of the broker's end of the connection from `clientPort` (1 = ESTABLISHED), or undefined once gone. */
  function brokerSideState(brokerPort: number, clientPort: number): number | undefined {
    for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const r = parseProcNetTcpLine(line);
        if (r && r.local.port === brokerPort && r.remote.port === clientPort) return r.state;
      }
    }
    return undefined;
  }

  it('is cut off once MAX_BUFFERED_BYTES of answers wait for it, without waiting for the heartbeat; others are still served', async () => {
    // The heartbeat out of the way: only the buffer bound can end this connection.
    const b = await BrokerProcess.start(freshEnv({ WRIT_HEARTBEAT_MS: '600000' }));
    try {
      const brokerPort = Number(new URL(b.discovery.httpUrl).port);
      const ws = new WebSocket(b.discovery.wsUrl);
      ws.on('error', () => undefined);
      await new Promise((resolve) => ws.once('open', resolve));
      const socket = (ws as unknown as { _socket: Socket })._socket;
      socket.pause(); // never read an answer
      // ~100,000 answers of a few hundred bytes: far beyond 4 MB plus what the kernel's buffers hold.
      for (let k = 0; k < 100_000; k++) ws.send(`{"jsonrpc":"2.0","id":${k},"method":"status"}`);
      expect(brokerSideState(brokerPort, socket.localPort!)).toBe(1);
      let state: number | undefined = 1;
      for (let i = 0; i < 1_200 && state === 1; i++) {
        await settle(100);
        state = brokerSideState(brokerPort, socket.localPort!);
      }
      // No longer ESTABLISHED on the broker's side: it closed the connection (FIN_WAIT with the unread answers).
      expect(state).not.toBe(1);
      expect((await WritClientLike(b)).pid).toBe(b.child.pid);
      ws.terminate();
    } finally {
      await b.stop();
    }
  }, 180_000);
});

/** One `status` call on a fresh connection: the broker still answers. */
function WritClientLike(b: BrokerProcess): Promise<{ pid: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(b.discovery.wsUrl);
    ws.on('error', reject);
    ws.on('open', () => ws.send('{"jsonrpc":"2.0","id":1,"method":"status"}'));
    ws.on('message', (d) => {
      ws.close();
      resolve(JSON.parse(d.toString()).result);
    });
  });
}
