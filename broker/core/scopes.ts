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
const STAR = -1; // any run of one or more characters without '/': never an empty segment
const DSTAR = -2; // any run at all, the empty one included
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
// A `*` takes at least one character: `items/*` is not `items/`, which many servers read as `items`.
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
    } else if (t === DSTAR) {
      next[0] = reach[0]!;
      for (let i = 1; i <= n; i++) next[i] = reach[i] === 1 || next[i - 1] === 1 ? 1 : 0;
    } else {
      next[0] = 0;
      for (let i = 1; i <= n; i++) {
        next[i] = (reach[i - 1] === 1 || next[i - 1] === 1) && s.charCodeAt(i - 1) !== SLASH ? 1 : 0;
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
  // Of two scopes covering each other (two texts for one language) the first in order stays.
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
 * inside a G glob, each A `*` inside a G `*`/`**`, each A `**` inside a G `**`, and at least one A token
 * inside each G `*`? If so, every instance of A is matched by G (each G glob takes what was laid inside
 * it; a G `*` gets at least one character, since every A token but `**` stands for one or more).
 * Exact when A has no `**`: write each A `*` as one character no pattern mentions; if G matches that
 * string, only G globs can take those characters (two G globs are never adjacent: `***` is invalid), a
 * G `*` takes at least one of them or of A's literals, and G's match is such a laying-over.
 * Table D[i][j] = "A[j..] fits over G[i..]", filled bottom-up a row at a time; for a G `*`, `taken` is
 * the same with that `*` already holding at least one A token.
 */
function alignmentCovers(g: Tokens, a: Tokens): boolean {
  const m = g.length;
  const n = a.length;
  let below = new Uint8Array(n + 1); // row i + 1
  let row = new Uint8Array(n + 1); // row i
  const taken = new Uint8Array(n + 1);
  below[n] = 1; // both exhausted
  for (let i = m - 1; i >= 0; i--) {
    const t = g[i]!;
    if (t >= 0) {
      row[n] = 0;
      for (let j = n - 1; j >= 0; j--) row[j] = a[j] === t ? below[j + 1]! : 0;
    } else if (t === DSTAR) {
      // A G `**` either ends here or takes A's token and stays.
      row[n] = below[n]!;
      for (let j = n - 1; j >= 0; j--) row[j] = below[j] === 1 || row[j + 1] === 1 ? 1 : 0;
    } else {
      // A G `*` takes A's token (never '/' or an A `**`) and stays, and may end only once it took one.
      row[n] = 0;
      taken[n] = below[n]!;
      for (let j = n - 1; j >= 0; j--) {
        const u = a[j]!;
        const takes = u !== DSTAR && u !== SLASH;
        row[j] = takes && taken[j + 1] === 1 ? 1 : 0;
        taken[j] = below[j] === 1 || row[j] === 1 ? 1 : 0;
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
 * A state is 2*position, or 2*position+1 at a `*` that has taken a character (only then may it end).
 * Returns true (contained), false (a string of A escapes G) or undefined when the budget ran out.
 */
function exhaustiveCovers(g: Tokens, a: Tokens): boolean | undefined {
  const m = g.length;
  const n = a.length;
  let budget = EXHAUSTIVE_BUDGET_FLOOR + EXHAUSTIVE_BUDGET_PER_CELL * (m + 1) * (n + 1);
  const mark = new Uint8Array(2 * m + 2);
  const END = 2 * m;

  // Epsilon closure (a `**`, or a `*` that took a character, may end), sorted, minus states a later `**`
  // state dominates: everything G[p..] matches, G[q..] with G[q] = `**` and q > p matches too.
  const close = (seeds: number[]): number[] => {
    const out: number[] = [];
    for (const seed of seeds) {
      let st = seed;
      while (mark[st] === 0) {
        mark[st] = 1;
        out.push(st);
        const p = st >> 1;
        if (p < m && ((st & 1) === 1 || g[p] === DSTAR)) st = 2 * (p + 1);
        else break;
      }
    }
    for (const st of out) mark[st] = 0;
    out.sort((x, y) => x - y);
    for (let k = out.length - 1; k > 0; k--) {
      const st = out[k]!;
      if ((st & 1) === 0 && st < END && g[st >> 1] === DSTAR) return out.slice(k);
    }
    return out;
  };
  const step = (states: readonly number[], c: number): number[] => {
    const seeds: number[] = [];
    for (const st of states) {
      if (st === END) continue;
      const p = st >> 1;
      const t = g[p]!;
      if (t >= 0) {
        if (t === c) seeds.push(2 * (p + 1));
      } else if (t === DSTAR) seeds.push(st);
      else if (c !== SLASH) seeds.push(2 * p + 1);
    }
    return close(seeds);
  };

  const seen = new Set<string>();
  const stack: Array<[number, number[]]> = [];
  const push = (as: number, states: number[]): void => {
    const key = `${as}|${states.join(',')}`;
    if (seen.has(key)) return;
    seen.add(key);
    stack.push([as, states]);
  };
  push(0, close([0]));

  while (stack.length > 0) {
    const [as, states] = stack.pop()!;
    budget -= states.length + 1;
    if (budget < 0) return undefined;
    // Any suffix of A can still be completed, so an empty G set is already a counterexample.
    if (states.length === 0) return false;
    const ap = as >> 1;
    if (ap === n) {
      if (states[states.length - 1] !== END) return false;
      continue;
    }
    const u = a[ap]!;
    if (u >= 0) {
      push(2 * (ap + 1), step(states, u));
      continue;
    }
    // A's glob matches nothing more (a `*` only once it took a character).
    if (u === DSTAR || (as & 1) === 1) push(2 * (ap + 1), states);
    const classes = new Set<number>([SLASH, OTHER]);
    for (const st of states) if (st < END && g[st >> 1]! >= 0) classes.add(g[st >> 1]!);
    for (const c of classes) {
      if (u === STAR && c === SLASH) continue;
      const nextStates = step(states, c);
      budget -= nextStates.length + states.length;
      push(u === STAR ? 2 * ap + 1 : as, nextStates);
    }
  }
  return true;
}
