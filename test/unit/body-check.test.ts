// The proxy's readers of a body's method override: top-level JSON keys, and multipart part headers scanned as they
// stream, whatever the chunking (a delimiter or a part header split anywhere, down to one byte at a time).
import { describe, expect, it } from 'vitest';
import { MAX_PART_HEADERS, MultipartScanner, headerBlockNamesOverride, isOverrideName, jsonBytesNotUtf8, jsonCharsetIsUtf8, jsonNamesOverride, multipartDelimiters, namesOverride, rackReadsBoundary } from '../../broker/proxy/body-check';
import type { PartVerdict } from '../../broker/proxy/body-check';

const B = '----WritFormBoundary7MA4YWxkTrZu0gW';
const CT = `multipart/form-data; boundary=${B}`;

function part(headers: string, content: string): string {
  return `--${B}\r\n${headers}\r\n\r\n${content}\r\n`;
}
const title = part('Content-Disposition: form-data; name="title"', 'a title');
const file = part('Content-Disposition: form-data; name="file"; filename="notes.txt"\r\nContent-Type: text/plain', 'the file, which says _method=DELETE and name="_method"');
const end = `--${B}--\r\n`;

/** The verdict for a body fed in the given pieces: the first a write gives, else the end's. */
function scan(pieces: Buffer[], contentType = CT): PartVerdict | undefined {
  const s = new MultipartScanner(multipartDelimiters(contentType));
  for (const p of pieces) {
    const v = s.write(p);
    if (v !== undefined) return v;
  }
  return s.end();
}
const whole = (body: string) => [Buffer.from(body, 'latin1')];
const bytes = (body: string) => [...Buffer.from(body, 'latin1')].map((x) => Buffer.from([x]));
/** Every split of the body into two pieces. */
const splits = (body: string) => {
  const b = Buffer.from(body, 'latin1');
  return Array.from({ length: b.length + 1 }, (_, i) => [b.subarray(0, i), b.subarray(i)]);
};

describe('isOverrideName and namesOverride (query and form keys)', () => {
  it('reads a key as Rack 2.2 normalize_params does: leading brackets and spaces dropped, cut at the first bracket', () => {
    for (const k of ['_method', '_METHOD', '[_method]', ']_method', '_method]', '[[_method]]', ' [_method', '.method', ' _method', '_method[]', '_method[x]', '_method\0x', 'X-HTTP-Method-Override']) {
      expect([k, isOverrideName(k)]).toEqual([k, true]);
    }
    for (const k of ['payment_method', 'method', '_methods', 'post[_method]', 'x_method', '']) expect([k, isOverrideName(k)]).toEqual([k, false]);
  });

  it('finds such a key in query or form text, percent-encoded, after & or ;', () => {
    for (const t of ['%5B_method%5D=DELETE', 'title=x&%5D_method=DELETE', '_method%5D=DELETE', 'a=1;%5B%5B_method=PUT', '+%5B_method=DELETE']) {
      expect([t, namesOverride(t)]).toEqual([t, true]);
    }
    for (const t of ['payment_method=card', 'post%5B_method%5D=DELETE', 'note=%5B_method%5D', '']) expect([t, namesOverride(t)]).toEqual([t, false]);
  });
});

describe('rackReadsBoundary', () => {
  it('is Rack\'s pattern: multipart/, then anywhere `boundary=` and a character other than `"`, `;` or `,`', () => {
    for (const t of [CT, 'Multipart/Mixed; BOUNDARY="x"', 'multipart/form-data; boundary=""; boundary=b', 'multipart/form-data; xboundary=a']) expect([t, rackReadsBoundary(t)]).toEqual([t, true]);
    for (const t of ['multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; boundary=""', 'multipart/form-data; boundary=;x', "multipart/form-data; boundary*=utf-8''XyZ", 'multipart/form-data; boundary =x', ` ${CT}`, `text/plain; x=${CT}`]) {
      expect([t, rackReadsBoundary(t)]).toEqual([t, false]);
    }
  });
});

