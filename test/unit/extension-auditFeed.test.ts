// The audit panel's feed without an editor or a broker: a follow the test settles (or never does) and a real file.
// What it proves: the log on disk is posted before the broker follows, with the note that it is not answering; once
// it follows, what it wrote in between comes from the file and the rest from the stream, each record once.
import { describe, it, expect, vi } from 'vitest';
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditFeed } from '../../extension/auditFeed';
import type { AuditFeedDeps } from '../../extension/auditFeed';
import type { ExtensionToWebview } from '../../broker/protocol';
import { rec } from '../helpers/records';
import { until } from '../helpers/until';

const lines = (seqs: number[]): string => seqs.map((s) => `${JSON.stringify(rec(s))}\n`).join('');
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

interface Deferred {
  resolve(): void;
  promise: Promise<void>;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { resolve, promise };
}

/** A feed over a fresh log holding `seqs`; each follow(true) takes the next of `follows` (settled at once when none is left). */
function harness(seqs: number[], follows: Deferred[], over: Partial<AuditFeedDeps> = {}) {
  const path = join(mkdtempSync(join(tmpdir(), 'writ-feed-')), 'audit.jsonl');
  writeFileSync(path, lines(seqs));
  const posts: ExtensionToWebview[] = [];
  const followed: boolean[] = [];
  const feed = new AuditFeed({
    auditPath: () => path,
    follow: (on) => {
      followed.push(on);
      return on ? (follows.shift()?.promise ?? Promise.resolve()) : Promise.resolve();
    },
    post: (m) => posts.push(m),
    liveAgents: () => [],
    verify: async () => ({ state: 'intact', message: 'ok' }),
    log: () => undefined,
    ...over,
  });
  /** The records the webview holds: a reset replaces them, the rest append. */
  const shown = (): number[] => {
    let held: number[] = [];
    for (const m of posts) if (m.type === 'records') held = m.reset ? m.records.map((r) => r.seq) : [...held, ...m.records.map((r) => r.seq)];
    return held;
  };
  const notes = () => posts.filter((m): m is Extract<ExtensionToWebview, { type: 'broker' }> => m.type === 'broker').map((m) => m.answering);
  return { path, feed, posts, followed, shown, notes };
}

describe('the audit panel while the broker does not answer', () => {
  it('posts the log on disk before the broker follows, says it is not answering, then each later record once', async () => {
    const follow = deferred();
    const h = harness(range(0, 4), [follow], { silentAfterMs: 0 });
    h.feed.open();
    h.feed.ready();
    await until(() => (h.shown().length === 5 && h.notes().length === 1 ? true : undefined));
    expect(h.shown()).toEqual(range(0, 4));
    expect(h.posts.find((m) => m.type === 'records')).toEqual({ type: 'records', reset: true, records: range(0, 4).map((s) => rec(s)), older: 0 });
    expect(h.notes()).toEqual([false]);

    // Written before the broker took the follow (in the file only), and one written as it took it (in both).
    appendFileSync(h.path, lines([5, 6]));
    h.feed.append(rec(6));
    h.feed.append(rec(7));
    // Nothing more while the broker has not followed: no live record ahead of the file's.
    await new Promise((r) => setTimeout(r, 50));
    expect(h.shown()).toEqual(range(0, 4));

    follow.resolve();
    await until(() => (h.notes().length === 2 ? true : undefined));
    expect(h.notes()).toEqual([false, true]);
    expect(h.shown()).toEqual(range(0, 7));
    // Live from here, duplicates dropped by seq.
    h.feed.append(rec(7));
    h.feed.append(rec(8));
    await until(() => (h.shown().at(-1) === 8 ? true : undefined));
    expect(h.shown()).toEqual(range(0, 8));
    expect(h.followed).toEqual([true]);
  });

  it('a broker that follows at once (or none at all) gets no note, and the file is read again for what came meanwhile', async () => {
    const h = harness(range(0, 2), [], { silentAfterMs: 60_000 });
    h.feed.open();
    h.feed.ready();
    h.feed.append(rec(3));
    await until(() => (h.shown().at(-1) === 3 ? true : undefined));
    expect(h.shown()).toEqual(range(0, 3));
    expect(h.notes()).toEqual([]);
    h.feed.close();
    expect(h.followed).toEqual([true, false]);
  });

  it('says so at once when the supervisor already calls the broker unresponsive, and no more once it runs again', async () => {
    const h = harness(range(0, 1), [], { silentAfterMs: Infinity });
    h.feed.brokerSilent(true);
    h.feed.open();
    h.feed.ready();
    await until(() => (h.shown().length === 2 && h.notes().length === 1 ? true : undefined));
    expect(h.notes()).toEqual([false]);
    h.feed.brokerSilent(false);
    expect(h.notes()).toEqual([false, true]);
    // Only changes are told.
    h.feed.brokerSilent(false);
    expect(h.notes()).toEqual([false, true]);
  });

  it('a broker restarted while the old one never answered: the new one is followed, the log loaded again, the note cleared', async () => {
    const hung = deferred();
    const h = harness(range(0, 2), [hung], { silentAfterMs: 0 });
    h.feed.open();
    h.feed.ready();
    await until(() => (h.notes().length === 1 ? true : undefined));
    appendFileSync(h.path, lines([3, 4]));
    h.feed.reload();
    h.feed.append(rec(5));
    await until(() => (h.notes().length === 2 ? true : undefined));
    expect(h.notes()).toEqual([false, true]);
    await until(() => (h.shown().at(-1) === 5 ? true : undefined));
    expect(h.shown()).toEqual(range(0, 5));
    expect(h.followed).toEqual([true, true]);
    // The old follow settling late (endRun) changes nothing.
    hung.resolve();
    await new Promise((r) => setTimeout(r, 50));
    expect(h.notes()).toEqual([false, true]);
    expect(h.shown()).toEqual(range(0, 5));
  });
});

