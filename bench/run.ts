// `npm run bench`: mint throughput and latency over the WebSocket against a live grant, durably audited, with
// 1 and 16 concurrent clients, next to the floor measured in the same run: jose signing with the broker's key.
// Then the verifier: `verify` on a cached token against a raw Ed25519 signature check (node:crypto).
// Prints ratios, never asserts: speed is measured here, not in tests.
import { performance } from 'node:perf_hooks';
import { createPublicKey, verify as edVerify } from 'node:crypto';
import { SignJWT } from 'jose';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../test/helpers/broker';
import { loadKeySet } from '../broker/core/keys';
import { systemClock } from '../broker/core/clock';
import type { WritClient } from '../broker/sdk/client';
import { createVerifier } from '../broker/sdk/verify';

const SECONDS = Number(process.env.WRIT_BENCH_SECONDS ?? 3);

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function joseFloor(env: Record<string, string>): Promise<number> {
  const { keys } = await loadKeySet({ ref: { service: env.WRIT_KEYCHAIN_SERVICE! }, clock: systemClock, create: false });
  const claims = { iss: 'urn:writ:bench', sub: 'dev@example.com', aud: 'https://api.example', client_id: 'agt_x', scope: 'repo:read:acme/web', act: { sub: 'agt_x' }, task_id: 't', grant_id: 'g' };
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) {
      await new SignJWT({ ...claims, jti: `j${n}`, iat: 1, nbf: 1, exp: 2 }).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: keys.active.kid }).sign(keys.active.privateKey);
      n++;
    }
  }
  return n / SECONDS;
}

async function mintLoad(clients: { client: WritClient; grantId: string }[]): Promise<{ rate: number; p50: number; p99: number }> {
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    clients.map(async ({ client, grantId }) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await client.call('token.mint', { grantId });
        lat.push(performance.now() - t0);
      }
    }),
  );
  lat.sort((a, b) => a - b);
  return { rate: lat.length / SECONDS, p50: pct(lat, 50), p99: pct(lat, 99) };
}

/** The verifier's cached path next to the raw Ed25519 signature check it saves (node:crypto, one core). */
async function verifyFigures(broker: BrokerProcess, client: WritClient, grantId: string): Promise<{ cached: number; raw: number }> {
  const { token } = await client.call('token.mint', { grantId });
  const verifier = createVerifier({ broker: broker.discovery.httpUrl, audience: 'https://api.example' });
  const ask = { scope: 'repo:read:acme/web' };
  await verifier.verify(token, ask);
  let end = performance.now() + SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 1000; i++, n++) await verifier.verify(token, ask);
  }
  const cached = n / SECONDS;
  await verifier.close();
  const jwks = await (await fetch(`${broker.discovery.httpUrl}/.well-known/jwks.json`)).json();
  const key = createPublicKey({ key: jwks.keys[0], format: 'jwk' });
  const dot = token.lastIndexOf('.');
  const input = Buffer.from(token.slice(0, dot));
  const sig = Buffer.from(token.slice(dot + 1), 'base64url');
  end = performance.now() + SECONDS * 1000;
  n = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++, n++) if (!edVerify(null, input, key, sig)) throw new Error('the signature did not verify');
  }
  return { cached, raw: n / SECONDS };
}

async function main(): Promise<void> {
  requireKeyring();
  const env = freshEnv();
  // WRIT_BENCH_PROFILE=DIR writes a CPU profile of the broker there, for finding what a change costs.
  const profile = process.env.WRIT_BENCH_PROFILE;
  const broker = await BrokerProcess.start(env, [], profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []);
  broker.decide = () => ({ decision: 'approve', mode: 'session' });
  void approveAll;
  const clients: { client: WritClient; grantId: string }[] = [];
  for (let i = 0; i < 16; i++) {
    const { client } = await broker.agent(`bench-${i}`);
    const r = await client.call('task.request', { task: 'bench', scopes: ['repo:read:acme/web'], audience: 'https://api.example' });
    clients.push({ client, grantId: r.grant.id });
  }
  // Warm up both paths.
  await mintLoad(clients.slice(0, 1)).catch(() => undefined);

  const floor = await joseFloor(env);
  const one = await mintLoad(clients.slice(0, 1));
  const sixteen = await mintLoad(clients);
  const verified = await verifyFigures(broker, clients[0]!.client, clients[0]!.grantId);
  for (const c of clients) await c.client.close();
  await broker.stop();

  const f = (n: number) => n.toFixed(0).padStart(7);
  const ms = (n: number) => n.toFixed(2).padStart(6);
  console.log(`Writ benchmark (${SECONDS} s per figure, node ${process.version}, this machine)`);
  console.log('');
  console.log('figure                                         tokens/s   p50 ms   p99 ms   ratio to floor');
  console.log(`jose SignJWT, same Ed25519 key (floor)        ${f(floor)}        -        -             1.00`);
  console.log(`mint over WebSocket, 1 client, durable audit  ${f(one.rate)}   ${ms(one.p50)}   ${ms(one.p99)}   ${(one.rate / floor).toFixed(2).padStart(14)}`);
  console.log(`mint over WebSocket, 16 clients, durable audit${f(sixteen.rate)}   ${ms(sixteen.p50)}   ${ms(sixteen.p99)}   ${(sixteen.rate / floor).toFixed(2).padStart(14)}`);
  console.log('');
  const g = (n: number) => n.toFixed(0).padStart(9);
  console.log('figure                                          verifications/s   ratio to raw');
  console.log(`crypto.verify, raw Ed25519 signature (floor)          ${g(verified.raw)}           1.00`);
  console.log(`verifier.verify, cached token, scope checked          ${g(verified.cached)}   ${(verified.cached / verified.raw).toFixed(2).padStart(12)}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
