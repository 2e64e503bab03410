// Workspace approval rules (.vscode/writ.json, a file the team can commit): which requests are approved without
// asking. Pure: parsing, matching and adding a rule; reading and writing the file is the caller's job. The
// caller applies rules only in a trusted workspace, since the file comes with the repository, and only while the
// file is exactly the text the developer trusted (its SHA-256, kept in the editor's workspace state): agents edit
// workspace files as their job, and one that wrote itself a rule would approve its own requests.
//
// A rule names the agent by the name it declares, which another local process could also declare; so a rule
// should be as narrow as the work it covers. The broker audits a rule's approval like any other.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ScopeString, GrantMode, TtlSeconds } from '../broker/protocol';
import type { ApprovalDecision, ApprovalRequest } from '../broker/protocol';
import { parseScope, scopesCover } from '../broker/core/scopes';
import { printable } from '../broker/printable';
import { inert, quoted } from './inert';

export const RULES_FILE = '.vscode/writ.json';

export const WorkspaceRule = z.strictObject({
  agent: z.string().min(1).max(100),
  audience: z.string().min(1).max(512),
  scopes: z.array(ScopeString).min(1).max(32),
  mode: GrantMode.default('task'),
  ttl: TtlSeconds.optional(),
});
export type WorkspaceRule = z.infer<typeof WorkspaceRule>;

export const WorkspaceRules = z.strictObject({
  $schema: z.string().optional(),
  rules: z.array(WorkspaceRule).max(200),
});
export type WorkspaceRules = z.infer<typeof WorkspaceRules>;

export type RulesRead = { ok: true; rules: WorkspaceRule[] } | { ok: false; problem: string };

/**
 * The file's text (or null when absent) as rules; a bad file is reported by field path and applies no rule. The
 * problem reaches notifications, and agents can write the file: an agent name in it is quoted and made inert (a
 * `[label](command:…)` in a notification is a link that runs the command).
 */
export function parseRules(text: string | null): RulesRead {
  if (text === null || text.trim() === '') return { ok: true, rules: [] };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, problem: `${RULES_FILE} is not valid JSON` };
  }
  const r = WorkspaceRules.safeParse(raw);
  if (!r.success) {
    const at = r.error.issues[0]?.path.map(String).join('.') || '(root)';
    return { ok: false, problem: `${RULES_FILE}: invalid field ${at}` };
  }
  for (const rule of r.data.rules) {
    try {
      rule.scopes.forEach(parseScope);
    } catch {
      return { ok: false, problem: `${RULES_FILE}: a rule for ${inert(JSON.stringify(rule.agent))} has an invalid scope` };
    }
  }
  return { ok: true, rules: r.data.rules };
}

/** The first rule covering the request: same agent name, same audience, every asked scope covered. */
export function matchRule(rules: readonly WorkspaceRule[], r: ApprovalRequest): WorkspaceRule | undefined {
  let asked;
  try {
    asked = r.scopes.map(parseScope);
  } catch {
    return undefined;
  }
  return rules.find((rule) => rule.agent === r.agent.name && rule.audience === r.audience && scopesCover(rule.scopes.map(parseScope), asked));
}

/** The decision a matching rule gives: the scopes asked (all covered), the rule's mode and TTL. */
export function ruleDecision(rule: WorkspaceRule, r: ApprovalRequest): ApprovalDecision {
  const ttl = rule.ttl === undefined ? undefined : Math.min(rule.ttl, r.maxTtl);
  return { requestId: r.requestId, decision: 'approve', scopes: [...r.scopes], mode: rule.mode, ...(ttl === undefined ? {} : { ttl }), by: 'workspace-rule' };
}

/** The file's new text with the rule added (an identical rule is not added twice). Keeps other fields. */
export function addRule(text: string | null, rule: WorkspaceRule): string {
  const read = parseRules(text);
  if (!read.ok) throw new Error(read.problem);
  const base = text && text.trim() ? (JSON.parse(text) as WorkspaceRules) : { rules: [] };
  const same = (a: WorkspaceRule) => a.agent === rule.agent && a.audience === rule.audience && a.mode === rule.mode && a.ttl === rule.ttl && a.scopes.join(' ') === rule.scopes.join(' ');
  const rules = read.rules.some(same) ? base.rules : [...base.rules, rule];
  return JSON.stringify({ ...base, rules }, null, 2) + '\n';
}

/** The SHA-256 of the rules file's text: what the developer trusts, byte for byte. */
export function rulesDigest(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export type ApplicableRules =
  | { rules: WorkspaceRule[] }
  /** The file holds rules, but not the text the developer trusted: none applies until they trust it. */
  | { rules: []; untrusted: { digest: string; count: number } }
  | { rules: []; problem: string };

/** The rules that apply, given the file's text (null when absent) and the digest the developer last trusted. */
export function applicableRules(text: string | null, trusted: string | undefined): ApplicableRules {
  const read = parseRules(text);
  if (!read.ok) return { rules: [], problem: read.problem };
  if (read.rules.length === 0) return { rules: [] };
  const digest = rulesDigest(text!);
  return digest === trusted ? { rules: read.rules } : { rules: [], untrusted: { digest, count: read.rules.length } };
}

/**
 * One line per rule for the trust prompt; agent names and audiences quoted, so none can pass for another line, and
 * each line printable: JSON.stringify leaves bidirectional overrides (U+202E) and line separators as they are.
 */
/** The output channel's line for a rule just saved: the agent's name quoted, as in every other line naming an agent (unquoted, a name `claude in .vscode/other.json` read as Writ's words). */
export function savedRuleLine(rule: Pick<WorkspaceRule, 'agent'>): string {
  return `saved a workspace rule for ${quoted(rule.agent)} in ${RULES_FILE}`;
}

/** The trust dialog's detail: a warning, then the rules one a line (describeRules: printable, names quoted), with no `](` link syntax. */
export function trustRulesDetail(rules: readonly WorkspaceRule[]): string {
  return `Agents can write workspace files: trust only rules you or your team wrote.\n\n${describeRules(rules).replace(/\]\(/g, '] (')}`;
}

export function describeRules(rules: readonly WorkspaceRule[]): string {
  return rules
    .map((r) => printable(`${JSON.stringify(r.agent)} → ${JSON.stringify(r.audience)}: ${r.scopes.map((s) => JSON.stringify(s)).join(', ')} (${r.mode}${r.ttl === undefined ? '' : `, ${r.ttl} s`})`))
    .join('\n');
}
