// `writ mcp`: the broker as an MCP server over stdio, so a coding agent (Claude Code, Copilot agent mode, Cline,
// Codex) gets scoped, developer-approved tokens by a tool call. stdout carries MCP JSON-RPC and nothing else;
// every word for people goes to stderr.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { WritError, asWritError } from '../errors';
import { WritClient, ENV_SESSION } from '../sdk/client';
import type { GrantView } from '../protocol';

export interface McpServerOptions {
  /** The agent's name as the developer sees it in prompts and the audit log. */
  agent: string;
  /** Broker address (unix:… or ws://…); default WRIT_BROKER, else the discovery file. */
  address?: string;
  env?: NodeJS.ProcessEnv;
  version: string;
  log?: (line: string) => void;
}

const PROGRESS_INTERVAL_MS = 5_000;

/** The MCP tool failure a Writ refusal becomes: `isError` with the stable Writ code first in the text. */
function toolError(e: unknown): CallToolResult {
  const w = asWritError(e);
  return { isError: true, content: [{ type: 'text', text: `${w.code}: ${w.message}` }], _meta: { 'writ/code': w.code } };
}

const GrantOut = z.object({
  id: z.string(),
  taskId: z.string(),
  task: z.string(),
  scopes: z.array(z.string()),
  audience: z.string(),
  mode: z.string(),
  ttl: z.number(),
  expiresAt: z.number(),
});

const grantOut = (g: GrantView) => ({ id: g.id, taskId: g.taskId, task: g.task, scopes: g.scopes, audience: g.audience, mode: g.mode, ttl: g.ttl, expiresAt: g.expiresAt });

/**
 * One agent connection to the broker, opened on first use and reopened (resuming the same agent by its session)
 * after the broker closed it. A session from WRIT_SESSION is the agent's identity and is never replaced; a session
 * this process earned itself is dropped if the broker no longer knows it, and the agent starts afresh.
 */
class AgentLink {
  private client: WritClient | undefined;
  private connecting: Promise<WritClient> | undefined;
  private session: string | undefined;
  private readonly fromEnv: boolean;
  /** The developer stopped this agent (the broker closed its connection with 4001): it does not come back. */
  private stopped = false;

  constructor(private readonly opts: McpServerOptions) {
    this.session = (opts.env ?? process.env)[ENV_SESSION] || undefined;
    this.fromEnv = this.session !== undefined;
  }

