// `writ audit export`: filters audit records and renders them as JSON Lines, CSV (RFC 4180) or OCSF 1.3 events.
// Streams the file; verification is `verify.ts`'s job, so this only reads what is there.
import { once } from 'node:events';
import { WritError } from '../errors';
import { AuditRecord } from '../protocol';
import { readAuditLines } from './lines';

export interface AuditFilter {
  session?: string;
  /** Matches the acting agent or any agent it was delegated from (`agent.parents`). */
  agentId?: string;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  events?: readonly string[];
}

export type ExportFormat = 'jsonl' | 'csv' | 'ocsf';

function isFiltered(f: AuditFilter): boolean {
  return (
    f.session !== undefined ||
    f.agentId !== undefined ||
    f.since !== undefined ||
    f.until !== undefined ||
    f.events !== undefined
  );
}

export function matchesFilter(r: AuditRecord, f: AuditFilter): boolean {
  if (f.session !== undefined && r.session !== f.session) return false;
  if (f.agentId !== undefined && r.agent?.id !== f.agentId && !r.agent?.parents.includes(f.agentId)) return false;
  if (f.since !== undefined || f.until !== undefined) {
    const t = Date.parse(r.ts);
    if (f.since !== undefined && !(t >= f.since)) return false;
    if (f.until !== undefined && !(t < f.until)) return false;
  }
  if (f.events !== undefined && !f.events.includes(r.event)) return false;
  return true;
}

/**
 * Checkpoints exist to verify the whole file, which only an unfiltered export still is (a filtered one has gaps
 * in the chain). So they are exported when there is no filter, or when asked for by name in `events`; never as OCSF.
 */
