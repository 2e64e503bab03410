// Minting: over the WebSocket (token.mint against a live grant) and over HTTP (RFC 8693 token exchange at
// POST /oauth2/token, a sub-agent token from a parent token), both audited durably before the token is returned;
// next to the floor, jose signing the same claims with the broker's own key.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { BrokerProcess, freshEnv } from '../test/helpers/broker';
import type { BrokerEnv } from '../test/helpers/broker';
import { loadKeySet } from '../broker/core/keys';
import { systemClock } from '../broker/core/clock';
import type { WritClient } from '../broker/sdk/client';
import { LoadWorker } from './load';
import { opsPerSecond } from './stats';
import type { LoadFigure } from './stats';

export const AUDIENCE = 'https://api.example';
export const SCOPE = 'repo:read:acme/web';

export interface MintAgent {
  client: WritClient;
  grantId: string;
}

export interface Bench {
  broker: BrokerProcess;
  /** The agents, connected from this thread (for set-up and the figures that are not load). */
  agents: MintAgent[];
  /** The same agents, each resumed on a connection of its own in a worker thread: where the load comes from. */
  load: LoadWorker;
  stop(): Promise<void>;
}

export interface BenchOptions {
  /**
   * Follow the audit stream, as the editor does while its audit panel is open. Off by default: the editor with
   * the panel closed, which gets only the coalesced `audit.activity` and asks for nothing else.
   */
  follow?: boolean;
  /** Node flags for the broker process (an ablation or a trace, e.g. --trace-gc). */
  nodeArgs?: string[];
}

/**
 * A real broker (IPC approvals, every request approved for the session; this thread is its editor) and `n` agents
 * each holding a grant, connected here and again from the load worker (bench/load-worker.ts).
 */
export async function startBench(n = 16, given?: BrokerEnv, script?: string, options: BenchOptions = {}): Promise<Bench> {
  const env = given ?? freshEnv();
  // WRIT_BENCH_PROFILE=DIR writes a CPU profile of the broker there, for finding what a change costs.
  const profile = process.env.WRIT_BENCH_PROFILE;
  const broker = await BrokerProcess.start(env, [], [...(options.nodeArgs ?? []), ...(profile ? ['--cpu-prof', '--cpu-prof-interval=200', `--cpu-prof-dir=${profile}`] : [])], script);
  broker.decide = () => ({ decision: 'approve', mode: 'session' });
  broker.retain = false;
  broker.refreshOnActivity = true;
  if (options.follow) await broker.follow(true);
  const agents: MintAgent[] = [];
  const sessions: { name: string; session: string; grantId: string }[] = [];
  for (let i = 0; i < n; i++) {
    const { client } = await broker.agent(`bench-${i}`);
    const r = await client.call('task.request', { task: 'bench', scopes: [SCOPE], audience: AUDIENCE });
    agents.push({ client, grantId: r.grant.id });
    if (!r.session) throw new Error('the broker handed out no agent session');
    sessions.push({ name: `bench-${i}`, session: r.session, grantId: r.grant.id });
  }
  const load = LoadWorker.start();
  await load.request({ op: 'connect', address: broker.socket, agents: sessions });
  return {
    broker,
    agents,
    load,
    async stop() {
      await load.stop();
      for (const a of agents) await a.client.close();
      await broker.stop();
      // A folder made here (state, runtime) goes with the broker; a caller's own stays.
      if (!given) rmSync(dirname(env.WRIT_STATE_DIR), { recursive: true, force: true });
    },
  };
}

/** token.mint over the WebSocket, one call in flight per client (from the load worker); paced at `rate` calls/s if given. */
export function mintOverWs(bench: Bench, clients: number, seconds?: number, rate?: number): Promise<LoadFigure> {
  return bench.load.request({ op: 'ws', clients, seconds, ...(rate === undefined ? {} : { rate }) });
}

/**
 * RFC 8693 exchange over HTTP, one keep-alive connection per client (bench/httpc.ts, as for oidc-provider): each
 * client presents its own parent token and gets a sub-agent token, audited (`token.exchanged`) before the answer.
 */
export function mintOverHttp(bench: Bench, clients: number, seconds?: number): Promise<LoadFigure> {
  return bench.load.request({ op: 'exchange', url: `${bench.broker.discovery.httpUrl}/oauth2/token`, clients, seconds });
}

/** The floor: jose SignJWT over claims of the same shape, with the broker's active key (read from the keychain). */
export async function joseFloor(env: BrokerEnv): Promise<number> {
  const { keys } = await loadKeySet({ ref: { service: env.WRIT_KEYCHAIN_SERVICE }, clock: systemClock, create: false });
  const claims = { iss: 'urn:writ:bench', sub: 'dev@example.com', aud: AUDIENCE, client_id: 'agt_x', scope: SCOPE, act: { sub: 'agt_x' }, task_id: 't', grant_id: 'g' };
  let n = 0;
  return opsPerSecond(() =>
    new SignJWT({ ...claims, jti: `j${n++}`, iat: 1, nbf: 1, exp: 2 }).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: keys.active.kid }).sign(keys.active.privateKey),
  );
}

/** Resident memory of a process, MB, from /proc/<pid>/status. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const MINT_FLOOR = fileURLToPath(new URL('./mint-floor.mjs', import.meta.url));

/** bench/mint-floor.mjs running: the least a durable token server does per call here, with no Writ code. */
export interface MintFloor {
  socket: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function startMintFloor(): Promise<MintFloor> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-mint-floor-'));
  const socket = join(dir, 'floor.sock');
  const child = spawn(process.execPath, [MINT_FLOOR, socket, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`bench/mint-floor.mjs exited ${code}`)));
  });
  return {
    socket,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => {
          rmSync(dir, { recursive: true, force: true });
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

/** The same token.mint frame over bare `ws` clients (no SDK), against the floor server: one call in flight per client, or paced at `rate` calls/s. */
export function mintOverFloor(bench: Bench, floor: MintFloor, clients: number, seconds?: number, rate?: number): Promise<LoadFigure> {
  return bench.load.request({ op: 'floor', socket: floor.socket, clients, seconds, ...(rate === undefined ? {} : { rate }) });
}
