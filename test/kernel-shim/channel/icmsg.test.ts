/**
 * vmbuspipe_hdr + icmsg_hdr framing (kernel-protocol.md §3.1), offsets written out as literals.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ICMSGHDRFLAG_REQUEST,
  ICMSGHDRFLAG_RESPONSE,
  ICMSGHDRFLAG_TRANSACTION,
  ICMSGTYPE_FCOPY,
  ICMSGTYPE_HEARTBEAT,
  ICMSGTYPE_KVPEXCHANGE,
  ICMSGTYPE_NEGOTIATE,
  ICMSGTYPE_SHUTDOWN,
  ICMSGTYPE_TIMESYNC,
  ICMSGTYPE_VSS,
  ICMSG_HDR,
  decodeIcHeader,
  encodeIcMessage,
  setIcFlags,
  setIcMsgSize,
  setIcStatus,
} from '../../../kernel-shim/channel/icmsg.js';

describe('IC framing constants', () => {
  it('match the kernel', () => {
    expect(ICMSG_HDR).toBe(28);
    expect([
      ICMSGTYPE_NEGOTIATE,
      ICMSGTYPE_HEARTBEAT,
      ICMSGTYPE_KVPEXCHANGE,
      ICMSGTYPE_SHUTDOWN,
      ICMSGTYPE_TIMESYNC,
      ICMSGTYPE_VSS,
      ICMSGTYPE_FCOPY,
    ]).toEqual([0, 1, 2, 3, 4, 5, 7]);
    expect([ICMSGHDRFLAG_TRANSACTION, ICMSGHDRFLAG_REQUEST, ICMSGHDRFLAG_RESPONSE]).toEqual([1, 2, 4]);
  });
});

describe('encodeIcMessage', () => {
  it('lays out every field at its payload offset', () => {
    const buf = encodeIcMessage(
      {
        msgType: 0x0102,
        status: 0x80004005,
        flags: 0x5,
        frameVersion: { major: 0x0304, minor: 0x0506 },
        msgVersion: { major: 0x0708, minor: 0x090a },
        transactionId: 0xab,
      },
      new Uint8Array([0xc1, 0xc2, 0xc3]),
    );
    // prettier-ignore
    expect([...buf]).toEqual([
      0, 0, 0, 0, // vmbuspipe_hdr.flags
      23, 0, 0, 0, // vmbuspipe_hdr.msgsize = 31 - 8
      0x04, 0x03, 0x06, 0x05, // icverframe
      0x02, 0x01, // icmsgtype
      0x08, 0x07, 0x0a, 0x09, // icvermsg
      3, 0, // icmsgsize = body length
      0x05, 0x40, 0x00, 0x80, // status
      0xab, // ictransaction_id
      0x05, // icflags
      0, 0, // reserved
      0xc1, 0xc2, 0xc3,
    ]);
  });

  it('defaults: pipe flags 0, msgsize = length - 8, versions 0.0, status 0, icflags 3', () => {
    const buf = encodeIcMessage({ msgType: ICMSGTYPE_KVPEXCHANGE }, new Uint8Array(12));
    expect(buf.length).toBe(40);
    // prettier-ignore
    expect([...buf.subarray(0, 28)]).toEqual([
      0, 0, 0, 0, 32, 0, 0, 0, // pipe flags 0, msgsize 32
      0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 12, 0, // icverframe 0.0, icmsgtype 2, icvermsg 0.0, icmsgsize 12
      0, 0, 0, 0, 0, 3, 0, 0, // status 0, ictransaction_id 0, icflags 3, reserved
    ]);
    expect(encodeIcMessage({ msgType: 0 }).length).toBe(28);
  });

  it('accepts a negative int32 status as its bit pattern and rejects values that do not fit', () => {
    expect(encodeIcMessage({ msgType: 0, status: -2147467259 }).readUInt32LE(20)).toBe(0x80004005);
    expect(() => encodeIcMessage({ msgType: 0x10000 })).toThrow(RangeError);
    expect(() => encodeIcMessage({ msgType: 0, flags: 256 })).toThrow(RangeError);
    expect(() => encodeIcMessage({ msgType: 0, transactionId: -1 })).toThrow(RangeError);
    expect(() => encodeIcMessage({ msgType: 0, status: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeIcMessage({ msgType: 0 }, new Uint8Array(0x10000))).toThrow(RangeError);
  });
});

describe('decodeIcHeader', () => {
  it('reads back every field it was given', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    fc.assert(
      fc.property(
        fc.record({
          msgType: u16,
          status: fc.integer({ min: 0, max: 0xffffffff }),
          flags: fc.integer({ min: 0, max: 0xff }),
          frameVersion: fc.record({ major: u16, minor: u16 }),
          msgVersion: fc.record({ major: u16, minor: u16 }),
          transactionId: fc.integer({ min: 0, max: 0xff }),
        }),
        fc.uint8Array({ maxLength: 100 }),
        (opts, body) => {
          const buf = encodeIcMessage(opts, body);
          expect(decodeIcHeader(buf)).toEqual({
            ok: true,
            value: { ...opts, pipeFlags: 0, pipeMsgSize: buf.length - 8, msgSize: body.length, reserved: 0 },
          });
        },
      ),
    );
  });

  it('reads from a view with a non-zero byteOffset', () => {
    const outer = new Uint8Array(40);
    outer.set(encodeIcMessage({ msgType: ICMSGTYPE_VSS, status: 7 }), 8);
    const r = decodeIcHeader(outer.subarray(8, 36));
    expect(r.ok && r.value.msgType).toBe(ICMSGTYPE_VSS);
    expect(r.ok && r.value.status).toBe(7);
  });

  it('returns too-short for every length below 28, without throwing', () => {
    for (let n = 0; n < 28; n++) {
      const r = decodeIcHeader(new Uint8Array(n));
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe('too-short');
    }
    expect(decodeIcHeader(new Uint8Array(28)).ok).toBe(true);
  });
});

describe('in-place setters', () => {
  it('write status @20, icflags @25, icmsgsize @18 and nothing else', () => {
    const payload = Buffer.alloc(32, 0xee);
    setIcStatus(payload, 0x80004005);
    setIcFlags(payload, 5);
    setIcMsgSize(payload, 16);
    const expected = Buffer.alloc(32, 0xee);
    expected.set([16, 0], 18);
    expected.set([0x05, 0x40, 0x00, 0x80], 20);
    expected[25] = 5;
    expect(payload).toEqual(expected);
    setIcStatus(payload, -1);
    expect(payload.readUInt32LE(20)).toBe(0xffffffff);
  });

  it('refuse payloads without a complete header and out-of-range values', () => {
    expect(() => setIcStatus(new Uint8Array(27), 0)).toThrow(RangeError);
    expect(() => setIcFlags(new Uint8Array(27), 5)).toThrow(RangeError);
    expect(() => setIcMsgSize(new Uint8Array(27), 16)).toThrow(RangeError);
    expect(() => setIcFlags(new Uint8Array(28), 256)).toThrow(RangeError);
    expect(() => setIcMsgSize(new Uint8Array(28), 0x10000)).toThrow(RangeError);
  });
});
