/**
 * struct vmpacket_descriptor byte table (kernel-protocol.md §6.3 / Appendix A), written out as
 * literals independently of the encoder.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  VM_PKT_ADDITIONAL_DATA,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_INVALID,
  decodeVmPacketDescriptor,
  encodeVmPacketDescriptor,
} from '../../../kernel-shim/channel/vmpacket.js';

describe('vmpacket_descriptor', () => {
  it('has the kernel packet type values', () => {
    expect([VM_PKT_INVALID, VM_PKT_DATA_INBAND, VM_PKT_COMP, VM_PKT_ADDITIONAL_DATA]).toEqual([
      0, 6, 0xb, 0xd,
    ]);
    expect(VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED).toBe(1);
  });

  it('encodes type@0 offset8@2 len8@4 flags@6 trans_id@8, little-endian', () => {
    const bytes = encodeVmPacketDescriptor({
      type: 0x0106,
      offset8: 0x0302,
      len8: 0x0504,
      flags: 0x0706,
      transId: 0x0f0e0d0c0b0a0908n,
    });
    expect([...bytes]).toEqual([6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  });

  it('encodes into a target at an offset and leaves the rest alone', () => {
    const target = new Uint8Array(20).fill(0xee);
    encodeVmPacketDescriptor(
      { type: 6, offset8: 2, len8: 7, flags: 0, transId: 0xffff_ffff_ffff_ffffn },
      target,
      2,
    );
    expect([...target]).toEqual([
      0xee, 0xee, 6, 0, 2, 0, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xee, 0xee,
    ]);
  });

  it('decodes what it encodes', () => {
    fc.assert(
      fc.property(
        fc.record({
          type: fc.integer({ min: 0, max: 0xffff }),
          offset8: fc.integer({ min: 0, max: 0xffff }),
          len8: fc.integer({ min: 0, max: 0xffff }),
          flags: fc.integer({ min: 0, max: 0xffff }),
          transId: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        }),
        (desc) => {
          const r = decodeVmPacketDescriptor(encodeVmPacketDescriptor(desc));
          expect(r).toEqual({ ok: true, value: desc });
        },
      ),
    );
  });

  it('decodes at an offset and reports short input without throwing', () => {
    const bytes = new Uint8Array(18);
    bytes.set([6, 0, 2, 0, 7, 0, 1, 0, 0x2a], 2);
    const r = decodeVmPacketDescriptor(bytes, 2);
    expect(r).toEqual({ ok: true, value: { type: 6, offset8: 2, len8: 7, flags: 1, transId: 42n } });
    for (let n = 0; n < 16; n++) {
      const short = decodeVmPacketDescriptor(new Uint8Array(n));
      expect(short.ok).toBe(false);
      if (!short.ok) expect(short.error.code).toBe('too-short');
    }
    expect(decodeVmPacketDescriptor(new Uint8Array(16), 1).ok).toBe(false);
  });

  it('refuses values that do not fit their C types', () => {
    const good = { type: 6, offset8: 2, len8: 7, flags: 0, transId: 1n };
    expect(() => encodeVmPacketDescriptor({ ...good, len8: 0x10000 })).toThrow(RangeError);
    expect(() => encodeVmPacketDescriptor({ ...good, type: -1 })).toThrow(RangeError);
    expect(() => encodeVmPacketDescriptor({ ...good, transId: 1n << 64n })).toThrow(RangeError);
    expect(() => encodeVmPacketDescriptor({ ...good, transId: -1n })).toThrow(RangeError);
    expect(() => encodeVmPacketDescriptor(good, new Uint8Array(16), 1)).toThrow(RangeError);
  });
});
