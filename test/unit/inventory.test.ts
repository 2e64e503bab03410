// The inventory persists across restarts, keeps blocks, refuses a corrupt file, and exports for a team.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../broker/core/clock';
import { Inventory, identityOf, inventoryCsv, statusOf } from '../../broker/core/inventory';
import { WritError } from '../../broker/errors';

const file = () => join(mkdtempSync(join(tmpdir(), 'writ-inv-')), 'agents.json');

describe('Inventory', () => {
  it('records an agent once per identity across runs, with its family, processes and scopes', () => {
    const path = file();
    const clock = new ManualClock(Date.UTC(2026, 10, 29, 9));
    const inv = Inventory.load(path, clock);
    const parent = inv.seen({ name: 'claude-code', kind: 'cli', owner: 'dev@example.com', process: { exe: '/usr/bin/node', sha256: 'ab'.repeat(32) } });
    const child = inv.seen({ name: 'sub', kind: 'sub-agent', owner: 'dev@example.com', parentIdentity: parent.id });
    inv.granted(parent.id, ['repo:read:acme/web', 'repo:read:acme/*']);
    inv.save();
    clock.advance(3_600_000);
    const again = Inventory.load(path, clock);
    const p2 = again.seen({ name: 'claude-code', kind: 'cli', owner: 'dev@example.com' });
    expect(p2.id).toBe(parent.id);
    expect(p2.id).toBe(identityOf('dev@example.com', 'claude-code', 'cli'));
    expect(p2).toMatchObject({
      sessions: 2,
      firstSeen: '2026-11-29T09:00:00.000Z',
      lastSeen: '2026-11-29T10:00:00.000Z',
      processes: [{ exe: '/usr/bin/node', sha256: 'ab'.repeat(32) }],
      subAgents: [child.id],
      scopesGranted: ['repo:read:acme/*'],
      blocked: null,
    });
    expect(again.get(child.id)?.parents).toEqual([parent.id]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('a block survives a restart, and so does an unblock', () => {
    const path = file();
    const clock = new ManualClock();
    const inv = Inventory.load(path, clock);
    const a = inv.seen({ name: 'runaway', kind: 'script', owner: 'dev' });
    inv.block(a.id, 'looping');
    expect(Inventory.load(path, clock).isBlocked(a.id)).toBe(true);
    expect(Inventory.load(path, clock).get(a.id)?.blocked).toEqual({ at: '2026-01-01T00:00:00.000Z', reason: 'looping' });
    Inventory.load(path, clock).unblock(a.id);
    expect(Inventory.load(path, clock).isBlocked(a.id)).toBe(false);
  });

  it('a corrupt file is WRIT_INVENTORY_CORRUPT, never an empty inventory', () => {
    const path = file();
    for (const text of ['{not json', JSON.stringify({ v: 1, agents: [{ id: 'x' }] }), JSON.stringify({ v: 2, agents: [] })]) {
      writeFileSync(path, text);
      let err: unknown;
      try {
        Inventory.load(path, new ManualClock());
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WritError);
      expect((err as WritError).code).toBe('WRIT_INVENTORY_CORRUPT');
      expect((err as WritError).message).not.toContain(text);
      expect(readFileSync(path, 'utf8')).toBe(text);
    }
  });

  it('exports CSV with a status per agent and guards formula cells', () => {
    const clock = new ManualClock();
    const inv = Inventory.load(file(), clock);
    const a = inv.seen({ name: '=cmd', kind: 'script', owner: 'dev@example.com', process: { exe: '/bin/sh' } });
    inv.granted(a.id, ['repo:read:x']);
    const rows = inv.list().map((e) => ({ ...e, status: statusOf(e, { connected: false, tokens: 0 }), tokensNow: 0 }));
    expect(inventoryCsv(rows)).toBe(
      'id,name,kind,owner,status,first_seen,last_seen,sessions,tokens_now,executables,parents,sub_agents,scopes_granted,blocked_at\r\n' +
        `${a.id},'=cmd,script,dev@example.com,idle,2026-01-01T00:00:00.000Z,2026-01-01T00:00:00.000Z,1,0,/bin/sh,,,repo:read:x,\r\n`,
    );
    expect(statusOf(a, { connected: true, tokens: 0 })).toBe('active');
    inv.block(a.id);
    expect(statusOf(inv.get(a.id)!, { connected: true, tokens: 3 })).toBe('blocked');
  });
});
