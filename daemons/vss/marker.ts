/**
 * The frozen marker: a small JSON file (default /run/hyperv-daemons-ts/vss-frozen.json) that says
 * what a FREEZE is about to freeze and which hooks ran `freeze`. It is written before the first
 * hook runs and before the first FIFREEZE, and removed only once everything is thawed and the
 * `thaw` hooks are done, so a daemon that dies in between (SIGKILL, a crash, an OOM kill) leaves
 * it behind: the next daemon, or the supervisor (`hv-vss-ts --recover`), thaws those filesystems
 * and runs those hooks at start. It is never written while anything is frozen.
 *
 * /run is a tmpfs, which VSS never freezes and which a reboot empties. The marker also carries the
 * boot id, so a marker on a persistent filesystem is recognised as stale after a reboot.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const DEFAULT_MARKER_PATH = '/run/hyperv-daemons-ts/vss-frozen.json';

export interface MarkedFilesystem {
  readonly mountPoint: string;
  readonly device: string;
  readonly source: string;
  readonly fsType: string;
}

export interface FrozenMarker {
  readonly format: 'hv-vss-frozen';
  readonly version: 1;
  readonly pid: number;
  /** /proc/sys/kernel/random/boot_id when written. */
  readonly bootId: string;
  readonly writtenAt: string;
  /** What the FREEZE freezes, in freeze order (a superset of what may be frozen). */
  readonly filesystems: readonly MarkedFilesystem[];
  /** Hooks whose `freeze` ran or may have run, in name order. */
  readonly hooks: readonly string[];
}

export type MarkerRead =
  | { readonly kind: 'none' }
  | { readonly kind: 'found'; readonly marker: FrozenMarker }
  | { readonly kind: 'corrupt'; readonly error: string };

export interface MarkerStore {
  readonly path: string;
  read(): Promise<MarkerRead>;
  write(marker: FrozenMarker): Promise<void>;
  remove(): Promise<void>;
}

/** This boot's id, or '' when /proc does not say. */
export function currentBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

/** Validate parsed JSON as a marker; a message when it is not one. */
export function validateMarker(v: unknown): FrozenMarker | string {
  if (typeof v !== 'object' || v === null) return 'not a JSON object';
  const m = v as Record<string, unknown>;
  if (m.format !== 'hv-vss-frozen') return 'format is not hv-vss-frozen';
  if (m.version !== 1) return `unknown version ${String(m.version)}`;
  if (!Array.isArray(m.filesystems)) return 'filesystems is not a list';
  for (const f of m.filesystems as unknown[]) {
    const fs = f as Record<string, unknown> | null;
    if (typeof fs !== 'object' || fs === null || !isString(fs.mountPoint) || !fs.mountPoint.startsWith('/'))
      return 'a filesystem without an absolute mountPoint';
  }
  if (!Array.isArray(m.hooks) || !(m.hooks as unknown[]).every(isString))
    return 'hooks is not a list of names';
  return {
    format: 'hv-vss-frozen',
    version: 1,
    pid: typeof m.pid === 'number' ? m.pid : 0,
    bootId: isString(m.bootId) ? m.bootId : '',
    writtenAt: isString(m.writtenAt) ? m.writtenAt : '',
    filesystems: (m.filesystems as Record<string, unknown>[]).map((f) => ({
      mountPoint: f.mountPoint as string,
      device: isString(f.device) ? f.device : '',
      source: isString(f.source) ? f.source : '',
      fsType: isString(f.fsType) ? f.fsType : '',
    })),
    hooks: m.hooks as string[],
  };
}

export class FileMarker implements MarkerStore {
  constructor(readonly path: string = DEFAULT_MARKER_PATH) {}

  async read(): Promise<MarkerRead> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return { kind: 'none' };
      return { kind: 'corrupt', error: `cannot read: ${(e as Error).message}` };
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      return { kind: 'corrupt', error: `not JSON: ${(e as Error).message}` };
    }
    const m = validateMarker(parsed);
    return typeof m === 'string' ? { kind: 'corrupt', error: m } : { kind: 'found', marker: m };
  }

  /** Atomically: a temporary file in the same directory, then rename. */
  async write(marker: FrozenMarker): Promise<void> {
    const dir = dirname(this.path);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const tmp = join(dir, `.${basename(this.path)}.${process.pid}.tmp`);
    await writeFile(tmp, `${JSON.stringify(marker, null, 2)}\n`, { mode: 0o644 });
    await rename(tmp, this.path);
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }
}
