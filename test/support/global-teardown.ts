/**
 * Runs once after the whole suite (vitest globalSetup teardown), whatever failed: the machine must
 * be left as it was. Any FUSE mount of ours, any sandbox tmpfs or overlay, or any loop device
 * backed by one of our images still attached fails the run with a list of what was left.
 * (Frozen file systems can only be our loop images, inside sandboxes: a leftover loop device is
 * how a leftover freeze would show.)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export function leftovers(): string[] {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => /\bfuse\.hvshim\b|^kernel-shim |^hvshim |hv-shim-|hv-freeze-|hv-shim-overlay/.test(l));
  let loops: string[] = [];
  try {
    loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => /hv-shim-|hv-freeze-|hv-vss-|hv-fcopy-|hv-conformance-/.test(l));
  } catch {
    // no losetup: nothing to check
  }
  return [...mounts.map((m) => `mount: ${m}`), ...loops.map((l) => `loop device: ${l}`)];
}

export default function setup(): () => void {
  return () => {
    const left = leftovers();
    if (left.length > 0) {
      throw new Error(`the test suite left the machine changed:\n  ${left.join('\n  ')}`);
    }
  };
}
