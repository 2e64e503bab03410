// The broker's revocation journal (broker/core/journal.ts) as its readers (broker/sdk/journal.ts) see it: each
// event one line, in order, across the files it continues in; made private, removed when the broker stops, and
// left behind by no broker that is gone; a journal that cannot be written is none, and the broker goes on.
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, closeSync, existsSync, truncateSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RevocationJournal } from '../../broker/core/journal';
import { JournalReader } from '../../broker/sdk/journal';
import { REVOCATION_JOURNAL_MAX_BYTES } from '../../broker/protocol';
import type { RevocationEvent } from '../../broker/protocol';

const event = (jti: string, seq: number): RevocationEvent => ({ target: { kind: 'token', jti }, at: 1_700_000_000, jtis: [jti], agentIds: [], taskIds: [], grantIds: [], seq });

describe('revocation journal', () => {
  let dir = '';
  const logged: string[] = [];
  const log = (line: string) => logged.push(line);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'writ-journal-'));
    logged.length = 0;
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** What a reader applies from `place` on, read now. */
  const readAll = (r: JournalReader) => {
    const got: string[] = [];
    r.read((e) => got.push(`${e.seq}:${e.jtis[0]}`));
    return got;
  };

  it('one line per event, a private file of this process; a subscriber starts where its snapshot ends', () => {
    const j = RevocationJournal.open(dir, log);
    const first = j.place()!;
    expect(first.offset).toBe(0);
    expect(first.path).toBe(join(dir, `revocations-${process.pid}-1.journal`));
    expect(first.ino).toBe(String(statSync(first.path, { bigint: true }).ino));
    expect(statSync(first.path).mode & 0o777).toBe(0o600);
    j.append(event('a', 1));
    const later = j.place()!;
    j.append(event('b', 2));
    expect(readFileSync(first.path, 'utf8')).toBe(JSON.stringify(event('a', 1)) + '\n' + JSON.stringify(event('b', 2)) + '\n');
    expect(later).toEqual({ ...first, offset: Buffer.byteLength(JSON.stringify(event('a', 1)) + '\n') });
    expect(readAll(JournalReader.open(first, first.offset)!)).toEqual(['1:a', '2:b']);
    expect(readAll(JournalReader.open(later, later.offset)!)).toEqual(['2:b']);
    j.close();
    expect(existsSync(first.path)).toBe(false);
    expect(j.place()).toBeUndefined();
    expect(logged).toEqual([]);
  });

  it('past its size it continues in a new file: readers follow on, in order, also one told of a file just continued, or one that missed two changes of file', () => {
    // Each event's line is about 115 bytes: three to a file of at most 300, then the next goes to a new file.
    const j = RevocationJournal.open(dir, log, { maxBytes: 300 });
    const start = j.place()!;
    const early = JournalReader.open(start, 0)!;
    const idle = JournalReader.open(start, 0)!;
    const seen: string[] = [];
    const journals = () => readdirSync(dir).filter((n) => n.endsWith('.journal')).length;
    let told: ReturnType<RevocationJournal['place']>;
    for (let i = 1; i <= 12; i++) {
      // Told of the place, as a subscriber is, just before the file is continued: it opens it after.
      if (i === 4) told = j.place();
      j.append(event(`t${i}`, i));
      seen.push(...readAll(early));
      if (i === 4) {
        expect(j.place()!.path).not.toBe(start.path);
        expect(readAll(JournalReader.open(told!, told!.offset)!)).toEqual(['4:t4']);
      }
      // Seven events: a third file; the first is gone, but a reader holding it reads on through the second.
      if (i === 7) expect(readAll(idle)).toEqual(['1:t1', '2:t2', '3:t3', '4:t4', '5:t5', '6:t6', '7:t7']);
      // The file being written and the one before it: no more.
      expect(journals()).toBe(i <= 3 ? 1 : 2);
    }
    expect(seen).toEqual(Array.from({ length: 12 }, (_, k) => `${k + 1}:t${k + 1}`));
    const now = j.place()!;
    const late = JournalReader.open(now, now.offset)!;
    j.append(event('t13', 13));
    expect(readAll(early)).toEqual(['13:t13']);
    expect(readAll(late)).toEqual(['13:t13']);
    j.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a reader that missed two changes of full-size files applies every line at its next check', () => {
    const j = RevocationJournal.open(dir, log);
    const idle = JournalReader.open(j.place()!, 0)!;
    const first = j.place()!.path;
    let written = 0;
    // Past two changes of file: more than 8 MiB of lines in three files, the first already removed.
    for (let part = 0; part < 2; ) {
      const at = j.place()!.path;
      j.append(event(`t${++written}`, written));
      if (j.place()!.path !== at) part++;
    }
    expect(existsSync(first)).toBe(false);
    let applied = 0;
    let last = 0;
    idle.read((e) => {
      applied++;
      last = e.seq!;
    });
    expect({ applied, last }).toEqual({ applied: written, last: written });
    j.close();
  });

  it("a `next` naming the file itself is skipped, and a cycle of two files costs a bounded re-read at each check, not a loop; another process's lines are never written over", () => {
    const j = RevocationJournal.open(dir, log);
    const place = j.place()!;
    const reader = JournalReader.open(place, 0)!;
    j.append(event('a', 1));
    // Another process of this user appends a line of its own, and then a `next` naming the journal itself.
    appendFileSync(place.path, 'not a line of the broker\n' + JSON.stringify({ next: { path: place.path, ino: place.ino } }) + '\n');
    j.append(event('b', 2));
    // The broker's line went after them (O_APPEND), and is read.
    expect(readAll(reader)).toEqual(['1:a', '2:b']);
    const self = JSON.stringify({ next: { path: place.path, ino: place.ino } });
    expect(readFileSync(place.path, 'utf8')).toBe([JSON.stringify(event('a', 1)), 'not a line of the broker', self, JSON.stringify(event('b', 2)), ''].join('\n'));
    // A subscriber now starts at the file's end, past all of it, also what another process appended last.
    appendFileSync(place.path, JSON.stringify(event('x', 99)) + '\n');
    const after = JournalReader.open(j.place()!, j.place()!.offset)!;
    j.append(event('c', 3));
    expect(readAll(after)).toEqual(['3:c']);
    // Two files naming each other: one read re-reads them at most twice over, then leaves the rest for the next.
    const other = join(dir, 'other.journal');
    writeFileSync(other, JSON.stringify(event('d', 4)) + '\n' + JSON.stringify({ next: { path: place.path, ino: place.ino } }) + '\n', { mode: 0o600 });
    const otherIno = String(statSync(other, { bigint: true }).ino);
    appendFileSync(place.path, JSON.stringify({ next: { path: other, ino: otherIno } }) + '\n');
    expect(readAll(reader)).toEqual(['99:x', '3:c', '4:d', '1:a', '2:b', '99:x', '3:c']);
    expect(reader.reading).toBe(true);
    j.close();
  });

  it('removes journals of brokers no longer running, one an earlier process with this pid left, and nothing else', () => {
    // `revocations-<this pid>-1.journal` left by a process that had this pid before: the new one takes its name.
    for (const name of ['revocations-999999-1.journal', 'revocations-999999-2.journal', 'revocations-4242-1.journal', `revocations-${process.pid}-1.journal`, 'revocations.jsonl', 'broker.json']) writeFileSync(join(dir, name), 'left\n');
    const j = RevocationJournal.open(dir, log, { isRunning: (pid) => pid === 4242 || pid === process.pid });
    expect(readdirSync(dir).sort()).toEqual(['broker.json', 'revocations-4242-1.journal', `revocations-${process.pid}-1.journal`, 'revocations.jsonl'].sort());
    expect(j.place()).toMatchObject({ path: join(dir, `revocations-${process.pid}-1.journal`), offset: 0 });
    expect(logged).toEqual([]);
    // A second journal this process opens there leaves the first one's file alone (and cannot take its name).
    const ino = j.place()!.ino;
    const other = RevocationJournal.open(dir, log, { isRunning: () => true });
    expect(other.place()).toBeUndefined();
    expect(String(statSync(j.place()!.path, { bigint: true }).ino)).toBe(ino);
    other.close();
    j.close();
  });

  it('a journal that cannot be made is none: the broker goes on, says so once, and names none to subscribers', () => {
    const gone = join(dir, 'gone');
    const j = RevocationJournal.open(gone, log);
    expect(j.place()).toBeUndefined();
    j.append(event('a', 1));
    expect(logged).toEqual([`writ: could not make the revocation journal ${join(gone, `revocations-${process.pid}-1.journal`)} (ENOENT); verifiers learn of revocations by the push alone`]);
    j.close();
  });

  it('a write that fails ends the journal: said once, its file removed, its readers let go; nothing append does throws', () => {
    const j = RevocationJournal.open(dir, log);
    const place = j.place()!;
    const reader = JournalReader.open(place, 0)!;
    j.append(event('a', 1));
    expect(readAll(reader)).toEqual(['1:a']);
    expect(reader.reading).toBe(true);
    // Its descriptor closed under it: the next write fails (EBADF) as one on a full disk would (ENOSPC).
    closeSync((j as unknown as { fd: number }).fd);
    j.append(event('b', 2));
    expect(j.place()).toBeUndefined();
    expect(existsSync(place.path)).toBe(false);
    expect(logged).toEqual(['writ: could not append to the revocation journal (EBADF); verifiers learn of revocations by the push alone']);
    // Its reader lets go at its next check after that (the link count is looked at once a second at most).
    vi.useFakeTimers({ now: Date.now() + 1001, toFake: ['Date'] });
    try {
      expect(readAll(reader)).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
    expect(reader.reading).toBe(false);
    j.append(event('c', 3));
    expect(logged.length).toBe(1);
    j.close();
    // Should any step throw all the same, append does not: the journal ends and the push still goes.
    const k = RevocationJournal.open(dir, log, { maxBytes: 1 });
    const kFile = k.place()!.path;
    k.append(event('e', 5));
    vi.spyOn(k as unknown as { continueInNewFile: () => void }, 'continueInNewFile').mockImplementation(() => {
      throw new Error('EIO from nowhere');
    });
    expect(() => k.append(event('f', 6))).not.toThrow();
    expect(k.place()).toBeUndefined();
    expect(existsSync(kFile)).toBe(false);
    expect(logged.at(-1)).toBe('writ: the revocation journal failed (EIO from nowhere); verifiers learn of revocations by the push alone');
    k.close();
    const throwing = RevocationJournal.open(join(dir, 'gone'), () => {
      throw new Error('the log is gone');
    });
    expect(throwing.place()).toBeUndefined();
    expect(() => throwing.append(event('d', 4))).not.toThrow();
  });

  it('a new file that cannot be made when the journal is full ends it: readers go on by the push, nothing of it is left behind', () => {
    const j = RevocationJournal.open(dir, log, { maxBytes: 100 });
    const start = j.place()!;
    const reader = JournalReader.open(start, 0)!;
    j.append(event('a', 1));
    // The name the next file would take is taken (it is made O_EXCL): it cannot be made.
    const squatter = `revocations-${process.pid}-2.journal`;
    writeFileSync(join(dir, squatter), '');
    j.append(event('b', 2));
    expect(j.place()).toBeUndefined();
    expect(logged).toEqual([`writ: could not make the revocation journal ${join(dir, squatter)} (EEXIST); verifiers learn of revocations by the push alone`]);
    // The file it read was removed with no `next`: at its end, it lets go, and says it no longer reads a journal.
    expect(readAll(reader)).toEqual(['1:a']);
    expect(readAll(reader)).toEqual([]);
    expect(reader.reading).toBe(false);
    expect(readdirSync(dir)).toEqual([squatter]);
    j.close();
    expect(logged.length).toBe(1);
  });

  it('a reader refuses a file that is not the one named, or that others can write, and stops at a line longer than it reads at once', () => {
    const j = RevocationJournal.open(dir, log);
    const place = j.place()!;
    expect(JournalReader.open({ ...place, ino: String(BigInt(place.ino) + 1n) }, 0)).toBeUndefined();
    expect(JournalReader.open({ path: join(dir, 'missing.journal'), ino: place.ino }, 0)).toBeUndefined();
    chmodSync(place.path, 0o620);
    expect(JournalReader.open(place, 0)).toBeUndefined();
    chmodSync(place.path, 0o600);
    const reader = JournalReader.open(place, 0)!;
    writeFileSync(place.path, 'x'.repeat(70 * 1024));
    expect(readAll(reader)).toEqual([]);
    expect(reader.reading).toBe(false);
    j.close();
  });

  it('a reader does not hang on a FIFO put at the path, and lets go of a file past twice the size the broker lets one grow to', () => {
    const fifo = join(dir, 'fifo.journal');
    execFileSync('mkfifo', [fifo]);
    // Opened without blocking (no writer will come), then refused: not a regular file.
    expect(JournalReader.open({ path: fifo, ino: String(statSync(fifo, { bigint: true }).ino) }, 0)).toBeUndefined();
    const big = join(dir, 'big.journal');
    writeFileSync(big, '', { mode: 0o600 });
    truncateSync(big, 2 * REVOCATION_JOURNAL_MAX_BYTES);
    appendFileSync(big, JSON.stringify(event('late', 1)) + '\n');
    const reader = JournalReader.open({ path: big, ino: String(statSync(big, { bigint: true }).ino) }, 2 * REVOCATION_JOURNAL_MAX_BYTES)!;
    expect(reader.reading).toBe(true);
    expect(readAll(reader)).toEqual([]);
    expect(reader.reading).toBe(false);
  });
});
