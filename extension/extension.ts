// VS Code glue over the broker's protocol. The in-editor approvals, audit panel and kill switch land
// with the extension issue; until then activation only says the extension is present.
import type * as vscode from 'vscode';

export function activate(_context: vscode.ExtensionContext): void {}

export function deactivate(): void {}
