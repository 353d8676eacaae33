/**
 * The KVP pool store: the five pool files /var/lib/hyperv/.kvp_pool_0 … .kvp_pool_4 (the directory
 * is an option), read and written so that the C hv_kvp_daemon, cloud-init, azure-init, WALinuxAgent
 * and Microsoft's tools can keep using them alongside us. Record codec: pool-file.ts; journal codec
 * and recovery decision: pool-journal.ts; every effect: pool-io.ts.
 *
 * DESIGN
 *
 * Format. No header; fixed 2560-byte records (key[512] then value[2048], UTF-8, NUL-terminated).
 * We always zero-pad. Readers stop at the first NUL of each field. A trailing partial record is
 * ignored. Duplicate keys are kept: GET/SET/DELETE act on the first valid match, ENUMERATE and
 * records() show every valid record in file order. A corrupt record (key not terminated, empty, or
 * key/value not valid UTF-8) is not served (ENUMERATE indices count served records only), is logged
 * once when first seen, and its bytes stay in the file.
 *
 * Locks. Two families of writers exist on real guests: POSIX record locks (the C daemon, Microsoft
 * tools: F_SETLKW on the whole file) and flock (cloud-init, azure-init). They do not conflict with
 * each other on Linux, so every operation, reads included, takes both on one descriptor of the
 * pool file: flock(LOCK_EX) and an open-file-description write lock (F_OFD_SETLK), which conflicts
 * with POSIX locks and, unlike them, is not dropped when another descriptor of the file is closed.
 * Both are taken with the non-blocking calls, flock first; if the record lock is busy the flock is
 * let go before sleeping (nothing is held while waiting, so no lock-order deadlock with anyone),
 * with back-off from 1 to 20 ms, until `lockTimeoutMs` (default 10 s) gives a KvpLockTimeoutError
 * naming the holder. The event loop is never blocked. The locks are held across the whole
 * operation: the change check, the read, the journal, the writes and the fsyncs. One exception: a
 * read (GET, ENUMERATE) of a file whose stat still matches a trusted snapshot (below) is served from
 * memory without the locks, since nobody can have written it since; any write changes the stat.
 * After locking, the path is stat()ed: if it now names another inode (a writer replaced the file
 * with rename) or nothing, we unlock, open the path (creating it, mode 0644) and lock again.
 *
 * Change detection. The file is read whole only when it changed: under the locks, stat(path)'s
 * (dev, ino, size, mtime ns, ctime ns) are compared with the snapshot taken when we last read or
 * wrote it. Equal stats prove nothing if the last change happened within the current timestamp
 * tick (a same-size rewrite in the same tick keeps every field). So a snapshot is trusted only if
 * (a) it was taken after a reload and the file's mtime and ctime were already `racyWindowMs` (50 ms;
 * 2 s when both times are whole seconds, i.e. on a filesystem with 1 s or 2 s timestamps) old, or
 * (b) it was taken after our own write, which then sets the file's mtime 1 ms in the past (futimes):
 * any later write(2)/truncate(2) by anyone stamps the current time, which can never equal that marker.
 * An untrusted snapshot is re-read at the next operation. A SET storm therefore never re-reads (our
 * writes are trusted), and a foreign change is seen at the next request even when it lands in the
 * same tick as ours. (Kernels >= 6.13 give fine-grained timestamps after a stat, which makes (b)
 * redundant there; Debian 12's 6.1 does not.) Where futimes is refused, snapshots after our writes
 * are just untrusted (correct, slower). The in-memory index (key → first served record) and the
 * record array make GET, and ENUMERATE by index, O(1) when nothing changed. With a directory
 * watch (pool-watch.ts, inotify), a lock-free read does not even stat: the watch is drained first,
 * and the stat is taken only after a change event, or when the last matching stat is older than
 * `revalidateMs` (1 s), for the writes inotify cannot see.
 *
 * Writes, always under both locks; with sync "always" an operation resolves only after fdatasync, so
 * resolved = durable (other modes: pool-sync.ts; the steps below are the same, the fdatasyncs move).
 *  - SET of a new key: pwrite one record at the end (whole records: slots × 2560), fdatasync. A kill
 *    mid-write leaves a trailing partial record, which every reader ignores.
 *  - SET of an existing key: the first matching record is rewritten in place. Its bytes are read
 *    back and checked first (key as expected, else re-read the file and start over; identical bytes:
 *    nothing to write). A kill can tear a pwrite (the kernel stops between pages on SIGKILL), so the
 *    change goes through the journal `.kvp_pool_N.journal` (mode 0600): write {offset, before,
 *    after, SHA-256}, fdatasync, pwrite the record, fdatasync, then truncate the journal to 0.
 *  - DELETE keeps insertion order, as upstream does (the host's ENUMERATE indices stay in order):
 *    the last record is removed with one ftruncate (atomic); any other is removed by shifting the
 *    records after it up one slot: journal {deleted record, shifted tail} + fdatasync, pwrite the
 *    shifted tail, fdatasync, ftruncate one record shorter, fdatasync, clear the journal. This
 *    costs O(records after it), like upstream's rewrite, but only for deletes.
 *  - The file is never replaced by rename(): a foreign appender may hold the old inode open and its
 *    record would vanish. No other record is ever rewritten, except that a delete moves the records
 *    after it up one slot, byte for byte (corrupt ones included), under the journal.
 *
 * Trailing partial records. Reads ignore them and leave them. While we hold both locks no locking
 * writer can be in the middle of an append, so a partial record is either the torn end of a writer
 * that died (upstream drops those at its next rewrite) or the work of a writer that does not lock.
 * It is dropped (with a warning) only when we must change the end of the file (append over it,
 * delete-truncate), and only once the file has not changed for `partialGraceMs` (500 ms): we wait
 * out the rest of that time and start over if the file moved meanwhile, so a lockless appender
 * between two write() calls is not cut off. Appending after it instead would misalign every later
 * record for every reader.
 *
 * Recovery. At open, and whenever we take the locks and find the journal non-empty (another process
 * using this store died), the entry is checked and applied (pool-journal.ts planRecovery):
 * unreadable (torn journal write: the pool was not touched yet) → dropped; region equals `after`
 * → done, finishing a pending delete-truncate; region equals `before` → never started; region a
 * byte-wise mix of the two (torn) → `before` is written back (roll back: the change was never
 * acknowledged, so this is a correct outcome); anything else → another program rewrote that part
 * since: left alone, with a warning. Recovery steps are idempotent, so a kill during recovery is safe.
 *
 * Kill -9 at any moment. An acknowledged record is on disk and the journal that covered it is
 * empty, so no later recovery touches it; the only bytes an interrupted operation can leave torn
 * are its own new tail (ignored as partial, or dropped later) or its in-place region (rolled back
 * from the journal). Records we did not touch are never written. fdatasync between the steps keeps
 * the same order on power loss. A journal whose clearing was lost to a power cut is harmless: its
 * region then equals `after` (nothing to do) or another operation's journal has replaced it.
 *
 * Limits. Keys over 511 and values over 2047 UTF-8 bytes, empty keys, NULs and lone surrogates are
 * rejected with a RangeError by set() (never truncated: a cut key would name another record; the
 * kernel never sends such data). get()/delete() of such a key find nothing. Pool numbers outside
 * 0..4 reject with a RangeError. A value field with no NUL at all is served as 2048 bytes
 * (pool-file.ts).
 *
 * Not covered. Writers that take no lock at all (we only give their partial tail a grace time);
 * foreign readers that look at the file between our crash and our restart may see the one torn
 * record before it is rolled back; and foreign writers of the two lock families do not exclude
 * each other (an flock appender and a POSIX-lock rewriter can lose each other's records; we exclude
 * both, they do not exclude one another).
 */
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { KVP_POOL_COUNT } from '../../uapi/constants.js';
import type { Logger } from '../common/log.js';
import {
  POOL_RECORD_SIZE as RECORD,
  decodeRecord,
  encodeRecord,
  storableProblem,
  type CorruptReason,
} from './pool-file.js';
import { decodeJournal, encodeJournal, planRecovery, type JournalEntry } from './pool-journal.js';
import { type FileStat, type PoolIo, nodePoolIo } from './pool-io.js';
import type { DirWatch } from './pool-watch.js';
import { type SyncMode, syncedIo } from './pool-sync.js';

