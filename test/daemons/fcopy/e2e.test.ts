/**
 * hv-fcopy-ts end to end: a real daemon process on the shim's FUSE device files, in a private mount
 * namespace, driven by the simulated host (cases.ts), every case checked on disk. The same host
 * scripts run against the upstream C daemon (/usr/sbin/hv_fcopy_daemon -n): the host must see the
 * same statuses, except for the documented improvements (daemons/fcopy/README.md), which are
 * asserted here on both sides — as are the upstream weaknesses they fix.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { CaseResult, HostStep } from './cases.js';
import type { Entry, Listing } from './observe.js';
import { sha256, pattern } from './observe.js';
import { type HarnessOutput, runHarness } from './run-harness.js';

const STANDARD = [
  'identity',
  'zero-bytes',
  'one-fragment',
  'many-fragments',
  'non-ascii',
  'exists-no-overwrite',
  'exists-overwrite',
  'create-path',
  'create-path-no-trailing-slash',
  'missing-dir',
  'cancel-midway-new',
  'cancel-midway-overwrite',
  'kill-9-midway',
  'hibernate-midway',
  'full-disk-overwrite',
  'full-disk-new',
  'name-slash',
  'name-dot',
  'name-dotdot',
  'name-empty',
  'relative-path',
  'dotdot-path',
  'symlink-final-dangling',
  'symlink-final-overwrite',
  'symlink-dir',
  'beyond-size',
  'target-is-dir',
  'path-is-file',
];
const WITH_ALLOW_LIST = [
  'allow-outside',
  'allow-inside',
  'allow-symlink-escape',
  'follow-symlinked-dir',
  'symlink-dir',
];
const ALLOW_CONFIG = 'allow = @WORK@/allowed\nfollow-symlinked-dirs = yes\n';

let ours: HarnessOutput;
let upstream: HarnessOutput;
let allow: HarnessOutput;

beforeAll(async () => {
  if (process.getuid?.() !== 0)
    throw new Error('these tests use mount namespaces and FUSE: run as root (CI does)');
  [ours, upstream] = await Promise.all([
    runHarness({ daemon: 'ours', cases: STANDARD }),
    runHarness({ daemon: 'upstream', cases: STANDARD }),
  ]);
  allow = await runHarness({ daemon: 'ours', cases: WITH_ALLOW_LIST, config: ALLOW_CONFIG });
}, 600_000);

const res = (out: HarnessOutput, name: string): CaseResult => {
  const r = out.results[name];
  if (!r) throw new Error(`no result for ${name}`);
  return r;
};

const OK = 'HV_S_OK';
const FAIL = 'HV_E_FAIL';
const EXISTS = 'HV_ERROR_ALREADY_EXISTS';
const FULL = 'HV_ERROR_DISK_FULL';
const copy = (status: string, step: string): HostStep => ({ op: 'copy', status, step });
const TEMP = /^\..+\.hv-fcopy-\d+-[0-9a-f]{12}\.tmp$/;

/** `path: type mode [size]` lines, temporaries shown as <temp>. */
function shape(l: Listing | undefined): string[] {
  return Object.entries(l ?? {}).map(([p, e]: [string, Entry]) => {
    const name = p
      .split('/')
      .map((c) => (TEMP.test(c) ? '<temp>' : c))
      .join('/');
    return `${name}: ${e.type} ${e.mode}${e.size !== undefined ? ` ${e.size}` : ''}${e.link ? ` -> ${e.link}` : ''}`;
  });
}

