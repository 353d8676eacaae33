/**
 * The real `BlockDevices`: stat(2) of the mount source for its device number, and sysfs for the
 * loop check, as upstream does it (`/sys/dev/block/M:m/loop`, then each `slaves/` entry,
 * recursively). A partition of a loop device (`loop0p1`, which has no `loop/` of its own) is
 * recognised through its parent disk. Only /dev and /sys are read: neither is ever frozen, and
 * nothing here writes, so these synchronous calls cannot wait on a frozen filesystem.
 */
import { accessSync, constants, existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { BlockDevices } from './mounts.js';

/** glibc's major()/minor() of a 64-bit dev_t. */
export function splitDev(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

function code(e: unknown): string | undefined {
  return (e as { code?: string } | undefined)?.code;
}

/** How deep a stack of devices (dm on md on partitions …) is followed. */
const MAX_DEPTH = 16;

export class SysfsBlockDevices implements BlockDevices {
  /** @param sysRoot the sysfs mount point (tests point it at a fake tree). */
  constructor(private readonly sysRoot = '/sys') {}

  deviceNumber(source: string): { major: number; minor: number } {
    const st = statSync(source, { bigint: true });
    if (!st.isBlockDevice()) {
      throw Object.assign(new Error(`${source} is not a block device`), { code: 'ENOTBLK' });
    }
    return splitDev(st.rdev);
  }

  isLoopBacked(major: number, minor: number): boolean {
    return this.isLoop(join(this.sysRoot, 'dev', 'block', `${major}:${minor}`), 0);
  }

  private isLoop(dir: string, depth: number): boolean {
    if (depth > MAX_DEPTH) return false;
    try {
      accessSync(join(dir, 'loop'), constants.R_OK | constants.X_OK);
      return true;
    } catch (e) {
      if (code(e) !== 'ENOENT') throw new Error(`Can't access: ${join(dir, 'loop')}: ${code(e) ?? e}`);
    }
    // A partition: its disk is the parent directory (loop0/loop0p1).
    if (existsSync(join(dir, 'partition'))) {
      let parent: string | undefined;
      try {
        parent = dirname(realpathSync(dir));
      } catch {
        parent = undefined;
      }
      if (parent && this.isLoop(parent, depth + 1)) return true;
    }
    let slaves: string[];
    try {
      slaves = readdirSync(join(dir, 'slaves'));
    } catch (e) {
      if (code(e) === 'ENOENT' || code(e) === 'ENOTDIR') return false;
      throw new Error(`Can't opendir: ${join(dir, 'slaves')}: ${code(e) ?? e}`);
    }
    return slaves.some((s) => this.isLoop(join(dir, 'slaves', s), depth + 1));
  }
}
