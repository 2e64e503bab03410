// Streams an audit file as raw newline-terminated lines, for the verifier and the exporter.
// Bytes, not readline: the chain hashes exact bytes, and readline also splits on a lone CR and drops a CR before LF.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

export interface RawLine {
  /** The line's bytes, without its newline. */
  bytes: Buffer;
  /** 1-based line number. */
  line: number;
  /** False only for a final fragment with no newline after it (a torn write). */
  terminated: boolean;
}

/** Yields every line of the file in order, holding at most one read chunk plus one partial line. */
export async function* readAuditLines(path: string, opts: { start?: number } = {}): AsyncGenerator<RawLine> {
  let carry: Buffer = Buffer.alloc(0);
  let line = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024, start: opts.start ?? 0 }) as AsyncIterable<Buffer>) {
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
