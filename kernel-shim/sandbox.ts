/**
 * The sandbox `kernel-shim run` builds inside a private mount namespace: /dev gets a private
 * writable overlay in which /dev/vmbus is created (for the shim's FUSE files), and the pool
 * directory and the helper-script directory are bind-mounted from temporary (or given)
 * directories. Nothing is created or mounted outside the namespace: every mount lives in it and
 * disappears with its last process, and the scratch space is a tmpfs mounted in the namespace.
 * A real /dev/vmbus, if the machine has one, is hidden inside the namespace and never touched.
 */
import { mountPoints } from './fuse/mount.js';
import { runSetupCommand } from './setup-command.js';
import { existsSync, mkdirSync, mkdtempSync, readlinkSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export const DEFAULT_STATE_PATH = '/var/lib/hyperv';
export const DEFAULT_SCRIPTS_PATH = '/usr/libexec/hypervkvpd';
export const VMBUS_DEV_DIR = '/dev/vmbus';

/** This process's mount namespace, e.g. `mnt:[4026532177]`. */
export function mountNamespaceId(): string {
  return readlinkSync('/proc/self/ns/mnt');
}

/**
 * True when this process runs in a mount namespace other than `parentNs` (the namespace of the
 * process that created ours; recorded before unshare). PID 1's namespace is no reference: the
 * caller may already run in a container's namespace.
 */
export function inPrivateMountNamespace(parentNs: string | undefined): boolean {
  try {
    return parentNs !== undefined && parentNs !== '' && mountNamespaceId() !== parentNs;
  } catch {
    return false;
  }
}

function mount(args: string[]): void {
  const r = runSetupCommand('mount', args);
  if (r.status !== 0)
    throw new Error(`mount ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

function umount(target: string): void {
  runSetupCommand('umount', ['-l', target]);
}

/** The mount points strictly below `dir` in this namespace, shallowest first. */
function submounts(dir: string): string[] {
  return mountPoints()
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => a.length - b.length);
}

export interface SandboxOptions {
  /** The mount namespace this sandbox must not be in (the creator's, recorded before unshare). */
  parentNamespace: string;
  /** Directory to serve as /var/lib/hyperv (default: a temporary one). */
  stateDir?: string;
  /** Directory to serve as /usr/libexec/hypervkvpd (default: a temporary empty one). */
  scriptsDir?: string;
  statePath?: string;
  scriptsPath?: string;
}

export interface Sandbox {
  /** The tmpfs holding the overlays and the temporary directories. */
  readonly scratch: string;
  readonly stateDir: string;
  readonly scriptsDir: string;
  /** Unmount what was mounted (the namespace's end would do it too) and remove the scratch dir. */
  cleanup(): void;
}

export function buildSandbox(opts: SandboxOptions): Sandbox {
  if (!inPrivateMountNamespace(opts.parentNamespace)) {
    throw new Error(
      'refusing to build the sandbox outside a private mount namespace (run under unshare --mount)',
    );
  }
  // Make sure nothing propagates back to the parent namespace.
  mount(['--make-rprivate', '/']);
  const scratch = mkdtempSync(join(tmpdir(), 'hv-shim-'));
  mount(['-t', 'tmpfs', '-o', 'mode=0755', 'hv-shim-scratch', scratch]);
  const mounted: string[] = [scratch];

  /** Give `dir` a private writable overlay (its own submounts carried over). */
  const overlay = (dir: string): void => {
    const key = dir.replace(/\//g, '_');
    const upper = join(scratch, `${key}.upper`);
    const work = join(scratch, `${key}.work`);
    const merged = join(scratch, `${key}.merged`);
    for (const d of [upper, work, merged]) mkdirSync(d);
    mount([
      '-t',
      'overlay',
      'hv-shim-overlay',
      '-o',
      `lowerdir=${dir},upperdir=${upper},workdir=${work}`,
      merged,
    ]);
    for (const sub of submounts(dir)) {
      const target = join(merged, sub.slice(dir.length));
      mkdirSync(target, { recursive: true });
      mount(['--rbind', sub, target]);
    }
    mount(['--move', merged, dir]);
    mounted.push(dir);
  };

  /** Bind `source` onto `target`, creating `target` inside an overlay of its parent if needed. */
  const bindAt = (target: string, source: string): void => {
    if (!existsSync(target)) {
      let parent = dirname(target);
      while (!existsSync(parent)) parent = dirname(parent);
      overlay(parent);
      mkdirSync(target, { recursive: true });
    }
    mount(['--bind', source, target]);
    mounted.push(target);
  };

  /**
   * A directory to serve: a given one is pinned first (bound into the scratch before any overlay,
   * so its writes reach the real directory even if it lies under an overlaid path); a default one
   * is a fresh directory of the scratch tmpfs.
   */
  const pin = (given: string | undefined, name: string): string => {
    const dir = join(scratch, name);
    mkdirSync(dir, { mode: 0o755 });
    if (given !== undefined) {
      mkdirSync(given, { recursive: true, mode: 0o755 });
      mount(['--bind', given, dir]);
    }
    return dir;
  };
  const state = pin(opts.stateDir, 'state');
  const scripts = pin(opts.scriptsDir, 'scripts');

  overlay('/dev');
  mkdirSync(VMBUS_DEV_DIR, { recursive: true, mode: 0o755 });
  bindAt(opts.statePath ?? DEFAULT_STATE_PATH, state);
  bindAt(opts.scriptsPath ?? DEFAULT_SCRIPTS_PATH, scripts);
  const stateDir = opts.stateDir ?? state;
  const scriptsDir = opts.scriptsDir ?? scripts;

  return {
    scratch,
    stateDir,
    scriptsDir,
    cleanup() {
      for (const m of mounted.reverse()) umount(m);
      try {
        rmdirSync(scratch);
      } catch {
        // still busy: the namespace's end releases it; only an empty directory can remain
      }
    },
  };
}
