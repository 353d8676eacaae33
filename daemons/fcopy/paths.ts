/**
 * Where a copy may go, and how the daemon gets there without being led astray.
 *
 * Validation (pure): the file name is one path component (not empty, no '/', not '.' or '..');
 * the directory is absolute and has no '..' component; with an allow-list, it must lie in (or be)
 * an allowed directory.
 *
 * The walk: the target directory is reached one component at a time, each opened relative to the
 * directory descriptor already held, with O_DIRECTORY|O_NOFOLLOW — so a symbolic link anywhere
 * below the starting point is refused (unless `follow-symlinked-dirs`), and renaming or replacing
 * a component once it was opened changes nothing for us. Node has no openat(2); a path of the form
 * `/proc/self/fd/<dirfd>/<name>` gives the same resolution (the kernel jumps through the fd's magic
 * link to the very directory held, then looks up `name` in it), and mkdir, link, rename, unlink and
 * lstat go through it too. Every later operation of a copy (the temporary file, the final rename
 * or link) is relative to the held directory descriptor in the same way.
 *
 * The starting point is `/`, or with an allow-list the allowed directory that contains the target:
 * that one is opened by its path, symbolic links included (the administrator named it).
 *
 * Residual risks, documented in README.md: /proc must be mounted (checked at start); a local user
 * who may rename a directory we hold can move it, with our file to come, elsewhere on the same
 * file system (not a gain: the user could write there already); with `follow-symlinked-dirs` the
 * real directory is checked against the allow-list after the walk, but what a link points to is by
 * definition chosen by whoever may write the link.
 */
import { constants } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readlink, realpath } from 'node:fs/promises';

// libuv adds O_CLOEXEC to every open.
const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = constants;

/** Longest file name (bytes) on Linux file systems. */
export const NAME_MAX = 255;

/** `/proc/self/fd/<fd>/<name>`: `name` looked up in the directory held by `fd` (openat-style). */
export function at(dirFd: number, name: string): string {
  return `/proc/self/fd/${dirFd}/${name}`;
}

