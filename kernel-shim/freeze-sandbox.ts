/**
 * A root file system for freeze tests, in which no freeze can reach a file system of the machine.
 *
 * A VSS daemon freezes every mount whose source is a /dev block device, so a mount namespace alone
 * is not enough (the machine's root disk is still in its mount table, and so is any bind mount of
 * a host directory). This root is built only from: a tmpfs (the root itself, /dev, /sys, /tmp,
 * /run), read-only-in-spirit overlays of host directories (source `overlay`: skipped by the
 * daemons, and overlayfs refuses FIFREEZE, so nothing propagates to the lower file system), /proc,
 * and our own loop-mounted ext4/xfs images. The command is pivot_root'ed into it in a namespace of
 * its own, the old root detached, and a guard refuses to run it if any block-device mount other
 * than our loop devices is still visible. /sys is an empty tmpfs, so the daemons' loop-device
 * check finds nothing and the images are frozen like disks.
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmdirSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fifreeze, fithaw } from '../daemons/common/libc.js';
import { inPrivateMountNamespace } from './sandbox.js';
import { runSetupCommand } from './setup-command.js';

export type FsType = 'ext4' | 'xfs';

export interface FreezeSandboxOptions {
  /** The mount namespace this sandbox must not be in (the creator's, recorded before unshare). */
  parentNamespace: string;
  /** Images to create and mount, at `/mnt/<type>` unless named. */
  filesystems: readonly { type: FsType; mountPoint?: string; sizeMiB?: number }[];
  /** Host directories visible in the root through overlays (default /usr, /etc). */
  hostDirs?: readonly string[];
  /**
   * Put the root itself on a loop-mounted image of this type (default: a tmpfs), so that `/` is
   * a filesystem a VSS daemon freezes (last). /run is then a tmpfs of its own, as on a real
   * system. The root appears first in `mounts`, with mount point `/`.
   */
  rootImage?: FsType;
  /** Size of the root image (default 64 MiB for ext4, 320 MiB for xfs). */
  rootSizeMiB?: number;
}

export interface SandboxMount {
  readonly type: FsType;
  /** Inside the sandbox, e.g. /mnt/ext4. */
  readonly mountPoint: string;
  /** The same directory as seen by the creator (root + mountPoint). */
  readonly hostPath: string;
  /** e.g. /dev/loop3. */
  readonly device: string;
}

export interface FreezeSandbox {
  readonly root: string;
  readonly mounts: readonly SandboxMount[];
  /** argv that runs `command` pivoted into the root. */
  wrap(command: readonly string[]): string[];
  /** Non-destructive: true if the file system is frozen now (probed with FIFREEZE, undone at once). */
  isFrozen(m: SandboxMount): boolean;
  /** Thaw every image; returns the mount points that were still frozen. */
  thawAll(): string[];
  cleanup(): void;
}

function run(cmd: string, args: readonly string[]): string {
  const r = runSetupCommand(cmd, args);
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
  return r.stdout;
}

/** The pivot + guard + exec script run by `sh -c` in the command's own namespace. */
const PIVOT_SCRIPT = `
set -e
cd "$HV_SANDBOX_ROOT"
# .oldroot is made when the root is built and kept: the root may be a frozen image, where even a
# mkdir of an existing directory would block.
[ -d .oldroot ] || mkdir .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
# Refuse if a block-device file system other than our loop devices is visible.
awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { src = $(i + 2); break }
       split($3, d, ":");
       if ((d[1] != 0 && d[1] != 7) || (src ~ /^\\/dev\\// && src !~ /^\\/dev\\/loop[0-9]+$/)) {
         print "freeze sandbox: refusing, a host file system is visible: " $5 " (" src ", " $3 ")" > "/dev/stderr"; bad = 1 } }
     END { exit bad }' /proc/self/mountinfo
exec "$@"
`;

/** Create a sparse image of `type` in `path` and make its filesystem. */
function makeImage(path: string, type: FsType, sizeMiB: number): void {
  writeFileSync(path, '');
  truncateSync(path, sizeMiB * 1024 * 1024);
  run(type === 'xfs' ? 'mkfs.xfs' : 'mkfs.ext4', type === 'xfs' ? ['-q', path] : ['-q', '-F', path]);
}

/** Loop-mount `image` on `target` and return the loop device (e.g. /dev/loop3). */
function loopMount(image: string, target: string): string {
  // -o loop sets autoclear: the loop device detaches when the last mount of it goes.
  run('mount', ['-o', 'loop', image, target]);
  const line = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[1] === target);
  const device = line?.split(' ')[0] ?? '';
  if (!/^\/dev\/loop\d+$/.test(device))
    throw new Error(`${image}: not mounted from a loop device (${device})`);
  return device;
}

/** The block device node of `device` inside the root's /dev. */
function makeDeviceNode(root: string, device: string): void {
  const st = spawnSync('stat', ['-c', '%t %T', device], { encoding: 'utf8' }).stdout.trim().split(' ');
  run('mknod', [
    '-m',
    '0660',
    join(root, device),
    'b',
    String(parseInt(st[0] ?? '7', 16)),
    String(parseInt(st[1] ?? '0', 16)),
  ]);
}

