import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireStateLock, withStateLock } from '../../broker/statelock';
import { WritError } from '../../broker/errors';
import { thrown } from '../helpers/codes';

const folder = () => mkdtempSync(join(tmpdir(), 'writ-lock-'));


describe('acquireStateLock', () => {
  it('refuses a second taking, even by the same process, naming the holder; release lets the next one in', () => {
    const dir = folder();
    const first = acquireStateLock(dir, 'broker');
    const e = thrown(() => acquireStateLock(dir, 'key rotate'));
    expect(e).toBeInstanceOf(WritError);
    expect(e).toMatchObject({ code: 'WRIT_STATE_LOCKED', data: { pid: process.pid, stateDir: dir, holder: 'broker' } });
    expect((e as Error).message).toContain(`pid ${process.pid}`);
    first.release();
    expect(existsSync(join(dir, 'lock'))).toBe(false);
    acquireStateLock(dir, 'broker').release();
    // Nothing but the lock's own files were ever made, and none is left.
    expect(readdirSync(dir)).toEqual([]);
  });

  it('takes over a lock that does not parse, and one whose pid does not exist', () => {
    const dir = folder();
    writeFileSync(join(dir, 'lock'), 'garbage');
    acquireStateLock(dir, 'broker').release();
    writeFileSync(join(dir, 'lock'), JSON.stringify({ pid: 2 ** 22 + 1, start: '1', boot: null, holder: 'broker', nonce: 'x' }));
    const l = acquireStateLock(dir, 'broker');
    expect(JSON.parse(readFileSync(join(dir, 'lock'), 'utf8')).pid).toBe(process.pid);
    l.release();
  });

  it('release leaves a lock that is no longer its own (taken over meanwhile) in place', () => {
    const dir = folder();
    const l = acquireStateLock(dir, 'broker');
    writeFileSync(join(dir, 'lock'), 'someone else');
    l.release();
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe('someone else');
  });

  it('withStateLock releases when the operation fails', async () => {
    const dir = join(folder(), 'state');
    await expect(withStateLock(dir, 'agents unblock', async () => Promise.reject(new WritError('WRIT_AGENT_NOT_FOUND', 'no')))).rejects.toMatchObject({ code: 'WRIT_AGENT_NOT_FOUND' });
    expect(existsSync(join(dir, 'lock'))).toBe(false);
  });
});
