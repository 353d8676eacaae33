/**
 * IC version negotiation (ICMSGTYPE_NEGOTIATE): the guest's in-place answer as computed by
 * `vmbus_prep_negotiate_resp` (drivers/hv/channel_mgmt.c), the per-service version lists the util
 * drivers offer, and host-side helpers to build a request and read the answer
 * (kernel-protocol.md §3.3).
 *
 * Body of a negotiate payload (`struct icmsg_negotiate`, after the 28-byte IC framing):
 *
 * | Payload offset | Size        | Field                                                         |
 * |---------------:|------------:|---------------------------------------------------------------|
 * | 28             | 2           | `icframe_vercnt` F: number of framework versions              |
 * | 30             | 2           | `icmsg_vercnt` M: number of service (message) versions         |
 * | 32             | 4           | reserved                                                      |
 * | 36             | 4 × (F + M) | `icversion_data[]`: F framework then M service versions,       |
 * |                |             | each `struct ic_version` {major u16, minor u16}                |
 *
 * Versions are passed around as numbers `(major << 16) | minor`, as the kernel does.
 */
import { UTIL_FW_VERSION, UTIL_WS2K8_FW_VERSION } from '../../uapi/constants.js';
import { type DecodeResult, fail, ok } from '../../uapi/result.js';
import {
  ICMSGTYPE_NEGOTIATE,
  ICMSG_HDR,
  ICMSG_OFFSETS,
  type IcHeader,
  type IcMessageOptions,
  decodeIcHeader,
  encodeIcMessage,
} from './icmsg.js';

/** Largest F or M the guest accepts (IC_VERSION_NEGOTIATION_MAX_VER_COUNT). */
export const IC_VERSION_NEGOTIATION_MAX_VER_COUNT = 100;

/** Payload offsets of the `struct icmsg_negotiate` fields. */
export const ICMSG_NEGOTIATE_OFFSETS = {
  icframe_vercnt: ICMSG_HDR,
  icmsg_vercnt: ICMSG_HDR + 2,
  reserved: ICMSG_HDR + 4,
  icversion_data: ICMSG_HDR + 8,
} as const;

/** Shortest payload the guest looks at: both counts readable (ICMSG_HDR + offsetof(reserved) = 32). */
export const ICMSG_NEGOTIATE_MIN_SIZE = ICMSG_NEGOTIATE_OFFSETS.reserved;
/** Value the guest writes into `icmsg_hdr.icmsgsize` of every negotiate reply it prepares. */
export const ICMSG_NEGOTIATE_REPLY_MSGSIZE = 16;

/** ICMSG_NEGOTIATE_PKT_SIZE(F, M): payload bytes needed for F + M version entries = 36 + 4(F + M). */
export function icmsgNegotiatePktSize(frameworkCount: number, serviceCount: number): number {
  return ICMSG_NEGOTIATE_OFFSETS.icversion_data + 4 * (frameworkCount + serviceCount);
}

