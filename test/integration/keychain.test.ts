// The keychain against a real gnome-keyring Secret Service (scripts/with-keyring.sh), including every failure
// mode of the recipe's table, each produced for real: no bus, a dead bus address, a bus without a Secret
// Service, a locked collection, and a keychain that never answers.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WritError, isWritError } from '../../broker/errors';
import type { WritErrorCode } from '../../broker/errors';
import { ManualClock } from '../../broker/core/clock';
import { keychainDelete, keychainGet, keychainSet } from '../../broker/core/keychain';
import type { KeychainRef } from '../../broker/core/keychain';
import { KeySet, loadKeySet, newSigningKey, rotateKeySet, serializeKeySet } from '../../broker/core/keys';
import { codeOf } from '../helpers/codes';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WITH_KEYRING = join(ROOT, 'scripts', 'with-keyring.sh');
const KEYS_URL = pathToFileURL(join(ROOT, 'broker', 'core', 'keys.ts')).href;
const KEYCHAIN_URL = pathToFileURL(join(ROOT, 'broker', 'core', 'keychain.ts')).href;
const CLOCK_URL = pathToFileURL(join(ROOT, 'broker', 'core', 'clock.ts')).href;

let counter = 0;
const uniqueService = (): string => `writ-it-keychain-${process.pid}-${Date.now()}-${counter++}`;
const ref = (extra: Partial<KeychainRef> = {}): KeychainRef => ({ service: uniqueService(), account: 'signing-keys', ...extra });

/** The environment minus some variables (a fresh object: never process.env itself). */
function envWithout(...names: string[]): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const n of names) delete env[n];
  return env;
}


function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: ROOT, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 20_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** `node --import tsx` running an ESM snippet (the project's TS sources, as a separate process). */
function nodeTs(code: string, env: NodeJS.ProcessEnv = process.env): [string, string[], NodeJS.ProcessEnv] {
  return [process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], env];
}

/** The bus's own view of who owns a name (the pid of that connection). */
async function ownerPid(env: NodeJS.ProcessEnv, name: string): Promise<number> {
  const r = await run(
    'dbus-send',
    ['--session', '--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetConnectionUnixProcessID', `string:${name}`],
    { env },
  );
  const m = /uint32 (\d+)/.exec(r.stdout);
  if (!m) throw new Error(`no owner for ${name}: ${r.stderr}`);
  return Number(m[1]);
}

/**
 * A second, private D-Bus session that stays up until close(): `argv` must print `ADDR=<bus address>` and
 * then wait for its stdin to close. Tests then call the keychain in-process with `env` pointing at it.
 */
