// Whether a request names another method than the one its scope allows, in the places frameworks read one: a query
// or urlencoded form key (Rails, Laravel, Express method-override), a top-level key of a JSON body (Laravel), the
// headers of a multipart part (Rails through Rack, Laravel through PHP). Pure: the proxy feeds it, the unit tests too.
// Every reader here is conservative on purpose: it sees a name wherever any parser might, never only where a
// strict one would, since a differential between this check and the upstream's parser is the way around it.

/** Keys that frameworks read as the request's method. */
export const OVERRIDE_KEYS = new Set(['_method', 'x-http-method-override', 'x-http-method', 'x-method-override']);
export const OVERRIDE_KEYS_TEXT = [...OVERRIDE_KEYS].join(', ');

/**
 * Whether a field name is one of OVERRIDE_KEYS, read as loosely as any framework reads it: case folded; leading
 * '[', ']' and spaces dropped (Rack 2.2's normalize_params takes `[_method]` and `]_method` for `_method`, PHP drops
 * leading spaces); '.' or ' ' read as '_' (PHP); cut at the first '[', ']' or NUL (an array suffix, `_method[]`,
 * and Rack's trailing `]`, `_method]`).
 */
export function isOverrideName(key: string): boolean {
  const name = key.replace(/^[[\] ]+/, '').split(/[[\]\0]/, 1)[0]!.replace(/[. ]/g, '_').toLowerCase();
  return OVERRIDE_KEYS.has(name);
}

/** Whether query or form text names another method: its keys as above, fields split at ';' as well as '&' (older Rack). */
export function namesOverride(text: string): boolean {
  for (const key of new URLSearchParams(text.replaceAll(';', '&')).keys()) if (isOverrideName(key)) return true;
  return false;
}

const JSON_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

function jsonString(raw: string): string {
  const inner = raw.length > 1 && raw.endsWith('"') ? raw.slice(1, -1) : raw.slice(1);
  return inner.replace(/\\(u[0-9a-fA-F]{4}|[\s\S])/g, (_, e: string) => (e.length === 5 ? String.fromCharCode(parseInt(e.slice(1), 16)) : (JSON_ESCAPES[e] ?? e)));
}

/**
 * Whether JSON text names another method by a key of its top-level object. Only the top level: Laravel's input
 * for a JSON request is the decoded body, and Symfony reads `_method` from its top level; a nested
 * `{"data":{"_method":…}}` is the app's own data. Every occurrence of a key counts, as JSON.parse and PHP's decoder
 * both keep only the last of duplicates, and escapes are decoded (`"\u005fmethod"`). It scans rather than parses:
 * a text that is not valid JSON is scanned as well (a lenient decoder may take a trailing comma), so a malformed
 * body with such a key at its top level is refused too; a malformed body without one is not.
 */
export function jsonNamesOverride(text: string): boolean {
  let depth = 0;
  let inObject = false;
  const n = text.length;
  for (let i = 0; i < n; ) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (j < n && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const raw = text.slice(i, Math.min(j + 1, n));
      i = j + 1;
      if (depth === 1 && inObject) {
        let k = i;
        while (k < n && /[ \t\r\n]/.test(text[k]!)) k++;
        if (text[k] === ':' && isOverrideName(jsonString(raw))) return true;
      }
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (depth === 0) inObject = c === 0x7b;
      depth++;
    } else if ((c === 0x7d || c === 0x5d) && depth > 0) depth--;
    i++;
  }
  return false;
}

/**
 * Whether Rack finds a boundary in this Content-Type (its pattern, `multipart/.*boundary="?([^";,]+)`). Without one
 * Rack 2 and 3 parse a multipart body as an urlencoded form (`title=x&_method=DELETE` runs DELETE), so such a body
 * is checked as a form as well.
 */
export function rackReadsBoundary(contentType: string): boolean {
  return RACK_BOUNDARY.test(contentType);
}
const RACK_BOUNDARY = /^multipart\/.*boundary="?([^";,]+)/i;

/**
 * Whether every parser reads a JSON body of this Content-Type as UTF-8, as the proxy does: no charset, or utf-8
 * or us-ascii. body-parser decodes any `utf-*` charset before it parses, so `{"+AF8-method":"DELETE"}` in UTF-7,
 * or UTF-16, names `_method` to it while the proxy sees none. Every `charset` parameter anywhere in the header
 * counts (quoted, escaped, RFC 2231 `charset*=`), whichever one a parser would take.
 */
