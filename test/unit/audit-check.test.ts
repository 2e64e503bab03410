// The hand-written audit record check gives the zod schema's verdict: on records fast-check makes, good ones and
// ones broken in every field the schema knows, and on the cases JSON does not show (NaN, class instances, symbols).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { auditRecordProblem } from '../../broker/audit/check';
import { ERROR_CODES } from '../../broker/errors';
import { AUDIT_EVENTS, AuditRecord } from '../../broker/protocol';

const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const int = fc.integer({ min: -5, max: 2 ** 40 });
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
/** Anything a buggy caller might put in a field. */
const junk = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.constantFrom(NaN, Infinity, -Infinity, -0, 1.5, 2 ** 53, null, true, undefined),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.constant({}),
  fc.constant([1, 'a']),
);

const process = fc.record(
  {
    pid: int,
    uid: int,
    exe: fc.string(),
    startTime: fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), int),
    sha256: hex64,
    ppidChain: fc.array(fc.record({ pid: int, name: fc.string() }, { requiredKeys: ['pid'] }), { maxLength: 8 }),
  },
  { requiredKeys: ['pid'] },
);
const agent = fc.record(
  { id: fc.string(), name: fc.string(), kind: fc.string(), parents: fc.array(fc.string(), { maxLength: 3 }), process },
  { requiredKeys: ['id', 'name', 'kind', 'parents'] },
);
const good = fc.record(
  {
    v: fc.constant(1),
    seq: fc.nat(),
    ts: fc.string(),
    session: fc.string(),
    event: fc.constantFrom(...AUDIT_EVENTS),
    user: fc.string(),
    agent,
    task: fc.record({ id: fc.string(), description: fc.string() }),
    grantId: fc.string(),
    scopes: fc.array(fc.string(), { maxLength: 3 }),
    audience: fc.string(),
    jti: fc.string(),
    exp: int,
    outcome: fc.constantFrom('success', 'failure'),
    code: fc.constantFrom(...ERROR_CODES),
    detail: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
    checkpoint: fc.record({ count: fc.nat(), head: hex64, kid: fc.string(), sig: fc.string() }),
    prev: hex64,
  },
  { requiredKeys: ['v', 'seq', 'ts', 'session', 'event', 'user', 'prev'] },
);

/** Every path into a record, so a mutation can land at any depth. */
function paths(v: unknown, at: string[] = []): string[][] {
  if (typeof v !== 'object' || v === null) return [at];
  return [at, ...Object.entries(v).flatMap(([k, x]) => paths(x, [...at, k]))];
}

function mutate(r: unknown, path: string[], op: 'set' | 'delete' | 'add', value: unknown): unknown {
  const copy = structuredClone(r) as Record<string, unknown>;
  if (path.length === 0) return op === 'set' ? value : copy;
  let o = copy as Record<string, unknown>;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
  const last = path[path.length - 1]!;
  if (op === 'set') o[last] = value;
  else if (op === 'delete') delete o[last];
  else if (typeof o[last] === 'object' && o[last] !== null) (o[last] as Record<string, unknown>).extra = value;
  return copy;
}

const zodSays = (r: unknown) => AuditRecord.safeParse(r).success;

describe('auditRecordProblem', () => {
  it('accepts what the schema accepts', () => {
    fc.assert(
      fc.property(good, (r) => {
        expect(zodSays(r)).toBe(true);
        expect(auditRecordProblem(r)).toBeUndefined();
      }),
      { numRuns: 500 },
    );
  });

  it('agrees with the schema on a record changed anywhere: a field set to junk, removed, or an unknown one added', () => {
    const changed = good.chain((r) =>
      fc.tuple(fc.constant(r), fc.constantFrom(...paths(r)), fc.constantFrom('set' as const, 'delete' as const, 'add' as const), junk),
    );
    const verdicts = { good: 0, bad: 0 };
    fc.assert(
      fc.property(changed, ([r, path, op, value]) => {
        const m = mutate(r, path, op, value);
        const ok = zodSays(m);
        expect(auditRecordProblem(m) === undefined).toBe(ok);
        verdicts[ok ? 'good' : 'bad']++;
      }),
      { numRuns: 3000 },
    );
    // Both verdicts were reached often: the agreement is not on one side only.
    expect(verdicts.good).toBeGreaterThan(300);
    expect(verdicts.bad).toBeGreaterThan(300);
  });

  const base = { v: 1, seq: 3, ts: 't', session: 's', event: 'token.minted', user: 'u', prev: 'a'.repeat(64) };

  it('names the first bad field by its path', () => {
    expect(auditRecordProblem({ ...base, exp: 1.5 })).toBe('exp');
    expect(auditRecordProblem({ ...base, agent: { id: 'a', name: 'n', kind: 'k', parents: ['p', 7] } })).toBe('agent.parents.1');
    expect(auditRecordProblem({ ...base, agent: { id: 'a', name: 'n', kind: 'k', parents: [], process: { pid: 1, ppidChain: [{ pid: 'x' }] } } })).toBe('agent.process.ppidChain.0.pid');
    expect(auditRecordProblem({ ...base, bogus: 1 })).toBe('bogus');
    expect(auditRecordProblem({ ...base, prev: undefined })).toBe('prev');
    expect(auditRecordProblem([])).toBe('');
  });

  it('agrees with the schema where JSON cannot show the difference', () => {
    class Detail {
      mode = 'task';
    }
    const cases: unknown[] = [
      { ...base, seq: NaN },
      { ...base, agent: { id: 'a', name: 'n', kind: 'k', parents: [], process: { pid: 1, ppidChain: Array.from({ length: 9 }, () => ({ pid: 1 })) } } },
      { ...base, seq: Infinity },
      { ...base, seq: -0 },
      { ...base, exp: 2 ** 53 },
      { ...base, agent: { id: 'a', name: 'n', kind: 'k', parents: [], process: { pid: 1, startTime: Infinity } } },
      { ...base, detail: new Detail() },
      { ...base, detail: Object.create(null) },
      { ...base, detail: { [Symbol('s')]: 1 } },
      { ...base, detail: [] },
      { ...base, grantId: undefined },
      { ...base, event: 'token.stolen' },
      { ...base, code: 'WRIT_NOPE' },
    ];
    for (const c of cases) expect([c, auditRecordProblem(c) === undefined]).toEqual([c, zodSays(c)]);
  });
});
