import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { WritError } from '../../broker/errors';
import {
  allowsCall,
  formatScope,
  normalizeScopes,
  parseScope,
  parseScopes,
  scopeCovers,
  scopesCover,
  targetMatches,
  uncoveredScopes,
  type Scope,
} from '../../broker/core/scopes';

// --- helpers ---------------------------------------------------------------------------------

function thrown(f: () => unknown): WritError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WritError);
    return e as WritError;
  }
  throw new Error('expected a throw');
}

const covers = (granted: string, asked: string): boolean => scopeCovers(parseScope(granted), parseScope(asked));

/** A target pattern as a scope over a fixed resource and action (null means no target). */
const scopeOf = (target: string | null): Scope => parseScope(target === null ? 'r:x' : `r:x:${target}`);

/** Reference matcher: the glob as an anchored regex, built only from test-generated patterns. */
function referenceRegex(pattern: string): RegExp {
  const body = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 's');
}

const isValidTarget = (t: string): boolean => t.length > 0 && !t.includes('***');

/** Short patterns over a small alphabet; adjacent `*` tokens merge, so `***` is filtered out. */
const smallPattern = (maxTokens: number) =>
  fc
    .array(fc.constantFrom('a', 'b', '/', '*', '**'), { minLength: 1, maxLength: maxTokens })
    .map((ts) => ts.join(''))
    .filter(isValidTarget);

/** A target or null (any), for containment properties. */
const smallTarget = (maxTokens: number) => fc.option(smallPattern(maxTokens), { freq: 8 });

/** All strings over `alphabet` up to `maxLen` characters. */
function allStrings(alphabet: readonly string[], maxLen: number): string[] {
  const out = [''];
  let frontier = [''];
  for (let l = 1; l <= maxLen; l++) {
    frontier = frontier.flatMap((f) => alphabet.map((c) => f + c));
    out.push(...frontier);
  }
  return out;
}

// 'c' stands for any character no pattern mentions: containment must hold over the whole alphabet.
const ORACLE_STRINGS = allStrings(['a', 'b', '/', 'c'], 7);
const oracleCache = new Map<string, Uint8Array>();
function oracleSet(pattern: string | null): Uint8Array {
  const key = pattern ?? '\0any';
  let set = oracleCache.get(key);
  if (!set) {
    const re = pattern === null ? /^/ : referenceRegex(pattern);
    set = Uint8Array.from(ORACLE_STRINGS, (s) => (re.test(s) ? 1 : 0));
    oracleCache.set(key, set);
  }
  return set;
}
/** Brute force: does every string up to length 7 that A matches also match G? */
function oracleCovers(granted: string | null, asked: string | null): boolean {
  const g = oracleSet(granted);
  const a = oracleSet(asked);
  for (let i = 0; i < a.length; i++) if (a[i] === 1 && g[i] === 0) return false;
  return true;
}

// --- parsing ---------------------------------------------------------------------------------

