/**
 * One direction of a VMBus channel: `struct hv_ring_buffer` (include/linux/hyperv.h) followed by
 * its data area, with the producer and consumer logic of drivers/hv/ring_buffer.c
 * (`hv_ringbuffer_write`, `hv_ringbuffer_read`, `hv_pkt_iter_first`, `__hv_pkt_iter_next`,
 * `hv_pkt_iter_close`, `hv_signal_on_write`). kernel-protocol.md §6.2 to §6.5.
 *
 * Memory layout (little-endian u32 fields; the header is one 4 KiB page):
 *
 * | Offset | Size | Field             | Written by                                           |
 * |-------:|-----:|-------------------|------------------------------------------------------|
 * | 0      | 4    | `write_index`     | producer: data-area offset of the next packet        |
 * | 4      | 4    | `read_index`      | consumer: data-area offset of the next unread byte   |
 * | 8      | 4    | `interrupt_mask`  | consumer: 1 = "do not signal me"                     |
 * | 12     | 4    | `pending_send_sz` | producer: bytes it waits for when the ring was full  |
 * | 16     | 48   | reserved          |                                                      |
 * | 64     | 4    | `feature_bits`    | initialiser: bit 0 = `feat_pending_send_sz`          |
 * | 68     | 4028 | reserved          |                                                      |
 * | 4096   | D    | data area         | packets: descriptor, payload padded to 8, trailer    |
 *
 * Pure and synchronous: nothing here signals anybody. Write and read results carry a `signal`
 * flag saying whether the kernel would signal the other side at that point; the channel turns it
 * into a callback.
 *
 * The memory may be a SharedArrayBuffer seen by several threads. Header fields are accessed with
 * `Atomics` (sequentially consistent), so publishing `write_index` / `read_index` last orders the
 * plain byte copies of the data area before it, as the kernel's barriers do. `Atomics` on a
 * Uint32Array use the platform's byte order, so the constructor refuses big-endian platforms.
 */
import {
  VMBUS_PKT_TRAILER,
  VMPACKET_DESCRIPTOR_SIZE,
  type VmPacketDescriptor,
  decodeVmPacketDescriptor,
  encodeVmPacketDescriptor,
} from './vmpacket.js';

/** sizeof(struct hv_ring_buffer): the header page before the data area (4 KiB pages). */
export const HV_RING_BUFFER_HEADER_SIZE = 4096;
/** Data bytes per ring for util channels: VMBUS_RING_SIZE(3 * 4096) = 16384 - 4096 (§6.1). */
export const HV_RING_DEFAULT_DATA_SIZE = 12288;
/** `feature_bits` bit 0: the consumer honours `pending_send_sz` (set by the guest at init). */
export const FEAT_PENDING_SEND_SZ = 1;
/** The guest's payload offset in 8-byte units: the payload follows the 16-byte descriptor. */
export const VMBUS_PKT_OFFSET8 = VMPACKET_DESCRIPTOR_SIZE / 8;

/** Byte offsets of the `struct hv_ring_buffer` fields from the start of the ring memory. */
export const HV_RING_BUFFER_OFFSETS = {
  write_index: 0,
  read_index: 4,
  interrupt_mask: 8,
  pending_send_sz: 12,
  feature_bits: 64,
  buffer: HV_RING_BUFFER_HEADER_SIZE,
} as const;

// Indices into the Uint32Array over the header.
const W = HV_RING_BUFFER_OFFSETS.write_index / 4;
const R = HV_RING_BUFFER_OFFSETS.read_index / 4;
const MASK = HV_RING_BUFFER_OFFSETS.interrupt_mask / 4;
const PENDING = HV_RING_BUFFER_OFFSETS.pending_send_sz / 4;
const FEATURES = HV_RING_BUFFER_OFFSETS.feature_bits / 4;

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The descriptor fields a producer chooses; `offset8` and `len8` are computed. */
export interface WritePacketDescriptor {
  /** VM_PKT_* (u16). */
  readonly type: number;
  /** u16; bit 0 = completion requested. */
  readonly flags: number;
  /** u64 `trans_id`. */
  readonly transId: bigint;
}

