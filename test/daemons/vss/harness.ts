/**
 * Real freezes, run by sandbox.test.ts and conformance.test.ts as
 *
 *   PARENT_NS=$(readlink /proc/self/ns/mnt) unshare --mount --propagation private --fork -- \
 *     node --import tsx test/daemons/vss/harness.ts CASE '{"bundle": "...", ...}'
 *
 * Each case builds a freeze sandbox (every freezable filesystem is one of our loop-mounted
 * images, the root too when the case says so), runs a VSS daemon in it, drives the simulated host,
 * observes the images, and prints one line `RESULT <json>` with what it saw; the tests assert on
 * it. Whatever happens (an exception, SIGTERM from vitest, the hard deadline), the images are
 * thawed before anything is unmounted and every daemon is killed.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isRunning } from '../../support/procs.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HV_E_FAIL, HV_S_OK } from '../../../uapi/constants.js';
import { HVUTIL_READY } from '../../../kernel-shim/drivers/util.js';
import { freezeSandboxEnv } from '../../../kernel-shim/freeze-sandbox.js';
import { parseScenario, runScenario } from '../../../kernel-shim/scenario/index.js';
import {
  type RunningDaemon,
  VssSandbox,
  parseLogLines,
  runAsync,
  sleep,
  startWriter,
  frozenWindow,
  traceCalls,
  traceFreezes,
  until,
} from './support/vss-sandbox.js';

interface Args {
  bundle: string;
  /** An hv-supervisor bundle (the supervised-sigkill case). */
  supervisor?: string;
  daemon?: 'ours' | 'upstream';
  deadlineMs?: number;
  scenario?: string;
  bench?: { count: number; cycles: number; dirtyKiB: number };
}

const boxes: VssSandbox[] = [];
const say = (msg: string) => process.stderr.write(`harness: ${msg}\n`);

async function box(opts: Parameters<typeof VssSandbox.create>[0]): Promise<VssSandbox> {
  const b = await VssSandbox.create(opts);
  boxes.push(b);
  return b;
}

const MARKER = '/run/hyperv-daemons-ts/vss-frozen.json';

/** A hook that records `<name> <phase>` and proves its filesystem is not frozen by writing to it. */
function writeHook(b: VssSandbox, dir: string, name: string, body = '', mode = 0o755): void {
  const path = b.hostPath(join(dir, name));
  mkdirSync(b.hostPath(dir), { recursive: true });
  writeFileSync(
    path,
    `#!/bin/sh
name=$(basename "$0")
echo "$name $1 start" >> /run/hooks.log
${body}
echo "$name $1" > "/mnt/ext4/hook-$name-$1"
echo "$name $1 end" >> /run/hooks.log
`,
  );
  chmodSync(path, mode);
}

function hookLog(b: VssSandbox): string[] {
  const p = b.hostPath('/run/hooks.log');
  return existsSync(p)
    ? readFileSync(p, 'utf8')
        .split('\n')
        .filter((l) => l.endsWith(' start'))
        .map((l) => l.slice(0, -' start'.length))
    : [];
}

function statusOf(r: { status: number }): string {
  return r.status === HV_S_OK
    ? 'HV_S_OK'
    : r.status === HV_E_FAIL
      ? 'HV_E_FAIL'
      : `0x${r.status.toString(16)}`;
}

function logsOf(d: RunningDaemon, b: VssSandbox, file?: string): Record<string, unknown>[] {
  return file ? parseLogLines(b.read(file)) : d.logLines();
}

