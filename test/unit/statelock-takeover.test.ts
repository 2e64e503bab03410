// Taking over a stale state-folder lock while other writers race for it. node:fs is wrapped (real calls by default)
// so a test can make another writer act at an exact point between this writer's system calls.
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as realFs from 'node:fs';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return { ...fs, readFileSync: vi.fn(fs.readFileSync), renameSync: vi.fn(fs.renameSync) };
});

const { acquireStateLock } = await import('../../broker/statelock');
const { thrown } = await import('../helpers/codes');
const { startOf } = await import('../../broker/procfs');
const fs = await import('node:fs');
const actual = await vi.importActual<typeof import('node:fs')>('node:fs');

const folder = () => mkdtempSync(join(tmpdir(), 'writ-takeover-'));
const boot = () => actual.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
/** A lock record of a process that does not exist. */
const dead = (nonce: string) => JSON.stringify({ pid: 2 ** 22 + 1, start: '1', boot: null, holder: 'broker', nonce }) + '\n';
/** A lock record of a live process (this one), as another writer in it would have written. */
const live = (nonce: string, holder = 'broker') => JSON.stringify({ pid: process.pid, start: String(startOf(process.pid)), boot: boot(), holder, nonce }) + '\n';


afterEach(() => {
  vi.mocked(fs.readFileSync).mockImplementation(actual.readFileSync as never);
  vi.mocked(fs.renameSync).mockImplementation(actual.renameSync);
});

describe('taking over a stale lock', () => {
  it('never moves a live lock: a writer that judged an older lock stale leaves the new holder in place, with three writers at once', () => {
    const dir = folder();
    const lock = join(dir, 'lock');
    writeFileSync(lock, dead('stale'));
    const holderC = live('c', 'key rotate');
    const writerA = live('a', 'agents unblock');
    let first = true;
    // Writer C takes the stale lock over right after this writer (B) read it and judged it stale.
    vi.mocked(fs.readFileSync).mockImplementation(((path: string, enc: never) => {
      const text = actual.readFileSync(path, enc);
      if (first && path === lock) {
        first = false;
        actual.unlinkSync(lock);
        actual.writeFileSync(lock, holderC);
      }
      return text;
    }) as never);
    // Writer A links its own lock the instant the lock file is renamed away (the old takeover moved it aside).
    vi.mocked(fs.renameSync).mockImplementation((from, to) => {
      actual.renameSync(from, to);
      if (from === lock) actual.writeFileSync(lock, writerA);
    });
    const e = thrown(() => acquireStateLock(dir, 'broker'));
    expect(e).toMatchObject({ code: 'WRIT_STATE_LOCKED', data: { pid: process.pid, stateDir: dir, holder: 'key rotate' } });
    // C still holds the folder, alone: nothing moved its lock and nobody else got one.
    expect(actual.readFileSync(lock, 'utf8')).toBe(holderC);
    expect(readdirSync(dir).sort()).toEqual(['lock']);
  });

  it('clears a takeover file left by a writer that died in the middle of a takeover, then takes the lock', () => {
    const dir = folder();
    writeFileSync(join(dir, 'lock'), dead('stale'));
    writeFileSync(join(dir, 'lock.takeover'), dead('died-taking-over'));
    const l = acquireStateLock(dir, 'broker');
    expect(JSON.parse(readFileSync(join(dir, 'lock'), 'utf8'))).toMatchObject({ pid: process.pid, holder: 'broker' });
    expect(readdirSync(dir)).toEqual(['lock']);
    l.release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('leaves a stale lock to the writer holding the takeover file: it retries, then asks to run again', () => {
    const dir = folder();
    const stale = dead('stale');
    writeFileSync(join(dir, 'lock'), stale);
    // Another live writer is in the middle of taking the stale lock over (and never finishes, here).
    writeFileSync(join(dir, 'lock.takeover'), live('other'));
    const e = thrown(() => acquireStateLock(dir, 'broker'));
    expect(e).toMatchObject({ code: 'WRIT_STATE_LOCKED', data: { stateDir: dir } });
    expect((e as Error).message).toBe(`the state folder ${dir} is being locked and unlocked by other Writ processes: run this again`);
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe(stale);
    expect(readdirSync(dir).sort()).toEqual(['lock', 'lock.takeover']);
  });
});
