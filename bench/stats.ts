// The latency helpers: closed-loop load (N workers, each awaiting its call before the next) for a fixed time, the
// same paced at a given rate, and the percentiles of what they recorded. Every throughput/latency figure in the benchmark comes from here,
// but the HTTP ones: autocannon runs those closed loops (bench/httpc.ts), and its latencies go through percentiles().
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export interface LoadFigure {
  /** Completed calls per second. */
  rate: number;
  p50: number;
  p99: number;
  /** Calls completed. */
  n: number;
  /** Seconds measured, and every call's latency (ms): what merge() needs. */
  elapsed: number;
  lat: number[];
  /** Calls made in the warm-up before the measured time (CPU read around a figure covers them too). */
  warm: number;
}

/** One figure from several slices of the same load (taken in rounds, interleaved with the figures it is compared to). */
export function merge(slices: readonly LoadFigure[]): LoadFigure {
  const lat = slices.flatMap((s) => s.lat);
  const elapsed = slices.reduce((t, s) => t + s.elapsed, 0);
  const { p50, p99 } = percentiles(lat);
  return { rate: lat.length / elapsed, p50, p99, n: lat.length, elapsed, lat, warm: slices.reduce((t, s) => t + s.warm, 0) };
}

/** Nearest-rank percentile of sorted samples (NaN when empty). */
export function pct(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function percentiles(samples: readonly number[]): { p50: number; p99: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { p50: pct(s, 50), p99: pct(s, 99), max: s.length ? s[s.length - 1]! : NaN };
}

/** The benchmark's time unit: WRIT_BENCH_SECONDS (default 3) per figure. */
export const SECONDS = Number(process.env.WRIT_BENCH_SECONDS ?? 3);

/**
 * `workers` concurrent loops calling `op(worker)` back to back for `seconds`; latency per call in ms.
 * A short warm-up first (not recorded), so JIT and connection set-up stay out of the figure.
 */
export async function closedLoop(workers: number, op: (worker: number) => Promise<unknown>, seconds = SECONDS): Promise<LoadFigure> {
  let warm = 0;
  const run = async (ms: number, record: number[] | null): Promise<void> => {
    const end = performance.now() + ms;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        while (performance.now() < end) {
          const t0 = performance.now();
          await op(w);
          if (record) record.push(performance.now() - t0);
          else warm++;
        }
      }),
    );
  };
  await run(Math.min(500, seconds * 200), null);
  const lat: number[] = [];
  const t0 = performance.now();
  await run(seconds * 1000, lat);
  const elapsed = (performance.now() - t0) / 1000;
  const { p50, p99 } = percentiles(lat);
  return { rate: lat.length / elapsed, p50, p99, n: lat.length, elapsed, lat, warm };
}

/**
 * Latency at a given load rather than at saturation (open loop, as wrk2 measures): `workers` connections offered
 * `rate` calls a second in all, each connection's calls `workers / rate` seconds apart (the connections staggered),
 * sent on time whether or not the connection's previous call has been answered (JSON-RPC over one WebSocket
 * carries several calls at once). Latency is counted from each call's scheduled time, so a call sent late because
 * this process was busy counts that wait against the server too (a timer here fires up to a millisecond late).
 * A closed loop hides a stall (its clients stop sending while they wait); this shows it in every call scheduled
 * during it. The rate reported is what completed, short of `rate` when the server cannot keep up.
 */
export async function pacedLoop(workers: number, rate: number, op: (worker: number) => Promise<unknown>, seconds = SECONDS): Promise<LoadFigure> {
  let warm = 0;
  const period = (1000 * workers) / rate;
  const run = async (ms: number, record: number[] | null): Promise<number> => {
    const t0 = performance.now();
    const end = t0 + ms;
    let last = t0;
    const sent: Promise<void>[] = [];
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        for (let k = 0; ; k++) {
          const due = t0 + (k + w / workers) * period;
          if (due >= end) break;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          sent.push(
            op(w).then(() => {
              last = performance.now();
              if (record) record.push(last - due);
              else warm++;
            }),
          );
        }
      }),
    );
    await Promise.all(sent);
    return (last - t0) / 1000;
  };
  await run(Math.min(500, seconds * 200), null);
  const lat: number[] = [];
  const elapsed = await run(seconds * 1000, lat);
  const { p50, p99 } = percentiles(lat);
  return { rate: lat.length / elapsed, p50, p99, n: lat.length, elapsed, lat, warm };
}

/** Synchronous-or-async single-threaded throughput: `batch` calls per check of the clock. */
export async function opsPerSecond(op: () => unknown, batch = 100, seconds = SECONDS): Promise<number> {
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < batch; i++, n++) {
      const r = op();
      if (r instanceof Promise) await r;
    }
  }
  return n / ((performance.now() - t0) / 1000);
}

/**
 * Milliseconds on CLOCK_MONOTONIC, one clock for every process on the machine. Not timeOrigin + performance.now():
 * that is off in each process by some of its start-up time, for its whole life (24 node processes started together
 * here disagreed by up to 45 ms), enough to show verifiers refusing after a revoke call that had their acks.
 */
export function sharedMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** CPU seconds (user + system) a process has used, or its main thread alone, from /proc. */
export function cpuSeconds(pid: number, mainThread = false): number {
  const f = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}
