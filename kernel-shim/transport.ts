/**
 * The hvutil transport (drivers/hv/hv_utils_transport.c): the misc character device through which
 * a daemon talks to one util driver. Char-device mode only (the legacy netlink path is not
 * modelled). Semantics, with the kernel's errno values:
 *
 *  - open: one open file description at a time (EBUSY), EBADF once the transport is destroyed;
 *  - read: sleeps until a message is queued or the transport is destroyed (O_NONBLOCK has no
 *    effect); EINTR when interrupted; EBADF when destroyed; EINVAL, message kept, when the buffer
 *    is smaller than the message; otherwise exactly one whole message, then the message's one-shot
 *    on_read callback runs;
 *  - write: handed synchronously to the driver's on_msg, whose negative errno becomes the error;
 *  - poll: EPOLLERR|EPOLLHUP once destroyed, EPOLLIN|EPOLLRDNORM with a message queued, else 0 (never
 *    EPOLLOUT);
 *  - release (last close): back to INIT, the queued message dropped, the driver's on_reset called;
 *  - send (kernel side): EINVAL with no daemon, EFAULT while a previous message is unread.
 */
import { POLLERR, POLLHUP, POLLIN, POLLRDNORM } from '../daemons/common/libc.js';
import { EAGAIN, EBADF, EBUSY, EFAULT, EINTR, EINVAL, SyscallError } from './errno.js';

export const HVUTIL_TRANSPORT_INIT = 0;
export const HVUTIL_TRANSPORT_CHARDEV = 2;
export const HVUTIL_TRANSPORT_DESTROY = 3;

// The kernel's EPOLL* names for the poll(2) bits: the same values, defined once in libc.ts.
export const EPOLLIN = POLLIN;
export const EPOLLERR = POLLERR;
export const EPOLLHUP = POLLHUP;
export const EPOLLRDNORM = POLLRDNORM;

/** The driver behind a transport: hv_kvp.c, hv_snapshot.c or hv_fcopy.c. */
export interface TransportDriver {
  /**
   * A daemon's write; returns 0 or a negative errno. `msg` is valid only during the call (the
   * kernel frees its memdup_user copy when on_msg returns): a driver copies what it keeps.
   */
  onMsg(msg: Buffer): number;
  /** The daemon closed the device. */
  onReset(): void;
}

interface Waiter {
  wake(): void;
}

export class HvutilTransport {
  private modeValue = HVUTIL_TRANSPORT_INIT;
  private outmsg: Buffer | undefined;
  private onRead: (() => void) | undefined;
  private waiters = new Set<Waiter>();
  private pollWatchers = new Set<() => void>();
  private file: TransportFile | undefined;
  private releasedResolve: (() => void) | undefined;
  private readonly released: Promise<void>;

  constructor(
    /** The misc device name, e.g. `vmbus/hv_kvp`. */
    readonly name: string,
    private readonly driver: TransportDriver,
  ) {
    this.released = new Promise((resolve) => (this.releasedResolve = resolve));
  }

  get mode(): number {
    return this.modeValue;
  }

  /** True while a kernel-to-daemon message waits to be read. */
  get messagePending(): boolean {
    return this.outmsg !== undefined;
  }

  /** hvt_op_open. Throws EBADF (destroyed) or EBUSY (already open). */
  open(): TransportFile {
    if (this.modeValue === HVUTIL_TRANSPORT_DESTROY) throw new SyscallError(EBADF, 'open', this.name);
    if (this.modeValue !== HVUTIL_TRANSPORT_INIT) throw new SyscallError(EBUSY, 'open', this.name);
    this.modeValue = HVUTIL_TRANSPORT_CHARDEV;
    this.file = new TransportFile(this);
    return this.file;
  }

  /**
   * hvutil_transport_send: queue one kernel-to-daemon message. Returns 0, or -EINVAL (no daemon,
   * or destroyed) or -EFAULT (the previous message is still unread); the message is then dropped.
   */
  send(msg: Buffer, onRead?: () => void): number {
    if (this.modeValue !== HVUTIL_TRANSPORT_CHARDEV) return -EINVAL;
    if (this.outmsg) return -EFAULT;
    this.outmsg = Buffer.from(msg);
    this.onRead = onRead;
    this.wakeUp();
    return 0;
  }

  /**
   * hvutil_transport_destroy: wake every reader (they get EBADF) and resolve once the daemon has
   * released the device (at once if none has it open).
   */
  destroy(): Promise<void> {
    const old = this.modeValue;
    this.modeValue = HVUTIL_TRANSPORT_DESTROY;
    this.wakeUp();
    if (old !== HVUTIL_TRANSPORT_CHARDEV) this.releasedResolve?.();
    return this.released;
  }

