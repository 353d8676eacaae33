/**
 * The pool directory's change notification (pool-watch.ts) against real inotify, and how the pools
 * use it: no stat(2) for a read of an unchanged pool, every change still seen at the next read,
 * and a periodic stat for what inotify cannot see.
 */
import {
  chmodSync,
  closeSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpPools, type KvpPoolsOptions } from '../../../daemons/kvp/pool.js';
import { encodeRecord } from '../../../daemons/kvp/pool-file.js';
import { type PoolIo, nodePoolIo } from '../../../daemons/kvp/pool-io.js';
import { type DirWatch, inotifyWatch } from '../../../daemons/kvp/pool-watch.js';
import { R, poolPath, records, tempDir } from './pool-support.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function watched(): { dir: string; watch: DirWatch } {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const watch = inotifyWatch(t.dir);
  if (!watch) throw new Error('inotify is unavailable on this machine');
  cleanups.push(() => watch.close());
  return { dir: t.dir, watch };
}

describe('inotifyWatch', () => {
  it('keeps its generation while nothing changes, and moves it for every kind of change', () => {
    const { dir, watch } = watched();
    const file = join(dir, '.kvp_pool_0');
    writeFileSync(file, 'x');
    const steps: [string, () => void][] = [
      ['write', () => writeFileSync(file, 'more')],
      [
        'in-place write',
        () => {
          const fd = openSync(file, 'r+');
          writeSync(fd, 'y', 0);
          closeSync(fd);
        },
      ],
      ['chmod', () => chmodSync(file, 0o600)],
      [
        'rename over',
        () => {
          writeFileSync(join(dir, 'tmp'), 'new');
          renameSync(join(dir, 'tmp'), file);
        },
      ],
      ['unlink', () => unlinkSync(file)],
      ['create', () => writeFileSync(file, '')],
    ];
    let g = watch.generation();
    expect(watch.generation()).toBe(g);
    for (const [what, change] of steps) {
      change();
      const next = watch.generation();
      expect(next, what).toBeGreaterThan(g);
      // Drained: quiet again until the next change.
      expect(watch.generation(), what).toBe(next);
      expect(watch.generation(), what).toBe(next);
      g = next;
    }
  });

  it('reports a change on every look once the directory is gone (the watch covers nothing)', () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const sub = join(t.dir, 'pools');
    mkdirSync(sub);
    const w = inotifyWatch(sub);
    if (!w) throw new Error('inotify is unavailable');
    cleanups.push(() => w.close());
    const g = w.generation();
    rmSync(sub, { recursive: true });
    const a = w.generation();
    const b = w.generation();
    expect(a).toBeGreaterThan(g);
    expect(b).toBeGreaterThan(a);
  });

  it('is undefined for a directory that does not exist', () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    expect(inotifyWatch(join(t.dir, 'missing'))).toBeUndefined();
  });
});

describe('pools with a directory watch', () => {
  /** The real effects, counting stat(path) calls. */
  function countingIo(watchDir: PoolIo['watchDir']): PoolIo & { stats: () => number } {
    let stats = 0;
    return {
      ...nodePoolIo,
      stat: (p) => {
        stats++;
        return nodePoolIo.stat(p);
      },
      watchDir,
      stats: () => stats,
    };
  }

  async function open(io: PoolIo, opts: Partial<KvpPoolsOptions> = {}) {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const dir = join(t.dir, 'hyperv');
    mkdirSync(dir);
    writeFileSync(poolPath(dir, 0), records(['a', '1'], ['b', '2']));
    // racyWindowMs 0: a snapshot is trusted at once, so reads take the lock-free path in the test.
    const store = await KvpPools.open({ dir, logger: memoryLogger(), io, racyWindowMs: 0, ...opts });
    cleanups.push(() => store.close());
    return { dir, store };
  }

  const rewrite = (dir: string, value: string) => {
    const fd = openSync(poolPath(dir, 0), 'r+');
    writeSync(fd, encodeRecord('a', value), 0, R, 0);
    closeSync(fd);
  };

  it('serves reads of an unchanged pool without a stat, and sees a foreign write at the next read', async () => {
    const io = countingIo(nodePoolIo.watchDir);
    const { dir, store } = await open(io);
    expect(await store.get(0, 'a')).toBe('1');
    expect(await store.get(0, 'a')).toBe('1'); // verified once by stat after the last event
    const before = io.stats();
    for (let i = 0; i < 50; i++) expect(await store.enumerate(0, 1)).toEqual({ key: 'b', value: '2' });
    expect(io.stats()).toBe(before);
    for (let i = 0; i < 5; i++) {
      rewrite(dir, `theirs-${i}`);
      expect(await store.get(0, 'a')).toBe(`theirs-${i}`);
    }
  });

  it('without a watch, stats the file for every read', async () => {
    const io = countingIo(undefined);
    const { store } = await open(io);
    await store.get(0, 'a');
    const before = io.stats();
    for (let i = 0; i < 20; i++) await store.get(0, 'b');
    expect(io.stats() - before).toBe(20);
  });

  it('stats again after revalidateMs even when the watch reports nothing (mmap writers, NFS)', async () => {
    // A watch that never reports a change: what inotify shows for a write it cannot see.
    const blind: DirWatch = { generation: () => 7, close: () => undefined };
    const io = countingIo(() => blind);
    const { dir, store } = await open(io, { revalidateMs: 40 });
    expect(await store.get(0, 'a')).toBe('1');
    rewrite(dir, 'unseen');
    const deadline = Date.now() + 2000;
    let value: string | undefined = '1';
    while (value !== 'unseen' && Date.now() < deadline) {
      value = await store.get(0, 'a');
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(value).toBe('unseen');
  });
});
