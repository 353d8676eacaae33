/**
 * FIFREEZE / FITHAW, and the two passes built on them.
 *
 * The ioctl freezer opens the mount point read-only (O_NONBLOCK, so a FIFO bind-mounted there
 * cannot block the open), issues the ioctl through koffi, and closes: none of it writes to the
 * filesystem, frozen or not. util-linux fsfreeze would do the same ioctl, but starting it while a
 * filesystem is frozen means executing a program from /usr, which may be frozen: the daemon never
 * starts a program while anything is frozen. koffi's native module is loaded by the constructor
 * (one harmless ioctl on fd -1), never during a freeze.
 *
 * The passes log nothing (the caller holds its log lines while frozen) and take their time from
 * `process.hrtime`, which loads nothing.
 */
import { closeSync, constants, openSync } from 'node:fs';
import { fifreeze, fithaw } from '../common/libc.js';
import type { FreezeTarget } from './mounts.js';

export interface Freezer {
  /** Freeze the filesystem mounted at `mountPoint`; throws with `code` (EBUSY: already frozen). */
  freeze(mountPoint: string): void;
  /** Thaw it; throws with `code` (EINVAL: not frozen). */
  thaw(mountPoint: string): void;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

export class IoctlFreezer implements Freezer {
  constructor() {
    // Load koffi and libc's ioctl now: ioctl(-1, FITHAW) fails with EBADF and changes nothing.
    try {
      fithaw(-1);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EBADF') throw e;
    }
  }

  freeze(mountPoint: string): void {
    this.withFd(mountPoint, fifreeze);
  }

  thaw(mountPoint: string): void {
    this.withFd(mountPoint, fithaw);
  }

  private withFd(path: string, op: (fd: number) => void): void {
    const fd = openSync(path, OPEN_FLAGS);
    try {
      op(fd);
    } finally {
      closeSync(fd);
    }
  }
}

export function errorCode(e: unknown): string {
  const c = (e as { code?: unknown } | undefined)?.code;
  return typeof c === 'string' ? c : 'EIO';
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function elapsedMs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export interface PassFailure {
  readonly target: FreezeTarget;
  readonly code: string;
  readonly message: string;
}

export interface FreezeOutcome {
  readonly ok: boolean;
  /** Frozen by this pass, or found frozen already (EBUSY, upstream's success), in order. */
  readonly frozen: readonly FreezeTarget[];
  /** The EBUSY ones among `frozen`. */
  readonly alreadyFrozen: readonly string[];
  /** Filesystems whose driver cannot freeze (EOPNOTSUPP, as vfat): left alone, not a failure. */
  readonly unsupported: readonly FreezeTarget[];
  /** The first failure; the pass stops there. */
  readonly failure?: PassFailure;
  /** Per target, ms. */
  readonly timings: readonly { readonly mountPoint: string; readonly ms: number }[];
  readonly totalMs: number;
}

/** Freeze `targets` in order; stop at the first failure (the caller rolls back). */
export function freezePass(targets: readonly FreezeTarget[], freezer: Freezer): FreezeOutcome {
  const t0 = process.hrtime.bigint();
  const frozen: FreezeTarget[] = [];
  const alreadyFrozen: string[] = [];
  const unsupported: FreezeTarget[] = [];
  const timings: { mountPoint: string; ms: number }[] = [];
  for (const target of targets) {
    const t = process.hrtime.bigint();
    try {
      freezer.freeze(target.mountPoint);
      frozen.push(target);
    } catch (e) {
      const code = errorCode(e);
      if (code === 'EBUSY') {
        frozen.push(target);
        alreadyFrozen.push(target.mountPoint);
      } else if (code === 'EOPNOTSUPP') {
        unsupported.push(target);
      } else {
        timings.push({ mountPoint: target.mountPoint, ms: elapsedMs(t) });
        return {
          ok: false,
          frozen,
          alreadyFrozen,
          unsupported,
          failure: { target, code, message: errorMessage(e) },
          timings,
          totalMs: elapsedMs(t0),
        };
      }
    }
    timings.push({ mountPoint: target.mountPoint, ms: elapsedMs(t) });
  }
  return { ok: true, frozen, alreadyFrozen, unsupported, timings, totalMs: elapsedMs(t0) };
}

export interface ThawOutcome {
  readonly ok: boolean;
  readonly thawed: readonly string[];
  /** EINVAL (or EOPNOTSUPP): was not frozen; upstream's success. */
  readonly notFrozen: readonly string[];
  readonly failures: readonly PassFailure[];
  readonly totalMs: number;
}

/** Thaw every target in the given order; every one is attempted whatever the others do. */
export function thawPass(targets: readonly FreezeTarget[], freezer: Freezer): ThawOutcome {
  const t0 = process.hrtime.bigint();
  const thawed: string[] = [];
  const notFrozen: string[] = [];
  const failures: PassFailure[] = [];
  for (const target of targets) {
    try {
      freezer.thaw(target.mountPoint);
      thawed.push(target.mountPoint);
    } catch (e) {
      const code = errorCode(e);
      if (code === 'EINVAL' || code === 'EOPNOTSUPP') notFrozen.push(target.mountPoint);
      else failures.push({ target, code, message: errorMessage(e) });
    }
  }
  return { ok: failures.length === 0, thawed, notFrozen, failures, totalMs: elapsedMs(t0) };
}
