/**
 * One util device of the shim: its VMBus channel, its driver, and its /dev/vmbus node, with the
 * life-cycle events the kernel goes through: probe, rescind (util_remove) and re-offer,
 * hibernation (util_suspend / util_resume).
 */
import { FCOPY_MAX_PKT_SIZE, KVP_MAX_PKT_SIZE, VSS_MAX_PKT_SIZE, VmbusChannel } from './channel/channel.js';
import type { Clock } from './clock.js';
import { FcopyDriver } from './drivers/fcopy.js';
import { KvpDriver, type KvpDriverOptions } from './drivers/kvp.js';
import type { DriverEvent, UtilDriver } from './drivers/util.js';
import { VssDriver } from './drivers/vss.js';
import { ENOENT, SyscallError } from './errno.js';
import type { TransportFile } from './transport.js';

export type ServiceName = 'kvp' | 'vss' | 'fcopy';
export const SERVICE_NAMES: readonly ServiceName[] = ['kvp', 'vss', 'fcopy'];

const MAX_PKT: Record<ServiceName, number> = {
  kvp: KVP_MAX_PKT_SIZE,
  vss: VSS_MAX_PKT_SIZE,
  fcopy: FCOPY_MAX_PKT_SIZE,
};

export interface DeviceOptions {
  clock: Clock;
  /** Data area of each ring (default 12288, the util channels' size on 4 KiB pages). */
  ringDataSize?: number;
  kvp?: Omit<KvpDriverOptions, 'clock' | 'trace'>;
  trace?: (service: ServiceName, event: DriverEvent) => void;
}

/** Listeners the simulated host registers to follow channel changes. */
export interface ChannelObserver {
  /** A new channel was opened (probe, re-offer, resume): the host negotiates again. */
  channelOpened(channel: VmbusChannel): void;
  /** The channel was closed (suspend) or rescinded: pending requests get no reply. */
  channelClosed(reason: 'suspend' | 'rescind'): void;
}

export class ShimDevice {
  private driverValue: UtilDriver;
  private channelValue: VmbusChannel | undefined;
  private nodePresent = true;
  private observers = new Set<ChannelObserver>();
  private suspended = false;

  constructor(
    readonly service: ServiceName,
    private readonly opts: DeviceOptions,
  ) {
    this.driverValue = this.makeDriver();
    this.channelValue = this.openChannel();
  }

  /** /dev/vmbus/hv_<service>. */
  get path(): string {
    return `/dev/vmbus/hv_${this.service}`;
  }

  get driver(): UtilDriver {
    return this.driverValue;
  }

  get channel(): VmbusChannel | undefined {
    return this.channelValue;
  }

  /** Whether the device node exists (it disappears after a rescind once the daemon closed it). */
  get exists(): boolean {
    return this.nodePresent;
  }

  /** open(2) of the device node. */
  open(): TransportFile {
    if (!this.nodePresent) throw new SyscallError(ENOENT, 'open', this.path);
    return this.driverValue.transport.open();
  }

  observe(observer: ChannelObserver): () => void {
    this.observers.add(observer);
    if (this.channelValue) observer.channelOpened(this.channelValue);
    return () => this.observers.delete(observer);
  }

  /**
   * The host rescinds the channel: the driver is removed (readers get EBADF, poll ERR|HUP), and
   * the node disappears once the daemon has closed the device. Resolves then.
   */
  async rescind(): Promise<void> {
    this.closeChannel('rescind');
    const released = this.driverValue.remove();
    await released;
    this.nodePresent = false;
  }

  /** The host offers the channel again: a new driver instance, a new node, fresh rings. */
  reoffer(): void {
    if (this.nodePresent) throw new Error(`${this.path}: re-offer without a rescind`);
    this.driverValue = this.makeDriver();
    this.nodePresent = true;
    this.channelValue = this.openChannel();
  }

  /** util_suspend: the driver's pre_suspend hook, then the channel is closed. */
  suspend(): void {
    if (this.suspended) return;
    this.suspended = true;
    this.driverValue.preSuspend();
    this.closeChannel('suspend');
  }

  /** util_resume: pre_resume, then the channel reopened with fresh rings. */
  resume(): void {
    if (!this.suspended) return;
    this.suspended = false;
    this.driverValue.preResume();
    this.channelValue = this.openChannel();
  }

  private makeDriver(): UtilDriver {
    const trace = this.opts.trace ? (e: DriverEvent) => this.opts.trace?.(this.service, e) : undefined;
    const base = { clock: this.opts.clock, trace };
    switch (this.service) {
      case 'kvp':
        return new KvpDriver({ ...this.opts.kvp, ...base });
      case 'vss':
        return new VssDriver(base);
      case 'fcopy':
        return new FcopyDriver(base);
    }
  }

  private openChannel(): VmbusChannel {
    const channel = new VmbusChannel({
      maxPacketSize: MAX_PKT[this.service],
      ...(this.opts.ringDataSize ? { ringDataSize: this.opts.ringDataSize } : {}),
    });
    const driver = this.driverValue;
    channel.onGuestInterrupt = () => driver.interrupt();
    driver.attachChannel(channel);
    for (const o of this.observers) o.channelOpened(channel);
    // The host may already have written into the ring: the guest's open runs the callback once.
    driver.interrupt();
    return channel;
  }

  private closeChannel(reason: 'suspend' | 'rescind'): void {
    const channel = this.channelValue;
    if (!channel) return;
    channel.onGuestInterrupt = undefined;
    this.channelValue = undefined;
    this.driverValue.attachChannel(undefined);
    for (const o of this.observers) o.channelClosed(reason);
  }
}
