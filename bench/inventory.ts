// The inventory's cost on the hot path: 1,000 agents say hello (20 at a time, each a new connection) to a broker
// whose inventory already holds 10,000 identities, while one other client calls `status` back to back. The
// other client's latency is the stall every client sees; the hellos' wall time is the throughput.
// Run: node esbuild.mjs && bash scripts/with-keyring.sh tsx bench/inventory.ts [dist/writ.mjs ...]
// Not part of `npm run bench`. 2026-11-29, 2 busy cores, two runs each: a save per hello (fsync on the loop)
// 50-59 s for the hellos, status p50 23-28 ms, p99 284-359 ms, max 547-688 ms; coalesced async saves 6.8-7.3 s,
// status p50 1.9-2.7 ms, p99 33-34 ms, max 45 ms.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BrokerProcess, WRIT, freshEnv } from '../test/helpers/broker';
import { ManualClock } from '../broker/core/clock';
import { Inventory, MAX_IDENTITIES } from '../broker/core/inventory';
import { WritClient } from '../broker/sdk/client';

const HELLOS = 1000;
const AT_ONCE = 20;

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function run(script: string): Promise<void> {
  const env = freshEnv();
  mkdirSync(env.WRIT_STATE_DIR, { recursive: true, mode: 0o700 });
  const seed = Inventory.load(join(env.WRIT_STATE_DIR, 'agents.json'), new ManualClock(Date.UTC(2026, 10, 1)));
  for (let i = 0; i < MAX_IDENTITIES; i++) seed.seen({ name: `seeded-${i}`, kind: 'script', owner: env.WRIT_USER, process: { exe: '/usr/bin/node' } });
  await seed.flush();

  const b = await BrokerProcess.start(env, [], [], script);
  b.retain = false;
  const probe = await WritClient.connect(b.socket);
  const latencies: number[] = [];
  let probing = true;
  const probing$ = (async () => {
    while (probing) {
      const t = performance.now();
      await probe.call('status', {});
      latencies.push(performance.now() - t);
    }
  })();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: AT_ONCE }, async () => {
      // Known names half the time (a reconnect), new ones otherwise (the cap forgets the oldest).
      while (next < HELLOS) {
        const i = next++;
        const { client } = await b.agent(i % 2 ? `seeded-${i}` : `storm-${i}`);
        await client.close();
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  probing = false;
  await probing$;
  await probe.close();
  await b.stop();
  const f = (ms: number) => ms.toFixed(1);
  console.log(
    `${script.split('/').pop()}: ${HELLOS} hellos in ${seconds.toFixed(2)} s (${Math.round(HELLOS / seconds)}/s); ` +
      `another client's status calls: n=${latencies.length} p50 ${f(pct(latencies, 50))} ms, p99 ${f(pct(latencies, 99))} ms, max ${f(Math.max(...latencies))} ms`,
  );
}

const scripts = process.argv.slice(2);
for (const s of scripts.length ? scripts : [WRIT]) await run(s);
