/**
 * The pluggable part of the FUSE server: a flat directory of named, character-device-like files,
 * each backed by a FuseFileHandler. The FUSE layer knows nothing about what the files mean.
 *
 * What the session guarantees to a handler:
 *
 * - Every open file uses FOPEN_DIRECT_IO: no page cache, each read(2)/pread(2) becomes exactly one
 *   READ request (for buffers up to max_pages × page size, 1 MiB by default), and its result is
 *   exactly the bytes the handler replies with. Offsets are passed through (a handler of a device
 *   normally ignores them); pread/pwrite at offset 0 work because the file is not marked
 *   non-seekable — unless FileSpec.stream is set, see there for the trade-off (f_pos_lock).
 * - `open` runs once per open(2) (per open file description); `release` once when the last
 *   reference to that description goes away (last close, or death of the process). `flush` runs on
 *   every close(2). If the connection ends while files are open (forced unmount), the session calls
 *   `release` for each of them itself, so handler state is always reset.
 * - A READ may be answered later: keep the PendingRead and call reply()/error() when data is queued.
 *   While a reply is outstanding, other requests (from other threads and processes) are still
 *   served: the kernel does not serialise them.
 * - If the caller is interrupted by a signal (or killed) while its READ is pending, the kernel sends
 *   FUSE_INTERRUPT and keeps the caller waiting until the READ is answered. By default the session
 *   then completes the READ with EINTR; a handler that registered `onInterrupt` decides itself, and
 *   must answer promptly: a killed process stays in uninterruptible sleep until it does.
 * - Poll: return the current mask; keep the `wake` function and call it whenever the mask may have
 *   changed. The session turns it into a FUSE_NOTIFY_POLL for the kernel's poll handle when the
 *   kernel asked for a notification (calling it too often is harmless).
 */
import { POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM } from '../../daemons/common/libc.js';
import { constants } from 'node:os';

/** An errno result, e.g. `errno('EBUSY')`. The number is positive. */
export interface Errno {
  readonly errno: number;
}

export type ErrnoName = keyof typeof constants.errno;

/** Builds an Errno from a name (`'EBUSY'`) or a positive number. */
export function errno(e: ErrnoName | number): Errno {
  const n = typeof e === 'number' ? e : constants.errno[e];
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`not an errno: ${String(e)}`);
  return { errno: n };
}

export function isErrno(v: unknown): v is Errno {
  return typeof v === 'object' && v !== null && typeof (v as { errno?: unknown }).errno === 'number';
}

// poll(2) event bits (the FUSE protocol carries these values), defined once in libc.ts.
export {
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  POLLPRI,
  POLLRDNORM,
  POLLWRNORM,
} from '../../daemons/common/libc.js';
/** What the kernel assumes for a file system without poll support. */
export const DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

/** The process behind a request (from fuse_in_header; pid is in the server's pid namespace). */
export interface Caller {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export interface OpenRequest {
  /** The file's name in the directory. */
  readonly name: string;
  /** open(2) flags as the kernel passes them (O_ACCMODE, O_NONBLOCK, ...; no O_CREAT/O_EXCL). */
  readonly flags: number;
  readonly caller: Caller;
}

/** A READ request that may be answered now or later. */
export interface PendingRead {
  /** The most bytes the reply may carry (the caller's buffer size, capped by the kernel). */
  readonly size: number;
  readonly offset: bigint;
  readonly caller: Caller;
  /** The request's FUSE unique id (for logs). */
  readonly unique: bigint;
  /** True once answered, interrupted-and-answered, or the connection ended. */
  readonly settled: boolean;
  /** True once the kernel sent FUSE_INTERRUPT for this request. */
  readonly interrupted: boolean;
  /**
   * Answers with these bytes; returns false (and sends nothing) if already settled. More than
   * `size` bytes is a handler bug: the request fails with EIO instead.
   */
  reply(data: Uint8Array): boolean;
  /** Answers with an error; returns false if already settled. */
  error(e: Errno | ErrnoName | number): boolean;
  /**
   * Replaces the default interrupt behaviour (complete with EINTR). The callback runs once, when
   * FUSE_INTERRUPT arrives for this request; it should settle the request.
   */
  onInterrupt(cb: () => void): void;
}

export interface FuseFileHandler {
  /** Returns a handler-chosen file handle (any safe integer), or an error such as EBUSY/EBADF. */
  open(req: OpenRequest): number | Errno;
  /** Answer through `req`, now or later. */
  read(fh: number, req: PendingRead): void;
  /** Returns the number of bytes accepted (normally data.length) or an error. */
  write(fh: number, data: Buffer, offset: bigint, caller: Caller): number | Errno;
  /**
   * Current readiness (POLL* bits) for `events`. Keep `wake` and call it when readiness may have
   * changed. Without this method, files report DEFAULT_POLLMASK (always ready), like the kernel does
   * for file systems without poll support.
   */
  poll?(fh: number, events: number, wake: () => void): number | Errno;
  /** Called on every close(2) of a descriptor for this open file. */
  flush?(fh: number, caller: Caller): void;
  /** Last close of the open file (or end of the connection). */
  release(fh: number): void;
}

/** Ownership and permission bits of a file (the type is always a regular file; see session.ts). */
export interface FileAttributes {
  /** Permission bits, default 0o600. */
  readonly perm?: number;
  /** Default: the uid/gid of the serving process. */
  readonly uid?: number;
  readonly gid?: number;
}

export interface FileSpec {
  readonly handler: FuseFileHandler;
  readonly attr?: FileAttributes;
  /**
   * Open the file as a stream (FOPEN_STREAM): no file position, so read(2) and write(2) on one
   * open file never wait for each other, but pread/pwrite/lseek fail with ESPIPE. Default false.
   *
   * Why this exists: a FUSE file is a regular file to the VFS, and read(2)/write(2) on a regular
   * file take the open file's position lock (f_pos_lock) whenever the description is shared by
   * several threads or processes. So by default, while one thread or process is blocked in read(2),
   * a write(2) on the same open file from another thread or process waits in the VFS until the read
   * returns (pwrite(2) does not). A real hvutil character device has neither restriction. Choose per
   * daemon: `stream: true` for readers that write(2) from another thread/process while a read(2) is
   * pending; the default for daemons that use pread/pwrite (the upstream fcopy daemon).
   */
  readonly stream?: boolean;
}

/** A directory listing as given to mountFuse / FuseSession: name → handler (or handler + attributes). */
export type FileTable =
  ReadonlyMap<string, FuseFileHandler | FileSpec> | Iterable<readonly [string, FuseFileHandler | FileSpec]>;

export function toFileSpec(v: FuseFileHandler | FileSpec): FileSpec {
  return typeof (v as FuseFileHandler).open === 'function'
    ? { handler: v as FuseFileHandler }
    : (v as FileSpec);
}

/** Names a flat directory can hold: no '/', no NUL, not '.'/'..', 1..255 bytes. */
export function validFileName(name: string): boolean {
  const bytes = Buffer.byteLength(name, 'utf8');
  return bytes > 0 && bytes <= 255 && name !== '.' && name !== '..' && !/[/\0]/.test(name);
}
