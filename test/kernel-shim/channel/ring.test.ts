/**
 * struct hv_ring_buffer and the ring producer/consumer (kernel-protocol.md §6.2 to §6.6). Byte
 * expectations are literals from the reference, independent of the encoders.
 */
import { describe, expect, it } from 'vitest';
import { ICMSGTYPE_VSS, encodeIcMessage } from '../../../kernel-shim/channel/icmsg.js';
import {
  FEAT_PENDING_SEND_SZ,
  HV_RING_BUFFER_HEADER_SIZE,
  HV_RING_DEFAULT_DATA_SIZE,
  RingBuffer,
  type RingReadResult,
} from '../../../kernel-shim/channel/ring.js';
import { VM_PKT_COMP, VM_PKT_DATA_INBAND } from '../../../kernel-shim/channel/vmpacket.js';

const T = 0x1122334455667788n;

/** A VSS FREEZE payload: 28 bytes of IC framing + 12-byte hv_vss_msg (operation 5 @0, flags @8). */
function freezePayload(): Buffer {
  const body = Buffer.alloc(12);
  body[0] = 5; // VSS_OP_FREEZE
  body.writeUInt32LE(0xa1b2c3d4, 8); // vss_cf.flags, non-zero so its position is checked
  return encodeIcMessage(
    { msgType: ICMSGTYPE_VSS, frameVersion: { major: 3, minor: 0 }, msgVersion: { major: 5, minor: 0 } },
    body,
  );
}

/** The 64 bytes the FREEZE packet must occupy in the ring when written at write index `w`. */
function expectedFreezeBytes(w: number): number[] {
  // prettier-ignore
  return [
    // vmpacket_descriptor: type 6, offset8 2, len8 7, flags 0, trans_id T
    0x06, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
    // vmbuspipe_hdr: flags 0, msgsize 32 (payload 40 - 8)
    0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00,
    // icmsg_hdr: icverframe 3.0, icmsgtype 5 (packet offset 28), icvermsg 5.0, icmsgsize 12
    0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x05, 0x00, 0x00, 0x00, 0x0c, 0x00,
    // status 0 (packet offset 36), ictransaction_id 0, icflags 3 (packet offset 41), reserved
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    // hv_vss_msg: operation 5 (packet offset 44), reserved[7], vss_cf.flags (packet offset 52)
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd4, 0xc3, 0xb2, 0xa1,
    // trailer (packet offset 56): u64 w << 32
    0x00, 0x00, 0x00, 0x00, w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, (w >>> 24) & 0xff,
  ];
}

/** Data-area bytes [at, at + n) with wrap-around, read straight from ring memory. */
function dataBytes(ring: RingBuffer, at: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(ring.memory[HV_RING_BUFFER_HEADER_SIZE + ((at + i) % ring.dataSize)]!);
  return out;
}

function u32At(ring: RingBuffer, offset: number): number {
  return new DataView(ring.memory.buffer, ring.memory.byteOffset).getUint32(offset, true);
}

function expectPacket(r: RingReadResult | undefined): Extract<RingReadResult, { ok: true }> {
  expect(r).toBeDefined();
  if (r === undefined || !r.ok)
    throw new Error(
      `expected a packet, got ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`,
    );
  return r;
}

/** Raw packet bytes for fault injection: descriptor fields as given, payload, zero trailer. */
function rawPacket(
  fields: { len8: number; offset8: number; transId?: number },
  payload: number[],
): Uint8Array {
  const bytes = new Uint8Array(16 + payload.length + 8);
  const v = new DataView(bytes.buffer);
  v.setUint16(0, VM_PKT_DATA_INBAND, true);
  v.setUint16(2, fields.offset8, true);
  v.setUint16(4, fields.len8, true);
  v.setBigUint64(8, BigInt(fields.transId ?? 7), true);
  bytes.set(payload, 16);
  return bytes;
}

