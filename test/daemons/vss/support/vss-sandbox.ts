/**
 * A VSS daemon (ours or upstream's) running for real in the freeze sandbox: a root where every
 * filesystem a daemon could freeze is one of our loop-mounted ext4/xfs images (the root itself
 * included, with `rootImage`), the kernel-shim's /dev/vmbus/hv_vss as a FUSE file, and the
 * simulated host driving it. Used by the harness (harness.ts, run by sandbox.test.ts and
 * conformance.test.ts under `unshare --mount`) and by bench/vss-bench.ts.
 *
 * Safety: buildFreezeSandbox refuses to run outside a private mount namespace, and the command is
 * pivoted into the root with a guard that refuses if any block device other than a loop device is
 * mounted there. The harness process itself only probes our own images (`isFrozen`), and every
 * path out of it (finally, signals, a hard deadline) thaws them before unmounting.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type DeviceFiles, mountDeviceFiles } from '../../../../kernel-shim/device-files.js';
import { HVUTIL_READY } from '../../../../kernel-shim/drivers/util.js';
import {
  type FreezeSandbox,
  type FsType,
  type SandboxMount,
  buildFreezeSandbox,
  freezeSandboxEnv,
} from '../../../../kernel-shim/freeze-sandbox.js';
import { KernelShim } from '../../../../kernel-shim/shim.js';
import { until } from '../../../support/until.js';

export const REPO = new URL('../../../../', import.meta.url).pathname.replace(/\/$/, '');
export const UPSTREAM_DAEMON = '/usr/sbin/hv_vss_daemon';
/** Where the bundled daemon lives inside the sandbox (on the root image when there is one). */
export const OPT_BUNDLE = '/opt/hv-vss-ts.mjs';

/** Build the daemon as one ESM file (koffi stays external), as a package would ship it. */
export function buildBundle(outFile: string): void {
  const r = spawnSync(
    join(REPO, 'node_modules/.bin/esbuild'),
    [
      join(REPO, 'daemons/vss/main.ts'),
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--target=node18',
      `--outfile=${outFile}`,
      '--external:koffi',
      '--log-level=error',
      "--banner:js=import { createRequire as __hvCreateRequire } from 'node:module'; const require = __hvCreateRequire(import.meta.url);",
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`esbuild: ${r.stderr || r.error?.message}`);
}

function sh(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

/**
 * Run a command without blocking this process: its event loop serves the FUSE device files, and a
 * command that looks at the mount table (xfs_io, mount, …) may stat them, which would deadlock a
 * spawnSync.
 */
export function runAsync(
  cmd: string,
  args: readonly string[],
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (e) => resolve({ code: -1, output: e.message }));
    child.on('close', (code) => resolve({ code, output }));
  });
}

export { until };

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface VssSandboxOptions {
  filesystems: readonly { type: FsType; mountPoint?: string; sizeMiB?: number }[];
  rootImage?: FsType;
  /** A bundle built by buildBundle, copied (with koffi) into /opt of the root. */
  bundle?: string;
}

export interface DaemonOptions {
  kind: 'ours' | 'upstream';
  /** Our daemon's extra arguments. */
  args?: readonly string[];
  /** A path inside the sandbox that receives the daemon's stdout (default: a pipe to us). */
  stdoutFile?: string;
  /** Trace the daemon's ioctls into this file inside the sandbox (strace -y). */
  straceFile?: string;
  /** What strace traces (default `ioctl`). */
  straceSyscalls?: string;
  /** Wait for the driver to be READY (default true). */
  waitReady?: boolean;
}

export class RunningDaemon {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private done = false;

  constructor(
    readonly child: ChildProcess,
    private readonly traced = false,
  ) {
    child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      }),
    );
  }

  get running(): boolean {
    return !this.done;
  }

  /** The daemon's JSON log lines from its stdout pipe. */
  logLines(): Record<string, unknown>[] {
    return parseLogLines(this.stdout);
  }

  /**
   * The daemon's own pid: the child itself (setpriv, unshare and sh exec into it), or, under
   * strace, strace's child.
   */
  daemonPid(): number | undefined {
    const pid = this.child.pid;
    if (pid === undefined || !this.traced) return pid;
    try {
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/);
      return kids[0] ? Number(kids[0]) : pid;
    } catch {
      return pid;
    }
  }

  /** Send `sig` to the daemon (not to strace). */
  signal(sig: NodeJS.Signals): void {
    const pid = this.daemonPid();
    try {
      if (pid !== undefined) process.kill(pid, sig);
    } catch {
      // gone already
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<{ code: number | null; signal: string | null }> {
    if (this.done) return this.exited;
    this.signal('SIGTERM');
    const t = setTimeout(() => {
      this.signal('SIGKILL');
      this.child.kill('SIGKILL');
    }, graceMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

export function parseLogLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { unparsed: l };
      }
    });
}

