// What the developer reads about the watch's findings and the agent inventory: a finding in plain words with
// its evidence, the notification's text and buttons, which findings to notify (one per identity and kind while
// it is open, and a count when many arrive at once), and the inventory's rows. Pure (no vscode).
import { inert, oneLine, pickInert, quoted, shownKind, shownName } from './inert';

export { shownKind, shownName } from './inert';
import { NOTIFICATION_BUDGET, capped } from './approvalCard';
import type { AgentView, FindingView, InventoryView } from '../broker/protocol';

export const STOP_AGENT = 'Stop agent';
export const BLOCK = 'Block';
export const UNBLOCK = 'Unblock';
export const DISMISS = 'Dismiss';
export const SHOW_FINDINGS = 'Show Findings';

export type FindingButton = typeof STOP_AGENT | typeof BLOCK | typeof UNBLOCK | typeof DISMISS;

/** Evidence comes from the broker as a free-form record: read each fact only when it has the expected type. */
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const strs = (v: unknown): string[] | undefined => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);
const proc = (v: unknown): { pid: number; exe?: string } | undefined => {
  if (!v || typeof v !== 'object') return undefined;
  const pid = num((v as { pid?: unknown }).pid);
  const exe = str((v as { exe?: unknown }).exe);
  return pid === undefined ? undefined : { pid, ...(exe ? { exe } : {}) };
};

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** `10 s`, `90 s`, `10 min`: a watch window in words. */
export function describeWindow(ms: number): string {
  return ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`;
}

/** `a, b, c and 2 more`. */
function list(items: readonly string[], max = 3): string {
  const shown = items.slice(0, max).join(', ');
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

/** `40×`, `6.5×`: how far over its own baseline an identity went. */
function factor(count: number, baseline: number | undefined): string | undefined {
  if (baseline === undefined || baseline <= 0) return undefined;
  const f = count / baseline;
  return `${f >= 10 ? Math.round(f) : Math.round(f * 10) / 10}×`;
}

const KIND_LABEL: Record<string, string> = {
  'scope-creep': 'scope creep',
  'scope-burst': 'scope burst',
  'request-burst': 'request burst',
  'mint-burst': 'token burst',
  'bad-token': 'bad token',
  'process-mismatch': 'process mismatch',
  'pending-flood': 'approval flood',
};

/** The finding's kind in words (`scope creep`); an unknown kind as it came. */
export function kindLabel(kind: string): string {
  return KIND_LABEL[kind] ?? kind;
}

/** A piece of evidence cut to `max` characters (whole code points), `…` marking the cut. */
function clip(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

/**
 * What the agent did, as the end of a sentence that starts with its name. `cap` cuts each piece of evidence the
 * agent or its process chose (a scope, an exe path, a token id, a code) to that many characters.
 */
export function describeFinding(f: Pick<FindingView, 'kind' | 'evidence'>, cap = Infinity): string {
  const e = Object.fromEntries(
    Object.entries(f.evidence).map(([k, v]) => [k, capEvidence(v, cap)]),
  );
  switch (f.kind) {
    case 'scope-creep': {
      const scopes = strs(e.newScopes);
      if (!scopes || scopes.length === 0) return 'asked for scopes it was never granted';
      return scopes.length === 1 ? `asked for a scope it was never granted: ${scopes[0]}` : `asked for ${scopes.length} scopes it was never granted: ${list(scopes)}`;
    }
    case 'scope-burst': {
      const n = num(e.newScopes);
      const w = num(e.windowMs);
      if (n === undefined) return 'asked for many scopes it was never granted in a short time';
      return `asked for ${plural(n, 'scope', 'scopes')} it was never granted${w === undefined ? '' : ` within ${describeWindow(w)}`}`;
    }
    case 'request-burst':
    case 'mint-burst': {
      const mint = f.kind === 'mint-burst';
      const n = num(mint ? e.mints : e.requests);
      const w = num(e.windowMs);
      if (n === undefined) return mint ? 'minted tokens far faster than usual' : 'made requests far faster than usual';
      const what = mint ? `minted ${plural(n, 'token', 'tokens')}` : `made ${plural(n, 'request', 'requests')}`;
      const x = factor(n, num(e.baselinePerWindow));
      return `${what}${w === undefined ? '' : ` in ${describeWindow(w)}`}${x ? `, ${x} its usual rate` : ''}`;
    }
    case 'bad-token': {
      const code = str(e.code);
      const jti = str(e.jti);
      const which = jti ? ` (${jti})` : '';
      if (code === 'WRIT_TOKEN_REVOKED') return `presented a revoked token${which}`;
      if (code === 'WRIT_TOKEN_EXPIRED') return `presented an expired token${which}`;
      if (code === 'WRIT_TOKEN_NOT_YOURS') {
        // The finding is against the agent whose token leaked; the evidence names who presented it.
        const by = e.presenter && typeof e.presenter === 'object' ? proc(e.presenter) : undefined;
        return `had its token${which} presented by another agent${by ? ` (pid ${by.pid}${by.exe ? `, ${by.exe}` : ''})` : ''}; Writ refused it`;
      }
      return `presented a token the broker refused${code ? ` (${code})` : ''}`;
    }
    case 'process-mismatch': {
      const want = proc(e.expected);
      const got = proc(e.actual);
      const p = (x: { pid: number; exe?: string }) => `pid ${x.pid}${x.exe ? ` (${x.exe})` : ''}`;
      if (!want || !got) return 'had its token used from a process other than the one it was minted for';
      return `had its token used from ${p(got)}; it was minted for ${p(want)}`;
    }
    case 'pending-flood': {
      const n = num(e.pending);
      return n === undefined ? 'has many requests waiting for your approval at once' : `has ${n} requests waiting for your approval at once`;
    }
    default:
      return `raised a "${f.kind}" finding`;
  }
}

/** Evidence with every string in it (one level of arrays and objects deep) cut to `cap` characters. */
function capEvidence(v: unknown, cap: number): unknown {
  if (cap === Infinity) return v;
  if (typeof v === 'string') return clip(v, cap);
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? clip(x, cap) : x));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, typeof x === 'string' ? clip(x, cap) : x]));
  return v;
}

/**
 * Who did it: the inventory's name (quoted: it is the agent's text) and kind for the identity, else the live
 * agent's, else the bare identity. The name is cut to FINDING_CAPS.name and the kind to FINDING_CAPS.kind, so the
 * closing quote and the kind always show.
 */
export function findingAgentLabel(f: Pick<FindingView, 'identity' | 'agentId'>, inventory: readonly InventoryView[], agents: readonly AgentView[]): string {
  const who = inventory.find((x) => x.id === f.identity) ?? agents.find((x) => x.id === f.agentId);
  if (!who) return oneLine(f.identity);
  return `${quoted(who.name, (s) => capped(oneLine(s), FINDING_CAPS.name))} (${capped(shownKind(who.kind), FINDING_CAPS.kind)})`;
}

/** How much of each piece of evidence (a scope, an exe path), of the agent's name and kind, and of its whole label a finding notification shows. */
export const FINDING_CAPS = { evidence: 150, name: 60, kind: 20, agent: 100 } as const;

/**
 * The notification for one finding (VS Code shows one paragraph, and cuts it at 1,000 characters while its
 * buttons stay). What Writ already did comes first (the buttons answer it: Unblock after a block), or, when it did
 * nothing yet, `warning: agent`: the message starts with Writ's own words, and the agent's quoted name follows
 * (a name `claude (cli): Writ blocked it` cannot pass for Writ's). Then what, each piece of evidence capped and the
 * whole within NOTIFICATION_BUDGET.
 */
export function findingMessage(f: FindingView, agent: string): string {
  const who = capped(agent, FINDING_CAPS.agent);
  const head =
    f.action === 'block'
      ? `Writ: blocked ${who}: its requests are refused until you unblock it. It `
      : f.action === 'stop'
        ? `Writ: stopped ${who}. It `
        : `Writ: warning: agent ${who} `;
  return `${head}${capped(describeFinding(f, FINDING_CAPS.evidence), NOTIFICATION_BUDGET - head.length - 1)}.`;
}

/** One line for the status bar's tooltip, the output channel and lists. */
export function findingLine(f: FindingView, agent: string): string {
  return `${agent} ${describeFinding(f)}`;
}

/** The notification's buttons: Stop and Block unless the broker already did that; Dismiss always. */
export function findingButtons(f: Pick<FindingView, 'action'>): FindingButton[] {
  if (f.action === 'block') return [UNBLOCK, DISMISS];
  if (f.action === 'stop') return [BLOCK, DISMISS];
  return [STOP_AGENT, BLOCK, DISMISS];
}

/** The notification for findings past the limit: how many, and whose. */
export function summaryMessage(findings: readonly FindingView[], label: (f: FindingView) => string): string {
  const whose = findings.map((f) => `${label(f)}: ${kindLabel(f.kind)}`);
  return inert(`Writ: ${plural(findings.length, 'more finding', 'more findings')} (${list(whose)}).`);
}

/** Newest first. */
export function newestFirst(findings: readonly FindingView[]): FindingView[] {
  return findings.slice().sort((a, b) => b.at - a.at || a.id.localeCompare(b.id));
}

/** This run's agent ids of an identity that Stop would revoke: the inventory's live ids not yet revoked. */
export function liveAgentIds(identity: string, inventory: readonly InventoryView[], agents: readonly AgentView[]): string[] {
  const live = inventory.find((e) => e.id === identity)?.live ?? [];
  const revoked = new Set(agents.filter((a) => a.revoked).map((a) => a.id));
  return live.filter((id) => !revoked.has(id));
}

export type FindingAlert = { kind: 'one'; finding: FindingView } | { kind: 'many'; findings: FindingView[] };

/**
 * Which findings to notify. The broker keeps one open finding per identity and kind, and this tells each at
 * most once while it is open (a snapshot repeats them); a dismissed one raised again is told again. At most
 * `maxToasts` finding notifications are up at once; past that, one summary with the count, and while that is
 * up the rest are only counted in the status bar.
 */
export class FindingAlerts {
  /** identity + kind → the id of the finding told for it. */
  private readonly told = new Map<string, string>();
  private showing = 0;
  private summaryUp = false;

  constructor(private readonly maxToasts = 2) {}

  /** Feed every snapshot's open findings; returns the notifications to show now, oldest first. */
  update(open: readonly FindingView[]): FindingAlert[] {
    const key = (f: FindingView) => `${f.identity}\n${f.kind}`;
    const openIds = new Set(open.map((f) => f.id));
    for (const [k, id] of this.told) if (!openIds.has(id)) this.told.delete(k);
    const fresh = open.filter((f) => this.told.get(key(f)) !== f.id).sort((a, b) => a.at - b.at || a.id.localeCompare(b.id));
    for (const f of fresh) this.told.set(key(f), f.id);
    const slots = Math.max(0, this.maxToasts - this.showing);
    const alerts: FindingAlert[] = fresh.slice(0, slots).map((finding) => ({ kind: 'one', finding }));
    this.showing += alerts.length;
    const rest = fresh.slice(slots);
    if (rest.length > 0 && !this.summaryUp) {
      this.summaryUp = true;
      alerts.push({ kind: 'many', findings: rest });
    }
    return alerts;
  }

  /** A notification was answered or closed. */
  closed(alert: FindingAlert): void {
    if (alert.kind === 'one') this.showing = Math.max(0, this.showing - 1);
    else this.summaryUp = false;
  }

  /** A new broker run: its findings died with the old one. Notifications still up are closed by their owner. */
  reset(): void {
    this.told.clear();
  }
}

/** `just now`, `4 min ago`, `3 h ago`, `2 d ago`: when the inventory last saw an identity. */
export function ago(iso: string, nowMs: number): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.floor((nowMs - t) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

/**
 * `active (cli)`: the broker's status first, then the kind the agent declared (shownKind) in parentheses, so a
 * kind `cli · blocked` cannot pass for the status.
 */
export function statusAndKind(e: Pick<InventoryView, 'status' | 'kind'>): string {
  return `${e.status} (${shownKind(e.kind)})`;
}

/** One line about an identity for the inventory view: status and kind, findings, owner, last seen, tokens, processes. */
export function inventoryDescription(e: InventoryView, findings: number, nowMs: number): string {
  const parts = [statusAndKind(e), oneLine(e.owner), `seen ${ago(e.lastSeen, nowMs)}`, plural(e.tokensNow, 'token', 'tokens')];
  // The executables' file names (full paths and hashes are in the hover).
  const exes = [...new Set(e.processes.map((p) => oneLine(p.exe.slice(p.exe.lastIndexOf('/') + 1))))];
  if (exes.length > 0) parts.push(`ran as ${list(exes, 2)}`);
  if (findings > 0) parts.splice(1, 0, plural(findings, 'finding', 'findings'));
  return parts.join(' · ');
}

/** An identity in the Block and Unblock pickers. */
export function identityPickText(e: InventoryView): { label: string; description: string; detail: string } {
  return { label: pickInert(shownName(e.name)), description: pickInert(`${statusAndKind(e)} · ${e.owner}`), detail: pickInert(e.id) };
}

/**
 * The inventory row's hover: everything the inventory holds about the identity, one fact a line. A hover is plain
 * text, so every field is made printable on its own line (a newline in a name would forge the lines after it).
 */
export function inventoryTooltip(e: InventoryView): string {
  const p = oneLine;
  const lines = [
    `${quoted(e.name, p)} (${shownKind(e.kind)}), owner ${p(e.owner)}`,
    `identity ${p(e.id)}`,
    `status ${e.status}${e.blocked ? `: blocked ${p(e.blocked.at)}${e.blocked.reason ? ` (${p(e.blocked.reason)})` : ''}` : ''}`,
    `first seen ${p(e.firstSeen)}, last seen ${p(e.lastSeen)}, ${plural(e.sessions, 'session', 'sessions')}`,
    `tokens now ${e.tokensNow}${e.live.length ? `; this run: ${e.live.map(p).join(', ')}` : ''}`,
  ];
  if (e.processes.length > 0) lines.push(`processes: ${e.processes.map((x) => (x.sha256 ? `${p(x.exe)} (sha256 ${p(x.sha256.slice(0, 12))}…)` : p(x.exe))).join(', ')}`);
  if (e.scopesGranted.length > 0) lines.push(`granted before: ${list(e.scopesGranted.map(p), 8)}`);
  if (e.parents.length > 0) lines.push(`sub-agent of ${e.parents.map(p).join(', ')}`);
  return lines.join('\n');
}

/** An inventory row in the tree: the name on one line (shownName), the description and the hover (agent text printable). */
export function identityRow(e: InventoryView, findings: number, nowMs: number): { label: string; description: string; tooltip: string } {
  return { label: shownName(e.name), description: inventoryDescription(e, findings, nowMs), tooltip: inventoryTooltip(e) };
}

/** A finding row in the tree: its kind, what the agent did (scopes, exe paths: printable), and the hover. */
export function findingRow(f: FindingView): { label: string; description: string; tooltip: string } {
  const kind = oneLine(kindLabel(f.kind));
  const what = oneLine(describeFinding(f));
  return { label: kind, description: what, tooltip: `${kind} (${oneLine(f.action)}) at ${new Date(f.at).toISOString()}\n${what}\n${oneLine(f.id)}` };
}

/** The inventory in the view's order: blocked first (they need a decision), then by last seen, newest first. */
export function inventoryOrder(entries: readonly InventoryView[]): InventoryView[] {
  return entries.slice().sort((a, b) => Number(b.status === 'blocked') - Number(a.status === 'blocked') || (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : a.id.localeCompare(b.id)));
}