export interface KvpRecord {
  readonly key: string;
  readonly value: string;
}

export interface KvpPoolsOptions {
  /** The pool directory, /var/lib/hyperv on a real guest. Created with mode 0755 if missing. */
  dir: string;
  logger: Logger;
  /** Give up waiting for another process's lock after this long (default 10 000 ms). */
  lockTimeoutMs?: number;
  /** A trailing partial record must be this old before a write may drop it (default 500 ms). */
  partialGraceMs?: number;
  /** A reload snapshot is trusted only if the file's times are this old (default 50 ms). */
  racyWindowMs?: number;
  /** The effects (tests replace it). */
  io?: PoolIo;
  /**
   * When writes reach the disk (pool-sync.ts): "always" (default here: fdatasync before an operation
   * resolves, safe against a power loss), "deferred" (synced within `syncDelayMs`) or "never"
   * (upstream's behaviour). Every mode is safe against a crash of the daemon.
   */
  sync?: SyncMode;
  /** Deferred mode: how long after the first unsynced write the files are synced (default 1000). */
  syncDelayMs?: number;
  /**
   * With a directory watch (inotify), a read of a cached pool stats the file only after a change
   * event, or when its last stat is this old (default 1000 ms: what inotify cannot see, a write
   * through mmap or from another machine, is noticed within that time).
   */
  revalidateMs?: number;
}

