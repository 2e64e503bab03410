// Scope grammar (`resource:action[:target]`) and the one containment check that approval, minting,
// delegation and enforcement all go through. It may answer "no" when unsure, never "yes".
import { WritError, isWritError } from '../errors';

export interface Scope {
  readonly resource: string;
  readonly action: string;
  /** A glob over concrete targets; null means any target (the same language as `**`). */
  readonly target: string | null;
  readonly raw: string;
}

const MAX_SCOPE_LENGTH = 512;
const MAX_TARGET_LENGTH = 400;
const QUOTE_LENGTH = 80;
// Fixed grammar, never built from input.
const RESOURCE_RE = /^[a-z][a-z0-9_.-]{0,63}$/;
const ACTION_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

// A compiled target is a token list: a literal is its UTF-16 code (>= 0), globs are negative.
type Tokens = readonly number[];
const STAR = -1; // any run without '/'
const DSTAR = -2; // any run at all
const OTHER = -3; // stands for every character no pattern mentions (never a token)
const SLASH = 0x2f;
const ANY: Tokens = [DSTAR];

// Work allowed to the exhaustive check per pair of targets: a floor so small patterns are decided
// exactly, plus a term proportional to |G|*|A| so a hostile pair costs about what the table does.
const EXHAUSTIVE_BUDGET_FLOOR = 20_000;
const EXHAUSTIVE_BUDGET_PER_CELL = 1;

function quote(raw: string): string {
  return JSON.stringify(raw.length > QUOTE_LENGTH ? `${raw.slice(0, QUOTE_LENGTH)}…` : raw);
}

function invalid(message: string, raw?: string): WritError {
  return new WritError('WRIT_SCOPE_INVALID', raw === undefined ? message : `${message}: ${quote(raw)}`);
}

/** Why a target pattern is invalid, or null. `?[]{}` are ordinary literal characters. */
function targetProblem(target: string): string | null {
  if (target.length === 0) return 'scope target must not be empty (omit it to mean any target)';
  if (target.length > MAX_TARGET_LENGTH) return `scope target must be at most ${MAX_TARGET_LENGTH} characters`;
  let run = 0;
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return 'scope target must be printable ASCII without whitespace';
    run = c === 0x2a ? run + 1 : 0;
    if (run > 2) return 'scope target must not contain *** (use * or **)';
  }
  return null;
}

/** Tokens of a target already known to be valid. */
function tokenize(target: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c !== 0x2a) out.push(c);
    else if (target.charCodeAt(i + 1) === 0x2a) {
      out.push(DSTAR);
      i++;
    } else out.push(STAR);
  }
  return out;
}

function compile(target: string | null): Tokens {
  if (target === null) return ANY;
  if (typeof target !== 'string') throw invalid('scope target must be a string or null');
  const problem = targetProblem(target);
  if (problem !== null) throw invalid(problem, target);
  return tokenize(target);
}

export function parseScope(raw: string): Scope {
  if (typeof raw !== 'string') throw invalid('scope must be a string');
  if (raw.length === 0) throw invalid('scope must not be empty');
  if (raw.length > MAX_SCOPE_LENGTH) throw invalid(`scope must be at most ${MAX_SCOPE_LENGTH} characters`, raw);
  const c1 = raw.indexOf(':');
  if (c1 < 0) throw invalid('scope must have the form resource:action[:target]', raw);
  const c2 = raw.indexOf(':', c1 + 1);
  const resource = raw.slice(0, c1);
  const action = c2 < 0 ? raw.slice(c1 + 1) : raw.slice(c1 + 1, c2);
  // The target is everything after the second colon, so it may hold colons itself (URLs).
  const target = c2 < 0 ? null : raw.slice(c2 + 1);
  if (!RESOURCE_RE.test(resource)) throw invalid('scope resource must match [a-z][a-z0-9_.-]{0,63}', raw);
  if (!ACTION_RE.test(action)) {
    throw invalid(
      action.includes('*')
        ? 'scope action must be a literal (globs are only allowed in the target)'
        : 'scope action must match [A-Za-z][A-Za-z0-9_.-]{0,63}',
      raw,
    );
  }
  if (target !== null) {
    const problem = targetProblem(target);
    if (problem !== null) throw invalid(problem, raw);
  }
  return Object.freeze({ resource, action, target, raw });
}

