// `npm run bench`: one run, this machine, every figure next to what it is compared with; prints the tables and
// writes BENCHMARKS.md. Prints ratios, never asserts: speed is measured here, not in tests.
//   mint.ts        mint over the WebSocket and over HTTP (RFC 8693 exchange), the jose floor, and the durable floor
//                  (mint-floor.mjs: a bare ws server that signs and group-commits a record per call, no Writ code)
//   oidc.ts        the peer: oidc-provider, client_credentials + resource indicators, EdDSA JWT access tokens
//   verify.ts      the verifier library (cached and first-seen) against raw Ed25519 verification
//   revocation.ts  16 subscribed verifiers in separate processes: kill to refusal
//   growth.ts      connected agents and a 1 M-record audit log: mint, memory, export and verify
//   disk.ts        the disk alone: a write-ahead block written and fdatasync-ed, the floor under a durable mint
//   stats.ts       the one load generator and percentile helper; report.ts the tables and BENCHMARKS.md
//   httpc.ts       the HTTP load (autocannon) both token endpoints are measured with
//   ab.ts          (not run here) two broker builds side by side, for judging a change on a noisy machine
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { requireKeyring } from '../test/helpers/broker';
import { SECONDS, cpuSeconds, merge } from './stats';
import type { LoadFigure } from './stats';
import { joseFloor, mintOverFloor, mintOverHttp, mintOverWs, rssMb, startBench, startMintFloor } from './mint';
import { oidcLoad, startOidcProvider } from './oidc';
import { verifyFigures } from './verify';
import { revocationFigures } from './revocation';
import { growthFigures, mintTemplate } from './growth';
import { diskSyncFloor } from './disk';
import { machine, ms, num, printTable, ratio, writeMarkdown } from './report';
import type { Table } from './report';

/** Each mint figure is taken in this many slices, interleaved with the others. */
const ROUNDS = 3;
const MINT_KEYS = ['ws1', 'ws16', 'ws16open', 'ws16paced', 'http1', 'http16', 'oidc1', 'oidc16', 'dur1', 'dur16', 'dur16paced'] as const;
/** Issue 2's rate: the open-loop figures offer this many mints a second over 16 connections. */
const PACED_RATE = 6000;
type MintKey = (typeof MINT_KEYS)[number];
const OUT = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

