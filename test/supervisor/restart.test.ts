/**
 * hv-supervisor with real daemons through the kernel-shim's device files: our KVP and FCOPY daemons
 * killed with SIGKILL are restarted and register again (the time is measured and printed); a
 * rescinded device is waited for without restarting in a loop, and the daemon runs again once the
 * device is offered again (the upstream daemon, which exits on a rescind, and ours, which waits).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HV_S_OK } from '../../uapi/constants.js';
import { OURS, REPO, UPSTREAM, runInShim } from '../support/shim-harness.js';

const work = mkdtempSync(join(tmpdir(), 'hv-sup-restart-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const TSX = [process.execPath, '--import', 'tsx'];
let n = 0;

interface Outcome {
  daemonComm: string;
  statusBefore: number;
  daemon: number;
  after: number | undefined;
  childrenWhileAbsent: number[];
  reregisteredMs: number;
  registrations: number;
  statusAfter: number;
}

async function supervised(
  service: 'kvp' | 'fcopy',
  daemon: 'ours' | 'upstream',
  action: 'kill' | 'rescind',
): Promise<Outcome> {
  const dir = join(work, `${n++}`);
  const journal = join(dir, 'fcopy-journal');
  const command =
    daemon === 'upstream'
      ? [...UPSTREAM[service]]
      : service === 'kvp'
        ? [...OURS.kvp]
        : [...TSX, `${REPO}/daemons/fcopy/main.ts`, '-n', '--log-level', 'warn', '--state-dir', journal];
  const { result, log } = await runInShim<Outcome>({
    services: [service],
    command: [
      ...TSX,
      `${REPO}/supervisor/main.ts`,
      '--kind',
      service,
      '--device',
      `/dev/vmbus/hv_${service}`,
      '--no-status-socket',
      ...(service === 'fcopy' ? ['--fcopy-journal', journal] : []),
      '--',
      ...command,
    ],
    script: 'test/supervisor/scripts/supervised.ts',
    params: { service, action, target: join(dir, 'target') },
    stateDir: join(dir, 'state'),
    timeoutMs: 60_000,
  });
  expect(result.statusBefore, log).toBe(HV_S_OK);
  expect(result.statusAfter, log).toBe(HV_S_OK);
  expect(result.registrations).toBeGreaterThanOrEqual(1);
  return result;
}

describe('hv-supervisor with real daemons, in the shim', () => {
  for (const service of ['kvp', 'fcopy'] as const) {
    it(`kill -9 of hv-${service}-ts: restarted, registered again, serving`, async () => {
      const r = await supervised(service, 'ours', 'kill');
      process.stdout.write(`hv-${service}-ts SIGKILLed: registered again after ${r.reregisteredMs} ms\n`);
      expect(r.daemonComm).toBe(`hv_${service}_daemon`);
      expect(r.after).toBeGreaterThan(0);
      expect(r.after).not.toBe(r.daemon);
      // the first restart comes after the initial back-off (100 ms) plus the daemon's start
      expect(r.reregisteredMs).toBeGreaterThanOrEqual(100);
    }, 70_000);
  }

  it('a rescind: the upstream daemon exits, the supervisor waits for the device (no restart loop), then restarts it', async () => {
    const r = await supervised('kvp', 'upstream', 'rescind');
    process.stdout.write(`hv_kvp_daemon after a re-offer: registered again after ${r.reregisteredMs} ms\n`);
    // while the node was absent: at most the child that was dying, never a new one
    expect(r.childrenWhileAbsent.filter((p) => p !== r.daemon)).toEqual([]);
    expect(r.after).toBeGreaterThan(0);
    expect(r.after).not.toBe(r.daemon);
  }, 70_000);

  it('a rescind: our daemon waits it out itself, and serves again after the re-offer without a restart', async () => {
    const r = await supervised('kvp', 'ours', 'rescind');
    process.stdout.write(`hv-kvp-ts after a re-offer: registered again after ${r.reregisteredMs} ms\n`);
    expect(r.childrenWhileAbsent).toEqual([r.daemon]);
    expect(r.after).toBe(r.daemon);
  }, 70_000);
});
