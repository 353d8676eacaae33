/**
 * The common body of the three daemon programs: parse the command line, set the process identity,
 * create the logger, build the protocol, run the device loop until SIGTERM/SIGINT, and exit with a
 * code a person (and systemd) can act on.
 */
import type { Command } from 'commander';
import { CharDeviceBinding } from './char-device.js';
import { EX_SOFTWARE, parseCli, type CommonOptions } from './cli.js';
import type { DeviceBinding } from './device.js';
import { DeviceLoop, type DeviceProtocol, type LoopState } from './device-loop.js';
import { createLogger, type Logger, type LogLevel } from './log.js';
import { setProcessIdentity, stopSignal } from './process.js';

export interface DaemonSpec<O extends CommonOptions> {
  /** The program's command (from daemonCommand plus its own options). */
  program: Command;
  /** The name `ps` and `pgrep` show, e.g. `hv_kvp_daemon`. */
  processName: string;
  /** The log's `name` field, e.g. `hv-kvp-ts`. */
  logName: string;
  /** The log level the options ask for (e.g. debug when -d was given). */
  logLevel?(options: O): LogLevel;
  /**
   * Build the protocol; may fail with an error carrying `exitCode` (e.g. EX_CANTCREAT when the pool
   * directory cannot be created). Returns the protocol and an optional cleanup run after the loop.
   */
  setup(
    options: O,
    logger: Logger,
  ): Promise<{ protocol: DeviceProtocol; cleanup?: () => Promise<void> | void }>;
  /** Observe the loop's state (status, readiness). */
  onState?(state: LoopState, detail: string | undefined, logger: Logger): void;
  /** For tests: another binding than the real character device. */
  binding?: DeviceBinding;
}

/** Run a daemon program; resolves with the process exit code. */
export async function runDaemon<O extends CommonOptions>(
  spec: DaemonSpec<O>,
  argv: readonly string[],
): Promise<number> {
  const cli = parseCli<O>(spec.program, argv);
  if (cli.kind === 'exit') {
    (cli.stream === 'stdout' ? process.stdout : process.stderr).write(cli.output);
    return cli.code;
  }
  const options = cli.options;
  setProcessIdentity(spec.processName);
  const logger = createLogger({ name: spec.logName, level: spec.logLevel?.(options) ?? options.logLevel });
  const stop = stopSignal(logger);
  logger.info({ device: options.device, node: process.version }, `${spec.logName} starting`);
  let setup: Awaited<ReturnType<DaemonSpec<O>['setup']>> | undefined;
  try {
    // A stop request during start-up is honoured too (setup may wait on a lock, a slow disk, …).
    const stopped = new Promise<undefined>((r) =>
      stop.addEventListener('abort', () => r(undefined), { once: true }),
    );
    setup = await Promise.race([spec.setup(options, logger), stopped]);
    if (!setup) {
      logger.info({}, `${spec.logName} stopped during start-up`);
      return 0;
    }
  } catch (e) {
    const code = (e as { exitCode?: number }).exitCode ?? EX_SOFTWARE;
    logger.fatal({ err: String(e) }, `cannot start: ${e instanceof Error ? e.message : e}`);
    return code;
  }
  const loop = new DeviceLoop({
    binding: spec.binding ?? new CharDeviceBinding(),
    protocol: setup.protocol,
    logger,
    onState: (state, detail) => spec.onState?.(state, detail, logger),
  });
  await loop.run(stop);
  await setup.cleanup?.();
  logger.info({ served: loop.served, registrations: loop.registrations }, `${spec.logName} stopped`);
  return 0;
}

/** Start a daemon program from its module: run, then exit with its code. */
export function main(run: (argv: readonly string[]) => Promise<number>): void {
  run(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(EX_SOFTWARE);
    },
  );
}
