// Which process is on the other end of a connection, learned from the kernel (never from what the caller says):
// on Linux from /proc and iproute2's `ss`, once per connection, and re-checked against PID reuse before use.
//
// What is known where:
// - Linux, loopback TCP: the client's socket row in /proc/net/tcp(6) gives its inode; the process holding an fd
//   `socket:[inode]` under /proc/*/fd is the peer. Processes of other users are invisible unless we are root.
// - Linux, Unix socket: /proc/net/unix has no peer column; `ss -xpnH` (sock_diag) does. Without `ss` installed
//   the peer of a Unix connection is not identified. SO_PEERCRED is out of reach without native code.
// - macOS (LOCAL_PEERPID, `lsof`) and Windows (GetNamedPipeClientProcessId, GetExtendedTcpTable) need native
//   code or a tool this broker does not run: there the peer is not identified and `process` stays absent,
//   which prompts and audit records show as "not identified", never as a guess.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, readlinkSync, promises as fsp } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import type { Socket } from 'node:net';
import { endianness } from 'node:os';
import { basename } from 'node:path';
import type { PeerProcess } from '../protocol';
import type { ProcessRef, ProcessTable } from '../core/binding';

/** Executables larger than this are not hashed (the hash is then omitted, never guessed). */
export const MAX_HASHED_EXECUTABLE_BYTES = 256 * 1024 * 1024;
/** Parents recorded above the peer. */
export const MAX_PARENT_CHAIN = 8;
/**
 * A lookup that takes longer than this gives up for `hello` and the calls that read the peer: the connection
 * proceeds with the peer unidentified. The process named for the per-process connection cap has no timeout.
 */
export const PEER_LOOKUP_TIMEOUT_MS = 5_000;
const HASH_CACHE_ENTRIES = 256;
/**
 * Processes described at once (uid, executable, parent chain, executable hash): the others wait their turn in
 * arrival order (the wait counts toward PEER_LOOKUP_TIMEOUT_MS). Bounds the broker's work and open files when many
 * connections arrive together. Finding which process holds a connection is not bounded by it: every lookup
 * waiting joins the shared reads of the kernel's tables.
 */
export const MAX_CONCURRENT_LOOKUPS = 32;

/** A connection's peer: read it (with the timeout) by calling; `owner` is its process for the per-process cap. */
export interface ConnectionPeer {
  (): Promise<PeerProcess | undefined>;
  /**
   * `pid:startTime` of the process holding the connection, from the shared kernel table reads alone, without
   * PEER_LOOKUP_TIMEOUT_MS (undefined where the kernel does not say): however long a flood makes the wait, the
   * per-process cap is applied.
   */
  owner: Promise<string | undefined>;
}

/** The process holding a connection, before it is described. */
type Holder = { pid: number; stat: { ppid: number; startTime: number } };

/**
 * One lookup's place in the describe queue. `up`: its caller stopped waiting (timed out or answered); `urgent`:
 * someone waits on it now (`hello`, a call that reads the peer), so it goes ahead of lookups nobody waits on yet.
 */
type Turn = { up: boolean; urgent: boolean; queued?: QueuedTurn };
type QueuedTurn = { turn: Turn; gone: AbortSignal | undefined; grant: (go: boolean) => void };
const PID_SCAN_CONCURRENCY = 16;

/**
 * What the listener knows of a connection at accept time: enough to find the peer later, off the hot path.
 * `acceptedAt` (performance.now()) lets connections accepted together share one kernel table read.
 */
export type PeerAddress =
  | { transport: 'unix'; /** The accepted socket's own inode (from /proc/self/fd), if readable. */ inode: number | undefined; acceptedAt?: number }
  | { transport: 'tcp'; localAddress: string; localPort: number; remoteAddress: string; remotePort: number; acceptedAt?: number };

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/**
 * Captured synchronously when the connection is accepted, while its fd is certainly still this socket's.
 * Node keeps the fd on the internal handle (`_handle.fd`, present on Node 20 for pipes and TCP).
 */
export function peerAddressOf(socket: Socket, transport: 'unix' | 'tcp', platform: NodeJS.Platform = process.platform): PeerAddress | undefined {
  const acceptedAt = performance.now();
  if (transport === 'tcp') {
    const { localAddress, localPort, remoteAddress, remotePort } = socket;
    if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return undefined;
    return { transport, localAddress, localPort, remoteAddress, remotePort, acceptedAt };
  }
  if (platform !== 'linux') return { transport, inode: undefined, acceptedAt };
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return { transport, inode: undefined, acceptedAt };
  try {
    const m = SOCKET_LINK.exec(readlinkSync(`/proc/self/fd/${fd}`));
    return { transport, inode: m ? Number(m[1]) : undefined, acceptedAt };
  } catch {
    return { transport, inode: undefined, acceptedAt };
  }
}