describe('hv-fcopy-ts through the device files, checked on disk', () => {
  it('shows as hv_fcopy_daemon', () => {
    expect(res(ours, 'identity').extra).toEqual({ comm: 'hv_fcopy_daemon', argv0: 'hv_fcopy_daemon' });
  });

  it('0 bytes', () => {
    const r = res(ours, 'zero-bytes');
    expect(r.host).toEqual([copy(OK, 'complete')]);
    expect(shape(r.disk.after)).toEqual(['empty.bin: file 644 0']);
  });

  it('one fragment', () => {
    const r = res(ours, 'one-fragment');
    expect(r.host).toEqual([copy(OK, 'complete')]);
    expect(shape(r.disk.after)).toEqual(['one.bin: file 644 1000']);
    expect(r.disk.after?.['one.bin']?.sha256).toBe(r.extra?.sha256);
  });

  it('64 MiB in 10923 fragments, streamed: the daemon does not grow with the file', () => {
    const r = res(ours, 'many-fragments');
    expect(r.host).toEqual([copy(OK, 'complete')]);
    expect(shape(r.disk.after)).toEqual([`big.bin: file 644 ${64 * 1024 * 1024}`]);
    expect(r.disk.after?.['big.bin']?.sha256).toBe(r.extra?.sha256);
    const grew = (r.extra?.rssPeakKiB as number) - (r.extra?.rssBeforeKiB as number);
    expect(r.extra?.rssBeforeKiB).toBeGreaterThan(0);
    expect(grew).toBeLessThan(32 * 1024);
  });

  it('non-ASCII directory and file names (CREATE_PATH)', () => {
    const r = res(ours, 'non-ascii');
    expect(r.host).toEqual([copy(OK, 'complete')]);
    expect(shape(r.disk.after)).toEqual([
      'répertoire: dir 755',
      'répertoire/子目录: dir 755',
      'répertoire/子目录/Ünïcødé ファイル 📄.txt: file 644 20000',
    ]);
    expect(r.disk.after?.['répertoire/子目录/Ünïcødé ファイル 📄.txt']?.sha256).toBe(r.extra?.sha256);
  });

  it('an existing file without OVER_WRITE: HV_ERROR_ALREADY_EXISTS, file untouched', () => {
    const r = res(ours, 'exists-no-overwrite');
    expect(r.host).toEqual([copy(EXISTS, 'start')]);
    expect(shape(r.disk.after)).toEqual(['f.txt: file 600 11']);
    expect(r.disk.after?.['f.txt']?.sha256).toBe(sha256(Buffer.from('old content')));
  });

  it('an existing file with OVER_WRITE: replaced, its mode kept', () => {
    const r = res(ours, 'exists-overwrite');
    expect(r.host).toEqual([copy(OK, 'complete')]);
    expect(shape(r.disk.after)).toEqual(['f.txt: file 640 9000']);
    expect(r.disk.after?.['f.txt']?.sha256).toBe(r.extra?.sha256);
  });

  it('CREATE_PATH makes every missing directory 0755, with or without a trailing slash', () => {
    expect(res(ours, 'create-path').host).toEqual([copy(OK, 'complete')]);
    expect(shape(res(ours, 'create-path').disk.after)).toEqual([
      'x: dir 755',
      'x/y: dir 755',
      'x/y/z: dir 755',
      'x/y/z/f.txt: file 644 4',
    ]);
    expect(res(ours, 'create-path-no-trailing-slash').host).toEqual([copy(OK, 'complete')]);
    expect(shape(res(ours, 'create-path-no-trailing-slash').disk.after)).toEqual([
      'p: dir 755',
      'p/q: dir 755',
      'p/q/f.txt: file 644 4',
    ]);
  });

  it('a missing directory without CREATE_PATH: HV_E_FAIL, nothing made', () => {
    const r = res(ours, 'missing-dir');
    expect(r.host).toEqual([copy(FAIL, 'start')]);
    expect(shape(r.disk.after)).toEqual([]);
  });

  it('cancel midway: only a hidden 0600 temporary meanwhile; afterwards nothing, the old file untouched', () => {
    const n = res(ours, 'cancel-midway-new');
    expect(n.host.map((s) => s.status)).toEqual([OK, OK, OK, OK]);
    expect(shape(n.disk.during)).toEqual(['<temp>: file 600 30720']);
    expect(shape(n.disk.after)).toEqual([]);
    const o = res(ours, 'cancel-midway-overwrite');
    expect(o.host.map((s) => s.status)).toEqual([OK, OK, OK, OK]);
    expect(shape(o.disk.during)).toEqual(['<temp>: file 600 30720', 'c.bin: file 644 12']);
    expect(shape(o.disk.after)).toEqual(['c.bin: file 644 12']);
    expect(o.disk.after?.['c.bin']?.sha256).toBe(sha256(Buffer.from('the old file')));
  });

  it('kill -9 midway: the old file untouched; the restarted daemon removes the temporary', () => {
    const r = res(ours, 'kill-9-midway');
    expect(r.host).toEqual([
      { op: 'start', status: OK },
      { op: 'write#0', status: OK },
      { op: 'write#49', status: OK },
      copy(OK, 'complete'),
    ]);
    expect(shape(r.disk.killed)).toEqual(['<temp>: file 600 307200', 'k.bin: file 644 12']);
    expect(shape(r.disk.restarted)).toEqual(['k.bin: file 644 12']);
    expect(r.disk.restarted?.['k.bin']?.sha256).toBe(sha256(Buffer.from('the old file')));
    expect(shape(r.disk.final)).toEqual(['k.bin: file 644 614400']);
    expect(r.disk.final?.['k.bin']?.sha256).toBe(r.extra?.sha256);
    expect(ours.log.some((l) => l.includes('"msg":"removed the temporary file '))).toBe(true);
  });

  it("hibernation midway (the kernel's fake CANCEL, then a reopen): the old file untouched", () => {
    const r = res(ours, 'hibernate-midway');
    expect(r.host.map((s) => s.status)).toEqual([OK, OK, OK, OK]);
    expect(shape(r.disk.resumed)).toEqual(['h.bin: file 644 12']);
    expect(r.disk.final?.['h.bin']?.sha256).toBe(r.extra?.sha256);
  });

  it('a full disk: HV_ERROR_DISK_FULL; the old file untouched and every block given back', () => {
    const o = res(ours, 'full-disk-overwrite');
    expect(o.host).toEqual([copy(FULL, 'write')]);
    expect(shape(o.disk.after)).toEqual(['big.bin: file 644 1048576', 'lost+found: dir 700']);
    expect(o.disk.after?.['big.bin']?.sha256).toBe(sha256(pattern(1024 * 1024, 10)));
    expect(o.extra?.freeAfter).toBe(o.extra?.freeBefore);
    const n = res(ours, 'full-disk-new');
    expect(n.host).toEqual([copy(FULL, 'write')]);
    expect(shape(n.disk.after)).toEqual(['lost+found: dir 700']);
    expect(n.extra?.freeAfter).toBe(n.extra?.freeBefore);
  });

  describe('refused paths: HV_E_FAIL (or ALREADY_EXISTS), nothing written anywhere', () => {
    it.each([
      ['name-slash', ['sub: dir 755']],
      ['name-dot', []],
      ['name-dotdot', ['in: dir 755']],
      ['name-empty', []],
      ['dotdot-path', []],
      ['symlink-dir', ['linkdir: symlink 777 -> real', 'real: dir 755']],
      ['path-is-file', ['file.txt: file 644 6']],
    ])('%s', (name, disk) => {
      const r = res(ours, name);
      expect(r.host).toEqual([copy(FAIL, 'start')]);
      expect(shape(r.disk.after)).toEqual(disk);
    });

    it('a relative path (nothing made in the daemon’s working directory)', () => {
      const r = res(ours, 'relative-path');
      expect(r.host).toEqual([copy(FAIL, 'start')]);
      expect(shape(r.disk.cwd)).toEqual([]);
    });

    it('a dangling symbolic link as the target: it exists, nothing is created through it', () => {
      const r = res(ours, 'symlink-final-dangling');
      expect(r.host).toEqual([copy(EXISTS, 'start')]);
      expect(shape(r.disk.after)).toEqual(['link: symlink 777 -> victim/planted', 'victim: dir 755']);
    });

    it('a symbolic link as the target with OVER_WRITE: refused, the file it points to untouched', () => {
      const r = res(ours, 'symlink-final-overwrite');
      expect(r.host).toEqual([copy(FAIL, 'start')]);
      expect(shape(r.disk.after)).toEqual(['link: symlink 777 -> secret', 'secret: file 600 14']);
    });

    it('writes past the announced size', () => {
      const r = res(ours, 'beyond-size');
      expect(r.host).toEqual([copy(FAIL, 'write')]);
      expect(shape(r.disk.after)).toEqual([]);
    });

    it('a directory as the target', () => {
      const r = res(ours, 'target-is-dir');
      expect(r.host).toEqual([copy(FAIL, 'start'), copy(EXISTS, 'start')]);
      expect(shape(r.disk.after)).toEqual(['t: dir 755']);
    });

    it('outside the allow-list (CREATE_PATH makes nothing there)', () => {
      const r = res(allow, 'allow-outside');
      expect(r.host).toEqual([copy(FAIL, 'start')]);
      expect(shape(r.disk.after)).toEqual([]);
      expect(res(allow, 'symlink-dir').host).toEqual([copy(FAIL, 'start')]);
    });

    it('a symbolic link out of an allowed directory, even with follow-symlinked-dirs', () => {
      const r = res(allow, 'allow-symlink-escape');
      expect(r.host).toEqual([copy(FAIL, 'start')]);
      expect(shape(r.disk.after)).toEqual(['outside: dir 755']);
    });
  });

  it('inside the allow-list; a symbolic link inside it is followed when configured', () => {
    const i = res(allow, 'allow-inside');
    expect(i.host).toEqual([copy(OK, 'complete')]);
    expect(shape(i.disk.after)).toEqual(['in: dir 755', 'in/f.txt: file 644 6']);
    const f = res(allow, 'follow-symlinked-dir');
    expect(f.host).toEqual([copy(OK, 'complete')]);
    expect(shape(f.disk.after)).toEqual([
      'alias: symlink 777 -> real',
      'real: dir 755',
      'real/f.txt: file 644 8',
    ]);
  });
});