/** True when the *at emulation works here (/proc mounted). */
export async function procFdUsable(): Promise<boolean> {
  try {
    const fh = await open('/', O_RDONLY | O_DIRECTORY);
    try {
      const st = await lstat(at(fh.fd, '.'));
      return st.isDirectory();
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

export type RefusalCode =
  | 'invalid-name'
  | 'relative-path'
  | 'dot-dot'
  | 'not-allowed'
  | 'symlink'
  | 'not-directory'
  | 'missing'
  | 'io';

export interface Refusal {
  readonly refused: RefusalCode;
  /** For the log: what was refused and why. */
  readonly reason: string;
  /** The errno name, when a system call said so. */
  readonly errno?: string;
}

export function isRefusal(x: unknown): x is Refusal {
  return typeof x === 'object' && x !== null && 'refused' in x;
}

/** Why `name` cannot be a file name, or undefined when it can. */
export function checkFileName(name: string): Refusal | undefined {
  const bad = (why: string): Refusal => ({ refused: 'invalid-name', reason: `file name '${name}' ${why}` });
  if (name === '') return bad('is empty');
  if (name === '.' || name === '..') return bad('is a directory reference');
  if (name.includes('/')) return bad("contains '/'");
  if (name.includes('\0')) return bad('contains NUL');
  if (Buffer.byteLength(name) > NAME_MAX) return bad(`is longer than ${NAME_MAX} bytes`);
  return undefined;
}

/** The components of an absolute directory path (empty ones and '.' dropped), or why not. */
export function splitDirectory(path: string): string[] | Refusal {
  if (!path.startsWith('/')) {
    return { refused: 'relative-path', reason: `path '${path}' is not absolute` };
  }
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return { refused: 'dot-dot', reason: `path '${path}' has a '..' component` };
  if (parts.some((p) => p.includes('\0'))) return { refused: 'invalid-name', reason: 'path contains NUL' };
  return parts;
}

export function joinComponents(parts: readonly string[]): string {
  return `/${parts.join('/')}`;
}

/**
 * With an allow-list, the number of leading components of `parts` that make up the deepest
 * allowed directory containing it, or undefined when none does. Without one: 0 (start at '/').
 */
export function allowedPrefix(parts: readonly string[], allow: readonly string[]): number | undefined {
  if (allow.length === 0) return 0;
  let best: number | undefined;
  for (const dir of allow) {
    const a = dir.split('/').filter((p) => p !== '');
    if (a.length > parts.length) continue;
    if (a.every((p, i) => parts[i] === p) && (best === undefined || a.length > best)) best = a.length;
  }
  return best;
}

/** Is `path` (a real path) equal to or below one of `dirs`? */
export function isWithin(path: string, dirs: readonly string[]): boolean {
  return dirs.some((d) => d === '/' || path === d || path.startsWith(`${d}/`));
}

/** An open target directory. */
export interface TargetDir {
  /** The descriptor every operation of the copy is relative to. */
  readonly fd: number;
  /** The path as asked (normalised). */
  readonly path: string;
  /** Directories this walk created (CREATE_PATH), outermost first. */
  readonly created: readonly string[];
  /** Where the directory really is now (readlink of the descriptor). */
  realPath(): Promise<string>;
  /** fsync(2) the directory (after an entry was added or replaced). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface WalkOptions {
  /** Components of the starting directory (opened by path); the rest are walked. */
  readonly start: number;
  /** CREATE_PATH: make missing directories. */
  readonly create: boolean;
  readonly dirMode: number;
  readonly followSymlinks: boolean;
  /** With followSymlinks and an allow-list: the real directory must be within one of these. */
  readonly allow: readonly string[];
}

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? 'EIO';
}

/** Open the directory `parts`, walking it as described above. */
export async function openDirectory(
  parts: readonly string[],
  opts: WalkOptions,
): Promise<TargetDir | Refusal> {
  const startPath = joinComponents(parts.slice(0, opts.start));
  const created: string[] = [];
  let cur: FileHandle;
  try {
    cur = await open(startPath, O_RDONLY | O_DIRECTORY);
  } catch (e) {
    const code = errnoOf(e);
    return {
      refused: code === 'ENOENT' ? 'missing' : code === 'ENOTDIR' ? 'not-directory' : 'io',
      reason: `cannot open ${opts.start === 0 ? 'the root directory' : `the allowed directory ${startPath}`}: ${code}`,
      errno: code,
    };
  }
  let handedOver = false;
  let followed = false;
  try {
    for (let i = opts.start; i < parts.length; i++) {
      const step = await walkStep(cur, parts, i, opts, created);
      if (isRefusal(step)) return step;
      followed ||= step.followed;
      await cur.close();
      cur = step.next;
    }
    const held = cur;
    const dir: TargetDir = {
      fd: held.fd,
      path: joinComponents(parts),
      created,
      realPath: () => readlink(`/proc/self/fd/${held.fd}`),
      sync: () => held.sync(),
      close: () => held.close(),
    };
    if (followed && opts.allow.length > 0) {
      const real = await dir.realPath();
      const allowedReal = await Promise.all(opts.allow.map((a) => realpath(a).catch(() => a)));
      if (!isWithin(real, allowedReal)) {
        return {
          refused: 'not-allowed',
          reason: `${dir.path} leads through a symbolic link to ${real}, outside the allowed directories`,
        };
      }
    }
    handedOver = true;
    return dir;
  } finally {
    if (!handedOver) await cur.close();
  }
}

/** Open component `i` of `parts` in the directory `parent`. */
async function walkStep(
  parent: FileHandle,
  parts: readonly string[],
  i: number,
  opts: WalkOptions,
  created: string[],
): Promise<{ next: FileHandle; followed: boolean } | Refusal> {
  const name = parts[i] as string;
  const here = joinComponents(parts.slice(0, i + 1));
  const openIn = (flags: number) => open(at(parent.fd, name), O_RDONLY | O_DIRECTORY | flags);
  let code: string;
  try {
    return { next: await openIn(O_NOFOLLOW), followed: false };
  } catch (e) {
    code = errnoOf(e);
  }
  if (code === 'ENOENT') {
    if (!opts.create) {
      return { refused: 'missing', reason: `${here} does not exist (CREATE_PATH not set)`, errno: code };
    }
    let made = false;
    try {
      await mkdir(at(parent.fd, name), opts.dirMode);
      made = true;
      created.push(here);
    } catch (e) {
      // Made meanwhile by someone else: fine, it is opened below (no-follow as ever).
      if (errnoOf(e) !== 'EEXIST') {
        return { refused: 'io', reason: `cannot create ${here}: ${errnoOf(e)}`, errno: errnoOf(e) };
      }
    }
    let next: FileHandle;
    try {
      next = await openIn(O_NOFOLLOW);
    } catch (e) {
      return {
        refused: 'io',
        reason: `cannot open ${here} after creating it: ${errnoOf(e)}`,
        errno: errnoOf(e),
      };
    }
    if (made) {
      // The umask must not decide the mode of what we made.
      await next.chmod(opts.dirMode).catch(() => undefined);
    }
    return { next, followed: false };
  }
  if (code === 'ENOTDIR' || code === 'ELOOP') {
    // A symbolic link (refused by O_NOFOLLOW) or something that is not a directory.
    let isLink = false;
    try {
      isLink = (await lstat(at(parent.fd, name))).isSymbolicLink();
    } catch {
      // vanished meanwhile: reported as not a directory
    }
    if (!isLink) return { refused: 'not-directory', reason: `${here} is not a directory`, errno: code };
    if (!opts.followSymlinks) {
      return { refused: 'symlink', reason: `${here} is a symbolic link (follow-symlinked-dirs is off)` };
    }
    try {
      return { next: await openIn(0), followed: true };
    } catch (e) {
      return {
        refused: errnoOf(e) === 'ENOENT' ? 'missing' : 'not-directory',
        reason: `${here} is a symbolic link that does not lead to a directory: ${errnoOf(e)}`,
        errno: errnoOf(e),
      };
    }
  }
  return { refused: 'io', reason: `cannot open ${here}: ${code}`, errno: code };
}
