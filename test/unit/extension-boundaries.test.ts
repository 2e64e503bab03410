// The pure parts of the extension stay free of `vscode` (they run here, without an editor), and `broker/`
// never imports it.
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PURE = ['agentState', 'approvalCard', 'auditFeed', 'auditFilter', 'auditRows', 'brokerDirs', 'exportOptions', 'oversight', 'rules', 'settings', 'slotLock', 'statusMenu', 'statusModel', 'supervisor', 'verifyOutput'];
const importsVscode = (file: string) => /from ['"]vscode['"]|require\(['"]vscode['"]\)/.test(readFileSync(file, 'utf8'));

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

describe('module boundaries', () => {
  it('keeps the pure extension modules free of vscode', () => {
    expect(PURE.filter((m) => importsVscode(join(ROOT, 'extension', `${m}.ts`)))).toEqual([]);
  });

  it('keeps broker/ free of vscode', () => {
    expect(tsFiles(join(ROOT, 'broker')).filter(importsVscode)).toEqual([]);
  });

  it('makes every notification message that can carry agent, file or broker text inert', () => {
    // code-server opens a notification's `[label](command:id)` links with commands allowed: one click runs any
    // command. A message is a plain literal, inert(…), a pure builder that applies inert (unit-tested), or one of
    // these reviewed templates that interpolate only the extension's own constants and counts.
    const ours = [
      "commands.ts: `Writ: stop all agents${n ? ` (${n} acti",
      "commands.ts: blocked ? 'Writ: no agent is blocked.' :",
      'ctx.ts: `Trust the ${read.rules.length} rule(s) ',
      'ctx.ts: `Writ: ${RULES_FILE} changed since you l',
      'ctx.ts: `Writ: the broker has not answered for $',
    ];
    const safe = /^(?:'|inert\(|findingMessage\(|summaryMessage\(|prompt\.message\b)/;
    const unchecked: string[] = [];
    for (const file of tsFiles(join(ROOT, 'extension'))) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/\.show(?:Error|Warning|Information)Message\(\s*/g)) {
        const arg = text.slice(m.index + m[0].length, m.index + m[0].length + 40);
        if (!safe.test(arg)) unchecked.push(`${file.slice(file.lastIndexOf('/') + 1)}: ${arg}`);
      }
    }
    expect(unchecked.sort()).toEqual(ours);
  });
});
