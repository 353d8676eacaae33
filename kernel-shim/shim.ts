/**
 * The kernel-shim, in process: the chosen util devices (driver + VMBus channel + device node) and
 * the simulated host that drives them.
 *
 *   const shim = new KernelShim({ services: ['kvp'], clock: new FakeClock() });
 *   const fd = shim.open('kvp');            // like open("/dev/vmbus/hv_kvp", O_RDWR)
 *   await shim.host.kvp.addItem('k', 'v');  // what Hyper-V Manager would do
 */
import { type Clock, RealClock } from './clock.js';
import { type DeviceOptions, SERVICE_NAMES, type ServiceName, ShimDevice } from './device.js';
import type { DriverEvent } from './drivers/util.js';
import { FcopyHost } from './host/fcopy.js';
import { KvpHost } from './host/kvp.js';
import { VssHost } from './host/vss.js';
import type { TransportFile } from './transport.js';

export interface KernelShimOptions extends Partial<Omit<DeviceOptions, 'clock' | 'trace'>> {
  /** Which devices exist (default: all three). */
  services?: readonly ServiceName[];
  clock?: Clock;
  /** Host-side timeout per request, ms (default 120 s; VSS 960 s). */
  hostTimeoutMs?: number;
  trace?: (service: ServiceName, event: DriverEvent) => void;
}

export interface SimulatedHost {
  readonly kvp: KvpHost;
  readonly vss: VssHost;
  readonly fcopy: FcopyHost;
}

export class KernelShim {
  readonly clock: Clock;
  readonly devices: ReadonlyMap<ServiceName, ShimDevice>;
  readonly host: SimulatedHost;

  constructor(opts: KernelShimOptions = {}) {
    this.clock = opts.clock ?? new RealClock();
    const devices = new Map<ServiceName, ShimDevice>();
    const services = opts.services ?? SERVICE_NAMES;
    for (const s of services) {
      devices.set(
        s,
        new ShimDevice(s, {
          clock: this.clock,
          ...(opts.ringDataSize ? { ringDataSize: opts.ringDataSize } : {}),
          ...(opts.kvp ? { kvp: opts.kvp } : {}),
          ...(opts.trace ? { trace: opts.trace } : {}),
        }),
      );
    }
    this.devices = devices;
    const hosts: Partial<Record<ServiceName, unknown>> = {};
    const t = opts.hostTimeoutMs;
    const kvp = devices.get('kvp');
    const vss = devices.get('vss');
    const fcopy = devices.get('fcopy');
    if (kvp) hosts.kvp = new KvpHost(kvp, this.clock, t);
    if (vss) hosts.vss = new VssHost(vss, this.clock, t);
    if (fcopy) hosts.fcopy = new FcopyHost(fcopy, this.clock, t);
    this.host = new Proxy(hosts, {
      get: (target, prop: string) => {
        const h = target[prop as ServiceName];
        if (!h && SERVICE_NAMES.includes(prop as ServiceName))
          throw new Error(`the shim has no ${prop} device`);
        return h;
      },
    }) as unknown as SimulatedHost;
  }

  device(service: ServiceName): ShimDevice {
    const d = this.devices.get(service);
    if (!d) throw new Error(`the shim has no ${service} device`);
    return d;
  }

  /** open("/dev/vmbus/hv_<service>", O_RDWR). */
  open(service: ServiceName): TransportFile {
    return this.device(service).open();
  }

  /** Hibernate the guest: every device's pre_suspend, channels closed. */
  suspend(): void {
    for (const d of this.devices.values()) d.suspend();
  }

  /** Resume: pre_resume, fresh channels; the host negotiates again. */
  resume(): void {
    for (const d of this.devices.values()) d.resume();
  }
}
