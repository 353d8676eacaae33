/**
 * The hv-vss-ts command line (in process: only paths that end before any freeze; the daemon's
 * real runs are in sandbox.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseDuration, vssProgram } from '../../../daemons/vss/main.js';
import { parseCli } from '../../../daemons/common/cli.js';

const MAIN = new URL('../../../daemons/vss/main.ts', import.meta.url).pathname;

function run(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
}

describe('hv-vss-ts command line', () => {
  it('-h and --help print the usage (upstream flags included) and exit 0', () => {
    for (const flag of ['-h', '--help']) {
      const r = run(flag);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('Usage: hv-vss-ts [options]');
      for (const o of [
        '-n, --no-daemon',
        '--hooks-dir',
        '--hook-timeout',
        '--freeze-watchdog',
        '--marker',
        '--recover',
      ])
        expect(r.stdout).toContain(o);
    }
  });

  it('an unknown option or a bad duration is a usage error (64)', () => {
    expect(run('--bogus').status).toBe(64);
    expect(run('--freeze-watchdog', 'soon').status).toBe(64);
    expect(run('--hook-timeout', '0').status).toBe(64);
    expect(run('--freeze-watchdog', '2h').status).toBe(64);
  });

  it('parses the options with their defaults', () => {
    const cli = parseCli<Record<string, unknown>>(vssProgram(), [
      '-n',
      '--hook-timeout',
      '90s',
      '--freeze-watchdog',
      '5m',
    ]);
    expect(cli).toMatchObject({
      kind: 'run',
      options: {
        device: '/dev/vmbus/hv_vss',
        hooksDir: '/etc/hyperv-daemons-ts/vss-hooks.d',
        hookTimeout: 90_000,
        freezeWatchdog: 300_000,
        marker: '/run/hyperv-daemons-ts/vss-frozen.json',
      },
    });
    const d = parseCli<Record<string, unknown>>(vssProgram(), []);
    expect(d).toMatchObject({ kind: 'run', options: { hookTimeout: 60_000, freezeWatchdog: 600_000 } });
  });

  it('parseDuration', () => {
    expect(parseDuration('90')).toBe(90_000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(() => parseDuration('ten')).toThrow(/not a duration/);
  });
});
