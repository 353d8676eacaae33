/**
 * hv-supervisor: start one Hyper-V daemon (ours or any command, the upstream C daemons included),
 * restart it with back-off, clean up what a dead daemon leaves (thaw, temporary files), kill it when
 * hung, tell systemd (Type=notify) and answer `hv-supervisor status`. See supervisor/README.md.
 *
 *   hv-supervisor [options] -- COMMAND [ARG...]
 *   hv-supervisor status [--socket PATH]... [--json]
 */
import { afterDeathHelper } from './after-death-child.js';
import { spawn } from 'node:child_process';
import {
  existsSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { createInterface } from 'node:readline';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EX_OK, EX_SOFTWARE, EX_USAGE, parseCli } from '../daemons/common/cli.js';
import { LOG_LEVELS, type LogLevel, createLogger } from '../daemons/common/log.js';
import { VERSION } from '../daemons/common/version.js';
import {
  type CleanupConfig,
  DEFAULT_FCOPY_STATE,
  DEFAULT_VSS_MARKER,
  AFTER_DEATH_ARG,
  afterDeathActions,
  runAfterDeath,
} from './cleanup.js';
import { createNotifier } from './notify.js';
import {
  findStatusSockets,
  formatStatusTable,
  queryStatus,
  startStatusServer,
  statusSocketPath,
} from './status.js';
import {
  type DaemonKind,
  type Probes,
  type Readiness,
  type Snapshot,
  type SpawnFn,
  Supervisor,
  realClock,
} from './supervisor.js';

interface RunOptions {
  kind: DaemonKind;
  device?: string;
  readiness: Readiness;
  marker: string;
  fcopyState: string;
  fcopyJournal?: string;
  statusSocket: string | false | undefined;
  backoffInitial: number;
  backoffMax: number;
  stableAfter: number;
  crashLoopCount: number;
  crashLoopWindow: number;
  crashLoopDelay: number;
  stopTimeout: number;
  livenessTimeout: number;
  cleanupTimeout: number;
  logLevel: LogLevel;
}

function ms(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('not a whole number');
  return n;
}

function positive(value: string): number {
  const n = ms(value);
  if (n < 1) throw new InvalidArgumentError('must be at least 1');
  return n;
}

export function supervisorProgram(): Command {
  return new Command('hv-supervisor')
    .description(
      'Start a Hyper-V guest daemon and keep it running: restart it with back-off, thaw what a dead VSS ' +
        'daemon left frozen and remove what a dead FCOPY daemon left half-written, kill it when hung, ' +
        'and report to systemd (Type=notify) and to `hv-supervisor status`.',
    )
    .usage('[options] -- COMMAND [ARG...]\n       hv-supervisor status [--socket PATH]... [--json]')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'print this help and exit')
    .argument('<command...>', 'the daemon to run, with its arguments (after --)')
    .addOption(
      new Option('--kind <kind>', 'the daemon kind (chooses the after-death cleanup)')
        .choices(['kvp', 'vss', 'fcopy', 'other'])
        .default('other'),
    )
    .option('--device <path>', 'the device node to wait for before starting (e.g. /dev/vmbus/hv_kvp)')
    .addOption(
      new Option(
        '--readiness <how>',
        'when the daemon counts as ready: its "registered with the kernel" log line, the device held open, either, or at once',
      )
        .choices(['auto', 'log', 'device', 'spawn'])
        .default('auto'),
    )
    .option('--marker <path>', "the VSS daemon's frozen marker", DEFAULT_VSS_MARKER)
    .option('--fcopy-state <path>', "the FCOPY daemon's current-temporary state file", DEFAULT_FCOPY_STATE)
    .option('--fcopy-journal <dir>', "the FCOPY daemon's journal of temporary files (entries <id>.json)")
    .option(
      '--status-socket <path>',
      'the status socket (default /run/hyperv-daemons-ts/supervisor-KIND.sock)',
    )
    .option('--no-status-socket', 'do not open a status socket')
    .option('--backoff-initial <ms>', 'the first restart delay; it doubles on each failure', positive, 100)
    .option('--backoff-max <ms>', 'the largest restart delay', positive, 5000)
    .option('--stable-after <ms>', 'a run this long resets the back-off and ends a crash loop', ms, 10_000)
    .option('--crash-loop-count <n>', 'this many unexpected exits …', positive, 5)
    .option('--crash-loop-window <ms>', '… within this window is a crash loop', positive, 60_000)
    .option('--crash-loop-delay <ms>', 'the restart delay during a crash loop', positive, 30_000)
    .option('--stop-timeout <ms>', 'after SIGTERM to the daemon, SIGKILL after this long', positive, 3000)
    .option(
      '--liveness-timeout <ms>',
      'kill and restart a daemon stopped (SIGSTOP) or stuck this long; 0 disables',
      ms,
      5000,
    )
    .option('--cleanup-timeout <ms>', 'the deadline of the after-death helper (thaw, unlink)', positive, 1000)
    .addOption(
      new Option('--log-level <level>', 'the lowest level logged (JSON lines on stdout)')
        .choices(LOG_LEVELS as unknown as string[])
        .default('info'),
    )
    .configureOutput({ writeOut: () => {}, writeErr: () => {} });
}

