/**
 * The .deb on Debian 12 itself: installed with dpkg in a debootstrap root (cached in
 * .cache/debootstrap/), whose nodejs is Debian's 18.20; its maintainer scripts enable the units
 * there; and the installed /usr/sbin/hv-kvp-ts, run by that Node 18 in the chroot, serves the
 * kernel-shim's /dev/vmbus/hv_kvp: it registers and answers the host's SET and ENUMERATE. Then
 * remove keeps the pool files and purge deletes them.
 */
import { existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROGRAMS, SCRIPTS_DIR, UNITS, type BuildResult } from '../../packaging/build.js';
import { HV_S_OK } from '../../uapi/constants.js';
import { runInShim } from '../support/shim-harness.js';
import { buildIntoTemp, copyOfBookworm, inChroot, removeRoot, requireTools } from './support.js';

/** The device unit each service is wanted by (its [Install] WantedBy=). */
const deviceOf = (unit: string): string =>
  `sys-devices-virtual-misc-vmbus\\x21hv_${unit.replace(/^hv-(\w+)-ts\.service$/, '$1')}.device`;

/** Whether a path exists in the root, without following a symbolic link (its target is absolute). */
const inRoot = (p: string): boolean => {
  try {
    lstatSync(join(root, p));
    return true;
  } catch {
    return false;
  }
};

let build: BuildResult;
let root: string;

beforeAll(() => {
  requireTools({ 'dpkg-deb': 'dpkg', rpmbuild: 'rpm', debootstrap: 'debootstrap', unshare: 'util-linux' });
  build = buildIntoTemp();
  root = copyOfBookworm();
}, 900_000);

afterAll(() => {
  if (root) removeRoot(root);
  if (build) rmSync(build.outDir, { recursive: true, force: true });
});

describe('the .deb on Debian 12 (debootstrap root, Debian nodejs 18)', () => {
  it("the root runs Debian's Node 18", () => {
    const r = inChroot(root, 'node --version');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^v18\.(19|[2-9]\d)\./);
  });

  it('dpkg -i installs it; the postinst enables the units and starts nothing', () => {
    const deb = build.packages.find((p) => p.arch.deb === 'amd64')!.deb;
    writeFileSync(join(root, 'tmp/hv.deb'), readFileSync(deb));
    const r = inChroot(root, 'dpkg -i /tmp/hv.deb && rm /tmp/hv.deb');
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Setting up hyperv-daemons-ts/);
    for (const u of UNITS) expect(inRoot(`etc/systemd/system/${deviceOf(u)}.wants/${u}`), u).toBe(true);
    const s = inChroot(root, 'dpkg -s hyperv-daemons-ts | sed -n "s/^Status: //p"');
    expect(s.stdout.trim()).toBe('install ok installed');
  });

  it.each(PROGRAMS.map((p) => p.name))('/usr/sbin/%s runs on Node 18 (--help, --version)', (name) => {
    const r = inChroot(root, `/usr/sbin/${name} --help && /usr/sbin/${name} --version`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^Usage: ${name} [\\s\\S]*\\n${build.version}\\n$`));
  });

  it("the installed hv-kvp-ts registers on the shim's /dev/vmbus/hv_kvp and answers SET and ENUMERATE", async () => {
    // Inside the harness's private namespace: /dev/vmbus (the shim's FUSE files), /proc and the
    // sandbox's pool directory are bound into the chroot; all of it goes with the namespace.
    const cmd =
      `set -e; R=${root}; ` +
      'mkdir -p "$R/dev/vmbus"; mount --bind /dev/vmbus "$R/dev/vmbus"; ' +
      'mount --bind /var/lib/hyperv "$R/var/lib/hyperv"; mount -t proc proc "$R/proc"; ' +
      `exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/hv-kvp-ts -n --log-level warn --scripts-dir ${SCRIPTS_DIR}`;
    const { result, log } = await runInShim<{
      set: { status: number };
      list: { endStatus: number; items: { key: string; value: string }[] };
      auto: { keys: string[] };
      osName?: string;
      poolFile: boolean;
    }>({
      services: ['kvp'],
      command: ['sh', '-c', cmd],
      script: 'test/packaging/scripts/kvp-chroot.ts',
      timeoutMs: 60_000,
    });
    expect(result.set.status, log).toBe(HV_S_OK);
    expect(result.list.items).toEqual([{ key: 'PackagedKey', value: 'set by the host' }]);
    expect(result.auto.keys).toContain('OSName');
    expect(result.osName).toMatch(/Debian/);
    expect(result.poolFile).toBe(true);
    expect(log).not.toMatch(/"level":(50|60)/);
  }, 90_000);

  it('dpkg -r keeps the pool files; dpkg -P deletes them', () => {
    const seed = inChroot(
      root,
      'mkdir -p /var/lib/hyperv && touch /var/lib/hyperv/.kvp_pool_0 /var/lib/hyperv/.kvp_pool_3',
    );
    expect(seed.status, seed.stderr).toBe(0);
    const r = inChroot(root, 'dpkg -r hyperv-daemons-ts');
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(existsSync(join(root, 'var/lib/hyperv/.kvp_pool_0'))).toBe(true);
    expect(existsSync(join(root, 'usr/sbin/hv-kvp-ts'))).toBe(false);
    expect(existsSync(join(root, 'etc/hyperv-daemons-ts/fcopy.conf'))).toBe(true); // a conffile
    const p = inChroot(root, 'dpkg -P hyperv-daemons-ts');
    expect(p.status, p.stdout + p.stderr).toBe(0);
    expect(existsSync(join(root, 'var/lib/hyperv/.kvp_pool_0'))).toBe(false);
    expect(existsSync(join(root, 'var/lib/hyperv/.kvp_pool_3'))).toBe(false);
    expect(existsSync(join(root, 'etc/hyperv-daemons-ts/fcopy.conf'))).toBe(false);
    for (const u of UNITS) expect(inRoot(`etc/systemd/system/${deviceOf(u)}.wants/${u}`), u).toBe(false);
  });
});
