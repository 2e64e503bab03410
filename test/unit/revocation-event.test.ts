// parseRevocationEvent: the verifier's hand-written check of a `revocation` notification. It must accept
// exactly what the RevocationEvent schema accepts (the schema is the reference) and give back the same value.
import { describe, expect, it } from 'vitest';
import { RevocationEvent, parseRevocationEvent } from '../../broker/protocol';

const GOOD = { target: { kind: 'token', jti: 'tok_1' }, at: 1_767_225_600, jtis: ['tok_1'], agentIds: [], taskIds: [], seq: 7 };

/** Each a notification's params that the broker never sends, named for what is wrong with it. */
const MALFORMED: [string, unknown][] = [
  ['params absent', undefined],
  ['params null', null],
  ['params an array', [GOOD]],
  ['params a string', JSON.stringify(GOOD)],
  ['an unknown key', { ...GOOD, extra: 1 }],
  ['an own __proto__ key (as JSON.parse makes it)', JSON.parse(`{"__proto__":{"x":1},${JSON.stringify(GOOD).slice(1)}`)],
  ['no target', { ...GOOD, target: undefined }],
  ['target null', { ...GOOD, target: null }],
  ['target kind unknown', { ...GOOD, target: { kind: 'session', id: 's' } }],
  ['target kind missing', { ...GOOD, target: { jti: 'tok_1' } }],
  ['token target with id instead of jti', { ...GOOD, target: { kind: 'token', id: 'tok_1' } }],
  ['token target with an extra key', { ...GOOD, target: { kind: 'token', jti: 'tok_1', id: 'x' } }],
  ['token target jti empty', { ...GOOD, target: { kind: 'token', jti: '' } }],
  ['token target jti a number', { ...GOOD, target: { kind: 'token', jti: 1 } }],
  ['token target jti 201 characters', { ...GOOD, target: { kind: 'token', jti: 'a'.repeat(201) } }],
  ['agent target id 201 code points', { ...GOOD, target: { kind: 'agent', id: '😀'.repeat(201) } }],
  ['grant target without id', { ...GOOD, target: { kind: 'grant' } }],
  ['all target with an id', { ...GOOD, target: { kind: 'all', id: '' } }],
  ['at missing', { ...GOOD, at: undefined }],
  ['at a string', { ...GOOD, at: '1767225600' }],
  ['at a fraction', { ...GOOD, at: 1.5 }],
  ['at past the safe integers', { ...GOOD, at: 2 ** 53 }],
  ['at infinite', { ...GOOD, at: Infinity }],
  ['at NaN', { ...GOOD, at: NaN }],
  ['jtis missing', { ...GOOD, jtis: undefined }],
  ['jtis a string', { ...GOOD, jtis: 'tok_1' }],
  ['jtis with a number in it', { ...GOOD, jtis: ['tok_1', 2] }],
  ['jtis with null in it', { ...GOOD, jtis: [null] }],
  ['jtis an array-like object', { ...GOOD, jtis: { 0: 'tok_1', length: 1 } }],
  ['agentIds missing', { ...GOOD, agentIds: undefined }],
  ['taskIds with an object in it', { ...GOOD, taskIds: [{}] }],
  ['grantIds null', { ...GOOD, grantIds: null }],
  ['grantIds with a number in it', { ...GOOD, grantIds: [1] }],
  ['seq a fraction', { ...GOOD, seq: 1.5 }],
  ['seq a string', { ...GOOD, seq: '7' }],
  ['seq null', { ...GOOD, seq: null }],
];

