// Activation and deactivation. Activation only builds the context and asks the broker to start (in the
// background); deactivate returns the broker's stop so VS Code waits for its final checkpoint.
import type * as vscode from 'vscode';
import { performance } from 'node:perf_hooks';
import { WritContext } from './ctx';
import type { WritApi } from './ctx';

/** The one piece of module state: deactivate() takes no arguments, so the live context is kept for it here. */
const live: { ctx?: WritContext } = {};

export function activate(context: vscode.ExtensionContext): WritApi {
  const t0 = performance.now();
  const ctx = new WritContext(context);
  live.ctx = ctx;
  ctx.start();
  ctx.activationMs = performance.now() - t0;
  ctx.output.info(`activated in ${ctx.activationMs.toFixed(1)} ms (the broker starts in the background)`);
  return ctx.api();
}

export function deactivate(): Promise<void> | undefined {
  const ctx = live.ctx;
  live.ctx = undefined;
  return ctx?.stop();
}
