// The export dialog's choices mapped to the exporter's format and filter, and the file name offered. Pure.
import type { AuditFilter, ExportFormat } from '../broker/audit/export';

export const FORMAT_ITEMS: readonly { label: string; detail: string; format: ExportFormat; extension: string }[] = [
  { label: 'JSON Lines with checkpoints', detail: 'The records as written; a full export still verifies with `writ audit verify`.', format: 'jsonl', extension: 'jsonl' },
  { label: 'CSV', detail: 'One row per record (RFC 4180), for spreadsheets.', format: 'csv', extension: 'csv' },
  { label: 'OCSF', detail: 'OCSF 1.3 events (JSON Lines) for a SIEM; housekeeping records are left out.', format: 'ocsf', extension: 'ocsf.jsonl' },
];

export type ExportRange =
  | { kind: 'session'; session: string }
  | { kind: 'time'; since?: number; until?: number }
  | { kind: 'all' };

export function exportFilter(range: ExportRange): AuditFilter {
  switch (range.kind) {
    case 'session':
      return { session: range.session };
    case 'time':
      return { ...(range.since === undefined ? {} : { since: range.since }), ...(range.until === undefined ? {} : { until: range.until }) };
    case 'all':
      return {};
  }
}

/** `writ-audit-2026-01-02T03-04-05.csv`: sortable, and safe on every file system. */
export function exportFileName(format: ExportFormat, now: Date): string {
  const stamp = now.toISOString().slice(0, 19).replaceAll(':', '-');
  const ext = FORMAT_ITEMS.find((f) => f.format === format)?.extension ?? format;
  return `writ-audit-${stamp}.${ext}`;
}

/** An ISO 8601 time or date typed by the developer, as epoch ms; empty means open-ended; NaN is a mistake. */
export function parseTimeInput(text: string): number | undefined | null {
  const t = text.trim();
  if (!t) return undefined;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}
