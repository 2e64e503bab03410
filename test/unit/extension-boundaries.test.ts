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
});