// ---------------------------------------------------------------------------------------------
// Parsers (pure, unit-tested with fixture lines)
// ---------------------------------------------------------------------------------------------

export interface ProcNetTcpRow {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  /** Kernel TCP state: 1 = ESTABLISHED. */
  state: number;
  uid: number;
  inode: number;
}

/**
 * An address as a comparable text: IPv4 dotted; IPv4-mapped IPv6 as its IPv4 (the kernel lists a v4 peer of a
 * v6 socket that way); other IPv6 as eight lower-case groups without leading zeros. Undefined if not an address.
 */
export function normalizeAddress(text: string): string | undefined {
  if (isIPv4(text)) return text;
  if (!isIPv6(text)) return undefined;
  const [head = '', tail] = text.split('::') as [string, string | undefined];
  const parts = (s: string) => (s === '' ? [] : s.split(':'));
  const expandV4 = (groups: string[]): string[] => {
    const last = groups.at(-1);
    if (last === undefined || !isIPv4(last)) return groups;
    const [a, b, c, d] = last.split('.').map(Number) as [number, number, number, number];
    return [...groups.slice(0, -1), ((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
  };
  const left = expandV4(parts(head));
  const right = tail === undefined ? [] : expandV4(parts(tail));
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  if (groups.length !== 8) return undefined;
  const g = groups.map((x) => parseInt(x, 16));
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return `${g[6]! >> 8}.${g[6]! & 0xff}.${g[7]! >> 8}.${g[7]! & 0xff}`;
  }
  return g.map((x) => x.toString(16)).join(':');
}

/** /proc/net/tcp prints each 32-bit word of the address as the host-order integer, so a little-endian host reverses bytes. */
function decodeProcAddress(hex: string, order: 'LE' | 'BE'): string | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return undefined;
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    const word = parseInt(hex.slice(w * 8, w * 8 + 8), 16);
    if (order === 'LE') bytes.writeUInt32LE(word, w * 4);
    else bytes.writeUInt32BE(word, w * 4);
  }
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return normalizeAddress(groups.join(':'));
}

function decodeEndpoint(field: string, order: 'LE' | 'BE'): { address: string; port: number } | undefined {
  const colon = field.indexOf(':');
  if (colon < 0) return undefined;
  const address = decodeProcAddress(field.slice(0, colon), order);
  const port = parseInt(field.slice(colon + 1), 16);
  if (address === undefined || !/^[0-9A-Fa-f]{4}$/.test(field.slice(colon + 1))) return undefined;
  return { address, port };
}

/** One row of /proc/net/tcp or tcp6; undefined for the header or anything else. */
export function parseProcNetTcpLine(line: string, order: 'LE' | 'BE' = endianness()): ProcNetTcpRow | undefined {
  const f = line.trim().split(/\s+/);
  if (f.length < 10 || !/^\d+:$/.test(f[0]!)) return undefined;
  const local = decodeEndpoint(f[1]!, order);
  const remote = decodeEndpoint(f[2]!, order);
  const state = parseInt(f[3]!, 16);
  const uid = Number(f[7]);
  const inode = Number(f[9]);
  if (!local || !remote || !Number.isInteger(state) || !Number.isInteger(uid) || !Number.isInteger(inode)) return undefined;
  return { local, remote, state, uid, inode };
}

/**
 * The inode of the client's end of a loopback TCP connection: the row whose local end is the client's address
 * and port and whose remote end is ours. 0 is a socket with no inode (TIME_WAIT): never a match.
 */
export function findTcpClientInode(rows: readonly ProcNetTcpRow[], addr: Extract<PeerAddress, { transport: 'tcp' }>): number | undefined {
  const client = normalizeAddress(addr.remoteAddress);
  const server = normalizeAddress(addr.localAddress);
  for (const r of rows) {
    if (r.inode === 0) continue;
    if (r.local.port === addr.remotePort && r.remote.port === addr.localPort && r.local.address === client && r.remote.address === server) {
      return r.inode;
    }
  }
  return undefined;
}

export interface SsUnixRow {
  state: string;
  localPath: string;
  localInode: number;
  peerPath: string;
  peerInode: number;
  /** Processes holding the socket, as `ss -p` lists them. */
  users: { name: string; pid: number; fd: number }[];
}

