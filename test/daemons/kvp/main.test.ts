/** The hv-kvp-ts program's command line, as a person uses it (spawned like the real program). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const MAIN = resolve(import.meta.dirname, '../../../daemons/kvp/main.ts');
const run = (args: string[], timeout = 20_000) =>
  spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    encoding: 'utf8',
    timeout,
    killSignal: 'SIGKILL',
  });

describe('hv-kvp-ts command line', () => {
  it('-h and --help print the options and exit 0, naming the upstream flags and ours', () => {
    for (const flag of ['-h', '--help']) {
      const r = run([flag]);
      expect(r.status).toBe(0);
      for (const opt of [
        '-n, --no-daemon',
        '-d, --debug-enabled',
        '--device',
        '--pool-dir',
        '--scripts-dir',
        '--log-level',
        '--no-sync',
      ]) {
        expect(r.stdout).toContain(opt);
      }
    }
  });

  it('an unknown option or a stray argument exits 64 with a hint on stderr', () => {
    for (const args of [['--bogus'], ['extra']]) {
      const r = run(args);
      expect(r.status).toBe(64);
      expect(r.stderr).toMatch(/--help/);
    }
  });

  it('a pool directory that cannot be created exits 73 with a fatal log line', () => {
    const r = run(['--pool-dir', '/proc/hv-kvp-ts-cannot-create', '--device', '/nonexistent']); // mkdir: ENOENT
    expect(r.status).toBe(73);
    expect(r.stdout).toMatch(/"level":"fatal".*cannot open the pools/);
  });

  it('creates missing pool files 0644 in a 0755 directory, never touching existing ones', () => {
    const parent = mkdtempSync(join(tmpdir(), 'hv-kvp-main-'));
    const dir = join(parent, 'hyperv');
    try {
      const child = spawnSync(
        'sh',
        [
          '-c',
          `umask 022; exec "$0" --import tsx "$1" --pool-dir "$2" --device /nonexistent & p=$!; sleep 2; kill -TERM $p; wait $p`,
          process.execPath,
          MAIN,
          dir,
        ],
        { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' },
      );
      expect(child.status).toBe(0);
      expect(statSync(dir).mode & 0o777).toBe(0o755);
      const pools = readdirSync(dir)
        .filter((f) => /^\.kvp_pool_\d$/.test(f))
        .sort();
      expect(pools).toEqual(['.kvp_pool_0', '.kvp_pool_1', '.kvp_pool_2', '.kvp_pool_3', '.kvp_pool_4']);
      for (const f of pools) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o644);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});
