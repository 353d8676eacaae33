/** Hook discovery and execution with real processes in a temporary directory. */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { isRunning } from '../../support/procs.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DirectoryHooks, ignoredName } from '../../../daemons/vss/hooks.js';

const root = mkdtempSync(join(tmpdir(), 'hv-vss-hooks-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function hookDir(files: Record<string, { body: string; mode?: number }>): string {
  const dir = join(root, `d${n++}`);
  mkdirSync(dir);
  for (const [name, f] of Object.entries(files)) {
    writeFileSync(join(dir, name), f.body);
    chmodSync(join(dir, name), f.mode ?? 0o755);
  }
  return dir;
}

const sh = (body: string) => ({ body: `#!/bin/sh\n${body}\n` });

describe('ignoredName', () => {
  it('ignores hidden, backup, sample, disabled and package-manager leftovers', () => {
    for (const n of [
      '.hidden',
      'x~',
      'db.sample',
      'db.disabled',
      'a.dpkg-old',
      'a.dpkg-new',
      'a.rpmnew',
      'a.rpmsave',
      '.x.swp',
    ])
      expect(ignoredName(n)).toBeDefined();
    for (const n of ['10-db', 'mysql-flush.sh', 'a.b.c']) expect(ignoredName(n)).toBeUndefined();
  });
});

describe('DirectoryHooks.list', () => {
  it('lists executable regular files in name order and says why the others are ignored', async () => {
    const dir = hookDir({
      '20-b': sh('exit 0'),
      '10-a': sh('exit 0'),
      '3-c': sh('exit 0'),
      'B-upper': sh('exit 0'),
      'not-exec': { body: '#!/bin/sh\n', mode: 0o644 },
      'world-writable': { body: '#!/bin/sh\n', mode: 0o757 },
      'db.sample': sh('exit 0'),
      '.hidden': sh('exit 0'),
    });
    mkdirSync(join(dir, 'subdir'));
    symlinkSync(join(dir, '10-a'), join(dir, '15-link'));
    const l = await new DirectoryHooks(dir).list();
    expect(l.missing).toBe(false);
    expect(l.hooks).toEqual(['10-a', '15-link', '20-b', '3-c', 'B-upper']);
    expect(Object.fromEntries(l.ignored.map((i) => [i.name, i.reason]))).toEqual({
      '.hidden': 'hidden file',
      'db.sample': 'name ends with .sample',
      'not-exec': 'not executable',
      subdir: 'not a regular file',
      'world-writable': 'writable by group or others',
    });
  });

  it('a hook owned by another user is ignored', async () => {
    const dir = hookDir({ mine: sh('exit 0'), theirs: sh('exit 0') });
    spawnSync('chown', ['12345', join(dir, 'theirs')]);
    const l = await new DirectoryHooks(dir, { uid: 0 }).list();
    expect(l.hooks).toEqual(['mine']);
    expect(l.ignored).toEqual([{ name: 'theirs', reason: 'owned by uid 12345' }]);
  });

  it('a missing directory means no hooks', async () => {
    expect(await new DirectoryHooks(join(root, 'absent')).list()).toEqual({
      hooks: [],
      ignored: [],
      missing: true,
    });
  });
});

describe('DirectoryHooks.run', () => {
  it('passes the phase as the only argument, captures output, reports the exit status', async () => {
    const log = join(root, 'args.log');
    const dir = hookDir({
      ok: sh(`echo "$#:$1" >> ${log}; echo out; echo err >&2`),
      fails: sh('echo nope; exit 3'),
    });
    const h = new DirectoryHooks(dir);
    const ok = await h.run('ok', 'freeze', 5000);
    expect(ok).toMatchObject({ name: 'ok', phase: 'freeze', ok: true, exitCode: 0, timedOut: false });
    expect(ok.output).toContain('out\n');
    expect(ok.output).toContain('err\n');
    await h.run('ok', 'thaw', 5000);
    await h.run('ok', 'freezefail', 5000);
    expect(readFileSync(log, 'utf8')).toBe('1:freeze\n1:thaw\n1:freezefail\n');
    expect(await h.run('fails', 'freeze', 5000)).toMatchObject({ ok: false, exitCode: 3, output: 'nope\n' });
  });

  it('kills a hook over its time limit, with its children, and reports a timeout', async () => {
    const pidFile = join(root, 'child.pid');
    const dir = hookDir({ slow: sh(`sleep 30 & echo $! > ${pidFile}; wait`) });
    const t0 = Date.now();
    const r = await new DirectoryHooks(dir, { killGraceMs: 200 }).run('slow', 'freeze', 300);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(r).toMatchObject({ ok: false, timedOut: true });
    const child = Number(readFileSync(pidFile, 'utf8'));
    await new Promise((res) => setTimeout(res, 100));
    expect(isRunning(child)).toBe(false);
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const dir = hookDir({ stubborn: sh("trap '' TERM; while :; do sleep 0.05; done") });
    const r = await new DirectoryHooks(dir, { killGraceMs: 200 }).run('stubborn', 'freeze', 200);
    expect(r).toMatchObject({ ok: false, timedOut: true, signal: 'SIGKILL' });
  });

  it('a hook that cannot be executed fails with the reason', async () => {
    const dir = hookDir({ 'bad-interpreter': { body: '#!/nonexistent/interpreter\n', mode: 0o755 } });
    const r = await new DirectoryHooks(dir).run('bad-interpreter', 'freeze', 2000);
    expect(r).toMatchObject({ ok: false, error: 'ENOENT' });
    const gone = await new DirectoryHooks(dir).run('absent', 'freeze', 2000);
    expect(gone).toMatchObject({ ok: false, error: 'ENOENT' });
  });

  it('a daemon started by a hook that keeps the pipes open does not hold the result up', async () => {
    const dir = hookDir({ spawner: sh('(sleep 5) & exit 0') });
    const t0 = Date.now();
    const r = await new DirectoryHooks(dir).run('spawner', 'thaw', 5000);
    expect(r.ok).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe('the sample hook', () => {
  const sample = join(import.meta.dirname, '../../../daemons/vss/hooks/50-postgresql-checkpoint.sample');

  it('is disabled by default (a .sample name, so the daemon ignores it) and is valid sh', () => {
    expect(ignoredName('50-postgresql-checkpoint.sample')).toBeDefined();
    expect(spawnSync('sh', ['-n', sample]).status).toBe(0);
  });

  it('does nothing and succeeds where PostgreSQL is not installed, and accepts every phase', () => {
    for (const phase of ['freeze', 'thaw', 'freezefail']) {
      const r = spawnSync('/bin/sh', [sample, phase], { env: { PATH: '/nonexistent' }, encoding: 'utf8' });
      expect(r.status).toBe(0);
    }
    expect(spawnSync('/bin/sh', [sample, 'bogus'], { env: { PATH: '/nonexistent' } }).status).not.toBe(0);
  });

  it('runs CHECKPOINT through psql as the postgres user on freeze', () => {
    const bin = join(root, 'fakebin');
    const log = join(root, 'psql.log');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'psql'), `#!/bin/sh\necho "psql $*" >> ${log}\n`, { mode: 0o755 });
    writeFileSync(join(bin, 'runuser'), `#!/bin/sh\necho "runuser $*" >> ${log}\nshift 3\nexec "$@"\n`, {
      mode: 0o755,
    });
    writeFileSync(join(bin, 'timeout'), '#!/bin/sh\nshift\nexec "$@"\n', { mode: 0o755 });
    const r = spawnSync('/bin/sh', [sample, 'freeze'], {
      env: { PATH: `${bin}:/usr/bin:/bin` },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    const lines = readFileSync(log, 'utf8');
    expect(lines).toContain('runuser -u postgres --');
    expect(lines).toContain('-c CHECKPOINT');
  });
});
