// Bounded access to the OS keychain (shared/recipes/keychain.md).
//
// Why a child process per operation: the native keyring call can block forever (a locked keyring with a
// display waits on an unlock prompt nobody sees; a frozen bus never answers). A Promise.race does not
// help, because the blocked native call keeps this process alive, and even process.exit() then hangs.
// So every operation runs in a short-lived `node -e` child that is SIGKILLed on timeout. The cost is a
// Node start per call (~50 ms); the keychain is touched only at start-up and on rotation.
//
// The secret travels only over the child's stdin (set) or stdout (get): never argv, env or a log line.
//
// Store pinning (Linux): @napi-rs/keyring 2.1.2 takes `new Entry(service, account, { linux: { store:
// 'secret-service' } })` (EntryOptions.linux.store, a 'secret-service' | 'keyutils' enum). Measured here:
// left on its default, with no D-Bus session a get silently answers `null` from the kernel keyring
// (memory-only, lost at reboot) and a set goes there too when the kernel keyring allows it; pinned, the
// same get fails with the D-Bus error instead. A `null` from the default store could therefore make Writ
// mint a fresh key over a real one that is merely unreachable, so the store is always pinned on Linux.
// Other platforms ignore the option and use their native keychain.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { WritError } from '../errors';
import type { WritErrorCode } from '../errors';

export interface KeychainRef {
  service: string;
  account: string;
  /** Kill the keychain call after this long (default 2000 ms). */
  timeoutMs?: number;
  /** Environment for the keychain child (tests point it at another D-Bus session). Default: process.env. */
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_KEYCHAIN_TIMEOUT_MS = 2000;

type Op = 'get' | 'set' | 'delete';

// The child: CommonJS so it runs with `node -e` whatever the parent's module format. It prints exactly one
// JSON object on stdout. argv: [modulePath, op, service, account]; for `set` the secret arrives on stdin.
const CHILD_SCRIPT = `'use strict';
const [modulePath, op, service, account] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o));
const errMessage = (e) => String((e && e.message) || e);
function run(input) {
  let Entry;
  try {
    ({ Entry } = require(modulePath));
  } catch (e) {
    return out({ ok: false, stage: 'load', message: errMessage(e) });
  }
  try {
    const entry = new Entry(service, account, { linux: { store: 'secret-service' } });
    if (op === 'get') {
      const v = entry.getPassword();
      out(typeof v === 'string' ? { ok: true, found: true, value: v } : { ok: true, found: false });
    } else if (op === 'set') {
      entry.setPassword(input);
      out({ ok: true });
    } else if (op === 'delete') {
      out({ ok: true, deleted: entry.deleteCredential() === true });
    } else {
      out({ ok: false, stage: 'usage', message: 'unknown operation' });
    }
  } catch (e) {
    out({ ok: false, stage: 'call', message: errMessage(e) });
  }
}
if (op === 'set') {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => run(Buffer.concat(chunks).toString('utf8')));
} else {
  run('');
}
`;

const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

interface ChildAnswer {
  ok: boolean;
  stage?: string;
  message?: string;
  found?: boolean;
  value?: string;
  deleted?: boolean;
}

const ADVICE: Record<'WRIT_KEYCHAIN_UNAVAILABLE' | 'WRIT_KEYCHAIN_LOCKED' | 'WRIT_KEYCHAIN_ERROR', string> = {
  WRIT_KEYCHAIN_UNAVAILABLE:
    'no OS keychain reachable: start a Secret Service (gnome-keyring, KeePassXC) in your desktop session, or run under scripts/with-keyring.sh for a throwaway one',
  WRIT_KEYCHAIN_LOCKED: 'the OS keychain is locked (the unlock prompt was dismissed): unlock your login keyring, then start Writ again',
  WRIT_KEYCHAIN_ERROR:
    'the OS keychain reported an unexpected error: check that your Secret Service (gnome-keyring, KeePassXC) is working, then try again',
};

/**
 * Which WritError code a keychain library message means. The patterns are the messages measured in the
 * recipe's failure table (and the D-Bus names behind them), so a new wording falls through to ERROR.
 */
export function classifyKeychainMessage(message: string): 'WRIT_KEYCHAIN_UNAVAILABLE' | 'WRIT_KEYCHAIN_LOCKED' | 'WRIT_KEYCHAIN_TIMEOUT' | 'WRIT_KEYCHAIN_ERROR' {
  if (/unlock prompt was dismissed|prompt .*dismissed|is locked/i.test(message)) return 'WRIT_KEYCHAIN_LOCKED';
  if (
    /DBUS_SESSION_BUS_ADDRESS|autolaunch|Failed to connect to socket|Connection refused|not provided by any \.service files|ServiceUnknown|NameHasNoOwner|Could not connect/i.test(
      message,
    )
  ) {
    return 'WRIT_KEYCHAIN_UNAVAILABLE';
  }
  // libdbus's own reply timeout (~2 s, measured with a frozen Secret Service): the same situation as ours.
  if (/Did not receive a reply|NoReply|timed? ?out/i.test(message)) return 'WRIT_KEYCHAIN_TIMEOUT';
  return 'WRIT_KEYCHAIN_ERROR';
}

function timeoutError(ref: KeychainRef, op: Op, timeoutMs: number, cause?: unknown): WritError {
  return new WritError(
    'WRIT_KEYCHAIN_TIMEOUT',
    `the OS keychain did not answer within ${timeoutMs} ms (it may be waiting on an unlock prompt, or the Secret Service is stuck): unlock your login keyring or restart the Secret Service, then try again`,
    { ...(cause === undefined ? {} : { cause }), data: { service: ref.service, account: ref.account, operation: op } },
  );
}

function libraryError(ref: KeychainRef, op: Op, libMessage: string, timeoutMs: number): WritError {
  // The library's words go into `cause` only: they never hold the secret, but they are not advice.
  const cause = new Error(libMessage);
  const code: WritErrorCode = classifyKeychainMessage(libMessage);
  if (code === 'WRIT_KEYCHAIN_TIMEOUT') return timeoutError(ref, op, timeoutMs, cause);
  return new WritError(code, ADVICE[code as keyof typeof ADVICE], {
    cause,
    data: { service: ref.service, account: ref.account, operation: op },
  });
}

let keyringModulePath: string | undefined;

/** Absolute path of @napi-rs/keyring, resolved from this file (TS source under vitest, or the dist/ bundle). */
function resolveKeyringModule(): string {
  keyringModulePath ??= createRequire(import.meta.url).resolve('@napi-rs/keyring');
  return keyringModulePath;
}

function childEnv(ref: KeychainRef): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...(ref.env ?? process.env) };
  // A bare Node for the child: the parent's NODE_OPTIONS (loaders, --inspect) would only slow it or break it.
  delete env.NODE_OPTIONS;
  // Inside Electron (the editor), process.execPath is Electron: make it behave as Node.
  if (process.versions.electron) env.ELECTRON_RUN_AS_NODE = '1';
  return env;
}

