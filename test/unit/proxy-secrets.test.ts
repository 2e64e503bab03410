// The proxy's secret config: one canonical upstream (the token audience), https only except to loopback, and
// header names the proxy owns are refused.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkHeader, checkSecretName, normalizeUpstream, readSecrets, secretsPath, writeSecrets } from '../../broker/proxy/secrets';

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
});