const cases: Record<string, (a: Args) => Promise<unknown>> = {
  /**
   * hv-supervisor runs hv-vss-ts (both from the root image); the host freezes; the daemon dies by
   * SIGKILL with everything frozen. The supervisor must thaw, from the daemon's marker in /run,
   * within one second, then restart the daemon, which registers again and serves.
   */
  async 'supervised-sigkill'(a) {
    if (!a.supervisor) throw new Error('supervised-sigkill needs a supervisor bundle');
    const b = await box({
      rootImage: 'ext4',
      filesystems: [{ type: 'ext4' }, { type: 'xfs' }],
      bundle: a.bundle,
    });
    writeFileSync(b.hostPath('/opt/hv-supervisor.mjs'), readFileSync(a.supervisor));
    const cmd = [
      process.execPath,
      '/opt/hv-supervisor.mjs',
      '--kind',
      'vss',
      '--device',
      '/dev/vmbus/hv_vss',
      '--no-status-socket',
      '--',
      process.execPath,
      '/opt/hv-vss-ts.mjs',
      '-n',
    ];
    const sup = spawn('setpriv', ['--pdeathsig', 'KILL', '--', ...b.sb.wrap(cmd)], {
      env: { ...process.env, ...freezeSandboxEnv(b.sb) },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: '/',
    });
    let log = '';
    sup.stdout.on('data', (d: Buffer) => (log += d.toString()));
    sup.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const supExit = new Promise<number | null>((r) => sup.on('exit', (c) => r(c)));
    const driver = b.shim.device('vss').driver;
    const out: Record<string, unknown> = {};
    try {
      await until(() => driver.registrations >= 1, 20_000, 'the supervised daemon to register');
      const host = b.shim.host.vss;
      out.freeze = statusOf(await host.freeze());
      out.frozenBeforeKill = b.frozen();
      const kids = readFileSync(`/proc/${sup.pid}/task/${sup.pid}/children`, 'utf8').trim().split(/\s+/);
      const daemonPid = Number(kids[0]);
      out.daemonComm = readFileSync(`/proc/${daemonPid}/comm`, 'utf8').trim();
      const regs = driver.registrations;
      const t0 = performance.now();
      process.kill(daemonPid, 'SIGKILL');
      await until(() => !b.anyFrozen(), 5_000, 'the supervisor to thaw');
      out.thawMs = Math.round(performance.now() - t0);
      await until(() => driver.registrations > regs, 20_000, 'the restarted daemon to register');
      out.reregisteredMs = Math.round(performance.now() - t0);
      out.markerAfter = existsSync(b.hostPath(MARKER));
      out.freezeAgain = statusOf(await host.freeze());
      out.thawAgain = statusOf(await host.thaw());
      out.frozenAtEnd = b.frozen();
    } finally {
      sup.kill('SIGTERM');
      out.supervisorExit = await supExit;
      out.log = log
        .split('\n')
        .filter((l) => /thaw|restart|exited|died|killed/i.test(l))
        .slice(0, 12);
    }
    return out;
  },
  /**
   * Our daemon runs from the root image it freezes, its stdout goes to a file on that image, its
   * hooks live there too: FREEZE, a writer that blocks, THAW, the writer resumes.
   */
  async basic(a) {
    const b = await box({
      rootImage: 'ext4',
      filesystems: [{ type: 'ext4' }, { type: 'xfs' }],
      bundle: a.bundle,
    });
    writeHook(b, '/opt/hooks.d', '10-first');
    writeHook(b, '/opt/hooks.d', '20-second');
    const logFile = '/var/log/hv-vss-ts.log';
    const d = await b.start({
      kind: 'ours',
      args: ['--hooks-dir', '/opt/hooks.d', '--marker', MARKER],
      stdoutFile: logFile,
      straceFile: '/run/strace.log',
      // Everything that could write, create, load or start something.
      straceSyscalls:
        'ioctl,open,openat,creat,write,writev,pwrite64,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,execve,fork,vfork,clone,clone3',
    });
    const host = b.shim.host.vss;
    const out: Record<string, unknown> = { mounts: b.sb.mounts.map((m) => m.mountPoint) };
    out.hotBackup = statusOf(await host.hotBackupCheck());
    const tFreeze = Date.now();
    out.freeze = statusOf(await host.freeze());
    out.frozenAfterFreeze = b.frozen();
    out.markerWhileFrozen = existsSync(b.hostPath(MARKER))
      ? JSON.parse(readFileSync(b.hostPath(MARKER), 'utf8'))
      : null;
    const logSize = statSync(b.hostPath(logFile)).size;
    // The machine's own /tmp (this namespace sees it) stays writable while the sandbox is frozen.
    const hostFile = join(tmpdir(), `hv-vss-host-probe-${process.pid}`);
    const hostWriter = startWriter(hostFile);
    out.hostWriteWhileFrozen = await Promise.race([hostWriter.finished, sleep(3000).then(() => 'blocked')]);
    rmSync(hostFile, { force: true });
    const writer = startWriter(b.hostPath('/mnt/xfs/written-while-frozen'));
    const rootWriter = startWriter(b.hostPath('/tmp/root-written-while-frozen'));
    await sleep(700);
    out.writerDoneWhileFrozen = writer.done() || rootWriter.done();
    out.logGrewWhileFrozen = statSync(b.hostPath(logFile)).size !== logSize;
    out.daemonAliveWhileFrozen = d.running;
    const tThaw = Date.now();
    out.thaw = statusOf(await host.thaw());
    out.thawReplyMs = Date.now() - tThaw;
    out.writerExit = await Promise.race([writer.finished, sleep(5000).then(() => 'still blocked')]);
    out.rootWriterExit = await Promise.race([rootWriter.finished, sleep(5000).then(() => 'still blocked')]);
    out.frozenAfterThaw = b.frozen();
    await until(() => hookLog(b).length >= 4 && !existsSync(b.hostPath(MARKER)), 10_000, 'thaw hooks');
    out.hooks = hookLog(b);
    out.markerAfterThaw = existsSync(b.hostPath(MARKER));
    out.stop = await d.stop();
    out.trace = traceFreezes(b.read('/run/strace.log'));
    out.frozenWindow = frozenWindow(traceCalls(b.read('/run/strace.log')));
    const logs = logsOf(d, b, logFile);
    out.logs = logs.map((l) => ({ level: l.level, msg: l.msg, time: l.time }));
    out.window = { freezeAt: tFreeze, thawAt: tThaw };
    return out;
  },

  /** One filesystem in the middle cannot be frozen (shut down): everything is rolled back. */
  async partial(a) {
    const ours = a.daemon !== 'upstream';
    const b = await box({
      filesystems: [
        { type: 'ext4', mountPoint: '/mnt/a' },
        { type: 'ext4', mountPoint: '/mnt/b' },
        { type: 'xfs', mountPoint: '/mnt/c' },
      ],
      bundle: a.bundle,
    });
    if (ours) {
      writeHook(b, '/opt/hooks.d', '10-first');
      // The hook writes to /mnt/ext4: make it exist in this layout too.
      mkdirSync(b.hostPath('/mnt/ext4'), { recursive: true });
    }
    // A real kernel failure: FIFREEZE of a shut-down ext4 fails with EIO.
    const shut = await runAsync('xfs_io', ['-x', '-c', 'shutdown', b.mount('/mnt/b').hostPath]);
    if (shut.code !== 0) throw new Error(`xfs_io shutdown: ${shut.output}`);
    const d = await b.start({
      kind: ours ? 'ours' : 'upstream',
      args: ['--hooks-dir', '/opt/hooks.d', '--marker', MARKER],
      straceFile: '/run/strace.log',
    });
    const host = b.shim.host.vss;
    const out: Record<string, unknown> = {};
    out.freeze = statusOf(await host.freeze());
    out.frozenAfterFreeze = b.frozen();
    out.marker = existsSync(b.hostPath(MARKER));
    await sleep(300);
    out.hooks = hookLog(b);
    out.thaw = statusOf(await host.thaw());
    out.freezeAgain = statusOf(await host.freeze());
    out.thawAgain = statusOf(await host.thaw());
    out.stop = await d.stop();
    out.trace = traceFreezes(b.read('/run/strace.log'));
    out.logs = d.logLines().map((l) => ({ level: l.level, msg: l.msg }));
    return out;
  },

  /** Hooks: order and arguments, a failing hook, a hook over its time limit. */
  async hooks(a) {
    const b = await box({ filesystems: [{ type: 'ext4' }], bundle: a.bundle });
    const dir = '/opt/hooks.d';
    writeHook(b, dir, '10-alpha');
    writeHook(
      b,
      dir,
      '20-beta',
      `[ "$1" = freeze ] && [ -e /run/fail-beta ] && { echo "beta refuses" >&2; exit 3; }
[ "$1" = freeze ] && [ -e /run/hang-beta ] && { sleep 60 & echo $! > /run/beta-child.pid; wait; }`,
    );
    writeHook(b, dir, '30-gamma');
    writeHook(b, dir, '15-disabled.sample');
    writeHook(b, dir, '25-not-executable', '', 0o644);
    const d = await b.start({
      kind: 'ours',
      args: ['--hooks-dir', dir, '--hook-timeout', '1s', '--marker', MARKER],
    });
    const host = b.shim.host.vss;
    const out: Record<string, unknown> = {};
    const reset = () => writeFileSync(b.hostPath('/run/hooks.log'), '');

    reset();
    out.okFreeze = statusOf(await host.freeze());
    out.okFrozen = b.frozen();
    out.okThaw = statusOf(await host.thaw());
    await until(() => hookLog(b).length >= 6, 10_000, 'thaw hooks');
    out.okHooks = hookLog(b);

    reset();
    writeFileSync(b.hostPath('/run/fail-beta'), '');
    out.failFreeze = statusOf(await host.freeze());
    out.failFrozen = b.frozen();
    await until(() => hookLog(b).length >= 3, 10_000, 'freezefail hooks');
    out.failHooks = hookLog(b);
    out.failMarker = existsSync(b.hostPath(MARKER));
    rmSync(b.hostPath('/run/fail-beta'));

    reset();
    writeFileSync(b.hostPath('/run/hang-beta'), '');
    const t0 = Date.now();
    out.hangFreeze = statusOf(await host.freeze());
    out.hangMs = Date.now() - t0;
    out.hangFrozen = b.frozen();
    await until(() => hookLog(b).length >= 3, 10_000, 'freezefail hooks');
    out.hangHooks = hookLog(b);
    const childPid = Number(readFileSync(b.hostPath('/run/beta-child.pid'), 'utf8'));
    await sleep(200);
    out.hangChildAlive = isRunning(childPid);
    rmSync(b.hostPath('/run/hang-beta'));

    out.afterFreeze = statusOf(await host.freeze());
    out.afterThaw = statusOf(await host.thaw());
    out.stop = await d.stop();
    out.logs = d.logLines().map((l) => ({ level: l.level, msg: l.msg, hook: l.hook, phase: l.phase }));
    return out;
  },

  /** No THAW comes: the watchdog thaws, and the host hears of it at its next request. */
  async watchdog(a) {
    const b = await box({ filesystems: [{ type: 'ext4' }, { type: 'xfs' }], bundle: a.bundle });
    const d = await b.start({ kind: 'ours', args: ['--freeze-watchdog', '2s', '--marker', MARKER] });
    const host = b.shim.host.vss;
    const out: Record<string, unknown> = {};
    const t0 = Date.now();
    out.freeze = statusOf(await host.freeze());
    out.frozenAfterFreeze = b.frozen();
    await until(() => !existsSync(b.hostPath(MARKER)), 10_000, 'the watchdog');
    out.thawedAfterMs = Date.now() - t0;
    out.frozenAfterWatchdog = b.frozen();
    out.lateThaw = statusOf(await host.thaw());
    out.hotBackup = statusOf(await host.hotBackupCheck());
    out.freezeAgain = statusOf(await host.freeze());
    out.thawAgain = statusOf(await host.thaw());
    out.stop = await d.stop();
    out.logs = d.logLines().map((l) => ({ level: l.level, msg: l.msg }));
    return out;
  },

  /**
   * SIGKILL while frozen: the marker stays, the filesystems stay frozen; the next daemon (started
   * from the frozen root) or `hv-vss-ts --recover` thaws them at start and runs the thaw hooks.
   */
  async sigkill(a) {
    const b = await box({
      rootImage: 'ext4',
      filesystems: [{ type: 'ext4' }, { type: 'xfs' }],
      bundle: a.bundle,
    });
    writeHook(b, '/opt/hooks.d', '10-first');
    const args = ['--hooks-dir', '/opt/hooks.d', '--marker', MARKER];
    const d1 = await b.start({ kind: 'ours', args });
    const host = b.shim.host.vss;
    const out: Record<string, unknown> = {};
    out.freeze = statusOf(await host.freeze());
    d1.child.kill('SIGKILL');
    out.killed = await d1.exited;
    // The kernel side notices the close (the driver leaves READY) before the next daemon starts.
    await until(() => b.shim.device('vss').driver.state !== HVUTIL_READY, 5000, 'the device release');
    out.frozenAfterKill = b.frozen();
    out.markerAfterKill = existsSync(b.hostPath(MARKER))
      ? JSON.parse(readFileSync(b.hostPath(MARKER), 'utf8'))
      : null;
    writeFileSync(b.hostPath('/run/hooks.log'), '');
    let d2: RunningDaemon;
    if (a.scenario === 'recover-cli') {
      const r = await b.start({ kind: 'ours', args: [...args, '--recover'], waitReady: false });
      out.recoverExit = await Promise.race([r.exited, sleep(15_000).then(() => 'timeout')]);
      out.recoverLogs = r.logLines().map((l) => ({ level: l.level, msg: l.msg }));
      out.frozenAfterRecover = b.frozen();
      out.markerAfterRecover = existsSync(b.hostPath(MARKER));
      out.hooksAfterRecover = hookLog(b);
      d2 = await b.start({ kind: 'ours', args });
    } else {
      // The root (and /opt/hv-vss-ts.mjs on it) is frozen while this daemon starts.
      d2 = await b.start({ kind: 'ours', args });
      await until(() => !existsSync(b.hostPath(MARKER)), 10_000, 'the marker to go');
      out.frozenAfterRestart = b.frozen();
      out.markerAfterRestart = existsSync(b.hostPath(MARKER));
      out.hooksAfterRestart = hookLog(b);
    }
    out.freeze2 = statusOf(await host.freeze());
    out.thaw2 = statusOf(await host.thaw());
    out.stop = await d2.stop();
    out.logs2 = d2.logLines().map((l) => ({ level: l.level, msg: l.msg }));
    return out;
  },

  /**
   * bench/vss-bench.ts: FREEZE and THAW round trips as the host times them, with `count` ext4
   * images (the root is a tmpfs, skipped), each optionally dirtied with `dirtyKiB` before a FREEZE.
   */
  async bench(a) {
    const p = a.bench ?? { count: 1, cycles: 20, dirtyKiB: 0 };
    const b = await box({
      filesystems: Array.from({ length: p.count }, (_, i) => ({
        type: 'ext4' as const,
        mountPoint: `/mnt/fs${i}`,
      })),
      bundle: a.bundle,
    });
    const d = await b.start({
      kind: a.daemon ?? 'ours',
      args: ['--log-level', 'info', '--hooks-dir', '/nonexistent', '--marker', MARKER],
    });
    const host = b.shim.host.vss;
    const freeze: number[] = [];
    const thaw: number[] = [];
    const chunk = Buffer.alloc(p.dirtyKiB * 1024, 0x5a);
    for (let i = -3; i < p.cycles; i++) {
      if (p.dirtyKiB > 0)
        for (const m of b.sb.mounts) writeFileSync(join(m.hostPath, `dirty-${i & 1}`), chunk);
      const t0 = performance.now();
      const f = await host.freeze();
      const t1 = performance.now();
      const t = await host.thaw();
      const t2 = performance.now();
      if (f.status !== HV_S_OK || t.status !== HV_S_OK)
        throw new Error(`cycle ${i}: ${f.statusName} / ${t.statusName}`);
      if (i >= 0) {
        freeze.push(t1 - t0);
        thaw.push(t2 - t1);
      }
    }
    const stop = await d.stop();
    const passes = d
      .logLines()
      .filter((l) => typeof l.freezeMs === 'number' || typeof l.thawMs === 'number')
      .map((l) => (l.freezeMs ?? l.thawMs) as number);
    return { freeze, thaw, stop, frozenAtEnd: b.frozen(), passes };
  },

  /** The conformance scenario against one daemon, with the images' state after each step. */
  async scenario(a) {
    const kind = a.daemon ?? 'ours';
    const b = await box({
      rootImage: 'ext4',
      filesystems: [{ type: 'ext4' }, { type: 'xfs' }],
      bundle: a.bundle,
    });
    const d = await b.start({ kind, args: ['--marker', MARKER], straceFile: '/run/strace.log' });
    const text = readFileSync(a.scenario ?? '', 'utf8');
    const probes: { index: number; text: string; frozen: Record<string, boolean | string> }[] = [];
    const recording = await runScenario(parseScenario(text), {
      shim: b.shim,
      faults: { rescind: (s) => b.files.rescind(s), reoffer: (s) => b.files.reoffer(s) },
      timeoutMs: 30_000,
      onStep: (entry) => {
        // Probe only when the daemon is idle: after a host request or a wait-ready.
        if (entry.op.startsWith('vss ') || entry.op === 'wait-ready')
          probes.push({ index: entry.index, text: entry.text, frozen: b.frozen() });
      },
    });
    const stop = await d.stop();
    const logs = d.logLines().map((l) => ({ level: l.level, msg: l.msg }));
    return { kind, recording, probes, stop, trace: traceFreezes(b.read('/run/strace.log')), logs };
  },
};