export function buildFreezeSandbox(opts: FreezeSandboxOptions): FreezeSandbox {
  if (!inPrivateMountNamespace(opts.parentNamespace)) {
    throw new Error('refusing to build the freeze sandbox outside a private mount namespace');
  }
  run('mount', ['--make-rprivate', '/']);
  const root = mkdtempSync(join(tmpdir(), 'hv-freeze-root-'));
  const scratch = join(root, '.scratch');
  const mounts: SandboxMount[] = [];
  let rootDevice: string | undefined;
  if (opts.rootImage) {
    // The image lives in a tmpfs of its own, moved under the root once the root is mounted.
    const outer = mkdtempSync(join(tmpdir(), 'hv-freeze-scratch-'));
    run('mount', ['-t', 'tmpfs', '-o', 'mode=0700', 'hv-freeze-scratch', outer]);
    const image = join(outer, `root-${opts.rootImage}.img`);
    makeImage(image, opts.rootImage, opts.rootSizeMiB ?? (opts.rootImage === 'xfs' ? 320 : 64));
    rootDevice = loopMount(image, root);
    run('chmod', ['0755', root]);
    mkdirSync(scratch, { mode: 0o700 });
    run('mount', ['--move', outer, scratch]);
    rmdirSync(outer);
    mounts.push({ type: opts.rootImage, mountPoint: '/', hostPath: root, device: rootDevice });
  } else {
    run('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'hv-freeze-root', root]);
    mkdirSync(scratch, { mode: 0o755 });
    run('mount', ['-t', 'tmpfs', '-o', 'mode=0700', 'hv-freeze-scratch', scratch]);
  }
  for (const d of ['.oldroot', 'proc', 'sys', 'dev', 'tmp', 'run', 'mnt', 'var/lib/hyperv']) {
    mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
  }
  if (opts.rootImage) {
    run('chmod', ['1777', join(root, 'tmp')]);
    run('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'hv-freeze-run', join(root, 'run')]);
  }

  // Host directories as overlays (the lower side is never written).
  const hostDirs = opts.hostDirs ?? ['/usr', '/etc'];
  hostDirs.forEach((dir, i) => {
    const upper = join(scratch, `o${i}.upper`);
    const work = join(scratch, `o${i}.work`);
    mkdirSync(upper);
    mkdirSync(work);
    const target = join(root, dir);
    mkdirSync(target, { recursive: true });
    run('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${dir},upperdir=${upper},workdir=${work}`,
      target,
    ]);
  });
  // Debian's merged /usr: /bin, /sbin, /lib, /lib64 are links into it.
  for (const l of ['bin', 'sbin', 'lib', 'lib64']) symlinkSync(`usr/${l}`, join(root, l));
  run('mount', ['-t', 'proc', 'proc', join(root, 'proc')]);
  run('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'hv-freeze-sys', join(root, 'sys')]);
  run('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'hv-freeze-dev', join(root, 'dev')]);
  for (const [name, minor] of [
    ['null', 3],
    ['zero', 5],
    ['random', 8],
    ['urandom', 9],
  ] as const) {
    run('mknod', ['-m', '0666', join(root, 'dev', name), 'c', '1', String(minor)]);
  }
  mkdirSync(join(root, 'dev', 'vmbus'), { mode: 0o755 });
  mkdirSync(join(root, 'dev', 'shm'), { mode: 0o1777 });
  if (rootDevice) makeDeviceNode(root, rootDevice);

  for (const fs of opts.filesystems) {
    const mountPoint = fs.mountPoint ?? `/mnt/${fs.type}`;
    const image = join(scratch, `${fs.type}-${mounts.length}.img`);
    makeImage(image, fs.type, fs.sizeMiB ?? (fs.type === 'xfs' ? 320 : 32));
    const hostPath = join(root, mountPoint);
    mkdirSync(hostPath, { recursive: true });
    const device = loopMount(image, hostPath);
    makeDeviceNode(root, device);
    mounts.push({ type: fs.type, mountPoint, hostPath, device });
  }

  const withFd = <T>(path: string, fn: (fd: number) => T): T => {
    const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      return fn(fd);
    } finally {
      closeSync(fd);
    }
  };

  const sandbox: FreezeSandbox = {
    root,
    mounts,
    wrap: (command) => [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      PIVOT_SCRIPT,
      'hv-freeze-sandbox',
      ...command,
    ],
    isFrozen: (m) =>
      withFd(m.hostPath, (fd) => {
        try {
          fifreeze(fd);
        } catch (e) {
          if ((e as { code?: string }).code === 'EBUSY') return true;
          throw e;
        }
        fithaw(fd);
        return false;
      }),
    thawAll: () =>
      mounts
        .filter((m) =>
          withFd(m.hostPath, (fd) => {
            try {
              fithaw(fd);
              return true;
            } catch (e) {
              if ((e as { code?: string }).code === 'EINVAL') return false;
              throw e;
            }
          }),
        )
        .map((m) => m.mountPoint),
    cleanup: () => {
      sandbox.thawAll();
      for (const m of [...mounts].reverse()) if (m.hostPath !== root) runSetupCommand('umount', [m.hostPath]);
      runSetupCommand('umount', ['-R', '-l', root]);
      try {
        rmdirSync(root);
      } catch {
        // busy until the namespace ends; only an empty directory can remain
      }
    },
  };
  return sandbox;
}

/** The environment the wrapped command needs (the root it pivots into). */
export function freezeSandboxEnv(sandbox: FreezeSandbox): Record<string, string> {
  return { HV_SANDBOX_ROOT: sandbox.root };
}
