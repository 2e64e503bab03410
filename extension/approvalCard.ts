// What the developer reads when an agent asks for credentials: the notification text, scopes in plain words,
// and the choices of the review steps. Pure (no vscode), so the exact wording is unit-tested.
import { inert, pickInert, quoted, shownKind } from './inert';
import { printable } from '../broker/printable';
import type { ApprovalRequest } from '../broker/protocol';

/**
 * `repo:read:acme/web` → `read repo acme/web`; globs and a missing target in words. A glob over the root keeps its
 * slash (`fs:write:/**` → `write fs under /`): cut to nothing, it read `grant write fs under , for …`.
 */
export function describeScope(scope: string): string {
  const first = scope.indexOf(':');
  if (first < 0) return scope;
  const second = scope.indexOf(':', first + 1);
  const resource = scope.slice(0, first);
  const action = second < 0 ? scope.slice(first + 1) : scope.slice(first + 1, second);
  const target = second < 0 ? null : scope.slice(second + 1);
  if (target === null || target === '**') return `${action} any ${resource}`;
  if (target.endsWith('/**')) return `${action} ${resource} under ${target.slice(0, -3) || '/'}`;
  if (target.endsWith('/*')) return `${action} ${resource} directly in ${target.slice(0, -2) || '/'}`;
  return `${action} ${resource} ${target}`;
}

/**
 * VS Code cuts a notification's message at 1,000 characters (adding "..."), and Approve grants everything asked,
 * what was cut too: a notification offers Approve only when its whole message fits in this.
 */
export const NOTIFICATION_BUDGET = 900;
/** How much of each agent-supplied field a notification or a review title shows (as shown, after inert). */
export const CAPS = { name: 40, kind: 20, version: 20, task: 120, audience: 200, parents: 3 } as const;

/** Agent text made inert and cut to `max` characters as shown, `…` marking the cut. */
export function capped(text: string, max: number): string {
  const shown = inert(text);
  if (shown.length <= max) return shown;
  let out = '';
  for (const ch of shown) {
    if (out.length + ch.length > max - 1) break;
    out += ch;
  }
  return `${out}…`;
}

/**
 * `"name" (kind version)` and, for a sub-agent, its chain: `"helper" (cli), sub-agent of "planner" ← "claude"`. Each
 * field capped; names quoted (a root agent named `helper (cli), sub-agent of claude` reads as one name), the kind
 * and version as shownKind (no parenthesis of their own).
 */
export function describeAgent(agent: ApprovalRequest['agent']): string {
  const name = (n: string) => quoted(n, (s) => capped(s, CAPS.name));
  const version = agent.version ? shownKind(agent.version) : '';
  const what = `${name(agent.name)} (${capped(shownKind(agent.kind), CAPS.kind)}${version ? ` ${capped(version, CAPS.version)}` : ''})`;
  if (agent.parents.length === 0) return what;
  const shown = agent.parents.slice(0, CAPS.parents).map((p) => name(p.name));
  const more = agent.parents.length - shown.length;
  return `${what}, sub-agent of ${shown.join(' ← ')}${more > 0 ? ` ← ${more} more` : ''}`;
}