describe('parseScope', () => {
  it.each([
    ['repo:read:acme/web', { resource: 'repo', action: 'read', target: 'acme/web' }],
    ['repo:read:acme/*', { resource: 'repo', action: 'read', target: 'acme/*' }],
    [
      'http:GET:https://api.github.com/repos/acme/web/**',
      { resource: 'http', action: 'GET', target: 'https://api.github.com/repos/acme/web/**' },
    ],
    ['mcp:call:github/create_issue', { resource: 'mcp', action: 'call', target: 'github/create_issue' }],
    ['repo:read', { resource: 'repo', action: 'read', target: null }],
    ['secret:read:a:b:c', { resource: 'secret', action: 'read', target: 'a:b:c' }],
    ['fs.local-2:Write_x.y-z:/home/me/?[x]{y}', { resource: 'fs.local-2', action: 'Write_x.y-z', target: '/home/me/?[x]{y}' }],
  ])('parses %s', (raw, expected) => {
    expect(parseScope(raw)).toEqual({ ...expected, raw });
  });

  it.each([
    ['', /empty/],
    ['repo', /resource:action\[:target\]/],
    ['repo:', /action must match/],
    [':read:x', /resource must match \[a-z\]/],
    ['Repo:read:x', /resource must match \[a-z\]/],
    ['repo:re*d:x', /globs are only allowed in the target/],
    ['repo:read:', /target must not be empty/],
    ['repo:read:a b', /printable ASCII without whitespace/],
    ['repo:read:a\tb', /printable ASCII without whitespace/],
    ['repo:read:caf\u00e9', /printable ASCII without whitespace/],
    ['repo:read:a***b', /\*\*\*/],
    ['repo:read:****', /\*\*\*/],
    [`repo:read:${'a'.repeat(401)}`, /at most 400/],
    [`repo:read:${'a/'.repeat(260)}`, /at most 512/],
    [`${'r'.repeat(65)}:read`, /resource must match/],
    [`repo:${'r'.repeat(65)}`, /action must match/],
    ['repo:1read', /action must match/],
  ])('rejects %j', (raw, message) => {
    const e = thrown(() => parseScope(raw));
    expect(e.code).toBe('WRIT_SCOPE_INVALID');
    expect(e.message).toMatch(message);
  });

  it('rejects a non-string at runtime', () => {
    expect(thrown(() => parseScope(42 as unknown as string)).code).toBe('WRIT_SCOPE_INVALID');
  });

  it('quotes the scope truncated to 80 characters', () => {
    const raw = `Repo:read:${'x'.repeat(200)}`;
    const e = thrown(() => parseScope(raw));
    expect(e.message).toContain(JSON.stringify(`${raw.slice(0, 80)}…`));
    expect(e.message).not.toContain('x'.repeat(100));
  });

  it('returns frozen scopes', () => {
    expect(Object.isFrozen(parseScope('repo:read:x'))).toBe(true);
  });
});

describe('parseScopes', () => {
  it('parses every entry', () => {
    expect(parseScopes(['repo:read', 'repo:write:x']).map((s) => s.raw)).toEqual(['repo:read', 'repo:write:x']);
    expect(parseScopes([])).toEqual([]);
  });

  it('names the failing entry in the path', () => {
    const e = thrown(() => parseScopes(['repo:read', 'repo:write:x', 'repo:re*d'], 'params.scopes'));
    expect(e.code).toBe('WRIT_SCOPE_INVALID');
    expect(e.path).toBe('params.scopes.2');
    expect(e.message).toMatch(/action/);
    expect(thrown(() => parseScopes(['repo'])).path).toBe('0');
  });

  it('rejects a non-list', () => {
    const e = thrown(() => parseScopes('repo:read' as unknown as string[], 'params.scopes'));
    expect(e.code).toBe('WRIT_SCOPE_INVALID');
    expect(e.path).toBe('params.scopes');
  });
});

describe('formatScope', () => {
  it('writes canonical text', () => {
    expect(formatScope(parseScope('repo:read:acme/*'))).toBe('repo:read:acme/*');
    expect(formatScope(parseScope('repo:read'))).toBe('repo:read');
    expect(formatScope(parseScope('repo:read:**'))).toBe('repo:read');
    expect(formatScope(parseScope('http:GET:https://x/a:b'))).toBe('http:GET:https://x/a:b');
  });
});

// --- matching --------------------------------------------------------------------------------

describe('targetMatches', () => {
  it.each([
    [null, '', true],
    [null, 'any/thing', true],
    ['acme/*', 'acme/web', true],
    // A `*` takes at least one character: never an empty segment, which servers read as another resource.
    ['acme/*', 'acme/', false],
    ['acme/*/x', 'acme//x', false],
    ['acme/*', 'acme/web/x', false],
    ['acme/*', 'acme', false],
    ['acme/**', 'acme/web/x', true],
    ['acme/**', 'acme/', true],
    ['acme/**', 'acme', false],
    ['**', '', true],
    ['*', 'a/b', false],
    ['a*b', 'ab', false],
    ['a*b', 'acb', true],
    ['a*b', 'a*b', true],
    ['a?b', 'a?b', true],
    ['a?b', 'axb', false],
    ['[ab]', 'a', false],
    ['[ab]', '[ab]', true],
    ['a.b', 'axb', false],
    ['https://api.github.com/repos/acme/web/**', 'https://api.github.com/repos/acme/web/issues/1', true],
    ['https://api.github.com/repos/acme/web/**', 'https://api.github.com/repos/acme/webhooks', false],
  ])('%j matches %j: %s', (pattern, concrete, expected) => {
    expect(targetMatches(pattern, concrete)).toBe(expected);
  });

  it('treats * in the concrete string literally', () => {
    expect(targetMatches('acme/web', 'acme/*')).toBe(false);
    expect(targetMatches('acme/*', 'acme/*')).toBe(true);
  });

  it('rejects an invalid pattern', () => {
    expect(thrown(() => targetMatches('a***', 'a')).code).toBe('WRIT_SCOPE_INVALID');
  });

  it('agrees with a reference regex on generated patterns', () => {
    const chars = ['a', 'b', '/', '.', '?', '+', '(', '[', '\\', '$', '*', '**'];
    const pattern = fc
      .array(fc.constantFrom(...chars), { minLength: 1, maxLength: 8 })
      .map((ts) => ts.join(''))
      .filter(isValidTarget);
    const concrete = fc.array(fc.constantFrom('a', 'b', '/', '.', '?', '*', 'c', '\n'), { maxLength: 10 }).map((ts) => ts.join(''));
    fc.assert(
      fc.property(pattern, concrete, (p, t) => {
        expect(targetMatches(p, t)).toBe(referenceRegex(p).test(t));
      }),
      { numRuns: 3000 },
    );
  });
});

