/** The kernel's UTF-16 <-> UTF-8 conversions, edge by edge (nls_base.c). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { strlen, utf16sToUtf8s, utf8sToUtf16s, utf8sToUtf16sInto } from '../../kernel-shim/nls.js';

const u16 = (...units: number[]) => {
  const b = Buffer.alloc(units.length * 2);
  units.forEach((u, i) => b.writeUInt16LE(u, 2 * i));
  return b;
};

describe('utf16s_to_utf8s', () => {
  it('converts and stops at the first 0x0000 unit', () => {
    expect(utf16sToUtf8s(u16(0x48, 0xe9, 0, 0x41), 10, 100).toString()).toBe('Hé');
  });

  it('joins surrogate pairs', () => {
    expect(utf16sToUtf8s(Buffer.from('a😀b', 'utf16le'), 10, 100).toString()).toBe('a😀b');
  });

  it('skips an unpaired low surrogate and an unpaired high surrogate (the next unit kept)', () => {
    expect(utf16sToUtf8s(u16(0x41, 0xdc00, 0x42), 10, 100).toString()).toBe('AB');
    expect(utf16sToUtf8s(u16(0x41, 0xd800, 0x42), 10, 100).toString()).toBe('AB');
    expect(utf16sToUtf8s(u16(0x41, 0xd800), 10, 100).toString()).toBe('A');
  });

  it('honours the input unit limit and the output byte limit', () => {
    expect(utf16sToUtf8s(Buffer.from('abcdef', 'utf16le'), 3, 100).toString()).toBe('abc');
    expect(utf16sToUtf8s(Buffer.from('abcdef', 'utf16le'), 10, 4).toString()).toBe('abcd');
  });

  it('a character that does not fit: newer kernels stop, older ones skip it and go on', () => {
    const src = Buffer.from('ab€cd', 'utf16le'); // € needs 3 bytes
    expect(utf16sToUtf8s(src, 10, 4, 'stop').toString()).toBe('ab');
    expect(utf16sToUtf8s(src, 10, 4, 'skip').toString()).toBe('abcd');
  });

  it('agrees with Node for any well-formed text that fits', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 60 }), (s) => {
        const clean = s.replace(/\0/g, '');
        const out = utf16sToUtf8s(Buffer.from(clean, 'utf16le'), 1000, 10_000);
        expect(out.toString('utf8')).toBe(clean);
      }),
    );
  });
});

describe('utf16s_to_utf8s limits', () => {
  it('stops where the kernel stops (inlen, maxout, NUL) for ASCII and mixed text alike', () => {
    // The reference: the kernel's loop, one code point at a time ('stop' rule): no input units or
    // no room left ends it, a NUL ends it, a character that does not fit the room ends it.
    const reference = (text: string, inlen: number, maxout: number): string => {
      let out = '';
      let units = 0;
      for (const ch of text) {
        if (ch === '\0' || units >= inlen || Buffer.byteLength(out) >= maxout) break;
        if (ch.length === 2 && units + 2 > inlen) break; // the low half is past inlen: dropped
        if (Buffer.byteLength(out + ch) > maxout) break;
        units += ch.length;
        out += ch;
      }
      return out;
    };
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', '\0', 'é', '€', '😀'), maxLength: 40 }),
        fc.nat(50),
        fc.nat(60),
        (text, inlen, maxout) => {
          const r = utf16sToUtf8s(Buffer.from(text, 'utf16le'), inlen, maxout);
          expect(r.toString('utf8')).toBe(reference(text, inlen, maxout));
        },
      ),
    );
  });
});

describe('utf8s_to_utf16s', () => {
  it('converts, with surrogate pairs for supplementary characters', () => {
    const r = utf8sToUtf16s(Buffer.from('a😀é'), 100, 100);
    expect(Buffer.isBuffer(r) && r.toString('utf16le')).toBe('a😀é');
  });

  it('stops at NUL and at the unit limit; a pair with one unit of room ends the conversion', () => {
    const a = utf8sToUtf16s(Buffer.from('ab\0cd'), 100, 100);
    expect(Buffer.isBuffer(a) && a.toString('utf16le')).toBe('ab');
    const b = utf8sToUtf16s(Buffer.from('abc😀d'), 100, 4);
    expect(Buffer.isBuffer(b) && b.toString('utf16le')).toBe('abc');
  });

  it('fails the whole conversion on invalid, overlong or surrogate UTF-8', () => {
    for (const bad of [
      [0x61, 0x80],
      [0xc0, 0x80],
      [0xe0, 0x80, 0x80],
      [0xed, 0xa0, 0x80],
      [0xe2, 0x82],
      [0xf4, 0x90, 0x80, 0x80],
    ]) {
      expect(utf8sToUtf16s(Buffer.from(bad), bad.length, 100)).toBe(-22);
    }
  });

  it('agrees with Node for any well-formed text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 60 }), (s) => {
        const clean = s.replace(/\0/g, '');
        const bytes = Buffer.from(clean);
        const r = utf8sToUtf16s(bytes, bytes.length, 10_000);
        expect(Buffer.isBuffer(r) && r.toString('utf16le')).toBe(clean);
      }),
    );
  });

  it('stops where the kernel stops (inlen, maxout, NUL) for ASCII and mixed text alike', () => {
    // The reference: the kernel's loop, one code point at a time: no room or no input left ends
    // it, a character cut by inlen is invalid (-EINVAL), a pair without two units of room ends it.
    const reference = (text: string, inlen: number, maxout: number): string | number => {
      let out = '';
      let bytes = 0;
      for (const ch of text) {
        if (ch === '\0' || out.length >= maxout || bytes >= inlen) break;
        const b = Buffer.byteLength(ch);
        if (bytes + b > inlen) return -22;
        if (ch.length === 2 && maxout - out.length < 2) break;
        bytes += b;
        out += ch;
      }
      return out;
    };
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', '\0', 'é', '😀'), maxLength: 40 }),
        fc.nat(50),
        fc.nat(50),
        (text, inlen, maxout) => {
          const r = utf8sToUtf16s(Buffer.from(text), inlen, maxout);
          expect(Buffer.isBuffer(r) ? r.toString('utf16le') : r).toBe(reference(text, inlen, maxout));
        },
      ),
    );
  });

  it('writes into a buffer exactly what it returns (units, or -EINVAL with nothing written)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'Z', ' ', '\0', 'é', '😀'), maxLength: 30 }),
        fc.nat(40),
        fc.nat(40),
        fc.boolean(),
        (text, inlen, maxout, cut) => {
          const src = Buffer.from(text);
          const bytes = cut && src.length > 0 ? src.subarray(0, src.length - 1) : src;
          const dst = Buffer.alloc(100, 0xee);
          const n = utf8sToUtf16sInto(bytes, inlen, maxout, dst, 3);
          const r = utf8sToUtf16s(bytes, inlen, maxout);
          if (typeof r === 'number') {
            expect(n).toBe(r);
            expect(dst.every((b) => b === 0xee)).toBe(true);
          } else {
            expect(n).toBe(r.length / 2);
            expect(dst.subarray(3, 3 + r.length)).toEqual(r);
            expect(dst[3 + r.length]).toBe(0xee);
            expect(dst.subarray(0, 3).every((b) => b === 0xee)).toBe(true);
          }
        },
      ),
    );
  });

  it('strlen stops at NUL or the end', () => {
    expect(strlen(Buffer.from('ab\0c'))).toBe(2);
    expect(strlen(Buffer.from('abc'))).toBe(3);
    expect(strlen(Buffer.from('xxab\0'), 2)).toBe(2);
  });
});
