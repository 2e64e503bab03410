// How `writ exec` finds its command before it asks the broker for anything: as execvp(3) does, on real files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SEARCH_PATH, exitCodeFor, resolveCommand } from '../../broker/command-path';
import { WritError } from '../../broker/errors';
import { thrown } from '../helpers/codes';

describe.skipIf(process.platform === 'win32')('resolveCommand', () => {
  let root: string;
  const dir = (name: string) => join(root, name);
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'writ-cmd-'));
    for (const d of ['a', 'b', 'c', 'cwd']) mkdirSync(dir(d));
    const file = (path: string, mode: number) => {
      writeFileSync(path, '#!/bin/sh\nexit 0\n');
      chmodSync(path, mode);
    };
    file(join(dir('a'), 'tool'), 0o644); // found first, but not executable: passed over
    file(join(dir('b'), 'tool'), 0o755);
    file(join(dir('a'), 'only-readable'), 0o644);
    mkdirSync(join(dir('a'), 'a-dir'));
    file(join(dir('cwd'), 'local'), 0o700);
    symlinkSync(join(dir('b'), 'tool'), join(dir('c'), 'linked'));
    symlinkSync(join(dir('c'), 'nowhere'), join(dir('c'), 'dangling'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const refusal = (command: string, path: string | undefined, cwd = dir('cwd')) => {
    const e = thrown(() => resolveCommand(command, path === undefined ? {} : { PATH: path }, cwd)) as WritError;
    expect(e).toBeInstanceOf(WritError);
    return { code: e.code, message: e.message, exit: exitCodeFor(e.code) };
  };

  it('searches PATH in order, passing over a file it may not execute for a later one it may', () => {
    expect(resolveCommand('tool', { PATH: `${dir('a')}:${dir('b')}` }, dir('cwd'))).toBe(join(dir('b'), 'tool'));
    expect(resolveCommand('linked', { PATH: dir('c') }, dir('cwd'))).toBe(join(dir('c'), 'linked'));
  });

  it('reads an empty PATH entry, and a relative one, from the working folder', () => {
    expect(resolveCommand('local', { PATH: `${dir('a')}::${dir('b')}` }, dir('cwd'))).toBe(join(dir('cwd'), 'local'));
    expect(resolveCommand('tool', { PATH: '../b' }, dir('cwd'))).toBe(join(dir('b'), 'tool'));
  });

  it('with PATH unset, searches the default path Node spawns with', () => {
    expect(DEFAULT_SEARCH_PATH).toBe('/usr/bin:/bin');
    expect(['/usr/bin/sh', '/bin/sh']).toContain(resolveCommand('sh', {}, dir('cwd')));
    expect(refusal('local', undefined)).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: 'cannot run local: not found in PATH', exit: 127 });
  });

  it('a name not in PATH: WRIT_COMMAND_NOT_FOUND, exit 127 (a dangling symlink is no file)', () => {
    expect(refusal('no-such-tool', `${dir('a')}:${dir('b')}`)).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: 'cannot run no-such-tool: not found in PATH', exit: 127 });
    expect(refusal('dangling', dir('c'))).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: 'cannot run dangling: not found in PATH', exit: 127 });
    expect(refusal('', dir('b'))).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: 'cannot run an empty command name', exit: 127 });
  });

  it('found in PATH but nowhere executable (a file without x, a directory): WRIT_COMMAND_NOT_EXECUTABLE, exit 126', () => {
    expect(refusal('only-readable', `${dir('b')}:${dir('a')}`)).toEqual({
      code: 'WRIT_COMMAND_NOT_EXECUTABLE',
      message: `cannot run only-readable: ${join(dir('a'), 'only-readable')}: not executable by this user`,
      exit: 126,
    });
    expect(refusal('a-dir', dir('a'))).toEqual({ code: 'WRIT_COMMAND_NOT_EXECUTABLE', message: `cannot run a-dir: ${join(dir('a'), 'a-dir')}: is a directory`, exit: 126 });
  });

  it('a name with a slash is a path from the working folder, and PATH is not searched', () => {
    expect(resolveCommand('./local', { PATH: dir('b') }, dir('cwd'))).toBe(join(dir('cwd'), 'local'));
    expect(resolveCommand('../b/tool', {}, dir('cwd'))).toBe(join(dir('b'), 'tool'));
    expect(refusal('./tool', dir('b'))).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: 'cannot run ./tool: no such file', exit: 127 });
    expect(refusal(join(dir('a'), 'tool'), dir('b'))).toEqual({ code: 'WRIT_COMMAND_NOT_EXECUTABLE', message: `cannot run ${join(dir('a'), 'tool')}: not executable by this user`, exit: 126 });
    expect(refusal(`${dir('a')}/`, undefined)).toEqual({ code: 'WRIT_COMMAND_NOT_EXECUTABLE', message: `cannot run ${dir('a')}/: is a directory`, exit: 126 });
    expect(refusal(join(dir('c'), 'dangling'), undefined)).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: `cannot run ${join(dir('c'), 'dangling')}: no such file`, exit: 127 });
    expect(refusal(`${join(dir('b'), 'tool')}/x`, undefined)).toEqual({ code: 'WRIT_COMMAND_NOT_FOUND', message: `cannot run ${join(dir('b'), 'tool')}/x: no such file`, exit: 127 });
  });
});
