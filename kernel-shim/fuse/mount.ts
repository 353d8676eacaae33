/**
 * mountFuse: open /dev/fuse, mount it on an empty directory, serve it with a FuseSession, and
 * unmount cleanly.
 *
 * Two readers (MountOptions.reader). The default, "in-process" (stream-channel.ts), reads /dev/fuse
 * in this process's event loop; the kernel refuses a read before the descriptor is connected, so
 * the mount is made with mount(2) itself (the descriptor is connected when it returns) and reading
 * starts right after. It needs maxWrite <= 60 KiB. The "helper" reader (session.ts DevFuseChannel:
 * blocking reads in a helper process) serves larger writes; it mounts with mount(8):
 *   mount -i -n -t fuse.<subtype> -o fd=3,rootmode=40755,user_id=U,group_id=G[,allow_other][,default_permissions] <source> <dir>
 * with our /dev/fuse descriptor as its fd 3 (-i: no mount.fuse helper, which this machine lacks
 * anyway; the kernel resolves the "fuse.<subtype>" type to fuse and shows the subtype in
 * /proc/mounts). That reader is started first, because mount(8) may touch the new mount (which
 * waits for INIT) before it exits. Mounting needs root (CAP_SYS_ADMIN) either way.
 *
 * Unmounting: `umount -l` detaches the mount at once. The kernel ends the connection when the
 * superblock dies, i.e. when no file in it is open any more; then the reader's read(2) fails with
 * ENODEV and the session ends ('unmounted'). If clients still hold files open after
 * `unmountTimeoutMs`, the session is aborted (our /dev/fuse descriptors are closed, the kernel fails
 * every outstanding and future request of that connection) and the handlers get `release` for the
 * files that were open.
 *
 * Process exit: with `unmountOnExit: true`, mountFuse installs
 *   - an 'exit' listener: abort the connection, then `umount -l` synchronously (abort first, so the
 *     unmount can never wait on this dying process);
 *   - SIGINT and SIGTERM listeners: unmount(), then, if no other listener for that signal remains,
 *     re-raise it so the process still dies of the signal (an exit status systemd and shells
 *     understand). Any other listener for the signal is left in charge of exiting.
 * Without the option nothing is installed: the caller owns the process's signal handling.
 *
 * Crash safety: SIGKILL of the serving process cannot be handled. Its /dev/fuse descriptor closes
 * with it (the helper reader notices its stdin reach EOF and kills itself), so the connection is
 * aborted and clients get errors
 * instead of hanging, but the mount itself stays behind ("Transport endpoint is not connected")
 * until someone unmounts it. Running the whole process tree in a private mount namespace
 * (`unshare --mount --propagation private ...`) fixes that: the mount exists only in that namespace
 * and disappears with it when the last process of the tree exits (verified by the test
 * test/kernel-shim/fuse/fuse.test.ts "crash safety").
 */
import { parseMountinfo } from '../../daemons/vss/mounts.js';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { endianness } from 'node:os';
import type { FileTable } from './files.js';
import {
  DEFAULT_MAX_WRITE,
  DevFuseChannel,
  FuseSession,
  type FuseSessionEnd,
  type FuseSessionOptions,
} from './session.js';
import { FUSE_MIN_READ_BUFFER } from './protocol.js';
import { runSetupCommand } from '../setup-command.js';
import { STREAM_MAX_WRITE, StreamFuseChannel } from './stream-channel.js';
import { mountFs } from '../../daemons/common/libc.js';

const MS_NOSUID = 2;
const MS_NODEV = 4;

export interface MountOptions extends FuseSessionOptions {
  /** First field of /proc/mounts (default "hvshim"). */
  readonly source?: string;
  /** File system type is "fuse.<subtype>" (default "hvshim"); "" mounts plain "fuse". */
  readonly subtype?: string;
  /** Let users other than the mounting one use the files (default true). */
  readonly allowOther?: boolean;
  /** Let the kernel check permission bits (default true; the handlers never see EACCES cases). */
  readonly defaultPermissions?: boolean;
  /** Install exit/SIGINT/SIGTERM listeners that unmount (default false; see the file comment). */
  readonly unmountOnExit?: boolean;
  /** How long unmount() waits for clients to close their files before aborting (default 2000). */
  readonly unmountTimeoutMs?: number;
  /** How long mountFuse waits for the kernel's INIT (default 10000). */
  readonly initTimeoutMs?: number;
  /** Default "/dev/fuse". */
  readonly devicePath?: string;
  /**
   * How /dev/fuse is read: "in-process" (StreamFuseChannel, epoll in this process's event loop;
   * needs maxWrite <= STREAM_MAX_WRITE) or "helper" (DevFuseChannel, blocking reads in a helper
   * process). Default: in-process when maxWrite allows it.
   */
  readonly reader?: 'in-process' | 'helper';
}

export interface FuseMount {
  /** The mount point (real path). */
  readonly dir: string;
  readonly fsType: string;
  readonly session: FuseSession;
  /** Pid of the helper process that reads /dev/fuse (see session.ts). */
  readonly readerPid: number | undefined;
  /** Idempotent: detaches the mount and resolves when the connection has ended. */
  unmount(): Promise<FuseSessionEnd>;
}

/** Mount points of this process's mount namespace (parsed as the VSS daemon parses them). */
export function mountPoints(): string[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).map((m) => m.mountPoint);
}

export function isMountPoint(dir: string): boolean {
  return mountPoints().includes(dir);
}

