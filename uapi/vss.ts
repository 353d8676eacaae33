/**
 * struct hv_vss_msg codec (include/uapi/linux/hyperv.h), 12 bytes, identical on the wire and on
 * /dev/vmbus/hv_vss. The daemon's reply status (`error`, bytes 0..3) overlays the operation byte,
 * so the kernel sees the low byte of the status where the operation was.
 *
 * Registration: the daemon writes 12 bytes with operation VSS_OP_REGISTER1 (129); the kernel
 * answers with a 4-byte u32, its version (129).
 */
import { VSS_OP_COUNT, VSS_OP_REGISTER, VSS_OP_REGISTER1 } from './constants.js';
import { HV_VSS_MSG } from './layout.js';
import { type DecodeResult, asBuffer, fail, ok } from './result.js';

const F = HV_VSS_MSG.fields;

export const VSS_MSG_SIZE = HV_VSS_MSG.size;
/** Length of the kernel's registration reply. */
export const VSS_REGISTRATION_REPLY_SIZE = 4;

/** A kernel-to-daemon request (operation 0..7) or the 4-byte registration reply. */
export type VssMessage =
  | { readonly kind: 'request'; readonly operation: number; readonly flags: number }
  | { readonly kind: 'registered'; readonly version: number };

/** A daemon-to-kernel reply: the status and the flags word. */
export interface VssReply {
  readonly error: number;
  readonly flags: number;
}

function u32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new RangeError(`${what} must fit in 32 bits`);
  }
  return value >>> 0;
}

/** Encode a kernel-to-daemon request: only the operation byte and the flags word are set. */
export function encodeVssRequest(operation: number, flags = 0): Buffer {
  if (!Number.isInteger(operation) || operation < 0 || operation > 0xff)
    throw new RangeError('operation must be 0..255');
  const buf = Buffer.alloc(VSS_MSG_SIZE);
  buf[F['vss_hdr.operation'].offset] = operation;
  buf.writeUInt32LE(u32(flags, 'flags'), F['vss_cf.flags'].offset);
  return buf;
}

/** The kernel's 4-byte registration reply. */
export function encodeVssRegistrationReply(version: number = VSS_OP_REGISTER1): Buffer {
  const buf = Buffer.alloc(VSS_REGISTRATION_REPLY_SIZE);
  buf.writeUInt32LE(u32(version, 'version'), 0);
  return buf;
}

/** Decode what a daemon read from /dev/vmbus/hv_vss. Never throws. */
export function decodeVssMessage(bytes: Uint8Array): DecodeResult<VssMessage> {
  const buf = asBuffer(bytes);
  if (buf.length === VSS_REGISTRATION_REPLY_SIZE)
    return ok({ kind: 'registered', version: buf.readUInt32LE(0) });
  if (buf.length < VSS_MSG_SIZE) {
    return fail('too-short', `struct hv_vss_msg: ${buf.length} bytes, ${VSS_MSG_SIZE} expected`);
  }
  if (buf.length !== VSS_MSG_SIZE) {
    return fail('bad-length', `struct hv_vss_msg: ${buf.length} bytes, ${VSS_MSG_SIZE} expected`);
  }
  const operation = buf[F['vss_hdr.operation'].offset] ?? 0;
  if (operation >= VSS_OP_COUNT) {
    return fail('unknown-operation', `struct hv_vss_msg: unknown operation ${operation}`, {
      field: 'vss_hdr.operation',
      operation,
    });
  }
  return ok({ kind: 'request', operation, flags: buf.readUInt32LE(F['vss_cf.flags'].offset) });
}

/** The daemon's 12-byte registration message. */
export function encodeVssRegister(operation: number = VSS_OP_REGISTER1): Buffer {
  if (operation !== VSS_OP_REGISTER1 && operation !== VSS_OP_REGISTER) {
    throw new RangeError('VSS registration is VSS_OP_REGISTER1 or VSS_OP_REGISTER');
  }
  return encodeVssRequest(operation);
}

/** Encode the daemon's 12-byte reply. */
export function encodeVssReply(reply: VssReply): Buffer {
  const buf = Buffer.alloc(VSS_MSG_SIZE);
  buf.writeUInt32LE(u32(reply.error, 'error'), F.error.offset);
  buf.writeUInt32LE(u32(reply.flags, 'flags'), F['vss_cf.flags'].offset);
  return buf;
}

/** Decode a daemon's 12-byte reply (the kernel-shim's side). Never throws. */
export function decodeVssReply(bytes: Uint8Array): DecodeResult<VssReply> {
  const buf = asBuffer(bytes);
  if (buf.length !== VSS_MSG_SIZE) {
    return fail(
      buf.length < VSS_MSG_SIZE ? 'too-short' : 'bad-length',
      `VSS reply: ${buf.length} bytes, ${VSS_MSG_SIZE} expected`,
    );
  }
  return ok({ error: buf.readUInt32LE(F.error.offset), flags: buf.readUInt32LE(F['vss_cf.flags'].offset) });
}
