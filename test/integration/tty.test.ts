// Approvals at the broker's own terminal, with no editor attached: a real pseudo-terminal (util-linux
// `script`) runs `writ serve`, and the test types the developer's answers.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, freshEnv, requireKeyring, writ } from '../helpers/broker';

requireKeyring();

function waitFor(get: () => string, text: string, ms = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const t = setInterval(() => {
      if (get().includes(text)) {
        clearInterval(t);
        resolve();
      } else if (Date.now() - start > ms) {
        clearInterval(t);
        reject(new Error(`timed out waiting for ${JSON.stringify(text)} in:\n${get()}`));
      }
    }, 20);
  });
}

describe('terminal approvals', () => {
  it('shows the request and lets the developer narrow the scopes, approve, and deny', async () => {
    const env = freshEnv();
    const cmd = `${process.execPath} ${join(ROOT, 'dist/writ.mjs')} serve`;
    const tty = spawn('script', ['-qfec', cmd, '/dev/null'], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    tty.stdout.on('data', (d) => (screen += d));
    tty.stderr.on('data', (d) => (screen += d));
    try {
      await waitFor(() => screen, 'approvals  this terminal');
      const token = writ(['token', '--task', 'fix issue 12', '--scope', 'repo:read:acme/web', '--scope', 'repo:write:acme/web', '--aud', 'https://api.example'], env);
      await waitFor(() => screen, 'Approve?');
      expect(screen).toContain('Task:     fix issue 12');
      expect(screen).toContain('1) repo:read:acme/web');
      expect(screen).toContain('2) repo:write:acme/web');
      tty.stdin.write('e\r');
      await waitFor(() => screen, 'Keep which scopes?');
      tty.stdin.write('1\r');
      await waitFor(() => screen, 'Scopes now: repo:read:acme/web');
      tty.stdin.write('y\r');
      const r = await token;
      expect(r.code).toBe(0);
      const payload = JSON.parse(Buffer.from(r.stdout.trim().split('.')[1]!, 'base64url').toString());
      expect(payload.scope).toBe('repo:read:acme/web');

      const denied = writ(['token', '--task', 'push', '--scope', 'repo:admin:acme/web', '--aud', 'https://api.example', '--agent', 'other'], env);
      await waitFor(() => screen, 'push');
      await waitFor(() => screen.slice(screen.lastIndexOf('Task:     push')), 'Approve?');
      tty.stdin.write('n\r');
      const d = await denied;
      expect(d.code).toBe(1);
      expect(d.stderr).toContain('(WRIT_DENIED)');
    } finally {
      tty.kill('SIGTERM');
      await new Promise((r) => tty.on('exit', r));
    }
  });
});
