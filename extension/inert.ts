// Agent-supplied text in a VS Code notification. Notifications render `[label](command:id?args)` as a link that
// runs the command when clicked (any command: unblock an identity, send keys to a terminal), and an agent names
// itself, its task and its scopes' targets. Control characters and bidirectional overrides are shown as escapes
// (as in the broker's terminal prompt), and the link syntax is broken (`](` becomes `] (`).
import { printable } from '../broker/printable';

export function inert(text: string): string {
  return printable(text).replace(/\]\(/g, '] (');
}

/**
 * Agent-supplied text in a quick pick (a label, description, detail or title): VS Code renders `$(name)` there as
 * an icon, so an agent named `claude $(pass-filled) approved` would show a check mark of the editor's own. As
 * inert() on one line (oneLine: a quick pick row is one line, and a name padded with spaces pushed the row's
 * description out of view), and `$(` escaped as `\$(` (VS Code's own escape: shown as typed, no icon).
 */
export function pickInert(text: string): string {
  return oneLine(text).replace(/\]\(/g, '] (').replace(/\$\(/g, '\\$(');
}

/**
 * Agent-supplied text in a tree view or a plain-text hover: printable (a newline would forge a hover line), and
 * each run of whitespace (or of the blank characters that pass for it) one space. VS Code draws tree labels with
 * `white-space: pre`, so a name padded with spaces could push the row's real status out of view.
 */
export function oneLine(text: string): string {
  return printable(text).replace(/[\s\u115f\u1160\u2800\u3164\uffa0]+/gu, ' ').trim();
}

/**
 * The rows' separator `·` and what looks like it (Greek ano teleia U+0387, bullets, dot operators, katakana dots,
 * U+2981, U+2E30),
 * and the letters that are drawn as a middle dot (Hangul araea U+119E, U+11A2, U+318D, U+318E, the Canadian
 * syllabics final dot U+1427, the Latin sinological dot U+A78F): the allow-list below passes letters.
 */
const SEPARATORS = /[\u00b7\u0387\u1427\u16eb\u2022\u2027\u2219\u22c5\u2981\u2e30\u2e31\u2e33\u30fb\ua78f\uff65\u119e\u11a2\u318d\u318e]/g;
/** Parentheses and their lookalikes (fullwidth, small, super- and subscript, ornamental). */
const PARENS = /[()\uff08\uff09\ufe59\ufe5a\u207d\u207e\u208d\u208e\u2768\u2769\u276a\u276b\u27ee\u27ef]/g;
/** What a kind may show: letters, digits, combining marks (at most MAX_MARKS on a character), space, `_ . + / -`. */
const KIND_CHARS = /[^\p{L}\p{N}\p{M}\s_.+/-]/gu;
const MAX_MARKS = 2;
const EXTRA_MARKS = new RegExp(`(?<=\\p{M}{${MAX_MARKS}})\\p{M}+|(?<![\\p{L}\\p{N}\\p{M}])\\p{M}+`, 'gu');

/**
 * The kind an agent declared, as shown inside the parentheses after a status or a name: on one line, without
 * parentheses (a kind `cli) · blocked (since 10:02` would close ours and open its own), and built from an
 * allow-list: any other character (a bracket or dot of another script, punctuation) and every separator-like
 * letter is `-`, combining marks stay at most MAX_MARKS a character (a stack of them drew over the next one), so it
 * cannot pass for the status or another part of the row.
 */
export function shownKind(kind: string): string {
  return oneLine(kind.normalize('NFC').replace(/\s/gu, ' ').replace(PARENS, '').replace(EXTRA_MARKS, '').replace(SEPARATORS, '-').replace(KIND_CHARS, '-'));
}

/**
 * An agent's name where it stands alone (a tree row's or a picker's label): on one line, and without the
 * separators the row's description uses (`·` and what looks like it, as `-`), so a name
 * `claude · stopped · 0 grants` cannot read as the label followed by its state.
 */
export function shownName(name: string): string {
  return oneLine(name.replace(SEPARATORS, '-'));
}

/**
 * What can pass for the closing quote around a name: the double quote, backslash, every initial and final quote
 * (\p{Pi}, \p{Pf}: “ ” ‘ ’ « » ‹ › ⸂ …), and the double quotes of other classes: low and reversed quotes (U+201E,
 * U+201F, U+2E42), primes and ditto marks (″ ‶ ‴ ‷ ⁗, 〃 U+3003), modifier letters (ʺ ˝ ˮ ˶), the Hebrew gershayim
 * (U+05F4), CJK double primes (〝 〞 〟), ornaments (❝ ❞ ❠ 🙶 🙷 🙸), the fullwidth quote.
 */
export const QUOTE_LIKE = /["\\\p{Pi}\p{Pf}\u02ba\u02dd\u02ee\u02f6\u05f4\u201e\u201f\u2033\u2034\u2036\u2037\u2057\u275d\u275e\u2760\u2e42\u3003\u301d-\u301f\uff02\u{1f676}-\u{1f678}]/gu;
/**
 * A single quote, prime, acute, backtick or geresh: one is an apostrophe, two in a row (`''`) read as a double quote.
 */
export const APOSTROPHE_RUN = /['`\u00b4\u02b9\u02bb\u02bc\u02bd\u05f3\u2032\u2035\u275b\u275c\uff07]{2,}/gu;

/**
 * An agent's name in running text (a notification, a review title, a hover, an output line): in double quotes,
 * its own quotes (and lookalikes: QUOTE_LIKE, and runs of apostrophes) and backslashes escaped, so a name
 * `helper (cli), sub-agent of claude` or `claude (cli): Writ blocked it` cannot pass for Writ's words. `shown`
 * makes the inside printable (and may cap it): printable by default, oneLine in a hover, capped() in a
 * notification. A cap that cuts an escape in two (`\…`) drops its half, so the cut cannot leave a dangling backslash.
 */
export function quoted(name: string, shown: (text: string) => string = printable): string {
  const escaped = name.replace(QUOTE_LIKE, '\\$&').replace(APOSTROPHE_RUN, (run) => run.replace(/./gu, '\\$&'));
  return `"${shown(escaped).replace(CUT_ESCAPE, '$1…')}"`;
}
/**
 * An escape cut by a cap: after an even run of backslashes (escaped backslashes), a lone backslash or the start of
 * printable()'s `\xNN` / `\u{NNNN}` before the ellipsis.
 */
const CUT_ESCAPE = /((?:^|[^\\])(?:\\\\)*)\\(?:x[0-9a-f]?|u(?:\{[0-9a-f]*)?)?…$/u;
