/**
 * struct hv_kvp_msg byte tables. Expected offsets are written out here as literals from the kernel
 * reference (kernel-protocol.md §3.4), independently of uapi/layout.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_CONT,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER1,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  REG_SZ,
  REG_U32,
  REG_U64,
} from '../../uapi/constants.js';
import {
  KVP_MSG_SIZE,
  decodeKvpHostMessage,
  decodeKvpReply,
  decodeKvpRequest,
  encodeKvpHostMessage,
  encodeKvpRegister,
  encodeKvpReply,
  encodeKvpRequest,
} from '../../uapi/kvp.js';

const cstr = (buf: Buffer, at: number) => buf.subarray(at, buf.indexOf(0, at)).toString('utf8');

describe('device format requests (kernel -> daemon)', () => {
  it('SET: header, sizes including the NUL, key @16, value @528', () => {
    const buf = encodeKvpRequest({
      operation: KVP_OP_SET,
      pool: 1,
      key: 'Key',
      value: 'välue',
      valueType: 0,
    });
    expect(buf.length).toBe(7432);
    expect([buf[0], buf[1], buf[2], buf[3]]).toEqual([1, 1, 0, 0]);
    expect(buf.readUInt32LE(4)).toBe(0);
    expect(buf.readUInt32LE(8)).toBe(4);
    expect(buf.readUInt32LE(12)).toBe(7); // 'välue' is 6 UTF-8 bytes + NUL
    expect(cstr(buf, 16)).toBe('Key');
    expect(cstr(buf, 528)).toBe('välue');
    expect(buf.subarray(528 + 7, 7432).every((b) => b === 0)).toBe(true);
    expect(decodeKvpRequest(buf)).toEqual({
      ok: true,
      value: { operation: KVP_OP_SET, pool: 1, key: 'Key', value: 'välue', valueType: 0 },
    });
  });

  it('GET: key @16, key_size @8', () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_GET, pool: 0, key: 'abc' });
    expect(buf.readUInt32LE(8)).toBe(4);
    expect(cstr(buf, 16)).toBe('abc');
    expect(buf.readUInt32LE(12)).toBe(0);
  });

  it('DELETE: key_size @4, key @8', () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_DELETE, pool: 3, key: 'gone' });
    expect(buf[0]).toBe(2);
    expect(buf[1]).toBe(3);
    expect(buf.readUInt32LE(4)).toBe(5);
    expect(cstr(buf, 8)).toBe('gone');
  });

  it('ENUMERATE: index @4', () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_ENUMERATE, pool: 2, index: 9 });
    expect(buf.readUInt32LE(4)).toBe(9);
    expect(decodeKvpRequest(buf)).toEqual({ ok: true, value: { operation: 3, pool: 2, index: 9 } });
  });

  it('IP info: adapter_id @4, addr_family @260, dhcp @261, ip @262, subnet @2310, gateway @4358, dns @5382', () => {
    const ip = {
      adapterId: '{aaaa}',
      addrFamily: 3,
      dhcpEnabled: 1,
      ipAddr: '10.0.0.4',
      subNet: '255.255.255.0',
      gateWay: '10.0.0.1;',
      dnsAddr: '168.63.129.16;',
    };
    const buf = encodeKvpRequest({ operation: KVP_OP_SET_IP_INFO, pool: 0, ip });
    expect(cstr(buf, 4)).toBe('{aaaa}');
    expect(buf[260]).toBe(3);
    expect(buf[261]).toBe(1);
    expect(cstr(buf, 262)).toBe('10.0.0.4');
    expect(cstr(buf, 2310)).toBe('255.255.255.0');
    expect(cstr(buf, 4358)).toBe('10.0.0.1;');
    expect(cstr(buf, 5382)).toBe('168.63.129.16;');
    expect(decodeKvpRequest(buf)).toEqual({
      ok: true,
      value: { operation: KVP_OP_SET_IP_INFO, pool: 0, ip },
    });
  });

  it("the kernel's registration reply: operation 100, version string @4", () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_REGISTER1, pool: 0, version: '3.1' });
    expect(buf[0]).toBe(100);
    expect(cstr(buf, 4)).toBe('3.1');
    expect(decodeKvpRequest(buf)).toEqual({ ok: true, value: { operation: 100, pool: 0, version: '3.1' } });
  });

  it('the daemon registration is 7432 bytes with byte 0 = 100 and nothing else', () => {
    const buf = encodeKvpRegister();
    expect(buf.length).toBe(7432);
    expect(buf[0]).toBe(100);
    expect(buf.subarray(1).every((b) => b === 0)).toBe(true);
  });
});

describe('device format decoding errors', () => {
  it('too short', () => {
    const r = decodeKvpRequest(Buffer.alloc(7431));
    expect(r.ok ? null : r.error.code).toBe('too-short');
  });

  it('unknown operation keeps the operation byte for the answer', () => {
    const buf = Buffer.alloc(KVP_MSG_SIZE);
    buf[0] = 77;
    const r = decodeKvpRequest(buf);
    expect(r.ok ? null : r.error).toMatchObject({ code: 'unknown-operation', operation: 77 });
  });

  it('an unterminated key names its field', () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_GET, pool: 0, key: 'x' });
    buf.fill(0x41, 16, 16 + 512);
    const r = decodeKvpRequest(buf);
    expect(r.ok ? null : r.error).toMatchObject({
      code: 'unterminated-string',
      field: 'body.kvp_get.data.key',
    });
  });

  it('invalid UTF-8 in a SET value', () => {
    const buf = encodeKvpRequest({ operation: KVP_OP_SET, pool: 0, key: 'k', value: 'v', valueType: 0 });
    buf[528] = 0xff;
    const r = decodeKvpRequest(buf);
    expect(r.ok ? null : r.error).toMatchObject({ code: 'invalid-utf8', operation: KVP_OP_SET });
  });
});

describe('device format replies (daemon -> kernel)', () => {
  it('error overlays bytes 0..3, little-endian', () => {
    const buf = encodeKvpReply({ operation: KVP_OP_SET, error: HV_S_CONT });
    expect([...buf.subarray(0, 4)]).toEqual([0x03, 0x01, 0x07, 0x80]);
    expect(decodeKvpReply(buf, KVP_OP_SET)).toEqual({ ok: true, value: { operation: 1, error: HV_S_CONT } });
  });

  it('ENUMERATE reply: key @20, value @532, sizes @12/@16, REG_SZ @8', () => {
    const buf = encodeKvpReply({
      operation: KVP_OP_ENUMERATE,
      error: 0,
      key: 'OSName',
      value: 'Debian GNU/Linux',
    });
    expect(buf.readUInt32LE(0)).toBe(0);
    expect(buf.readUInt32LE(8)).toBe(REG_SZ);
    expect(buf.readUInt32LE(12)).toBe(7);
    expect(buf.readUInt32LE(16)).toBe(17);
    expect(cstr(buf, 20)).toBe('OSName');
    expect(cstr(buf, 532)).toBe('Debian GNU/Linux');
  });

  it('GET reply: the value goes where the kernel reads it, @532 (the enumerate layout)', () => {
    const buf = encodeKvpReply({ operation: KVP_OP_GET, error: 0, key: 'k', value: 'the value' });
    expect(cstr(buf, 532)).toBe('the value');
    expect(buf[528]).toBe(0);
    expect(decodeKvpReply(buf, KVP_OP_GET)).toEqual({
      ok: true,
      value: { operation: KVP_OP_GET, error: 0, key: 'k', value: 'the value' },
    });
  });

  it('a failed reply carries no body', () => {
    const buf = encodeKvpReply({ operation: KVP_OP_GET_IP_INFO, error: HV_E_FAIL });
    expect(buf.subarray(4).every((b) => b === 0)).toBe(true);
    expect(decodeKvpReply(buf, KVP_OP_GET_IP_INFO)).toEqual({
      ok: true,
      value: { operation: KVP_OP_GET_IP_INFO, error: HV_E_FAIL },
    });
  });
});

describe('host format (the IC message body)', () => {
  it('SET REG_SZ: UTF-16LE key @16 and value @528, byte sizes incl. the 2-byte terminator', () => {
    const buf = encodeKvpHostMessage({
      operation: KVP_OP_SET,
      pool: 0,
      key: 'ab',
      value: 'é',
      valueType: REG_SZ,
    });
    expect(buf.length).toBe(2576);
    expect(buf.readUInt32LE(4)).toBe(REG_SZ);
    expect(buf.readUInt32LE(8)).toBe(6);
    expect(buf.readUInt32LE(12)).toBe(4);
    expect([...buf.subarray(16, 22)]).toEqual([0x61, 0, 0x62, 0, 0, 0]);
    expect([...buf.subarray(528, 532)]).toEqual([0xe9, 0, 0, 0]);
  });

  it('SET REG_U32 and REG_U64: integers at the value offset', () => {
    const a = encodeKvpHostMessage({
      operation: KVP_OP_SET,
      pool: 0,
      key: 'n',
      value: '4294967295',
      valueType: REG_U32,
    });
    expect(a.readUInt32LE(528)).toBe(0xffffffff);
    expect(a.readUInt32LE(12)).toBe(4);
    const b = encodeKvpHostMessage({
      operation: KVP_OP_SET,
      pool: 0,
      key: 'n',
      value: '18446744073709551615',
      valueType: REG_U64,
    });
    expect(b.readBigUInt64LE(528)).toBe(0xffffffffffffffffn);
    expect(decodeKvpHostMessage(b)).toMatchObject({ ok: true, value: { value: '18446744073709551615' } });
  });

  it('IP operations use struct hv_kvp_ip_msg: adapter_id @2, family @258, ip_addr @260, dns @5380', () => {
    const ip = {
      adapterId: 'AB',
      addrFamily: 1,
      dhcpEnabled: 0,
      ipAddr: '1.2.3.4',
      subNet: '',
      gateWay: '',
      dnsAddr: '9.9.9.9',
    };
    const buf = encodeKvpHostMessage({ operation: KVP_OP_GET_IP_INFO, pool: 0, ip });
    expect(buf.length).toBe(7428);
    expect(buf[0]).toBe(4);
    expect(buf.subarray(2, 6).toString('utf16le')).toBe('AB');
    expect(buf[258]).toBe(1);
    expect(buf.subarray(260, 274).toString('utf16le')).toBe('1.2.3.4');
    expect(buf.subarray(5380, 5394).toString('utf16le')).toBe('9.9.9.9');
    expect(decodeKvpHostMessage(buf)).toEqual({ ok: true, value: { operation: 4, pool: 0, ip } });
  });

  it('a short host message is a typed error', () => {
    const buf = encodeKvpHostMessage({ operation: KVP_OP_DELETE, pool: 0, key: 'k' }).subarray(0, 100);
    expect(decodeKvpHostMessage(buf)).toMatchObject({
      ok: false,
      error: { code: 'too-short', operation: 2 },
    });
  });
});