describe('multipartDelimiters', () => {
  it('takes the boundary quoted or bare, cut where parsers cut it', () => {
    expect(multipartDelimiters(CT).map(String)).toEqual([`--${B}`]);
    expect(multipartDelimiters(`multipart/form-data; boundary="${B}"; charset=utf-8`).map(String)).toEqual([`--${B}`]);
    expect(multipartDelimiters('multipart/form-data; BOUNDARY=abc,def').map(String)).toEqual(['--abc']);
    // Rack takes `[^";,]+` (white space and all); an RFC 2046 reader stops at white space: the shorter finds both.
    expect(multipartDelimiters('multipart/form-data; boundary=abc def').map(String)).toEqual(['--abc']);
    // A leading space: Rack's boundary starts with it, a lenient reader skips it.
    expect(multipartDelimiters('multipart/form-data; boundary= x').map(String).sort()).toEqual(['-- x', '--x']);
  });

  it('takes every boundary a parser could: the first (PHP, even inside another name), the last (Rack), RFC 2231', () => {
    expect(multipartDelimiters('multipart/form-data; xboundary=aaa; boundary=bbb').map(String).sort()).toEqual(['--aaa', '--bbb']);
    expect(multipartDelimiters("multipart/form-data; boundary*=utf-8''a%20b").map(String).sort()).toEqual(['--a b', "--utf-8''a%20b"]);
    expect(multipartDelimiters('multipart/form-data; boundary=aaa; y="boundary="').map(String)).toEqual(['--']);
  });

  it('none without a boundary; an empty one is PHP\'s delimiter `--`', () => {
    expect(multipartDelimiters('multipart/form-data')).toEqual([]);
    for (const t of ['multipart/form-data; boundary=', 'multipart/form-data; boundary=""', 'multipart/form-data; boundary=;x=1', 'multipart/form-data; boundary=,x']) {
      expect([t, multipartDelimiters(t).map(String)]).toEqual([t, ['--']]);
    }
  });

  it('takes a quoted boundary with its escapes undone as well (busboy): "a\\"b" is a"b', () => {
    expect(multipartDelimiters('multipart/form-data; boundary="a\\"b"').map(String).sort()).toEqual(['--a"b', '--a\\']);
    expect(multipartDelimiters('multipart/form-data; boundary="a\\\\b"').map(String).sort()).toEqual(['--a\\\\b', '--a\\b']);
  });
});

