/**
 * The integration-component (IC) framing at the start of every util packet payload
 * (include/linux/hyperv.h: `struct vmbuspipe_hdr`, `struct icmsg_hdr`; kernel-protocol.md §3.1).
 *
 * Payload layout (little-endian, packed):
 *
 * | Payload offset | Size | Field                              |
 * |---------------:|-----:|------------------------------------|
 * | 0              | 4    | `vmbuspipe_hdr.flags`              |
 * | 4              | 4    | `vmbuspipe_hdr.msgsize`            |
 * | 8              | 2    | `icmsg_hdr.icverframe.major`       |
 * | 10             | 2    | `icmsg_hdr.icverframe.minor`       |
 * | 12             | 2    | `icmsg_hdr.icmsgtype`              |
 * | 14             | 2    | `icmsg_hdr.icvermsg.major`         |
 * | 16             | 2    | `icmsg_hdr.icvermsg.minor`         |
 * | 18             | 2    | `icmsg_hdr.icmsgsize`              |
 * | 20             | 4    | `icmsg_hdr.status`                 |
 * | 24             | 1    | `icmsg_hdr.ictransaction_id`       |
 * | 25             | 1    | `icmsg_hdr.icflags`                |
 * | 26             | 2    | `icmsg_hdr.reserved`               |
 * | 28             | …    | service message (ICMSG_HDR = 28)   |
 *
 * The Linux guest reads only `icmsgtype` (and the body); it writes `status`, `icflags`, and
 * `icmsgsize` (negotiate replies only) in place and sends the whole payload back.
 */
import { type DecodeResult, fail, ok } from '../../uapi/result.js';

/** sizeof(struct vmbuspipe_hdr). */
export const VMBUSPIPE_HDR_SIZE = 8;
/** sizeof(struct icmsg_hdr). */
export const ICMSG_HDR_SIZE = 20;
/** Offset of the service message: sizeof(vmbuspipe_hdr) + sizeof(icmsg_hdr). */
export const ICMSG_HDR = VMBUSPIPE_HDR_SIZE + ICMSG_HDR_SIZE;

/** Payload offsets of the framing fields. */
export const ICMSG_OFFSETS = {
  'vmbuspipe_hdr.flags': 0,
  'vmbuspipe_hdr.msgsize': 4,
  'icmsg_hdr.icverframe.major': 8,
  'icmsg_hdr.icverframe.minor': 10,
  'icmsg_hdr.icmsgtype': 12,
  'icmsg_hdr.icvermsg.major': 14,
  'icmsg_hdr.icvermsg.minor': 16,
  'icmsg_hdr.icmsgsize': 18,
  'icmsg_hdr.status': 20,
  'icmsg_hdr.ictransaction_id': 24,
  'icmsg_hdr.icflags': 25,
  'icmsg_hdr.reserved': 26,
} as const;

/** `icmsgtype` 0: version negotiation (answered by the kernel itself). */
export const ICMSGTYPE_NEGOTIATE = 0;
/** `icmsgtype` 1: heartbeat. */
export const ICMSGTYPE_HEARTBEAT = 1;
/** `icmsgtype` 2: KVP exchange. */
export const ICMSGTYPE_KVPEXCHANGE = 2;
/** `icmsgtype` 3: shutdown. */
export const ICMSGTYPE_SHUTDOWN = 3;
/** `icmsgtype` 4: time sync. */
export const ICMSGTYPE_TIMESYNC = 4;
/** `icmsgtype` 5: VSS (backup). */
export const ICMSGTYPE_VSS = 5;
/** `icmsgtype` 7: file copy (6 is unused by Linux). */
export const ICMSGTYPE_FCOPY = 7;

/** `icflags` bit 0: part of a transaction. */
export const ICMSGHDRFLAG_TRANSACTION = 1;
/** `icflags` bit 1: request. */
export const ICMSGHDRFLAG_REQUEST = 2;
/** `icflags` bit 2: response. */
export const ICMSGHDRFLAG_RESPONSE = 4;
/** `icflags` of a host request as the simulated host sends it (TRANSACTION | REQUEST; UNCONFIRMED for real hosts). */
export const ICMSGHDRFLAG_HOST_REQUEST = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST;
/** `icflags` of every guest reply (TRANSACTION | RESPONSE = 5). */
export const ICMSGHDRFLAG_GUEST_RESPONSE = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE;