/** Parses a list; an error's `path` is `${path}.${index}` (or just the index without a path). */
export function parseScopes(raws: readonly string[], path?: string): Scope[] {
  if (!Array.isArray(raws)) {
    throw new WritError('WRIT_SCOPE_INVALID', 'scopes must be a list of strings', path === undefined ? {} : { path });
  }
  const out: Scope[] = [];
  raws.forEach((raw, i) => {
    try {
      out.push(parseScope(raw));
    } catch (e) {
      if (!isWritError(e)) throw e;
      throw new WritError(e.code, e.message, { path: path === undefined ? String(i) : `${path}.${i}` });
    }
  });
  return out;
}

/** Canonical text: a target of `**` is written as no target, since both mean any target. */
export function formatScope(s: Scope): string {
  return s.target === null || s.target === '**' ? `${s.resource}:${s.action}` : `${s.resource}:${s.action}:${s.target}`;
}

/** Does `concrete` (taken literally, `*` included) match `pattern`? O(|pattern|*|concrete|), no RegExp. */
export function targetMatches(pattern: string | null, concrete: string): boolean {
  if (typeof concrete !== 'string') return false;
  if (pattern === null) return true;
  return matchTokens(compile(pattern), concrete);
}

// reach[i] says whether the pattern tokens seen so far can consume exactly concrete[0..i).
function matchTokens(tokens: Tokens, s: string): boolean {
  const n = s.length;
  let reach = new Uint8Array(n + 1);
  let next = new Uint8Array(n + 1);
  reach[0] = 1;
  for (const t of tokens) {
    let any = 0;
    if (t >= 0) {
      next[0] = 0;
      for (let i = 0; i < n; i++) next[i + 1] = reach[i] === 1 && s.charCodeAt(i) === t ? 1 : 0;
    } else {
      next[0] = reach[0]!;
      for (let i = 1; i <= n; i++) {
        next[i] = reach[i] === 1 || (next[i - 1] === 1 && (t === DSTAR || s.charCodeAt(i - 1) !== SLASH)) ? 1 : 0;
      }
    }
    for (let i = 0; i <= n && any === 0; i++) any = next[i]!;
    if (any === 0) return false;
    [reach, next] = [next, reach];
  }
  return reach[n] === 1;
}

/** Is every concrete call `asked` allows also allowed by `granted`? Same resource and action required. */
export function scopeCovers(granted: Scope, asked: Scope): boolean {
  if (granted.resource !== asked.resource || granted.action !== asked.action) return false;
  return targetCovers(granted.target, asked.target);
}

/** True when every asked scope is covered by at least one granted scope (so true for no asked scopes). */
export function scopesCover(granted: readonly Scope[], asked: readonly Scope[]): boolean {
  return asked.every((a) => granted.some((g) => scopeCovers(g, a)));
}

export function uncoveredScopes(granted: readonly Scope[], asked: readonly Scope[]): Scope[] {
  return asked.filter((a) => !granted.some((g) => scopeCovers(g, a)));
}

/**
 * Enforcement of one concrete call. Refuses outright a target holding control characters or a `.` / `..`
 * path segment: a glob must not be walked out of by `acme/web/../../other`, so resources canonicalise first.
 */
export function allowsCall(granted: readonly Scope[], resource: string, action: string, target: string): boolean {
  if (typeof resource !== 'string' || typeof action !== 'string' || typeof target !== 'string') return false;
  if (!isCanonicalTarget(target)) return false;
  return granted.some((g) => g.resource === resource && g.action === action && targetMatches(g.target, target));
}

function isCanonicalTarget(target: string): boolean {
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return !target.split('/').some((seg) => seg === '.' || seg === '..');
}

/** Parse, canonicalise, dedupe, drop any scope another one covers, sort by canonical text. */
export function normalizeScopes(raws: readonly string[]): string[] {
  const canonical = [...new Set(parseScopes(raws).map(formatScope))].sort();
  const scopes = canonical.map(parseScope);
  // Of two scopes covering each other (e.g. `a/*/**` and `a/**/*`) the first in order stays.
  const kept = scopes.filter(
    (s, i) => !scopes.some((o, j) => j !== i && scopeCovers(o, s) && (j < i || !scopeCovers(s, o))),
  );
  return kept.map(formatScope);
}

// ---------------------------------------------------------------------------------------------
// Target containment: L(asked) ⊆ L(granted)
// ---------------------------------------------------------------------------------------------

function targetCovers(granted: string | null, asked: string | null): boolean {
  if (granted === null || granted === '**') return true;
  const g = compile(granted);
  const a = compile(asked);
  // The table decides in O(|G|*|A|) and is exact unless A has a `**`; then its "no" is re-examined, since
  // an asked `**` may be covered by several granted tokens together (`*/**` inside `**/*`). Out of budget
  // means "no".
  if (alignmentCovers(g, a)) return true;
  return a.includes(DSTAR) && exhaustiveCovers(g, a) === true;
}

