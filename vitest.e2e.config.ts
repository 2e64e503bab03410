import { defineConfig } from 'vitest/config';

// The end-to-end tests in a real VS Code (code-server + chromium): run by `npm run test:e2e`, which packages
// the VSIX first and runs this under scripts/with-keyring.sh. One file at a time: each starts its own
// code-server, and the machine has 2 cores shared with other work. Generous timeouts, never timing asserts.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.e2e.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    reporters: ['default', './test/summary-reporter.ts'],
    testTimeout: 900_000,
    hookTimeout: 300_000,
  },
});
