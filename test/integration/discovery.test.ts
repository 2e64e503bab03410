// Clients trust a discovery file only in a runtime folder that is the user's own and closed to others: another
// user who makes /tmp/writ-UID first must not get verifiers to fetch their keys or the CLI to send a session to
// their socket. Each layout is real files; the impostor is a real HTTP server and a real Unix socket that count
// who reached them, and a safe layout (the control) shows they would be reached.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { Server as HttpServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDiscovery } from '../../broker/sdk/client';
import { createVerifier } from '../../broker/sdk/verify';
import { startGate } from '../../broker/mcp/gate';
import { PROTOCOL_VERSION } from '../../broker/protocol';
import { writ } from '../helpers/broker';
import { codeOf } from '../helpers/codes';

const AUD = 'https://api.example';
// Shaped like a token with a kid, so a verifier would go to the broker for keys.
const TOKEN = ['eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsxIn0', 'eyJzdWIiOiJ4In0', 'c2ln'].join('.');

describe('a discovery file in a runtime folder that may be another user’s', () => {
  let base: string;
  let http: HttpServer;
  let sock: NetServer;
  let httpUrl: string;
  let socketPath: string;
  let httpHits = 0;
  let socketHits = 0;

  beforeAll(async () => {
    base = mkdtempSync(join(tmpdir(), 'writ-disc-'));
    http = createHttpServer((req, res) => {
      httpHits++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.url === '/jwks' ? { keys: [] } : { issuer: httpUrl, jwks_uri: `${httpUrl}/jwks` }));
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    httpUrl = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    socketPath = join(base, 'impostor.sock');
    sock = createNetServer((c) => {
      socketHits++;
      c.destroy();
    });
    await new Promise<void>((r) => sock.listen(socketPath, r));
  });
  afterAll(async () => {
    await new Promise((r) => http.close(r));
    await new Promise((r) => sock.close(r));
    rmSync(base, { recursive: true, force: true });
  });
  afterEach(() => {
    httpHits = 0;
    socketHits = 0;
  });

  const discovery = () =>
    JSON.stringify({ protocol: PROTOCOL_VERSION, pid: process.pid, socketPath, httpUrl, wsUrl: `ws://${new URL(httpUrl).host}/`, issuer: httpUrl, startedAt: new Date().toISOString(), auditPath: join(base, 'audit.jsonl') });

  /** A folder with a discovery file in it, each made as named; returns the runtime folder to point WRIT_RUNTIME_DIR at. */
  let n = 0;
  function layout(kind: 'safe' | 'folder 0755' | 'symlinked folder' | 'symlinked file' | 'file 0666'): string {
    const root = join(base, String(n++));
    mkdirSync(root, { mode: 0o700 });
    const real = join(root, 'real');
    mkdirSync(real, { mode: 0o700 });
    if (kind !== 'symlinked file') writeFileSync(join(real, 'broker.json'), discovery(), { mode: 0o600 });
    if (kind === 'folder 0755') chmodSync(real, 0o755);
    if (kind === 'file 0666') chmodSync(join(real, 'broker.json'), 0o666);
    if (kind === 'symlinked file') {
      writeFileSync(join(root, 'elsewhere.json'), discovery(), { mode: 0o600 });
      symlinkSync(join(root, 'elsewhere.json'), join(real, 'broker.json'));
    }
    if (kind !== 'symlinked folder') return real;
    symlinkSync(real, join(root, 'run'));
    return join(root, 'run');
  }

  it('the control: a folder of the user’s own (0700) with its 0600 file is read, and the verifier and the CLI go where it says', async () => {
    const dir = layout('safe');
    expect(readDiscovery({ WRIT_RUNTIME_DIR: dir })).toMatchObject({ httpUrl, socketPath });
    const v = createVerifier({ audience: AUD, env: { WRIT_RUNTIME_DIR: dir }, reportUse: false });
    try {
      await v.ready();
      expect(httpHits).toBeGreaterThan(0);
    } finally {
      await v.close();
    }
    const r = await writ(['token', '--task', 't', '--scope', 'repo:read:x', '--aud', AUD], { WRIT_RUNTIME_DIR: dir, WRIT_BROKER: '', WRIT_SESSION: 'sess_control' });
    expect(r.code).toBe(1);
    expect(socketHits).toBeGreaterThan(0);
  });

  for (const kind of ['folder 0755', 'symlinked folder', 'symlinked file', 'file 0666'] as const) {
    describe(`${kind}: refused with WRIT_RUNTIME_DIR_UNSAFE, and the impostor is never reached`, () => {
      it('by the SDK’s discovery read', async () => {
        const dir = layout(kind);
        let thrown: unknown;
        try {
          readDiscovery({ WRIT_RUNTIME_DIR: dir });
        } catch (e) {
          thrown = e;
        }
        expect(thrown).toMatchObject({ name: 'WritError', code: 'WRIT_RUNTIME_DIR_UNSAFE' });
        expect((thrown as Error).message).toContain('set WRIT_RUNTIME_DIR to a private folder');
      });

      it('by the verifier: a token is refused with the code, no key fetched', async () => {
        const v = createVerifier({ audience: AUD, env: { WRIT_RUNTIME_DIR: layout(kind) }, reportUse: false });
        try {
          expect(await v.ready()).toBe(false);
          expect(await codeOf(v.verify(TOKEN))).toBe('WRIT_RUNTIME_DIR_UNSAFE');
          expect(httpHits).toBe(0);
        } finally {
          await v.close();
        }
      });

      it('by writ gate, before it starts', async () => {
        const gate = startGate({ server: 'fs', upstream: { kind: 'http', url: 'http://127.0.0.1:9/mcp' }, env: { WRIT_RUNTIME_DIR: layout(kind) }, version: 'test' });
        expect(await codeOf(gate)).toBe('WRIT_RUNTIME_DIR_UNSAFE');
        expect(httpHits).toBe(0);
      });

      it('by the CLI: an agent session in the environment is not sent to the impostor’s socket', async () => {
        const r = await writ(['token', '--task', 't', '--scope', 'repo:read:x', '--aud', AUD], { WRIT_RUNTIME_DIR: layout(kind), WRIT_BROKER: '', WRIT_SESSION: 'sess_secret' });
        expect(r).toMatchObject({ code: 1, stdout: '' });
        expect(r.stderr).toContain('(WRIT_RUNTIME_DIR_UNSAFE)');
        expect(r.stderr).not.toContain('sess_secret');
        expect(socketHits).toBe(0);
      });
    });
  }

  it('the CLI neither reads nor writes its remembered session in a symlinked runtime folder, even with WRIT_BROKER set', async () => {
    const r = await writ(['token', '--task', 't', '--scope', 'repo:read:x', '--aud', AUD], { WRIT_RUNTIME_DIR: layout('symlinked folder'), WRIT_BROKER: `unix:${socketPath}`, WRIT_SESSION: '' });
    expect(r).toMatchObject({ code: 1, stdout: '' });
    expect(r.stderr).toContain('(WRIT_RUNTIME_DIR_UNSAFE)');
    expect(socketHits).toBe(0);
  });

  it('writ status says why instead of “no broker”', async () => {
    const r = await writ(['status'], { WRIT_RUNTIME_DIR: layout('folder 0755'), WRIT_BROKER: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('has mode 0755: other users can reach it (it must be 0700)');
    expect(r.stderr).toContain('(WRIT_RUNTIME_DIR_UNSAFE)');
  });

  it('a folder or file that is not there is still “no broker” (WRIT_BROKER_UNREACHABLE)', async () => {
    const missing = join(base, 'missing', 'run');
    expect(await codeOf((async () => readDiscovery({ WRIT_RUNTIME_DIR: missing }))())).toBe('WRIT_BROKER_UNREACHABLE');
    const empty = join(base, 'empty');
    mkdirSync(empty, { mode: 0o700 });
    expect(await codeOf((async () => readDiscovery({ WRIT_RUNTIME_DIR: empty }))())).toBe('WRIT_BROKER_UNREACHABLE');
  });
});
