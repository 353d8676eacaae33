/**
 * The mount table as the daemon sees it: /proc/self/mountinfo (it has the superblock's device
 * number, so bind mounts of one filesystem are recognised), or /proc/mounts, which upstream reads,
 * when mountinfo is unavailable. procfs is never frozen, so a synchronous read cannot block.
 */
import { readFileSync } from 'node:fs';
import { type MountEntry, parseMountinfo, parseProcMounts } from './mounts.js';

export function readMountTable(): MountEntry[] {
  try {
    return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return parseProcMounts(readFileSync('/proc/mounts', 'utf8'));
  }
}
