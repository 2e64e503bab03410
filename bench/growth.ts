// Cost of growth: the 16-client WebSocket mint figure and the broker's resident memory with 10, 100 and 1,000
// more agents connected (each a WebSocket that said hello and stays idle), and on top of an audit log of 1 M
// records; then `writ audit export` (jsonl, csv) and `writ audit verify` over that log, timed as a user runs them.
import { sign as edSign } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { freshEnv, writ } from '../test/helpers/broker';
import type { BrokerEnv } from '../test/helpers/broker';
import { AuditLog } from '../broker/audit/log';
import { loadKeySet } from '../broker/core/keys';
import { systemClock } from '../broker/core/clock';
import { resolvePaths } from '../broker/paths';
import type { AuditEntry } from '../broker/protocol';
import type { WritClient } from '../broker/sdk/client';
import { mintOverWs, rssMb, startBench } from './mint';
import type { Bench } from './mint';
import { SECONDS, merge } from './stats';
import type { LoadFigure } from './stats';

export interface GrowthRow {
  label: string;
  mint: LoadFigure;
  rssMb: number;
}

async function withIdleAgents(bench: Bench, n: number): Promise<WritClient[]> {
  const idle: WritClient[] = [];
  // 50 hellos in flight at a time: fast, and no burst the broker's accept queue has to absorb at once.
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => bench.broker.agent(`idle-${i + j}`)));
    idle.push(...batch.map((b) => b.client));
  }
  return idle;
}

/** What a mint record looks like in this broker's log: taken from the main run, so the big log is realistic. */
export function mintTemplate(lines: readonly string[]): AuditEntry {
  for (let i = lines.length - 1; i >= 0; i--) {
    const r = JSON.parse(lines[i]!) as Record<string, unknown>;
    if (r.event !== 'token.minted') continue;
    const { v: _v, seq: _s, ts: _t, session: _se, user: _u, prev: _p, ...entry } = r;
    return entry as AuditEntry;
  }
  throw new Error('no token.minted record to copy');
}

async function timed(what: string, args: string[], env: Record<string, string>): Promise<{ seconds: number; stdout: string; stderr: string }> {
  const t0 = performance.now();
  const r = await writ(args, env, { timeout: 600_000 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stderr}`);
  return { seconds, stdout: r.stdout, stderr: r.stderr };
}

export interface BigLogFigures {
  records: number;
  bytes: number;
  generateSeconds: number;
  exportJsonl: number;
  exportCsv: number;
  verify: number;
  verifyOutput: string;
}

/** The big log, written with the AuditLog class (fsync off) and signed with the key the broker will find. */
async function generateLog(template: AuditEntry, records: number): Promise<{ env: BrokerEnv; path: string; bytes: number; seconds: number }> {
  const env = freshEnv();
  const path = resolvePaths(env).auditPath;
  const { keys } = await loadKeySet({ ref: { service: env.WRIT_KEYCHAIN_SERVICE }, clock: systemClock, create: true });
  const t0 = performance.now();
  const log = await AuditLog.open({
    path,
    session: 'ses_benchgenerated',
    user: env.WRIT_USER,
    clock: systemClock,
    signer: { kid: keys.active.kid, sign: (data) => edSign(null, data, keys.active.privateKey) },
    fsync: false,
    checkpointIntervalMs: 0,
  });
  const jti = String(template.jti ?? 'jti');
  for (let i = 0; i < records; ) {
    const batch: Promise<unknown>[] = [];
    for (const end = Math.min(records, i + 10_000); i < end; i++) batch.push(log.append({ ...template, jti: `${jti.slice(0, 8)}${i}` }));
    await Promise.all(batch);
  }
  await log.close();
  // One flush at the end, so the broker's first fdatasync does not pay for writing back 1 GB of page cache.
  const fh = await open(path, 'r+');
  await fh.datasync();
  await fh.close();
  return { env, path, bytes: statSync(path).size, seconds: (performance.now() - t0) / 1000 };
}

interface Condition {
  label: string;
  bench: Bench;
  idle: WritClient[];
  slices: LoadFigure[];
}

/**
 * Five brokers side by side: a fresh one (the baseline), three with 10, 100 and 1,000 more agents connected, and one
 * started on the big log. The 16-client mint figure is taken from each in `rounds` interleaved slices, so load
 * drifting on a shared machine falls on every condition alike.
 */
export async function growthFigures(template: AuditEntry, rounds: number, records = Number(process.env.WRIT_BENCH_AUDIT_RECORDS ?? 1_000_000)): Promise<{ rows: GrowthRow[]; big: BigLogFigures }> {
  const gen = await generateLog(template, records);
  const conditions: Condition[] = [];
  const stopAll = async () => {
    for (const c of conditions.splice(0)) {
      await Promise.all(c.idle.map((i) => i.close()));
      await c.bench.stop();
    }
  };
  try {
    const add = async (label: string, idleAgents: number, env?: BrokerEnv) => {
      // The idle agents all connect from this one process: the broker's per-process cap (128) is raised for them.
      const c: Condition = { label, bench: await startBench(16, env ?? freshEnv({ WRIT_MAX_CONNECTIONS_PER_PROCESS: '2048' })), idle: [], slices: [] };
      conditions.push(c);
      c.idle = await withIdleAgents(c.bench, idleAgents);
    };
    await add('fresh broker, 16 agents', 0);
    for (const n of [10, 100, 1000]) await add(`${n.toLocaleString('en')} more agents connected`, n);
    await add(`audit log of ${records.toLocaleString('en')} records`, 0, gen.env);
    for (let r = 0; r < rounds; r++) for (const c of conditions) c.slices.push(await mintOverWs(c.bench, 16, SECONDS / rounds));
    const rows = conditions.map((c) => ({ label: c.label, mint: merge(c.slices), rssMb: rssMb(c.bench.broker.child.pid!) }));
    await stopAll();
    const out = join(dirname(gen.env.WRIT_STATE_DIR), 'export');
    const exportJsonl = (await timed('writ audit export --format jsonl', ['audit', 'export', '--format', 'jsonl', '--file', gen.path, '--out', out], gen.env)).seconds;
    rmSync(out, { force: true });
    const exportCsv = (await timed('writ audit export --format csv', ['audit', 'export', '--format', 'csv', '--file', gen.path, '--out', out], gen.env)).seconds;
    rmSync(out, { force: true });
    const v = await timed('writ audit verify', ['audit', 'verify', '--file', gen.path], gen.env);
    return { rows, big: { records, bytes: gen.bytes, generateSeconds: gen.seconds, exportJsonl, exportCsv, verify: v.seconds, verifyOutput: v.stdout.trim() } };
  } finally {
    await stopAll();
    rmSync(dirname(gen.env.WRIT_STATE_DIR), { recursive: true, force: true });
  }
}