describe('MultipartScanner', () => {
  const refused: [string, string][] = [
    ['quoted, the part last', title + file + part('Content-Disposition: form-data; name="_method"', 'DELETE') + end],
    ['bare', part('Content-Disposition: form-data; name=_method', 'DELETE') + title + end],
    ['odd case, header name and value', part('content-DISPOSITION: Form-Data; NAME="_Method"', 'DELETE') + end],
    ['the header override as a field', part('Content-Disposition: form-data; name="X-HTTP-Method-Override"', 'DELETE') + end],
    ['RFC 2231', part("Content-Disposition: form-data; name*=utf-8''%5Fmethod", 'DELETE') + end],
    ['RFC 2231 continuations', part('Content-Disposition: form-data; name*0="_me"; name*1="thod"', 'DELETE') + end],
    ['an array suffix (PHP)', part('Content-Disposition: form-data; name="_method[]"', 'DELETE') + end],
    ['.method (PHP reads _method)', part('Content-Disposition: form-data; name=".method"', 'DELETE') + end],
    ['escaped quote in a quoted name', part('Content-Disposition: form-data; name="\\_method"', 'DELETE') + end],
    // Rack's pattern finds a Content-Disposition anywhere in the part's headers, even inside another header.
    ['inside another header', part('X-Note: see Content-Disposition: form-data; name="_method"', 'DELETE') + end],
    // Rack's first delimiter may sit mid-line; a blank line of bare LFs ends headers for PHP, not for Rack.
    ['first delimiter mid-line', `preamble--${B}\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n${end}`],
    ['after a bare-LF blank line', part('X-A: 1\n\nContent-Disposition: form-data; name="_method"', 'DELETE') + end],
    ['headers the body ends in', `${title}--${B}\r\nContent-Disposition: form-data; name="_method"`],
    // Rack names a part without a Content-Disposition by its Content-ID (Rack 3 also when the disposition is long).
    ['a Content-ID, no Content-Disposition', part('Content-ID: _method', 'DELETE') + end],
    ['a Content-ID beside a long Content-Disposition', part(`Content-Disposition: form-data; name="x"; ${'a=b; '.repeat(400)}\r\nContent-ID: <_method>`, 'DELETE') + end],
    // A delimiter inside the headers does not end them: Rack and PHP read the name after it.
    ['a delimiter inside the Content-Disposition', part(`Content-Disposition: form-data; x=--${B}; name="_method"`, 'DELETE') + end],
    ['a token right after a delimiter inside the headers', part(`Content-Disposition: form-data; name="a"; x="--${B}_method"`, 'DELETE') + end],
    // PHP joins a header line without a colon onto the one before, with nothing between.
    ['a line without a colon, joined (PHP): na + me=', part('Content-Disposition: form-data; na\r\nme="_method"', 'DELETE') + end],
    ['a name split over two lines (PHP)', part('Content-Disposition: form-data; name="_me\r\nthod"', 'DELETE') + end],
    // Rack 2.2's normalize_params drops leading brackets and cuts at the first ']'.
    ['[_method]', part('Content-Disposition: form-data; name="[_method]"', 'DELETE') + end],
    [']_method', part('Content-Disposition: form-data; name="]_method"', 'DELETE') + end],
    ['_method]', part('Content-Disposition: form-data; name="_method]"', 'DELETE') + end],
    ['a nested name (refused: the token rule cannot tell it from [_method])', part('Content-Disposition: form-data; name="post[_method]"', 'x') + end],
    ['an override key anywhere in any header', part('Content-Disposition: form-data; name="a"\r\nX-Note: X-HTTP-Method-Override', 'DELETE') + end],
    ['RFC 2231, a UTF-16 name', part("Content-Disposition: form-data; name*=utf-16le''%5F%00m%00e%00t%00h%00o%00d%00", 'DELETE') + end],
    ['RFC 2231 continuations, one percent-encoded', part("Content-Disposition: form-data; name*0=\"_me\"; name*1*=%74hod", 'DELETE') + end],
    // The rare false positive this rule accepts: a file named like the key.
    ['a file named _method.txt (a false positive, accepted)', part('Content-Disposition: form-data; name="upload"; filename="_method.txt"', 'x') + end],
  ];

  for (const [what, body] of refused) {
    it(`refuses a part named for another method (${what}): whole, byte by byte, split anywhere`, () => {
      expect(scan(whole(body))).toBe('override');
      expect(scan(bytes(body))).toBe('override');
      for (const pieces of splits(body)) expect(scan(pieces)).toBe('override');
    });
  }

  const allowed: [string, string][] = [
    ['plain fields and a file that mentions _method', title + file + end],
    ['a file whose content is part headers naming _method', part('Content-Disposition: form-data; name="f"; filename="f.txt"', `Content-Disposition: form-data; name="_method"\r\n\r\nDELETE`) + end],
    ['payment_method, method, payment.method', part('Content-Disposition: form-data; name="payment_method"', 'card') + part('Content-Disposition: form-data; name="method"', 'x') + part('Content-Disposition: form-data; name="payment.method"', 'x') + end],
    ['a name that only starts like one', part('Content-Disposition: form-data; name="_methods"', 'x') + part('Content-Disposition: form-data; name="_method-x"', 'x') + end],
  ];
  for (const [what, body] of allowed) {
    it(`passes a body without one (${what}): whole, byte by byte, split anywhere`, () => {
      expect(scan(whole(body))).toBeUndefined();
      expect(scan(bytes(body))).toBeUndefined();
      for (const pieces of splits(body)) expect(scan(pieces)).toBeUndefined();
    });
  }

  it('says so on the chunk that completes the part headers, before the body has ended', () => {
    const body = Buffer.from(title + part('Content-Disposition: form-data; name="_method"', 'DELETE') + file + end);
    const s = new MultipartScanner(multipartDelimiters(CT));
    const cut = body.indexOf('DELETE');
    expect(s.write(body.subarray(0, cut - 4))).toBeUndefined(); // the headers, without their blank line
    expect(s.write(body.subarray(cut - 4, cut))).toBe('override');
  });

  it('reads a body with an empty boundary at PHP\'s delimiter `--`: whole, byte by byte, split anywhere', () => {
    const body = '--\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n----\r\n';
    for (const t of ['multipart/form-data; boundary=""', 'multipart/form-data; boundary=', 'multipart/form-data; boundary=;x']) {
      expect([t, scan(whole(body), t)]).toEqual([t, 'override']);
      expect([t, scan(bytes(body), t)]).toEqual([t, 'override']);
      for (const pieces of splits(body)) expect([t, scan(pieces, t)]).toEqual([t, 'override']);
    }
  });

  it('reads a quoted boundary with its escapes undone: boundary="a\\"b" finds --a"b: whole, byte by byte, split anywhere', () => {
    const t = 'multipart/form-data; boundary="a\\"b"';
    const body = '--a"b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--a"b--\r\n';
    expect(scan(whole(body), t)).toBe('override');
    expect(scan(bytes(body), t)).toBe('override');
    for (const pieces of splits(body)) expect(scan(pieces, t)).toBe('override');
  });

  it('reads the boundary as any parser could: Rack\'s last, PHP\'s first', () => {
    const body = `--bbb\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--bbb--\r\n`;
    expect(scan(whole(body), 'multipart/form-data; boundary=aaa; x="boundary=bbb"')).toBe('override');
    expect(scan(whole(body), 'multipart/form-data; xboundary=bbb; boundary=aaa')).toBe('override');
    expect(scan(whole(body), 'multipart/form-data; boundary=aaa')).toBeUndefined();
  });

  it(`refuses part headers that do not end within ${MAX_PART_HEADERS} bytes, and keeps no more than that`, () => {
    const body = `--${B}\r\nContent-Disposition: form-data; name="x"\r\nX-Long: ${'a'.repeat(MAX_PART_HEADERS)}`;
    expect(scan(whole(body))).toBe('headers-too-long');
    const chunks = Buffer.from(body);
    const pieces = Array.from({ length: Math.ceil(chunks.length / 1000) }, (_, i) => chunks.subarray(i * 1000, (i + 1) * 1000));
    expect(scan(pieces)).toBe('headers-too-long');
  });

  it('streams a large body in a few chunks with bounded work: 8 MiB of file content, no verdict', () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 'x');
    const pieces = [Buffer.from(title + `--${B}\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n`), big, Buffer.from(`\r\n${end}`)];
    expect(scan(pieces)).toBeUndefined();
  });
});

