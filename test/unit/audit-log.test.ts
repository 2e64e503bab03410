import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, sign, verify } from 'node:crypto';
import fs, { existsSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, checkpointSigned, checkpointText, type AuditLogOptions } from '../../broker/audit/log';
import { exportAuditFile } from '../../broker/audit/export';
import { compareWal } from '../../broker/audit/walcheck';
import { verifyAuditFile } from '../../broker/audit/verify';
import { WAL_REGION_BYTES, walPath } from '../../broker/audit/wal';
import { ManualClock } from '../../broker/core/clock';
import { isWritError } from '../../broker/errors';
import type { AuditEntry, AuditRecord } from '../../broker/protocol';

const ZERO = '0'.repeat(64);
const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const signer = { kid: 'k1', sign: (d: Uint8Array) => sign(null, d, privateKey) };

let dir: string;
let path: string;
let clock: ManualClock;
const logs: AuditLog[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'writ-audit-log-'));
  path = join(dir, 'state', 'audit.jsonl');
  clock = new ManualClock(Date.UTC(2026, 0, 1));
});

afterEach(async () => {
  await Promise.allSettled(logs.splice(0).map((l) => l.close()));
  await rm(dir, { recursive: true, force: true });
});

async function open(extra: Partial<AuditLogOptions> = {}): Promise<AuditLog> {
  const log = await AuditLog.open({ path, session: 'ses_1', user: 'alice', clock, signer, checkpointIntervalMs: 0, ...extra });
  logs.push(log);
  return log;
}

/** Opens the log again as a start after a crash would (the first handle left as it is): its record count. */
async function abandonedReopen(): Promise<number> {
  const again = await open({ session: 'ses_again' });
  return again.count;
}

async function fileLines(p = path): Promise<string[]> {
  const text = await readFile(p, 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

const minted = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, scopes: ['repo:read'], outcome: 'success' });

async function expectCode(p: Promise<unknown>, code: 'WRIT_AUDIT_WRITE_FAILED' | 'WRIT_AUDIT_CORRUPT'): Promise<Error> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isWritError(e, code)).toBe(true);
  return e as Error;
}

describe('checkpointSigned: the one signature check behind checkpoints and a broker\'s seal', () => {
  const head = 'ab'.repeat(32);
  const sig = sign(null, Buffer.from(checkpointText('writ-audit/v1', 7, head), 'utf8'), privateKey).toString('base64url');
  it('holds for the key, origin, count and head signed, and for nothing else', () => {
    expect(checkpointSigned(publicKey, 'writ-audit/v1', { count: 7, head, sig })).toBe(true);
    expect(checkpointSigned(publicKey, 'writ-audit/v2', { count: 7, head, sig })).toBe(false);
    expect(checkpointSigned(publicKey, 'writ-audit/v1', { count: 8, head, sig })).toBe(false);
    expect(checkpointSigned(publicKey, 'writ-audit/v1', { count: 7, head: 'cd'.repeat(32), sig })).toBe(false);
    expect(checkpointSigned(generateKeyPairSync('ed25519').publicKey, 'writ-audit/v1', { count: 7, head, sig })).toBe(false);
  });
  it('is false, never a throw, for no key, a key of another type, or a signature that is not one', () => {
    expect(checkpointSigned(undefined, 'writ-audit/v1', { count: 7, head, sig })).toBe(false);
    expect(checkpointSigned(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, 'writ-audit/v1', { count: 7, head, sig })).toBe(false);
    expect(checkpointSigned(publicKey, 'writ-audit/v1', { count: 7, head, sig: 'not a signature' })).toBe(false);
    expect(checkpointSigned(publicKey, 'writ-audit/v1', { count: 7, head, sig: '' })).toBe(false);
  });
});

describe('AuditLog chain', () => {
  it('writes one record per line in a fixed key order, each prev hashing the previous line', async () => {
    const log = await open();
    // Keys deliberately out of order: the log fixes the order, not the caller.
    await log.append({ detail: { kid: 'k1' }, event: 'broker.started' });
    clock.advance(1500);
    await log.append({ outcome: 'success', jti: 'jti_1', event: 'token.minted', agent: { id: 'agt_1', name: 'claude', kind: 'cli', parents: [] } });
    const r3 = await log.append({ event: 'revoked', detail: { target: 'all' }, outcome: undefined });

    const lines = await fileLines();
    expect(lines).toEqual([
      `{"v":1,"seq":0,"ts":"2026-01-01T00:00:00.000Z","session":"ses_1","event":"broker.started","user":"alice","detail":{"kid":"k1"},"prev":"${ZERO}"}`,
      `{"v":1,"seq":1,"ts":"2026-01-01T00:00:01.500Z","session":"ses_1","event":"token.minted","user":"alice","agent":{"id":"agt_1","name":"claude","kind":"cli","parents":[]},"jti":"jti_1","outcome":"success","prev":"${sha(lines[0]!)}"}`,
      `{"v":1,"seq":2,"ts":"2026-01-01T00:00:01.500Z","session":"ses_1","event":"revoked","user":"alice","detail":{"target":"all"},"prev":"${sha(lines[1]!)}"}`,
    ]);
    expect(r3).toEqual(JSON.parse(lines[2]!));
    expect(log.count).toBe(3);
    expect(log.head).toBe(sha(lines[2]!));
  });

  it('orders 500 concurrent appends by call order and resolves them all', async () => {
    const log = await open();
    const records = await Promise.all(Array.from({ length: 500 }, (_, i) => log.append(minted(i))));
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(records.map((r) => r.jti)).toEqual(Array.from({ length: 500 }, (_, i) => `jti_${i}`));
    const lines = await fileLines();
    expect(lines).toHaveLength(500);
    let prev = ZERO;
    lines.forEach((line, i) => {
      const r = JSON.parse(line) as AuditRecord;
      expect(r.seq).toBe(i);
      expect(r.prev).toBe(prev);
      prev = sha(line);
    });
    expect(log.head).toBe(prev);
    expect(log.count).toBe(500);
  });

  it('keeps appends made while a batch is syncing for the next batch, in order', async () => {
    const log = await open();
    const first = log.append(minted(0));
    await new Promise((r) => setImmediate(r)); // the first batch is now in flight
    const rest = Array.from({ length: 50 }, (_, i) => log.append(minted(i + 1)));
    const all = await Promise.all([first, ...rest]);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 51 }, (_, i) => i));
    expect((await fileLines()).map((l) => (JSON.parse(l) as AuditRecord).jti)).toEqual(all.map((r) => r.jti));
  });

  it('acknowledges batches strictly in file order while two are syncing at once, and close waits for both', async () => {
    const seen: number[] = [];
    const log = await open({ onRecord: (r) => seen.push(r.seq) });
    const resolved: number[] = [];
    const all: Promise<AuditRecord>[] = [];
    for (let wave = 0; wave < 20; wave++) {
      // Each wave lands while the previous one's flush may still be running.
      for (let i = 0; i < 5; i++) all.push(log.append(minted(wave * 5 + i)).then((r) => (resolved.push(r.seq), r)));
      await new Promise((r) => setImmediate(r));
    }
    const closing = log.close();
    await Promise.all(all);
    await closing;
    const order = Array.from({ length: 100 }, (_, i) => i);
    expect(resolved).toEqual(order);
    expect(seen).toEqual([...order, 100]);
    const lines = await fileLines();
    expect(lines.map((l) => (JSON.parse(l) as AuditRecord).seq)).toEqual([...order, 100]);
    expect(JSON.parse(lines[100]!)).toMatchObject({ event: 'checkpoint', checkpoint: { count: 100, head: sha(lines[99]!) } });
  });

  it('continues seq and chain when reopened', async () => {
    const a = await open();
    await a.append(minted(0));
    await a.append(minted(1));
    await a.close(); // adds a checkpoint at seq 2
    const before = await fileLines();
    expect(before).toHaveLength(3);

    const b = await open({ session: 'ses_2' });
    expect(b.count).toBe(3);
    expect(b.head).toBe(sha(before[2]!));
    const r = await b.append(minted(2));
    expect(r.seq).toBe(3);
    expect(r.prev).toBe(sha(before[2]!));
    expect(r.session).toBe('ses_2');
    expect((await fileLines()).slice(0, 3)).toEqual(before);
  });

  it('rejects an invalid entry without spending a seq or failing the log', async () => {
    const log = await open();
    const e = await expectCode(log.append({ event: 'token.minted', exp: 1.5 }), 'WRIT_AUDIT_WRITE_FAILED');
    expect(e.message).toContain('exp');
    await expectCode(log.append({ event: 'token.minted', bogus: 1 } as AuditEntry), 'WRIT_AUDIT_WRITE_FAILED');
    // Checkpoints come from the log only.
    await expectCode(log.append({ event: 'checkpoint' }), 'WRIT_AUDIT_WRITE_FAILED');
    expect(log.failed).toBe(false);
    expect((await log.append(minted(0))).seq).toBe(0);
  });

  // Found by the crash fuzzer's author: a record longer than open reads back was written, and a crash that left it
  // last made the next start refuse the log ("last line is too long").
  it('rejects a record longer than open reads back (1 MiB), and the log reopens after it', async () => {
    const log = await open();
    const long = (n: number): AuditEntry => ({ event: 'token.minted', jti: 'jti_long', outcome: 'success', detail: { pad: 'é'.repeat(n) } });
    const e = await expectCode(log.append(long(600_000)), 'WRIT_AUDIT_WRITE_FAILED'); // 1.2 MB in UTF-8
    expect(e.message).toBe('audit entry rejected: longer than 1048576 bytes');
    expect(log.failed).toBe(false);
    expect((await log.append(long(400_000))).seq).toBe(0); // 800 kB: taken
    expect(await abandonedReopen()).toBe(1);
  });

  it('calls onRecord in file order once each record is on disk', async () => {
    const seen: number[] = [];
    let onDisk = true;
    const log = await open({
      onRecord: (r) => {
        seen.push(r.seq);
        void readFile(path, 'utf8').then((t) => (onDisk &&= t.includes(`"seq":${r.seq},`)));
      },
    });
    await Promise.all([log.append(minted(0)), log.append(minted(1)), log.append(minted(2))]);
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual([0, 1, 2]);
    expect(onDisk).toBe(true);
  });

  it('creates the file 0600 in a 0700 folder, and tightens an existing loose file', async () => {
    await open();
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'state'))).mode & 0o777).toBe(0o700);

    const other = join(dir, 'loose.jsonl');
    await writeFile(other, '');
    await chmod(other, 0o644);
    const log = await AuditLog.open({ path: other, session: 's', user: 'u', clock, signer, checkpointIntervalMs: 0 });
    logs.push(log);
    expect((await stat(other)).mode & 0o777).toBe(0o600);
  });
});