// --- containment -----------------------------------------------------------------------------

describe('scopeCovers', () => {
  it.each([
    ['repo:read:acme/*', 'repo:read:acme/web', true],
    ['repo:read:acme/*', 'repo:read:acme/web/x', false],
    ['repo:read:acme/**', 'repo:read:acme/*', true],
    ['repo:read:acme/**', 'repo:read:acme/web/x', true],
    ['repo:read:acme/*', 'repo:read:acme/**', false],
    ['repo:read', 'repo:read:anything/at/all', true],
    ['repo:read', 'repo:read:**', true],
    ['repo:read:**', 'repo:read', true],
    ['repo:read:*', 'repo:read', false],
    ['repo:read:x', 'repo:read', false],
    ['repo:read:x', 'repo:write:x', false],
    ['repo:read:x', 'secret:read:x', false],
    ['http:GET:x', 'http:get:x', false],
    ['http:GET:https://api.github.com/repos/acme/web/**', 'http:GET:https://api.github.com/repos/acme/web/issues/1', true],
    ['http:GET:https://api.github.com/repos/acme/web/**', 'http:GET:https://api.github.com/repos/acme/webhooks', false],
    ['http:GET:https://api.github.com/repos/acme/web/**', 'http:GET:https://api.github.com/repos/acme/web/*', true],
    ['http:GET:https://api.github.com/repos/*/web', 'http:GET:https://api.github.com/repos/acme/web', true],
    ['http:GET:https://api.github.com/repos/*/web', 'http:GET:https://api.github.com/repos/**/web', false],
    ['repo:read:acme/*', 'repo:read:acme/w*b', true],
    ['repo:read:acme/w*', 'repo:read:acme/*', false],
    ['repo:read:*/web', 'repo:read:acme/*', false],
    ['repo:read:a*', 'repo:read:ab*', true],
    ['repo:read:*b', 'repo:read:a*b', true],
    ['repo:read:*a*', 'repo:read:ba*b', true],
    // `aca` has no 'a' with a character on either side.
    ['repo:read:*a*', 'repo:read:a*a', false],
    // A `*` is never empty, so neither covers an empty segment.
    ['repo:read:acme/*', 'repo:read:acme/', false],
    ['repo:read:acme/*/x', 'repo:read:acme//x', false],
    ['repo:read:acme/**', 'repo:read:acme/', true],
    // Over {a,b} every a…b string holds "ab", but "acb" does not: containment is over all characters.
    ['repo:read:*ab*', 'repo:read:a*b', false],
    // A string ending in 'a' with a '/' has a non-empty last segment: the asked `**` is covered by the
    // granted `**` and `*` together.
    ['repo:read:**/*', 'repo:read:**/**a', true],
    // `x/` has an empty last segment, `/x` an empty first one.
    ['repo:read:**/*', 'repo:read:*/**', false],
    ['repo:read:*/**', 'repo:read:**/*', false],
    ['repo:read:a/**/*', 'repo:read:a/*/**', false],
    ['repo:read:**/*', 'repo:read:**', false],
    ['repo:read:*//**', 'repo:read:**//**', false],
    ['repo:read:a?', 'repo:read:ab', false],
    ['repo:read:a?', 'repo:read:a?', true],
  ])('%s covers %s: %s', (granted, asked, expected) => {
    expect(covers(granted, asked)).toBe(expected);
  });

  it('never widens (random patterns, random concrete strings)', () => {
    const concrete = fc.array(fc.constantFrom('a', 'b', '/', 'c'), { maxLength: 10 }).map((ts) => ts.join(''));
    fc.assert(
      fc.property(smallTarget(6), smallTarget(6), fc.array(concrete, { minLength: 1, maxLength: 20 }), (g, a, ts) => {
        if (!scopeCovers(scopeOf(g), scopeOf(a))) return;
        for (const t of ts) if (targetMatches(a, t)) expect(targetMatches(g, t)).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('never widens: a covered pattern\'s own instances match the granted one', () => {
    // Instances of A built by filling its globs, so the premise targetMatches(A, t) always holds.
    const fill = fc.array(fc.constantFrom('', 'a', 'b', 'c', 'ab', '/', 'a/b', '//'), { minLength: 6, maxLength: 6 });
    fc.assert(
      fc.property(smallPattern(6), smallPattern(6), fill, (g, a, fills) => {
        if (!scopeCovers(scopeOf(g), scopeOf(a))) return;
        let k = 0;
        const t = a
          .split(/(\*\*|\*)/)
          .map((part) => {
            if (part !== '*' && part !== '**') return part;
            const f = fills[k++ % fills.length] ?? '';
            return part === '*' ? f.replaceAll('/', '') || 'c' : f;
          })
          .join('');
        expect(targetMatches(a, t)).toBe(true);
        expect(targetMatches(g, t)).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('is reflexive on valid scopes', () => {
    const printable = Array.from({ length: 94 }, (_, i) => String.fromCharCode(0x21 + i));
    const target = fc
      .array(fc.constantFrom(...printable, '*', '**', '/'), { minLength: 1, maxLength: 60 })
      .map((ts) => ts.join(''))
      .filter(isValidTarget);
    const scope = fc
      .tuple(
        fc.stringMatching(/^[a-z][a-z0-9_.-]{0,10}$/),
        fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.-]{0,10}$/),
        fc.option(target, { freq: 5 }),
      )
      .map(([r, a, t]) => parseScope(t === null ? `${r}:${a}` : `${r}:${a}:${t}`));
    fc.assert(
      fc.property(scope, (s) => {
        expect(scopeCovers(s, s)).toBe(true);
        const again = parseScope(formatScope(s));
        expect(scopeCovers(again, s) && scopeCovers(s, again)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('is transitive', () => {
    fc.assert(
      fc.property(fc.uniqueArray(smallTarget(5), { minLength: 3, maxLength: 14 }), (targets) => {
        const scopes = targets.map(scopeOf);
        const c = scopes.map((x) => scopes.map((y) => scopeCovers(x, y)));
        scopes.forEach((_, i) =>
          scopes.forEach((_, j) =>
            scopes.forEach((_, k) => {
              if (c[i]![j] && c[j]![k]) expect(c[i]![k], `${targets[i]} ⊇ ${targets[j]} ⊇ ${targets[k]}`).toBe(true);
            }),
          ),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('agrees with a brute-force oracle on every pair of patterns up to 3 tokens', () => {
    const tokens = ['a', 'b', '/', '*', '**'];
    let patterns: string[] = [''];
    const all = new Set<string | null>([null]);
    for (let len = 1; len <= 3; len++) {
      patterns = patterns.flatMap((p) => tokens.map((t) => p + t));
      for (const p of patterns) if (isValidTarget(p)) all.add(p);
    }
    const disagreements: string[] = [];
    for (const g of all) {
      for (const a of all) {
        if (scopeCovers(scopeOf(g), scopeOf(a)) !== oracleCovers(g, a)) disagreements.push(`${g} ⊇ ${a}`);
      }
    }
    expect(disagreements).toEqual([]);
  });

  it('is sound, and here exact, against the brute-force oracle on random patterns up to 5 tokens', () => {
    let saidYes = 0;
    let oracleYes = 0;
    let conservative = 0;
    fc.assert(
      fc.property(smallTarget(5), smallTarget(5), (g, a) => {
        const said = scopeCovers(scopeOf(g), scopeOf(a));
        const truth = oracleCovers(g, a);
        if (said) {
          saidYes++;
          expect(truth, `${g} ⊇ ${a} claimed but the oracle disagrees`).toBe(true);
        }
        if (truth) oracleYes++;
        if (truth && !said) conservative++;
      }),
      { numRuns: 1500 },
    );
    console.info(`scope containment vs oracle: ${saidYes} yes, ${oracleYes} oracle yes, ${conservative} conservative`);
    expect(oracleYes).toBeGreaterThan(0);
    // Every pair of patterns up to 5 tokens was checked offline to be exact; keep it so.
    expect(conservative).toBe(0);
  });
});

describe('scopesCover, uncoveredScopes, allowsCall', () => {
  it('needs every asked scope covered by some granted one', () => {
    const granted = parseScopes(['repo:read:acme/*', 'repo:write:acme/web', 'http:GET']);
    expect(scopesCover(granted, parseScopes(['repo:read:acme/web', 'http:GET:https://x/y']))).toBe(true);
    expect(scopesCover(granted, [])).toBe(true);
    const asked = parseScopes(['repo:read:acme/web', 'repo:write:acme/api', 'http:POST:https://x']);
    expect(scopesCover(granted, asked)).toBe(false);
    expect(uncoveredScopes(granted, asked).map(formatScope)).toEqual(['repo:write:acme/api', 'http:POST:https://x']);
  });

  it('allows a concrete call only under a matching scope', () => {
    const granted = parseScopes(['repo:read:acme/*', 'http:GET:https://api.github.com/repos/acme/web/**']);
    expect(allowsCall(granted, 'repo', 'read', 'acme/web')).toBe(true);
    expect(allowsCall(granted, 'repo', 'read', 'acme/web/x')).toBe(false);
    expect(allowsCall(granted, 'repo', 'write', 'acme/web')).toBe(false);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.github.com/repos/acme/web/issues/1')).toBe(true);
    expect(allowsCall(granted, 'http', 'get', 'https://api.github.com/repos/acme/web/issues/1')).toBe(false);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.github.com/repos/acme/webhooks')).toBe(false);
    expect(allowsCall([], 'repo', 'read', 'acme/web')).toBe(false);
  });

  it('refuses dot segments and control characters whatever the grant', () => {
    const granted = parseScopes(['repo:read', 'http:GET:https://api.github.com/repos/acme/web/**']);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.github.com/repos/acme/web/../../other')).toBe(false);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.github.com/repos/acme/web/./x')).toBe(false);
    expect(allowsCall(granted, 'repo', 'read', 'acme/..')).toBe(false);
    expect(allowsCall(granted, 'repo', 'read', 'acme/web\r\nx')).toBe(false);
    expect(allowsCall(granted, 'repo', 'read', 'acme/..web/a.b')).toBe(true);
  });

  it('never lets a one-segment glob match an empty segment (servers read `items/` as `items`, `a//b` as `a/b`)', () => {
    const granted = parseScopes(['http:DELETE:https://api.example/items/*', 'http:GET:https://api.example/repos/*/readme', 'mcp:call:github/*']);
    expect(allowsCall(granted, 'http', 'DELETE', 'https://api.example/items/42')).toBe(true);
    expect(allowsCall(granted, 'http', 'DELETE', 'https://api.example/items/')).toBe(false);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.example/repos/acme/readme')).toBe(true);
    expect(allowsCall(granted, 'http', 'GET', 'https://api.example/repos//readme')).toBe(false);
    expect(allowsCall(granted, 'mcp', 'call', 'github/')).toBe(false);
    // Nor can it be narrowed to one: a sub-agent or a reused grant would get what the grant does not allow.
    expect(scopesCover(granted, parseScopes(['http:DELETE:https://api.example/items/']))).toBe(false);
    expect(scopesCover(granted, parseScopes(['http:GET:https://api.example/repos//readme']))).toBe(false);
    // `**` is unchanged: any run, the empty one included.
    const deep = parseScopes(['http:GET:https://api.example/items/**']);
    expect(allowsCall(deep, 'http', 'GET', 'https://api.example/items/')).toBe(true);
    expect(allowsCall(deep, 'http', 'GET', 'https://api.example/items/a/b')).toBe(true);
    expect(allowsCall(deep, 'http', 'GET', 'https://api.example/items')).toBe(false);
  });

  it('a covering set allows every call the covered set allows', () => {
    const scopeText = fc
      .tuple(fc.constantFrom('repo:read', 'repo:write'), fc.option(smallPattern(4), { freq: 6 }))
      .map(([ra, t]) => (t === null ? ra : `${ra}:${t}`));
    const concretes = allStrings(['a', 'b', '/', '.'], 4);
    fc.assert(
      fc.property(fc.array(scopeText, { maxLength: 4 }), fc.array(scopeText, { maxLength: 4 }), (gs, as) => {
        const granted = parseScopes(gs);
        const asked = parseScopes(as);
        if (!scopesCover(granted, asked)) return;
        for (const [resource, action] of [['repo', 'read'], ['repo', 'write']] as const) {
          for (const t of concretes) {
            if (allowsCall(asked, resource, action, t)) expect(allowsCall(granted, resource, action, t)).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('normalizeScopes', () => {
  it('canonicalises, dedupes, drops covered scopes and sorts', () => {
    expect(
      normalizeScopes(['repo:read:acme/web', 'repo:read:acme/*', 'http:GET', 'repo:read:acme/*', 'http:GET:https://x/**', 'repo:write:a']),
    ).toEqual(['http:GET', 'repo:read:acme/*', 'repo:write:a']);
    expect(normalizeScopes(['repo:read:**', 'repo:read'])).toEqual(['repo:read']);
    // Neither covers the other (`x/` and `/x`), so both stay.
    expect(normalizeScopes(['repo:read:*/**', 'repo:read:**/*'])).toEqual(['repo:read:**/*', 'repo:read:*/**']);
    expect(normalizeScopes([])).toEqual([]);
  });

  it('rejects an invalid entry with its index', () => {
    const e = thrown(() => normalizeScopes(['repo:read', 'nope']));
    expect(e.code).toBe('WRIT_SCOPE_INVALID');
    expect(e.path).toBe('1');
  });

  it('is idempotent and keeps the same set of calls', () => {
    const scopeText = fc
      .tuple(fc.constantFrom('repo:read', 'repo:write', 'http:GET'), fc.option(smallPattern(5), { freq: 6 }))
      .map(([ra, t]) => (t === null ? ra : `${ra}:${t}`));
    fc.assert(
      fc.property(fc.array(scopeText, { maxLength: 8 }), (raws) => {
        const once = normalizeScopes(raws);
        expect(normalizeScopes(once)).toEqual(once);
        expect([...once].sort()).toEqual(once);
        const before = parseScopes(raws);
        const after = parseScopes(once);
        expect(scopesCover(after, before)).toBe(true);
        expect(scopesCover(before, after)).toBe(true);
        // Nothing left is covered by another survivor.
        after.forEach((s, i) => after.forEach((o, j) => i !== j && expect(scopeCovers(o, s)).toBe(false)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('hostile input', () => {
  const alternating = '*a'.repeat(200); // 400 characters, the target maximum
  const long = 'a'.repeat(50_000);

  it('matches long concrete strings against 400-character glob patterns', () => {
    expect(targetMatches(alternating, long)).toBe(true);
    expect(targetMatches(`${alternating.slice(0, 398)}*b`, long)).toBe(false);
    expect(targetMatches('**a'.repeat(133), `${long}b`)).toBe(false);
    expect(allowsCall([scopeOf(alternating)], 'r', 'x', `${long}/`)).toBe(false);
  });

  it('decides containment between 400-character patterns', () => {
    const patterns = [
      alternating,
      'a*'.repeat(200),
      '**a'.repeat(133),
      '*a**a'.repeat(80),
      `${alternating.slice(0, 398)}*b`,
      '*/'.repeat(200),
      `**${'/*'.repeat(199)}`,
      '*a*b'.repeat(100),
      '**a**b'.repeat(66),
    ];
    for (const g of patterns) {
      for (const a of patterns) {
        const said = scopeCovers(scopeOf(g), scopeOf(a));
        if (g === a) expect(said).toBe(true);
      }
    }
    expect(scopeCovers(scopeOf('**a'.repeat(133)), scopeOf(alternating))).toBe(true);
    expect(scopeCovers(scopeOf(alternating), scopeOf('a*'.repeat(200)))).toBe(false);
  });
});
