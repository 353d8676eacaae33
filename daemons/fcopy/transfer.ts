/**
 * One copy in progress, from START_FILE_COPY to COMPLETE_FCOPY or its end by CANCEL, reset or
 * reopen.
 *
 * The data goes to a temporary file in the target directory, `.<name>.hv-fcopy-<pid>-<id>.tmp`,
 * created O_CREAT|O_EXCL|O_NOFOLLOW mode 0600 relative to the held directory descriptor, written
 * with positional writes as the fragments come (nothing is buffered; offset + size may not pass
 * the announced file size). COMPLETE gives it its mode (the configured one, or the replaced file's
 * mode and owner), flushes it, and publishes it under the target name:
 *   - OVER_WRITE: rename(2) over the target, which atomically replaces it;
 *   - otherwise: link(2) to the target name, which fails with EEXIST rather than replace anything,
 *     then unlink the temporary (Node has no renameat2(RENAME_NOREPLACE)). On a file system
 *     without hard links, rename after checking that the name is free (a race is then possible).
 * then flushes the directory. Anything else — CANCEL, the fake CANCEL of hibernation, a reopen, a
 * stop, a failed write followed by COMPLETE — unlinks the temporary: the target is never touched
 * until the whole file is on disk.
 */
import { constants, writeSync } from 'node:fs';
import { type FileHandle, link, lstat, open, rename, unlink } from 'node:fs/promises';
import { HV_E_FAIL, HV_ERROR_ALREADY_EXISTS, HV_ERROR_DISK_FULL, HV_S_OK } from '../../uapi/constants.js';
import type { Logger } from '../common/log.js';
import { type TargetDir, at } from './paths.js';
import { type TempJournal, newId, tempName } from './stale.js';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = constants;

