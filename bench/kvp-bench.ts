/**
 * KVP benchmark (a report, not a test): host round trips per second through the kernel-shim's
 * device files, hv-kvp-ts next to the upstream hv_kvp_daemon, with 10, 1,000 and 10,000 records in
 * the pool, and each daemon's memory. Run as root:  node --import tsx bench/kvp-bench.ts
 * (prefix `taskset -c 1` to run the shim, the host and the daemon on one CPU; see bench/README.md).
 * Pools are pre-filled on disk (2560-byte records) before the daemon starts.
 *
 *   BENCH_SIZES=10,1000,10000   pool sizes       BENCH_ROUNDS=5   runs per daemon (medians)
 *   BENCH_PASSES=9              passes of each operation in a run (medians)
 *   BENCH_DAEMONS=hv-kvp-ts,hv_kvp_daemon        only these rows (names as in the table)
 *   BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'   extra Node options for hv-kvp-ts
 *   BENCH_SHIM_NODE_ARGS=--single-threaded-gc   Node options for the shim's own process
 *                               (default --max-semi-space-size=8; see shimArgs)
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
  /** The daemon's CPU time per request, µs. */
  cpuPerRequest: Record<string, number>;
  /** The kernel-shim's and simulated host's CPU time per request, µs. */
  shimCpuPerRequest: Record<string, number>;
  memory: { idle: { pssKiB: number; anonKiB: number }; loaded: { pssKiB: number; anonKiB: number } };
}

const sizes = (process.env.BENCH_SIZES ?? '10,1000,10000').split(',').map(Number);
/** Each daemon runs this many times, the daemons taking turns; each figure is the median of the runs. */
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
/** Passes of each operation within a run; a rate is the median of its passes. */
const passes = Number(process.env.BENCH_PASSES ?? 9);
const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
/**
 * The shim's own Node options. By default its young generation is capped at 8 MiB per semi-space:
 * with V8's default (16 MiB) the shim's heap settles at random, run by run, into a state where an
 * incremental mark-compact starts every ~50 ms (old-generation headroom smaller than the young
 * generation), which adds ~30-40 µs to every request of that run, whatever the daemon.
 */
const shimArgs = (process.env.BENCH_SHIM_NODE_ARGS ?? '--max-semi-space-size=8').split(/\s+/).filter(Boolean);
const ours = [OURS.kvp[0], ...nodeArgs, ...OURS.kvp.slice(1)];
const only = process.env.BENCH_DAEMONS?.split(',');
const DAEMONS = (
  [
    ['hv-kvp-ts', ours],
    ['hv-kvp-ts --sync always', [...ours, '--sync', 'always']],
    ['hv_kvp_daemon', UPSTREAM.kvp],
  ] as const
).filter(([name]) => !only || only.includes(name));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const rows: string[] = [];
/** CPU time per request, µs: the daemon's (every thread) / the kernel-shim's and simulated host's. */
const cpuRows: string[] = [];
for (const records of sizes) {
  const runs = new Map<string, Result[]>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, command] of DAEMONS) {
      const stateDir = mkdtempSync(join(tmpdir(), 'hv-kvp-bench-'));
      writeFileSync(join(stateDir, '.kvp_pool_0'), poolFile(records));
      const ops = records >= 10_000 ? 60 : 300;
      const { result } = await runInShim<Result>({
        services: ['kvp'],
        command,
        script: 'bench/kvp-bench-host.ts',
        params: { records, ops, passes },
        stateDir,
        timeoutMs: 600_000,
        shimNodeArgs: shimArgs,
      });
      rmSync(stateDir, { recursive: true, force: true });
      runs.set(name, [...(runs.get(name) ?? []), result]);
      const p = result.perSecond;
      const c = result.cpuPerRequest;
      const s = result.shimCpuPerRequest;
      process.stdout.write(
        `round ${round + 1}: ${records} records, ${name}: SET ${p.update}/${p.insert}, GET ${p.get}, ENUMERATE ${p.enumerate}` +
          ` (daemon CPU µs per request: SET ${c.update}/${c.insert}, GET ${c.get}, ENUMERATE ${c.enumerate}; shim: SET ${s.update}/${s.insert}, GET ${s.get}, ENUMERATE ${s.enumerate})\n`,
      );
    }
  }
  for (const [name] of DAEMONS) {
    const rs = runs.get(name) ?? [];
    const m = (f: (r: Result) => number) => median(rs.map(f));
    const kib = (f: (r: Result) => number) => (m(f) / 1024).toFixed(1);
    const row = `| ${records} | ${name} | ${m((r) => r.perSecond.update!)} | ${m((r) => r.perSecond.insert!)} | ${m((r) => r.perSecond.get!)} | ${m((r) => r.perSecond.enumerate!)} | ${kib((r) => r.memory.idle.pssKiB)} / ${kib((r) => r.memory.idle.anonKiB)} | ${kib((r) => r.memory.loaded.pssKiB)} / ${kib((r) => r.memory.loaded.anonKiB)} |`;
    rows.push(row);
    const cpu = (op: string) => `${m((r) => r.cpuPerRequest[op]!)} / ${m((r) => r.shimCpuPerRequest[op]!)}`;
    cpuRows.push(
      `| ${records} | ${name} | ${cpu('update')} | ${cpu('insert')} | ${cpu('get')} | ${cpu('enumerate')} |`,
    );
  }
}
process.stdout.write(
  `\nMedians of ${rounds} runs per daemon (taking turns).\n\n| records | daemon | SET update/s | SET new/s | GET/s | ENUMERATE/s | MiB PSS / anon (start) | MiB PSS / anon (after) |\n|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`,
);
process.stdout.write(
  `\nCPU time per request, µs, daemon / kernel-shim and host (medians):\n\n| records | daemon | SET update | SET new | GET | ENUMERATE |\n|---|---|---|---|---|---|\n${cpuRows.join('\n')}\n`,
);