/** `struct ic_version`: two u16. */
export interface IcVersion {
  readonly major: number;
  readonly minor: number;
}

/** The decoded first 28 bytes of a util payload. */
export interface IcHeader {
  /** `vmbuspipe_hdr.flags` (u32). */
  readonly pipeFlags: number;
  /** `vmbuspipe_hdr.msgsize` (u32). */
  readonly pipeMsgSize: number;
  /** `icmsg_hdr.icverframe`. */
  readonly frameVersion: IcVersion;
  /** `icmsg_hdr.icmsgtype` (u16), ICMSGTYPE_*. */
  readonly msgType: number;
  /** `icmsg_hdr.icvermsg`. */
  readonly msgVersion: IcVersion;
  /** `icmsg_hdr.icmsgsize` (u16). */
  readonly msgSize: number;
  /** `icmsg_hdr.status` (u32), HV_S_OK / HV_E_FAIL / … */
  readonly status: number;
  /** `icmsg_hdr.ictransaction_id` (u8). */
  readonly transactionId: number;
  /** `icmsg_hdr.icflags` (u8), ICMSGHDRFLAG_* bits. */
  readonly flags: number;
  /** `icmsg_hdr.reserved` (u16). */
  readonly reserved: number;
}

/** What a (simulated) host chooses when building a request; see {@link encodeIcMessage} for defaults. */
export interface IcMessageOptions {
  readonly msgType: number;
  readonly status?: number;
  readonly flags?: number;
  readonly frameVersion?: IcVersion;
  readonly msgVersion?: IcVersion;
  readonly transactionId?: number;
}

