import { describe, expect, it } from 'vitest';
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  CREATE_PATH,
  HV_E_FAIL,
  OVER_WRITE,
  START_FILE_COPY,
  VSS_OP_FREEZE,
  VSS_OP_HOT_BACKUP,
  WRITE_TO_FILE,
} from '../../uapi/constants.js';
import {
  decodeFcopyDeviceMessage,
  decodeFcopyInt,
  decodeFcopyMessage,
  encodeFcopyInt,
  encodeFcopyMessage,
  encodeFcopyRegister,
} from '../../uapi/fcopy.js';
import {
  decodeVssMessage,
  decodeVssReply,
  encodeVssRegister,
  encodeVssRegistrationReply,
  encodeVssReply,
  encodeVssRequest,
} from '../../uapi/vss.js';

describe('struct hv_vss_msg', () => {
  it('request: operation byte @0, flags @8, 12 bytes', () => {
    const buf = encodeVssRequest(VSS_OP_FREEZE);
    expect([...buf]).toEqual([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(decodeVssMessage(buf)).toEqual({ ok: true, value: { kind: 'request', operation: 5, flags: 0 } });
  });

  it('registration: 12 bytes with 129, answered by a 4-byte 129', () => {
    expect([...encodeVssRegister()]).toEqual([129, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect([...encodeVssRegistrationReply()]).toEqual([129, 0, 0, 0]);
    expect(decodeVssMessage(encodeVssRegistrationReply())).toEqual({
      ok: true,
      value: { kind: 'registered', version: 129 },
    });
  });

  it('reply: the status overlays the operation byte', () => {
    const buf = encodeVssReply({ error: HV_E_FAIL, flags: 5 });
    expect([...buf]).toEqual([0x05, 0x40, 0x00, 0x80, 0, 0, 0, 0, 5, 0, 0, 0]);
    expect(decodeVssReply(buf)).toEqual({ ok: true, value: { error: HV_E_FAIL, flags: 5 } });
  });

  it('wrong lengths and unknown operations are typed errors', () => {
    expect(decodeVssMessage(Buffer.alloc(11))).toMatchObject({ ok: false, error: { code: 'too-short' } });
    expect(decodeVssMessage(Buffer.alloc(13))).toMatchObject({ ok: false, error: { code: 'bad-length' } });
    expect(decodeVssMessage(encodeVssRequest(8))).toMatchObject({
      ok: false,
      error: { code: 'unknown-operation', operation: 8 },
    });
    expect(decodeVssReply(Buffer.alloc(4))).toMatchObject({ ok: false, error: { code: 'too-short' } });
  });

  it('HOT_BACKUP is a known operation', () => {
    expect(decodeVssMessage(encodeVssRequest(VSS_OP_HOT_BACKUP))).toMatchObject({ ok: true });
  });
});

describe('fcopy messages', () => {
  it('START (device format): names UTF-8 @36 and @556, flags @1076, size @1080, 1088 bytes', () => {
    const buf = encodeFcopyMessage({
      operation: START_FILE_COPY,
      fileName: 'ñame.txt',
      pathName: '/tmp/dir',
      copyFlags: OVER_WRITE | CREATE_PATH,
      fileSize: 0x1_0000_0001n,
    });
    expect(buf.length).toBe(1088);
    expect(buf.readUInt32LE(0)).toBe(0);
    expect(buf.subarray(36, 45).toString('utf8')).toBe('ñame.txt');
    expect(buf[45]).toBe(0);
    expect(buf.subarray(556, 564).toString('utf8')).toBe('/tmp/dir');
    expect(buf.readUInt32LE(1076)).toBe(3);
    expect(buf.readBigUInt64LE(1080)).toBe(0x1_0000_0001n);
  });

  it('START (host format): UTF-16LE names', () => {
    const buf = encodeFcopyMessage(
      { operation: START_FILE_COPY, fileName: 'a', pathName: 'C', copyFlags: 0, fileSize: 0n },
      'utf16le',
    );
    expect([...buf.subarray(36, 40)]).toEqual([0x61, 0, 0, 0]);
    expect([...buf.subarray(556, 560)]).toEqual([0x43, 0, 0, 0]);
    expect(decodeFcopyMessage(buf, 'utf16le')).toMatchObject({
      ok: true,
      value: { fileName: 'a', pathName: 'C' },
    });
  });

  it('WRITE: offset @40, size @48, data @52, 6196 bytes', () => {
    const buf = encodeFcopyMessage({ operation: WRITE_TO_FILE, offset: 6144n, data: Buffer.from('xyz') });
    expect(buf.length).toBe(6196);
    expect(buf.readUInt32LE(0)).toBe(1);
    expect(buf.readBigUInt64LE(40)).toBe(6144n);
    expect(buf.readUInt32LE(48)).toBe(3);
    expect(buf.subarray(52, 55).toString()).toBe('xyz');
    const r = decodeFcopyMessage(buf);
    expect(r.ok && r.value.operation === WRITE_TO_FILE && Buffer.from(r.value.data).toString()).toBe('xyz');
  });

  it('WRITE with size above DATA_FRAGMENT is refused', () => {
    const buf = encodeFcopyMessage({ operation: WRITE_TO_FILE, offset: 0n, data: Buffer.alloc(1) });
    buf.writeUInt32LE(6145, 48);
    expect(decodeFcopyMessage(buf)).toMatchObject({
      ok: false,
      error: { code: 'invalid-field', field: 'size' },
    });
  });

  it('COMPLETE and CANCEL: the 36-byte header, and longer host-length messages', () => {
    expect([...encodeFcopyMessage({ operation: CANCEL_FCOPY })]).toEqual([3, ...new Array(35).fill(0)]);
    const long = Buffer.concat([encodeFcopyMessage({ operation: COMPLETE_FCOPY }), Buffer.alloc(56, 0xaa)]);
    expect(decodeFcopyMessage(long)).toEqual({ ok: true, value: { operation: COMPLETE_FCOPY } });
  });

  it('4-byte ints: registration, the version reply, reply status', () => {
    expect([...encodeFcopyRegister()]).toEqual([1, 0, 0, 0]);
    expect(decodeFcopyDeviceMessage(encodeFcopyInt(1))).toEqual({
      ok: true,
      value: { kind: 'registered', version: 1 },
    });
    expect(decodeFcopyInt(encodeFcopyInt(HV_E_FAIL))).toEqual({ ok: true, value: HV_E_FAIL });
    expect(decodeFcopyInt(Buffer.alloc(8))).toMatchObject({ ok: false, error: { code: 'bad-length' } });
  });

  it('short and unknown messages are typed errors', () => {
    expect(decodeFcopyMessage(Buffer.alloc(35))).toMatchObject({ ok: false, error: { code: 'too-short' } });
    const start = encodeFcopyMessage({
      operation: START_FILE_COPY,
      fileName: 'a',
      pathName: '/',
      copyFlags: 0,
      fileSize: 0n,
    });
    expect(decodeFcopyMessage(start.subarray(0, 1000))).toMatchObject({
      ok: false,
      error: { code: 'too-short', operation: 0 },
    });
    expect(decodeFcopyMessage(encodeFcopyMessage({ operation: 9 as 2 }))).toMatchObject({
      ok: false,
      error: { code: 'unknown-operation', operation: 9 },
    });
  });
});
