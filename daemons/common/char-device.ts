/**
 * The real device binding. The hv transport ignores O_NONBLOCK and a blocked fs.read would pin a
 * libuv thread that neither close() nor process.exit() can free, so this binding never reads
 * before poll(2) said the device is readable: it polls in short bounded waits off the main thread
 * (koffi async), and only then reads, which returns at once. Stopping is therefore always prompt.
 */
import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { AbortedError, type DeviceBinding, type DeviceHandle } from './device.js';
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, pollAsync, pollSync } from './libc.js';

/** How long one poll(2) may wait before the abort signal is checked again. */
export const POLL_SLICE_MS = 200;
/** The first, synchronous, wait for the next message. */
export const QUICK_POLL_MS = 2;

class CharDevice implements DeviceHandle {
  private fd: number | undefined;

  constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  readNow(size: number, into?: Buffer): Buffer | undefined {
    // The next message usually follows our reply within a millisecond (a file copy, an
    // enumeration): a short wait on the main thread catches it without a thread-pool round trip.
    const fd = this.requireFd();
    return this.readIfReady(fd, pollSync(fd, POLLIN, QUICK_POLL_MS), size, into);
  }

  async read(size: number, signal?: AbortSignal, into?: Buffer): Promise<Buffer> {
    // A quick wait on the main thread first (readNow); after that, bounded waits off the main
    // thread, so nothing else is held up.
    if (signal?.aborted) throw new AbortedError();
    const quick = this.readNow(size, into);
    if (quick) return quick;
    for (;;) {
      if (signal?.aborted) throw new AbortedError();
      const fd = this.requireFd();
      const revents = await pollAsync(fd, POLLIN, POLL_SLICE_MS);
      if (signal?.aborted) throw new AbortedError();
      const msg = this.readIfReady(fd, revents, size, into);
      if (msg) return msg;
    }
  }

  /** read(2) the message poll(2) announced in `revents`; undefined if it announced none. */
  private readIfReady(fd: number, revents: number, size: number, into?: Buffer): Buffer | undefined {
    if (this.fd === undefined) throw Object.assign(new Error(`${this.path}: closed`), { code: 'EBADF' });
    if (revents & POLLNVAL)
      throw Object.assign(new Error(`${this.path}: poll: invalid fd`), { code: 'EBADF' });
    if (!(revents & (POLLIN | POLLERR | POLLHUP))) return undefined;
    // Readable (or the device is going away: the read then fails with its errno, e.g. EBADF).
    const buf = into && into.length >= size ? into : Buffer.allocUnsafe(size);
    const n = readSync(fd, buf, 0, size, null);
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  write(data: Uint8Array): number {
    return writeSync(this.requireFd(), data);
  }

  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      closeSync(fd);
    } catch {
      // The descriptor is released whatever close(2) reports (e.g. ENOTCONN from an aborted
      // FUSE connection, EIO): there is nothing to retry, and nothing worth dying for.
    }
  }

  private requireFd(): number {
    if (this.fd === undefined) throw Object.assign(new Error(`${this.path}: closed`), { code: 'EBADF' });
    return this.fd;
  }
}

export class CharDeviceBinding implements DeviceBinding {
  async open(path: string): Promise<DeviceHandle> {
    // libuv opens every file with O_CLOEXEC already.
    return new CharDevice(path, openSync(path, constants.O_RDWR));
  }
}
