// Revocation: 16 verifiers in separate processes, each subscribed to the broker and holding a verified token
// that it checks every millisecond; the broker is asked to revoke the token (token kind, over the WebSocket).
// Measured per kill, on the shared wall clock (performance.timeOrigin + performance.now() in every process):
// from the revoke call's start until the last of the 16 refuses. Also at the parent, on receipt of the 16th
// "refused" message (adds the IPC hop). And every acceptance stamped after the revoke call had returned, counting
// a probe each verifier answers right after the return (must be 0).
//
// `tsx bench/revocation.ts [BASELINE]` (under scripts/with-keyring.sh, after `node esbuild.mjs`) measures only
// this, and with a git revision also that revision's broker and verifier (built into a temporary folder), kills
// alternating between the two in one run so the load of a shared machine falls on both alike: before and after.
// WRIT_BENCH_VERIFIERS (default 16) and WRIT_BENCH_VERIFIER_POLL_MS (default 1; 0 checks only on each event and
// the probe) are for finding where the time goes. Measured on this 2-core machine, idle, polling off: 1 verifier
// p50 1.1 ms, 4 → 2.8 ms, 16 → 7.9 ms, and polling at 1 ms changed nothing: the figure grows with the number of
// processes that must each wake and run on two cores, not with the broker's push.
import { execFileSync, fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { percentiles, wallMs } from './stats';
import { AUDIENCE, SCOPE } from './mint';
import type { Bench } from './mint';
import { BrokerProcess, ROOT, freshEnv, requireKeyring } from '../test/helpers/broker';
import type { WritClient } from '../broker/sdk/client';

const CHILD = fileURLToPath(new URL('./verifier-child.mjs', import.meta.url));

type Msg = { type: 'ready' } | { type: 'held'; k: number } | { type: 'refused'; k: number; at: number; lastAcceptAt: number } | { type: 'probe'; k: number; accepted: boolean; at: number };

export interface RevocationFigures {
  verifiers: number;
  kills: number;
  /** ms from the revoke call's start until all verifiers refuse (their clocks). */
  allRefuse: { p50: number; p99: number; max: number };
  /** ms from the revoke call's start until the parent has all "refused" messages. */
  atParent: { p50: number; p99: number; max: number };
  /** ms the revoke call took (durable: revocation list fsynced and audited before it returns). */
  call: { p50: number; p99: number; max: number };
  acceptedAfterReturn: number;
  /** The latest of those acceptances, ms after the return (0 when none). */
  lateMs: number;
}

/** Messages from all children, awaited by predicate. */
class Children {
  readonly procs: ChildProcess[] = [];
  private waiters: { want: (m: Msg, i: number) => boolean; left: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private stopping = false;
  constructor(n: number, args: string[]) {
    for (let i = 0; i < n; i++) {
      const c = fork(CHILD, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      c.on('message', (m) => this.deliver(m as Msg, i));
      c.on('exit', (code) => {
        if (code !== 0 && !this.stopping) for (const w of this.waiters.splice(0)) w.reject(new Error(`verifier child ${i} exited ${code}`));
      });
      this.procs.push(c);
    }
  }
  onMessage?: (m: Msg, i: number) => void;
  private deliver(m: Msg, i: number): void {
    this.onMessage?.(m, i);
    for (const w of this.waiters) if (w.left > 0 && w.want(m, i) && --w.left === 0) w.resolve();
    this.waiters = this.waiters.filter((w) => w.left > 0);
  }
  /** Resolves once `count` messages matching `want` have arrived (register before sending). */
  expect(count: number, want: (m: Msg, i: number) => boolean, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('verifier children did not answer in time')), timeoutMs);
      this.waiters.push({ want, left: count, resolve: () => (clearTimeout(t), resolve()), reject: (e) => (clearTimeout(t), reject(e)) });
    });
  }
  send(m: unknown): void {
    for (const c of this.procs) c.send(m as never);
  }
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.procs.map((c) => new Promise<void>((r) => (c.exitCode !== null ? r() : (c.once('exit', () => r()), c.send({ type: 'exit' }))))));
  }
}

/** One kill's figures (ms from the revoke call's start) and the acceptances seen after the call returned. */
interface KillSample {
  allRefuse: number;
  atParent: number;
  call: number;
  late: number[];
}

/** `verifiers` verifier processes subscribed to one broker, and the agent that mints and revokes. */
class Rig {
  private readonly children: Children;
  private k = 0;
  constructor(
    private readonly client: WritClient,
    private readonly grantId: string,
    httpUrl: string,
    readonly verifiers: number,
    verifyModule?: string,
  ) {
    this.children = new Children(verifiers, [httpUrl, AUDIENCE, SCOPE, ...(verifyModule ? [verifyModule] : [])]);
  }

  ready(): Promise<void> {
    return this.children.expect(this.verifiers, (m) => m.type === 'ready', 120_000);
  }

