/** The VSS and FCOPY transition tables (kernel-protocol.md §2.6) and their message formats. */
import { describe, expect, it } from 'vitest';
import {
  CANCEL_FCOPY,
  COMPLETE_FCOPY,
  CREATE_PATH,
  HV_E_FAIL,
  HV_ERROR_ALREADY_EXISTS,
  HV_S_OK,
  OVER_WRITE,
  START_FILE_COPY,
  VSS_HBU_NO_AUTO_RECOVERY,
  VSS_OP_CREATE,
  VSS_OP_FREEZE,
  VSS_OP_HOT_BACKUP,
  VSS_OP_REGISTER,
  VSS_OP_THAW,
  WRITE_TO_FILE,
} from '../../uapi/constants.js';
import { decodeFcopyDeviceMessage, decodeFcopyMessage, encodeFcopyInt } from '../../uapi/fcopy.js';
import { decodeVssMessage, encodeVssRegister, encodeVssReply, encodeVssRequest } from '../../uapi/vss.js';
import { encodeKvpRegister } from '../../uapi/kvp.js';
import { ICMSGTYPE_VSS, encodeIcMessage } from '../../kernel-shim/channel/icmsg.js';
import {
  HVUTIL_DEVICE_DYING,
  HVUTIL_DEVICE_INIT,
  HVUTIL_READY,
  HVUTIL_USERSPACE_REQ,
} from '../../kernel-shim/drivers/util.js';
import type { TransportFile } from '../../kernel-shim/transport.js';
import { flush, tracedShim, watch } from './support.js';

async function vssRegister(f: TransportFile): Promise<void> {
  f.write(encodeVssRegister());
  const r = await f.read(12);
  expect([...r]).toEqual([129, 0, 0, 0]);
}

describe('VSS', () => {
  it('NEGOTIATE is answered even with no daemon; FREEZE/THAW/HOT_BACKUP then fail with HV_E_FAIL', async () => {
    const { shim } = tracedShim(['vss']);
    const n = await shim.host.vss.ic.negotiate();
    expect(n).toMatchObject({ accepted: true, fwVersion: 0x30000, srvVersion: 0x50000 });
    expect((await shim.host.vss.freeze()).status).toBe(HV_E_FAIL);
    expect((await shim.host.vss.hotBackupCheck()).status).toBe(HV_E_FAIL);
  });

  it('GET_DM_INFO and the operations Linux does not implement are answered by the kernel', async () => {
    const { shim } = tracedShim(['vss']);
    expect(await shim.host.vss.getDmInfo()).toMatchObject({ status: HV_S_OK, flags: 0 });
    expect(await shim.host.vss.request(VSS_OP_CREATE, 7)).toMatchObject({ status: HV_S_OK, flags: 7 });
  });

  it('registration: a 4-byte 129 reply; READY when it is read; FREEZE reaches the daemon as 12 bytes', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    f.write(encodeVssRegister());
    await flush();
    expect(shim.device('vss').driver.state).toBe(HVUTIL_DEVICE_INIT);
    await f.read(12);
    await flush();
    expect(shim.device('vss').driver.state).toBe(HVUTIL_READY);
    const r = watch(shim.host.vss.freeze());
    const msg = await f.read(12);
    expect([...msg]).toEqual([VSS_OP_FREEZE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(shim.device('vss').driver.state).toBe(HVUTIL_USERSPACE_REQ);
    f.write(encodeVssReply({ error: HV_S_OK, flags: 0 }));
    await flush();
    expect(r.value?.status).toBe(HV_S_OK);
  });

  it('writes must be exactly 12 bytes; registration while a request is outstanding is EINVAL', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    expect(() => f.write(Buffer.alloc(11))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    await vssRegister(f);
    void shim.host.vss.thaw();
    await f.read(12);
    expect(() => f.write(encodeVssRegister())).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('a reply whose status low byte is 0x81 is taken for a registration (the overlay pitfall)', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssRegister(f);
    void shim.host.vss.thaw();
    await f.read(12);
    expect(() => f.write(encodeVssReply({ error: 0x80000081, flags: 0 }))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
  });

  it('HOT_BACKUP: the flags become VSS_HBU_NO_AUTO_RECOVERY only when the reply low byte is 2', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssRegister(f);
    const a = watch(shim.host.vss.hotBackupCheck(0x10));
    await f.read(12);
    f.write(encodeVssReply({ error: 0, flags: 0 })); // upstream: status 0 in the operation byte
    await flush();
    expect(a.value).toMatchObject({ status: HV_S_OK, flags: 0x10 });
    const b = watch(shim.host.vss.hotBackupCheck(0x10));
    await f.read(12);
    f.write(encodeVssReply({ error: VSS_OP_HOT_BACKUP, flags: 0 }));
    await flush();
    expect(b.value).toMatchObject({ status: VSS_OP_HOT_BACKUP, flags: VSS_HBU_NO_AUTO_RECOVERY });
  });

  it('FREEZE times out after 900 s, THAW after 30 s', async () => {
    const { shim, clock } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssRegister(f);
    const freeze = watch(shim.host.vss.freeze());
    await f.read(12);
    clock.advance(899_999);
    await flush();
    expect(freeze.settled).toBe(false);
    clock.advance(1);
    await flush();
    expect(freeze.value?.status).toBe(HV_E_FAIL);
    const thaw = watch(shim.host.vss.thaw());
    await f.read(12);
    clock.advance(30_000);
    await flush();
    expect(thaw.value?.status).toBe(HV_E_FAIL);
  });

  it('legacy VSS_OP_REGISTER is accepted but does not make the driver READY', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    expect(f.write(encodeVssRegister(VSS_OP_REGISTER))).toBe(12);
    await flush();
    expect(f.poll()).toBe(0); // nothing sent back
    expect((await shim.host.vss.freeze()).status).toBe(HV_E_FAIL);
    // ... until a request the kernel answers itself polls the channel into READY:
    expect((await shim.host.vss.getDmInfo()).status).toBe(HV_S_OK);
    const r = watch(shim.host.vss.thaw());
    expect(decodeVssMessage(await f.read(12))).toMatchObject({ ok: true, value: { operation: VSS_OP_THAW } });
    f.write(encodeVssReply({ error: 0, flags: 0 }));
    await flush();
    expect(r.value?.status).toBe(HV_S_OK);
  });

  it('a daemon that closes mid-transaction: HV_E_FAIL, back to INIT', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssRegister(f);
    const r = watch(shim.host.vss.freeze());
    await f.read(12);
    f.close();
    await flush();
    expect(r.value?.status).toBe(HV_E_FAIL);
    expect(shim.device('vss').driver.state).toBe(HVUTIL_DEVICE_INIT);
  });
});

