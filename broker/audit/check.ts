// The audit record's shape, checked by hand where records are written. The zod schema (`AuditRecord` in
// protocol.ts) stays the definition, and every reader parses with it; this check gives the same verdict (a
// property test, test/unit/audit-check.test.ts, holds it to that on records fast-check makes) without zod's copy
// of every record, which at thousands of records a second was a tenth of the event loop's time per mint.
import { ERROR_CODES } from '../errors';
import { AUDIT_EVENTS, isRecord } from '../protocol';

const EVENTS: ReadonlySet<unknown> = new Set(AUDIT_EVENTS);
const CODES: ReadonlySet<unknown> = new Set(ERROR_CODES);
const HEX64 = /^[0-9a-f]{64}$/;
const OUTCOMES: ReadonlySet<unknown> = new Set(['success', 'failure']);

type Fields = Record<string, (v: unknown, path: string) => string | undefined>;

const str = (v: unknown, path: string) => (typeof v === 'string' ? undefined : path);
const int = (v: unknown, path: string) => (Number.isSafeInteger(v) ? undefined : path);
const nonNegInt = (v: unknown, path: string) => (Number.isSafeInteger(v) && (v as number) >= 0 ? undefined : path);
const finite = (v: unknown, path: string) => (typeof v === 'number' && Number.isFinite(v) ? undefined : path);
const hex64 = (v: unknown, path: string) => (typeof v === 'string' && HEX64.test(v) ? undefined : path);
const oneOf = (set: ReadonlySet<unknown>) => (v: unknown, path: string) => (set.has(v) ? undefined : path);

function strings(v: unknown, path: string): string | undefined {
  if (!Array.isArray(v)) return path;
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string') return `${path}.${i}`;
  return undefined;
}

/** A strict object: every required field present and good, optional ones good when present, nothing else. */
function object(required: Fields, optional: Fields = {}) {
  return (v: unknown, path: string): string | undefined => {
    if (!isRecord(v)) return path;
    const at = (k: string) => (path === '' ? k : `${path}.${k}`);
    for (const k in required) {
      if (!Object.hasOwn(v, k)) return at(k);
      const bad = required[k]!(v[k], at(k));
      if (bad !== undefined) return bad;
    }
    for (const k of Object.keys(v)) {
      if (Object.hasOwn(required, k)) continue;
      const check = Object.hasOwn(optional, k) ? optional[k] : undefined;
      if (check === undefined) return at(k);
      // An optional field may be present and undefined (JSON leaves it out).
      if (v[k] === undefined) continue;
      const bad = check(v[k], at(k));
      if (bad !== undefined) return bad;
    }
    return undefined;
  };
}

const ppidEntry = object({ pid: int }, { name: str });
const ppidChain = (v: unknown, path: string): string | undefined => {
  if (!Array.isArray(v) || v.length > 8) return path;
  for (let i = 0; i < v.length; i++) {
    const bad = ppidEntry(v[i], `${path}.${i}`);
    if (bad !== undefined) return bad;
  }
  return undefined;
};
const peerProcess = object({ pid: int }, { uid: int, exe: str, startTime: finite, sha256: hex64, ppidChain });
const agent = object({ id: str, name: str, kind: str, parents: strings }, { process: peerProcess });
const task = object({ id: str, description: str });
const checkpoint = object({ count: nonNegInt, head: hex64, kid: str, sig: str });

/** `Record<string, unknown>` as zod has it: a plain object (its prototype Object's or none), no symbol keys. */
function detail(v: unknown, path: string): string | undefined {
  if (!isRecord(v)) return path;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return path;
  return Object.getOwnPropertySymbols(v).length > 0 ? path : undefined;
}

const record = object(
  { v: (x, p) => (x === 1 ? undefined : p), seq: nonNegInt, ts: str, session: str, event: oneOf(EVENTS), user: str, prev: hex64 },
  {
    agent,
    task,
    grantId: str,
    scopes: strings,
    audience: str,
    jti: str,
    exp: int,
    outcome: oneOf(OUTCOMES),
    code: oneOf(CODES),
    detail,
    checkpoint,
  },
);

/** The dotted path of the first field that keeps `r` from being an AuditRecord ('' for the record itself), or undefined. */
export function auditRecordProblem(r: unknown): string | undefined {
  return record(r, '');
}
