// Streams an audit file as raw newline-terminated lines, for the verifier and the exporter.
// Bytes, not readline: the chain hashes exact bytes, and readline also splits on a lone CR and drops a CR before LF.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { WritError } from '../errors';

export interface RawLine {
  /** The line's bytes, without its newline. */
  bytes: Buffer;
  /** 1-based line number. */
  line: number;
  /** False only for a final fragment with no newline after it (a torn write). */
  terminated: boolean;
}

/** A file that cannot be read at all (missing, a folder, another user's): said plainly, with the path, not as an internal error. */
export function unreadable(path: string, what: string, e: unknown): WritError {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EISDIR' ? 'not a regular file' : code === 'ELOOP' ? 'a symbolic link' : (code ?? 'unreadable');
  return new WritError('WRIT_AUDIT_UNREADABLE', `cannot read the ${what} ${path}: ${why}`, { cause: e });
}

/** The file's chunks; one that cannot be opened is WRIT_AUDIT_UNREADABLE. */
async function* chunks(path: string, start: number): AsyncGenerator<Buffer> {
  const it = (createReadStream(path, { highWaterMark: 256 * 1024, start }) as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  for (let first = true; ; first = false) {
    let r: IteratorResult<Buffer>;
    try {
      r = await it.next();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (first && (code === 'ENOENT' || code === 'EACCES' || code === 'EPERM' || code === 'EISDIR')) throw unreadable(path, 'audit log', e);
      throw e;
    }
    if (r.done) return;
    yield r.value;
  }
}

/** Yields every line of the file in order, holding at most one read chunk plus one partial line. */
export async function* readAuditLines(path: string, opts: { start?: number } = {}): AsyncGenerator<RawLine> {
  let carry: Buffer = Buffer.alloc(0);
  let line = 0;
  for await (const chunk of chunks(path, opts.start ?? 0)) {
    const buf = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
    let start = 0;
    for (let nl = buf.indexOf(0x0a, start); nl !== -1; nl = buf.indexOf(0x0a, start)) {
      yield { bytes: buf.subarray(start, nl), line: ++line, terminated: true };
      start = nl + 1;
    }
    // Copy the remainder so the chunk it came from can be released.
    carry = start === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(start));
  }
  if (carry.length > 0) yield { bytes: carry, line: ++line, terminated: false };
}

/**
 * Where the last `lines` newline-terminated lines of the file begin (0 when it holds no more than that). Reads
 * backwards from the end, so its cost is the tail, not the file: the audit panel opens on a log of millions of
 * records by reading only what it will show.
 */
export async function tailStart(path: string, lines: number, chunkBytes = 1 << 20): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(chunkBytes);
    let seen = 0; // newlines found so far, from the end
    for (let end = (await fh.stat()).size; end > 0; ) {
      const from = Math.max(0, end - chunkBytes);
      const { bytesRead } = await fh.read(buf, 0, end - from, from);
      for (let i = bytesRead - 1; i >= 0; i--) {
        // The (lines + 1)-th newline from the end closes the last line not wanted.
        if (buf[i] === 0x0a && ++seen === lines + 1) return from + i + 1;
      }
      end = from;
    }
    return 0;
  } finally {
    await fh.close();
  }
}
