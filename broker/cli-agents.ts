// `writ agents`: the inventory of agent identities (across runs), this run's live agents, export for a team's
// non-human-identity inventory, and block / unblock. Unblocking gives back, so over a socket it is refused:
// it is for the editor (the approval channel), or for this command while the broker is stopped.
import { printable } from './printable';
import { parseArgs } from 'node:util';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { WritError } from './errors';
import type { InventoryView } from './protocol';
import { resolvePaths } from './paths';
import { systemClock } from './core/clock';
import { Inventory, inventoryCsv, statusOf } from './core/inventory';
import { WritClient, readDiscovery } from './sdk/client';

export const AGENTS_HELP = `Usage: writ agents [--json] [--live]
       writ agents export [--format json|csv] [--out PATH]
       writ agents block IDENTITY [--reason TEXT]
       writ agents unblock IDENTITY

Lists every agent identity the broker has seen, across runs: its owner, status (active, idle, stopped,
blocked), when it was first and last seen, its processes and the scopes it has been granted. --live lists
this run's agents instead (the ids \`writ revoke --agent\` takes). A blocked identity's requests are refused
without a prompt until it is unblocked, across restarts. Unblocking is done from the editor, or here while
the broker is stopped.`;

const out = (s: string) => process.stdout.write(s + '\n');
const err = (s: string) => process.stderr.write(s + '\n');

/** A table for a terminal; its cells hold agent-supplied names, shown with control characters escaped. */
function table(head: string[], cells: string[][]): void {
  const rows = cells.map((r) => r.map(printable));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) out(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

function running(): boolean {
  try {
    process.kill(readDiscovery().pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The inventory from the running broker, else straight from the state folder (status from the file alone). */
async function inventory(): Promise<InventoryView[]> {
  if (running()) {
    const client = await WritClient.connect();
    try {
      return (await client.call('inventory.list', {})).agents;
    } finally {
      await client.close();
    }
  }
  const inv = Inventory.load(join(resolvePaths().stateDir, 'agents.json'), systemClock);
  return inv.list().map((e) => ({ ...e, status: statusOf(e, { connected: false, tokens: 0 }), tokensNow: 0, live: [] }));
}

export async function cmdAgents(args: string[], usage: (message: string) => Error): Promise<number> {
  const sub = args[0] && !args[0].startsWith('-') ? args[0] : undefined;
  const rest = sub ? args.slice(1) : args;
  const parse = <T extends NonNullable<Parameters<typeof parseArgs>[0]>['options']>(options: T, positionals = false) => {
    try {
      return parseArgs({ args: rest, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: positionals, strict: true });
    } catch (e) {
      throw usage((e as Error).message);
    }
  };

  if (sub === undefined) {
    const { values } = parse({ json: { type: 'boolean' }, live: { type: 'boolean' } });
    if (values.help) return (err(AGENTS_HELP), 0);
    if (values.live) {
      const client = await WritClient.connect();
      try {
        const { agents } = await client.call('agents.list', {});
        if (values.json) return (out(JSON.stringify(agents, null, 2)), 0);
        if (agents.length === 0) return (out('no agents in this run'), 0);
        table(
          ['ID', 'NAME', 'KIND', 'STATE', 'GRANTS', 'TOKENS', 'PARENT'],
          agents.map((a) => [a.id, a.name, a.kind, a.revoked ? 'revoked' : a.connected ? 'connected' : 'idle', String(a.grants), String(a.liveTokens), a.parents[0] ?? '']),
        );
      } finally {
        await client.close();
      }
      return 0;
    }
    const agents = await inventory();
    if (values.json) return (out(JSON.stringify(agents, null, 2)), 0);
    if (agents.length === 0) return (out('no agents seen yet'), 0);
    table(
      ['IDENTITY', 'NAME', 'KIND', 'STATUS', 'LAST SEEN', 'TOKENS', 'LIVE'],
      agents.map((a) => [a.id, a.name, a.kind, a.status, a.lastSeen, String(a.tokensNow), a.live.join(' ')]),
    );
    return 0;
  }

  if (sub === 'export') {
    const { values } = parse({ format: { type: 'string' }, out: { type: 'string' } });
    if (values.help) return (err(AGENTS_HELP), 0);
    const format = values.format ?? 'json';
    if (format !== 'json' && format !== 'csv') throw usage('--format is json or csv');
    const agents = await inventory();
    const text = format === 'csv' ? inventoryCsv(agents) : JSON.stringify({ exportedAt: new Date().toISOString(), agents }, null, 2) + '\n';
    if (!values.out) return (process.stdout.write(text), 0);
    await new Promise<void>((resolve, reject) => {
      const s = createWriteStream(values.out!, { mode: 0o600 });
      s.on('error', reject);
      s.end(text, () => resolve());
    });
    err(`exported ${agents.length} agent identities as ${format} to ${values.out}`);
    return 0;
  }

  if (sub === 'block' || sub === 'unblock') {
    const { values, positionals } = parse({ reason: { type: 'string' } }, true);
    if (values.help) return (err(AGENTS_HELP), 0);
    const identity = positionals[0];
    if (!identity || positionals.length !== 1) throw usage(`writ agents ${sub} IDENTITY (see \`writ agents\`)`);
    if (sub === 'block') {
      const client = await WritClient.connect();
      try {
        const v = await client.call('agents.block', { identity, ...(values.reason ? { reason: values.reason } : {}) });
        err(`blocked ${printable(v.name)} (${v.id}): its requests are refused until it is unblocked`);
      } finally {
        await client.close();
      }
      return 0;
    }
    if (running()) {
      throw new WritError('WRIT_BROKER_RUNNING', 'unblocking gives an agent back its access: do it from the Writ view in the editor, or stop the broker and run this again');
    }
    return unblockOffline(identity);
  }
  throw usage(`unknown agents command ${JSON.stringify(sub)}`);
}

/**
 * With the broker stopped: unblock in the inventory file and record it in the audit log, signed like any record,
 * holding the state folder's lock throughout (a broker on another runtime folder would otherwise rewrite the file).
 */
async function unblockOffline(identity: string): Promise<number> {
  const paths = resolvePaths();
  const { withStateLock } = await import('./statelock');
  return withStateLock(paths.stateDir, 'agents unblock', async (lock) => {
    const inv = Inventory.load(join(paths.stateDir, 'agents.json'), systemClock);
    const e = await inv.unblock(identity);
    const { loadKeySet } = await import('./core/keys');
    const { appendOffline } = await import('./audit/offline');
    const { defaultUser } = await import('./root');
    const service = process.env.WRIT_KEYCHAIN_SERVICE;
    const { keys } = await loadKeySet({ ref: service ? { service } : {}, clock: systemClock, create: false });
    await appendOffline(lock, { event: 'agent.unblocked', outcome: 'success', detail: { identity, by: 'cli' } }, defaultUser(process.env), keys.active);
    err(`unblocked ${printable(e.name)} (${e.id})`);
    return 0;
  });
}
