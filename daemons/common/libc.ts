/**
 * The few libc calls Node lacks, through koffi (prebuilt Node-API FFI, no compiler, loads on Node 18
 * and 20): poll(2), fcntl(2) open-file-description record locks, flock(2), inotify(7), ioctl(2)
 * for FIFREEZE/FITHAW, prctl(2), mount(2). Every call returns a result or throws an ErrnoError
 * with the errno; the blocking ones (poll with a timeout, F_OFD_SETLKW) are offered in async
 * form, run off the main thread with a bounded wait so the event loop and process exit are never
 * held up.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// koffi is CommonJS; loaded lazily so that importing this module costs nothing until used.
type Koffi = typeof import('koffi');
let koffiModule: Koffi | undefined;
function koffi(): Koffi {
  koffiModule ??= require('koffi') as Koffi;
  return koffiModule;
}

/** poll(2) event bits as Linux defines them (also the EPOLL* values, and what FUSE carries). */
export const POLLIN = 0x001;
export const POLLPRI = 0x002;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
export const POLLRDNORM = 0x040;
export const POLLWRNORM = 0x100;
/** sizeof(struct pollfd): int fd, short events, short revents. */
const POLLFD_SIZE = 8;

export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const F_GETLK = 5;
export const F_SETLK = 6;
export const F_SETLKW = 7;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_OFD_SETLKW = 38;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** _IOWR('X', 119, int) and _IOWR('X', 120, int). */
export const FIFREEZE = 0xc0045877;
export const FITHAW = 0xc0045878;

/** inotify(7): the flags of inotify_init1 and the event bits. */
export const IN_NONBLOCK = 0o4000;
export const IN_CLOEXEC = 0o2000000;
export const IN_MODIFY = 0x2;
export const IN_ATTRIB = 0x4;
export const IN_CLOSE_WRITE = 0x8;
export const IN_MOVED_FROM = 0x40;
export const IN_MOVED_TO = 0x80;
export const IN_CREATE = 0x100;
export const IN_DELETE = 0x200;
export const IN_DELETE_SELF = 0x400;
export const IN_MOVE_SELF = 0x800;
export const IN_UNMOUNT = 0x2000;
export const IN_Q_OVERFLOW = 0x4000;
export const IN_IGNORED = 0x8000;
export const IN_ONLYDIR = 0x1000000;

export const PR_SET_NAME = 15;
export const PR_SET_PDEATHSIG = 1;

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  4: 'EINTR',
  5: 'EIO',
  9: 'EBADF',
  11: 'EAGAIN',
  12: 'ENOMEM',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  19: 'ENODEV',
  22: 'EINVAL',
  25: 'ENOTTY',
  28: 'ENOSPC',
  30: 'EROFS',
  35: 'EDEADLK',
  38: 'ENOSYS',
  95: 'EOPNOTSUPP',
};

