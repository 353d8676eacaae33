/**
 * Every effect the KVP pool store has, behind one small interface: file I/O by descriptor, stat,
 * the two lock families (flock and open-file-description record locks) and the clock. `nodePoolIo`
 * is the real one; tests wrap it (count reads, inject a crash in the middle of a write).
 *
 * Node sets O_CLOEXEC on every descriptor it opens, as the C daemon does with "re"/O_CLOEXEC.
 */
import { mkdirp } from '../common/mkdirp.js';
import {
  closeSync,
  constants,
  fdatasync,
  fstatSync,
  futimesSync,
  ftruncateSync,
  openSync,
  read,
  readSync,
  statSync,
  write,
  type BigIntStats,
} from 'node:fs';
import { type DirWatch, inotifyWatch } from './pool-watch.js';
import { F_UNLCK, F_WRLCK, LOCK_EX, LOCK_NB, LOCK_UN, flock, ofdLock, ofdTestLock } from '../common/libc.js';

/** The fields of stat(2) that change detection uses. Times in nanoseconds. */
export interface FileStat {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: number;
  readonly atimeNs: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
}

export interface PoolIo {
  /** mkdir -p with `mode` (minus umask) for the directories it creates. */
  mkdirp(dir: string, mode: number): void;
  /** Open read-write, creating the file with `mode` (minus umask) if missing; never truncates. */
  open(path: string, mode: number): { fd: number; created: boolean };
  close(fd: number): void;
  /** stat(2) by path; undefined if the path does not exist. */
  stat(path: string): FileStat | undefined;
  fstat(fd: number): FileStat;
  /** pread(2) up to `length` bytes at `position`; shorter only at end of file. */
  read(fd: number, length: number, position: number): Promise<Buffer>;
  /**
   * The same, on the calling thread: for one record, where a thread-pool round trip costs more
   * than the read. Reading never waits for a frozen filesystem (the kernel skips the access-time
   * update of a frozen one), so it is safe while VSS holds a freeze; writes stay asynchronous.
   */
  readNow(fd: number, length: number, position: number): Buffer;
  /** pwrite(2) all of `data` at `position`. */
  write(fd: number, data: Buffer, position: number): Promise<void>;
  truncate(fd: number, size: number): void;
  datasync(fd: number): Promise<void>;
  /** fsync(2) a directory, so that names created in it survive a power loss. */
  syncDir(dir: string): Promise<void>;
  /** Set the modification time (and keep the access time) of an open file. */
  setTimes(fd: number, atimeNs: bigint, mtimeNs: bigint): void;
  /** flock(LOCK_EX|LOCK_NB): false when another open file holds it. */
  tryFlock(fd: number): boolean;
  unflock(fd: number): void;
  /** F_OFD_SETLK F_WRLCK on the whole file: false when another holder (POSIX or OFD lock) has it. */
  tryRecordLock(fd: number): boolean;
  unlockRecord(fd: number): void;
  /** Who holds a conflicting record lock (pid; -1 for an OFD lock), for error messages. */
  recordLockHolder(fd: number): number | undefined;
  /**
   * A change notification for the directory (pool-watch.ts), or undefined: without one, every read
   * of a cached pool stats the file.
   */
  watchDir?(dir: string): DirWatch | undefined;
  /** Wall clock, milliseconds since the epoch (the clock file timestamps use). */
  now(): number;
  sleep(ms: number): Promise<void>;
}

function toFileStat(s: BigIntStats): FileStat {
  return {
    dev: s.dev,
    ino: s.ino,
    size: Number(s.size),
    atimeNs: s.atimeNs,
    mtimeNs: s.mtimeNs,
    ctimeNs: s.ctimeNs,
  };
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}

function readAt(fd: number, buf: Buffer, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    read(fd, buf, offset, buf.length - offset, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

function writeAt(fd: number, buf: Buffer, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    write(fd, buf, offset, buf.length - offset, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

const nsToSeconds = (ns: bigint): number => Number(ns / 1000n) / 1e6;

export const nodePoolIo: PoolIo = {
  mkdirp(dir, mode) {
    mkdirp(dir, mode);
  },
  open(path, mode) {
    for (;;) {
      try {
        const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, mode);
        return { fd, created: true };
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw err;
      }
      try {
        return { fd: openSync(path, constants.O_RDWR), created: false };
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err; // removed between the two calls: try again
      }
    }
  },
  close(fd) {
    closeSync(fd);
  },
  stat(path) {
    try {
      return toFileStat(statSync(path, { bigint: true }));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw err;
    }
  },
  fstat(fd) {
    return toFileStat(fstatSync(fd, { bigint: true }));
  },
  readNow(fd, length, position) {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    return got === length ? buf : buf.subarray(0, got);
  },
  async read(fd, length, position) {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = await readAt(fd, buf, got, position + got);
      if (n === 0) break;
      got += n;
    }
    return got === length ? buf : buf.subarray(0, got);
  },
  async write(fd, data, position) {
    let done = 0;
    while (done < data.length) done += await writeAt(fd, data, done, position + done);
  },
  truncate(fd, size) {
    ftruncateSync(fd, size);
  },
  datasync(fd) {
    return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
  },
  async syncDir(dir) {
    const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    } finally {
      closeSync(fd);
    }
  },
  setTimes(fd, atimeNs, mtimeNs) {
    futimesSync(fd, nsToSeconds(atimeNs), nsToSeconds(mtimeNs));
  },
  tryFlock: (fd) => flock(fd, LOCK_EX | LOCK_NB),
  unflock(fd) {
    flock(fd, LOCK_UN);
  },
  tryRecordLock: (fd) => ofdLock(fd, F_WRLCK),
  unlockRecord(fd) {
    ofdLock(fd, F_UNLCK);
  },
  recordLockHolder: (fd) => ofdTestLock(fd, F_WRLCK)?.pid,
  watchDir: inotifyWatch,
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};
