/**
 * Faults the tests can trigger: hibernation (fake THAW / CANCEL, forced READY, the late-reply race),
 * rescind and re-offer, malformed / truncated / oversized host packets, full rings.
 */
import { describe, expect, it } from 'vitest';
import { CANCEL_FCOPY, HV_E_FAIL, HV_S_OK, VSS_OP_FREEZE, VSS_OP_THAW } from '../../uapi/constants.js';
import { encodeFcopyInt } from '../../uapi/fcopy.js';
import { KVP_MSG_SIZE, encodeKvpRegister, encodeKvpReply } from '../../uapi/kvp.js';
import { decodeVssMessage, encodeVssRegister, encodeVssReply, encodeVssRequest } from '../../uapi/vss.js';
import { ICMSGTYPE_VSS, encodeIcMessage } from '../../kernel-shim/channel/icmsg.js';
import { HVUTIL_READY } from '../../kernel-shim/drivers/util.js';
import { ChannelGoneError, HostTimeoutError } from '../../kernel-shim/host/ic-client.js';
import { EPOLLERR, EPOLLHUP, type TransportFile } from '../../kernel-shim/transport.js';
import { flush, tracedShim, watch } from './support.js';

async function vssDaemon(f: TransportFile): Promise<void> {
  f.write(encodeVssRegister());
  await f.read(12);
}

