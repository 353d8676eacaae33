/**
 * Run a daemon as a real process against the kernel-shim's device files, and drive the simulated
 * host from a test. The harness re-runs a script of the test's choosing inside
 * `unshare --mount --propagation private --fork` (the sandbox of kernel-shim/sandbox.ts), so every
 * mount exists only there and disappears with it. The script (a module under test/) exports a
 * default `async (ctx) => result`; its JSON result comes back to the test.
 *
 *   const r = await runInShim({ services: ['kvp'], command: KVP_OURS, script: 'test/e2e/scripts/kvp-basic.ts' });
 */
import { readlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ServiceName } from '../../kernel-shim/device.js';
import { runTsInNamespace } from './namespace-run.js';

export const REPO = resolve(import.meta.dirname, '../..');

/** Our daemons, run from source. */
export const OURS = {
  kvp: [process.execPath, '--import', 'tsx', `${REPO}/daemons/kvp/main.ts`, '-n', '--log-level', 'warn'],
} as const;

/** The upstream C daemons (Debian's hyperv-daemons). */
export const UPSTREAM = {
  kvp: ['/usr/sbin/hv_kvp_daemon', '-n'],
  vss: ['/usr/sbin/hv_vss_daemon', '-n'],
  fcopy: ['/usr/sbin/hv_fcopy_daemon', '-n'],
} as const;

export interface ShimRun {
  services: ServiceName[];
  /** The daemon command (argv). */
  command: readonly string[];
  /** A module path (relative to the repository) whose default export drives the host. */
  script: string;
  /** Passed to the script as ctx.params. */
  params?: unknown;
  /** Directories for /var/lib/hyperv and /usr/libexec/hypervkvpd (default: temporary). */
  stateDir?: string;
  scriptsDir?: string;
  timeoutMs?: number;
  /** Node options for the harness process (the kernel-shim and the host script), not the daemon. */
  shimNodeArgs?: readonly string[];
}

export interface ShimRunResult<T> {
  result: T;
  /** What the daemon and the harness wrote to stderr/stdout (for diagnosis). */
  log: string;
}

export function runInShim<T = unknown>(run: ShimRun): Promise<ShimRunResult<T>> {
  if (process.getuid?.() !== 0)
    throw new Error('runInShim needs root (mount namespaces, FUSE): CI runs as root');
  const timeoutMs = run.timeoutMs ?? 60_000;
  return runTsInNamespace(`${REPO}/test/support/shim-harness-main.ts`, [], {
    timeoutMs,
    killChild: true,
    ...(run.shimNodeArgs ? { nodeArgs: run.shimNodeArgs } : {}),
    env: { HV_HARNESS: JSON.stringify({ ...run, parentNamespace: readlinkSync('/proc/self/ns/mnt') }) },
  }).then(({ code, stdout: out, stderr: log, timedOut }) => {
    if (timedOut) throw new Error(`harness timed out after ${timeoutMs} ms\n${log}`);
    const marker = out.lastIndexOf('\nHV_HARNESS_RESULT ');
    if (code !== 0 || marker < 0) throw new Error(`harness exited ${code}\n${log}\n${out}`);
    return {
      result: JSON.parse(out.slice(marker + '\nHV_HARNESS_RESULT '.length)) as T,
      log: log + out.slice(0, marker),
    };
  });
}
