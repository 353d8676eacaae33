/**
 * What hv_util.c and the three util drivers share: the transaction record, the state values, the
 * channel callback "tasklet", hv_poll_channel, the reply to the host, the work items, and the
 * hibernation and removal hooks. Each driver (kvp.ts, vss.ts, fcopy.ts) adds its own state machine.
 */
import {
  ICMSG_HDR,
  ICMSGHDRFLAG_GUEST_RESPONSE,
  ICMSGTYPE_NEGOTIATE,
  setIcFlags,
  setIcStatus,
} from '../channel/icmsg.js';
import { prepNegotiateResponse } from '../channel/negotiate.js';
import { type Clock, DelayedWork } from '../clock.js';
import { HvutilTransport, type TransportDriver } from '../transport.js';

export const HVUTIL_DEVICE_INIT = 0;
export const HVUTIL_READY = 1;
export const HVUTIL_HOSTMSG_RECEIVED = 2;
export const HVUTIL_USERSPACE_REQ = 3;
export const HVUTIL_USERSPACE_RECV = 4;
export const HVUTIL_DEVICE_DYING = 5;

export const HVUTIL_STATE_NAMES = [
  'DEVICE_INIT',
  'READY',
  'HOSTMSG_RECEIVED',
  'USERSPACE_REQ',
  'USERSPACE_RECV',
  'DEVICE_DYING',
];

/** Timeouts of drivers/hv/hyperv_vmbus.h and hv_snapshot.c, in milliseconds. */
export const HV_UTIL_TIMEOUT_MS = 30_000;
export const VSS_FREEZE_TIMEOUT_MS = 15 * 60_000;
export const HV_UTIL_NEGO_TIMEOUT_MS = 55_000;

/** Size of the util drivers' receive buffer (recv_buffer), reused for every packet. */
export const UTIL_RECV_BUFFER_SIZE = 16384;

/** The guest end of a VMBus channel, as a util driver uses it. */
export interface UtilChannel {
  /**
   * vmbus_recvpacket into the driver's receive buffer (the channel knows its size): one packet's
   * payload and request id; undefined when the ring is empty; ENOBUFS (packet left in the ring)
   * when it does not fit. The payload is copied to the start of `into` when that is large enough.
   */
  recvPacket(
    into?: Uint8Array,
  ): { ok: true; payload: Uint8Array; transId: bigint } | { ok: false; errno: 'ENOBUFS' } | undefined;
  /** vmbus_sendpacket of a DATA_INBAND reply; false when the ring is full (the kernel ignores it). */
  sendPacket(payload: Uint8Array, transId: bigint): boolean;
}

/** Something the driver did, for tests and for recordings of what the host and daemon saw. */
export type DriverEvent =
  | { type: 'reply'; status: number; length: number }
  | { type: 'reply-skipped'; reason: 'rescinded' | 'ring-full' }
  | { type: 'drop'; reason: string }
  | { type: 'state'; from: number; to: number }
  | { type: 'queue'; length: number; rc: number }
  | { type: 'timeout' }
  | { type: 'note'; text: string };

export interface UtilDriverOptions {
  clock: Clock;
  /** Observer of what the driver does. */
  trace?: (event: DriverEvent) => void;
}

/** The kernel's struct work_struct: run once, soon, unless cancelled first. */
export class Work {
  private scheduled = false;

  constructor(private readonly fn: () => void) {}

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      if (!this.scheduled) return;
      this.scheduled = false;
      this.fn();
    });
  }

  cancel(): boolean {
    const was = this.scheduled;
    this.scheduled = false;
    return was;
  }
}

export abstract class UtilDriver implements TransportDriver {
  readonly transport: HvutilTransport;
  protected stateValue = HVUTIL_DEVICE_INIT;
  /** recv_buffer: the last packets' bytes stay here, as in the kernel (fcopy relays some of them). */
  protected readonly recvBuffer = Buffer.alloc(UTIL_RECV_BUFFER_SIZE);
  /** The stored transaction: payload length and the host's request id. */
  protected recvLen = 0;
  protected transId = 0n;
  /** The channel the driver serves; replaced by resume (fresh rings) and cleared by rescind. */
  protected channel: UtilChannel | undefined;
  /** False between pre_suspend and pre_resume (tasklet_disable). */
  private taskletEnabled = true;
  private taskletPending = false;
  protected readonly clock: Clock;
  private readonly trace: (event: DriverEvent) => void;
  /** Completed daemon registrations (the daemon read the registration reply), since probe. */
  registrations = 0;

  protected constructor(
    deviceName: string,
    /** The size of the buffer the driver passes to vmbus_recvpacket. */
    protected readonly recvBufferLength: number,
    opts: UtilDriverOptions,
  ) {
    this.clock = opts.clock;
    this.trace = opts.trace ?? (() => {});
    this.transport = new HvutilTransport(deviceName, this);
  }

  get state(): number {
    return this.stateValue;
  }

  protected set state(to: number) {
    if (to !== this.stateValue) this.emit({ type: 'state', from: this.stateValue, to });
    this.stateValue = to;
  }

  protected emit(event: DriverEvent): void {
    this.trace(event);
  }

  /** Bind the driver to a channel (probe, resume with fresh rings), or unbind it (close, rescind). */
  attachChannel(channel: UtilChannel | undefined): void {
    this.channel = channel;
  }