/**
 * Result of a producer write. `ok: false, errno: 'EAGAIN'`: not enough room, nothing was changed.
 * `signal`: the producer rule of §6.5 says to interrupt the consumer now.
 */
export type RingWriteResult =
  { readonly ok: true; readonly signal: boolean } | { readonly ok: false; readonly errno: 'EAGAIN' };

/** A packet taken out of the ring by {@link RingBuffer.readPacket}. */
export interface RingPacket {
  readonly ok: true;
  /**
   * The descriptor as the guest sees it after `hv_pkt_iter_first`: `type`, `flags`, `transId` as
   * found in the ring, `len8` / `offset8` replaced by the sanitised values actually used.
   */
  readonly descriptor: VmPacketDescriptor;
  /** A copy of bytes `offset8*8 .. len8*8` of the packet (includes the sender's padding). */
  readonly payload: Uint8Array;
  /** Bytes by which `read_index` advanced: `len8*8 + 8`. */
  readonly consumed: number;
  /** The consumer rule of §6.5 (pending_send_sz) says to interrupt the producer now. */
  readonly signal: boolean;
}

/**
 * The packet's payload does not fit the caller's buffer (`hv_ringbuffer_read` → -ENOBUFS).
 * Nothing was consumed. `length` and `transId` are what the kernel reports in
 * `buffer_actual_len` / `requestid` in that case.
 */
export interface RingReadNoBufs {
  readonly ok: false;
  readonly errno: 'ENOBUFS';
  readonly length: number;
  readonly transId: bigint;
}

/** Result of {@link RingBuffer.readPacket} when something was readable: a packet, or ENOBUFS. */
export type RingReadResult = RingPacket | RingReadNoBufs;

function align8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * A `struct hv_ring_buffer` plus data area over caller-supplied memory (see the file comment for
 * the layout). The object holds no state of its own besides the view: everything, including the
 * indices, lives in the memory, so two RingBuffer objects over the same bytes (e.g. guest side and
 * host side, possibly in different threads) see the same ring.
 */
export class RingBuffer {
  /** The whole ring: header page then data area. */
  readonly memory: Uint8Array;
  /** D, the size of the data area in bytes (`ring_datasize`). */
  readonly dataSize: number;
  private readonly header: Uint32Array;
  private readonly data: Uint8Array;
  /** 16 bytes of work space: a descriptor, or a packet's zero padding and trailer. */
  private readonly scratch = new Uint8Array(VMPACKET_DESCRIPTOR_SIZE);

  /**
   * Allocate a ring in a new SharedArrayBuffer of `4096 + dataSize` bytes and initialise it as the
   * guest does (`hv_ringbuffer_init`). `dataSize` must be a positive multiple of 8; the kernel's is
   * a multiple of the page size (12288 for util channels), tests use small rings to force wrap-around.
   */
  static create(dataSize: number = HV_RING_DEFAULT_DATA_SIZE): RingBuffer {
    const ring = new RingBuffer(new Uint8Array(new SharedArrayBuffer(HV_RING_BUFFER_HEADER_SIZE + dataSize)));
    ring.init();
    return ring;
  }

  /**
   * View existing ring memory without changing it. `memory.length` must be 4096 + D with D a
   * positive multiple of 8, and `memory.byteOffset` a multiple of 4 (for the atomic header view).
   */
  constructor(memory: Uint8Array) {
    if (!LITTLE_ENDIAN)
      throw new Error('RingBuffer: the ring layout is little-endian; big-endian hosts are not supported');
    const dataSize = memory.length - HV_RING_BUFFER_HEADER_SIZE;
    if (dataSize <= 0 || dataSize % 8 !== 0) {
      throw new RangeError(
        `RingBuffer: memory must be 4096 + D bytes with D a positive multiple of 8, got ${memory.length}`,
      );
    }
    if (memory.byteOffset % 4 !== 0)
      throw new RangeError('RingBuffer: memory.byteOffset must be a multiple of 4');
    this.memory = memory;
    this.dataSize = dataSize;
    this.header = new Uint32Array(
      memory.buffer,
      memory.byteOffset,
      HV_RING_BUFFER_OFFSETS.feature_bits / 4 + 1,
    );
    this.data = memory.subarray(HV_RING_BUFFER_HEADER_SIZE);
  }

