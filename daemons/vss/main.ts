/**
 * hv-vss-ts: the VSS daemon program. A drop-in for hv_vss_daemon (same flags -n and -h, same
 * device, process name `hv_vss_daemon`), with application hooks, a frozen marker in /run, a
 * freeze watchdog, and thaw-on-stop; see daemons/vss/README.md.
 *
 * It does not use common/run-daemon.ts because its log lines must go through a gate that holds
 * them while filesystems are frozen (log-gate.ts), starting held: until the marker has been read,
 * the machine may be frozen by an instance that was killed.
 */
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { CharDeviceBinding } from '../common/char-device.js';
import { EX_SOFTWARE, daemonCommand, parseCli, type CommonOptions } from '../common/cli.js';
import type { DeviceBinding } from '../common/device.js';
import { DeviceLoop } from '../common/device-loop.js';
import type { Logger } from '../common/log.js';
import { setProcessIdentity, stopSignal } from '../common/process.js';
import { main } from '../common/run-daemon.js';
import { VERSION } from '../common/version.js';
import { SysfsBlockDevices } from './block-devices.js';
import { IoctlFreezer } from './freezer.js';
import { DirectoryHooks } from './hooks.js';
import { createGatedLogger, type LogGate } from './log-gate.js';
import { DEFAULT_MARKER_PATH, FileMarker, currentBootId } from './marker.js';
import { readMountTable } from './mount-table.js';
import { DEFAULT_HOOK_TIMEOUT_MS, DEFAULT_WATCHDOG_MS, VSS_DEVICE, VssService } from './service.js';

export const HOOKS_DIR = '/etc/hyperv-daemons-ts/vss-hooks.d';
/** The kernel fails a FREEZE the daemon has not answered within 15 minutes. */
const KERNEL_FREEZE_TIMEOUT_MS = 15 * 60_000;

export interface VssOptions extends CommonOptions {
  hooksDir: string;
  hookTimeout: number;
  freezeWatchdog: number;
  marker: string;
  recover?: boolean;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 };

/** `90`, `90s`, `1.5m`, `500ms`, `1h` → milliseconds (a bare number is seconds). */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$/.exec(text);
  if (!m) throw new InvalidArgumentError(`'${text}' is not a duration (e.g. 30s, 10m, 500ms)`);
  return Math.round(Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000));
}

function durationIn(min: number, max: number) {
  return (text: string): number => {
    const ms = parseDuration(text);
    if (ms < min || ms > max)
      throw new InvalidArgumentError(`must be between ${min / 1000} s and ${max / 1000} s`);
    return ms;
  };
}

export function vssProgram() {
  return daemonCommand({
    name: 'hv-vss-ts',
    description:
      "Hyper-V VSS daemon: freezes the guest's filesystems for host-side backups (FREEZE/THAW on " +
      '/dev/vmbus/hv_vss), runs application hooks around the freeze, and never leaves a filesystem frozen.',
    version: VERSION,
    device: VSS_DEVICE,
  })
    .option(
      '--hooks-dir <dir>',
      'run the executables in this directory with freeze / thaw / freezefail',
      HOOKS_DIR,
    )
    .addOption(
      new Option('--hook-timeout <duration>', 'time limit of each hook (then SIGTERM, and SIGKILL 2 s later)')
        .argParser(durationIn(100, KERNEL_FREEZE_TIMEOUT_MS))
        .default(DEFAULT_HOOK_TIMEOUT_MS, `${DEFAULT_HOOK_TIMEOUT_MS / 1000}s`),
    )
    .addOption(
      new Option('--freeze-watchdog <duration>', 'thaw by itself when no THAW comes this long after a FREEZE')
        .argParser(durationIn(1000, 60 * 60_000))
        .default(DEFAULT_WATCHDOG_MS, `${DEFAULT_WATCHDOG_MS / 60_000}m`),
    )
    .option('--marker <file>', 'the frozen marker (what is frozen, for thaw-at-start)', DEFAULT_MARKER_PATH)
    .option(
      '--recover',
      'thaw what a previous instance left frozen (per the marker), run its thaw hooks, and exit',
    )
    .addHelpText(
      'after',
      `
Durations: 500ms, 30s, 10m, 1h (a bare number is seconds).
The hooks directory holds executables such as 50-database; files ending in .sample or .disabled,
hidden files, and files writable by group or others are ignored. See daemons/vss/README.md.`,
    );
}

