/**
 * hv-fcopy-ts: the host-to-guest file copy daemon (Copy-VMFile), a drop-in for hv_fcopy_daemon.
 *
 *   hv-fcopy-ts [-n] [--device PATH] [--config FILE] [--state-dir DIR] [--log-level LEVEL]
 *
 * Shows as `hv_fcopy_daemon` in ps/pgrep. Exit codes: 0 after SIGTERM/SIGINT, 64 for a bad command
 * line, 78 for a bad configuration file, 71 when /proc is not mounted (the safe directory walk
 * needs it), 70 for anything unexpected.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CommonOptions, EX_CONFIG, daemonCommand } from '../common/cli.js';
import type { DeviceBinding } from '../common/device.js';
import { main, runDaemon } from '../common/run-daemon.js';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, normaliseAbsolute } from './config.js';
import { procFdUsable } from './paths.js';
import { FCOPY_DEVICE, FcopyService } from './service.js';
import { FileJournal, NO_JOURNAL } from './stale.js';

export const EX_OSERR = 71;

export interface FcopyOptions extends CommonOptions {
  config?: string;
  stateDir?: string;
}

/** The package version (package.json is two levels up in the sources, three in dist/). */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'hyperv-daemons-ts' && pkg.version) return pkg.version;
    }
    dir = dirname(dir);
  }
  return '0.0.0';
}

export function fcopyProgram() {
  return daemonCommand({
    name: 'hv-fcopy-ts',
    description:
      'Hyper-V guest file copy daemon (Copy-VMFile): writes each copy to a temporary file and renames ' +
      'it into place only when complete; refuses unsafe paths. A drop-in for hv_fcopy_daemon.',
    version: packageVersion(),
    device: FCOPY_DEVICE,
  })
    .option(
      '--config <file>',
      `configuration file (allow-list, modes, symbolic links, state directory); default ${DEFAULT_CONFIG_PATH}, if present`,
    )
    .option('--state-dir <dir>', 'directory of the journal of temporary files (overrides the configuration)');
}

export function run(argv: readonly string[], binding?: DeviceBinding): Promise<number> {
  return runDaemon<FcopyOptions>(
    {
      program: fcopyProgram(),
      processName: 'hv_fcopy_daemon',
      logName: 'hv-fcopy-ts',
      ...(binding ? { binding } : {}),
      async setup(options, logger) {
        let config;
        try {
          config = await loadConfig(options.config ?? DEFAULT_CONFIG_PATH, options.config !== undefined);
          if (options.stateDir !== undefined) {
            const stateDir = normaliseAbsolute(options.stateDir);
            if (stateDir === undefined)
              throw new ConfigError(`--state-dir ${options.stateDir}: an absolute path expected`);
            config = { ...config, stateDir };
          }
        } catch (e) {
          if (e instanceof ConfigError) throw Object.assign(e, { exitCode: EX_CONFIG });
          throw e;
        }
        if (!(await procFdUsable())) {
          throw Object.assign(
            new Error('/proc is not mounted: the daemon reaches target directories through /proc/self/fd'),
            { exitCode: EX_OSERR },
          );
        }
        logger.info(
          {
            allow: config.allow.length > 0 ? config.allow : 'any',
            fileMode: config.fileMode.toString(8).padStart(4, '0'),
            dirMode: config.dirMode.toString(8).padStart(4, '0'),
            followSymlinkedDirs: config.followSymlinkedDirs,
            stateDir: config.stateDir,
            syncEveryBytes: config.syncEveryBytes,
          },
          'configuration',
        );
        const journal = await FileJournal.open(config.stateDir, logger);
        if (journal) {
          const swept = await journal.sweep();
          if (swept.removed.length > 0 || swept.kept.length > 0) {
            logger.info(
              { removed: swept.removed, kept: swept.kept },
              `removed ${swept.removed.length} temporary file(s) of unfinished copies`,
            );
          }
        }
        const protocol = new FcopyService({ config, journal: journal ?? NO_JOURNAL, logger });
        return { protocol, cleanup: () => journal?.close() };
      },
    },
    argv,
  );
}

// Run when executed directly (node --import tsx daemons/fcopy/main.ts, or dist/…/main.js).
if (process.argv[1] && /daemons[/\\]fcopy[/\\]main\.[cm]?[jt]s$/.test(process.argv[1])) {
  main((argv) => run(argv));
}
