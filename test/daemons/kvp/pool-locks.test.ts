/**
 * The pool store's locking against foreign processes: a Python holder of a classic POSIX lock (as the
 * C daemon takes), of an flock (as cloud-init and azure-init take), and Python writers of both
 * kinds appending while the store works.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpLockTimeoutError, KvpPools, type KvpPoolsOptions } from '../../../daemons/kvp/pool.js';
import { type PoolIo, nodePoolIo } from '../../../daemons/kvp/pool-io.js';
import {
  type LockKind,
  PROBE_LOCKS,
  R,
  fileRecords,
  foreignWriter,
  holdLock,
  poolPath,
  records,
  tempDir,
} from './pool-support.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: Partial<KvpPoolsOptions> = {}) {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const dir = join(t.dir, 'hyperv');
  const logger = memoryLogger();
  const store = await KvpPools.open({ dir, logger, partialGraceMs: 30, ...opts });
  cleanups.push(() => store.close());
  return { dir, store, logger, path: (n: number) => poolPath(dir, n) };
}

describe.each<LockKind>(['posix', 'flock'])('a foreign %s lock holder', (kind) => {
  it('makes set() wait without blocking the event loop, and set() completes after release', async () => {
    const { store, path } = await setup();
    await store.set(1, 'before', '0');
    const holder = await holdLock(path(1), kind);
    let done = false;
    const pending = store.set(1, 'k', 'v').then(() => (done = true));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    await new Promise((r) => setTimeout(r, 300));
    clearInterval(timer);
    expect(done).toBe(false);
    expect(ticks).toBeGreaterThan(5); // the loop kept running while set() waited
    expect(fileRecords(path(1))).toEqual([['before', '0']]);
    await holder.release();
    await pending;
    expect(fileRecords(path(1))).toEqual([
      ['before', '0'],
      ['k', 'v'],
    ]);
    expect(await store.get(1, 'k')).toBe('v');
  });

  it('does not hold up a read of a file unchanged since our own write', async () => {
    const { store, path } = await setup({ lockTimeoutMs: 2000 });
    await store.set(3, 'k', 'v'); // our write: the cache is trusted
    const holder = await holdLock(path(3), kind);
    try {
      const started = Date.now();
      expect(await store.get(3, 'k')).toBe('v');
      expect(await store.enumerate(3, 0)).toEqual({ key: 'k', value: 'v' });
      expect(Date.now() - started).toBeLessThan(1000); // not the 2 s lock timeout
      // but a change under the lock (the holder writing) makes the next read wait for the lock
      appendFileSync(path(3), records(['x', 'y']));
      const err = await store.get(3, 'x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KvpLockTimeoutError);
    } finally {
      await holder.release();
    }
    expect(await store.get(3, 'x')).toBe('y'); // read after the release
  }, 15_000);

  it('makes reads of a changed file wait, and gives up with a clear error after lockTimeoutMs', async () => {
    const { store, path } = await setup({ lockTimeoutMs: 250 });
    const holder = await holdLock(path(2), kind);
    try {
      const started = Date.now();
      const err = await store.get(2, 'k').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KvpLockTimeoutError);
      expect(Date.now() - started).toBeGreaterThanOrEqual(240);
      expect(Date.now() - started).toBeLessThan(5000);
      const e = err as KvpLockTimeoutError;
      expect(e.code).toBe('ELOCKTIMEOUT');
      expect(e.pool).toBe(2);
      expect(e.message).toContain(path(2));
      expect(e.message).toContain(kind === 'posix' ? `pid ${holder.pid}` : 'flock');
      await expect(store.set(2, 'k', 'v')).rejects.toThrow(KvpLockTimeoutError);
    } finally {
      await holder.release();
    }
    await store.set(2, 'k', 'v'); // usable again
    expect(await store.get(2, 'k')).toBe('v');
  });
});

describe('the store holds both locks', () => {
  it('across the whole read-modify-write of a set()', async () => {
    const probes: string[] = [];
    let path = '';
    const io: PoolIo = {
      ...nodePoolIo,
      datasync: async (fd) => {
        // in the middle of the operation (after a write, before the journal is cleared): ask another process
        if (path)
          probes.push(
            spawnSync('python3', ['-c', PROBE_LOCKS(path)])
              .stdout.toString()
              .trim(),
          );
        return nodePoolIo.datasync(fd);
      },
    };
    const { store, path: p } = await setup({ io });
    path = p(1);
    await store.set(1, 'k', 'v1'); // append
    await store.set(1, 'k', 'v2'); // journaled update: three syncs
    await store.set(1, 'z', 'v'); // append
    await store.delete(1, 'k'); // shift-delete
    expect(probes).toHaveLength(1 + 2 + 1 + 3);
    for (const probe of probes) expect(probe).toBe('posix=busy flock=busy');
    expect(
      spawnSync('python3', ['-c', PROBE_LOCKS(path)])
        .stdout.toString()
        .trim(),
    ).toBe('posix=free flock=free');
  });
});

describe('foreign writers at the same time as the store', () => {
  it.each([
    ['an flock appender and a POSIX-lock appender', 'flock', 'posix'],
    ['a C-daemon-like rewriter (POSIX lock across read-modify-write)', 'posix-rewrite', undefined],
  ] as const)(
    'loses nothing: %s run while the store sets, deletes and enumerates',
    async (_, w1, w2) => {
      const { store, path, logger } = await setup();
      const N = 150;
      await store.set(1, 'seed', 's');
      const writers = [
        foreignWriter(path(1), w1, 'cloud-', N),
        foreignWriter(path(1), w2 ?? 'flock', 'cdaemon-', w2 ? N : 0),
      ];
      let finished = false;
      const all = Promise.all(writers).finally(() => (finished = true));
      const ours = new Map<string, string>();
      let i = 0;
      while (!finished || i < 200) {
        const key = `ours-${i % 120}`;
        const value = `v${i}`;
        await store.set(1, key, value);
        ours.set(key, value);
        if (i % 25 === 7) {
          const k = `ours-${(i * 7) % 120}`;
          if (ours.has(k) && (await store.delete(1, k))) ours.delete(k);
        }
        const e = await store.enumerate(1, i % 50);
        expect(e === undefined || typeof e.key === 'string').toBe(true);
        i++;
      }
      expect(await all).toEqual([0, 0]);
      const got = new Map(fileRecords(path(1)));
      for (let j = 0; j < N; j++) {
        expect(got.get(`cloud-${j}`)).toBe(`value-${j}-${'x'.repeat(j % 300)}`);
        if (w2) expect(got.get(`cdaemon-${j}`)).toBe(`value-${j}-${'x'.repeat(j % 300)}`);
      }
      for (const [k, v] of ours) expect(got.get(k)).toBe(v);
      for (const k of got.keys()) if (k.startsWith('ours-')) expect(ours.has(k)).toBe(true);
      const served = await store.records(1);
      expect(served.length).toBe(fileRecords(path(1)).length);
      expect(new Set(served.map((r) => r.key)).size).toBe(served.length); // no duplicates appeared
      expect(statSync(path(1)).size % R).toBe(0);
      expect(logger.lines.filter((l) => /not served|partial/.test(l.msg))).toEqual([]);
    },
    60_000,
  );
});
