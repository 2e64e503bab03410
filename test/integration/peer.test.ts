// Process identity from the kernel: a separate agent process connects over the Unix socket and over loopback TCP,
// and the broker names it exactly (pid, uid, executable and its hash, start time, parents) in the agent view, the
// approval request and the audit record, without the agent saying any of it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { BrokerProcess, ROOT, approveAll, requireKeyring } from '../helpers/broker';
import { stillSame } from '../../broker/net/peer';
import type { PeerProcess } from '../../broker/protocol';

requireKeyring();

const linux = process.platform === 'linux';

// A plain Node agent (no Writ SDK): hello, ask for a task, print each answer as a line, live until stdin ends.
const AGENT = `
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1], { headers: { host: 'localhost' }, perMessageDeflate: false });
const send = (id, method, params) => ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
ws.on('open', () => send(1, 'hello', { protocol: 'writ/1', agent: { name: 'child-agent', kind: 'script' } }));
ws.on('message', (d) => {
  const m = JSON.parse(d.toString());
  process.stdout.write(JSON.stringify(m) + '\\n');
  if (m.id === 1) send(2, 'task.request', { task: 'identify me', scopes: ['repo:read:acme/web'], audience: 'https://api.example' });
});
ws.on('error', (e) => { process.stderr.write(String(e)); process.exit(3); });
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

interface Agent {
  child: ChildProcess;
  lines: any[];
  next(): Promise<any>;
  exited: Promise<unknown>;
}

function startAgent(url: string): Agent {
  const child = spawn(process.execPath, ['-e', AGENT, url], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: any[] = [];
  const waiters: ((m: any) => void)[] = [];
  let buf = '';
  child.stdout!.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const m = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(m);
      else lines.push(m);
    }
  });
  const exited = new Promise((r) => child.on('exit', r));
  return { child, lines, exited, next: () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r))) };
}

function statStartTime(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(text.slice(text.lastIndexOf(')') + 1).trim().split(/\s+/)[19]);
}

describe.skipIf(!linux)('process identity (Linux)', () => {
  let b: BrokerProcess;
  const exe = realpathSync(process.execPath);
  const exeHash = createHash('sha256').update(readFileSync(exe)).digest('hex');
  beforeAll(async () => {
    b = await BrokerProcess.start();
    await b.follow(true); // the audit records naming the process are read from the stream
    b.decide = approveAll;
  });
  afterAll(async () => {
    await b.stop();
  });

  for (const transport of ['unix', 'tcp'] as const) {
    it(`names the agent process on the other end of ${transport === 'unix' ? 'the Unix socket' : 'loopback TCP'} from the kernel`, async () => {
      const url = transport === 'unix' ? `ws+unix://${b.discovery.socketPath}:/` : b.discovery.wsUrl;
      const agent = startAgent(url);
      const pid = agent.child.pid!;
      const hello = await agent.next();
      expect(hello.result?.protocol).toBe('writ/1');
      const agentId: string = hello.result.agentId;
      const granted = await agent.next();
      expect(granted.result?.grant.agentId).toBe(agentId);

      const expected = {
        pid,
        uid: process.getuid!(),
        exe,
        startTime: statStartTime(pid),
        sha256: exeHash,
      };
      // What the broker shows of the agent.
      const { client } = await b.agent('observer');
      const view = (await client.call('agents.list', {})).agents.find((a) => a.id === agentId)!;
      await client.close();
      const proc = view.process as PeerProcess;
      expect(proc).toMatchObject(expected);
      expect(proc.ppidChain![0]).toEqual({ pid: process.pid, name: 'node' });
      expect(proc.ppidChain!.map((p) => p.pid)).toContain(process.pid);
      expect(proc.ppidChain!.length).toBeLessThanOrEqual(8);

      // The developer saw it in the approval request, and the audit log has it.
      const request = b.requests.find((r) => r.agent.id === agentId)!;
      expect(request.agent.process).toMatchObject(expected);
      const connected = b.records.find((r) => r.event === 'agent.connected' && r.agent?.id === agentId)!;
      expect(connected.agent!.process).toMatchObject(expected);
      // A token's own record names that process by reference: pid, start time and executable, the rest is above.
      const minted = b.records.find((r) => r.event === 'token.minted' && r.agent?.id === agentId)!;
      expect(minted.agent!.process).toEqual({ pid, startTime: expected.startTime, exe });

      // Bound to pid and start time: the same process while it lives, and no longer once it has exited.
      expect(await stillSame(proc)).toBe(true);
      expect(await stillSame({ pid, startTime: proc.startTime! + 1 })).toBe(false);
      agent.child.stdin!.end();
      await agent.exited;
      expect(await stillSame(proc)).toBe(false);
    });
  }

  it('a client that says nothing about itself is still identified: the name it declares is not its process', async () => {
    const { client, hello } = await b.agent('claims-to-be-vscode');
    const view = (await client.call('agents.list', {})).agents.find((a) => a.id === hello.agentId)!;
    await client.close();
    // This test process connected: its own pid, not a name.
    expect(view.process).toMatchObject({ pid: process.pid, exe, startTime: statStartTime(process.pid) });
  });
});