  /**
   * Guest initialisation (`hv_ringbuffer_init`): zero the header page, `read_index` =
   * `write_index` = 0, `feature_bits` = 1 (`feat_pending_send_sz`). The data area is not touched.
   */
  init(): void {
    this.memory.fill(0, 0, HV_RING_BUFFER_HEADER_SIZE);
    Atomics.store(this.header, FEATURES, FEAT_PENDING_SEND_SZ);
    Atomics.store(this.header, R, 0);
    Atomics.store(this.header, W, 0);
  }

  /** `write_index` (u32 @0). Setting it is for fault injection only. */
  get writeIndex(): number {
    return Atomics.load(this.header, W);
  }
  set writeIndex(value: number) {
    Atomics.store(this.header, W, value >>> 0);
  }

  /** `read_index` (u32 @4). Setting it is for fault injection only. */
  get readIndex(): number {
    return Atomics.load(this.header, R);
  }
  set readIndex(value: number) {
    Atomics.store(this.header, R, value >>> 0);
  }

  /** `interrupt_mask` (u32 @8), owned by this ring's consumer. */
  get interruptMask(): number {
    return Atomics.load(this.header, MASK);
  }
  set interruptMask(value: number) {
    Atomics.store(this.header, MASK, value >>> 0);
  }

  /** `pending_send_sz` (u32 @12), owned by this ring's producer. */
  get pendingSendSz(): number {
    return Atomics.load(this.header, PENDING);
  }
  set pendingSendSz(value: number) {
    Atomics.store(this.header, PENDING, value >>> 0);
  }

  /** `feature_bits` (u32 @64); bit 0 = FEAT_PENDING_SEND_SZ. */
  get featureBits(): number {
    return Atomics.load(this.header, FEATURES);
  }
  set featureBits(value: number) {
    Atomics.store(this.header, FEATURES, value >>> 0);
  }

  /** Bytes written and not yet consumed (§6.4): w − r if w ≥ r, else D − r + w. */
  readable(): number {
    const w = this.writeIndex;
    const r = this.readIndex;
    return w >= r ? w - r : this.dataSize - r + w;
  }

  /**
   * Free bytes (§6.4, `hv_get_bytes_to_write`): D − (w − r) if w ≥ r, else r − w. A write of
   * `total` bytes needs writable() > total, so at least 8 bytes always stay free.
   */
  writable(): number {
    const w = this.writeIndex;
    const r = this.readIndex;
    return w >= r ? this.dataSize - (w - r) : r - w;
  }

