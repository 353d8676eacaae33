/**
 * The record codec of the KVP pool files (/var/lib/hyperv/.kvp_pool_N), byte-compatible with the C
 * daemon, cloud-init, azure-init and WALinuxAgent: no header, fixed 2560-byte records, each a
 * 512-byte key field then a 2048-byte value field, UTF-8, NUL-terminated. Pure: no I/O.
 *
 * Encode: key and value zero-padded to their fields (the C daemon leaves heap garbage after the
 * NULs; we never do). Decode: each field ends at its first NUL, whatever follows is ignored.
 *
 * A slot is served only if its key is terminated, non-empty and valid UTF-8 and its value is
 * valid UTF-8. A value field with no NUL at all is accepted as a 2048-byte value (a foreign writer
 * may fill the field exactly; the key is intact, so dropping the record would lose data the C
 * daemon would have served). Anything else is reported as corrupt, with a reason a log line can name.
 */
import { HV_KVP_EXCHANGE_MAX_KEY_SIZE, HV_KVP_EXCHANGE_MAX_VALUE_SIZE } from '../../uapi/constants.js';
import type { Field } from '../../uapi/layout.js';
import { readStringField, writeStringField } from '../../uapi/strings.js';

/** The key field of a record: bytes 0..511. */
export const POOL_KEY_FIELD: Field = Object.freeze({ offset: 0, size: HV_KVP_EXCHANGE_MAX_KEY_SIZE });
/** The value field of a record: bytes 512..2559. */
export const POOL_VALUE_FIELD: Field = Object.freeze({
  offset: HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  size: HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
});
/** Bytes per record (2560); a pool file holds size / 2560 whole records. */
export const POOL_RECORD_SIZE = HV_KVP_EXCHANGE_MAX_KEY_SIZE + HV_KVP_EXCHANGE_MAX_VALUE_SIZE;
/** Longest storable key and value, in UTF-8 bytes (the terminating NUL needs the last byte). */
export const POOL_MAX_KEY_BYTES = HV_KVP_EXCHANGE_MAX_KEY_SIZE - 1;
export const POOL_MAX_VALUE_BYTES = HV_KVP_EXCHANGE_MAX_VALUE_SIZE - 1;

export type CorruptReason = 'unterminated-key' | 'empty-key' | 'invalid-utf8-key' | 'invalid-utf8-value';

export type SlotContent =
  | { readonly ok: true; readonly key: string; readonly value: string }
  | { readonly ok: false; readonly reason: CorruptReason; readonly message: string };

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decode the record that starts at `base` in `buf` (which must hold all 2560 bytes of it). */
export function decodeRecord(buf: Buffer, base = 0): SlotContent {
  const key = readStringField(buf, POOL_KEY_FIELD, 'utf8', 'key', base);
  if (!key.ok) {
    return key.error.code === 'unterminated-string'
      ? { ok: false, reason: 'unterminated-key', message: 'the key field has no NUL terminator' }
      : { ok: false, reason: 'invalid-utf8-key', message: 'the key is not valid UTF-8' };
  }
  if (key.value === '') return { ok: false, reason: 'empty-key', message: 'the key is empty' };
  const value = readStringField(buf, POOL_VALUE_FIELD, 'utf8', 'value', base);
  if (value.ok) return { ok: true, key: key.value, value: value.value };
  if (value.error.code === 'unterminated-string') {
    const start = base + POOL_VALUE_FIELD.offset;
    try {
      return {
        ok: true,
        key: key.value,
        value: strictUtf8.decode(buf.subarray(start, start + POOL_VALUE_FIELD.size)),
      };
    } catch {
      // fall through: not valid UTF-8
    }
  }
  return { ok: false, reason: 'invalid-utf8-value', message: 'the value is not valid UTF-8' };
}

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why a key or value cannot be stored as given, or undefined if it can. We never truncate: a cut key
 * would silently name another record, and the kernel never sends longer data anyway.
 */
export function storableProblem(text: string, what: 'key' | 'value'): string | undefined {
  const max = what === 'key' ? POOL_MAX_KEY_BYTES : POOL_MAX_VALUE_BYTES;
  if (what === 'key' && text === '') return 'the key is empty';
  if (text.includes('\0')) return `the ${what} contains a NUL character`;
  if (LONE_SURROGATE.test(text)) return `the ${what} is not well-formed Unicode (lone surrogate)`;
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > max) return `the ${what} is ${bytes} bytes of UTF-8, more than ${max}`;
  return undefined;
}

/** The 2560 bytes of a record, zero-padded. The caller has checked both with storableProblem(). */
export function encodeRecord(key: string, value: string): Buffer {
  const buf = Buffer.alloc(POOL_RECORD_SIZE);
  writeStringField(buf, POOL_KEY_FIELD, key, 'utf8');
  writeStringField(buf, POOL_VALUE_FIELD, value, 'utf8');
  return buf;
}
