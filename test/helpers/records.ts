// Audit records for tests of the extension's pure parts: a minted-token record at `seq`, with fields overridden.
import type { AuditRecord } from '../../broker/protocol';

const Z = '0'.repeat(64);

export const rec = (seq: number, over: Partial<AuditRecord> = {}): AuditRecord => ({
  v: 1,
  seq,
  ts: '2026-01-02T03:04:05.678Z',
  session: 'ses_1',
  event: 'token.minted',
  user: 'dev@example.com',
  prev: Z,
  ...over,
});

export const claude = { id: 'agt_1', name: 'claude', kind: 'cli', parents: [] };
export const helper = { id: 'agt_2', name: 'helper', kind: 'script', parents: ['agt_1'] };