function wanted(r: AuditRecord, f: AuditFilter): boolean {
  if (r.event === 'checkpoint' && isFiltered(f) && !f.events?.includes('checkpoint')) return false;
  return matchesFilter(r, f);
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

const CSV_COLUMNS = [
  'seq',
  'ts',
  'session',
  'event',
  'user',
  'agent_id',
  'agent_name',
  'agent_chain',
  'task_id',
  'task',
  'grant_id',
  'scopes',
  'audience',
  'jti',
  'exp',
  'outcome',
  'code',
  'prev',
  /**
   * The record's `detail` as JSON (how a proxy call or a tool call ended, what was revoked, a finding's rule…): last,
   * so a reader of the earlier columns by position is unchanged.
   */
  'detail',
] as const;

/** Delegation chain, root first: `root>child>agent`. */
function agentChain(r: AuditRecord): string[] {
  return r.agent ? [...r.agent.parents].reverse().concat(r.agent.id) : [];
}

/**
 * RFC 4180 quoting, plus the OWASP CSV-injection guard. A cell a spreadsheet could run as a formula (its first
 * character other than a space `=`, `+`, `-` or `@`, or a leading tab or line break) gets a `'`. Every cell but a
 * plain one (letters, digits, `_ . : / > + -`: ids, times, hashes, URLs without a query) is quoted: a spreadsheet
 * whose locale separates on `;` splits an unquoted cell there, and the part after `;` could start a formula.
 */
function csvCell(value: string | number | undefined): string {
  if (value === undefined) return '';
  let s = String(value);
  if (/^[ ]*[=+\-@]|^[\t\r\n]/.test(s)) s = `'${s}`;
  return /^[A-Za-z0-9_.:\/>+-]*$/.test(s) ? s : `"${s.replaceAll('"', '""')}"`;
}

function csvRow(r: AuditRecord): string {
  const chain = agentChain(r);
  const cells: Record<(typeof CSV_COLUMNS)[number], string | number | undefined> = {
    seq: r.seq,
    ts: r.ts,
    session: r.session,
    event: r.event,
    user: r.user,
    agent_id: r.agent?.id,
    agent_name: r.agent?.name,
    agent_chain: chain.length > 0 ? chain.join('>') : undefined,
    task_id: r.task?.id,
    task: r.task?.description,
    grant_id: r.grantId,
    scopes: r.scopes?.join(' '),
    audience: r.audience,
    jti: r.jti,
    exp: r.exp,
    outcome: r.outcome,
    code: r.code,
    prev: r.prev,
    detail: r.detail === undefined ? undefined : JSON.stringify(r.detail),
  };
  // CRLF line ends, as RFC 4180 specifies.
  return CSV_COLUMNS.map((c) => csvCell(cells[c])).join(',') + '\r\n';
}

// ---------------------------------------------------------------------------------------------
// OCSF 1.3
// ---------------------------------------------------------------------------------------------

interface OcsfClass {
  class_uid: number;
  category_uid: number;
  activity_id: number;
  activity_name: string;
}

/**
 * Writ events as OCSF classes (type_uid = class_uid * 100 + activity_id):
 * - Authorize Session (3003, Identity & Access): the developer's decision on a task. approved and denied are
 *   1 Assign Privileges (denied with status Failure); requested is 99 Other, as OCSF has no "request" activity.
 * - API Activity (6003, Application): tokens. minted and exchanged are 1 Create, introspected 2 Read,
 *   revoked 4 Delete.
 * - Authentication (3002, Identity & Access): an agent connecting (1 Logon) and disconnecting (2 Logoff).
 * - Uses at a resource: token.used (a verifier's report) and proxy.call (the credential-injecting proxy)
 *   are API Activity 6003, 2 Read (the token was presented, allowed or refused); proxy.ended and
 *   token.use.ended (how an allowed proxy call, or a call a resource recorded, ended) are 6003 99 Other.
 * - Oversight: agent.blocked is Authorize Session 3003 2 Revoke Privileges, agent.unblocked 1 Assign
 *   Privileges; agent.stopped (a revoked agent's process tree ended) is 6003 4 Delete; a watch finding is
 *   Detection Finding (2004, Findings) 1 Create, and its dismissal 2004 2 Update.
 * - Not exported: broker.*, key.*, audit.recovered, audit.adopted and checkpoint are the broker's own housekeeping, not
 *   security activity of an actor; they stay in the jsonl/csv exports and the log itself.
 */
const OCSF: Partial<Record<AuditRecord['event'], OcsfClass>> = {
  'task.requested': { class_uid: 3003, category_uid: 3, activity_id: 99, activity_name: 'Other' },
  'task.approved': { class_uid: 3003, category_uid: 3, activity_id: 1, activity_name: 'Assign Privileges' },
  'task.denied': { class_uid: 3003, category_uid: 3, activity_id: 1, activity_name: 'Assign Privileges' },
  'token.minted': { class_uid: 6003, category_uid: 6, activity_id: 1, activity_name: 'Create' },
  'token.exchanged': { class_uid: 6003, category_uid: 6, activity_id: 1, activity_name: 'Create' },
  'token.introspected': { class_uid: 6003, category_uid: 6, activity_id: 2, activity_name: 'Read' },
  revoked: { class_uid: 6003, category_uid: 6, activity_id: 4, activity_name: 'Delete' },
  'agent.connected': { class_uid: 3002, category_uid: 3, activity_id: 1, activity_name: 'Logon' },
  'agent.disconnected': { class_uid: 3002, category_uid: 3, activity_id: 2, activity_name: 'Logoff' },
  'token.used': { class_uid: 6003, category_uid: 6, activity_id: 2, activity_name: 'Read' },
  'proxy.call': { class_uid: 6003, category_uid: 6, activity_id: 2, activity_name: 'Read' },
  'proxy.ended': { class_uid: 6003, category_uid: 6, activity_id: 99, activity_name: 'Other' },
  'token.use.ended': { class_uid: 6003, category_uid: 6, activity_id: 99, activity_name: 'Other' },
  'agent.stopped': { class_uid: 6003, category_uid: 6, activity_id: 4, activity_name: 'Delete' },
  'agent.blocked': { class_uid: 3003, category_uid: 3, activity_id: 2, activity_name: 'Revoke Privileges' },
  'agent.unblocked': { class_uid: 3003, category_uid: 3, activity_id: 1, activity_name: 'Assign Privileges' },
  finding: { class_uid: 2004, category_uid: 2, activity_id: 1, activity_name: 'Create' },
  'finding.dismissed': { class_uid: 2004, category_uid: 2, activity_id: 2, activity_name: 'Update' },
};

export const OCSF_VERSION = '1.3.0';

/** Defined values only: OCSF consumers treat an absent attribute and a null one differently. */
function compact<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** One OCSF event, or null for events with no mapping (see OCSF above). */
export function toOcsf(r: AuditRecord): Record<string, unknown> | null {
  const c = OCSF[r.event];
  if (!c) return null;
  const failed = r.outcome === 'failure' || r.event === 'task.denied';
  const user = { uid: r.user, type_id: 1 }; // 1 = User: the developer who delegated
  const chain = agentChain(r);
  return compact({
    class_uid: c.class_uid,
    category_uid: c.category_uid,
    activity_id: c.activity_id,
    activity_name: c.activity_name,
    type_uid: c.class_uid * 100 + c.activity_id,
    time: Date.parse(r.ts),
    severity_id: 1, // Informational
    status_id: failed ? 2 : 1,
    status: failed ? 'Failure' : 'Success',
    status_code: r.code,
    metadata: { product: { name: 'Writ', vendor_name: 'Writ' }, version: OCSF_VERSION, uid: `${r.session}:${r.seq}` },
    actor: compact({
      user,
      app_name: r.agent?.name,
      session: { uid: r.session },
      process: r.agent?.process ? { pid: r.agent.process.pid } : undefined,
    }),
    // Class-required attributes: the user whose authority is in play, the API operation, the privileges granted.
    user: c.class_uid === 6003 ? undefined : user,
    api: c.class_uid === 6003 ? { operation: r.event } : undefined,
    privileges: c.class_uid === 3003 ? r.scopes : undefined,
    // Detection Finding requires finding_info: the watch's finding id and kind.
    finding_info:
      c.class_uid === 2004 && r.detail ? compact({ uid: r.detail.id as string | undefined, title: r.detail.kind as string | undefined }) : undefined,
    unmapped: compact({
      agent_chain: chain.length > 0 ? chain : undefined,
      detail: c.class_uid === 2004 || r.event.startsWith('agent.') || r.event.startsWith('proxy.') || r.event === 'token.used' || r.event === 'token.use.ended' ? r.detail : undefined,
      task: r.task,
      scopes: r.scopes,
      jti: r.jti,
      grant_id: r.grantId,
    }),
  });
}

// ---------------------------------------------------------------------------------------------
// Formats and the streaming export
// ---------------------------------------------------------------------------------------------

export function exportHeader(format: ExportFormat): string {
  return format === 'csv' ? CSV_COLUMNS.join(',') + '\r\n' : '';
}

/** One output line with its line end; '' when the format has no rendering for the record (OCSF housekeeping). */
export function formatRecord(r: AuditRecord, format: ExportFormat): string {
  switch (format) {
    case 'jsonl':
      return JSON.stringify(r) + '\n';
    case 'csv':
      return csvRow(r);
    case 'ocsf': {
      const o = toOcsf(r);
      return o ? JSON.stringify(o) + '\n' : '';
    }
  }
}

const NEWLINE = Buffer.from('\n');

async function write(out: NodeJS.WritableStream, chunk: string | Uint8Array): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}

/**
 * Streams the file to `out`. jsonl copies each line's original bytes, so an unfiltered export still verifies.
 * A torn final line (never acknowledged) is skipped; any other unreadable line is an error, not a silent gap.
 */
export async function exportAuditFile(
  path: string,
  out: NodeJS.WritableStream,
  format: ExportFormat,
  filter: AuditFilter,
): Promise<{ exported: number }> {
  let exported = 0;
  const header = exportHeader(format);
  if (header) await write(out, header);
  for await (const l of readAuditLines(path)) {
    if (!l.terminated) break;
    let r: AuditRecord;
    try {
      r = AuditRecord.parse(JSON.parse(l.bytes.toString('utf8')));
    } catch {
      throw new WritError('WRIT_AUDIT_CORRUPT', `audit log ${path}: line ${l.line} is not an audit record`, {
        data: { line: l.line },
      });
    }
    if (!wanted(r, filter)) continue;
    // jsonl: the exact bytes (copied: the slice would pin the read chunk), so the chain still hashes the same.
    const chunk = format === 'jsonl' ? Buffer.concat([l.bytes, NEWLINE]) : formatRecord(r, format);
    if (chunk.length === 0) continue;
    await write(out, chunk);
    exported++;
  }
  return { exported };
}
