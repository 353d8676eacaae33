/**
 * The mount-table side of a FREEZE: parsing /proc/self/mountinfo and /proc/mounts, upstream's
 * filters and order, our additions, and the sysfs loop check against a fake sysfs tree.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SysfsBlockDevices, splitDev } from '../../../daemons/vss/block-devices.js';
import {
  type BlockDevices,
  parseMountinfo,
  parseProcMounts,
  planFreeze,
  thawOrder,
} from '../../../daemons/vss/mounts.js';

const MOUNTINFO = `22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs udev rw,size=12334460k
27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw,errors=remount-ro
28 27 8:1 / /boot rw,relatime - ext4 /dev/sda1 rw
29 28 8:15 / /boot/efi rw,relatime - vfat /dev/sda15 rw,fmask=0077
30 27 8:17 / /home rw,relatime - xfs /dev/sdb1 rw,attr2
31 27 8:17 /alice /srv/alice\\040data rw,relatime - xfs /dev/sdb1 rw,attr2
32 27 11:0 / /media/cd ro,relatime - iso9660 /dev/sr0 ro
33 27 7:0 / /mnt/img rw,relatime - ext4 /dev/loop0 rw
34 27 8:33 / /mnt/win rw,relatime - fuseblk /dev/sdc1 rw,user_id=0
35 27 0:45 / /run rw,nosuid - tmpfs tmpfs rw,size=100k
36 27 8:2 /var/lib/x /var/lib/x ro,relatime - ext4 /dev/sda2 rw
37 27 253:0 / /data rw,relatime - ext4 /dev/mapper/vg-data rw
38 27 8:49 / /ro-sb rw,relatime - ext4 /dev/sdd1 ro
`;

/** Devices by source, and which are loop-backed. */
function devices(map: Record<string, [number, number]>, loops: string[] = []): BlockDevices {
  return {
    deviceNumber(source) {
      const d = map[source];
      if (!d) throw Object.assign(new Error(`stat ${source}: ENOENT`), { code: 'ENOENT' });
      return { major: d[0], minor: d[1] };
    },
    isLoopBacked: (major, minor) => loops.includes(`${major}:${minor}`),
  };
}

const DEVS = devices(
  {
    '/dev/sda2': [8, 2],
    '/dev/sda1': [8, 1],
    '/dev/sda15': [8, 15],
    '/dev/sdb1': [8, 17],
    '/dev/sr0': [11, 0],
    '/dev/loop0': [7, 0],
    '/dev/sdc1': [8, 33],
    '/dev/mapper/vg-data': [253, 0],
    '/dev/sdd1': [8, 49],
  },
  ['7:0', '253:0'],
);

describe('parseMountinfo', () => {
  it('reads every field and undoes the octal escapes', () => {
    const m = parseMountinfo(MOUNTINFO);
    expect(m).toHaveLength(14);
    expect(m[2]).toEqual({
      id: 27,
      parentId: 1,
      major: 8,
      minor: 2,
      root: '/',
      mountPoint: '/',
      options: ['rw', 'relatime'],
      fsType: 'ext4',
      source: '/dev/sda2',
      superOptions: ['rw', 'errors=remount-ro'],
    });
    expect(m[6]?.mountPoint).toBe('/srv/alice data');
    expect(m[6]?.root).toBe('/alice');
  });

  it('copes with optional fields before the separator and skips malformed lines', () => {
    const m = parseMountinfo(
      '40 27 8:3 / /x rw shared:1 master:2 - ext4 /dev/sda3 rw\ngarbage\n41 27 x:y / /y rw - ext4 /dev/sda4 rw\n',
    );
    expect(m.map((e) => [e.mountPoint, e.source])).toEqual([['/x', '/dev/sda3']]);
  });
});

describe('parseProcMounts', () => {
  it('reads what upstream reads with getmntent', () => {
    const m = parseProcMounts('/dev/sda2 / ext4 rw,relatime 0 0\n/dev/sdb1 /a\\040b xfs ro 0 0\n');
    expect(m.map((e) => [e.source, e.mountPoint, e.fsType, e.options.includes('ro')])).toEqual([
      ['/dev/sda2', '/', 'ext4', false],
      ['/dev/sdb1', '/a b', 'xfs', true],
    ]);
  });
});

