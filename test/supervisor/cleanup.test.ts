/**
 * After-death actions against fake markers pointing at temporary files and directories. Thaw is
 * tested only on the "not frozen → EINVAL → fine" path: nothing of this machine is ever frozen.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../daemons/common/log.js';
import {
  afterDeathActions,
  fcopyTempAction,
  isFcopyTemp,
  parseVssMarker,
  runAfterDeath,
  runHelper,
  vssThawAction,
} from '../../supervisor/cleanup.js';
import { REPO } from '../support/shim-harness.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'hv-clean-'));
  dirs.push(d);
  return d;
}

describe('VSS marker', () => {
  it('reads the documented format and the hv-vss-ts format; refuses relative paths and junk', () => {
    expect(parseVssMarker('{"version":1,"frozen":["/mnt/a","/"]}')).toEqual({
      mounts: ['/mnt/a', '/'],
      hooks: [],
    });
    expect(
      parseVssMarker(
        JSON.stringify({
          format: 'hv-vss-frozen',
          version: 1,
          pid: 42,
          filesystems: [{ mountPoint: '/' }, { mountPoint: '/srv' }],
          hooks: ['db'],
        }),
      ),
    ).toEqual({ mounts: ['/', '/srv'], hooks: ['db'], pid: 42 });
    expect(parseVssMarker('{"version":1,"frozen":["mnt"]}')).toMatch(/absolute/);
    expect(parseVssMarker('{"version":2,"frozen":[]}')).toMatch(/version/);
    expect(parseVssMarker('{oops')).toMatch(/not JSON/);
  });

  it('thaws every listed mount point in a killable helper within 1 s; EINVAL (not frozen) is fine; the marker goes', async () => {
    const d = tmp();
    const a = join(d, 'a');
    const b = join(d, 'b');
    mkdirSync(a);
    mkdirSync(b);
    const marker = join(d, 'vss-frozen.json');
    writeFileSync(marker, JSON.stringify({ version: 1, frozen: [a, b] }));
    const logger = memoryLogger();
    const t0 = Date.now();
    await vssThawAction({ vssMarker: marker, fcopyState: join(d, 'none') }).run({ pid: 1, logger });
    expect(Date.now() - t0).toBeLessThan(1000);
    const notFrozen = logger.lines.filter((l) => / was not frozen$/.test(l.msg)).map((l) => l.obj.mount);
    expect(notFrozen).toEqual([b, a]); // reverse of the freeze order
    expect(existsSync(marker)).toBe(false);
  });

  it('keeps a marker that names hooks (the restarted daemon runs their thaw), and one it could not act on', async () => {
    const d = tmp();
    const marker = join(d, 'm.json');
    const body = {
      format: 'hv-vss-frozen',
      version: 1,
      pid: 7,
      filesystems: [{ mountPoint: d }],
      hooks: ['db'],
    };
    writeFileSync(marker, JSON.stringify(body));
    const logger = memoryLogger();
    const action = vssThawAction({ vssMarker: marker, fcopyState: join(d, 'none') });
    expect(action.busy?.(7)).toBe(true);
    expect(action.busy?.(8)).toBe(false);
    await action.run({ pid: 7, logger });
    expect(existsSync(marker)).toBe(true);
    writeFileSync(marker, JSON.stringify({ version: 1, frozen: [join(d, 'missing')] }));
    await action.run({ pid: 7, logger });
    expect(existsSync(marker)).toBe(true);
    expect(logger.lines.some((l) => l.level === 'error' && /could not thaw/.test(l.msg))).toBe(true);
  });

  it('the helper is killed at its deadline: the supervisor never waits on it', async () => {
    const t0 = Date.now();
    const r = await runHelper('thaw', ['/x'], { deadlineMs: 200, helper: ['sh', '-c', 'sleep 30', 'sh'] });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(r).toEqual([{ item: '/x', result: 'timeout', error: 'no answer within 200 ms' }]);
  });
});

describe('FCOPY temporary files', () => {
  it('removes the temporary named by the state file, and the state file', async () => {
    const d = tmp();
    const temp = join(d, '.report.pdf.hv-fcopy-123-0123456789ab.tmp');
    writeFileSync(temp, 'half');
    writeFileSync(join(d, 'report.pdf'), 'old');
    const state = join(d, 'fcopy-current.json');
    writeFileSync(state, JSON.stringify({ version: 1, temp }));
    const logger = memoryLogger();
    await runAfterDeath(afterDeathActions('fcopy', { vssMarker: join(d, 'none'), fcopyState: state }), {
      pid: 123,
      logger,
    });
    expect(existsSync(temp)).toBe(false);
    expect(existsSync(join(d, 'report.pdf'))).toBe(true);
    expect(existsSync(state)).toBe(false);
  });

  it('never removes a file without the temporary shape, or a directory', async () => {
    expect(isFcopyTemp('/etc/passwd')).toBe(false);
    expect(isFcopyTemp('relative/.a.hv-fcopy-1-0123456789ab.tmp')).toBe(false);
    const d = tmp();
    const state = join(d, 's.json');
    writeFileSync(join(d, 'keep'), 'x');
    writeFileSync(state, JSON.stringify({ version: 1, temp: join(d, 'keep') }));
    const logger = memoryLogger();
    await fcopyTempAction({ vssMarker: '', fcopyState: state }).run({ pid: 1, logger });
    expect(existsSync(join(d, 'keep'))).toBe(true);
    const dirTemp = join(d, '.x.hv-fcopy-1-0123456789ab.tmp');
    mkdirSync(dirTemp);
    writeFileSync(state, JSON.stringify({ version: 1, temp: dirTemp }));
    await fcopyTempAction({ vssMarker: '', fcopyState: state }).run({ pid: 1, logger });
    expect(existsSync(dirTemp)).toBe(true);
  });

  it("removes the dead pid's entries of the daemon's journal, not another pid's", async () => {
    const d = tmp();
    const journal = join(d, 'journal');
    mkdirSync(journal);
    const mine = '.a.hv-fcopy-50-0123456789ab.tmp';
    const theirs = '.b.hv-fcopy-60-0123456789ab.tmp';
    writeFileSync(join(d, mine), '');
    writeFileSync(join(d, theirs), '');
    writeFileSync(join(journal, 'e1.json'), JSON.stringify({ id: 'e1', dir: d, tmp: mine, pid: 50 }));
    writeFileSync(join(journal, 'e2.json'), JSON.stringify({ id: 'e2', dir: d, tmp: theirs, pid: 60 }));
    await fcopyTempAction({ vssMarker: '', fcopyState: join(d, 'none'), fcopyJournal: journal }).run({
      pid: 50,
      logger: memoryLogger(),
    });
    expect(existsSync(join(d, mine))).toBe(false);
    expect(existsSync(join(journal, 'e1.json'))).toBe(false);
    expect(existsSync(join(d, theirs))).toBe(true);
    expect(existsSync(join(journal, 'e2.json'))).toBe(true);
  });

  it('through the supervisor: a daemon killed mid-copy has its temporary removed before the restart', async () => {
    const d = tmp();
    const temp = join(d, '.big.iso.hv-fcopy-1-0123456789ab.tmp');
    const state = join(d, 'fcopy-current.json');
    const script =
      `[ -e ${d}/ran ] && exec sleep 300; touch ${d}/ran; echo half > '${temp}'; ` +
      `printf '{"version":1,"temp":"%s"}' '${temp}' > ${state}; kill -9 $$`;
    const p = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        `${REPO}/supervisor/main.ts`,
        '--kind',
        'fcopy',
        '--no-status-socket',
        '--fcopy-state',
        state,
        '--',
        'sh',
        '-c',
        script,
      ],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const end = Date.now() + 10_000;
    while ((out.match(/"msg":"started /g)?.length ?? 0) < 2 && Date.now() < end)
      await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(temp)).toBe(false);
    expect(existsSync(state)).toBe(false);
    expect(out).toMatch(/removed .*left by the dead FCOPY daemon/);
    p.kill('SIGTERM');
    expect(await new Promise((r) => p.on('exit', r))).toBe(0);
  });
});
