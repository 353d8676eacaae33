/**
 * VmbusChannel: two rings in one SharedArrayBuffer (kernel-protocol.md §6.1), guest and host
 * sides, interrupts (§6.5), the guest's reply path (§2.2, §6.6).
 */
import { describe, expect, it } from 'vitest';
import {
  FCOPY_MAX_PKT_SIZE,
  KVP_MAX_PKT_SIZE,
  VSS_MAX_PKT_SIZE,
  VmbusChannel,
} from '../../../kernel-shim/channel/channel.js';
import {
  ICMSGHDRFLAG_GUEST_RESPONSE,
  ICMSGTYPE_NEGOTIATE,
  ICMSGTYPE_VSS,
  decodeIcHeader,
  encodeIcMessage,
  setIcFlags,
  setIcStatus,
} from '../../../kernel-shim/channel/icmsg.js';
import {
  KVP_FW_VERSIONS,
  KVP_SRV_VERSIONS,
  decodeNegotiateResponse,
  encodeNegotiateRequest,
  icVersion,
  prepNegotiateResponse,
} from '../../../kernel-shim/channel/negotiate.js';
import { VM_PKT_COMP, VM_PKT_DATA_INBAND } from '../../../kernel-shim/channel/vmpacket.js';

const T = 0x0102030405060708n;

function counter(channel: VmbusChannel) {
  const n = { guest: 0, host: 0 };
  channel.onGuestInterrupt = () => n.guest++;
  channel.onHostInterrupt = () => n.host++;
  return n;
}

function freeze(): Buffer {
  const body = Buffer.alloc(12);
  body[0] = 5;
  return encodeIcMessage({ msgType: ICMSGTYPE_VSS }, body);
}

describe('channel memory', () => {
  it('holds the outbound ring first and the inbound ring second, 16384 bytes each by default', () => {
    const ch = new VmbusChannel({ maxPacketSize: KVP_MAX_PKT_SIZE });
    expect(ch.memory).toBeInstanceOf(SharedArrayBuffer);
    expect(ch.memory.byteLength).toBe(32768);
    expect([ch.outbound.memory.byteOffset, ch.outbound.memory.length]).toEqual([0, 16384]);
    expect([ch.inbound.memory.byteOffset, ch.inbound.memory.length]).toEqual([16384, 16384]);
    const bytes = new Uint8Array(ch.memory);
    // Both rings initialised: feature_bits = 1 at 64 of each header.
    expect([bytes[64], bytes[16384 + 64]]).toEqual([1, 1]);

    ch.hostSend(freeze(), T);
    // Host -> guest packet lands in the second ring's data area (16384 + 4096).
    expect([...bytes.subarray(20480, 20486)]).toEqual([6, 0, 2, 0, 7, 0]);
    expect(new DataView(ch.memory).getUint32(16384, true)).toBe(64); // inbound write_index
    expect(new DataView(ch.memory).getUint32(0, true)).toBe(0); // outbound write_index

    ch.recvPacket();
    ch.sendPacket(new Uint8Array(8), 1n);
    expect([...bytes.subarray(4096, 4102)]).toEqual([6, 0, 2, 0, 3, 0]);
  });

  it('a second channel object attached to the same memory sees the same rings without re-initialising', () => {
    const a = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 512 });
    a.hostSend(new Uint8Array([9, 9, 9]), 5n);
    const b = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 512, memory: a.memory });
    const p = b.recvPacket();
    expect(p?.ok && p.transId).toBe(5n);
    expect(a.inbound.readIndex).toBe(32);
    expect(() => new VmbusChannel({ maxPacketSize: 8192, ringDataSize: 256, memory: a.memory })).toThrow(
      RangeError,
    );
  });

  it('validates its options', () => {
    expect(() => new VmbusChannel({ maxPacketSize: 100 })).toThrow(RangeError);
    expect(() => new VmbusChannel({ maxPacketSize: 8192, ringDataSize: 100 })).toThrow(RangeError);
    expect(() => new VmbusChannel({ maxPacketSize: 8192, recvBufferSize: 0 })).toThrow(RangeError);
    expect([KVP_MAX_PKT_SIZE, VSS_MAX_PKT_SIZE, FCOPY_MAX_PKT_SIZE]).toEqual([16384, 8192, 8192]);
  });
});