  /** The host signalled the channel: schedule the channel callback (the per-channel tasklet). */
  interrupt(): void {
    this.scheduleCallback();
  }

  protected scheduleCallback(): void {
    if (this.taskletPending) return;
    this.taskletPending = true;
    if (!this.taskletEnabled) return;
    queueMicrotask(() => this.runTasklet());
  }

  private runTasklet(): void {
    if (!this.taskletEnabled || !this.taskletPending) return;
    this.taskletPending = false;
    if (this.channel) this.onChannelCallback();
  }

  /** The daemon read the registration reply: count it, then poll the channel (READY). */
  protected registrationDone(): void {
    this.registrations++;
    this.emit({ type: 'note', text: 'daemon registered' });
    this.pollChannel();
  }

  /** hv_poll_channel with the drivers' poll wrapper: state READY, then re-run the callback. */
  protected pollChannel(): void {
    this.state = HVUTIL_READY;
    this.scheduleCallback();
  }

  /**
   * vmbus_recvpacket into recv_buffer. Returns the payload length, or 0 when nothing was read
   * (empty ring, receive error): the callers then return without action.
   */
  protected receive(): number {
    const r = this.channel?.recvPacket(this.recvBuffer);
    if (r === undefined) return 0;
    if (!r.ok) {
      this.emit({
        type: 'drop',
        reason: 'packet larger than the receive buffer (ENOBUFS); left in the ring',
      });
      return 0;
    }
    if (r.payload.buffer !== this.recvBuffer.buffer || r.payload.byteOffset !== this.recvBuffer.byteOffset)
      this.recvBuffer.set(r.payload, 0);
    this.transId = r.transId;
    return r.payload.length;
  }

  /**
   * Send the stored host packet back with `status` and icflags TRANSACTION|RESPONSE: exactly
   * recv_len bytes, the host's request id. Skipped when the channel was rescinded.
   */
  protected respond(status: number, length = this.recvLen): void {
    const channel = this.channel;
    if (!channel) {
      this.emit({ type: 'reply-skipped', reason: 'rescinded' });
      return;
    }
    const payload = this.recvBuffer.subarray(0, length);
    setIcStatus(payload, status);
    setIcFlags(payload, ICMSGHDRFLAG_GUEST_RESPONSE);
    // The ring write copies the bytes, as vmbus_sendpacket does: no copy of our own.
    if (!channel.sendPacket(payload, this.transId)) {
      this.emit({ type: 'reply-skipped', reason: 'ring-full' });
      return;
    }
    this.emit({ type: 'reply', status: status >>> 0, length });
  }

  /** The common packet checks: a payload shorter than the IC headers is dropped without reply. */
  protected hasIcHeader(length: number): boolean {
    if (length >= ICMSG_HDR) return true;
    this.emit({ type: 'drop', reason: `payload of ${length} bytes is shorter than the IC headers` });
    return false;
  }

  /**
   * The channel callback's prologue shared by VSS and FCOPY: read one packet; answer NEGOTIATE at
   * once (even with no daemon, and without polling: later packets wait for the next interrupt);
   * drop short packets and other message types without a reply. Returns the length of a service
   * request to handle, or 0 when there is nothing more to do.
   */
  protected receiveRequest(opts: {
    service: string;
    msgType: number;
    minBody: number;
    fw: readonly number[];
    srv: readonly number[];
  }): number {
    const len = this.receive();
    if (len === 0 || !this.hasIcHeader(len)) return 0;
    const type = this.msgType();
    if (type === ICMSGTYPE_NEGOTIATE) {
      prepNegotiateResponse(this.recvBuffer.subarray(0, len), opts.fw, opts.srv);
      this.respond(this.recvBuffer.readUInt32LE(20), len);
      return 0;
    }
    if (type !== opts.msgType) {
      this.emit({ type: 'drop', reason: `${opts.service}: invalid message type ${type}` });
      return 0;
    }
    if (len < ICMSG_HDR + opts.minBody) {
      this.emit({ type: 'drop', reason: `${opts.service}: ${len}-byte packet is too short` });
      return 0;
    }
    return len;
  }

  protected msgType(): number {
    return this.recvBuffer.readUInt16LE(12);
  }

  /** util_pre_suspend: the driver's own hook, then the tasklet is disabled. */
  preSuspend(): void {
    this.taskletEnabled = false;
    this.onPreSuspend();
    this.state = HVUTIL_READY;
  }

  /** util_pre_resume: re-enable the tasklet (a pending callback then runs). */
  preResume(): void {
    this.taskletEnabled = true;
    if (this.taskletPending) queueMicrotask(() => this.runTasklet());
  }

  /**
   * util_remove/util_deinit (rescind or removal): the channel's callback is cleared, the state is
   * DYING, work is cancelled, and the transport is destroyed; resolves once the daemon closed it.
   */
  remove(): Promise<void> {
    this.channel = undefined;
    this.state = HVUTIL_DEVICE_DYING;
    this.cancelAllWork();
    return this.transport.destroy();
  }

  protected makeDelayedWork(fn: () => void): DelayedWork {
    return new DelayedWork(this.clock, fn);
  }

  abstract onMsg(msg: Buffer): number;
  abstract onReset(): void;
  protected abstract onChannelCallback(): void;
  protected abstract onPreSuspend(): void;
  protected abstract cancelAllWork(): void;
}
