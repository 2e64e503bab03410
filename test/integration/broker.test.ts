// The broker core end to end: real process, real sockets, real keychain, tokens checked with jose against
// the JWKS fetched over HTTP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { createLocalJWKSet, jwtVerify } from 'jose';
import WebSocket from 'ws';
import { BrokerProcess, approveAll, form, freshEnv, requireKeyring, writ } from '../helpers/broker';
import { WritError } from '../../broker/errors';
import { WritClient } from '../../broker/sdk/client';

requireKeyring();

async function verifyAgainstJwks(b: BrokerProcess, token: string, audience: string) {
  const meta = await (await fetch(`${b.discovery.httpUrl}/.well-known/oauth-authorization-server`)).json();
  const jwks = await (await fetch(meta.jwks_uri)).json();
  return jwtVerify(token, createLocalJWKSet(jwks), { issuer: meta.issuer, audience, typ: 'at+jwt', algorithms: ['EdDSA'] });
}

async function rejection(p: Promise<unknown>): Promise<WritError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof WritError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}

describe('broker: listeners and discovery', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start();
  });
  afterAll(async () => {
    await b.stop();
  });

  it('keeps its runtime folder 0700, socket and discovery file 0600', () => {
    expect(statSync(b.env.WRIT_RUNTIME_DIR).mode & 0o777).toBe(0o700);
    expect(statSync(b.discovery.socketPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(b.env.WRIT_RUNTIME_DIR, 'broker.json')).mode & 0o777).toBe(0o600);
    expect(b.discovery.httpUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(b.stdout).toContain(b.discovery.socketPath);
    expect(b.stdout).toContain(b.discovery.httpUrl);
  });

  it('serves RFC 8414 metadata and a JWKS with the Ed25519 key', async () => {
    const meta = await (await fetch(`${b.discovery.httpUrl}/.well-known/oauth-authorization-server`)).json();
    expect(meta.issuer).toBe('urn:writ:dev@example.com');
    expect(meta.jwks_uri).toBe(`${b.discovery.httpUrl}/.well-known/jwks.json`);
    expect(meta.introspection_endpoint).toBe(`${b.discovery.httpUrl}/oauth2/introspect`);
    expect(meta.revocation_endpoint).toBe(`${b.discovery.httpUrl}/oauth2/revoke`);
    expect(meta.grant_types_supported).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange']);
    const jwks = await (await fetch(meta.jwks_uri)).json();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
    expect(jwks.keys[0].d).toBeUndefined();
  });

  it('refuses a browser Origin and a non-loopback Host, over HTTP and on the WebSocket upgrade', async () => {
    const origin = await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`, { headers: { origin: 'https://evil.example' } });
    expect(origin.status).toBe(403);
    expect((await origin.json()).writ_code).toBe('WRIT_FORBIDDEN_ORIGIN');
    const post = await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: 'x' }, { origin: 'https://evil.example' });
    expect(post.status).toBe(403);
    for (const headers of [{ origin: 'https://evil.example' }, { host: 'evil.example' }]) {
      const status = await new Promise<number>((resolve) => {
        const ws = new WebSocket(b.discovery.wsUrl, { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => resolve(101));
        ws.on('error', () => undefined);
      });
      expect(status).toBe(403);
    }
  });

  it('takes the Host header whole: a loopback name with a port, nothing after it', async () => {
    const port = Number(new URL(b.discovery.httpUrl).port);
    for (const host of [`localhost:${port}.evil`, '[::1]evil.com', `127.0.0.1:${port}@evil.com`, 'localhost:abc', `localhost:${port}:1`, '127.0.0.1.evil']) {
      const out = await rawHttp(port, `GET /.well-known/jwks.json HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect([host, out.status, out.body.writ_code]).toEqual([host, 403, 'WRIT_FORBIDDEN_ORIGIN']);
    }
    for (const host of ['localhost', `localhost:${port}`, 'LOCALHOST', `127.0.0.1:${port}`, '127.0.0.1', `[::1]:${port}`, '[::1]']) {
      const out = await rawHttp(port, `GET /.well-known/jwks.json HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect([host, out.status]).toEqual([host, 200]);
    }
  });

  it('answers malformed HTTP framing with a status and a code, then closes: never a bare reset', async () => {
    const port = Number(new URL(b.discovery.httpUrl).port);
    const head = 'POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n';
    const cases: [string, number, string][] = [
      [`${head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400, 'WRIT_BAD_REQUEST'],
      [`${head}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd`, 400, 'WRIT_BAD_REQUEST'],
      [`${head}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n`, 400, 'WRIT_BAD_REQUEST'],
      [`${head}Content-Length: 99999999999999999999\r\n\r\nabc`, 413, 'WRIT_FRAME_TOO_LARGE'],
    ];
    for (const [text, status, code] of cases) {
      const out = await rawHttp(port, text);
      expect([out.status, out.body.writ_code, out.body.error, out.closed]).toEqual([status, code, 'invalid_request', true]);
    }
    // The broker serves on.
    expect((await fetch(`${b.discovery.httpUrl}/.well-known/jwks.json`)).status).toBe(200);
  });
});

