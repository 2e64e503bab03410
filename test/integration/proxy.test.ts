// The credential-injecting proxy against a real local upstream: the secret is stored with the real CLI (stdin →
// the real keychain), agents call through the real broker with Writ tokens, and the upstream sees the injected
// credential and never the token. Refusals never reach the upstream; large and streamed bodies stream; a hung
// upstream ends in 504; each call is audited without the secret, the token or the query.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request } from 'node:http';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { BrokerProcess, WRIT, approveAll, freshEnv, requireKeyring, writ } from '../helpers/broker';
import { until } from '../helpers/until';
import { identityOf } from '../../broker/core/inventory';
import { ProxyCallDetail, ProxyEndedDetail } from '../../broker/protocol';
import type { BrokerEnv } from '../helpers/broker';
import type { WritClient } from '../../broker/sdk/client';

requireKeyring();

const SECRET = `ghp_${randomBytes(18).toString('hex')}`;
const BIG = 20 * 1024 * 1024;

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

class Upstream {
  server!: Server;
  url = '';
  seen: Seen[] = [];
  echoed = { bytes: 0, sha256: '' };
  /** Resolved by the test when the first streamed chunk has arrived through the proxy. */
  releaseStream: () => void = () => undefined;
  lastChunkSent = false;
  /** Responses to /live/… still streaming, and how many of them the proxy closed before their end. */
  live: ServerResponse[] = [];
  liveCut = 0;
  /** What each /ingest/… request has received: bytes, and whether its body ended or its connection closed. */
  ingests = new Map<string, { bytes: number; ended: boolean; closed: boolean }>();
  /** What each /upload/… request received: it is answered only once its body has ended, as Rack and PHP read one whole first. */
  uploads = new Map<string, { bytes: number; sha256: string; ended: boolean; aborted: boolean }>();
  /** Called as each request arrives, before it is answered. */
  onArrival: ((url: string) => void) | undefined;
  private hung: ServerResponse[] = [];

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  calls(path: string): number {
    return this.seen.filter((s) => s.url.split('?')[0] === path).length;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    this.onArrival?.(req.url!);
    const path = req.url!.split('?')[0]!;
    if (path === '/echo') {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        hash.update(c);
        bytes += c.length;
      });
      req.on('end', () => {
        this.echoed = { bytes, sha256: hash.digest('hex') };
      });
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      req.pipe(res);
      return;
    }
    if (path === '/stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      const released = new Promise<void>((r) => (this.releaseStream = r));
      void Promise.race([released, new Promise((r) => setTimeout(r, 15_000))]).then(() => {
        this.lastChunkSent = true;
        res.end('last chunk\n');
      });
      return;
    }
    if (path.startsWith('/live/')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first\n');
      // Busy, never idle: a byte every 100 ms, so only something other than the idle timeout can end it.
      const tick = setInterval(() => res.write('.'), 100);
      this.live.push(res);
      res.on('close', () => {
        clearInterval(tick);
        if (!res.writableEnded) this.liveCut++;
      });
      return;
    }
    if (path.startsWith('/ingest/')) {
      // Answers at once and keeps reading: an upload that goes on after the answer.
      const state = { bytes: 0, ended: false, closed: false };
      this.ingests.set(path, state);
      req.on('data', (c: Buffer) => (state.bytes += c.length));
      req.on('end', () => (state.ended = true));
      req.socket.once('close', () => (state.closed = true));
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('accepted\n');
      // /ingest/stall-…: waits for the rest of the body as long as it takes (Node's server would otherwise drop the
      // connection once its keep-alive timeout ran out after the answer), so only the proxy can end the call.
      if (path.startsWith('/ingest/stall-')) res.once('finish', () => req.socket.setTimeout(0));
      return;
    }
    if (path.startsWith('/upload/')) {
      const state = { bytes: 0, sha256: '', ended: false, aborted: false };
      const hash = createHash('sha256');
      this.uploads.set(path, state);
      req.on('data', (c: Buffer) => {
        state.bytes += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        state.ended = true;
        state.sha256 = hash.digest('hex');
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('stored\n');
      });
      req.on('close', () => (state.aborted = !req.complete));
      return;
    }
    if (path === '/hang') {
      this.hung.push(res); // never answered
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/json',
      connection: 'x-upstream-private',
      'x-upstream-private': 'hop',
      // A session the upstream derives from the injected secret: usable without the proxy if it reached the agent.
      'set-cookie': ['upstream_session=derived-from-secret; HttpOnly', 'other=1'],
    });
    res.end(JSON.stringify({ ok: true, path }));
  }

  /** Ends every /live/ response still open with a last line the agent must never get after a revocation. */
  endLive(): void {
    for (const r of this.live.splice(0)) if (!r.writableEnded && !r.destroyed) r.end('after-the-end\n');
  }

  async stop(): Promise<void> {
    this.endLive();
    for (const r of this.hung) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** `writ secret set` with the secret on stdin, as a user pipes it. */
function secretSet(env: BrokerEnv, args: string[], stdin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [WRIT, 'secret', 'set', ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

function call(
  base: string,
  path: string,
  opts: { method?: string; token?: string; body?: Buffer; headers?: Record<string, string>; onChunk?: (c: Buffer) => void } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(base);
    // host/port/path given apart: the path goes on the wire as written (a URL string would resolve %2e%2e).
    const req = request({
      host: u.hostname,
      port: u.port,
      path: `${u.pathname}${path}`,
      method: opts.method ?? 'GET',
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.body ? { 'content-length': String(opts.body.length), 'content-type': 'application/octet-stream' } : {}),
        'x-agent-header': 'kept',
        ...opts.headers,
      },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        opts.onChunk?.(c);
      });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.end(opts.body);
  });
}

/**
 * A request whose body the test writes itself (headers exactly as given, besides the token): `answer` settles
 * with the response read whole, or with the error that ended the request.
 */
function open(base: string, path: string, token: string, headers: Record<string, string>, method = 'POST'): { req: ClientRequest; answer: Promise<Reply | Error> } {
  const u = new URL(base);
  const req = request({ host: u.hostname, port: u.port, path: `${u.pathname}${path}`, method, headers: { authorization: `Bearer ${token}`, ...headers } });
  const answer = new Promise<Reply | Error>((resolve) => {
    req.on('error', resolve);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', resolve);
    });
  });
  return { req, answer };
}

async function replied(answer: Promise<Reply | Error>): Promise<Reply> {
  const r = await answer;
  if (r instanceof Error) throw r;
  return r;
}

/** A streamed GET read until it ends or is cut; `onFirst` runs when the first line has arrived. */
function stream(base: string, path: string, token: string, onFirst: () => void): Promise<{ status: number; body: string; cut: boolean }> {
  return new Promise((resolve, reject) => {
    const u = new URL(base);
    const req = request({ host: u.hostname, port: u.port, path: `${u.pathname}${path}`, headers: { authorization: `Bearer ${token}` } });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      let first = false;
      res.on('data', (c: Buffer) => {
        body += c.toString();
        if (!first && body.includes('first')) {
          first = true;
          onFirst();
        }
      });
      res.on('error', () => undefined); // a cut body: 'close' says so
      res.on('close', () => resolve({ status: res.statusCode!, body, cut: !res.complete }));
    });
    req.end();
  });
}