describe('AuditLog recovery', () => {
  it('truncates a torn final line and records audit.recovered with the exact byte count', async () => {
    const a = await open();
    await a.append(minted(0));
    await a.append(minted(1));
    await a.close();
    const good = await readFile(path, 'utf8');
    const torn = '{"v":1,"seq":3,"ts":"2026-01-01T0';
    await appendFile(path, torn);

    const b = await open();
    const lines = await fileLines();
    expect(lines).toHaveLength(4);
    expect((await readFile(path, 'utf8')).startsWith(good)).toBe(true);
    const rec = JSON.parse(lines[3]!) as AuditRecord;
    expect(rec).toMatchObject({ seq: 3, event: 'audit.recovered', detail: { truncatedBytes: Buffer.byteLength(torn) } });
    expect(rec.prev).toBe(sha(lines[2]!));
    expect(b.count).toBe(4);
  });

  it('treats a file that is one torn fragment as empty', async () => {
    await mkdir(join(dir, 'state'));
    await writeFile(path, '{"v":1,"se');
    const log = await open();
    const lines = await fileLines();
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ seq: 0, event: 'audit.recovered', detail: { truncatedBytes: 10 }, prev: ZERO });
    expect(log.count).toBe(1);
  });

  it('refuses a file whose last complete line is not a record, naming the byte offset and not the content', async () => {
    const a = await open();
    await a.append(minted(0));
    await a.close();
    const size = (await stat(path)).size;
    await appendFile(path, '{"token":"hunter2-not-a-record"}\n{"partial');
    const before = await readFile(path);

    const e = await expectCode(open(), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toContain(path);
    expect(e.message).toContain(`byte offset ${size}`);
    expect(e.message).not.toContain('hunter2');
    expect(e.cause).toBeUndefined();
    // Nothing is cut off a file we could not make sense of.
    expect(await readFile(path)).toEqual(before);
  });
});