/** Errno names that mean "this file system has no hard links". */
const NO_HARD_LINKS = new Set(['EPERM', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK', 'ENOTSUP']);

export interface TransferOptions {
  readonly fileMode: number;
  readonly syncEveryBytes: number;
  readonly journal: TempJournal;
  readonly logger: Logger;
  /** Clock for progress lines and rates (ms). */
  readonly now?: () => number;
  /** A progress line at most this often (ms; default 10 s). */
  readonly progressEveryMs?: number;
  /** link(2) (replaceable by tests: a file system without hard links). */
  readonly link?: (from: string, to: string) => Promise<void>;
}

export interface StartRequest {
  readonly dir: TargetDir;
  readonly name: string;
  readonly size: bigint;
  readonly overwrite: boolean;
}

/** The status of an operation, and why (for the log) when it is not HV_S_OK. */
export interface Outcome {
  readonly status: number;
  readonly reason?: string;
}

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? 'EIO';
}

/** HV_ERROR_DISK_FULL for ENOSPC (as upstream), HV_E_FAIL for anything else. */
export function writeErrorStatus(code: string): number {
  return code === 'ENOSPC' ? HV_ERROR_DISK_FULL : HV_E_FAIL;
}

export interface TransferStatus {
  readonly target: string;
  readonly size: bigint;
  readonly written: number;
  readonly startedAt: number;
}

export class Transfer {
  private written = 0;
  private end = 0;
  private sinceSync = 0;
  private failed: string | undefined;
  private finished = false;
  private lastProgress: number;
  private readonly startedAt: number;

  private constructor(
    private readonly dir: TargetDir,
    readonly name: string,
    readonly tmp: string,
    private readonly id: string,
    private file: FileHandle | undefined,
    readonly size: bigint,
    private readonly overwrite: boolean,
    /** Mode and owner of the file being replaced, kept for the new one. */
    private readonly keep: { mode: number; uid: number; gid: number } | undefined,
    private readonly opts: TransferOptions,
  ) {
    this.startedAt = this.now();
    this.lastProgress = this.startedAt;
  }

  /** `<dir>/<name>`, for the log. */
  get target(): string {
    return this.dir.path === '/' ? `/${this.name}` : `${this.dir.path}/${this.name}`;
  }

  get status(): TransferStatus {
    return { target: this.target, size: this.size, written: this.written, startedAt: this.startedAt };
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /**
   * START: check the target and create the temporary. Takes ownership of `req.dir` (closed on
   * failure, or when the transfer ends).
   */
  static async start(req: StartRequest, opts: TransferOptions): Promise<Transfer | Outcome> {
    const { dir, name } = req;
    const target = dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
    const fail = async (status: number, reason: string): Promise<Outcome> => {
      await dir.close().catch(() => {});
      return { status, reason };
    };
    let keep: { mode: number; uid: number; gid: number } | undefined;
    try {
      const st = await lstat(at(dir.fd, name));
      if (!req.overwrite) return fail(HV_ERROR_ALREADY_EXISTS, `${target} exists (OVER_WRITE not set)`);
      if (st.isSymbolicLink()) return fail(HV_E_FAIL, `${target} is a symbolic link: not replaced`);
      if (!st.isFile()) return fail(HV_E_FAIL, `${target} exists and is not a regular file`);
      keep = { mode: st.mode & 0o777, uid: st.uid, gid: st.gid };
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT') return fail(HV_E_FAIL, `cannot check ${target}: ${errnoOf(e)}`);
    }
    const id = newId();
    const tmp = tempName(name, process.pid, id);
    let journaled = false;
    try {
      await opts.journal.record({
        id,
        dir: await dir.realPath(),
        tmp,
        target: name,
        pid: process.pid,
        started: new Date().toISOString(),
      });
      journaled = true;
    } catch (e) {
      opts.logger.warn(
        { target, err: String(e) },
        'cannot journal the temporary file: it would stay behind if the daemon were killed',
      );
    }
    let file: FileHandle;
    try {
      file = await open(at(dir.fd, tmp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    } catch (e) {
      if (journaled) await opts.journal.forget(id).catch(() => {});
      return fail(HV_E_FAIL, `cannot create the temporary file ${tmp} in ${dir.path}: ${errnoOf(e)}`);
    }
    return new Transfer(dir, name, tmp, id, file, req.size, req.overwrite, keep, opts);
  }

  /** WRITE_TO_FILE: `data` at `offset`, whole, in the temporary. */
  async write(offset: bigint, data: Uint8Array): Promise<Outcome> {
    if (this.failed !== undefined)
      return { status: HV_E_FAIL, reason: `the copy failed earlier: ${this.failed}` };
    const file = this.file;
    if (!file) return { status: HV_E_FAIL, reason: 'the copy has ended' };
    const end = offset + BigInt(data.length);
    if (end > this.size) {
      return this.poison(
        HV_E_FAIL,
        `a write to bytes ${offset}..${end} goes past the announced size ${this.size} of ${this.target}`,
      );
    }
    if (end > BigInt(Number.MAX_SAFE_INTEGER)) {
      return this.poison(HV_E_FAIL, `offset ${offset} is beyond what this daemon can address`);
    }
    let pos = Number(offset);
    let done = 0;
    try {
      // A synchronous pwrite of at most 6 KiB into the page cache: the device loop is strictly
      // sequential (nothing else waits on the event loop meanwhile, and a stop is honoured after
      // the current message either way), and it costs ~40 % less CPU than a thread-pool round trip
      // per fragment (bench/fcopy.md). Flushes, renames and the journal stay asynchronous.
      while (done < data.length) {
        const bytesWritten = writeSync(file.fd, data, done, data.length - done, pos);
        if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
        done += bytesWritten;
        pos += bytesWritten;
      }
      this.sinceSync += data.length;
      if (this.opts.syncEveryBytes > 0 && this.sinceSync >= this.opts.syncEveryBytes) {
        this.sinceSync = 0;
        await file.datasync();
      }
    } catch (e) {
      const code = errnoOf(e);
      return this.poison(
        writeErrorStatus(code),
        `writing ${data.length} bytes at ${offset} of ${this.target} failed after ${this.written + done} bytes: ${code}`,
      );
    }
    this.written += data.length;
    this.end = Math.max(this.end, pos);
    this.progress();
    return { status: HV_S_OK };
  }

  private progress(): void {
    const now = this.now();
    if (now - this.lastProgress < (this.opts.progressEveryMs ?? 10_000)) return;
    this.lastProgress = now;
    const pct = this.size > 0n ? Math.floor((this.written * 100) / Number(this.size)) : 100;
    this.opts.logger.info(
      { target: this.target, written: this.written, size: Number(this.size), percent: pct },
      `copying ${this.target}: ${this.written} of ${this.size} bytes (${pct}%)`,
    );
  }

  private poison(status: number, reason: string): Outcome {
    this.failed ??= reason;
    return { status, reason };
  }

  /** COMPLETE_FCOPY: flush, publish under the target name, flush the directory. */
  async complete(): Promise<Outcome> {
    const file = this.file;
    if (this.failed !== undefined || !file) {
      const reason = `${this.target} not published: ${this.failed ?? 'the copy has ended'}`;
      await this.discard();
      return { status: HV_E_FAIL, reason };
    }
    if (this.end < Number(this.size)) {
      this.opts.logger.warn(
        { target: this.target, size: Number(this.size), end: this.end },
        `${this.target}: the host announced ${this.size} bytes but sent data up to byte ${this.end} only`,
      );
    }
    try {
      if (this.keep) {
        await file.chown(this.keep.uid, this.keep.gid);
        await file.chmod(this.keep.mode);
      } else {
        await file.chmod(this.opts.fileMode);
      }
      await file.sync();
      this.file = undefined;
      await file.close();
    } catch (e) {
      const code = errnoOf(e);
      await this.discard();
      return { status: writeErrorStatus(code), reason: `flushing ${this.target} failed: ${code}` };
    }
    const published = await this.publish();
    if (published.status !== HV_S_OK) {
      await this.discard();
      return published;
    }
    this.finished = true;
    try {
      await this.dir.sync();
    } catch (e) {
      this.opts.logger.error(
        { target: this.target, err: String(e) },
        `${this.target} is in place but flushing its directory failed: ${errnoOf(e)}`,
      );
    }
    await this.release();
    const ms = Math.max(1, this.now() - this.startedAt);
    this.opts.logger.info(
      {
        target: this.target,
        bytes: this.written,
        ms,
        mbPerS: Math.round((this.written / 1e6 / (ms / 1000)) * 10) / 10,
        replaced: this.keep !== undefined,
      },
      `copied ${this.target} (${this.written} bytes)`,
    );
    return { status: HV_S_OK };
  }

  private async publish(): Promise<Outcome> {
    const from = at(this.dir.fd, this.tmp);
    const to = at(this.dir.fd, this.name);
    if (this.overwrite) {
      try {
        await rename(from, to);
        return { status: HV_S_OK };
      } catch (e) {
        return { status: HV_E_FAIL, reason: `cannot rename the temporary to ${this.target}: ${errnoOf(e)}` };
      }
    }
    try {
      await (this.opts.link ?? link)(from, to);
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'EEXIST') {
        return {
          status: HV_ERROR_ALREADY_EXISTS,
          reason: `${this.target} appeared during the copy: not replaced`,
        };
      }
      if (!NO_HARD_LINKS.has(code)) {
        return { status: HV_E_FAIL, reason: `cannot link the temporary to ${this.target}: ${code}` };
      }
      // No hard links here (vfat, …): check, then rename. Another process could create the name
      // between the two; documented.
      try {
        await lstat(to);
        return {
          status: HV_ERROR_ALREADY_EXISTS,
          reason: `${this.target} appeared during the copy: not replaced`,
        };
      } catch (le) {
        if (errnoOf(le) !== 'ENOENT')
          return { status: HV_E_FAIL, reason: `cannot check ${this.target}: ${errnoOf(le)}` };
      }
      try {
        await rename(from, to);
        return { status: HV_S_OK };
      } catch (re) {
        return { status: HV_E_FAIL, reason: `cannot rename the temporary to ${this.target}: ${errnoOf(re)}` };
      }
    }
    await unlink(from).catch((e) =>
      this.opts.logger.warn(
        { tmp: this.tmp, err: String(e) },
        `cannot remove the temporary's second name ${this.tmp}`,
      ),
    );
    return { status: HV_S_OK };
  }

  /** CANCEL, reset, reopen, stop: drop the temporary; the target is untouched. Idempotent. */
  async abort(why: string): Promise<void> {
    if (this.finished) return;
    const had = this.written;
    await this.discard();
    this.opts.logger.info(
      { target: this.target, written: had, why },
      `copy to ${this.target} abandoned (${why}); ${this.target} left as it was`,
    );
  }

  private async discard(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const file = this.file;
    this.file = undefined;
    await file?.close().catch(() => {});
    try {
      await unlink(at(this.dir.fd, this.tmp));
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT') {
        this.opts.logger.error(
          { tmp: this.tmp, dir: this.dir.path, err: String(e) },
          `cannot remove the temporary file ${this.dir.path}/${this.tmp}: ${errnoOf(e)}`,
        );
        // Keep the journal entry: the next start tries again.
        await this.dir.close().catch(() => {});
        return;
      }
    }
    await this.release();
  }

  private async release(): Promise<void> {
    await this.opts.journal
      .forget(this.id)
      .catch((e) => this.opts.logger.warn({ id: this.id, err: String(e) }, 'cannot drop the journal entry'));
    await this.dir.close().catch(() => {});
  }
}