/** A failed libc call: `errno` is the number, `code` its name, as in Node's own errors. */
export class ErrnoError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail?: string) {
    const code = ERRNO_NAMES[errno] ?? `E${errno}`;
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${code} (errno ${errno})`);
    this.name = 'ErrnoError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

interface Flock {
  l_type: number;
  l_whence: number;
  l_start: number | bigint;
  l_len: number | bigint;
  l_pid: number;
}

interface Bindings {
  /** poll(2) on a raw `struct pollfd` array (8 bytes each: int fd, short events, short revents). */
  poll: ((fds: Buffer, nfds: number, timeout: number) => number) & {
    async(fds: Buffer, nfds: number, timeout: number, cb: (err: unknown, res: number) => void): void;
  };
  fcntlLock: ((fd: number, cmd: number, lock: Flock) => number) & {
    async(fd: number, cmd: number, lock: Flock, cb: (err: unknown, res: number) => void): void;
  };
  flock: (fd: number, op: number) => number;
  inotifyInit1: (flags: number) => number;
  inotifyAddWatch: (fd: number, path: string, mask: number) => number;
  ioctlInt: (fd: number, req: number, arg: number) => number;
  prctl: (option: number, arg2: string | number, a3: number, a4: number, a5: number) => number;
  mount: (source: string, target: string, type: string, flags: number, data: string) => number;
  errno: () => number;
}

let bindings: Bindings | undefined;
function libc(): Bindings {
  if (bindings) return bindings;
  const k = koffi();
  const lib = k.load('libc.so.6');
  // struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (32 bytes)
  k.struct('hv_flock', {
    l_type: 'short',
    l_whence: 'short',
    l_start: 'int64_t',
    l_len: 'int64_t',
    l_pid: 'int',
  });
  const errnoLocation = lib.func('int *__errno_location(void)');
  bindings = {
    // The pollfd array is passed as raw memory: no conversion of JS objects on every call (a
    // device loop polls once per message).
    poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)') as Bindings['poll'],
    fcntlLock: lib.func('fcntl', 'int', [
      'int',
      'int',
      k.inout(k.pointer('hv_flock')),
    ]) as Bindings['fcntlLock'],
    flock: lib.func('int flock(int fd, int operation)') as Bindings['flock'],
    inotifyInit1: lib.func('int inotify_init1(int flags)') as Bindings['inotifyInit1'],
    inotifyAddWatch: lib.func(
      'int inotify_add_watch(int fd, str pathname, uint32_t mask)',
    ) as Bindings['inotifyAddWatch'],
    ioctlInt: lib.func('ioctl', 'int', ['int', 'unsigned long', 'long']) as Bindings['ioctlInt'],
    prctl: lib.func(
      'int prctl(int option, str arg2, unsigned long a3, unsigned long a4, unsigned long a5)',
    ) as Bindings['prctl'],
    mount: lib.func(
      'int mount(str source, str target, str type, unsigned long flags, str data)',
    ) as Bindings['mount'],
    errno: () => k.decode(errnoLocation(), 'int') as number,
  };
  return bindings;
}

function check(syscall: string, rc: number, detail?: string): number {
  if (rc < 0) throw new ErrnoError(syscall, libc().errno(), detail);
  return rc;
}

/** poll(2) one fd without blocking (timeout 0): the revents mask. */
export function pollNow(fd: number, events = POLLIN): number {
  return pollSync(fd, events, 0);
}

/**
 * poll(2) one fd on the main thread for at most `timeoutMs` (keep it to a few milliseconds: the
 * event loop waits meanwhile). Returns revents, 0 on timeout or EINTR.
 */
export function pollSync(fd: number, events: number, timeoutMs: number): number {
  const pfd = pollFd(syncPollFd, fd, events);
  const rc = libc().poll(pfd, 1, timeoutMs);
  if (rc < 0) {
    const e = libc().errno();
    if (e === 4) return 0;
    throw new ErrnoError('poll', e);
  }
  return rc === 0 ? 0 : pfd.readUInt16LE(6);
}

/** The `struct pollfd` of pollSync (one call at a time on the main thread). */
const syncPollFd = Buffer.alloc(POLLFD_SIZE);

/** Fill `pfd` as a `struct pollfd` for `fd` and `events`, revents cleared. */
function pollFd(pfd: Buffer, fd: number, events: number): Buffer {
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(events, 4);
  pfd.writeInt16LE(0, 6);
  return pfd;
}

/**
 * poll(2) one fd for up to `timeoutMs` (keep it short: the call holds a thread-pool thread while it
 * waits), off the main thread. Resolves with revents (0 on timeout).
 */
export function pollAsync(fd: number, events: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    // Its own pollfd: the call runs on a thread-pool thread while the main thread goes on.
    const pfd = pollFd(Buffer.alloc(POLLFD_SIZE), fd, events);
    libc().poll.async(pfd, 1, timeoutMs, (err, rc) => {
      if (err) reject(err);
      else if (rc < 0) {
        const e = libc().errno();
        if (e === 4)
          resolve(0); // EINTR: report a timeout, the caller polls again
        else reject(new ErrnoError('poll', e));
      } else resolve(rc === 0 ? 0 : pfd.readUInt16LE(6));
    });
  });
}

function wholeFile(type: number): Flock {
  return { l_type: type, l_whence: 0, l_start: 0, l_len: 0, l_pid: 0 };
}

/**
 * Try to take (F_WRLCK / F_RDLCK) or drop (F_UNLCK) a whole-file open-file-description lock
 * (F_OFD_SETLK). Such locks conflict with the classic POSIX locks of other processes (the C
 * daemon's) and belong to the open file, so closing another fd of the same file does not drop them.
 * Returns false when another holder has a conflicting lock.
 */
export function ofdLock(fd: number, type: number): boolean {
  const rc = libc().fcntlLock(fd, F_OFD_SETLK, wholeFile(type));
  if (rc === 0) return true;
  const e = libc().errno();
  if (e === 11 || e === 13) return false; // EAGAIN / EACCES: held elsewhere
  throw new ErrnoError('fcntl(F_OFD_SETLK)', e);
}

/** Who holds a conflicting lock, per F_OFD_GETLK: undefined when the lock could be taken. */
export function ofdTestLock(fd: number, type = F_WRLCK): { type: number; pid: number } | undefined {
  const lock = wholeFile(type);
  check('fcntl(F_OFD_GETLK)', libc().fcntlLock(fd, F_OFD_GETLK, lock));
  return lock.l_type === F_UNLCK ? undefined : { type: lock.l_type, pid: lock.l_pid };
}

/** flock(2); with LOCK_NB, false when held elsewhere. */
export function flock(fd: number, operation: number): boolean {
  const rc = libc().flock(fd, operation);
  if (rc === 0) return true;
  const e = libc().errno();
  if (e === 11 && operation & LOCK_NB) return false;
  throw new ErrnoError('flock', e);
}

/** inotify_init1(2) with IN_NONBLOCK | IN_CLOEXEC: the descriptor. Throws ErrnoError (EMFILE, …). */
export function inotifyInit(): number {
  return check('inotify_init1', libc().inotifyInit1(IN_NONBLOCK | IN_CLOEXEC));
}

/** inotify_add_watch(2): the watch descriptor. Throws ErrnoError (ENOENT, ENOSPC, …). */
export function inotifyAddWatch(fd: number, path: string, mask: number): number {
  return check('inotify_add_watch', libc().inotifyAddWatch(fd, path, mask >>> 0), path);
}

/** ioctl(fd, FIFREEZE, 0) on a directory fd of the mount point. Throws ErrnoError (EBUSY if frozen). */
export function fifreeze(fd: number): void {
  check('ioctl(FIFREEZE)', libc().ioctlInt(fd, FIFREEZE, 0));
}

/** ioctl(fd, FITHAW, 0). Throws ErrnoError (EINVAL if not frozen). */
export function fithaw(fd: number): void {
  check('ioctl(FITHAW)', libc().ioctlInt(fd, FITHAW, 0));
}

/**
 * mount(2), as the kernel-shim mounts its FUSE device files (no mount(8): the /dev/fuse descriptor
 * is connected when the call returns). Throws ErrnoError.
 */
export function mountFs(source: string, target: string, type: string, flags: number, data: string): void {
  check('mount', libc().mount(source, target, type, flags, data), target);
}

/** prctl(PR_SET_NAME): the thread name `ps` and `top` show (at most 15 bytes). */
export function setProcessName(name: string): void {
  check('prctl(PR_SET_NAME)', libc().prctl(PR_SET_NAME, name.slice(0, 15), 0, 0, 0));
}
