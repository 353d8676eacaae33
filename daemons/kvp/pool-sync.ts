/**
 * When pool writes reach the disk: the three `--sync` modes of hv-kvp-ts.
 *
 *  - always:   fdatasync before the host gets its answer, between every step of a journaled
 *              change (journal, record, journal cleared). An acknowledged record survives a power
 *              loss. Costs about a millisecond a write on an ordinary disk.
 *  - deferred: the default. The same writes in the same order, answered at once; the files written
 *              are fdatasync'd together `delayMs` (1 s) after the first unsynced write, and when the
 *              daemon stops. A crash of the daemon loses nothing (the page cache survives it, and
 *              the journal repairs a torn change); a power loss can lose at most the last second.
 *  - never:    nothing is synced by us (the kernel's writeback, 5 s on ext4): upstream's behaviour.
 *
 * Every mode keeps the journal: it is what makes a kill -9 in the middle of a change harmless.
 * `syncedIo` wraps a PoolIo so that the pool code itself stays the same in every mode.
 */
import type { PoolIo } from './pool-io.js';

export type SyncMode = 'always' | 'deferred' | 'never';
export const SYNC_MODES: readonly SyncMode[] = ['always', 'deferred', 'never'];

export interface SyncedIo {
  readonly io: PoolIo;
  /** Sync what is pending now (deferred mode; a no-op otherwise). Never rejects. */
  flush(): Promise<void>;
}

export interface SyncOptions {
  /** How long after the first unsynced write the flush runs (default 1000 ms). */
  delayMs?: number;
  /** A failed background flush (the data stays in the page cache; the next flush tries again). */
  onError?: (err: unknown, what: string) => void;
}

export function syncedIo(base: PoolIo, mode: SyncMode, opts: SyncOptions = {}): SyncedIo {
  if (mode === 'always') return { io: base, flush: async () => {} };
  if (mode === 'never')
    return { io: { ...base, datasync: async () => {}, syncDir: async () => {} }, flush: async () => {} };

  const delayMs = opts.delayMs ?? 1000;
  const dirtyFds = new Set<number>();
  const dirtyDirs = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const flushNow = async (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    const fds = [...dirtyFds];
    const dirs = [...dirtyDirs];
    dirtyFds.clear();
    dirtyDirs.clear();
    for (const fd of fds) {
      try {
        await base.datasync(fd);
      } catch (err) {
        opts.onError?.(err, `fdatasync of descriptor ${fd}`);
      }
    }
    for (const dir of dirs) {
      try {
        await base.syncDir(dir);
      } catch (err) {
        opts.onError?.(err, `fsync of directory ${dir}`);
      }
    }
  };
  const flush = (): Promise<void> => {
    running = running.then(flushNow);
    return running;
  };
  const schedule = (): void => {
    if (timer) return;
    timer = setTimeout(() => void flush(), delayMs);
    // A pending flush does not keep a stopping process alive: stopping flushes explicitly.
    timer.unref();
  };
  const io: PoolIo = {
    ...base,
    async datasync(fd) {
      dirtyFds.add(fd);
      schedule();
    },
    async syncDir(dir) {
      dirtyDirs.add(dir);
      schedule();
    },
    close(fd) {
      // A descriptor closed before the flush (the pool file was replaced by another program): its
      // number may be reused at once, so it must not be synced later under that number.
      dirtyFds.delete(fd);
      base.close(fd);
    },
  };
  return { io, flush };
}
