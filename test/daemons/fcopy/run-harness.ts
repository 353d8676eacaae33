/**
 * Start the FCOPY harness (harness.ts) in a private mount namespace and return what it reported:
 *
 *   PARENT_NS=$(readlink /proc/self/ns/mnt) unshare --mount --propagation private --fork --kill-child \
 *     -- node --import tsx harness.ts '<spec JSON>'
 *
 * Every mount the harness makes (the /dev overlay, the FUSE device files, the scratch tmpfs, a
 * loop-mounted image) lives in that namespace and goes with it, even if the harness is killed.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTsInNamespace } from '../../support/namespace-run.js';
import type { CaseResult } from './cases.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const RESULT_MARK = 'FCOPY-HARNESS-RESULT ';

export type DaemonKind = 'ours' | 'upstream';

export interface HarnessSpec {
  readonly daemon: DaemonKind;
  readonly cases: readonly string[];
  /** Our daemon's configuration file; `@WORK@` stands for the work directory. */
  readonly config?: string;
  /** Run our daemon with this command (default: node --import tsx daemons/fcopy/main.ts). */
  readonly oursCommand?: readonly string[];
  /** For the benchmark: size of the copy and where it goes (a directory of the caller's). */
  readonly bench?: { readonly mib: number; readonly targetDir?: string };
}

export interface HarnessOutput {
  readonly daemon: DaemonKind;
  readonly results: Record<string, CaseResult>;
  /** Our daemon's log lines (JSON), or the upstream daemon's stderr lines. */
  readonly log: readonly string[];
  readonly error?: string;
}

export async function runHarness(spec: HarnessSpec, timeoutMs = 300_000): Promise<HarnessOutput> {
  const { code, signal, stdout, stderr } = await runTsInNamespace(
    join(REPO, 'test', 'daemons', 'fcopy', 'harness.ts'),
    [JSON.stringify(spec)],
    { timeoutMs, killChild: true },
  );
  const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARK));
  if (!line)
    throw new Error(`the harness ended (${code ?? signal}) without a result:\n${stderr.slice(-4000)}`);
  const parsed = JSON.parse(line.slice(RESULT_MARK.length)) as HarnessOutput;
  if (parsed.error) throw new Error(`harness: ${parsed.error}\n${stderr.slice(-4000)}`);
  return parsed;
}
