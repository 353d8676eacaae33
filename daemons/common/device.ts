/**
 * The daemons' view of a /dev/vmbus/hv_* device: open, read one whole message, write one reply,
 * close. Two bindings implement it: `CharDeviceBinding` (char-device.ts), the real one, and
 * `ShimBinding` (kernel-shim/binding.ts), the in-process kernel-shim. Errors carry the errno name
 * in `code` (EBADF, EINVAL, EBUSY, ENOENT, …), exactly as the kernel reports them.
 */

export interface DeviceHandle {
  /** The device path, for log lines. */
  readonly path: string;
  /**
   * One whole kernel-to-daemon message (at most `size` bytes). Waits until one is queued; rejects
   * with code 'ABORTED' when `signal` aborts, or with the kernel's errno. A binding may read into
   * `into` (at least `size` bytes) rather than a new buffer; the result is then a view of it.
   */
  read(size: number, signal?: AbortSignal, into?: Buffer): Promise<Buffer>;
  /**
   * A message when one is queued now or within a few milliseconds, without a promise; undefined
   * otherwise (then read() waits for it). Optional: a binding without it is always read().
   */
  readNow?(size: number, into?: Buffer): Buffer | undefined;
  /** One whole reply; returns the byte count or throws with the kernel's errno. */
  write(data: Uint8Array): number;
  /** Release the device (the kernel then resets the driver). */
  close(): void;
}

export interface DeviceBinding {
  /** Open a device read-write; throws with code ENOENT, EBUSY, EBADF, EACCES, … */
  open(path: string): Promise<DeviceHandle>;
}

/** An error with an errno name, as Node's and ours are. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;
}

/** The abort error of DeviceHandle.read. */
export class AbortedError extends Error {
  readonly code = 'ABORTED';
  constructor(what = 'read') {
    super(`${what} aborted`);
    this.name = 'AbortedError';
  }
}