/** A pool file stayed locked by another process for longer than lockTimeoutMs. */
export class KvpLockTimeoutError extends Error {
  readonly code = 'ELOCKTIMEOUT';
  constructor(
    readonly pool: number,
    readonly path: string,
    readonly waitedMs: number,
    readonly holder: string,
  ) {
    super(`pool ${pool}: ${path} stayed locked for ${waitedMs} ms (${holder}); giving up`);
    this.name = 'KvpLockTimeoutError';
  }
}

/** Counters for tests and benchmarks: how often the file was read whole vs. served from memory. */
export interface PoolCacheStats {
  readonly reloads: number;
  readonly hits: number;
}

interface Corrupt {
  readonly slot: number;
  readonly reason: CorruptReason;
  readonly message: string;
  readonly digest: string;
}

interface Cache {
  snap: FileStat;
  trusted: boolean;
  /** Whole records in the file, the bytes of a trailing partial one, and the file's mtime then. */
  slotCount: number;
  partial: number;
  partialSeenNs: bigint;
  /** Served records in file order, the slot of each, and key → position of the first. */
  records: KvpRecord[];
  slotOf: number[];
  index: Map<string, number>;
  corrupt: Corrupt[];
}

const POOL_FILE_MODE = 0o644;
const JOURNAL_MODE = 0o600;
const DIR_MODE = 0o755;
const MARKER_BACKDATE_NS = 1_000_000n;
const MAX_BACKOFF_MS = 20;
const SECOND_NS = 1_000_000_000n;

/** The cache no longer matches the file (checked before every write): re-read and start over. */
class StaleCache extends Error {
  constructor() {
    super('the pool file changed during the operation');
  }
}

function sameStat(a: FileStat, b: FileStat): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs
  );
}

/** The value of the first record with this key. */
function valueOf(c: Cache, key: string): string | undefined {
  const pos = c.index.get(key);
  return pos === undefined ? undefined : c.records[pos]?.value;
}

function keyIs(buf: Buffer, key: string): boolean {
  if (buf.length < RECORD) return false;
  const slot = decodeRecord(buf, 0);
  return slot.ok && slot.key === key;
}

function buildIndex(records: readonly KvpRecord[]): Map<string, number> {
  const index = new Map<string, number>();
  records.forEach((r, i) => {
    if (!index.has(r.key)) index.set(r.key, i);
  });
  return index;
}

const corruptId = (c: Corrupt): string => `${c.slot}:${c.reason}:${c.digest}`;

/** One pool file: its descriptors, its in-process queue and its cache. */
class Pool {
  private fd: number;
  private dev: bigint;
  private ino: bigint;
  private lockedStat: FileStat | undefined;
  private cache: Cache | undefined;
  private reported = new Set<string>();
  private reportedPartial: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Operations enqueued and not yet finished. */
  private pending = 0;
  /** The last stat that matched the cache, with the watch's generation then. */
  private verified: { cache: Cache | undefined; generation: number; at: number } = {
    cache: undefined,
    generation: -1,
    at: 0,
  };
  private reloads = 0;
  private hits = 0;

  constructor(
    readonly pool: number,
    readonly dir: string,
    readonly path: string,
    fd: number,
    private readonly journalFd: number,
    private readonly io: PoolIo,
    private readonly log: Logger,
    private readonly opts: {
      lockTimeoutMs: number;
      partialGraceMs: number;
      racyWindowMs: number;
      revalidateMs: number;
    },
    private readonly watch: DirWatch | undefined,
  ) {
    this.fd = fd;
    const st = io.fstat(fd);
    this.dev = st.dev;
    this.ino = st.ino;
  }

  stats(): PoolCacheStats {
    return { reloads: this.reloads, hits: this.hits };
  }

  /** Resolves when the operations queued so far are done. */
  async idle(): Promise<void> {
    await this.queue.catch(() => undefined);
  }

