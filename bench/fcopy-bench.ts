/**
 * FCOPY benchmark: one big host-to-guest copy (default 256 MiB) through the kernel-shim's FUSE
 * device, with our daemon and with the upstream C daemon (/usr/sbin/hv_fcopy_daemon -n), to a tmpfs
 * and to a directory on disk; the daemon's resident memory is sampled every 25 ms during the copy,
 * and its CPU time (user + system) is read from /proc before and after. Runs alternate between the
 * daemons so that a busy machine slows them alike. Our daemon runs as it ships: compiled to
 * JavaScript (tsc, into a temporary directory), without tsx; `--tsx` runs the TypeScript sources.
 * `--diagnose` adds our daemon with a blocking read (see BLOCKING_READ_ENTRY). Needs root (private
 * mount namespaces, FUSE). Prints a Markdown table on stdout, each run on stderr.
 *
 *   node --import tsx bench/fcopy-bench.ts [--mib 256] [--runs 3] [--disk-dir /var/tmp] [--tsx] [--diagnose]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DaemonKind, REPO, runHarness } from '../test/daemons/fcopy/run-harness.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? def) : def;
}

type Variant = 'upstream' | 'ours' | 'blocking-read';

const LABELS: Record<Variant, string> = {
  upstream: 'hv_fcopy_daemon (C)',
  ours: 'hv-fcopy-ts',
  'blocking-read': 'diagnostic: hv-fcopy-ts with a blocking read',
};

interface Sample {
  mbPerS: number;
  ms: number;
  daemonCpuMs: number;
  rssBeforeKiB: number;
  rssPeakKiB: number;
  intact: boolean;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

/**
 * Diagnostic only: our daemon with a device binding that reads without polling first, i.e. blocks
 * in read(2) as upstream does. That breaks the project's rule (a read blocked in the kernel cannot
 * be stopped); it exists to show what the poll before each read costs through the shim.
 */
const BLOCKING_READ_ENTRY = `import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { run } from './daemons/fcopy/main.js';
import { main } from './daemons/common/run-daemon.js';
const binding = {
  async open(path) {
    const fd = openSync(path, constants.O_RDWR);
    return {
      path,
      async read(size) { const b = Buffer.allocUnsafe(size); return b.subarray(0, readSync(fd, b, 0, size, null)); },
      write: (d) => writeSync(fd, d),
      close: () => closeSync(fd),
    };
  },
};
main((argv) => run(argv, binding));
`;

/** Compile the project as `npm run build` does, into a directory of our own. */
function compile(): { dir: string; commands: Record<'ours' | 'blocking-read', string[]> } {
  const dir = mkdtempSync(join(tmpdir(), 'fcopy-bench-dist-'));
  const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  // Type errors elsewhere in a tree being edited do not stop the emit.
  spawnSync(process.execPath, [tsc, '-p', join(REPO, 'tsconfig.build.json'), '--outDir', dir], {
    stdio: 'ignore',
  });
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  copyFileSync(join(REPO, 'package.json'), join(dir, 'package.json'));
  writeFileSync(join(dir, 'blocking-read.mjs'), BLOCKING_READ_ENTRY);
  return {
    dir,
    commands: {
      ours: [process.execPath, join(dir, 'daemons', 'fcopy', 'main.js')],
      'blocking-read': [process.execPath, join(dir, 'blocking-read.mjs')],
    },
  };
}

async function measure(variant: Variant, mib: number, target: string | undefined, command?: string[]) {
  const daemon: DaemonKind = variant === 'upstream' ? 'upstream' : 'ours';
  const out = await runHarness(
    {
      daemon,
      cases: ['bench'],
      bench: { mib, ...(target ? { targetDir: target } : {}) },
      ...(command ? { oursCommand: command } : {}),
    },
    900_000,
  );
  const r = out.results.bench;
  if (!r || r.host[0]?.status !== 'HV_S_OK')
    throw new Error(`${variant}: the copy failed: ${JSON.stringify(r?.host)}`);
  const s = r.extra as unknown as Sample;
  if (!s.intact) throw new Error(`${variant}: the copy arrived damaged`);
  return s;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (mount namespaces, FUSE)');
  const mib = Number(arg('mib', '256'));
  const runs = Number(arg('runs', '3'));
  const diskParent = arg('disk-dir', '/var/tmp');
  const useTsx = process.argv.includes('--tsx');
  const variants: Variant[] = ['upstream', 'ours'];
  if (process.argv.includes('--diagnose')) {
    if (useTsx) throw new Error('--diagnose needs the compiled daemon (leave out --tsx)');
    variants.push('blocking-read');
  }
  const diskDir = mkdtempSync(join(diskParent, 'fcopy-bench-'));
  const built = useTsx ? undefined : compile();
  const rows: string[] = [];
  const load0 = loadavg()[0] ?? 0;
  try {
    for (const [where, target] of [
      ['tmpfs', undefined],
      [`disk (${diskParent})`, diskDir],
    ] as const) {
      const samples: Record<Variant, Sample[]> = { upstream: [], ours: [], 'blocking-read': [] };
      for (let i = 0; i < runs; i++) {
        for (const v of variants) {
          const s = await measure(v, mib, target, v === 'upstream' ? undefined : built?.commands[v]);
          samples[v].push(s);
          process.stderr.write(
            `${v} → ${where}: ${s.mbPerS.toFixed(1)} MB/s, CPU ${(s.daemonCpuMs / 1000).toFixed(2)} s, ` +
              `RSS ${s.rssBeforeKiB} → ${s.rssPeakKiB} KiB\n`,
          );
        }
      }
      for (const v of variants) {
        const ss = samples[v];
        const label = v === 'ours' ? `${LABELS.ours} (${useTsx ? 'tsx' : 'compiled'})` : LABELS[v];
        rows.push(
          `| ${label} | ${where} | ${median(ss.map((s) => s.mbPerS)).toFixed(1)} | ` +
            `${Math.min(...ss.map((s) => s.mbPerS)).toFixed(1)}–${Math.max(...ss.map((s) => s.mbPerS)).toFixed(1)} | ` +
            `${(median(ss.map((s) => s.ms)) / 1000).toFixed(1)} | ` +
            `${(median(ss.map((s) => s.daemonCpuMs)) / 1000).toFixed(2)} | ` +
            `${(median(ss.map((s) => s.rssBeforeKiB)) / 1024).toFixed(1)} | ` +
            `${(Math.max(...ss.map((s) => s.rssPeakKiB)) / 1024).toFixed(1)} |`,
        );
      }
    }
  } finally {
    rmSync(diskDir, { recursive: true, force: true });
    if (built) rmSync(built.dir, { recursive: true, force: true });
  }
  const load1 = loadavg()[0] ?? 0;
  process.stdout.write(
    [
      `${mib} MiB copy, median of ${runs} alternating runs; Node ${process.version}, ${cpus().length} CPUs, ` +
        `load average ${load0.toFixed(1)} → ${load1.toFixed(1)}`,
      '',
      '| daemon | target | MB/s (median) | MB/s (range) | seconds | daemon CPU s | RSS before (MiB) | RSS peak during copy (MiB) |',
      '|---|---|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
    ].join('\n'),
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`fcopy-bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
