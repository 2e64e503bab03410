// A grant revocation covering thousands of live tokens, against the real broker: it reaches a real verifier, which
// then refuses those tokens (seen before or not), and a subscriber that does not acknowledge and takes frames of at
// most 64 KiB (the bound the broker holds its own inbound frames to) gets it in one small frame and stays connected.
// And thousands of tokens revoked one by one: a later subscription's snapshot comes within that bound, paged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { BrokerProcess, approveAll, requireKeyring } from '../helpers/broker';
import { createVerifier } from '../../broker/sdk/verify';
import type { Verifier } from '../../broker/sdk/verify';
import { WritClient } from '../../broker/sdk/client';
import { MAX_FRAME_BYTES } from '../../broker/protocol';
import { codeOf } from '../helpers/codes';
import { until } from '../helpers/until';

requireKeyring();

const AUD = 'https://api.example';
/** Enough that the jtis alone (about 23 bytes each as JSON) would be nearly twice the subscriber's frame limit. */
const TOKENS = 5_000;

/** A bare WebSocket subscriber as a resource without the SDK might write one: no acknowledgement, a frame limit. */
function limitedSubscriber(url: string): Promise<{ ws: WebSocket; frames: Buffer[]; closed: { code?: number } }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, headers: { host: 'localhost' } });
    const frames: Buffer[] = [];
    const closed: { code?: number } = {};
    ws.on('close', (code) => (closed.code = code));
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.method === 'revocation') frames.push(d as Buffer);
      else if (m.id === 1) m.result?.subscribed?.[0] === 'revocation' ? resolve({ ws, frames, closed }) : reject(new Error('not subscribed'));
    });
    ws.once('open', () => ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'subscribe', params: { events: ['revocation'] } })));
    ws.once('error', reject);
  });
}

describe('a grant revocation covering thousands of tokens', { timeout: 180_000 }, () => {
  let b: BrokerProcess;
  let agent: WritClient;
  let v: Verifier;
  beforeAll(async () => {
    b = await BrokerProcess.start();
    b.decide = approveAll;
    b.retain = false; // thousands of mint records: none is read here
    agent = (await b.agent('bulk-minter')).client;
    v = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, reportUse: false });
    expect(await v.ready()).toBe(true);
  });
  afterAll(async () => {
    await v.close();
    await agent.close();
    await b.stop();
  });

  it('reaches the verifier, which refuses each of those tokens, and every subscriber stays connected', async () => {
    const sub = await limitedSubscriber(b.discovery.wsUrl);
    const r = await agent.call('task.request', { task: 'bulk', scopes: ['repo:read:acme/*'], audience: AUD, ttl: 3600 });
    const tokens = [r.token.token];
    while (tokens.length < TOKENS) {
      const batch = Math.min(200, TOKENS - tokens.length);
      const minted = await Promise.all(Array.from({ length: batch }, () => agent.call('token.mint', { grantId: r.grant.id })));
      tokens.push(...minted.map((t) => t.token));
    }
    const other = await agent.call('task.request', { task: 'other', scopes: ['repo:read:acme/web'], audience: AUD, ttl: 3600 });
    const seen = [tokens[0]!, tokens[TOKENS / 2]!, tokens[TOKENS - 1]!];
    for (const t of seen) expect((await v.verify(t)).grantId).toBe(r.grant.id);

    const res = await agent.call('revoke', { target: { kind: 'grant', id: r.grant.id } });
    expect(res).toEqual({ revokedTokens: TOKENS, revokedGrants: 1, revokedAgents: 0 });
    // The verifier acknowledged before the call returned: tokens it had accepted, and ones it never saw, are refused.
    for (const t of [...seen, tokens[1]!, tokens[1234]!, tokens[TOKENS - 2]!]) expect(await codeOf(v.verify(t))).toBe('WRIT_TOKEN_REVOKED');
    expect(v.status()).toMatchObject({ connected: true, revocationsMalformed: 0 });

    // The subscriber without acknowledgement: one frame naming the grant, no jti, far under its limit.
    const [frame] = await until(() => {
      if (sub.closed.code !== undefined) throw new Error(`the subscriber was cut off (close code ${sub.closed.code})`);
      return sub.frames.length > 0 ? sub.frames : undefined;
    });
    expect(sub.frames).toHaveLength(1);
    expect(frame!.byteLength).toBeLessThan(300);
    const params = JSON.parse(frame!.toString()).params;
    expect(params).toEqual({ target: { kind: 'grant', id: r.grant.id }, at: expect.any(Number), jtis: [], agentIds: [], taskIds: [], grantIds: [r.grant.id] });
    expect(sub.ws.readyState).toBe(WebSocket.OPEN);
    expect(sub.closed.code).toBeUndefined();

    // Both still hear revocations: the other grant's token is accepted, then refused once revoked by jti.
    expect((await v.verify(other.token.token)).grantId).toBe(other.grant.id);
    expect(await agent.call('revoke', { target: { kind: 'token', jti: other.token.jti } })).toEqual({ revokedTokens: 1, revokedGrants: 0, revokedAgents: 0 });
    expect(await codeOf(v.verify(other.token.token))).toBe('WRIT_TOKEN_REVOKED');
    await until(() => (sub.frames.length === 2 ? true : undefined));
    expect(JSON.parse(sub.frames[1]!.toString()).params).toMatchObject({ target: { kind: 'token', jti: other.token.jti }, jtis: [other.token.jti] });
    expect(sub.closed.code).toBeUndefined();
    sub.ws.close();
  });
});

