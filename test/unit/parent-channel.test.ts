// The broker's pipe to the editor, on fake timers: audit records only while followed (batched, in order, dropped
// when unfollowed), and the `audit.activity` word otherwise: a change told within the 5 ms window, token
// activity alone at most once a second, checkpoints and introspections not at all, every other record counted once.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parentChannel, RECORDS_TO_PARENT_MS } from '../../broker/net/parent';
import { COUNTS_ACTIVITY_MS } from '../../broker/protocol';
import type { BrokerToParent } from '../../broker/protocol';
import { rec } from '../helpers/records';

function channel() {
  const sent: { at: number; msg: BrokerToParent }[] = [];
  const ch = parentChannel((msg) => sent.push({ at: Date.now(), msg }));
  const ofType = <K extends BrokerToParent['type']>(type: K) =>
    sent.filter((s) => s.msg.type === type).map((s) => ({ at: s.at, msg: s.msg as Extract<BrokerToParent, { type: K }> }));
  return { ch, sent, ofType };
}

describe('parentChannel', () => {
  beforeEach(() => void vi.useFakeTimers({ now: 1_000_000, toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'] }));
  afterEach(() => void vi.useRealTimers());

  it('sends no record until followed; while followed, a flush\'s records in one message, before any later message', () => {
    const { ch, sent, ofType } = channel();
    ch.record(rec(0, { event: 'broker.started' }));
    vi.advanceTimersByTime(50);
    expect(ofType('audit.records')).toEqual([]);
    expect(sent.map((s) => s.msg)).toEqual([{ type: 'audit.activity', records: 1, changes: true }]);

    ch.follow(true);
    ch.record(rec(1));
    ch.record(rec(2));
    ch.post({ type: 'fatal', code: 'WRIT_INTERNAL', message: 'x' });
    ch.record(rec(3));
    vi.advanceTimersByTime(RECORDS_TO_PARENT_MS);
    expect(ofType('audit.records').map((s) => s.msg.records.map((r) => r.seq))).toEqual([[1, 2], [3]]);
    // The records waiting went before the other message.
    expect(sent.findIndex((s) => s.msg.type === 'fatal')).toBe(sent.findIndex((s) => s.msg.type === 'audit.records') + 1);
  });

  it('unfollowing drops the records still waiting and sends none after', () => {
    const { ch, ofType } = channel();
    ch.follow(true);
    ch.record(rec(0));
    ch.follow(false);
    ch.record(rec(1));
    vi.advanceTimersByTime(2 * COUNTS_ACTIVITY_MS);
    expect(ofType('audit.records')).toEqual([]);
    // Both were still told of.
    expect(ofType('audit.activity').map((s) => s.msg)).toEqual([{ type: 'audit.activity', records: 2, changes: false }]);
  });

  it('tells of token activity alone at most once a second, a change within 5 ms, and counts every told record once', () => {
    const { ch, ofType } = channel();
    const start = Date.now();
    let seq = 0;
    // Three seconds of a token every 2 ms, a new grant at 1.5 s, a checkpoint every 100 ms.
    for (let t = 0; t < 3000; t += 2) {
      ch.record(rec(seq++, { event: t % 4 === 0 ? 'token.minted' : 'token.used' }));
      if (t === 1500) ch.record(rec(seq++, { event: 'task.approved' }));
      if (t % 100 === 0) ch.record(rec(seq++, { event: 'checkpoint' }));
      vi.advanceTimersByTime(2);
    }
    ch.flush();
    const activity = ofType('audit.activity');
    expect(activity.reduce((n, s) => n + s.msg.records, 0)).toBe(1500 + 1);
    const countsOnly = activity.filter((s) => !s.msg.changes);
    // The first at once (within the window), then one a second: 0, 1000, 2000, and what is left at the end.
    expect(countsOnly.map((s) => s.at - start)).toEqual([RECORDS_TO_PARENT_MS, 1000 + RECORDS_TO_PARENT_MS, 2000 + RECORDS_TO_PARENT_MS, 3000]);
    const change = activity.filter((s) => s.msg.changes);
    // Token activity had waited since 1006 ms: past its window, so the change goes at once (with it).
    expect(change.map((s) => s.at - start)).toEqual([1500]);
    for (let i = 1; i < activity.length; i++) expect(activity[i]!.at - activity[i - 1]!.at).toBeGreaterThanOrEqual(RECORDS_TO_PARENT_MS);
  });

  it('checkpoints and introspections alone are not told', () => {
    const { ch, sent } = channel();
    ch.record(rec(0, { event: 'checkpoint' }));
    ch.record(rec(1, { event: 'token.introspected' }));
    vi.advanceTimersByTime(2 * COUNTS_ACTIVITY_MS);
    ch.flush();
    expect(sent).toEqual([]);
  });
});

describe('parentChannel after the wall clock steps back', () => {
  beforeEach(() => void vi.useFakeTimers({ now: 1_000_000_000, toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'] }));
  afterEach(() => void vi.useRealTimers());

  it('still tells of a change within the 5 ms window', () => {
    const sent: BrokerToParent[] = [];
    const ch = parentChannel((m) => sent.push(m));
    ch.record(rec(0, { event: 'token.minted' }));
    vi.advanceTimersByTime(10);
    expect(sent).toHaveLength(1);
    // NTP / the developer sets the clock back one hour (timers keep running: they are monotonic).
    vi.setSystemTime(Date.now() - 3_600_000);
    ch.record(rec(1, { event: 'task.approved' })); // a new grant: the Agents view should show it within ~100 ms
    vi.advanceTimersByTime(1000);
    expect(sent.filter((m) => m.type === 'audit.activity')).toHaveLength(2);
  });
});
