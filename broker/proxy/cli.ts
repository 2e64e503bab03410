// `writ secret set|list|rm`: upstream secrets for the proxy. The value is read from stdin (a prompt without echo
// on a terminal), never from argv or the environment, and goes only to the OS keychain. Works with the broker
// stopped or running: a running broker notices a changed secret by its `rev` on the next proxied call.
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { mkdirSync } from 'node:fs';
import { WritError } from '../errors';
import { resolvePaths } from '../paths';
import { keychainDelete, keychainSet } from '../core/keychain';
import { checkHeader, checkSecretName, keychainRefFor, newRev, normalizeUpstream, readSecrets, sharedUpstream, writeSecrets } from './secrets';

export const SECRET_HELP = `Usage: writ secret set NAME --upstream URL [--header NAME] [--scheme WORD]   (the secret on stdin)
       writ secret list [--json]
       writ secret rm NAME

Stores an upstream credential (a PAT, an API key) in the OS keychain for the broker's proxy. Agents then call
  http://127.0.0.1:PORT/proxy/NAME/<path>     with   Authorization: Bearer <Writ token>
and the proxy forwards to URL/<path> with the real credential (default: Authorization: Bearer <secret>).
The token's audience must be the upstream URL as \`writ secret list\` prints it, and its scopes must cover
http:<METHOD>:<URL>/<path> (e.g. http:GET:https://api.github.com/repos/acme/web/**).
The secret is read from stdin (a terminal prompts without echo) and is never printed.
--upstream is https, or plain http only to a loopback address.`;

const MAX_SECRET_BYTES = 16 * 1024;

async function readSecretFromStdin(): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) {
    process.stderr.write('secret (not echoed): ');
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    try {
      return await new Promise<string>((resolve, reject) => {
        let value = '';
        const onData = (chunk: string) => {
          for (const ch of chunk) {
            if (ch === '\r' || ch === '\n' || ch === '\u0004') {
              stdin.off('data', onData);
              process.stderr.write('\n');
              return resolve(value);
            }
            if (ch === '\u0003') {
              stdin.off('data', onData);
              process.stderr.write('\n');
              return reject(new WritError('WRIT_USAGE', 'cancelled'));
            }
            if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
            else value += ch;
            if (value.length > MAX_SECRET_BYTES) return reject(new WritError('WRIT_USAGE', `the secret is over ${MAX_SECRET_BYTES} bytes`));
          }
        };
        stdin.on('data', onData);
      });
    } finally {
      stdin.setRawMode(false);
      stdin.pause();
    }
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stdin) {
    size += (c as Buffer).length;
    if (size > MAX_SECRET_BYTES) throw new WritError('WRIT_USAGE', `the secret is over ${MAX_SECRET_BYTES} bytes`);
    chunks.push(c as Buffer);
  }
  // One trailing newline is the shell's (echo, a file), not the secret's.
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new WritError('WRIT_USAGE', (e as Error).message);
  }
}

/** Returns the exit code; usage errors are thrown as WRIT_USAGE (exit 2 by the caller). */
export async function cmdSecret(args: string[], io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const sub = args[0];
  const paths = resolvePaths();
  if (sub === 'set') {
    const { values, positionals } = parse(args.slice(1), { upstream: { type: 'string' }, header: { type: 'string' }, scheme: { type: 'string' } });
    if (values.help) return (io.err(SECRET_HELP), 0);
    const name = positionals[0];
    if (name === undefined || positionals.length !== 1) throw new WritError('WRIT_USAGE', 'give exactly one secret NAME (the value comes from stdin)');
    checkSecretName(name);
    if (typeof values.upstream !== 'string') throw new WritError('WRIT_USAGE', '--upstream is required, e.g. https://api.github.com');
    const upstream = normalizeUpstream(values.upstream);
    const header = typeof values.header === 'string' ? values.header : 'Authorization';
    // Authorization defaults to the Bearer scheme; another header defaults to the bare value.
    const scheme = typeof values.scheme === 'string' ? values.scheme : header.toLowerCase() === 'authorization' ? 'Bearer' : undefined;
    checkHeader(header, scheme);
    const secret = await readSecretFromStdin();
    if (secret.length === 0) throw new WritError('WRIT_USAGE', 'the secret is empty: pipe it on stdin, e.g. writ secret set gh --upstream https://api.github.com < token.txt');
    if (/[\r\n\0]/.test(secret)) throw new WritError('WRIT_USAGE', 'the secret must be one line (it is sent as a header value)');
    const existing = readSecrets(paths.stateDir);
    const other = sharedUpstream(existing, name, upstream);
    if (other !== undefined) {
      throw new WritError('WRIT_SECRET_AMBIGUOUS', `secret ${other} already serves ${upstream}: one secret per upstream, since a token names the upstream (its audience), not the secret. Give this one a narrower upstream (e.g. ${upstream}/repos/acme) or remove ${other}`);
    }
    await keychainSet(keychainRefFor(name), secret);
    mkdirSync(paths.stateDir, { recursive: true, mode: 0o700 });
    const file = readSecrets(paths.stateDir);
    file.secrets[name] = { upstream, header, ...(scheme === undefined ? {} : { scheme }), rev: newRev(), updatedAt: new Date().toISOString() };
    writeSecrets(paths.stateDir, file);
    io.err(`stored secret ${name} for ${upstream} in the OS keychain; agents call http://127.0.0.1:<broker port>/proxy/${name}/… with a token for audience ${upstream}`);
    return 0;
  }
  if (sub === 'list') {
    const { values } = parse(args.slice(1), { json: { type: 'boolean' } });
    if (values.help) return (io.err(SECRET_HELP), 0);
    const file = readSecrets(paths.stateDir);
    const rows = Object.entries(file.secrets).map(([name, c]) => ({ name, upstream: c.upstream, header: c.header, ...(c.scheme ? { scheme: c.scheme } : {}), updatedAt: c.updatedAt }));
    if (values.json) return (io.out(JSON.stringify(rows, null, 2)), 0);
    if (rows.length === 0) return (io.out('no secrets'), 0);
    const table = [['NAME', 'UPSTREAM', 'HEADER', 'UPDATED'], ...rows.map((r) => [r.name, r.upstream, r.scheme ? `${r.header}: ${r.scheme} …` : `${r.header}: …`, r.updatedAt])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    for (const r of table) io.out(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
    return 0;
  }
  if (sub === 'rm') {
    const { values, positionals } = parse(args.slice(1), {});
    if (values.help) return (io.err(SECRET_HELP), 0);
    const name = positionals[0];
    if (name === undefined || positionals.length !== 1) throw new WritError('WRIT_USAGE', 'give exactly one secret NAME');
    checkSecretName(name);
    const file = readSecrets(paths.stateDir);
    const known = Object.hasOwn(file.secrets, name);
    const deleted = await keychainDelete(keychainRefFor(name));
    if (known) {
      delete file.secrets[name];
      writeSecrets(paths.stateDir, file);
    }
    if (!known && !deleted) throw new WritError('WRIT_SECRET_NOT_FOUND', `no secret named ${name}`);
    io.err(`removed secret ${name}`);
    return 0;
  }
  if (sub === '--help' || sub === '-h') return (io.err(SECRET_HELP), 0);
  throw new WritError('WRIT_USAGE', 'writ secret set | writ secret list | writ secret rm');
}