const VALID: [string, unknown, RevocationEvent][] = [
  ['a token with its seq', GOOD, { target: { kind: 'token', jti: 'tok_1' }, at: 1_767_225_600, jtis: ['tok_1'], agentIds: [], taskIds: [], seq: 7 }],
  [
    'a grant with grantIds and no seq (a non-acknowledging subscriber)',
    { target: { kind: 'grant', id: 'grt_1' }, at: 5, jtis: ['a', 'b'], agentIds: [], taskIds: [], grantIds: ['grt_1'] },
    { target: { kind: 'grant', id: 'grt_1' }, at: 5, jtis: ['a', 'b'], agentIds: [], taskIds: [], grantIds: ['grt_1'] },
  ],
  [
    'an agent, ids of 200 code points (400 UTF-16 units)',
    { target: { kind: 'agent', id: '😀'.repeat(200) }, at: 0, jtis: [], agentIds: ['agt_1', 'agt_2'], taskIds: [], seq: 0 },
    { target: { kind: 'agent', id: '😀'.repeat(200) }, at: 0, jtis: [], agentIds: ['agt_1', 'agt_2'], taskIds: [], seq: 0 },
  ],
  ['a task', { target: { kind: 'task', id: 't' }, at: -1, jtis: [], agentIds: [], taskIds: ['t'] }, { target: { kind: 'task', id: 't' }, at: -1, jtis: [], agentIds: [], taskIds: ['t'] }],
  ['all', { target: { kind: 'all' }, at: 2 ** 53 - 1, jtis: [], agentIds: [], taskIds: [] }, { target: { kind: 'all' }, at: 2 ** 53 - 1, jtis: [], agentIds: [], taskIds: [] }],
  ['a 200-character jti', { ...GOOD, target: { kind: 'token', jti: 'a'.repeat(200) } }, { ...GOOD, target: { kind: 'token', jti: 'a'.repeat(200) } } as RevocationEvent],
];

describe('parseRevocationEvent', () => {
  it.each(VALID)('accepts %s with exactly its values', (_name, input, expected) => {
    expect(parseRevocationEvent(input)).toEqual(expected);
    expect(RevocationEvent.parse(input)).toEqual(expected);
  });

  it.each(MALFORMED)('refuses %s (and so does the schema)', (_name, input) => {
    expect(parseRevocationEvent(input)).toBeUndefined();
    expect(RevocationEvent.safeParse(input).success).toBe(false);
  });

  it('keeps nothing of the input beyond the schema: the target is a fresh object of its own keys', () => {
    const input = { target: { kind: 'grant', id: 'grt_1' }, at: 5, jtis: [], agentIds: [], taskIds: [] };
    const e = parseRevocationEvent(input)!;
    expect(e.target).not.toBe(input.target);
    expect(Object.keys(e)).toEqual(['target', 'at', 'jtis', 'agentIds', 'taskIds']);
  });

  it('agrees with the schema on 5,000 mutations of valid events (a fixed seed)', () => {
    let seed = 0x5eed;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return (seed >>> 16) % n;
    };
    const values: unknown[] = [undefined, null, 0, -1, 1.25, 2 ** 53, '', 'x', '😀'.repeat(101), 'a'.repeat(201), [], ['s'], [1], {}, { kind: 'all' }, true];
    const keys = ['target', 'at', 'jtis', 'agentIds', 'taskIds', 'grantIds', 'seq', 'extra'];
    const targetKeys = ['kind', 'id', 'jti', 'extra'];
    const kinds = ['token', 'grant', 'task', 'agent', 'all', 'other'];
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const [, base] = VALID[rnd(VALID.length)]!;
      const e: Record<string, unknown> = structuredClone(base as Record<string, unknown>);
      for (let m = rnd(3); m >= 0; m--) {
        const which = rnd(4);
        if (which === 0) e[keys[rnd(keys.length)]!] = values[rnd(values.length)];
        else if (which === 1) delete e[keys[rnd(keys.length)]!];
        else if (which === 2) e.target = { kind: kinds[rnd(kinds.length)], [targetKeys[rnd(targetKeys.length)]!]: values[rnd(values.length)] };
        // which === 3: left as it is
      }
      const zod = RevocationEvent.safeParse(e);
      const lean = parseRevocationEvent(e);
      expect(lean === undefined, JSON.stringify(e)).toBe(!zod.success);
      if (zod.success) {
        expect(lean).toEqual(zod.data);
        accepted++;
      }
    }
    // Both sides of the comparison were exercised.
    expect(accepted).toBeGreaterThan(500);
    expect(accepted).toBeLessThan(4500);
  });
});