export function describeTtl(seconds: number): string {
  if (seconds % 3600 === 0) return seconds === 3600 ? '1 hour' : `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return seconds === 60 ? '1 minute' : `${seconds / 60} minutes`;
  return seconds === 1 ? '1 second' : `${seconds} seconds`;
}

/** Who asked and for what task, after what is granted: agent text, each field capped. */
function askedBy(r: ApprovalRequest): string {
  return `Asked by ${describeAgent(r.agent)} for "${capped(r.task, CAPS.task)}".`;
}

/**
 * The notification's one message (VS Code shows it as a single paragraph): what Approve grants first (every
 * scope, the audience, the token lifetime), then who asked and for what task. `waiting` counts the others queued.
 */
export function approvalMessage(r: ApprovalRequest, waiting: number): string {
  const scopes = r.scopes.map(describeScope).join('; ');
  const more = waiting > 0 ? ` (${waiting} more waiting)` : '';
  return inert(`Writ: grant ${scopes}, for ${r.audience}, tokens of ${describeTtl(r.ttl)}? ${askedBy(r)}${more}`);
}

export const APPROVE = 'Approve';
export const REVIEW = 'Review…';
export const DENY = 'Deny';

/**
 * The notification: its message and the buttons it offers. A request whose message would not fit in
 * NOTIFICATION_BUDGET (VS Code would cut it, and Approve would grant what was cut) is told by its count of scopes,
 * and offers only Review… (which lists every scope on its own row) and Deny.
 */
export function approvalPrompt(r: ApprovalRequest, waiting: number): { message: string; buttons: string[] } {
  const message = approvalMessage(r, waiting);
  if (message.length <= NOTIFICATION_BUDGET) return { message, buttons: [APPROVE, REVIEW, DENY] };
  const n = r.scopes.length;
  const more = waiting > 0 ? ` (${waiting} more waiting)` : '';
  return {
    message: inert(
      `Writ: a request for ${n === 1 ? '1 scope' : `${n} scopes`}, for ${capped(r.audience, CAPS.audience)}, tokens of ${describeTtl(r.ttl)}, too long to show here: Review… lists every scope before you approve. ${askedBy(r)}${more}`,
    ),
    buttons: [REVIEW, DENY],
  };
}

/** "Show pending approvals": one row per waiting request. */
export function pendingItems(requests: readonly ApprovalRequest[]): { label: string; description: string; detail: string; r: ApprovalRequest }[] {
  return requests.map((r) => ({
    label: pickInert(`${quoted(r.agent.name, (s) => capped(s, CAPS.name))}: ${capped(r.task, CAPS.task)}`),
    description: pickInert(r.audience),
    detail: pickInert(r.scopes.map(describeScope).join('; ')),
    r,
  }));
}

/** The title of each review step. */
export function reviewTitle(r: ApprovalRequest): string {
  return pickInert(`Writ: for ${r.audience}: ${describeAgent(r.agent)}: "${capped(r.task, CAPS.task)}"`);
}

/**
 * How many scopes the review's list ticks at first: what a quick pick shows without scrolling in a short window
 * (its list is 0.4 of the window's height, 22 px a row: 6 rows in a window 350 px high). Past that, Enter would
 * approve rows the developer never scrolled to, so none is ticked and each is ticked by hand.
 */
export const PRETICK_MAX = 6;

/** The review's scope list: every scope picked at first when all fit on screen (PRETICK_MAX), the raw scope as the detail. */
export function scopeItems(r: ApprovalRequest): { label: string; description: string; scope: string; picked: boolean }[] {
  const picked = r.scopes.length <= PRETICK_MAX;
  return r.scopes.map((s) => ({ label: pickInert(describeScope(s)), description: pickInert(s), scope: s, picked }));
}

/**
 * What the review's scope list asks: to untick what to refuse (all ticked at first), or, when none is ticked at
 * first, to tick what to grant. It stays on screen while the developer ticks and unticks, so it says what a tick
 * means rather than a count, and that Enter goes on to the lifetime (and then the mode), not that it grants.
 */
export function scopePlaceholder(r: ApprovalRequest): string {
  const n = r.scopes.length;
  if (n > PRETICK_MAX) return `${n} scopes, more than fit: none is ticked at first; tick each one to grant, then Enter to choose the lifetime; none ticked denies`;
  return n === 1
    ? 'The scope is granted while ticked (it is at first): untick it to refuse, then Enter to choose the lifetime; none ticked denies'
    : `Ticked scopes are granted (all ${n} at first): untick to refuse, then Enter to choose the lifetime; none ticked denies`;
}

export type ApprovalScope = 'task' | 'session' | 'workspace';

export const MODE_ITEMS: readonly { label: string; detail: string; mode: ApprovalScope }[] = [
  { label: 'This task only', detail: 'Tokens for this task; the agent asks again for other work.', mode: 'task' },
  { label: 'This session', detail: 'Until the broker stops: the same request is not asked again.', mode: 'session' },
  {
    label: 'Always in this workspace',
    detail: 'Saves a rule in .vscode/writ.json (applied only while the workspace is trusted).',
    mode: 'workspace',
  },
];

/** Token lifetimes to offer: the one asked first, then common ones up to the maximum. */
export function ttlChoices(asked: number, max: number): number[] {
  const out = [asked];
  for (const t of [60, 300, 900, 3600]) if (t <= max && !out.includes(t)) out.push(t);
  return out;
}

/**
 * One line for the output channel: who asked for what and how it was decided. No token ever appears here. The
 * agent's text goes through printable(): a newline in a task would otherwise write a line of its own; its name is quoted.
 */
export function decisionLine(r: ApprovalRequest, how: string): string {
  const p = printable;
  return `${how}: ${quoted(r.agent.name)} [${p(r.agent.id)}] "${p(r.task)}" ${r.scopes.map(p).join(' ')} for ${p(r.audience)}`;
}
