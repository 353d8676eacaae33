/**
 * The kernel's UTF-16 <-> UTF-8 conversions (fs/nls/nls_base.c: utf16s_to_utf8s, utf8s_to_utf16s),
 * with their exact edge behaviour, which the hv_utils drivers apply to every string between the
 * host (UTF-16LE) and the daemons (UTF-8):
 *
 *  - UTF-16 -> UTF-8 stops at the first 0x0000 unit or when input or output runs out, writes no
 *    terminator, skips unpaired surrogates; a character that does not fit the remaining output
 *    stops the conversion (kernels with the Nov-2025 nls fix) or is skipped while later, shorter
 *    characters are still converted (older kernels) — `overflow` chooses;
 *  - UTF-8 -> UTF-16 stops at NUL or the unit limit; an invalid, overlong or surrogate sequence
 *    fails the whole conversion (-EINVAL); a supplementary character with only one unit of room
 *    left ends the conversion.
 */
import { EINVAL } from './errno.js';

const PLANE_SIZE = 0x10000;
const SURROGATE_MASK = 0xfffff800;
const SURROGATE_PAIR = 0x0000d800;
const SURROGATE_LOW = 0x00000400;
const SURROGATE_BITS = 0x000003ff;
const UNICODE_MAX = 0x0010ffff;

/** nls_base.c's utf8_table: cmask, cval, shift, lmask, lval per sequence length (1..6 bytes). */
const UTF8_TABLE: readonly (readonly [number, number, number, number, number])[] = [
  [0x80, 0x00, 0, 0x7f, 0],
  [0xe0, 0xc0, 6, 0x7ff, 0x80],
  [0xf0, 0xe0, 12, 0xffff, 0x800],
  [0xf8, 0xf0, 18, 0x1fffff, 0x10000],
  [0xfc, 0xf8, 24, 0x3ffffff, 0x200000],
  [0xfe, 0xfc, 30, 0x7fffffff, 0x4000000],
];

/** utf32_to_utf8: the bytes of `u`, or undefined if invalid or longer than `maxout`. */
function utf32ToUtf8(u: number, maxout: number): number[] | undefined {
  if (u > UNICODE_MAX || (u & SURROGATE_MASK) === SURROGATE_PAIR) return undefined;
  let room = maxout;
  for (const [, cval, shift, lmask] of UTF8_TABLE) {
    if (room <= 0) return undefined;
    room--;
    if (u <= lmask) {
      const out = [cval | (u >>> shift)];
      for (let c = shift; c > 0;) {
        c -= 6;
        out.push(0x80 | ((u >>> c) & 0x3f));
      }
      return out;
    }
  }
  return undefined;
}

/** utf8_to_utf32: [code point, bytes consumed] or undefined for an invalid sequence. */
function utf8ToUtf32(s: Uint8Array, at: number, inlen: number): [number, number] | undefined {
  const c0 = s[at] ?? 0;
  let l = c0;
  let nc = 0;
  for (const [cmask, cval, , lmask, lval] of UTF8_TABLE) {
    nc++;
    if ((c0 & cmask) === cval) {
      l &= lmask;
      if (l < lval || l > UNICODE_MAX || (l & SURROGATE_MASK) === SURROGATE_PAIR) return undefined;
      return [l, nc];
    }
    if (inlen <= nc) return undefined;
    const c = ((s[at + nc] ?? 0) ^ 0x80) & 0xff;
    if (c & 0xc0) return undefined;
    l = ((l << 6) | c) >>> 0;
  }
  return undefined;
}

export type Utf16OverflowRule = 'stop' | 'skip';

/**
 * utf16s_to_utf8s: convert at most `inlen` UTF-16LE units of `src` into at most `maxout` UTF-8
 * bytes. Returns the bytes (no terminator).
 */
