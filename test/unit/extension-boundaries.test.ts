// The pure parts of the extension stay free of `vscode` (they run here, without an editor), and `broker/`
// never imports it.
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uncheckedUiText } from '../helpers/uiText';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PURE = ['agentState', 'approvalCard', 'auditFeed', 'auditFilter', 'auditRows', 'brokerDirs', 'exportOptions', 'oversight', 'rules', 'settings', 'slotLock', 'statusMenu', 'statusModel', 'supervisor', 'verifyOutput'];
/**
 * The reviewed pure builders whose text VS Code may show as is (`file: expression`, call arguments left out): each
 * applies the guards itself and is unit-tested (approvalCard, oversight, statusMenu, agentState, statusModel, rules).
 * `ctx.session` and `ctx.auditPath` are the broker's session id and the extension's own audit path.
 */
const REVIEWED = new Set([
  'approvals.ts: pendingItems()',
  'approvals.ts: prompt.message',
  'approvals.ts: prompt.buttons',
  'approvals.ts: scopeItems()',
  'approvals.ts: reviewTitle()',
  'approvals.ts: scopePlaceholder()',
  'approvals.ts: describeTtl()',
  'approvals.ts: MODE_ITEMS.map()',
  'commands.ts: agentPickText()',
  'commands.ts: identityPickText()',
  'commands.ts: findingPickText()',
  // The status menu's rows (built by statusMenu's tested texts; the closure adds only buttons, keys and actions).
  'commands.ts: local render()',
  'commands.ts: findingTitle()',
  'commands.ts: FORMAT_ITEMS.map()',
  'commands.ts: ctx.session',
  'commands.ts: ctx.auditPath',
  'findings.ts: summaryMessage()',
  'findings.ts: findingMessage()',
  'findings.ts: findingButtons()',
  'findings.ts: SHOW_FINDINGS',
  'ctx.ts: trustRulesDetail()',
  'status.ts: v.text',
  'status.ts: v.tooltip',
  'tree.ts: row.label',
  'tree.ts: row.description',
  'tree.ts: row.tooltip',
  'tree.ts: messageRow().label',
]);
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

  it('makes every text VS Code shows that can carry agent, file or broker text safe (read with the TypeScript compiler)', () => {
    // code-server opens a notification's `[label](command:id)` links with commands allowed (one click runs any
    // command), quick picks and the status bar render `$(icon)`, a tree row or hover shows a newline. Each such
    // text is a whole literal, a guard call (inert, pickInert, oneLine) as the whole argument, or a reviewed builder.
    const unchecked = tsFiles(join(ROOT, 'extension')).flatMap((f) => uncheckedUiText(basename(f), readFileSync(f, 'utf8'), REVIEWED));
    expect(unchecked).toEqual([]);
  });

  it('catches each way around the check', () => {
    const fooling: Record<string, string> = {
      concatenated: "vscode.window.showWarningMessage('Writ: stop ' + name);",
      'inert then +': "vscode.window.showErrorMessage(inert('Writ: ') + err.message);",
      'built in a variable first': "const msg = 'Writ: stop ' + name; vscode.window.showWarningMessage(msg);",
      'built in an object first': 'const o = { m: `Writ: ${name}` }; vscode.window.showWarningMessage(o.m);',
      'a let reassigned': "let m = 'ok'; m = name; vscode.window.showWarningMessage(m);",
      template: 'vscode.window.showInformationMessage(`Writ: ${name}`);',
      destructured: 'const { showErrorMessage } = vscode.window; showErrorMessage(inert(name));',
      aliased: 'const w = vscode.window; w.showErrorMessage(inert(name));',
      'element access': "vscode.window['showWarningMessage'](name);",
      'taken, not called': 'const show = vscode.window.showWarningMessage; show(name);',
      'bound': 'const show = vscode.window.showWarningMessage.bind(vscode.window);',
      setStatusBarMessage: "vscode.window.setStatusBarMessage('Writ: ' + name);",
      'oneLine in a notification (links stay)': 'vscode.window.showWarningMessage(oneLine(name));',
      'showInputBox prompt': 'vscode.window.showInputBox({ prompt: `Token for ${name}` });',
      'withProgress title': 'vscode.window.withProgress({ location: 15, title: name }, run);',
      'quick pick title': "vscode.window.showQuickPick([], { title: 'Writ: ' + name });",
      'quick pick items': 'vscode.window.showQuickPick(agents.map((a) => ({ label: a.name })));',
      'quick pick item inert, not pickInert (icons stay)': 'vscode.window.showQuickPick([{ label: inert(a.name) }]);',
      'quick pick items in a variable': 'const items = [{ label: "x", detail: a.task }]; vscode.window.showQuickPick(items);',
      'createQuickPick title': 'const qp = vscode.window.createQuickPick(); qp.title = name;',
      'createQuickPick items': 'qp.items = agents.map((a) => ({ label: a.name }));',
      'TreeItem label': 'new vscode.TreeItem(a.name);',
      'TreeItem description': 'item.description = a.kind;',
      'TreeItem tooltip': 'item.tooltip = `${a.name}`;',
      'status bar item text': 'const s = vscode.window.createStatusBarItem(); s.text = `Writ: ${name}`;',
      'tooltip +=': 'item.tooltip += a.name;',
      'label ??=': 'item.label ??= a.name;',
      'element assign': "item['tooltip'] = a.name;",
      'Object.assign': 'Object.assign(item, { tooltip: a.name });',
      'Object.assign of a variable': 'Object.assign(item, shown);',
      'treeView.message': 'view.message = a.name;',
      'createTreeView message': "vscode.window.createTreeView('v', { treeDataProvider: p, message: a.name });",
      'view badge tooltip': 'view.badge = { value: 1, tooltip: a.name };',
      'modal detail': "vscode.window.showWarningMessage('Writ: x', { modal: true, detail: a.name });",
      'modal detail in a const': "const o = { modal: true, detail: a.name }; vscode.window.showWarningMessage('Writ: x', o);",
      'button label': "vscode.window.showWarningMessage('Writ: x', a.name);",
      'button item title': "vscode.window.showWarningMessage('Writ: x', { title: a.name });",
      'buttons spread': "vscode.window.showWarningMessage('Writ: x', ...a.names);",
      'progress.report': "vscode.window.withProgress({ location: 15, title: 'Writ' }, async (p) => p.report({ message: a.name }));",
      'webview title': "vscode.window.createWebviewPanel('id', a.name, 1, {});",
      'input value': 'box.value = a.name;',
      'validationMessage': 'box.validationMessage = a.name;',
      'validateInput arrow': 'vscode.window.showInputBox({ validateInput: () => a.name });',
      'validateInput body': 'vscode.window.showInputBox({ validateInput(v) { if (v) return a.name; return undefined; } });',
      'validateInput in a const': 'const check = (v: string) => (v ? `bad ${v}` : undefined); vscode.window.showInputBox({ validateInput: check });',
      'item buttons tooltip': "vscode.window.showQuickPick([{ label: 'x', buttons: [{ iconPath: i, tooltip: a.name }] }]);",
      'item button in a const': "const B = { iconPath: i, tooltip: a.name }; vscode.window.showQuickPick([{ label: 'x', buttons: [B] }]);",
      'guard shadowed': "import { inert } from './inert'; const inert = (s: string) => s; vscode.window.showWarningMessage(inert(a.name));",
      'guard not imported': 'const inert = (s: string) => s; vscode.window.showWarningMessage(inert(a.name));',
      'guard a parameter': "import { inert } from './inert'; function f(inert: (s: string) => string) { vscode.window.showWarningMessage(inert(a.name)); }",
      'guard from another module': "import { inert } from './other'; vscode.window.showWarningMessage(inert(a.name));",
    };
    for (const [how, source] of Object.entries(fooling)) expect(uncheckedUiText('x.ts', source, REVIEWED), how).not.toEqual([]);
    const guards = "import { inert, oneLine, pickInert } from './inert';\n";
    const fine = [
      "vscode.window.showWarningMessage('Writ: plain');",
      'vscode.window.showErrorMessage(inert(`Writ: ${e.message}`), "Retry");',
      "vscode.window.showInformationMessage(x ? 'Writ: a' : 'Writ: b');",
      'const t = inert(name); vscode.window.showWarningMessage(t);',
      'vscode.window.showQuickPick(agents.map((a) => ({ label: pickInert(a.name), id: a.id })), { title: "Writ: pick" });',
      'new vscode.TreeItem(oneLine(a.name)); item.tooltip = oneLine(a.kind);',
      "vscode.window.showWarningMessage('Writ: x', { modal: true, detail: inert(a.name) }, 'Trust', { title: 'Later' });",
      "item.tooltip += oneLine(a.name); item['label'] = oneLine(a.name); Object.assign(item, { tooltip: oneLine(a.name), id: a.id });",
      "vscode.window.showInputBox({ validateInput: (v) => (v ? 'An ISO 8601 time' : undefined) });",
      "vscode.window.showQuickPick([{ label: 'x', buttons: [{ iconPath: i, tooltip: 'Stop' }] }]);",
      "vscode.window.createWebviewPanel('writ.audit', 'Writ Audit', 1, {});",
    ];
    for (const source of fine) expect(uncheckedUiText('x.ts', guards + source, REVIEWED), source).toEqual([]);
    // A reviewed builder counts by where its name comes from, not by its shape alone.
    const shadowed: [string, string][] = [
      ['tree.ts', 'const row = { label: a.name }; new vscode.TreeItem(row.label);'],
      ['tree.ts', "import { agentRow } from './agentState'; function f(row: { label: string }) { new vscode.TreeItem(row.label); }"],
      ['tree.ts', "import { agentRow } from './agentState'; const row = agentRow(a); { const row = { label: a.name }; new vscode.TreeItem(row.label); }"],
      ['status.ts', 'const v = { text: a.name }; this.item.text = v.text;'],
      ['findings.ts', "const findingMessage = (f: F) => f.name; vscode.window.showWarningMessage(findingMessage(f));"],
      ['approvals.ts', "import { approvalPrompt } from './approvalCard'; const prompt = { message: a.name }; vscode.window.showInformationMessage(prompt.message);"],
    ];
    for (const [f, source] of shadowed) expect(uncheckedUiText(f, source, REVIEWED), `${f}: ${source}`).not.toEqual([]);
    // A function of the file itself passes only when listed as local (reviewed: commands.ts's render()).
    expect(uncheckedUiText('commands.ts', 'const render = () => agents.map((a) => ({ label: a.name })); qp.items = render();', new Set(['commands.ts: render()']))).not.toEqual([]);
    const bound: [string, string][] = [
      ['tree.ts', "import { agentRow } from './agentState'; const row = agentRow(a); new vscode.TreeItem(row.label);"],
      ['status.ts', "import { statusView } from './statusModel'; const v = statusView(input); this.item.text = v.text;"],
      ['findings.ts', "import { findingMessage } from './oversight'; vscode.window.showWarningMessage(findingMessage(f));"],
      ['commands.ts', "import type { WritContext } from './ctx'; function f(ctx: WritContext) { vscode.window.showQuickPick([{ label: 'x', description: ctx.session }]); }"],
    ];
    for (const [f, source] of bound) expect(uncheckedUiText(f, source, REVIEWED), `${f}: ${source}`).toEqual([]);
    // Imported under another name, a guard is still a guard.
    expect(uncheckedUiText('x.ts', "import { inert as safe } from '../extension/inert';\nvscode.window.showWarningMessage(safe(a.name));", REVIEWED)).toEqual([]);
  });
});
