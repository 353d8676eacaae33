import { describe, expect, it } from 'vitest';
import { readStringField, utf16Truncated, utf8Truncated, writeStringField } from '../../uapi/strings.js';

const field = (offset: number, size: number) => ({ offset, size });

describe('UTF-8 fields', () => {
  it('terminates and zero-pads', () => {
    const buf = Buffer.alloc(10, 0xee);
    expect(writeStringField(buf, field(1, 8), 'abc', 'utf8')).toBe(3);
    expect([...buf]).toEqual([0xee, 0x61, 0x62, 0x63, 0, 0, 0, 0, 0, 0xee]);
  });

  it('truncates to size - 1 bytes without splitting a character', () => {
    // 'aaaaa' (5) + '€' (3 bytes) = 8 > 7: the euro sign goes whole.
    expect(utf8Truncated('aaaaa€', 7).toString()).toBe('aaaaa');
    expect(utf8Truncated('aaaa€', 7).toString()).toBe('aaaa€');
    // 4-byte character at the edge
    expect(utf8Truncated('ab😀', 5).toString()).toBe('ab');
    expect(utf8Truncated('ab😀', 6).toString()).toBe('ab😀');
    const buf = Buffer.alloc(8, 0xff);
    writeStringField(buf, field(0, 8), 'aaaaa€€', 'utf8');
    expect([...buf]).toEqual([0x61, 0x61, 0x61, 0x61, 0x61, 0, 0, 0]);
  });

  it('stops at an embedded NUL', () => {
    expect(utf8Truncated('ab\0cd', 10).toString()).toBe('ab');
  });

  it('decodes up to the first NUL, keeping a leading BOM', () => {
    const buf = Buffer.from([0xef, 0xbb, 0xbf, 0x41, 0, 0x42, 0]);
    const r = readStringField(buf, field(0, 7), 'utf8', 'f');
    expect(r).toEqual({ ok: true, value: '\ufeffA' });
  });

  it('reports a field with no NUL as unterminated', () => {
    const r = readStringField(Buffer.from('abcd'), field(0, 4), 'utf8', 'body.key');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatchObject({ code: 'unterminated-string', field: 'body.key' });
  });

  it('reports invalid UTF-8 (a lone continuation byte, an overlong NUL, a truncated sequence)', () => {
    for (const bad of [
      [0x80, 0],
      [0xc0, 0x80, 0],
      [0xe2, 0x82, 0],
    ]) {
      const r = readStringField(Buffer.from(bad), field(0, bad.length), 'utf8', 'v');
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe('invalid-utf8');
    }
  });

  it('reports a field cut short by the end of the buffer', () => {
    const r = readStringField(Buffer.from([0x41]), field(0, 4), 'utf8', 'k');
    expect(r.ok ? null : r.error.code).toBe('too-short');
  });
});

describe('UTF-16LE fields', () => {
  it('encodes little-endian with a two-byte terminator', () => {
    const buf = Buffer.alloc(8, 0xee);
    expect(writeStringField(buf, field(0, 8), 'hé', 'utf16le')).toBe(4);
    expect([...buf]).toEqual([0x68, 0, 0xe9, 0, 0, 0, 0, 0]);
  });

  it('never splits a surrogate pair when truncating', () => {
    // 3 units allowed: 'a' + pair would need 3 -> fits; 'ab' + pair needs 4 -> pair dropped.
    expect(utf16Truncated('a😀', 3).toString('utf16le')).toBe('a😀');
    expect(utf16Truncated('ab😀', 3).toString('utf16le')).toBe('ab');
  });

  it('decodes until the 0x0000 unit, not a zero byte', () => {
    const buf = Buffer.from([0x00, 0x01, 0x41, 0x00, 0x00, 0x00]); // U+0100, 'A', NUL
    expect(readStringField(buf, field(0, 6), 'utf16le', 'k')).toEqual({ ok: true, value: '\u0100A' });
  });

  it('reports an unpaired surrogate as invalid', () => {
    const buf = Buffer.from([0x3d, 0xd8, 0x41, 0x00, 0, 0]);
    const r = readStringField(buf, field(0, 6), 'utf16le', 'k');
    expect(r.ok ? null : r.error.code).toBe('invalid-utf16');
  });

  it('reports a missing terminator', () => {
    const r = readStringField(Buffer.from([0x41, 0, 0x42, 0]), field(0, 4), 'utf16le', 'k');
    expect(r.ok ? null : r.error.code).toBe('unterminated-string');
  });
});