describe('hv_ring_buffer header', () => {
  it('create() allocates a 16384-byte shared ring initialised as the guest does', () => {
    const ring = RingBuffer.create();
    expect(ring.memory.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(ring.memory.length).toBe(16384);
    expect(ring.dataSize).toBe(HV_RING_DEFAULT_DATA_SIZE);
    expect([ring.writeIndex, ring.readIndex, ring.interruptMask, ring.pendingSendSz]).toEqual([0, 0, 0, 0]);
    expect(u32At(ring, 64)).toBe(1);
    expect(ring.featureBits).toBe(FEAT_PENDING_SEND_SZ);
    expect([ring.readable(), ring.writable()]).toEqual([0, 12288]);
  });

  it('puts the header fields at 0, 4, 8, 12 and 64', () => {
    const ring = RingBuffer.create(256);
    ring.writeIndex = 0x11111118;
    ring.readIndex = 0x22222228;
    ring.interruptMask = 0x33333333;
    ring.pendingSendSz = 0x44444444;
    ring.featureBits = 0x55555555;
    expect([u32At(ring, 0), u32At(ring, 4), u32At(ring, 8), u32At(ring, 12), u32At(ring, 64)]).toEqual([
      0x11111118, 0x22222228, 0x33333333, 0x44444444, 0x55555555,
    ]);
  });

  it('init() zeroes the whole header page and sets feature_bits = 1, leaving data alone', () => {
    const ring = new RingBuffer(new Uint8Array(4096 + 64).fill(0xaa));
    ring.init();
    expect(ring.memory.subarray(0, 64).every((b) => b === 0)).toBe(true);
    expect([...ring.memory.subarray(64, 68)]).toEqual([1, 0, 0, 0]);
    expect(ring.memory.subarray(68, 4096).every((b) => b === 0)).toBe(true);
    expect(ring.memory.subarray(4096).every((b) => b === 0xaa)).toBe(true);
  });

  it('the constructor views existing memory without changing it', () => {
    const a = RingBuffer.create(256);
    a.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array([1, 2, 3]));
    const b = new RingBuffer(a.memory);
    expect([b.writeIndex, b.readIndex, b.featureBits]).toEqual([32, 0, 1]);
    expect(expectPacket(b.readPacket(256)).payload.subarray(0, 3)).toEqual(new Uint8Array([1, 2, 3]));
    expect(a.readIndex).toBe(32);
  });

  it('rejects memory of the wrong shape', () => {
    expect(() => new RingBuffer(new Uint8Array(4096))).toThrow(RangeError);
    expect(() => new RingBuffer(new Uint8Array(4096 + 12))).toThrow(RangeError);
    expect(() => new RingBuffer(new Uint8Array(4096 + 24).subarray(2, 2 + 4096 + 16))).toThrow(RangeError);
  });

  it('readable/writable follow §6.4 for both index orders', () => {
    const ring = RingBuffer.create(256);
    ring.writeIndex = 200;
    ring.readIndex = 40;
    expect([ring.readable(), ring.writable()]).toEqual([160, 96]);
    ring.writeIndex = 40;
    ring.readIndex = 200;
    expect([ring.readable(), ring.writable()]).toEqual([96, 160]);
  });
});

describe('worked example §6.6: a VSS FREEZE in the inbound ring', () => {
  it('occupies 64 bytes laid out byte for byte as the reference says', () => {
    const ring = RingBuffer.create();
    // Move the indices to 64 with one packet written and read, so the trailer is not all zero.
    expect(ring.writePacket({ type: VM_PKT_DATA_INBAND, flags: 0, transId: 1n }, freezePayload()).ok).toBe(
      true,
    );
    expectPacket(ring.readPacket(8192));
    expect([ring.writeIndex, ring.readIndex]).toEqual([64, 64]);

    const r = ring.writePacket({ type: VM_PKT_DATA_INBAND, flags: 0, transId: T }, freezePayload());
    expect(r).toEqual({ ok: true, signal: true });
    expect(ring.writeIndex).toBe(128);
    expect([...ring.memory.subarray(4096 + 64, 4096 + 128)]).toEqual(expectedFreezeBytes(64));
    expect(ring.readable()).toBe(64);

    const p = expectPacket(ring.readPacket(8192));
    expect(p.descriptor).toEqual({ type: 6, offset8: 2, len8: 7, flags: 0, transId: T });
    expect(p.payload).toEqual(new Uint8Array(freezePayload()));
    expect(p.consumed).toBe(64);
    expect(ring.readIndex).toBe(128);
  });

  it('wraps around the end of the data area, trailer included', () => {
    const ring = RingBuffer.create(256);
    ring.writeIndex = 224;
    ring.readIndex = 224;
    expect(ring.writePacket({ type: VM_PKT_DATA_INBAND, flags: 0, transId: T }, freezePayload()).ok).toBe(
      true,
    );
    expect(ring.writeIndex).toBe(32);
    expect([...ring.memory.subarray(4096 + 224, 4096 + 256)]).toEqual(expectedFreezeBytes(224).slice(0, 32));
    expect([...ring.memory.subarray(4096, 4096 + 32)]).toEqual(expectedFreezeBytes(224).slice(32));
    const p = expectPacket(ring.readPacket(8192));
    expect(p.payload).toEqual(new Uint8Array(freezePayload()));
    expect(ring.readIndex).toBe(32);
  });
});