/** One request on a raw socket: the status line's code and the JSON body of the answer, and whether the broker closed. */
function rawHttp(port: number, text: string): Promise<{ status: number; body: Record<string, unknown>; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no end of the answer to ${JSON.stringify(text)}: ${JSON.stringify(out)}`));
    }, 5000);
    s.on('data', (d) => (out += d));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0);
      const headEnd = out.indexOf('\r\n\r\n');
      let bodyText = out.slice(headEnd + 4);
      if (/^transfer-encoding: chunked$/im.test(out.slice(0, headEnd))) {
        let whole = '';
        for (let rest = bodyText, size = parseInt(rest, 16); size > 0; size = parseInt(rest, 16)) {
          const start = rest.indexOf('\r\n') + 2;
          whole += rest.slice(start, start + size);
          rest = rest.slice(start + size + 2);
        }
        bodyText = whole;
      }
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(bodyText);
      } catch {
        // not JSON (a JWKS is, a bare reset has none)
      }
      resolve({ status, body, closed: true });
    });
    s.write(text);
  });
}

describe('broker: tasks, approvals and tokens', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start(freshEnv({ WRIT_APPROVAL_TIMEOUT_MS: '1500' }));
  });
  afterAll(async () => {
    await b.stop();
  });

  it('mints a delegated at+jwt after approval that verifies against the JWKS', async () => {
    b.decide = approveAll;
    const { client, hello } = await b.agent('claude-code');
    const r = await client.call('task.request', { task: 'fix issue 12', scopes: ['repo:read:acme/web'], audience: 'https://api.example' });
    expect(r.reused).toBe(false);
    expect(r.session).toMatch(/^wss_/);
    const { payload, protectedHeader } = await verifyAgainstJwks(b, r.token.token, 'https://api.example');
    expect(protectedHeader).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    expect(payload).toMatchObject({
      iss: 'urn:writ:dev@example.com',
      sub: 'dev@example.com',
      aud: 'https://api.example',
      client_id: hello.agentId,
      act: { sub: hello.agentId },
      scope: 'repo:read:acme/web',
      task_id: r.grant.taskId,
      grant_id: r.grant.id,
      jti: r.token.jti,
    });
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(payload.nbf).toBe(payload.iat);
    const req = b.requests.at(-1)!;
    expect(req.agent).toMatchObject({ id: hello.agentId, name: 'claude-code', kind: 'script', version: '1.0', parents: [] });
    expect(req.task).toBe('fix issue 12');
    expect(req.scopes).toEqual(['repo:read:acme/web']);
    await client.close();
  });

  it('gives only the narrowed scopes and TTL the developer approved', async () => {
    b.decide = () => ({ decision: 'approve', scopes: ['repo:read:acme/web'], ttl: 60, mode: 'task' });
    const { client } = await b.agent();
    const r = await client.call('task.request', {
      task: 'triage',
      scopes: ['repo:read:acme/web', 'repo:write:acme/web'],
      audience: 'https://api.example',
    });
    expect(r.grant.scopes).toEqual(['repo:read:acme/web']);
    const { payload } = await verifyAgainstJwks(b, r.token.token, 'https://api.example');
    expect(payload.scope).toBe('repo:read:acme/web');
    expect(payload.exp! - payload.iat!).toBe(60);
    // Minting more than the grant holds is refused with the uncovered scope named.
    const e = await rejection(client.call('token.mint', { grantId: r.grant.id, scopes: ['repo:write:acme/web'] }));
    expect(e.code).toBe('WRIT_SCOPE_NOT_COVERED');
    expect(e.data).toEqual({ uncovered: ['repo:write:acme/web'] });
    await client.close();
  });

  it('refuses an approval wider than the request (fail closed)', async () => {
    b.decide = () => ({ decision: 'approve', scopes: ['repo:read:**'], mode: 'task' });
    const { client } = await b.agent();
    const e = await rejection(client.call('task.request', { task: 'x', scopes: ['repo:read:acme/web'], audience: 'https://api.example' }));
    expect(e.code).toBe('WRIT_DENIED');
    await client.close();
  });

  it('a denial reaches the agent as WRIT_DENIED and a silence as WRIT_APPROVAL_TIMEOUT', async () => {
    const { client } = await b.agent();
    b.decide = () => ({ decision: 'deny' });
    expect((await rejection(client.call('task.request', { task: 'x', scopes: ['repo:read:a'], audience: 'aud' }))).code).toBe('WRIT_DENIED');
    b.decide = () => null;
    const before = b.closed.length;
    expect((await rejection(client.call('task.request', { task: 'y', scopes: ['repo:read:a'], audience: 'aud' }))).code).toBe('WRIT_APPROVAL_TIMEOUT');
    // The editor is told the prompt is over, so it can take it down.
    await new Promise((r) => setTimeout(r, 50));
    expect(b.closed.slice(before).map((c) => c.reason)).toEqual(['WRIT_APPROVAL_TIMEOUT']);
    await client.close();
  });

  it('reuses a live grant without a prompt, also after reconnecting with the agent session', async () => {
    b.decide = approveAll;
    const { client } = await b.agent('codex');
    const first = await client.call('task.request', { task: 'fix issue 7', scopes: ['repo:read:acme/*'], audience: 'https://api.example' });
    const prompts = b.requests.length;
    const again = await client.call('task.request', { task: 'fix issue 7', scopes: ['repo:read:acme/web'], audience: 'https://api.example' });
    expect(again.reused).toBe(true);
    expect(again.grant.id).toBe(first.grant.id);
    expect(again.token.scopes).toEqual(['repo:read:acme/web']);
    await client.close();
    const { client: back, hello } = await b.agent('codex', { session: first.session! });
    expect(hello.resumed).toBe(true);
    const third = await back.call('task.request', { task: 'fix issue 7', scopes: ['repo:read:acme/api'], audience: 'https://api.example' });
    expect(third.reused).toBe(true);
    expect(b.requests.length).toBe(prompts);
    // A task-only grant does not cover another task: that one prompts.
    await back.call('task.request', { task: 'another task', scopes: ['repo:read:acme/api'], audience: 'https://api.example' });
    expect(b.requests.length).toBe(prompts + 1);
    await back.close();
  });

  it('a session grant covers later tasks of the same agent', async () => {
    b.decide = () => ({ decision: 'approve', mode: 'session' });
    const { client } = await b.agent('cline');
    await client.call('task.request', { task: 'a', scopes: ['repo:read:acme/**'], audience: 'aud' });
    const prompts = b.requests.length;
    const r = await client.call('task.request', { task: 'b', scopes: ['repo:read:acme/web/src'], audience: 'aud' });
    expect(r.reused).toBe(true);
    expect(b.requests.length).toBe(prompts);
    await client.close();
  });
});

describe('broker: bad input', () => {
  let b: BrokerProcess;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
  });
  afterAll(async () => {
    await b.stop();
  });

  function raw(): Promise<{ ws: WebSocket; next: () => Promise<any> }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(b.discovery.wsUrl);
      const queue: any[] = [];
      const waiters: ((v: any) => void)[] = [];
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString());
        const w = waiters.shift();
        if (w) w(m);
        else queue.push(m);
      });
      ws.on('open', () => resolve({ ws, next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r))) }));
      ws.on('error', reject);
    });
  }

  it('answers each malformed frame with its stable code and field path, never an echo, and keeps serving', async () => {
    const { ws, next } = await raw();
    const secret = 'ghp_SECRETSECRETSECRET';
    ws.send(`{not json ${secret}`);
    expect(await next()).toMatchObject({ id: null, error: { code: -32700, data: { code: 'WRIT_PARSE_ERROR' } } });
    ws.send(JSON.stringify({ jsonrpc: '1.0', id: 1, method: 'status' }));
    expect(await next()).toMatchObject({ id: 1, error: { code: -32600, data: { code: 'WRIT_BAD_REQUEST', path: 'jsonrpc' } } });
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'approval.decision', params: {} }));
    expect(await next()).toMatchObject({ id: 2, error: { code: -32601, data: { code: 'WRIT_METHOD_NOT_FOUND' } } });
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'task.request', params: { task: 't', scopes: ['repo:read:x'], audience: 'a' } }));
    expect(await next()).toMatchObject({ id: 3, error: { code: -32000, data: { code: 'WRIT_NOT_INTRODUCED' } } });
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'hello', params: { protocol: 'writ/1', agent: { name: 'x', token: secret } } }));
    const bad = await next();
    expect(bad).toMatchObject({ id: 4, error: { code: -32602, data: { code: 'WRIT_BAD_REQUEST', path: 'params.agent' } } });
    expect(JSON.stringify(bad)).not.toContain(secret);
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'hello', params: { protocol: 'writ/0', agent: { name: 'x' } } }));
    expect(await next()).toMatchObject({ id: 5, error: { data: { code: 'WRIT_BAD_REQUEST', path: 'params.protocol' } } });
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'hello', params: { protocol: 'writ/1', agent: { name: 'x' } } }));
    expect((await next()).result.protocol).toBe('writ/1');
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'task.request', params: { task: 't', scopes: ['repo:read:x', `Repo:${secret}`], audience: 'a' } }));
    const scopeErr = await next();
    expect(scopeErr).toMatchObject({ id: 7, error: { data: { code: 'WRIT_SCOPE_INVALID', path: 'params.scopes.1' } } });
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'status', params: { pad: 'x'.repeat(70 * 1024) } }));
    expect(await next()).toMatchObject({ id: null, error: { data: { code: 'WRIT_FRAME_TOO_LARGE' } } });
    // The same connection still works, and so does another client.
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'status' }));
    expect((await next()).result.protocol).toBe('writ/1');
    const { client } = await b.agent();
    expect((await client.call('status', {})).pid).toBe(b.child.pid);
    await client.close();
    ws.close();
  });

  it('answers a second hello on one connection with WRIT_BAD_REQUEST, also one sent before the first is answered', async () => {
    const { ws, next } = await raw();
    const hello = (id: number, name: string) => JSON.stringify({ jsonrpc: '2.0', id, method: 'hello', params: { protocol: 'writ/1', agent: { name, kind: 'script' } } });
    ws.send(hello(1, 'twice-a'));
    ws.send(hello(2, 'twice-b'));
    const answers = [await next(), await next()].sort((x, y) => x.id - y.id);
    expect(answers[0].result.protocol).toBe('writ/1');
    expect(answers[1]).toMatchObject({ id: 2, error: { data: { code: 'WRIT_BAD_REQUEST', path: 'method' } } });
    ws.send(hello(3, 'twice-c'));
    expect(await next()).toMatchObject({ id: 3, error: { data: { code: 'WRIT_BAD_REQUEST', path: 'method' } } });
    const agentId = answers[0].result.agentId;
    ws.close();
    // Only the first became an agent, and closing the connection leaves it disconnected (not counted for good).
    const watcher = await WritClient.connect(b.socket);
    for (let i = 0; i < 100; i++) {
      const agents = (await watcher.call('agents.list', {})).agents;
      expect(agents.some((a) => a.name === 'twice-b' || a.name === 'twice-c')).toBe(false);
      if (agents.find((a) => a.id === agentId)?.connected === false) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await watcher.call('agents.list', {})).agents.find((a) => a.id === agentId)).toMatchObject({ name: 'twice-a', connected: false });
    await watcher.close();
  });

  it('RFC 7009 revocation answers 200 for an unknown token, and introspection says only active:false', async () => {
    const rev = await fetch(`${b.discovery.httpUrl}/oauth2/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=not-a-token',
    });
    expect(rev.status).toBe(200);
    const intro = await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: 'eyJhbGciOiJub25lIn0.e30.' });
    expect(intro).toEqual({ status: 200, json: { active: false } });
    const wrongType = await fetch(`${b.discovery.httpUrl}/oauth2/introspect`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(wrongType.status).toBe(400);
    expect((await wrongType.json()).writ_code).toBe('WRIT_BAD_REQUEST');
  });

  it('drops an HTTP request whose body passes 16 KiB without reading the rest, and keeps serving', async () => {
    const body = `token=${'a'.repeat(64 * 1024)}`;
    const dropped = await fetch(`${b.discovery.httpUrl}/oauth2/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body }).then(
      (r) => `answered ${r.status}`,
      (e: Error) => `dropped: ${e.message}`,
    );
    expect(dropped).toBe('dropped: fetch failed');
    const intro = await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token: 'eyJhbGciOiJub25lIn0.e30.' });
    expect(intro).toEqual({ status: 200, json: { active: false } });
  });
});

describe('broker: no approver', () => {
  it('denies with WRIT_NO_APPROVER when it has neither an editor nor a terminal', async () => {
    const env = freshEnv();
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [join(process.cwd(), 'dist/writ.mjs'), 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (out.includes('approvals')) {
          clearInterval(t);
          resolve();
        }
      }, 20);
    });
    expect(out).toContain('approvals  none (no terminal, no editor): every request is denied');
    const r = await writ(['token', '--task', 't', '--scope', 'repo:read:x', '--aud', 'a'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('(WRIT_NO_APPROVER)');
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
  });
});

describe('broker: keychain', () => {
  it('refuses to start without a reachable keychain, saying how to fix it, and creates no key', async () => {
    const env = freshEnv();
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const { DBUS_SESSION_BUS_ADDRESS: _d, DISPLAY: _x, ...rest } = process.env;
      import('node:child_process').then(({ execFile }) =>
        execFile(process.execPath, [join(process.cwd(), 'dist/writ.mjs'), 'serve'], { env: { ...rest, ...env } }, (error, _o, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
        ),
      );
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(WRIT_KEYCHAIN_UNAVAILABLE)');
    expect(r.stderr).toMatch(/with-keyring|Secret Service/);
  });

  it('keeps the same signing key across restarts', async () => {
    const env = freshEnv();
    const first = await BrokerProcess.start(env);
    const k1 = (await (await fetch(`${first.discovery.httpUrl}/.well-known/jwks.json`)).json()).keys[0].kid;
    await first.stop();
    const second = await BrokerProcess.start(env);
    const k2 = (await (await fetch(`${second.discovery.httpUrl}/.well-known/jwks.json`)).json()).keys[0].kid;
    await second.stop();
    expect(k2).toBe(k1);
    expect(readFileSync(join(env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8').match(/"event":"key.created"/g)).toHaveLength(1);
  });
});

describe('broker: dead peers', () => {
  it('ends a connection whose peer stops answering pings', async () => {
    const b = await BrokerProcess.start(freshEnv({ WRIT_HEARTBEAT_MS: '100' }));
    const { connect } = await import('node:net');
    // A hand-made WebSocket client that completes the upgrade and then never answers a ping.
    const sock = connect(b.discovery.socketPath);
    let received = '';
    sock.on('data', (d) => (received += d.toString('latin1')));
    sock.write(
      'GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    await new Promise<void>((resolve) => sock.on('close', () => resolve()));
    expect(received.startsWith('HTTP/1.1 101 Switching Protocols')).toBe(true);
    // A live client on the same broker is still served.
    const { client } = await b.agent();
    expect((await client.call('status', {})).pid).toBe(b.child.pid);
    await client.close();
    await b.stop();
  });
});

describe('broker: its editor goes away', () => {
  it('stops cleanly when the editor closes its pipe with news still to send: exit 0, no crash, broker.stopped and the final checkpoint on record', async () => {
    // The extension sends `shutdown` and closes the pipe at once; an editor that crashes closes it too. The
    // broker's last news (the activity of its own stop records) then has nobody to read it: before, that send
    // raised ERR_IPC_CHANNEL_CLOSED or EPIPE as an unhandled 'error' event, and a timer's flush could crash the
    // broker before its stop was on record (the CI caught it as a missing `broker.stopped`).
    const b = await BrokerProcess.start(freshEnv());
    const { client } = await b.agent('pipe-closer');
    await client.call('status', {});
    b.child.disconnect();
    expect(await b.stop()).toBe(0);
    expect(b.stderr).not.toMatch(/ERR_IPC_CHANNEL_CLOSED|EPIPE|Unhandled 'error'/);
    expect(b.auditLines().slice(-2).map((l) => JSON.parse(l).event)).toEqual(['broker.stopped', 'checkpoint']);
    await client.close();
  }, 60_000);
});
