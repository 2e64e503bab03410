// `writ exec`'s line to the broker: how a revocation reaches the command it runs. The broker closes a revoked
// agent's connection with 4001; any other close (the broker crashed, restarted, froze) is no revocation, so the
// line is drawn again with backoff and the agent says hello with its session. A refused session stops the command.
import { WritClient } from './sdk/client';
import { asWritError } from './errors';
import type { WritErrorCode } from './errors';
import type { RevocationEvent, RevocationSnapshot } from './protocol';
import { chainFromAct } from './core/tokens';

/** Waits between reconnection attempts; the last repeats for as long as the command runs. */
export const RECONNECT_BACKOFF_MS = [250, 500, 1000, 2000, 5000] as const;

/** Answers to `hello` that say this agent may not go on: its command is stopped as on a revocation. */
const REFUSALS: readonly WritErrorCode[] = ['WRIT_SESSION_INVALID', 'WRIT_TOKEN_REVOKED', 'WRIT_AGENT_BLOCKED'];

/** What of the command's token a revocation of its agent names: the agents of its `act` chain and when it was issued. */
export interface HeldToken {
  /** This agent, then its parents (a sub-agent's token names them too). */
  actors: string[];
  /** Epoch seconds. */
  issuedAt: number;
  /** Epoch seconds. */
  expiresAt: number;
}

/** Reads the claims of the token `writ exec` was just given (its own; used only to stop the command sooner). */
export function heldToken(token: string): HeldToken {
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { act?: unknown; iat?: unknown; exp?: unknown };
  return { actors: chainFromAct(claims.act), issuedAt: Number(claims.iat), expiresAt: Number(claims.exp) };
}

/** True when a revocation names one of these agents: by its tree, or as its target (an id this broker does not know). */
export function namesAgent(r: RevocationSnapshot | RevocationEvent, ids: readonly string[]): boolean {
  return r.agentIds.some((id) => ids.includes(id)) || ('target' in r && r.target.kind === 'agent' && ids.includes(r.target.id));
}

/** True when a revocation takes the token's agent (or an ancestor), or everything issued up to it. */
export function revokesAgent(r: RevocationSnapshot | RevocationEvent, t: HeldToken): boolean {
  if (namesAgent(r, t.actors)) return true;
  if ('target' in r) return r.target.kind === 'all' && t.issuedAt < r.at;
  return r.allBefore !== undefined && t.issuedAt < r.allBefore;
}

export interface ExecLineOptions {
  /** The connection the agent said hello and got its token on. */
  client: WritClient;
  agent: { name: string; kind: string };
  /** The agent session credential (never printed). */
  session: string | undefined;
  /**
   * A sub-agent's parent session (never printed), said again on reconnecting: a broker that restarted puts the
   * sub-agent back under the agent holding it now (authority.ts, `introduce`).
   */
  parentSession?: string | undefined;
  agentId: string;
  token: HeldToken;
  /** Where the broker is now (the discovery file may name a new socket after a restart). */
  address: () => string;
  /** What people read (stderr): ids and codes, never a token or a session. */
  log: (line: string) => void;
  /** The agent was revoked, or may not go on: stop the command. Called at most once. */
  onRevoked: (why: string) => void;
  backoffMs?: readonly number[];
}

export class ExecLine {
  /** The agent as the broker knows it now: after a restart, a new id under the same name. */
  agentId: string;
  private client: WritClient;
  private ended = false;
  private revoked = false;
  /**
   * Every id the agent has had on this line: the one its token names, then the one of each broker run it came back
   * to. A revocation of any of them (by the developer reading `writ agents`, the editor or an audit record of that
   * run) is one of this agent.
   */
  private readonly ids: Set<string>;
  /** The revocations this line sends itself when its agent is revoked under one of its ids but not the others. */
  private revokingAlso: Promise<void> = Promise.resolve();
  /** The last revocation heard that named the id the agent has now: the one its 4001 close follows. */
  private heardOfNow: RevocationEvent | undefined;

  constructor(private readonly o: ExecLineOptions) {
    this.agentId = o.agentId;
    this.ids = new Set([o.agentId]);
    this.client = o.client;
    this.attach(o.client);
  }

  /** The command ended: no more reconnecting; the connection is closed (the revocations of its other ids sent first). */
  async close(): Promise<void> {
    this.ended = true;
    await this.revokingAlso;
    await this.client.close();
  }

  /** Resolves once the revocations this line sends of its agent's other ids (after a restart) are done. */
  async otherIdsRevoked(): Promise<void> {
    await this.revokingAlso;
  }

