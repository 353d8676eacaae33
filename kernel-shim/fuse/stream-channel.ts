/**
 * StreamFuseChannel: reads /dev/fuse in this process, driven by the event loop's epoll.
 *
 * /dev/fuse honours O_NONBLOCK and supports poll, so it can be read the way a pipe is: libuv's
 * stream code sets O_NONBLOCK, waits in epoll until the device is readable, and reads. Node's public
 * API refuses a character device as a stream (net.Socket wants a pipe or a socket), so the
 * descriptor is opened as a libuv pipe handle (the `pipe_wrap` binding, which does no type check)
 * and wrapped in a net.Socket. Nothing ever blocks: no threadpool thread, no helper process, and
 * process.exit() is never held up. Each read(2) of /dev/fuse returns exactly one request, and the
 * socket hands each read on as one chunk, so a chunk is a frame.
 *
 * The one constraint: libuv reads with a 64 KiB buffer, and the kernel refuses a read buffer
 * smaller than max_write plus the WRITE request's headers, so a session served by this channel
 * must use maxWrite <= STREAM_MAX_WRITE.
 *
 * Replies are synchronous write(2)s on the same descriptor (writes to /dev/fuse never block).
 */
import { closeSync, writeSync, writevSync } from 'node:fs';
import { Socket } from 'node:net';
import type { FuseChannel, FuseEndReason } from './session.js';

/** libuv's read size (64 KiB) less the headers of a FUSE_WRITE request, rounded down to pages. */
export const STREAM_MAX_WRITE = 60 * 1024;

interface PipeHandle {
  open(fd: number): number;
}
interface PipeWrap {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

function pipeHandle(fd: number): PipeHandle {
  const binding = (process as unknown as { binding(name: string): PipeWrap }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const err = handle.open(fd);
  if (err) throw new Error(`cannot watch /dev/fuse descriptor ${fd} (uv error ${err})`);
  return handle;
}

export class StreamFuseChannel implements FuseChannel {
  private socket: Socket | undefined;
  private closed = false;
  private ended = false;
  private onEnd: ((reason: FuseEndReason, error?: Error) => void) | undefined;

  constructor(private readonly fd: number) {}

  private onFrame: ((frame: Buffer) => void) | undefined;

  start(onFrame: (frame: Buffer) => void, onEnd: (reason: FuseEndReason, error?: Error) => void): void {
    if (this.onFrame || this.closed) throw new Error('StreamFuseChannel already started');
    this.onFrame = onFrame;
    this.onEnd = onEnd;
  }

  /**
   * Begins reading: to be called once mount(2) has connected the descriptor (an unconnected
   * /dev/fuse polls as an error and its reads fail with EPERM).
   */
  connected(): void {
    const onFrame = this.onFrame;
    if (!onFrame || this.socket || this.closed) return;
    const socket = new Socket({ handle: pipeHandle(this.fd), readable: true, writable: false } as never);
    this.socket = socket;
    socket.on('data', (frame: Buffer) => {
      if (!this.closed) onFrame(frame);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // ENODEV: the connection ended (unmounted and the last file closed); ECONNABORTED: aborted.
      if (err.code === 'ENODEV') this.finish('unmounted');
      else if (err.code === 'ECONNABORTED') this.finish('aborted');
      else this.finish('failed', new Error(`read /dev/fuse: ${err.code ?? err.message}`));
    });
    socket.on('end', () => this.finish('unmounted'));
  }

  write(data: Buffer): void {
    if (this.closed) throw Object.assign(new Error('FUSE channel closed'), { code: 'ENODEV' });
    writeSync(this.fd, data);
  }

  writeParts(parts: readonly Uint8Array[]): void {
    if (this.closed) throw Object.assign(new Error('FUSE channel closed'), { code: 'ENODEV' });
    // /dev/fuse takes a reply as one write of any iovec (fuse_dev_write is a write_iter).
    writevSync(this.fd, parts as Uint8Array[]);
  }

  /** Stops reading and closes the device: the kernel aborts the connection on the last close. */
  close(): void {
    if (this.closed) return;
    this.finish('aborted');
  }

  private finish(reason: FuseEndReason, error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.closed = true;
    // Destroying the socket closes its handle, and with it the descriptor.
    if (this.socket) this.socket.destroy();
    else
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    this.onEnd?.(reason, error);
  }
}
