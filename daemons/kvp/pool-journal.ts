/**
 * The intent journal of one pool file (`.kvp_pool_N.journal`): the codec and the recovery decision.
 * Pure: no I/O (pool.ts does the reads and writes). See the design comment in pool.ts.
 *
 * An entry describes one in-place change of the pool file: the region at `offset` goes from
 * `before` to `after` (same length), then the file is cut from `oldSize` to `newSize` (equal for an
 * overwrite). Two kinds, to keep a delete's journal small:
 *   1 overwrite     stores before and after (one record each for a SET of an existing key);
 *   2 shift-delete  stores the deleted record and after; before is derived, since shifting the
 *                   records after the deleted one up a slot makes before = deleted ++ after[..-2560].
 *
 * Layout (little-endian):
 *   0 'KVPJ'  4 version (1)  5 kind  6 reserved (2)  8 offset u64  16 oldSize u64  24 newSize u64
 *   32 region length u32  36 reserved (4)  40 payload  then SHA-256 of bytes 0..end of payload.
 * A torn journal write fails the checksum: the pool file was not touched yet, the entry is dropped.
 */
import { createHash } from 'node:crypto';
import { type DecodeResult, fail, ok } from '../../uapi/result.js';
import { POOL_RECORD_SIZE } from './pool-file.js';

export interface JournalEntry {
  readonly kind: 'overwrite' | 'shift-delete';
  readonly offset: number;
  readonly oldSize: number;
  readonly newSize: number;
  readonly before: Buffer;
  readonly after: Buffer;
}

const MAGIC = Buffer.from('KVPJ', 'latin1');
const VERSION = 1;
const HEADER = 40;
const DIGEST = 32;
const KIND_CODE = { overwrite: 1, 'shift-delete': 2 } as const;

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

export function encodeJournal(entry: JournalEntry): Buffer {
  const len = entry.after.length;
  if (entry.before.length !== len) throw new RangeError('journal: before and after differ in length');
  if (
    entry.kind === 'shift-delete' &&
    (len < POOL_RECORD_SIZE ||
      len % POOL_RECORD_SIZE !== 0 ||
      !entry.before.subarray(POOL_RECORD_SIZE).equals(entry.after.subarray(0, len - POOL_RECORD_SIZE)))
  )
    throw new RangeError('journal: a shift-delete region must be whole records shifted up by one');
  const payload =
    entry.kind === 'overwrite'
      ? [entry.before, entry.after]
      : [entry.before.subarray(0, POOL_RECORD_SIZE), entry.after];
  const payloadLen = payload.reduce((n, b) => n + b.length, 0);
  const out = Buffer.alloc(HEADER + payloadLen + DIGEST);
  MAGIC.copy(out, 0);
  out.writeUInt8(VERSION, 4);
  out.writeUInt8(KIND_CODE[entry.kind], 5);
  out.writeBigUInt64LE(BigInt(entry.offset), 8);
  out.writeBigUInt64LE(BigInt(entry.oldSize), 16);
  out.writeBigUInt64LE(BigInt(entry.newSize), 24);
  out.writeUInt32LE(len, 32);
  let at = HEADER;
  for (const part of payload) at += part.copy(out, at);
  sha256(out.subarray(0, at)).copy(out, at);
  return out;
}

/** Decode a journal file's bytes; never throws. */
export function decodeJournal(raw: Buffer): DecodeResult<JournalEntry> {
  if (raw.length < HEADER + DIGEST) return fail('too-short', 'journal: shorter than its header');
  if (!raw.subarray(0, 4).equals(MAGIC) || raw.readUInt8(4) !== VERSION)
    return fail('invalid-field', 'journal: bad magic or version', { field: 'magic' });
  const code = raw.readUInt8(5);
  const kind = code === 1 ? 'overwrite' : code === 2 ? 'shift-delete' : undefined;
  if (!kind) return fail('invalid-field', `journal: unknown kind ${code}`, { field: 'kind' });
  const len = raw.readUInt32LE(32);
  const payloadLen = kind === 'overwrite' ? 2 * len : POOL_RECORD_SIZE + len;
  const end = HEADER + payloadLen;
  if (raw.length < end + DIGEST) return fail('too-short', 'journal: ends inside its payload');
  if (!sha256(raw.subarray(0, end)).equals(raw.subarray(end, end + DIGEST)))
    return fail('invalid-field', 'journal: checksum mismatch (torn journal write)', { field: 'sha256' });
  if (kind === 'shift-delete' && (len === 0 || len % POOL_RECORD_SIZE !== 0))
    return fail('bad-length', 'journal: shift-delete region is not whole records');
  const offset = Number(raw.readBigUInt64LE(8));
  const oldSize = Number(raw.readBigUInt64LE(16));
  const newSize = Number(raw.readBigUInt64LE(24));
  const payload = Buffer.from(raw.subarray(HEADER, end));
  const before =
    kind === 'overwrite'
      ? payload.subarray(0, len)
      : Buffer.concat([payload.subarray(0, POOL_RECORD_SIZE), payload.subarray(POOL_RECORD_SIZE, len)]);
  const after = kind === 'overwrite' ? payload.subarray(len) : payload.subarray(POOL_RECORD_SIZE);
  return ok({ kind, offset, oldSize, newSize, before, after });
}

export type Recovery =
  /** The region already holds `after` and the cut (if any) is done, or the change never began. */
  | { readonly action: 'none'; readonly why: 'applied' | 'not-started' }
  /** The region holds `after`; only the cut to `size` is missing. */
  | { readonly action: 'truncate'; readonly size: number }
  /** The region is torn between before and after: write `before` back at `offset`. */
  | { readonly action: 'roll-back'; readonly offset: number; readonly bytes: Buffer }
  /** The file no longer matches either side: someone else changed it since. Leave it alone. */
  | { readonly action: 'discard'; readonly why: string };

/**
 * What to do with a journal entry found at startup (or by the next holder of the locks), given the
 * pool file's size, the bytes now at the entry's region (short if the file ends inside it) and,
 * for a cut, the record now at `newSize` (undefined if none).
 *
 * A torn region is rolled back, never forward: the change was not acknowledged (the journal is
 * cleared before the caller's promise resolves), so restoring `before` is a correct outcome and
 * needs nothing but the region itself. A region that is neither a byte-wise mix of before/after
 * nor equal to either was rewritten by another program after the crash: we do not touch it.
 */
export function planRecovery(
  entry: JournalEntry,
  fileSize: number,
  region: Buffer,
  recordAtNewSize: Buffer | undefined,
): Recovery {
  const len = entry.after.length;
  if (region.length < len)
    return { action: 'discard', why: 'the file is now shorter than the journaled region' };
  if (region.equals(entry.after)) {
    const lastBefore = len >= POOL_RECORD_SIZE ? entry.after.subarray(len - POOL_RECORD_SIZE) : undefined;
    if (
      entry.newSize < entry.oldSize &&
      fileSize === entry.oldSize &&
      lastBefore !== undefined &&
      recordAtNewSize !== undefined &&
      recordAtNewSize.equals(lastBefore)
    )
      return { action: 'truncate', size: entry.newSize };
    return { action: 'none', why: 'applied' };
  }
  if (region.equals(entry.before)) return { action: 'none', why: 'not-started' };
  for (let i = 0; i < len; i++) {
    const b = region[i];
    if (b !== entry.before[i] && b !== entry.after[i])
      return { action: 'discard', why: 'the journaled region was changed by another program since' };
  }
  return { action: 'roll-back', offset: entry.offset, bytes: entry.before };
}
