// The proxy's secret config: one canonical upstream (the token audience), https only except to loopback, and
// header names the proxy owns are refused.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SECRET_NOT_FOUND_MEMORY_MS, SecretCache, checkHeader, checkSecretName, normalizeUpstream, readSecrets, secretsPath, writeSecrets } from '../../broker/proxy/secrets';
import { ManualClock } from '../../broker/core/clock';
import { WritError } from '../../broker/errors';

describe('proxy secrets config', () => {
  it('normalises the upstream to its audience form', () => {
    expect(normalizeUpstream('https://api.github.com/')).toBe('https://api.github.com');
    expect(normalizeUpstream('https://API.github.com:443/v3//')).toBe('https://api.github.com/v3');
    expect(normalizeUpstream('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080');
    expect(normalizeUpstream('http://localhost:9/x')).toBe('http://localhost:9/x');
    expect(normalizeUpstream('http://[::1]:9')).toBe('http://[::1]:9');
  });

  it('refuses plain http to a remote host, credentials, queries, fragments and other schemes', () => {
    for (const bad of ['http://api.example.com', 'http://10.0.0.1', 'https://u:p@api.example', 'https://api.example?x=1', 'https://api.example#f', 'ftp://x', 'not a url', 'http://127.0.0.1.evil.example']) {
      expect(() => normalizeUpstream(bad), bad).toThrow(expect.objectContaining({ code: 'WRIT_USAGE' }));
    }
  });

  it('checks names and headers', () => {
    expect(() => checkSecretName('gh')).not.toThrow();
    for (const bad of ['', '-x', 'a/b', 'a b', 'x'.repeat(65)]) expect(() => checkSecretName(bad), bad).toThrow();
    expect(() => checkHeader('X-Api-Key', undefined)).not.toThrow();
    expect(() => checkHeader('Authorization', 'token')).not.toThrow();
    for (const h of ['Host', 'content-length', 'Transfer-Encoding', 'Cookie', 'Bad Header']) expect(() => checkHeader(h, undefined), h).toThrow();
    expect(() => checkHeader('Authorization', 'two words')).toThrow();
  });

  it('reads nothing as empty and writes 0600', () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-secrets-'));
    expect(readSecrets(dir)).toEqual({ v: 1, secrets: {} });
    writeSecrets(dir, { v: 1, secrets: { gh: { upstream: 'https://api.github.com', header: 'Authorization', scheme: 'Bearer', rev: 'r1', updatedAt: '2026-01-01T00:00:00Z' } } });
    expect(statSync(secretsPath(dir)).mode & 0o777).toBe(0o600);
    expect(readSecrets(dir).secrets.gh?.upstream).toBe('https://api.github.com');
  });

  it('refuses a hand-edited file that injects the secret as a header the proxy owns (Host, Cookie, …)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-secrets-'));
    for (const header of ['Host', 'cookie', 'Content-Length', 'Proxy-Authorization']) {
      writeFileSync(secretsPath(dir), JSON.stringify({ v: 1, secrets: { gh: { upstream: 'https://api.github.com', header, rev: 'r1', updatedAt: '2026-01-01T00:00:00Z' } } }));
      const thrown = (() => {
        try {
          readSecrets(dir);
        } catch (e) {
          return e as { code?: string; message?: string };
        }
        return undefined;
      })();
      expect({ header, code: thrown?.code, message: thrown?.message }).toEqual({ header, code: 'WRIT_SECRETS_CORRUPT', message: `${secretsPath(dir)} does not match its schema: fix or remove it` });
    }
  });
});

describe('SecretCache: keychain lookups for the proxy', () => {
  /** A keychain stand-in that answers when told, counting reads and how many run at once. */
  function keychain(values: Record<string, string | null | Error>) {
    const k = { reads: 0, running: 0, maxRunning: 0, waiting: [] as (() => void)[] };
    const read = async (name: string): Promise<string | null> => {
      k.reads++;
      k.running++;
      k.maxRunning = Math.max(k.maxRunning, k.running);
      await new Promise<void>((r) => k.waiting.push(r));
      k.running--;
      const v = values[name];
      if (v instanceof Error) throw v;
      return v ?? null;
    };
    const answer = async () => {
      while (k.waiting.length > 0) k.waiting.shift()!();
      await new Promise((r) => setImmediate(r));
    };
    return { k, read, answer };
  }
  const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: WritError) => e.code);

  it('40 concurrent asks for one secret make one lookup, and all get its value', async () => {
    const { k, read, answer } = keychain({ gh: 'value' });
    const cache = new SecretCache(read, new ManualClock());
    const asks = Array.from({ length: 40 }, () => cache.get('gh', 'r1'));
    await answer();
    expect(await Promise.all(asks)).toEqual(Array(40).fill('value'));
    expect(await cache.get('gh', 'r1')).toBe('value');
    expect([k.reads, k.maxRunning]).toEqual([1, 1]);
  });

  it('a missing secret is one lookup for concurrent asks, remembered for 5 s, then looked up again', async () => {
    const clock = new ManualClock();
    const { k, read, answer } = keychain({});
    const cache = new SecretCache(read, clock);
    const asks = Array.from({ length: 40 }, () => code(cache.get('gone', 'r1')));
    await answer();
    expect(new Set(await Promise.all(asks))).toEqual(new Set(['WRIT_SECRET_NOT_FOUND']));
    expect(k.reads).toBe(1);
    clock.advance(SECRET_NOT_FOUND_MEMORY_MS - 1);
    expect(await code(cache.get('gone', 'r1'))).toBe('WRIT_SECRET_NOT_FOUND');
    expect(k.reads).toBe(1);
    clock.advance(1);
    const again = code(cache.get('gone', 'r1'));
    await answer();
    expect([await again, k.reads]).toEqual(['WRIT_SECRET_NOT_FOUND', 2]);
  });

  it('a new rev (writ secret set) is looked up at once; a keychain error is not remembered', async () => {
    const values: Record<string, string | null | Error> = {};
    const { k, read, answer } = keychain(values);
    const cache = new SecretCache(read, new ManualClock());
    const first = code(cache.get('gh', 'r1'));
    await answer();
    expect(await first).toBe('WRIT_SECRET_NOT_FOUND');
    values.gh = 'stored';
    const second = cache.get('gh', 'r2');
    await answer();
    expect([await second, k.reads]).toEqual(['stored', 2]);
    values.api = new WritError('WRIT_KEYCHAIN_LOCKED', 'locked');
    const locked = code(cache.get('api', 'r1'));
    await answer();
    expect(await locked).toBe('WRIT_KEYCHAIN_LOCKED');
    values.api = 'unlocked';
    const after = cache.get('api', 'r1');
    await answer();
    expect([await after, k.reads]).toEqual(['unlocked', 4]);
  });
});
