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
  /** The line's whole length in bytes, without its newline: more than `bytes` holds when it is overlong. */
  length: number;
  /** Longer than MAX_AUDIT_LINE_BYTES, which no record is: `bytes` holds only its first MAX_AUDIT_LINE_BYTES. */
  overlong?: true;
}

/**
 * No record is longer (audit/log.ts refuses to read a longer line at open): a longer line is kept only in part, so a
 * file of one endless line costs a bounded amount of memory and linear time, never a quadratic re-copy.
 */
export const MAX_AUDIT_LINE_BYTES = 1024 * 1024;

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

/** Yields every line of the file in order, holding at most one read chunk plus one partial line (bounded). */
export async function* readAuditLines(path: string, opts: { start?: number } = {}): AsyncGenerator<RawLine> {
  // The line begun in earlier chunks: its pieces (copied, so the chunks can go), up to MAX_AUDIT_LINE_BYTES.
  let parts: Buffer[] = [];
  let kept = 0;
  let length = 0;
  const keep = (piece: Buffer, copy: boolean): void => {
    length += piece.length;
    const room = MAX_AUDIT_LINE_BYTES - kept;
    if (room <= 0 || piece.length === 0) return;
    const part = piece.length > room ? piece.subarray(0, room) : piece;
    parts.push(copy ? Buffer.from(part) : part);
    kept += part.length;
  };
  const take = (terminated: boolean, line: number): RawLine => {
    const out: RawLine = { bytes: parts.length === 1 ? parts[0]! : Buffer.concat(parts, kept), line, terminated, length, ...(length > kept ? { overlong: true as const } : {}) };
    parts = [];
    kept = 0;
    length = 0;
    return out;
  };
  let line = 0;
  for await (const chunk of chunks(path, opts.start ?? 0)) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a, start); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, nl);
      if (length === 0 && piece.length <= MAX_AUDIT_LINE_BYTES) yield { bytes: piece, line: ++line, terminated: true, length: piece.length };
      else {
        keep(piece, false);
        yield take(true, ++line);
      }
      start = nl + 1;
    }
    if (start < chunk.length) keep(chunk.subarray(start), true);
  }
  if (length > 0) yield take(false, ++line);
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