describe('AuditLog fails closed', () => {
  it.skipIf(!existsSync('/dev/full'))('rejects a batch whose write fails (ENOSPC) and every append after it', async () => {
    const log = await AuditLog.open({ path: '/dev/full', session: 's', user: 'u', clock, signer, checkpointIntervalMs: 0 });
    const batch = await Promise.allSettled([log.append(minted(0)), log.append(minted(1)), log.append(minted(2))]);
    for (const r of batch) {
      expect(r.status).toBe('rejected');
      const err = (r as PromiseRejectedResult).reason as Error;
      expect(isWritError(err, 'WRIT_AUDIT_WRITE_FAILED')).toBe(true);
      expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    expect(log.failed).toBe(true);
    expect(log.count).toBe(0);

    let settled = false;
    const later = log.append(minted(3)).finally(() => (settled = true));
    await Promise.resolve();
    await Promise.resolve();
    expect(settled).toBe(true); // rejected at once, without touching the disk
    const e = await expectCode(later, 'WRIT_AUDIT_WRITE_FAILED');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
    await expectCode(log.checkpoint(), 'WRIT_AUDIT_WRITE_FAILED');
    await log.close();
    await log.close();
  });

  it('fails the log when the signer fails at a checkpoint boundary', async () => {
    const broken = { kid: 'k1', sign: (): Uint8Array => { throw new Error('keychain locked'); } };
    const log = await open({ signer: broken, checkpointEvery: 2 });
    await log.append(minted(0));
    await expectCode(log.append(minted(1)), 'WRIT_AUDIT_WRITE_FAILED');
    expect(log.failed).toBe(true);
    await expectCode(log.append(minted(2)), 'WRIT_AUDIT_WRITE_FAILED');
    expect(await fileLines()).toHaveLength(1);
  });

  it('refuses appends once closing, and close is idempotent', async () => {
    const log = await open();
    await log.append(minted(0));
    const c1 = log.close();
    await expectCode(log.append(minted(1)), 'WRIT_AUDIT_WRITE_FAILED');
    await Promise.all([c1, log.close()]);
    expect(await fileLines()).toHaveLength(2);
  });
});

describe('AuditLog checkpoints', () => {
  const verifyCheckpoint = (r: AuditRecord): boolean =>
    verify(null, Buffer.from(checkpointText('writ-audit/v1', r.checkpoint!.count, r.checkpoint!.head)), publicKey, Buffer.from(r.checkpoint!.sig, 'base64url'));

  it('signs after every N records and at close', async () => {
    const log = await open({ checkpointEvery: 3 });
    for (let i = 0; i < 7; i++) await log.append(minted(i));
    await log.close();
    const lines = await fileLines();
    const recs = lines.map((l) => JSON.parse(l) as AuditRecord);
    expect(recs.map((r) => r.event === 'checkpoint')).toEqual([false, false, false, true, false, false, false, true, false, true]);
    for (const [i, r] of recs.entries()) {
      if (r.event !== 'checkpoint') continue;
      expect(r.checkpoint).toMatchObject({ count: i, head: sha(lines[i - 1]!), kid: 'k1' });
      expect(r.prev).toBe(r.checkpoint!.head);
      expect(verifyCheckpoint(r)).toBe(true);
    }
  });

  it('signs on demand only when something is unsigned, with the configured origin', async () => {
    const log = await open({ origin: 'example/audit' });
    expect(await log.checkpoint()).toBeNull();
    await log.append(minted(0));
    const cp = await log.checkpoint();
    expect(cp).toMatchObject({ seq: 1, event: 'checkpoint', checkpoint: { count: 1 } });
    expect(verify(null, Buffer.from(`example/audit\n1\n${cp!.prev}\n`), publicKey, Buffer.from(cp!.checkpoint!.sig, 'base64url'))).toBe(true);
    expect(await log.checkpoint()).toBeNull();
    await log.close();
    expect(await fileLines()).toHaveLength(2); // nothing new to sign at close
  });

  it('signs on a timer while records are unsigned', async () => {
    const log = await open({ checkpointIntervalMs: 20 });
    await log.append(minted(0));
    const deadline = Date.now() + 3000;
    while (log.count < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    const recs = (await fileLines()).map((l) => JSON.parse(l) as AuditRecord);
    expect(recs.map((r) => r.event)).toEqual(['token.minted', 'checkpoint']);
    expect(verifyCheckpoint(recs[1]!)).toBe(true);
    await new Promise((r) => setTimeout(r, 60));
    expect(log.count).toBe(2); // nothing unsigned: no more checkpoints
  });

  it('signs the unsigned tail of an earlier run at close', async () => {
    // An earlier run that crashed: its file ends with an unsigned record.
    const crashed = await AuditLog.open({ path: join(dir, 'crashed.jsonl'), session: 's', user: 'u', clock, signer, checkpointIntervalMs: 0 });
    logs.push(crashed);
    await crashed.append(minted(0));
    await mkdir(join(dir, 'state'));
    await writeFile(path, await readFile(join(dir, 'crashed.jsonl')));

    const log = await open();
    await log.close();
    const recs = (await fileLines()).map((l) => JSON.parse(l) as AuditRecord);
    expect(recs.map((r) => r.event)).toEqual(['token.minted', 'checkpoint']);
  });
});

describe('AuditLog write-ahead file', () => {
  const keys = new Map([['k1', publicKey]]);

  /** A log whose process is gone without closing it: nothing more is written, nothing is synced at close. */
  async function abandoned(extra: Partial<AuditLogOptions> = {}): Promise<AuditLog> {
    return AuditLog.open({ path, session: 'ses_1', user: 'alice', clock, signer, checkpointIntervalMs: 0, ...extra });
  }

  /** The log as a power cut may leave it: only its first `keep` bytes reached the disk, then zeros. */
  async function powerCut(keep: number, zeros = 0): Promise<number> {
    const bytes = await readFile(path);
    await writeFile(path, Buffer.concat([bytes.subarray(0, keep), Buffer.alloc(zeros)]));
    return keep + zeros;
  }

  const lineStart = (lines: string[], i: number): number => lines.slice(0, i).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);

  async function exported(): Promise<string[]> {
    const chunks: Buffer[] = [];
    const out = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) });
    await exportAuditFile(path, out, 'jsonl', {});
    return Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean);
  }

  it('keeps the log plain JSON Lines that grows with each batch, so `tail -f` follows it', async () => {
    const log = await open();
    await log.append(minted(0));
    const tail = spawn('tail', ['-n', '+1', '-f', path], { stdio: ['ignore', 'pipe', 'ignore'] });
    let seen = '';
    tail.stdout.on('data', (d: Buffer) => (seen += d.toString('utf8')));
    try {
      for (let i = 1; i < 5; i++) await log.append(minted(i));
      const deadline = Date.now() + 20_000;
      while (seen.split('\n').length < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    } finally {
      tail.kill();
    }
    const text = await readFile(path, 'utf8');
    expect(text).not.toContain('\0');
    expect(seen).toBe(text);
    expect(text.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as AuditRecord).jti)).toEqual(['jti_0', 'jti_1', 'jti_2', 'jti_3', 'jti_4']);
    expect((await stat(walPath(path))).mode & 0o777).toBe(0o600);
  });

  it('restores acknowledged records a power cut took from the log: it opens, verifies and exports exactly them', async () => {
    const a = await abandoned();
    const acked = await Promise.all(Array.from({ length: 20 }, (_, i) => a.append(minted(i))));
    for (let i = 20; i < 40; i++) acked.push(await a.append(minted(i)));
    const lines = await fileLines();
    expect(lines).toHaveLength(40);
    // Record 25 reached the disk half written, 26 onwards not at all; the filesystem shows zeros after it.
    const cut = lineStart(lines, 25) + 30;
    const size = await powerCut(cut, 4096);

    const b = await open();
    expect(b.count).toBe(41);
    const after = await fileLines();
    expect(after.slice(0, 40)).toEqual(lines);
    const rec = JSON.parse(after[40]!) as AuditRecord;
    expect(rec).toMatchObject({ seq: 40, event: 'audit.recovered', detail: { truncatedBytes: size - lineStart(lines, 25), replayedRecords: 15 } });
    expect(rec.prev).toBe(sha(lines[39]!));
    await b.close();

    expect(await verifyAuditFile(path, keys)).toEqual({ ok: true, records: 42, checkpoints: 1, lastCheckpointSeq: 41, unsignedTail: 0 });
    const out = await exported();
    expect(out.slice(0, 40)).toEqual(lines);
    expect(out.slice(0, 40).map((l) => (JSON.parse(l) as AuditRecord).jti)).toEqual(acked.map((r) => r.jti));
    expect(out.slice(40).map((l) => (JSON.parse(l) as AuditRecord).event)).toEqual(['audit.recovered', 'checkpoint']);
  });

  it('stops restoring at a torn batch in the write-ahead file: only whole records that chain come back', async () => {
    const a = await abandoned();
    for (let i = 0; i < 15; i++) await a.append(minted(i));
    const lines = await fileLines();
    // The batch holding record 12 never finished reaching the write-ahead file: zeros from its middle on.
    const wal = await readFile(walPath(path));
    const at = wal.indexOf('"jti":"jti_12"');
    expect(at).toBeGreaterThan(0);
    await writeFile(walPath(path), Buffer.concat([wal.subarray(0, at), Buffer.alloc(wal.length - at)]));
    await powerCut(lineStart(lines, 5));

    const b = await open();
    expect(b.count).toBe(13);
    const after = await fileLines();
    expect(after.slice(0, 12)).toEqual(lines.slice(0, 12));
    expect(JSON.parse(after[12]!)).toMatchObject({ seq: 12, event: 'audit.recovered', detail: { truncatedBytes: 0, replayedRecords: 7 } });
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 14 });
  });

  // Found by review: the record a start writes about a crash counted as one unsigned record, whatever the crash had
  // left unsigned, so the count trigger did not sign when it reached the limit. Crashes at start, one after another,
  // then grew the unsigned tail past it, and the next start refused a healthy log as rewritten.
  it('signs at the limit when a start records a crash, so crashes at start one after another never leave more unsigned', async () => {
    const a = await abandoned({ checkpointEvery: 5 });
    for (let i = 0; i < 4; i++) await a.append(minted(i)); // four unsigned: one short of the limit
    const found: Record<string, unknown> = {};
    for (const session of ['ses_2', 'ses_3', 'ses_4']) {
      await appendFile(path, '{"seq":'); // a torn fragment: the start records the crash (audit.recovered)
      found[session] = (await abandoned({ checkpointEvery: 5, session })).unsignedAtOpen;
      // then the process dies before anything else is written
    }
    expect(found).toEqual({ ses_2: { firstSeq: 0, records: 4 }, ses_3: undefined, ses_4: { firstSeq: 6, records: 1 } });
    const events = (await fileLines()).map((l) => (JSON.parse(l) as AuditRecord).event);
    expect(events).toEqual([...Array(4).fill('token.minted'), 'audit.recovered', 'checkpoint', 'audit.recovered', 'audit.recovered']);
    const c = await abandoned({ checkpointEvery: 5, session: 'ses_5' });
    await c.close();
    expect(await verifyAuditFile(path, keys)).toEqual({ ok: true, records: 9, checkpoints: 2, lastCheckpointSeq: 8, unsignedTail: 0 });
  });

  it('changes nothing after a process kill: the log already holds every record', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const before = await readFile(path);
    const b = await open();
    expect(b.count).toBe(10);
    expect(await readFile(path)).toEqual(before);
  });

  it('never cuts a record of the log that the write-ahead file does not hold', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    // Record 6 on disk differs from the one in the write-ahead file (another writer, or an edit): no guessing.
    const other = JSON.stringify({ ...(JSON.parse(lines[6]!) as AuditRecord), jti: 'jti_other' });
    await writeFile(path, [...lines.slice(0, 6), other].join('\n') + '\n');
    const before = await readFile(path);
    const b = await open();
    expect(b.count).toBe(7);
    expect(await readFile(path)).toEqual(before);
  });

  it('ignores a write-ahead file left by a log that was removed', async () => {
    const a = await abandoned();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await unlink(path);
    const b = await open();
    expect(b.count).toBe(0);
    await b.append(minted(100));
    expect((await fileLines()).map((l) => (JSON.parse(l) as AuditRecord).jti)).toEqual(['jti_100']);
  });

  it('restores nothing into a log that is another file than the one the write-ahead file names', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    // The same first five records, but in a file put in the log's place (another inode).
    const copy = Buffer.from(lines.slice(0, 5).join('\n') + '\n');
    await unlink(path);
    await writeFile(path, copy);
    const b = await open();
    expect(b.count).toBe(5);
    expect(await readFile(path)).toEqual(copy);
  });

  /**
   * A log of two runs: the first closed (6 records, its checkpoint last), the second gone without closing after
   * three more, whose generation of the write-ahead file starts on the first six. Returns the log and that file.
   */
  async function secondRun(): Promise<{ log: Buffer; wal: Buffer; lines: string[] }> {
    const a = await open();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await a.close();
    const b = await abandoned();
    for (let i = 5; i < 8; i++) await b.append(minted(i));
    const lines = await fileLines();
    expect(lines).toHaveLength(9);
    return { log: await readFile(path), wal: await readFile(walPath(path)), lines };
  }

  /** The refusal for a write-ahead file whose generation began on a log's first `count` records, `bytes` long. */
  const mismatch = (count: number, bytes: number) =>
    `audit log ${path}: its write-ahead file ${walPath(path)} was written for a log whose first ${count} records (${bytes} bytes) this one does not begin with: ` +
    `it is another log's, or this log was replaced or moved aside. Nothing was restored from it. Move ${walPath(path)} aside (keep it with the log it came from: it may hold records that log lost; \`writ audit wal --file LOG --wal FILE\` compares the two) to open this log`;

  // It used to be ignored and then overwritten: a log rewritten in place (the same inode) opened as if it were the
  // one the file was written for, and a new log beside a moved one's file silently lost the records it held.
  it('refuses, touching neither, a log that does not begin with the prefix its write-ahead file names: replaced in place, or moved aside', async () => {
    const { log, wal, lines } = await secondRun();
    const base = lineStart(lines, 6);
    const expected = mismatch(6, base);
    // Another log's records written over this one (same inode, as `cp other.jsonl audit.jsonl` does).
    const other = join(dir, 'other.jsonl');
    const o = await AuditLog.open({ path: other, session: 'ses_o', user: 'bob', clock, signer, checkpointIntervalMs: 0 });
    for (let i = 0; i < 12; i++) await o.append(minted(100 + i));
    await o.close();
    const foreign = await readFile(other);
    await writeFile(path, foreign);
    const e = await expectCode(open({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toBe(expected);
    expect((e as unknown as { data: unknown }).data).toEqual({ count: 6, offset: base });
    expect(await readFile(path)).toEqual(foreign);
    expect(await readFile(walPath(path))).toEqual(wal);

    // The log moved aside (as the refusals at open advise) and a new one started beside its write-ahead file.
    await writeFile(path, log);
    await rename(path, `${path}.old`);
    const moved = await expectCode(open({ session: 'ses_3' }), 'WRIT_AUDIT_CORRUPT');
    expect(moved.message).toBe(expected);
    expect(await readFile(path)).toEqual(Buffer.alloc(0));
    expect(await readFile(walPath(path))).toEqual(wal);
    // Moved aside with its log, as the message says: the new log opens, and the old pair still restores.
    await rename(walPath(path), `${path}.old.wal`);
    const fresh = await open({ session: 'ses_4' });
    expect(fresh.count).toBe(0);
    await fresh.close();
    const old = await AuditLog.open({ path: `${path}.old`, session: 'ses_5', user: 'alice', clock, signer, checkpointIntervalMs: 0 });
    logs.push(old);
    expect(old.count).toBe(9);
  });

  it('refuses a write-ahead file copied from another log, restoring nothing from it', async () => {
    const { log } = await secondRun();
    // Another state folder's log and its file, of two runs as well (the second begins on the first's 7 records).
    const other = join(dir, 'other', 'audit.jsonl');
    for (const session of ['ses_o1', 'ses_o2']) {
      const o = await AuditLog.open({ path: other, session, user: 'bob', clock, signer, checkpointIntervalMs: 0 });
      for (let i = 0; i < 6; i++) await o.append(minted(200 + i));
      await o.close();
    }
    const copied = await readFile(walPath(other));
    await writeFile(walPath(path), copied);
    const e = await expectCode(open({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toBe(mismatch(7, lineStart(await fileLines(other), 7)));
    expect(await readFile(path)).toEqual(log);
    expect(await readFile(walPath(path))).toEqual(copied);
  });

  it('restores nothing from a write-ahead file whose header fits the log but whose records do not chain on from it', async () => {
    const { wal, lines } = await secondRun();
    // The power cut took the second run's records from the log; the file's copy of the first is not the one that
    // follows the prefix (its prev altered, the length kept), so neither it nor the two after it chain on.
    await powerCut(lineStart(lines, 6));
    const before = await readFile(path);
    const at = wal.indexOf('"jti":"jti_5"');
    const prev = wal.indexOf('"prev":"', at) + '"prev":"'.length;
    const altered = Buffer.from(wal);
    altered[prev] = altered[prev] === 0x30 ? 0x31 : 0x30;
    await writeFile(walPath(path), altered);
    const b = await open();
    expect(b.count).toBe(6);
    expect(await readFile(path)).toEqual(before);
    await b.append(minted(9));
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 8 });
  });

  it('restores across wraps of the write-ahead file and after a batch too big for it', async () => {
    const big = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, outcome: 'success', detail: { pad: 'x'.repeat(100_000) } });
    const a = await abandoned();
    // About 40 of these fill the write-ahead file: 60 one by one wrap it once.
    for (let i = 0; i < 60; i++) await a.append(big(i));
    let lines = await fileLines();
    await powerCut(lineStart(lines, 50) + 10);
    const b = await abandoned();
    expect(b.count).toBe(61);
    lines = await fileLines();
    expect(lines.slice(0, 60).map((l) => (JSON.parse(l) as AuditRecord).jti)).toEqual(Array.from({ length: 60 }, (_, i) => `jti_${i}`));

    // One batch of more than the write-ahead file holds goes to the log alone, synced there; later ones chain on.
    const burst = Array.from({ length: Math.ceil(WAL_REGION_BYTES / 100_000) + 5 }, (_, i) => b.append(big(1000 + i)));
    await Promise.all(burst);
    for (let i = 0; i < 3; i++) await b.append(minted(2000 + i));
    lines = await fileLines();
    await powerCut(lineStart(lines, lines.length - 3));
    const c = await open();
    expect(c.count).toBe(lines.length + 1);
    await c.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: lines.length + 2 });
  });

  const big = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_${i}`, outcome: 'success', detail: { pad: 'x'.repeat(100_000) } });
  const jtis = (lines: string[]): (string | undefined)[] => lines.map((l) => (JSON.parse(l) as AuditRecord).jti);
  const upTo = (n: number): string[] => Array.from({ length: n }, (_, i) => `jti_${i}`);
  /** The header of the write-ahead file's region `r` (two regions of WAL_REGION_BYTES). */
  async function header(r: number): Promise<{ wal: number; gen: number; count: number; offset: number }> {
    const wal = await readFile(walPath(path));
    const block = wal.subarray(r * WAL_REGION_BYTES, r * WAL_REGION_BYTES + 512);
    return JSON.parse(block.subarray(0, block.indexOf(10)).toString('utf8')) as { wal: number; gen: number; count: number; offset: number };
  }

  /**
   * Region `r` as an earlier Writ wrote it: a version 1 (no generation) or 2 header with the same fields, and its
   * batches without the seals version 3 ends them with.
   */
  async function asVersion(v: 1 | 2, r = 0, gen?: number): Promise<void> {
    const wal = await readFile(walPath(path));
    const start = r * WAL_REGION_BYTES;
    const region = wal.subarray(start, Math.min(wal.length, start + WAL_REGION_BYTES));
    const { wal: _v, gen: was, ...rest } = JSON.parse(region.subarray(0, region.indexOf(10)).toString('utf8')) as Record<string, unknown>;
    const head = Buffer.alloc(512);
    head.write(`${JSON.stringify(v === 1 ? { wal: 1, ...rest } : { wal: 2, gen: gen ?? was, ...rest })}\n`, 'utf8');
    const body = Buffer.from(
      region
        .subarray(512)
        .toString('latin1')
        .split('\n')
        .filter((l) => !/^\{"head":"[0-9a-f]{64}"\}$/.test(l))
        .join('\n'),
      'latin1',
    );
    const out = Buffer.alloc(region.length);
    head.copy(out, 0);
    body.copy(out, 512);
    out.copy(wal, start);
    await writeFile(walPath(path), wal);
  }

  // A full region hands over to the other without waiting for the log's sync, so a power cut can take from the log
  // records from before where the newest generation began: the generation before it, in the other region, has them.
  it('restores records the log lost from before the newest generation began, from the generation before it', async () => {
    const a = await abandoned();
    // About 40 fill a region: 60 one by one start a second generation in the other region.
    for (let i = 0; i < 60; i++) await a.append(big(i));
    expect(await header(1)).toMatchObject({ wal: 3, gen: 2 });
    const second = (await header(1)).count;
    expect(second).toBeGreaterThan(30);
    let lines = await fileLines();
    await powerCut(lineStart(lines, 30) + 10);
    const b = await abandoned();
    expect(b.count).toBe(61);
    lines = await fileLines();
    expect(jtis(lines.slice(0, 60))).toEqual(upTo(60));
    expect(JSON.parse(lines[60]!)).toMatchObject({ event: 'audit.recovered', detail: { truncatedBytes: 10, replayedRecords: 30 } });
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 62 });
  });

  it('restores through two generations, and refuses a log that lost what the older of them began on', async () => {
    const a = await abandoned();
    for (let i = 0; i < 100; i++) await a.append(big(i));
    const newest = await header(0);
    expect(newest).toMatchObject({ wal: 3, gen: 3 });
    expect((await header(1)).gen).toBe(2);
    const older = (await header(1)).count;
    const full = await fileLines();
    const saved = { log: await readFile(path), wal: await readFile(walPath(path)) };
    // Between the two bases: the older generation leads on to the newest one.
    await powerCut(lineStart(full, older + 5));
    const b = await abandoned();
    expect(b.count).toBe(101);
    expect(jtis((await fileLines()).slice(0, 100))).toEqual(upTo(100));
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 102 });
    // Before the older base: the log was synced up to it before the newest generation began, so this log is not
    // the one these generations were written for. Nothing is restored and neither file is touched.
    await writeFile(path, saved.log);
    await writeFile(walPath(path), saved.wal);
    const cut = await powerCut(lineStart(full, older - 5));
    const e = await expectCode(abandoned(), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toBe(mismatch(newest.count, newest.offset));
    expect((await readFile(path)).length).toBe(cut);
    // By digest: toEqual on 8 MB compares byte by byte for most of a minute.
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    expect(digest(await readFile(walPath(path)))).toBe(digest(saved.wal));
  });

  it('starts a new generation without waiting for the log to reach the disk; the one after waits for it', async () => {
    const a = await abandoned();
    const logIno = (await stat(path)).ino;
    const held: (() => void)[] = [];
    const originalFdatasync = fs.fdatasync;
    Object.assign(fs, {
      fdatasync: ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
        if (fs.fstatSync(fd).ino === logIno) held.push(() => originalFdatasync(fd, cb));
        else originalFdatasync(fd, cb);
      }) as typeof fs.fdatasync,
    });
    syncBuiltinESMExports();
    try {
      // Through the first hand-over: every record acknowledged while the log's sync is held.
      for (let i = 0; i < 60; i++) await a.append(big(i));
      expect((await header(1)).gen).toBe(2);
      expect(held).toHaveLength(1);
      // Through the second: the region it would overwrite holds records the log may not have yet, so it waits.
      let released = false;
      const acked: boolean[] = [];
      const more = (async () => {
        for (let i = 60; i < 120; i++) {
          await a.append(big(i));
          acked.push(released);
        }
      })();
      for (let seen = -1; seen !== acked.length; ) {
        seen = acked.length;
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(acked.length).toBeGreaterThan(0);
      expect(acked.length).toBeLessThan(60);
      expect(acked.every((r) => !r)).toBe(true);
      expect(held).toHaveLength(1);
      expect((await header(0)).gen).toBe(1);
      const waited = acked.length;
      released = true;
      held.shift()!();
      await more;
      expect(acked.slice(waited).every((r) => r)).toBe(true);
      expect((await header(0)).gen).toBe(3);
    } finally {
      Object.assign(fs, { fdatasync: originalFdatasync });
      syncBuiltinESMExports();
      for (const release of held) release();
    }
    await a.close();
    expect(jtis(await fileLines()).slice(0, 120)).toEqual(upTo(120));
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 121 });
  });

  // Found by review: a batch too big for the file gave up both regions without waiting for that sync.
  /** Runs `run` with the log's next sync failing with EIO, reported once as Linux does (a failed writeback). */
  async function failingNextLogSync(run: () => Promise<void>): Promise<void> {
    const logIno = existsSync(path) ? (await stat(path)).ino : -1;
    const originalFdatasync = fs.fdatasync;
    let failed = false;
    Object.assign(fs, {
      fdatasync: ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
        if (!failed && fs.fstatSync(fd).ino === logIno) {
          failed = true;
          return void process.nextTick(cb, Object.assign(new Error('EIO: injected'), { code: 'EIO' }));
        }
        originalFdatasync(fd, cb);
      }) as typeof fs.fdatasync,
    });
    syncBuiltinESMExports();
    try {
      await run();
      expect(failed).toBe(true);
    } finally {
      Object.assign(fs, { fdatasync: originalFdatasync });
      syncBuiltinESMExports();
    }
  }

  const aside = (): string => `${walPath(path)}.rejected`;
  const setAsideRefusal = (): string =>
    `audit log ${path}: its write-ahead file was set aside as ${aside()} when a write or sync failed (a batch reported as failed that could not be cut, ` +
    "or the log's own sync): it may hold acknowledged records the log lost. Compare it with the log (`writ audit wal`), then remove it, or rename it back to restore what the log lacks, to open the log";

  /** Every record acknowledged (jti_0 to jti_{n-1}) is in the set-aside file, whole. */
  async function allInAside(n: number): Promise<void> {
    const kept = await readFile(aside());
    expect(upTo(n).filter((j) => !kept.includes(`"jti":"${j}"`))).toEqual([]);
  }

  // A failed sync of the log is not reported again: a later sync, this run's or the next run's at open, succeeds
  // over pages that never reached the disk, and the next open would start a generation over what may be their only
  // copy. Found by review, each path: the sync behind a hand-over (and a batch too big for the file gave up both
  // regions without waiting for it), close's, open's, and the one for a batch too big for the file.
  it('fails the log at once and sets the write-ahead file aside, both regions whole, when the log\'s sync behind a new generation fails', async () => {
    const a = await abandoned();
    let acked = 0;
    await failingNextLogSync(async () => {
      for (let i = 0; i < 100; i++) {
        if (!(await a.append(big(i)).then(() => true, () => false))) break;
        acked++;
      }
      for (let i = 0; i < 200 && !existsSync(aside()); i++) await new Promise((r) => setTimeout(r, 10));
    });
    expect(a.failed).toBe(true);
    // At once: nothing acknowledged after the hand-over whose log sync failed (not at the next hand-over or close).
    const kept = await readFile(aside());
    const second = kept.subarray(WAL_REGION_BYTES, WAL_REGION_BYTES + 512);
    const base = (JSON.parse(second.subarray(0, second.indexOf(10)).toString('utf8')) as { gen: number; count: number });
    expect(base.gen).toBe(2);
    expect(acked).toBeGreaterThan(30);
    expect(acked).toBeLessThanOrEqual(base.count + 1);
    expect(existsSync(walPath(path))).toBe(false);
    await allInAside(acked);
    expect((await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT')).message).toBe(setAsideRefusal());
  });

  it('sets the write-ahead file aside when close\'s sync of the log fails, and the next open refuses', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    await failingNextLogSync(async () => {
      expect((await expectCode(a.close(), 'WRIT_AUDIT_WRITE_FAILED')).message).toBe(`audit log sync failed (EIO): ${path}`);
    });
    expect(existsSync(walPath(path))).toBe(false);
    await allInAside(10);
    expect((await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT')).message).toBe(setAsideRefusal());
  });

  it('sets the write-ahead file aside when open\'s sync of the log fails, and the next open refuses', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    await failingNextLogSync(async () => {
      await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_WRITE_FAILED');
    });
    await allInAside(10);
    expect((await expectCode(abandoned({ session: 'ses_3' }), 'WRIT_AUDIT_CORRUPT')).message).toBe(setAsideRefusal());
  });

  it('sets the write-ahead file aside when the sync of a batch too big for it fails, both regions given up for none', async () => {
    const a = await abandoned();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await failingNextLogSync(async () => {
      const burst = await Promise.allSettled(Array.from({ length: Math.ceil(WAL_REGION_BYTES / 100_000) + 5 }, (_, i) => a.append(big(100 + i))));
      expect(burst.map((r) => r.status)).toEqual(burst.map(() => 'rejected'));
    });
    expect(a.failed).toBe(true);
    await allInAside(5);
    await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT');
  });

  // Found by review: a batch too big for the file began a generation past itself, and when the log failed for
  // another reason while its sync ran, the batch was cut from the log and the header left naming a base past it.
  it('begins a generation again where a batch too big for the file began, when that batch is cut because the log failed meanwhile', async () => {
    let failSign = false;
    const flaky = { kid: 'k1', sign: (d: Uint8Array) => (failSign ? (() => { throw new Error('signer down'); })() : signer.sign(d)) };
    const a = await abandoned({ signer: flaky });
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    const before = await readFile(path);
    const logIno = (await stat(path)).ino;
    const originalFdatasync = fs.fdatasync;
    let hooked = false;
    Object.assign(fs, {
      fdatasync: ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
        // While the big batch's own sync of the log runs, a checkpoint fails (its signer is down): the log fails.
        if (!hooked && fs.fstatSync(fd).ino === logIno) {
          hooked = true;
          failSign = true;
          void a.checkpoint().catch(() => undefined);
        }
        originalFdatasync(fd, cb);
      }) as typeof fs.fdatasync,
    });
    syncBuiltinESMExports();
    try {
      const burst = await Promise.allSettled(Array.from({ length: Math.ceil(WAL_REGION_BYTES / 100_000) + 5 }, (_, i) => a.append(big(100 + i))));
      expect(burst.map((r) => r.status)).toEqual(burst.map(() => 'rejected'));
    } finally {
      Object.assign(fs, { fdatasync: originalFdatasync });
      syncBuiltinESMExports();
    }
    expect(hooked).toBe(true);
    await a.close().catch(() => undefined);
    expect(await readFile(path)).toEqual(before);
    expect(await header(0)).toMatchObject({ count: 5, offset: before.length });
    const b = await abandoned({ session: 'ses_2' });
    expect(b.count).toBe(5);
    await b.close();
  });

  // Found by review: a failed write while restoring set the file aside, though no sync failed and the next start
  // could restore from it; once removed, as the refusal said, the records were gone.
  it('leaves the write-ahead file in place when restoring from it fails on a write, and restores at the next start', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    await powerCut(lineStart(lines, 6));
    const originalWriteSync = fs.writeSync;
    Object.assign(fs, {
      writeSync: ((fd: number, buf: Uint8Array, off?: number, len?: number, pos?: number | null) => {
        if (pos === null || pos === undefined) throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
        return originalWriteSync(fd, buf, off, len, pos);
      }) as typeof fs.writeSync,
    });
    syncBuiltinESMExports();
    try {
      await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_WRITE_FAILED');
    } finally {
      Object.assign(fs, { writeSync: originalWriteSync });
      syncBuiltinESMExports();
    }
    expect(existsSync(walPath(path))).toBe(true);
    const b = await abandoned({ session: 'ses_3' });
    expect(b.count).toBe(11);
    expect(jtis((await fileLines()).slice(0, 10))).toEqual(upTo(10));
    await b.close();
  });

  // Found by review: only the line the newest base names was checked, and a crash may keep it without those before.
  it('repairs records the log lost before the newest generation\'s base even when the line at that base survived', async () => {
    const a = await abandoned();
    for (let i = 0; i < 60; i++) await a.append(big(i));
    const base = (await header(1)).offset;
    const lines = await fileLines();
    const log = await readFile(path);
    // Writes not yet synced reach the disk in any order: records 20 to 24 did not, everything else did.
    log.fill(0, lineStart(lines, 20), lineStart(lines, 25));
    expect(lineStart(lines, 25)).toBeLessThan(base);
    await writeFile(path, log);
    const b = await abandoned();
    expect(b.count).toBe(61);
    expect(jtis((await fileLines()).slice(0, 60))).toEqual(upTo(60));
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 62 });
  });

  // Found by review: an older generation that began on an empty log fits any log, so any log opened beside it.
  it('refuses a log moved aside or replaced in place after the first hand-over, though the older generation began on an empty log', async () => {
    const a = await abandoned();
    for (let i = 0; i < 60; i++) await a.append(big(i));
    await a.close();
    expect(await header(0)).toMatchObject({ gen: 1, offset: 0, count: 0 });
    const newest = await header(1);
    const wal = await readFile(walPath(path));
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    await rename(path, `${path}.old`);
    expect((await expectCode(abandoned(), 'WRIT_AUDIT_CORRUPT')).message).toBe(mismatch(newest.count, newest.offset));
    expect(digest(await readFile(walPath(path)))).toBe(digest(wal));
    // Replaced in place by another log's records.
    await rm(path, { force: true });
    await rename(`${path}.old`, path);
    const other = join(dir, 'other.jsonl');
    const o = await AuditLog.open({ path: other, session: 'ses_o', user: 'bob', clock, signer, checkpointIntervalMs: 0 });
    for (let i = 0; i < 12; i++) await o.append(minted(100 + i));
    await o.close();
    const before = await readFile(other);
    await writeFile(path, before);
    expect((await expectCode(abandoned(), 'WRIT_AUDIT_CORRUPT')).message).toBe(mismatch(newest.count, newest.offset));
    expect(await readFile(path)).toEqual(before);
    expect(digest(await readFile(walPath(path)))).toBe(digest(wal));
  });

  // Found by review: a version 1 Writ rewrites only the first region, and its stale second one then outranked it.
  it('after a version 1 Writ ran on the file, restores from its header, not the second region\'s older one', async () => {
    const a = await abandoned();
    for (let i = 0; i < 100; i++) await a.append(big(i));
    await a.close();
    expect([(await header(0)).gen, (await header(1)).gen]).toEqual([3, 2]);
    // A version 1 run: its header (wal: 1) at 0, its records after it; the second region as it was.
    const b = await abandoned();
    for (let i = 100; i < 110; i++) await b.append(minted(i));
    await asVersion(1, 0);
    const lines = await fileLines();
    await powerCut(lineStart(lines, 102) + 5);
    const c = await abandoned();
    expect(c.count).toBe(112);
    expect(jtis((await fileLines()).slice(102, 111))).toEqual(Array.from({ length: 9 }, (_, i) => `jti_${101 + i}`));
    // Numbered past every header in the file, the stale one too.
    expect((await header(0)).gen).toBe(3);
    await c.close();
  });

  /**
   * A power cut while record 59's batch was in flight: its log bytes reached the disk and its write-ahead copy did
   * not (never acknowledged); records `from` to `to` - 1 (acknowledged through the write-ahead file) never reached the log.
   */
  async function crashInFlight(from: number, to: number): Promise<void> {
    const w = await readFile(walPath(path));
    const at = w.indexOf('"jti":"jti_59"');
    w.fill(0, w.lastIndexOf(10, at) + 1, w.indexOf(10, at) + 1);
    await writeFile(walPath(path), w);
    const lines = await fileLines();
    const log = await readFile(path);
    log.fill(0, lineStart(lines, from), lineStart(lines, to));
    await writeFile(path, log);
  }

  // Found by review: the unacknowledged line was taken for the log's own record, so the hole stayed (or the log was
  // refused as another's). The log's sync behind a hand-over can write that line while its batch is in flight.
  it('restores a hole before or across the newest base when an unacknowledged batch reached the log, and cuts that batch', async () => {
    for (const across of [false, true]) {
      await rm(dir, { recursive: true, force: true });
      const a = await abandoned();
      for (let i = 0; i < 60; i++) await a.append(big(i));
      const base = (await header(1)).count;
      const from = across ? base - 3 : 20;
      await crashInFlight(from, across ? base + 3 : 25);
      const b = await abandoned();
      expect(b.count).toBe(60);
      const lines = await fileLines();
      expect(jtis(lines.slice(0, 59))).toEqual(upTo(59));
      expect(JSON.parse(lines[59]!)).toMatchObject({ event: 'audit.recovered', detail: { replayedRecords: 59 - from } });
      await b.close();
      expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 61 });
    }
  });

  it('refuses, touching neither, a log with a hole the write-ahead file could fill and a record of its own after it', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    const other = JSON.stringify({ ...(JSON.parse(lines[8]!) as AuditRecord), jti: 'jti_other' });
    const log = Buffer.from([...lines.slice(0, 5), '\0'.repeat(lines[5]!.length), lines[6], lines[7], other].join('\n') + '\n');
    await writeFile(path, log);
    const wal = await readFile(walPath(path));
    const e = await expectCode(abandoned(), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toBe(
      `audit log ${path}: it lost records from seq 5 on that its write-ahead file ${walPath(path)} holds, and has records after them that the write-ahead file does not: ` +
        'it was written to by something else. Nothing was restored. Run `writ audit verify` on it, and keep both files as evidence; move them aside to start a new log',
    );
    expect(await readFile(path)).toEqual(log);
    expect(await readFile(walPath(path))).toEqual(wal);
  });

  /**
   * Records 0-8 acknowledged one by one; record 9 and the checkpoint the count trigger signs with it are one batch,
   * in flight at a power cut: its write-ahead copy never reached the disk. Returns the log's lines (the batch is 9, 10).
   */
  async function inFlightPair(): Promise<string[]> {
    const a = await abandoned({ checkpointEvery: 10 });
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    expect(JSON.parse(lines[10]!)).toMatchObject({ event: 'checkpoint', seq: 10 });
    const w = await readFile(walPath(path));
    const at = w.indexOf('"jti":"jti_9"');
    w.fill(0, w.lastIndexOf(10, at) + 1, w.indexOf(10, w.indexOf('"event":"checkpoint"', at)) + 1);
    await writeFile(walPath(path), w);
    return lines;
  }

  /** The log with bytes `from` to `to` lost (zeros): pages a power cut kept from the disk. */
  async function losePages(from: number, to: number): Promise<void> {
    const log = await readFile(path);
    log.fill(0, from, to);
    await writeFile(path, log);
  }

  // Found by review: the rest of an unacknowledged batch after a lost page cannot be chained to, and was taken for
  // the log's own records (refused as written by something else, or kept with a hole in the log).
  it('cuts the rest of an unacknowledged batch after a lost page, restoring what was acknowledged, and says how many records went', async () => {
    const lines = await inFlightPair();
    await losePages(lineStart(lines, 5), lineStart(lines, 9) + 40);
    const b = await abandoned({ checkpointEvery: 10 });
    expect(b.count).toBe(11); // nine restored, the start's record of the crash, and the checkpoint its count calls for
    const after = await fileLines();
    expect(jtis(after.slice(0, 9))).toEqual(upTo(9));
    expect(JSON.parse(after[9]!)).toMatchObject({
      event: 'audit.recovered',
      detail: { truncatedBytes: Buffer.byteLength(lines.slice(5).join('\n') + '\n'), replayedRecords: 4, cutRecords: 1 },
    });
    expect(JSON.parse(after[10]!)).toMatchObject({ event: 'checkpoint', seq: 10 });
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true });
  });

  it('cuts an unacknowledged batch with a lost page when nothing acknowledged was lost, however the page fell', async () => {
    const cases: [string, (lines: string[]) => [number, number]][] = [
      ['its first line, newline kept', (l) => [lineStart(l, 9), lineStart(l, 10) - 1]],
      ['its first line and newline', (l) => [lineStart(l, 9), lineStart(l, 10)]],
      ['the start of its first line', (l) => [lineStart(l, 9), lineStart(l, 9) + 40]],
    ];
    for (const [, range] of cases) {
      await rm(dir, { recursive: true, force: true });
      const lines = await inFlightPair();
      await losePages(...range(lines));
      const b = await abandoned({ checkpointEvery: 10 });
      expect(b.count).toBe(11);
      expect(jtis((await fileLines()).slice(0, 9))).toEqual(upTo(9));
      await b.close();
      expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true });
    }
  });

  it('cuts an unacknowledged batch with a lost page that was the first of a generation (no record after the header)', async () => {
    const a = await abandoned();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await a.close();
    const b = await abandoned({ session: 'ses_2' });
    await b.append(minted(5));
    const lines = await fileLines();
    const w = await readFile(walPath(path));
    const at = w.indexOf('"jti":"jti_5"');
    w.fill(0, w.lastIndexOf(10, at) + 1, w.indexOf(10, at) + 1);
    await writeFile(walPath(path), w);
    await losePages(lineStart(lines, 6), lineStart(lines, 6) + 40);
    const c = await abandoned({ session: 'ses_3' });
    expect(c.count).toBe(7);
    await c.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true });
  });

  // Found by review: after a gap, any record past the sequence seen was cut, chained or not.
  it('refuses a hole followed by records of the log\'s own that jump ahead and do not chain, rather than cut them', async () => {
    const a = await abandoned();
    for (let i = 0; i < 10; i++) await a.append(minted(i));
    const lines = await fileLines();
    const foreign = (seq: number): string => JSON.stringify({ ...(JSON.parse(lines[9]!) as AuditRecord), seq, session: 'ses_other', prev: 'f'.repeat(64) });
    // Two that do not chain; and one alone after lines the write-ahead file holds (not right after the gap).
    for (const own of [[foreign(50), foreign(70)], [foreign(50)]]) {
      const log = Buffer.from([...lines.slice(0, 5), '\0'.repeat(lines[5]!.length), ...lines.slice(6), ...own].join('\n') + '\n');
      await writeFile(path, log);
      const e = await expectCode(abandoned({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT');
      expect(e.message).toContain('it lost records from seq 5 on that its write-ahead file');
      expect(await readFile(path)).toEqual(log);
    }
  });

  // Found by the crash fuzzer (seeds 72, 280, and 456 with large records): an unacknowledged batch whose page with
  // a line end was lost, the file's size kept, left more than 1 MiB without one, and the tail check refused the log.
  it('cuts an unacknowledged tail with no line end in its last MiB, past the write-ahead file\'s end', async () => {
    const a = await abandoned();
    await a.append(minted(0));
    await a.close();
    const rec = (k: string) => `${JSON.stringify({ v: 1, seq: 2, ts: 't', session: 's', event: 'token.minted', user: 'u', jti: k.repeat(700_000) })}\n`;
    const torn = Buffer.from(rec('p') + rec('q').slice(0, 500_000));
    const start = (await stat(path)).size;
    const nl = torn.indexOf(0x0a);
    const page = Math.floor((start + nl) / 4096) * 4096 - start;
    torn.fill(0, page, page + 4096); // the page with the first record's line end never reached the disk
    await appendFile(path, torn);
    const b = await abandoned({ session: 'ses_2' });
    expect(b.count).toBe(3);
    const lines = await fileLines();
    expect(lines.map((l) => (JSON.parse(l) as AuditRecord).event)).toEqual(['token.minted', 'checkpoint', 'audit.recovered']);
    expect(JSON.parse(lines[2]!)).toMatchObject({ detail: { truncatedBytes: torn.length } });
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 4 });
  });

  // Found by review: with its write-ahead file removed (`writ audit wal` had said removing it lost nothing), a log
  // ending in more than 1 MiB of zeros was refused for having no line end near its end.
  it('cuts a run of zeros longer than any line at the end of a log without its write-ahead file', async () => {
    const a = await abandoned();
    await a.append(minted(0));
    await a.close();
    await rm(walPath(path));
    const before = await readFile(path);
    await appendFile(path, Buffer.concat([Buffer.from('{"seq":2,"ts":"'), Buffer.alloc(2 * 1024 * 1024)]));
    const b = await abandoned({ session: 'ses_2' });
    expect(b.count).toBe(3);
    const lines = await fileLines();
    expect(Buffer.from(lines.slice(0, 2).join('\n') + '\n')).toEqual(before);
    expect(JSON.parse(lines[2]!)).toMatchObject({ event: 'audit.recovered', detail: { truncatedBytes: 15 + 2 * 1024 * 1024 } });
    await b.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 4 });
  });

  // Found by review: a version 2 Writ run after a version 3 one numbers its generation 1 (it reads no version 3
  // header) in the first region, and the second region's stale sealed generation outranked it: the acknowledged
  // records it held were not restored, and replay from the stale base could cut durable records from the log.
  it('after a version 2 Writ ran on a version 3 file, restores from its header, not the second region\'s sealed one', async () => {
    const a = await abandoned();
    for (let i = 0; i < 100; i++) await a.append(big(i));
    await a.close();
    expect([(await header(0)).wal, (await header(1)).wal]).toEqual([3, 3]);
    const b = await abandoned();
    for (let i = 100; i < 103; i++) await b.append(minted(i));
    await asVersion(2, 0, 1); // what the version 2 run wrote: its generation 1 in the first region, unsealed
    const lines = await fileLines();
    await powerCut(lineStart(lines, lines.length - 2)); // the log lost its last two records
    const c = await abandoned();
    expect(c.count).toBe(lines.length + 1); // both restored, and the start's record of it
    expect(jtis((await fileLines()).slice(lines.length - 3, lines.length))).toEqual(['jti_100', 'jti_101', 'jti_102']);
    await c.close();
    expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true });
  });

  // Found by review: `writ audit wal` took every generation's records by number, so a stale second region (of a log
  // since replaced) outranked the first region's version 2 generation a start restores from: the log's own
  // records read as held otherwise, the old log's as missing, and no restore was promised.
  it('writ audit wal reads the generations a start restores from, and agrees with it, after a version 2 run on a new log', async () => {
    const a = await abandoned();
    for (let i = 0; i < 100; i++) await a.append(big(i));
    await a.close();
    const stale = await header(1);
    const old = await readFile(walPath(path));
    await unlink(path);
    await unlink(walPath(path));
    const b = await abandoned();
    for (let i = 0; i < stale.count + 10; i++) await b.append(minted(1000 + i));
    // The version 2 run's file: its generation 1 in the first region, the old log's in the second.
    const mine = await readFile(walPath(path));
    mine.copy(old, 0, 0, Math.min(mine.length, WAL_REGION_BYTES));
    await writeFile(walPath(path), old);
    await asVersion(2, 0, 1);
    const lines = await fileLines();
    await powerCut(lineStart(lines, lines.length - 2));
    const c = await compareWal(path, walPath(path));
    expect({ differs: c.differs, missing: c.missing.map((m) => m.seq), restorable: c.restorable }).toEqual({ differs: [], missing: [lines.length - 2, lines.length - 1], restorable: true });
    const s2 = await abandoned({ session: 'ses_2' });
    await s2.close();
    expect((await fileLines()).slice(0, lines.length)).toEqual(lines);
  });

  // Found by review (in version 1 too): a new generation rewrote only the header, and a removed log's first records
  // after it chain on from a new log's empty base.
  it('restores nothing of a removed log into the new one after a power cut before the new one\'s first batch', async () => {
    const a = await abandoned();
    for (let i = 0; i < 5; i++) await a.append(minted(i));
    await unlink(path);
    await abandoned({ session: 'ses_new' });
    const c = await abandoned({ session: 'ses_3' });
    expect(c.count).toBe(0);
    await c.close();
    expect((await readFile(path)).length).toBe(0);
  });

  it('reads version 1 and 2 write-ahead files (no seals; version 1: one region, no generation) left by an earlier Writ', async () => {
    for (const v of [1, 2] as const) {
      await rm(dir, { recursive: true, force: true });
      const a = await abandoned();
      for (let i = 0; i < 8; i++) await a.append(minted(i));
      expect(await header(0)).toMatchObject({ wal: 3, gen: 1 });
      await asVersion(v);
      const lines = await fileLines();
      await powerCut(lineStart(lines, 5) + 3);
      const b = await abandoned();
      expect(b.count).toBe(9);
      expect(jtis((await fileLines()).slice(0, 8))).toEqual(upTo(8));
      // Version 1 counts as generation 0: the new one is then the first (of version 3), else one past version 2's.
      expect(await header(0)).toMatchObject({ wal: 3, gen: v === 1 ? 1 : 2, count: 8 });
      await b.close();
      expect(await verifyAuditFile(path, keys)).toMatchObject({ ok: true, records: 10 });
    }
  });
});

describe('AuditLog takes back a batch it rejects', () => {
  const keys = new Map([['k1', publicKey]]);
  const jtis = (lines: string[]): (string | undefined)[] => lines.map((l) => (JSON.parse(l) as AuditRecord).jti);
  const originalWriteSync = fs.writeSync;
  const originalFdatasync = fs.fdatasync;

  /** Fault injection on the real files: the log and the write-ahead file see these instead of node:fs's own. */
  function inject(writeSync: typeof fs.writeSync | undefined, fdatasync?: typeof fs.fdatasync): void {
    Object.assign(fs, { writeSync: writeSync ?? originalWriteSync, fdatasync: fdatasync ?? originalFdatasync });
    syncBuiltinESMExports();
  }
  const restore = (): void => inject(undefined);
  afterEach(restore);

  const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: injected`), { code });
  /** Appends to the log (position null, O_APPEND) fail; the write-ahead file, rewritten in place, still takes its writes. */
  const logFull = ((fd: number, buf: Uint8Array, off?: number, len?: number, pos?: number | null) => {
    if (pos === null) throw errno('ENOSPC');
    return originalWriteSync(fd, buf, off, len, pos);
  }) as typeof fs.writeSync;

  async function ackedFive(): Promise<{ log: AuditLog; before: Buffer }> {
    const log = await open();
    for (let i = 0; i < 5; i++) await log.append(minted(i));
    return { log, before: await readFile(path) };
  }

  async function expectRejected(results: PromiseSettledResult<AuditRecord>[], cause: string): Promise<void> {
    expect(results.map((r) => r.status)).toEqual(results.map(() => 'rejected'));
    for (const r of results) {
      const err = (r as PromiseRejectedResult).reason as Error;
      expect(isWritError(err, 'WRIT_AUDIT_WRITE_FAILED')).toBe(true);
      expect((err.cause as NodeJS.ErrnoException).code).toBe(cause);
    }
  }

  /** Reopened after the failure (space freed, broker restarted): only the acknowledged records, and it verifies. */
  async function expectOnlyAcked(): Promise<void> {
    const b = await open({ session: 'ses_2' });
    expect(b.count).toBe(5);
    await b.close();
    const lines = await fileLines();
    expect(jtis(lines)).toEqual(['jti_0', 'jti_1', 'jti_2', 'jti_3', 'jti_4', undefined]);
    expect((JSON.parse(lines[5]!) as AuditRecord).event).toBe('checkpoint');
    expect(await verifyAuditFile(path, keys)).toEqual({ ok: true, records: 6, checkpoints: 1, lastCheckpointSeq: 5, unsignedTail: 0 });
  }

  it('cuts a batch whose log append failed from the write-ahead file, so the next open does not restore it', async () => {
    const { log, before } = await ackedFive();
    inject(logFull);
    const results = await Promise.allSettled([log.append(minted(5)), log.append(minted(6))]);
    restore();
    await expectRejected(results, 'ENOSPC');
    expect(log.count).toBe(5);
    expect(await readFile(path)).toEqual(before);
    // The batch reached the write-ahead file; it is zeroed there before the appends were rejected.
    expect((await readFile(walPath(path))).includes('"jti":"jti_5"')).toBe(false);
    await log.close();
    await expectOnlyAcked();
  });

  it('cuts the whole lines a half-failed append left in the log', async () => {
    const { log, before } = await ackedFive();
    let calls = 0;
    // The first append call takes one whole record and part of the next, then the disk is full.
    inject(((fd: number, buf: Uint8Array, off?: number, len?: number, pos?: number | null) => {
      if (pos !== null) return originalWriteSync(fd, buf, off, len, pos);
      if (calls++ > 0) throw errno('ENOSPC');
      const first = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).indexOf(0x0a, off) + 20;
      return originalWriteSync(fd, buf, off, first - (off ?? 0), null);
    }) as typeof fs.writeSync);
    const results = await Promise.allSettled([log.append(minted(5)), log.append(minted(6)), log.append(minted(7))]);
    restore();
    await expectRejected(results, 'ENOSPC');
    expect(calls).toBe(2);
    expect(await readFile(path)).toEqual(before);
    await log.close();
    await expectOnlyAcked();
  });

  it('cuts a batch whose sync failed from the log and the write-ahead file', async () => {
    const { log, before } = await ackedFive();
    const failing = ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
      inject(undefined); // once: the error is reported a single time, as Linux does
      process.nextTick(cb, errno('EIO'));
    }) as typeof fs.fdatasync;
    inject(undefined, failing);
    const results = await Promise.allSettled([log.append(minted(5)), log.append(minted(6))]);
    restore();
    await expectRejected(results, 'EIO');
    expect(await readFile(path)).toEqual(before);
    expect((await readFile(walPath(path))).includes('"jti":"jti_5"')).toBe(false);
    await log.close();
    await expectOnlyAcked();
  });

  // The header of the generation after a batch too big for the file names a base past that batch; were it left so
  // while the batch is cut from the log, the next open would find the log not beginning with that base and refuse.
  it('a batch too big for the write-ahead file, failed when its new generation was synced: the header goes back before it', async () => {
    const { log, before } = await ackedFive();
    let syncs = 0;
    // The log's sync of the batch succeeds; the write-ahead file's sync of its new header fails.
    const failing = ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
      if (++syncs < 2) return originalFdatasync(fd, cb);
      inject(undefined);
      process.nextTick(cb, errno('EIO'));
    }) as typeof fs.fdatasync;
    inject(undefined, failing);
    const big = (i: number): AuditEntry => ({ event: 'token.minted', jti: `jti_big_${i}`, outcome: 'success', detail: { pad: 'x'.repeat(100_000) } });
    const results = await Promise.allSettled(Array.from({ length: Math.ceil(WAL_REGION_BYTES / 100_000) + 5 }, (_, i) => log.append(big(i))));
    restore();
    expect(syncs).toBe(2);
    await expectRejected(results, 'EIO');
    expect(await readFile(path)).toEqual(before);
    await log.close();
    await expectOnlyAcked();
  });

  it('sets the write-ahead file aside when it cannot be cut either, and the next open refuses until it is removed', async () => {
    const { log } = await ackedFive();
    let positioned = 0;
    // The batch reaches the write-ahead file, the log's append fails, and so does every write after that.
    inject(((fd: number, buf: Uint8Array, off?: number, len?: number, pos?: number | null) => {
      if (pos === null || positioned++ > 0) throw errno('EIO');
      return originalWriteSync(fd, buf, off, len, pos);
    }) as typeof fs.writeSync);
    const results = await Promise.allSettled([log.append(minted(5))]);
    restore();
    await expectRejected(results, 'EIO');
    expect(positioned).toBe(2);
    const aside = `${walPath(path)}.rejected`;
    expect(existsSync(walPath(path))).toBe(false);
    expect((await readFile(aside)).includes('"jti":"jti_5"')).toBe(true);
    await log.close();

    const e = await expectCode(open({ session: 'ses_2' }), 'WRIT_AUDIT_CORRUPT');
    expect(e.message).toContain(aside);
    expect(e.message).not.toContain('jti_');
    expect(existsSync(walPath(path))).toBe(false);
    await unlink(aside);
    await expectOnlyAcked();
  });
});
