/**
 * The FCOPY end-to-end cases: one host script each, run by harness.ts against a real daemon
 * process (ours or upstream) in a directory of its own (`c.dir`). Each returns what the host saw
 * (status per host call) and listings of the disk at the moments that matter; the tests
 * (e2e.test.ts, conformance.test.ts) decide what is right.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, statfsSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HV_STATUS_NAMES, HV_S_OK } from '../../../uapi/constants.js';
import type { FcopyHost, CopyOptions } from '../../../kernel-shim/host/fcopy.js';
import type { HostResult } from '../../../kernel-shim/host/kvp.js';
import type { KernelShim } from '../../../kernel-shim/shim.js';
import { type Listing, observe, pattern, sha256, sha256File } from './observe.js';
import type { DaemonKind, HarnessSpec } from './run-harness.js';

export interface DaemonControl {
  readonly pid: number | undefined;
  /** The daemon's log lines so far (ours: JSON). */
  readonly log: readonly string[];
  /** Send a signal and wait for the process to end. */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Start (again) and wait until the kernel has answered its registration. */
  start(): Promise<void>;
  rssKiB(): number | undefined;
  /** CPU time (user + system) the daemon has used so far. */
  cpuMs(): number | undefined;
}

export interface Ctx {
  readonly kind: DaemonKind;
  readonly shim: KernelShim;
  readonly host: FcopyHost;
  /** This case's directory (empty at the start). */
  readonly dir: string;
  /** The parent of the case directories (`<work>/allowed` exists). */
  readonly work: string;
  /** The sandbox's scratch tmpfs (host-side source files go there). */
  readonly scratch: string;
  /** The daemon's working directory. */
  readonly cwd: string;
  readonly daemon: DaemonControl;
  readonly bench: HarnessSpec['bench'];
  /** Mount a fresh ext4 image of `sizeMiB` at `<dir>/<name>` (a loop device, in the namespace). */
  loopFs(name: string, sizeMiB: number): Promise<string>;
  /** Registrations the kernel has answered so far. */
  registrations(): number;
  /** Wait until the daemon registered again after `before` registrations. */
  waitRegistered(before: number): Promise<void>;
}

export interface HostStep {
  readonly op: string;
  /** e.g. HV_S_OK, HV_ERROR_ALREADY_EXISTS. */
  readonly status: string;
  /** For a whole copy: the step that ended it (start, write, complete). */
  readonly step?: string;
}

export interface CaseResult {
  readonly host: HostStep[];
  readonly disk: Record<string, Listing>;
  readonly extra?: Record<string, unknown>;
}

const FRAG = 6144;

export function statusText(status: number): string {
  return HV_STATUS_NAMES[status >>> 0] ?? `0x${(status >>> 0).toString(16).padStart(8, '0')}`;
}

function hostStep(op: string, r: HostResult & { step?: string }): HostStep {
  return { op, status: statusText(r.status), ...(r.step ? { step: r.step } : {}) };
}

async function put(
  c: Ctx,
  data: Uint8Array,
  path: string,
  name: string,
  opts: CopyOptions = {},
): Promise<HostStep> {
  return hostStep('copy', await c.host.copyBuffer(data, path, name, opts));
}

/** START then `n` fragments of `data`; the statuses. */
async function startAndWrite(
  c: Ctx,
  data: Buffer,
  name: string,
  n: number,
  opts: CopyOptions = {},
): Promise<HostStep[]> {
  const steps = [hostStep('start', await c.host.start(c.dir, name, BigInt(data.length), opts))];
  for (let i = 0; i < n; i++) {
    const r = await c.host.write(BigInt(i * FRAG), data.subarray(i * FRAG, (i + 1) * FRAG));
    if (i === 0 || i === n - 1 || r.status !== HV_S_OK) steps.push(hostStep(`write#${i}`, r));
  }
  return steps;
}

function file(path: string, content: string | Buffer, mode = 0o644): void {
  writeFileSync(path, content);
  chmodSync(path, mode);
}

/** Sample the daemon's resident memory every 25 ms until stopped. */
function rssSampler(c: Ctx): { stop(): { beforeKiB: number; peakKiB: number } } {
  const beforeKiB = c.daemon.rssKiB() ?? 0;
  let peakKiB = beforeKiB;
  const t = setInterval(() => {
    peakKiB = Math.max(peakKiB, c.daemon.rssKiB() ?? 0);
  }, 25);
  return {
    stop() {
      clearInterval(t);
      peakKiB = Math.max(peakKiB, c.daemon.rssKiB() ?? 0);
      return { beforeKiB, peakKiB };
    },
  };
}

function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bfree * s.bsize;
}

async function copySourceFile(c: Ctx, mib: number, targetDir: string, name: string) {
  const source = join(c.scratch, `source-${mib}.bin`);
  writeFileSync(source, pattern(mib * 1024 * 1024, 7));
  const sourceSha = await sha256File(source);
  const rss = rssSampler(c);
  const cpu0 = c.daemon.cpuMs() ?? 0;
  const t0 = process.hrtime.bigint();
  const r = await c.host.copyFile(source, targetDir, name, {});
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpuMs = (c.daemon.cpuMs() ?? 0) - cpu0;
  const mem = rss.stop();
  rmSync(source);
  return { r, ms, cpuMs, mem, sourceSha };
}

