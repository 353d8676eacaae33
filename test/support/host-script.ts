import type { ChildProcess } from 'node:child_process';
import type { DeviceFiles } from '../../kernel-shim/device-files.js';
import type { ServiceName } from '../../kernel-shim/device.js';
import type { KernelShim } from '../../kernel-shim/shim.js';

/** What a host script (run by the shim harness, inside the sandbox) receives. */
export interface HostScriptContext {
  shim: KernelShim;
  files: DeviceFiles;
  params: unknown;
  /** The directory serving as /var/lib/hyperv. */
  stateDir: string;
  daemon(): ChildProcess;
  /** kill -9 the daemon, start it again, wait until it has registered. */
  restartDaemon(): Promise<void>;
  waitReady(service: ServiceName, ms?: number): Promise<void>;
}
