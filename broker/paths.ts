// Where Writ keeps things: state (audit log, revocations) and the per-user runtime folder (socket, discovery).
import { mkdirSync, statSync, chmodSync } from 'node:fs';
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

/**
 * Creates a private folder (0700) or checks an existing one: it must be ours and closed to others, since
 * the socket and discovery file in it are how agents reach the broker.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  if (!st.isDirectory() || (uid >= 0 && st.uid !== uid)) {
    throw new WritError('WRIT_RUNTIME_DIR_UNSAFE', `${dir} is not a folder owned by this user; remove it or set WRIT_RUNTIME_DIR`);
  }
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}