export class VssSandbox {
  readonly daemons: RunningDaemon[] = [];
  private closed = false;

  private constructor(
    readonly sb: FreezeSandbox,
    readonly shim: KernelShim,
    readonly files: DeviceFiles,
  ) {}

  static async create(opts: VssSandboxOptions): Promise<VssSandbox> {
    const parentNamespace = process.env.PARENT_NS ?? '';
    const sb = buildFreezeSandbox({
      parentNamespace,
      filesystems: opts.filesystems,
      ...(opts.rootImage ? { rootImage: opts.rootImage } : {}),
    });
    let files: DeviceFiles | undefined;
    try {
      const shim = new KernelShim({
        services: ['vss'],
        hostTimeoutMs: 30_000,
        ...(process.env.HV_VSS_TRACE
          ? { trace: (svc, e) => process.stderr.write(`trace ${svc} ${JSON.stringify(e)}\n`) }
          : {}),
      });
      files = await mountDeviceFiles(shim, join(sb.root, 'dev/vmbus'));
      const box = new VssSandbox(sb, shim, files);
      if (opts.bundle) box.install(opts.bundle);
      return box;
    } catch (e) {
      await files?.unmount().catch(() => {});
      sb.cleanup();
      throw e;
    }
  }

  get root(): string {
    return this.sb.root;
  }

  /** The sandbox path as seen from here. */
  hostPath(p: string): string {
    return join(this.sb.root, p);
  }

  mount(mountPoint: string): SandboxMount {
    const m = this.sb.mounts.find((x) => x.mountPoint === mountPoint);
    if (!m) throw new Error(`no sandbox mount at ${mountPoint}`);
    return m;
  }

  /**
   * Which of our images are frozen now (probe: FIFREEZE, undone at once; EBUSY = frozen). An image
   * the probe cannot freeze (shut down) shows its errno.
   */
  frozen(): Record<string, boolean | string> {
    return Object.fromEntries(
      this.sb.mounts.map((m) => {
        try {
          return [m.mountPoint, this.sb.isFrozen(m)];
        } catch (e) {
          return [m.mountPoint, (e as { code?: string }).code ?? String(e)];
        }
      }),
    );
  }

  anyFrozen(): boolean {
    return Object.values(this.frozen()).some((v) => v === true);
  }

  /** Copy the bundle and koffi (with its native module) into /opt of the root. */
  private install(bundle: string): void {
    const opt = this.hostPath('/opt');
    mkdirSync(join(opt, 'node_modules/@koromix'), { recursive: true });
    sh('cp', [bundle, join(opt, 'hv-vss-ts.mjs')]);
    sh('cp', ['-a', join(REPO, 'node_modules/koffi'), join(opt, 'node_modules/koffi')]);
    const native = join(REPO, 'node_modules/@koromix/koffi-linux-x64');
    if (existsSync(native)) sh('cp', ['-a', native, join(opt, 'node_modules/@koromix/koffi-linux-x64')]);
  }