describe('a subscription after thousands of tokens were revoked one by one', { timeout: 300_000 }, () => {
  /** Enough jtis (about 23 bytes each as JSON) that the snapshot alone is past a 64 KiB frame. */
  const REVOKED = 3_200;

  it('answers within the frame limit and pages the rest; a new verifier has all of it before it is live', async () => {
    const b = await BrokerProcess.start();
    b.decide = approveAll;
    b.retain = false;
    const agent = (await b.agent('one-by-one')).client;
    try {
      const r = await agent.call('task.request', { task: 'many', scopes: ['repo:read:acme/*'], audience: AUD, ttl: 3600 });
      const minted: { jti: string; token: string }[] = [];
      while (minted.length < REVOKED) {
        const batch = await Promise.all(Array.from({ length: 200 }, () => agent.call('token.mint', { grantId: r.grant.id })));
        minted.push(...batch.map((t) => ({ jti: t.jti, token: t.token })));
        await Promise.all(batch.map((t) => agent.call('revoke', { target: { kind: 'token', jti: t.jti } })));
      }
      const live = await agent.call('token.mint', { grantId: r.grant.id });

      // A bare subscriber with a 64 KiB frame limit: the answer fits, says `more`, and the pages bring the rest.
      const ws = new WebSocket(b.discovery.wsUrl, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, headers: { host: 'localhost' } });
      const answers = new Map<number, { result?: any; error?: any }>();
      const sizes: number[] = [];
      let closed: number | undefined;
      ws.on('close', (code) => (closed = code));
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString());
        if (m.id !== undefined) {
          sizes.push((d as Buffer).byteLength);
          answers.set(m.id, m);
        }
      });
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      const call = async (id: number, method: string, params: object) => {
        ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
        return until(() => {
          if (closed !== undefined) throw new Error(`the subscriber was cut off (close code ${closed})`);
          return answers.get(id);
        });
      };
      const first = await call(1, 'subscribe', { events: ['revocation'], paged: true });
      const snap = first.result.revocations;
      expect(snap.more).toBe(true);
      expect(snap.grantIds).toEqual([]);
      const jtis: string[] = [...snap.jtis];
      for (let id = 2, more = true; more; id++) {
        const page = await call(id, 'revocations.page', { after: jtis.length });
        expect([page.result.grantIds, page.result.taskIds, page.result.agentIds]).toEqual([[], [], []]);
        jtis.push(...page.result.jtis);
        more = page.result.more === true;
      }
      expect(jtis.length).toBe(REVOKED);
      expect(new Set(jtis)).toEqual(new Set(minted.map((t) => t.jti)));
      expect(Math.max(...sizes)).toBeLessThanOrEqual(MAX_FRAME_BYTES);
      expect(sizes.length).toBeGreaterThanOrEqual(2); // the answer, then at least one page
      // Paged to the end: asking again is refused with its code, and the connection stays.
      expect((await call(99, 'revocations.page', { after: 0 })).error.data.code).toBe('WRIT_BAD_REQUEST');
      expect(closed).toBeUndefined();
      ws.close();

      // A subscriber that does not page (an older one) still gets the snapshot whole, as before.
      const old = await WritClient.connect(b.discovery.wsUrl);
      try {
        const whole = await old.call('subscribe', { events: ['revocation'] });
        expect(whole.revocations?.more).toBeUndefined();
        expect(new Set(whole.revocations?.jtis)).toEqual(new Set(jtis));
      } finally {
        await old.close();
      }

      // A verifier started now: the tokens revoked on the last page are refused from its first answer on.
      const v = createVerifier({ broker: b.discovery.httpUrl, audience: AUD, reportUse: false });
      try {
        expect(await v.ready()).toBe(true);
        const last = minted.find((t) => t.jti === jtis.at(-1))!;
        expect(await codeOf(v.verify(last.token))).toBe('WRIT_TOKEN_REVOKED');
        expect(await codeOf(v.verify(minted[0]!.token))).toBe('WRIT_TOKEN_REVOKED');
        expect((await v.verify(live.token)).grantId).toBe(r.grant.id);
      } finally {
        await v.close();
      }
    } finally {
      await agent.close();
      await b.stop();
    }
  });
});