async function fcopyRegister(f: TransportFile): Promise<void> {
  f.write(encodeFcopyInt(1));
  expect(decodeFcopyDeviceMessage(await f.read(8192))).toEqual({
    ok: true,
    value: { kind: 'registered', version: 1 },
  });
}

describe('FCOPY', () => {
  it('with no daemon: NEGOTIATE answered, START failed at once with HV_E_FAIL', async () => {
    const { shim } = tracedShim(['fcopy']);
    expect(await shim.host.fcopy.ic.negotiate()).toMatchObject({
      accepted: true,
      fwVersion: 0x30000,
      srvVersion: 0x10001,
    });
    expect((await shim.host.fcopy.start('/tmp', 'x', 0n)).status).toBe(HV_E_FAIL);
  });

  it('START: names converted to UTF-8 (≤ 259 bytes), flags and size copied, 1088 bytes', async () => {
    const { shim } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    await fcopyRegister(f);
    const r = watch(
      shim.host.fcopy.start('/tmp/ünïcode', 'naïve 😀.txt', 123n, { overwrite: true, createPath: true }),
    );
    const raw = await f.read(8192);
    expect(raw.length).toBe(1088);
    expect(decodeFcopyMessage(raw)).toEqual({
      ok: true,
      value: {
        operation: START_FILE_COPY,
        fileName: 'naïve 😀.txt',
        pathName: '/tmp/ünïcode',
        copyFlags: OVER_WRITE | CREATE_PATH,
        fileSize: 123n,
      },
    });
    f.write(encodeFcopyInt(HV_ERROR_ALREADY_EXISTS));
    await flush();
    expect(r.value?.status).toBe(HV_ERROR_ALREADY_EXISTS);
  });

  it('START: a 260-unit name is cut to 259 UTF-8 bytes at a character boundary', async () => {
    const { shim } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    await fcopyRegister(f);
    void shim.host.fcopy.start('/', 'é'.repeat(200), 0n);
    const m = decodeFcopyMessage(await f.read(8192));
    expect(m.ok && m.value.operation === START_FILE_COPY && m.value.fileName).toBe('é'.repeat(129));
  });

  it('WRITE is relayed as 6196 bytes; COMPLETE/CANCEL with the host packet length (64)', async () => {
    const { shim } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    await fcopyRegister(f);
    void shim.host.fcopy.write(6144n, Buffer.from('data'));
    const w = await f.read(8192);
    expect(w.length).toBe(6196);
    expect(decodeFcopyMessage(w)).toMatchObject({
      ok: true,
      value: { operation: WRITE_TO_FILE, offset: 6144n },
    });
    f.write(encodeFcopyInt(0));
    await flush();
    void shim.host.fcopy.complete();
    const c = await f.read(8192);
    expect(c.length).toBe(64);
    expect(c.readUInt32LE(0)).toBe(COMPLETE_FCOPY);
    // the 28 bytes after the 36-byte header are stale receive-buffer bytes (here: the WRITE's)
    expect(c.subarray(36, 64).equals(w.subarray(36, 64))).toBe(true);
    f.write(encodeFcopyInt(0));
    await flush();
    void shim.host.fcopy.cancel();
    expect((await f.read(8192)).readUInt32LE(0)).toBe(CANCEL_FCOPY);
  });

  it('writes must be 4 bytes; version 0 is accepted but never READY; other versions EINVAL', async () => {
    const { shim } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    expect(() => f.write(Buffer.alloc(8))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => f.write(encodeFcopyInt(2))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(f.write(encodeFcopyInt(0))).toBe(4);
    await flush();
    expect(shim.device('fcopy').driver.state).toBe(HVUTIL_DEVICE_INIT);
    expect((await shim.host.fcopy.start('/', 'x', 0n)).status).toBe(HV_E_FAIL);
  });

  it('a reply when nothing was asked is EINVAL; a 30 s stall gives the host HV_E_FAIL', async () => {
    const { shim, clock } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    await fcopyRegister(f);
    await flush();
    expect(() => f.write(encodeFcopyInt(0))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const r = watch(shim.host.fcopy.start('/', 'x', 0n));
    await f.read(8192);
    clock.advance(30_000);
    await flush();
    expect(r.value?.status).toBe(HV_E_FAIL);
    expect(() => f.write(encodeFcopyInt(0))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('rows common to the drivers', () => {
  it('> READY: a host packet is not read until the transaction ends (VSS)', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssRegister(f);
    const freeze = watch(shim.host.vss.freeze());
    await f.read(12);
    const channel = shim.device('vss').channel;
    if (!channel) throw new Error('no channel');
    // A second request straight into the ring (the host client would have waited).
    channel.hostSend(encodeIcMessage({ msgType: ICMSGTYPE_VSS }, encodeVssRequest(3)), 999n);
    await flush();
    expect(channel.inbound.readable()).toBeGreaterThan(0);
    f.write(encodeVssReply({ error: 0, flags: 0 }));
    await flush();
    expect(freeze.value?.status).toBe(HV_S_OK);
    expect(channel.inbound.readable()).toBe(0); // polled after the transaction: taken and answered
  });

  it('KVP drops short and unknown-type packets without a reply', async () => {
    const t = tracedShim(['kvp']);
    const f = t.shim.open('kvp');
    f.write(encodeKvpRegister());
    await f.read(7432);
    await flush();
    for (const payload of [Buffer.alloc(16), encodeIcMessage({ msgType: 6 }, Buffer.alloc(8))]) {
      const r = watch(t.shim.host.kvp.ic.sendRaw(payload, 'raw', { timeoutMs: 1000 }));
      await flush();
      t.clock.advance(1000);
      await flush();
      expect(r.error).toBeDefined();
    }
    expect(t.events.filter((e) => e.event.type === 'drop')).toHaveLength(2);
    expect(t.replies('kvp')).toEqual([]);
  });

  it('FCOPY close mid-transaction: INIT first, then HV_E_FAIL to the host', async () => {
    const { shim, events } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    await fcopyRegister(f);
    const r = watch(shim.host.fcopy.start('/tmp', 'x', 1n));
    await f.read(8192);
    f.close();
    await flush();
    expect(r.value?.status).toBe(HV_E_FAIL);
    const last = events
      .filter((e) => e.event.type === 'state' || e.event.type === 'reply')
      .slice(-2)
      .map((e) => e.event.type);
    expect(last).toEqual(['state', 'reply']);
    expect(shim.device('fcopy').driver.state).toBe(HVUTIL_DEVICE_INIT);
  });

  it('remove (rescind): the driver goes to DYING', async () => {
    const { shim } = tracedShim(['fcopy']);
    await shim.device('fcopy').rescind();
    expect(shim.device('fcopy').driver.state).toBe(HVUTIL_DEVICE_DYING);
  });
});