  /** Start a daemon inside the sandbox. */
  async start(o: DaemonOptions): Promise<RunningDaemon> {
    const cmd =
      o.kind === 'upstream'
        ? [UPSTREAM_DAEMON, '-n']
        : [process.execPath, OPT_BUNDLE, '-n', '--log-level', 'debug', ...(o.args ?? [])];
    const traced = o.straceFile
      ? [
          'strace',
          '-f',
          '-qq',
          '-y',
          '-e',
          `trace=${o.straceSyscalls ?? 'ioctl'}`,
          '-o',
          o.straceFile,
          ...cmd,
        ]
      : cmd;
    let outFd: number | undefined;
    if (o.stdoutFile) {
      mkdirSync(join(this.root, o.stdoutFile, '..'), { recursive: true });
      outFd = openSync(this.hostPath(o.stdoutFile), 'a');
    }
    // PR_SET_PDEATHSIG: the daemon dies with this process, so none is ever left behind.
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...this.sb.wrap(traced)], {
      env: { ...process.env, ...freezeSandboxEnv(this.sb) },
      stdio: ['ignore', outFd ?? 'pipe', 'pipe'],
      cwd: '/',
    });
    if (outFd !== undefined) closeSync(outFd);
    const d = new RunningDaemon(child, o.straceFile !== undefined);
    this.daemons.push(d);
    if (o.waitReady ?? true) await this.waitReady(d);
    return d;
  }

  async waitReady(d: RunningDaemon, ms = 15_000): Promise<void> {
    await until(
      () => this.shim.device('vss').driver.state === HVUTIL_READY || !d.running,
      ms,
      'the daemon to register',
    );
    if (!d.running) throw new Error(`the daemon exited before registering: ${d.stderr}`);
  }

  /** Read a file of the sandbox (only after everything is thawed). */
  read(p: string): string {
    return readFileSync(this.hostPath(p), 'utf8');
  }

  /** Stop the daemons, thaw what is still frozen, unmount everything. Safe to call twice. */
  async close(): Promise<string[]> {
    if (this.closed) return [];
    this.closed = true;
    // Thaw first: a daemon or a writer blocked on a frozen image could not die.
    const stillFrozen = this.sb.thawAll();
    for (const d of this.daemons) await d.stop(3000);
    await this.files.unmount().catch(() => {});
    this.sb.cleanup();
    return stillFrozen;
  }

  /** Synchronous last resort (exit handlers): thaw and kill. */
  emergency(): void {
    try {
      this.sb.thawAll();
    } catch {
      // nothing more can be done here
    }
    for (const d of this.daemons) {
      d.signal('SIGKILL');
      d.child.kill('SIGKILL');
    }
  }
}

/** A process of this namespace writing a file on an image; resolves when the write returned. */
export function startWriter(path: string): { done: () => boolean; finished: Promise<number | null> } {
  let finished = false;
  const child = spawn('sh', ['-c', `echo written > '${path}'`], { stdio: 'ignore' });
  const p = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      finished = true;
      resolve(code);
    }),
  );
  return { done: () => finished, finished: p };
}

/** FIFREEZE/FITHAW calls from an `strace -y -e trace=ioctl` log: `freeze /mnt/ext4 ok`. */
export function traceFreezes(trace: string): string[] {
  const out: string[] = [];
  for (const line of trace.split('\n')) {
    const m = /ioctl\(\d+<([^>]*)>, (FIFREEZE|FITHAW)\b[^)]*\)\s*= (-?\d+)(?: (E[A-Z]+))?/.exec(line);
    if (!m) continue;
    out.push(`${m[2] === 'FIFREEZE' ? 'freeze' : 'thaw'} ${m[1]} ${m[3] === '0' ? 'ok' : (m[4] ?? m[3])}`);
  }
  return out;
}

export interface TracedCall {
  syscall: string;
  /** The argument text as strace printed it (paths shown with -y). */
  args: string;
  result: string;
}

/** Every call of an `strace -f -y` log, in order (an unfinished call counts where it began). */
export function traceCalls(trace: string): TracedCall[] {
  const out: TracedCall[] = [];
  for (const line of trace.split('\n')) {
    if (/<\.\.\. \w+ resumed>/.test(line)) continue;
    const m = /^\d+\s+(\w+)\((.*?)(?:\)\s*= (.*)| <unfinished \.\.\.>)$/.exec(line);
    if (m) out.push({ syscall: m[1] ?? '', args: m[2] ?? '', result: m[3] ?? 'unfinished' });
  }
  return out;
}

/**
 * The calls made while something was frozen: from the first successful FIFREEZE to the FITHAW
 * that ended the window (excluded).
 */
export function frozenWindow(calls: readonly TracedCall[]): TracedCall[] {
  const isIoctl = (c: TracedCall, op: string) =>
    c.syscall === 'ioctl' && c.args.includes(`, ${op}`) && c.result.startsWith('0');
  const start = calls.findIndex((c) => isIoctl(c, 'FIFREEZE'));
  if (start < 0) return [];
  const end = calls.findIndex((c, i) => i > start && isIoctl(c, 'FITHAW'));
  return calls.slice(start, end < 0 ? calls.length : end);
}
