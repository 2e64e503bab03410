// Extension features (issue 3) that end-to-end tests depend on. An entry set to true marks a feature the
// extension does not have yet: its test is written but shows up as pending/skipped with "[PENDING extension:
// NAME]" in its title, never silently. Set it back to false in the change that lands the feature. All of
// these have landed; add an entry (true) when a test is written ahead of its feature.
export const PENDING = {
  /** package.json contributes.commands declares `writ.*` commands and activate() registers them. */
  commands: false,
  /** activate() puts WRIT_BROKER (the broker's address) into context.environmentVariableCollection. */
  terminalEnv: false,
  /** A status bar item whose text includes "Writ" (broker stopped / running / N agents / K approvals / error). */
  statusBar: false,
} as const;

export type Feature = keyof typeof PENDING;

export function pendingTitle(feature: Feature, title: string): string {
  return PENDING[feature] ? `${title} [PENDING extension: ${feature}]` : title;
}
