// A/B of two broker builds in one run: the mint figures a change is meant to move, from a baseline bundle and from
// dist/writ.mjs side by side, interleaved with oidc-provider, so the ratios hold on a shared, noisy machine where
// absolute figures swing. Prints ratios, never asserts. Build the base first, from a commit (dist/ is ignored by
// git; no `git stash`, which every worktree of the repository shares):
//   d=$(mktemp -d); git archive REV | tar -x -C $d; ln -s $PWD/node_modules $d/; (cd $d && node esbuild.mjs)
//   mkdir -p dist/base; cp $d/dist/writ.mjs dist/base/; node esbuild.mjs
//   WRIT_AB_BASE=dist/base/writ.mjs WRIT_BENCH_SECONDS=8 bash scripts/with-keyring.sh npx tsx bench/ab.ts
// WRIT_AB_NEW=PATH puts another bundle in place of dist/writ.mjs (e.g. an ablation build).
// An A/A run (the same bundle twice) moved 1.03-1.26x here: trust a ratio only when it repeats, and the server
// CPU per call more than throughput.
import { requireKeyring, WRIT } from '../test/helpers/broker';
import { SECONDS, cpuSeconds, merge } from './stats';
import type { LoadFigure } from './stats';
import { mintOverHttp, mintOverWs, startBench } from './mint';
import { oidcLoad, startOidcProvider } from './oidc';
import { ms, num, ratio } from './report';

const ROUNDS = Number(process.env.WRIT_AB_ROUNDS ?? 4);

/**
 * The figure, and the server's CPU per call, whole process and event loop (main thread) alone: steadier than
 * throughput when other work shares the cores, and the event loop is what a single-threaded server runs out of.
 */
async function withCpu(pid: number, cpu: { all: number[]; loop: number[] }, run: () => Promise<LoadFigure>): Promise<LoadFigure> {
  const c0 = cpuSeconds(pid);
  const l0 = cpuSeconds(pid, true);
  const f = await run();
  // The CPU read covers the warm-up's calls too.
  cpu.all.push((cpuSeconds(pid) - c0) / (f.n + f.warm));
  cpu.loop.push((cpuSeconds(pid, true) - l0) / (f.n + f.warm));
  return f;
}

async function main(): Promise<void> {
  requireKeyring();
  const base = process.env.WRIT_AB_BASE;
  if (!base) throw new Error('set WRIT_AB_BASE to the baseline bundle (a copy of dist/writ.mjs built from the base commit)');
  const builds = { base: await startBench(16, undefined, base), new: await startBench(16, undefined, process.env.WRIT_AB_NEW ?? WRIT) };
  const peer = await startOidcProvider();
  const figures = ['base ws16', 'new ws16', 'base http16', 'new http16', 'oidc16'] as const;
  const slices = Object.fromEntries(figures.map((f) => [f, [] as LoadFigure[]])) as Record<(typeof figures)[number], LoadFigure[]>;
  const cpu = Object.fromEntries(figures.map((f) => [f, { all: [] as number[], loop: [] as number[] }])) as Record<(typeof figures)[number], { all: number[]; loop: number[] }>;
  const pid = (k: 'base' | 'new') => builds[k].broker.child.pid!;
  try {
    for (const b of Object.values(builds)) await mintOverWs(b, 16, 0.5); // warm both
    const slice = SECONDS / ROUNDS;
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which build goes first, so neither always follows the oidc figure.
      const order = r % 2 === 0 ? (['base', 'new'] as const) : (['new', 'base'] as const);
      for (const k of order) slices[`${k} ws16`].push(await withCpu(pid(k), cpu[`${k} ws16`], () => mintOverWs(builds[k], 16, slice)));
      slices.oidc16.push(await withCpu(peer.child.pid!, cpu.oidc16, () => oidcLoad(peer, builds.new.load, 16, slice)));
      for (const k of order) slices[`${k} http16`].push(await withCpu(pid(k), cpu[`${k} http16`], () => mintOverHttp(builds[k], 16, slice)));
    }
  } finally {
    await peer.stop();
    for (const b of Object.values(builds)) await b.stop();
  }
  const f = Object.fromEntries(figures.map((k) => [k, merge(slices[k])])) as Record<(typeof figures)[number], LoadFigure>;
  // Median CPU per call over the slices: one slice starved by another process does not move it.
  const median = (xs: number[]) => 1e6 * [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const us = (k: (typeof figures)[number]) => median(cpu[k].all);
  const loop = (k: (typeof figures)[number]) => median(cpu[k].loop);
  for (const k of figures) {
    console.log(`${k.padEnd(12)} ${num(f[k].rate).padStart(7)} /s  p50 ${ms(f[k].p50)} ms  p99 ${ms(f[k].p99)} ms  server CPU ${num(us(k))} µs/call, event loop ${num(loop(k))}`);
  }
  console.log(`ws16   new/base ${ratio(f['new ws16'].rate, f['base ws16'].rate)} (server CPU per call ${ratio(us('new ws16'), us('base ws16'))}, event loop ${ratio(loop('new ws16'), loop('base ws16'))})`);
  console.log(`http16 new/base ${ratio(f['new http16'].rate, f['base http16'].rate)} (server CPU per call ${ratio(us('new http16'), us('base http16'))}, event loop ${ratio(loop('new http16'), loop('base http16'))}); /oidc: base ${ratio(f['base http16'].rate, f.oidc16.rate)}, new ${ratio(f['new http16'].rate, f.oidc16.rate)}; oidc CPU per call / new ${ratio(us('oidc16'), us('new http16'))}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