describe('request / reply round trip', () => {
  it('the guest answers a VSS FREEZE with an identical-size packet, same trans_id, status and icflags 5', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE });
    const n = counter(ch);
    expect(ch.hostSend(freeze(), T)).toBe(true);
    expect(n).toEqual({ guest: 1, host: 0 });

    const req = ch.recvPacket();
    expect(req).toMatchObject({ ok: true, transId: T, type: VM_PKT_DATA_INBAND, flags: 0 });
    if (req === undefined || !req.ok) return;
    expect(req.payload.length).toBe(40);
    setIcStatus(req.payload, 0x80004005);
    setIcFlags(req.payload, ICMSGHDRFLAG_GUEST_RESPONSE);
    expect(ch.sendPacket(req.payload, req.transId)).toBe(true);
    expect(n).toEqual({ guest: 1, host: 1 });

    const outBytes = ch.outbound.memory.subarray(4096, 4096 + 64);
    const inBytes = ch.inbound.memory.subarray(4096, 4096 + 64);
    const diff = [...outBytes].flatMap((b, i) => (b === inBytes[i] ? [] : [i]));
    expect(diff).toEqual([36, 37, 39, 41]); // status (byte 38 is 0x00 in both) and icflags only
    expect([...outBytes.subarray(36, 42)]).toEqual([0x05, 0x40, 0x00, 0x80, 0x00, 0x05]);

    const reply = ch.hostRecv();
    expect(reply).toMatchObject({ ok: true, transId: T, type: VM_PKT_DATA_INBAND });
    const hdr = reply?.ok ? decodeIcHeader(reply.payload) : undefined;
    expect(hdr?.ok && hdr.value.status).toBe(0x80004005);
    expect(ch.hostRecv()).toBeUndefined();
    expect(ch.recvPacket()).toBeUndefined();
  });

  it('negotiates KVP over the channel', () => {
    const ch = new VmbusChannel({ maxPacketSize: KVP_MAX_PKT_SIZE });
    ch.hostSend(encodeNegotiateRequest(KVP_FW_VERSIONS, KVP_SRV_VERSIONS), 42n);
    const req = ch.recvPacket();
    if (req === undefined || !req.ok) throw new Error('no packet');
    expect(decodeIcHeader(req.payload).ok && req.payload[12]).toBe(ICMSGTYPE_NEGOTIATE);
    expect(prepNegotiateResponse(req.payload, KVP_FW_VERSIONS, KVP_SRV_VERSIONS).ok).toBe(true);
    setIcFlags(req.payload, ICMSGHDRFLAG_GUEST_RESPONSE);
    ch.sendPacket(req.payload, req.transId);
    const reply = ch.hostRecv();
    if (reply === undefined) throw new Error('no reply');
    expect(reply.payload.length).toBe(56);
    const r = decodeNegotiateResponse(reply.payload);
    expect(r.ok && r.value).toMatchObject({
      accepted: true,
      fwVersion: icVersion(3, 0),
      srvVersion: icVersion(4, 0),
    });
    expect(reply.transId).toBe(42n);
  });
});

describe('interrupts', () => {
  it('host signals the guest only when the inbound ring goes from empty to non-empty with mask 0', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 512 });
    const n = counter(ch);
    ch.hostSend(new Uint8Array(8), 1n);
    ch.hostSend(new Uint8Array(8), 2n);
    expect(n.guest).toBe(1);
    ch.recvPacket();
    ch.recvPacket();
    ch.inbound.interruptMask = 1;
    ch.hostSend(new Uint8Array(8), 3n);
    expect(n.guest).toBe(1);
    ch.recvPacket();
    ch.inbound.interruptMask = 0;
    ch.hostSend(new Uint8Array(8), 4n, { type: VM_PKT_COMP, flags: 1 });
    expect(n.guest).toBe(2);
    expect(ch.recvPacket()).toMatchObject({ ok: true, transId: 4n, type: VM_PKT_COMP, flags: 1 });
    expect(n.host).toBe(0); // pending_send_sz was never set
  });

  it('guest reads signal the host when they free the space the host waits for', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 256 });
    const n = counter(ch);
    for (let i = 0; i < 3; i++) expect(ch.hostSend(new Uint8Array(48), BigInt(i))).toBe(true); // 3 x 72
    expect(ch.hostSend(new Uint8Array(48), 3n)).toBe(false); // free 40: full
    ch.inbound.pendingSendSz = 72;
    ch.recvPacket();
    expect(n.host).toBe(1);
    ch.recvPacket();
    expect(n.host).toBe(1);
  });

  it('guest sends signal the host only on empty -> non-empty of the outbound ring', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 512 });
    const n = counter(ch);
    ch.sendPacket(new Uint8Array(8), 1n);
    ch.sendPacket(new Uint8Array(8), 2n);
    expect(n.host).toBe(1);
    expect(ch.hostRecv()?.transId).toBe(1n);
    expect(ch.hostRecv()?.transId).toBe(2n);
    ch.outbound.interruptMask = 1;
    ch.sendPacket(new Uint8Array(8), 3n);
    expect(n.host).toBe(1);
  });
});

describe('failures', () => {
  it('sendPacket returns false (reply dropped) when the outbound ring is full', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 256 });
    expect(ch.sendPacket(new Uint8Array(224), 1n)).toBe(true);
    const before = new Uint8Array(ch.memory).slice();
    expect(ch.sendPacket(new Uint8Array(0), 2n)).toBe(false);
    expect(new Uint8Array(ch.memory)).toEqual(before);
    expect(ch.hostRecv()?.transId).toBe(1n);
    expect(ch.hostRecv()).toBeUndefined();
  });

  it('recvPacket gives ENOBUFS without consuming when the payload exceeds the receive buffer', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, recvBufferSize: 64 });
    ch.hostSend(new Uint8Array(72), 9n);
    expect(ch.recvPacket()).toEqual({ ok: false, errno: 'ENOBUFS', length: 72, transId: 9n });
    expect(ch.inbound.readIndex).toBe(0);
    expect(ch.recvPacket()).toMatchObject({ ok: false, errno: 'ENOBUFS' });
  });

  it('recvPacket applies the channel max_pkt_size clamp to oversized host packets', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE });
    ch.hostSend(new Uint8Array(9000).fill(1), 1n);
    const p = ch.recvPacket();
    expect(p?.ok && p.payload.length).toBe(8176);
    expect(ch.inbound.readIndex).toBe(8200);
  });

  it('malformed host bytes injected into the inbound ring are read with the kernel robustness rules', () => {
    const ch = new VmbusChannel({ maxPacketSize: VSS_MAX_PKT_SIZE, ringDataSize: 512 });
    const raw = new Uint8Array(48);
    raw.set([6, 0, 0, 0, 0xff, 0xff]); // offset8 0, len8 65535
    raw.set([1, 2, 3], 16);
    ch.inbound.writeBytes(raw);
    const p = ch.recvPacket();
    expect(p?.ok && [...p.payload.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect(p?.ok && p.payload.length).toBe(32);
  });
});
