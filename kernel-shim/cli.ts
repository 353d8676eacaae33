/**
 * kernel-shim run [--services kvp,vss,fcopy] [--state DIR] [--scripts DIR] [--scenario FILE]
 *                 [--record FILE] [--console] -- COMMAND [ARGS...]
 *
 * Runs COMMAND in a private mount namespace where /dev/vmbus/hv_kvp, hv_vss and hv_fcopy are the
 * kernel-shim's device files, and /var/lib/hyperv and /usr/libexec/hypervkvpd are temporary (or
 * the given) directories. The simulated host is driven by a scenario file, or by hand from an
 * interactive console. Nothing outside the namespace changes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, CommanderError } from 'commander';
import { type DeviceFiles, mountDeviceFiles } from './device-files.js';
import { SERVICE_NAMES, type ServiceName } from './device.js';
import { buildFreezeSandbox, type FreezeSandbox, freezeSandboxEnv, type FsType } from './freeze-sandbox.js';
import { buildSandbox, inPrivateMountNamespace, mountNamespaceId, VMBUS_DEV_DIR } from './sandbox.js';
import { KernelShim } from './shim.js';

/** Set by the outer process to its own mount namespace id when it re-executes under unshare. */
const PARENT_NS_ENV = 'HV_KERNEL_SHIM_PARENT_NS';
/** How much longer than --stop-timeout the whole sandbox gets to stop before it is killed. */
const STOP_GRACE_MS = 10_000;

interface RunOptions {
  services: ServiceName[];
  state?: string;
  scripts?: string;
  scenario?: string;
  record?: string;
  console?: boolean;
  stopTimeout: number;
  freezeSandbox?: FsType[];
  hostDir: string[];
  restart?: boolean;
}

function parseFilesystems(value: string): FsType[] {
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of list)
    if (s !== 'ext4' && s !== 'xfs') throw new Error(`unknown file system '${s}' (ext4, xfs)`);
  return list as FsType[];
}

function parseServices(value: string): ServiceName[] {
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of list) {
    if (!SERVICE_NAMES.includes(s as ServiceName))
      throw new Error(`unknown service '${s}' (kvp, vss, fcopy)`);
  }
  return list as ServiceName[];
}

function say(msg: string): void {
  process.stderr.write(`kernel-shim: ${msg}\n`);
}

/**
 * Re-run this very command inside `unshare --mount --propagation private --pid --fork`: the shim
 * becomes PID 1 of a PID namespace, so when it dies, for whatever reason, the kernel kills every
 * process of the sandbox, and the mount namespace goes with the last of them.
 *
 * unshare --fork does not pass SIGTERM/SIGINT on to the process it forked, so the namespace runs
 * in a process group of its own and signals go to the whole group. `setpriv --pdeathsig KILL`
 * makes a SIGKILL of this process take the namespace down too (unshare --kill-child then kills
 * the rest), so the sandbox never outlives the shim.
 */
function reexecInNamespace(argv: string[], killAfterMs: number): Promise<number> {
  const child = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      '--',
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--pid',
      '--mount-proc',
      '--fork',
      '--kill-child',
      '--',
      process.execPath,
      ...process.execArgv,
      process.argv[1] ?? '',
      ...argv,
    ],
    { stdio: 'inherit', detached: true, env: { ...process.env, [PARENT_NS_ENV]: mountNamespaceId() } },
  );
  const signalGroup = (sig: NodeJS.Signals): void => {
    if (child.pid) signalPid(-child.pid, sig);
  };
  // The shim inside is PID 1 of its namespace, and the kernel drops a signal sent to such a
  // process before it has installed a handler (pid_namespaces(7)): a stop requested while it is
  // still starting would be lost. So the signal is repeated to the shim alone (its handler is
  // idempotent) until it exits, and a stop has a deadline after which the group is killed
  // (unshare --kill-child and the pdeathsig take every process of the sandbox with it).
  let repeat: NodeJS.Timeout | undefined;
  let deadline: NodeJS.Timeout | undefined;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      signalGroup(sig);
      repeat ??= setInterval(() => {
        for (const pid of childrenOf(child.pid)) signalPid(pid, sig);
      }, 250);
      deadline ??= setTimeout(() => {
        say(`the sandbox did not stop within ${killAfterMs} ms of ${sig}: killing it`);
        signalGroup('SIGKILL');
      }, killAfterMs);
    });
  }
  return new Promise((done) =>
    child.on('exit', (code, sig) => {
      clearInterval(repeat);
      clearTimeout(deadline);
      done(code ?? 128 + (sig === 'SIGKILL' ? 9 : sig === 'SIGINT' ? 2 : 15));
    }),
  );
}

