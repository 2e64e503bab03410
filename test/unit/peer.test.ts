// The kernel-table parsers behind process identity, on fixture lines: /proc/net/tcp(6), `ss -xpnH`, /proc/<pid>/stat
// and status. Exact values, so a column off by one fails.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, endianness } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConnectionLookup,
  MAX_CONCURRENT_LOOKUPS,
  PeerIdentifier,
  TcpInodeFinder,
  findTcpClientInode,
  findUnixPeerPids,
  normalizeAddress,
  parseProcNetTcpLine,
  parseProcStat,
  parseSsUnixLine,
  connectedLineage,
  parseStatusUid,
  procLineage,
} from '../../broker/net/peer';
import type { PeerAddress } from '../../broker/net/peer';
import type { PeerProcess } from '../../broker/protocol';

const TCP_HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
// A client (127.0.0.1:49400) connected to a server on 127.0.0.1:37945, as a little-endian host prints it.
const TCP_CLIENT = '   3: 0100007F:C0F8 0100007F:9439 01 00000000:00000000 00:00000000 00000000  1000        0 92078 1 0000000000000000 20 4 30 10 -1';
// The server's accepted socket for the same connection (the other direction).
const TCP_SERVER = '   4: 0100007F:9439 0100007F:C0F8 01 00000000:00000000 00:00000000 00000000  1000        0 92079 1 0000000000000000 20 4 30 10 -1';
const TCP_LISTEN = '   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1059 1 00000000b6dbacac 100 0 0 10 0';
const TCP_TIME_WAIT = '   1: 0100007F:C0F8 0100007F:9439 06 00000000:00000000 03:00000A48 00000000     0        0 0 3 000000009fb2a271';
const TCP6_MAPPED = '   0: 0000000000000000FFFF00000100007F:C0F8 0000000000000000FFFF00000100007F:9439 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 20 4 30 10 -1';
const TCP6_LOOPBACK = '   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 778 1 0000000000000000 20 4 30 10 -1';

describe('/proc/net/tcp rows', () => {
  it('decodes a little-endian IPv4 row: addresses, ports, state, uid and inode', () => {
    expect(parseProcNetTcpLine(TCP_CLIENT, 'LE')).toEqual({
      local: { address: '127.0.0.1', port: 49400 },
      remote: { address: '127.0.0.1', port: 37945 },
      state: 1,
      uid: 1000,
      inode: 92078,
    });
    expect(parseProcNetTcpLine(TCP_LISTEN, 'LE')).toEqual({
      local: { address: '0.0.0.0', port: 2024 },
      remote: { address: '0.0.0.0', port: 0 },
      state: 10,
      uid: 0,
      inode: 1059,
    });
  });

  it('reads the same hex in host order on a big-endian host', () => {
    expect(parseProcNetTcpLine('   0: 7F000001:0050 7F000001:C350 01 00000000:00000000 00:00000000 00000000   501        0 42 1 0 20 4 30 10 -1', 'BE')).toEqual({
      local: { address: '127.0.0.1', port: 80 },
      remote: { address: '127.0.0.1', port: 50000 },
      state: 1,
      uid: 501,
      inode: 42,
    });
  });

  it('decodes tcp6 rows: an IPv4-mapped address as IPv4, ::1 as eight groups', () => {
    expect(parseProcNetTcpLine(TCP6_MAPPED, 'LE')).toMatchObject({ local: { address: '127.0.0.1', port: 49400 }, remote: { address: '127.0.0.1', port: 37945 }, inode: 777 });
    expect(parseProcNetTcpLine(TCP6_LOOPBACK, 'LE')).toMatchObject({ local: { address: '0:0:0:0:0:0:0:1', port: 8080 }, remote: { address: '0:0:0:0:0:0:0:1', port: 54321 }, inode: 778 });
  });

  it('ignores the header and garbage', () => {
    expect(parseProcNetTcpLine(TCP_HEADER, 'LE')).toBeUndefined();
    expect(parseProcNetTcpLine('', 'LE')).toBeUndefined();
    expect(parseProcNetTcpLine('   0: 0100007F 0100007F:9439 01 x x x 0 0 1', 'LE')).toBeUndefined();
  });

  it("finds the client's own socket by the four-tuple, never the server's end or a TIME_WAIT row", () => {
    const rows = [TCP_HEADER, TCP_TIME_WAIT, TCP_SERVER, TCP_LISTEN, TCP_CLIENT].map((l) => parseProcNetTcpLine(l, 'LE')).filter((r) => r !== undefined);
    const conn = { transport: 'tcp' as const, localAddress: '127.0.0.1', localPort: 37945, remoteAddress: '127.0.0.1', remotePort: 49400 };
    expect(findTcpClientInode(rows, conn)).toBe(92078);
    expect(findTcpClientInode(rows, { ...conn, remoteAddress: '::ffff:127.0.0.1', localAddress: '::ffff:127.0.0.1' })).toBe(92078);
    expect(findTcpClientInode(rows, { ...conn, remotePort: 49401 })).toBeUndefined();
  });

  it.skipIf(endianness() !== 'LE')('TcpInodeFinder: lookups that arrive together share one pass over the tables, each finding its own row', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-tcp-'));
    const tcp = join(dir, 'tcp');
    const tcp6 = join(dir, 'tcp6');
    writeFileSync(tcp, [TCP_HEADER, TCP_TIME_WAIT, TCP_SERVER, TCP_LISTEN, TCP_CLIENT, ''].join('\n'));
    writeFileSync(tcp6, [TCP_HEADER, TCP6_LOOPBACK].join('\n'));
    const finder = new TcpInodeFinder([tcp, tcp6, join(dir, 'absent')]);
    const conn = { transport: 'tcp' as const, localAddress: '127.0.0.1', localPort: 37945, remoteAddress: '127.0.0.1', remotePort: 49400 };
    const v6 = { transport: 'tcp' as const, localAddress: '::1', localPort: 54321, remoteAddress: '::1', remotePort: 8080 };
    const found = await Promise.all([finder.find(conn), finder.find(v6), finder.find({ ...conn, remotePort: 49401 }), finder.find({ ...conn, localPort: 1 })]);
    expect(found).toEqual([92078, 778, undefined, undefined]);
    // A lookup after the table changed reads it afresh.
    writeFileSync(tcp, [TCP_HEADER, TCP_SERVER].join('\n'));
    expect(await finder.find(conn)).toBeUndefined();
  });

  it('normalizes addresses the way Node and the kernel print them to one form', () => {
    expect(normalizeAddress('127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeAddress('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeAddress('::1')).toBe('0:0:0:0:0:0:0:1');
    expect(normalizeAddress('fe80::1:0:0:a')).toBe('fe80:0:0:0:1:0:0:a');
    expect(normalizeAddress('localhost')).toBeUndefined();
  });
});

