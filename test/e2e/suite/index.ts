// The extensionTestsPath entry: code-server's extension host loads out/test/suite/index.js (bundled from here
// by test/e2e/harness-suite.ts) and awaits run(); a rejection is a failed run. Mocha's output goes to the
// extension host's console, which the smoke-test driver forwards to the page (codeAutomationLog).
import Mocha from 'mocha';

export async function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', color: false, reporter: 'spec', timeout: 120_000, slow: 10_000 });
  // What mocha.loadFiles() does for each file: install describe/it on the global before the tests load.
  mocha.suite.emit('pre-require', globalThis, 'writ-e2e-suite', mocha);
  await import('./extension.test');
  const failures = await new Promise<number>((resolve) => mocha.run(resolve));
  if (failures > 0) throw new Error(`${failures} in-editor test(s) failed`);
}
