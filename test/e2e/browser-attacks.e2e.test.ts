// A real web page in a real headless chromium tries to reach the broker: a WebSocket from the page, a
// cross-site form POST that would revoke a token, and the same from a DNS-rebound name. The broker refuses
// each (no Origin-bearing request is served, no non-loopback Host is served); a control server on another
// port shows the browser really sends such requests, so it is the broker, not the browser, that says no.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROMIUM, CHROMIUM_ARGS, TOOLS } from './harness';
import type { BrowserContext, Page } from './harness';
import { BrokerProcess, approveAll, form, freshEnv } from '../helpers/broker';

interface Chromium {
  launchPersistentContext(dir: string, o: { executablePath: string; headless: boolean; args: string[] }): Promise<BrowserContext>;
}

const listen = (s: Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

describe('a web page attacking the broker', () => {
  let b: BrokerProcess;
  let token: string;
  let attacker: Server;
  let control: Server;
  const controlHits: { method: string; origin: string | undefined }[] = [];
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    b = await BrokerProcess.start(freshEnv());
    b.decide = approveAll;
    const { client } = await b.agent('victim');
    token = (await client.call('task.request', { task: 't', scopes: ['repo:read:a'], audience: 'aud' })).token.token;
    await client.close();

    control = createServer((req, res) => {
      controlHits.push({ method: req.method ?? '', origin: req.headers.origin });
      res.end('ok');
    });
    const controlPort = await listen(control);
    const brokerPort = new URL(b.discovery.httpUrl).port;
    // The attacker's page. It is handed the token only so that success would be visible: a revoked token.
    const html = (brokerHost: string) => `<!doctype html><script>
      window.results = {};
      const ws = new WebSocket('ws://${brokerHost}:${brokerPort}/');
      ws.onopen = () => { window.results.ws = 'open'; };
      ws.onerror = () => { window.results.ws = 'error'; };
      const body = new URLSearchParams({ token: ${JSON.stringify(token)} });
      fetch('http://${brokerHost}:${brokerPort}/oauth2/revoke', { method: 'POST', mode: 'no-cors', body })
        .then(() => { window.results.revoke = 'sent'; }, () => { window.results.revoke = 'failed'; });
      fetch('http://${brokerHost}:${brokerPort}/.well-known/jwks.json')
        .then((r) => r.text().then((t) => { window.results.read = t; }), () => { window.results.read = 'blocked'; });
      fetch('http://127.0.0.1:${controlPort}/control', { method: 'POST', mode: 'no-cors', body })
        .then(() => { window.results.control = 'sent'; }, () => { window.results.control = 'failed'; });
    </script>`;
    attacker = createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(html(req.url === '/rebind' ? 'evil.test' : '127.0.0.1'));
    });
    const attackerPort = await listen(attacker);
    const require = createRequire(join(TOOLS, 'package.json'));
    const { chromium } = require('playwright-core') as { chromium: Chromium };
    context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'writ-attack-')), {
      executablePath: CHROMIUM,
      headless: true,
      // DNS rebinding, simulated: a hostile name that resolves to loopback.
      args: [...CHROMIUM_ARGS, '--host-resolver-rules=MAP evil.test 127.0.0.1'],
    });
    page = context.pages()[0] ?? (await context.newPage());
    (page as unknown as { attackerPort: number }).attackerPort = attackerPort;
  }, 180_000);

  afterAll(async () => {
    await context?.close();
    attacker?.close();
    control?.close();
    await b?.stop();
  });

  async function runPage(path: string): Promise<Record<string, string>> {
    const port = (page as unknown as { attackerPort: number }).attackerPort;
    const host = path === '/rebind' ? 'evil.test' : '127.0.0.1';
    await page.goto(`http://${host}:${port}${path}`);
    const evaluate = (page as unknown as { evaluate<T>(f: () => T): Promise<T> }).evaluate.bind(page);
    for (let i = 0; i < 200; i++) {
      const r = await evaluate(() => (window as unknown as { results: Record<string, string> }).results);
      if (r.ws && r.revoke && r.read && r.control) return r;
      await page.waitForTimeout(50);
    }
    throw new Error('the page did not finish');
  }

  it('cannot open a WebSocket, read the JWKS, or revoke a token, from another origin or a rebound name', async () => {
    for (const path of ['/', '/rebind']) {
      const before = controlHits.length;
      const r = await runPage(path);
      expect(r.ws, path).toBe('error');
      expect(r.read, path).toBe('blocked');
      expect(r.control, path).toBe('sent');
      expect(controlHits.length, path).toBe(before + 1);
      expect(controlHits.at(-1)?.origin, path).toMatch(/^http:\/\/(127\.0\.0\.1|evil\.test):\d+$/);
    }
    // The browser delivered the form POSTs; the broker refused them: the token is still active, nothing revoked.
    expect((await form(`${b.discovery.httpUrl}/oauth2/introspect`, { token })).json.active).toBe(true);
    expect(b.auditLines().some((l) => l.includes('"event":"revoked"'))).toBe(false);
    const { client } = await b.agent('after');
    expect((await client.call('status', {})).pid).toBe(b.child.pid);
    await client.close();
  });
});
