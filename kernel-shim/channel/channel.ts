/**
 * A util VMBus channel (`struct vmbus_channel` as far as the util drivers use it): two rings in one
 * SharedArrayBuffer, the guest's `vmbus_recvpacket` / `vmbus_sendpacket`, the simulated host's
 * counterparts, and interrupts as callbacks (kernel-protocol.md §6.1, §6.5, §2.2).
 *
 * Memory layout of `memory` (§6.1), each ring = 4096-byte `struct hv_ring_buffer` + D data bytes:
 *
 * | Offset        | Size     | Ring                                                  |
 * |--------------:|---------:|-------------------------------------------------------|
 * | 0             | 4096 + D | outbound: guest → host (guest produces, host consumes) |
 * | 4096 + D      | 4096 + D | inbound:  host → guest (host produces, guest consumes) |
 *
 * D defaults to 12288 (16384-byte rings, as util channels request).
 *
 * Interrupts: `onGuestInterrupt` fires when the host side would signal the guest (host wrote into
 * an empty inbound ring whose `interrupt_mask` is 0, or a host read freed the space the guest said
 * it waits for in the outbound `pending_send_sz`); `onHostInterrupt` fires when the guest would
 * call `vmbus_setevent` (same rules, other direction). Callbacks run synchronously, after the index
 * that caused them is published; deferring work (e.g. to a tasklet-like microtask) is the owner's
 * business.
 */
import {
  HV_RING_BUFFER_HEADER_SIZE,
  HV_RING_DEFAULT_DATA_SIZE,
  RingBuffer,
  type RingWriteResult,
  type WritePacketDescriptor,
} from './ring.js';
import { VM_PKT_DATA_INBAND } from './vmpacket.js';

/** `max_pkt_size` (= receive buffer length) of the KVP channel: 4 × 4096. */
export const KVP_MAX_PKT_SIZE = 16384;
/** `max_pkt_size` (= receive buffer length) of the VSS channel: 2 × 4096 (VSS_MAX_PKT_SIZE). */
export const VSS_MAX_PKT_SIZE = 8192;
/** `max_pkt_size` (= receive buffer length) of the FCOPY channel (kernels ≤ 6.9): 2 × 4096. */
export const FCOPY_MAX_PKT_SIZE = 8192;

/** Construction options of {@link VmbusChannel}. */
export interface VmbusChannelOptions {
  /**
   * The channel's `max_pkt_size` (includes the 16-byte descriptor): KVP 16384, VSS / FCOPY 8192.
   * Must be a multiple of 8, at least 16.
   */
  readonly maxPacketSize: number;
  /**
   * `buflen` the guest driver passes to `vmbus_recvpacket`. Defaults to maxPacketSize, as every
   * util driver does; only a smaller value makes ENOBUFS reachable (see RingBuffer.readPacket).
   */
  readonly recvBufferSize?: number;
  /** Data bytes per ring (D), a positive multiple of 8. Default 12288. */
  readonly ringDataSize?: number;
  /**
   * Existing channel memory (2 × (4096 + D) bytes) to attach to without initialising, e.g. in
   * another thread. When absent a new SharedArrayBuffer is allocated and both rings initialised.
   */
  readonly memory?: SharedArrayBuffer;
}

/** A packet as received by either side. */
export interface ChannelPacket {
  readonly ok: true;
  /** Payload copy: `len8*8 − offset8*8` bytes, i.e. including the sender's padding to 8. */
  readonly payload: Uint8Array;
  /** The descriptor's `trans_id` (`requestid` in the kernel). */
  readonly transId: bigint;
  /** The descriptor's `type` (VM_PKT_*). The guest ignores it. */
  readonly type: number;
  /** The descriptor's `flags`. The guest ignores them. */
  readonly flags: number;
}

/** `vmbus_recvpacket` returned -ENOBUFS: the payload (`length` bytes) exceeds the receive buffer; nothing consumed. */
export interface ChannelRecvNoBufs {
  readonly ok: false;
  readonly errno: 'ENOBUFS';
  readonly length: number;
  readonly transId: bigint;
}

/** Result of {@link VmbusChannel.recvPacket} when something was readable. */
export type ChannelRecvResult = ChannelPacket | ChannelRecvNoBufs;

/** Options for host-sent packets; the defaults are what the simulated host uses for util requests. */
export interface HostSendOptions {
  /** VM_PKT_*; default VM_PKT_DATA_INBAND. */
  readonly type?: number;
  /** Descriptor flags; default 0 (whether Windows asks for completions is UNCONFIRMED; the guest ignores it). */
  readonly flags?: number;
}

/** See the file comment for layout and interrupt semantics. */
export class VmbusChannel {
  /** Both rings: outbound at 0, inbound at 4096 + D. */
  readonly memory: SharedArrayBuffer;
  /** Guest → host ring (the guest's `channel->outbound`). */
  readonly outbound: RingBuffer;
  /** Host → guest ring (the guest's `channel->inbound`). */
  readonly inbound: RingBuffer;
  /** The channel's `max_pkt_size` (see VmbusChannelOptions). */
  readonly maxPacketSize: number;
  /** `buflen` of the guest's `vmbus_recvpacket` (see VmbusChannelOptions). */
  readonly recvBufferSize: number;
  /** Called when the host would interrupt the guest. */
  onGuestInterrupt: (() => void) | undefined;
  /** Called when the guest would interrupt the host (`vmbus_setevent`). */
  onHostInterrupt: (() => void) | undefined;

