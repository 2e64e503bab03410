// MCP both ways, with real processes: `writ mcp` driven by the official SDK's client over stdio against the real
// broker, and `writ gate` in front of a real MCP server written with the SDK (stdio and streamable HTTP upstreams),
// with the spec's refusals (401 + RFC 9728 metadata, 403 insufficient_scope), live revocation and the audit trail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { WebSocketServer } from 'ws';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { BrokerProcess, ROOT, WRIT, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import { createVerifier } from '../../broker/sdk/verify';
import type { Verifier } from '../../broker/sdk/verify';
import { WritError } from '../../broker/errors';
import { TokenUseEndedDetail } from '../../broker/protocol';
import { WritClient } from '../../broker/sdk/client';
import { startGate as startGateInProcess } from '../../broker/mcp/gate';
import { TokenMinter } from '../../broker/core/tokens';
import { randomIds, systemClock } from '../../broker/core/clock';
import { codeOf } from '../helpers/codes';
import { until } from '../helpers/until';

requireKeyring();

const FIXTURE = join(ROOT, 'test', 'fixtures', 'echo-mcp-server.mjs');
const AUD = 'https://api.example';
const SECRET = 'sk-live-4f9c2e7d1b8a6350-DO-NOT-LOG';

function baseEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== 'WRIT_SESSION' && k !== 'WRIT_TOKEN' && k !== 'WRIT_BROKER') env[k] = v;
  return { ...env, ...extra };
}

const textOf = (r: Record<string, unknown>) => ((r.content as { type: string; text: string }[])[0]?.text ?? '');

describe('writ mcp (stdio MCP server for agents)', { timeout: 90_000 }, () => {
  let b: BrokerProcess;
  let client: Client;
  let transport: StdioClientTransport;
  let stderr = '';
  const clientErrors: Error[] = [];
  let v: Verifier;

  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
    transport = new StdioClientTransport({ command: process.execPath, args: [WRIT, 'mcp', '--agent', 'claude-test'], env: baseEnv(b.env), stderr: 'pipe' });
    transport.stderr?.on('data', (d) => (stderr += d));
    client = new Client({ name: 'writ-test-agent', version: '1.0.0' });
    client.onerror = (e) => clientErrors.push(e);
    await client.connect(transport);
    v = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, reportUse: false });
    expect(await v.ready()).toBe(true);
  });
  afterAll(async () => {
    await client?.close();
    await v?.close();
    await b?.stop();
  });

  let grantId = '';
  let token = '';

  it('lists its three tools', async () => {
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(['list_grants', 'request_credentials', 'revoke_grant']);
    const rc = tools.find((t) => t.name === 'request_credentials')!;
    expect(rc.inputSchema.required?.slice().sort()).toEqual(['audience', 'scopes', 'task']);
  });

  it('request_credentials waits for the developer and returns a token that verifies, with its expiry', async () => {
    const before = b.requests.length;
    const r = await client.callTool({ name: 'request_credentials', arguments: { task: 'read the web repo', scopes: ['repo:read:acme/web'], audience: AUD, ttl: 120 } });
    expect(r.isError).toBeFalsy();
    const out = r.structuredContent as Record<string, any>;
    expect(JSON.parse(textOf(r))).toEqual(out);
    expect(out).toMatchObject({ scopes: ['repo:read:acme/web'], audience: AUD, reused: false });
    expect(out.expiresAtIso).toBe(new Date(out.expiresAt * 1000).toISOString());
    // The developer saw the request, from this agent, as an MCP agent.
    expect(b.requests.length).toBe(before + 1);
    expect(b.requests.at(-1)).toMatchObject({ task: 'read the web repo', scopes: ['repo:read:acme/web'], audience: AUD, agent: { name: 'claude-test', kind: 'mcp' } });
    const t = await v.verify(out.token, { scope: 'repo:read:acme/web' });
    expect(t.jti).toBe(out.jti);
    expect(t.expiresAt).toBe(out.expiresAt);
    expect(t.grantId).toBe(out.grantId);
    grantId = out.grantId;
    token = out.token;
  });

  it('while the developer decides, a client that asked for progress hears it (so its timeout can be reset)', async () => {
    const progress: { progress: number; message?: string }[] = [];
    b.decide = async () => {
      // Decide only once a heartbeat has gone out (every 5 s).
      await until(() => (progress.length > 0 ? true : undefined), 60_000);
      return { decision: 'approve', mode: 'task' };
    };
    try {
      const r = await client.callTool(
        { name: 'request_credentials', arguments: { task: 'slow decision', scopes: ['repo:read:acme/api'], audience: AUD } },
        undefined,
        { onprogress: (p) => progress.push(p), timeout: 60_000, resetTimeoutOnProgress: true },
      );
      expect(r.isError).toBeFalsy();
      expect(progress[0]).toEqual({ progress: 1, message: 'waiting for the developer to approve or deny' });
    } finally {
      b.decide = approveAll;
    }
  });

  it('a denial is an MCP tool error carrying WRIT_DENIED', async () => {
    b.decide = () => ({ decision: 'deny', reason: 'not now' });
    try {
      const r = await client.callTool({ name: 'request_credentials', arguments: { task: 'push to main', scopes: ['repo:write:acme/web'], audience: AUD } });
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/^WRIT_DENIED: /);
      expect(r.structuredContent).toBeUndefined();
      expect(r._meta).toEqual({ 'writ/code': 'WRIT_DENIED' });
    } finally {
      b.decide = approveAll;
    }
  });

  it('bad input to a tool is refused by its schema, without a prompt', async () => {
    const before = b.requests.length;
    const r = await client.callTool({ name: 'request_credentials', arguments: { task: 'x', scopes: [], audience: AUD } });
    expect(r.isError).toBe(true);
    const bad = await client.callTool({ name: 'request_credentials', arguments: { task: 'x', scopes: ['Not A Scope'], audience: AUD } });
    expect(bad.isError).toBe(true);
    expect(textOf(bad)).toMatch(/^WRIT_SCOPE_INVALID: /);
    expect(b.requests.length).toBe(before);
  });

  it("list_grants shows the agent's live grants; revoke_grant revokes only its own, and its tokens stop verifying", async () => {
    const listed = await client.callTool({ name: 'list_grants', arguments: {} });
    expect(listed.isError).toBeFalsy();
    const grants = (listed.structuredContent as { grants: any[] }).grants;
    expect(grants.map((g) => g.task).sort()).toEqual(['read the web repo', 'slow decision']);
    expect(grants.find((g) => g.id === grantId)).toMatchObject({ task: 'read the web repo', scopes: ['repo:read:acme/web'], audience: AUD, mode: 'task' });

    const notMine = await client.callTool({ name: 'revoke_grant', arguments: { grantId: 'grant_not_mine' } });
    expect(notMine.isError).toBe(true);
    expect(textOf(notMine)).toMatch(/^WRIT_GRANT_NOT_FOUND: /);

    const revoked = await client.callTool({ name: 'revoke_grant', arguments: { grantId } });
    expect(revoked.isError).toBeFalsy();
    expect(revoked.structuredContent).toMatchObject({ grantId, revokedGrants: 1 });
    expect(await codeOf(v.verify(token))).toBe('WRIT_TOKEN_REVOKED');
    const after = await client.callTool({ name: 'list_grants', arguments: {} });
    expect((after.structuredContent as { grants: any[] }).grants.map((g) => g.task)).toEqual(['slow decision']);
  });

  it('once the developer stops the agent, its tools refuse with WRIT_TOKEN_REVOKED and nothing asks again', async () => {
    const watcher = await WritClient.connect(b.socket);
    const { agents } = await watcher.call('agents.list', {});
    const me = agents.find((a) => a.name === 'claude-test' && !a.revoked)!;
    await watcher.call('revoke', { target: { kind: 'agent', id: me.id } });
    await until(() => (stderr.includes('this agent was revoked by the developer') ? true : undefined), 15_000);
    const prompts = b.requests.length;
    const r = await client.callTool({ name: 'request_credentials', arguments: { task: 'again', scopes: ['repo:read:acme/web'], audience: AUD } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^WRIT_TOKEN_REVOKED: /);
    expect(b.requests.length).toBe(prompts);
    // No second agent of that name was introduced.
    expect((await watcher.call('agents.list', {})).agents.filter((a) => a.name === 'claude-test').map((a) => a.id)).toEqual([me.id]);
    await watcher.close();
  });

  it('stdout carried nothing but MCP JSON-RPC; logs went to stderr', () => {
    expect(clientErrors).toEqual([]);
    expect(stderr).toContain('writ mcp: serving MCP on stdio');
  });
});