/**
 * Sufficient test: can A's tokens be laid over G's in order, each A literal on an equal G literal or
 * inside a G glob, each A `*` inside a G `*`/`**` and each A `**` inside a G `**`? If so, every
 * instance of A is matched by G (each G glob takes what was laid inside it).
 * Exact when A has no `**`: write each A `*` as one character no pattern mentions; if G matches that
 * string, only G globs can take those characters, and G's match is such a laying-over.
 * Table D[i][j] = "A[j..] fits over G[i..]", filled bottom-up a row at a time.
 */
function alignmentCovers(g: Tokens, a: Tokens): boolean {
  const m = g.length;
  const n = a.length;
  let below = new Uint8Array(n + 1); // row i + 1
  let row = new Uint8Array(n + 1); // row i
  below[n] = 1; // both exhausted
  for (let i = m - 1; i >= 0; i--) {
    const t = g[i]!;
    row[n] = t < 0 ? below[n]! : 0;
    for (let j = n - 1; j >= 0; j--) {
      const u = a[j]!;
      if (t >= 0) row[j] = u === t ? below[j + 1]! : 0;
      else {
        // A G glob either ends here, or takes A's token and stays; a G `*` cannot take '/' or an A `**`.
        const takes = t === DSTAR || (u !== DSTAR && u !== SLASH);
        row[j] = below[j] === 1 || (takes && row[j + 1] === 1) ? 1 : 0;
      }
    }
    [below, row] = [row, below];
  }
  return below[0] === 1;
}

/**
 * Exact test by search for a counterexample: walk A's automaton one state at a time alongside the set of
 * states G's automaton can be in after the same input. Characters are taken by class (each literal in
 * play, '/', and one that no pattern mentions), which is enough since the automata only compare to those.
 * Returns true (contained), false (a string of A escapes G) or undefined when the budget ran out.
 */
function exhaustiveCovers(g: Tokens, a: Tokens): boolean | undefined {
  const m = g.length;
  const n = a.length;
  let budget = EXHAUSTIVE_BUDGET_FLOOR + EXHAUSTIVE_BUDGET_PER_CELL * (m + 1) * (n + 1);
  const mark = new Uint8Array(m + 1);

  // Epsilon closure (a glob may match nothing), sorted, minus states a later `**` state dominates:
  // everything G[p..] matches, G[q..] with G[q] = `**` and q > p matches too.
  const close = (seeds: number[]): number[] => {
    const out: number[] = [];
    for (const seed of seeds) {
      let p = seed;
      while (mark[p] === 0) {
        mark[p] = 1;
        out.push(p);
        if (p < m && g[p]! < 0) p++;
        else break;
      }
    }
    for (const p of out) mark[p] = 0;
    out.sort((x, y) => x - y);
    for (let k = out.length - 1; k > 0; k--) {
      const p = out[k]!;
      if (p < m && g[p] === DSTAR) return out.slice(k);
    }
    return out;
  };
  const step = (states: readonly number[], c: number): number[] => {
    const seeds: number[] = [];
    for (const p of states) {
      if (p === m) continue;
      const t = g[p]!;
      if (t >= 0) {
        if (t === c) seeds.push(p + 1);
      } else if (t === DSTAR || c !== SLASH) seeds.push(p);
    }
    return close(seeds);
  };

  const seen = new Set<string>();
  const stack: Array<[number, number[]]> = [];
  const push = (ap: number, states: number[]): void => {
    const key = `${ap}|${states.join(',')}`;
    if (seen.has(key)) return;
    seen.add(key);
    stack.push([ap, states]);
  };
  push(0, close([0]));

  while (stack.length > 0) {
    const [ap, states] = stack.pop()!;
    budget -= states.length + 1;
    if (budget < 0) return undefined;
    // Any suffix of A can still be completed, so an empty G set is already a counterexample.
    if (states.length === 0) return false;
    if (ap === n) {
      if (states[states.length - 1] !== m) return false;
      continue;
    }
    const u = a[ap]!;
    if (u >= 0) {
      push(ap + 1, step(states, u));
      continue;
    }
    push(ap + 1, states); // A's glob matches nothing more
    const classes = new Set<number>([SLASH, OTHER]);
    for (const p of states) if (p < m && g[p]! >= 0) classes.add(g[p]!);
    for (const c of classes) {
      if (u === STAR && c === SLASH) continue;
      const nextStates = step(states, c);
      budget -= nextStates.length + states.length;
      push(ap, nextStates);
    }
  }
  return true;
}