/** `(major << 16) | minor` as an unsigned 32-bit number. */
export function icVersion(major: number, minor: number): number {
  return (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
}

/** KVP framework versions, preference order (hv_kvp.c `fw_versions`): 3.0, 1.0. */
export const KVP_FW_VERSIONS: readonly number[] = Object.freeze([UTIL_FW_VERSION, UTIL_WS2K8_FW_VERSION]);
/** KVP service versions, preference order (hv_kvp.c `kvp_versions`): 4.0, 3.0, 1.0. */
export const KVP_SRV_VERSIONS: readonly number[] = Object.freeze([
  icVersion(4, 0),
  icVersion(3, 0),
  icVersion(1, 0),
]);
/** VSS framework versions (hv_snapshot.c `fw_versions`): 3.0. */
export const VSS_FW_VERSIONS: readonly number[] = Object.freeze([UTIL_FW_VERSION]);
/** VSS service versions (hv_snapshot.c `vss_versions`): 5.0. */
export const VSS_SRV_VERSIONS: readonly number[] = Object.freeze([icVersion(5, 0)]);
/** FCOPY framework versions (hv_fcopy.c ≤ 6.9 and the uio daemon): 3.0. */
export const FCOPY_FW_VERSIONS: readonly number[] = Object.freeze([UTIL_FW_VERSION]);
/** FCOPY service versions (hv_fcopy.c ≤ 6.9 and the uio daemon): 1.1. */
export const FCOPY_SRV_VERSIONS: readonly number[] = Object.freeze([icVersion(1, 1)]);

/**
 * What {@link prepNegotiateResponse} decided. `ok` is the kernel's return value. `fwVersion` is set
 * when a framework version matched (also on a service-version failure), `srvVersion` only on success.
 */
export interface NegotiateOutcome {
  readonly ok: boolean;
  readonly fwVersion?: number;
  readonly srvVersion?: number;
}

function writeU16IfInside(view: DataView, offset: number, value: number): void {
  // The kernel works in a 16 KiB receive buffer and may write entries past the received length;
  // only the received length is sent back, so bytes beyond the payload are simply not modelled.
  if (offset + 2 <= view.byteLength) view.setUint16(offset, value, true);
}

/**
 * Prepare the guest's answer to a NEGOTIATE request in place, exactly as
 * `vmbus_prep_negotiate_resp` does:
 *
 * 1. payload < 32 bytes → nothing is modified, `{ ok: false }`.
 * 2. `icmsgsize` = 16.
 * 3. F > 100, M > 100 or 36 + 4(F + M) > payload length → failure.
 * 4. For each of `fwVersions` in order, the first exact (major, minor) match among the host's
 *    first F entries wins; none → failure.
 * 5. For each of `srvVersions` in order, the first exact match among entries F … F+M−1 wins;
 *    none → failure (the framework choice is kept).
 * 6. Success: counts (1, 1), entry[0] = framework, entry[1] = service. Failure: counts (0, 0),
 *    entry[0] = the matched framework or (F, 0), entry[1] = (M, 0). Entries 2… and `status` are
 *    left as the host sent them; entry halves that would lie past the payload are not written.
 */
export function prepNegotiateResponse(
  payload: Uint8Array,
  fwVersions: readonly number[],
  srvVersions: readonly number[],
): NegotiateOutcome {
  if (payload.length < ICMSG_NEGOTIATE_MIN_SIZE) return { ok: false };
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  view.setUint16(ICMSG_OFFSETS['icmsg_hdr.icmsgsize'], ICMSG_NEGOTIATE_REPLY_MSGSIZE, true);

  const frameCount = view.getUint16(ICMSG_NEGOTIATE_OFFSETS.icframe_vercnt, true);
  const msgCount = view.getUint16(ICMSG_NEGOTIATE_OFFSETS.icmsg_vercnt, true);
  const entry = (j: number): number => {
    const at = ICMSG_NEGOTIATE_OFFSETS.icversion_data + 4 * j;
    return icVersion(view.getUint16(at, true), view.getUint16(at + 2, true));
  };

  let frame = icVersion(frameCount, 0);
  let msg = icVersion(msgCount, 0);
  let fwFound = false;
  let found = false;

  const valid =
    frameCount <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT &&
    msgCount <= IC_VERSION_NEGOTIATION_MAX_VER_COUNT &&
    icmsgNegotiatePktSize(frameCount, msgCount) <= payload.length;

  if (valid) {
    search: for (const want of fwVersions) {
      for (let j = 0; j < frameCount; j++) {
        if (entry(j) === want >>> 0) {
          frame = want >>> 0;
          fwFound = true;
          break search;
        }
      }
    }
    if (fwFound) {
      search: for (const want of srvVersions) {
        for (let j = frameCount; j < frameCount + msgCount; j++) {
          if (entry(j) === want >>> 0) {
            msg = want >>> 0;
            found = true;
            break search;
          }
        }
      }
    }
  }

  view.setUint16(ICMSG_NEGOTIATE_OFFSETS.icframe_vercnt, found ? 1 : 0, true);
  view.setUint16(ICMSG_NEGOTIATE_OFFSETS.icmsg_vercnt, found ? 1 : 0, true);
  const e0 = ICMSG_NEGOTIATE_OFFSETS.icversion_data;
  writeU16IfInside(view, e0, frame >>> 16);
  writeU16IfInside(view, e0 + 2, frame & 0xffff);
  writeU16IfInside(view, e0 + 4, msg >>> 16);
  writeU16IfInside(view, e0 + 6, msg & 0xffff);

  if (found) return { ok: true, fwVersion: frame, srvVersion: msg };
  return fwFound ? { ok: false, fwVersion: frame } : { ok: false };
}

/**
 * Host side: build a complete NEGOTIATE payload offering `fwVersions` (F entries) then
 * `srvVersions` (M entries): IC framing with msgType ICMSGTYPE_NEGOTIATE (other framing fields as
 * {@link encodeIcMessage} defaults them, overridable through `options`), counts, reserved 0, then
 * the entries. Length 36 + 4(F + M), not padded (the ring pads to 8).
 * Throws RangeError if a count exceeds 65535 (more than 100 is allowed, to test the guest's check).
 */
export function encodeNegotiateRequest(
  fwVersions: readonly number[],
  srvVersions: readonly number[],
  options: Omit<IcMessageOptions, 'msgType'> = {},
): Buffer {
  if (fwVersions.length > 0xffff || srvVersions.length > 0xffff) {
    throw new RangeError('icframe_vercnt / icmsg_vercnt are u16');
  }
  const body = Buffer.alloc(8 + 4 * (fwVersions.length + srvVersions.length));
  body.writeUInt16LE(fwVersions.length, 0);
  body.writeUInt16LE(srvVersions.length, 2);
  [...fwVersions, ...srvVersions].forEach((v, i) => {
    body.writeUInt16LE((v >>> 16) & 0xffff, 8 + 4 * i);
    body.writeUInt16LE(v & 0xffff, 8 + 4 * i + 2);
  });
  return encodeIcMessage({ ...options, msgType: ICMSGTYPE_NEGOTIATE }, body);
}

/** The guest's negotiate answer as the host reads it. */
export interface NegotiateResponse {
  readonly header: IcHeader;
  /** `icframe_vercnt` as answered: 1 on success, 0 on failure. */
  readonly frameworkCount: number;
  /** `icmsg_vercnt` as answered: 1 on success, 0 on failure. */
  readonly serviceCount: number;
  /** Counts are (1, 1) and both entries are present. */
  readonly accepted: boolean;
  /** entry[0] as `(major << 16) | minor`, when the payload holds it (≥ 40 bytes). */
  readonly fwVersion?: number;
  /** entry[1] as `(major << 16) | minor`, when the payload holds it (≥ 44 bytes). */
  readonly srvVersion?: number;
}

/**
 * Host side: read the guest's NEGOTIATE answer. Never throws. Errors: payload < 32 bytes
 * (`too-short`), `icmsgtype` not NEGOTIATE (`invalid-field`).
 */
export function decodeNegotiateResponse(payload: Uint8Array): DecodeResult<NegotiateResponse> {
  const header = decodeIcHeader(payload);
  if (!header.ok) return header;
  if (payload.length < ICMSG_NEGOTIATE_MIN_SIZE) {
    return fail('too-short', `icmsg_negotiate: payload of ${payload.length} bytes, at least 32 expected`, {
      field: 'icmsg_negotiate.icmsg_vercnt',
    });
  }
  if (header.value.msgType !== ICMSGTYPE_NEGOTIATE) {
    return fail('invalid-field', `icmsg_hdr.icmsgtype is ${header.value.msgType}, NEGOTIATE (0) expected`, {
      field: 'icmsg_hdr.icmsgtype',
    });
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const frameworkCount = view.getUint16(ICMSG_NEGOTIATE_OFFSETS.icframe_vercnt, true);
  const serviceCount = view.getUint16(ICMSG_NEGOTIATE_OFFSETS.icmsg_vercnt, true);
  const readEntry = (j: number): number | undefined => {
    const at = ICMSG_NEGOTIATE_OFFSETS.icversion_data + 4 * j;
    if (at + 4 > payload.length) return undefined;
    return icVersion(view.getUint16(at, true), view.getUint16(at + 2, true));
  };
  const fwVersion = readEntry(0);
  const srvVersion = readEntry(1);
  return ok({
    header: header.value,
    frameworkCount,
    serviceCount,
    accepted:
      frameworkCount === 1 && serviceCount === 1 && fwVersion !== undefined && srvVersion !== undefined,
    ...(fwVersion === undefined ? {} : { fwVersion }),
    ...(srvVersion === undefined ? {} : { srvVersion }),
  });
}
