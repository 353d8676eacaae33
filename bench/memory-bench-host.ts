/**
 * The host side of bench/memory-bench.ts, run inside the shim harness: wait until the three
 * supervised daemons of the chroot have registered, measure them idle, serve each for a while,
 * measure again.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import type { HostScriptContext } from '../test/support/host-script.js';

export interface ProcessMemory {
  pid: number;
  name: string;
  pssKiB: number;
  anonKiB: number;
}
export interface Snapshot {
  processes: ProcessMemory[];
  totalPssKiB: number;
  totalAnonKiB: number;
}
export interface MemoryReport {
  idle: Snapshot;
  after: Snapshot;
  activity: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** PSS and anonymous memory of a process, from /proc/PID/smaps_rollup (NaN when unreadable). */
export function processMemory(pid: number | undefined): { pssKiB: number; anonKiB: number } {
  let text = '';
  try {
    if (pid) text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    // gone
  }
  const field = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { pssKiB: field('Pss'), anonKiB: field('Anonymous') };
}

/** Every Node process whose root is `root` (the chroot), by its name as ps shows it. */
function snapshot(root: string, match: (cmd: string) => boolean): Snapshot {
  const processes: ProcessMemory[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readlinkSync(`/proc/${d}/root`) !== root) continue;
      if (!readlinkSync(`/proc/${d}/exe`).endsWith('/node')) continue;
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').trim();
      if (!match(cmd)) continue;
      const mem = processMemory(Number(d));
      if (Number.isNaN(mem.pssKiB)) continue;
      processes.push({ pid: Number(d), name: cmd.slice(0, 48), ...mem });
    } catch {
      // gone, or not ours
    }
  }
  processes.sort((a, b) => a.name.localeCompare(b.name));
  return {
    processes,
    totalPssKiB: processes.reduce((s, p) => s + p.pssKiB, 0),
    totalAnonKiB: processes.reduce((s, p) => s + p.anonKiB, 0),
  };
}

export default async function memoryBench(ctx: HostScriptContext): Promise<MemoryReport> {
  const { root } = ctx.params as { root: string };
  for (const s of ['kvp', 'vss', 'fcopy'] as const) await ctx.waitReady(s, 60_000);
  const ours = (cmd: string) => /hv-supervisor|hv_(kvp|vss|fcopy)_daemon|hv-(kvp|vss|fcopy)-ts/.test(cmd);
  await sleep(3000);
  const idle = snapshot(root, ours);
  if (idle.processes.length !== 6) throw new Error(`six processes expected: ${JSON.stringify(idle)}`);

  const { kvp, vss, fcopy } = ctx.shim.host;
  for (let i = 0; i < 2000; i++) await kvp.addItem(`key-${i}`, `value ${i} `.repeat(20));
  for (let i = 0; i < 2000; i++) await kvp.enumerate(0, i);
  for (let i = 0; i < 500; i++) await kvp.getItem(`key-${i}`);
  for (const pool of [0, 1, 2, 3, 4]) await kvp.listItems(pool);
  const chunk = Buffer.alloc(16 * 1024 * 1024, 0x5a);
  for (let i = 0; i < 4; i++) {
    const r = await fcopy.copyBuffer(chunk, '/tmp', `copy-${i}.bin`, { overwrite: true });
    if (r.status !== 0) throw new Error(`fcopy: ${JSON.stringify(r)}`);
  }
  for (let i = 0; i < 50; i++) {
    await vss.hotBackupCheck();
    await vss.getDmInfo();
  }
  const activity =
    'KVP 2,000 SETs of new 200-byte values, 2,000 ENUMERATEs, 500 GETs, every pool listed; FCOPY four 16 MiB copies; VSS 50 HOT_BACKUP and 50 GET_DM_INFO';
  await sleep(2000);
  const after = snapshot(root, ours);

  return { idle, after, activity };
}