export function jsonCharsetIsUtf8(contentType: string): boolean {
  for (const [, v = ''] of contentType.matchAll(/charset\s*\*?\s*=\s*("(?:[^"\\]|\\[\s\S])*"?|[^;,\s]*)/gi)) {
    const value = v.startsWith('"') ? v.replace(/^"|"$/g, '').replace(/\\([\s\S])/g, '$1') : v;
    if (value.toLowerCase() !== 'utf-8' && value.toLowerCase() !== 'us-ascii') return false;
  }
  return true;
}

/**
 * Whether JSON bytes are plainly not UTF-8 whatever the Content-Type says: a UTF-16 or UTF-32 byte order mark, or
 * a NUL among the first four bytes (how RFC 4627 §3 tells UTF-16 and UTF-32 apart; UTF-8 JSON never holds a raw
 * NUL). A UTF-8 byte order mark is fine: the scan passes over it.
 */
export function jsonBytesNotUtf8(body: Buffer): boolean {
  const [a, b] = body;
  return (a === 0xfe && b === 0xff) || (a === 0xff && b === 0xfe) || body.subarray(0, 4).includes(0);
}

/** A boundary longer than this is cut to it: a prefix of a boundary finds every place the whole one does. */
const MAX_BOUNDARY = 200;
/** More distinct boundaries than this in one Content-Type: refused rather than scanned for each. */
export const MAX_BOUNDARIES = 8;
/**
 * A header block (from a delimiter to the blank line that ends it) longer than this is refused, not scanned on
 * without bound: real part headers are a few hundred bytes (busboy stops at 16 KiB).
 */
export const MAX_PART_HEADERS = 64 * 1024;

