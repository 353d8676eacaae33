/**
 * hv-vss-ts freezing for real, in the freeze sandbox (kernel-shim/freeze-sandbox.ts): the root and
 * every filesystem a daemon can see are our own loop-mounted ext4/xfs images, in a private mount
 * namespace, so nothing of this machine can be frozen. Each test runs one case of harness.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHarness } from './support/run-harness.js';
import { buildBundle } from './support/vss-sandbox.js';

type R = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const dir = mkdtempSync(join(tmpdir(), 'hv-vss-bundle-'));
const bundle = join(dir, 'hv-vss-ts.mjs');
beforeAll(() => buildBundle(bundle), 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ALL_FROZEN = { '/': true, '/mnt/ext4': true, '/mnt/xfs': true };
const NONE_FROZEN = { '/': false, '/mnt/ext4': false, '/mnt/xfs': false };

describe.concurrent('hv-vss-ts in the freeze sandbox', () => {
  it('runs from, and logs to, the root it freezes: a writer blocks while frozen and resumes after the thaw', async () => {
    const r = await runHarness<R>('basic', { bundle });
    expect(r.mounts).toEqual(['/', '/mnt/ext4', '/mnt/xfs']);
    expect(r.hotBackup).toBe('HV_S_OK');
    expect(r.freeze).toBe('HV_S_OK');
    expect(r.frozenAfterFreeze).toEqual(ALL_FROZEN);
    // Only the sandbox's loop images were targets, root last; the machine's /tmp stayed writable.
    expect(r.markerWhileFrozen.filesystems.map((f: R) => f.mountPoint)).toEqual([
      '/mnt/ext4',
      '/mnt/xfs',
      '/',
    ]);
    for (const f of r.markerWhileFrozen.filesystems) {
      expect(f.source).toMatch(/^\/dev\/loop\d+$/);
      expect(f.device).toMatch(/^7:\d+$/);
    }
    expect(r.hostWriteWhileFrozen).toBe(0);
    // While frozen: the writers wait, the daemon lives and wrote nothing to its log file.
    expect(r.writerDoneWhileFrozen).toBe(false);
    expect(r.daemonAliveWhileFrozen).toBe(true);
    expect(r.logGrewWhileFrozen).toBe(false);
    expect(r.thaw).toBe('HV_S_OK');
    expect(r.thawReplyMs).toBeLessThan(2000);
    expect(r.writerExit).toBe(0);
    expect(r.rootWriterExit).toBe(0);
    expect(r.frozenAfterThaw).toEqual(NONE_FROZEN);
    // The ioctls the daemon made (strace -y): exactly these, root frozen last and thawed first.
    expect(r.trace).toEqual([
      'freeze /mnt/ext4 ok',
      'freeze /mnt/xfs ok',
      'freeze / ok',
      'thaw / ok',
      'thaw /mnt/xfs ok',
      'thaw /mnt/ext4 ok',
    ]);
    // Everything the daemon did while frozen (strace -f -y of every call that could write, create,
    // load a module or start a program): only read-only opens of the mount points, /proc and /sys,
    // the ioctls, the reply on /dev/vmbus/hv_vss, and libuv's own eventfd. No log line, no exec.
    expect(r.frozenWindow.length).toBeGreaterThan(3);
    for (const c of r.frozenWindow as { syscall: string; args: string; result: string }[]) {
      const where = `${c.syscall}(${c.args}) = ${c.result}`;
      if (c.syscall === 'ioctl') expect(where).toMatch(/, FIFREEZE\)|, FITHAW\)/);
      else if (c.syscall === 'write')
        expect(where).toMatch(/^write\(\d+<(\/dev\/vmbus\/hv_vss|anon_inode:\[eventfd\])>/);
      else if (c.syscall === 'openat') {
        expect(where).toMatch(/"(\/|\/mnt\/ext4|\/mnt\/xfs|\/proc\/[^"]*|\/sys\/[^"]*)", O_RDONLY/);
        expect(where).not.toMatch(/O_CREAT|O_WRONLY|O_RDWR|O_TRUNC/);
      } else throw new Error(`unexpected call while frozen: ${where}`);
    }
    expect(r.hooks).toEqual(['10-first freeze', '20-second freeze', '20-second thaw', '10-first thaw']);
    expect(r.markerAfterThaw).toBe(false);
    expect(r.stop).toEqual({ code: 0, signal: null });
    // The line logged during the freeze window reached the log file, after the thaw, with its own time.
    const ok = r.logs.find((l: R) => l.msg === 'VSS: op=FREEZE: succeeded');
    expect(ok).toBeDefined();
    const t = Date.parse(ok.time);
    expect(t).toBeGreaterThanOrEqual(r.window.freezeAt - 5);
    expect(t).toBeLessThanOrEqual(r.window.thawAt);
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);

  it('partial failure: the filesystem frozen before a failing one is thawed, the host gets HV_E_FAIL', async () => {
    const r = await runHarness<R>('partial', { bundle, daemon: 'ours' });
    expect(r.freeze).toBe('HV_E_FAIL');
    expect(r.frozenAfterFreeze).toEqual({ '/mnt/a': false, '/mnt/b': 'EIO', '/mnt/c': false });
    expect(r.trace.slice(0, 3)).toEqual(['freeze /mnt/a ok', 'freeze /mnt/b EIO', 'thaw /mnt/a ok']);
    expect(r.trace.slice(0, 6).filter((x: string) => x.startsWith('freeze /mnt/c'))).toEqual([]);
    expect(r.marker).toBe(false);
    expect(r.hooks).toEqual(['10-first freeze', '10-first freezefail']);
    expect(
      r.logs.some((l: R) => l.level === 'error' && l.msg === 'FREEZE of /mnt/b failed; error:5 EIO'),
    ).toBe(true);
    expect([r.thaw, r.freezeAgain, r.thawAgain]).toEqual(['HV_S_OK', 'HV_E_FAIL', 'HV_S_OK']);
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);

  it('hooks: name order with freeze, reverse with thaw; a failing or hanging hook fails the backup cleanly', async () => {
    const r = await runHarness<R>('hooks', { bundle });
    expect(r.okFreeze).toBe('HV_S_OK');
    expect(r.okFrozen).toEqual({ '/mnt/ext4': true });
    expect(r.okThaw).toBe('HV_S_OK');
    expect(r.okHooks).toEqual([
      '10-alpha freeze',
      '20-beta freeze',
      '30-gamma freeze',
      '30-gamma thaw',
      '20-beta thaw',
      '10-alpha thaw',
    ]);
    expect(r.failFreeze).toBe('HV_E_FAIL');
    expect(r.failFrozen).toEqual({ '/mnt/ext4': false });
    expect(r.failHooks).toEqual(['10-alpha freeze', '20-beta freeze', '10-alpha freezefail']);
    expect(r.failMarker).toBe(false);
    expect(r.hangFreeze).toBe('HV_E_FAIL');
    expect(r.hangMs).toBeGreaterThanOrEqual(1000);
    expect(r.hangMs).toBeLessThan(5000);
    expect(r.hangFrozen).toEqual({ '/mnt/ext4': false });
    expect(r.hangHooks).toEqual(['10-alpha freeze', '20-beta freeze', '10-alpha freezefail']);
    expect(r.hangChildAlive).toBe(false);
    expect([r.afterFreeze, r.afterThaw]).toEqual(['HV_S_OK', 'HV_S_OK']);
    const msgs = r.logs.map((l: R) => l.msg);
    expect(msgs).toContain('hook ignored: 15-disabled.sample');
    expect(msgs).toContain('hook ignored: 25-not-executable');
    expect(msgs).toContain('FREEZE refused by hook 20-beta: exit status 3');
    expect(msgs.some((m: string) => /^FREEZE refused by hook 20-beta: timed out after \d+ ms/.test(m))).toBe(
      true,
    );
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);

  it('the freeze watchdog thaws when no THAW comes, and the host hears of it at its next request', async () => {
    const r = await runHarness<R>('watchdog', { bundle });
    expect(r.freeze).toBe('HV_S_OK');
    expect(r.frozenAfterFreeze).toEqual({ '/mnt/ext4': true, '/mnt/xfs': true });
    expect(r.thawedAfterMs).toBeGreaterThanOrEqual(1900);
    expect(r.thawedAfterMs).toBeLessThan(8000);
    expect(r.frozenAfterWatchdog).toEqual({ '/mnt/ext4': false, '/mnt/xfs': false });
    expect(r.lateThaw).toBe('HV_E_FAIL');
    expect([r.hotBackup, r.freezeAgain, r.thawAgain]).toEqual(['HV_S_OK', 'HV_S_OK', 'HV_S_OK']);
    expect(r.logs.some((l: R) => l.level === 'error' && /^no THAW came within 2 s/.test(l.msg))).toBe(true);
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);

  it('SIGKILL while frozen leaves the marker; the restarted daemon, started from the frozen root, thaws at start', async () => {
    const r = await runHarness<R>('sigkill', { bundle, scenario: 'restart' });
    expect(r.freeze).toBe('HV_S_OK');
    expect(r.killed).toEqual({ code: null, signal: 'SIGKILL' });
    expect(r.frozenAfterKill).toEqual(ALL_FROZEN);
    expect(r.markerAfterKill.filesystems.map((f: R) => f.mountPoint)).toEqual(['/mnt/ext4', '/mnt/xfs', '/']);
    expect(r.markerAfterKill.hooks).toEqual(['10-first']);
    expect(r.frozenAfterRestart).toEqual(NONE_FROZEN);
    expect(r.markerAfterRestart).toBe(false);
    expect(r.hooksAfterRestart).toEqual(['10-first thaw']);
    expect(
      r.logs2.some(
        (l: R) =>
          l.level === 'warn' &&
          l.msg.includes(`marker left by a previous instance (pid ${r.markerAfterKill.pid}`),
      ),
    ).toBe(true);
    expect([r.freeze2, r.thaw2]).toEqual(['HV_S_OK', 'HV_S_OK']);
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);

  it('hv-vss-ts --recover (what a supervisor runs) thaws per the marker and exits 0', async () => {
    const r = await runHarness<R>('sigkill', { bundle, scenario: 'recover-cli' });
    expect(r.frozenAfterKill).toEqual(ALL_FROZEN);
    expect(r.recoverExit).toEqual({ code: 0, signal: null });
    expect(r.frozenAfterRecover).toEqual(NONE_FROZEN);
    expect(r.markerAfterRecover).toBe(false);
    expect(r.hooksAfterRecover).toEqual(['10-first thaw']);
    expect([r.freeze2, r.thaw2]).toEqual(['HV_S_OK', 'HV_S_OK']);
    expect(r.thawedAtClose).toEqual([]);
  }, 120_000);
});