describe('writ mcp with no broker running', { timeout: 60_000 }, () => {
  it('answers MCP anyway, and a tool call is a tool error with WRIT_BROKER_UNREACHABLE', async () => {
    const env = freshEnv();
    const transport = new StdioClientTransport({ command: process.execPath, args: [WRIT, 'mcp'], env: baseEnv(env), stderr: 'pipe' });
    const client = new Client({ name: 'writ-test-agent', version: '1.0.0' });
    await client.connect(transport);
    try {
      const r = await client.callTool({ name: 'list_grants', arguments: {} });
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/^WRIT_BROKER_UNREACHABLE: /);
    } finally {
      await client.close();
    }
  });
});

interface GateProc {
  child: ChildProcess;
  url: string;
  origin: string;
  stderr: () => string;
  stop: () => Promise<void>;
}

function startProc(args: string[], env: Record<string, string>, ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray; stderr: () => string }> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return until(() => {
    const m = err.match(ready);
    if (m) return m;
    if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${err}`);
    return undefined;
  }, 30_000).then((match) => ({ child, match, stderr: () => err }));
}

async function startGate(b: BrokerProcess, extra: string[], env: Record<string, string> = {}): Promise<GateProc> {
  const { child, match, stderr } = await startProc([WRIT, 'gate', '--server', 'echo', ...extra], baseEnv({ ...b.env, ...env }), /serving MCP for "echo" at (http:\/\/127\.0\.0\.1:\d+\/mcp)/);
  const url = match[1]!;
  return {
    child,
    url,
    origin: new URL(url).origin,
    stderr,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

const ACCEPT = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const call = (url: string, token: string | undefined, name: string, args: Record<string, unknown>, id = 7) =>
  fetch(url, {
    method: 'POST',
    headers: { ...ACCEPT, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } }),
  });

async function mcpClient(url: string, token: string): Promise<Client> {
  const c = new Client({ name: 'gate-test', version: '1.0.0' });
  await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return c;
}

describe('writ gate (MCP proxy checking every tools/call)', { timeout: 120_000 }, () => {
  let b: BrokerProcess;
  let agent: WritClient;
  let gate: GateProc;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    await b.follow(true); // the use reports' records are read from the stream
    b.decide = approveAll;
    agent = (await b.agent('gate-agent')).client;
    // A token in the gate's own environment must not reach the upstream process either.
    gate = await startGate(b, ['--', process.execPath, FIXTURE], { WRIT_TOKEN: 'env-token-must-not-leak', WRIT_SESSION: 'env-session-must-not-leak' });
  });
  afterAll(async () => {
    await gate?.stop();
    await agent?.close();
    await b?.stop();
  });

  it('no token: 401 with the WWW-Authenticate challenge, and the RFC 9728 metadata it points to', async () => {
    const res = await fetch(gate.url, {
      method: 'POST',
      headers: ACCEPT,
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${gate.origin}/.well-known/oauth-protected-resource"`);
    expect(await res.json()).toEqual({ jsonrpc: '2.0', id: 1, error: { code: -32001, message: 'Unauthorized: a Writ token is required (Authorization: Bearer …)', data: { code: 'WRIT_TOKEN_INVALID' } } });

    const meta = await fetch(`${gate.origin}/.well-known/oauth-protected-resource`);
    expect(meta.status).toBe(200);
    expect(meta.headers.get('content-type')).toBe('application/json');
    expect(await meta.json()).toEqual({
      resource: gate.url,
      authorization_servers: [b.discovery.httpUrl],
      scopes_supported: ['mcp:call:echo/echo', 'mcp:call:echo/delete_repo'],
      bearer_methods_supported: ['header'],
      resource_name: 'echo (through writ gate)',
    });
    // The path-suffixed location (RFC 9728 §3.1) serves the same document.
    expect(await (await fetch(`${gate.origin}/.well-known/oauth-protected-resource/mcp`)).json()).toMatchObject({ resource: gate.url });
  });

  it('a malformed or foreign token: 401 invalid_token', async () => {
    const res = await call(gate.url, 'not.a.token', 'echo', { text: 'hi' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(
      `Bearer resource_metadata="${gate.origin}/.well-known/oauth-protected-resource", error="invalid_token", error_description="WRIT_TOKEN_INVALID: token is not a compact JWT"`,
    );
    // A real token for another audience is refused too.
    const other = await agent.call('task.request', { task: 'elsewhere', scopes: ['mcp:call:echo/echo'], audience: AUD });
    const res2 = await call(gate.url, other.token.token, 'echo', { text: 'hi' });
    expect(res2.status).toBe(401);
    expect(res2.headers.get('www-authenticate')).toContain('error="invalid_token", error_description="WRIT_AUDIENCE_MISMATCH: ');
  });

  it('with mcp:call:echo/echo: echo works through the SDK client, tools/list shows only echo, delete_repo is 403 insufficient_scope; revocation stops the next call; the audit has each call and never its arguments', async () => {
    const r = await agent.call('task.request', { task: 'use the echo server', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const token = r.token.token;
    const c = await mcpClient(gate.url, token);
    try {
      const { tools } = await c.listTools();
      expect(tools.map((t) => t.name)).toEqual(['echo']);
      const echoed = await c.callTool({ name: 'echo', arguments: { text: SECRET } });
      expect(echoed.isError).toBeFalsy();
      expect(textOf(echoed)).toBe(SECRET);

      // The SDK client sees the 403 as an HTTP error.
      const viaSdk = await c.callTool({ name: 'delete_repo', arguments: { repo: 'acme/web' } }).catch((e: unknown) => e);
      expect(viaSdk).toBeInstanceOf(StreamableHTTPError);
      expect((viaSdk as StreamableHTTPError).code).toBe(403);
    } finally {
      await c.close();
    }

    const denied = await call(gate.url, token, 'delete_repo', { repo: 'acme/web', note: SECRET }, 9);
    expect(denied.status).toBe(403);
    expect(denied.headers.get('www-authenticate')).toBe(
      `Bearer error="insufficient_scope", scope="mcp:call:echo/delete_repo", resource_metadata="${gate.origin}/.well-known/oauth-protected-resource", error_description="the token does not allow this tool"`,
    );
    expect(await denied.json()).toEqual({
      jsonrpc: '2.0',
      id: 9,
      error: { code: -32003, message: 'Forbidden: the token does not allow mcp:call:echo/delete_repo', data: { code: 'WRIT_SCOPE_NOT_COVERED', scope: 'mcp:call:echo/delete_repo' } },
    });

    // Still allowed right before the revocation…
    const ok = await call(gate.url, token, 'echo', { text: 'before' });
    expect(ok.status).toBe(200);
    expect((await ok.json()).result.content[0].text).toBe('before');
    await agent.call('revoke', { target: { kind: 'token', jti: r.token.jti } });
    // …and refused on the very next call after it.
    const after = await call(gate.url, token, 'echo', { text: 'after' });
    expect(after.status).toBe(401);
    expect(after.headers.get('www-authenticate')).toBe(
      `Bearer resource_metadata="${gate.origin}/.well-known/oauth-protected-resource", error="invalid_token", error_description="WRIT_TOKEN_REVOKED: token has been revoked"`,
    );
    expect((await after.json()).error.data).toEqual({ code: 'WRIT_TOKEN_REVOKED' });

    const used = (target: string, outcome: 'success' | 'failure', code?: string) =>
      until(() =>
        b.records.find(
          (x) => x.event === 'token.used' && x.jti === r.token.jti && x.outcome === outcome && x.code === code && (x.detail as any)?.call?.target === target,
        ),
      );
    const allowed = await used('echo/echo', 'success');
    // The gate names each request's connection: the broker found this test process on the other end of it.
    expect(allowed).toMatchObject({ audience: gate.url, detail: { allowed: true, call: { resource: 'mcp', action: 'call', target: 'echo/echo' }, presenter: { pid: process.pid } } });
    const refused = await used('echo/delete_repo', 'failure', 'WRIT_SCOPE_NOT_COVERED');
    expect(refused).toMatchObject({ detail: { allowed: false, call: { resource: 'mcp', action: 'call', target: 'echo/delete_repo' } } });
    await used('echo/echo', 'failure', 'WRIT_TOKEN_REVOKED');

    // The log on disk: the calls are there, the arguments (and the token) are not.
    const file = await until(() => {
      const text = b.auditLines().join('\n');
      return text.includes('WRIT_TOKEN_REVOKED') ? text : undefined;
    });
    expect(file).toContain('echo/delete_repo');
    expect(file).not.toContain(SECRET);
    expect(file).not.toContain('acme/web');
    expect(file).not.toContain(token);
    expect(file).not.toContain(token.split('.')[2]!);

    // Nothing of Writ's reached the upstream server's environment.
    expect(gate.stderr()).not.toContain('IN ENVIRONMENT');
  });

  it("how a recorded call ended is on record: an answered call's token.use.ended names its token.used record's use id, the call and its duration, never the arguments", async () => {
    const r = await agent.call('task.request', { task: 'echo, on record', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const res = await call(gate.url, r.token.token, 'echo', { text: SECRET }, 5);
    expect(await res.json()).toEqual({ jsonrpc: '2.0', id: 5, result: { content: [{ type: 'text', text: SECRET }] } });
    const mine = await until(() => {
      const recs = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === r.token.jti && x.event.startsWith('token.use'));
      return recs.some((x) => x.event === 'token.use.ended') ? recs : undefined;
    });
    expect(mine.map((x) => x.event)).toEqual(['token.used', 'token.use.ended']);
    const [used, ended] = mine;
    expect(used.detail.use).toMatch(/^use_[A-Za-z0-9_-]+$/);
    const echo = { resource: 'mcp', action: 'call', target: 'echo/echo' };
    expect(used).toMatchObject({ outcome: 'success', detail: { allowed: true, use: used.detail.use, call: echo } });
    expect(TokenUseEndedDetail.parse(ended.detail)).toEqual({ use: used.detail.use, call: echo, outcome: 'answered', durationMs: ended.detail.durationMs });
    expect(ended.detail.durationMs).toBeGreaterThanOrEqual(0);
    // Whose call it was, from the broker's own records, as for token.used; no code for an answered call.
    expect(ended).toMatchObject({ outcome: 'success', audience: gate.url, grantId: r.grant.id, task: { id: r.grant.taskId, description: 'echo, on record' }, agent: { id: used.agent.id } });
    expect(ended.code).toBeUndefined();
    expect(JSON.stringify(mine)).not.toContain(SECRET);

    // Recorded, then refused by the MCP SDK's own schema (arguments that are not an object): it never ran.
    const r2 = await agent.call('task.request', { task: 'echo, bad arguments', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const bad = await fetch(gate.url, {
      method: 'POST',
      headers: { ...ACCEPT, authorization: `Bearer ${r2.token.token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'echo', arguments: SECRET } }),
    });
    // The SDK answers with its schema's complaint (-32603, naming params.arguments, not their value).
    const badBody = await bad.json();
    expect(badBody).toMatchObject({ jsonrpc: '2.0', id: 6, error: { code: -32603, message: expect.stringContaining('"arguments"') } });
    expect(JSON.stringify(badBody)).not.toContain(SECRET);
    const notRun = await until(() => {
      const recs = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === r2.token.jti && x.event.startsWith('token.use'));
      return recs.some((x) => x.event === 'token.use.ended') ? recs : undefined;
    });
    expect(notRun.map((x) => [x.event, x.outcome, x.code, x.detail.use, x.detail.outcome])).toEqual([
      ['token.used', 'success', undefined, notRun[0].detail.use, undefined],
      ['token.use.ended', 'failure', undefined, notRun[0].detail.use, 'not-forwarded'],
    ]);
    expect(b.auditLines().join('\n')).not.toContain(SECRET);
  });

  it('a use end report that does not parse, or names a use recorded for another call, is refused with WRIT_BAD_REQUEST and its path; an end reported twice is on record as of an unknown use', async () => {
    const r = await agent.call('task.request', { task: 'end reports', scopes: ['mcp:call:echo/*'], audience: gate.url });
    const raw = await WritClient.connect(b.socket);
    try {
      const echo = { resource: 'mcp', action: 'call', target: 'echo/echo' };
      const { uses } = await raw.call('token.uses.open', { jti: r.token.jti, exp: r.token.expiresAt, calls: [echo] });
      expect(uses).toEqual([expect.stringMatching(/^use_/)]);
      const use = uses![0]!;
      const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: WritError) => ({ code: e.code, path: e.path }));
      const end = { use, jti: r.token.jti, call: echo, outcome: 'answered' as const, durationMs: 3 };
      expect(await refusal(raw.call('token.use.ended', { ...end, outcome: 'finished' } as never))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.outcome' });
      expect(await refusal(raw.call('token.use.ended', { ...end, durationMs: -1 }))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.durationMs' });
      expect(await refusal(raw.call('token.use.ended', { ...end, arguments: { text: SECRET } } as never))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params' });
      expect(await refusal(raw.call('token.use.ended', { ...end, use: 'not a use id' }))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.use' });
      // The use is real, but was recorded for another call (or token): nothing is written.
      expect(await refusal(raw.call('token.use.ended', { ...end, call: { ...echo, target: 'echo/delete_repo' } }))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.use' });
      expect(await refusal(raw.call('token.use.ended', { ...end, jti: 'jti_other' }))).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.use' });
      expect(await raw.call('token.use.ended', end)).toEqual({ recorded: true });
      expect(await raw.call('token.use.ended', { ...end, outcome: 'error' })).toEqual({ recorded: true });
      const ends = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.use.ended' && x.jti === r.token.jti);
      expect(ends.map((x) => [x.outcome, x.detail])).toEqual([
        ['success', { use, call: echo, outcome: 'answered', durationMs: 3 }],
        ['failure', { use, call: echo, outcome: 'error', durationMs: 3, unknownUse: true }],
      ]);
      expect(b.auditLines().join('\n')).not.toContain(SECRET);
    } finally {
      await raw.close();
    }
  });

  it('no record, no forward: 300 tool calls in three batches each have their token.used record on disk by the time their batch is answered', async () => {
    const r = await agent.call('task.request', { task: 'many calls', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const used = () => b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used' && x.jti === r.token.jti);
    // 100 a batch (the MCP SDK's limit), 300 in all: past the 100 a second that reports sent without waiting are held to.
    for (let k = 0; k < 3; k++) {
      const batch = Array.from({ length: 100 }, (_, i) => ({ jsonrpc: '2.0', id: k * 100 + i, method: 'tools/call', params: { name: 'echo', arguments: { text: `n${i}` } } }));
      const res = await fetch(gate.url, { method: 'POST', headers: { ...ACCEPT, authorization: `Bearer ${r.token.token}` }, body: JSON.stringify(batch) });
      expect(res.status).toBe(200);
      const ran = ((await res.json()) as { result?: unknown }[]).filter((m) => m.result !== undefined).length;
      // Read at once, no waiting: the gate forwarded nothing before the broker said the records were durable.
      expect({ ran, recorded: used().length }).toEqual({ ran: 100, recorded: (k + 1) * 100 });
    }
    expect(used().every((x) => x.outcome === 'success' && x.detail.allowed === true && x.detail.call.target === 'echo/echo' && x.detail.presenter?.pid === process.pid)).toBe(true);
  });

  it('a batch of more than 100 messages (more than the MCP SDK takes) is refused 400 -32600 before any of its calls is recorded or forwarded', async () => {
    const r = await agent.call('task.request', { task: 'too big a batch', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const batch = Array.from({ length: 101 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'echo', arguments: { text: `n${i}` } } }));
    const res = await fetch(gate.url, { method: 'POST', headers: { ...ACCEPT, authorization: `Bearer ${r.token.token}` }, body: JSON.stringify(batch) });
    expect({ status: res.status, body: await res.json() }).toEqual({
      status: 400,
      body: { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: a batch holds at most 100 messages; nothing in it was recorded or forwarded', data: { code: 'WRIT_BAD_REQUEST' } } },
    });
    // 100 with the same token pass: what was refused was the size, and nothing of the 101 is on record.
    const ok = await fetch(gate.url, { method: 'POST', headers: { ...ACCEPT, authorization: `Bearer ${r.token.token}` }, body: JSON.stringify(batch.slice(0, 100)) });
    expect(((await ok.json()) as unknown[]).length).toBe(100);
    const used = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === r.token.jti && x.event.startsWith('token.use'));
    expect(used.filter((x) => x.event === 'token.used').length).toBe(100);
  });

  it('a JSON-RPC batch is checked call by call: one tool not allowed refuses the batch with 403, and none of its calls is recorded as allowed', async () => {
    const r = await agent.call('task.request', { task: 'batch', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const res = await fetch(gate.url, {
      method: 'POST',
      headers: { ...ACCEPT, authorization: `Bearer ${r.token.token}` },
      body: JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'a' } } },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'delete_repo', arguments: { repo: 'acme/web' } } },
      ]),
    });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toContain('error="insufficient_scope", scope="mcp:call:echo/delete_repo"');
    expect((await res.json()).id).toBe(2);
    // The refusal is recorded; the echo before it in the batch, which never ran, is not recorded as allowed.
    const records = await until(() => {
      const mine = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.event === 'token.used' && x.jti === r.token.jti);
      return mine.some((x) => x.code === 'WRIT_SCOPE_NOT_COVERED') ? mine : undefined;
    });
    expect(records.map((x) => [x.outcome, x.code, x.detail.call.target])).toEqual([['failure', 'WRIT_SCOPE_NOT_COVERED', 'echo/delete_repo']]);
  });

  it('revoking the agent stops it at the gate at once, for every token it holds', async () => {
    const { client: a2, hello } = await b.agent('gate-agent-2');
    try {
      const r = await a2.call('task.request', { task: 'echo all', scopes: ['mcp:call:echo/*'], audience: gate.url });
      const ok = await call(gate.url, r.token.token, 'delete_repo', { repo: 'acme/tmp' });
      expect(ok.status).toBe(200);
      expect((await ok.json()).result.content[0].text).toBe('deleted acme/tmp');
      await agent.call('revoke', { target: { kind: 'agent', id: hello.agentId } });
      const after = await call(gate.url, r.token.token, 'echo', { text: 'x' });
      expect(after.status).toBe(401);
      expect((await after.json()).error.data).toEqual({ code: 'WRIT_TOKEN_REVOKED' });
    } finally {
      await a2.close();
    }
  });

  it('bad input at the boundary: a tools/call without a tool name is 400, a body that is not JSON is 400, other paths 404, a foreign Host 403', async () => {
    const r = await agent.call('task.request', { task: 'bad input', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const auth = { ...ACCEPT, authorization: `Bearer ${r.token.token}` };
    const noName = await fetch(gate.url, { method: 'POST', headers: auth, body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: {} }) });
    expect(noName.status).toBe(400);
    expect((await noName.json()).error.code).toBe(-32602);
    const notJson = await fetch(gate.url, { method: 'POST', headers: auth, body: '{"jsonrpc":' });
    expect(notJson.status).toBe(400);
    expect((await notJson.json()).error.code).toBe(-32700);
    expect((await fetch(`${gate.origin}/other`)).status).toBe(404);
    const rebound = await new Promise<number>((resolve, reject) => {
      const u = new URL(gate.url);
      const req = request({ host: '127.0.0.1', port: u.port, path: '/mcp', method: 'POST', headers: { host: 'evil.example', 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(rebound).toBe(403);
  });

  it('an HTTP upstream: calls are forwarded without the caller\'s token', async () => {
    const up = await startProc([FIXTURE, '--http', '0'], baseEnv({}), /listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/);
    const g2 = await startGate(b, ['--upstream-url', up.match[1]!, '--audience', 'urn:mcp:echo-http']);
    try {
      const meta = await (await fetch(`${g2.origin}/.well-known/oauth-protected-resource`)).json();
      expect(meta).toMatchObject({ resource: 'urn:mcp:echo-http', scopes_supported: ['mcp:call:echo/echo', 'mcp:call:echo/delete_repo'] });
      const r = await agent.call('task.request', { task: 'echo over http', scopes: ['mcp:call:echo/*'], audience: 'urn:mcp:echo-http' });
      const c = await mcpClient(g2.url, r.token.token);
      try {
        expect((await c.listTools()).tools.map((t) => t.name)).toEqual(['echo', 'delete_repo']);
        expect(textOf(await c.callTool({ name: 'delete_repo', arguments: { repo: 'acme/tmp' } }))).toBe('deleted acme/tmp');
      } finally {
        await c.close();
      }
      expect(up.stderr()).not.toContain('AUTHORIZATION HEADER SEEN');
    } finally {
      await g2.stop();
      up.child.kill('SIGTERM');
    }
  });

  // Last: it stops the broker.
  it('fails closed when the broker is gone: a tool call is 503 WRIT_BROKER_UNREACHABLE, never let through unrecorded, even with a token seen before', async () => {
    const seen = await agent.call('task.request', { task: 'before the broker stops', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const unseen = await agent.call('token.mint', { grantId: seen.grant.id });
    expect((await call(gate.url, seen.token.token, 'echo', { text: 'x' })).status).toBe(200);
    await b.stop();
    // The gate hears the broker go (its subscription closes) and says so; a token it has not seen is then refused.
    await until(() => (gate.stderr().includes('writ gate: lost the broker') ? true : undefined));
    const res = await call(gate.url, unseen.token, 'echo', { text: 'x' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await res.json()).error.data).toEqual({ code: 'WRIT_BROKER_UNREACHABLE' });
    // A token the gate verified while the broker was up is still good, but its use cannot be recorded: no forward.
    const again = await call(gate.url, seen.token.token, 'echo', { text: 'y' });
    expect(again.status).toBe(503);
    expect((await again.json()).error.data).toEqual({ code: 'WRIT_BROKER_UNREACHABLE' });
    // A request that calls no tool still passes on such a token (its use is reported when possible, not awaited).
    const list = await fetch(gate.url, { method: 'POST', headers: { ...ACCEPT, authorization: `Bearer ${seen.token.token}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
    expect(list.status).toBe(200);
  });

  it('finds a restarted broker (a new port) by its discovery file and checks new tokens again', async () => {
    await agent.close();
    b = await BrokerProcess.start(b.env);
    b.decide = approveAll;
    agent = (await b.agent('gate-agent-after-restart')).client;
    await until(() => (gate.stderr().split('writ gate: connected to the broker').length >= 3 ? true : undefined), 60_000);
    const r = await agent.call('task.request', { task: 'after restart', scopes: ['mcp:call:echo/echo'], audience: gate.url });
    const res = await call(gate.url, r.token.token, 'echo', { text: 'back' });
    expect(res.status).toBe(200);
    expect((await res.json()).result.content[0].text).toBe('back');
    expect((await (await fetch(`${gate.origin}/.well-known/oauth-protected-resource`)).json()).authorization_servers).toEqual([b.discovery.httpUrl]);
  });
});

// A tool call the gate has forwarded and the upstream has not answered yet, when its token stops being good: the
// `slow` tool answers only once the test releases it, so every ordering below is of events, not of durations.
describe('writ gate: a tool call in flight when its token is revoked or expires', { timeout: 120_000 }, () => {
  let b: BrokerProcess;
  let admin: WritClient;
  let gate: GateProc;
  let dir: string;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
    admin = (await b.agent('slow-admin')).client;
    gate = await startGate(b, ['--', process.execPath, FIXTURE, '--slow']);
    dir = mkdtempSync(join(tmpdir(), 'writ-slow-'));
  });
  afterAll(async () => {
    await gate?.stop();
    await admin?.close();
    await b?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `slow` with this token and resolves once the upstream has it; `answer` settles with the client's reply. */
  async function slowCall(token: string, tag: string) {
    const release = join(dir, tag);
    const answer = call(gate.url, token, 'slow', { tag, release }, 11).then(async (res) => ({
      status: res.status,
      body: await res.json(),
      // What the upstream had done by the time the client had its whole reply.
      upstreamAnswered: gate.stderr().includes(`slow ${tag} answered`),
    }));
    await until(() => (gate.stderr().includes(`slow ${tag} started`) ? true : undefined));
    return { answer, release: () => writeFileSync(release, '') };
  }

  /** The gate's and the upstream's lines about this call (written from `from` on), in the order they were written. */
  const story = (tag: string, from: number) =>
    gate
      .stderr()
      .slice(from)
      .split('\n')
      .filter((l) => l.includes(`slow ${tag} `) || l.startsWith('writ gate: ended echo/slow') || l.startsWith('writ gate: did not forward'))
      .map((l) => l.replace(/^echo-mcp-server: slow \S+ /, 'upstream '));

  const SLOW = { resource: 'mcp', action: 'call', target: 'echo/slow' };
  const jtiOf = (token: string): string => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti;

  /** The token's use record and its end record, once the end is on disk: [outcome, code, detail] of each. */
  async function useRecords(token: string) {
    const jti = jtiOf(token);
    const recs = await until(() => {
      const mine = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === jti && (x.event === 'token.use.ended' || (x.event === 'token.used' && x.detail.call)));
      return mine.some((x) => x.event === 'token.use.ended') ? mine : undefined;
    });
    const use = recs[0].detail.use;
    expect(use).toMatch(/^use_/);
    return { use, records: recs.map((x) => [x.event, x.outcome, x.code, x.event === 'token.used' ? x.detail.call : TokenUseEndedDetail.parse(x.detail)]) };
  }

  /** The use and end records of a call ended this way (its duration is whatever it was). */
  async function expectEnded(token: string, outcome: string, code?: string) {
    const { use, records } = await useRecords(token);
    expect(records).toEqual([
      ['token.used', 'success', undefined, SLOW],
      ['token.use.ended', 'failure', code, { use, call: SLOW, outcome, durationMs: expect.any(Number) }],
    ]);
  }

  async function endedBy(tag: string, token: string, revoke: () => Promise<unknown>, code = 'WRIT_TOKEN_REVOKED', message = 'Unauthorized: the token was revoked during the call') {
    const from = gate.stderr().length;
    const { answer, release } = await slowCall(token, tag);
    await revoke();
    const got = await answer;
    expect(got).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 11, error: { code: -32001, message, data: { code } } }, upstreamAnswered: false });
    // Released only now: the upstream's answer comes after the client's reply, and the upstream was told to cancel.
    release();
    await until(() => (gate.stderr().includes(`slow ${tag} answered`) ? true : undefined));
    expect(story(tag, from)).toEqual([
      'upstream started',
      `writ gate: ended echo/slow in flight: ${message} (${code})`,
      'upstream cancelled',
      'upstream answered',
    ]);
    await expectEnded(token, code === 'WRIT_TOKEN_REVOKED' ? 'revoked' : 'expired', code);
  }

  it('a revocation that does not cover the token leaves the call alone: the upstream\'s answer is delivered', async () => {
    const { client: a } = await b.agent('slow-unrelated');
    try {
      const mine = await a.call('task.request', { task: 'slow, untouched', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      const other = await a.call('task.request', { task: 'another task', scopes: ['mcp:call:echo/echo'], audience: gate.url });
      const from = gate.stderr().length;
      const { answer, release } = await slowCall(mine.token.token, 'untouched');
      await admin.call('revoke', { target: { kind: 'token', jti: other.token.jti } });
      await admin.call('revoke', { target: { kind: 'grant', id: other.grant.id } });
      release();
      expect(await answer).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 11, result: { content: [{ type: 'text', text: 'slow untouched done' }] } }, upstreamAnswered: true });
      expect(story('untouched', from)).toEqual(['upstream started', 'upstream answered']);
      const { use, records } = await useRecords(mine.token.token);
      expect(records).toEqual([
        ['token.used', 'success', undefined, SLOW],
        ['token.use.ended', 'success', undefined, { use, call: SLOW, outcome: 'answered', durationMs: expect.any(Number) }],
      ]);
    } finally {
      await a.close();
    }
  });

  it('revoking its token, its grant, or its agent\'s parent ends the call at once with WRIT_TOKEN_REVOKED; the upstream\'s later answer is not delivered', async () => {
    const { client: a, hello } = await b.agent('slow-parent');
    try {
      const byToken = await a.call('task.request', { task: 'slow by token', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      const session = byToken.session; // handed out once per agent: its sub-agent is introduced with it below
      expect(session).toEqual(expect.any(String));
      await endedBy('by-token', byToken.token.token, () => admin.call('revoke', { target: { kind: 'token', jti: byToken.token.jti } }));
      const byGrant = await a.call('task.request', { task: 'slow by grant', scopes: ['mcp:call:echo/*'], audience: gate.url });
      await endedBy('by-grant', byGrant.token.token, () => admin.call('revoke', { target: { kind: 'grant', id: byGrant.grant.id } }));
      // A sub-agent's token names its parent in `act`: revoking the parent ends the sub-agent's call.
      await a.call('task.request', { task: 'slow cascade', scopes: ['mcp:call:echo/*'], audience: gate.url });
      const { client: child } = await b.agent('slow-child', { parentSession: session! });
      try {
        const sub = await child.call('task.request', { task: 'slow cascade', scopes: ['mcp:call:echo/slow'], audience: gate.url });
        expect(JSON.parse(Buffer.from(sub.token.token.split('.')[1]!, 'base64url').toString()).act.act.sub).toBe(hello.agentId);
        await endedBy('by-agent', sub.token.token, () => admin.call('revoke', { target: { kind: 'agent', id: hello.agentId } }));
      } finally {
        await child.close();
      }
    } finally {
      await a.close();
    }
  });

  /** The client's notifications/cancelled for its request `requestId`, sent with `token`. */
  const cancelWith = (token: string, requestId: number, reason?: string) =>
    fetch(gate.url, {
      method: 'POST',
      headers: { ...ACCEPT, authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, ...(reason === undefined ? {} : { reason }) } }),
    });

  it("the client's notifications/cancelled ends its call and cancels it upstream; another agent's token, the same agent's other token, or another request id, cancels nothing", async () => {
    const { client: a } = await b.agent('slow-canceller');
    const { client: other } = await b.agent('slow-stranger');
    try {
      const mine = await a.call('task.request', { task: 'slow, cancelled', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      const theirs = await other.call('task.request', { task: 'not theirs to cancel', scopes: ['mcp:call:echo/slow'], audience: gate.url });

      // Not cancelled: a token of another agent naming this request id, or this token naming another id.
      const kept = await a.call('task.request', { task: 'slow, kept', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      let from = gate.stderr().length;
      const first = await slowCall(kept.token.token, 'kept');
      expect((await cancelWith(theirs.token.token, 11, 'not mine')).status).toBe(202);
      expect((await cancelWith(kept.token.token, 12)).status).toBe(202);
      // The same agent's other token (another jti) cancels nothing either: a call is its token's to cancel.
      expect((await cancelWith(mine.token.token, 11)).status).toBe(202);
      first.release();
      expect(await first.answer).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 11, result: { content: [{ type: 'text', text: 'slow kept done' }] } }, upstreamAnswered: true });
      expect(story('kept', from)).toEqual(['upstream started', 'upstream answered']);
      const { use: keptUse, records: keptRecords } = await useRecords(kept.token.token);
      expect(keptRecords).toEqual([
        ['token.used', 'success', undefined, SLOW],
        ['token.use.ended', 'success', undefined, { use: keptUse, call: SLOW, outcome: 'answered', durationMs: expect.any(Number) }],
      ]);

      // Cancelled with its own token: the client is answered -32800 at once, and the upstream hears the cancellation.
      from = gate.stderr().length;
      const { answer, release } = await slowCall(mine.token.token, 'cancelled');
      expect((await cancelWith(mine.token.token, 11, 'the user pressed stop')).status).toBe(202);
      expect(await answer).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 11, error: { code: -32800, message: 'Request cancelled' } }, upstreamAnswered: false });
      await until(() => (gate.stderr().includes('slow cancelled cancelled') ? true : undefined));
      release();
      await until(() => (gate.stderr().includes('slow cancelled answered') ? true : undefined));
      expect(story('cancelled', from)).toEqual(['upstream started', 'writ gate: ended echo/slow in flight: cancelled by the client', 'upstream cancelled', 'upstream answered']);
      await expectEnded(mine.token.token, 'cancelled');
    } finally {
      await a.close();
      await other.close();
    }
  });

  it('a cancellation through the SDK client (an AbortSignal on callTool) reaches the upstream tool', async () => {
    const { client: a } = await b.agent('slow-sdk-canceller');
    try {
      const r = await a.call('task.request', { task: 'slow, aborted', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      const c = await mcpClient(gate.url, r.token.token);
      try {
        const stop = new AbortController();
        const pending = c.callTool({ name: 'slow', arguments: { tag: 'sdk', release: join(dir, 'sdk') } }, undefined, { signal: stop.signal }).catch((e: unknown) => e);
        await until(() => (gate.stderr().includes('slow sdk started') ? true : undefined));
        stop.abort('the user pressed stop');
        expect(await pending).toMatchObject({ code: -32001, message: expect.stringContaining('the user pressed stop') });
        await until(() => (gate.stderr().includes('slow sdk cancelled') ? true : undefined));
        await expectEnded(r.token.token, 'cancelled');
      } finally {
        writeFileSync(join(dir, 'sdk'), '');
        await c.close();
      }
    } finally {
      await a.close();
    }
  });

  it("another local process can neither end the gate's open use nor push it out: its end for it is WRIT_BAD_REQUEST, and after 17,920 made-up uses on ten connections the call's end is still of its known use", async () => {
    const { client: a } = await b.agent('slow-flooded');
    const others = await Promise.all(Array.from({ length: 10 }, () => WritClient.connect(b.socket)));
    try {
      const r = await a.call('task.request', { task: 'slow, flooded', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      const { answer, release } = await slowCall(r.token.token, 'flooded');
      // The use id is in the audit log, which any process of this user may read.
      const use = (await until(() => b.auditLines().map((l) => JSON.parse(l)).find((x) => x.event === 'token.used' && x.jti === r.token.jti)))!.detail.use as string;
      expect(use).toMatch(/^use_/);
      const refusal = await others[0]!.call('token.use.ended', { use, jti: r.token.jti, call: SLOW, outcome: 'answered', durationMs: 1 }).catch((e: WritError) => ({ code: e.code, path: e.path }));
      expect(refusal).toEqual({ code: 'WRIT_BAD_REQUEST', path: 'params.use' });
      // More made-up uses than a whole broker once kept open (16,384), each connection within its rate.
      const junk = Array.from({ length: 256 }, () => ({ resource: 'x', action: 'y', target: 'z' }));
      await Promise.all(others.map(async (o) => {
        for (let k = 0; k < 7; k++) expect((await o.call('token.uses.open', { jti: 'jti_made_up', calls: junk })).recorded).toBe(256);
      }));
      release();
      expect((await answer).body).toEqual({ jsonrpc: '2.0', id: 11, result: { content: [{ type: 'text', text: 'slow flooded done' }] } });
      const { records } = await useRecords(r.token.token);
      expect(records).toEqual([
        ['token.used', 'success', undefined, SLOW],
        ['token.use.ended', 'success', undefined, { use, call: SLOW, outcome: 'answered', durationMs: expect.any(Number) }],
      ]);
    } finally {
      await Promise.all(others.map((o) => o.close()));
      await a.close();
    }
  });

  it('its token expiring ends the call with WRIT_TOKEN_EXPIRED', async () => {
    const { client: a } = await b.agent('slow-expiring');
    try {
      const r = await a.call('task.request', { task: 'slow, short-lived', scopes: ['mcp:call:echo/slow'], audience: gate.url, ttl: 5 });
      // Nothing is revoked: the gate's own timer at `exp` ends it.
      await endedBy('expiring', r.token.token, async () => undefined, 'WRIT_TOKEN_EXPIRED', 'Unauthorized: the token expired during the call');
    } finally {
      await a.close();
    }
  });

  // Last: it revokes every agent, the admin too.
  it('revoking everything ends the call with WRIT_TOKEN_REVOKED', async () => {
    const { client: a } = await b.agent('slow-all');
    try {
      const r = await a.call('task.request', { task: 'slow, then all', scopes: ['mcp:call:echo/slow'], audience: gate.url });
      await endedBy('all', r.token.token, () => admin.call('revoke', { target: { kind: 'all' } }));
    } finally {
      await a.close();
    }
  });
});

describe('writ gate stopping with a tool call in flight', { timeout: 120_000 }, () => {
  it('on SIGTERM it ends the call (the client is answered) and its end is on record as closed before the gate exits', async () => {
    const b = await BrokerProcess.start();
    b.decide = approveAll;
    const dir = mkdtempSync(join(tmpdir(), 'writ-closing-'));
    const g = await startGate(b, ['--', process.execPath, FIXTURE, '--slow']);
    const { client } = await b.agent('closing');
    try {
      const r = await client.call('task.request', { task: 'slow, gate closing', scopes: ['mcp:call:echo/slow'], audience: g.url });
      const pending = call(g.url, r.token.token, 'slow', { tag: 'closing', release: join(dir, 'never') }, 3).then(async (res) => ({ status: res.status, body: await res.json() }));
      await until(() => (g.stderr().includes('slow closing started') ? true : undefined));
      await g.stop();
      expect(g.child.exitCode).toBe(0);
      expect(await pending).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 3, error: { code: -32002, message: 'Service unavailable: writ gate stopped during the call' } } });
      expect(g.stderr()).toContain('writ gate: ended echo/slow in flight: the gate is stopping');
      const mine = await until(() => {
        const recs = b.auditLines().map((l) => JSON.parse(l)).filter((x) => x.jti === r.token.jti && x.event.startsWith('token.use'));
        return recs.some((x) => x.event === 'token.use.ended') ? recs : undefined;
      });
      const [used, ended] = mine;
      expect(mine.map((x) => x.event)).toEqual(['token.used', 'token.use.ended']);
      expect([ended.outcome, ended.code, TokenUseEndedDetail.parse(ended.detail)]).toEqual([
        'failure',
        undefined,
        { use: used.detail.use, call: { resource: 'mcp', action: 'call', target: 'echo/slow' }, outcome: 'closed', durationMs: expect.any(Number) },
      ]);
    } finally {
      await g.stop();
      await client.close();
      await b.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The broker never fails an audit write on demand, nor lets a revocation in between a use's record and its answer,
// nor is it a broker from before use ids (no `token.uses.open`), so a small stand-in plays one that is (real HTTP and
// WebSocket on port 0; the token is signed by the broker's own TokenMinter), in front of the real gate and upstream.
async function standInBroker(onUses: (ws: import('ws').WebSocket, m: { id: number; method: string; params: { jti: string; calls: unknown[] } }) => void, { openUses = true } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const http = createServer();
  const wss = new WebSocketServer({ server: http });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  http.on('request', (req, res) => {
    const body = req.url === '/.well-known/oauth-authorization-server' ? { issuer: base, jwks_uri: `${base}/jwks` } : req.url === '/jwks' ? { keys: [{ kty: 'OKP', crv: 'Ed25519', x: publicKey.export({ format: 'jwk' }).x, kid: 'k1' }] } : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? {}));
  });
  const reports: { method: string; params: any }[] = [];
  /** The subscribed connections, as they subscribed. */
  const subscribers: import('ws').WebSocket[] = [];
  wss.on('connection', (ws) =>
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      reports.push({ method: m.method, params: m.params });
      if (m.method === 'subscribe') {
        subscribers.push(ws);
        const blocks = m.params.events.includes('blocks') ? { blockedIdentities: [] } : {};
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { subscribed: m.params.events, revocations: { jtis: [], grantIds: [], agentIds: [], ...blocks } } }));
      }
      // A broker before use ids answers `token.uses.open` as any method it lacks.
      if (m.method === 'token.uses.open' && !openUses) ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'no such method', data: { code: 'WRIT_METHOD_NOT_FOUND' } } }));
      else if (m.method === 'token.uses' || m.method === 'token.uses.open') onUses(ws, m);
      else if (m.method === 'token.use.ended') ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { recorded: true } }));
    }),
  );
  const minter = new TokenMinter(base, () => ({ kid: 'k1', privateKey }), systemClock, randomIds);
  return {
    base,
    reports,
    subscribers,
    mint: (audience: string, identity?: string) => minter.mint({ user: 'dev@example.com', chain: ['agt_1'], audience, scopes: ['mcp:call:echo/*'], taskId: 'task_1', grantId: 'grt_1', ttlSeconds: 300, ...(identity === undefined ? {} : { identity }) }),
    close: async () => {
      wss.close();
      await new Promise((r) => http.close(r));
    },
  };
}

