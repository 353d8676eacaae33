/** The KVP driver's transition table (kernel-protocol.md §2.6) and its conversions (§3.4.4-5). */
import { describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_GET_IP_INFO,
  KVP_OP_REGISTER,
  KVP_OP_SET,
  KVP_OP_SET_IP_INFO,
  REG_U32,
  REG_U64,
} from '../../uapi/constants.js';
import {
  KVP_MSG_SIZE,
  decodeKvpRequest,
  encodeKvpRegister,
  encodeKvpReply,
  type KvpRequest,
} from '../../uapi/kvp.js';
import { HVUTIL_DEVICE_INIT, HVUTIL_READY, HVUTIL_USERSPACE_REQ } from '../../kernel-shim/drivers/util.js';
import { HostTimeoutError } from '../../kernel-shim/host/ic-client.js';
import type { TransportFile } from '../../kernel-shim/transport.js';
import { flush, tracedShim, watch } from './support.js';

async function register(file: TransportFile, op = 100): Promise<void> {
  file.write(encodeKvpRegister(op));
  const reply = decodeKvpRequest(await file.read(KVP_MSG_SIZE));
  expect(reply).toMatchObject({ ok: true, value: { operation: op === 4 ? KVP_OP_GET_IP_INFO : 100 } });
}

async function next(file: TransportFile): Promise<KvpRequest> {
  const r = decodeKvpRequest(await file.read(KVP_MSG_SIZE));
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
}

describe('KVP registration', () => {
  it('INIT: host packets are not read, the 55 s work re-runs the callback, READY only once the reply is read', async () => {
    const { shim, clock } = tracedShim(['kvp']);
    const driver = shim.device('kvp').driver;
    const negotiate = watch(shim.host.kvp.ic.negotiate());
    await flush();
    expect(negotiate.settled).toBe(false);
    expect(shim.device('kvp').channel?.inbound.readable()).toBeGreaterThan(0);
    clock.advance(55_000); // the handshake work runs the callback again: still nothing read
    await flush();
    expect(negotiate.settled).toBe(false);
    const f = shim.open('kvp');
    f.write(encodeKvpRegister());
    await flush();
    expect(driver.state).toBe(HVUTIL_DEVICE_INIT); // queued, not yet read
    await f.read(KVP_MSG_SIZE);
    await flush();
    expect(driver.state).toBe(HVUTIL_READY);
    expect(negotiate.value).toMatchObject({ accepted: true, fwVersion: 0x30000, srvVersion: 0x40000 });
  });

  it('the registration reply is operation 100 with version "3.1"', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    f.write(encodeKvpRegister());
    expect(await next(f)).toEqual({ operation: 100, pool: 0, version: '3.1' });
  });

  it('INIT: a short write or another first byte is EINVAL', () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    expect(() => f.write(Buffer.alloc(KVP_MSG_SIZE - 1, 100))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    const bad = Buffer.alloc(KVP_MSG_SIZE);
    bad[0] = 7;
    expect(() => f.write(bad)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('a second registration before the first reply is read fails with EFAULT (the reply is still queued)', () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    f.write(encodeKvpRegister());
    expect(() => f.write(encodeKvpRegister())).toThrow(expect.objectContaining({ code: 'EFAULT' }));
  });

  it('older kernels: the same second registration succeeds (queuing error not returned)', () => {
    const { shim } = tracedShim(['kvp'], { kvp: { registrationReturnsQueueError: false } });
    const f = shim.open('kvp');
    f.write(encodeKvpRegister());
    expect(f.write(encodeKvpRegister())).toBe(KVP_MSG_SIZE);
  });

  it('READY: a registration or any reply is EINVAL (nothing was asked)', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    await flush();
    expect(() => f.write(encodeKvpRegister())).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => f.write(encodeKvpReply({ operation: 1, error: 0 }))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
  });
});