  async kill(): Promise<KillSample> {
    const k = this.k++;
    const { children, verifiers } = this;
    const { token, jti } = await this.client.call('token.mint', { grantId: this.grantId });
    const held = children.expect(verifiers, (m) => m.type === 'held' && m.k === k);
    children.send({ type: 'token', k, token });
    await held;
    await new Promise((r) => setTimeout(r, 5)); // every verifier is now checking it every millisecond

    const refusedAt: number[] = [];
    const acceptedAt: number[] = []; // the last acceptance before each refusal, and each probe that accepted
    children.onMessage = (m) => {
      if (m.type === 'ready' || m.k !== k) return;
      if (m.type === 'refused') {
        refusedAt.push(m.at);
        acceptedAt.push(m.lastAcceptAt);
      }
      if (m.type === 'probe' && m.accepted) acceptedAt.push(m.at);
    };
    const refused = children.expect(verifiers, (m) => m.type === 'refused' && m.k === k).then(() => wallMs());
    const probed = children.expect(verifiers, (m) => m.type === 'probe' && m.k === k);
    const start = wallMs();
    await this.client.call('revoke', { target: { kind: 'token', jti }, reason: 'bench' });
    const returned = wallMs();
    children.send({ type: 'probe', k });
    const [lastAt] = await Promise.all([refused, probed]);
    children.onMessage = undefined;
    return {
      allRefuse: Math.max(...refusedAt) - start,
      atParent: lastAt - start,
      call: returned - start,
      late: acceptedAt.filter((t) => t > returned).map((t) => t - returned),
    };
  }

  stop(): Promise<void> {
    return this.children.stop();
  }
}

function figures(verifiers: number, samples: readonly KillSample[]): RevocationFigures {
  const late = samples.flatMap((s) => s.late);
  return {
    verifiers,
    kills: samples.length,
    allRefuse: percentiles(samples.map((s) => s.allRefuse)),
    atParent: percentiles(samples.map((s) => s.atParent)),
    call: percentiles(samples.map((s) => s.call)),
    acceptedAfterReturn: late.length,
    lateMs: Math.max(0, ...late),
  };
}

export async function revocationFigures(bench: Bench, verifiers = 16, kills = 20): Promise<RevocationFigures> {
  const { client, grantId } = bench.agents[0]!;
  const rig = new Rig(client, grantId, bench.broker.discovery.httpUrl, verifiers);
  const samples: KillSample[] = [];
  try {
    await rig.ready();
    for (let k = 0; k < kills; k++) samples.push(await rig.kill());
  } finally {
    await rig.stop();
  }
  return figures(verifiers, samples);
}

// ---------------------------------------------------------------------------------------------
// Before and after: this checkout against a git revision, in one run
// ---------------------------------------------------------------------------------------------

/** Builds `rev`'s broker and verifier into a temporary folder (this checkout's node_modules, linked). */
function buildRevision(rev: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-base-'));
  execFileSync('bash', ['-c', `git -C "$1" archive "$2" | tar -x -C "$3"`, 'archive', ROOT, rev, dir], { stdio: 'inherit' });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  execFileSync(process.execPath, ['esbuild.mjs'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

async function startRig(label: string, dist: string, verifiers: number): Promise<{ label: string; rig: Rig; broker: BrokerProcess; samples: KillSample[] }> {
  const broker = await BrokerProcess.start(freshEnv(), [], [], join(dist, 'writ.mjs'));
  broker.decide = () => ({ decision: 'approve', mode: 'session' });
  const { client } = await broker.agent(`bench-${label}`);
  const r = await client.call('task.request', { task: 'bench', scopes: [SCOPE], audience: AUDIENCE });
  const rig = new Rig(client, r.grant.id, broker.discovery.httpUrl, verifiers, join(dist, 'verify.mjs'));
  await rig.ready();
  return { label, rig, broker, samples: [] };
}

async function main(): Promise<void> {
  requireKeyring();
  const baseline = process.argv[2];
  const kills = Number(process.env.WRIT_BENCH_KILLS ?? 30);
  const verifiers = Number(process.env.WRIT_BENCH_VERIFIERS ?? 16);
  const baseDir = baseline ? buildRevision(baseline) : undefined;
  const sides: Awaited<ReturnType<typeof startRig>>[] = [];
  try {
    if (baseDir) sides.push(await startRig(`before (${baseline})`, join(baseDir, 'dist'), verifiers));
    sides.push(await startRig('after (this checkout)', join(ROOT, 'dist'), verifiers));
    for (let k = 0; k < kills; k++) for (const s of sides) s.samples.push(await s.rig.kill());
  } finally {
    for (const s of sides) {
      await s.rig.stop();
      await s.broker.stop();
    }
    if (baseDir) rmSync(baseDir, { recursive: true, force: true });
  }
  const row = (name: string, f: { p50: number; p99: number; max: number }) => `  ${name.padEnd(44)} ${f.p50.toFixed(2).padStart(9)} ${f.p99.toFixed(2).padStart(9)} ${f.max.toFixed(2).padStart(9)}`;
  for (const s of sides) {
    const f = figures(verifiers, s.samples);
    console.log(`${s.label}: ${f.verifiers} verifiers, ${f.kills} kills (interleaved)`);
    console.log(`  ${'ms'.padEnd(44)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'max'.padStart(9)}`);
    console.log(row('revoke call (durable)', f.call));
    console.log(row(`call start → all ${f.verifiers} refuse`, f.allRefuse));
    console.log(row(`call start → all "refused" at the caller`, f.atParent));
    console.log(`  tokens accepted after the call returned: ${f.acceptedAfterReturn} (must be 0)`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