function run(cmd: string, args: string[], extraFd?: number, timeoutMs = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    // detached: its own process group, so a stop signal sent to the caller's group cannot cut it short
    const child = spawn(cmd, args, {
      detached: true,
      stdio: extraFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe', extraFd],
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? code}): ${out.trim()}`));
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function checkMountDir(dir: string): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    throw new Error(`mount point ${dir} does not exist`);
  }
  if (!statSync(real).isDirectory()) throw new Error(`mount point ${real} is not a directory`);
  if (real === '/') throw new Error('refusing to mount on /');
  if (readdirSync(real).length > 0)
    throw new Error(`refusing to mount on ${real}: the directory is not empty`);
  if (isMountPoint(real)) throw new Error(`refusing to mount on ${real}: something is already mounted there`);
  return real;
}

/**
 * Mounts `files` as a flat directory on `dir`, which must be an existing empty directory that is
 * not a mount point. Resolves once the kernel's INIT has been answered.
 */
export async function mountFuse(dir: string, files: FileTable, opts: MountOptions = {}): Promise<FuseMount> {
  if (endianness() !== 'LE') throw new Error('the FUSE codecs are little-endian only');
  const devicePath = opts.devicePath ?? '/dev/fuse';
  if (!existsSync(devicePath)) {
    throw new Error(
      `${devicePath} is missing: the kernel needs CONFIG_FUSE_FS (modprobe fuse) and the node must exist`,
    );
  }
  const real = checkMountDir(dir);
  const uid = opts.uid ?? process.getuid?.() ?? 0;
  const gid = opts.gid ?? process.getgid?.() ?? 0;
  const maxWrite = opts.maxWrite ?? DEFAULT_MAX_WRITE;
  const readSize = Math.max(FUSE_MIN_READ_BUFFER, maxWrite + 4096);

  const reader = opts.reader ?? (maxWrite <= STREAM_MAX_WRITE ? 'in-process' : 'helper');
  if (reader === 'in-process' && maxWrite > STREAM_MAX_WRITE)
    throw new RangeError(`maxWrite ${maxWrite} > ${STREAM_MAX_WRITE}: the in-process reader cannot serve it`);
  const fd = openSync(devicePath, 'r+');
  const channel = reader === 'in-process' ? new StreamFuseChannel(fd) : new DevFuseChannel(fd, readSize);
  let session: FuseSession;
  try {
    session = new FuseSession(channel, files, { ...opts, uid, gid, maxWrite });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  session.start();

  const subtype = opts.subtype ?? 'hvshim';
  const fsType = subtype ? `fuse.${subtype}` : 'fuse';
  const options = [
    'fd=3',
    `rootmode=${(0o040000 | (opts.dirPerm ?? 0o755)).toString(8)}`,
    `user_id=${uid}`,
    `group_id=${gid}`,
    ...((opts.allowOther ?? true) ? ['allow_other'] : []),
    ...((opts.defaultPermissions ?? true) ? ['default_permissions'] : []),
  ].join(',');
  try {
    if (channel instanceof StreamFuseChannel) {
      // mount(2) itself: the descriptor is connected when it returns, and only then may it be read
      // (before, /dev/fuse answers EPERM). The kernel sends INIT once the mount is set up.
      mountFs(
        opts.source ?? 'hvshim',
        real,
        fsType,
        MS_NOSUID | MS_NODEV,
        `${options.replace('fd=3', `fd=${fd}`)}`,
      );
      channel.connected();
    } else {
      await run('mount', ['-i', '-n', '-t', fsType, '-o', options, opts.source ?? 'hvshim', real], fd);
    }
  } catch (err) {
    session.abort();
    throw err;
  }
  try {
    await withTimeout(session.ready, opts.initTimeoutMs ?? 10_000, 'FUSE INIT');
  } catch (err) {
    session.abort();
    runSetupCommand('umount', ['-i', '-l', real], { stdio: 'ignore' });
    throw err;
  }

  const timeoutMs = opts.unmountTimeoutMs ?? 2000;
  let unmounting: Promise<FuseSessionEnd> | undefined;
  const listeners: { event: 'exit' | NodeJS.Signals; fn: (...a: unknown[]) => void }[] = [];
  const removeListeners = (which: 'signals' | 'all'): void => {
    for (const l of [...listeners]) {
      if (which === 'signals' && l.event === 'exit') continue;
      process.removeListener(l.event, l.fn);
      listeners.splice(listeners.indexOf(l), 1);
    }
  };

  const unmount = (): Promise<FuseSessionEnd> => {
    unmounting ??= (async () => {
      removeListeners('signals');
      try {
        await run('umount', ['-i', '-l', real]);
      } catch (err) {
        if (isMountPoint(real)) {
          session.abort();
          throw err;
        }
      }
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<undefined>((resolve) => {
        timer = setTimeout(resolve, timeoutMs, undefined);
      });
      const end = await Promise.race([session.closed, timedOut]);
      clearTimeout(timer);
      if (!end) session.abort();
      return session.closed;
    })().finally(() => removeListeners('all'));
    return unmounting;
  };

  if (opts.unmountOnExit) {
    const onExit = (): void => {
      session.abort();
      runSetupCommand('umount', ['-i', '-l', real], { stdio: 'ignore' });
    };
    listeners.push({ event: 'exit', fn: onExit });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const fn = (): void => {
        void unmount()
          .catch(() => {})
          .finally(() => {
            if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
          });
      };
      listeners.push({ event: sig, fn });
    }
    for (const l of listeners) process.on(l.event, l.fn);
  }

  const readerPid = channel instanceof DevFuseChannel ? channel.readerPid : undefined;
  return { dir: real, fsType, session, readerPid, unmount };
}
