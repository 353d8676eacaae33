/**
 * The daemons' command lines: the upstream flags (-n/--no-daemon, -h/--help, and KVP's -d) with
 * the same meanings, plus our long options. Parsing never calls process.exit itself; `parseCli`
 * returns what to do, and usage errors map to EX_USAGE (64) so that a unit can refuse to restart
 * on a bad command line (RestartPreventExitStatus=64).
 */
import { Command, CommanderError, Option } from 'commander';
import { LOG_LEVELS, type LogLevel } from './log.js';

export const EX_OK = 0;
export const EX_USAGE = 64;
export const EX_CANTCREAT = 73;
export const EX_NOPERM = 77;
export const EX_CONFIG = 78;
export const EX_SOFTWARE = 70;

export interface CommonOptions {
  /** -n: stay in the foreground. We always do; accepted for compatibility. */
  daemon: boolean;
  device: string;
  logLevel: LogLevel;
}

export type CliOutcome<T> =
  { kind: 'run'; options: T } | { kind: 'exit'; code: number; output: string; stream: 'stdout' | 'stderr' };

/** A program with the options every daemon has. */
export function daemonCommand(opts: {
  name: string;
  description: string;
  version: string;
  device: string;
}): Command {
  return new Command(opts.name)
    .description(opts.description)
    .version(opts.version, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'print this help and exit')
    .option('-n, --no-daemon', 'stay in the foreground (always the case; accepted for compatibility)')
    .option('--device <path>', 'the character device to serve', opts.device)
    .addOption(
      new Option('--log-level <level>', 'the lowest level logged (JSON lines on stdout)')
        .choices(LOG_LEVELS as unknown as string[])
        .default('info'),
    )
    .allowExcessArguments(false)
    .configureOutput({ writeOut: () => {}, writeErr: () => {} });
}

/** Parse argv (without node and script). */
export function parseCli<T>(program: Command, argv: readonly string[]): CliOutcome<T> {
  let out = '';
  let err = '';
  program.exitOverride().configureOutput({
    writeOut: (s) => (out += s),
    writeErr: (s) => (err += s),
    outputError: (s, write) => write(s),
  });
  try {
    program.parse([...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      ) {
        return { kind: 'exit', code: EX_OK, output: out, stream: 'stdout' };
      }
      const hint = `Try '${program.name()} --help' for the options.\n`;
      return { kind: 'exit', code: EX_USAGE, output: (err || `${e.message}\n`) + hint, stream: 'stderr' };
    }
    throw e;
  }
  return { kind: 'run', options: program.opts() as T };
}