  /** @internal the read path of TransportFile. */
  async readMessage(size: number, signal?: AbortSignal): Promise<Buffer> {
    // wait_event_interruptible(outmsg_len > 0 || mode != CHARDEV)
    while (this.outmsg === undefined && this.modeValue === HVUTIL_TRANSPORT_CHARDEV) {
      if (signal?.aborted) throw new SyscallError(EINTR, 'read', this.name);
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          wake: () => {
            signal?.removeEventListener('abort', onAbort);
            this.waiters.delete(waiter);
            resolve();
          },
        };
        const onAbort = () => {
          this.waiters.delete(waiter);
          reject(new SyscallError(EINTR, 'read', this.name));
        };
        this.waiters.add(waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      // Woken readers all passed the condition at wake-up time; they take the lock in turn, so
      // a second concurrent reader finds the message gone (EAGAIN) as on a real kernel.
      if (this.mode === HVUTIL_TRANSPORT_DESTROY) break;
      if (this.outmsg === undefined) throw new SyscallError(EAGAIN, 'read', this.name);
    }
    if (this.modeValue === HVUTIL_TRANSPORT_DESTROY) throw new SyscallError(EBADF, 'read', this.name);
    const msg = this.outmsg;
    if (msg === undefined) throw new SyscallError(EAGAIN, 'read', this.name);
    if (size < msg.length)
      throw new SyscallError(EINVAL, 'read', `${size}-byte buffer, ${msg.length}-byte message`);
    this.outmsg = undefined;
    const cb = this.onRead;
    this.onRead = undefined;
    cb?.();
    return msg;
  }

  /** @internal hvt_op_write. */
  writeMessage(data: Buffer): number {
    if (this.modeValue === HVUTIL_TRANSPORT_DESTROY) throw new SyscallError(EBADF, 'write', this.name);
    // No copy: on_msg works on the bytes synchronously and keeps none of them (see onMsg).
    const rc = this.driver.onMsg(data);
    if (rc < 0) throw new SyscallError(-rc, 'write', this.name);
    return data.length;
  }

  /** @internal hvt_op_poll. */
  pollMask(): number {
    if (this.modeValue === HVUTIL_TRANSPORT_DESTROY) return EPOLLERR | EPOLLHUP;
    return this.outmsg ? EPOLLIN | EPOLLRDNORM : 0;
  }

  /** @internal register a poll wake-up (fired on every wake_up_interruptible of the queue). */
  watchPoll(cb: () => void): () => void {
    this.pollWatchers.add(cb);
    return () => this.pollWatchers.delete(cb);
  }

  /** @internal hvt_op_release: the last reference to the open file is gone. */
  release(file: TransportFile): void {
    if (this.file !== file) return;
    this.file = undefined;
    const old = this.modeValue;
    if (this.modeValue !== HVUTIL_TRANSPORT_DESTROY) this.modeValue = HVUTIL_TRANSPORT_INIT;
    this.outmsg = undefined;
    this.driver.onReset();
    if (old === HVUTIL_TRANSPORT_DESTROY) this.releasedResolve?.();
  }

  private wakeUp(): void {
    for (const w of [...this.waiters]) w.wake();
    for (const cb of [...this.pollWatchers]) cb();
  }
}

/**
 * One open file description of a transport (`struct file`). Reads in flight hold a reference, so
 * close() while a read is blocked releases the device only when that read returns, as in Linux.
 */
export class TransportFile {
  private refs = 1;
  private inflight = 0;
  private closed = false;

  constructor(private readonly transport: HvutilTransport) {}

  /** read(2) with a `size`-byte buffer; an aborted signal is a signal delivered to the reader. */
  async read(size: number, opts: { signal?: AbortSignal } = {}): Promise<Buffer> {
    if (this.closed) throw new SyscallError(EBADF, 'read');
    this.inflight++;
    try {
      return await this.transport.readMessage(size, opts.signal);
    } finally {
      this.inflight--;
      this.maybeRelease();
    }
  }

  /** write(2): the whole buffer or an error. */
  write(data: Uint8Array): number {
    if (this.closed) throw new SyscallError(EBADF, 'write');
    return this.transport.writeMessage(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  /** poll(2)'s revents for this file. */
  poll(): number {
    return this.transport.pollMask();
  }

  /** Call `cb` whenever the device's wait queue is woken (a message queued, or destroyed). */
  watch(cb: () => void): () => void {
    return this.transport.watchPoll(cb);
  }

  /** dup(2)/fork: another reference to the same open file description. */
  dup(): this {
    this.refs++;
    return this;
  }

  /** close(2) of one reference; the device is released when no reference and no read remains. */
  close(): void {
    if (this.refs > 0) this.refs--;
    this.maybeRelease();
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  private maybeRelease(): void {
    if (this.closed || this.refs > 0 || this.inflight > 0) return;
    this.closed = true;
    this.transport.release(this);
  }
}
