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

/**
 * A field check: undefined when good, else the path of what is wrong below the value ('' for the value itself).
 * Paths are built only on failure: a record that passes (every one the broker writes) allocates nothing here.
 */
type Check = (v: unknown) => string | undefined;
type Fields = Record<string, Check>;

const str: Check = (v) => (typeof v === 'string' ? undefined : '');
const int: Check = (v) => (Number.isSafeInteger(v) ? undefined : '');
const nonNegInt: Check = (v) => (Number.isSafeInteger(v) && (v as number) >= 0 ? undefined : '');
const finite: Check = (v) => (typeof v === 'number' && Number.isFinite(v) ? undefined : '');
const hex64: Check = (v) => (typeof v === 'string' && HEX64.test(v) ? undefined : '');
const oneOf = (set: ReadonlySet<unknown>): Check => (v) => (set.has(v) ? undefined : '');
/** `key` then what is wrong below it. */
const under = (key: string | number, bad: string): string => (bad === '' ? String(key) : `${key}.${bad}`);

const strings: Check = (v) => {
  if (!Array.isArray(v)) return '';
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string') return String(i);
  return undefined;
};

/** A strict object: every required field present and good, optional ones good when present, nothing else. */
function object(required: Fields, optional: Fields = {}): Check {
  const requiredKeys = Object.keys(required);
  return (v) => {
    if (!isRecord(v)) return '';
    for (const k of requiredKeys) {
      if (!Object.hasOwn(v, k)) return k;
      const bad = required[k]!(v[k]);
      if (bad !== undefined) return under(k, bad);
    }
    for (const k in v) {
      if (!Object.hasOwn(v, k) || Object.hasOwn(required, k)) continue;
      const check = Object.hasOwn(optional, k) ? optional[k] : undefined;
      if (check === undefined) return k;
      // An optional field may be present and undefined (JSON leaves it out).
      if (v[k] === undefined) continue;
      const bad = check(v[k]);
      if (bad !== undefined) return under(k, bad);
    }
    return undefined;
  };
}

const ppidEntry = object({ pid: int }, { name: str });
const ppidChain: Check = (v) => {
  if (!Array.isArray(v) || v.length > 8) return '';
  for (let i = 0; i < v.length; i++) {
    const bad = ppidEntry(v[i]);
    if (bad !== undefined) return under(i, bad);
  }
  return undefined;
};
const peerProcess = object({ pid: int }, { uid: int, exe: str, startTime: finite, sha256: hex64, ppidChain });
const agent = object({ id: str, name: str, kind: str, parents: strings }, { process: peerProcess });
const task = object({ id: str, description: str });
const checkpoint = object({ count: nonNegInt, head: hex64, kid: str, sig: str });

/** `Record<string, unknown>` as zod has it: a plain object (its prototype Object's or none), no symbol keys. */
const detail: Check = (v) => {
  if (!isRecord(v)) return '';
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return '';
  return Object.getOwnPropertySymbols(v).length > 0 ? '' : undefined;
};

const record = object(
  { v: (x) => (x === 1 ? undefined : ''), seq: nonNegInt, ts: str, session: str, event: oneOf(EVENTS), user: str, prev: hex64 },
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
  return record(r);
}
