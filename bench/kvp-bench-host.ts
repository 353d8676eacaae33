/**
 * The host side of bench/kvp-bench.ts, run inside the shim harness: round trips per second for
 * SET (update of an existing key, and a new key), GET and ENUMERATE against a pool pre-filled with
 * `records` records, and the daemon's memory.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { processMemory } from './memory-bench-host.js';
import type { HostScriptContext } from '../test/support/host-script.js';

/** CPU time the process has run, all threads, in ns (/proc/PID/task/TID/schedstat). */
function cpuNs(pid: number | undefined): number {
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`))
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
  return total;
}

export default async function bench(ctx: HostScriptContext) {
  const { records, ops, passes: passCount } = ctx.params as { records: number; ops: number; passes: number };
  const h = ctx.shim.host.kvp;
  const pid = ctx.daemon().pid;
  const idle = processMemory(pid);
  // Warm up (both daemons alike, and the shim itself): JIT-compiled code reaches its steady state
  // only after several thousand requests (with 1,500 of each, our daemon still spent ~10 µs more
  // per request in the first measured pass than in the next). Reads, 5,000 of each, then writes
  // (fewer at 10,000 records, where each of upstream's takes ~20 ms), then reads again for at
  // least 1.5 s, so that no deferred fdatasync of the warm-up writes lands in a measured read.
  const readPair = async (i: number) => {
    await h.getItem(`key-${i % records}`);
    await h.enumerate(0, i % records);
  };
  for (let i = 0; i < 5000; i++) await readPair(i);
  for (let i = 0, n = records >= 10_000 ? 300 : 1500; i < n; i++) await h.addItem(`warm-${i % 10}`, 'x');
  for (let i = 0, t0 = performance.now(); i < 1000 || performance.now() - t0 < 1500; i++) await readPair(i);

  const pick = (i: number) => `key-${(i * 7919) % records}`;
  type Operation = {
    n: number;
    fn: (i: number) => Promise<unknown>;
    after?: (i: number) => Promise<unknown>;
  };
  // Reads: 1,000 a pass at every size. Writes: `ops` a pass (fewer at 10,000 records).
  const reads: Record<string, Operation> = {
    get: { n: 1000, fn: (i) => h.getItem(pick(i)) },
    enumerate: { n: 1000, fn: (i) => h.enumerate(0, (i * 7919) % records) },
  };
  const writes: Record<string, Operation> = {
    update: { n: ops, fn: (i) => h.addItem(pick(i), `updated ${i}`) },
    // New keys, removed again after each pass (not measured) so that the pool keeps its size.
    insert: {
      n: Math.max(10, Math.floor(ops / 3)),
      fn: (i) => h.addItem(`new-${i}`, `value ${i}`),
      after: (i) => h.removeItem(`new-${i}`),
    },
  };
  const passes: Record<string, number[]> = {};
  const daemonNs: Record<string, number> = {};
  const shimNs: Record<string, number> = {};
  // `passCount` passes of each operation, the operations of a group taking turns, so that whatever the
  // runtime does in the background (a late JIT compilation, a GC) is not charged to one alone.
  // The reads first, then the writes: a write's deferred fdatasync is never charged to a read.
  for (const group of [reads, writes]) {
    for (let pass = 0; pass < passCount; pass++) {
      for (const [name, { n, fn, after }] of Object.entries(group)) {
        const d0 = cpuNs(pid);
        const s0 = cpuNs(process.pid);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) await fn(pass * n + i);
        (passes[name] ??= []).push((n / (performance.now() - t0)) * 1000);
        daemonNs[name] = (daemonNs[name] ?? 0) + cpuNs(pid) - d0;
        shimNs[name] = (shimNs[name] ?? 0) + cpuNs(process.pid) - s0;
        if (after) for (let i = 0; i < n; i++) await after(pass * n + i);
      }
    }
  }
  const perSecond: Record<string, number> = {};
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  /** The daemon's CPU time per request (µs, every thread, all passes) of each operation. */
  const cpuPerRequest: Record<string, number> = {};
  /** The same for this process: the kernel-shim and the simulated host. */
  const shimCpuPerRequest: Record<string, number> = {};
  const us = (ns: number, n: number) => Math.round(ns / (passCount * n) / 100) / 10;
  for (const [name, { n }] of Object.entries({ ...reads, ...writes })) {
    perSecond[name] = Math.round(median(passes[name] ?? []));
    cpuPerRequest[name] = us(daemonNs[name] ?? NaN, n);
    shimCpuPerRequest[name] = us(shimNs[name] ?? NaN, n);
  }
  const loaded = processMemory(pid);
  const check = await h.getItem(pick(1));
  return {
    records,
    ops,
    perSecond,
    cpuPerRequest,
    shimCpuPerRequest,
    memory: { idle, loaded },
    sample: check.status,
  };
}
