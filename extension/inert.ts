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
 * inert(), and `$(` escaped as `\$(` (VS Code's own escape: shown as typed, no icon).
 */
export function pickInert(text: string): string {
  return inert(text).replace(/\$\(/g, '\\$(');
}

/**
 * Agent-supplied text in a tree view or a plain-text hover: printable (a newline would forge a hover line), and
 * each run of whitespace (or of the blank characters that pass for it) one space. VS Code draws tree labels with
 * `white-space: pre`, so a name padded with spaces could push the row's real status out of view.
 */
export function oneLine(text: string): string {
  return printable(text).replace(/[\s\u115f\u1160\u2800\u3164\uffa0]+/gu, ' ').trim();
}
