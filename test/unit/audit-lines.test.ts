// Reading the audit file as raw lines, from the start or from where its last N lines begin (the panel's tail).
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_AUDIT_LINE_BYTES, readAuditLines, tailStart } from '../../broker/audit/lines';

const dir = mkdtempSync(join(tmpdir(), 'writ-lines-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const lines = async (p: string, start?: number) => {
  const out: string[] = [];
  for await (const l of readAuditLines(p, start === undefined ? {} : { start })) out.push(`${l.bytes.toString('utf8')}${l.terminated ? '' : '…'}`);
  return out;
};

describe('tailStart + readAuditLines: the last N lines of a log without reading the rest', () => {
  it('starts at the first of the last N terminated lines; a torn fragment after them is still read, and marked', async () => {
    const p = file('torn.jsonl', 'a\nbb\nccc\nfrag');
    expect(await tailStart(p, 2)).toBe(2);
    expect(await lines(p, await tailStart(p, 2))).toEqual(['bb', 'ccc', 'frag…']);
    expect(await tailStart(p, 3)).toBe(0);
    expect(await tailStart(p, 50)).toBe(0);
    expect(await tailStart(file('empty.jsonl', ''), 5)).toBe(0);
  });

  it('agrees with counting from the front, for every N and across chunk boundaries', async () => {
    // Lines of varying length, read backwards in chunks from 1 byte up to larger than the file.
    const all = Array.from({ length: 40 }, (_, i) => 'x'.repeat((i * 7) % 13) + String(i));
    const p = file('many.jsonl', all.map((l) => `${l}\n`).join(''));
    for (const chunk of [1, 2, 3, 7, 64, 1 << 20]) {
      for (let n = 0; n <= 41; n++) {
        const want = n >= all.length ? 0 : all.slice(0, all.length - n).reduce((s, l) => s + l.length + 1, 0);
        expect(await tailStart(p, n, chunk)).toBe(want);
      }
    }
    expect(await lines(p, await tailStart(p, 3))).toEqual(all.slice(-3));
  });
});

process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

describe('readAuditLines on a line no record is as long as', () => {
  it('keeps only its first MAX_AUDIT_LINE_BYTES, gives its whole length, and goes on with the lines after it', async () => {
    const long = 'x'.repeat(3 * MAX_AUDIT_LINE_BYTES + 17);
    const p = file('overlong.jsonl', `a\n${long}\nb\n${long}`);
    const out: { head: string; length: number; overlong?: true; terminated: boolean; kept: number }[] = [];
    for await (const l of readAuditLines(p)) out.push({ head: l.bytes.toString('utf8', 0, 1), length: l.length, ...(l.overlong ? { overlong: l.overlong } : {}), terminated: l.terminated, kept: l.bytes.length });
    expect(out).toEqual([
      { head: 'a', length: 1, terminated: true, kept: 1 },
      { head: 'x', length: long.length, overlong: true, terminated: true, kept: MAX_AUDIT_LINE_BYTES },
      { head: 'b', length: 1, terminated: true, kept: 1 },
      { head: 'x', length: long.length, overlong: true, terminated: false, kept: MAX_AUDIT_LINE_BYTES },
    ]);
  });
});
