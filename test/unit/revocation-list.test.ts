// The revocation list on disk: an agent's entry may name its session's hash (a broker run after it refuses that
// session); no other entry may, and a list that does is refused as corrupt rather than read in part.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../broker/core/clock';
import { RevocationStore } from '../../broker/core/revocation';
import { codeOf } from '../helpers/codes';

const clock = () => new ManualClock(Date.UTC(2026, 10, 29, 12, 0, 0, 200));
const HASH = 'a'.repeat(64);
const AT = Date.UTC(2026, 10, 29, 12, 0, 0) / 1000;

describe('revocation list: session hashes', () => {
  it('an agent entry keeps its session hash across a reopen', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'writ-rl-')), 'r.jsonl');
    const first = await RevocationStore.open(path, clock());
    await first.addMany([{ kind: 'agent', id: 'agt_1', session: HASH }], AT + 600);
    first.close();
    const again = await RevocationStore.open(path, clock());
    expect([again.isSessionRevoked(HASH), again.isAgentRevoked('agt_1')]).toEqual([true, true]);
    again.close();
    expect(readFileSync(path, 'utf8')).not.toContain('wss_');
  });

  it.each(['token', 'grant', 'task', 'all'] as const)('a %s entry naming a session is refused as corrupt (WRIT_INTERNAL)', async (kind) => {
    const path = join(mkdtempSync(join(tmpdir(), 'writ-rl-')), 'r.jsonl');
    writeFileSync(path, `${JSON.stringify({ kind, id: kind === 'all' ? '' : 'x_1', at: AT, until: AT + 600, session: HASH })}\n`);
    expect(await codeOf(RevocationStore.open(path, clock()))).toBe('WRIT_INTERNAL');
  });
});

describe('revocation list: how long an entry is kept', () => {
  it('a start keeps an entry through the clock tolerance after its until (a token is still taken 5 s past exp), then drops it', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'writ-rl-')), 'r.jsonl');
    const c = new ManualClock(AT * 1000);
    const first = await RevocationStore.open(path, c);
    await first.add('token', 'tok_1', AT + 60);
    first.close();
    const reopen = async (at: number) => {
      c.set(at * 1000);
      const s = await RevocationStore.open(path, c);
      s.close();
      return [s.hasToken('tok_1'), readFileSync(path, 'utf8').includes('tok_1')];
    };
    expect(await reopen(AT + 60)).toEqual([true, true]);
    expect(await reopen(AT + 64)).toEqual([true, true]);
    expect(await reopen(AT + 65)).toEqual([false, false]);
  });
});
