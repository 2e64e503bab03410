// A stand-in AI agent for the UI test, run as `writ exec … -- node agent.mjs EVENTS_FILE`: it records the token
// `writ exec` handed it, then keeps minting tokens from its grant (as an agent at work would) until the broker
// refuses. Every event goes to EVENTS_FILE as a JSON line with its wall-clock time, so the test can read what
// happened and when. After a refusal it stays alive: only `writ exec` stopping it (SIGTERM) ends it.
import { appendFileSync } from 'node:fs';
import { WritClient, ENV_SESSION, ENV_TOKEN } from '../../broker/sdk/client';
import { asWritError } from '../../broker/errors';

/** What the agent writes, one per line. */
export type AgentEvent =
  | { type: 'token'; token: string }
  | { type: 'connected' }
  | { type: 'minted'; count: number }
  | { type: 'done'; count: number; ms: number }
  | { type: 'refused'; code: string }
  | { type: 'closed'; code: number }
  | { type: 'signal'; signal: string };

const eventsFile = process.argv[2];
if (!eventsFile) throw new TypeError('usage: agent.mjs EVENTS_FILE');
const record = (e: AgentEvent): void => appendFileSync(eventsFile, `${JSON.stringify({ t: Date.now(), ...e })}\n`);

process.on('SIGTERM', () => {
  record({ type: 'signal', signal: 'SIGTERM' });
  process.exit(143);
});

const token = process.env[ENV_TOKEN] ?? '';
record({ type: 'token', token });
// The grant the token came from (its `grant_id` claim): verification is the test's job, not this agent's.
const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { grant_id: string };

const { client } = await WritClient.asAgent({ name: process.env.WRIT_E2E_AGENT_NAME ?? 'e2e-agent', kind: 'e2e', session: process.env[ENV_SESSION] ?? '' });
record({ type: 'connected' });
client.onClose((code) => record({ type: 'closed', code }));

let minted = 0;
let refused = false;

// Bulk mode (WRIT_E2E_MINT_COUNT=N): mint N tokens as fast as the broker serves them, a few at a time, to fill
// the audit log with real, chained records; then keep the connection and wait to be stopped.
const bulk = Number(process.env.WRIT_E2E_MINT_COUNT) || 0;
if (bulk > 0) {
  const concurrency = Number(process.env.WRIT_E2E_MINT_CONCURRENCY) || 8;
  const t0 = Date.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < bulk && !refused) {
      next++;
      try {
        await client.call('token.mint', { grantId: claims.grant_id });
        minted++;
      } catch (e) {
        refused = true;
        record({ type: 'refused', code: asWritError(e).code });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (!refused) record({ type: 'done', count: minted, ms: Date.now() - t0 });
  setInterval(() => {}, 1 << 30);
}

while (!refused && bulk === 0) {
  try {
    await client.call('token.mint', { grantId: claims.grant_id });
    minted++;
    if (minted === 1) record({ type: 'minted', count: minted });
  } catch (e) {
    refused = true;
    record({ type: 'refused', code: asWritError(e).code });
  }
  // About as often as a busy agent calls an API; slow enough that the audit panel stays readable.
  // WRIT_E2E_MINT_INTERVAL_MS changes it (e.g. 20 to flood the editor by hand).
  await new Promise((r) => setTimeout(r, Number(process.env.WRIT_E2E_MINT_INTERVAL_MS) || 1000));
}
// Refused: wait to be stopped (the test checks that `writ exec` ends this process).
setInterval(() => {}, 1 << 30);
