/**
 * KVP benchmark (a report, not a test): host round trips per second through the kernel-shim's
 * device files, hv-kvp-ts next to the upstream hv_kvp_daemon, with 10, 1,000 and 10,000 records in
 * the pool, and each daemon's memory. Run as root:  node --import tsx bench/kvp-bench.ts
 * (prefix `taskset -c 1` to run the shim, the host and the daemon on one CPU; see bench/README.md).
 * Pools are pre-filled on disk (2560-byte records) before the daemon starts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeStringField } from '../uapi/strings.js';
import { OURS, UPSTREAM, runInShim } from '../test/support/shim-harness.js';

function poolFile(records: number): Buffer {
  const buf = Buffer.alloc(records * 2560);
  for (let i = 0; i < records; i++) {
    writeStringField(buf, { offset: i * 2560, size: 512 }, `key-${i}`, 'utf8');
    writeStringField(buf, { offset: i * 2560 + 512, size: 2048 }, `value ${i} `.repeat(8), 'utf8');
  }
  return buf;
}

interface Result {
  records: number;
  ops: number;
  perSecond: Record<string, number>;
  memory: { idle: { pssKiB: number; anonKiB: number }; loaded: { pssKiB: number; anonKiB: number } };
}

const sizes = (process.env.BENCH_SIZES ?? '10,1000,10000').split(',').map(Number);
const rows: string[] = [];
for (const records of sizes) {
  for (const [name, command] of [
    ['hv-kvp-ts', OURS.kvp],
    ['hv-kvp-ts --sync always', [...OURS.kvp, '--sync', 'always']],
    ['hv_kvp_daemon', UPSTREAM.kvp],
  ] as const) {
    const stateDir = mkdtempSync(join(tmpdir(), 'hv-kvp-bench-'));
    writeFileSync(join(stateDir, '.kvp_pool_0'), poolFile(records));
    const ops = records >= 10_000 ? 60 : 300;
    const { result } = await runInShim<Result>({
      services: ['kvp'],
      command,
      script: 'bench/kvp-bench-host.ts',
      params: { records, ops },
      stateDir,
      timeoutMs: 600_000,
    });
    rmSync(stateDir, { recursive: true, force: true });
    const p = result.perSecond;
    const m = result.memory;
    const row = `| ${records} | ${name} | ${p.set ?? p.update} | ${p.insert} | ${p.get} | ${p.enumerate} | ${(m.idle.pssKiB / 1024).toFixed(1)} / ${(m.idle.anonKiB / 1024).toFixed(1)} | ${(m.loaded.pssKiB / 1024).toFixed(1)} / ${(m.loaded.anonKiB / 1024).toFixed(1)} |`;
    rows.push(row);
    process.stdout.write(`${row}\n`);
  }
}
process.stdout.write(
  `\n| records | daemon | SET update/s | SET new/s | GET/s | ENUMERATE/s | MiB PSS / anon (start) | MiB PSS / anon (after) |\n|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`,
);
