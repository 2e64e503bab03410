// Revocation: 16 verifiers in separate processes (bench/verifier-child.mjs on dist/verify.mjs), each subscribed to
// the broker and holding a verified token; the broker is asked to revoke the token (token kind, over the WebSocket).
// Measured per kill, on one clock shared by every process (CLOCK_MONOTONIC, bench/stats.ts sharedMs):
// - refused at every check: from the revoke call's start until the broker has written the revocation to its
//   journal (broker/core/journal.ts). Every verifier reads the journal at each check, so from then on each of
//   them refuses the token at its next check, whether or not its process has been woken by the push yet
//   (test/integration/verify.test.ts, 'the revocation journal', holds a verifier's process busy to show it).
//   The moment is bounded from above by the earlier of: a 17th verifier, in this process, checking the token as
//   soon as the journal file changes (inotify wakes it); and the first of the 16 to apply the push, which the
//   broker writes only after the line. Both are upper bounds: the line was there before either.
// - all apply the push: from the revoke call's start until the last of the 16 has applied the pushed event. A
//   verifier stamps it when the library calls its onRevocation listener (after applying the event, before
//   acknowledging it), which checks the token there and then, as a resource that is told would; the stamps are
//   collected after the return (no IPC while verifiers are still being told).
// - accepted after the return (must be 0): verifiers that accepted the token, or would have, after the revoke call
//   returned: each checks the token once more right after the return (a probe), and a verifier whose refusal is
//   stamped after the return counts too, checked or not (it applied the revocation late).
// The verifiers do not poll by default: sixteen processes waking every millisecond are load on two cores that a
// resource server does not add. WRIT_BENCH_VERIFIER_POLL_MS=1 makes each also check every millisecond (any
// acceptance after the return is then counted as well).
//
// `tsx bench/revocation.ts [BASELINE]` (under scripts/with-keyring.sh, after `node esbuild.mjs`) measures only
// this, and with a git revision also that revision's broker and verifier (built into a temporary folder), kills
// alternating between the two in one run so the load of a shared machine falls on both alike: before and after.
// WRIT_BENCH_VERIFIERS (default 16) and WRIT_BENCH_VERIFIER_POLL_MS (default 0) are for finding where the time goes.
// Where it goes (stamps in every process on CLOCK_MONOTONIC; this machine shared and loaded): call start → broker
// has the revoke ~0.5 ms, → first frame written ~0.05 ms; then each verifier spends ~0.75 ms of CPU per revocation
// (schedstat of its main thread: waking, ws receive, parse, apply, listener, the ack's write), so sixteen of them
// queue on two cores, and each frame the broker writes wakes one that may preempt the broker's loop itself.
// The floor, measured beside it in the same run (FloorRig, bench/fanout-child.mjs): a bare `ws` frame to 16 bare
// `ws` clients in their own Node processes, no Writ code. Those clients alone spend ~450-650 µs of CPU per frame
// here (schedstat), and with raw TCP and newline-delimited JSON instead of `ws` still ~350-450 µs: this machine is a
// paravirtualized guest where each context switch is costly (perf: pvm_irq_enable ~20% of a client's samples).
// So 16 woken processes on two cores take ~3.5-5 ms at p50 before any verifier does anything, and their p99 swings
// with the host (20-40 ms seen); Writ's figure is printed with the floor's and their ratio.
import { execFileSync, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, symlinkSync, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { percentiles, sharedMs } from './stats';
import { AUDIENCE, SCOPE } from './mint';
import type { Bench } from './mint';
import { BrokerProcess, ROOT, freshEnv, requireKeyring } from '../test/helpers/broker';
import type { WritClient } from '../broker/sdk/client';
import type { Verifier } from '../broker/sdk/verify';

const CHILD = fileURLToPath(new URL('./verifier-child.mjs', import.meta.url));
const FANOUT_CHILD = fileURLToPath(new URL('./fanout-child.mjs', import.meta.url));

type Probe = { type: 'probe'; k: number; accepted: boolean; at: number; refusedAt: number; lastAcceptAt: number; journal?: boolean };
type Msg = { type: 'ready'; journal?: boolean } | { type: 'held'; k: number } | { type: 'refused'; k: number; at: number } | Probe | { type: 'stamps'; stamps: Record<number, number> };

export interface RevocationFigures {
  verifiers: number;
  kills: number;
  /**
   * ms from the revoke call's start until a verifier refuses the token at every check: the first check that
   * refuses, in a 17th verifier (in the benchmark's process) that checks it without pause while the call runs.
   * From then on every verifier on this machine refuses it at its next check: each reads the broker's revocation
   * journal at each check, before its push has woken it (test/integration/verify.test.ts, 'the revocation journal').
   */
  journal: { p50: number; p99: number; max: number };
  /** ms from the revoke call's start until all verifiers have applied the push (their clocks). */
  allRefuse: { p50: number; p99: number; max: number };
  /** ms from the revoke call's start until the first verifier refuses. */
  firstRefuse: { p50: number; p99: number; max: number };
  /** ms the revoke call took (durable: revocation list fsynced and audited before it returns). */
  call: { p50: number; p99: number; max: number };
  /** Verifiers (over all kills) that accepted the token, or would have, after the revoke call returned. */
  acceptedAfterReturn: number;
  /** The latest of those, ms after the return (0 when none). */
  lateMs: number;
  /**
   * The floor, measured in the same run, kills interleaved with Writ's: one bare WebSocket frame to as many Node
   * processes (bench/fanout-child.mjs, no Writ code), each receiving, parsing and acknowledging it.
   */
  floor: { allReceive: Pct; firstReceive: Pct };
}

type Pct = { p50: number; p99: number; max: number };

/** Messages from all children, awaited by predicate. */
class Children {
  readonly procs: ChildProcess[] = [];
  private waiters: { want: (m: Msg, i: number) => boolean; left: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private stopping = false;
  /** `file`: a verifier (bench/verifier-child.mjs) or the floor's bare client (bench/fanout-child.mjs). */
  constructor(n: number, args: string[], file = CHILD) {
    for (let i = 0; i < n; i++) {
      const c = fork(file, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      c.on('message', (m) => this.deliver(m as Msg, i));
      c.on('exit', (code) => {
        if (code !== 0 && !this.stopping) for (const w of this.waiters.splice(0)) w.reject(new Error(`child ${i} (${file}) exited ${code}`));
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

/** One kill's figures (ms from the revoke call's start) and, per verifier late, how late (ms after the return). */
interface KillSample {
  /** From the call's start until the first check that refuses, in a verifier checking without pause. */
  journal: number;
  allRefuse: number;
  firstRefuse: number;
  call: number;
  late: number[];
}

/** `verifiers` verifier processes subscribed to one broker, and the agent that mints and revokes. */
class Rig {
  private readonly children: Children;
  private k = 0;
  /** The 17th verifier, in this process: it checks the token each time the broker's journal changes. */
  private checker: Verifier | undefined;
  private watcher: FSWatcher | undefined;
  /** The token the checker holds, and when it first refused it (shared clock). */
  private checking: string | undefined;
  private journalAt: number | undefined;
  constructor(
    private readonly client: WritClient,
    private readonly grantId: string,
    private readonly httpUrl: string,
    private readonly runtimeDir: string,
    readonly verifiers: number,
    private readonly verifyModule = join(ROOT, 'dist', 'verify.mjs'),
  ) {
    this.children = new Children(verifiers, [httpUrl, AUDIENCE, SCOPE, verifyModule]);
  }

  async ready(): Promise<void> {
    // Listened for first (the children started with the rig), then the checker is made meanwhile.
    const journal: (boolean | undefined)[] = [];
    this.children.onMessage = (m) => {
      if (m.type === 'ready') journal.push(m.journal);
    };
    const childrenReady = this.children.expect(this.verifiers, (m) => m.type === 'ready', 120_000);
    childrenReady.catch(() => undefined); // awaited below; a checker that fails first is the error then
    const { createVerifier } = (await import(pathToFileURL(this.verifyModule).href)) as typeof import('../broker/sdk/verify');
    this.checker = createVerifier({ broker: this.httpUrl, audience: AUDIENCE, reportUse: false });
    if (!(await this.checker.ready())) throw new Error('the checking verifier did not reach the broker');
    // A broker before the journal has none: the figure is then not taken.
    const name = readdirSync(this.runtimeDir).find((n) => /^revocations-[0-9]+-[0-9]+\.journal$/.test(n));
    if (name !== undefined) {
      const checker = this.checker;
      this.watcher = watch(join(this.runtimeDir, name), () => {
        const token = this.checking;
        if (token === undefined || this.journalAt !== undefined) return;
        const at = sharedMs();
        checker.verify(token, { scope: SCOPE }).then(
          () => undefined,
          (e: { code?: string }) => {
            if (e?.code === 'WRIT_TOKEN_REVOKED' && this.journalAt === undefined) this.journalAt = at;
          },
        );
      });
    }
    await childrenReady;
    this.children.onMessage = undefined;
    // The figure says every verifier refuses at its next check: only if every one reads the journal.
    if (this.watcher !== undefined) this.readingJournal([this.checker.status().journal, ...journal]);
  }

  private readingJournal(said: readonly (boolean | undefined)[]): void {
    const not = said.filter((j) => j !== true).length;
    if (not > 0) throw new Error(`${not} of ${said.length} verifiers do not read the broker's revocation journal`);
  }

  async kill(): Promise<KillSample> {
    const k = this.k++;
    const { children, verifiers } = this;
    const { token, jti } = await this.client.call('token.mint', { grantId: this.grantId });
    const held = children.expect(verifiers, (m) => m.type === 'held' && m.k === k);
    children.send({ type: 'token', k, token });
    await held;
    await this.checker!.verify(token, { scope: SCOPE });
    this.checking = token;
    await new Promise((r) => setTimeout(r, 5)); // every verifier is now idle, holding it

    const probes = new Map<number, Probe>();
    const laterRefusals = new Map<number, number>(); // from verifiers whose probe accepted the token
    let heard: (() => void) | undefined;
    children.onMessage = (m, i) => {
      if (m.type === 'ready' || m.type === 'stamps' || m.k !== k) return;
      if (m.type === 'probe') probes.set(i, m);
      if (m.type === 'refused') laterRefusals.set(i, m.at);
      heard?.();
    };
    const probed = children.expect(verifiers, (m) => m.type === 'probe' && m.k === k);
    const start = sharedMs();
    const call = this.client.call('revoke', { target: { kind: 'token', jti }, reason: 'bench' });
    await call;
    const returned = sharedMs();
    // Its change was heard in this process no later than the push it comes before (a moment's wait at most).
    for (const until = sharedMs() + 1000; this.watcher !== undefined && this.journalAt === undefined && sharedMs() < until; ) await new Promise((r) => setImmediate(r));
    const heardAt = this.journalAt ?? Number.POSITIVE_INFINITY;
    this.checking = this.journalAt = undefined;
    children.send({ type: 'probe', k });
    await probed;
    // A verifier whose probe accepted the token (counted below) still refuses once the event reaches it.
    const refusedAt = (i: number) => (probes.get(i)!.refusedAt >= 0 ? probes.get(i)!.refusedAt : laterRefusals.get(i));
    const unrefused = () => [...probes.keys()].some((i) => refusedAt(i) === undefined);
    if (unrefused()) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('a verifier never refused the revoked token')), 30_000);
        heard = () => unrefused() || (clearTimeout(t), resolve());
      });
    }
    children.onMessage = undefined;
    if (this.watcher !== undefined) this.readingJournal([this.checker!.status().journal, ...[...probes.values()].map((p) => p.journal)]);
    const refusals = [...probes.keys()].map((i) => refusedAt(i)!);
    const late = [...probes.entries()].flatMap(([i, p]) => {
      const latest = Math.max(p.accepted ? p.at : -1, p.lastAcceptAt, refusedAt(i)!);
      return latest > returned ? [latest - returned] : [];
    });
    // The line is written before any frame of the push is (broker/root.ts): the first verifier to apply the push
    // had it readable by then, so the earlier of the two bounds the moment every check began to refuse.
    const firstPush = Math.min(...refusals);
    const journal = this.watcher === undefined ? Number.NaN : Math.min(heardAt, firstPush);
    return { journal: journal - start, allRefuse: Math.max(...refusals) - start, firstRefuse: Math.min(...refusals) - start, call: returned - start, late };
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    await this.checker?.close();
    await this.children.stop();
  }
}

/**
 * The least any push of a revocation to N processes costs on this machine: a bare `ws` server in this process writes
 * one frame of a revocation's size to N bare `ws` clients, each in its own Node process, which stamp its arrival,
 * parse it and acknowledge it. No Writ code on either side. Per round: from the first write until the last (and the
 * first) client has the frame, on the shared clock; the stamps are collected after every ack is in.
 */
class FloorRig {
  private seq = 0;
  private constructor(
    private readonly wss: WebSocketServer,
    private readonly children: Children,
    /** The server's side of each client's connection, as they arrive. */
    private readonly sockets: WebSocket[],
  ) {}

  static async start(n: number): Promise<FloorRig> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await once(wss, 'listening');
    const sockets: WebSocket[] = [];
    wss.on('connection', (ws) => sockets.push(ws));
    const children = new Children(n, [`ws://127.0.0.1:${(wss.address() as { port: number }).port}`], FANOUT_CHILD);
    await children.expect(n, (m) => m.type === 'ready', 120_000);
    while (sockets.length < n) await new Promise((r) => setTimeout(r, 5));
    return new FloorRig(wss, children, sockets);
  }

  async round(): Promise<{ all: number; first: number }> {
    const seq = this.seq++;
    const frame = JSON.stringify({ jsonrpc: '2.0', method: 'revocation', params: { seq, kind: 'token', jti: randomBytes(16).toString('base64url'), exp: Math.floor(Date.now() / 1000) + 300 } });
    const acked = Promise.all(this.sockets.map((ws) => once(ws, 'message')));
    await new Promise((r) => setTimeout(r, 5)); // as for Writ's kills: every client idle
    const start = sharedMs();
    for (const ws of this.sockets) ws.send(frame);
    await acked;
    // The stamps, collected once every ack is in (no IPC while frames are in flight).
    const stamps: number[] = [];
    this.children.onMessage = (m) => {
      if (m.type === 'stamps' && m.stamps[seq] !== undefined) stamps.push(m.stamps[seq]);
    };
    const told = this.children.expect(this.sockets.length, (m) => m.type === 'stamps');
    this.children.send({ type: 'stamps' });
    await told;
    this.children.onMessage = undefined;
    if (stamps.length !== this.sockets.length) throw new Error('a floor client did not stamp the frame');
    return { all: Math.max(...stamps) - start, first: Math.min(...stamps) - start };
  }

  async stop(): Promise<void> {
    await this.children.stop();
    await new Promise((r) => this.wss.close(r));
  }
}

function figures(verifiers: number, samples: readonly KillSample[], floor: readonly { all: number; first: number }[]): RevocationFigures {
  const late = samples.flatMap((s) => s.late);
  return {
    verifiers,
    kills: samples.length,
    journal: percentiles(samples.map((s) => s.journal)),
    allRefuse: percentiles(samples.map((s) => s.allRefuse)),
    firstRefuse: percentiles(samples.map((s) => s.firstRefuse)),
    call: percentiles(samples.map((s) => s.call)),
    acceptedAfterReturn: late.length,
    lateMs: Math.max(0, ...late),
    floor: floorFigures(floor),
  };
}

function floorFigures(rounds: readonly { all: number; first: number }[]): RevocationFigures['floor'] {
  return { allReceive: percentiles(rounds.map((f) => f.all)), firstReceive: percentiles(rounds.map((f) => f.first)) };
}

export async function revocationFigures(bench: Bench, verifiers = 16, kills = 20): Promise<RevocationFigures> {
  const { client, grantId } = bench.agents[0]!;
  const rig = new Rig(client, grantId, bench.broker.discovery.httpUrl, bench.broker.env.WRIT_RUNTIME_DIR, verifiers);
  let floorRig: FloorRig | undefined;
  const samples: KillSample[] = [];
  const floor: { all: number; first: number }[] = [];
  try {
    await rig.ready();
    floorRig = await FloorRig.start(verifiers);
    // Interleaved, so the load of a shared machine falls on both alike.
    for (let k = 0; k < kills; k++) {
      samples.push(await rig.kill());
      floor.push(await floorRig.round());
    }
  } finally {
    await rig.stop();
    await floorRig?.stop();
  }
  return figures(verifiers, samples, floor);
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
  const rig = new Rig(client, r.grant.id, broker.discovery.httpUrl, broker.env.WRIT_RUNTIME_DIR, verifiers, join(dist, 'verify.mjs'));
  try {
    await rig.ready();
  } catch (e) {
    // Not yet among the sides the caller stops: its verifiers and broker go here.
    await rig.stop();
    await broker.stop();
    throw e;
  }
  return { label, rig, broker, samples: [] };
}

async function main(): Promise<void> {
  requireKeyring();
  const baseline = process.argv[2];
  const kills = Number(process.env.WRIT_BENCH_KILLS ?? 100);
  const verifiers = Number(process.env.WRIT_BENCH_VERIFIERS ?? 16);
  const baseDir = baseline ? buildRevision(baseline) : undefined;
  const sides: Awaited<ReturnType<typeof startRig>>[] = [];
  let floorRig: FloorRig | undefined;
  const floor: { all: number; first: number }[] = [];
  try {
    if (baseDir) sides.push(await startRig(`before (${baseline})`, join(baseDir, 'dist'), verifiers));
    sides.push(await startRig('after (this checkout)', join(ROOT, 'dist'), verifiers));
    floorRig = await FloorRig.start(verifiers);
    for (let k = 0; k < kills; k++) {
      for (const s of sides) s.samples.push(await s.rig.kill());
      floor.push(await floorRig.round());
    }
  } finally {
    for (const s of sides) {
      await s.rig.stop();
      await s.broker.stop();
    }
    await floorRig?.stop();
    if (baseDir) rmSync(baseDir, { recursive: true, force: true });
  }
  // NaN: not taken (a build before the journal has none).
  const fmt = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(2)).padStart(9);
  const row = (name: string, f: { p50: number; p99: number; max: number }) => `  ${name.padEnd(44)} ${fmt(f.p50)} ${fmt(f.p99)} ${fmt(f.max)}`;
  for (const s of sides) {
    const f = figures(verifiers, s.samples, floor);
    console.log(`${s.label}: ${f.verifiers} verifiers, ${f.kills} kills (interleaved)`);
    console.log(`  ${'ms'.padEnd(44)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'max'.padStart(9)}`);
    console.log(row('revoke call (durable)', f.call));
    console.log(row('call start → refused at every check (journal)', f.journal));
    console.log(row('call start → first verifier applies the push', f.firstRefuse));
    console.log(row(`call start → all ${f.verifiers} apply the push`, f.allRefuse));
    console.log(`  tokens accepted after the call returned: ${f.acceptedAfterReturn} (must be 0)`);
    console.log(`  all ${f.verifiers} apply the push / floor (bare ws frame, all receive): p50 ${(f.allRefuse.p50 / f.floor.allReceive.p50).toFixed(2)}x, p99 ${(f.allRefuse.p99 / f.floor.allReceive.p99).toFixed(2)}x`);
  }
  const fl = floorFigures(floor);
  console.log(`floor: a bare WebSocket frame to ${verifiers} Node processes (bench/fanout-child.mjs), ${floor.length} rounds`);
  console.log(row('first write → first process has it', fl.firstReceive));
  console.log(row(`first write → all ${verifiers} have it`, fl.allReceive));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