describe('planFreeze', () => {
  it("applies upstream's filters and ours, merges bind mounts, and puts the root last", () => {
    const plan = planFreeze(parseMountinfo(MOUNTINFO), DEVS);
    expect(plan.targets.map((t) => [t.mountPoint, t.device, t.alsoAt])).toEqual([
      ['/boot', '8:1', []],
      ['/home', '8:17', ['/srv/alice data']],
      ['/', '8:2', []],
    ]);
    expect(plan.skipped.map((s) => [s.mountPoint, s.reason])).toEqual([
      ['/proc', 'not-a-block-device'],
      ['/dev', 'not-a-block-device'],
      ['/boot/efi', 'vfat'],
      ['/media/cd', 'read-only'],
      ['/mnt/img', 'loop-backed'],
      ['/mnt/win', 'fuse'],
      ['/run', 'not-a-block-device'],
      ['/var/lib/x', 'read-only'],
      ['/data', 'loop-backed'],
      ['/ro-sb', 'read-only'],
    ]);
    expect(plan.problems).toEqual([]);
  });

  it('a bind mount of part of the root before "/" in the table does not freeze the root early', () => {
    const table = parseMountinfo(`30 27 8:2 /srv /srv rw - ext4 /dev/sda2 rw
31 27 8:17 / /home rw - xfs /dev/sdb1 rw
27 1 8:2 / / rw - ext4 /dev/sda2 rw
`);
    expect(planFreeze(table, DEVS).targets.map((t) => t.mountPoint)).toEqual(['/home', '/']);
  });

  it("a source that cannot be stat'ed is reported and still frozen, as upstream does", () => {
    const plan = planFreeze(parseMountinfo('50 27 8:99 / /x rw - ext4 /dev/gone rw\n'), DEVS);
    expect(plan.targets.map((t) => t.mountPoint)).toEqual(['/x']);
    expect(plan.problems).toEqual([
      { mountPoint: '/x', source: '/dev/gone', message: 'stat /dev/gone: ENOENT' },
    ]);
  });

  it('with /proc/mounts every line is its own target (no device numbers to merge by)', () => {
    const plan = planFreeze(
      parseProcMounts('/dev/sda2 / ext4 rw 0 0\n/dev/sdb1 /home xfs rw 0 0\n/dev/sdb1 /srv xfs rw 0 0\n'),
      DEVS,
    );
    expect(plan.targets.map((t) => t.mountPoint)).toEqual(['/home', '/srv', '/']);
  });

  it('thawOrder is the reverse: root first', () => {
    expect(thawOrder(['/boot', '/home', '/'])).toEqual(['/', '/home', '/boot']);
  });
});

describe('SysfsBlockDevices', () => {
  const sys = mkdtempSync(join(tmpdir(), 'hv-vss-sysfs-'));
  afterAll(() => rmSync(sys, { recursive: true, force: true }));
  // /sys/devices/... block directories and /sys/dev/block/M:m links, as the kernel lays them out.
  const dev = (path: string, majmin: string, extra: (dir: string) => void = () => {}) => {
    const dir = join(sys, 'devices', path);
    mkdirSync(dir, { recursive: true });
    extra(dir);
    mkdirSync(join(sys, 'dev', 'block'), { recursive: true });
    symlinkSync(dir, join(sys, 'dev', 'block', majmin));
    return dir;
  };
  const loop0 = dev('virtual/block/loop0', '7:0', (d) => mkdirSync(join(d, 'loop')));
  dev('virtual/block/loop0/loop0p1', '259:0', (d) => writeFileSync(join(d, 'partition'), '1\n'));
  const sda = dev('pci0000:00/block/sda', '8:0');
  const sda1 = dev('pci0000:00/block/sda/sda1', '8:1', (d) => writeFileSync(join(d, 'partition'), '1\n'));
  dev('virtual/block/dm-0', '253:0', (d) => {
    mkdirSync(join(d, 'slaves'));
    symlinkSync(sda1, join(d, 'slaves', 'sda1'));
  });
  dev('virtual/block/dm-1', '253:1', (d) => {
    mkdirSync(join(d, 'slaves'));
    symlinkSync(sda, join(d, 'slaves', 'sda'));
    symlinkSync(loop0, join(d, 'slaves', 'loop0'));
  });
  dev('virtual/block/dm-2', '253:2', (d) => {
    mkdirSync(join(d, 'slaves'));
    symlinkSync(join(sys, 'devices', 'virtual/block/dm-1'), join(d, 'slaves', 'dm-1'));
  });
  const b = new SysfsBlockDevices(sys);

  it('finds loop devices, their partitions, and devices stacked on them', () => {
    expect(b.isLoopBacked(7, 0)).toBe(true);
    expect(b.isLoopBacked(259, 0)).toBe(true);
    expect(b.isLoopBacked(253, 1)).toBe(true);
    expect(b.isLoopBacked(253, 2)).toBe(true);
  });

  it('disks, partitions and device-mapper on disks are not loop-backed', () => {
    expect(b.isLoopBacked(8, 0)).toBe(false);
    expect(b.isLoopBacked(8, 1)).toBe(false);
    expect(b.isLoopBacked(253, 0)).toBe(false);
  });

  it('a device sysfs does not know is not loop-backed (as upstream: ENOENT is silent)', () => {
    expect(b.isLoopBacked(8, 99)).toBe(false);
    expect(new SysfsBlockDevices(join(sys, 'absent')).isLoopBacked(7, 0)).toBe(false);
  });

  it('deviceNumber: st_rdev of a block device; a non-device source is an error', () => {
    expect(() => b.deviceNumber('/dev/null')).toThrow(/not a block device/);
    expect(() => b.deviceNumber('/dev/does-not-exist')).toThrow();
  });

  it("splitDev decodes glibc's dev_t, large minors included", () => {
    expect(splitDev(0x0802n)).toEqual({ major: 8, minor: 2 });
    expect(splitDev(0x10300n)).toEqual({ major: 259, minor: 0 });
    // major 259, minor 1000: minor's high bits live above bit 20
    const dev = (259n << 8n) | (1000n & 0xffn) | ((1000n & ~0xffn) << 12n);
    expect(splitDev(dev)).toEqual({ major: 259, minor: 1000 });
  });
});