describe('writ gate when the broker cannot write the audit log, or a revocation lands while it does', { timeout: 60_000 }, () => {
  it('a tool call is 503 WRIT_AUDIT_WRITE_FAILED; a request calling no tool still passes', async () => {
    const broker = await standInBroker((ws, m) => ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32000, message: 'audit write failed (ENOSPC)', data: { code: 'WRIT_AUDIT_WRITE_FAILED' } } })));
    const g = await startGateInProcess({ server: 'echo', upstream: { kind: 'stdio', command: process.execPath, args: [FIXTURE] }, broker: broker.base, env: baseEnv({}), version: '0.0.0' });
    try {
      const bearer = await broker.mint(g.audience).token;
      const res = await call(g.url, bearer, 'delete_repo', { repo: 'acme/web' });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect((await res.json()).error).toEqual({ code: -32002, message: 'Service unavailable: the broker did not record this use: it must not happen', data: { code: 'WRIT_AUDIT_WRITE_FAILED' } });
      expect(broker.reports.map((r) => r.method)).toContain('token.uses.open');
      // Nothing was recorded, so no end is reported.
      expect(broker.reports.map((r) => r.method)).not.toContain('token.use.ended');
      const list = await fetch(g.url, { method: 'POST', headers: { ...ACCEPT, authorization: `Bearer ${bearer}` }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
      expect(list.status).toBe(200);
      expect(((await list.json()).result.tools as { name: string }[]).map((t) => t.name)).toEqual(['echo', 'delete_repo']);
    } finally {
      await g.close();
      await broker.close();
    }
  });

  it('a call revoked after its use was recorded and before it was forwarded: 401 WRIT_TOKEN_REVOKED, and its end is reported as not-forwarded, naming its use', async () => {
    // The revocation is sent on the same socket just before the answer that the use is recorded: the verifier has
    // applied it by the time it reads that answer.
    const broker = await standInBroker((ws, m) => {
      ws.send(JSON.stringify({ jsonrpc: '2.0', method: 'revocation', params: { target: { kind: 'token', jti: m.params.jti }, at: 1, jtis: [m.params.jti], agentIds: [], taskIds: [], grantIds: [] } }));
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { recorded: m.params.calls.length, uses: m.params.calls.map((_, i) => `use_between${i}`) } }));
    });
    const g = await startGateInProcess({ server: 'echo', upstream: { kind: 'stdio', command: process.execPath, args: [FIXTURE] }, broker: broker.base, env: baseEnv({}), version: '0.0.0' });
    try {
      const { token, claims } = broker.mint(g.audience);
      const res = await call(g.url, await token, 'delete_repo', { repo: 'acme/web' });
      expect(res.status).toBe(401);
      expect((await res.json()).error.data).toEqual({ code: 'WRIT_TOKEN_REVOKED' });
      const ended = await until(() => broker.reports.find((r) => r.method === 'token.use.ended'));
      expect(ended.params).toEqual({
        use: 'use_between0',
        jti: claims.jti,
        exp: claims.exp,
        audience: g.audience,
        call: { resource: 'mcp', action: 'call', target: 'echo/delete_repo' },
        outcome: 'not-forwarded',
        durationMs: expect.any(Number),
        code: 'WRIT_TOKEN_REVOKED',
      });
      expect(broker.reports.filter((r) => r.method === 'token.use.ended').length).toBe(1);
    } finally {
      await g.close();
      await broker.close();
    }
  });

  // A block reaches the gate as a `blocks` event (a token of an earlier run: no revocation names its agent).
  it('a block of the token\'s identity ends its call in flight with WRIT_TOKEN_REVOKED and cancels it upstream', async () => {
    const broker = await standInBroker((ws, m) => ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { recorded: m.params.calls.length, uses: m.params.calls.map((_, i) => `use_slow${i}`) } })));
    const g = await startGateInProcess({ server: 'echo', upstream: { kind: 'stdio', command: process.execPath, args: [FIXTURE, '--slow'] }, broker: broker.base, env: baseEnv({}), version: '0.0.0' });
    const dir = mkdtempSync(join(tmpdir(), 'writ-gate-block-'));
    try {
      const { token, claims } = broker.mint(g.audience, 'inv_blocked');
      const release = join(dir, 'release');
      const answer = call(g.url, await token, 'slow', { tag: 'blocked', release }, 11).then(async (res) => ({ status: res.status, body: await res.json() }));
      await until(() => (existsSync(`${release}.started`) ? true : undefined));
      const block = (identity: string, seq: number) => broker.subscribers.at(-1)!.send(JSON.stringify({ jsonrpc: '2.0', method: 'blocks', params: { identity, blocked: true, seq } }));
      const acked = (seq: number) => until(() => (broker.reports.some((r) => r.method === 'revocation.ack' && r.params.seq === seq) ? true : undefined));
      block('inv_blocked', 2);
      await acked(2);
      // Acknowledged after the call was ended: the client has its answer without the upstream's.
      let timer: NodeJS.Timeout | undefined;
      const got = await Promise.race([answer, new Promise((r) => (timer = setTimeout(() => r('still running'), 5_000)))]).finally(() => clearTimeout(timer));
      expect(got).toEqual({ status: 200, body: { jsonrpc: '2.0', id: 11, error: { code: -32001, message: 'Unauthorized: the token was revoked during the call', data: { code: 'WRIT_TOKEN_REVOKED' } } } });
      const ended = await until(() => broker.reports.find((r) => r.method === 'token.use.ended'));
      expect(ended.params).toEqual({ use: 'use_slow0', jti: claims.jti, exp: claims.exp, audience: g.audience, call: { resource: 'mcp', action: 'call', target: 'echo/slow' }, outcome: 'revoked', durationMs: expect.any(Number) });
      await until(() => (existsSync(`${release}.cancelled`) ? true : undefined));
      writeFileSync(release, '');
    } finally {
      await g.close();
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a broker from before use ids (WRIT_METHOD_NOT_FOUND for token.uses.open): calls are recorded through token.uses and forwarded, and their ends reported without a use id', async () => {
    const broker = await standInBroker((ws, m) => ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { recorded: m.params.calls.length } })), { openUses: false });
    const g = await startGateInProcess({ server: 'echo', upstream: { kind: 'stdio', command: process.execPath, args: [FIXTURE] }, broker: broker.base, env: baseEnv({}), version: '0.0.0' });
    try {
      const { token, claims } = broker.mint(g.audience);
      const bearer = await token;
      for (const id of [1, 2]) {
        const res = await call(g.url, bearer, 'echo', { text: `hi ${id}` }, id);
        expect({ status: res.status, body: await res.json() }).toEqual({ status: 200, body: { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `hi ${id}` }] } } });
      }
      // Asked once on this connection, then remembered.
      expect(broker.reports.map((r) => r.method).filter((x) => x.startsWith('token.uses'))).toEqual(['token.uses.open', 'token.uses', 'token.uses']);
      const ends = await until(() => {
        const e = broker.reports.filter((r) => r.method === 'token.use.ended');
        return e.length === 2 ? e : undefined;
      });
      const echo = { resource: 'mcp', action: 'call', target: 'echo/echo' };
      expect(ends.map((r) => r.params)).toEqual([1, 2].map(() => ({ jti: claims.jti, exp: claims.exp, audience: g.audience, call: echo, outcome: 'answered', durationMs: expect.any(Number) })));
    } finally {
      await g.close();
      await broker.close();
    }
  });
});
