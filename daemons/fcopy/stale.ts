/**
 * The journal of temporary files, so that a restarted daemon removes what a killed one left.
 *
 * Before a copy creates its temporary file, an entry naming it (the real path of the target
 * directory, the temporary's name, the target's name, pid, time) is written to
 * `<state-dir>/<id>.json` and flushed; when the copy ends (COMPLETE, CANCEL, reset, reopen, stop)
 * the entry is removed after the temporary is gone. At start, before serving, the daemon sweeps the
 * journal: for each entry it walks to the directory (never following a symbolic link, never
 * creating anything), removes the named file if it is still there, is a regular file and has a
 * temporary's name (`.<name>.hv-fcopy-<pid>-<12 hex>.tmp`), then drops the entry. An entry whose
 * directory is gone is dropped; one that cannot be checked now (EIO, EACCES) is kept for the next
 * start.
 *
 * The entry is written before the file exists, so a crash at any point leaves either nothing or an
 * entry that finds its file. The state directory is locked (flock on `<state-dir>/lock`) for the
 * daemon's life: a second instance neither sweeps nor journals, so it cannot remove the first
 * one's temporary in progress. The state directory lives on persistent storage
 * (/var/lib/hyperv-daemons-ts/fcopy) because temporary files outlive a reboot too.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readFile, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { LOCK_EX, LOCK_NB, flock } from '../common/libc.js';
import type { Logger } from '../common/log.js';
import { NAME_MAX, at, isRefusal, openDirectory, splitDirectory } from './paths.js';

const TEMP_RE = /^\..*\.hv-fcopy-\d+-[0-9a-f]{12}\.tmp$/s;

/** A fresh random id (12 hex digits). */
export function newId(): string {
  return randomBytes(6).toString('hex');
}

/**
 * The temporary's name for `target`: `.<target>.hv-fcopy-<pid>-<id>.tmp`, the target part cut (at
 * a character boundary) so that the whole fits NAME_MAX bytes.
 */
export function tempName(target: string, pid: number, id: string): string {
  const suffix = `.hv-fcopy-${pid}-${id}.tmp`;
  const room = NAME_MAX - 1 - Buffer.byteLength(suffix);
  let head = target;
  while (Buffer.byteLength(head) > room) head = [...head].slice(0, -1).join('');
  return `.${head}${suffix}`;
}

/** Does `name` look like one of our temporaries? */
export function isTempName(name: string): boolean {
  return TEMP_RE.test(name) && !name.includes('/');
}

export interface JournalEntry {
  readonly id: string;
  /** The real path of the target directory. */
  readonly dir: string;
  /** The temporary's name in it. */
  readonly tmp: string;
  readonly target: string;
  readonly pid: number;
  /** ISO time. */
  readonly started: string;
}

export interface TempJournal {
  /** Record (and flush) an entry before its file is created. */
  record(entry: JournalEntry): Promise<void>;
  /** Drop an entry once its file is gone or published. */
  forget(id: string): Promise<void>;
}

/** For tests, and when the state directory cannot be used. */
export const NO_JOURNAL: TempJournal = { record: async () => {}, forget: async () => {} };

export interface SweepResult {
  /** Temporaries removed. */
  readonly removed: string[];
  /** Entries kept for the next start (their directory could not be checked). */
  readonly kept: string[];
}

function isEntry(x: unknown): x is JournalEntry {
  const e = x as Partial<JournalEntry>;
  return (
    typeof e === 'object' &&
    e !== null &&
    typeof e.id === 'string' &&
    typeof e.dir === 'string' &&
    typeof e.tmp === 'string' &&
    typeof e.target === 'string' &&
    typeof e.pid === 'number' &&
    typeof e.started === 'string'
  );
}

const entryFile = (id: string) => `${id}.json`;

export class FileJournal implements TempJournal {
  private constructor(
    readonly dir: string,
    private readonly dirHandle: FileHandle,
    private readonly lock: FileHandle,
    private readonly logger: Logger,
  ) {}

