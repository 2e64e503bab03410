// One subscribed verifier in its own process, built on the shipped library (dist/verify.mjs). Driven over IPC by
// bench/revocation.ts. Times are ms on CLOCK_MONOTONIC (process.hrtime), the one clock all processes share.
//   parent → {type:'token', k, token}  verify it (a first sight) and hold it
//   parent → {type:'probe', k}         check it now (sent right after the revoke call returned)
//   child  → {type:'held', k}
//          | {type:'probe', k, accepted, at, refusedAt, lastAcceptAt, journal}   refusedAt -1: not refused yet;
//            journal: status().journal, reading the broker's revocation journal (undefined from a build before it)
//          | {type:'refused', k, at}   only for a refusal that comes after a probe which accepted the token
// The held token is checked the moment each revocation event has been applied: the library calls onRevocation
// after applying an event and before acknowledging it. A refusal found there is stamped with the time the listener
// was called (so before the broker can hear the ack and the revoke call return) and reported with the probe's
// answer, after the return, so that no IPC runs while the other verifiers are still refusing.
import { pathToFileURL } from 'node:url';

// The optional fourth argument is another build's verify.mjs (bench/revocation.ts's before/after run).
const [broker, audience, scope, verifyModule] = process.argv.slice(2);
const { createVerifier } = await import(verifyModule ? pathToFileURL(verifyModule).href : '../dist/verify.mjs');
const wall = () => Number(process.hrtime.bigint()) / 1e6;
// Use reports off: the figure is the revocation path alone, not the broker auditing every check.
const verifier = createVerifier({ broker, audience, reportUse: false });
let held; // { k, token, refusedAt, lastAcceptAt, probedAccepted, timer }
// Also check the held token every POLL_MS (0, the default: only on each revocation event and the probe).
const POLL_MS = Number(process.env.WRIT_BENCH_VERIFIER_POLL_MS ?? 0);

/** Accepts (true) or refuses (false) the held token; a refusal is stamped `at`, or now. */
async function check(h, at) {
  if (h.refusedAt >= 0) return false;
  try {
    await verifier.verify(h.token, { scope });
    h.lastAcceptAt = wall();
    return true;
  } catch (e) {
    if (h.refusedAt >= 0) return false;
    if (e?.code !== 'WRIT_TOKEN_REVOKED') throw e;
    h.refusedAt = at ?? wall();
    clearInterval(h.timer);
    if (h.probedAccepted) process.send({ type: 'refused', k: h.k, at: h.refusedAt });
    return false;
  }
}

verifier.onRevocation(() => {
  if (held && held.refusedAt < 0) void check(held, wall());
});

process.on('message', async (m) => {
  if (m.type === 'token') {
    if (held) clearInterval(held.timer);
    const h = { k: m.k, token: m.token, refusedAt: -1, lastAcceptAt: -1, probedAccepted: false, timer: undefined };
    held = h;
    if (!(await check(h))) throw new Error('a fresh token was refused');
    if (POLL_MS > 0) h.timer = setInterval(() => void check(h), POLL_MS);
    process.send({ type: 'held', k: m.k });
  } else if (m.type === 'probe') {
    const h = held;
    const accepted = await check(h);
    h.probedAccepted = accepted;
    process.send({ type: 'probe', k: m.k, accepted, at: wall(), refusedAt: h.refusedAt, lastAcceptAt: h.lastAcceptAt, journal: verifier.status().journal });
  } else if (m.type === 'exit') {
    await verifier.close();
    process.exit(0);
  }
});

// On a loaded machine the first attempt may time out: the library retries with backoff; wait for it to be live.
if (!(await verifier.ready())) {
  await new Promise((resolve) => {
    const off = verifier.onStatus((s) => s.connected && (off(), resolve()));
  });
}
process.send({ type: 'ready', journal: verifier.status().journal });
