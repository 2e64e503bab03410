// One subscribed verifier in its own process, built on the shipped library (dist/verify.mjs). Driven over IPC by
// bench/revocation.ts. Times are wall-clock ms (performance.timeOrigin + performance.now()), comparable across
// processes on one machine.
//   parent → {type:'token', k, token}  verify it (a first sight), hold it, check it every millisecond
//   parent → {type:'probe', k}         check it now (sent right after the revoke call returned)
//   child  → {type:'held', k} | {type:'refused', k, at, lastAcceptAt} | {type:'probe', k, accepted, at}
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

// The optional fourth argument is another build's verify.mjs (bench/revocation.ts's before/after run).
const [broker, audience, scope, verifyModule] = process.argv.slice(2);
const { createVerifier } = await import(verifyModule ? pathToFileURL(verifyModule).href : '../dist/verify.mjs');
const wall = () => performance.timeOrigin + performance.now();
// Use reports off: the figure is the revocation path alone, not the broker auditing 16 000 uses a second.
const verifier = createVerifier({ broker, audience, reportUse: false });
let held; // { k, token, refused, lastAcceptAt, timer }
// How often the held token is checked besides on each revocation event and the probe; 0: never (event-driven only).
const POLL_MS = Number(process.env.WRIT_BENCH_VERIFIER_POLL_MS ?? 1);

async function check(h) {
  if (h.refused) return false;
  try {
    await verifier.verify(h.token, { scope });
    h.lastAcceptAt = wall();
    return true;
  } catch (e) {
    if (h.refused) return false;
    if (e?.code !== 'WRIT_TOKEN_REVOKED') throw e;
    h.refused = true;
    clearInterval(h.timer);
    process.send({ type: 'refused', k: h.k, at: wall(), lastAcceptAt: h.lastAcceptAt });
    return false;
  }
}

verifier.onRevocation(() => {
  if (held) void check(held);
});

process.on('message', async (m) => {
  if (m.type === 'token') {
    if (held) clearInterval(held.timer);
    const h = { k: m.k, token: m.token, refused: false, lastAcceptAt: -1, timer: undefined };
    held = h;
    if (!(await check(h))) throw new Error('a fresh token was refused');
    if (POLL_MS > 0) h.timer = setInterval(() => void check(h), POLL_MS);
    process.send({ type: 'held', k: m.k });
  } else if (m.type === 'probe') {
    const h = held;
    const accepted = await check(h);
    process.send({ type: 'probe', k: m.k, accepted, at: wall() });
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
process.send({ type: 'ready' });