// Lines as `ss -xpnH` prints them (captured on Debian, iproute2): a server with two clients on one path.
const SS = [
  'u_str ESTAB 0      0                 * 58817 * 58818 users:(("node",pid=20597,fd=28))',
  'u_str ESTAB 0      0                 * 58810 * 58811 users:(("node",pid=20608,fd=18))',
  'u_str ESTAB 0      0                 * 1056  * 1055                                  ',
  'u_str ESTAB 0      0      /run/user/1000/writ/writ.sock 58811 * 58810 users:(("node",pid=20597,fd=20))',
  'u_str ESTAB 0      0      /run/user/1000/writ/writ.sock 58821 * 58820 users:(("node",pid=20597,fd=21))',
  'u_str ESTAB 0      0                 * 58820 * 58821 users:(("bash",pid=30001,fd=3),("sleep",pid=30002,fd=3))',
];

describe('ss -xpnH rows', () => {
  it('parses paths, inodes and every process holding the socket', () => {
    expect(parseSsUnixLine(SS[3]!)).toEqual({
      state: 'ESTAB',
      localPath: '/run/user/1000/writ/writ.sock',
      localInode: 58811,
      peerPath: '*',
      peerInode: 58810,
      users: [{ name: 'node', pid: 20597, fd: 20 }],
    });
    expect(parseSsUnixLine(SS[2]!)).toEqual({ state: 'ESTAB', localPath: '*', localInode: 1056, peerPath: '*', peerInode: 1055, users: [] });
    expect(parseSsUnixLine(SS[5]!)!.users).toEqual([
      { name: 'bash', pid: 30001, fd: 3 },
      { name: 'sleep', pid: 30002, fd: 3 },
    ]);
    expect(parseSsUnixLine('garbage')).toBeUndefined();
  });

  it("finds the client's pids from the accepted socket's own inode, with several clients on one path", () => {
    const rows = SS.map(parseSsUnixLine).filter((r) => r !== undefined);
    expect(findUnixPeerPids(rows, 58811)).toEqual([20608]);
    expect(findUnixPeerPids(rows, 58821)).toEqual([30001, 30002]);
    expect(findUnixPeerPids(rows, 1)).toEqual([]);
  });
});

