/**
 * Helpers of the packaging tests: the tools they need (a missing one fails with what to install,
 * never skips), the package build into a temporary directory, and a cached Debian 12 root made
 * with debootstrap (.cache/debootstrap/, git-ignored) copied per test so the cache stays pristine.
 */
import { mountPoints } from '../../kernel-shim/fuse/mount.js';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, buildPackages, requireTool, type BuildResult } from '../../packaging/build.js';

export { REPO };

export interface Ran {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run a command; never throws (the test asserts the status). */
export function sh(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Ran {
  const r = spawnSync(cmd, [...args], {
    encoding: 'utf8',
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    timeout: opts.timeoutMs ?? 120_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  return {
    status: r.status ?? -1,
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (r.error ? `\n${r.error.message}` : ''),
  };
}

/** Fail (not skip) with the Debian package to install when a tool is missing. */
export function requireTools(tools: Record<string, string>): void {
  for (const [tool, pkg] of Object.entries(tools)) requireTool(tool, pkg);
}

/** Build the packages into a fresh temporary directory (its work/ tree kept for inspection). */
export function buildIntoTemp(): BuildResult {
  const out = mkdtempSync(join(tmpdir(), 'hv-pkg-'));
  const r = buildPackages(out);
  if (r.packages.length === 0) throw new Error(`no package built: ${r.skipped.join('; ')}`);
  return r;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** The Debian mirror this machine uses (deb822 .sources or one-line sources.list). */
export function debianMirror(): string {
  const files: string[] = [];
  const d = '/etc/apt/sources.list.d';
  if (existsSync(d)) for (const f of readdirSync(d)) files.push(join(d, f));
  if (existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    const uris = [...text.matchAll(/^URIs:\s*(\S+)/gm), ...text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm)]
      .map((m) => m[1]!)
      .filter((u) => !/security/.test(u));
    if (uris[0]) return uris[0];
  }
  return 'http://deb.debian.org/debian';
}

export const BOOKWORM_CACHE = join(REPO, '.cache/debootstrap/bookworm-nodejs');
const COMPLETE = '.hv-complete';

/** A Debian 12 minbase root with nodejs, made once and cached (about 35 s, 330 MB). */
export function bookwormRoot(): string {
  if (existsSync(join(BOOKWORM_CACHE, COMPLETE))) return BOOKWORM_CACHE;
  requireTools({ debootstrap: 'debootstrap' });
  const tmp = `${BOOKWORM_CACHE}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  const r = sh('debootstrap', ['--variant=minbase', '--include=nodejs', 'bookworm', tmp, debianMirror()], {
    timeoutMs: 900_000,
  });
  if (r.status !== 0)
    throw new Error(`debootstrap failed (${r.status}):\n${r.stdout.slice(-3000)}\n${r.stderr}`);
  writeFileSync(join(tmp, COMPLETE), `${new Date().toISOString()}\n`);
  rmSync(BOOKWORM_CACHE, { recursive: true, force: true });
  renameSync(tmp, BOOKWORM_CACHE);
  return BOOKWORM_CACHE;
}

/** A scratch copy of the cached root (removed by the caller with removeRoot). */
export function copyOfBookworm(): string {
  const base = bookwormRoot();
  const dir = tempDir('hv-bookworm-');
  const root = join(dir, 'root');
  execFileSync('cp', ['-a', '--reflink=auto', base, root]);
  return root;
}

/** Remove a scratch root; refuses while anything is mounted under it. */
export function removeRoot(root: string): void {
  const mounts = mountPoints().filter((m) => m === root || m.startsWith(`${root}/`));
  if (mounts.length > 0) throw new Error(`still mounted under ${root}: ${mounts.join(', ')}`);
  rmSync(join(root, '..'), { recursive: true, force: true });
}

/**
 * Run a shell script in a private mount namespace with /proc mounted in the chroot: every mount
 * disappears with the namespace, whatever happens to the script.
 */
export function inChroot(root: string, script: string, timeoutMs = 120_000): Ran {
  return sh(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--fork',
      '--',
      'sh',
      '-c',
      // A clean environment: the chroot sees what a root shell on Debian would, not ours.
      'set -e; mount -t proc proc "$0/proc"; ' +
        'chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/sh -c "$1"',
      root,
      script,
    ],
    { timeoutMs },
  );
}