  /**
   * Open (creating it, mode 0700) and lock the state directory. Resolves with undefined, after a
   * log line, when it cannot be used or another instance holds it: copies then work without
   * crash cleanup.
   */
  static async open(dir: string, logger: Logger): Promise<FileJournal | undefined> {
    let dirHandle: FileHandle | undefined;
    let lock: FileHandle | undefined;
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      dirHandle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
      lock = await open(
        join(dir, 'lock'),
        constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW,
        0o600,
      );
      if (!flock(lock.fd, LOCK_EX | LOCK_NB)) {
        logger.warn(
          { stateDir: dir },
          `another hv-fcopy-ts holds ${dir}/lock: this instance keeps no journal of temporary files`,
        );
        await lock.close();
        await dirHandle.close();
        return undefined;
      }
      return new FileJournal(dir, dirHandle, lock, logger);
    } catch (e) {
      logger.warn(
        { stateDir: dir, err: String(e) },
        `cannot use the state directory ${dir}: temporary files of a crashed copy will not be removed at the next start`,
      );
      await lock?.close().catch(() => {});
      await dirHandle?.close().catch(() => {});
      return undefined;
    }
  }

  async record(entry: JournalEntry): Promise<void> {
    const fh = await open(join(this.dir, entryFile(entry.id)), 'wx', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(entry)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.dirHandle.sync();
  }

  async forget(id: string): Promise<void> {
    await unlink(join(this.dir, entryFile(id))).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /** Remove the temporaries the journal names (see the module comment). */
  async sweep(): Promise<SweepResult> {
    const removed: string[] = [];
    const kept: string[] = [];
    const names = (await readdir(this.dir)).filter((n) => n.endsWith('.json'));
    for (const name of names) {
      const file = join(this.dir, name);
      let entry: unknown;
      try {
        entry = JSON.parse(await readFile(file, 'utf8'));
      } catch {
        entry = undefined;
      }
      if (!isEntry(entry) || !isTempName(entry.tmp)) {
        // Written partly by a crash before its file could exist: nothing to remove.
        this.logger.warn({ entry: file }, `dropping an unreadable journal entry ${file}`);
        await unlink(file).catch(() => {});
        continue;
      }
      const outcome = await removeTemp(entry);
      const path = `${entry.dir}/${entry.tmp}`;
      if (outcome === 'removed') {
        removed.push(path);
        this.logger.info(
          { path, target: entry.target, pid: entry.pid, started: entry.started },
          `removed the temporary file ${path} of an unfinished copy (pid ${entry.pid}, started ${entry.started})`,
        );
      } else if (outcome !== 'gone') {
        kept.push(path);
        this.logger.warn(
          { path, reason: outcome },
          `cannot check the temporary file ${path} now (${outcome}); will try again at the next start`,
        );
        continue;
      }
      await unlink(file).catch(() => {});
    }
    return { removed, kept };
  }

  async close(): Promise<void> {
    await this.lock.close().catch(() => {});
    await this.dirHandle.close().catch(() => {});
  }
}

/** 'removed', 'gone' (nothing to do), or why it could not be checked. */
async function removeTemp(entry: JournalEntry): Promise<'removed' | 'gone' | string> {
  const parts = splitDirectory(entry.dir);
  if (isRefusal(parts)) return 'gone';
  const dir = await openDirectory(parts, {
    start: 0,
    create: false,
    dirMode: 0o755,
    followSymlinks: false,
    allow: [],
  });
  if (isRefusal(dir)) {
    // The directory is gone or is no longer a real directory: its temporary went with it, or
    // what is there now is not ours to touch.
    return dir.refused === 'io' ? dir.reason : 'gone';
  }
  try {
    const st = await lstat(at(dir.fd, entry.tmp));
    if (!st.isFile()) return 'gone';
    await unlink(at(dir.fd, entry.tmp));
    return 'removed';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'gone' : (code ?? String(e));
  } finally {
    await dir.close();
  }
}
