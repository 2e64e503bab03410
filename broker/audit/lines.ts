// Streams an audit file as raw newline-terminated lines, for the verifier and the exporter.
// Bytes, not readline: the chain hashes exact bytes, and readline also splits on a lone CR and drops a CR before LF.
import { createReadStream } from 'node:fs';

export interface RawLine {
  /** The line's bytes, without its newline. */
  bytes: Buffer;
  /** 1-based line number. */
  line: number;
  /** False only for a final fragment with no newline after it (a torn write). */
  terminated: boolean;
}

/** Yields every line of the file in order, holding at most one read chunk plus one partial line. */
export async function* readAuditLines(path: string): AsyncGenerator<RawLine> {
  let carry: Buffer = Buffer.alloc(0);
  let line = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
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