describe('/proc/<pid> files', () => {
  it('reads ppid (field 4) and start time (field 22) after the last parenthesis, whatever the command name holds', () => {
    const stat = '4242 (evil) 1 2 (x) S 1000 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 10000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0';
    expect(parseProcStat(stat)).toEqual({ ppid: 1000, startTime: 987654 });
    expect(parseProcStat('no parens here')).toBeUndefined();
  });

  it('takes the effective uid from status', () => {
    expect(parseStatusUid('Name:\tnode\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\nGid:\t1000\t1000\t1000\t1000\n')).toBe(1001);
    expect(parseStatusUid('Name:\tnode\n')).toBeUndefined();
  });

  it.skipIf(process.platform !== 'linux')('reads a live lineage again and again, and none once the process has exited', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const startTime = parseProcStat(readFileSync(`/proc/${child.pid}/stat`, 'utf8'))!.startTime;
    const first = procLineage(child.pid!);
    expect(first[0]).toEqual({ pid: child.pid, startTime });
    expect(first[1]).toEqual({ pid: process.pid, startTime: parseProcStat(readFileSync(`/proc/${process.pid}/stat`, 'utf8'))!.startTime });
    // Read again through the file kept open: the same answer.
    expect(procLineage(child.pid!)).toEqual(first);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // The open file names the process that is gone: not read as live, whatever now holds its pid.
    expect(procLineage(child.pid!).filter((p) => p.startTime === startTime)).toEqual([]);
  });

  it.skipIf(process.platform !== 'linux')('keeps a connected process lineage briefly, only for the start time it was read with', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const startTime = parseProcStat(readFileSync(`/proc/${child.pid}/stat`, 'utf8'))!.startTime;
    // A start time the process does not have is read fresh and not kept: the answer names the real one.
    expect(connectedLineage({ pid: child.pid!, startTime: startTime + 1 })[0]).toEqual({ pid: child.pid, startTime });
    const line = connectedLineage({ pid: child.pid!, startTime });
    expect(line.slice(0, 2)).toEqual(procLineage(child.pid!).slice(0, 2));
    // Asked again at once: the same line, not another read.
    expect(connectedLineage({ pid: child.pid!, startTime })).toBe(line);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // Whether it still runs is always read fresh.
    expect(procLineage(child.pid!).filter((p) => p.startTime === startTime)).toEqual([]);
  });
});

describe('ConnectionLookup: the process on a connection a resource reports', () => {
  const conn = (remotePort: number, remoteAddress = '127.0.0.1', localAddress = '127.0.0.1') => ({ localAddress, localPort: 8443, remoteAddress, remotePort });
  const rig = (perSecond = 3) => {
    let now = 10_000;
    const asked: PeerAddress[] = [];
    const known = new Map<number, PeerProcess>([[50001, { pid: 4242, startTime: 777, exe: '/usr/bin/curl' }]]);
    const lookup = new ConnectionLookup(
      async (addr) => {
        asked.push(addr);
        return addr.transport === 'tcp' ? known.get(addr.remotePort) : undefined;
      },
      () => now,
      perSecond,
    );
    return { lookup, asked, advance: (ms: number) => (now += ms) };
  };

  it('asks the kernel about loopback connections only, in normalized form', async () => {
    const { lookup, asked } = rig();
    expect(await lookup.find(conn(50001))).toEqual({ process: { pid: 4242, startTime: 777, exe: '/usr/bin/curl' } });
    expect(await lookup.find(conn(50001, '::ffff:127.0.0.1', '::ffff:127.0.0.1'))).toEqual({ process: { pid: 4242, startTime: 777, exe: '/usr/bin/curl' } });
    expect(await lookup.find(conn(50001, '10.0.0.5'))).toEqual({ notFound: 'not a loopback connection' });
    expect(await lookup.find(conn(50001, 'not-an-address'))).toEqual({ notFound: 'not a loopback connection' });
    expect(await lookup.find(conn(50002, '::1', '::1'))).toEqual({ notFound: 'no process found on that connection' });
    // The mapped address is the same connection as the plain one: answered from the first lookup.
    expect(asked).toEqual([
      { transport: 'tcp', localAddress: '127.0.0.1', localPort: 8443, remoteAddress: '127.0.0.1', remotePort: 50001, acceptedAt: 10_000 },
      { transport: 'tcp', localAddress: '0:0:0:0:0:0:0:1', localPort: 8443, remoteAddress: '0:0:0:0:0:0:0:1', remotePort: 50002, acceptedAt: 10_000 },
    ]);
  });

  it('keeps an answer ten seconds per connection, and budgets fresh lookups per second', async () => {
    const { lookup, asked, advance } = rig(3);
    const ports = () => asked.map((a) => (a.transport === 'tcp' ? a.remotePort : 0));
    for (let i = 0; i < 5; i++) await lookup.find(conn(50001)); // a kept-alive connection: one lookup
    expect(asked).toHaveLength(1);
    await lookup.find(conn(50003));
    await lookup.find(conn(50004));
    expect(await lookup.find(conn(50005))).toEqual({ notFound: 'lookups over budget' });
    expect(ports()).toEqual([50001, 50003, 50004]);
    advance(1000);
    // A new second: the budget is back; the first connection's answer still stands.
    expect(await lookup.find(conn(50005))).toEqual({ notFound: 'no process found on that connection' });
    expect(await lookup.find(conn(50001))).toEqual({ process: { pid: 4242, startTime: 777, exe: '/usr/bin/curl' } });
    expect(ports()).toEqual([50001, 50003, 50004, 50005]);
    advance(9000);
    // Ten seconds after it was asked, the first connection is looked up afresh.
    expect(await lookup.find(conn(50001))).toEqual({ process: { pid: 4242, startTime: 777, exe: '/usr/bin/curl' } });
    expect(ports()).toEqual([50001, 50003, 50004, 50005, 50001]);
  });
});