function statusProgram(): Command {
  return new Command('hv-supervisor status')
    .description('Show each supervised daemon: state, pid, uptime, restarts, last exit, last host request.')
    .helpOption('-h, --help', 'print this help and exit')
    .option(
      '--socket <path>',
      'a status socket to read (repeatable; default: every supervisor-*.sock in /run/hyperv-daemons-ts)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--json', 'print JSON instead of a table')
    .allowExcessArguments(false)
    .configureOutput({ writeOut: () => {}, writeErr: () => {} });
}

// ---------------------------------------------------------------------------------------------
// The real effects

export const realProbes: Probes = {
  deviceExists: (path) => existsSync(path),
  processState(pid) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || undefined;
    } catch {
      return undefined;
    }
  },
  holdsDevice(pid, path) {
    let target = path;
    try {
      target = realpathSync(path);
    } catch {
      /* compare with the name as given */
    }
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
          if (link === target || link === path) return true;
        } catch {
          /* closed meanwhile */
        }
      }
    } catch {
      /* gone */
    }
    return false;
  },
};

/** Spawn with stdout read line by line (each line passed through to ours unchanged). */
export const realSpawn: SpawnFn = (argv, events) => {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  let exited = false;
  createInterface({ input: child.stdout, crlfDelay: Infinity }).on('line', (line) => {
    writeSync(1, `${line}\n`);
    events.line(line);
  });
  child.on('error', (e) => {
    if (exited) return;
    exited = true;
    process.stderr.write(`hv-supervisor: cannot run ${argv[0]}: ${e.message}\n`);
    setImmediate(() => events.exit(127, null));
  });
  child.on('exit', (code, signal) => {
    if (exited) return;
    exited = true;
    events.exit(code, signal);
  });
  return {
    pid: child.pid ?? 0,
    kill: (sig) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    },
  };
};

/** The STATUS= line systemd shows. */
export function summary(s: Snapshot): string {
  const name = s.kind === 'other' ? (s.command[0] ?? 'daemon') : s.kind;
  const restarts = s.restarts ? `, ${s.restarts} restart${s.restarts === 1 ? '' : 's'}` : '';
  switch (s.state) {
    case 'waiting-device':
      return `${name}: waiting for ${s.device} (channel absent)${restarts}`;
    case 'running':
      return `${name}: ${s.ready ? 'running' : 'starting'} (pid ${s.pid})${s.healthy ? '' : ', not responding'}${restarts}`;
    case 'cleanup':
      return `${name}: exited (${s.lastExit?.reason}); cleaning up`;
    case 'backoff':
      return `${name}: ${s.crashLoop ? 'crash loop; ' : ''}restarting in ${Math.max(0, (s.nextRestartAt ?? s.now) - s.now)} ms after: ${s.lastExit?.reason}${restarts}`;
    case 'stopping':
      return `${name}: stopping`;
    case 'stopped':
      return `${name}: stopped`;
  }
}

