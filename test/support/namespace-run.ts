/**
 * Run a TypeScript script (through tsx) in a private mount namespace, as the tests' harnesses do:
 * `unshare --mount --propagation private --fork`, with PARENT_NS set to this process's mount
 * namespace (the sandboxes refuse to build in it), its output collected, and a deadline.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');

export interface NamespaceRunOptions {
  timeoutMs: number;
  /** Extra environment for the script. */
  env?: NodeJS.ProcessEnv;
  /** unshare --kill-child: the script dies with unshare. */
  killChild?: boolean;
  /** What the deadline does (default: SIGKILL unshare). */
  onTimeout?: (child: ChildProcess) => void;
  /** Node options for the script's own process (e.g. V8 flags). */
  nodeArgs?: readonly string[];
}

export interface NamespaceRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export function runTsInNamespace(
  script: string,
  args: readonly string[],
  opts: NamespaceRunOptions,
): Promise<NamespaceRun> {
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--fork',
      ...(opts.killChild ? ['--kill-child'] : []),
      '--',
      process.execPath,
      ...(opts.nodeArgs ?? []),
      '--import',
      'tsx',
      script,
      ...args,
    ],
    {
      cwd: REPO,
      env: { ...process.env, PARENT_NS: readlinkSync('/proc/self/ns/mnt'), ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => {
    timedOut = true;
    (opts.onTimeout ?? ((c) => c.kill('SIGKILL')))(child);
  }, opts.timeoutMs);
  // Resolve on 'close' (all output read); should a stray descendant keep the pipes open, close
  // them ourselves shortly after unshare has exited.
  child.on('exit', () =>
    setTimeout(() => {
      child.stdout.destroy();
      child.stderr.destroy();
    }, 2000).unref(),
  );
  return new Promise((done, fail) => {
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr, timedOut });
    });
  });
}
