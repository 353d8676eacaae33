/**
 * Fixed-size string fields of the UAPI structs.
 *
 * Encode: the text is cut at its first U+0000, truncated to leave room for the terminator without
 * splitting a character (a UTF-8 sequence or a UTF-16 surrogate pair), then terminated and
 * zero-padded to the field's size. Decode: the text ends at the first terminator inside the
 * field; no terminator, or bytes that are not valid in the encoding, give a typed error.
 *
 * The char-device protocol (kernel <-> daemon) carries UTF-8; the host's wire format carries
 * UTF-16LE.
 */
import type { Field } from './layout.js';
import { type DecodeResult, fail, ok } from './result.js';

export type StringEncoding = 'utf8' | 'utf16le';

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf16Decoder = new TextDecoder('utf-16le', { fatal: true, ignoreBOM: true });

function beforeNul(text: string): string {
  const nul = text.indexOf('\0');
  return nul < 0 ? text : text.slice(0, nul);
}

/**
 * The UTF-8 bytes of `text` (up to its first NUL), cut to at most `max` bytes at a character
 * boundary. Lone surrogates in the JS string become U+FFFD, as TextEncoder does.
 */
export function utf8Truncated(text: string, max: number): Buffer {
  const bytes = Buffer.from(beforeNul(text), 'utf8');
  if (bytes.length <= max) return bytes;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) so the cut lands before a lead byte.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** The UTF-16LE bytes of `text` (up to its first NUL), at most `maxUnits` units, pairs kept whole. */
export function utf16Truncated(text: string, maxUnits: number): Buffer {
  let units = beforeNul(text);
  if (units.length > maxUnits) {
    let end = maxUnits;
    const last = units.charCodeAt(end - 1);
    const next = units.charCodeAt(end);
    if (last >= 0xd800 && last <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) end--;
    units = units.slice(0, end);
  }
  return Buffer.from(units, 'utf16le');
}

/**
 * Write `text` into `field` of `buf` (at `base` + field.offset): truncated, terminated and
 * zero-padded. Returns the number of bytes of text written, terminator excluded.
 */
export function writeStringField(
  buf: Buffer,
  field: Field,
  text: string,
  encoding: StringEncoding,
  base = 0,
): number {
  const start = base + field.offset;
  buf.fill(0, start, start + field.size);
  if (encoding === 'utf8') {
    // Buffer#write never writes part of a character: the same cut as utf8Truncated, no copy.
    return buf.write(beforeNul(text), start, field.size - 1, 'utf8');
  }
  const bytes = utf16Truncated(text, field.size / 2 - 1);
  bytes.copy(buf, start);
  return bytes.length;
}

/** Read the terminated string in `field` of `buf`; `name` is the C designator used in errors. */
export function readStringField(
  buf: Buffer,
  field: Field,
  encoding: StringEncoding,
  name: string,
  base = 0,
): DecodeResult<string> {
  const start = base + field.offset;
  if (buf.length < start + field.size)
    return fail('too-short', `${name}: the message ends inside this field`, { field: name });
  if (encoding === 'utf8') {
    // The common path of every message: no view, no copy.
    const nul = buf.indexOf(0, start);
    if (nul < 0 || nul >= start + field.size) return unterminated(name, field);
    const text = buf.toString('utf8', start, nul);
    // toString replaces invalid sequences with U+FFFD; only then ask the strict decoder.
    if (!text.includes('\uFFFD')) return ok(text);
    try {
      return ok(utf8Decoder.decode(buf.subarray(start, nul)));
    } catch {
      return fail('invalid-utf8', `${name}: not valid UTF-8`, { field: name });
    }
  }
  let end = -1;
  let surrogates = false;
  for (let i = start; i + 1 < start + field.size; i += 2) {
    const hi = buf[i + 1]!;
    if (hi === 0 && buf[i] === 0) {
      end = i;
      break;
    }
    if (hi >= 0xd8 && hi <= 0xdf) surrogates = true;
  }
  if (end < 0) return unterminated(name, field);
  // Without surrogates every unit is a character of its own: nothing to validate.
  if (!surrogates) return ok(buf.toString('utf16le', start, end));
  try {
    return ok(utf16Decoder.decode(buf.subarray(start, end)));
  } catch {
    return fail('invalid-utf16', `${name}: not valid UTF-16LE`, { field: name });
  }
}

function unterminated(name: string, field: Field): DecodeResult<string> {
  return fail('unterminated-string', `${name}: no terminator within its ${field.size} bytes`, {
    field: name,
  });
}

/** Byte length of `text` once encoded into a field of `fieldSize` bytes, terminator included. */
export function encodedSize(text: string, encoding: StringEncoding, fieldSize: number): number {
  return encoding === 'utf8'
    ? utf8Truncated(text, fieldSize - 1).length + 1
    : utf16Truncated(text, fieldSize / 2 - 1).length + 2;
}
