// The watch's findings as notifications: one per identity and kind while it is open, a count when many arrive
// at once (oversight.ts decides which), each with Stop agent / Block (or Unblock) / Dismiss. A closed
// notification is no decision: the finding stays open in the status bar and the Writ view.
import * as vscode from 'vscode';
import type { FindingView } from '../broker/protocol';
import { BLOCK, DISMISS, FindingAlerts, SHOW_FINDINGS, STOP_AGENT, UNBLOCK, findingButtons, findingMessage, kindLabel, summaryMessage } from './oversight';
import type { FindingAlert } from './oversight';

/** Finding notifications on screen at once; more arrive as one summary with the count. */
const MAX_FINDING_TOASTS = 2;

export interface FindingActions {
  /** `creeper (script)`: who the finding is about. */
  label(f: FindingView): string;
  isOpen(findingId: string): boolean;
  stop(identity: string): Promise<unknown>;
  block(identity: string, reason: string): Promise<unknown>;
  unblock(identity: string): Promise<unknown>;
  dismiss(findingId: string): Promise<unknown>;
  showFindings(): unknown;
}

export class FindingNotifications {
  private readonly alerts = new FindingAlerts(MAX_FINDING_TOASTS);

  constructor(private readonly act: FindingActions) {}

  /** Feed every snapshot's open findings. */
  update(open: readonly FindingView[]): void {
    for (const alert of this.alerts.update(open)) void this.show(alert);
  }

  /** A new broker run. */
  reset(): void {
    this.alerts.reset();
  }

  private async show(alert: FindingAlert): Promise<void> {
    try {
      if (alert.kind === 'many') {
        const choice = await vscode.window.showWarningMessage(summaryMessage(alert.findings, (f) => this.act.label(f)), SHOW_FINDINGS);
        if (choice === SHOW_FINDINGS) this.act.showFindings();
        return;
      }
      const f = alert.finding;
      const choice = await vscode.window.showWarningMessage(findingMessage(f, this.act.label(f)), ...findingButtons(f));
      if (choice === STOP_AGENT) await this.act.stop(f.identity);
      else if (choice === BLOCK) await this.act.block(f.identity, `after a ${kindLabel(f.kind)} finding (${f.id})`);
      else if (choice === UNBLOCK) await this.act.unblock(f.identity);
      // A late Dismiss (dismissed elsewhere meanwhile) has nothing left to do.
      else if (choice === DISMISS && this.act.isOpen(f.id)) await this.act.dismiss(f.id);
    } finally {
      this.alerts.closed(alert);
    }
  }
}
