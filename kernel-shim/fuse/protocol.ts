/**
 * Codecs for the part of the Linux FUSE wire protocol (<linux/fuse.h>, major 7) that the kernel-shim
 * serves: pure functions over Buffers, no I/O.
 *
 * Every struct is declared once as an ordered field list (`struct(...)`); offsets and sizes follow
 * C natural alignment and are checked against the system header by the test suite (a C program
 * compiled against /usr/include/linux/fuse.h prints sizeof/offsetof for every struct and field
 * listed here). The kernel writes and reads these structs in host byte order; Hyper-V guests are
 * little-endian (x86_64, arm64), so everything here is little-endian and `mountFuse` refuses to run
 * on a big-endian host.
 *
 * Protocol version: we speak 7.38 (the header on this machine) and negotiate down to whatever the
 * kernel offers, refusing anything older than 7.12 (no poll notifications before 7.11, and reply
 * sizes before 7.9 differ). Only the INIT reply has a minor-dependent size in the range we accept.
 */

// ---------------------------------------------------------------------------------------------
// Struct declarations
// ---------------------------------------------------------------------------------------------

export type Scalar = 'u16' | 'u32' | 'i32' | 'u64' | 'i64';

/** Bytes that are part of the C struct (padding, unused arrays) but carry no value for us. */
export interface Reserved {
  readonly reserved: Scalar;
  readonly count: number;
}

export type FieldSpec = Scalar | Reserved | StructDef<FieldMap>;
export type FieldMap = { readonly [name: string]: FieldSpec };

export interface StructDef<F extends FieldMap> {
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: F;
  readonly offsets: { readonly [K in keyof F]: number };
  /** The fields that carry a value, in order, with their offsets: what decode and encode walk. */
  readonly plan: readonly PlannedField[];
}

/** One value-carrying field of a struct, laid out. */
export interface PlannedField {
  readonly key: string;
  readonly offset: number;
  /** A scalar type, or the nested struct. */
  readonly spec: Scalar | StructDef<FieldMap>;
}

type ValueOf<S> = S extends 'u64' | 'i64'
  ? bigint
  : S extends Scalar
    ? number
    : S extends StructDef<infer G>
      ? StructValue<G>
      : never;

type ValueKeys<F extends FieldMap> = { [K in keyof F]: F[K] extends Reserved ? never : K }[keyof F];

/** The decoded value of a struct: one property per non-reserved field. */
export type StructValue<F extends FieldMap> = { -readonly [K in ValueKeys<F>]: ValueOf<F[K]> };

/** What `encode` accepts: any subset of the fields, the rest are zero. */
export type StructInit<F extends FieldMap> = {
  [K in ValueKeys<F>]?: F[K] extends StructDef<infer G> ? StructInit<G> : ValueOf<F[K]>;
};

