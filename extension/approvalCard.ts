// What the developer reads when an agent asks for credentials: the notification text, scopes in plain words,
// and the choices of the review steps. Pure (no vscode), so the exact wording is unit-tested.
import { inert } from './inert';
import type { ApprovalRequest } from '../broker/protocol';

/** `repo:read:acme/web` → `read repo acme/web`; globs and a missing target in words. */
export function describeScope(scope: string): string {
  const first = scope.indexOf(':');
  if (first < 0) return scope;
  const second = scope.indexOf(':', first + 1);
  const resource = scope.slice(0, first);
  const action = second < 0 ? scope.slice(first + 1) : scope.slice(first + 1, second);
  const target = second < 0 ? null : scope.slice(second + 1);
  if (target === null || target === '**') return `${action} any ${resource}`;
  if (target.endsWith('/**')) return `${action} ${resource} under ${target.slice(0, -3)}`;
  if (target.endsWith('/*')) return `${action} ${resource} directly in ${target.slice(0, -2)}`;
  return `${action} ${resource} ${target}`;
}

/** `name (kind version)` and, for a sub-agent, its chain: `helper, for planner ← claude`. */
export function describeAgent(agent: ApprovalRequest['agent']): string {
  const what = `${agent.name} (${agent.kind}${agent.version ? ` ${agent.version}` : ''})`;
  if (agent.parents.length === 0) return what;
  return `${what}, sub-agent of ${agent.parents.map((p) => p.name).join(' ← ')}`;
}

export function describeTtl(seconds: number): string {
  if (seconds % 3600 === 0) return seconds === 3600 ? '1 hour' : `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return seconds === 60 ? '1 minute' : `${seconds / 60} minutes`;
  return seconds === 1 ? '1 second' : `${seconds} seconds`;
}

/** The notification's one message (VS Code shows it as a single paragraph). `waiting` counts the others queued. */
export function approvalMessage(r: ApprovalRequest, waiting: number): string {
  const scopes = r.scopes.map(describeScope).join('; ');
  const more = waiting > 0 ? ` (${waiting} more waiting)` : '';
  return inert(`Writ: ${describeAgent(r.agent)} asks to "${r.task}": ${scopes}, for ${r.audience}, tokens of ${describeTtl(r.ttl)}.${more}`);
}

export const APPROVE = 'Approve';
export const REVIEW = 'Review…';
export const DENY = 'Deny';

/** The notification: its message and the buttons it offers. */
export function approvalPrompt(r: ApprovalRequest, waiting: number): { message: string; buttons: string[] } {
  return { message: approvalMessage(r, waiting), buttons: [APPROVE, REVIEW, DENY] };
}

/** "Show pending approvals": one row per waiting request. */
export function pendingItems(requests: readonly ApprovalRequest[]): { label: string; description: string; detail: string; r: ApprovalRequest }[] {
  return requests.map((r) => ({ label: `${r.agent.name}: ${r.task}`, description: r.audience, detail: r.scopes.map(describeScope).join('; '), r }));
}

/** The title of each review step. */
export function reviewTitle(r: ApprovalRequest): string {
  return `Writ: ${describeAgent(r.agent)}: "${r.task}" for ${r.audience}`;
}

/** The review's scope list: every scope picked at first, the raw scope as the detail. */
export function scopeItems(r: ApprovalRequest): { label: string; description: string; scope: string; picked: boolean }[] {
  return r.scopes.map((s) => ({ label: describeScope(s), description: s, scope: s, picked: true }));
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

/** One line for the output channel: who asked for what and how it was decided. No token ever appears here. */
export function decisionLine(r: ApprovalRequest, how: string): string {
  return `${how}: ${r.agent.name} [${r.agent.id}] "${r.task}" ${r.scopes.join(' ')} for ${r.audience}`;
}
