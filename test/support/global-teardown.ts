/**
 * Wraps the whole suite (vitest globalSetup): the machine must be left as it was.
 *
 * Setup gives the run a directory of its own and points TMPDIR at it, so every sandbox, scratch
 * tmpfs, image and FUSE mount point the tests create lies below it. Teardown, whatever failed,
 * looks for anything of this run still mounted in this namespace or still attached as a loop
 * device, and fails the run (exit status 1) with the list. A leftover freeze could only be on one
 * of our loop images, so a leftover loop device is how it would show. Then it removes the
 * directory.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Mounts and loop devices whose paths lie below `dir` (or, without `dir`, look like ours). */
export function leftovers(dir?: string): string[] {
  const ours = (line: string) =>
    dir ? line.includes(dir) : /\bfuse\.hvshim\b|hv-shim-|hv-freeze-|hv-conformance-/.test(line);
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').filter(ours);
  let loops: string[] = [];
  try {
    loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter(ours);
  } catch {
    // no losetup: nothing to check
  }
  return [...mounts.map((m) => `mount: ${m}`), ...loops.map((l) => `loop device: ${l}`)];
}

export default function setup(): () => void {
  const runDir = mkdtempSync(join(process.env.TMPDIR ?? '/tmp', 'hv-test-run-'));
  process.env.TMPDIR = runDir;
  return () => {
    const left = leftovers(runDir);
    if (left.length > 0) {
      process.stdout.write(`\nthe test suite left the machine changed:\n  ${left.join('\n  ')}\n`);
      process.exitCode = 1;
      return;
    }
    rmSync(runDir, { recursive: true, force: true });
  };
}
