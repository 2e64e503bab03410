// Four bundles: the broker/CLI (plain Node, ESM) and the extension (CommonJS, the form VS Code loads), as in
// vscode-eslint, plus the verifier library `writ/verify` (ESM) and the audit panel's webview script (browser, IIFE). The keyring's native binding stays
// external: it is loaded from node_modules.
import * as esbuild from 'esbuild';

const watch = process.argv.includes('--watch');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  external: ['@napi-rs/keyring', 'vscode'],
};

const contexts = await Promise.all([
  esbuild.context({
    ...common,
    entryPoints: { writ: 'broker/cli.ts' },
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
    format: 'esm',
    // ws (CommonJS) calls require() for optional natives; give ESM output a real require.
    banner: {
      js: "#!/usr/bin/env node\nimport { createRequire as __writCreateRequire } from 'node:module';\nconst require = __writCreateRequire(import.meta.url);",
    },
  }),
  // The verifier library (`writ/verify`), for resources that accept Writ tokens: ESM, no shebang.
  esbuild.context({
    ...common,
    entryPoints: { verify: 'broker/sdk/verify.ts' },
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
    format: 'esm',
    banner: { js: "import { createRequire as __writCreateRequire } from 'node:module';\nconst require = __writCreateRequire(import.meta.url);" },
  }),
  esbuild.context({
    ...common,
    entryPoints: { extension: 'extension/extension.ts' },
    outdir: 'dist',
    outExtension: { '.js': '.cjs' },
    format: 'cjs',
  }),
  esbuild.context({
    bundle: true,
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning',
    entryPoints: { audit: 'media/audit.ts' },
    outdir: 'dist/webview',
    format: 'iife',
    minify: !watch,
  }),
]);

if (watch) {
  await Promise.all(contexts.map((c) => c.watch()));
} else {
  await Promise.all(contexts.map((c) => c.rebuild()));
  await Promise.all(contexts.map((c) => c.dispose()));
}
