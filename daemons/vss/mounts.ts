/**
 * Which filesystems a FREEZE touches, and in what order. Pure: the mount table comes in as text
 * (/proc/self/mountinfo, or /proc/mounts as upstream reads it) and the block-device questions go
 * to a `BlockDevices` probe, so tests give a fake table and a fake sysfs.
 *
 * The filters are upstream's (tools/hv/hv_vss_daemon.c, daemons.md §3.4): a source not under
 * /dev/, a read-only mount, vfat, and a device that is, or is stacked on, a loop device (found by
 * walking `slaves/` in sysfs) are skipped, and the root filesystem is frozen last. Additions (see
 * daemons/vss/README.md): FUSE-served filesystems (fuseblk, e.g. ntfs-3g) are skipped, because
 * their server process may sit on a filesystem we freeze; a partition of a loop device counts as
 * loop-backed (upstream misses it); and a filesystem mounted several times (bind mounts, btrfs
 * subvolumes) is one target, frozen once, so "root last" holds for the root's superblock even when
 * part of it is bind-mounted elsewhere.
 */

/** One line of /proc/self/mountinfo (proc(5)). */
export interface MountEntry {
  readonly id: number;
  readonly parentId: number;
  /** st_dev of the superblock: the same for every mount of one filesystem. */
  readonly major: number;
  readonly minor: number;
  /** The directory of the filesystem that is mounted here ("/" for a whole filesystem). */
  readonly root: string;
  readonly mountPoint: string;
  /** Per-mount options (ro/rw, nosuid, …). */
  readonly options: readonly string[];
  readonly fsType: string;
  /** e.g. /dev/sda1, tmpfs, overlay. */
  readonly source: string;
  /** Superblock options (ro/rw, errors=…, …). */
  readonly superOptions: readonly string[];
}