describe('KVP transactions', () => {
  it('SET: UTF-16LE key/value arrive as UTF-8 with sizes counting the NUL; the error word is the host status', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.addItem('Kéy😀', 'välue'));
    const req = await next(f);
    expect(req).toEqual({ operation: KVP_OP_SET, pool: 0, key: 'Kéy😀', value: 'välue', valueType: 0 });
    f.write(encodeKvpReply({ operation: KVP_OP_SET, error: HV_S_CONT }));
    await flush();
    expect(r.value).toMatchObject({ status: HV_S_CONT });
  });

  it('SET: key_size/value_size in the daemon message are UTF-8 bytes + 1', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    void shim.host.kvp.addItem('ké', 'välue');
    const raw = await f.read(KVP_MSG_SIZE);
    expect(raw.readUInt32LE(8)).toBe(4); // 'ké' = 3 bytes + NUL
    expect(raw.readUInt32LE(12)).toBe(7); // 'välue' = 6 bytes + NUL
    expect(raw.readUInt32LE(4)).toBe(0); // value_type is not passed on
  });

  it('SET: REG_U32 and REG_U64 values arrive as unsigned decimal text', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    void shim.host.kvp.addItem('n', '4294967295', { valueType: REG_U32 });
    expect(await next(f)).toMatchObject({ value: '4294967295' });
    f.write(encodeKvpReply({ operation: KVP_OP_SET, error: 0 }));
    void shim.host.kvp.addItem('n', '18446744073709551615', { valueType: REG_U64 });
    expect(await next(f)).toMatchObject({ value: '18446744073709551615' });
  });

  it('ENUMERATE: the daemon key @20/value @532 reach the host as UTF-16LE', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.enumerate(2, 5));
    expect(await next(f)).toEqual({ operation: KVP_OP_ENUMERATE, pool: 2, index: 5 });
    f.write(
      encodeKvpReply({ operation: KVP_OP_ENUMERATE, error: 0, key: 'OSName', value: 'Debian GNU/Linux' }),
    );
    await flush();
    expect(r.value).toMatchObject({ status: HV_S_OK, key: 'OSName', value: 'Debian GNU/Linux' });
  });

  it('GET: the kernel reads the value at the enumerate offset 532, not at the get offset 528', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const a = watch(shim.host.kvp.getItem('k'));
    await next(f);
    const reply = Buffer.alloc(KVP_MSG_SIZE);
    reply.write('abcdefgh', 528); // where a daemon following the GET layout would put it
    f.write(reply);
    await flush();
    expect(a.value).toMatchObject({ status: HV_S_OK, value: 'efgh' }); // read from 532 on
    const b = watch(shim.host.kvp.getItem('k'));
    await next(f);
    f.write(encodeKvpReply({ operation: KVP_OP_GET, error: 0, key: 'k', value: 'at532' }));
    await flush();
    expect(b.value).toMatchObject({ status: HV_S_OK, value: 'at532' });
  });

  it('invalid UTF-8 in a reply fails the request with HV_E_FAIL', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.enumerate(0, 0));
    await next(f);
    const reply = encodeKvpReply({ operation: KVP_OP_ENUMERATE, error: 0, key: 'k', value: 'v' });
    reply[532] = 0xc0; // overlong lead byte
    reply[533] = 0x80;
    f.write(reply);
    await flush();
    expect(r.value).toMatchObject({ status: HV_E_FAIL });
  });

  it('ENUMERATE: the kernel cuts keys at 254 and values at 1022 UTF-16 units', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.enumerate(0, 0));
    await next(f);
    f.write(
      encodeKvpReply({
        operation: KVP_OP_ENUMERATE,
        error: 0,
        key: 'k'.repeat(511),
        value: 'v'.repeat(2047),
      }),
    );
    await flush();
    expect(r.value?.key.length).toBe(254);
    expect(r.value?.value.length).toBe(1022);
  });

  it('IP info both ways: host UTF-16 adapter id and addresses arrive as UTF-8; the reply goes back as UTF-16', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const ip = {
      adapterId: '{4b1c2d3e-aaaa-bbbb-cccc-0123456789ab}',
      addrFamily: 1,
      dhcpEnabled: 1,
      ipAddr: '192.168.1.10;fd00::10',
      subNet: '255.255.255.0;64',
      gateWay: '192.168.1.1',
      dnsAddr: '8.8.8.8',
    };
    const set = watch(shim.host.kvp.setIpConfiguration(ip));
    expect(await next(f)).toEqual({ operation: KVP_OP_SET_IP_INFO, pool: 0, ip });
    f.write(encodeKvpReply({ operation: KVP_OP_SET_IP_INFO, error: 0 }));
    await flush();
    expect(set.value).toMatchObject({ status: HV_S_OK });
    const get = watch(shim.host.kvp.getIpConfiguration('00:15:5D:01:02:03', 3));
    const req = await next(f);
    // GET_IP_INFO carries only the adapter id and the family
    expect(req).toEqual({
      operation: KVP_OP_GET_IP_INFO,
      pool: 0,
      ip: {
        adapterId: '00:15:5D:01:02:03',
        addrFamily: 3,
        dhcpEnabled: 0,
        ipAddr: '',
        subNet: '',
        gateWay: '',
        dnsAddr: '',
      },
    });
    const answer = { ...ip, adapterId: '00:15:5D:01:02:03', addrFamily: 3 };
    f.write(encodeKvpReply({ operation: KVP_OP_GET_IP_INFO, error: 0, ip: answer }));
    await flush();
    expect(get.value).toMatchObject({ status: HV_S_OK, ip: answer });
  });

  it('legacy KVP_OP_REGISTER daemons: the status is HV_S_CONT when the key at offset 20 is empty', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    f.write(encodeKvpRegister(KVP_OP_REGISTER));
    await f.read(KVP_MSG_SIZE);
    const a = watch(shim.host.kvp.enumerate(0, 0));
    await next(f);
    f.write(Buffer.alloc(KVP_MSG_SIZE)); // error word ignored; key[0] == 0
    await flush();
    expect(a.value?.status).toBe(HV_S_CONT);
    const b = watch(shim.host.kvp.enumerate(0, 0));
    await next(f);
    const reply = encodeKvpReply({ operation: KVP_OP_ENUMERATE, error: HV_E_FAIL });
    reply.write('k', 20);
    f.write(reply);
    await flush();
    expect(b.value?.status).toBe(HV_S_OK);
  });
});

