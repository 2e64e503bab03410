// Agent-supplied text in a VS Code notification. Notifications render `[label](command:id?args)` as a link that
// runs the command when clicked (any command: unblock an identity, send keys to a terminal), and an agent names
// itself, its task and its scopes' targets. Control characters and bidirectional overrides are shown as escapes
// (as in the broker's terminal prompt), and the link syntax is broken (`](` becomes `] (`).
import { printable } from '../broker/printable';

export function inert(text: string): string {
  return printable(text).replace(/\]\(/g, '] (');
}
