/**
 * Process-level behaviour shared by the daemons: the name `ps` and `pgrep` show, and a stop on
 * SIGTERM/SIGINT that completes in well under a second (the device loop's poll waits are short and
 * no read is ever left blocked in the kernel).
 */
import type { Logger } from './log.js';

/**
 * Show as `name` to both `pgrep` (the comm, set through prctl by libuv) and `ps -ef` (the command
 * line, rewritten in place by libuv).
 */
export function setProcessIdentity(name: string): void {
  process.title = name;
}

/**
 * An AbortSignal that fires on SIGTERM or SIGINT. A second signal while stopping exits at once with
 * 128 + signal number, as an unhandled signal would.
 */
export function stopSignal(logger: Logger): AbortSignal {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    }
    logger.info({ signal: sig }, `received ${sig}: stopping`);
    ac.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return ac.signal;
}