describe('KVP timeouts, closes and late replies', () => {
  it('USERSPACE_REQ + 30 s: the host gets HV_E_FAIL; the late reply then fails with EINVAL', async () => {
    const { shim, clock } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.addItem('k', 'v'));
    await next(f);
    expect(shim.device('kvp').driver.state).toBe(HVUTIL_USERSPACE_REQ);
    clock.advance(29_999);
    await flush();
    expect(r.settled).toBe(false);
    clock.advance(1);
    await flush();
    expect(r.value).toMatchObject({ status: HV_E_FAIL });
    expect(() => f.write(encodeKvpReply({ operation: KVP_OP_SET, error: 0 }))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
  });

  it('a stale unread request makes the next one fail at once (EFAULT at queue time)', async () => {
    const { shim, clock, events } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const a = watch(shim.host.kvp.getItem('a'));
    await flush();
    clock.advance(30_000);
    await flush();
    expect(a.value).toMatchObject({ status: HV_E_FAIL });
    const b = watch(shim.host.kvp.getItem('b'));
    await flush();
    expect(b.value).toMatchObject({ status: HV_E_FAIL });
    expect(events.some((e) => e.event.type === 'queue' && e.event.rc === -14)).toBe(true);
    expect(await next(f)).toMatchObject({ operation: KVP_OP_GET, key: 'a' }); // the stale one
  });

  it('no correlation id: a late reply to A answers the next request B', async () => {
    const { shim, clock } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const a = watch(shim.host.kvp.getItem('a'));
    expect(await next(f)).toMatchObject({ key: 'a' });
    clock.advance(30_000);
    await flush();
    expect(a.value).toMatchObject({ status: HV_E_FAIL });
    const b = watch(shim.host.kvp.getItem('b'));
    expect(await next(f)).toMatchObject({ key: 'b' });
    f.write(encodeKvpReply({ operation: KVP_OP_GET, error: 0, key: 'a', value: 'the value of a' })); // late, for A
    await flush();
    expect(b.value).toMatchObject({ status: HV_S_OK, value: 'the value of a' });
  });

  it('a daemon that closes mid-transaction: the host gets HV_E_FAIL at once, the driver is back to INIT', async () => {
    const { shim } = tracedShim(['kvp']);
    const f = shim.open('kvp');
    await register(f);
    const r = watch(shim.host.kvp.addItem('k', 'v'));
    await next(f);
    f.close();
    await flush();
    expect(r.value).toMatchObject({ status: HV_E_FAIL });
    expect(shim.device('kvp').driver.state).toBe(HVUTIL_DEVICE_INIT);
  });

  it('the host gives up after its own timeout when nothing answers', async () => {
    const { shim, clock } = tracedShim(['kvp'], { hostTimeoutMs: 5_000 });
    const r = shim.host.kvp.addItem('k', 'v');
    await flush();
    clock.advance(5_000);
    await expect(r).rejects.toBeInstanceOf(HostTimeoutError);
  });
});
