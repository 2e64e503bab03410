// Where Writ keeps things: state (audit log, revocations) and the per-user runtime folder (socket, discovery).
import { mkdirSync, lstatSync, chmodSync, openSync, fstatSync, readFileSync, closeSync, constants } from 'node:fs';
import { homedir, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { WritError } from './errors';

export interface WritPaths {
  stateDir: string;
  runtimeDir: string;
  socketPath: string;
  discoveryPath: string;
  auditPath: string;
  revocationsPath: string;
  cliSessionsDir: string;
}

export function resolvePaths(env: NodeJS.ProcessEnv = process.env, overrides: { stateDir?: string; runtimeDir?: string } = {}): WritPaths {
  const stateDir =
    overrides.stateDir ?? env.WRIT_STATE_DIR ?? join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'writ');
  const runtimeDir =
    overrides.runtimeDir ??
    env.WRIT_RUNTIME_DIR ??
    (env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'writ') : join(tmpdir(), `writ-${userInfo().uid}`));
  return {
    stateDir,
    runtimeDir,
    // Windows: a named pipe per user. Untested here (CI is Linux); its default ACL is not narrowed yet.
    socketPath: process.platform === 'win32' ? `\\\\.\\pipe\\writ-${userInfo().username}` : join(runtimeDir, 'writ.sock'),
    discoveryPath: join(runtimeDir, 'broker.json'),
    auditPath: join(stateDir, 'audit.jsonl'),
    revocationsPath: join(stateDir, 'revocations.jsonl'),
    cliSessionsDir: join(runtimeDir, 'sessions'),
  };
}

/** The fields of a stat result the checks below look at: real stats, or made-up ones in a unit test. */
export interface OwnedStat {
  uid: number;
  mode: number;
  isDirectory(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
}

/** This process's uid, or undefined where there is none (Windows: ownership and modes are not checked there). */
export function currentUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

/**
 * Why a runtime folder or a file in it cannot be trusted, or undefined when it can: it must be no symlink, the
 * right kind, owned by `uid`, and (the folder) closed to others or (the file) not writable by others. Pure.
 */
export function untrustedReason(kind: 'folder' | 'file', st: OwnedStat, uid: number | undefined): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link';
  if (kind === 'folder' ? !st.isDirectory() : !st.isFile()) return kind === 'folder' ? 'is not a folder' : 'is not a regular file';
  if (uid === undefined) return undefined;
  if (st.uid !== uid) return `is owned by uid ${st.uid}, not by this user (uid ${uid})`;
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  if (kind === 'folder' && (st.mode & 0o077) !== 0) return `has mode ${mode}: other users can reach it (it must be 0700)`;
  if (kind === 'file' && (st.mode & 0o022) !== 0) return `has mode ${mode}: other users can write it`;
  return undefined;
}

function unsafe(path: string, reason: string): WritError {
  return new WritError(
    'WRIT_RUNTIME_DIR_UNSAFE',
    `${path} ${reason}, so it may belong to someone else and is not trusted: remove it (the broker makes its folder again, 0700) or set WRIT_RUNTIME_DIR to a private folder of yours`,
  );
}

/**
 * Reads a file from the runtime folder only if the folder and the file are this user's and closed to others.
 * Every reader of the discovery file goes through here: a folder in /tmp can be made first by another user,
 * whose broker.json would send agents' sessions to their socket and verifiers to their keys.
 * A folder or file that is not there is undefined (no broker); an untrusted one is WRIT_RUNTIME_DIR_UNSAFE.
 */
export function readRuntimeFile(runtimeDir: string, path: string): string | undefined {
  const uid = currentUid();
  const lstatOrUndefined = (p: string) => {
    try {
      return lstatSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw e;
    }
  };
  const dir = lstatOrUndefined(runtimeDir);
  if (dir === undefined) return undefined;
  const dirReason = untrustedReason('folder', dir, uid);
  if (dirReason !== undefined) throw unsafe(runtimeDir, dirReason);
  const file = lstatOrUndefined(path);
  if (file === undefined) return undefined;
  const fileReason = untrustedReason('file', file, uid);
  if (fileReason !== undefined) throw unsafe(path, fileReason);
  // The folder is ours and closed, so nobody else can swap the file now; O_NOFOLLOW and fstat close the gap anyway.
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw unsafe(path, 'is a symbolic link');
    throw e;
  }
  try {
    const reason = untrustedReason('file', fstatSync(fd), uid);
    if (reason !== undefined) throw unsafe(path, reason);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates a private folder (0700) or checks an existing one: it must be ours, a real folder (not a symlink),
 * and closed to others, since the socket and discovery file in it are how agents reach the broker.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = currentUid();
  if (st.isSymbolicLink() || !st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    throw new WritError(
      'WRIT_RUNTIME_DIR_UNSAFE',
      `${dir} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a folder owned by this user'}: remove it, or set WRIT_RUNTIME_DIR (WRIT_STATE_DIR for the state folder) to a private folder of yours`,
    );
  }
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}