  /** Wait for queued operations, then release the descriptors. */
  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
    this.io.close(this.fd);
    this.io.close(this.journalFd);
  }

  get(key: string): Promise<string | undefined> {
    return this.read((c) => valueOf(c, key));
  }

  enumerate(index: number): Promise<KvpRecord | undefined> {
    return this.read((c) => c.records[index]);
  }

  /** get(), answered now when it can be without waiting (nothing queued, the cache current). */
  getNow(key: string): { value: string | undefined } | undefined {
    return this.answerNow((c) => valueOf(c, key));
  }

  /** enumerate(), answered now when it can be without waiting. */
  enumerateNow(index: number): { value: KvpRecord | undefined } | undefined {
    return this.answerNow((c) => c.records[index]);
  }

  records(): Promise<readonly KvpRecord[]> {
    return this.read((c) => c.records.slice());
  }

  set(key: string, value: string): Promise<void> {
    const record = encodeRecord(key, value);
    return this.exclusive(async (c) => {
      const pos = c.index.get(key);
      if (pos === undefined) await this.append(c, { key, value }, record);
      else await this.overwrite(c, pos, { key, value }, record);
    });
  }

  delete(key: string): Promise<boolean> {
    return this.exclusive(async (c) => {
      const pos = c.index.get(key);
      const slot = pos === undefined ? undefined : c.slotOf[pos];
      if (pos === undefined || slot === undefined) return false;
      const offset = slot * RECORD;
      const newSize = (c.slotCount - 1) * RECORD;
      if (slot === c.slotCount - 1) {
        if (!keyIs(await this.io.read(this.fd, RECORD, offset), key)) throw new StaleCache();
        await this.dropPartial(c);
        this.io.truncate(this.fd, newSize);
        await this.io.datasync(this.fd);
      } else {
        await this.dropPartial(c);
        const span = (c.slotCount - slot) * RECORD;
        const region = await this.io.read(this.fd, span, offset);
        if (region.length !== span || !keyIs(region, key)) throw new StaleCache();
        await this.journaled({
          kind: 'shift-delete',
          offset,
          oldSize: c.slotCount * RECORD + c.partial,
          newSize,
          before: region.subarray(0, span - RECORD),
          after: region.subarray(RECORD),
        });
      }
      c.records.splice(pos, 1);
      c.slotOf.splice(pos, 1);
      for (let i = pos; i < c.slotOf.length; i++) c.slotOf[i] = (c.slotOf[i] ?? 0) - 1;
      c.index = buildIndex(c.records);
      c.corrupt = c.corrupt.map((k) => (k.slot > slot ? { ...k, slot: k.slot - 1 } : k));
      this.reported = new Set(c.corrupt.map(corruptId));
      c.slotCount--;
      c.partial = 0;
      this.afterWrite(c);
      return true;
    });
  }

  /**
   * Run `fn` alone: after the operations queued before it in this process, holding both locks,
   * with the journal recovered and the cache current. A StaleCache from `fn` re-reads and retries.
   */
  exclusive<T>(fn: (c: Cache) => Promise<T>): Promise<T> {
    return this.enqueue(() => this.locked(fn));
  }

  /**
   * A read. When the cache is trusted and stat(path) still matches its snapshot, nobody has written
   * the file since (see "Change detection"), so it is served without taking the locks: a writer
   * that holds them has not written yet, and any write it makes changes the stat. Otherwise, as
   * exclusive(). Saves a GET or an ENUMERATE six system calls.
   */
  private read<T>(fn: (c: Cache) => T): Promise<T> {
    if (this.pending === 0) {
      // Nothing queued in this process (the usual case, one host request at a time): answer at
      // once, or else read under the locks at once (nothing can run in between to help).
      let hit: { value: T } | undefined;
      try {
        hit = this.fromTrustedCache(fn);
      } catch (err) {
        return Promise.reject(err);
      }
      return hit ? Promise.resolve(hit.value) : this.enqueue(() => this.locked(async (fresh) => fn(fresh)));
    }
    return this.enqueue(async () => {
      const hit = this.fromTrustedCache(fn);
      return hit ? hit.value : this.locked(async (fresh) => fn(fresh));
    });
  }

  /** fn(cache) now when nothing is queued and the cache is current; undefined otherwise. */
  private answerNow<T>(fn: (c: Cache) => T): { value: T } | undefined {
    return this.pending === 0 ? this.fromTrustedCache(fn) : undefined;
  }

  /**
   * fn(cache) when the cache is trusted and the file unchanged since: stat(path) matches the
   * snapshot, or, with a directory watch, no change event came since such a stat (the watch is
   * drained before the stat, see pool-watch.ts) and that stat is recent.
   */
  private fromTrustedCache<T>(fn: (c: Cache) => T): { value: T } | undefined {
    const c = this.cache;
    if (!c?.trusted) return undefined;
    const generation = this.watch?.generation();
    const v = this.verified;
    const now = this.io.now();
    if (
      generation === undefined ||
      v.cache !== c ||
      v.generation !== generation ||
      now - v.at >= this.opts.revalidateMs ||
      now < v.at // the wall clock was set back
    ) {
      const st = this.io.stat(this.path);
      if (!st || st.dev !== this.dev || st.ino !== this.ino || !sameStat(c.snap, st)) return undefined;
      if (generation !== undefined) this.verified = { cache: c, generation, at: now };
    }
    this.hits++;
    return { value: fn(c) };
  }

  private enqueue<T>(run: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.queue.then(run, run);
    this.queue = result.then(
      () => this.pending--,
      () => this.pending--,
    );
    return result;
  }

  private async locked<T>(fn: (c: Cache) => Promise<T>): Promise<T> {
    await this.lock();
    try {
      const recovered = await this.recover();
      for (let attempt = 0; ; attempt++) {
        const c = await this.refresh(recovered || attempt > 0);
        try {
          return await fn(c);
        } catch (err) {
          this.cache = undefined;
          if (!(err instanceof StaleCache) || attempt >= 3) throw err;
        }
      }
    } finally {
      this.unlock();
    }
  }

  // --- locking -------------------------------------------------------------------------------

  private async lock(): Promise<void> {
    const started = this.io.now();
    const deadline = started + this.opts.lockTimeoutMs;
    let delay = 1;
    let busy = '';
    for (;;) {
      await this.followPath();
      if (this.io.tryFlock(this.fd)) {
        if (this.io.tryRecordLock(this.fd)) {
          const st = this.io.stat(this.path);
          if (st && st.dev === this.dev && st.ino === this.ino) {
            this.lockedStat = st;
            return;
          }
          this.unlock(); // replaced or removed while we waited: follow the path, lock again
          busy = '';
        } else {
          this.io.unflock(this.fd);
          const pid = this.io.recordLockHolder(this.fd);
          busy =
            pid === undefined || pid < 0
              ? 'an fcntl record lock is held by another process'
              : `an fcntl record lock is held by pid ${pid}`;
        }
      } else {
        busy = 'an flock lock is held by another process';
      }
      const now = this.io.now();
      if (now >= deadline)
        throw new KvpLockTimeoutError(this.pool, this.path, now - started, busy || 'the file kept moving');
      if (busy) {
        await this.io.sleep(Math.min(delay, deadline - now));
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private unlock(): void {
    this.io.unlockRecord(this.fd);
    this.io.unflock(this.fd);
  }

  /** If the path now names another file (renamed over) or nothing (removed), open that instead. */
  private async followPath(): Promise<void> {
    const st = this.io.stat(this.path);
    if (st && st.dev === this.dev && st.ino === this.ino) return;
    const { fd, created } = this.io.open(this.path, POOL_FILE_MODE);
    const now = this.io.fstat(fd);
    this.io.close(this.fd);
    this.fd = fd;
    this.dev = now.dev;
    this.ino = now.ino;
    this.cache = undefined;
    if (created) {
      this.log.warn({ pool: this.pool, path: this.path }, 'pool file was removed; created it again');
      await this.io.syncDir(this.dir);
    } else {
      this.log.info({ pool: this.pool, path: this.path }, 'pool file was replaced by another program');
    }
  }

  // --- reading -------------------------------------------------------------------------------

  private async refresh(force: boolean): Promise<Cache> {
    const st = force ? this.io.fstat(this.fd) : this.lockedStat;
    const c = this.cache;
    if (!force && st && c && c.trusted && sameStat(c.snap, st)) {
      this.hits++;
      return c;
    }
    return this.reload(st ?? this.io.fstat(this.fd));
  }

  private async reload(st: FileStat): Promise<Cache> {
    const raw = await this.io.read(this.fd, st.size, 0);
    this.reloads++;
    const slotCount = Math.floor(raw.length / RECORD);
    const records: KvpRecord[] = [];
    const slotOf: number[] = [];
    const corrupt: Corrupt[] = [];
    for (let slot = 0; slot < slotCount; slot++) {
      const decoded = decodeRecord(raw, slot * RECORD);
      if (decoded.ok) {
        records.push(Object.freeze({ key: decoded.key, value: decoded.value }));
        slotOf.push(slot);
      } else {
        const bytes = raw.subarray(slot * RECORD, (slot + 1) * RECORD);
        const digest = createHash('sha1').update(bytes).digest('hex').slice(0, 16);
        corrupt.push({ slot, reason: decoded.reason, message: decoded.message, digest });
      }
    }
    const partial = raw.length % RECORD;
    this.report(corrupt, partial, slotCount);
    const newest = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
    // Whole-second times (no nanoseconds in either) betray a filesystem with 1 s (or FAT's 2 s)
    // timestamps: the racy window must then cover that granularity.
    const wholeSeconds = st.mtimeNs % SECOND_NS === 0n && st.ctimeNs % SECOND_NS === 0n;
    const window = wholeSeconds ? Math.max(this.opts.racyWindowMs, 2000) : this.opts.racyWindowMs;
    const racyFrom = BigInt(Math.floor(this.io.now() - window)) * 1_000_000n;
    this.cache = {
      snap: st,
      trusted: raw.length === st.size && newest <= racyFrom,
      slotCount,
      partial,
      partialSeenNs: st.mtimeNs,
      records,
      slotOf,
      index: buildIndex(records),
      corrupt,
    };
    return this.cache;
  }

  /** Log corrupt records and a trailing partial once each, when first seen. */
  private report(corrupt: readonly Corrupt[], partial: number, slotCount: number): void {
    const seen = new Set<string>();
    for (const k of corrupt) {
      const id = corruptId(k);
      seen.add(id);
      if (this.reported.has(id)) continue;
      this.log.warn(
        { pool: this.pool, path: this.path, record: k.slot, reason: k.reason },
        `pool ${this.pool}: record ${k.slot} is not served (${k.message}); it is left in the file as it is`,
      );
    }
    this.reported = seen;
    const partialId = partial ? `${slotCount}:${partial}` : undefined;
    if (partialId && partialId !== this.reportedPartial) {
      this.log.info(
        { pool: this.pool, path: this.path, bytes: partial, offset: slotCount * RECORD },
        `pool ${this.pool}: ignoring a partial record of ${partial} bytes at the end of the file`,
      );
    }
    this.reportedPartial = partialId;
  }

  // --- writing -------------------------------------------------------------------------------

  private async append(c: Cache, record: KvpRecord, bytes: Buffer): Promise<void> {
    await this.dropPartial(c);
    const offset = c.slotCount * RECORD;
    try {
      await this.io.write(this.fd, bytes, offset);
    } catch (err) {
      try {
        this.io.truncate(this.fd, offset); // our own torn record (e.g. ENOSPC): take it back
      } catch {
        // the next append overwrites it anyway
      }
      throw err;
    }
    await this.io.datasync(this.fd);
    c.slotCount++;
    c.partial = 0;
    c.records.push(Object.freeze(record));
    c.slotOf.push(c.slotCount - 1);
    c.index.set(record.key, c.records.length - 1);
    this.afterWrite(c);
  }

  private async overwrite(c: Cache, pos: number, record: KvpRecord, bytes: Buffer): Promise<void> {
    const slot = c.slotOf[pos] ?? -1;
    const offset = slot * RECORD;
    const before = this.io.readNow(this.fd, RECORD, offset);
    if (!keyIs(before, record.key)) throw new StaleCache();
    if (before.equals(bytes)) {
      await this.io.datasync(this.fd); // same bytes: make sure they are durable, write nothing
      return;
    }
    const size = c.slotCount * RECORD + c.partial;
    await this.journaled({ kind: 'overwrite', offset, oldSize: size, newSize: size, before, after: bytes });
    c.records[pos] = Object.freeze(record);
    this.afterWrite(c);
  }

  /** An in-place change under the journal (see DESIGN). */
  private async journaled(entry: JournalEntry): Promise<void> {
    await this.io.write(this.journalFd, encodeJournal(entry), 0);
    await this.io.datasync(this.journalFd);
    await this.io.write(this.fd, entry.after, entry.offset);
    await this.io.datasync(this.fd);
    if (entry.newSize !== entry.oldSize) {
      this.io.truncate(this.fd, entry.newSize);
      await this.io.datasync(this.fd);
    }
    this.io.truncate(this.journalFd, 0);
  }

  /**
   * Before a write that changes the end of the file: a trailing partial record is dropped, but
   * only once the file has been still for partialGraceMs (see DESIGN).
   */
  private async dropPartial(c: Cache): Promise<void> {
    if (c.partial === 0) return;
    const age = this.io.now() - Number(c.partialSeenNs / 1_000_000n);
    if (age < this.opts.partialGraceMs) {
      await this.io.sleep(Math.min(this.opts.partialGraceMs - Math.max(age, 0), this.opts.partialGraceMs));
      if (!sameStat(this.io.fstat(this.fd), c.snap)) throw new StaleCache();
    }
    this.log.warn(
      { pool: this.pool, path: this.path, bytes: c.partial, offset: c.slotCount * RECORD },
      `pool ${this.pool}: dropping a partial record of ${c.partial} bytes at the end of the file ` +
        '(a writer died in the middle of an append)',
    );
  }

  /** Take the snapshot after our own write, stamping the mtime marker that makes it trusted. */
  private afterWrite(c: Cache): void {
    const st = this.io.fstat(this.fd);
    c.snap = st;
    c.trusted = false;
    try {
      this.io.setTimes(this.fd, st.atimeNs, st.mtimeNs - MARKER_BACKDATE_NS);
      const marked = this.io.fstat(this.fd);
      c.snap = marked;
      c.trusted = marked.size === st.size && marked.mtimeNs < st.mtimeNs;
    } catch {
      // futimes refused (not the owner): the snapshot stays untrusted, the next operation re-reads
    }
  }

  // --- recovery ------------------------------------------------------------------------------

  /** Apply a non-empty journal left by a process that died mid-update; true if there was one. */
  private async recover(): Promise<boolean> {
    const size = this.io.fstat(this.journalFd).size;
    if (size === 0) return false;
    this.cache = undefined;
    const where = { pool: this.pool, path: this.path };
    const decoded = decodeJournal(await this.io.read(this.journalFd, size, 0));
    if (!decoded.ok) {
      this.log.warn(
        { ...where, error: decoded.error.message },
        `pool ${this.pool}: dropping an unreadable journal (an update died before it touched the pool file)`,
      );
      this.io.truncate(this.journalFd, 0);
      return true;
    }
    const entry = decoded.value;
    const fileSize = this.io.fstat(this.fd).size;
    const region = await this.io.read(this.fd, entry.after.length, entry.offset);
    const atNewSize =
      entry.newSize < entry.oldSize ? await this.io.read(this.fd, RECORD, entry.newSize) : undefined;
    const plan = planRecovery(entry, fileSize, region, atNewSize);
    const detail = { ...where, kind: entry.kind, offset: entry.offset, action: plan.action };
    switch (plan.action) {
      case 'roll-back':
        await this.io.write(this.fd, plan.bytes, plan.offset);
        await this.io.datasync(this.fd);
        this.log.warn(detail, `pool ${this.pool}: rolled back an interrupted ${entry.kind} (torn write)`);
        break;
      case 'truncate':
        this.io.truncate(this.fd, plan.size);
        await this.io.datasync(this.fd);
        this.log.info(detail, `pool ${this.pool}: finished an interrupted delete`);
        break;
      case 'discard':
        this.log.warn(
          detail,
          `pool ${this.pool}: journal of an interrupted ${entry.kind} ignored: ${plan.why}`,
        );
        break;
      case 'none':
        this.log.info(
          detail,
          `pool ${this.pool}: journal of an interrupted ${entry.kind} found ${plan.why === 'applied' ? 'already applied' : 'not started'}`,
        );
        break;
    }
    this.io.truncate(this.journalFd, 0);
    return true;
  }
}

function checkPool(pool: number): void {
  if (!Number.isInteger(pool) || pool < 0 || pool >= KVP_POOL_COUNT)
    throw new RangeError(`KVP pool ${pool} does not exist (pools are 0..${KVP_POOL_COUNT - 1})`);
}

export class KvpPools {
  private closed = false;

  private constructor(
    private readonly pools: readonly Pool[],
    /** The pool file paths, in pool order. */
    readonly paths: readonly string[],
    /** Sync the writes a deferred mode has not synced yet. */
    readonly flush: () => Promise<void>,
    private readonly watch: DirWatch | undefined,
  ) {}

  /**
   * Create the directory and missing pool files (never truncating one), recover any interrupted
   * update and load each pool. A pool whose lock cannot be had within lockTimeoutMs is logged and
   * loaded at its first use instead.
   */
  static async open(opts: KvpPoolsOptions): Promise<KvpPools> {
    const log = opts.logger;
    // In every mode writes keep their order and their journal (safe against a crash of the daemon:
    // the page cache survives it); the mode decides when they are flushed to the disk.
    const synced = syncedIo(opts.io ?? nodePoolIo, opts.sync ?? 'always', {
      ...(opts.syncDelayMs !== undefined ? { delayMs: opts.syncDelayMs } : {}),
      onError: (err, what) =>
        log.warn(
          { err: err instanceof Error ? err.message : String(err) },
          `${what} failed; retried at the next write`,
        ),
    });
    const io = synced.io;
    const tuning = {
      lockTimeoutMs: opts.lockTimeoutMs ?? 10_000,
      partialGraceMs: opts.partialGraceMs ?? 500,
      racyWindowMs: opts.racyWindowMs ?? 50,
      revalidateMs: opts.revalidateMs ?? 1000,
    };
    const dirExisted = io.stat(opts.dir) !== undefined;
    io.mkdirp(opts.dir, DIR_MODE);
    // One watch for the five pools; without one (no inotify), every cached read stats its file.
    const watch = io.watchDir?.(opts.dir);
    if (!watch) log.debug({ dir: opts.dir }, 'no inotify watch of the pool directory: reads stat the pools');
    const pools: Pool[] = [];
    const opened: number[] = [];
    let created = !dirExisted;
    try {
      for (let n = 0; n < KVP_POOL_COUNT; n++) {
        const path = join(opts.dir, `.kvp_pool_${n}`);
        const file = io.open(path, POOL_FILE_MODE);
        opened.push(file.fd);
        const journal = io.open(`${path}.journal`, JOURNAL_MODE);
        opened.push(journal.fd);
        created ||= file.created || journal.created;
        pools.push(new Pool(n, opts.dir, path, file.fd, journal.fd, io, log, tuning, watch));
      }
      if (!dirExisted) await io.syncDir(dirname(opts.dir));
      if (created) await io.syncDir(opts.dir);
    } catch (err) {
      for (const fd of opened) io.close(fd);
      watch?.close();
      throw err;
    }
    const store = new KvpPools(
      pools,
      pools.map((p) => p.path),
      synced.flush,
      watch,
    );
    for (const pool of pools) {
      try {
        await pool.exclusive(async () => undefined);
      } catch (err) {
        if (!(err instanceof KvpLockTimeoutError)) {
          await store.close();
          throw err;
        }
        log.warn(
          { pool: pool.pool, path: pool.path },
          `${err.message}; the pool will be loaded at its first use`,
        );
      }
    }
    return store;
  }

  private pool(pool: number): Pool {
    checkPool(pool);
    if (this.closed) throw new Error('KvpPools is closed');
    return this.pools[pool] as Pool;
  }

  /** The value of the first record with this key, or undefined. */
  async get(pool: number, key: string): Promise<string | undefined> {
    const p = this.pool(pool);
    if (storableProblem(key, 'key')) return undefined;
    return p.get(key);
  }

  /**
   * get(), when it can be answered at once from memory (nothing queued for the pool, its cache
   * current: see Pool.read); undefined when it has to wait, and then get() is the way.
   */
  getNow(pool: number, key: string): { value: string | undefined } | undefined {
    const p = this.pool(pool);
    if (storableProblem(key, 'key')) return { value: undefined };
    return p.getNow(key);
  }

  /** enumerate(), when it can be answered at once from memory; undefined when it has to wait. */
  enumerateNow(pool: number, index: number): { value: KvpRecord | undefined } | undefined {
    const p = this.pool(pool);
    if (!Number.isInteger(index) || index < 0) return { value: undefined };
    return p.enumerateNow(index);
  }

  /** Update the first record with this key in place, or append one. Durable once resolved. */
  async set(pool: number, key: string, value: string): Promise<void> {
    const p = this.pool(pool);
    const problem = storableProblem(key, 'key') ?? storableProblem(value, 'value');
    if (problem) throw new RangeError(`KVP pool ${pool}: cannot store this record: ${problem}`);
    return p.set(key, value);
  }

  /** Remove the first record with this key; false if there is none. Durable once resolved. */
  async delete(pool: number, key: string): Promise<boolean> {
    const p = this.pool(pool);
    if (storableProblem(key, 'key')) return false;
    return p.delete(key);
  }

  /** The index-th served record in file order (the host's ENUMERATE), or undefined past the end. */
  async enumerate(pool: number, index: number): Promise<KvpRecord | undefined> {
    const p = this.pool(pool);
    if (!Number.isInteger(index) || index < 0) return undefined;
    return p.enumerate(index);
  }

  /** Every served record in file order, duplicates included. */
  async records(pool: number): Promise<readonly KvpRecord[]> {
    return this.pool(pool).records();
  }

  /** How often a pool was read whole vs. served from memory. */
  cacheStats(pool: number): PoolCacheStats {
    return this.pool(pool).stats();
  }

  /** Finish queued operations, sync what is pending, and close the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.pools.map((p) => p.idle()));
    await this.flush();
    await Promise.all(this.pools.map((p) => p.close()));
    this.watch?.close();
  }
}
