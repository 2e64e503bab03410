// One audit record written by a CLI command while the broker is stopped (key rotation, unblocking): the log
// has one writer at a time (the state folder's lock), and the record is chained and signed like any other.
import { sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { AuditEntry } from '../protocol';
import { resolvePaths } from '../paths';
import type { StateLock } from '../statelock';
import { systemClock } from '../core/clock';
import { AuditLog } from './log';

/**
 * Appends `entry` to the state folder's audit log. The caller holds that folder's lock (`withStateLock`) for the
 * whole operation, so no broker, and no other CLI command, writes the log or the files beside it meanwhile.
 */
export async function appendOffline(lock: StateLock, entry: AuditEntry, user: string, key: { kid: string; privateKey: KeyObject }): Promise<void> {
  const paths = resolvePaths({}, { stateDir: lock.stateDir });
  const log = await AuditLog.open({
    path: paths.auditPath,
    session: `cli_${process.pid}`,
    user,
    clock: systemClock,
    signer: { kid: key.kid, sign: (data) => sign(null, data, key.privateKey) },
  });
  try {
    await log.append(entry);
  } finally {
    await log.close();
  }
}