export const CASES: Record<string, (c: Ctx) => Promise<CaseResult>> = {
  // --- the process as ps shows it
  async identity(c) {
    const pid = c.daemon.pid;
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    return { host: [], disk: {}, extra: { comm, argv0: cmdline[0] } };
  },

  // --- copies that succeed
  async 'zero-bytes'(c) {
    const host = [await put(c, Buffer.alloc(0), c.dir, 'empty.bin')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'one-fragment'(c) {
    const data = pattern(1000, 2);
    const host = [await put(c, data, c.dir, 'one.bin')];
    return { host, disk: { after: await observe(c.dir) }, extra: { sha256: sha256(data) } };
  },

  async 'many-fragments'(c) {
    const mib = 64;
    const { r, ms, mem, sourceSha } = await copySourceFile(c, mib, c.dir, 'big.bin');
    return {
      host: [hostStep('copy', r)],
      disk: { after: await observe(c.dir) },
      extra: {
        sha256: sourceSha,
        bytes: mib * 1024 * 1024,
        ms,
        rssBeforeKiB: mem.beforeKiB,
        rssPeakKiB: mem.peakKiB,
      },
    };
  },

  async 'non-ascii'(c) {
    const data = pattern(20_000, 3);
    const host = [
      await put(c, data, `${c.dir}/répertoire/子目录/`, 'Ünïcødé ファイル 📄.txt', { createPath: true }),
    ];
    return { host, disk: { after: await observe(c.dir) }, extra: { sha256: sha256(data) } };
  },

  // --- an existing target
  async 'exists-no-overwrite'(c) {
    file(join(c.dir, 'f.txt'), 'old content', 0o600);
    const host = [await put(c, Buffer.from('new content'), c.dir, 'f.txt')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'exists-overwrite'(c) {
    file(join(c.dir, 'f.txt'), 'old content', 0o640);
    const data = pattern(9000, 4);
    const host = [await put(c, data, c.dir, 'f.txt', { overwrite: true })];
    return { host, disk: { after: await observe(c.dir) }, extra: { sha256: sha256(data) } };
  },

  // --- CREATE_PATH
  async 'create-path'(c) {
    const host = [await put(c, Buffer.from('deep'), `${c.dir}/x/y/z/`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'create-path-no-trailing-slash'(c) {
    const host = [await put(c, Buffer.from('deep'), `${c.dir}/p/q`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'missing-dir'(c) {
    const host = [await put(c, Buffer.from('x'), `${c.dir}/missing/`, 'f.txt')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  // --- interrupted copies
  async 'cancel-midway-new'(c) {
    const data = pattern(FRAG * 20, 5);
    const host = await startAndWrite(c, data, 'c.bin', 5);
    const during = await observe(c.dir);
    host.push(hostStep('cancel', await c.host.cancel()));
    return { host, disk: { during, after: await observe(c.dir) } };
  },

  async 'cancel-midway-overwrite'(c) {
    file(join(c.dir, 'c.bin'), 'the old file', 0o644);
    const data = pattern(FRAG * 20, 6);
    const host = await startAndWrite(c, data, 'c.bin', 5, { overwrite: true });
    const during = await observe(c.dir);
    host.push(hostStep('cancel', await c.host.cancel()));
    return { host, disk: { during, after: await observe(c.dir) } };
  },

  async 'kill-9-midway'(c) {
    file(join(c.dir, 'k.bin'), 'the old file', 0o644);
    const data = pattern(FRAG * 100, 8);
    const host = await startAndWrite(c, data, 'k.bin', 50, { overwrite: true });
    await c.daemon.kill('SIGKILL');
    const killed = await observe(c.dir);
    await c.daemon.start();
    const restarted = await observe(c.dir);
    host.push(await put(c, data, c.dir, 'k.bin', { overwrite: true }));
    return {
      host,
      disk: { killed, restarted, final: await observe(c.dir) },
      extra: { sha256: sha256(data) },
    };
  },

  async 'hibernate-midway'(c) {
    file(join(c.dir, 'h.bin'), 'the old file', 0o644);
    const data = pattern(FRAG * 20, 9);
    const host = await startAndWrite(c, data, 'h.bin', 5, { overwrite: true });
    const before = c.registrations();
    c.shim.suspend();
    c.shim.resume();
    await c.waitRegistered(before);
    const resumed = await observe(c.dir);
    host.push(await put(c, data, c.dir, 'h.bin', { overwrite: true }));
    return { host, disk: { resumed, final: await observe(c.dir) }, extra: { sha256: sha256(data) } };
  },

  // --- a full disk (16 MiB ext4 image)
  async 'full-disk-overwrite'(c) {
    const mnt = await c.loopFs('small', 16);
    file(join(mnt, 'big.bin'), pattern(1024 * 1024, 10), 0o644);
    const freeBefore = freeBytes(mnt);
    const host = [await put(c, pattern(32 * 1024 * 1024, 11), mnt, 'big.bin', { overwrite: true })];
    const after = await observe(mnt);
    return { host, disk: { after }, extra: { freeBefore, freeAfter: freeBytes(mnt) } };
  },

  async 'full-disk-new'(c) {
    const mnt = await c.loopFs('small', 16);
    const freeBefore = freeBytes(mnt);
    const host = [await put(c, pattern(32 * 1024 * 1024, 12), mnt, 'new.bin')];
    return { host, disk: { after: await observe(mnt) }, extra: { freeBefore, freeAfter: freeBytes(mnt) } };
  },

  // --- refused paths
  async 'name-slash'(c) {
    mkdirSync(join(c.dir, 'sub'));
    const host = [await put(c, Buffer.from('evil'), c.dir, 'sub/evil')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'name-dot'(c) {
    const host = [await put(c, Buffer.from('x'), c.dir, '.', { overwrite: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'name-dotdot'(c) {
    mkdirSync(join(c.dir, 'in'));
    const host = [await put(c, Buffer.from('x'), join(c.dir, 'in'), '..', { overwrite: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'name-empty'(c) {
    const host = [await put(c, Buffer.from('x'), c.dir, '')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'relative-path'(c) {
    const host = [await put(c, Buffer.from('rel'), 'relative-case/sub/', 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir), cwd: await observe(c.cwd) } };
  },

  async 'dotdot-path'(c) {
    const host = [await put(c, Buffer.from('up'), `${c.dir}/a/../b/`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'symlink-final-dangling'(c) {
    mkdirSync(join(c.dir, 'victim'));
    symlinkSync('victim/planted', join(c.dir, 'link'));
    const host = [await put(c, Buffer.from('through the link'), c.dir, 'link')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'symlink-final-overwrite'(c) {
    file(join(c.dir, 'secret'), 'secret content', 0o600);
    symlinkSync('secret', join(c.dir, 'link'));
    const host = [await put(c, Buffer.from('through the link'), c.dir, 'link', { overwrite: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'symlink-dir'(c) {
    mkdirSync(join(c.dir, 'real'));
    symlinkSync('real', join(c.dir, 'linkdir'));
    const host = [await put(c, Buffer.from('via a linked dir'), `${c.dir}/linkdir/`, 'f.txt')];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'beyond-size'(c) {
    const host = [await put(c, pattern(7000, 13), c.dir, 'f.bin', { announcedSize: 100n })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'target-is-dir'(c) {
    mkdirSync(join(c.dir, 't'));
    const host = [
      await put(c, Buffer.from('x'), c.dir, 't', { overwrite: true }),
      await put(c, Buffer.from('x'), c.dir, 't'),
    ];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'path-is-file'(c) {
    file(join(c.dir, 'file.txt'), 'a file', 0o644);
    const host = [await put(c, Buffer.from('x'), `${c.dir}/file.txt/`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  // --- with an allow-list (`allow = <work>/allowed`, follow-symlinked-dirs = yes)
  async 'allow-outside'(c) {
    const host = [await put(c, Buffer.from('x'), `${c.dir}/x/y/`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(c.dir) } };
  },

  async 'allow-inside'(c) {
    const base = join(c.work, 'allowed', 'allow-inside');
    const host = [await put(c, Buffer.from('inside'), `${base}/in/`, 'f.txt', { createPath: true })];
    return { host, disk: { after: await observe(base) } };
  },

  async 'allow-symlink-escape'(c) {
    const base = join(c.work, 'allowed', 'allow-symlink-escape');
    mkdirSync(base);
    mkdirSync(join(c.dir, 'outside'));
    symlinkSync(join(c.dir, 'outside'), join(base, 'esc'));
    const host = [await put(c, Buffer.from('escape'), `${base}/esc/`, 'f.txt')];
    return { host, disk: { after: await observe(c.dir), allowed: await observe(base) } };
  },

  async 'follow-symlinked-dir'(c) {
    const base = join(c.work, 'allowed', 'follow-symlinked-dir');
    mkdirSync(join(base, 'real'), { recursive: true });
    symlinkSync('real', join(base, 'alias'));
    const host = [await put(c, Buffer.from('followed'), `${base}/alias/`, 'f.txt')];
    return { host, disk: { after: await observe(base) } };
  },

  // --- the benchmark: one big copy, timed, with the daemon's memory sampled
  async bench(c) {
    const mib = c.bench?.mib ?? 256;
    const target = c.bench?.targetDir ?? c.dir;
    const { r, ms, cpuMs, mem, sourceSha } = await copySourceFile(c, mib, target, 'bench.bin');
    const sha = r.status === HV_S_OK ? await sha256File(join(target, 'bench.bin')) : undefined;
    rmSync(join(target, 'bench.bin'), { force: true });
    return {
      host: [hostStep('copy', r)],
      disk: {},
      extra: {
        mib,
        ms,
        mbPerS: (mib * 1024 * 1024) / 1e6 / (ms / 1000),
        daemonCpuMs: cpuMs,
        rssBeforeKiB: mem.beforeKiB,
        rssPeakKiB: mem.peakKiB,
        intact: sha === sourceSha,
      },
    };
  },
};