/**
 * Where the host sees something else than with upstream, on purpose (README.md, "Differences").
 * Every other case must give the host exactly what upstream gives it.
 */
const IMPROVEMENTS: Record<string, { ours: HostStep[]; upstream: HostStep[] }> = {
  'create-path-no-trailing-slash': { ours: [copy(OK, 'complete')], upstream: [copy(FAIL, 'start')] },
  'name-slash': { ours: [copy(FAIL, 'start')], upstream: [copy(OK, 'complete')] },
  'name-empty': { ours: [copy(FAIL, 'start')], upstream: [copy(EXISTS, 'start')] },
  'relative-path': { ours: [copy(FAIL, 'start')], upstream: [copy(OK, 'complete')] },
  'dotdot-path': { ours: [copy(FAIL, 'start')], upstream: [copy(OK, 'complete')] },
  'symlink-final-dangling': { ours: [copy(EXISTS, 'start')], upstream: [copy(OK, 'complete')] },
  'symlink-final-overwrite': { ours: [copy(FAIL, 'start')], upstream: [copy(OK, 'complete')] },
  'symlink-dir': { ours: [copy(FAIL, 'start')], upstream: [copy(OK, 'complete')] },
  'beyond-size': { ours: [copy(FAIL, 'write')], upstream: [copy(OK, 'complete')] },
};

