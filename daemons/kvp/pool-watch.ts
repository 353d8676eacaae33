/**
 * Change notification for the pool directory (inotify), so that a read of an unchanged pool costs
 * no stat(2). The kernel queues an inotify event inside the system call that changes a file (a
 * write, a truncate, a rename, an unlink, a chmod or utimes), before that call returns to its
 * caller. So when the watch has nothing queued, nothing in the directory has changed since the
 * events were last drained; a reader that drains first and stats afterwards misses nothing: a
 * change after the drain is either in the stat or in the queue for the next look.
 *
 * What inotify does not see (a write through a shared mmap, a change made by another machine on
 * a network filesystem) the pools still notice through their periodic stat (KvpPoolsOptions
 * revalidateMs). A watch that can no longer be trusted (queue overflow, the directory removed,
 * moved or unmounted) reports a change on every look, which makes every read stat again.
 */
import { closeSync, readSync } from 'node:fs';
import {
  IN_ATTRIB,
  IN_CLOSE_WRITE,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_IGNORED,
  IN_MODIFY,
  IN_MOVE_SELF,
  IN_MOVED_FROM,
  IN_MOVED_TO,
  IN_ONLYDIR,
  IN_Q_OVERFLOW,
  IN_UNMOUNT,
  POLLIN,
  inotifyAddWatch,
  inotifyInit,
  pollNow,
} from '../common/libc.js';

export interface DirWatch {
  /**
   * A number that changes (it only grows) whenever something in the directory may have changed
   * since the previous call. Cheap when nothing did: one poll(2).
   */
  generation(): number;
  close(): void;
}

/** Every change to a name in the directory or to the contents or metadata of a file in it. */
const CHANGES =
  IN_MODIFY |
  IN_ATTRIB |
  IN_CLOSE_WRITE |
  IN_MOVED_FROM |
  IN_MOVED_TO |
  IN_CREATE |
  IN_DELETE |
  IN_DELETE_SELF |
  IN_MOVE_SELF;
/** Events after which the watch no longer covers the directory, or has lost events. */
const LOST = IN_Q_OVERFLOW | IN_IGNORED | IN_UNMOUNT | IN_DELETE_SELF | IN_MOVE_SELF;
/** struct inotify_event: int wd, uint32 mask, uint32 cookie, uint32 len, then len bytes of name. */
const EVENT_HEADER = 16;

/** An inotify watch of `dir`, or undefined where inotify is unavailable (no instance or watch left). */
export function inotifyWatch(dir: string): DirWatch | undefined {
  let fd: number;
  try {
    fd = inotifyInit();
  } catch {
    return undefined;
  }
  try {
    inotifyAddWatch(fd, dir, CHANGES | IN_ONLYDIR);
  } catch {
    closeSync(fd);
    return undefined;
  }
  let generation = 0;
  let lost = false;
  let closed = false;
  const buf = Buffer.alloc(64 * 1024);
  return {
    generation() {
      if (lost || closed) return ++generation;
      if ((pollNow(fd, POLLIN) & POLLIN) === 0) return generation;
      generation++;
      // Drain what is queued (the descriptor is non-blocking; poll again rather than meet EAGAIN).
      do {
        let n: number;
        try {
          n = readSync(fd, buf, 0, buf.length, null);
        } catch {
          lost = true;
          break;
        }
        for (let at = 0; at + EVENT_HEADER <= n; at += EVENT_HEADER + buf.readUInt32LE(at + 12)) {
          if (buf.readUInt32LE(at + 4) & LOST) lost = true;
        }
      } while (!lost && (pollNow(fd, POLLIN) & POLLIN) !== 0);
      return generation;
    },
    close() {
      if (closed) return;
      closed = true;
      closeSync(fd);
    },
  };
}
