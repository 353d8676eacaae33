/**
 * The shim's setup and teardown commands (mount, umount, losetup, mkfs) run in a process group of
 * their own: `kernel-shim run` forwards a stop signal to its whole process group, and such a
 * command must not be cut short by it (a half-built sandbox, or a mount left behind).
 * `setsid --wait` (util-linux) gives the command a new session and waits for it.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';

export function runSetupCommand(
  cmd: string,
  args: readonly string[],
  opts: { stdio?: 'ignore' } = {},
): SpawnSyncReturns<string> {
  return spawnSync('setsid', ['--wait', cmd, ...args], { encoding: 'utf8', ...opts });
}
