// The extension's settings: every key in one place, with the defaults package.json declares. Pure (no vscode).
import { DEFAULT_WATCH_CONFIG, FINDING_KINDS } from '../broker/core/watch';
import type { FindingAction, FindingKind } from '../broker/core/watch';

export const SETTINGS_SECTION = 'writ';

export const SETTING = {
  defaultTtlSeconds: 'defaultTtlSeconds',
  maxTtlSeconds: 'maxTtlSeconds',
  approvalTimeoutSeconds: 'approvalTimeoutSeconds',
  statusBarClick: 'statusBarClick',
  watchActions: 'watch.actions',
} as const;

export type StatusBarClick = 'agents' | 'auditPanel';

export interface WritSettings {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  approvalTimeoutSeconds: number;
  statusBarClick: StatusBarClick;
  /** What the broker does on a finding of each kind: warn, block the agent, or stop it. */
  watchActions: Record<FindingKind, FindingAction>;
}

export const DEFAULT_SETTINGS: WritSettings = {
  defaultTtlSeconds: 300,
  maxTtlSeconds: 3600,
  approvalTimeoutSeconds: 120,
  statusBarClick: 'agents',
  watchActions: { ...DEFAULT_WATCH_CONFIG.actions },
};

const MAX_TTL_CEILING = 3600;

function whole(v: unknown, min: number, max: number, fallback: number): number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : fallback;
}

/** Settings as read (any JSON a user typed), made safe: out-of-range values fall back to the defaults. */
export function sanitizeSettings(read: (key: string) => unknown): WritSettings {
  const maxTtl = whole(read(SETTING.maxTtlSeconds), 1, MAX_TTL_CEILING, DEFAULT_SETTINGS.maxTtlSeconds);
  const defaultTtl = Math.min(whole(read(SETTING.defaultTtlSeconds), 1, MAX_TTL_CEILING, DEFAULT_SETTINGS.defaultTtlSeconds), maxTtl);
  const click = read(SETTING.statusBarClick);
  return {
    defaultTtlSeconds: defaultTtl,
    maxTtlSeconds: maxTtl,
    approvalTimeoutSeconds: whole(read(SETTING.approvalTimeoutSeconds), 5, 3600, DEFAULT_SETTINGS.approvalTimeoutSeconds),
    statusBarClick: click === 'auditPanel' ? 'auditPanel' : 'agents',
    watchActions: watchActions(read(SETTING.watchActions)),
  };
}

const ACTIONS: readonly string[] = ['warn', 'block', 'stop'];

/** Each finding kind's action as set, or its default where the value is missing or not one of the three. */
function watchActions(v: unknown): Record<FindingKind, FindingAction> {
  const set = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  const out = { ...DEFAULT_WATCH_CONFIG.actions };
  for (const kind of FINDING_KINDS) {
    const a = set[kind];
    if (typeof a === 'string' && ACTIONS.includes(a)) out[kind] = a as FindingAction;
  }
  return out;
}

/** The broker's environment for these settings: the watch's actions as `WRIT_WATCH_ACTIONS` (kind=action,…). */
export function brokerSettingsEnv(s: WritSettings): Record<string, string> {
  return { WRIT_WATCH_ACTIONS: FINDING_KINDS.map((k) => `${k}=${s.watchActions[k]}`).join(',') };
}

/** The `writ serve` flags these settings become. */
export function serveArgs(s: WritSettings, dirs: { stateDir: string; runtimeDir: string }): string[] {
  return [
    'serve',
    '--state-dir', dirs.stateDir,
    '--runtime-dir', dirs.runtimeDir,
    '--default-ttl', String(s.defaultTtlSeconds),
    '--max-ttl', String(s.maxTtlSeconds),
    '--approval-timeout', String(s.approvalTimeoutSeconds),
  ];
}
