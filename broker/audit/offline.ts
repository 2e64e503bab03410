// One audit record written by a CLI command while the broker is stopped (key rotation, unblocking): the log
// has one writer at a time, and the record is chained and signed like any other.
import { sign } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { AuditEntry } from '../protocol';
import { resolvePaths } from '../paths';
import { systemClock } from '../core/clock';
import { AuditLog } from './log';

export async function appendOffline(entry: AuditEntry, user: string, key: { kid: string; privateKey: KeyObject }): Promise<void> {
  const paths = resolvePaths();
  mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
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