  private revoke(why: string): void {
    if (this.revoked || this.ended) return;
    this.revoked = true;
    this.o.onRevoked(why);
  }

  private attach(c: WritClient): void {
    this.client = c;
    c.onClose((code) => {
      if (this.ended || this.revoked || c !== this.client) return;
      if (code === 4001) {
        // After a restart the agent came back under a new id, but its token's `act` names the old one: revoking
        // only the new agent would stop the command and leave the token (and any copy of it) working until it
        // expires. The old id is revoked too (revocation is open to any caller), while the command is stopped.
        // Every id it had (a token got in a run between two restarts names that run's), unless what closed it was a
        // revocation of everything, which took them all.
        const all = this.heardOfNow !== undefined && 'target' in this.heardOfNow && this.heardOfNow.target.kind === 'all';
        const also = all ? [] : this.idsNowFirst().filter((x) => x !== this.agentId);
        if (also.length > 0) this.revokingAlso = this.revokeIds(also, `the agent it came back as after a broker restart (${this.agentId}) was revoked`);
        return this.revoke('the agent was revoked');
      }
      const until = new Date(this.o.token.expiresAt * 1000).toISOString();
      this.o.log(
        `writ: lost the connection to the broker (close ${code}); the command keeps running and its token stays valid until ${until} ` +
          `(no revocation can reach it meanwhile); reconnecting`,
      );
      void this.reconnect();
    });
  }

  /** True when a revocation takes this agent under any id it has had on this line, an ancestor, or its token. */
  private covers(r: RevocationSnapshot | RevocationEvent): boolean {
    return revokesAgent(r, this.o.token) || namesAgent(r, [...this.ids]);
  }

  /**
   * A revocation heard on the line drawn as agent `id` (after a restart) takes this agent: the command is stopped,
   * and whichever of its ids the revocation leaves live is revoked too. The agent it is now holds the session (and
   * any grant approved since the restart): left live, a process still holding WRIT_SESSION (a daemon the command
   * left behind) would go on getting tokens, and its sub-agents with it; revoked, the broker's cascade takes them
   * and the revocation list keeps the session's hash. The id the token names is revoked when the revocation does not
   * already cover the token, so a copy of it is refused wherever it is checked.
   */
  private stopFor(r: RevocationSnapshot | RevocationEvent, id: string, why: string): void {
    if (this.ended || this.revoked) return;
    // Every id it has had that the revocation leaves live: the one it has now, the one its token names (unless the
    // token is covered), and any run's between (a token the command got then names it).
    const also = this.idsNowFirst().filter((x) => !namesAgent(r, [x]) && !(x === this.o.agentId && revokesAgent(r, this.o.token)));
    if (also.length > 0) this.revokingAlso = this.revokeIds(also, `${why}: an id it had, or an ancestor's, before a broker restart`);
    this.revoke(why);
  }

