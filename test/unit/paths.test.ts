// The runtime folder checks: who owns it, its mode, and symlinks. Another OS user cannot be made here, so the
// uid comparison is proved on made-up stat results; modes and symlinks also on real files.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { untrustedReason, ensurePrivateDir, type OwnedStat } from '../../broker/paths';

const stat = (over: Partial<{ uid: number; mode: number; kind: 'folder' | 'file' | 'symlink' }>): OwnedStat => {
  const kind = over.kind ?? 'folder';
  return { uid: over.uid ?? 1000, mode: over.mode ?? 0o700, isDirectory: () => kind === 'folder', isFile: () => kind === 'file', isSymbolicLink: () => kind === 'symlink' };
};

describe('untrustedReason', () => {
  it('trusts the user’s own 0700 folder and a file no one else can write', () => {
    expect(untrustedReason('folder', stat({}), 1000)).toBeUndefined();
    expect(untrustedReason('file', stat({ kind: 'file', mode: 0o600 }), 1000)).toBeUndefined();
    expect(untrustedReason('file', stat({ kind: 'file', mode: 0o644 }), 1000)).toBeUndefined();
  });

  it('refuses a folder or file owned by another uid, whatever its mode', () => {
    expect(untrustedReason('folder', stat({ uid: 1001 }), 1000)).toBe('is owned by uid 1001, not by this user (uid 1000)');
    expect(untrustedReason('file', stat({ kind: 'file', uid: 0, mode: 0o600 }), 1000)).toBe('is owned by uid 0, not by this user (uid 1000)');
  });

  it('refuses a folder with any group or other bit, and a file others can write', () => {
    expect(untrustedReason('folder', stat({ mode: 0o755 }), 1000)).toBe('has mode 0755: other users can reach it (it must be 0700)');
    expect(untrustedReason('folder', stat({ mode: 0o710 }), 1000)).toBe('has mode 0710: other users can reach it (it must be 0700)');
    expect(untrustedReason('folder', stat({ mode: 0o1777 }), 1000)).toBe('has mode 0777: other users can reach it (it must be 0700)');
    expect(untrustedReason('file', stat({ kind: 'file', mode: 0o620 }), 1000)).toBe('has mode 0620: other users can write it');
    expect(untrustedReason('file', stat({ kind: 'file', mode: 0o602 }), 1000)).toBe('has mode 0602: other users can write it');
  });

  it('refuses symlinks and the wrong kind before anything else', () => {
    expect(untrustedReason('folder', stat({ kind: 'symlink' }), 1000)).toBe('is a symbolic link');
    expect(untrustedReason('file', stat({ kind: 'symlink', mode: 0o600 }), 1000)).toBe('is a symbolic link');
    expect(untrustedReason('folder', stat({ kind: 'file' }), 1000)).toBe('is not a folder');
    expect(untrustedReason('file', stat({ kind: 'folder' }), 1000)).toBe('is not a regular file');
  });

  it('without a uid (Windows) skips owner and mode, never the symlink check', () => {
    expect(untrustedReason('folder', stat({ uid: 0, mode: 0o777 }), undefined)).toBeUndefined();
    expect(untrustedReason('file', stat({ kind: 'file', uid: 0, mode: 0o666 }), undefined)).toBeUndefined();
    expect(untrustedReason('folder', stat({ kind: 'symlink' }), undefined)).toBe('is a symbolic link');
  });
});

describe('ensurePrivateDir', () => {
  const base = mkdtempSync(join(tmpdir(), 'writ-paths-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('makes a missing folder 0700 and closes an open one of ours', () => {
    const made = join(base, 'made', 'run');
    ensurePrivateDir(made);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    const open = join(base, 'open');
    mkdirSync(open);
    chmodSync(open, 0o755);
    ensurePrivateDir(open);
    expect(statSync(open).mode & 0o777).toBe(0o700);
  });

  it('refuses a symlink to a folder, and leaves its target’s mode alone', () => {
    const target = join(base, 'target');
    mkdirSync(target);
    chmodSync(target, 0o755);
    const link = join(base, 'link');
    symlinkSync(target, link);
    let thrown: unknown;
    try {
      ensurePrivateDir(link);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toMatchObject({ name: 'WritError', code: 'WRIT_RUNTIME_DIR_UNSAFE' });
    expect((thrown as Error).message).toContain('is a symbolic link');
    expect(statSync(target).mode & 0o777).toBe(0o755);
  });
});