interface Session {
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}
function startSession(argv: string[]): Promise<Session> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: envWithout('DISPLAY'), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`nested session did not start: ${err}`));
    }, 15_000);
    child.stderr?.on('data', (d) => (err += d));
    child.stdout?.on('data', (d) => {
      out += d;
      const m = /^ADDR=(.+)$/m.exec(out);
      if (!m) return;
      clearTimeout(timer);
      const env = envWithout('DISPLAY');
      env.DBUS_SESSION_BUS_ADDRESS = m[1]!;
      resolve({
        env,
        close: async () => {
          child.stdin?.end();
          const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(t);
        },
      });
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nested session exited (${code}) before it was ready: ${err}`));
    });
  });
}
const PRINT_ADDR_AND_WAIT = 'echo "ADDR=$DBUS_SESSION_BUS_ADDRESS"; read -r _ || true';
/** Another throwaway gnome-keyring (unlocked) on its own bus: for tests that lock or freeze it. */
const nestedKeyring = (): Promise<Session> => startSession(['bash', WITH_KEYRING, 'bash', '-c', PRINT_ADDR_AND_WAIT]);

beforeAll(() => {
  // Loud, never a silent skip: and never against a developer's real keychain (these tests lock and freeze it).
  if (process.env.WRIT_KEYRING !== 'throwaway' || !process.env.DBUS_SESSION_BUS_ADDRESS) {
    throw new Error(
      'keychain integration tests need the throwaway keyring: run `bash scripts/with-keyring.sh npx vitest run` (or `npm test`); install its packages with `bash scripts/deps.sh`',
    );
  }
});

describe('keychain: real Secret Service', () => {
  it('set / get / delete round trip, with null only for a definite "no entry"', async () => {
    const r = ref();
    expect(await keychainGet(r)).toBeNull();
    expect(await keychainDelete(r)).toBe(false);
    const secret = '{"v":1,"line2":"\nünïcødé ✓ \\ \' \u0000 end"}';
    await keychainSet(r, secret);
    expect(await keychainGet(r)).toBe(secret);
    await keychainSet(r, 'overwritten');
    expect(await keychainGet(r)).toBe('overwritten');
    // Same service, other account: a different entry.
    expect(await keychainGet({ ...r, account: 'other' })).toBeNull();
    expect(await keychainDelete(r)).toBe(true);
    expect(await keychainGet(r)).toBeNull();
    expect(await keychainDelete(r)).toBe(false);
  });
});

describe('keys: in the real keychain', () => {
  it('creates the key once, loads the same kid again, and a second node process sees it', async () => {
    const service = uniqueService();
    const clock = new ManualClock();
    // create:false on an empty keychain: a clear error, and nothing created.
    const e = await loadKeySet({ ref: { service }, clock, create: false }).catch((x: unknown) => x);
    expect(isWritError(e, 'WRIT_KEYCHAIN_ERROR')).toBe(true);
    expect((e as WritError).message).toMatch(/writ serve/);
    expect(await keychainGet({ service, account: 'signing-keys' })).toBeNull();

    const first = await loadKeySet({ ref: { service }, clock, create: true });
    expect(first.created).toBe(true);
    expect(first.keys.active.createdAt).toBe(clock.now());
    const again = await loadKeySet({ ref: { service }, clock, create: true });
    expect(again.created).toBe(false);
    expect(again.keys.active.kid).toBe(first.keys.active.kid);

    // A separate process, finding the entry through WRIT_KEYCHAIN_SERVICE (the default account).
    const [cmd, args, env] = nodeTs(
      `import { loadKeySet } from ${JSON.stringify(KEYS_URL)};
       import { systemClock } from ${JSON.stringify(CLOCK_URL)};
       const r = await loadKeySet({ clock: systemClock, create: false });
       console.log(JSON.stringify({ kid: r.keys.active.kid, created: r.created }));`,
      { ...process.env, WRIT_KEYCHAIN_SERVICE: service },
    );
    const r = await run(cmd, args, { env });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ kid: first.keys.active.kid, created: false });
    await keychainDelete({ service, account: 'signing-keys' });
  });

  it('rotation keeps the old kid in the JWKS within the max-TTL window and drops it after', async () => {
    const service = uniqueService();
    const clock = new ManualClock();
    const maxTtl = 900;
    const { keys: original } = await loadKeySet({ ref: { service }, clock, create: true });
    clock.advance(60_000);
    const rotatedAt = clock.now();
    const { keys, previousKid } = await rotateKeySet({ ref: { service }, clock });
    expect(previousKid).toBe(original.active.kid);
    expect(keys.active.kid).not.toBe(previousKid);

    // What is in the keychain now is what rotate returned.
    const { keys: loaded, created } = await loadKeySet({ ref: { service }, clock, create: false });
    expect(created).toBe(false);
    expect(loaded.active.kid).toBe(keys.active.kid);
    expect(loaded.retired.map((r) => [r.kid, r.retiredAt])).toEqual([[previousKid, rotatedAt]]);

    // Published for an hour, the ceiling of a token's lifetime, not this run's maximum (tokens of earlier runs).
    const kids = (now: number): string[] => loaded.jwks(now).keys.map((k) => k.kid!);
    expect(kids(rotatedAt)).toEqual([keys.active.kid, previousKid]);
    expect(kids(rotatedAt + maxTtl * 1000)).toEqual([keys.active.kid, previousKid]);
    expect(kids(rotatedAt + 3600 * 1000 - 1)).toEqual([keys.active.kid, previousKid]);
    expect(kids(rotatedAt + 3600 * 1000)).toEqual([keys.active.kid]);
    // Audit checkpoints signed by the old key stay verifiable.
    expect([...loaded.publicKeys().keys()].sort()).toEqual([keys.active.kid, previousKid].sort());
    await keychainDelete({ service, account: 'signing-keys' });
  });

  /** Waits (4 s at most) for a creating broker's first write to show in the keychain; its text, or null. */
  async function firstKeyWritten(r: KeychainRef): Promise<string | null> {
    let first: string | null = null;
    for (let i = 0; i < 200 && first === null; i++) {
      first = await keychainGet(r);
      if (first === null) await new Promise((res) => setTimeout(res, 20));
    }
    return first;
  }

  it('two processes creating the first key at once both end on the key the keychain holds, before signing', async () => {
    const r = ref();
    const clock = new ManualClock();
    // A finds no key, creates and stores its own, then waits before using it; meanwhile B (which also found none)
    // stores another, as a second broker starting at the same moment would.
    const a = loadKeySet({ ref: { service: r.service }, clock, create: true, settleMs: 3000 });
    expect(await firstKeyWritten(r)).not.toBeNull();
    const b = new KeySet(await newSigningKey(clock.now()), []);
    await keychainSet(r, serializeKeySet(b));
    const { keys, created } = await a;
    expect([keys.active.kid, created]).toEqual([b.active.kid, false]);
    // Nobody changes it: the creator keeps its own key, and says it created it.
    const r2 = ref();
    const alone = await loadKeySet({ ref: { service: r2.service }, clock, create: true, settleMs: 200 });
    expect(alone.created).toBe(true);
    expect((await loadKeySet({ ref: { service: r2.service }, clock, create: false })).keys.active.kid).toBe(alone.keys.active.kid);
    await keychainDelete({ service: r.service, account: 'signing-keys' });
    await keychainDelete({ service: r2.service, account: 'signing-keys' });
  });

  it('five brokers starting at once on a fresh keychain all start, on one key, and only its writer says it created it', async () => {
    const r = ref();
    const clock = new ManualClock();
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => loadKeySet({ ref: { service: r.service }, clock, create: true, settleMs: 1500 })));
    // None fails for another's write overtaking its own (a broker that did would not start: "start Writ again").
    expect(results.map((x) => x.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    const loaded = results.map((x) => (x as PromiseFulfilledResult<Awaited<ReturnType<typeof loadKeySet>>>).value);
    const held = (await loadKeySet({ ref: { service: r.service }, clock, create: false })).keys.active.kid;
    expect(loaded.map((x) => x.keys.active.kid)).toEqual([held, held, held, held, held]);
    expect(loaded.filter((x) => x.created).length).toBe(1);
    await keychainDelete({ service: r.service, account: 'signing-keys' });
  });

  it('a broker that finds a first key made moments ago reads again before signing, and ends on the key a late creator wrote', async () => {
    const r = ref();
    const clock = new ManualClock();
    // A creates the first key; B starts once it is there and finds it; then C, which (started with A) had found
    // none, writes its own, as the third of several brokers restored at once would.
    const a = loadKeySet({ ref: { service: r.service }, clock, create: true, settleMs: 1500 });
    expect(await firstKeyWritten(r)).not.toBeNull();
    const b = loadKeySet({ ref: { service: r.service }, clock, create: true, settleMs: 1500 });
    await new Promise((res) => setTimeout(res, 300));
    const c = new KeySet(await newSigningKey(clock.now()), []);
    await keychainSet(r, serializeKeySet(c));
    const [ra, rb] = await Promise.all([a, b]);
    expect([ra.keys.active.kid, ra.created, rb.keys.active.kid, rb.created]).toEqual([c.active.kid, false, c.active.kid, false]);
    await keychainDelete({ service: r.service, account: 'signing-keys' });
  });

  it('a corrupt entry is WRIT_KEYCHAIN_CORRUPT and is left exactly as it was', async () => {
    for (const junk of ['not json at all', '{"v":1,"active":{"kid":"x"},"retired":[]}', '']) {
      const r = ref();
      await keychainSet(r, junk);
      expect(await keychainGet(r)).toBe(junk);
      expect(await codeOf(loadKeySet({ ref: { service: r.service }, clock: new ManualClock(), create: true }))).toBe('WRIT_KEYCHAIN_CORRUPT');
      expect(await codeOf(rotateKeySet({ ref: { service: r.service }, clock: new ManualClock() }))).toBe('WRIT_KEYCHAIN_CORRUPT');
      expect(await keychainGet(r)).toBe(junk);
      await keychainDelete(r);
    }
  });
});

describe('keychain: failure modes, each with its own code', () => {
  it('no DBUS_SESSION_BUS_ADDRESS (and no display): UNAVAILABLE, and loadKeySet creates nothing', async () => {
    const service = uniqueService();
    const env = envWithout('DBUS_SESSION_BUS_ADDRESS', 'DISPLAY', 'WAYLAND_DISPLAY');
    const e = await keychainGet({ service, account: 'signing-keys', env }).catch((x: unknown) => x);
    expect(isWritError(e, 'WRIT_KEYCHAIN_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toMatch(/start a Secret Service .* or run under scripts\/with-keyring\.sh/);
    // The library's own words are kept, in `cause` only.
    expect(String((e as Error).cause)).toMatch(/DBUS_SESSION_BUS_ADDRESS|autolaunch/);
    expect(await codeOf(loadKeySet({ ref: { service, env }, clock: new ManualClock(), create: true }))).toBe('WRIT_KEYCHAIN_UNAVAILABLE');
    // The pinned store did not fall back to the kernel keyring: nothing landed anywhere we can read.
    expect(await codeOf(keychainSet({ service, account: 'signing-keys', env }, 'x'))).toBe('WRIT_KEYCHAIN_UNAVAILABLE');
    expect(await keychainGet({ service, account: 'signing-keys' })).toBeNull();
  });

  it('a bus address that points nowhere: UNAVAILABLE', async () => {
    const env = { ...envWithout('DISPLAY'), DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent' };
    const e = await keychainGet(ref({ env })).catch((x: unknown) => x);
    expect(isWritError(e, 'WRIT_KEYCHAIN_UNAVAILABLE')).toBe(true);
    expect(String((e as Error).cause)).toMatch(/Failed to connect to socket/);
  });

  it('a D-Bus session with no Secret Service: UNAVAILABLE (a separate node under dbus-run-session)', async () => {
    // The stock session config would auto-start gnome-keyring (D-Bus activation, with the real HOME), so the
    // bus gets the stock session policy without its service directories: nothing can provide
    // org.freedesktop.secrets.
    const dir = mkdtempSync(join(tmpdir(), 'writ-it-bus-'));
    try {
      const config = join(dir, 'session.conf');
      writeFileSync(
        config,
        `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=${dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
`,
      );
      const [cmd, args, env] = nodeTs(
        `import { keychainGet } from ${JSON.stringify(KEYCHAIN_URL)};
         try { await keychainGet({ service: 'writ-it-nobody', account: 'signing-keys' }); console.log('RESOLVED'); }
         catch (e) { console.log('CODE=' + e.code); console.log('CAUSE=' + String(e.cause)); }`,
        envWithout('DISPLAY'),
      );
      const r = await run('dbus-run-session', [`--config-file=${config}`, '--', cmd, ...args], { env });
      expect(r.stdout).toMatch(/^CODE=WRIT_KEYCHAIN_UNAVAILABLE$/m);
      expect(r.stdout).toMatch(/not provided by any \.service files/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('a locked keyring', () => {
    let s: Session;
    beforeAll(async () => {
      s = await nestedKeyring();
    });
    afterAll(async () => {
      await s?.close();
    });

    it('LOCKED (the unlock prompt is dismissed: no display), and no key is created over it', async () => {
      const r = ref({ env: s.env });
      await keychainSet(r, 'a stored secret');
      expect(await keychainGet(r)).toBe('a stored secret');
      // Lock every collection, as the screen locker or `secret-tool lock` would.
      const lock = await run(
        'dbus-send',
        ['--session', '--print-reply', '--dest=org.freedesktop.secrets', '/org/freedesktop/secrets', 'org.freedesktop.Secret.Service.Lock', 'array:objpath:/org/freedesktop/secrets/collection/login'],
        { env: s.env },
      );
      expect(lock.code).toBe(0);

      const e = await keychainGet(r).catch((x: unknown) => x);
      expect(isWritError(e, 'WRIT_KEYCHAIN_LOCKED')).toBe(true);
      expect((e as Error).message).toMatch(/unlock your login keyring, then start Writ again/);
      expect((e as Error).message).not.toContain('a stored secret');
      // Locked is not absent: loadKeySet must fail, not mint a key.
      expect(await codeOf(loadKeySet({ ref: { service: r.service, env: s.env }, clock: new ManualClock(), create: true }))).toBe('WRIT_KEYCHAIN_LOCKED');
      expect(await codeOf(keychainSet(r, 'overwrite attempt'))).toBe('WRIT_KEYCHAIN_LOCKED');
      expect(await codeOf(keychainDelete(r))).toBe('WRIT_KEYCHAIN_LOCKED');
    });
  });

  describe('a keychain that never answers', () => {
    it('a frozen Secret Service (SIGSTOP): TIMEOUT', async () => {
      const s = await nestedKeyring();
      let pid = 0;
      try {
        const r = ref({ env: s.env, timeoutMs: 800 });
        await keychainSet(r, 'x');
        pid = await ownerPid(s.env, 'org.freedesktop.secrets');
        process.kill(pid, 'SIGSTOP');
        const e = await keychainGet(r).catch((x: unknown) => x);
        expect(isWritError(e, 'WRIT_KEYCHAIN_TIMEOUT')).toBe(true);
        expect((e as Error).message).toMatch(/did not answer within 800 ms/);
        expect(await codeOf(loadKeySet({ ref: { service: uniqueService(), env: s.env, timeoutMs: 800 }, clock: new ManualClock(), create: true }))).toBe(
          'WRIT_KEYCHAIN_TIMEOUT',
        );
      } finally {
        if (pid) process.kill(pid, 'SIGCONT');
        await s.close();
      }
    });

    it('a frozen bus (the call would block forever; only killing the child ends it): TIMEOUT', async () => {
      // libdbus gives up on a silent Secret Service by itself after ~2 s; a stopped bus daemon it waits on
      // forever (measured), so this is the hang that only the child process and its kill can bound.
      const s = await startSession([
        'dbus-run-session',
        '--',
        'bash',
        '-c',
        // Should this test die between STOP and CONT, the script still thaws its bus so it can exit.
        'b=$(dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus ' +
          'org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.DBus | awk \'/uint32/{print $2}\'); ' +
          `${PRINT_ADDR_AND_WAIT}; kill -CONT "$b" 2>/dev/null || true`,
      ]);
      const busPid = await ownerPid(s.env, 'org.freedesktop.DBus');
      process.kill(busPid, 'SIGSTOP');
      try {
        const e = await keychainGet(ref({ env: s.env, timeoutMs: 800 })).catch((x: unknown) => x);
        expect(isWritError(e, 'WRIT_KEYCHAIN_TIMEOUT')).toBe(true);
      } finally {
        process.kill(busPid, 'SIGCONT');
        await s.close();
      }
    });
  });
});