  /** Throws RangeError for sizes the rings cannot use. */
  constructor(options: VmbusChannelOptions) {
    const dataSize = options.ringDataSize ?? HV_RING_DEFAULT_DATA_SIZE;
    const ringSize = HV_RING_BUFFER_HEADER_SIZE + dataSize;
    if (!Number.isInteger(dataSize) || dataSize <= 0 || dataSize % 8 !== 0) {
      throw new RangeError(`ringDataSize must be a positive multiple of 8, got ${dataSize}`);
    }
    const { maxPacketSize } = options;
    if (!Number.isInteger(maxPacketSize) || maxPacketSize < 16 || maxPacketSize % 8 !== 0) {
      throw new RangeError(`maxPacketSize must be a multiple of 8 and at least 16, got ${maxPacketSize}`);
    }
    const recvBufferSize = options.recvBufferSize ?? maxPacketSize;
    if (!Number.isInteger(recvBufferSize) || recvBufferSize < 1) {
      throw new RangeError(`recvBufferSize must be a positive integer, got ${recvBufferSize}`);
    }
    if (options.memory !== undefined && options.memory.byteLength !== 2 * ringSize) {
      throw new RangeError(`channel memory must be ${2 * ringSize} bytes, got ${options.memory.byteLength}`);
    }
    this.memory = options.memory ?? new SharedArrayBuffer(2 * ringSize);
    this.outbound = new RingBuffer(new Uint8Array(this.memory, 0, ringSize));
    this.inbound = new RingBuffer(new Uint8Array(this.memory, ringSize, ringSize));
    if (options.memory === undefined) {
      this.outbound.init();
      this.inbound.init();
    }
    this.maxPacketSize = maxPacketSize;
    this.recvBufferSize = recvBufferSize;
    this.onGuestInterrupt = undefined;
    this.onHostInterrupt = undefined;
  }

  /**
   * Guest: `vmbus_recvpacket` — at most one packet from the inbound ring (RingBuffer.readPacket
   * with maxPacketSize / recvBufferSize; the payload lands at the start of `into` when that is large
   * enough). `undefined` when fewer than 16 bytes are readable (the
   * kernel's "recvlen 0"). Fires onHostInterrupt when the consumer rule says so.
   */
  recvPacket(into?: Uint8Array): ChannelRecvResult | undefined {
    const r = this.inbound.readPacket(this.maxPacketSize, this.recvBufferSize, into);
    if (r === undefined) return undefined;
    if (!r.ok) return r;
    if (r.signal) this.onHostInterrupt?.();
    const d = r.descriptor;
    return { ok: true, payload: r.payload, transId: d.transId, type: d.type, flags: d.flags };
  }

  /**
   * Guest: `vmbus_sendpacket(channel, buf, len, trans_id, VM_PKT_DATA_INBAND, 0)` into the outbound
   * ring. Returns false when the ring is full (-EAGAIN; util drivers ignore it, so the reply is
   * lost). Fires onHostInterrupt when the producer rule says so.
   */
  sendPacket(payload: Uint8Array, transId: bigint): boolean {
    return this.produce(this.outbound, { type: VM_PKT_DATA_INBAND, flags: 0, transId }, payload, () =>
      this.onHostInterrupt?.(),
    );
  }

  /**
   * Host: write one packet into the inbound ring (default type DATA_INBAND, flags 0). Returns false
   * when the ring is full. Fires onGuestInterrupt iff the guest's inbound `interrupt_mask` is 0 and
   * the ring was empty before this packet (the rule the simulated host follows, §6.5).
   */
  hostSend(payload: Uint8Array, transId: bigint, options: HostSendOptions = {}): boolean {
    const desc = { type: options.type ?? VM_PKT_DATA_INBAND, flags: options.flags ?? 0, transId };
    return this.produce(this.inbound, desc, payload, () => this.onGuestInterrupt?.());
  }

  /**
   * Host: take one guest packet from the outbound ring. The host has no packet-size limit here
   * (the whole data area is allowed); `undefined` when nothing is readable. Fires onGuestInterrupt
   * when the consumer rule says so (the util drivers never set pending_send_sz, so in practice never).
   */
  hostRecv(): ChannelPacket | undefined {
    const size = Math.max(16, this.outbound.dataSize);
    const r = this.outbound.readPacket(size, size);
    if (r === undefined || !r.ok) return undefined; // ENOBUFS cannot happen: payload < data size
    if (r.signal) this.onGuestInterrupt?.();
    const d = r.descriptor;
    return { ok: true, payload: r.payload, transId: d.transId, type: d.type, flags: d.flags };
  }

  private produce(
    ring: RingBuffer,
    desc: WritePacketDescriptor,
    payload: Uint8Array,
    signal: () => void,
  ): boolean {
    const r: RingWriteResult = ring.writePacket(desc, payload);
    if (!r.ok) return false;
    if (r.signal) signal();
    return true;
  }
}