describe('producer', () => {
  it('pads the payload with zeros to 8 and sets len8 accordingly', () => {
    const ring = RingBuffer.create(256);
    ring.memory.fill(0xff, 4096);
    ring.writePacket({ type: VM_PKT_COMP, flags: 1, transId: 9n }, new Uint8Array([1, 2, 3, 4, 5]));
    // prettier-ignore
    expect(dataBytes(ring, 0, 32)).toEqual([
      0x0b, 0, 2, 0, 3, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0, // type COMP, offset8 2, len8 3, flags 1, trans_id 9
      1, 2, 3, 4, 5, 0, 0, 0, // payload, zero padded
      0, 0, 0, 0, 0, 0, 0, 0, // trailer: write index 0 << 32
    ]);
    expect(ring.memory[4096 + 32]).toBe(0xff);
    expect(ring.writeIndex).toBe(32);
  });

  it('writes zero padding over stale bytes, and the trailer after the wrap point', () => {
    const ring = RingBuffer.create(256);
    ring.memory.fill(0xee, 4096);
    ring.writeIndex = 232; // descriptor 232..247, payload 248..250, padding 251..255, trailer 0..7
    ring.readIndex = 232;
    ring.writePacket({ type: VM_PKT_DATA_INBAND, flags: 0, transId: 5n }, new Uint8Array([7, 8, 9]));
    // prettier-ignore
    expect(dataBytes(ring, 232, 32)).toEqual([
      6, 0, 2, 0, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
      7, 8, 9, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 232, 0, 0, 0,
    ]);
    expect(ring.writeIndex).toBe(8);
    expect(ring.memory[4096 + 8]).toBe(0xee);
  });

  it('an empty payload is a 16-byte packet plus trailer', () => {
    const ring = RingBuffer.create(256);
    ring.writePacket({ type: 6, flags: 0, transId: 0n }, new Uint8Array(0));
    expect(ring.writeIndex).toBe(24);
    const p = expectPacket(ring.readPacket(256));
    expect(p.descriptor.len8).toBe(2);
    expect(p.payload.length).toBe(0);
  });

  it('refuses with EAGAIN when writable == total, changing nothing; accepts when writable > total', () => {
    const ring = RingBuffer.create(256);
    const before = ring.memory.slice();
    // 232-byte payload: packet 248 + trailer 8 = 256 = writable.
    expect(ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(232).fill(1))).toEqual({
      ok: false,
      errno: 'EAGAIN',
    });
    expect(ring.memory).toEqual(before);
    // 225..232 pad to 232 as well.
    expect(ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(225)).ok).toBe(false);
    // 224-byte payload: total 248 < 256.
    expect(ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(224)).ok).toBe(true);
    expect(ring.writable()).toBe(8);
    expect(ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(0)).ok).toBe(false);
  });

  it('signals only on empty -> non-empty with interrupt_mask 0', () => {
    const ring = RingBuffer.create(256);
    const send = () => ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(8));
    expect(send()).toEqual({ ok: true, signal: true });
    expect(send()).toEqual({ ok: true, signal: false });
    expectPacket(ring.readPacket(256));
    expect(send()).toEqual({ ok: true, signal: false }); // one packet still unread
    expectPacket(ring.readPacket(256));
    expectPacket(ring.readPacket(256));
    ring.interruptMask = 1;
    expect(send()).toEqual({ ok: true, signal: false });
    expectPacket(ring.readPacket(256));
    ring.interruptMask = 0;
    expect(send()).toEqual({ ok: true, signal: true });
  });

  it('refuses a payload whose len8 would not fit 16 bits', () => {
    const ring = RingBuffer.create(600_000);
    expect(() => ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(0x10000 * 8))).toThrow(
      RangeError,
    );
  });
});

