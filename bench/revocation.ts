// Revocation: 16 verifiers in separate processes, each subscribed to the broker and holding a verified token
// that it checks every millisecond; the broker is asked to revoke the token (token kind, over the WebSocket).
// Measured per kill, on the shared wall clock (performance.timeOrigin + performance.now() in every process):
// from the revoke call's start until the last of the 16 refuses. Also at the parent, on receipt of the 16th
// "refused" message (adds the IPC hop). And every acceptance stamped after the revoke call had returned, counting
// a probe each verifier answers right after the return (must be 0).
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { percentiles, wallMs } from './stats';
import { AUDIENCE, SCOPE } from './mint';
import type { Bench } from './mint';

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

export async function revocationFigures(bench: Bench, verifiers = 16, kills = 20): Promise<RevocationFigures> {
  const children = new Children(verifiers, [bench.broker.discovery.httpUrl, AUDIENCE, SCOPE]);
  const { client, grantId } = bench.agents[0]!;
  const allRefuse: number[] = [];
  const atParent: number[] = [];
  const call: number[] = [];
  let acceptedAfterReturn = 0;
  let lateMs = 0;
  try {
    const ready = children.expect(verifiers, (m) => m.type === 'ready', 120_000);
    await ready;
    for (let k = 0; k < kills; k++) {
      const { token, jti } = await client.call('token.mint', { grantId });
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
      await client.call('revoke', { target: { kind: 'token', jti }, reason: 'bench' });
      const returned = wallMs();
      children.send({ type: 'probe', k });
      const [lastAt] = await Promise.all([refused, probed]);
      for (const t of acceptedAt) {
        if (t <= returned) continue;
        acceptedAfterReturn++;
        lateMs = Math.max(lateMs, t - returned);
      }
      call.push(returned - start);
      allRefuse.push(Math.max(...refusedAt) - start);
      atParent.push(lastAt - start);
    }
  } finally {
    children.onMessage = undefined;
    await children.stop();
  }
  return { verifiers, kills, allRefuse: percentiles(allRefuse), atParent: percentiles(atParent), call: percentiles(call), acceptedAfterReturn, lateMs };
}
