import { createHash, generateKeyPairSync, sign, verify } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, checkpointText, type AuditLogOptions } from '../../broker/audit/log';
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