describe('PeerIdentifier: the describe queue', () => {
  /**
   * An identifier whose kernel reads are stubbed: every connection is held by a process of its own (pid = the
   * address's port), found at once, and describing one waits until the test lets it go.
   */
  function stubbed() {
    const id = new PeerIdentifier('linux');
    const described: number[] = [];
    const gates: (() => void)[] = [];
    const internals = id as unknown as {
      holder: (a: PeerAddress) => Promise<{ pid: number; stat: { ppid: number; startTime: number } }>;
      describe: (pid: number) => Promise<PeerProcess>;
    };
    internals.holder = async (a) => ({ pid: a.transport === 'tcp' ? a.remotePort : 0, stat: { ppid: 1, startTime: 7 } });
    internals.describe = (pid) =>
      new Promise((resolve) => {
        described.push(pid);
        gates.push(() => resolve({ pid, startTime: 7 }));
      });
    const addr = (port: number): PeerAddress => ({ transport: 'tcp', localAddress: '127.0.0.1', localPort: 1, remoteAddress: '127.0.0.1', remotePort: port, acceptedAt: 0 });
    const releaseAll = async () => {
      for (let i = 0; i < 50 && gates.length > 0; i++) {
        for (const g of gates.splice(0)) g();
        await new Promise((r) => setTimeout(r, 0));
      }
    };
    return { id, described, gates, addr, releaseAll };
  }
  const tick = () => new Promise((r) => setTimeout(r, 0));

  it('a connection that asks (hello) is described ahead of those waiting that nobody asked about', async () => {
    const { id, described, gates, addr, releaseAll } = stubbed();
    const peers = Array.from({ length: 200 }, (_, i) => id.forConnection(addr(1000 + i)));
    await tick();
    expect(described.length).toBe(MAX_CONCURRENT_LOOKUPS); // the rest wait their turn
    const asked = peers[199]!(); // the newest connection says hello
    gates.shift()!(); // one turn frees
    await tick();
    expect(described.slice(MAX_CONCURRENT_LOOKUPS)).toEqual([1199]); // it went first, not after 167 others
    await releaseAll();
    await asked; // (undefined here: pid 1199 is not the stub's process, so the PID-reuse check refuses it)
    // Every connection's owner is known without any describing: what the per-process cap reads.
    expect(await peers[150]!.owner).toBe('1150:7');
  });

  it('a connection closed while it waits (over its process cap) is never described and takes no turn', async () => {
    const { id, described, addr, releaseAll } = stubbed();
    const gone = Array.from({ length: 100 }, () => new AbortController());
    for (let i = 0; i < 100; i++) id.forConnection(addr(2000 + i), gone[i]!.signal);
    await tick();
    for (let i = MAX_CONCURRENT_LOOKUPS; i < 90; i++) gone[i]!.abort();
    await releaseAll();
    const dropped = described.filter((p) => p >= 2000 + MAX_CONCURRENT_LOOKUPS && p < 2090);
    expect(dropped).toEqual([]);
    expect(described.length).toBe(MAX_CONCURRENT_LOOKUPS + 10);
  });
});