  get(): Promise<WritClient> {
    // Reconnecting would be a new agent under the same name, asking again (or let in by a rule): a stop is final
    // for this process, as it is for `writ exec`.
    if (this.stopped) return Promise.reject(new WritError('WRIT_TOKEN_REVOKED', 'the developer stopped this agent; start writ mcp again to ask anew'));
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  remember(session: string | undefined): void {
    if (session) this.session = session;
  }

  private async open(): Promise<WritClient> {
    const info = { name: this.opts.agent, kind: 'mcp', version: this.opts.version };
    const { client, hello } = await WritClient.asAgent({ ...info, ...(this.session ? { session: this.session } : {}) }, this.opts.address, this.opts.env).catch(async (e) => {
      if (this.session && !this.fromEnv && asWritError(e).code === 'WRIT_SESSION_INVALID') {
        this.session = undefined;
        return WritClient.asAgent(info, this.opts.address, this.opts.env);
      }
      throw e;
    });
    this.opts.log?.(`writ mcp: connected to the broker as agent ${hello.agentId} (${this.opts.agent})${hello.resumed ? ', resumed' : ''}`);
    client.onClose((code) => {
      if (this.client === client) this.client = undefined;
      if (code === 4001) this.stopped = true;
      this.opts.log?.(code === 4001 ? 'writ mcp: this agent was revoked by the developer' : 'writ mcp: the broker closed the connection');
    });
    this.client = client;
    return client;
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.close();
  }
}

export function createWritMcpServer(opts: McpServerOptions): { server: McpServer; close: () => Promise<void> } {
  const link = new AgentLink(opts);
  const server = new McpServer(
    { name: 'writ', version: opts.version },
    {
      instructions:
        'Writ gives you short-lived, scoped credentials that the developer approves. Call request_credentials before using an API or tool that needs a token, ' +
        'with a one-line task and the narrowest scopes (resource:action[:target], e.g. repo:read:acme/web). The call waits for the developer. ' +
        'Never print or store the token beyond the task; revoke_grant when done.',
    },
  );

  server.registerTool(
    'request_credentials',
    {
      title: 'Request credentials',
      description:
        'Ask the developer for a scoped, short-lived token for a task. Blocks until the developer approves or denies. ' +
        'Scopes are resource:action[:target] (globs * and ** in the target). Returns the token and its expiry.',
      inputSchema: {
        task: z.string().min(1).max(500).describe('What the credentials are for, in one line the developer will read'),
        scopes: z.array(z.string().min(1).max(512)).min(1).max(32).describe('Scopes asked, e.g. ["repo:read:acme/web"]'),
        audience: z.string().min(1).max(512).describe('The API or tool the token is for (its audience), e.g. https://api.github.com'),
        ttl: z.number().int().min(1).max(3600).optional().describe('Token lifetime in seconds (the broker caps it)'),
      },
      outputSchema: {
        token: z.string(),
        jti: z.string(),
        expiresAt: z.number().describe('Epoch seconds'),
        expiresAtIso: z.string(),
        scopes: z.array(z.string()),
        audience: z.string(),
        grantId: z.string(),
        reused: z.boolean(),
      },
      annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: false },
    },
    async ({ task, scopes, audience, ttl }, extra) => {
      // While the developer decides, a client that asked for progress hears from us every few seconds, so its
      // own request timeout (often 60 s) can be reset instead of giving up before the decision.
      const progressToken = extra._meta?.progressToken;
      let beats = 0;
      const heartbeat =
        progressToken === undefined
          ? undefined
          : setInterval(() => {
              void extra
                .sendNotification({ method: 'notifications/progress', params: { progressToken, progress: ++beats, message: 'waiting for the developer to approve or deny' } })
                .catch(() => undefined);
            }, PROGRESS_INTERVAL_MS);
      try {
        const client = await link.get();
        const r = await client.call('task.request', { task, scopes, audience, ...(ttl === undefined ? {} : { ttl }) });
        link.remember(r.session);
        const out = {
          token: r.token.token,
          jti: r.token.jti,
          expiresAt: r.token.expiresAt,
          expiresAtIso: new Date(r.token.expiresAt * 1000).toISOString(),
          scopes: r.token.scopes,
          audience: r.token.audience,
          grantId: r.grant.id,
          reused: r.reused,
        };
        return { content: [{ type: 'text', text: JSON.stringify(out) }], structuredContent: out };
      } catch (e) {
        return toolError(e);
      } finally {
        clearInterval(heartbeat);
      }
    },
  );

  server.registerTool(
    'list_grants',
    {
      title: 'List my grants',
      description: "This agent's live grants: what the developer approved, for which task, scopes, audience and until when.",
      inputSchema: {},
      outputSchema: { grants: z.array(GrantOut) },
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async () => {
      try {
        const client = await link.get();
        const { grants } = await client.call('grants.list', {});
        const out = { grants: grants.map(grantOut) };
        return { content: [{ type: 'text', text: JSON.stringify(out) }], structuredContent: out };
      } catch (e) {
        return toolError(e);
      }
    },
  );

  server.registerTool(
    'revoke_grant',
    {
      title: 'Revoke my grant',
      description: 'Give up one of this agent\'s grants when the task is done: every token minted from it stops working at once.',
      inputSchema: { grantId: z.string().min(1).max(200).describe('The grant id (from request_credentials or list_grants)') },
      outputSchema: { grantId: z.string(), revokedGrants: z.number(), revokedTokens: z.number() },
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    async ({ grantId }) => {
      try {
        const client = await link.get();
        // Only this agent's own grants: the broker's `revoke` takes anything, this tool does not.
        const { grants } = await client.call('grants.list', {});
        if (!grants.some((g) => g.id === grantId)) {
          return toolError(new WritError('WRIT_GRANT_NOT_FOUND', `no live grant ${grantId} of this agent`));
        }
        const r = await client.call('revoke', { target: { kind: 'grant', id: grantId }, reason: 'revoked by the agent (writ mcp)' });
        const out = { grantId, revokedGrants: r.revokedGrants, revokedTokens: r.revokedTokens };
        return { content: [{ type: 'text', text: JSON.stringify(out) }], structuredContent: out };
      } catch (e) {
        return toolError(e);
      }
    },
  );

  return {
    server,
    close: async () => {
      await server.close().catch(() => undefined);
      await link.close();
    },
  };
}

/** Serves MCP on this process's stdin/stdout until stdin ends (the client went away). */
export async function runMcpStdio(opts: McpServerOptions): Promise<void> {
  const { server, close } = createWritMcpServer(opts);
  const transport = new StdioServerTransport();
  const ended = new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
    transport.onclose = () => resolve();
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.connect(transport);
  opts.log?.('writ mcp: serving MCP on stdio');
  await ended;
  await close();
}
