// The extension's settings: every key in one place, with the defaults package.json declares. Pure (no vscode).

export const SETTINGS_SECTION = 'writ';

export const SETTING = {
  defaultTtlSeconds: 'defaultTtlSeconds',
  maxTtlSeconds: 'maxTtlSeconds',
  approvalTimeoutSeconds: 'approvalTimeoutSeconds',
  statusBarClick: 'statusBarClick',
} as const;

export type StatusBarClick = 'agents' | 'auditPanel';

export interface WritSettings {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  approvalTimeoutSeconds: number;
  statusBarClick: StatusBarClick;
}

export const DEFAULT_SETTINGS: WritSettings = {
  defaultTtlSeconds: 300,
  maxTtlSeconds: 3600,
  approvalTimeoutSeconds: 120,
  statusBarClick: 'agents',
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
  };
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
