// Upstream secrets for the credential-injecting proxy. The secret VALUE lives only in the OS keychain (service
// `writ` or WRIT_KEYCHAIN_SERVICE, account `secret:NAME`); what is not secret (the upstream base URL and how the
// credential is sent) lives in the state folder as secrets.json (0600). Nothing here logs or returns a value.
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { WritError } from '../errors';
import { DEFAULT_KEYCHAIN_SERVICE } from '../core/keys';
import type { KeychainRef } from '../core/keychain';
import type { Clock } from '../core/clock';

export const SECRET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const HEADER_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
const SCHEME_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}$/;
/**
 * Headers the proxy owns: a secret may not be injected as one of them. Cookie among them: the proxy drops the
 * agent's and keeps the upstream's Set-Cookie from it, and a secret is a whole header value, not one cookie of many.
 */
const RESERVED_HEADERS = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'cookie']);

export const SecretConfig = z.strictObject({
  /** The upstream base URL, normalised (no trailing slash): tokens for this proxy must have it as `aud`. */
  upstream: z.string().min(1).max(400),
  /** Header that carries the credential (default Authorization); never one the proxy owns, even in a hand-edited file. */
  header: z
    .string()
    .regex(HEADER_RE)
    .refine((h) => !RESERVED_HEADERS.has(h.toLowerCase())),
  /** Prefix before the secret, e.g. `Bearer`; absent means the header holds the secret alone. */
  scheme: z.string().regex(SCHEME_RE).optional(),
  /** Changes on every `writ secret set`: a running broker then reads the keychain again instead of its cached value. */
  rev: z.string().max(64),
  updatedAt: z.string().max(40),
});
export type SecretConfig = z.infer<typeof SecretConfig>;

const SecretsFile = z.strictObject({
  v: z.literal(1),
  secrets: z.record(z.string().regex(SECRET_NAME_RE), SecretConfig),
});
type SecretsFile = z.infer<typeof SecretsFile>;

export function secretsPath(stateDir: string): string {
  return join(stateDir, 'secrets.json');
}

export function keychainRefFor(name: string, env: NodeJS.ProcessEnv = process.env): KeychainRef {
  return { service: env.WRIT_KEYCHAIN_SERVICE || DEFAULT_KEYCHAIN_SERVICE, account: `secret:${name}`, env };
}

export function checkSecretName(name: string): void {
  if (!SECRET_NAME_RE.test(name)) throw new WritError('WRIT_USAGE', 'a secret name is 1 to 64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)');
}

export function checkHeader(header: string, scheme: string | undefined): void {
  if (!HEADER_RE.test(header) || RESERVED_HEADERS.has(header.toLowerCase())) throw new WritError('WRIT_USAGE', `--header must be an HTTP header name other than ${[...RESERVED_HEADERS].join(', ')}`);
  if (scheme !== undefined && !SCHEME_RE.test(scheme)) throw new WritError('WRIT_USAGE', '--scheme must be a single word, e.g. Bearer or token');
}

function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * The upstream base URL in its one canonical form (the token audience): https, or http only to a loopback host;
 * no credentials, query or fragment; no trailing slash. Throws WRIT_USAGE otherwise.
 */
export function normalizeUpstream(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new WritError('WRIT_USAGE', '--upstream must be an absolute URL, e.g. https://api.github.com');
  }
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopbackHost(u.hostname))) {
    throw new WritError('WRIT_USAGE', '--upstream must be https (plain http is allowed only to a loopback address)');
  }
  if (u.username || u.password) throw new WritError('WRIT_USAGE', '--upstream must not hold credentials');
  if (u.search || u.hash) throw new WritError('WRIT_USAGE', '--upstream must not have a query or fragment');
  const path = u.pathname.replace(/\/+$/, '');
  return `${u.origin}${path}`;
}

export function readSecrets(stateDir: string): SecretsFile {
  let text: string;
  try {
    text = readFileSync(secretsPath(stateDir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { v: 1, secrets: {} };
    throw new WritError('WRIT_INTERNAL', 'cannot read secrets.json', { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new WritError('WRIT_SECRETS_CORRUPT', `${secretsPath(stateDir)} is not valid JSON: fix or remove it`);
  }
  const parsed = SecretsFile.safeParse(json);
  if (!parsed.success) throw new WritError('WRIT_SECRETS_CORRUPT', `${secretsPath(stateDir)} does not match its schema: fix or remove it`);
  return parsed.data;
}

export function writeSecrets(stateDir: string, file: SecretsFile): void {
  const path = secretsPath(stateDir);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function newRev(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Another secret configured for the same upstream, if any. A token's audience is the upstream, so with two
 * secrets for it a token approved for one could be sent through the other (a read-only and an admin credential
 * for one API): refused when set, and at the proxy for a hand-edited file.
 */
export function sharedUpstream(file: SecretsFile, name: string, upstream: string): string | undefined {
  for (const [other, c] of Object.entries(file.secrets)) {
    if (other === name) continue;
    let theirs: string;
    try {
      theirs = normalizeUpstream(c.upstream);
    } catch {
      continue;
    }
    if (theirs === upstream) return other;
  }
  return undefined;
}

/** How long a secret missing from the keychain is remembered as missing (per name and rev). */
export const SECRET_NOT_FOUND_MEMORY_MS = 5_000;

/**
 * Secret values for the proxy, read from the keychain (`read`, a child process each time) at most once at a time
 * per name and rev however many calls ask at once; a value is kept for the broker's life, a not-found for
 * SECRET_NOT_FOUND_MEMORY_MS, so a flood of calls for a missing secret costs one lookup each few seconds. A
 * keychain error (locked, timeout) is not remembered. `writ secret set` changes the rev: the next call reads again.
 */
export class SecretCache {
  private readonly entries = new Map<string, { rev: string; value?: string; lookup?: Promise<string | null>; missingUntil?: number }>();

  constructor(
    private readonly read: (name: string) => Promise<string | null>,
    private readonly clock: Clock,
  ) {}

  async get(name: string, rev: string): Promise<string> {
    let entry = this.entries.get(name);
    if (entry === undefined || entry.rev !== rev) {
      entry = { rev };
      this.entries.set(name, entry);
    }
    if (entry.value !== undefined) return entry.value;
    if (entry.missingUntil === undefined || this.clock.now() >= entry.missingUntil) {
      const e = entry;
      e.lookup ??= this.read(name)
        .then((value) => {
          if (value === null) e.missingUntil = this.clock.now() + SECRET_NOT_FOUND_MEMORY_MS;
          else e.value = value;
          return value;
        })
        .finally(() => {
          e.lookup = undefined;
        });
      const value = await e.lookup;
      if (value !== null) return value;
    }
    throw new WritError('WRIT_SECRET_NOT_FOUND', `the keychain holds no secret ${name}: store it with writ secret set`);
  }
}