/** The children of a process (here: the process unshare --fork started, the shim). */
function childrenOf(pid: number | undefined): number[] {
  if (!pid) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      done();
    });
    child.kill('SIGTERM');
  });
}

/**
 * Wrap a command in a restart loop, as a service manager would restart a daemon that exits (the
 * upstream daemons exit when their device disappears, relying on systemd to start them again).
 */
function withRestart(command: string[]): string[] {
  return [
    '/bin/sh',
    '-c',
    'trap "exit 0" TERM INT; while :; do "$@" & wait $!; sleep 0.2; done',
    'kernel-shim-restart',
    ...command,
  ];
}

async function runInNamespace(opts: RunOptions, command: string[]): Promise<number> {
  // First of all: this process is PID 1 of its namespace, and a signal that finds no handler is
  // dropped, so a stop requested while the sandbox is being built must be caught now.
  const stop = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stop.abort());
  const aborted = new Promise<void>((r) => stop.signal.addEventListener('abort', () => r(), { once: true }));
  const parentNamespace = process.env[PARENT_NS_ENV] ?? '';
  let freeze: FreezeSandbox | undefined;
  let devDir = VMBUS_DEV_DIR;
  let env: NodeJS.ProcessEnv = process.env;
  let sandbox: { stateDir: string; cleanup(): void };
  if (opts.freezeSandbox) {
    freeze = buildFreezeSandbox({
      parentNamespace,
      filesystems: opts.freezeSandbox.map((type) => ({ type })),
      hostDirs: ['/usr', '/etc', ...opts.hostDir.map((d) => resolve(d))],
    });
    devDir = `${freeze.root}${VMBUS_DEV_DIR}`;
    env = { ...process.env, ...freezeSandboxEnv(freeze) };
    const built = freeze;
    sandbox = { stateDir: `${built.root}/var/lib/hyperv`, cleanup: () => built.cleanup() };
    say(`freeze sandbox: ${freeze.mounts.map((m) => `${m.mountPoint} (${m.type}, ${m.device})`).join(', ')}`);
  } else {
    sandbox = buildSandbox({
      parentNamespace,
      ...(opts.state ? { stateDir: resolve(opts.state) } : {}),
      ...(opts.scripts ? { scriptsDir: resolve(opts.scripts) } : {}),
    });
  }
  if (opts.restart) command = withRestart(command);
  if (freeze) command = freeze.wrap(command);
  const shim = new KernelShim({ services: opts.services });
  let files: DeviceFiles | undefined;
  let child: ChildProcess | undefined;
  let code = 0;
  try {
    files = await mountDeviceFiles(shim, devDir);
    say(
      `devices ${opts.services.map((s) => `${VMBUS_DEV_DIR}/hv_${s}`).join(', ')}; state ${sandbox.stateDir}`,
    );
    if (stop.signal.aborted) {
      say('stopped before COMMAND was started');
      return 130;
    }
    // The command dies with the shim, whatever kills it: an orphan would keep the namespace alive.
    child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...command], {
      stdio: opts.console ? ['ignore', 'inherit', 'inherit'] : 'inherit',
      env,
    });
    const exited = new Promise<number>((done) =>
      child?.on('exit', (c, sig) => done(c ?? 128 + (sig === 'SIGKILL' ? 9 : sig === 'SIGINT' ? 2 : 15))),
    );

    if (opts.scenario) {
      const scenario = await import('./scenario/index.js');
      const text = readFileSync(opts.scenario, 'utf8');
      const steps = scenario.parseScenario(text);
      const faults = {
        rescind: (s: ServiceName) => files!.rescind(s),
        reoffer: (s: ServiceName) => files!.reoffer(s),
        suspend: () => shim.suspend(),
        resume: () => shim.resume(),
      };
      // What the host cannot see: after each VSS step, which sandbox file systems are frozen.
      const guest: { index: number; frozen: string[] }[] = [];
      const onStep = (entry: { index: number; op: string }) => {
        // Only after VSS steps: the daemon is idle once it has replied (after a fault it may still be
        // thawing, and the FIFREEZE probe would race with it).
        if (freeze && entry.op.startsWith('vss')) {
          const f = freeze;
          guest.push({
            index: entry.index,
            frozen: f.mounts.filter((m) => f.isFrozen(m)).map((m) => m.mountPoint),
          });
        }
      };
      const recording = await Promise.race([
        scenario.runScenario(steps, { shim, faults, baseDir: dirname(resolve(opts.scenario)), onStep }),
        exited.then((c) => {
          throw new Error(`the command exited (${c}) before the scenario ended`);
        }),
        aborted.then(() => {
          throw new Error('stopped by a signal before the scenario ended');
        }),
      ]);
      if (opts.record) {
        writeFileSync(
          opts.record,
          `${JSON.stringify(freeze ? { ...recording, guest } : recording, null, 2)}\n`,
        );
      }
      const failed = recording.steps.filter((s: { ok: boolean }) => !s.ok);
      say(`scenario: ${recording.steps.length - failed.length} passed, ${failed.length} failed`);
      code = failed.length === 0 ? 0 : 1;
      await stopChild(child, opts.stopTimeout);
    } else if (opts.console) {
      const scenario = await import('./scenario/index.js');
      const faults = {
        rescind: (s: ServiceName) => files!.rescind(s),
        reoffer: (s: ServiceName) => files!.reoffer(s),
        suspend: () => shim.suspend(),
        resume: () => shim.resume(),
      };
      await Promise.race([
        scenario.runConsole({ shim, faults, input: process.stdin, output: process.stdout }),
        exited,
        aborted,
      ]);
      await stopChild(child, opts.stopTimeout);
    } else {
      code = await Promise.race([
        exited,
        aborted.then(() => stopChild(child!, opts.stopTimeout).then(() => 130)),
      ]);
    }
  } catch (e) {
    say(String(e instanceof Error ? e.message : e));
    code = 1;
    if (child) await stopChild(child, opts.stopTimeout);
  } finally {
    await files?.unmount().catch(() => {});
    sandbox.cleanup();
  }
  return code;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('kernel-shim')
    .description('A test double of the Hyper-V guest kernel drivers (KVP, VSS, FCOPY) and of the host')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let result: Promise<number> = Promise.resolve(0);
  program
    .command('run')
    .description('run COMMAND with /dev/vmbus/hv_* served by the shim, in a private mount namespace')
    .option('--services <list>', 'devices to offer: kvp,vss,fcopy', parseServices, [...SERVICE_NAMES])
    .option('--state <dir>', 'directory to serve as /var/lib/hyperv (default: a temporary one)')
    .option(
      '--scripts <dir>',
      'directory to serve as /usr/libexec/hypervkvpd (default: a temporary empty one)',
    )
    .option('--scenario <file>', 'drive the host from this scenario file, then stop COMMAND')
    .option('--record <file>', 'write what the host saw (JSON) to this file')
    .option('--console', 'drive the host by hand from an interactive console')
    .option(
      '--freeze-sandbox <list>',
      'run COMMAND pivoted into a scratch root with these loop-mounted images: ext4,xfs',
      parseFilesystems,
    )
    .option('--restart', 'restart COMMAND whenever it exits, as a service manager would')
    .option(
      '--host-dir <dir>',
      'with --freeze-sandbox: also show this host directory in the sandbox (an overlay; repeatable)',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('--stop-timeout <ms>', 'how long COMMAND gets to exit after SIGTERM', (v) => Number(v), 5000)
    .argument('<command...>', 'the command to run (after --)')
    .action((command: string[], opts: RunOptions) => {
      if (process.getuid?.() !== 0) throw new Error('kernel-shim run needs root (mount namespaces, FUSE)');
      result = inPrivateMountNamespace(process.env[PARENT_NS_ENV])
        ? runInNamespace(opts, command)
        : reexecInNamespace(argv, opts.stopTimeout + STOP_GRACE_MS);
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 64;
    say(e instanceof Error ? e.message : String(e));
    return 1;
  }
  return result.catch((e: unknown) => {
    say(e instanceof Error ? e.message : String(e));
    return 1;
  });
}

// Run when executed directly (node --import tsx kernel-shim/cli.ts …, or the bundled bin).
if (process.argv[1] && /kernel-shim[/\\]cli\.[cm]?[jt]s$|kernel-shim(\.m?js)?$/.test(process.argv[1])) {
  void main(process.argv.slice(2)).then((code) => process.exit(code));
}
