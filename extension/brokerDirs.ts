// Where this window's broker keeps its state and its socket. Pure: the caller supplies the folders and ids.
//
// One broker per window, and one audit-log writer per state folder. The state folder (audit log, revocations)
// is stable per workspace so the audit chain and durable revocations survive restarts of the editor; a second
// window on the same workspace takes the next free *slot* (brokers/<workspace>/<slot>) so two brokers never
// append to one log. A slot is held by a lock file naming the extension host's pid (see ctx.ts); a lock whose
// pid is dead is stale. The runtime folder (socket, discovery file) sits inside the slot when the socket path
// fits the Unix limit (sun_path is 108 bytes on Linux, 104 on macOS); otherwise it moves to a short private
// folder under the OS temp folder, named by uid and a hash of the slot, created 0700 by the broker.
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** sun_path is 104 bytes on macOS and 108 on Linux, including the NUL; keep well inside both. */
export const MAX_SOCKET_PATH_BYTES = 100;
export const SOCKET_NAME = 'writ.sock';

export interface BrokerDirs {
  slotDir: string;
  stateDir: string;
  runtimeDir: string;
  socketPath: string;
  lockPath: string;
}

/** A short, stable id for the window's workspace: its folders (or .code-workspace file), or "empty". */
export function workspaceKey(folders: readonly string[], workspaceFile?: string): string {
  const basis = workspaceFile ?? (folders.length > 0 ? [...folders].join('\n') : '');
  if (!basis) return 'empty';
  return createHash('sha256').update(basis).digest('hex').slice(0, 16);
}

export function brokerDirs(opts: { globalStorage: string; workspace: string; slot: number; tmpdir: string; uid: number }): BrokerDirs {
  const slotDir = join(opts.globalStorage, 'brokers', opts.workspace, String(opts.slot));
  let runtimeDir = join(slotDir, 'run');
  if (Buffer.byteLength(join(runtimeDir, SOCKET_NAME)) > MAX_SOCKET_PATH_BYTES) {
    const short = createHash('sha256').update(slotDir).digest('hex').slice(0, 12);
    runtimeDir = join(opts.tmpdir, `writ-${opts.uid}-${short}`);
  }
  return { slotDir, stateDir: join(slotDir, 'state'), runtimeDir, socketPath: join(runtimeDir, SOCKET_NAME), lockPath: join(slotDir, 'window.lock') };
}
