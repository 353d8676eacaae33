/** hv-supervisor restarting the upstream hv_kvp_daemon against the kernel-shim's device files. */
import { describe, expect, it } from 'vitest';
import { HV_S_OK } from '../../uapi/constants.js';
import { REPO, UPSTREAM, runInShim } from '../support/shim-harness.js';

describe('hv-supervisor with the upstream KVP daemon, in the shim', () => {
  it('restarts hv_kvp_daemon after kill -9, and it registers again', async () => {
    const { result } = await runInShim<{
      before: number;
      after: number;
      daemon: number;
      again: number;
      addStatus: number;
    }>({
      services: ['kvp'],
      command: [
        process.execPath,
        '--import',
        'tsx',
        `${REPO}/supervisor/main.ts`,
        '--kind',
        'kvp',
        '--device',
        '/dev/vmbus/hv_kvp',
        '--no-status-socket',
        '--',
        ...UPSTREAM.kvp,
      ],
      script: 'test/supervisor/scripts/upstream-restart.ts',
      timeoutMs: 60_000,
    });
    expect(result.after).toBeGreaterThan(result.before);
    expect(result.again).toBeGreaterThan(0);
    expect(result.again).not.toBe(result.daemon);
    expect(result.addStatus).toBe(HV_S_OK);
  }, 70_000);
});