async function main(): Promise<void> {
  requireKeyring();
  const started = performance.now();
  const m = machine();
  console.log(`Writ benchmark: ${SECONDS} s per figure; ${m.cpu}, ${m.cores} cores, node ${m.node}, ${m.date}, load ${m.load}`);

  log('minting (WebSocket, HTTP), oidc-provider and the jose floor');
  const bench = await startBench(16);
  // The same, with the editor following every audit record: the extension while its audit panel is open.
  const open = await startBench(16, undefined, undefined, { follow: true });
  const peer = await startOidcProvider();
  const durable = await startMintFloor();
  let template;
  let floor, disk, ws1, ws16, ws16open, ws16paced, http1, http16, oidc1, oidc16, dur1, dur16, dur16paced, baseRss, oidcRss, verified, revoked;
  const cpuUs: Partial<Record<MintKey, number>> = {};
  try {
    await mintOverWs(bench, 1); // warm the broker's paths
    await mintOverWs(open, 16, 0.5);
    await mintOverFloor(bench, durable, 16, 0.5);
    floor = await joseFloor(bench.broker.env);
    disk = await diskSyncFloor(bench.broker.env.WRIT_STATE_DIR, SECONDS);
    // The eleven figures in ROUNDS interleaved slices, so drifting load on a shared machine falls on all of them
    // alike; each with its server's CPU (all its threads) per call, read from /proc around the slice.
    const slices = Object.fromEntries(MINT_KEYS.map((k) => [k, [] as LoadFigure[]])) as Record<MintKey, LoadFigure[]>;
    const cpu = Object.fromEntries(MINT_KEYS.map((k) => [k, { s: 0, calls: 0 }])) as Record<MintKey, { s: number; calls: number }>;
    const take = async (k: MintKey, pid: number, run: () => Promise<LoadFigure>) => {
      const c0 = cpuSeconds(pid);
      const f = await run();
      cpu[k].s += cpuSeconds(pid) - c0;
      cpu[k].calls += f.n + f.warm;
      slices[k].push(f);
    };
    const writ = bench.broker.child.pid!;
    const slice = SECONDS / ROUNDS;
    for (let r = 0; r < ROUNDS; r++) {
      await take('ws1', writ, () => mintOverWs(bench, 1, slice));
      await take('oidc1', peer.child.pid!, () => oidcLoad(peer, bench.load, 1, slice));
      await take('http1', writ, () => mintOverHttp(bench, 1, slice));
      await take('dur1', durable.child.pid!, () => mintOverFloor(bench, durable, 1, slice));
      await take('ws16', writ, () => mintOverWs(bench, 16, slice));
      await take('ws16open', open.broker.child.pid!, () => mintOverWs(open, 16, slice));
      await take('oidc16', peer.child.pid!, () => oidcLoad(peer, bench.load, 16, slice));
      await take('http16', writ, () => mintOverHttp(bench, 16, slice));
      await take('dur16', durable.child.pid!, () => mintOverFloor(bench, durable, 16, slice));
      await take('ws16paced', writ, () => mintOverWs(bench, 16, slice, PACED_RATE));
      await take('dur16paced', durable.child.pid!, () => mintOverFloor(bench, durable, 16, slice, PACED_RATE));
    }
    for (const k of MINT_KEYS) cpuUs[k] = (1e6 * cpu[k].s) / cpu[k].calls;
    ws1 = merge(slices.ws1);
    ws16 = merge(slices.ws16);
    ws16open = merge(slices.ws16open);
    http1 = merge(slices.http1);
    http16 = merge(slices.http16);
    oidc1 = merge(slices.oidc1);
    oidc16 = merge(slices.oidc16);
    dur1 = merge(slices.dur1);
    dur16 = merge(slices.dur16);
    ws16paced = merge(slices.ws16paced);
    dur16paced = merge(slices.dur16paced);
    baseRss = rssMb(bench.broker.child.pid!);
    oidcRss = rssMb(peer.child.pid!);
    await peer.stop();
    await durable.stop();
    await open.stop();
    log('verification');
    verified = await verifyFigures(bench);
    log('revocation');
    // At least 400 kills: with 100 the nearest-rank p99 is simply the slowest kill, with 120 the second slowest,
    // and two hiccups of a shared host then move it by milliseconds (seen: 1.29 ms in one run, 3.03 in the next).
    revoked = await revocationFigures(bench, 16, Math.max(400, Math.round(SECONDS * 130)));
    template = mintTemplate(bench.broker.auditLines());
  } finally {
    if (peer.child.exitCode === null && peer.child.signalCode === null) await peer.stop();
    if (durable.child.exitCode === null && durable.child.signalCode === null) await durable.stop();
    if (open.broker.child.exitCode === null && open.broker.child.signalCode === null) await open.stop();
    await bench.stop();
  }

  log('growth: the big audit log, then five brokers side by side (fresh, 10/100/1,000 more agents, the big log), export and verify');
  const { rows: growth, big } = await growthFigures(template, ROUNDS);

  // ---------------------------------------------------------------------------------------------
  const mintRow = (name: string, clients: number, f: { rate: number; p50: number; p99: number }, audit: string, k: MintKey) => [
    name,
    String(clients),
    num(f.rate),
    ms(f.p50),
    ms(f.p99),
    num(cpuUs[k]!),
    audit,
    ratio(f.rate, floor),
  ];
  const headline = [
    `Writ mint over WebSocket, durable audit: 16 clients ${num(ws16.rate)} tokens/s, p99 ${ms(ws16.p99)} ms; 1 client p50 ${ms(ws1.p50)} ms (issue 2 asks for ≥ 6,000/s with p99 ≤ 5 ms, and p50 ≤ 1 ms; printed, not asserted). The durable floor in this run (a bare server that signs and group-commits one record per call, no Writ code): 16 clients ${num(dur16.rate)}/s, p99 ${ms(dur16.p99)} ms; 1 client p50 ${ms(dur1.p50)} ms. The disk alone, one write-ahead block written and fdatasync-ed: p50 ${ms(disk.p50)} ms, p99 ${ms(disk.p99)} ms`,
    `At issue 2's rate, ${num(PACED_RATE)} mints/s offered over 16 connections (open loop, each call's latency counted from when it was due): Writ p50 ${ms(ws16paced.p50)} ms, p99 ${ms(ws16paced.p99)} ms (${num(ws16paced.rate)}/s served); the durable floor at the same rate: p50 ${ms(dur16paced.p50)} ms, p99 ${ms(dur16paced.p99)} ms`,
    `Writ mint over WebSocket, 16 clients, durable audit / oidc-provider, 16 clients, no audit: ${ratio(ws16.rate, oidc16.rate)} (issue 5 asks for ≥ 1.60×; printed, not asserted)`,
    `Writ mint over HTTP (RFC 8693 exchange), 16 clients, durable audit / oidc-provider, 16 clients: ${ratio(http16.rate, oidc16.rate)}`,
    `Revocation: all ${revoked.verifiers} verifier processes refuse the token at their next check ${ms(revoked.journal.p50)} ms (p50) / ${ms(revoked.journal.p99)} ms (p99) after the revoke call starts, once it is in the broker's revocation journal (issue 5's prototype: p99 ≤ 3 ms idle); the push has reached all ${revoked.verifiers} after ${ms(revoked.allRefuse.p50)} / ${ms(revoked.allRefuse.p99)} ms (the floor in this run, a bare WebSocket frame reaching ${revoked.verifiers} Node processes: p50 ${ms(revoked.floor.allReceive.p50)} / p99 ${ms(revoked.floor.allReceive.p99)} ms); tokens accepted after the revoke call returned: ${revoked.acceptedAfterReturn} (must be 0)`,
  ];
  const tables: Table[] = [
    {
      title: 'Minting: tokens/s and latency per call',
      head: ['figure', 'clients', 'tokens/s', 'p50 ms', 'p99 ms', 'server CPU µs/call', 'audit', 'ratio to floor'],
      rows: [
        ['jose SignJWT, same Ed25519 key (floor)', '1', num(floor), '-', '-', '-', 'none', ratio(floor, floor)],
        mintRow('Writ mint over WebSocket (token.mint)', 1, ws1, 'durable', 'ws1'),
        mintRow('Writ mint over WebSocket (token.mint)', 16, ws16, 'durable', 'ws16'),
        mintRow('… the same, audit panel open (the editor gets every record)', 16, ws16open, 'durable', 'ws16open'),
        mintRow(`… the same, ${num(PACED_RATE)} calls/s offered (open loop)`, 16, ws16paced, 'durable', 'ws16paced'),
        mintRow('Writ mint over HTTP: RFC 8693 exchange', 1, http1, 'durable', 'http1'),
        mintRow('Writ mint over HTTP: RFC 8693 exchange', 16, http16, 'durable', 'http16'),
        mintRow(`oidc-provider ${peer.version}, client_credentials`, 1, oidc1, 'none', 'oidc1'),
        mintRow(`oidc-provider ${peer.version}, client_credentials`, 16, oidc16, 'none', 'oidc16'),
        mintRow('durable floor: bare ws server, sign + one chained record (bench/mint-floor.mjs)', 1, dur1, 'durable', 'dur1'),
        mintRow('durable floor: bare ws server, sign + one chained record (bench/mint-floor.mjs)', 16, dur16, 'durable', 'dur16'),
        mintRow(`… the same, ${num(PACED_RATE)} calls/s offered (open loop)`, 16, dur16paced, 'durable', 'dur16paced'),
      ],
      notes: [
        `Writ WebSocket 16 / oidc-provider 16: ${ratio(ws16.rate, oidc16.rate)}; Writ HTTP 16 / oidc-provider 16: ${ratio(http16.rate, oidc16.rate)}.`,
        `Audit panel open: a second broker, whose editor (this process) follows the audit stream as the extension does while its audit panel shows, receiving and schema-checking every record (batched per 5 ms); its 16-client figure is taken in the same interleaved slices: ${ratio(ws16open.rate, ws16.rate)} the throughput of the panel-closed broker, ${ratio(cpuUs.ws16open!, cpuUs.ws16!)} its server CPU per call. The other Writ figures are with the panel closed (the editor then gets about one \`audit.activity\` message a second).`,
        'durable: each token is returned only after its audit record is written and fdatasync-ed (group commit).',
        `Open loop (the "${num(PACED_RATE)} calls/s offered" rows, issue 2's rate): each of the 16 connections is sent a call every ${(16000 / PACED_RATE).toFixed(2)} ms on a fixed schedule (the connections staggered), whether or not its earlier calls were answered, and a call's latency runs from when it was due (bench/stats.ts pacedLoop, the correction wrk2 makes). The closed-loop rows above stop sending while they wait, so a stall of the machine or the server shows there as 16 slow calls; here every call due during it counts it. Writ / durable floor at this rate: p50 ${ratio(ws16paced.p50, dur16paced.p50)}, p99 ${ratio(ws16paced.p99, dur16paced.p99)}.`,
        `The disk alone (bench/disk.ts), nothing else running: a 16-record block written in place in a 4 MB write-ahead file and fdatasync-ed, back to back: ${num(disk.syncsPerSecond)} syncs/s, p50 ${ms(disk.p50)} ms, p99 ${ms(disk.p99)} ms, max ${ms(disk.max)} ms. A durable mint waits for at least one such sync (and for the one in flight when its record arrived), so its p99 sits above this one.`,
        'oidc-provider keeps no audit at all; its tokens are EdDSA at+jwt with a resource indicator, as Writ\'s.',
        `The durable floor is the least a durable token server does per call here, with no Writ code: a bare \`ws\` server on a Unix socket parses the frame, signs claims of the same shape with Ed25519 on its thread, appends one hash-chained record to a preallocated file and answers once it is fdatasync-ed (group commit, one sync in flight), to bare \`ws\` clients in the same load thread as Writ's agents. No session, grant, schema, approval, editor stream or second log file. Writ WebSocket 16 / durable floor 16: ${ratio(ws16.rate, dur16.rate)} the throughput, ${ratio(cpuUs.ws16!, cpuUs.dur16!)} the server CPU per call, p99 ${ms(ws16.p99)} against ${ms(dur16.p99)} ms. In a closed loop of 16 clients the mean latency is 16 / throughput, and here p99 runs about three times p50 for both, so a p99 within 5 ms asks for about the floor's throughput.`,
        'Server CPU per call: user + system time of the server process (every thread) from /proc around each slice, over the calls of the slice and its warm-up; the load and the editor run in the benchmark process, on the same two cores.',
        `Resident memory: Writ broker ${num(baseRss)} MB (after its mint figures), oidc-provider ${num(oidcRss)} MB (after its figures).`,
      ],
    },
    {
      title: 'Verification on one core',
      head: ['figure', 'verifications/s', 'ratio to raw'],
      rows: [
        ['crypto.verify, raw Ed25519 signature (floor)', num(verified.raw), ratio(verified.raw, verified.raw)],
        ['writ/verify, first sight (signature, claims, scopes)', num(verified.firstSeen), ratio(verified.firstSeen, verified.raw)],
        ['writ/verify, cached token (expiry, revocation, scope)', num(verified.cached), ratio(verified.cached, verified.raw)],
      ],
    },
    {
      title: `Revocation: ${revoked.verifiers} subscribed verifiers in separate processes, ${revoked.kills} kills`,
      head: ['figure', 'p50 ms', 'p99 ms', 'max ms'],
      rows: [
        ['revoke call (durable: list fsync-ed and audited)', ms(revoked.call.p50), ms(revoked.call.p99), ms(revoked.call.max)],
        [`call start → all ${revoked.verifiers} refuse at their next check (in the journal)`, ms(revoked.journal.p50), ms(revoked.journal.p99), ms(revoked.journal.max)],
        ['call start → first verifier applies the push (its clock)', ms(revoked.firstRefuse.p50), ms(revoked.firstRefuse.p99), ms(revoked.firstRefuse.max)],
        [`call start → all ${revoked.verifiers} have applied the push (verifiers' clocks)`, ms(revoked.allRefuse.p50), ms(revoked.allRefuse.p99), ms(revoked.allRefuse.max)],
        [`floor: bare ws frame written → first of ${revoked.verifiers} Node processes has it`, ms(revoked.floor.firstReceive.p50), ms(revoked.floor.firstReceive.p99), ms(revoked.floor.firstReceive.max)],
        [`floor: bare ws frame written → all ${revoked.verifiers} have it`, ms(revoked.floor.allReceive.p50), ms(revoked.floor.allReceive.p99), ms(revoked.floor.allReceive.max)],
      ],
      notes: [
        `Tokens accepted after the revoke call returned: ${revoked.acceptedAfterReturn} (must be 0)${revoked.acceptedAfterReturn ? `, the latest ${ms(revoked.lateMs)} ms after the return` : ''}; over ${revoked.kills} kills × ${revoked.verifiers} verifiers, each checking the token when told of the revocation and again right after the return; a verifier told only after the return counts as accepting.`,
        'The broker writes each revocation to its journal as it applies it, before the fsync and the audit record, and then pushes it to the verifiers; the revoke call returns once it is durable and every verifier has acknowledged the push (waiting 1 s at most in all), so none accepts the token after the return.',
        `"Refuse at their next check": every verifier on this machine reads the broker's revocation journal (a file in its runtime folder) at each check, so from the moment the line is written each refuses the token at its next check, woken by the push or not (test/integration/verify.test.ts, 'the revocation journal', holds a verifier's process busy to show it). The figure bounds that moment from above, per kill, by the earlier of two stamps: a 17th verifier in the benchmark's process checking the token as soon as inotify says the journal changed, and the first of the ${revoked.verifiers} to apply the push, which the broker writes only after the line. Issue 5's prototype: p99 ≤ 3 ms idle.`,
        `All ${revoked.verifiers} have applied the push / floor: p50 ${ratio(revoked.allRefuse.p50, revoked.floor.allReceive.p50)}, p99 ${ratio(revoked.allRefuse.p99, revoked.floor.allReceive.p99)}. The floor is the least any push to ${revoked.verifiers} processes costs here: a bare \`ws\` server in the benchmark writes one revocation-sized frame to ${revoked.verifiers} bare \`ws\` clients, each its own Node process (bench/fanout-child.mjs, no Writ code), which stamp its arrival, parse and acknowledge it; its rounds are interleaved with the kills. Every process woken costs its CPU time on two cores, so the last of ${revoked.verifiers} is served after the other fifteen.`,
      ],
    },
    {
      title: 'Cost of growth: mint over WebSocket, 16 clients, durable audit',
      head: ['condition', 'tokens/s', 'p50 ms', 'p99 ms', 'broker RSS MB', 'ratio to fresh'],
      rows: growth.map((g) => [g.label, num(g.mint.rate), ms(g.mint.p50), ms(g.mint.p99), num(g.rssMb), ratio(g.mint.rate, growth[0]!.mint.rate)]),
      notes: [
        'Five brokers run side by side, each with 16 minting agents; "more agents connected" are idle WebSockets that said hello, besides those 16. Each figure is taken in interleaved slices.',
        'RSS is VmRSS after the mint figures.',
      ],
    },
    {
      title: `The audit log of ${num(big.records)} records (${num(big.bytes / 2 ** 20)} MB)`,
      head: ['operation', 'seconds', 'records/s'],
      rows: [
        ['generate with AuditLog (fsync off, checkpoint every 1,000), one fdatasync at the end', num(big.generateSeconds, 1), num(big.records / big.generateSeconds)],
        ['writ audit export --format jsonl', num(big.exportJsonl, 1), num(big.records / big.exportJsonl)],
        ['writ audit export --format csv', num(big.exportCsv, 1), num(big.records / big.exportCsv)],
        ['writ audit verify (chain and signed checkpoints)', num(big.verify, 1), num(big.records / big.verify)],
      ],
      notes: [`writ audit verify said: ${big.verifyOutput}`, 'Export and verify are the CLI (node dist/writ.mjs) as a user runs it, process start included.'],
    },
  ];
  console.log('');
  for (const h of headline) console.log(h);
  for (const t of tables) printTable(t);
  const total = (performance.now() - started) / 1000;
  console.log(`\n(${num(total)} s in all; written to BENCHMARKS.md)`);

  writeMarkdown(OUT, m, SECONDS, headline, tables, [
    `Load: closed loop (bench/stats.ts): each client awaits its call before the next, for ${SECONDS} s after a short warm-up; p50/p99 are nearest-rank over every call; the two open-loop figures send on a schedule instead (pacedLoop). The eleven mint figures (Writ WebSocket, Writ HTTP, oidc-provider, the durable floor, 1 and 16 clients; Writ WebSocket 16 with the audit panel open; Writ WebSocket and the durable floor at ${num(PACED_RATE)} calls/s offered) are each taken in ${ROUNDS} slices of ${(SECONDS / ROUNDS).toFixed(1)} s, interleaved, so load drifting on a shared machine falls on all alike.`,
    'The broker is the real one (dist/writ.mjs serve) with its keychain key in a throwaway keyring, approvals answered over its IPC channel; each agent holds a session-mode grant.',
    'The load (the agents\' WebSockets, each resuming its agent session, and the HTTP clients for both servers) runs in a worker thread of the benchmark process (bench/load.ts), apart from the thread that plays the editor: that one answers approvals and receives and validates what the extension would with its audit panel closed (a coalesced `audit.activity` about once a second under load, on which it asks for a state snapshot as the extension\'s views do; no audit records; `startBench(…, { follow: true })` is the panel open, the whole stream), but keeps none of it.',
    'WebSocket: `token.mint` over the Unix socket. HTTP: POST /oauth2/token, RFC 8693 token exchange from the agent\'s own token to a sub-agent token (the broker has no other HTTP mint), autocannon, one keep-alive connection per client and one request in flight on each (bench/httpc.ts): the client shares the two cores with both servers, and autocannon cost the benchmark process 40-50 µs per call where node:http with a keep-alive agent cost 80-150 µs and Node\'s fetch more than either server.',
    'Floor: jose `SignJWT` with the broker\'s active key and claims of the same shape, in the benchmark process.',
    'oidc-provider: its own process (bench/oidc-server.mjs), NODE_ENV=production, client_credentials with client_secret_basic and a resource indicator, `accessTokenFormat: \'jwt\'`, EdDSA (Ed25519) key; same HTTP load (autocannon) as Writ over HTTP; in-memory adapter; no audit.',
    'Verification: `createVerifier` from broker/sdk/verify.ts with use reports on; first sight cycles 512 distinct tokens through a verifier that caches one; raw is `crypto.verify` over pre-decoded input.',
    'Revocation: 16 child processes each run bench/verifier-child.mjs on dist/verify.mjs (subscribed, use reports off), hold a verified token and check it in the library\'s onRevocation listener (called once the event is applied, before it is acknowledged), stamping that moment, and again right after the return; the benchmark revokes the token by jti over the WebSocket. Times are CLOCK_MONOTONIC (process.hrtime), one clock for all processes; the stamps reach the benchmark after the return, so no IPC runs while verifiers refuse. No polling (WRIT_BENCH_VERIFIER_POLL_MS=1 adds a check every millisecond in each). A 17th verifier in the benchmark process (same library) holds the token too and checks it each time `fs.watch` (inotify) reports the broker\'s journal file changed. Its floor: 16 child processes run bench/fanout-child.mjs (a bare `ws` client), a bare `ws` server in the benchmark writes each a revocation-sized JSON-RPC frame, one round after each kill; stamped on the same clock.',
    'Growth: five brokers side by side, the 16-client WebSocket mint figure taken from each in interleaved slices; RSS is VmRSS from /proc/<pid>/status after the mint figures. The big log is written with the AuditLog class (fsync off) from a real mint record of this run, signed by the broker\'s key; the broker then starts on it (it reads only the tail).',
  ]);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
