/**
 * `struct vmpacket_descriptor` (include/linux/hyperv.h): the 16-byte header that starts every
 * packet in a VMBus ring's data area, and the packet type constants (`enum vmbus_packet_type`).
 *
 * Byte layout, little-endian, packed (kernel-protocol.md §6.3, Appendix A):
 *
 * | Offset | Size | Field      | Meaning                                                         |
 * |-------:|-----:|------------|-----------------------------------------------------------------|
 * | 0      | 2    | `type`     | VM_PKT_*                                                        |
 * | 2      | 2    | `offset8`  | payload offset in 8-byte units (the guest always writes 2)      |
 * | 4      | 2    | `len8`     | packet length in 8-byte units: descriptor + payload + padding   |
 * | 6      | 2    | `flags`    | bit 0 = VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED             |
 * | 8      | 8    | `trans_id` | transaction / request id, echoed by util replies                |
 *
 * After `len8 * 8` bytes every packet is followed by an 8-byte trailer (VMBUS_PKT_TRAILER) that is
 * not counted in `len8`.
 */
import { type DecodeResult, fail, ok } from '../../uapi/result.js';

/** sizeof(struct vmpacket_descriptor). */
export const VMPACKET_DESCRIPTOR_SIZE = 16;
/** Bytes of the trailer after each packet: u64 = (write_index at packet start) << 32. */
export const VMBUS_PKT_TRAILER = 8;

/** Packet type 0: invalid. */
export const VM_PKT_INVALID = 0x0;
/** Packet type 1: synch. */
export const VM_PKT_SYNCH = 0x1;
/** Packet type 2: add transfer page set. */
export const VM_PKT_ADD_XFER_PAGESET = 0x2;
/** Packet type 3: remove transfer page set. */
export const VM_PKT_RM_XFER_PAGESET = 0x3;
/** Packet type 4: establish GPADL. */
export const VM_PKT_ESTABLISH_GPADL = 0x4;
/** Packet type 5: tear down GPADL. */
export const VM_PKT_TEARDOWN_GPADL = 0x5;
/** In-band data: what util hosts send and what util drivers answer with. */
export const VM_PKT_DATA_INBAND = 0x6;
/** Packet type 7: data in transfer pages. */
export const VM_PKT_DATA_USING_XFER_PAGES = 0x7;
/** Packet type 8: data in a GPADL. */
export const VM_PKT_DATA_USING_GPADL = 0x8;
/** Packet type 9: data by guest physical address. */
export const VM_PKT_DATA_USING_GPA_DIRECT = 0x9;
/** Packet type 0xA: cancel request. */
export const VM_PKT_CANCEL_REQUEST = 0xa;
/** Completion packet; util drivers never send one. */
export const VM_PKT_COMP = 0xb;
/** Packet type 0xC: data continued in an additional packet. */
export const VM_PKT_DATA_USING_ADDITIONAL_PKT = 0xc;
/** Packet type 0xD: additional data. */
export const VM_PKT_ADDITIONAL_DATA = 0xd;

/** `flags` bit 0: the sender asks for a VM_PKT_COMP completion. */
export const VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = 1;

/** Field offsets inside the descriptor. */
export const VMPACKET_DESCRIPTOR_OFFSETS = {
  type: 0,
  offset8: 2,
  len8: 4,
  flags: 6,
  trans_id: 8,
} as const;

/** A decoded `struct vmpacket_descriptor`; `transId` is the full unsigned 64-bit `trans_id`. */
export interface VmPacketDescriptor {
  readonly type: number;
  readonly offset8: number;
  readonly len8: number;
  readonly flags: number;
  readonly transId: bigint;
}

function u16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new RangeError(`vmpacket_descriptor.${what} must be an integer 0..65535, got ${value}`);
  }
  return value;
}

/** Check that a bigint fits `u64`; throws RangeError otherwise. */
export function checkTransId(transId: bigint): bigint {
  if (typeof transId !== 'bigint' || transId < 0n || transId > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`vmpacket_descriptor.trans_id must be a bigint 0..2^64-1, got ${String(transId)}`);
  }
  return transId;
}

/**
 * Encode a descriptor as 16 little-endian bytes. Writes into `target` at `offset` when given
 * (which must have room for 16 bytes), else into a new Uint8Array; returns the 16-byte view written.
 * Throws RangeError when a field does not fit its C type (a programming error, not untrusted input).
 */
export function encodeVmPacketDescriptor(
  desc: VmPacketDescriptor,
  target?: Uint8Array,
  offset = 0,
): Uint8Array {
  const out = target ?? new Uint8Array(VMPACKET_DESCRIPTOR_SIZE);
  if (!Number.isInteger(offset) || offset < 0 || offset + VMPACKET_DESCRIPTOR_SIZE > out.length) {
    throw new RangeError(`no room for a 16-byte vmpacket_descriptor at offset ${offset}`);
  }
  const view = new DataView(out.buffer, out.byteOffset + offset, VMPACKET_DESCRIPTOR_SIZE);
  view.setUint16(VMPACKET_DESCRIPTOR_OFFSETS.type, u16(desc.type, 'type'), true);
  view.setUint16(VMPACKET_DESCRIPTOR_OFFSETS.offset8, u16(desc.offset8, 'offset8'), true);
  view.setUint16(VMPACKET_DESCRIPTOR_OFFSETS.len8, u16(desc.len8, 'len8'), true);
  view.setUint16(VMPACKET_DESCRIPTOR_OFFSETS.flags, u16(desc.flags, 'flags'), true);
  view.setBigUint64(VMPACKET_DESCRIPTOR_OFFSETS.trans_id, checkTransId(desc.transId), true);
  return out.subarray(offset, offset + VMPACKET_DESCRIPTOR_SIZE);
}

/**
 * Decode the 16 bytes at `offset` as a descriptor. Never throws: fewer than 16 bytes gives a
 * `too-short` error. No field is validated here; the ring reader applies the kernel's rules.
 */
export function decodeVmPacketDescriptor(bytes: Uint8Array, offset = 0): DecodeResult<VmPacketDescriptor> {
  if (!Number.isInteger(offset) || offset < 0 || bytes.length - offset < VMPACKET_DESCRIPTOR_SIZE) {
    return fail(
      'too-short',
      `struct vmpacket_descriptor: ${Math.max(0, bytes.length - offset)} bytes at offset ${offset}, 16 expected`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, VMPACKET_DESCRIPTOR_SIZE);
  return ok({
    type: view.getUint16(VMPACKET_DESCRIPTOR_OFFSETS.type, true),
    offset8: view.getUint16(VMPACKET_DESCRIPTOR_OFFSETS.offset8, true),
    len8: view.getUint16(VMPACKET_DESCRIPTOR_OFFSETS.len8, true),
    flags: view.getUint16(VMPACKET_DESCRIPTOR_OFFSETS.flags, true),
    transId: view.getBigUint64(VMPACKET_DESCRIPTOR_OFFSETS.trans_id, true),
  });
}