describe('consumer', () => {
  it('returns undefined on an empty ring and when fewer than 16 bytes are readable', () => {
    const ring = RingBuffer.create(256);
    expect(ring.readPacket(256)).toBeUndefined();
    ring.writeBytes(new Uint8Array(8));
    expect(ring.readPacket(256)).toBeUndefined();
    expect(ring.readIndex).toBe(0);
  });

  it('signals the producer only when crossing pending_send_sz upwards', () => {
    const ring = RingBuffer.create(256);
    const send = () => ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(48)); // 72 bytes
    send();
    send();
    send(); // 216 used, 40 free
    ring.pendingSendSz = 72; // producer waits for 72 bytes
    // free 40 -> 112: crosses 72
    expect(expectPacket(ring.readPacket(256)).signal).toBe(true);
    // free 112 -> 184: was already enough
    expect(expectPacket(ring.readPacket(256)).signal).toBe(false);
    send();
    send(); // free 40
    ring.pendingSendSz = 112; // 40 -> 112: exactly equal counts as not enough
    expect(expectPacket(ring.readPacket(256)).signal).toBe(false);
    ring.pendingSendSz = 111; // 112 -> 184, but 112 > 111 already before
    expect(expectPacket(ring.readPacket(256)).signal).toBe(false);
  });

  it('does not signal without feat_pending_send_sz or with pending_send_sz 0, and ignores interrupt_mask', () => {
    const ring = RingBuffer.create(256);
    const fill = () => {
      for (let i = 0; i < 3; i++) ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(48));
    };
    fill();
    ring.pendingSendSz = 72;
    ring.featureBits = 0;
    expect(expectPacket(ring.readPacket(256)).signal).toBe(false);
    ring.featureBits = FEAT_PENDING_SEND_SZ;
    ring.pendingSendSz = 0;
    expect(expectPacket(ring.readPacket(256)).signal).toBe(false);
    expectPacket(ring.readPacket(256));
    fill(); // free 40 again
    ring.pendingSendSz = 72;
    ring.interruptMask = 1;
    expect(expectPacket(ring.readPacket(256)).signal).toBe(true);
  });

  it("copies the payload to the start of the caller's buffer when it fits, else to a new array", () => {
    const ring = RingBuffer.create(256);
    const payload = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    ring.writePacket({ type: 6, flags: 0, transId: 1n }, payload);
    ring.writePacket({ type: 6, flags: 0, transId: 2n }, payload);
    const into = new Uint8Array(32).fill(0xaa);
    const a = expectPacket(ring.readPacket(256, 256, into));
    expect(a.payload.buffer).toBe(into.buffer);
    expect(a.payload.byteOffset).toBe(0);
    expect([...a.payload]).toEqual([...payload, 0, 0, 0, 0, 0, 0, 0]); // with the padding, as the kernel
    expect(into[16]).toBe(0xaa);
    const small = new Uint8Array(8);
    const b = expectPacket(ring.readPacket(256, 256, small));
    expect(b.payload.buffer).not.toBe(small.buffer);
    expect([...b.payload.subarray(0, 9)]).toEqual([...payload]);
    expect(b.descriptor.transId).toBe(2n);
  });

  it('validates its size arguments', () => {
    const ring = RingBuffer.create(256);
    expect(() => ring.readPacket(12)).toThrow(RangeError);
    expect(() => ring.readPacket(100)).toThrow(RangeError);
    expect(() => ring.readPacket(256, 0)).toThrow(RangeError);
  });
});

