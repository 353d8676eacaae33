/**
 * The kernel-shim as a DeviceBinding (like serialport's MockBinding): daemons run in process
 * against the faithful driver state machines, with `/dev/vmbus/hv_kvp|hv_vss|hv_fcopy` mapped to
 * the shim's devices.
 */
import { basename } from 'node:path';
import { AbortedError, type DeviceBinding, type DeviceHandle } from '../daemons/common/device.js';
import type { ServiceName } from './device.js';
import { ENOENT, SyscallError } from './errno.js';
import type { KernelShim } from './shim.js';

const SERVICES: Record<string, ServiceName> = { hv_kvp: 'kvp', hv_vss: 'vss', hv_fcopy: 'fcopy' };

export class ShimBinding implements DeviceBinding {
  constructor(private readonly shim: KernelShim) {}

  async open(path: string): Promise<DeviceHandle> {
    const service = SERVICES[basename(path)];
    if (!service || !this.shim.devices.has(service)) throw new SyscallError(ENOENT, 'open', path);
    const file = this.shim.open(service);
    return {
      path,
      read: async (size, signal) => {
        try {
          return await file.read(size, signal ? { signal } : {});
        } catch (e) {
          // The in-process read reports an abort as EINTR; a daemon sees its own abort.
          if (signal?.aborted) throw new AbortedError();
          throw e;
        }
      },
      write: (data) => file.write(data),
      close: () => file.close(),
    };
  }
}