async function main(): Promise<number> {
  const [name, json] = process.argv.slice(2);
  const run = cases[name ?? ''];
  if (!run) {
    say(`unknown case '${name}' (${Object.keys(cases).join(', ')})`);
    return 64;
  }
  const args = JSON.parse(json ?? '{}') as Args;
  const deadline = setTimeout(() => {
    say('deadline reached: thawing and killing everything');
    for (const b of boxes) b.emergency();
    process.exit(3);
  }, args.deadlineMs ?? 90_000);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      say(`${sig}: thawing and killing everything`);
      for (const b of boxes) b.emergency();
      process.exit(2);
    });
  }
  process.on('exit', () => {
    for (const b of boxes) b.emergency();
  });
  let result: unknown;
  let code = 0;
  try {
    result = await run(args);
  } catch (e) {
    say(`failed: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
    for (const b of boxes)
      for (const d of b.daemons)
        say(`daemon stderr: ${d.stderr.slice(-2000)}\ndaemon stdout: ${d.stdout.slice(-4000)}`);
    code = 1;
  } finally {
    for (const b of boxes) {
      const still = await b.close();
      if (still.length > 0) say(`had to thaw ${still.join(', ')} at the end`);
      if (result && typeof result === 'object') (result as Record<string, unknown>).thawedAtClose = still;
    }
    clearTimeout(deadline);
  }
  if (code === 0) process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  return code;
}

void main().then((code) => process.exit(code));