export function utf16sToUtf8s(
  src: Uint8Array,
  inlen: number,
  maxout: number,
  overflow: Utf16OverflowRule = 'stop',
): Buffer {
  const unit = (k: number) => (src[2 * k] ?? 0) | ((src[2 * k + 1] ?? 0) << 8);
  const units = Math.min(inlen, Math.floor(src.length / 2));
  // ASCII up to where the conversion stops (the common case): one byte per unit.
  const limit = Math.min(units, maxout);
  let n = 0;
  while (n < limit && src[2 * n + 1] === 0 && (src[2 * n] ?? 0) !== 0 && (src[2 * n] ?? 0) < 0x80) n++;
  if (n === limit || unit(n) === 0) {
    const ascii = Buffer.allocUnsafe(n);
    for (let k = 0; k < n; k++) ascii[k] = src[2 * k] ?? 0;
    return ascii;
  }
  const out: number[] = [];
  let room = maxout;
  let i = 0;
  let left = units;
  while (left > 0 && room > 0) {
    let u = unit(i);
    if (!u) break;
    i++;
    left--;
    if (u > 0x7f) {
      if ((u & SURROGATE_MASK) === SURROGATE_PAIR) {
        if (u & SURROGATE_LOW) continue; // a lone low surrogate is skipped
        if (left <= 0) break;
        const v = unit(i);
        if ((v & SURROGATE_MASK) !== SURROGATE_PAIR || !(v & SURROGATE_LOW)) continue; // lone high
        u = PLANE_SIZE + ((u & SURROGATE_BITS) << 10) + (v & SURROGATE_BITS);
        i++;
        left--;
      }
      const bytes = utf32ToUtf8(u, room);
      if (!bytes) {
        if (overflow === 'stop') break;
        continue;
      }
      out.push(...bytes);
      room -= bytes.length;
    } else {
      out.push(u);
      room--;
    }
  }
  return Buffer.from(out);
}

/**
 * utf8s_to_utf16s: convert at most `inlen` bytes of `src` (stopping at NUL) into at most `maxout`
 * UTF-16LE units. Returns the units as bytes, or -EINVAL for invalid UTF-8.
 */
export function utf8sToUtf16s(src: Uint8Array, inlen: number, maxout: number): Buffer | number {
  const fast = asciiUnits(src, inlen, maxout);
  if (fast >= 0) {
    const ascii = Buffer.alloc(fast * 2);
    for (let i = 0; i < fast; i++) ascii[2 * i] = src[i] ?? 0;
    return ascii;
  }
  return utf8sToUtf16sSlow(src, inlen, maxout);
}

/**
 * utf8s_to_utf16s writing the units straight to `dst` at byte offset `at`, as the kernel writes
 * into the host's packet. Returns the number of units written, or -EINVAL (nothing written).
 */
export function utf8sToUtf16sInto(
  src: Uint8Array,
  inlen: number,
  maxout: number,
  dst: Uint8Array,
  at: number,
): number {
  const fast = asciiUnits(src, inlen, maxout);
  if (fast >= 0) {
    for (let i = 0; i < fast; i++) {
      dst[at + 2 * i] = src[i] ?? 0;
      dst[at + 2 * i + 1] = 0;
    }
    return fast;
  }
  const r = utf8sToUtf16sSlow(src, inlen, maxout);
  if (typeof r === 'number') return r;
  dst.set(r, at);
  return r.length / 2;
}

/**
 * The ASCII case (the common one): when everything up to where the conversion stops is ASCII,
 * the number of units (one per byte); else -1.
 */
function asciiUnits(src: Uint8Array, inlen: number, maxout: number): number {
  const limit = Math.min(inlen, src.length, maxout);
  let n = 0;
  while (n < limit && (src[n] ?? 0) !== 0 && (src[n] ?? 0) < 0x80) n++;
  return n === limit || src[n] === 0 ? n : -1;
}

function utf8sToUtf16sSlow(src: Uint8Array, inlen: number, maxout: number): Buffer | number {
  const out: number[] = [];
  let at = 0;
  let left = Math.min(inlen, src.length);
  let room = maxout;
  while (left > 0 && room > 0 && src[at]) {
    const c = src[at] ?? 0;
    if (c & 0x80) {
      const r = utf8ToUtf32(src, at, left);
      if (!r) return -EINVAL;
      let [u] = r;
      at += r[1];
      left -= r[1];
      if (u >= PLANE_SIZE) {
        if (room < 2) break;
        u -= PLANE_SIZE;
        out.push(
          SURROGATE_PAIR | ((u >>> 10) & SURROGATE_BITS),
          SURROGATE_PAIR | SURROGATE_LOW | (u & SURROGATE_BITS),
        );
        room -= 2;
      } else {
        out.push(u);
        room--;
      }
    } else {
      out.push(c);
      at++;
      left--;
      room--;
    }
  }
  const buf = Buffer.alloc(out.length * 2);
  out.forEach((u, k) => buf.writeUInt16LE(u, 2 * k));
  return buf;
}

/** strlen over a buffer: bytes before the first NUL (or to the end when there is none). */
export function strlen(buf: Uint8Array, from = 0, limit = buf.length - from): number {
  const end = Math.min(buf.length, from + limit);
  for (let i = from; i < end; i++) if (buf[i] === 0) return i - from;
  return end - from;
}