describe('malformed packets (fault injection through writeBytes)', () => {
  const payload16 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

  it('writeBytes copies verbatim with wrap-around and applies the space and signal rules', () => {
    const ring = RingBuffer.create(64);
    ring.writeIndex = 56;
    ring.readIndex = 56;
    expect(ring.writeBytes(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]))).toEqual({
      ok: true,
      signal: true,
    });
    expect(dataBytes(ring, 56, 16)).toEqual(payload16);
    expect([...ring.memory.subarray(4096, 4096 + 8)]).toEqual([9, 10, 11, 12, 13, 14, 15, 16]);
    expect(ring.writeIndex).toBe(8);
    expect(ring.writeBytes(new Uint8Array(48))).toEqual({ ok: false, errno: 'EAGAIN' });
    expect(ring.writeBytes(new Uint8Array(40))).toEqual({ ok: true, signal: false });
  });

  it.each([0, 1])('len8 = %i (< 16 bytes) is replaced by the readable byte count', (len8) => {
    const ring = RingBuffer.create(512);
    ring.writeBytes(rawPacket({ len8, offset8: 2 }, payload16)); // 40 bytes
    const p = expectPacket(ring.readPacket(256));
    expect(p.descriptor).toMatchObject({ len8: 5, offset8: 2 });
    // Payload runs to the end of the readable bytes: the 16 payload bytes and the trailer.
    expect([...p.payload]).toEqual([...payload16, 0, 0, 0, 0, 0, 0, 0, 0]);
    // The kernel then skips len + 8 = 48 bytes: read_index overshoots write_index by 8.
    expect(p.consumed).toBe(48);
    expect([ring.readIndex, ring.writeIndex]).toEqual([48, 40]);
    expect(ring.readable()).toBe(512 - 8);
  });

  it('len8 larger than the readable bytes is clamped to them', () => {
    const ring = RingBuffer.create(512);
    ring.writeBytes(rawPacket({ len8: 100, offset8: 2, transId: 99 }, payload16));
    const p = expectPacket(ring.readPacket(256));
    expect(p.descriptor).toEqual({ type: 6, offset8: 2, len8: 5, flags: 0, transId: 99n });
    expect(p.payload.length).toBe(24);
    expect(ring.readIndex).toBe(48);
  });

  it('len8 larger than maxPacketSize is clamped to maxPacketSize (the packet is truncated, not refused)', () => {
    const ring = RingBuffer.create(512);
    const payload = Array.from({ length: 64 }, (_, i) => i + 1);
    ring.writePacket({ type: 6, flags: 0, transId: 5n }, new Uint8Array(payload)); // len8 10, 88 bytes
    const p = expectPacket(ring.readPacket(48));
    expect(p.descriptor).toMatchObject({ len8: 6, offset8: 2, transId: 5n });
    expect([...p.payload]).toEqual(payload.slice(0, 32));
    expect(p.consumed).toBe(56);
    expect(ring.readIndex).toBe(56); // mid-packet: the ring is now out of step, as in the kernel
  });

  it.each([
    { offset8: 0, len8: 5, expectOffset8: 2, expectLength: 24 },
    { offset8: 1, len8: 5, expectOffset8: 2, expectLength: 24 },
    { offset8: 6, len8: 5, expectOffset8: 2, expectLength: 24 },
    { offset8: 0xffff, len8: 5, expectOffset8: 2, expectLength: 24 },
    { offset8: 3, len8: 5, expectOffset8: 3, expectLength: 16 },
    { offset8: 5, len8: 5, expectOffset8: 5, expectLength: 0 },
  ])('offset8 $offset8 with len8 $len8 reads from offset8 $expectOffset8', (c) => {
    const ring = RingBuffer.create(512);
    const payload = Array.from({ length: 24 }, (_, i) => 0x40 + i);
    ring.writeBytes(rawPacket({ len8: c.len8, offset8: c.offset8 }, payload)); // 48 bytes
    const p = expectPacket(ring.readPacket(256));
    expect(p.descriptor).toMatchObject({ offset8: c.expectOffset8, len8: 5 });
    expect([...p.payload]).toEqual(
      payload.slice(c.expectOffset8 * 8 - 16, c.expectOffset8 * 8 - 16 + c.expectLength),
    );
    expect(p.consumed).toBe(48);
    expect(ring.readIndex).toBe(48);
    expect(ring.readable()).toBe(0);
  });

  it('a payload larger than the receive buffer gives ENOBUFS and is not consumed', () => {
    const ring = RingBuffer.create(512);
    ring.writePacket({ type: 6, flags: 0, transId: 77n }, new Uint8Array(40).fill(3)); // payload 40
    const before = ring.memory.slice();
    expect(ring.readPacket(256, 32)).toEqual({ ok: false, errno: 'ENOBUFS', length: 40, transId: 77n });
    expect(ring.memory).toEqual(before);
    expect(ring.readIndex).toBe(0);
    // Retrying with the same buffer fails the same way: the channel stalls.
    expect(ring.readPacket(256, 32)).toMatchObject({ ok: false, errno: 'ENOBUFS' });
    // A large enough buffer (40 is enough: the check is payload > buflen) reads it.
    expect(expectPacket(ring.readPacket(256, 40)).payload).toEqual(new Uint8Array(40).fill(3));
  });

  it('with the util default (buffer = maxPacketSize) an oversized packet is truncated, never ENOBUFS', () => {
    // VSS: max_pkt_size 8192 = buflen; a 9000-byte payload fits the 12288-byte ring.
    const ring = RingBuffer.create();
    ring.writePacket({ type: 6, flags: 0, transId: 1n }, new Uint8Array(9000).fill(0x5a));
    const p = expectPacket(ring.readPacket(8192));
    expect(p.payload.length).toBe(8192 - 16);
    expect(p.consumed).toBe(8192 + 8);
  });
});
