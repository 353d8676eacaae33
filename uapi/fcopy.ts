/**
 * FCOPY codecs: struct hv_fcopy_hdr, hv_start_fcopy and hv_do_fcopy (include/uapi/linux/hyperv.h),
 * and the 4-byte integers of the char-device protocol (the daemon's version and reply status, the
 * kernel's version reply).
 *
 * File and path names are UTF-8 on /dev/vmbus/hv_fcopy (the kernel converts them) and UTF-16LE on
 * the wire; `encoding` chooses. Offsets and file sizes are u64 and are carried as bigint.
 */
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  DATA_FRAGMENT,
  FCOPY_CURRENT_VERSION,
  START_FILE_COPY,
  WRITE_TO_FILE,
} from './constants.js';
import { HV_DO_FCOPY, HV_FCOPY_HDR, HV_START_FCOPY } from './layout.js';
import { type DecodeResult, asBuffer, fail, ok } from './result.js';
import { type StringEncoding, readStringField, writeStringField } from './strings.js';

const H = HV_FCOPY_HDR.fields;
const S = HV_START_FCOPY.fields;
const W = HV_DO_FCOPY.fields;

export const FCOPY_HDR_SIZE = HV_FCOPY_HDR.size;
export const FCOPY_START_SIZE = HV_START_FCOPY.size;
export const FCOPY_WRITE_SIZE = HV_DO_FCOPY.size;
/** Every int of the char-device protocol (version, reply status) is 4 bytes. */
export const FCOPY_INT_SIZE = 4;

export type FcopyMessage =
  | {
      readonly operation: typeof START_FILE_COPY;
      readonly fileName: string;
      readonly pathName: string;
      readonly copyFlags: number;
      readonly fileSize: bigint;
    }
  | {
      readonly operation: typeof WRITE_TO_FILE;
      readonly offset: bigint;
      /** A view of the fragment's bytes (size = data.length), not a copy. */
      readonly data: Uint8Array;
    }
  | { readonly operation: typeof COMPLETE_FCOPY | typeof CANCEL_FCOPY };

/** What a daemon reads from /dev/vmbus/hv_fcopy: the version reply, or a message. */
export type FcopyDeviceMessage =
  | { readonly kind: 'registered'; readonly version: number }
  | { readonly kind: 'message'; readonly message: FcopyMessage };

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new RangeError(`${what} must fit in 32 bits`);
  }
  return value >>> 0;
}

/** A 4-byte little-endian int: the daemon's version/reply, or the kernel's version reply. */
export function encodeFcopyInt(value: number): Buffer {
  const buf = Buffer.alloc(FCOPY_INT_SIZE);
  buf.writeUInt32LE(u32(value, 'value'), 0);
  return buf;
}

/** Decode a 4-byte int (a reply status read as unsigned). Never throws. */
export function decodeFcopyInt(bytes: Uint8Array): DecodeResult<number> {
  const buf = asBuffer(bytes);
  if (buf.length !== FCOPY_INT_SIZE) {
    return fail(
      buf.length < FCOPY_INT_SIZE ? 'too-short' : 'bad-length',
      `fcopy int: ${buf.length} bytes, 4 expected`,
    );
  }
  return ok(buf.readUInt32LE(0));
}

/** The daemon's registration: the 4-byte version (FCOPY_CURRENT_VERSION = 1). */
export function encodeFcopyRegister(version: number = FCOPY_CURRENT_VERSION): Buffer {
  return encodeFcopyInt(version);
}

