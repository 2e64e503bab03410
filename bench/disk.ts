// The disk under the audit log, alone: what one group commit costs at the least. Each batch of audit records is
// written to the write-ahead file (blocks already written once, so only data changes) and fdatasync-ed before any
// token in it is returned; a durable mint therefore waits for at least one such sync, and for the one in flight when
// its record arrived. Here: a batch of 16 records' size written in place and synced, back to back, one sync in
// flight, in the broker's state folder, with nothing else running. Its p99 is a floor under the mint's p99.
import { closeSync, fdatasync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { percentiles } from './stats';

const FILE_BYTES = 4 * 1024 * 1024; // the write-ahead file's size
const BATCH_BYTES = 16 * 560; // 16 records of a mint's size

export interface DiskFigures {
  syncsPerSecond: number;
  /** ms per write + fdatasync. */
  p50: number;
  p99: number;
  max: number;
}

export async function diskSyncFloor(dir: string, seconds: number): Promise<DiskFigures> {
  const path = join(dir, 'bench-disk-floor');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, Buffer.alloc(FILE_BYTES), 0, FILE_BYTES, 0);
    await datasync(fd); // allocated and on disk: later syncs flush data alone
    const batch = Buffer.alloc(BATCH_BYTES, 0x61);
    const lat: number[] = [];
    let pos = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    while (performance.now() < end) {
      const s = performance.now();
      writeSync(fd, batch, 0, batch.length, pos);
      await datasync(fd);
      lat.push(performance.now() - s);
      pos = pos + 2 * BATCH_BYTES > FILE_BYTES ? 0 : pos + BATCH_BYTES;
    }
    const elapsed = (performance.now() - t0) / 1000;
    return { syncsPerSecond: lat.length / elapsed, ...percentiles(lat) };
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
}
