// Agent-supplied text shown to the developer (the terminal prompt, the editor's notifications): made inert.
/**
 * Agent-supplied text as it may be printed to the developer's terminal: control characters (C0, DEL, C1: newlines,
 * escape sequences that move the cursor or hide text), bidirectional marks and overrides (U+061C too), invisible
 * format characters (U+180E, U+FEFF) and line separators are shown as
 * `\xNN` / `\u{NNNN}`, so no field can fake another line of the prompt or hide the real ones.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    const n = c.codePointAt(0)!;
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
  });
}
// Bidirectional controls: the Arabic letter mark (U+061C), LRM/RLM, embeddings and overrides, isolates; and the
// invisible Mongolian vowel separator and byte order mark (U+180E, U+FEFF).
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u180e\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;
