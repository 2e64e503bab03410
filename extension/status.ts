// The status bar item: shows statusModel's view, with theme colours; a click runs `writ.statusBarClick`.
import * as vscode from 'vscode';
import { statusView } from './statusModel';
import type { StatusInput } from './statusModel';

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('writ.status', vscode.StatusBarAlignment.Left, 10);

  constructor() {
    this.item.name = 'Writ';
    this.item.command = 'writ.statusBarClick';
    this.item.show();
  }

  update(input: StatusInput): void {
    const v = statusView(input);
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.backgroundColor = v.background ? new vscode.ThemeColor(v.background) : undefined;
    this.item.accessibilityInformation = { label: v.tooltip };
  }

  dispose(): void {
    this.item.dispose();
  }
}
