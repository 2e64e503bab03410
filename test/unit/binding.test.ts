// Whose token is this, on a scripted process table: a token is bound to the process it was minted for; that
// process and its descendants may present it, others are a mismatch; once the minting process has exited its
// nearest live ancestor takes over; PID reuse never passes as the same process; an agent may hold its own,
// its ancestors' and its descendants' tokens, never a sibling's or a stranger's.
import { describe, expect, it } from 'vitest';
import { bindingFor, boundRoot, checkPresenter, mayHold } from '../../broker/core/binding';
import type { ProcessRef, ProcessTable } from '../../broker/core/binding';
import type { PeerProcess } from '../../broker/protocol';

/** pid → [ppid, startTime]; lineage walks ppid like /proc does. */
function table(procs: Record<number, [number, number]>): ProcessTable {
  return {
    lineage(pid) {
      const out: ProcessRef[] = [];
      for (let at = pid; procs[at] !== undefined && out.length < 64; at = procs[at]![0]) out.push({ pid: at, startTime: procs[at]![1] });
      return out;
    },
  };
}

const peer = (pid: number, startTime: number | undefined, exe = '/usr/bin/node'): PeerProcess => ({ pid, ...(startTime === undefined ? {} : { startTime }), exe });

// 1 init ─ 10 shell ─┬─ 20 agent ─ 21 sub-agent ─ 22 its tool
//                    ├─ 30 other agent
//                    └─ 40 npx ─ 41 writ token (one-shot)
const TREE: Record<number, [number, number]> = {
  1: [0, 1],
  10: [1, 100],
  20: [10, 200],
  21: [20, 210],
  22: [21, 220],
  30: [10, 300],
  40: [10, 400],
  41: [40, 410],
};

describe('process binding', () => {
  it('binds to the minting process with its ancestors, nearest first', () => {
    expect(bindingFor(peer(21, 210), table(TREE))).toEqual({
      process: { pid: 21, startTime: 210, exe: '/usr/bin/node' },
      ancestors: [
        { pid: 20, startTime: 200 },
        { pid: 10, startTime: 100 },
        { pid: 1, startTime: 1 },
      ],
    });
  });

  it('does not bind a process it cannot name: no start time, gone, or a reused pid', () => {
    const t = table(TREE);
    expect(bindingFor(undefined, t)).toBeUndefined();
    expect(bindingFor(peer(20, undefined), t)).toBeUndefined();
    expect(bindingFor(peer(99, 990), t)).toBeUndefined();
    expect(bindingFor(peer(20, 999), t)).toBeUndefined();
  });

  it('the minting process and its descendants are the same holder; a sibling and an ancestor are not', () => {
    const t = table(TREE);
    const b = bindingFor(peer(20, 200, '/opt/agent'), t)!;
    expect(checkPresenter(b, peer(20, 200), t)).toEqual({ verdict: 'same' });
    expect(checkPresenter(b, peer(21, 210), t)).toEqual({ verdict: 'same' });
    expect(checkPresenter(b, peer(22, 220), t)).toEqual({ verdict: 'same' });
    expect(checkPresenter(b, peer(30, 300, '/opt/other'), t)).toEqual({
      verdict: 'mismatch',
      expected: { pid: 20, exe: '/opt/agent' },
      actual: { pid: 30, exe: '/opt/other' },
    });
    expect(checkPresenter(b, peer(10, 100), t).verdict).toBe('mismatch');
  });

  it('says unknown rather than guess: a presenter without a start time, gone, or whose pid now names another process', () => {
    const t = table(TREE);
    const b = bindingFor(peer(20, 200), t)!;
    expect(checkPresenter(b, undefined, t)).toEqual({ verdict: 'unknown' });
    expect(checkPresenter(b, peer(30, undefined), t)).toEqual({ verdict: 'unknown' });
    expect(checkPresenter(b, peer(77, 770), t)).toEqual({ verdict: 'unknown' });
    expect(checkPresenter(b, peer(30, 301), t)).toEqual({ verdict: 'unknown' });
  });

  it('a one-shot minter that exited hands over to its nearest live ancestor (the shell that ran `writ token`)', () => {
    const before = table(TREE);
    const b = bindingFor(peer(41, 410), before)!;
    const { 40: _npx, 41: _cli, ...rest } = TREE;
    const after = table({ ...rest, 50: [10, 500] }); // curl, a child of the same shell
    expect(boundRoot(b, after)).toEqual({ pid: 10, startTime: 100 });
    expect(checkPresenter(b, peer(50, 500), after)).toEqual({ verdict: 'same' });
    // While it still runs, its shell's other children are not its holders.
    expect(checkPresenter(b, peer(30, 300), before).verdict).toBe('mismatch');
  });

  it('a pid reused by another process is not the minting process: the binding moves to the live ancestor', () => {
    const b = bindingFor(peer(20, 200), table(TREE))!;
    const reused = table({ ...TREE, 20: [1, 999], 21: [20, 210] });
    expect(boundRoot(b, reused)).toEqual({ pid: 10, startTime: 100 });
    // The new process 20 is not under the shell, so neither it nor its children hold the token.
    expect(checkPresenter(b, peer(20, 999), reused).verdict).toBe('mismatch');
  });

  it('nothing of the tree left running: unknown', () => {
    const b = bindingFor(peer(41, 410), table(TREE))!;
    expect(checkPresenter(b, peer(30, 300), table({ 30: [0, 300] }))).toEqual({ verdict: 'unknown' });
  });
});

describe('mayHold', () => {
  // Token chains are [client_id, parent, grandparent…] as in `act`.
  const chain = ['agt_child', 'agt_parent', 'agt_root'];
  it('the token\'s agent, its ancestors, and its descendants may hold it', () => {
    expect(mayHold({ id: 'agt_child', parents: ['agt_parent', 'agt_root'] }, chain)).toBe(true);
    expect(mayHold({ id: 'agt_parent', parents: ['agt_root'] }, chain)).toBe(true);
    expect(mayHold({ id: 'agt_root', parents: [] }, chain)).toBe(true);
    expect(mayHold({ id: 'agt_grandchild', parents: ['agt_child', 'agt_parent', 'agt_root'] }, chain)).toBe(true);
  });
  it('a sibling, a stranger, or an empty chain may not', () => {
    expect(mayHold({ id: 'agt_sibling', parents: ['agt_parent', 'agt_root'] }, chain)).toBe(false);
    expect(mayHold({ id: 'agt_stranger', parents: [] }, chain)).toBe(false);
    expect(mayHold({ id: 'agt_child', parents: [] }, [])).toBe(false);
  });
});