/** How many live processes have `pid` as their parent (the broker's keychain children). */
function childrenOf(pid: number): number {
  let n = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) n++;
    } catch {
      // gone meanwhile
    }
  }
  return n;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('the credential-injecting proxy', () => {
  let b: BrokerProcess;
  let up: Upstream;
  let agent: WritClient;
  let token: string;
  let jti: string;
  let base: string;

  const proxyRecords = (event: 'proxy.call' | 'proxy.ended' = 'proxy.call') =>
    b
      .auditLines()
      .map((l) => JSON.parse(l))
      .filter((r) => r.event === event);
  const recordFor = (pred: (r: any) => boolean, event: 'proxy.call' | 'proxy.ended' = 'proxy.call'): Promise<any> => until(() => proxyRecords(event).find(pred));
  /** The `proxy.call` and `proxy.ended` records of the latest allowed call to `url`. */
  async function endOf(url: string): Promise<{ call: any; ended: any }> {
    const call = await until(() => proxyRecords().findLast((x) => x.detail.allowed === true && x.detail.url === url));
    const ended = await recordFor((x) => x.detail.call === call.detail.call, 'proxy.ended');
    return { call, ended };
  }

  beforeAll(async () => {
    up = new Upstream();
    await up.start();
    const env = freshEnv({ WRIT_PROXY_TIMEOUT_MS: '3000', WRIT_PROXY_MAX_CALLS: '3' });
    const set = await secretSet(env, ['gh', '--upstream', up.url], `${SECRET}\n`);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout + set.stderr).not.toContain(SECRET);
    b = await BrokerProcess.start(env);
    b.decide = approveAll;
    ({ client: agent } = await b.agent('proxied-agent'));
    const r = await agent.call('task.request', {
      task: 'read acme/web issues through the proxy',
      scopes: [`http:GET:${up.url}/repos/acme/web/**`, `http:POST:${up.url}/echo`, `http:GET:${up.url}/stream`, `http:GET:${up.url}/hang`],
      audience: up.url,
    });
    token = r.token.token;
    jti = r.token.jti;
    base = `${b.discovery.httpUrl}/proxy/gh`;
  }, 60_000);

  afterAll(async () => {
    await agent?.close();
    await b?.stop();
    await up?.stop();
  });

  it('secret list shows the name and the upstream, never the value; the secret is in no file of the state folder', async () => {
    const list = await writ(['secret', 'list'], b.env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^NAME\s+UPSTREAM\s+HEADER\s+UPDATED\n/);
    expect(list.stdout).toContain('gh');
    expect(list.stdout).toContain(up.url);
    expect(list.stdout + list.stderr).not.toContain(SECRET);
    const json = await writ(['secret', 'list', '--json'], b.env);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ name: 'gh', upstream: up.url, header: 'Authorization', scheme: 'Bearer' })]);
    expect(readFileSync(join(b.env.WRIT_STATE_DIR, 'secrets.json'), 'utf8')).not.toContain(SECRET);
  });

  it('secret set refuses an empty secret, a secret on argv position, and plain http to a remote host', async () => {
    expect((await secretSet(b.env, ['x', '--upstream', up.url], '')).code).toBe(2);
    expect((await secretSet(b.env, ['x', SECRET, '--upstream', up.url], SECRET)).code).toBe(2);
    const remote = await secretSet(b.env, ['x', '--upstream', 'http://api.example.com'], SECRET);
    expect(remote.code).toBe(2);
    expect(remote.stderr).toContain('https');
  });

  it('secret set refuses a second secret for an upstream one already serves (a token names the upstream, not the secret)', async () => {
    const second = await secretSet(b.env, ['gh-admin', '--upstream', `${up.url}/`], 'another-credential');
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('WRIT_SECRET_AMBIGUOUS');
    expect(second.stderr).toContain('secret gh already serves');
    const list = await writ(['secret', 'list', '--json'], b.env);
    expect(JSON.parse(list.stdout).map((r: { name: string }) => r.name)).toEqual(['gh']);
    // A narrower upstream is another audience: allowed.
    const narrow = await secretSet(b.env, ['gh-echo', '--upstream', `${up.url}/echo-only`], 'narrow-credential');
    expect(narrow.code, narrow.stderr).toBe(0);
    expect((await writ(['secret', 'rm', 'gh-echo'], b.env)).code).toBe(0);
  });

  it('an allowed GET reaches the upstream with the injected credential and without the Writ token', async () => {
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/web/issues?state=open&access_token=querysecretvalue', { token });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toEqual({ ok: true, path: '/repos/acme/web/issues' });
    expect(r.headers['x-upstream-private']).toBeUndefined(); // named in the upstream's Connection: hop-by-hop
    const seen = up.seen[before]!;
    expect(seen.url).toBe('/repos/acme/web/issues?state=open&access_token=querysecretvalue');
    expect(seen.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(seen.headers.host).toBe(new URL(up.url).host);
    expect(seen.headers['x-agent-header']).toBe('kept');
    expect(JSON.stringify(seen.headers)).not.toContain(token);
    const { call: rec, ended } = await endOf(`${up.url}/repos/acme/web/issues`);
    expect(ProxyCallDetail.parse(rec.detail)).toEqual({ allowed: true, call: expect.stringMatching(/^pxc_/), secret: 'gh', method: 'GET', url: `${up.url}/repos/acme/web/issues`, query: true });
    expect(rec).toMatchObject({ outcome: 'success', jti, audience: up.url, agent: { name: 'proxied-agent' } });
    expect(rec.code).toBeUndefined();
    // How it ended, in a second record that names the same call: after the first, with the bytes.
    expect(ended.seq).toBeGreaterThan(rec.seq);
    expect(ProxyEndedDetail.parse(ended.detail)).toEqual({
      call: rec.detail.call,
      secret: 'gh',
      method: 'GET',
      url: `${up.url}/repos/acme/web/issues`,
      status: 200,
      bytesUp: 0,
      bytesDown: r.body.length,
      reason: 'complete',
    });
    expect(ended).toMatchObject({ outcome: 'success', jti, audience: up.url, agent: { name: 'proxied-agent' }, task: { description: 'read acme/web issues through the proxy' } });
  });

  it('no record, no forward: the allowed call is in the audit log when the upstream receives it', async () => {
    const url = `${up.url}/repos/acme/web/recorded`;
    let atArrival: any[] | undefined;
    up.onArrival = (path) => {
      if (path === '/repos/acme/web/recorded') atArrival = proxyRecords().filter((x) => x.detail.url === url);
    };
    const r = await call(base, '/repos/acme/web/recorded', { token });
    up.onArrival = undefined;
    expect(r.status).toBe(200);
    expect(atArrival?.map((x) => [x.outcome, x.detail.allowed, x.jti])).toEqual([['success', true, jti]]);
    const { ended } = await endOf(url);
    expect([ended.detail.status, ended.detail.reason]).toEqual([200, 'complete']);
  });

  it('a token whose scopes do not cover the call: 403 insufficient_scope, and the upstream is never called', async () => {
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/other/issues', { token });
    expect(r.status).toBe(403);
    expect(r.headers['www-authenticate']).toContain('error="insufficient_scope"');
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: 'insufficient_scope', writ_code: 'WRIT_SCOPE_NOT_COVERED' });
    const post = await call(base, '/repos/acme/web/issues', { token, method: 'POST', body: Buffer.from('{}') });
    expect(post.status).toBe(403);
    const dots = await call(base, '/repos/acme/web/%2e%2e/%2e%2e/other', { token });
    expect(dots.status).toBe(400);
    expect(up.seen.length).toBe(before);
    await recordFor((x) => x.detail.url === `${up.url}/repos/acme/other/issues` && x.outcome === 'failure' && x.code === 'WRIT_SCOPE_NOT_COVERED' && x.detail.status === 403);
  });

  it('a path the scope check and the upstream URL could read two ways (#, [, {, ") is refused before the upstream', async () => {
    // A scope with a glob before a fixed tail: '#' would let /repos/acme#/readme match it while the URL sent
    // upstream ends at /repos/acme (the fragment is never sent).
    const r = await agent.call('task.request', { task: 'read readmes', scopes: [`http:GET:${up.url}/repos/*/readme`], audience: up.url });
    const before = up.seen.length;
    for (const path of ['/repos/acme#/readme', '/repos/acme[/readme', '/repos/{acme}/readme', '/repos/"acme"/readme']) {
      const res = await call(base, path, { token: r.token.token });
      expect([path, res.status, JSON.parse(res.body.toString()).writ_code]).toEqual([path, 400, 'WRIT_BAD_REQUEST']);
    }
    const query = await call(base, '/repos/acme/readme?ref=main#x', { token: r.token.token });
    expect([query.status, JSON.parse(query.body.toString()).writ_code]).toEqual([400, 'WRIT_BAD_REQUEST']);
    expect(up.seen.length).toBe(before);
    // The plain path is served, and only the path checked reaches the upstream.
    expect((await call(base, '/repos/acme/readme', { token: r.token.token })).status).toBe(200);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual(['/repos/acme/readme']);
  });

  it('a `..;` or `.;` segment (a dot segment to Tomcat, Jetty and Spring) is refused with 400 before the upstream, and recorded as refused', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    for (const path of ['/repos/acme/web/..;/..;/..;/admin/users', '/repos/acme/web/..;x=1/admin', '/repos/acme/web/.;/issues']) {
      const r = await call(base, path, { token });
      expect([path, r.status, JSON.parse(r.body.toString()).writ_code]).toEqual([path, 400, 'WRIT_BAD_REQUEST']);
    }
    expect(up.seen.slice(before).map((s) => s.url)).toEqual([]);
    const refused = await until(() => {
      const recs = proxyRecords().slice(recordsBefore);
      return recs.length >= 3 ? recs : undefined;
    });
    expect(refused.map((x) => [x.outcome, x.code, x.detail.allowed, x.detail.status])).toEqual(Array(3).fill(['failure', 'WRIT_BAD_REQUEST', false, 400]));
    // A `;` elsewhere in a segment is an ordinary path character, and is served.
    expect((await call(base, '/repos/acme/web/a;b=..', { token })).status).toBe(200);
    expect(up.seen.slice(before).map((s) => s.url)).toEqual(['/repos/acme/web/a;b=..']);
  });

  it('an empty segment is refused with 400 before the upstream; a trailing `/` is forwarded only where the scopes cover the path without it', async () => {
    // nginx merges `//` and Tomcat cuts `/;x` to `/`; Express and Spring 5 read `/items/` as `/items`.
    const scopes = [`http:DELETE:${up.url}/items/*`, `http:GET:${up.url}/repos/*/readme`, `http:GET:${up.url}/docs/**`, `http:GET:${up.url}/api/*/`];
    const r = await agent.call('task.request', { task: 'tidy items', scopes, audience: up.url });
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const cases: Array<[string, string]> = [
      ['GET', '/repos//readme'],
      ['GET', '//repos/acme/readme'],
      ['GET', '/repos/;x/readme'],
      ['DELETE', '/items/;x'],
      ['GET', '/docs/a//b'],
      // `docs/**` matches `docs/`, but `docs` is not granted.
      ['GET', '/docs/'],
      // Encoded twice: `..`, `/` and `;` to an upstream that decodes twice.
      ['DELETE', '/items/%252e%252e'],
      ['GET', '/repos/%252F/readme'],
      ['GET', '/docs/a%253Bx/b'],
    ];
    const got: Array<[string, number, string]> = [];
    for (const [method, path] of cases) {
      const res = await call(base, path, { token: r.token.token, method });
      got.push([path, res.status, JSON.parse(res.body.toString()).writ_code]);
    }
    // A one-segment glob never matches an empty segment: the collection is not "any item".
    const collection = await call(base, '/items/', { token: r.token.token, method: 'DELETE' });
    got.push(['/items/', collection.status, JSON.parse(collection.body.toString()).writ_code]);
    expect(got).toEqual([...cases.map(([, path]): [string, number, string] => [path, 400, 'WRIT_BAD_REQUEST']), ['/items/', 403, 'WRIT_SCOPE_NOT_COVERED']]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await until(() => {
      const recs = proxyRecords().slice(recordsBefore);
      return recs.length >= cases.length + 1 ? recs : undefined;
    });
    expect(refused.map((x) => [x.outcome, x.code, x.detail.allowed, x.detail.status])).toEqual([
      ...Array(cases.length).fill(['failure', 'WRIT_BAD_REQUEST', false, 400]),
      ['failure', 'WRIT_SCOPE_NOT_COVERED', false, 403],
    ]);
    // Served: an item, a trailing `/` under `**` below the granted root, and one a scope ending in `/` names.
    const served: Array<[string, string]> = [['DELETE', '/items/42'], ['GET', '/repos/acme/readme'], ['GET', '/docs/a/'], ['GET', '/api/v1/']];
    for (const [method, path] of served) expect([path, (await call(base, path, { token: r.token.token, method })).status]).toEqual([path, 200]);
    expect(up.seen.slice(before).map((x) => `${x.method} ${x.url}`)).toEqual(served.map(([m, p]) => `${m} ${p}`));
    // Path refusals come before the token is read, so they count toward the 20 a second without one: the next
    // test starts in a fresh second.
    await new Promise((r) => setTimeout(r, 1100));
  });

  it('a query key that frameworks read as the method (`_method=DELETE`) is refused with 400 before the upstream', async () => {
    const before = up.seen.length;
    // `.method` and `_method[]`: PHP reads both as `_method` (Laravel).
    for (const path of ['/repos/acme/web/issues?_method=DELETE', '/repos/acme/web/issues?a=1&X-HTTP-Method-Override=DELETE', '/repos/acme/web/issues?x-method-override=PUT', '/repos/acme/web/issues?.method=DELETE', '/repos/acme/web/issues?_method[]=DELETE',
      // Rack 2.2's normalize_params drops leading brackets and a trailing ']': each of these is `_method` to it.
      '/repos/acme/web/issues?%5B_method%5D=DELETE', '/repos/acme/web/issues?a=1&%5D_method=DELETE', '/repos/acme/web/issues?_method%5D=DELETE']) {
      const r = await call(base, path, { token });
      expect([path, r.status, JSON.parse(r.body.toString()).writ_code]).toEqual([path, 400, 'WRIT_BAD_REQUEST']);
    }
    expect(up.seen.slice(before).map((s) => s.url)).toEqual([]);
    expect((await call(base, '/repos/acme/web/issues?method=x&payment_method=card&page=2', { token })).status).toBe(200);
    expect(up.seen.slice(before).map((s) => s.url)).toEqual(['/repos/acme/web/issues?method=x&payment_method=card&page=2']);
  });

  const FORM = 'application/x-www-form-urlencoded';

  it('a form body naming another method (`_method` in any spelling a framework reads) is refused with 400 before the upstream, and recorded', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const cases: [string, Record<string, string>][] = [
      ['title=x&_method=DELETE', { 'content-type': FORM }],
      ['_METHOD=delete', { 'content-type': `${FORM}; charset=utf-8` }],
      ['%5Fmethod=PUT', { 'content-type': 'Application/X-WWW-Form-Urlencoded' }],
      ['%5f%4D%45THOD=PUT', { 'content-type': FORM }],
      ['a=1&.method=DELETE', { 'content-type': FORM }], // PHP reads '.' in a name as '_'
      ['+_method=PATCH', { 'content-type': FORM }], // a leading space, which PHP drops
      ['_method[]=DELETE', { 'content-type': FORM }],
      ['title=x&%5D_method=DELETE', { 'content-type': FORM }], // Rack 2.2 drops leading brackets: `_method`
      ['%5B_method%5D=DELETE', { 'content-type': FORM }],
      ['_method%5D=DELETE', { 'content-type': FORM }], // and cuts at the first ']'
      ['a=1;_method=DELETE', { 'content-type': FORM }], // ';' separates fields in older Rack
      ['X-HTTP-Method-Override=DELETE', { 'content-type': FORM }],
      ['_method=DELETE', { 'content-type': `${FORM}, text/plain` }], // Rack and PHP cut the type at ','
      ['_method=DELETE', {}], // a POST with no Content-Type: Rack parses it as a form
    ];
    const answers: unknown[] = [];
    for (const [body, headers] of cases) {
      const { req, answer } = open(base, '/echo', token, { ...headers, 'content-length': String(body.length) });
      req.end(body);
      const r = await replied(answer);
      answers.push([body, headers['content-type'], r.status, JSON.parse(r.body.toString())]);
    }
    // Chunked, the field name split across two chunks.
    const { req, answer } = open(base, '/echo', token, { 'content-type': FORM });
    req.write('title=x&_me');
    req.end('thod=DELETE');
    const r = await replied(answer);
    answers.push(['chunked', FORM, r.status, JSON.parse(r.body.toString())]);
    const refusal = {
      error: 'invalid_request',
      error_description: 'the form body must not name another method (_method, x-http-method-override, x-http-method, x-method-override)',
      writ_code: 'WRIT_BAD_REQUEST',
      writ_path: 'body',
    };
    expect(answers).toEqual([...cases.map(([body, h]) => [body, h['content-type'], 400, refusal]), ['chunked', FORM, 400, refusal]]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await until(() => {
      const recs = proxyRecords().slice(recordsBefore);
      return recs.length >= cases.length + 1 ? recs : undefined;
    });
    expect(refused.map((x) => [x.outcome, x.code, x.jti, x.detail.allowed, x.detail.status, x.detail.url])).toEqual(
      Array(cases.length + 1).fill(['failure', 'WRIT_BAD_REQUEST', jti, false, 400, `${up.url}/echo`]),
    );
  });

  it('a form body that names no other method reaches the upstream byte for byte, with Content-Length or chunked', async () => {
    const body = 'title=x&method=DELETE&payment_method=card&note=_method%3DDELETE&q=a+b%26c';
    const whole = await call(base, '/echo', { token, method: 'POST', body: Buffer.from(body), headers: { 'content-type': FORM } });
    expect([whole.status, whole.body.toString()]).toEqual([200, body]);
    const { ended } = await endOf(`${up.url}/echo`);
    expect([ended.detail.reason, ended.detail.bytesUp, ended.detail.bytesDown]).toEqual(['complete', body.length, body.length]);
    const before = up.seen.length;
    const { req, answer } = open(base, '/echo', token, { 'content-type': FORM });
    req.write(body.slice(0, 10));
    req.end(body.slice(10));
    const chunked = await replied(answer);
    expect([chunked.status, chunked.body.toString()]).toEqual([200, body]);
    expect([up.seen[before]!.headers['content-type'], up.seen[before]!.headers['content-length']]).toEqual([FORM, String(body.length)]);
    expect(up.echoed).toEqual({ bytes: body.length, sha256: sha(Buffer.from(body)) });
  });

  it('a form body over 1 MiB is refused 413 WRIT_FRAME_TOO_LARGE before the upstream, by its Content-Length or once past the bound', async () => {
    const MAX = 1024 * 1024;
    const before = up.seen.length;
    const declared = open(base, '/echo', token, { 'content-type': FORM, 'content-length': String(MAX + 1) });
    declared.req.write('title=x');
    const d = await replied(declared.answer);
    declared.req.destroy();
    const chunked = open(base, '/echo', token, { 'content-type': FORM });
    chunked.req.write(Buffer.alloc(MAX + 1, 'a'));
    const c = await replied(chunked.answer);
    chunked.req.destroy();
    const refusal = {
      error: 'invalid_request',
      error_description: `a form body (${FORM}, a POST without a Content-Type, or a multipart/ type without a boundary Rack reads) is read whole to check the method it names: at most ${MAX} bytes`,
      writ_code: 'WRIT_FRAME_TOO_LARGE',
    };
    expect([d, c].map((r) => [r.status, r.headers.connection, JSON.parse(r.body.toString())])).toEqual([
      [413, 'close', refusal],
      [413, 'close', refusal],
    ]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    await recordFor((x) => x.code === 'WRIT_FRAME_TOO_LARGE' && x.detail.status === 413 && x.jti === jti);
  });

  it('a form body that stops arriving: 408 WRIT_BAD_REQUEST once no byte came for WRIT_PROXY_TIMEOUT_MS, nothing upstream', async () => {
    const before = up.seen.length;
    const { req, answer } = open(base, '/echo', token, { 'content-type': FORM, 'content-length': '100' });
    req.write('title=');
    const r = await replied(answer);
    req.destroy();
    expect([r.status, r.headers.connection, JSON.parse(r.body.toString())]).toEqual([
      408,
      'close',
      { error: 'invalid_request', error_description: 'no byte of the form body arrived for 3000 ms', writ_code: 'WRIT_BAD_REQUEST' },
    ]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
  }, 30_000);

  const OVERRIDES = '_method, x-http-method-override, x-http-method, x-method-override';
  /** The records of the calls made since `recordsBefore`, once there are `n`. */
  const refusedSince = (recordsBefore: number, n: number) =>
    until(() => {
      const recs = proxyRecords().slice(recordsBefore);
      return recs.length >= n ? recs : undefined;
    });

  it('a JSON body naming another method at its top level (any spelling, either order of duplicate keys) is refused with 400 before the upstream, and recorded', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const cases: [string, string][] = [
      ['{"title":"x","_method":"DELETE"}', 'application/json'],
      ['{"X-HTTP-Method-Override":"DELETE"}', 'application/json; charset=utf-8'],
      ['{"_METHOD":"delete"}', 'Application/JSON'],
      ['{"x-Method-Override":"PUT"}', 'application/vnd.api+json'],
      ['{"_method":"DELETE","_method":"POST"}', 'application/json'], // JSON.parse keeps the last: POST
      ['{"_method":"POST","_method":"DELETE"}', 'application/json'],
      ['{"\\u005fmethod":"PATCH"}', 'application/json'],
      ['{"a":{"b":[1,2]},"_method[]":"DELETE"}', 'application/json'],
      ['{".method":"DELETE"}', 'text/json'], // Laravel's isJson(): "/json" anywhere in the Content-Type
    ];
    const answers: unknown[] = [];
    for (const [body, type] of cases) {
      const { req, answer } = open(base, '/echo', token, { 'content-type': type, 'content-length': String(body.length) });
      req.end(body);
      const r = await replied(answer);
      answers.push([body, r.status, JSON.parse(r.body.toString())]);
    }
    // Chunked, the key split across two chunks.
    const { req, answer } = open(base, '/echo', token, { 'content-type': 'application/json' });
    req.write('{"title":"x","_me');
    req.end('thod":"DELETE"}');
    const r = await replied(answer);
    answers.push(['chunked', r.status, JSON.parse(r.body.toString())]);
    const refusal = {
      error: 'invalid_request',
      error_description: `the JSON body must not name another method at its top level (${OVERRIDES})`,
      writ_code: 'WRIT_BAD_REQUEST',
      writ_path: 'body',
    };
    expect(answers).toEqual([...cases.map(([body]) => [body, 400, refusal]), ['chunked', 400, refusal]]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await refusedSince(recordsBefore, cases.length + 1);
    expect(refused.map((x) => [x.outcome, x.code, x.jti, x.detail.allowed, x.detail.status, x.detail.url])).toEqual(
      Array(cases.length + 1).fill(['failure', 'WRIT_BAD_REQUEST', jti, false, 400, `${up.url}/echo`]),
    );
  });

  it('a JSON body without one at its top level reaches the upstream byte for byte, and so does a body that is not JSON at all', async () => {
    const bodies = [
      '{"data":{"_method":"DELETE"},"note":"_method","q":"a&_method=DELETE"}', // nested, a value, form-like text: the app's own data
      '[{"_method":"DELETE"}]',
      '{"title": "not finished",', // not JSON: the upstream answers it
    ];
    for (const body of bodies) {
      const before = up.seen.length;
      const r = await call(base, '/echo', { token, method: 'POST', body: Buffer.from(body), headers: { 'content-type': 'application/json' } });
      expect([body, r.status, r.body.toString()]).toEqual([body, 200, body]);
      expect(up.seen.slice(before).map((x) => [x.url, x.headers['content-type']])).toEqual([['/echo', 'application/json']]);
      expect(up.echoed).toEqual({ bytes: body.length, sha256: sha(Buffer.from(body)) });
    }
  });

  it('a JSON body in another charset than UTF-8 (UTF-7, UTF-16, which body-parser decodes) is refused 415 before the upstream; UTF-8, with or without its byte order mark, is not', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const utf16 = Buffer.from('{"_method":"DELETE"}', 'utf16le');
    const cases: [string, string, Buffer, string][] = [
      ['utf-7', 'application/json; charset=utf-7', Buffer.from('{"+AF8-method":"DELETE"}'), 'content-type'],
      ['utf-16le', 'application/json; charset=utf-16le', utf16, 'content-type'],
      ['quoted UTF-16', 'application/json; charset="UTF-16"', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16]), 'content-type'],
      ['a UTF-16 byte order mark, no charset', 'application/json', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16]), 'body'],
      ['UTF-16 without a byte order mark', 'application/json; charset=utf-8', utf16, 'body'],
    ];
    const answers: unknown[] = [];
    for (const [what, type, body] of cases) {
      const { req, answer } = open(base, '/echo', token, { 'content-type': type, 'content-length': String(body.length) });
      req.end(body);
      const r = await replied(answer);
      answers.push([what, r.status, JSON.parse(r.body.toString())]);
    }
    const refusal = (at: string) => ({
      error: 'invalid_request',
      error_description: 'a JSON body must be UTF-8 (charset utf-8 or us-ascii, or none; no UTF-16 or UTF-32 byte order mark): it is read to check the method it names',
      writ_code: 'WRIT_BAD_REQUEST',
      writ_path: at,
    });
    expect(answers).toEqual(cases.map(([what, , , at]) => [what, 415, refusal(at)]));
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await refusedSince(recordsBefore, cases.length);
    expect(refused.map((x) => [x.outcome, x.code, x.detail.allowed, x.detail.status])).toEqual(Array(cases.length).fill(['failure', 'WRIT_BAD_REQUEST', false, 415]));
    for (const [type, body] of [
      ['application/json; charset=UTF-8', Buffer.from('{"payment_method":"card"}')],
      ['application/json; charset=us-ascii', Buffer.from('{"title":"x"}')],
      ['application/json', Buffer.from('\ufeff{"title":"x"}')],
    ] as const) {
      const r = await call(base, '/echo', { token, method: 'POST', body, headers: { 'content-type': type } });
      expect([type, r.status, sha(r.body)]).toEqual([type, 200, sha(body)]);
    }
    // Behind a UTF-8 byte order mark the key is still found.
    const bom = Buffer.from('\ufeff{"_method":"DELETE"}');
    const r = await call(base, '/echo', { token, method: 'POST', body: bom, headers: { 'content-type': 'application/json' } });
    expect([r.status, JSON.parse(r.body.toString()).writ_code]).toEqual([400, 'WRIT_BAD_REQUEST']);
  });

  it('a JSON body over 1 MiB is refused 413 WRIT_FRAME_TOO_LARGE before the upstream, by its Content-Length or once past the bound', async () => {
    const MAX = 1024 * 1024;
    const before = up.seen.length;
    const declared = open(base, '/echo', token, { 'content-type': 'application/json', 'content-length': String(MAX + 1) });
    declared.req.write('{"title":');
    const d = await replied(declared.answer);
    declared.req.destroy();
    const chunked = open(base, '/echo', token, { 'content-type': 'application/problem+json' });
    chunked.req.write(`{"pad":"${'a'.repeat(MAX)}`);
    const c = await replied(chunked.answer);
    chunked.req.destroy();
    const refusal = {
      error: 'invalid_request',
      error_description: `a JSON body (a Content-Type with /json or +json) is read whole to check the method it names: at most ${MAX} bytes`,
      writ_code: 'WRIT_FRAME_TOO_LARGE',
    };
    expect([d, c].map((x) => [x.status, x.headers.connection, JSON.parse(x.body.toString())])).toEqual([
      [413, 'close', refusal],
      [413, 'close', refusal],
    ]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
  });

  const MB = '----WritTestBoundary5f3a9c0e';
  const MULTIPART = `multipart/form-data; boundary=${MB}`;
  const formPart = (headers: string, content: string | Buffer) => Buffer.concat([Buffer.from(`--${MB}\r\n${headers}\r\n\r\n`), Buffer.from(content), Buffer.from('\r\n')]);
  const titlePart = formPart('Content-Disposition: form-data; name="title"', 'a title');
  const closing = Buffer.from(`--${MB}--\r\n`);

  it('a multipart body with a part named for another method (quoted, bare, name*=, any case, the part last, by Content-ID, over two lines, an empty boundary) is refused with 400 before the upstream, and recorded', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const cases: [string, string, Buffer][] = [
      ['quoted, the part last', MULTIPART, Buffer.concat([titlePart, formPart('Content-Disposition: form-data; name="_method"', 'DELETE'), closing])],
      ['bare', MULTIPART, Buffer.concat([formPart('Content-Disposition: form-data; name=_method', 'DELETE'), titlePart, closing])],
      ['name*=', MULTIPART, Buffer.concat([titlePart, formPart("Content-Disposition: form-data; name*=utf-8''%5Fmethod", 'PUT'), closing])],
      ['odd case', `Multipart/Form-Data; BOUNDARY="${MB}"`, Buffer.concat([formPart('content-disposition: FORM-DATA; Name="X-HTTP-Method-Override"', 'DELETE'), closing])],
      ['multipart/mixed (Rack parses it)', `multipart/mixed; boundary=${MB}`, Buffer.concat([formPart('Content-Disposition: form-data; name="_method"', 'DELETE'), closing])],
      // Rack names a part without a Content-Disposition by its Content-ID.
      ['Content-ID', MULTIPART, Buffer.concat([titlePart, formPart('Content-ID: _method', 'DELETE'), closing])],
      // A delimiter inside the part headers does not end them: Rack and PHP read the name after it.
      ['a delimiter inside the headers', MULTIPART, Buffer.concat([formPart(`Content-Disposition: form-data; x=--${MB}; name="_method"`, 'DELETE'), closing])],
      // PHP joins a header line without a colon onto the one before it.
      ['a name over two lines (PHP)', MULTIPART, Buffer.concat([formPart('Content-Disposition: form-data; na\r\nme="_me\r\nthod"', 'DELETE'), closing])],
      // PHP takes an empty boundary as one: its delimiter is `--`.
      ['boundary="" (PHP)', 'multipart/form-data; boundary=""', Buffer.from('--\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n----\r\n')],
      ['boundary=;x (PHP)', 'multipart/form-data; boundary=;x=1', Buffer.from('--\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n----\r\n')],
      // Rack 2.2 reads [_method] as _method.
      ['[_method] (Rack 2.2)', MULTIPART, Buffer.concat([formPart('Content-Disposition: form-data; name="[_method]"', 'DELETE'), closing])],
      // busboy undoes a quoted boundary's escapes.
      ['boundary="a\\"b"', 'multipart/form-data; boundary="a\\"b"', Buffer.from('--a"b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--a"b--\r\n')],
    ];
    const answers: unknown[] = [];
    for (const [what, type, body] of cases) {
      const { req, answer } = open(base, '/echo', token, { 'content-type': type, 'content-length': String(body.length) });
      req.end(body);
      const r = await replied(answer);
      answers.push([what, r.status, JSON.parse(r.body.toString())]);
    }
    // Chunked, a chunk boundary inside the delimiter and another inside the part's headers.
    const body = Buffer.concat([titlePart, formPart('Content-Disposition: form-data; name="_method"', 'DELETE'), closing]);
    const { req, answer } = open(base, '/echo', token, { 'content-type': MULTIPART });
    const cutA = titlePart.length + 10;
    const cutB = titlePart.length + MB.length + 30;
    req.write(body.subarray(0, cutA));
    req.write(body.subarray(cutA, cutB));
    req.end(body.subarray(cutB));
    const r = await replied(answer);
    answers.push(['chunked', r.status, JSON.parse(r.body.toString())]);
    const refusal = {
      error: 'invalid_request',
      error_description: `the multipart body must not hold a part named for another method (${OVERRIDES})`,
      writ_code: 'WRIT_BAD_REQUEST',
      writ_path: 'body',
    };
    expect(answers).toEqual([...cases.map(([what]) => [what, 400, refusal]), ['chunked', 400, refusal]]);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await refusedSince(recordsBefore, cases.length + 1);
    expect(refused.map((x) => [x.outcome, x.code, x.jti, x.detail.allowed, x.detail.status])).toEqual(Array(cases.length + 1).fill(['failure', 'WRIT_BAD_REQUEST', jti, false, 400]));
  });

  it('a multipart body without one reaches the upstream byte for byte, with Content-Length or chunked', async () => {
    const body = Buffer.concat([
      titlePart,
      formPart('Content-Disposition: form-data; name="payment_method"', 'card'),
      // A file's content is never read, even one that looks like part headers.
      formPart('Content-Disposition: form-data; name="file"; filename="notes.txt"\r\nContent-Type: text/plain', 'says _method=DELETE and\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'),
      closing,
    ]);
    const whole = await call(base, '/echo', { token, method: 'POST', body, headers: { 'content-type': MULTIPART } });
    expect([whole.status, sha(whole.body)]).toEqual([200, sha(body)]);
    const { ended } = await endOf(`${up.url}/echo`);
    expect([ended.detail.reason, ended.detail.bytesUp, ended.detail.bytesDown]).toEqual(['complete', body.length, body.length]);
    const { req, answer } = open(base, '/echo', token, { 'content-type': MULTIPART });
    req.write(body.subarray(0, 7));
    req.end(body.subarray(7));
    const chunked = await replied(answer);
    expect([chunked.status, sha(chunked.body)]).toEqual([200, sha(body)]);
    expect(up.echoed).toEqual({ bytes: body.length, sha256: sha(body) });
  });

  it('a multipart/ type without a boundary Rack reads is read as the form Rack parses it as: `_method` in it is refused 400 before the upstream, over 1 MiB 413', async () => {
    const before = up.seen.length;
    const recordsBefore = proxyRecords().length;
    const types = ['multipart/form-data', "multipart/form-data; boundary*=utf-8''XyZ", 'multipart/form-data; boundary=""', 'multipart/mixed; boundary=;x=1', 'Multipart/Related; BOUNDARY =XyZ'];
    const answers: unknown[] = [];
    for (const type of types) {
      const body = 'title=x&_method=DELETE';
      const { req, answer } = open(base, '/echo', token, { 'content-type': type, 'content-length': String(body.length) });
      req.end(body);
      const r = await replied(answer);
      answers.push([type, r.status, JSON.parse(r.body.toString())]);
    }
    const refusal = { error: 'invalid_request', error_description: `the form body must not name another method (${OVERRIDES})`, writ_code: 'WRIT_BAD_REQUEST', writ_path: 'body' };
    expect(answers).toEqual(types.map((t) => [t, 400, refusal]));
    const big = open(base, '/echo', token, { 'content-type': 'multipart/form-data' });
    big.req.write(Buffer.alloc(1024 * 1024 + 1, 'a'));
    const b = await replied(big.answer);
    big.req.destroy();
    expect([b.status, b.headers.connection, JSON.parse(b.body.toString()).writ_code]).toEqual([413, 'close', 'WRIT_FRAME_TOO_LARGE']);
    expect(up.seen.slice(before).map((x) => x.url)).toEqual([]);
    const refused = await refusedSince(recordsBefore, types.length + 1);
    expect(refused.map((x) => [x.outcome, x.code, x.detail.allowed, x.detail.status])).toEqual([
      ...Array(types.length).fill(['failure', 'WRIT_BAD_REQUEST', false, 400]),
      ['failure', 'WRIT_FRAME_TOO_LARGE', false, 413],
    ]);
    // One without such a field is forwarded as it came.
    const plain = Buffer.from('title=x&payment_method=card');
    const ok = await call(base, '/echo', { token, method: 'POST', body: plain, headers: { 'content-type': 'multipart/form-data' } });
    expect([ok.status, ok.body.toString()]).toEqual([200, plain.toString()]);
  });

  it('a multipart body over 1 MiB streams on, scanned: a part named for another method at its end stops it before the upstream has the body whole (400, recorded as body-refused)', async () => {
    const r = await agent.call('task.request', { task: 'upload files', scopes: [`http:POST:${up.url}/upload/**`], audience: up.url });
    const MAX = 1024 * 1024;
    const file = formPart('Content-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream', randomBytes(3 * MAX));
    const body = Buffer.concat([titlePart, file, formPart('Content-Disposition: form-data; name="_method"', 'DELETE'), closing]);
    const { req, answer } = open(base, '/upload/late', r.token.token, { 'content-type': MULTIPART, 'content-length': String(body.length) });
    req.end(body);
    const got = await replied(answer);
    expect([got.status, got.headers.connection, JSON.parse(got.body.toString())]).toEqual([
      400,
      'close',
      { error: 'invalid_request', error_description: `the multipart body must not hold a part named for another method (${OVERRIDES})`, writ_code: 'WRIT_BAD_REQUEST', writ_path: 'body' },
    ]);
    // The upstream got the start of it (the call was allowed and forwarded), never its end: its handler never answered.
    const state = await until(() => (up.uploads.get('/upload/late')?.aborted ? up.uploads.get('/upload/late') : undefined));
    expect(state.ended).toBe(false);
    expect(state.bytes).toBeGreaterThan(0);
    expect(state.bytes).toBeLessThan(body.length);
    const { call: rec, ended } = await endOf(`${up.url}/upload/late`);
    expect(rec).toMatchObject({ outcome: 'success', jti: r.token.jti, detail: { allowed: true, method: 'POST' } });
    expect(ProxyEndedDetail.parse(ended.detail)).toEqual({
      call: rec.detail.call,
      secret: 'gh',
      method: 'POST',
      url: `${up.url}/upload/late`,
      status: 400,
      bytesUp: ended.detail.bytesUp,
      bytesDown: 0,
      reason: 'body-refused',
    });
    expect([ended.outcome, ended.code]).toEqual(['failure', 'WRIT_BAD_REQUEST']);
    expect(ended.detail.bytesUp).toBeGreaterThanOrEqual(state.bytes);
    expect(ended.detail.bytesUp).toBeLessThan(body.length);

    // A body that ends inside such a part's headers is judged only at its end: its last bytes were held back till then.
    const unended = Buffer.concat([titlePart, file, Buffer.from(`--${MB}\r\nContent-Disposition: form-data; name="_method"`)]);
    const u = open(base, '/upload/unended', r.token.token, { 'content-type': MULTIPART, 'content-length': String(unended.length) });
    u.req.end(unended);
    const gotU = await replied(u.answer);
    expect([gotU.status, JSON.parse(gotU.body.toString()).writ_code]).toEqual([400, 'WRIT_BAD_REQUEST']);
    const stateU = await until(() => (up.uploads.get('/upload/unended')?.aborted ? up.uploads.get('/upload/unended') : undefined));
    expect([stateU.ended, stateU.bytes < unended.length]).toEqual([false, true]);
    expect((await endOf(`${up.url}/upload/unended`)).ended.detail.reason).toBe('body-refused');

    // Such a part within the first 1 MiB of a larger body: refused before anything goes upstream.
    const early = open(base, '/upload/early', r.token.token, { 'content-type': MULTIPART, 'content-length': String(body.length) });
    early.req.write(Buffer.concat([formPart('Content-Disposition: form-data; name="_method"', 'DELETE'), titlePart]));
    const e = await replied(early.answer);
    early.req.destroy();
    expect([e.status, e.headers.connection, JSON.parse(e.body.toString()).writ_code]).toEqual([400, 'close', 'WRIT_BAD_REQUEST']);
    expect(up.uploads.has('/upload/early')).toBe(false);
  }, 60_000);

  it('a multipart body over 1 MiB without such a part reaches the upstream whole, byte for byte', async () => {
    const r = await agent.call('task.request', { task: 'upload a big file', scopes: [`http:POST:${up.url}/upload/**`], audience: up.url });
    const MAX = 1024 * 1024;
    const body = Buffer.concat([titlePart, formPart('Content-Disposition: form-data; name="file"; filename="big.bin"', randomBytes(3 * MAX)), closing]);
    for (const [path, headers] of [
      ['/upload/whole', { 'content-type': MULTIPART, 'content-length': String(body.length) }],
      ['/upload/whole-chunked', { 'content-type': MULTIPART }],
    ] as const) {
      const { req, answer } = open(base, path, r.token.token, headers);
      req.end(body);
      const got = await replied(answer);
      expect([path, got.status, got.body.toString()]).toEqual([path, 200, 'stored\n']);
      expect(up.uploads.get(path)).toEqual({ bytes: body.length, sha256: sha(body), ended: true, aborted: false });
      const { ended } = await endOf(`${up.url}${path}`);
      expect([ended.outcome, ended.detail.reason, ended.detail.status, ended.detail.bytesUp]).toEqual(['success', 'complete', 200, body.length]);
    }
  }, 60_000);

  it('headers that would make the upstream read another method, path, host or client never reach it; others do', async () => {
    const before = up.seen.length;
    const overrides = {
      'x-http-method-override': 'DELETE',
      'x-http-method': 'DELETE',
      'x-method-override': 'DELETE',
      'x-original-url': '/admin/users',
      'x-original-method': 'DELETE',
      'x-rewrite-url': '/admin/users',
      forwarded: 'host=evil.example;proto=https',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-for': '10.0.0.1',
      'x-forwarded-prefix': '/admin',
      'x-real-ip': '10.0.0.1',
      'x-host': 'evil.example',
    };
    const r = await call(base, '/repos/acme/web/issues', { token, headers: { ...overrides, 'x-github-api-version': '2022-11-28', 'if-none-match': '"abc"' } });
    expect(r.status).toBe(200);
    const h = up.seen[before]!.headers;
    expect(Object.keys(overrides).filter((k) => k in h)).toEqual([]);
    expect([h['x-github-api-version'], h['if-none-match'], h['x-agent-header'], up.seen[before]!.method]).toEqual(['2022-11-28', '"abc"', 'kept', 'GET']);
  });

  it('the agent\'s own credentials (Cookie, Cookie2, Proxy-Authorization, Authorization) never reach the upstream: only the injected one does', async () => {
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/web/issues', {
      token,
      headers: { cookie: 'user_session=the-agents-own; theme=dark', cookie2: '$Version="1"', 'proxy-authorization': 'Basic YWdlbnQ6b3du' },
    });
    expect(r.status).toBe(200);
    const h = up.seen[before]!.headers;
    expect([h.cookie, h.cookie2, h['proxy-authorization'], h.authorization, h['x-agent-header']]).toEqual([undefined, undefined, undefined, `Bearer ${SECRET}`, 'kept']);
    expect(JSON.stringify(h)).not.toContain('the-agents-own');
  });

  it('an upstream Set-Cookie (a session derived from the secret) is not handed to the agent', async () => {
    const r = await call(base, '/repos/acme/web/issues', { token });
    expect(r.status).toBe(200);
    expect(r.headers['set-cookie']).toBeUndefined();
    expect(r.headers['content-type']).toBe('application/json');
  });

  it('request headers past the limit: 431 with WRIT_FRAME_TOO_LARGE, not a bare reset, and nothing upstream', async () => {
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/web/issues', { token, headers: { 'x-big': 'a'.repeat(20_000) } }).catch((e: NodeJS.ErrnoException) => String(e.code));
    expect(typeof r === 'string' ? r : [r.status, r.headers.connection, JSON.parse(r.body.toString())]).toEqual([
      431,
      'close',
      { error: 'invalid_request', error_description: 'the request headers are too large', writ_code: 'WRIT_FRAME_TOO_LARGE' },
    ]);
    expect(up.seen.length).toBe(before);
  });

  it('no token, a malformed token or a token for another audience: 401 invalid_token, the upstream never called', async () => {
    const before = up.seen.length;
    for (const t of [undefined, 'not-a-token', `${token}x`]) {
      const r = await call(base, '/repos/acme/web/issues', t === undefined ? {} : { token: t });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toContain('error="invalid_token"');
    }
    const other = await agent.call('task.request', { task: 'other audience', scopes: [`http:GET:${up.url}/repos/acme/web/**`], audience: 'https://api.example' });
    const r = await call(base, '/repos/acme/web/issues', { token: other.token.token });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body.toString()).writ_code).toBe('WRIT_AUDIENCE_MISMATCH');
    const unknown = await call(`${b.discovery.httpUrl}/proxy/nope`, '/x', { token });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body.toString()).writ_code).toBe('WRIT_SECRET_NOT_FOUND');
    expect(up.seen.length).toBe(before);
  });

  it('a revoked token stops at the next call: 401, and the upstream is never called', async () => {
    const own = await agent.call('token.mint', { grantId: (await agent.call('grants.list', {})).grants[0]!.id });
    const ok = await call(base, '/repos/acme/web/pulls', { token: own.token });
    expect(ok.status).toBe(200);
    await agent.call('revoke', { target: { kind: 'token', jti: own.jti } });
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/web/pulls', { token: own.token });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: 'invalid_token', writ_code: 'WRIT_TOKEN_REVOKED' });
    expect(up.seen.length).toBe(before);
    await recordFor((x) => x.jti === own.jti && x.code === 'WRIT_TOKEN_REVOKED' && x.detail.status === 401);
  });

  for (const kind of ['token', 'grant', 'task', 'agent'] as const) {
    it(`revoking by ${kind} ends a call still streaming: both sockets closed, recorded as revoked`, async () => {
      const { client } = await b.agent(`streamer-${kind}`);
      try {
        const r = await client.call('task.request', { task: `watch by ${kind}`, scopes: [`http:GET:${up.url}/live/**`], audience: up.url });
        const target =
          kind === 'token' ? { kind, jti: r.token.jti } : { kind, id: kind === 'grant' ? r.grant.id : kind === 'task' ? r.grant.taskId : r.grant.agentId };
        const cutBefore = up.liveCut;
        let safety: NodeJS.Timeout | undefined;
        const got = await stream(base, `/live/${kind}`, r.token.token, () => {
          void client.call('revoke', { target }).then(() => {
            // Were the call not ended, the upstream's last line would reach the agent.
            safety = setTimeout(() => up.endLive(), 10_000);
          });
        });
        clearTimeout(safety);
        expect([got.status, got.cut, got.body.includes('after-the-end')]).toEqual([200, true, false]);
        await until(() => (up.liveCut > cutBefore ? true : undefined));
        const { ended } = await endOf(`${up.url}/live/${kind}`);
        expect([ended.outcome, ended.code, ended.jti, ended.detail.status, ended.detail.reason, ended.detail.incomplete]).toEqual([
          'failure',
          'WRIT_TOKEN_REVOKED',
          r.token.jti,
          200,
          'revoked',
          true,
        ]);
        expect(ended.detail.bytesDown).toBeGreaterThan(0);
        // The grant is gone by then; the record still names the task the call was made for.
        expect(ended.task).toEqual({ id: r.grant.taskId, description: `watch by ${kind}` });
      } finally {
        await client.close();
      }
    }, 60_000);
  }

  // A block of an identity with no agent in this run revokes nothing, so no revocation ended the call: it streamed on.
  it('a block made after a restart ends a call still streaming under a token of the run before, recorded as revoked', async () => {
    const env = freshEnv();
    const set = await secretSet(env, ['gh', '--upstream', up.url], `${SECRET}\n`);
    expect(set.code, set.stderr).toBe(0);
    const b1 = await BrokerProcess.start(env);
    b1.decide = approveAll;
    const { client } = await b1.agent('streamer-earlier');
    const r = await client.call('task.request', { task: 'watch across a restart', scopes: [`http:GET:${up.url}/live/**`], audience: up.url });
    await client.close();
    await b1.stop();
    const b2 = await BrokerProcess.start(env);
    try {
      const identity = identityOf('dev@example.com', 'streamer-earlier', 'script');
      const cutBefore = up.liveCut;
      let safety: NodeJS.Timeout | undefined;
      let blocked: Promise<{ code: number; stderr: string }> | undefined;
      let got: Awaited<ReturnType<typeof stream>>;
      let cli: { code: number; stderr: string };
      try {
        got = await stream(`${b2.discovery.httpUrl}/proxy/gh`, '/live/blocked', r.token.token, () => {
          blocked = writ(['agents', 'block', identity], env);
          // Were the call not ended, the upstream's last line would reach the agent.
          void blocked.finally(() => (safety = setTimeout(() => up.endLive(), 10_000)));
        });
        cli = await blocked!;
      } finally {
        await blocked?.catch(() => undefined);
        clearTimeout(safety); // never into a later test's stream
      }
      expect(cli.code, cli.stderr).toBe(0);
      expect([got.status, got.cut, got.body.includes('after-the-end')]).toEqual([200, true, false]);
      await until(() => (up.liveCut > cutBefore ? true : undefined));
      const ended = await until(() => b2.auditLines().map((l) => JSON.parse(l)).find((x) => x.event === 'proxy.ended' && x.jti === r.token.jti));
      expect([ended.outcome, ended.code, ended.detail.status, ended.detail.reason, ended.detail.incomplete]).toEqual(['failure', 'WRIT_TOKEN_REVOKED', 200, 'revoked', true]);
      // The next call with it is refused before the upstream, by the block.
      const again = await call(`${b2.discovery.httpUrl}/proxy/gh`, '/live/again', { token: r.token.token });
      expect([again.status, JSON.parse(again.body.toString()).writ_code]).toEqual([401, 'WRIT_AGENT_BLOCKED']);
    } finally {
      await b2.stop();
    }
  }, 60_000);

  it('a token revoked while the upstream has not answered yet: 401 WRIT_TOKEN_REVOKED, the upstream request closed', async () => {
    const { client } = await b.agent('waiter');
    try {
      const r = await client.call('task.request', { task: 'wait for an answer', scopes: [`http:GET:${up.url}/hang`], audience: up.url });
      up.onArrival = (path) => {
        if (path === '/hang') void client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
      };
      const got = await call(base, '/hang', { token: r.token.token });
      up.onArrival = undefined;
      expect([got.status, got.headers.connection, JSON.parse(got.body.toString())]).toEqual([
        401,
        'close',
        { error: 'invalid_token', error_description: 'the token was revoked during the call', writ_code: 'WRIT_TOKEN_REVOKED' },
      ]);
      const ended = await recordFor((x) => x.jti === r.token.jti, 'proxy.ended');
      expect([ended.code, ended.detail.status, ended.detail.reason, ended.detail.incomplete]).toEqual(['WRIT_TOKEN_REVOKED', 401, 'revoked', undefined]);
    } finally {
      await client.close();
    }
  }, 60_000);

  it('an upload that goes on after the upstream answered reaches it whole, and the call ends on record once it has', async () => {
    const { client } = await b.agent('uploader');
    try {
      const r = await client.call('task.request', { task: 'upload a log', scopes: [`http:POST:${up.url}/ingest/**`], audience: up.url });
      const PART = 64 * 1024;
      const { req, answer } = open(base, '/ingest/whole', r.token.token, { 'content-type': 'application/octet-stream', 'content-length': String(2 * PART) });
      req.write(randomBytes(PART));
      const got = await replied(answer);
      expect([got.status, got.body.toString()]).toEqual([200, 'accepted\n']);
      const state = await until(() => (up.ingests.get('/ingest/whole')?.bytes === PART ? up.ingests.get('/ingest/whole') : undefined));
      req.end(randomBytes(PART));
      await until(() => (state.ended ? true : undefined));
      expect(state.bytes).toBe(2 * PART);
      const { ended } = await endOf(`${up.url}/ingest/whole`);
      expect([ended.outcome, ended.code, ended.detail.status, ended.detail.reason, ended.detail.incomplete, ended.detail.bytesUp, ended.detail.bytesDown]).toEqual([
        'success',
        undefined,
        200,
        'complete',
        undefined,
        2 * PART,
        'accepted\n'.length,
      ]);
    } finally {
      await client.close();
    }
  }, 60_000);

  it('a token revoked while an upload goes on after the upstream answered: the upstream request is ended, the rest never reaches it', async () => {
    const { client } = await b.agent('late-uploader');
    try {
      const r = await client.call('task.request', { task: 'upload a bigger log', scopes: [`http:POST:${up.url}/ingest/**`], audience: up.url });
      const PART = 64 * 1024;
      const { req, answer } = open(base, '/ingest/cut', r.token.token, { 'content-type': 'application/octet-stream', 'content-length': String(4 * PART) });
      req.write(randomBytes(PART));
      expect((await replied(answer)).status).toBe(200);
      const state = await until(() => (up.ingests.get('/ingest/cut')?.bytes === PART ? up.ingests.get('/ingest/cut') : undefined));
      const agentClosed = new Promise<void>((resolve) => req.socket!.once('close', () => resolve()));
      await client.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
      // The upstream's request ends with its body cut short, and the agent's connection is closed.
      await until(() => (state.closed ? true : undefined));
      await agentClosed;
      req.write(randomBytes(PART));
      expect([state.ended, state.bytes]).toEqual([false, PART]);
      const { ended } = await endOf(`${up.url}/ingest/cut`);
      expect([ended.outcome, ended.code, ended.jti, ended.detail.status, ended.detail.reason, ended.detail.incomplete, ended.detail.bytesUp]).toEqual([
        'failure',
        'WRIT_TOKEN_REVOKED',
        r.token.jti,
        200,
        'revoked',
        undefined,
        PART,
      ]);
    } finally {
      await client.close();
    }
  }, 60_000);

  it('uploads that stall after the upstream answered end once no byte moved for WRIT_PROXY_TIMEOUT_MS: both sockets closed, recorded once as upstream-timeout, their call slots given back', async () => {
    const { client } = await b.agent('staller');
    const stalls: { req: ClientRequest; answer: Promise<Reply | Error> }[] = [];
    try {
      const r = await client.call('task.request', { task: 'uploads that stall', scopes: [`http:POST:${up.url}/ingest/**`, `http:GET:${up.url}/repos/acme/web/**`], audience: up.url });
      const PART = 64 * 1024;
      // As many as the agent may have in flight (WRIT_PROXY_MAX_CALLS 3): half of each body is sent, then the agent
      // goes quiet with its connections open. Held forever, they would make every later call of this agent 429.
      const paths = [0, 1, 2].map((i) => `/ingest/stall-${i}`);
      const agentClosed: Promise<void>[] = [];
      for (const path of paths) {
        const s = open(base, path, r.token.token, { 'content-type': 'application/octet-stream', 'content-length': String(2 * PART) });
        agentClosed.push(new Promise<void>((resolve) => s.req.once('socket', (sock) => sock.once('close', () => resolve()))));
        s.req.write(randomBytes(PART));
        stalls.push(s);
      }
      const replies = await Promise.all(stalls.map((s) => replied(s.answer)));
      expect(replies.map((x) => [x.status, x.body.toString()])).toEqual(Array(3).fill([200, 'accepted\n']));
      const ended = await Promise.all(paths.map((p) => endOf(`${up.url}${p}`)));
      for (const { ended: e } of ended) {
        expect([e.outcome, e.code, e.jti, e.detail.status, e.detail.reason, e.detail.incomplete, e.detail.bytesUp, e.detail.bytesDown]).toEqual([
          'failure',
          'WRIT_UPSTREAM_TIMEOUT',
          r.token.jti,
          200,
          'upstream-timeout',
          undefined,
          PART,
          'accepted\n'.length,
        ]);
      }
      // The agent's connections are closed, and each upstream request ends with its body cut short.
      await Promise.all(agentClosed);
      const states = await until(() => {
        const s = paths.map((p) => up.ingests.get(p));
        return s.every((x) => x?.closed) ? s : undefined;
      });
      expect(states.map((s) => [s!.ended, s!.bytes])).toEqual(Array(3).fill([false, PART]));
      expect((await call(base, '/repos/acme/web/issues', { token: r.token.token })).status).toBe(200);
      const calls = new Set(ended.map((x) => x.call.detail.call));
      expect(proxyRecords('proxy.ended').filter((x) => calls.has(x.detail.call)).length).toBe(3);
    } finally {
      for (const s of stalls) s.req.destroy();
      await client.close();
    }
  }, 60_000);

  it('a call still streaming when its token expires is ended at the token\'s exp, recorded as expired', async () => {
    const r = await agent.call('task.request', { task: 'a short watch', scopes: [`http:GET:${up.url}/live/**`], audience: up.url, ttl: 4 });
    let safety: NodeJS.Timeout | undefined;
    const got = await stream(base, '/live/expiring', r.token.token, () => {
      safety = setTimeout(() => up.endLive(), 20_000);
    });
    clearTimeout(safety);
    expect([got.status, got.cut, got.body.includes('after-the-end')]).toEqual([200, true, false]);
    const { ended } = await endOf(`${up.url}/live/expiring`);
    expect([ended.code, ended.jti, ended.detail.reason, ended.detail.incomplete]).toEqual(['WRIT_TOKEN_EXPIRED', r.token.jti, 'expired', true]);
    // Not before its exp (whole seconds; the record's time is when it was written, after the cut).
    expect(Date.parse(ended.ts)).toBeGreaterThanOrEqual(r.token.expiresAt * 1000);
  }, 60_000);

  it('an agent may have 3 calls in flight (WRIT_PROXY_MAX_CALLS): the next is 429 WRIT_RATE_LIMITED, on record; another agent is not held up', async () => {
    const { client: busy } = await b.agent('busy');
    const { client: other } = await b.agent('other');
    try {
      const r = await busy.call('task.request', { task: 'many watches', scopes: [`http:GET:${up.url}/live/**`, `http:GET:${up.url}/repos/acme/web/**`], audience: up.url });
      const o = await other.call('task.request', { task: 'one read', scopes: [`http:GET:${up.url}/repos/acme/web/**`], audience: up.url });
      const started: Promise<void>[] = [];
      const streams = [0, 1, 2].map((i) => {
        let firstLine = () => undefined as void;
        started.push(new Promise<void>((resolve) => (firstLine = resolve)));
        return stream(base, `/live/busy-${i}`, r.token.token, () => firstLine());
      });
      await Promise.all(started);
      const before = up.seen.length;
      const over = await call(base, '/repos/acme/web/issues', { token: r.token.token });
      expect([over.status, over.headers['retry-after'], JSON.parse(over.body.toString())]).toEqual([
        429,
        '1',
        { error: 'rate_limited', error_description: 'at most 3 proxied calls at a time per agent (with its sub-agents): wait for one to end', writ_code: 'WRIT_RATE_LIMITED' },
      ]);
      expect(up.seen.length).toBe(before);
      const refused = await recordFor((x) => x.jti === r.token.jti && x.code === 'WRIT_RATE_LIMITED');
      expect([refused.outcome, refused.detail.allowed, refused.detail.status, refused.detail.call]).toEqual(['failure', false, 429, undefined]);
      expect((await call(base, '/repos/acme/web/issues', { token: o.token.token })).status).toBe(200);
      // A call that ends gives its place back.
      up.endLive();
      expect((await Promise.all(streams)).map((x) => [x.status, x.cut])).toEqual(Array(3).fill([200, false]));
      await until(() => (proxyRecords('proxy.ended').filter((x) => x.jti === r.token.jti).length === 3 ? true : undefined));
      expect((await call(base, '/repos/acme/web/issues', { token: r.token.token })).status).toBe(200);
    } finally {
      await busy.close();
      await other.close();
    }
  }, 60_000);

  it('concurrent calls for a secret the keychain lacks: at most one keychain process at a time, all 404 WRIT_SECRET_NOT_FOUND', async () => {
    // A hand-made entry whose keychain entry does not exist (a keychain reset): never cached as a value.
    const file = join(b.env.WRIT_STATE_DIR, 'secrets.json');
    const original = readFileSync(file, 'utf8');
    const config = JSON.parse(original);
    const up2 = `${up.url}/v2`;
    config.secrets.gone = { upstream: up2, header: 'Authorization', scheme: 'Bearer', rev: 'r1', updatedAt: new Date().toISOString() };
    writeFileSync(file, JSON.stringify(config));
    try {
      const r = await agent.call('task.request', { task: 'v2', scopes: [`http:GET:${up2}/**`], audience: up2 });
      let most = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          most = Math.max(most, childrenOf(b.child.pid!));
          await new Promise((res) => setTimeout(res, 5));
        }
      })();
      const replies = await Promise.all(Array.from({ length: 40 }, () => call(`${b.discovery.httpUrl}/proxy/gone`, '/x', { token: r.token.token })));
      sampling = false;
      await sampler;
      expect(new Set(replies.map((x) => `${x.status} ${JSON.parse(x.body.toString()).writ_code}`))).toEqual(new Set(['404 WRIT_SECRET_NOT_FOUND']));
      expect(most).toBeLessThanOrEqual(1);
    } finally {
      writeFileSync(file, original);
    }
  }, 60_000);

  it('a hand-edited secrets.json that breaks its schema (a secret sent as Cookie) stops every secret: 500 WRIT_SECRETS_CORRUPT, the broker\'s fault, not the agent\'s', async () => {
    const file = join(b.env.WRIT_STATE_DIR, 'secrets.json');
    const original = readFileSync(file, 'utf8');
    const config = JSON.parse(original);
    for (const c of Object.values(config.secrets) as { header: string }[]) c.header = 'Cookie';
    writeFileSync(file, JSON.stringify(config));
    try {
      const r = await call(base, '/repos/acme/web/issues', { token });
      expect({ status: r.status, code: JSON.parse(r.body.toString()).writ_code }).toEqual({ status: 500, code: 'WRIT_SECRETS_CORRUPT' });
      expect(r.body.toString()).not.toContain(SECRET);
    } finally {
      writeFileSync(file, original);
    }
    expect((await call(base, '/repos/acme/web/issues', { token })).status).toBe(200);
  }, 60_000);

  it('streams a 20 MB body up and back: exact byte counts and matching SHA-256 on both sides, and in the audit', async () => {
    const body = randomBytes(BIG);
    const r = await call(base, '/echo', { token, method: 'POST', body });
    expect(r.status).toBe(200);
    expect(up.echoed).toEqual({ bytes: BIG, sha256: sha(body) });
    expect(r.body.length).toBe(BIG);
    expect(sha(r.body)).toBe(sha(body));
    const { ended } = await endOf(`${up.url}/echo`);
    expect(ended.detail).toMatchObject({ method: 'POST', status: 200, bytesUp: BIG, bytesDown: BIG, reason: 'complete' });
  }, 60_000);

  it('a streamed response arrives in chunks: the first before the upstream sends the last', async () => {
    let firstSeenBeforeLast: boolean | undefined;
    const r = await call(base, '/stream', {
      token,
      onChunk: (c) => {
        if (firstSeenBeforeLast === undefined && c.toString().includes('first chunk')) {
          firstSeenBeforeLast = !up.lastChunkSent;
          up.releaseStream();
        }
      },
    });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('first chunk\nlast chunk\n');
    expect(firstSeenBeforeLast).toBe(true);
  }, 30_000);

  it('an upstream that hangs: 504 with WRIT_UPSTREAM_TIMEOUT, audited', async () => {
    const r = await call(base, '/hang', { token });
    expect(r.status).toBe(504);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: 'upstream_timeout', writ_code: 'WRIT_UPSTREAM_TIMEOUT' });
    const { ended } = await endOf(`${up.url}/hang`);
    expect([ended.outcome, ended.code, ended.detail.status, ended.detail.reason, ended.detail.incomplete]).toEqual(['failure', 'WRIT_UPSTREAM_TIMEOUT', 504, 'upstream-timeout', undefined]);
  }, 30_000);

  it('requests without a valid token cannot make the broker write a record each: past 20 a second, 429 and one summary record a second', async () => {
    const recordsBefore = proxyRecords().length;
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => call(base, `/repos/acme/web/flood-${i}`, i % 2 ? {} : { token: `${token}x` })));
    const answers = replies.map((x) => `${x.status} ${JSON.parse(x.body.toString()).writ_code}`);
    const recorded = answers.filter((a) => a === '401 WRIT_TOKEN_INVALID').length;
    const counted = answers.filter((a) => a === '429 WRIT_RATE_LIMITED').length;
    expect(recorded + counted).toBe(300);
    expect(counted).toBeGreaterThan(0);
    expect(replies.find((x) => x.status === 429)!.headers['retry-after']).toBe('1');
    // Every refusal is accounted for: the 401s one record each, the 429s in summaries (written a second later).
    const summaries = () => proxyRecords().slice(recordsBefore).filter((x) => x.detail.unrecorded !== undefined);
    await until(() => (summaries().reduce((n, x) => n + x.detail.unrecorded, 0) === counted ? true : undefined));
    for (const x of summaries()) {
      expect([x.outcome, x.code, x.jti, x.agent, ProxyCallDetail.parse(x.detail)]).toEqual(['failure', 'WRIT_RATE_LIMITED', undefined, undefined, { allowed: false, unrecorded: x.detail.unrecorded }]);
    }
    const own = proxyRecords().slice(recordsBefore).filter((x) => x.detail.unrecorded === undefined);
    expect(own.length).toBe(recorded);
    expect(new Set(own.map((x) => `${x.outcome} ${x.code} ${x.detail.status} ${x.detail.allowed} ${x.jti}`))).toEqual(new Set(['failure WRIT_TOKEN_INVALID 401 false undefined']));
    expect(up.seen.filter((x) => x.url.includes('flood'))).toEqual([]);
  }, 60_000);

  it('a signed token that is not live (here revoked) counts as none: one old token cannot make the broker write a record each', async () => {
    const g = await agent.call('task.request', { task: 'one to revoke', scopes: [`http:GET:${up.url}/repos/acme/web/**`], audience: up.url });
    await agent.call('revoke', { target: { kind: 'token', jti: g.token.jti } });
    // A second, so the budget left by an earlier test's flood does not decide this one.
    await new Promise((r) => setTimeout(r, 1100));
    const recordsBefore = proxyRecords().length;
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => call(base, `/repos/acme/web/old-${i}`, { token: g.token.token })));
    const answers = replies.map((x) => `${x.status} ${JSON.parse(x.body.toString()).writ_code}`);
    const counted = answers.filter((a) => a === '429 WRIT_RATE_LIMITED').length;
    expect(answers.filter((a) => a !== '401 WRIT_TOKEN_REVOKED' && a !== '429 WRIT_RATE_LIMITED')).toEqual([]);
    expect(counted).toBeGreaterThan(0);
    await until(() => (proxyRecords().slice(recordsBefore).filter((x) => x.detail.unrecorded !== undefined).reduce((n, x) => n + x.detail.unrecorded, 0) === counted ? true : undefined));
    const own = proxyRecords().slice(recordsBefore).filter((x) => x.detail.unrecorded === undefined && x.jti === g.token.jti);
    expect(own.length).toBe(100 - counted);
    expect(up.seen.filter((x) => x.url.includes('/old-'))).toEqual([]);
  }, 60_000);

  it('the audit log holds neither the secret, nor any token, nor a query value, and still verifies', async () => {
    const text = readFileSync(join(b.env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8');
    expect(text).toContain('"event":"proxy.call"');
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(token);
    expect(text).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\./);
    expect(text).not.toContain('querysecretvalue');
    const v = await writ(['audit', 'verify'], b.env);
    expect(v.code, v.stderr).toBe(0);
  });

  it('secret set at a terminal prompts without echo; the running broker injects the new value on the next call', async () => {
    const NEW = `ghp_${randomBytes(18).toString('hex')}`;
    const cmd = `${process.execPath} ${WRIT} secret set gh --upstream ${up.url}`;
    const tty = spawn('script', ['-qfec', cmd, '/dev/null'], { env: { ...process.env, ...b.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    tty.stdout.on('data', (d) => (screen += d));
    tty.stderr.on('data', (d) => (screen += d));
    const exited = new Promise<number | null>((r) => tty.on('close', (code) => r(code)));
    for (let i = 0; i < 600 && !screen.includes('secret (not echoed): '); i++) await new Promise((r) => setTimeout(r, 25));
    expect(screen).toContain('secret (not echoed): ');
    tty.stdin.write(`${NEW}\r`);
    expect(await exited).toBe(0);
    expect(screen).toContain('stored secret gh');
    expect(screen).not.toContain(NEW);
    const before = up.seen.length;
    const r = await call(base, '/repos/acme/web/issues', { token });
    expect(r.status).toBe(200);
    expect(up.seen[before]!.headers.authorization).toBe(`Bearer ${NEW}`);
    expect(readFileSync(join(b.env.WRIT_STATE_DIR, 'audit.jsonl'), 'utf8')).not.toContain(NEW);
  }, 30_000);

  it('secret rm removes it: the next proxied call is 404 and the list no longer shows it', async () => {
    const rm = await writ(['secret', 'rm', 'gh'], b.env);
    expect(rm.code, rm.stderr).toBe(0);
    const r = await call(base, '/repos/acme/web/issues', { token });
    expect(r.status).toBe(404);
    expect((await writ(['secret', 'list'], b.env)).stdout).toBe('no secrets\n');
    expect((await writ(['secret', 'rm', 'gh'], b.env)).code).toBe(1);
  });
});

describe('the proxy fails closed on the audit log', () => {
  it('an audit write that fails (a real EFBIG): 500 WRIT_AUDIT_WRITE_FAILED, and nothing reaches the upstream', async () => {
    const up = new Upstream();
    await up.start();
    const env = freshEnv();
    expect((await secretSet(env, ['gh', '--upstream', up.url], SECRET)).code).toBe(0);
    const b = await BrokerProcess.start(env);
    b.decide = approveAll;
    try {
      const { client } = await b.agent('audited-agent');
      const r = await client.call('task.request', { task: 'file issues', scopes: [`http:POST:${up.url}/repos/**`], audience: up.url });
      const base = `${b.discovery.httpUrl}/proxy/gh`;
      const post = (path: string) => call(base, path, { token: r.token.token, method: 'POST', body: Buffer.from('{"title":"x"}') });
      // A first call reads the secret and ends on record, so what fails below is the audit write alone.
      expect((await post('/repos/acme/web/issues')).status).toBe(200);
      const auditPath = join(env.WRIT_STATE_DIR, 'audit.jsonl');
      await until(() => b.auditLines().find((l) => /"event":"proxy\.(?:ended|call)".*"status":200/.test(l)));
      const size = statSync(auditPath).size;
      // The broker may no longer make a file longer than the log is now: its next record fails as on a full disk.
      execFileSync('prlimit', ['--pid', String(b.child.pid), `--fsize=${size}`]);
      const before = up.seen.length;
      const res = await post('/repos/acme/web/issues/1/delete');
      expect([res.status, JSON.parse(res.body.toString())]).toEqual([
        500,
        { error: 'server_error', error_description: 'the audit log could not be written', writ_code: 'WRIT_AUDIT_WRITE_FAILED' },
      ]);
      expect(up.seen.length).toBe(before);
      expect(statSync(auditPath).size).toBe(size);
      await client.close();
    } finally {
      await b.kill();
      await up.stop();
    }
  }, 60_000);
});
