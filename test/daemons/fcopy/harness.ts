/**
 * The FCOPY end-to-end harness. Runs inside a private mount namespace (see run-harness.ts):
 * builds the sandbox (/dev/vmbus on a private /dev overlay, a scratch tmpfs), mounts the shim's
 * device files, starts a daemon — ours (`node daemons/fcopy/main.ts -n`) or the upstream C one
 * (`/usr/sbin/hv_fcopy_daemon -n`) — as a real process, waits until it has registered, runs the
 * requested cases (cases.ts) one after the other, each in a directory of its own, and prints one
 * JSON line with what the host saw and what was on disk. Whatever happens, the daemon is stopped
 * and everything is unmounted before it exits.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { statFields } from '../../support/procs.js';
import { join } from 'node:path';
import { type DeviceFiles, mountDeviceFiles } from '../../../kernel-shim/device-files.js';
import { HVUTIL_READY } from '../../../kernel-shim/drivers/util.js';
import { type Sandbox, VMBUS_DEV_DIR, buildSandbox } from '../../../kernel-shim/sandbox.js';
import { KernelShim } from '../../../kernel-shim/shim.js';
import { CASES, type CaseResult, type Ctx, type DaemonControl } from './cases.js';
import { type DaemonKind, type HarnessOutput, type HarnessSpec, REPO, RESULT_MARK } from './run-harness.js';
import { until } from '../../support/until.js';

/** sysconf(_SC_CLK_TCK): 100 on every Linux architecture Node runs on. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function say(msg: string): void {
  process.stderr.write(`fcopy-harness: ${msg}\n`);
}

function run(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
}

class Daemon implements DaemonControl {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  readonly log: string[] = [];

  constructor(
    private readonly kind: DaemonKind,
    private readonly cwd: string,
    private readonly configPath: string,
    /** Registrations the kernel has answered so far, and whether the driver is READY now. */
    private readonly registrations: () => number,
    private readonly ready: () => boolean,
    private readonly oursCommand: readonly string[] | undefined,
  ) {}

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    const before = this.registrations();
    const tsx = import.meta.resolve('tsx');
    const [cmd, ...args] =
      this.kind === 'ours'
        ? [
            ...(this.oursCommand ?? [
              process.execPath,
              '--import',
              tsx,
              join(REPO, 'daemons', 'fcopy', 'main.ts'),
            ]),
            '-n',
            '--config',
            this.configPath,
            '--log-level',
            'debug',
          ]
        : ['/usr/sbin/hv_fcopy_daemon', '-n'];
    const proc = spawn(cmd as string, args, { cwd: this.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    this.exited = new Promise((r) => proc.once('exit', () => r()));
    let pending = '';
    const take = (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      this.log.push(...lines.filter((l) => l !== ''));
    };
    proc.stdout?.on('data', take);
    proc.stderr?.on('data', take);
    await until(
      () => (this.registrations() > before && this.ready()) || proc.exitCode !== null,
      20_000,
      'the daemon to register',
    );
    if (proc.exitCode !== null) throw new Error(`the ${this.kind} daemon exited (${proc.exitCode}) at start`);
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    await this.exited;
  }

  rssKiB(): number | undefined {
    const pid = this.proc?.pid;
    if (pid === undefined) return undefined;
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  cpuMs(): number | undefined {
    const pid = this.proc?.pid;
    if (pid === undefined) return undefined;
    const f = statFields(pid);
    return f && ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    p.kill('SIGTERM');
    await this.exited;
    clearTimeout(t);
  }
}

async function main(): Promise<HarnessOutput> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as HarnessSpec;
  const results: Record<string, CaseResult> = {};
  let sandbox: Sandbox | undefined;
  let files: DeviceFiles | undefined;
  let daemon: Daemon | undefined;
  const loopMounts: string[] = [];
  try {
    sandbox = buildSandbox({ parentNamespace: process.env.PARENT_NS ?? '' });
    const scratch = sandbox.scratch;
    const work = join(scratch, 'work');
    const cwd = join(scratch, 'cwd');
    const state = join(scratch, 'state');
    for (const d of [work, cwd]) mkdirSync(d, { recursive: true });
    mkdirSync(join(work, 'allowed'));
    const configPath = join(scratch, 'fcopy.conf');
    writeFileSync(configPath, `state-dir = ${state}\n${(spec.config ?? '').replace(/@WORK@/g, work)}\n`);
    let registrations = 0;
    const shim = new KernelShim({
      services: ['fcopy'],
      trace: (_s, e) => {
        // The kernel's 4-byte answer to a registration is the only 4-byte message it queues.
        if (e.type === 'queue' && e.length === 4 && e.rc === 0) registrations++;
      },
    });
    const ready = () => shim.device('fcopy').driver.state === HVUTIL_READY;
    files = await mountDeviceFiles(shim, VMBUS_DEV_DIR);
    daemon = new Daemon(spec.daemon, cwd, configPath, () => registrations, ready, spec.oursCommand);
    await daemon.start();
    const d = daemon;
    for (const name of spec.cases) {
      const fn = CASES[name];
      if (!fn) throw new Error(`no case '${name}'`);
      const dir = join(work, name);
      mkdirSync(dir);
      const ctx: Ctx = {
        kind: spec.daemon,
        shim,
        host: shim.host.fcopy,
        dir,
        work,
        scratch,
        cwd,
        daemon: d,
        bench: spec.bench,
        async loopFs(fsName, sizeMiB) {
          const image = join(scratch, `${name}-${fsName}.img`);
          writeFileSync(image, '');
          truncateSync(image, sizeMiB * 1024 * 1024);
          run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
          const mnt = join(dir, fsName);
          mkdirSync(mnt);
          // -o loop sets autoclear: the loop device goes with the last mount of it.
          run('mount', ['-o', 'loop', image, mnt]);
          loopMounts.push(mnt);
          return mnt;
        },
        registrations: () => registrations,
        async waitRegistered(before) {
          await until(() => registrations > before && ready(), 20_000, 'the daemon to register again');
        },
      };
      say(`${spec.daemon}: ${name}`);
      const t0 = Date.now();
      results[name] = await fn(ctx);
      say(`${spec.daemon}: ${name} done in ${Date.now() - t0} ms`);
    }
    await daemon.stop();
    return { daemon: spec.daemon, results, log: daemon.log };
  } catch (e) {
    return {
      daemon: spec.daemon,
      results,
      log: daemon?.log ?? [],
      error: e instanceof Error ? (e.stack ?? e.message) : String(e),
    };
  } finally {
    await daemon?.stop().catch(() => {});
    await daemon?.kill('SIGKILL').catch(() => {});
    for (const m of loopMounts.reverse()) {
      if (spawnSync('umount', [m]).status !== 0) spawnSync('umount', ['-l', m]);
    }
    await files?.unmount().catch(() => {});
    sandbox?.cleanup();
    if (sandbox && existsSync(sandbox.scratch)) say(`note: ${sandbox.scratch} is still busy`);
  }
}

const out = await main();
process.stdout.write(`${RESULT_MARK}${JSON.stringify(out)}\n`);
process.exit(0);