  /**
   * Producer (`hv_ringbuffer_write` + `hv_signal_on_write`). Writes one packet at `write_index`:
   * descriptor {type, offset8 = 2, len8 = (16 + payload padded to 8) / 8, flags, trans_id}, the
   * payload, zero padding to a multiple of 8, and the 8-byte trailer u64 = old write_index << 32;
   * `total` = len8*8 + 8 bytes, copied with wrap-around. Refused with EAGAIN, changing nothing,
   * unless writable() > total. `write_index` is published last. `signal` is true iff
   * `interrupt_mask` is 0 and the ring was empty before this packet (old write_index ==
   * read_index, read after publishing, as the kernel does).
   * Throws RangeError for a payload so large that len8 would not fit in 16 bits.
   */
  writePacket(desc: WritePacketDescriptor, payload: Uint8Array): RingWriteResult {
    const packetLen = VMPACKET_DESCRIPTOR_SIZE + align8(payload.length);
    const len8 = packetLen / 8;
    if (len8 > 0xffff) throw new RangeError(`payload of ${payload.length} bytes does not fit a 16-bit len8`);
    const total = packetLen + VMBUS_PKT_TRAILER;
    if (this.writable() <= total) return { ok: false, errno: 'EAGAIN' };

    const oldWrite = this.writeIndex;
    // Straight into the ring, piece by piece, as hv_ringbuffer_write copies its kvec list.
    const head = this.scratch;
    encodeVmPacketDescriptor(
      { type: desc.type, offset8: VMBUS_PKT_OFFSET8, len8, flags: desc.flags, transId: desc.transId },
      head,
    );
    this.copyIn(oldWrite, head.subarray(0, VMPACKET_DESCRIPTOR_SIZE));
    this.copyIn(oldWrite + VMPACKET_DESCRIPTOR_SIZE, payload);
    const pad = packetLen - VMPACKET_DESCRIPTOR_SIZE - payload.length;
    // Zero padding, then the trailer: (u64)write_index << 32 (low u32 0, high u32 the old index).
    head.fill(0, 0, pad + VMBUS_PKT_TRAILER);
    head[pad + 4] = oldWrite & 0xff;
    head[pad + 5] = (oldWrite >>> 8) & 0xff;
    head[pad + 6] = (oldWrite >>> 16) & 0xff;
    head[pad + 7] = oldWrite >>> 24;
    this.copyIn(
      oldWrite + VMPACKET_DESCRIPTOR_SIZE + payload.length,
      head.subarray(0, pad + VMBUS_PKT_TRAILER),
    );
    return { ok: true, signal: this.advanceWrite(oldWrite, total) };
  }

  /**
   * Fault injection: copy `bytes` verbatim at `write_index` (with wrap-around), advance
   * `write_index` by `bytes.length` and apply the producer signalling rule, exactly as if a
   * (possibly malicious) producer had written them. No descriptor or trailer is added. Same space
   * rule as writePacket (EAGAIN unless writable() > bytes.length). A length that is not a multiple
   * of 8 leaves `write_index` unaligned, which no real producer does.
   */
  writeBytes(bytes: Uint8Array): RingWriteResult {
    if (this.writable() <= bytes.length) return { ok: false, errno: 'EAGAIN' };
    const oldWrite = this.writeIndex;
    this.copyIn(oldWrite, bytes);
    return { ok: true, signal: this.advanceWrite(oldWrite, bytes.length) };
  }