const SCALAR_SIZE: Record<Scalar, number> = { u16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

function isReserved(spec: FieldSpec): spec is Reserved {
  return typeof spec === 'object' && 'reserved' in spec;
}

/** Size and alignment of a field. */
export function fieldLayout(spec: FieldSpec): { size: number; align: number } {
  if (typeof spec === 'string') return { size: SCALAR_SIZE[spec], align: SCALAR_SIZE[spec] };
  if (isReserved(spec))
    return { size: SCALAR_SIZE[spec.reserved] * spec.count, align: SCALAR_SIZE[spec.reserved] };
  return { size: spec.size, align: spec.align };
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Declares a C struct; fields are laid out in order with natural alignment, like the C compiler does. */
export function struct<F extends FieldMap>(name: string, fields: F): StructDef<F> {
  let off = 0;
  let align = 1;
  const offsets: Record<string, number> = {};
  const plan: PlannedField[] = [];
  for (const [key, spec] of Object.entries(fields)) {
    const l = fieldLayout(spec);
    off = alignUp(off, l.align);
    offsets[key] = off;
    if (!isReserved(spec)) plan.push({ key, offset: off, spec });
    off += l.size;
    align = Math.max(align, l.align);
  }
  return {
    name,
    size: alignUp(off, align),
    align,
    fields,
    offsets: offsets as StructDef<F>['offsets'],
    plan,
  };
}

/** A reserved array or padding field. */
export function reserved(type: Scalar, count = 1): Reserved {
  return { reserved: type, count };
}

/** Thrown by decoders when the kernel sent fewer bytes than a struct needs. */
export class FuseDecodeError extends Error {
  override readonly name = 'FuseDecodeError';
}

function readScalar(buf: Buffer, type: Scalar, off: number): number | bigint {
  switch (type) {
    case 'u16':
      return buf.readUInt16LE(off);
    case 'u32':
      return buf.readUInt32LE(off);
    case 'i32':
      return buf.readInt32LE(off);
    case 'u64':
      return buf.readBigUInt64LE(off);
    case 'i64':
      return buf.readBigInt64LE(off);
  }
}

function writeScalar(buf: Buffer, type: Scalar, off: number, v: number | bigint): void {
  switch (type) {
    case 'u16':
      buf.writeUInt16LE(Number(v), off);
      return;
    case 'u32':
      buf.writeUInt32LE(Number(v), off);
      return;
    case 'i32':
      buf.writeInt32LE(Number(v), off);
      return;
    case 'u64':
      buf.writeBigUInt64LE(BigInt(v), off);
      return;
    case 'i64':
      buf.writeBigInt64LE(BigInt(v), off);
      return;
  }
}

/** Decodes `def` at `offset`; throws FuseDecodeError if `buf` is too short. */
export function decode<F extends FieldMap>(def: StructDef<F>, buf: Buffer, offset = 0): StructValue<F> {
  if (buf.length - offset < def.size) {
    throw new FuseDecodeError(`struct ${def.name}: need ${def.size} bytes, got ${buf.length - offset}`);
  }
  const out: Record<string, unknown> = {};
  const plan = def.plan;
  for (let i = 0; i < plan.length; i++) {
    const { key, offset: at, spec } = plan[i]!;
    out[key] = typeof spec === 'string' ? readScalar(buf, spec, offset + at) : decode(spec, buf, offset + at);
  }
  return out as StructValue<F>;
}

/** Like `decode`, but a short buffer is zero-extended (for structs the kernel grew over time). */
export function decodeZeroExtended<F extends FieldMap>(
  def: StructDef<F>,
  buf: Buffer,
  offset = 0,
): StructValue<F> {
  const avail = Math.max(0, buf.length - offset);
  if (avail >= def.size) return decode(def, buf, offset);
  const padded = Buffer.alloc(def.size);
  buf.copy(padded, 0, offset, offset + avail);
  return decode(def, padded);
}

/** Encodes `value` (missing fields are zero) into `target` at `offset`, or into a new Buffer. */
export function encode<F extends FieldMap>(
  def: StructDef<F>,
  value: StructInit<F>,
  target: Buffer = Buffer.alloc(def.size),
  offset = 0,
): Buffer {
  const v = value as Record<string, unknown>;
  const plan = def.plan;
  for (let i = 0; i < plan.length; i++) {
    const { key, offset: at, spec } = plan[i]!;
    const fv = v[key];
    if (fv === undefined) continue;
    if (typeof spec === 'string') writeScalar(target, spec, offset + at, fv as number | bigint);
    else encode(spec, fv as StructInit<FieldMap>, target, offset + at);
  }
  return target;
}

// ---------------------------------------------------------------------------------------------
// The structs (names and field names exactly as in <linux/fuse.h>)
// ---------------------------------------------------------------------------------------------

export const fuse_in_header = struct('fuse_in_header', {
  len: 'u32',
  opcode: 'u32',
  unique: 'u64',
  nodeid: 'u64',
  uid: 'u32',
  gid: 'u32',
  pid: 'u32',
  total_extlen: 'u16',
  padding: reserved('u16'),
});

export const fuse_out_header = struct('fuse_out_header', { len: 'u32', error: 'i32', unique: 'u64' });

export const fuse_attr = struct('fuse_attr', {
  ino: 'u64',
  size: 'u64',
  blocks: 'u64',
  atime: 'u64',
  mtime: 'u64',
  ctime: 'u64',
  atimensec: 'u32',
  mtimensec: 'u32',
  ctimensec: 'u32',
  mode: 'u32',
  nlink: 'u32',
  uid: 'u32',
  gid: 'u32',
  rdev: 'u32',
  blksize: 'u32',
  flags: 'u32',
});

export const fuse_kstatfs = struct('fuse_kstatfs', {
  blocks: 'u64',
  bfree: 'u64',
  bavail: 'u64',
  files: 'u64',
  ffree: 'u64',
  bsize: 'u32',
  namelen: 'u32',
  frsize: 'u32',
  padding: reserved('u32'),
  spare: reserved('u32', 6),
});

export const fuse_entry_out = struct('fuse_entry_out', {
  nodeid: 'u64',
  generation: 'u64',
  entry_valid: 'u64',
  attr_valid: 'u64',
  entry_valid_nsec: 'u32',
  attr_valid_nsec: 'u32',
  attr: fuse_attr,
});

export const fuse_forget_in = struct('fuse_forget_in', { nlookup: 'u64' });
export const fuse_forget_one = struct('fuse_forget_one', { nodeid: 'u64', nlookup: 'u64' });
export const fuse_batch_forget_in = struct('fuse_batch_forget_in', { count: 'u32', dummy: reserved('u32') });

export const fuse_getattr_in = struct('fuse_getattr_in', {
  getattr_flags: 'u32',
  dummy: reserved('u32'),
  fh: 'u64',
});

export const fuse_attr_out = struct('fuse_attr_out', {
  attr_valid: 'u64',
  attr_valid_nsec: 'u32',
  dummy: reserved('u32'),
  attr: fuse_attr,
});

export const fuse_setattr_in = struct('fuse_setattr_in', {
  valid: 'u32',
  padding: reserved('u32'),
  fh: 'u64',
  size: 'u64',
  lock_owner: 'u64',
  atime: 'u64',
  mtime: 'u64',
  ctime: 'u64',
  atimensec: 'u32',
  mtimensec: 'u32',
  ctimensec: 'u32',
  mode: 'u32',
  unused4: reserved('u32'),
  uid: 'u32',
  gid: 'u32',
  unused5: reserved('u32'),
});

export const fuse_open_in = struct('fuse_open_in', { flags: 'u32', open_flags: 'u32' });

export const fuse_open_out = struct('fuse_open_out', {
  fh: 'u64',
  open_flags: 'u32',
  padding: reserved('u32'),
});

export const fuse_release_in = struct('fuse_release_in', {
  fh: 'u64',
  flags: 'u32',
  release_flags: 'u32',
  lock_owner: 'u64',
});

export const fuse_flush_in = struct('fuse_flush_in', {
  fh: 'u64',
  unused: reserved('u32'),
  padding: reserved('u32'),
  lock_owner: 'u64',
});

export const fuse_read_in = struct('fuse_read_in', {
  fh: 'u64',
  offset: 'u64',
  size: 'u32',
  read_flags: 'u32',
  lock_owner: 'u64',
  flags: 'u32',
  padding: reserved('u32'),
});

export const fuse_write_in = struct('fuse_write_in', {
  fh: 'u64',
  offset: 'u64',
  size: 'u32',
  write_flags: 'u32',
  lock_owner: 'u64',
  flags: 'u32',
  padding: reserved('u32'),
});

export const fuse_write_out = struct('fuse_write_out', { size: 'u32', padding: reserved('u32') });

export const fuse_statfs_out = struct('fuse_statfs_out', { st: fuse_kstatfs });

export const fuse_access_in = struct('fuse_access_in', { mask: 'u32', padding: reserved('u32') });

export const fuse_init_in = struct('fuse_init_in', {
  major: 'u32',
  minor: 'u32',
  max_readahead: 'u32',
  flags: 'u32',
  flags2: 'u32',
  unused: reserved('u32', 11),
});

export const fuse_init_out = struct('fuse_init_out', {
  major: 'u32',
  minor: 'u32',
  max_readahead: 'u32',
  flags: 'u32',
  max_background: 'u16',
  congestion_threshold: 'u16',
  max_write: 'u32',
  time_gran: 'u32',
  max_pages: 'u16',
  map_alignment: 'u16',
  flags2: 'u32',
  unused: reserved('u32', 7),
});

export const fuse_interrupt_in = struct('fuse_interrupt_in', { unique: 'u64' });

export const fuse_poll_in = struct('fuse_poll_in', { fh: 'u64', kh: 'u64', flags: 'u32', events: 'u32' });

export const fuse_poll_out = struct('fuse_poll_out', { revents: 'u32', padding: reserved('u32') });

export const fuse_notify_poll_wakeup_out = struct('fuse_notify_poll_wakeup_out', { kh: 'u64' });

/** The fixed part of a directory entry; the name follows, the record is padded to 8 bytes. */
export const fuse_dirent = struct('fuse_dirent', { ino: 'u64', off: 'u64', namelen: 'u32', type: 'u32' });

/** Every struct above, for the layout test. */
export const FUSE_STRUCTS: readonly StructDef<FieldMap>[] = [
  fuse_in_header,
  fuse_out_header,
  fuse_attr,
  fuse_kstatfs,
  fuse_entry_out,
  fuse_forget_in,
  fuse_forget_one,
  fuse_batch_forget_in,
  fuse_getattr_in,
  fuse_attr_out,
  fuse_setattr_in,
  fuse_open_in,
  fuse_open_out,
  fuse_release_in,
  fuse_flush_in,
  fuse_read_in,
  fuse_write_in,
  fuse_write_out,
  fuse_statfs_out,
  fuse_access_in,
  fuse_init_in,
  fuse_init_out,
  fuse_interrupt_in,
  fuse_poll_in,
  fuse_poll_out,
  fuse_notify_poll_wakeup_out,
  fuse_dirent,
];

// ---------------------------------------------------------------------------------------------
// Constants (checked against the header by the test suite; the keys are the C names)
// ---------------------------------------------------------------------------------------------

export const FUSE_KERNEL_VERSION = 7;
/** The minor version whose layouts this file implements (= the header on the build machine). */
export const FUSE_OUR_MINOR_VERSION = 38;
/** Oldest kernel minor we accept. */
export const FUSE_MIN_SUPPORTED_MINOR = 12;
export const FUSE_ROOT_ID = 1n;
export const FUSE_MIN_READ_BUFFER = 8192;
export const FUSE_COMPAT_INIT_OUT_SIZE = 8;
export const FUSE_COMPAT_22_INIT_OUT_SIZE = 24;

export const FuseOpcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;
export type FuseOpcodeName = keyof typeof FuseOpcode;

const OPCODE_NAMES = new Map<number, FuseOpcodeName>(
  Object.entries(FuseOpcode).map(([k, v]) => [v, k as FuseOpcodeName]),
);

/**
 * Opcodes newer than the header we check against, named for traces only. Kernel 6.18 sends STATX
 * even when 7.38 was negotiated, and falls back to GETATTR when it gets ENOSYS.
 */
const LATER_OPCODE_NAMES: ReadonlyMap<number, string> = new Map([[52, 'STATX']]);

/** "READ", "POLL", ... or "OP_<n>" for an opcode we do not know. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? LATER_OPCODE_NAMES.get(opcode) ?? `OP_${opcode}`;
}

/** Requests the kernel does not wait an answer for: never reply to these. */
export const NO_REPLY_OPCODES: ReadonlySet<number> = new Set([
  FuseOpcode.FORGET,
  FuseOpcode.BATCH_FORGET,
  FuseOpcode.INTERRUPT,
  FuseOpcode.NOTIFY_REPLY,
]);

/** INIT flags (fuse_init_in/out.flags), only those we look at. */
export const FuseInitFlag = {
  FUSE_ASYNC_READ: 1 << 0,
  FUSE_BIG_WRITES: 1 << 5,
  FUSE_PARALLEL_DIROPS: 1 << 18,
  FUSE_ABORT_ERROR: 1 << 21,
  FUSE_MAX_PAGES: 1 << 22,
  FUSE_INIT_EXT: 1 << 30,
} as const;

/** fuse_open_out.open_flags */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_STREAM = 1 << 4;

/** fuse_poll_in.flags */
export const FUSE_POLL_SCHEDULE_NOTIFY = 1 << 0;

/** fuse_notify_code */
export const FUSE_NOTIFY_POLL = 1;

/** fuse_setattr_in.valid */
export const FATTR_MODE = 1 << 0;
export const FATTR_UID = 1 << 1;
export const FATTR_GID = 1 << 2;
export const FATTR_SIZE = 1 << 3;

/** The C names of all numeric constants above, for the header check. */
export const FUSE_HEADER_CONSTANTS: Readonly<Record<string, number | bigint>> = {
  FUSE_KERNEL_VERSION,
  FUSE_ROOT_ID,
  FUSE_MIN_READ_BUFFER,
  FUSE_COMPAT_INIT_OUT_SIZE,
  FUSE_COMPAT_22_INIT_OUT_SIZE,
  ...Object.fromEntries(Object.entries(FuseOpcode).map(([k, v]) => [`FUSE_${k}`, v])),
  ...FuseInitFlag,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  FOPEN_NONSEEKABLE,
  FOPEN_STREAM,
  FUSE_POLL_SCHEDULE_NOTIFY,
  FUSE_NOTIFY_POLL,
  FATTR_MODE,
  FATTR_UID,
  FATTR_GID,
  FATTR_SIZE,
};

// ---------------------------------------------------------------------------------------------
// Requests (kernel → server)
// ---------------------------------------------------------------------------------------------

export type InHeader = StructValue<(typeof fuse_in_header)['fields']>;

export interface FuseRequest {
  readonly header: InHeader;
  /** The opcode's arguments: the bytes after the header, without any trailing extension area. */
  readonly body: Buffer;
}

/** Splits one frame read from /dev/fuse into header and body; throws FuseDecodeError if inconsistent. */
export function parseRequest(frame: Buffer): FuseRequest {
  const header = decode(fuse_in_header, frame);
  if (header.len !== frame.length) {
    throw new FuseDecodeError(
      `fuse_in_header.len is ${header.len} but the read returned ${frame.length} bytes`,
    );
  }
  const end = header.len - header.total_extlen * 8;
  if (end < fuse_in_header.size) {
    throw new FuseDecodeError(`fuse_in_header.total_extlen ${header.total_extlen} exceeds the request`);
  }
  return { header, body: frame.subarray(fuse_in_header.size, end) };
}

/** A NUL-terminated name (LOOKUP and friends). */
export function decodeName(body: Buffer, offset = 0): string {
  const nul = body.indexOf(0, offset);
  if (nul < 0) throw new FuseDecodeError('name is not NUL-terminated');
  return body.toString('utf8', offset, nul);
}

export type InitIn = StructValue<(typeof fuse_init_in)['fields']>;
export type GetattrIn = StructValue<(typeof fuse_getattr_in)['fields']>;
export type SetattrIn = StructValue<(typeof fuse_setattr_in)['fields']>;
export type OpenIn = StructValue<(typeof fuse_open_in)['fields']>;
export type ReadIn = StructValue<(typeof fuse_read_in)['fields']>;
export type WriteIn = StructValue<(typeof fuse_write_in)['fields']>;
export type ReleaseIn = StructValue<(typeof fuse_release_in)['fields']>;
export type FlushIn = StructValue<(typeof fuse_flush_in)['fields']>;
export type PollIn = StructValue<(typeof fuse_poll_in)['fields']>;
export type AccessIn = StructValue<(typeof fuse_access_in)['fields']>;
export type Attr = StructInit<(typeof fuse_attr)['fields']>;

/** INIT: fuse_init_in grew over time (16 bytes before 7.36), so a short body is zero-extended. */
export function decodeInitIn(body: Buffer): InitIn {
  if (body.length < 8)
    throw new FuseDecodeError(`struct fuse_init_in: need at least 8 bytes, got ${body.length}`);
  return decodeZeroExtended(fuse_init_in, body);
}

export function decodeWriteIn(body: Buffer): { arg: WriteIn; data: Buffer } {
  const arg = decode(fuse_write_in, body);
  const data = body.subarray(fuse_write_in.size);
  if (data.length < arg.size) {
    throw new FuseDecodeError(`WRITE carries ${data.length} data bytes, fuse_write_in.size says ${arg.size}`);
  }
  return { arg, data: data.subarray(0, arg.size) };
}

export function decodeBatchForget(body: Buffer): { nodeid: bigint; nlookup: bigint }[] {
  const { count } = decode(fuse_batch_forget_in, body);
  const out: { nodeid: bigint; nlookup: bigint }[] = [];
  for (let i = 0; i < count; i++) {
    out.push(decode(fuse_forget_one, body, fuse_batch_forget_in.size + i * fuse_forget_one.size));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Replies and notifications (server → kernel)
// ---------------------------------------------------------------------------------------------

/** A successful reply: fuse_out_header (error 0) followed by the payload parts. */
export function encodeReply(unique: bigint, ...payload: Uint8Array[]): Buffer {
  let len = fuse_out_header.size;
  for (let i = 0; i < payload.length; i++) len += payload[i]!.length;
  // Every byte is written below (header, then the parts end to end), so no zero-fill is needed;
  // small replies come from Node's buffer pool instead of a new allocation each.
  const out = Buffer.allocUnsafe(len);
  writeOutHeader(out, len, 0, unique);
  let off = fuse_out_header.size;
  for (let i = 0; i < payload.length; i++) {
    out.set(payload[i]!, off);
    off += payload[i]!.length;
  }
  return out;
}

/** Just the fuse_out_header of a successful reply whose payload (`payloadLength` bytes) follows. */
export function encodeOutHeader(unique: bigint, payloadLength: number): Buffer {
  const out = Buffer.allocUnsafe(fuse_out_header.size);
  writeOutHeader(out, fuse_out_header.size + payloadLength, 0, unique);
  return out;
}

/** fuse_out_header at the start of `out` (all 16 bytes). */
function writeOutHeader(out: Buffer, len: number, error: number, unique: bigint): void {
  out.writeUInt32LE(len, 0);
  out.writeInt32LE(error, 4);
  out.writeBigUInt64LE(unique, 8);
}

/** An error reply: just the header, with error = -errno. */
export function encodeError(unique: bigint, errno: number): Buffer {
  if (!Number.isInteger(errno) || errno <= 0 || errno >= 1000) {
    throw new RangeError(`errno must be an integer in 1..999, got ${errno}`);
  }
  return encode(fuse_out_header, { len: fuse_out_header.size, error: -errno, unique });
}

/** An unsolicited notification: unique 0, error = the notify code. */
export function encodeNotify(code: number, payload: Uint8Array): Buffer {
  const len = fuse_out_header.size + payload.length;
  const out = Buffer.allocUnsafe(len);
  writeOutHeader(out, len, code, 0n);
  out.set(payload, fuse_out_header.size);
  return out;
}

export function encodePollWakeup(kh: bigint): Buffer {
  return encodeNotify(FUSE_NOTIFY_POLL, encode(fuse_notify_poll_wakeup_out, { kh }));
}

export function encodeEntryOut(nodeid: bigint, attr: Attr, entryValidSec = 0n, attrValidSec = 0n): Buffer {
  return encode(fuse_entry_out, {
    nodeid,
    generation: 0n,
    entry_valid: entryValidSec,
    attr_valid: attrValidSec,
    attr,
  });
}

export function encodeAttrOut(attr: Attr, attrValidSec = 0n): Buffer {
  return encode(fuse_attr_out, { attr_valid: attrValidSec, attr });
}

export function encodeOpenOut(fh: bigint, openFlags: number): Buffer {
  return encode(fuse_open_out, { fh, open_flags: openFlags });
}

export function encodeWriteOut(size: number): Buffer {
  return encode(fuse_write_out, { size });
}

export function encodePollOut(revents: number): Buffer {
  return encode(fuse_poll_out, { revents });
}

export function encodeStatfsOut(st: StructInit<(typeof fuse_kstatfs)['fields']>): Buffer {
  return encode(fuse_statfs_out, { st });
}

export interface DirEntry {
  readonly ino: bigint;
  readonly name: string;
  /** DT_* value: mode >> 12 (4 = directory, 8 = regular file). */
  readonly type: number;
}

/**
 * READDIR payload: entries[start..] as fuse_dirent records (each padded to 8 bytes), as many as fit
 * in `maxSize`. Each record's `off` is the index of the entry after it, which the kernel hands back
 * as the next READDIR offset.
 */
export function encodeDirents(entries: readonly DirEntry[], start: number, maxSize: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (let i = start; i < entries.length; i++) {
    const e = entries[i]!;
    const name = Buffer.from(e.name, 'utf8');
    const recLen = alignUp(fuse_dirent.size + name.length, 8);
    if (total + recLen > maxSize) break;
    const rec = Buffer.alloc(recLen);
    encode(fuse_dirent, { ino: e.ino, off: BigInt(i + 1), namelen: name.length, type: e.type }, rec);
    name.copy(rec, fuse_dirent.size);
    parts.push(rec);
    total += recLen;
  }
  return Buffer.concat(parts, total);
}

// ---------------------------------------------------------------------------------------------
// INIT negotiation
// ---------------------------------------------------------------------------------------------

export interface InitPreferences {
  /** Largest WRITE payload we accept; the read buffer must be at least this + 4096. */
  readonly maxWrite: number;
  /** Pages per request (READ reply size limit); honoured only if the kernel offers FUSE_MAX_PAGES. */
  readonly maxPages: number;
  /** INIT flags we would like; the reply carries their intersection with the kernel's offer. */
  readonly wantedFlags: number;
}

export type InitOutcome =
  | {
      readonly kind: 'reply';
      readonly minor: number;
      readonly flags: number;
      /** The encoded fuse_init_out, already cut to the size the negotiated minor expects. */
      readonly payload: Buffer;
    }
  /** Kernel speaks a newer major: answer with our major only and wait for a second INIT. */
  | { readonly kind: 'major-only'; readonly payload: Buffer }
  | { readonly kind: 'error'; readonly errno: number; readonly reason: string };

const EPROTO = 71;

/** Decides the INIT reply from the kernel's offer, per the version rules in <linux/fuse.h>. */
export function negotiateInit(kernel: InitIn, prefs: InitPreferences): InitOutcome {
  if (kernel.major > FUSE_KERNEL_VERSION) {
    const payload = encode(fuse_init_out, { major: FUSE_KERNEL_VERSION, minor: FUSE_OUR_MINOR_VERSION });
    return { kind: 'major-only', payload: payload.subarray(0, FUSE_COMPAT_INIT_OUT_SIZE) };
  }
  if (kernel.major < FUSE_KERNEL_VERSION || kernel.minor < FUSE_MIN_SUPPORTED_MINOR) {
    return {
      kind: 'error',
      errno: EPROTO,
      reason: `kernel FUSE protocol ${kernel.major}.${kernel.minor} is older than 7.${FUSE_MIN_SUPPORTED_MINOR}`,
    };
  }
  const minor = Math.min(kernel.minor, FUSE_OUR_MINOR_VERSION);
  const flags = (kernel.flags & prefs.wantedFlags) >>> 0;
  const payload = encode(fuse_init_out, {
    major: FUSE_KERNEL_VERSION,
    minor,
    max_readahead: kernel.max_readahead,
    flags,
    max_write: prefs.maxWrite,
    time_gran: 1,
    max_pages: flags & FuseInitFlag.FUSE_MAX_PAGES ? prefs.maxPages : 0,
  });
  const size = minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE : fuse_init_out.size;
  return { kind: 'reply', minor, flags, payload: payload.subarray(0, size) };
}