describe('the same host scripts against the upstream C daemon', () => {
  it.each(STANDARD.filter((n) => n !== 'identity'))('%s', (name) => {
    const o = res(ours, name).host;
    const u = res(upstream, name).host;
    const diff = IMPROVEMENTS[name];
    if (diff) {
      expect(o).toEqual(diff.ours);
      expect(u).toEqual(diff.upstream);
    } else {
      expect(o).toEqual(u);
    }
  });

  it('upstream shows the weaknesses the differences fix', () => {
    // Mode 0744 for new files.
    expect(shape(res(upstream, 'zero-bytes').disk.after)).toEqual(['empty.bin: file 744 0']);
    // A cancelled, killed, hibernated or disk-full OVER_WRITE copy destroys the original.
    expect(shape(res(upstream, 'cancel-midway-overwrite').disk.after)).toEqual([]);
    expect(shape(res(upstream, 'kill-9-midway').disk.restarted)).toEqual(['k.bin: file 644 307200']);
    expect(shape(res(upstream, 'hibernate-midway').disk.resumed)).toEqual([]);
    expect(shape(res(upstream, 'full-disk-overwrite').disk.after)).toEqual(['lost+found: dir 700']);
    // The partial file is visible under the target name during the copy.
    expect(shape(res(upstream, 'cancel-midway-new').disk.during)).toEqual(['c.bin: file 744 30720']);
    // Symbolic links are followed: a planted dangling link creates its target, OVER_WRITE through a
    // link rewrites the file it points to.
    expect(shape(res(upstream, 'symlink-final-dangling').disk.after)).toContain(
      'victim/planted: file 744 16',
    );
    expect(shape(res(upstream, 'symlink-final-overwrite').disk.after)).toContain('secret: file 600 16');
    // A relative path lands in the daemon's working directory.
    expect(shape(res(upstream, 'relative-path').disk.cwd)).toContain('relative-case/sub/f.txt: file 744 3');
  });
});