describe('the audit panel reloading while records stream', () => {
  it('posts nothing live while a reload reads the file, even when a flush set while streaming fires then', async () => {
    // From a review: that timer posted live records during the load, ahead of the file's, and twice when it fired
    // inside the second read (which had taken the last seq before the flush moved it).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const second = deferred();
      const h = harness(range(0, 2), [{ resolve: () => undefined, promise: Promise.resolve() }, second], { silentAfterMs: Infinity });
      // Real file reads under fake timers: polled on setImmediate, for up to 20 s of real time (Date is not faked).
      const waitFor = async (f: () => boolean) => {
        let ok = f();
        for (const end = Date.now() + 20_000; !ok && Date.now() < end; ok = f()) await new Promise((r) => setImmediate(r));
        expect(ok).toBe(true);
      };
      const resets = () => h.posts.filter((m) => m.type === 'records' && m.reset).length;
      h.feed.open();
      h.feed.ready();
      await waitFor(() => h.shown().length === 3);
      appendFileSync(h.path, lines([3]));
      // Streaming once a live record sets a flush (15 ms, not run: timers are fake); until then the copies go by seq.
      let streaming = false;
      await waitFor(() => {
        if (streaming) return true;
        const timers = vi.getTimerCount();
        h.feed.append(rec(3));
        return (streaming = vi.getTimerCount() > timers);
      });
      h.feed.reload(); // a new broker: its follow waits
      await waitFor(() => resets() === 2);
      expect(h.shown()).toEqual(range(0, 3));
      appendFileSync(h.path, lines([4]));
      h.feed.append(rec(4));
      const before = h.posts.length;
      vi.advanceTimersByTime(20); // the flush set before the reload fires now
      expect(h.posts.slice(before).filter((m) => m.type === 'records')).toEqual([]);
      second.resolve();
      await waitFor(() => h.shown().includes(4));
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
      expect(h.shown()).toEqual(range(0, 4));
    } finally {
      vi.useRealTimers();
    }
  });

  it('holds no more live records than its bound while the file is read, and loses none: it reads the file again', async () => {
    const follow = deferred();
    const h = harness(range(0, 2), [follow], { maxBacklog: 3 });
    h.feed.open();
    // Before the webview is ready nothing is held: the first read takes the file.
    h.feed.append(rec(99));
    h.feed.ready();
    await until(() => (h.shown().length === 3 ? true : undefined));
    // Eight records while the broker has not followed: more than the bound of three.
    appendFileSync(h.path, lines(range(3, 10)));
    for (const s of range(3, 10)) h.feed.append(rec(s));
    follow.resolve();
    await until(() => (h.shown().length === 11 ? true : undefined));
    appendFileSync(h.path, lines([11]));
    h.feed.append(rec(11));
    await until(() => (h.shown().length === 12 ? true : undefined));
    expect(h.shown()).toEqual(range(0, 11));
  });
});