async function runSupervisor(o: RunOptions, command: string[]): Promise<number> {
  const logger = createLogger({ name: 'hv-supervisor', level: o.logLevel });
  const log = logger.child({ kind: o.kind });
  process.title = `hv-supervisor ${o.kind}`;
  const cfg: CleanupConfig = {
    vssMarker: o.marker,
    fcopyState: o.fcopyState,
    fcopyJournal: o.fcopyJournal,
    deadlineMs: o.cleanupTimeout,
  };
  const actions = afterDeathActions(o.kind, cfg);
  const notifier = createNotifier();
  const sup = new Supervisor(
    {
      kind: o.kind,
      command,
      device: o.device,
      readiness: o.readiness,
      initialMs: o.backoffInitial,
      maxMs: o.backoffMax,
      stableMs: o.stableAfter,
      crashLoopCount: o.crashLoopCount,
      crashLoopWindowMs: o.crashLoopWindow,
      crashLoopDelayMs: o.crashLoopDelay,
      stopTimeoutMs: o.stopTimeout,
      livenessTimeoutMs: o.livenessTimeout,
    },
    realSpawn,
    realClock,
    realProbes,
    {
      afterDeath: (pid) => runAfterDeath(actions, { pid, logger: log }),
      inLongOperation: (pid) => actions.some((a) => a.busy?.(pid) ?? false),
      changed: (snap, event) => {
        if (!notifier.enabled) return;
        const fields: Record<string, string> = {};
        if (event === 'ready') fields.READY = '1';
        if (event === 'stopping') fields.STOPPING = '1';
        fields.STATUS = summary(snap);
        notifier.send(fields);
      },
    },
    log,
  );
  const socketPath = o.statusSocket === false ? undefined : (o.statusSocket ?? statusSocketPath(o.kind));
  let server: Awaited<ReturnType<typeof startStatusServer>> | undefined;
  if (socketPath) {
    try {
      server = await startStatusServer(socketPath, () => sup.snapshot(), log);
    } catch (e) {
      log.error({ socket: socketPath, err: String(e) }, `no status socket: ${(e as Error).message}`);
    }
  }
  const onSignal = (sig: NodeJS.Signals) => sup.stop(`received ${sig}`);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let watchdog: NodeJS.Timeout | undefined;
  if (notifier.watchdogMs !== undefined) {
    watchdog = setInterval(() => {
      if (sup.snapshot().healthy) notifier.send({ WATCHDOG: '1' });
    }, notifier.watchdogMs);
  }
  const code = await sup.run();
  if (watchdog) clearInterval(watchdog);
  if (server) {
    server.close();
    if (socketPath) rmSync(socketPath, { force: true });
  }
  log.info({ code }, `hv-supervisor exits with status ${code}`);
  return code;
}

async function runStatus(argv: readonly string[]): Promise<number> {
  const outcome = parseCli<{ socket?: string[]; json?: boolean }>(statusProgram(), argv);
  if (outcome.kind === 'exit') {
    (outcome.stream === 'stdout' ? process.stdout : process.stderr).write(outcome.output);
    return outcome.code;
  }
  const sockets = outcome.options.socket ?? findStatusSockets();
  if (sockets.length === 0) {
    process.stderr.write(
      'hv-supervisor status: no supervisor is running (no sockets in /run/hyperv-daemons-ts)\n',
    );
    return 3;
  }
  const rows = await Promise.all(
    sockets.map((s) => queryStatus(s).catch((e: Error) => ({ socket: s, error: e.message }))),
  );
  if (outcome.options.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else process.stdout.write(formatStatusTable(rows));
  return rows.some((r) => 'error' in r) ? 1 : EX_OK;
}

export async function runMain(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'status') return runStatus(argv.slice(1));
  const program = supervisorProgram();
  const outcome = parseCli<RunOptions>(program, argv);
  if (outcome.kind === 'exit') {
    (outcome.stream === 'stdout' ? process.stdout : process.stderr).write(outcome.output);
    return outcome.code;
  }
  const command = program.args;
  if (command.length === 0) {
    process.stderr.write('hv-supervisor: no daemon command given (after --)\n');
    return EX_USAGE;
  }
  return runSupervisor(outcome.options, command);
}

if (process.argv[1] && /supervisor[/\\]main\.[cm]?[jt]s$|hv-supervisor(\.m?js)?$/.test(process.argv[1])) {
  if (process.argv[2] === AFTER_DEATH_ARG) {
    afterDeathHelper(process.argv[3], process.argv.slice(4));
    process.exit(0);
  }
  runMain(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`fatal: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(EX_SOFTWARE);
    },
  );
}