/** `\040`-style octal escapes of the kernel's mount tables. */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse /proc/self/mountinfo. Malformed lines are skipped (the kernel writes none). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0 || f.length < sep + 4) continue;
    const [maj, min] = (f[2] ?? '').split(':');
    const id = Number(f[0]);
    const parentId = Number(f[1]);
    const major = Number(maj);
    const minor = Number(min);
    if (![id, parentId, major, minor].every(Number.isInteger)) continue;
    out.push({
      id,
      parentId,
      major,
      minor,
      root: unescapeMountField(f[3] ?? ''),
      mountPoint: unescapeMountField(f[4] ?? ''),
      options: (f[5] ?? '').split(','),
      fsType: unescapeMountField(f[sep + 1] ?? ''),
      source: unescapeMountField(f[sep + 2] ?? ''),
      superOptions: (f[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

/**
 * Parse /proc/mounts (what upstream reads with getmntent). It has no device numbers; each line is
 * its own device key (`line:N`), so nothing is merged and the behaviour is upstream's.
 */
export function parseProcMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  let n = 0;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4 || line.trim() === '') continue;
    n++;
    const options = (f[3] ?? '').split(',');
    out.push({
      id: n,
      parentId: 0,
      major: -1,
      minor: n,
      root: '/',
      mountPoint: unescapeMountField(f[1] ?? ''),
      options,
      fsType: unescapeMountField(f[2] ?? ''),
      source: unescapeMountField(f[0] ?? ''),
      superOptions: options,
    });
  }
  return out;
}

/** The answers about block devices the filters need (sysfs and /dev in production). */
export interface BlockDevices {
  /** stat(source).st_rdev as major/minor; throws (with `code`) when the source cannot be stat'ed. */
  deviceNumber(source: string): { major: number; minor: number };
  /**
   * True when the block device is a loop device, a partition of one, or stacked (device-mapper,
   * md, …) on one, walking /sys/dev/block/M:m/slaves. Throws when sysfs cannot be read.
   */
  isLoopBacked(major: number, minor: number): boolean;
}

export type SkipReason = 'not-a-block-device' | 'read-only' | 'vfat' | 'fuse' | 'loop-backed';

export const SKIP_REASONS: Readonly<Record<SkipReason, string>> = {
  'not-a-block-device': 'the source is not under /dev/',
  'read-only': 'mounted read-only: nothing to flush',
  vfat: 'vfat cannot be frozen',
  fuse: 'served by a FUSE process that may need a frozen filesystem',
  'loop-backed': 'on a loop device: its backing file may be on a frozen filesystem (deadlock)',
};

/** One filesystem to freeze: a superblock, reached through one of its mount points. */
export interface FreezeTarget {
  /** Where it is frozen and thawed (the first eligible mount of the superblock, or `/`). */
  readonly mountPoint: string;
  /** `major:minor` of the superblock (mountinfo), or `line:N` for /proc/mounts. */
  readonly device: string;
  readonly source: string;
  readonly fsType: string;
  /** Its other eligible mount points (bind mounts, subvolumes), not frozen separately. */
  readonly alsoAt: readonly string[];
}

export interface SkippedMount {
  readonly mountPoint: string;
  readonly source: string;
  readonly fsType: string;
  readonly reason: SkipReason;
}

/** Something the enumeration could not find out (upstream's "Can't stat/access" errors). */
export interface MountProblem {
  readonly mountPoint: string;
  readonly source: string;
  readonly message: string;
}

export interface FreezePlan {
  /** In freeze order: mount-table order, the root filesystem last. Thaw is the reverse. */
  readonly targets: readonly FreezeTarget[];
  readonly skipped: readonly SkippedMount[];
  readonly problems: readonly MountProblem[];
}

function deviceKey(e: MountEntry): string {
  return e.major < 0 ? `line:${e.minor}` : `${e.major}:${e.minor}`;
}

function isReadOnly(e: MountEntry): boolean {
  return e.options.includes('ro') || e.superOptions.includes('ro');
}

function isFuse(fsType: string): boolean {
  return (
    fsType === 'fuse' || fsType === 'fuseblk' || fsType.startsWith('fuse.') || fsType.startsWith('fuseblk.')
  );
}

/** Why upstream (or we) would not freeze this mount, before asking sysfs. */
function staticSkip(e: MountEntry): SkipReason | undefined {
  if (!e.source.startsWith('/dev/')) return 'not-a-block-device';
  if (isFuse(e.fsType)) return 'fuse';
  return undefined;
}

/**
 * Apply the filters to a mount table and group the mounts by superblock. Upstream's order of
 * checks is kept (the loop check before `ro` and vfat, and a failed stat does not skip the mount).
 */
export function planFreeze(entries: readonly MountEntry[], devices: BlockDevices): FreezePlan {
  const skipped: SkippedMount[] = [];
  const problems: MountProblem[] = [];
  const groups = new Map<string, { first: MountEntry; at: string[]; root: boolean }>();
  const loopCache = new Map<string, boolean>();
  for (const e of entries) {
    const skip = (reason: SkipReason) =>
      skipped.push({ mountPoint: e.mountPoint, source: e.source, fsType: e.fsType, reason });
    const early = staticSkip(e);
    if (early) {
      skip(early);
      continue;
    }
    let loop = false;
    try {
      const { major, minor } = devices.deviceNumber(e.source);
      const key = `${major}:${minor}`;
      let cached = loopCache.get(key);
      if (cached === undefined) {
        cached = devices.isLoopBacked(major, minor);
        loopCache.set(key, cached);
      }
      loop = cached;
    } catch (err) {
      problems.push({
        mountPoint: e.mountPoint,
        source: e.source,
        message: err instanceof Error ? err.message : String(err),
      });
    }
    if (loop) {
      skip('loop-backed');
      continue;
    }
    if (isReadOnly(e)) {
      skip('read-only');
      continue;
    }
    if (e.fsType === 'vfat') {
      skip('vfat');
      continue;
    }
    const key = deviceKey(e);
    const g = groups.get(key);
    if (g) {
      g.at.push(e.mountPoint);
      if (e.mountPoint === '/') g.root = true;
    } else {
      groups.set(key, { first: e, at: [e.mountPoint], root: e.mountPoint === '/' });
    }
  }
  const targets: FreezeTarget[] = [];
  let rootTarget: FreezeTarget | undefined;
  for (const [device, g] of groups) {
    const mountPoint = g.root ? '/' : g.first.mountPoint;
    const t: FreezeTarget = {
      mountPoint,
      device,
      source: g.first.source,
      fsType: g.first.fsType,
      alsoAt: g.at.filter((m) => m !== mountPoint),
    };
    if (g.root) rootTarget = t;
    else targets.push(t);
  }
  if (rootTarget) targets.push(rootTarget);
  return { targets, skipped, problems };
}

/**
 * The thaw order for a set of targets given in freeze order: the reverse, so the root
 * filesystem (frozen last) is thawed first and the rest of userspace recovers soonest.
 */
export function thawOrder<T>(freezeOrder: readonly T[]): T[] {
  return [...freezeOrder].reverse();
}
