/**
 * A VSS daemon killed while file systems are frozen, under hv-supervisor, for real: in the freeze
 * sandbox (root and every freezable mount are loop images), the host freezes, the daemon gets
 * SIGKILL, and the supervisor must thaw from the daemon's marker within one second, then restart
 * the daemon, which registers again and serves. Both run as the bundles a package ships.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHarness } from '../daemons/vss/support/run-harness.js';
import { REPO, buildBundle } from '../daemons/vss/support/vss-sandbox.js';

const dir = mkdtempSync(join(tmpdir(), 'hv-sup-vss-'));
const bundle = join(dir, 'hv-vss-ts.mjs');
const supervisor = join(dir, 'hv-supervisor.mjs');

beforeAll(() => {
  buildBundle(bundle);
  const r = spawnSync(
    join(REPO, 'node_modules/.bin/esbuild'),
    [
      join(REPO, 'supervisor/main.ts'),
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--target=node18',
      `--outfile=${supervisor}`,
      '--external:koffi',
      '--log-level=error',
      "--banner:js=import { createRequire as __hvCreateRequire } from 'node:module'; const require = __hvCreateRequire(import.meta.url);",
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`esbuild: ${r.stderr}`);
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('hv-supervisor and a VSS daemon that dies frozen', () => {
  it('thaws within one second of the death, restarts the daemon, and it serves again', async () => {
    const r = await runHarness<Record<string, unknown>>(
      'supervised-sigkill',
      { bundle, supervisor },
      120_000,
    );
    process.stdout.write(
      `VSS daemon SIGKILLed frozen: thawed after ${r.thawMs} ms, re-registered after ${r.reregisteredMs} ms\n`,
    );
    expect(r.freeze).toBe('HV_S_OK');
    expect(r.frozenBeforeKill).toEqual({ '/': true, '/mnt/ext4': true, '/mnt/xfs': true });
    expect(r.daemonComm).toBe('hv_vss_daemon');
    expect(r.thawMs as number, JSON.stringify(r.log)).toBeLessThan(1000);
    expect(r.markerAfter).toBe(false);
    expect(r.reregisteredMs).toBeGreaterThan(0);
    expect(r.freezeAgain).toBe('HV_S_OK');
    expect(r.thawAgain).toBe('HV_S_OK');
    expect(r.frozenAtEnd).toEqual({ '/': false, '/mnt/ext4': false, '/mnt/xfs': false });
    expect(r.supervisorExit).toBe(0);
  }, 150_000);
});
