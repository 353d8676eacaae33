/**
 * The killable helper that does the after-death work which could block on a frozen or hung
 * filesystem: FITHAW on mount points, unlink of an FCOPY temporary. The supervisor runs it as a
 * child process with a deadline and SIGKILLs it when the deadline passes, so the supervisor itself
 * never waits in the kernel. One JSON line per item on stdout:
 *
 *   after-death-child thaw MOUNT...    → {"item":"/mnt/a","result":"thawed"|"not-frozen"|"error","error"?}
 *   after-death-child unlink PATH...   → {"item":PATH,"result":"removed"|"absent"|"refused"|"error","error"?}
 */
import { closeSync, constants, lstatSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { ErrnoError, fithaw } from '../daemons/common/libc.js';

function say(item: string, result: string, error?: string): void {
  writeSync(1, `${JSON.stringify({ item, result, ...(error ? { error } : {}) })}\n`);
}

function thaw(mount: string): void {
  let fd: number;
  try {
    fd = openSync(mount, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (e) {
    return say(mount, 'error', (e as Error).message);
  }
  try {
    fithaw(fd);
    say(mount, 'thawed');
  } catch (e) {
    if (e instanceof ErrnoError && e.code === 'EINVAL') say(mount, 'not-frozen');
    else say(mount, 'error', (e as Error).message);
  } finally {
    closeSync(fd);
  }
}

function unlink(path: string): void {
  try {
    const st = lstatSync(path);
    if (!st.isFile()) return say(path, 'refused', 'not a regular file');
    unlinkSync(path);
    say(path, 'removed');
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') say(path, 'absent');
    else say(path, 'error', (e as Error).message);
  }
}

/** Do `op` on each item, one JSON line each on stdout. */
export function afterDeathHelper(op: string | undefined, items: readonly string[]): void {
  for (const item of items) {
    if (op === 'thaw') thaw(item);
    else if (op === 'unlink') unlink(item);
    else say(item, 'error', `unknown operation ${op}`);
  }
}

// Run as a program (from source or compiled); a bundled hv-supervisor runs afterDeathHelper itself
// when given `__after-death` (see cleanup.ts defaultHelper).
if (process.argv[1] && /after-death-child\.[cm]?[jt]s$/.test(process.argv[1])) {
  const [op, ...items] = process.argv.slice(2);
  afterDeathHelper(op, items);
}
