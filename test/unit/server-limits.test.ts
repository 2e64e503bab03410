// The listener's connection limits (broker/net/server.ts) on a real Unix socket, with each connection's process
// named by the test (ctx.own) rather than looked up: which connection a full broker closes to let a newcomer in,
// and when a request Node cannot parse is answered.
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { listen } from '../../broker/net/server';
import type { Listeners, ListenOptions } from '../../broker/net/server';

const running: { l: Listeners; dir: string }[] = [];
afterEach(async () => {
  for (const { l, dir } of running.splice(0)) {
    await l.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** A listener for at most `max` connections; `open(owner, say)` connects as that process, sending a frame or not. */
async function listener(max: number, http: ListenOptions['http'] = (_q, r) => r.end('ok')) {
  const dir = await mkdtemp(join(tmpdir(), 'writ-limits-'));
  const socketPath = join(dir, 's.sock');
  const owners: (string | undefined)[] = [];
  const l = await listen({
    socketPath,
    port: 0,
    maxConnections: max,
    unixReserved: 0,
    http,
    onConnection: (ws, ctx) => {
      const o = owners.shift();
      if (o) ctx.own(o);
      ws.on('message', () => undefined);
    },
  });
  running.push({ l, dir });
  const open = (owner: string | undefined, say: boolean) =>
    new Promise<{ closed: number[] }>((resolve, reject) => {
      owners.push(owner);
      const ws = new WebSocket(`ws+unix://${socketPath}:/`, { perMessageDeflate: false });
      const closed: number[] = [];
      ws.on('close', (c) => closed.push(c));
      ws.on('error', reject);
      ws.on('open', () => {
        if (say) ws.send('{}');
        setTimeout(() => resolve({ closed }), 30);
      });
    });
  return { socketPath, open };
}
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a full listener makes room', () => {
  it('closes from a process holding many connections before anything silent in its grace', async () => {
    const { open } = await listener(8);
    const flood: { closed: number[] }[] = [];
    for (let i = 0; i < 6; i++) flood.push(await open('F', true));
    const fresh = await open('B', false);
    await open('C', true);
    await open('N', true); // the ninth
    await wait(100);
    expect({ flood: flood.map((c) => c.closed), fresh: fresh.closed }).toEqual({ flood: [[4029], [], [], [], [], []], fresh: [] });
  });
});

describe('a request Node cannot parse', () => {
  it('is answered on a kept-alive socket whose earlier reply is whole, and not once a reply has begun', async () => {
    const ran: string[] = [];
    const { socketPath } = await listener(8, (q, r) => {
      ran.push(q.url!);
      if (q.url === '/stream') {
        r.writeHead(200);
        r.write('part1;');
        setTimeout(() => r.end('part2'), 300);
      } else r.end('ok');
    });
    const big = `GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`;
    const talk = (first: string, then: (s: ReturnType<typeof connect>) => void) =>
      new Promise<string>((resolve) => {
        const s = connect(socketPath);
        let got = '';
        s.on('data', (d) => (got += d.toString('latin1')));
        s.on('error', () => undefined);
        s.on('close', () => resolve(got));
        s.write(first);
        then(s);
        setTimeout(() => s.destroy(), 800);
      });
    // The first reply whole, then the oversized request on the same socket: answered 431.
    const kept = await talk('GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', (s) => setTimeout(() => s.write(big), 100));
    expect(kept.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(kept).toContain('HTTP/1.1 431 Request Header Fields Too Large');
    // Pipelined behind a reply already under way: never written into the middle of it.
    const due = await talk(`GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n${big}`, () => undefined);
    expect(due).not.toContain('431');
    expect(ran).toEqual(['/fast', '/stream']);
  });
});