/** Encode an fcopy message as the kernel queues it (utf8) or as the host sends it (utf16le). */
export function encodeFcopyMessage(msg: FcopyMessage, encoding: StringEncoding = 'utf8'): Buffer {
  switch (msg.operation) {
    case START_FILE_COPY: {
      const buf = Buffer.alloc(FCOPY_START_SIZE);
      buf.writeUInt32LE(START_FILE_COPY, S['hdr.operation'].offset);
      writeStringField(buf, S.file_name, msg.fileName, encoding);
      writeStringField(buf, S.path_name, msg.pathName, encoding);
      buf.writeUInt32LE(u32(msg.copyFlags, 'copyFlags'), S.copy_flags.offset);
      buf.writeBigUInt64LE(BigInt.asUintN(64, msg.fileSize), S.file_size.offset);
      return buf;
    }
    case WRITE_TO_FILE: {
      if (msg.data.length > DATA_FRAGMENT)
        throw new RangeError(`a fragment holds at most ${DATA_FRAGMENT} bytes`);
      const buf = Buffer.alloc(FCOPY_WRITE_SIZE);
      buf.writeUInt32LE(WRITE_TO_FILE, W['hdr.operation'].offset);
      buf.writeBigUInt64LE(BigInt.asUintN(64, msg.offset), W.offset.offset);
      buf.writeUInt32LE(msg.data.length, W.size.offset);
      buf.set(msg.data, W.data.offset);
      return buf;
    }
    default: {
      const buf = Buffer.alloc(FCOPY_HDR_SIZE);
      buf.writeUInt32LE(msg.operation, H.operation.offset);
      return buf;
    }
  }
}

/** Decode one fcopy message (header first, then the operation's struct). Never throws. */
export function decodeFcopyMessage(
  bytes: Uint8Array,
  encoding: StringEncoding = 'utf8',
): DecodeResult<FcopyMessage> {
  const buf = asBuffer(bytes);
  if (buf.length < FCOPY_HDR_SIZE) {
    return fail('too-short', `struct hv_fcopy_hdr: ${buf.length} bytes, at least ${FCOPY_HDR_SIZE} expected`);
  }
  const operation = buf.readUInt32LE(H.operation.offset);
  const short = (need: number, what: string): DecodeResult<FcopyMessage> =>
    fail('too-short', `${what}: ${buf.length} bytes, at least ${need} expected`, { operation });
  switch (operation) {
    case START_FILE_COPY: {
      if (buf.length < FCOPY_START_SIZE) return short(FCOPY_START_SIZE, 'struct hv_start_fcopy');
      const fileName = readStringField(buf, S.file_name, encoding, 'file_name');
      if (!fileName.ok) return { ok: false, error: { ...fileName.error, operation } };
      const pathName = readStringField(buf, S.path_name, encoding, 'path_name');
      if (!pathName.ok) return { ok: false, error: { ...pathName.error, operation } };
      return ok({
        operation,
        fileName: fileName.value,
        pathName: pathName.value,
        copyFlags: buf.readUInt32LE(S.copy_flags.offset),
        fileSize: buf.readBigUInt64LE(S.file_size.offset),
      });
    }
    case WRITE_TO_FILE: {
      if (buf.length < W.data.offset) return short(W.data.offset, 'struct hv_do_fcopy');
      const size = buf.readUInt32LE(W.size.offset);
      if (size > DATA_FRAGMENT) {
        return fail(
          'invalid-field',
          `struct hv_do_fcopy: size ${size} exceeds DATA_FRAGMENT (${DATA_FRAGMENT})`,
          {
            field: 'size',
            operation,
          },
        );
      }
      if (buf.length < W.data.offset + size) return short(W.data.offset + size, 'struct hv_do_fcopy');
      return ok({
        operation,
        offset: buf.readBigUInt64LE(W.offset.offset),
        data: buf.subarray(W.data.offset, W.data.offset + size),
      });
    }
    case COMPLETE_FCOPY:
    case CANCEL_FCOPY:
      return ok({ operation });
    default:
      return fail('unknown-operation', `struct hv_fcopy_hdr: unknown operation ${operation}`, {
        field: 'operation',
        operation,
      });
  }
}

/**
 * Decode what a daemon read from /dev/vmbus/hv_fcopy: a 4-byte read is the kernel's version reply,
 * anything else a message. Never throws.
 */
export function decodeFcopyDeviceMessage(bytes: Uint8Array): DecodeResult<FcopyDeviceMessage> {
  if (bytes.length === FCOPY_INT_SIZE) {
    const v = decodeFcopyInt(bytes);
    return v.ok ? ok({ kind: 'registered', version: v.value }) : v;
  }
  const m = decodeFcopyMessage(bytes, 'utf8');
  return m.ok ? ok({ kind: 'message', message: m.value }) : m;
}
