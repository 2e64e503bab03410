// Whether a request names another method than the one its scope allows, in the places frameworks read one: a query
// or urlencoded form key (Rails, Laravel, Express method-override), a top-level key of a JSON body (Laravel), the
// name of a multipart part (Rails through Rack, Laravel through PHP). Pure: the proxy feeds it, the unit tests too.
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
  return /^multipart\/.*boundary="?[^";,]/i.test(contentType);
}

/** A boundary longer than this is cut to it: a prefix of a boundary finds every place the whole one does. */
const MAX_BOUNDARY = 200;
/** More distinct boundaries than this in one Content-Type: refused rather than scanned for each. */
export const MAX_BOUNDARIES = 8;
/**
 * Part headers (from a delimiter to the blank line that ends them) longer than this are refused, not scanned on
 * without bound: real ones are a few hundred bytes (busboy stops at 16 KiB).
 */
export const MAX_PART_HEADERS = 64 * 1024;

const pctDecode = (s: string) => s.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
/** RFC 2231 `charset'lang'pct-encoded` (or a bare pct-encoded value), as bytes in a latin1 string. */
const rfc2231 = (s: string) => pctDecode(/^[^']*'[^']*'/.test(s) ? s.replace(/^[^']*'[^']*'/, '') : s);

/**
 * The delimiters (`--` + boundary, as bytes) a multipart parser could take from this Content-Type: the boundary
 * parameter (busboy, any RFC reader; every one if there are several), the last `boundary=` (Rack's greedy
 * pattern), and the first `boundary` at all, even one that ends another parameter's name, with the next '=' after
 * it (PHP). Each quoted or not, cut where Rack and PHP cut it (`"`, `;`, `,`) and where RFC 2046 does (white space
 * too), its RFC 2231 form (`boundary*=utf-8''…`) decoded. A delimiter that starts with another is dropped: wherever
 * the longer occurs, the shorter does, and a scan from there covers what follows. Empty if there is none.
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
  for (const at of found) {
    const eq = contentType.indexOf('=', at + 'boundary'.length);
    if (eq < 0) continue;
    const value = contentType.slice(eq + 1);
    const raw = (value.startsWith('"') ? value.slice(1) : value).split(/[";,]/, 1)[0]!;
    add(raw);
    add(raw.split(/\s/, 1)[0]);
    const spaced = value.replace(/^\s+/, '');
    const token = (spaced.startsWith('"') ? spaced.slice(1) : spaced).split(/[";,\s]/, 1)[0]!;
    add(token);
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
 * A `name` parameter in a Content-Disposition, in every form a parser reads: quoted (with or without its escapes
 * undone), single-quoted, bare (whole, or cut at Rack's token separators), RFC 2231 (`name*=utf-8''%5Fmethod`, and
 * `name*0=`/`name*1*=` continuations, joined), percent-encoded. Not `filename`: the character before `name` must
 * not be one a token holds.
 */
const NAME_PARAM = /(?<![A-Za-z0-9!#$%&'*+.^_`|~-])name(?:\*(\d+))?(\*)?\s*=\s*("(?:[^"\\]|\\[\s\S])*"?|'[^']*'?|[^;\s]*)/gi;

function dispositionNames(s: string): string[] {
  const out: string[] = [];
  const pieces = new Map<number, string>();
  for (const m of s.matchAll(NAME_PARAM)) {
    const [, index, extended, v = ''] = m;
    const forms: string[] = [];
    if (v.startsWith('"')) {
      const inner = /^"(?:[^"\\]|\\[\s\S])*"$/.test(v) ? v.slice(1, -1) : v.slice(1);
      forms.push(inner, inner.replace(/\\([\s\S])/g, '$1'));
    } else if (v.startsWith("'")) {
      forms.push(v.length > 1 && v.endsWith("'") ? v.slice(1, -1) : v.slice(1));
    } else {
      forms.push(v, v.split(/[()<>,;:\\"/[\]?=]/, 1)[0]!);
    }
    const decoded = forms.map((f) => (extended ? rfc2231(f) : pctDecode(f)));
    out.push(...forms, ...decoded);
    if (index !== undefined && !pieces.has(Number(index))) pieces.set(Number(index), decoded[0]!);
  }
  if (pieces.size > 0) out.push([...pieces].sort(([a], [b]) => a - b).map(([, p]) => p).join(''));
  return out.flatMap((x) => [x, x.trim()]);
}

/**
 * Whether part headers name another method: any Content-Disposition in them (the name matched anywhere, as Rack's
 * pattern finds it even inside another header), and every `name` parameter from there to the headers' end.
 */
export function partHeadersNameOverride(headers: Buffer): boolean {
  const text = headers.toString('latin1');
  const at = text.toLowerCase().indexOf('content-disposition');
  if (at < 0) return false;
  return dispositionNames(text.slice(at + 'content-disposition'.length)).some(isOverrideName);
}

export type PartVerdict = 'override' | 'headers-too-long';

const BLANK_LINE = Buffer.from('\r\n\r\n');

/** Scans for one delimiter: the part headers after each place it occurs, up to the next blank line. */
class DelimiterScan {
  /** What is kept of the bytes seen: a delimiter's length less one outside part headers, the headers so far in them. */
  private kept: Buffer = Buffer.alloc(0);
  private inHeaders = false;
  /** In part headers: how far `kept` has been searched already (so a trickle of small chunks is not searched again). */
  private searched = 0;

  constructor(private readonly delimiter: Buffer) {}

  write(chunk: Buffer): PartVerdict | undefined {
    let buf = this.kept.length > 0 ? Buffer.concat([this.kept, chunk]) : chunk;
    const back = Math.max(BLANK_LINE.length, this.delimiter.length) - 1;
    let from = this.inHeaders ? Math.max(0, this.searched - back) : 0;
    for (;;) {
      if (!this.inHeaders) {
        const at = buf.indexOf(this.delimiter, from);
        if (at < 0) {
          this.kept = Buffer.from(buf.subarray(Math.max(0, buf.length - (this.delimiter.length - 1))));
          return undefined;
        }
        // Anywhere, not only at a line's start: Rack finds the first delimiter in the middle of a line.
        buf = buf.subarray(at + this.delimiter.length);
        this.inHeaders = true;
        from = 0;
        continue;
      }
      const blank = buf.indexOf(BLANK_LINE, from);
      const next = buf.indexOf(this.delimiter, from);
      if (blank < 0 && next < 0) {
        if (buf.length > MAX_PART_HEADERS) return 'headers-too-long';
        this.kept = Buffer.from(buf);
        this.searched = buf.length;
        return undefined;
      }
      // Headers end at a blank line of CRLFs (Rack, busboy; PHP also ends them at a bare LF one, earlier, so inside
      // these), or where the next delimiter starts the next part's.
      const stop = next >= 0 && (blank < 0 || next < blank) ? next : blank;
      if (stop > MAX_PART_HEADERS) return 'headers-too-long';
      if (partHeadersNameOverride(buf.subarray(0, stop))) return 'override';
      if (stop === next) {
        buf = buf.subarray(next + this.delimiter.length);
      } else {
        buf = buf.subarray(blank + BLANK_LINE.length);
        this.inHeaders = false;
      }
      from = 0;
    }
  }

  end(): PartVerdict | undefined {
    const last = this.inHeaders && partHeadersNameOverride(this.kept) ? 'override' : undefined;
    this.kept = Buffer.alloc(0);
    return last;
  }
}

/**
 * Reads a multipart body as it streams, chunk by chunk, for a part named for another method (`write` says so on
 * the chunk that completes its headers, or `end` at the body's end). Only part headers are read, never parsed
 * strictly: each delimiter is found wherever it occurs, and a Content-Disposition anywhere in the headers after it
 * counts. Memory stays bounded: a delimiter's length outside part headers, at most MAX_PART_HEADERS in them.
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