function checkInt(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${what} must be an integer 0..${max}, got ${value}`);
  }
  return value;
}

/** A u32 status; negative int32 values (a C `int` holding 0x8000xxxx) are accepted and reinterpreted. */
function checkStatus(value: number): number {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new RangeError(`status must fit in 32 bits, got ${value}`);
  }
  return value >>> 0;
}

function viewOf(payload: Uint8Array): DataView {
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
}

function needHeader(payload: Uint8Array, what: string): DataView {
  if (payload.length < ICMSG_HDR) {
    throw new RangeError(
      `${what}: payload of ${payload.length} bytes has no complete icmsg_hdr (28 bytes needed)`,
    );
  }
  return viewOf(payload);
}

/**
 * Build a host request payload: the 28-byte framing followed by `body` (not padded; the ring pads
 * packets to 8). Defaults, chosen for the simulated host since what Windows puts there is
 * UNCONFIRMED and the Linux guest reads none of it:
 * `vmbuspipe_hdr.flags` = 0, `vmbuspipe_hdr.msgsize` = payload length − 8 (i.e. 20 + body),
 * `icverframe` = `icvermsg` = 0.0 unless given, `icmsgsize` = body length, `status` = 0,
 * `ictransaction_id` = 0, `icflags` = TRANSACTION | REQUEST (3), `reserved` = 0.
 * Throws RangeError when an option does not fit its field or the body exceeds 65535 bytes.
 */
export function encodeIcMessage(options: IcMessageOptions, body: Uint8Array = new Uint8Array(0)): Buffer {
  const buf = Buffer.alloc(ICMSG_HDR + body.length);
  const frame = options.frameVersion ?? { major: 0, minor: 0 };
  const msg = options.msgVersion ?? { major: 0, minor: 0 };
  buf.writeUInt32LE(0, ICMSG_OFFSETS['vmbuspipe_hdr.flags']);
  buf.writeUInt32LE(buf.length - VMBUSPIPE_HDR_SIZE, ICMSG_OFFSETS['vmbuspipe_hdr.msgsize']);
  buf.writeUInt16LE(
    checkInt(frame.major, 0xffff, 'frameVersion.major'),
    ICMSG_OFFSETS['icmsg_hdr.icverframe.major'],
  );
  buf.writeUInt16LE(
    checkInt(frame.minor, 0xffff, 'frameVersion.minor'),
    ICMSG_OFFSETS['icmsg_hdr.icverframe.minor'],
  );
  buf.writeUInt16LE(checkInt(options.msgType, 0xffff, 'msgType'), ICMSG_OFFSETS['icmsg_hdr.icmsgtype']);
  buf.writeUInt16LE(
    checkInt(msg.major, 0xffff, 'msgVersion.major'),
    ICMSG_OFFSETS['icmsg_hdr.icvermsg.major'],
  );
  buf.writeUInt16LE(
    checkInt(msg.minor, 0xffff, 'msgVersion.minor'),
    ICMSG_OFFSETS['icmsg_hdr.icvermsg.minor'],
  );
  buf.writeUInt16LE(checkInt(body.length, 0xffff, 'body length'), ICMSG_OFFSETS['icmsg_hdr.icmsgsize']);
  buf.writeUInt32LE(checkStatus(options.status ?? 0), ICMSG_OFFSETS['icmsg_hdr.status']);
  buf.writeUInt8(
    checkInt(options.transactionId ?? 0, 0xff, 'transactionId'),
    ICMSG_OFFSETS['icmsg_hdr.ictransaction_id'],
  );
  buf.writeUInt8(
    checkInt(options.flags ?? ICMSGHDRFLAG_HOST_REQUEST, 0xff, 'flags'),
    ICMSG_OFFSETS['icmsg_hdr.icflags'],
  );
  buf.set(body, ICMSG_HDR);
  return buf;
}

/**
 * Decode the 28-byte framing at the start of a util payload. Never throws: a payload shorter than
 * ICMSG_HDR gives a `too-short` error (the guest consumes and drops such packets without reply).
 */
export function decodeIcHeader(payload: Uint8Array): DecodeResult<IcHeader> {
  if (payload.length < ICMSG_HDR) {
    return fail(
      'too-short',
      `icmsg framing: payload of ${payload.length} bytes, at least ${ICMSG_HDR} expected`,
      {
        field: 'icmsg_hdr',
      },
    );
  }
  const v = viewOf(payload);
  const o = ICMSG_OFFSETS;
  return ok({
    pipeFlags: v.getUint32(o['vmbuspipe_hdr.flags'], true),
    pipeMsgSize: v.getUint32(o['vmbuspipe_hdr.msgsize'], true),
    frameVersion: {
      major: v.getUint16(o['icmsg_hdr.icverframe.major'], true),
      minor: v.getUint16(o['icmsg_hdr.icverframe.minor'], true),
    },
    msgType: v.getUint16(o['icmsg_hdr.icmsgtype'], true),
    msgVersion: {
      major: v.getUint16(o['icmsg_hdr.icvermsg.major'], true),
      minor: v.getUint16(o['icmsg_hdr.icvermsg.minor'], true),
    },
    msgSize: v.getUint16(o['icmsg_hdr.icmsgsize'], true),
    status: v.getUint32(o['icmsg_hdr.status'], true),
    transactionId: v.getUint8(o['icmsg_hdr.ictransaction_id']),
    flags: v.getUint8(o['icmsg_hdr.icflags']),
    reserved: v.getUint16(o['icmsg_hdr.reserved'], true),
  });
}

/**
 * Overwrite `icmsg_hdr.status` (u32 @20) in place, as the guest does before replying.
 * Throws RangeError if the payload is shorter than 28 bytes or status does not fit 32 bits
 * (negative int32 values are stored as their u32 bit pattern).
 */
export function setIcStatus(payload: Uint8Array, status: number): void {
  needHeader(payload, 'setIcStatus').setUint32(ICMSG_OFFSETS['icmsg_hdr.status'], checkStatus(status), true);
}

/**
 * Overwrite `icmsg_hdr.icflags` (u8 @25) in place; guest replies use ICMSGHDRFLAG_GUEST_RESPONSE (5).
 * Throws RangeError if the payload is shorter than 28 bytes or flags is not a u8.
 */
export function setIcFlags(payload: Uint8Array, flags: number): void {
  needHeader(payload, 'setIcFlags').setUint8(
    ICMSG_OFFSETS['icmsg_hdr.icflags'],
    checkInt(flags, 0xff, 'flags'),
  );
}

/**
 * Overwrite `icmsg_hdr.icmsgsize` (u16 @18) in place; negotiate replies set 16.
 * Throws RangeError if the payload is shorter than 28 bytes or size is not a u16.
 */
export function setIcMsgSize(payload: Uint8Array, size: number): void {
  needHeader(payload, 'setIcMsgSize').setUint16(
    ICMSG_OFFSETS['icmsg_hdr.icmsgsize'],
    checkInt(size, 0xffff, 'icmsgsize'),
    true,
  );
}