function runKeychainChild(op: Op, ref: KeychainRef, secret?: string): Promise<ChildAnswer> {
  // WRIT_KEYCHAIN_TIMEOUT_MS lets a heavily loaded machine (a CI runner) give the child more time to start.
  const fromEnv = Number((ref.env ?? process.env).WRIT_KEYCHAIN_TIMEOUT_MS);
  const timeoutMs = ref.timeoutMs ?? (Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : DEFAULT_KEYCHAIN_TIMEOUT_MS);
  return new Promise<ChildAnswer>((resolve, reject) => {
    let modulePath: string;
    try {
      modulePath = resolveKeyringModule();
    } catch (e) {
      reject(new WritError('WRIT_KEYCHAIN_ERROR', 'the keychain library @napi-rs/keyring is not installed: run npm ci', { cause: e }));
      return;
    }

    const child = spawn(process.execPath, ['-e', CHILD_SCRIPT, modulePath, op, ref.service, ref.account], {
      env: childEnv(ref),
      stdio: [op === 'set' ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });

    let timedOut = false;
    let settled = false;
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stderr = '';
    const timer = setTimeout(() => {
      timedOut = true;
      // SIGKILL: a child stuck in a native call may never run a SIGTERM handler, and none is needed.
      child.kill('SIGKILL');
    }, timeoutMs);

    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };

    child.stdout?.on('data', (c: Buffer) => {
      stdoutBytes += c.length;
      if (stdoutBytes <= MAX_OUTPUT_BYTES) stdout.push(c);
    });
    // Kept for `cause` only (a crash of the child); bounded, and the child never prints the secret.
    child.stderr?.on('data', (c: Buffer) => {
      if (stderr.length < 4096) stderr += c.toString('utf8');
    });
    child.on('error', (e) =>
      finish(() => reject(new WritError('WRIT_KEYCHAIN_ERROR', 'could not start the keychain helper process', { cause: e }))),
    );
    child.on('close', (code, signal) =>
      finish(() => {
        if (timedOut) return reject(timeoutError(ref, op, timeoutMs));
        let answer: ChildAnswer | undefined;
        try {
          answer = JSON.parse(Buffer.concat(stdout).toString('utf8')) as ChildAnswer;
        } catch {
          answer = undefined;
        }
        if (answer === undefined || typeof answer !== 'object' || answer === null) {
          const detail = `keychain helper exited with ${signal ?? `code ${code}`}${stderr ? `: ${stderr.slice(0, 2000)}` : ''}`;
          return reject(new WritError('WRIT_KEYCHAIN_ERROR', ADVICE.WRIT_KEYCHAIN_ERROR, { cause: new Error(detail) }));
        }
        if (!answer.ok) {
          if (answer.stage === 'load') {
            return reject(
              new WritError('WRIT_KEYCHAIN_ERROR', 'the keychain library @napi-rs/keyring could not be loaded: run npm ci', {
                cause: new Error(answer.message ?? 'load failed'),
              }),
            );
          }
          return reject(libraryError(ref, op, answer.message ?? 'unknown keychain failure', timeoutMs));
        }
        resolve(answer);
      }),
    );

    if (op === 'set' && child.stdin) {
      // EPIPE if the child dies first: the 'close' handler reports what happened.
      child.stdin.on('error', () => undefined);
      child.stdin.end(secret ?? '', 'utf8');
    }
  });
}

/** The stored secret, or null ONLY when the keychain answered definitely that there is no such entry. */
export async function keychainGet(ref: KeychainRef): Promise<string | null> {
  const a = await runKeychainChild('get', ref);
  if (a.found === true && typeof a.value === 'string') return a.value;
  if (a.found === false) return null;
  throw new WritError('WRIT_KEYCHAIN_ERROR', ADVICE.WRIT_KEYCHAIN_ERROR, { cause: new Error('malformed answer from the keychain helper') });
}

export async function keychainSet(ref: KeychainRef, secret: string): Promise<void> {
  await runKeychainChild('set', ref, secret);
}

/** true if an entry was deleted, false if there was none (a failed delete throws, never returns false). */
export async function keychainDelete(ref: KeychainRef): Promise<boolean> {
  const a = await runKeychainChild('delete', ref);
  return a.deleted === true;
}