const pctDecode = (s: string) => s.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
/** RFC 2231 `charset'lang'pct-encoded` (or a bare pct-encoded value), as bytes in a latin1 string. */
const rfc2231 = (s: string) => pctDecode(/^[^']*'[^']*'/.test(s) ? s.replace(/^[^']*'[^']*'/, '') : s);

/**
 * The delimiters (`--` + boundary, as bytes) a multipart parser could take from this Content-Type: the boundary
 * parameter (busboy, any RFC reader; every one if there are several), the last `boundary=` and the one Rack's
 * greedy pattern takes, and the first `boundary` at all, even one that ends another parameter's name, with the next '=' after
 * it (PHP). Each quoted or not, cut where Rack and PHP cut it (`"`, `;`, `,`) and where RFC 2046 does (white space
 * too), a quoted one also with its escapes undone (`"a\"b"` is `a"b` to busboy), its RFC 2231 form
 * (`boundary*=utf-8''…`) decoded. An empty one (`boundary=""`, `boundary=`, `boundary=;x`) is PHP's delimiter
 * `--`. A delimiter that starts with another is dropped: wherever the longer occurs, the shorter does, and a scan
 * from there covers what follows. Empty if there is none.
 */
export function multipartDelimiters(contentType: string): Buffer[] {
  const lower = contentType.toLowerCase();
  const values = new Set<string>();
  const add = (v: string | undefined) => {
    if (v) values.add(v.slice(0, MAX_BOUNDARY));
  };
  const found = new Set<number>();
  const php = contentType.indexOf('boundary');
  found.add(php >= 0 ? php : lower.indexOf('boundary'));
  found.add(lower.lastIndexOf('boundary='));
  for (const m of lower.matchAll(/(?:^|;)\s*boundary\s*\*?\s*=/g)) found.add(m.index + m[0].indexOf('boundary'));
  found.delete(-1);
  // Rack's own, exactly (its greedy pattern backtracks past a last `boundary=` it cannot read).
  add(RACK_BOUNDARY.exec(contentType)?.[1]);
  for (const at of found) {
    const eq = contentType.indexOf('=', at + 'boundary'.length);
    if (eq < 0) continue;
    const value = contentType.slice(eq + 1);
    const raw = (value.startsWith('"') ? value.slice(1) : value).split(/[";,]/, 1)[0]!;
    if (raw === '') values.add('');
    add(raw);
    add(raw.split(/\s/, 1)[0]);
    const spaced = value.replace(/^\s+/, '');
    const token = (spaced.startsWith('"') ? spaced.slice(1) : spaced).split(/[";,\s]/, 1)[0]!;
    add(token);
    const quoted = /^"((?:[^"\\]|\\[\s\S])*)/.exec(spaced);
    if (quoted) add(quoted[1]!.replace(/\\([\s\S])/g, '$1'));
    if (/^\s*\*/.test(contentType.slice(at + 'boundary'.length, eq))) {
      add(rfc2231(raw));
      add(rfc2231(token));
    }
  }
  const kept: string[] = [];
  for (const v of [...values].sort((a, b) => a.length - b.length)) if (!kept.some((k) => v.startsWith(k))) kept.push(v);
  return kept.map((v) => Buffer.from(`--${v}`, 'latin1'));
}

/**
 * An override key as a token of header text: not after a letter or digit, not before a letter, digit or '-', any
 * case, and `_method` also with its '_' as '.', ' ', '[' or ']' (PHP reads `.method` and ` method` as `_method`
 * after a leading space; Rack drops leading brackets). So `payment_method` is no such token; `name="_method"`,
 * `name="[_method]"`, `Content-ID: _method` and `filename="_method.txt"` all hold one.
 */
const OVERRIDE_TOKEN = new RegExp(
  `(?<![A-Za-z0-9])(?:${[...OVERRIDE_KEYS].map((k) => (k.startsWith('_') ? `[_. [\\]]${k.slice(1)}` : k.replaceAll('-', '\\-'))).join('|')})(?![A-Za-z0-9-])`,
  'i',
);

/** RFC 2231 continuations of a `name` (`name*0="_me"; name*1*=thod`), joined in order as a reader that takes them would. */
const NAME_PIECE = /(?<![A-Za-z0-9!#$%&'*+.^_`|~-])name\*(\d+)\*?\s*=\s*("(?:[^"\\]|\\[\s\S])*"?|[^;\s]*)/gi;

function continuedName(text: string): string {
  const pieces = new Map<number, string>();
  for (const [, index, v = ''] of text.matchAll(NAME_PIECE)) {
    if (!pieces.has(Number(index))) pieces.set(Number(index), v.startsWith('"') ? v.replace(/^"|"$/g, '') : v);
  }
  return [...pieces].sort(([a], [b]) => a - b).map(([, p]) => p).join('');
}

/**
 * Whether header text names another method by the one rule that holds for every parser, in place of reading it as
 * each does: an override key as a token (OVERRIDE_TOKEN) anywhere in the text, in any header, in the text as it is
 * (lines apart, as Rack and busboy read them) and with every CR and LF removed (PHP joins a line without a colon
 * onto the one before it with nothing between: `na` + `me="_method"`, `"_me` + `thod"`), each also with its
 * backslash escapes undone (busboy), then percent-decoded (RFC 2231 `name*=utf-8''%5Fmethod`; its `''` prefix
 * does not touch the token), and with NULs dropped (a UTF-16 name decoded byte for byte). Which header names the
 * part (Content-Disposition, a Content-ID when there is none or it is long: Rack) does not matter then.
 */
function headerTextNamesOverride(text: string): boolean {
  const joined = text.replace(/[\r\n]/g, '');
  for (const lines of [text, joined]) {
    for (const t of [lines, lines.replace(/\\([\s\S])/g, '$1')]) {
      const decoded = pctDecode(t);
      if (OVERRIDE_TOKEN.test(t) || OVERRIDE_TOKEN.test(decoded) || OVERRIDE_TOKEN.test(decoded.replaceAll('\0', ''))) return true;
    }
  }
  const continued = continuedName(joined);
  return continued !== '' && (OVERRIDE_TOKEN.test(continued) || OVERRIDE_TOKEN.test(rfc2231(continued)));
}

/**
 * Whether a header block (the bytes after a delimiter, up to the blank line that ends them) names another method.
 * A delimiter inside the block starts a block of its own, to the same blank line: the text after it is read as a
 * block's start too (a token right after it counts, whatever the delimiter ends with).
 */
export function headerBlockNamesOverride(block: Buffer, delimiter?: Buffer): boolean {
  const text = block.toString('latin1');
  if (headerTextNamesOverride(text)) return true;
  if (delimiter === undefined || delimiter.length === 0) return false;
  const d = delimiter.toString('latin1');
  let split = '';
  let from = 0;
  for (let at = text.indexOf(d); at >= 0; at = text.indexOf(d, at + 1)) {
    split += `${text.slice(from, at + d.length)}\x01`;
    from = at + d.length;
  }
  return from > 0 && headerTextNamesOverride(split + text.slice(from));
}

export type PartVerdict = 'override' | 'headers-too-long';

const BLANK_LINE = Buffer.from('\r\n\r\n');

/**
 * Scans for one delimiter: the header block after each place it occurs, up to the first blank line of CRLFs
 * (Rack's and busboy's end of part headers; PHP also ends them at a bare-LF one, earlier, so inside the block).
 * A block does not end at a delimiter inside it: the delimiter starts another block, to the same blank line.
 * What follows the blank line (a part's content) is only searched for the next delimiter, never read.
 */
class DelimiterScan {
  /** What is kept of the bytes seen: a delimiter's length less one outside a block, the block so far in one. */
  private kept: Buffer = Buffer.alloc(0);
  private inBlock = false;
  /** In a block: how far `kept` has been searched already (so a trickle of small chunks is not searched again). */
  private searched = 0;
  /**
   * In a block: chunks that came after `kept` and hold no end of the block, not yet joined to it. A block that
   * arrives a byte at a time is then copied once, when its end or the bound comes, not once per byte (which cost
   * O(n²): gigabytes copied for one 64 KiB block trickled in).
   */
  private more: Buffer[] = [];
  private moreBytes = 0;

  constructor(private readonly delimiter: Buffer) {}

  /** The last `n` bytes of the block so far (`kept`, then `more`). */
  private blockTail(n: number): Buffer {
    const parts: Buffer[] = [];
    let need = n;
    for (let i = this.more.length - 1; i >= -1 && need > 0; i--) {
      const b = i >= 0 ? this.more[i]! : this.kept;
      const take = b.subarray(Math.max(0, b.length - need));
      parts.unshift(take);
      need -= take.length;
    }
    return Buffer.concat(parts);
  }

  write(chunk: Buffer): PartVerdict | undefined {
    if (this.inBlock) {
      // Only the new bytes, and the few before them a blank line could start in, can hold the block's end.
      const probe = Buffer.concat([this.blockTail(BLANK_LINE.length - 1), chunk]);
      if (probe.indexOf(BLANK_LINE) < 0) {
        if (this.kept.length + this.moreBytes + chunk.length > MAX_PART_HEADERS) return 'headers-too-long';
        this.more.push(Buffer.from(chunk));
        this.moreBytes += chunk.length;
        return undefined;
      }
    }
    const head = this.more.length > 0 ? Buffer.concat([this.kept, ...this.more]) : this.kept;
    this.searched = this.inBlock ? head.length : this.searched;
    this.more = [];
    this.moreBytes = 0;
    let buf = head.length > 0 ? Buffer.concat([head, chunk]) : chunk;
    let from = this.inBlock ? Math.max(0, this.searched - (BLANK_LINE.length - 1)) : 0;
    for (;;) {
      if (!this.inBlock) {
        const at = buf.indexOf(this.delimiter, from);
        if (at < 0) {
          this.kept = Buffer.from(buf.subarray(Math.max(0, buf.length - (this.delimiter.length - 1))));
          return undefined;
        }
        // Anywhere, not only at a line's start: Rack finds the first delimiter in the middle of a line.
        buf = buf.subarray(at + this.delimiter.length);
        this.inBlock = true;
        from = 0;
        continue;
      }
      const blank = buf.indexOf(BLANK_LINE, from);
      if (blank < 0) {
        if (buf.length > MAX_PART_HEADERS) return 'headers-too-long';
        this.kept = Buffer.from(buf);
        this.searched = buf.length;
        return undefined;
      }
      if (blank > MAX_PART_HEADERS) return 'headers-too-long';
      if (headerBlockNamesOverride(buf.subarray(0, blank), this.delimiter)) return 'override';
      buf = buf.subarray(blank + BLANK_LINE.length);
      this.inBlock = false;
      from = 0;
    }
  }

  end(): PartVerdict | undefined {
    const block = this.more.length > 0 ? Buffer.concat([this.kept, ...this.more]) : this.kept;
    const last = this.inBlock && headerBlockNamesOverride(block, this.delimiter) ? 'override' : undefined;
    this.kept = Buffer.alloc(0);
    this.more = [];
    this.moreBytes = 0;
    return last;
  }
}

/**
 * Reads a multipart body as it streams, chunk by chunk, for a header block that names another method (`write`
 * says so on the chunk that completes the block, or `end` at the body's end). Part headers are never parsed, as
 * no one parse matches every parser's: each delimiter is found wherever it occurs, and an override key as a token
 * anywhere in the block after it counts (headerBlockNamesOverride), which refuses a rare honest body too (a file
 * named `_method.txt`). Memory stays bounded: a delimiter's length outside a block, at most MAX_PART_HEADERS in one.
 */
export class MultipartScanner {
  private readonly scans: DelimiterScan[];
  private verdict: PartVerdict | undefined;

  constructor(delimiters: Buffer[]) {
    this.scans = delimiters.map((d) => new DelimiterScan(d));
  }

  write(chunk: Buffer): PartVerdict | undefined {
    if (this.verdict !== undefined) return this.verdict;
    for (const s of this.scans) this.verdict ??= s.write(chunk);
    return this.verdict;
  }

  end(): PartVerdict | undefined {
    if (this.verdict !== undefined) return this.verdict;
    for (const s of this.scans) this.verdict ??= s.end();
    return this.verdict;
  }
}
