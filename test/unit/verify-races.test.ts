// writ/verify against a stand-in broker that answers when the test says: races a real broker cannot be made to
// show on demand (a revocation while a use is being recorded; a malformed event about a cached token).
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import { randomIds, systemClock } from '../../broker/core/clock';
import { TokenMinter } from '../../broker/core/tokens';
import { createVerifier } from '../../broker/sdk/verify';
import { codeOf } from '../helpers/codes';

const AUD = 'https://api.example';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const KID = 'k1';
async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !ok(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}

describe('writ/verify: what a stand-in broker makes it decide', () => {
  const http = createServer();
  const wss = new WebSocketServer({ server: http });
  let base = '';
  let subscriber: WebSocket | undefined;
  let holdSubscribe = false;
  const held: (() => void)[] = [];
  /** token.uses answers waiting (the broker's durable write in progress). */
  const usesHeld: { answer: () => void; jti: string }[] = [];
  let minter: TokenMinter;
  const acks: unknown[] = [];

  beforeAll(async () => {
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const x = publicKey.export({ format: 'jwk' }).x;
    http.on('request', (req, res) => {
      const body = req.url === '/.well-known/oauth-authorization-server' ? { issuer: base, jwks_uri: `${base}/jwks` } : req.url === '/jwks' ? { keys: [{ kty: 'OKP', crv: 'Ed25519', x, kid: KID }] } : undefined;
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? {}));
    });
    wss.on('connection', (ws) => {
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString());
        if (m.method === 'subscribe') {
          const answer = () => {
            subscriber = ws;
            ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { subscribed: ['revocation'], revocations: { jtis: [], grantIds: ['grt_bad'], agentIds: [] } } }));
          };
          if (holdSubscribe) held.push(answer);
          else answer();
        } else if (m.method === 'revocation.ack') acks.push(m.params);
        else if (m.method === 'token.uses') {
          usesHeld.push({ jti: m.params.jti, answer: () => ws.send(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { recorded: m.params.calls.length } })) });
        }
      });
    });
    minter = new TokenMinter(base, () => ({ kid: KID, privateKey }), systemClock, randomIds);
  });
  afterAll(async () => {
    wss.close();
    await new Promise((r) => http.close(r));
  });
  const mint = async (grantId: string) => {
    const { token, claims } = minter.mint({ user: 'dev@example.com', chain: ['agt_1'], audience: AUD, scopes: ['repo:read:acme/web'], taskId: 'task_1', grantId, ttlSeconds: 300 });
    return { token: await token, claims };
  };
  const push = (params: unknown) => subscriber!.send(JSON.stringify({ jsonrpc: '2.0', method: 'revocation', params }));

  it('authorize: a revocation applied (and acknowledged) while the use is being recorded is not let through', async () => {
    const v = createVerifier({ broker: base, audience: AUD });
    try {
      expect(await v.ready()).toBe(true);
      const { token, claims } = await mint('grt_race');
      const pending = codeOf(v.authorize(token, { calls: [{ resource: 'repo', action: 'read', target: 'acme/web' }] }));
      await until('the use report', () => usesHeld.length === 1);
      // The revocation arrives (same socket, before the answer), is applied and acknowledged: `writ revoke` returns.
      push({ target: { kind: 'grant', id: 'grt_race' }, at: claims.iat, jtis: [], agentIds: [], taskIds: [], grantIds: ['grt_race'], seq: 9 });
      await until('the ack', () => acks.length === 1);
      expect(await codeOf(v.verify(token))).toBe('WRIT_TOKEN_REVOKED');
      usesHeld.shift()!.answer();
      expect(await pending).toBe('WRIT_TOKEN_REVOKED');
    } finally {
      await v.close();
    }
  });

  it('a malformed event (what it revoked is unknown): a cached token is refused too until the list is read again', async () => {
    const v = createVerifier({ broker: base, audience: AUD, reportUse: false });
    try {
      expect(await v.ready()).toBe(true);
      const { token, claims } = await mint('grt_bad2');
      expect((await v.verify(token)).grantId).toBe('grt_bad2');
      holdSubscribe = true;
      push({ target: { kind: 'grant', id: 'grt_bad2' }, at: claims.iat, jtis: [], agentIds: [], taskIds: [], seq: 10, grantIds: 'grt_bad2', newField: 1 });
      await until('malformed', () => v.status().revocationsMalformed === 1);
      expect(v.status().connected).toBe(false);
      // The event revoked this very grant; the verifier cannot know, yet answers from its cache:
      expect(await codeOf(v.verify(token))).toBe('WRIT_BROKER_UNREACHABLE');
    } finally {
      holdSubscribe = false;
      for (const h of held.splice(0)) h();
      await v.close();
    }
  });
});