// netid state recv-q send-q local-path local-inode peer-path peer-inode [users:((...))]. `*` is an unbound end.
const SS_ROW = /^(\S+)\s+(\S+)\s+\d+\s+\d+\s+(.*?)\s+(\d+)\s+(.*?)\s+(\d+)(?:\s+users:\((.*)\))?\s*$/;
const SS_USER = /\("((?:[^"\\]|\\.)*)",pid=(\d+),fd=(\d+)\)/g;

/** One row of `ss -xpnH`; undefined for anything else. */
export function parseSsUnixLine(line: string): SsUnixRow | undefined {
  const m = SS_ROW.exec(line);
  if (!m) return undefined;
  const users = [...(m[7] ?? '').matchAll(SS_USER)].map((u) => ({ name: u[1]!, pid: Number(u[2]), fd: Number(u[3]) }));
  return { state: m[2]!, localPath: m[3]!, localInode: Number(m[4]), peerPath: m[5]!, peerInode: Number(m[6]), users };
}

/** The pids holding the other end of our accepted Unix socket (the row whose local inode is our peer inode). */
export function findUnixPeerPids(rows: readonly SsUnixRow[], ownInode: number): number[] {
  const ours = rows.find((r) => r.localInode === ownInode);
  if (!ours || ours.peerInode === 0) return [];
  const theirs = rows.find((r) => r.localInode === ours.peerInode);
  return theirs ? [...new Set(theirs.users.map((u) => u.pid))] : [];
}

/** /proc/<pid>/stat: the command name may hold spaces and parentheses, so fields are counted after the last ')'. */
export function parseProcStat(text: string): { ppid: number; startTime: number } | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // Fields from 3 (state) on: ppid is field 4, starttime field 22.
  const f = text.slice(close + 1).trim().split(/\s+/);
  const ppid = Number(f[1]);
  const startTime = Number(f[19]);
  if (!Number.isInteger(ppid) || !Number.isInteger(startTime)) return undefined;
  return { ppid, startTime };
}

/** The effective uid from /proc/<pid>/status (`Uid: real effective saved fs`): the one SO_PEERCRED reports. */
export function parseStatusUid(text: string): number | undefined {
  const m = /^Uid:\s+(\d+)\s+(\d+)/m.exec(text);
  return m ? Number(m[2]) : undefined;
}

// ---------------------------------------------------------------------------------------------
// /proc readers
// ---------------------------------------------------------------------------------------------

// The small per-process files are read synchronously: procfs answers from memory in microseconds, while the
// async path would queue each read behind the audit log's fdatasync calls in libuv's thread pool.

/**
 * /proc/<pid>/task/<pid>/stat files kept open, by pid: a read at offset 0 of an open one is one syscall (~4 µs
 * here) where readFileSync is four (~15 µs), and every token check reads its presenter's. The main thread's file
 * has the process's ppid and start time, and unlike /proc/<pid>/stat the kernel does not sum every thread's CPU
 * times to write it (an agent runtime has dozens of threads). The file keeps naming the process it was opened
 * for: once that exits, a read fails (ESRCH) even if the pid has been handed to another, and the pid is then
 * opened afresh. Bounded; the oldest is closed first.
 */
const statFds = new Map<number, number>();
const STAT_FDS_MAX = 64;
const statBuf = Buffer.allocUnsafe(1024);

