// The agents' side of every load figure, in a worker thread of its own (bench/load.ts starts it): each agent
// resumes its session over its own WebSocket, as a reconnecting agent does, and the HTTP clients run here too.
// In use, agents and the editor are separate processes; sharing one event loop and heap with the bench's editor
// (which receives every audit record over the IPC pipe) made the editor's garbage collection pause all 16 agents.
import { parentPort } from 'node:worker_threads';
import WebSocket from 'ws';
import { WritClient } from '../broker/sdk/client';
import { formLoad } from './httpc';
import { SECONDS, closedLoop, pacedLoop } from './stats';
import type { LoadFigure } from './stats';
import type { LoadRequest } from './load';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

let agents: { client: WritClient; grantId: string }[] = [];

async function run(req: LoadRequest): Promise<LoadFigure | null> {
  switch (req.op) {
    case 'connect':
      agents = await Promise.all(
        req.agents.map(async (a) => {
          const { client } = await WritClient.asAgent({ name: a.name, kind: 'script', version: '1.0', session: a.session }, req.address);
          return { client, grantId: a.grantId };
        }),
      );
      return null;
    case 'ws': {
      const mint = (w: number) => agents[w]!.client.call('token.mint', { grantId: agents[w]!.grantId });
      return req.rate === undefined ? closedLoop(req.clients, mint, req.seconds) : pacedLoop(req.clients, req.rate, mint, req.seconds);
    }
    case 'exchange': {
      // Each client presents its own parent token and gets a sub-agent token, audited before the answer.
      const bodies: string[] = [];
      for (let i = 0; i < req.clients; i++) {
        const { token } = await agents[i]!.client.call('token.mint', { grantId: agents[i]!.grantId });
        bodies.push(new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: ACCESS_TOKEN, actor_name: 'bench-sub' }).toString());
      }
      return formLoad({ url: req.url, bodies, clients: req.clients, seconds: req.seconds ?? SECONDS });
    }
    case 'post':
      return formLoad({ url: req.url, bodies: [req.body], headers: req.headers, clients: req.clients, seconds: req.seconds ?? SECONDS });
    case 'floor': {
      // Bare clients: no SDK, no schema; each frame answered by id.
      const conns = await Promise.all(
        Array.from({ length: req.clients }, async () => {
          const ws = new WebSocket(`ws+unix:${req.socket}:/`, { perMessageDeflate: false });
          await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
          const waiting = new Map<number, () => void>();
          ws.on('message', (data) => {
            const { id } = JSON.parse(data.toString()) as { id: number };
            waiting.get(id)?.();
            waiting.delete(id);
          });
          return { ws, waiting, next: 0 };
        }),
      );
      try {
        const mint = (w: number) => {
          const c = conns[w]!;
          const id = c.next++;
          return new Promise<void>((resolve) => {
            c.waiting.set(id, resolve);
            c.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'token.mint', params: { grantId: 'grt_floor' } }));
          });
        };
        return await (req.rate === undefined ? closedLoop(req.clients, mint, req.seconds) : pacedLoop(req.clients, req.rate, mint, req.seconds));
      } finally {
        for (const c of conns) c.ws.close();
      }
    }
    case 'close':
      await Promise.all(agents.map((a) => a.client.close()));
      agents = [];
      return null;
  }
}

parentPort!.on('message', (req: LoadRequest & { id: number }) => {
  run(req).then(
    (figure) => parentPort!.postMessage({ id: req.id, figure }),
    (e: unknown) => parentPort!.postMessage({ id: req.id, error: e instanceof Error ? e.message : String(e) }),
  );
});