describe('hibernation', () => {
  it('VSS: the fake THAW reaches the daemon, its reply fails with EINVAL, a reopened daemon serves after resume', async () => {
    const { shim } = tracedShim(['vss']);
    let f = shim.open('vss');
    await vssDaemon(f);
    const freeze = watch(shim.host.vss.freeze());
    await f.read(12);
    f.write(encodeVssReply({ error: HV_S_OK, flags: 0 }));
    await flush();
    expect(freeze.value?.status).toBe(HV_S_OK);
    shim.suspend();
    expect(shim.device('vss').driver.state).toBe(HVUTIL_READY);
    const thaw = decodeVssMessage(await f.read(12));
    expect(thaw).toMatchObject({ ok: true, value: { kind: 'request', operation: VSS_OP_THAW } });
    expect(() => f.write(encodeVssReply({ error: 0, flags: 0 }))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    f.close(); // what the upstream daemon does: reopen and register again
    f = shim.open('vss');
    await vssDaemon(f);
    shim.resume();
    const again = watch(shim.host.vss.freeze());
    expect(decodeVssMessage(await f.read(12))).toMatchObject({
      ok: true,
      value: { operation: VSS_OP_FREEZE },
    });
    f.write(encodeVssReply({ error: 0, flags: 0 }));
    await flush();
    expect(again.value?.status).toBe(HV_S_OK);
    expect(shim.host.vss.ic.negotiated).toBeDefined(); // re-negotiated on the fresh channel
  });

  it('the LKML race: a reply to FREEZE written after suspend fails with EINVAL; the host request is gone with the channel', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssDaemon(f);
    const freeze = shim.host.vss.freeze();
    await f.read(12); // the daemon took FREEZE ...
    shim.suspend(); // ... and the guest suspends before it answers
    await expect(freeze).rejects.toBeInstanceOf(ChannelGoneError);
    expect(() => f.write(encodeVssReply({ error: 0, flags: 0 }))).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    expect(decodeVssMessage(await f.read(12))).toMatchObject({ ok: true, value: { operation: VSS_OP_THAW } });
  });

  it('VSS: an unread request at suspend time makes the fake THAW fail (EFAULT); the stale request is read after resume', async () => {
    const { shim, events } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssDaemon(f);
    void shim.host.vss.freeze().catch(() => {});
    await flush();
    shim.suspend();
    expect(
      events
        .filter((e) => e.event.type === 'queue')
        .map((e) => (e.event as { rc: number }).rc)
        .at(-1),
    ).toBe(-14);
    shim.resume();
    expect(decodeVssMessage(await f.read(12))).toMatchObject({
      ok: true,
      value: { operation: VSS_OP_FREEZE },
    });
  });

  it('FCOPY: a 36-byte fake CANCEL; the reply fails with EINVAL', async () => {
    const { shim } = tracedShim(['fcopy']);
    const f = shim.open('fcopy');
    f.write(encodeFcopyInt(1));
    await f.read(8192);
    await flush();
    shim.suspend();
    const m = await f.read(8192);
    expect(m.length).toBe(36);
    expect(m.readUInt32LE(0)).toBe(CANCEL_FCOPY);
    expect(() => f.write(encodeFcopyInt(0))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('KVP: forced READY, so after resume a host request with no daemon gets HV_E_FAIL instead of silence', async () => {
    const { shim } = tracedShim(['kvp']);
    shim.suspend();
    shim.resume();
    expect(await shim.host.kvp.ic.negotiate()).toMatchObject({ accepted: true });
    expect((await shim.host.kvp.addItem('k', 'v')).status).toBe(HV_E_FAIL);
  });
});

describe('rescind and re-offer', () => {
  it('a daemon holding the device: EBADF, POLLERR|POLLHUP, removal blocked until close, then ENOENT; a re-offer brings it back', async () => {
    const { shim } = tracedShim(['kvp']);
    const dev = shim.device('kvp');
    const f = shim.open('kvp');
    f.write(encodeKvpRegister());
    await f.read(KVP_MSG_SIZE);
    const blocked = f.read(KVP_MSG_SIZE);
    const rescind = watch(dev.rescind());
    await expect(blocked).rejects.toMatchObject({ code: 'EBADF' });
    expect(f.poll()).toBe(EPOLLERR | EPOLLHUP);
    expect(() => f.write(encodeKvpReply({ operation: 1, error: 0 }))).toThrow(
      expect.objectContaining({ code: 'EBADF' }),
    );
    expect(() => shim.open('kvp')).toThrow(expect.objectContaining({ code: 'EBADF' }));
    await flush();
    expect(rescind.settled).toBe(false);
    expect(dev.exists).toBe(true);
    f.close();
    await flush();
    expect(rescind.settled).toBe(true);
    expect(dev.exists).toBe(false);
    expect(() => shim.open('kvp')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    dev.reoffer();
    const g = shim.open('kvp');
    g.write(encodeKvpRegister());
    await g.read(KVP_MSG_SIZE);
    const r = watch(shim.host.kvp.addItem('k', 'v'));
    await g.read(KVP_MSG_SIZE);
    g.write(encodeKvpReply({ operation: 1, error: 0 }));
    await flush();
    expect(r.value?.status).toBe(HV_S_OK);
  });

  it('a host request in flight at rescind gets no reply', async () => {
    const { shim } = tracedShim(['vss']);
    const f = shim.open('vss');
    await vssDaemon(f);
    const freeze = shim.host.vss.freeze();
    await f.read(12);
    const done = shim.device('vss').rescind();
    await expect(freeze).rejects.toBeInstanceOf(ChannelGoneError);
    f.close();
    await done;
  });
});

describe('malformed host packets', () => {
  async function expectNoReply(shim: ReturnType<typeof tracedShim>, payload: Uint8Array): Promise<void> {
    const r = shim.shim.host.vss.ic.sendRaw(payload, 'raw', { timeoutMs: 1000 });
    await flush();
    shim.clock.advance(1000);
    await expect(r).rejects.toBeInstanceOf(HostTimeoutError);
  }

  it('shorter than the IC headers, unknown type, or a VSS packet under 40 bytes: consumed, no reply', async () => {
    const t = tracedShim(['vss']);
    await expectNoReply(t, Buffer.alloc(20));
    await expectNoReply(t, encodeIcMessage({ msgType: 9 }, Buffer.alloc(12)));
    // 28 + 4 = 32 bytes; the guest sees the payload padded to 8, so 33..40 would pass the check
    await expectNoReply(t, encodeIcMessage({ msgType: ICMSGTYPE_VSS }, Buffer.alloc(4)));
    const drops = t.events.filter((e) => e.event.type === 'drop');
    expect(drops).toHaveLength(3);
    expect(t.shim.device('vss').channel?.inbound.readable()).toBe(0);
    // the channel still works
    expect((await t.shim.host.vss.getDmInfo()).status).toBe(HV_S_OK);
  });

  it('a packet larger than max_pkt_size is cut to it (hv_pkt_iter_first) and the ring loses step', async () => {
    const t = tracedShim(['vss']);
    const body = Buffer.alloc(9000);
    body[0] = 3; // GET_DM_INFO: the kernel answers it itself
    const reply = await t.shim.host.vss.ic.sendRaw(
      encodeIcMessage({ msgType: ICMSGTYPE_VSS }, body),
      'oversized',
    );
    expect(reply.status).toBe(HV_S_OK);
    expect(reply.payload.length).toBe(8192 - 16); // the clamped packet, less its descriptor
    // the read index moved by 8192 + 8, into the middle of the packet: what follows is taken for
    // further packets, and the indices never meet again
    await flush();
    const ring = t.shim.device('vss').channel?.inbound;
    expect(ring && ring.readIndex !== ring.writeIndex).toBe(true);
  });

  it('a KVP request shorter than its struct is still taken (the kernel does not check): stale bytes are read', async () => {
    const t = tracedShim(['kvp']);
    const f = t.shim.open('kvp');
    f.write(encodeKvpRegister());
    await f.read(KVP_MSG_SIZE);
    const body = Buffer.alloc(4);
    body[0] = 3; // ENUMERATE, with no index field at all
    void t.shim.host.kvp.ic.sendRaw(encodeIcMessage({ msgType: 2 }, body), 'short KVP');
    const msg = await f.read(KVP_MSG_SIZE);
    expect(msg[0]).toBe(3);
  });
});

describe('full rings', () => {
  it('outbound full: the guest drops its reply (the kernel ignores the send error)', async () => {
    const t = tracedShim(['vss'], { ringDataSize: 512 });
    const channel = t.shim.device('vss').channel;
    if (!channel) throw new Error('no channel');
    channel.onHostInterrupt = undefined; // the host stops reading
    for (let i = 0; i < 12; i++) {
      channel.hostSend(encodeIcMessage({ msgType: ICMSGTYPE_VSS }, encodeVssRequest(3)), BigInt(i));
      await flush();
    }
    const sent = t.events.filter((e) => e.event.type === 'reply').length;
    const skipped = t.events.filter((e) => e.event.type === 'reply-skipped').length;
    expect(sent).toBe(7); // 512-byte data area, 64 bytes per reply, strictly-greater rule
    expect(skipped).toBe(5);
  });

  it('inbound full: the host cannot send', async () => {
    const t = tracedShim(['kvp'], { ringDataSize: 512 });
    const channel = t.shim.device('kvp').channel;
    if (!channel) throw new Error('no channel');
    let accepted = 0;
    while (channel.hostSend(Buffer.alloc(40), BigInt(accepted))) accepted++;
    expect(accepted).toBe(7);
    await expect(t.shim.host.kvp.addItem('k', 'v')).rejects.toThrow(/inbound ring is full/);
  });
});
