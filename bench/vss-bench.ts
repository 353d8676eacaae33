/**
 * VSS benchmark (a report, not a test): FREEZE and THAW latency as the host sees it (request to
 * reply, through the kernel-shim's VMBus ring, driver and FUSE device file), hv-vss-ts next to
 * the upstream hv_vss_daemon, with 1 and 10 filesystems, clean and with dirty data to flush.
 * Every filesystem is a loop-mounted ext4 image in the freeze sandbox; nothing of the machine is
 * frozen. Run as root:  node --import tsx bench/vss-bench.ts   (env BENCH_CYCLES, BENCH_COUNTS)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runHarness } from '../test/daemons/vss/support/run-harness.js';
import { buildBundle } from '../test/daemons/vss/support/vss-sandbox.js';

interface BenchResult {
  freeze: number[];
  thaw: number[];
  frozenAtEnd: Record<string, boolean | string>;
}

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

const fmt = (x: number) => x.toFixed(2);
const cycles = Number(process.env.BENCH_CYCLES ?? 30);
const counts = (process.env.BENCH_COUNTS ?? '1,10').split(',').map(Number);
const dirties = (process.env.BENCH_DIRTY_KIB ?? '0,1024').split(',').map(Number);

const dir = mkdtempSync(join(tmpdir(), 'hv-vss-bench-'));
const bundle = join(dir, 'hv-vss-ts.mjs');
buildBundle(bundle);
const rows: string[] = [];
try {
  for (const dirtyKiB of dirties) {
    for (const count of counts) {
      for (const [label, daemon] of [
        ['hv_vss_daemon', 'upstream'],
        ['hv-vss-ts', 'ours'],
      ] as const) {
        const r = await runHarness<BenchResult>(
          'bench',
          { bundle, daemon, bench: { count, cycles, dirtyKiB } },
          300_000,
        );
        if (Object.values(r.frozenAtEnd).some((v) => v !== false)) throw new Error('left frozen!');
        const row = `| ${count} | ${dirtyKiB === 0 ? 'clean' : `${dirtyKiB} KiB each`} | ${label} | ${fmt(quantile(r.freeze, 0.5))} | ${fmt(quantile(r.freeze, 0.9))} | ${fmt(quantile(r.thaw, 0.5))} | ${fmt(quantile(r.thaw, 0.9))} |`;
        rows.push(row);
        process.stderr.write(`${row}\n`);
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(
  `\n${cycles} FREEZE+THAW cycles per row (after 3 warm-up cycles); ms from the host's request to the guest's reply.\n\n` +
    `| filesystems | data to flush | daemon | FREEZE median | FREEZE p90 | THAW median | THAW p90 |\n|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`,
);
