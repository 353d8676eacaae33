/**
 * Application hooks, as qemu-guest-agent's fsfreeze-hook.d and open-vm-tools' backupScripts.d have
 * them: the executables in one directory run with the argument `freeze` in name order before the
 * filesystems are frozen, and with `thaw` in reverse order after they are thawed (`freezefail`,
 * also in reverse, when the freeze did not happen). Each runs under a time limit in a process
 * group of its own; on the limit the group gets SIGTERM, then SIGKILL. A hook fails when it exits
 * non-zero, is killed, times out or cannot be started.
 *
 * Which files are hooks: regular files (symlinks followed) with an execute bit, not writable by
 * group or others, owned by root (or by the daemon's user), whose names do not start with a dot and
 * do not end with `~`, `.sample`, `.disabled`, `.dpkg-*`, `.rpmnew`, `.rpmsave`, `.rpmorig` or
 * `.swp`. Names are ordered by their UTF-16 code units (the C locale for ASCII names).
 *
 * Hooks are never started while a filesystem is frozen: the caller runs them before the freeze
 * and after the thaw only (their programs and their writes may be on a frozen filesystem).
 */
import { spawn } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type HookPhase = 'freeze' | 'thaw' | 'freezefail';

export interface HookResult {
  readonly name: string;
  readonly phase: HookPhase;
  readonly ok: boolean;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  /** Why it could not be started (ENOENT, EACCES, ENOEXEC, …). */
  readonly error?: string;
  readonly ms: number;
  /** Its stdout and stderr, interleaved, at most OUTPUT_LIMIT bytes. */
  readonly output: string;
}

export interface IgnoredHook {
  readonly name: string;
  readonly reason: string;
}

export interface HookListing {
  /** Hook names in the order `freeze` runs them. */
  readonly hooks: readonly string[];
  readonly ignored: readonly IgnoredHook[];
  /** The directory is absent: no hooks (not an error). */
  readonly missing: boolean;
}

/** Where the hooks come from and how one is run (tests pass a recording fake). */
export interface HookRunner {
  list(): Promise<HookListing>;
  run(name: string, phase: HookPhase, timeoutMs: number): Promise<HookResult>;
}

export const OUTPUT_LIMIT = 16 * 1024;
/** Between SIGTERM and SIGKILL of a hook over its time limit. */
export const KILL_GRACE_MS = 2_000;

const IGNORED_SUFFIXES = [
  '~',
  '.sample',
  '.disabled',
  '.dpkg-old',
  '.dpkg-new',
  '.dpkg-dist',
  '.dpkg-tmp',
  '.dpkg-bak',
  '.rpmnew',
  '.rpmsave',
  '.rpmorig',
  '.swp',
];

/** Why a file name is not a hook, or undefined when it may be one. */
export function ignoredName(name: string): string | undefined {
  if (name.startsWith('.')) return 'hidden file';
  const suffix = IGNORED_SUFFIXES.find((s) => name.endsWith(s));
  return suffix ? `name ends with ${suffix}` : undefined;
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface DirectoryHooksOptions {
  /** The uid a hook's owner may have besides root (default: ours). */
  uid?: number;
  killGraceMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class DirectoryHooks implements HookRunner {
  private readonly uid: number;
  private readonly killGraceMs: number;
  private readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly dir: string,
    opts: DirectoryHooksOptions = {},
  ) {
    this.uid = opts.uid ?? process.geteuid?.() ?? 0;
    this.killGraceMs = opts.killGraceMs ?? KILL_GRACE_MS;
    this.env = opts.env ?? process.env;
  }

  async list(): Promise<HookListing> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT') return { hooks: [], ignored: [], missing: true };
      throw e;
    }
    const hooks: string[] = [];
    const ignored: IgnoredHook[] = [];
    for (const name of names.sort(byCodeUnits)) {
      const byName = ignoredName(name);
      if (byName) {
        ignored.push({ name, reason: byName });
        continue;
      }
      let st;
      try {
        st = await stat(join(this.dir, name));
      } catch (e) {
        ignored.push({ name, reason: `cannot stat: ${(e as { code?: string }).code ?? e}` });
        continue;
      }
      if (!st.isFile()) ignored.push({ name, reason: 'not a regular file' });
      else if ((st.mode & 0o111) === 0) ignored.push({ name, reason: 'not executable' });
      else if ((st.mode & 0o022) !== 0) ignored.push({ name, reason: 'writable by group or others' });
      else if (st.uid !== 0 && st.uid !== this.uid) ignored.push({ name, reason: `owned by uid ${st.uid}` });
      else hooks.push(name);
    }
    return { hooks, ignored, missing: false };
  }

  run(name: string, phase: HookPhase, timeoutMs: number): Promise<HookResult> {
    const start = Date.now();
    return new Promise((resolve) => {
      let output = '';
      let timedOut = false;
      let settled = false;
      const chunks = (d: Buffer) => {
        if (output.length < OUTPUT_LIMIT) output += d.toString('utf8').slice(0, OUTPUT_LIMIT - output.length);
      };
      const child = spawn(join(this.dir, name), [phase], {
        cwd: '/',
        env: this.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      child.stdout?.on('data', chunks);
      child.stderr?.on('data', chunks);
      const killGroup = (sig: NodeJS.Signals) => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, sig);
        } catch {
          // the group is gone already
        }
      };
      let killTimer: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup('SIGTERM');
        killTimer = setTimeout(() => killGroup('SIGKILL'), this.killGraceMs);
      }, timeoutMs);
      const finish = (r: Omit<HookResult, 'name' | 'phase' | 'ms' | 'output' | 'timedOut'>) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (killTimer) clearTimeout(killTimer);
        // A background process of the hook may keep the pipes open: stop reading them.
        child.stdout?.destroy();
        child.stderr?.destroy();
        resolve({ name, phase, ms: Date.now() - start, output, timedOut, ...r, ok: r.ok && !timedOut });
      };
      child.on('error', (e) =>
        finish({
          ok: false,
          exitCode: null,
          signal: null,
          error: (e as { code?: string }).code ?? e.message,
        }),
      );
      // 'close' follows 'exit' once the pipes are drained; a background process of the hook that
      // keeps them open must not hold the result up for long.
      child.on('close', (exitCode, signal) => finish({ ok: exitCode === 0, exitCode, signal }));
      child.on('exit', (exitCode, signal) => {
        setTimeout(() => finish({ ok: exitCode === 0, exitCode, signal }), 200).unref();
      });
    });
  }
}