  /** Revokes these ids of this agent (revocation is open to any caller), one by one, saying so on stderr. */
  private async revokeIds(ids: readonly string[], reason: string): Promise<void> {
    let client: WritClient | undefined;
    try {
      client = await WritClient.connect(this.o.address());
      for (const id of ids) {
        await client.call('revoke', { target: { kind: 'agent', id }, reason });
        const which = id === this.o.agentId ? 'the id its token names' : id === this.agentId ? 'the id the agent has now' : 'the id it had in a broker run between';
        this.o.log(`writ: revoked ${id} too, ${which}`);
      }
    } catch (e) {
      const code = asWritError(e).code;
      this.o.log(`writ: could not revoke ${ids.join(', ')} (${code}): revoke ${ids.length > 1 ? 'them' : 'it'} with ${ids.map((id) => `\`writ revoke --agent ${id}\``).join(' and ')}`);
    } finally {
      client?.terminate();
    }
  }

  /** Every id it has had: the one it has now first, then the others as they came. */
  private idsNowFirst(): string[] {
    return [this.agentId, ...[...this.ids].filter((x) => x !== this.agentId)];
  }

  /** Revokes the ids this agent has had that the broker's revocations do not take yet (read from a subscription). */
  private async revokeUnrevoked(why: string): Promise<void> {
    let left: string[];
    let client: WritClient | undefined;
    try {
      client = await WritClient.connect(this.o.address());
      const { revocations: r } = await client.call('subscribe', { events: ['revocation'] });
      left = this.idsNowFirst().filter((x) => !(r && (namesAgent(r, [x]) || (x === this.o.agentId && revokesAgent(r, this.o.token)))));
    } catch {
      left = this.idsNowFirst();
    } finally {
      client?.terminate();
    }
    if (left.length > 0) await this.revokeIds(left, why);
  }

  /** Which of its ids (or its token's ancestors) a revocation named, for the message: the token's own when it is one. */
  private revokedName(r: RevocationSnapshot | RevocationEvent): string {
    const known = [this.o.agentId, ...this.ids, ...this.o.token.actors];
    return known.find((id) => namesAgent(r, [id])) ?? this.o.agentId;
  }

  private async reconnect(): Promise<void> {
    const backoff = this.o.backoffMs ?? RECONNECT_BACKOFF_MS;
    let said: string | undefined;
    for (let attempt = 0; !this.ended && !this.revoked; attempt++) {
      await new Promise((r) => setTimeout(r, backoff[Math.min(attempt, backoff.length - 1)]).unref());
      if (this.ended || this.revoked) return;
      let client: WritClient | undefined;
      try {
        const agent = { ...this.o.agent, ...(this.o.session ? { session: this.o.session } : {}), ...(this.o.parentSession ? { parentSession: this.o.parentSession } : {}) };
        const r = await WritClient.asAgent(agent, this.o.address());
        client = r.client;
        // The same agent only if the broker names the id this line has: a broker that restarted may answer
        // `resumed: true` with another id, when the command itself (its `writ token`, `writ mcp`: WRIT_SESSION in
        // its environment) said hello with the session first and the new broker took it for that hello.
        const same = r.hello.resumed && r.hello.agentId === this.agentId;
        if (same && this.agentId === this.o.agentId) {
          if (this.ended || this.revoked) return void client.terminate();
          this.attach(client);
          return this.o.log(`writ: reconnected to the broker as agent ${r.hello.agentId}`);
        }
        // The broker restarted (now or before an earlier drop), and sessions live in its memory: the agent is a new
        // one under the same name, holding the same session (a sub-agent under its parent as it is now; revoking it
        // or that parent stops the command). A revocation of the agent it was (the id its token names), made while
        // this was away or later (by its old id, from the audit log), is heard on a subscription: on every line
        // drawn from here on, since no other line names that id.
        // Any id it has had is heard, not only the one its token names: after a second restart the developer may
        // revoke the id `writ agents` showed in the run before.
        const fresh = client;
        const id = r.hello.agentId;
        this.ids.add(id);
        fresh.onRevocation((e) => {
          // One that takes the agent as it is now closes this line (4001) right after: the close does the rest.
          if (namesAgent(e, [id])) {
            this.heardOfNow = e;
            return;
          }
          if (this.covers(e)) this.stopFor(e, id, `the agent ${this.revokedName(e)} was revoked`);
        });
        const sub = await fresh.call('subscribe', { events: ['revocation'] });
        if (this.ended || this.revoked) return void fresh.terminate();
        // The id this broker knows (the `agent.stopped` report names it), and the line a later revocation of it closes.
        this.agentId = id;
        this.attach(fresh);
        if (sub.revocations && this.covers(sub.revocations)) return this.stopFor(sub.revocations, id, `the agent ${this.revokedName(sub.revocations)} was revoked while the broker was away`);
        if (same) return this.o.log(`writ: reconnected to the broker as agent ${r.hello.agentId} (agent ${this.o.agentId} before the broker restarted)`);
        const how = r.hello.resumed ? 'which restarted and took this agent\'s session when its command said hello with it' : 'which restarted and no longer knows this agent\'s session';
        return this.o.log(
          `writ: reconnected to the broker, ${how}: it is now agent ${r.hello.agentId} ` +
            `(\`writ agents --live\` lists it by name; revoking it, or the agent it was, stops the command)`,
        );
      } catch (e) {
        client?.terminate();
        const code = asWritError(e).code;
        if (REFUSALS.includes(code)) {
          // Refused because the agent holding the session was revoked: the ids the revocation list does not name
          // (the one its token names, after a restart in which its command took the session first) are revoked too,
          // so no token of this agent outlives the stop. Not for a block, which is no revocation.
          if (code !== 'WRIT_AGENT_BLOCKED') this.revokingAlso = this.revokeUnrevoked(`the broker refused the agent's session (${code})`);
          return this.revoke(`the broker refused the agent's session (${code})`);
        }
        if (code !== said) this.o.log(`writ: cannot reconnect to the broker yet (${code}); trying again`);
        said = code;
      }
    }
  }
}