function readStat(pid: number): { ppid: number; startTime: number } | undefined {
  const open = statFds.get(pid);
  if (open !== undefined) {
    const stat = preadStat(open);
    if (stat !== undefined) return stat;
    closeStat(pid, open);
  }
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/task/${pid}/stat`, 'r');
  } catch {
    return undefined;
  }
  const stat = preadStat(fd);
  if (stat === undefined) {
    closeSync(fd);
    return undefined;
  }
  if (statFds.size >= STAT_FDS_MAX) {
    const [oldPid, oldFd] = statFds.entries().next().value!;
    closeStat(oldPid, oldFd);
  }
  statFds.set(pid, fd);
  return stat;
}

function preadStat(fd: number): { ppid: number; startTime: number } | undefined {
  try {
    const n = readSync(fd, statBuf, 0, statBuf.length, 0);
    // A comm of 16 bytes keeps the line far below this; a full buffer would be a truncated line.
    if (n <= 0 || n >= statBuf.length) return undefined;
    return parseProcStat(statBuf.toString('latin1', 0, n));
  } catch {
    return undefined;
  }
}

function closeStat(pid: number, fd: number): void {
  statFds.delete(pid);
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function readExe(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined; // another user's process, a kernel thread, or gone: unknown, never guessed
  }
}

function readUid(pid: number): number | undefined {
  try {
    return parseStatusUid(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * True only when `pid` is still the same process: its start time now equals the one recorded. Re-check
 * before acting on a pid (a prompt, a signal), since a pid of an exited process may be handed to a new one.
 */
export async function stillSame(peer: Pick<PeerProcess, 'pid' | 'startTime'>, platform: NodeJS.Platform = process.platform): Promise<boolean> {
  if (platform !== 'linux' || peer.startTime === undefined) return false;
  const now = readStat(peer.pid);
  return now !== undefined && now.startTime === peer.startTime;
}

/** How far up a lineage is read: past any real tree, short of a loop if /proc changes underfoot. */
export const MAX_LINEAGE = 64;

/**
 * How long an ancestor's /proc/<pid>/stat is reused. Every token check walks the presenter's lineage, and the same
 * few shells and editors are its ancestors each time: reading them all per request cost the HTTP exchange 4x its
 * CPU. The process itself is always read fresh (its start time guards against pid reuse); an ancestor's parent
 * link can only be as much as this much out of date.
 */
export const ANCESTOR_STAT_TTL_MS = 1000;
const ANCESTOR_CACHE_MAX = 4096;
const ancestorStats = new Map<number, { ppid: number; startTime: number; at: number }>();

function ancestorStat(pid: number, now: number): { ppid: number; startTime: number } | undefined {
  const hit = ancestorStats.get(pid);
  if (hit !== undefined && now - hit.at < ANCESTOR_STAT_TTL_MS) return hit;
  const stat = readStat(pid);
  if (stat === undefined) {
    ancestorStats.delete(pid);
    return undefined;
  }
  if (ancestorStats.size >= ANCESTOR_CACHE_MAX) ancestorStats.clear();
  ancestorStats.set(pid, { ...stat, at: now });
  return stat;
}

/**
 * The process and its ancestors (by /proc/<pid>/stat ppid), nearest first, each with its start time: the process
 * read now, its ancestors at most ANCESTOR_STAT_TTL_MS old. Empty off Linux or when the pid is gone: the process
 * is then not identified.
 */
export function procLineage(pid: number, platform: NodeJS.Platform = process.platform): ProcessRef[] {
  if (platform !== 'linux') return [];
  const head = readStat(pid);
  if (!head) return [];
  const out: ProcessRef[] = [{ pid, startTime: head.startTime }];
  const now = performance.now();
  let at = head.ppid;
  while (at > 0 && out.length < MAX_LINEAGE) {
    const stat = ancestorStat(at, now);
    if (!stat) break;
    out.push({ pid: at, startTime: stat.startTime });
    at = stat.ppid;
  }
  return out;
}

const connectedLines = new Map<number, { startTime: number; line: ProcessRef[]; at: number }>();

/**
 * The lineage of a process on the other end of an open connection, as identified there (pid and start time), at
 * most ANCESTOR_STAT_TTL_MS old. Every token a keep-alive client presents is checked against its lineage, and a
 * fresh read of a busy process's stat costs ~10 µs here. The connection already names its process for its whole
 * life (net/peer.ts `forSocket`); this adds nothing a pid could be reused into, because a hit needs the same
 * start time. Whether a process still runs (boundRoot) is always read fresh through `lineage`.
 */
export function connectedLineage(p: ProcessRef): ProcessRef[] {
  const now = performance.now();
  const hit = connectedLines.get(p.pid);
  if (hit !== undefined && hit.startTime === p.startTime && now - hit.at < ANCESTOR_STAT_TTL_MS) return hit.line;
  const line = procLineage(p.pid);
  if (line[0]?.startTime === p.startTime) {
    if (connectedLines.size >= ANCESTOR_CACHE_MAX) connectedLines.clear();
    connectedLines.set(p.pid, { startTime: p.startTime, line, at: now });
  }
  return line;
}

/** The key of a process across PID reuse: its pid and start time. */
export function ownerKey(p: { pid: number; startTime?: number; stat?: { startTime: number } }): string {
  return `${p.pid}:${p.stat?.startTime ?? p.startTime ?? ''}`;
}

/** The broker's process table: /proc on Linux; elsewhere nothing is identified and the process rules stay quiet. */
export const procTable: ProcessTable = { lineage: (pid) => procLineage(pid), connectedLineage };

type TcpAddress = Extract<PeerAddress, { transport: 'tcp' }>;

/** The port of a /proc/net/tcp line's local address (`sl: ADDR:PORT ...`), or -1: read without splitting the line. */
function localPortOf(text: string, start: number, end: number): number {
  const colon = text.indexOf(':', start);
  if (colon < 0 || colon >= end) return -1;
  let i = colon + 1;
  while (i < end && text.charCodeAt(i) === 32) i++;
  const space = text.indexOf(' ', i);
  if (space < 0 || space > end || space - i < 5) return -1;
  const port = parseInt(text.slice(space - 4, space), 16);
  return Number.isInteger(port) ? port : -1;
}

/**
 * The client-end inodes of the wanted loopback TCP connections, from one pass over /proc/net/tcp and tcp6: only
 * a line whose local port is a wanted client port is parsed, and no row is kept. Every lookup waiting when a pass
 * starts is answered by it (all of them were accepted before it started); lookups that arrive during a pass wait
 * for the next one. A burst of N connections costs a few passes over a table of about 2N lines, not N each.
 */
export class TcpInodeFinder {
  private waiting: { addr: TcpAddress; resolve: (inode: number | undefined) => void }[] = [];
  private reading = false;

  constructor(private readonly files: readonly string[] = ['/proc/net/tcp', '/proc/net/tcp6']) {}

  find(addr: TcpAddress): Promise<number | undefined> {
    return new Promise((resolve) => {
      this.waiting.push({ addr, resolve });
      if (!this.reading) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.reading = true;
    try {
      while (this.waiting.length > 0) {
        const batch = this.waiting;
        this.waiting = [];
        const found = await this.scan(batch.map((w) => w.addr)).catch(() => new Map<TcpAddress, number>());
        for (const w of batch) w.resolve(found.get(w.addr));
      }
    } finally {
      this.reading = false;
    }
  }

  private async scan(addrs: readonly TcpAddress[]): Promise<Map<TcpAddress, number>> {
    const byPort = new Map<number, TcpAddress[]>();
    for (const a of addrs) {
      const list = byPort.get(a.remotePort);
      if (list === undefined) byPort.set(a.remotePort, [a]);
      else list.push(a);
    }
    const found = new Map<TcpAddress, number>();
    for (const file of this.files) {
      let text: string;
      try {
        text = await fsp.readFile(file, 'latin1');
      } catch {
        continue; // no IPv6 in this kernel
      }
      for (let start = 0; start < text.length && found.size < addrs.length; ) {
        let end = text.indexOf('\n', start);
        if (end < 0) end = text.length;
        const wanted = byPort.get(localPortOf(text, start, end));
        if (wanted !== undefined) {
          const row = parseProcNetTcpLine(text.slice(start, end));
          if (row) {
            for (const a of wanted) {
              if (found.has(a)) continue;
              const inode = findTcpClientInode([row], a);
              if (inode !== undefined) found.set(a, inode);
            }
          }
        }
        start = end + 1;
      }
    }
    return found;
  }
}

/** Socket inode → pids holding an fd on it: one pass over /proc/*\/fd (processes we may not read are skipped). */
async function socketOwners(): Promise<Map<number, number[]>> {
  const owners = new Map<number, number[]>();
  const pids = (await fsp.readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  const scan = async (pid: number) => {
    let fds: string[];
    try {
      fds = await fsp.readdir(`/proc/${pid}/fd`);
    } catch {
      return;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = await fsp.readlink(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue; // closed meanwhile
      }
      const m = SOCKET_LINK.exec(link);
      if (!m) continue;
      const inode = Number(m[1]);
      const held = owners.get(inode);
      if (held === undefined) owners.set(inode, [pid]);
      else if (!held.includes(pid)) held.push(pid);
    }
  };
  for (let i = 0; i < pids.length; i += PID_SCAN_CONCURRENCY) {
    await Promise.all(pids.slice(i, i + PID_SCAN_CONCURRENCY).map(scan));
  }
  return owners;
}

/**
 * One kernel table read shared by every connection accepted before it started: a burst of agents connecting
 * together costs one `ss` run (or one /proc scan), not one each. A read that started before a connection was
 * accepted may miss it, so that connection starts a new one.
 */
class SharedRead<T> {
  private latest: { startedAt: number; result: Promise<T>; done: boolean } | undefined;
  private queued: Promise<T> | undefined;

  constructor(private readonly read: () => Promise<T>) {}

  since(acceptedAt: number | undefined): Promise<T> {
    const latest = this.latest;
    if (latest !== undefined && acceptedAt !== undefined && latest.startedAt >= acceptedAt) return latest.result;
    if (latest !== undefined && !latest.done) {
      // One read at a time: whoever arrives during it shares the single read that starts when it ends.
      this.queued ??= latest.result.then(
        () => this.next(),
        () => this.next(),
      );
      return this.queued;
    }
    return this.start();
  }

  private next(): Promise<T> {
    this.queued = undefined;
    return this.start();
  }

  private start(): Promise<T> {
    const entry = { startedAt: performance.now(), result: this.read(), done: false };
    const settle = () => {
      entry.done = true;
    };
    entry.result.then(settle, settle);
    this.latest = entry;
    return entry.result;
  }
}

function runSs(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ss', ['-xpnH'], { timeout: 3_000, maxBuffer: 32 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (error, stdout) =>
      error ? reject(error) : resolve(stdout),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The identifier: one per broker (it owns the executable-hash cache)
// ---------------------------------------------------------------------------------------------

export class PeerIdentifier {
  /** (path, device, inode, size, mtime) → SHA-256; the promise is shared so concurrent peers hash once. */
  private readonly hashes = new Map<string, Promise<string | undefined>>();
  private readonly ssRows = new SharedRead(async () =>
    (await runSs()).split('\n').map(parseSsUnixLine).filter((r): r is SsUnixRow => r !== undefined),
  );
  private readonly owners = new SharedRead(socketOwners);
  private readonly tcpInodes = new TcpInodeFinder();
  private active = 0;
  /** Waiting to be described, in arrival order: those someone waits on first. */
  private readonly urgentTurns: QueuedTurn[] = [];
  private readonly turns: QueuedTurn[] = [];

  constructor(private readonly platform: NodeJS.Platform = process.platform) {}

  /**
   * Hashes this process's own executable now, off any connection's path: agents written in Node usually run the
   * same binary as the broker, so their first connection finds its hash cached.
   */
  prewarm(): void {
    if (this.platform === 'linux') void this.hashExecutable(process.pid);
  }

  /**
   * Starts the lookup at once (it runs while the client's first frame travels) and returns the accessor the
   * connection uses: the same answer every time, re-checked against PID reuse; if the pid now names another
   * process, the holder of the socket is looked up again, once.
   */
  forConnection(addr: PeerAddress, gone?: AbortSignal): ConnectionPeer {
    const holder = this.platform === 'linux' ? this.holder(addr).catch(() => undefined) : Promise.resolve(undefined);
    // Described when its turn comes; asked for (hello), it goes ahead of the connections nobody asked about.
    const turn: Turn = { up: false, urgent: false };
    let current = this.identify(addr, gone, holder, turn);
    let rechecked = false;
    const read = async () => {
      this.hurry(turn);
      const peer = await current;
      if (peer === undefined || (await stillSame(peer, this.platform))) return peer;
      if (!rechecked) {
        rechecked = true;
        current = this.identify({ ...addr, acceptedAt: performance.now() }); // a fresh read, not the shared one
        const again = await current;
        if (again !== undefined && (await stillSame(again, this.platform))) return again;
      }
      return undefined;
    };
    return Object.assign(read, { owner: holder.then((h) => (h === undefined ? undefined : ownerKey(h))) });
  }

  private readonly bySocket = new WeakMap<Socket, { checked: () => Promise<PeerProcess | undefined>; unchecked: () => Promise<PeerProcess | undefined> }>();

  /**
   * The peer of an HTTP request's socket (loopback TCP or the Unix socket), looked up on first use only and then
   * kept for the socket's life: a keep-alive client costs one lookup, and requests that present no token none.
   */
  forSocket(socket: Socket, opts: { recheck?: boolean } = {}): () => Promise<PeerProcess | undefined> {
    let entry = this.bySocket.get(socket);
    if (entry === undefined) {
      let started: (() => Promise<PeerProcess | undefined>) | undefined;
      let first: Promise<PeerProcess | undefined> | undefined;
      const addr = peerAddressOf(socket, socket.remotePort === undefined ? 'unix' : 'tcp', this.platform);
      entry = {
        checked: () => {
          if (addr === undefined) return Promise.resolve(undefined);
          started ??= this.forConnection(addr);
          return started();
        },
        // The process as identified when first asked, without the per-use pid-reuse re-read: for callers that
        // check its start time themselves (the token checks walk its lineage, keyed by pid and start time).
        unchecked: () => {
          if (addr === undefined) return Promise.resolve(undefined);
          return (first ??= this.identify(addr));
        },
      };
      this.bySocket.set(socket, entry);
    }
    return opts.recheck === false ? entry.unchecked : entry.checked;
  }

  /**
   * The peer process, or undefined where the kernel does not say (other platforms, other users, no `ss`).
   * `gone`: the connection has closed; a lookup still waiting for its turn then is not made. `holder`: the
   * holding process, if already being found.
   */
  async identify(addr: PeerAddress, gone?: AbortSignal, holder?: Promise<Holder | undefined>, turn: Turn = { up: false, urgent: true }): Promise<PeerProcess | undefined> {
    if (this.platform !== 'linux') return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), PEER_LOOKUP_TIMEOUT_MS);
      timer.unref();
    });
    try {
      const described = (holder ?? this.holder(addr)).then((h) => (h === undefined ? undefined : this.inTurn(turn, gone, () => this.describe(h.pid, h.stat))));
      return await Promise.race([described.catch(() => undefined), timeout]);
    } finally {
      turn.up = true; // a lookup still waiting for its turn is dropped, without taking one
      clearTimeout(timer);
    }
  }

  /** Moves a waiting lookup ahead of those nobody waits on: its connection has asked (hello). */
  private hurry(turn: Turn): void {
    if (turn.urgent) return;
    turn.urgent = true;
    const q = turn.queued;
    if (q === undefined) return;
    const i = this.turns.indexOf(q);
    if (i >= 0) {
      this.turns.splice(i, 1);
      this.urgentTurns.push(q);
    }
  }

  /**
   * Runs `work` once fewer than MAX_CONCURRENT_LOOKUPS others run, unless its caller or connection is gone by then
   * (a connection closed meanwhile, e.g. over its process's cap, is never described).
   */
  private async inTurn<T>(turn: Turn, gone: AbortSignal | undefined, work: () => Promise<T | undefined>): Promise<T | undefined> {
    if (turn.up || gone?.aborted) return undefined;
    if (this.active >= MAX_CONCURRENT_LOOKUPS) {
      const go = await new Promise<boolean>((grant) => {
        const q: QueuedTurn = { turn, gone, grant };
        turn.queued = q;
        (turn.urgent ? this.urgentTurns : this.turns).push(q);
      });
      turn.queued = undefined;
      if (!go) return undefined;
    } else this.active++;
    try {
      return turn.up || gone?.aborted ? undefined : await work();
    } finally {
      this.passTurn();
    }
  }

  /** The turn passes to the next lookup still wanted (`active` stays counted), or is given back. */
  private passTurn(): void {
    for (;;) {
      const next = this.urgentTurns.shift() ?? this.turns.shift();
      if (next === undefined) {
        this.active--;
        return;
      }
      if (next.turn.up || next.gone?.aborted) {
        next.grant(false); // dropped without taking the turn
        continue;
      }
      next.grant(true);
      return;
    }
  }

  /** Which process holds the connection: shared kernel table reads and a stat per holder, never queued. */
  private async holder(addr: PeerAddress): Promise<Holder | undefined> {
    let pids: number[];
    if (addr.transport === 'tcp') {
      const inode = await this.tcpInodes.find(addr);
      if (inode === undefined) return undefined;
      pids = (await this.owners.since(addr.acceptedAt)).get(inode) ?? [];
    } else {
      if (addr.inode === undefined) return undefined;
      pids = findUnixPeerPids(await this.ssRows.since(addr.acceptedAt), addr.inode);
    }
    if (pids.length === 0) return undefined;
    // Several holders means the fd was inherited: the oldest opened it (children inherit, parents do not).
    const stats = pids.map((pid) => ({ pid, stat: readStat(pid) }));
    const live = stats.filter((s): s is { pid: number; stat: { ppid: number; startTime: number } } => s.stat !== undefined);
    live.sort((a, b) => a.stat.startTime - b.stat.startTime || a.pid - b.pid);
    return live[0];
  }

  private async describe(pid: number, stat: { ppid: number; startTime: number }): Promise<PeerProcess> {
    const uid = readUid(pid);
    const exe = readExe(pid);
    const ppidChain = this.parentChain(stat.ppid);
    const sha256 = await this.hashExecutable(pid);
    return {
      pid,
      ...(uid === undefined ? {} : { uid }),
      ...(exe === undefined ? {} : { exe }),
      startTime: stat.startTime,
      ...(sha256 === undefined ? {} : { sha256 }),
      ppidChain,
    };
  }

  private parentChain(first: number): NonNullable<PeerProcess['ppidChain']> {
    const chain: NonNullable<PeerProcess['ppidChain']> = [];
    let pid = first;
    while (pid > 0 && chain.length < MAX_PARENT_CHAIN) {
      const stat = readStat(pid);
      const exe = readExe(pid);
      chain.push({ pid, ...(exe === undefined ? {} : { name: basename(exe) }) });
      if (!stat) break;
      pid = stat.ppid;
    }
    return chain;
  }

  /**
   * SHA-256 of the executable the process runs, read through /proc/<pid>/exe (so a replaced or deleted file is
   * still the one running). Bounded in size; cached by path, file identity, size and mtime.
   */
  private async hashExecutable(pid: number): Promise<string | undefined> {
    let fh: import('node:fs/promises').FileHandle | undefined;
    try {
      const path = readExe(pid);
      fh = await fsp.open(`/proc/${pid}/exe`, 'r');
      const st = await fh.stat();
      if (!st.isFile() || st.size > MAX_HASHED_EXECUTABLE_BYTES) return undefined;
      const key = `${path ?? ''}\0${st.dev}:${st.ino}\0${st.size}\0${st.mtimeMs}`;
      let pending = this.hashes.get(key);
      if (pending === undefined) {
        const handle = fh;
        fh = undefined; // the hash owns the handle now
        pending = hashHandle(handle);
        this.hashes.set(key, pending);
        if (this.hashes.size > HASH_CACHE_ENTRIES) this.hashes.delete(this.hashes.keys().next().value!);
        void pending.then((h) => {
          if (h === undefined) this.hashes.delete(key);
        });
      }
      return await pending;
    } catch {
      return undefined;
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }
}

async function hashHandle(fh: import('node:fs/promises').FileHandle): Promise<string | undefined> {
  try {
    const hash = createHash('sha256');
    let total = 0;
    for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false })) {
      total += (chunk as Buffer).length;
      if (total > MAX_HASHED_EXECUTABLE_BYTES) return undefined;
      hash.update(chunk as Buffer);
    }
    return hash.digest('hex');
  } catch {
    return undefined;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Fresh lookups of a use report's connection made per second; the rest are recorded without their presenter.
 * Each may scan every process's open files (/proc/<pid>/fd, shared by lookups that arrive together), which on a
 * desktop with tens of thousands of them costs the broker tens of milliseconds.
 */
export const CONNECTION_LOOKUPS_PER_SECOND = 5;
/**
 * A connection's answer is reused this long: a resource reports every call made on a kept-alive connection. Its
 * four-part address names one live connection; once closed, the client's side waits in TIME_WAIT (60 s on Linux)
 * before the pair can be reused, and the holder rules check the process's start time besides.
 */
const CONNECTION_TTL_MS = 10_000;
const CONNECTION_CACHE_MAX = 256;

/** The connection a resource saw a token arrive on (`token.used`'s `connection`). */
export interface ReportedConnection {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** A normalized address (normalizeAddress) in 127.0.0.0/8 or ::1. */
export function isLoopbackAddress(a: string): boolean {
  return a.startsWith('127.') || a === '0:0:0:0:0:0:0:1';
}

/**
 * Which process is on the client end of a connection a resource reports a token came on: the kernel's answer
 * (the same lookup as for the broker's own connections), for loopback TCP only. Bounded: answers are kept ten
 * seconds per connection, and fresh lookups are budgeted per second, since any local process may send reports.
 */
export class ConnectionLookup {
  private readonly cache = new Map<string, { at: number; result: Promise<PeerProcess | undefined> }>();
  private window = { second: -1, count: 0 };

  constructor(
    private readonly identify: (addr: PeerAddress) => Promise<PeerProcess | undefined>,
    private readonly now: () => number = () => performance.now(),
    private readonly perSecond = CONNECTION_LOOKUPS_PER_SECOND,
  ) {}

  async find(c: ReportedConnection): Promise<{ process: PeerProcess } | { notFound: string }> {
    const local = normalizeAddress(c.localAddress);
    const remote = normalizeAddress(c.remoteAddress);
    if (local === undefined || remote === undefined || !isLoopbackAddress(local) || !isLoopbackAddress(remote)) {
      return { notFound: 'not a loopback connection' };
    }
    const key = `${local} ${c.localPort} ${remote} ${c.remotePort}`;
    const t = this.now();
    let entry = this.cache.get(key);
    if (entry === undefined || t - entry.at >= CONNECTION_TTL_MS) {
      const second = Math.floor(t / 1000);
      if (second !== this.window.second) this.window = { second, count: 0 };
      if (++this.window.count > this.perSecond) return { notFound: 'lookups over budget' };
      const result = this.identify({ transport: 'tcp', localAddress: local, localPort: c.localPort, remoteAddress: remote, remotePort: c.remotePort, acceptedAt: t });
      entry = { at: t, result };
      this.cache.delete(key);
      if (this.cache.size >= CONNECTION_CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, entry);
    }
    const found = await entry.result.catch(() => undefined);
    return found === undefined ? { notFound: 'no process found on that connection' } : { process: found };
  }
}