/** The service with the real effects. */
export function createVssService(
  o: VssOptions,
  logger: Logger,
  gate: LogGate,
  stopping: () => boolean,
): VssService {
  return new VssService(
    {
      freezer: new IoctlFreezer(),
      mountTable: readMountTable,
      blockDevices: new SysfsBlockDevices(),
      hooks: new DirectoryHooks(o.hooksDir),
      marker: new FileMarker(o.marker),
      logger,
      logHold: gate,
      bootId: currentBootId(),
      hookTimeoutMs: o.hookTimeout,
      watchdogMs: o.freezeWatchdog,
      stopping,
    },
    o.device,
  );
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** Warn when the marker is not on a tmpfs (it would survive a reboot; harmless, but unusual). */
function checkMarkerFilesystem(path: string, logger: Logger): void {
  let dir = dirname(path);
  for (;;) {
    try {
      const st = statfsSync(dir);
      if (st.type !== TMPFS_MAGIC && st.type !== RAMFS_MAGIC) {
        logger.warn(
          { marker: path, dir, fsType: `0x${st.type.toString(16)}` },
          'the frozen marker is not on a tmpfs: it is written only before a freeze and after a thaw, and a marker from an earlier boot is ignored',
        );
      }
      return;
    } catch {
      if (dir === '/') return;
      dir = dirname(dir);
    }
  }
}

export async function runVss(argv: readonly string[], binding?: DeviceBinding): Promise<number> {
  const cli = parseCli<VssOptions>(vssProgram(), argv);
  if (cli.kind === 'exit') {
    (cli.stream === 'stdout' ? process.stdout : process.stderr).write(cli.output);
    return cli.code;
  }
  const o = cli.options;
  setProcessIdentity('hv_vss_daemon');
  // Held until the marker says nothing is frozen (a killed instance may have left the machine frozen).
  const { logger, gate } = createGatedLogger({ name: 'hv-vss-ts', level: o.logLevel, held: true });
  const stop = stopSignal(logger);
  const onHup = () => process.emit('SIGTERM', 'SIGTERM');
  process.on('SIGHUP', onHup);
  logger.info(
    {
      device: o.device,
      node: process.version,
      hooksDir: o.hooksDir,
      watchdogMs: o.freezeWatchdog,
      marker: o.marker,
    },
    `VSS starting; pid is:${process.pid}`,
  );
  let service: VssService;
  try {
    service = createVssService(o, logger, gate, () => stop.aborted);
  } catch (e) {
    gate.release();
    logger.fatal({ err: String(e) }, `cannot start: ${e instanceof Error ? e.message : e}`);
    return EX_SOFTWARE;
  }
  // Last resorts: whatever ends the process thaws first (synchronous ioctls only).
  // (emergencyThaw releases the held log lines only once nothing is frozen any more.)
  const onExit = () => {
    service.emergencyThaw();
  };
  const onFatal = (e: unknown) => {
    const thawed = service.emergencyThaw();
    logger.fatal({ err: e instanceof Error ? (e.stack ?? e.message) : String(e), thawed }, 'fatal error');
    process.exit(EX_SOFTWARE);
  };
  process.on('exit', onExit);
  process.on('uncaughtException', onFatal);
  try {
    await service.recover();
    // Still held only if a thaw at start failed (then the service retries, and lets go in time).
    if (service.frozenMountPoints.length === 0) gate.release();
    if (o.recover) {
      logger.info({ marker: o.marker }, 'recovery done');
      return 0;
    }
    checkMarkerFilesystem(o.marker, logger);
    if (o.freezeWatchdog >= KERNEL_FREEZE_TIMEOUT_MS) {
      logger.warn(
        { watchdogMs: o.freezeWatchdog },
        'the freeze watchdog is not shorter than the 15 minutes the host gets; filesystems may stay frozen that long',
      );
    }
    const loop = new DeviceLoop({ binding: binding ?? new CharDeviceBinding(), protocol: service, logger });
    await loop.run(stop);
    service.dispose();
    logger.info({ served: loop.served, registrations: loop.registrations }, 'hv-vss-ts stopped');
    return 0;
  } finally {
    process.off('exit', onExit);
    process.off('uncaughtException', onFatal);
    process.off('SIGHUP', onHup);
    service.emergencyThaw();
    if (service.frozenMountPoints.length === 0) gate.release();
  }
}

if (process.argv[1] && /vss[/\\]main\.[cm]?[jt]s$|hv-vss-ts(\.m?js)?$/.test(process.argv[1])) main(runVss);
