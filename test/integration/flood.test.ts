// One agent flooding the broker cannot starve the developer's prompts or other agents: its waiting requests
// are bounded, a request burst gets it blocked with a clear code, and meanwhile another agent is asked about,
// approved and served. Ordering is asserted, never wall-clock time.
import { describe, expect, it } from 'vitest';
import { BrokerProcess, approveAll, freshEnv, requireKeyring } from '../helpers/broker';
import { WritError } from '../../broker/errors';
import { codeOf } from '../helpers/codes';

requireKeyring();


describe('flood', () => {
  it('thousands of mints from one agent do not hold up another agent or the developer', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client: flooder } = await b.agent('flooder');
    const grant = (await flooder.call('task.request', { task: 'flood', scopes: ['repo:read:a'], audience: 'aud' })).grant;
    // A burst past the per-connection bounds, then waves of mints for as long as the other agent waits (at most
    // MAX_WAVES): a broker that made the other agent wait for the flood would run every wave before serving it.
    const MAX_WAVES = 40;
    let otherServed = false;
    const burst = Promise.all(Array.from({ length: 3000 }, () => codeOf(flooder.call('token.mint', { grantId: grant.id }))));
    const waves = (async () => {
      await burst;
      let n = 0;
      while (!otherServed && n < MAX_WAVES) {
        await Promise.all(Array.from({ length: 1000 }, () => codeOf(flooder.call('token.mint', { grantId: grant.id }))));
        n++;
      }
      return n;
    })();
    const { client: other } = await b.agent('other');
    const r = await other.call('task.request', { task: 'meanwhile', scopes: ['repo:read:b'], audience: 'aud' });
    otherServed = true;
    const codes = await burst;
    // Past the per-connection bound (16 worked on, 1,024 waiting) the flood is refused at once, with its code.
    expect(codes.filter((c) => c === 'resolved').length).toBeGreaterThanOrEqual(16 + 1024);
    expect(codes.filter((c) => c !== 'resolved').every((c) => c === 'WRIT_RATE_LIMITED')).toBe(true);
    expect(codes.filter((c) => c === 'WRIT_RATE_LIMITED').length).toBeGreaterThan(0);
    expect(r.token.scopes).toEqual(['repo:read:b']);
    expect(b.requests.at(-1)?.agent.name).toBe('other');
    // Served while the flood went on, not after it.
    expect(await waves).toBeLessThan(MAX_WAVES);
    await flooder.close();
    await other.close();
    await b.stop();
  });

  it('waiting requests are bounded per agent, and a request burst ends in a block, each with its code', async () => {
    const b = await BrokerProcess.start(freshEnv());
    b.decide = () => null; // the developer is away
    const { client } = await b.agent('spammer');
    const calls = Array.from({ length: 40 }, (_, i) => codeOf(client.call('task.request', { task: `t${i}`, scopes: ['repo:read:a'], audience: 'aud' })));
    // Give the first ones time to register before anything ends them.
    for (let i = 0; i < 200 && b.requests.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    expect(b.requests).toHaveLength(4); // the per-agent bound: only four prompts ever reach the developer
    const codes = await Promise.all(calls);
    const counts = codes.reduce<Record<string, number>>((m, c) => ((m[c] = (m[c] ?? 0) + 1), m), {});
    // Four waited until the block revoked the agent; the rest were refused for being too many, then blocked.
    expect(Object.keys(counts).sort()).toEqual(['WRIT_AGENT_BLOCKED', 'WRIT_TOKEN_REVOKED', 'WRIT_TOO_MANY_PENDING']);
    expect(counts.WRIT_TOKEN_REVOKED).toBe(4);
    expect(b.requests).toHaveLength(4);
    await client.close().catch(() => undefined);
    await b.stop();
  });
});