  /**
   * Consumer (`hv_ringbuffer_read` with `hv_pkt_iter_first`, `__hv_pkt_iter_next`,
   * `hv_pkt_iter_close`), reading one packet at `read_index`:
   *
   * 1. readable() < 16 → `undefined` (nothing to read; nothing changes).
   * 2. avail = min(maxPacketSize, readable()). `hv_pkt_iter_first` clamps with the channel's
   *    `max_pkt_size` (the size of its private packet copy buffer, which includes the descriptor).
   * 3. len = len8*8; if len < 16 or len > avail, len = avail. off = offset8*8; if off < 16 or
   *    off > len, off = 16. (So a well-formed packet longer than maxPacketSize is truncated to
   *    maxPacketSize bytes, not refused.)
   * 4. payload length = len − off (includes padding). If it exceeds `bufferSize` (the caller's
   *    receive buffer, `buflen`; defaults to maxPacketSize as every util driver passes the same
   *    value for both) → ENOBUFS and nothing is consumed. With the default this cannot happen,
   *    because len − off ≤ maxPacketSize − 16.
   * 5. Otherwise the payload is copied out (to the start of `into` when that is large enough, as
   *    the kernel copies into the caller's buffer; else to a new array), `read_index` advances by
   *    len + 8 (mod D) even when the clamped length ran past the real packet (the kernel then
   *    reads the next packet from the wrong place; this is what a misbehaving host gets), and
   *    `signal` follows the consumer rule: feature bit 0 set, `pending_send_sz` ≠ 0, free space
   *    before ≤ pending_send_sz and free space after > pending_send_sz (u32 arithmetic as in the
   *    kernel).
   *
   * Throws RangeError if maxPacketSize is not a multiple of 8 that is ≥ 16, or bufferSize < 1
   * (the kernel returns -EINVAL for a zero buflen).
   */
  readPacket(
    maxPacketSize: number,
    bufferSize: number = maxPacketSize,
    into?: Uint8Array,
  ): RingReadResult | undefined {
    if (
      !Number.isInteger(maxPacketSize) ||
      maxPacketSize < VMPACKET_DESCRIPTOR_SIZE ||
      maxPacketSize % 8 !== 0
    ) {
      throw new RangeError(`maxPacketSize must be a multiple of 8 and at least 16, got ${maxPacketSize}`);
    }
    if (!Number.isInteger(bufferSize) || bufferSize < 1) {
      throw new RangeError(`bufferSize must be a positive integer, got ${bufferSize}`);
    }
    const start = this.readIndex;
    const readable = this.readable();
    if (readable < VMPACKET_DESCRIPTOR_SIZE) return undefined;
    const avail = Math.min(maxPacketSize, readable);

    const decoded = decodeVmPacketDescriptor(this.copyOut(start, VMPACKET_DESCRIPTOR_SIZE, this.scratch));
    if (!decoded.ok) return undefined; // unreachable: 16 bytes were copied
    const raw = decoded.value;
    let len = raw.len8 * 8;
    if (len < VMPACKET_DESCRIPTOR_SIZE || len > avail) len = avail;
    let off = raw.offset8 * 8;
    if (off < VMPACKET_DESCRIPTOR_SIZE || off > len) off = VMPACKET_DESCRIPTOR_SIZE;
    // desc_copy->len8 = pkt_len >> 3: round down if a fault-injected index left avail unaligned.
    const len8 = len >>> 3;
    const offset8 = off >>> 3;
    const payloadLen = len8 * 8 - offset8 * 8;
    if (payloadLen > bufferSize)
      return { ok: false, errno: 'ENOBUFS', length: payloadLen, transId: raw.transId };

    const payload = this.copyOut(
      start + offset8 * 8,
      payloadLen,
      into && into.length >= payloadLen ? into : undefined,
    );
    const consumed = len8 * 8 + VMBUS_PKT_TRAILER;
    const next = (start + consumed) % this.dataSize;
    this.readIndex = next;
    return {
      ok: true,
      descriptor: { type: raw.type, offset8, len8, flags: raw.flags, transId: raw.transId },
      payload,
      consumed,
      signal: this.signalOnRead(start, next),
    };
  }

  /** hv_pkt_iter_close's decision, after read_index moved from `start` to `next`. */
  private signalOnRead(start: number, next: number): boolean {
    if ((this.featureBits & FEAT_PENDING_SEND_SZ) === 0) return false;
    const pending = this.pendingSendSz;
    if (pending === 0) return false;
    const currWrite = this.writable();
    const bytesRead = next >= start ? next - start : this.dataSize - start + next;
    if ((currWrite - bytesRead) >>> 0 > pending) return false; // there was enough room before
    if (currWrite <= pending) return false; // still not enough room
    return true;
  }

  /** Publish write_index advanced by `length` from `oldWrite`; return hv_signal_on_write's decision. */
  private advanceWrite(oldWrite: number, length: number): boolean {
    this.writeIndex = (oldWrite + length) % this.dataSize;
    if (this.interruptMask !== 0) return false;
    return oldWrite === this.readIndex;
  }

  private copyIn(at: number, src: Uint8Array): void {
    const start = at % this.dataSize;
    const first = Math.min(src.length, this.dataSize - start);
    this.data.set(src.subarray(0, first), start);
    if (first < src.length) this.data.set(src.subarray(first), 0);
  }

  /** `length` bytes at `at` (with wrap-around), into the start of `into` or a new array. */
  private copyOut(at: number, length: number, into?: Uint8Array): Uint8Array {
    const out = into ? into.subarray(0, length) : new Uint8Array(length);
    const start = at % this.dataSize;
    const first = Math.min(length, this.dataSize - start);
    out.set(this.data.subarray(start, start + first), 0);
    if (first < length) out.set(this.data.subarray(0, length - first), first);
    return out;
  }
}