describe('headerBlockNamesOverride', () => {
  it('refuses an override key as a token anywhere in the block, in any spelling a framework reads', () => {
    for (const h of ['name="_method"', 'name=_METHOD', 'name="[_method]"', 'name=".method"', 'name=" method"', 'name="_method[]"', 'name=%5Fmethod', "name*=utf-8''%5f%6Dethod", 'name="\\_me\\thod"', 'Content-ID: _method', 'X: x-http-method-override', 'X: x-http-method', 'X: X-Method-Override;']) {
      expect([h, headerBlockNamesOverride(Buffer.from(`\r\nContent-Disposition: form-data; ${h}`, 'latin1'))]).toEqual([h, true]);
    }
  });

  it('passes a key inside a longer word: payment_method, x_method, _methods, _method-x, x-http-method-overrides', () => {
    for (const h of ['name="payment_method"', 'name="x_method"', 'name="_methods"', 'name="_method-x"', 'name="x-http-method-overrides"', 'name="a.method"', 'name="method"', 'name="post[method]"']) {
      expect([h, headerBlockNamesOverride(Buffer.from(`\r\nContent-Disposition: form-data; ${h}`, 'latin1'))]).toEqual([h, false]);
    }
  });

  it('reads the text after a delimiter inside the block as a block of its own', () => {
    const block = Buffer.from('\r\nContent-Disposition: form-data; name="a"; x=--XyZ_method', 'latin1');
    expect(headerBlockNamesOverride(block)).toBe(false);
    expect(headerBlockNamesOverride(block, Buffer.from('--XyZ'))).toBe(true);
  });
});

