/**
 * The same host script against the upstream C daemon (Debian's /usr/sbin/hv_vss_daemon) and
 * hv-vss-ts, each in a fresh freeze sandbox: the host must see the same statuses and flags, and
 * the same filesystems must be frozen after every step. The documented differences (the thaw
 * order, and what only shows with faults the kernel never produces) are checked as differences.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRecordings, formatDifferences, type Recording } from '../../../kernel-shim/scenario/index.js';
import { runHarness } from './support/run-harness.js';
import { buildBundle } from './support/vss-sandbox.js';

type R = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const dir = mkdtempSync(join(tmpdir(), 'hv-vss-bundle-'));
const bundle = join(dir, 'hv-vss-ts.mjs');
beforeAll(() => buildBundle(bundle), 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SCENARIO = new URL('./conformance.scenario', import.meta.url).pathname;

describe('hv-vss-ts and hv_vss_daemon: same host script, same host-visible results', () => {
  it('the conformance scenario: statuses, flags, and frozen filesystems after each step', async () => {
    const [upstream, ours] = await Promise.all([
      runHarness<R>('scenario', { bundle, daemon: 'upstream', scenario: SCENARIO }),
      runHarness<R>('scenario', { bundle, daemon: 'ours', scenario: SCENARIO }),
    ]);
    const a = upstream.recording as Recording;
    const b = ours.recording as Recording;
    expect(a.summary.ok).toBe(true);
    expect(b.summary.ok).toBe(true);
    expect(formatDifferences(compareRecordings(a, b, { labels: ['upstream', 'ours'] }))).toBe('');
    expect(ours.probes).toEqual(upstream.probes);
    // Both froze something, root last.
    expect(upstream.probes.some((p: R) => p.frozen['/'] === true)).toBe(true);
    const freezes = (t: string[]) => t.filter((x) => x.startsWith('freeze')).slice(0, 3);
    expect(freezes(upstream.trace)).toEqual(['freeze /mnt/ext4 ok', 'freeze /mnt/xfs ok', 'freeze / ok']);
    expect(freezes(ours.trace)).toEqual(freezes(upstream.trace));
    // The documented difference: upstream thaws root last, we thaw it first.
    const firstThaw = (t: string[]) => t.filter((x) => x.startsWith('thaw') && x.endsWith(' ok')).slice(0, 3);
    expect(firstThaw(upstream.trace)).toEqual(['thaw /mnt/ext4 ok', 'thaw /mnt/xfs ok', 'thaw / ok']);
    expect(firstThaw(ours.trace)).toEqual(['thaw / ok', 'thaw /mnt/xfs ok', 'thaw /mnt/ext4 ok']);
    expect([upstream.thawedAtClose, ours.thawedAtClose]).toEqual([[], []]);
  }, 150_000);

  it('a failing FREEZE (a shut-down filesystem): both roll back and answer HV_E_FAIL', async () => {
    const [upstream, ours] = await Promise.all([
      runHarness<R>('partial', { bundle, daemon: 'upstream' }),
      runHarness<R>('partial', { bundle, daemon: 'ours' }),
    ]);
    const view = (r: R) => ({
      freeze: r.freeze,
      frozenAfterFreeze: r.frozenAfterFreeze,
      thaw: r.thaw,
      freezeAgain: r.freezeAgain,
      thawAgain: r.thawAgain,
    });
    expect(view(ours)).toEqual(view(upstream));
    expect(upstream.freeze).toBe('HV_E_FAIL');
    // Same rollback: what was frozen is thawed before the reply.
    expect(ours.trace.slice(0, 3)).toEqual(upstream.trace.slice(0, 3));
  }, 150_000);
});
