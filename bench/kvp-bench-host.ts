/**
 * The host side of bench/kvp-bench.ts, run inside the shim harness: round trips per second for
 * SET (update of an existing key, and a new key), GET and ENUMERATE against a pool pre-filled with
 * `records` records, and the daemon's memory.
 */
import { processMemory } from './memory-bench-host.js';
import type { HostScriptContext } from '../test/support/host-script.js';

/** The daemon process: the harness may run it under a wrapper; take the deepest descendant. */
function daemonPid(ctx: HostScriptContext): number | undefined {
  return ctx.daemon().pid;
}

export default async function bench(ctx: HostScriptContext) {
  const { records, ops } = ctx.params as { records: number; ops: number };
  const h = ctx.shim.host.kvp;
  /** Round trips per second: the median of three passes of n requests. */
  const rate = async (fn: (i: number) => Promise<unknown>, n: number) => {
    const passes: number[] = [];
    for (let pass = 0; pass < 3; pass++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await fn(pass * n + i);
      passes.push((n / (performance.now() - t0)) * 1000);
    }
    return Math.round(passes.sort((a, b) => a - b)[1] ?? 0);
  };
  const idle = processMemory(daemonPid(ctx));
  // Warm up (both daemons alike, and the shim itself): JIT-compiled code is slow for its first
  // thousand requests or so. Reads 1,500 of each; writes fewer at 10,000 records, where each of
  // upstream's takes ~20 ms.
  for (let i = 0; i < 1500; i++) {
    await h.getItem(`key-${i % records}`);
    await h.enumerate(0, i % records);
  }
  for (let i = 0, n = records >= 10_000 ? 300 : 1500; i < n; i++) await h.addItem(`warm-${i % 10}`, 'x');
  const pick = (i: number) => `key-${(i * 7919) % records}`;
  // Reads: 1,000 a pass at every size. Writes: `ops` a pass (fewer at 10,000 records).
  const get = await rate((i) => h.getItem(pick(i)), 1000);
  const enumerate = await rate((i) => h.enumerate(0, (i * 7919) % records), 1000);
  const update = await rate((i) => h.addItem(pick(i), `updated ${i}`), ops);
  const insert = await rate((i) => h.addItem(`new-${i}`, `value ${i}`), Math.max(10, Math.floor(ops / 3)));
  const loaded = processMemory(daemonPid(ctx));
  const check = await h.getItem(pick(1));
  return {
    records,
    ops,
    perSecond: { get, enumerate, update, insert },
    memory: { idle, loaded },
    sample: check.status,
  };
}
