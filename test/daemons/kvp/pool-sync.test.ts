/**
 * When pool writes are synced (pool-sync.ts): "always" before the operation resolves, "deferred"
 * after a delay and when the store closes, "never" not at all. The writes themselves are the same
 * in every mode (the crash tests in pool-crash.test.ts run each mode).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpPools } from '../../../daemons/kvp/pool.js';
import { type PoolIo, nodePoolIo } from '../../../daemons/kvp/pool-io.js';
import type { SyncMode } from '../../../daemons/kvp/pool-sync.js';
import { fileRecords, poolPath, tempDir } from './pool-support.js';
import { until } from '../../support/until.js';

const tmp = tempDir('hv-kvp-sync-');
afterAll(() => tmp.cleanup());
let n = 0;

/** A store over the real files whose fdatasync calls are counted (and can be made to fail). */
async function open(sync: SyncMode, syncDelayMs: number) {
  const synced: number[] = [];
  let failures = 0;
  const io: PoolIo = {
    ...nodePoolIo,
    datasync: async (fd) => {
      if (failures > 0) {
        failures--;
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      }
      synced.push(fd);
      return nodePoolIo.datasync(fd);
    },
  };
  const dir = `${tmp.dir}/${n++}`;
  const logger = memoryLogger();
  const store = await KvpPools.open({ dir, logger, io, sync, syncDelayMs });
  synced.length = 0; // what opening synced (the new directory) is not the question here
  return { store, dir, synced, logger, failNext: (k: number) => (failures = k) };
}

describe('pool sync modes', () => {
  it('always: every change is synced before it resolves', async () => {
    const { store, synced } = await open('always', 60_000);
    await store.set(0, 'k', 'v1');
    expect(synced.length).toBe(1); // the append
    await store.set(0, 'k', 'v2');
    expect(synced.length).toBe(3); // journal, record (the journal's clearing is not synced)
    await store.close();
  });

  it('deferred: answers without syncing, then syncs each written file once after the delay', async () => {
    const { store, dir, synced } = await open('deferred', 50);
    await store.set(0, 'k', 'v1');
    await store.set(0, 'k', 'v2');
    await store.set(1, 'other', 'x');
    expect(synced).toEqual([]);
    // the data is in the file already (a crash of the daemon loses nothing)
    expect(fileRecords(poolPath(dir, 0))).toEqual([['k', 'v2']]);
    await until(() => synced.length > 0, 2000, 'the deferred flush');
    await new Promise((r) => setTimeout(r, 20));
    // pool 0, its journal, pool 1: each once, however many writes went to it
    expect(synced.length).toBe(3);
    expect(new Set(synced).size).toBe(3);
    await store.close();
    expect(synced.length).toBe(3); // nothing left to sync at close
  });

  it('deferred: closing the store syncs what is pending at once', async () => {
    const { store, synced } = await open('deferred', 60_000);
    await store.set(2, 'k', 'v');
    expect(synced).toEqual([]);
    await store.close();
    expect(synced.length).toBe(1);
  });

  it('deferred: a failed flush is logged, and the next write tries again', async () => {
    const { store, synced, logger, failNext } = await open('deferred', 20);
    failNext(1);
    await store.set(3, 'k', 'v');
    await until(() => logger.lines.some((l) => /fdatasync .* failed/.test(l.msg)), 2000, 'the warning');
    expect(synced).toEqual([]);
    await store.set(3, 'k2', 'v');
    await until(() => synced.length === 1, 2000, 'the retry');
    await store.close();
  });

  it('never: nothing is synced, not even at close', async () => {
    const { store, dir, synced } = await open('never', 10);
    await store.set(4, 'k', 'v1');
    await store.set(4, 'k', 'v2');
    await new Promise((r) => setTimeout(r, 50));
    await store.close();
    expect(synced).toEqual([]);
    expect(fileRecords(poolPath(dir, 4))).toEqual([['k', 'v2']]);
  });
});