describe('jsonNamesOverride', () => {
  it('finds an override key at the top level, in any spelling, escaped, in either order of duplicates', () => {
    for (const text of [
      '{"_method":"DELETE"}',
      ' {\n  "title": "x",\n  "_METHOD" : "delete"\n}',
      '{"X-HTTP-Method-Override":"DELETE"}',
      '{"x-http-method":"PUT","a":1}',
      '{"\\u005fmethod":"DELETE"}',
      '{"_method":"DELETE","_method":"POST"}',
      '{"_method":"POST","_method":"DELETE"}',
      '{"a":{"b":[1,{"c":2}]},"_method":"DELETE"}',
      '{"_method[]":"DELETE"}',
      '{".method":"DELETE"}',
      '{"a":"x\\"y","_method":"DELETE",}', // not valid JSON, which a lenient decoder still takes
    ]) {
      expect([text, jsonNamesOverride(text)]).toEqual([text, true]);
    }
  });

  it('passes JSON without one: nested, as a value, in a top-level array, or text that is not JSON', () => {
    for (const text of ['{"data":{"_method":"DELETE"}}', '{"note":"_method","x":"\\"_method\\":1"}', '[{"_method":"DELETE"}]', '"_method"', '{"title":"x"', 'not json', '']) {
      expect([text, jsonNamesOverride(text)]).toEqual([text, false]);
    }
  });
});

describe('JSON read as UTF-8 only', () => {
  it('takes no charset, utf-8 or us-ascii (any case, quoted); refuses any other, wherever a charset parameter is', () => {
    for (const t of ['application/json', 'application/json; charset=utf-8', 'application/json; Charset="UTF-8"', 'application/vnd.api+json; charset=us-ascii']) {
      expect([t, jsonCharsetIsUtf8(t)]).toEqual([t, true]);
    }
    for (const t of [
      'application/json; charset=utf-7', // body-parser decodes it: {"+AF8-method":…} is _method
      'application/json; charset=utf-16le',
      'application/json; charset="utf-16"',
      'application/json; charset=utf-8; charset=utf-7',
      "application/json; charset*=utf-8''utf-16",
      'application/json; charset=utf8',
      'application/json; charset=',
      'application/json; x="charset=utf-32"',
    ]) {
      expect([t, jsonCharsetIsUtf8(t)]).toEqual([t, false]);
    }
  });

  it('refuses bytes with a UTF-16 or UTF-32 byte order mark, or a NUL in the first four; a UTF-8 one is fine', () => {
    const j = '{"_method":"DELETE"}';
    for (const b of [Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(j, 'utf16le')]), Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(j, 'utf16le').swap16()]), Buffer.from(j, 'utf16le'), Buffer.from([0, 0, 0xfe, 0xff, 0, 0, 0, 0x7b]), Buffer.from([0x7b, 0, 0, 0])]) {
      expect([b.toString('hex'), jsonBytesNotUtf8(b)]).toEqual([b.toString('hex'), true]);
    }
    for (const b of [Buffer.from(j), Buffer.from(`\ufeff${j}`), Buffer.from(''), Buffer.from('{')]) expect([b.toString('hex'), jsonBytesNotUtf8(b)]).toEqual([b.toString('hex'), false]);
    // Behind a UTF-8 byte order mark the scan still finds the key.
    expect(jsonNamesOverride(Buffer.from(`\ufeff${j}`).toString('utf8'))).toBe(true);
  });
});
