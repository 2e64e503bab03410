// `writ exec`'s command, found before anything is asked of the broker, the way execvp(3) finds it: a command that
// cannot start is refused before the developer is prompted and a grant and a token are recorded for nothing.
// Only a check: the command is still spawned by its name, so a file changed in between fails at spawn as before.
import { accessSync, statSync, constants } from 'node:fs';
import { resolve } from 'node:path';
import { WritError } from './errors';
import type { WritErrorCode } from './errors';

/** The search path where PATH is unset: libuv's (so Node's `spawn`'s) default, `_PATH_DEFPATH`. */
export const DEFAULT_SEARCH_PATH = '/usr/bin:/bin';

/** What a shell exits with when it cannot run a command: not found, or found but not executable. */
export const EXIT_NOT_FOUND = 127;
export const EXIT_NOT_EXECUTABLE = 126;

type Runnable = { ok: true } | { ok: false; missing: boolean; why: string };

/** Whether execve(2) could start `path` for this user: a file (not a directory) this user may execute. */
function runnable(path: string): Runnable {
  try {
    if (statSync(path).isDirectory()) return { ok: false, missing: false, why: 'is a directory' };
    accessSync(path, constants.X_OK);
    return { ok: true };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { ok: false, missing: true, why: 'no such file' };
    return { ok: false, missing: false, why: code === 'EACCES' ? 'not executable by this user' : `cannot be executed (${code ?? 'error'})` };
  }
}

/**
 * The file `command` names, as execvp(3) finds it: a name with a `/` is a path (from `cwd`); any other is looked for
 * in each directory of `env.PATH` in turn (an empty entry is `cwd`; PATH unset: DEFAULT_SEARCH_PATH), skipping files
 * this user may not execute. WRIT_COMMAND_NOT_FOUND when there is no such file; WRIT_COMMAND_NOT_EXECUTABLE when
 * there is, but none this user may execute (a directory, no execute permission). POSIX only: Windows' search
 * (PATHEXT, the current folder first) is another thing.
 */
export function resolveCommand(command: string, env: NodeJS.ProcessEnv, cwd: string = process.cwd()): string {
  if (command.includes('/')) {
    const path = resolve(cwd, command);
    const r = runnable(path);
    if (r.ok) return path;
    throw new WritError(r.missing ? 'WRIT_COMMAND_NOT_FOUND' : 'WRIT_COMMAND_NOT_EXECUTABLE', `cannot run ${command}: ${r.why}`, { path: 'command' });
  }
  if (command === '') throw new WritError('WRIT_COMMAND_NOT_FOUND', 'cannot run an empty command name', { path: 'command' });
  let refused: string | undefined;
  for (const dir of (env.PATH ?? DEFAULT_SEARCH_PATH).split(':')) {
    const path = resolve(cwd, dir, command);
    const r = runnable(path);
    if (r.ok) return path;
    // As execvp: a file found but not executable is passed over; if nothing better turns up, that is the answer.
    if (!r.missing) refused ??= `${path}: ${r.why}`;
  }
  if (refused !== undefined) throw new WritError('WRIT_COMMAND_NOT_EXECUTABLE', `cannot run ${command}: ${refused}`, { path: 'command' });
  throw new WritError('WRIT_COMMAND_NOT_FOUND', `cannot run ${command}: not found in PATH`, { path: 'command' });
}

/** The shell's exit code for a command that could not be run: 126 found but not executable, 127 otherwise. */
export function exitCodeFor(code: WritErrorCode): number {
  return code === 'WRIT_COMMAND_NOT_EXECUTABLE' ? EXIT_NOT_EXECUTABLE : EXIT_NOT_FOUND;
}
