// Stopping a revoked agent's tree signals only the processes it found: a pid freed and taken by an unrelated
// process during the grace period (same number, another start time) is not that process.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isSameAlive, startOf } from '../../broker/procfs';

describe.runIf(process.platform === 'linux')('process identity for stopTree', () => {
  it('is a pid and its start time: the same process matches, another start time at that pid does not', () => {
    const start = startOf(process.pid);
    expect(Number.isSafeInteger(start)).toBe(true);
    expect(isSameAlive(process.pid, start)).toBe(true);
    expect(isSameAlive(process.pid, start! + 1)).toBe(false);
  });

  it('an exited process is neither alive nor has a start time', () => {
    const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const pid = Number(child.stdout);
    expect(startOf(pid)).toBeUndefined();
    expect(isSameAlive(pid, 12345)).toBe(false);
  });
});
