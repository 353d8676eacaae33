/**
 * Crash safety of the pool store: a child process (pool-crash-child.ts) runs a storm of set() and
 * delete() and is killed with SIGKILL, either at a random moment or by itself in the middle of its
 * k-th pwrite/ftruncate/fdatasync (leaving a torn write). After every kill the pool is reopened
 * (recovery runs) and checked against a model of the acknowledged operations.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpPools } from '../../../daemons/kvp/pool.js';
import { decodeRecord } from '../../../daemons/kvp/pool-file.js';
import type { SyncMode } from '../../../daemons/kvp/pool-sync.js';
import { R, poolPath, tempDir } from './pool-support.js';

const CHILD = fileURLToPath(new URL('./pool-crash-child.ts', import.meta.url));
const tmp = tempDir('hv-kvp-crash-');
afterAll(() => tmp.cleanup());

type Op = ['set', string, string] | ['delete', string];

/** Run the child until it dies; returns its stdout. */
function runChild(
  dir: string,
  seed: number,
  crash: string,
  killAfterAcks: number,
  delayMs: number,
  sync: SyncMode,
) {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(seed), crash, sync], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let acks = 0;
  let killing = false;
  const kill = () => {
    if (!killing) {
      killing = true;
      setTimeout(() => child.kill('SIGKILL'), delayMs);
    }
  };
  const guard = setTimeout(() => child.kill('SIGKILL'), 8000);
  child.stdout.on('data', (d: Buffer) => {
    const text = d.toString();
    out += text;
    acks += text.split('\n').filter((l) => l === 'A').length;
    if (crash === '' && acks >= killAfterAcks) kill();
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise<{ out: string; err: string; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (_code, signal) => {
      clearTimeout(guard);
      resolve({ out, err, signal });
    }),
  );
}

interface LaneReport {
  rounds: number;
  acked: number;
  recoveries: string[];
}

/** One directory, `rounds` kills in a row, the model carried from round to round. */
async function lane(
  name: string,
  rounds: number,
  injected: boolean,
  seed0: number,
  sync: SyncMode = 'always',
): Promise<LaneReport> {
  const dir = join(tmp.dir, name);
  const model = new Map<string, string>();
  const report: LaneReport = { rounds, acked: 0, recoveries: [] };
  let rnd = seed0;
  const next = (n: number) => {
    rnd = (rnd * 1103515245 + 12345) % 2147483648;
    return rnd % n;
  };
  for (let round = 0; round < rounds; round++) {
    const crash = !injected ? '' : round % 2 ? `any:${1 + next(30)}` : `torn:${1 + next(3)}`;
    const { out, err, signal } = await runChild(
      dir,
      seed0 * 1000 + round + 1,
      crash,
      1 + next(25),
      next(4),
      sync,
    );
    expect(signal, `child died on its own: ${err}`).toBe('SIGKILL');

    // the acknowledged operations, and the one in flight when the kill came (if any)
    let inflight: Op | undefined;
    for (const line of out.split('\n')) {
      if (line.startsWith('B ')) inflight = JSON.parse(line.slice(2)) as Op;
      else if (line === 'A' && inflight) {
        if (inflight[0] === 'set') model.set(inflight[1], inflight[2]);
        else model.delete(inflight[1]);
        report.acked++;
        inflight = undefined;
      }
    }

    const logger = memoryLogger();
    const store = await KvpPools.open({ dir, logger, partialGraceMs: 20 });
    try {
      const served = await store.records(1);
      const actual = new Map(served.map((r) => [r.key, r.value]));
      expect(actual.size, 'a key appears twice').toBe(served.length);
      const keys = new Set([...model.keys(), ...actual.keys()]);
      const loose = inflight?.[1];
      for (const key of keys) {
        if (key === loose) continue;
        expect(actual.get(key), `round ${round} (${name}): key ${key}`).toBe(model.get(key));
      }
      if (inflight && loose) {
        const applied = inflight[0] === 'set' ? inflight[2] : undefined;
        expect([model.get(loose), applied]).toContain(actual.get(loose));
        if (actual.has(loose)) model.set(loose, actual.get(loose) as string);
        else model.delete(loose);
      }
      // the file: whole valid records, then at most a trailing partial that nobody serves
      const raw = readFileSync(poolPath(dir, 1));
      const whole = Math.floor(raw.length / R);
      for (let slot = 0; slot < whole; slot++) expect(decodeRecord(raw, slot * R).ok).toBe(true);
      expect(whole).toBe(served.length);
      expect(statSync(`${poolPath(dir, 1)}.journal`).size).toBe(0);
      expect(logger.lines.filter((l) => /not served/.test(l.msg))).toEqual([]);
      report.recoveries.push(
        ...logger.lines
          .filter((l) => /journal|rolled back|finished an interrupted/.test(l.msg))
          .map((l) => l.msg),
      );
    } finally {
      await store.close();
    }
  }
  return report;
}

describe('crash safety', () => {
  it('keeps every acknowledged record through 40 SIGKILLs (random moments and torn writes)', async () => {
    const [injected, random1, random2] = await Promise.all([
      lane('injected', 16, true, 7),
      lane('random-1', 12, false, 11),
      lane('random-2', 12, false, 13),
    ]);
    const acked = injected.acked + random1.acked + random2.acked;
    expect(acked).toBeGreaterThan(100);
    // the injected lane tore an in-place write 8 times: each was rolled back at the next open
    expect(injected.recoveries.filter((m) => /rolled back/.test(m))).toHaveLength(8);
  }, 60_000);

  it("the same with deferred and with no syncing (the daemon's default and --no-sync)", async () => {
    const lanes = await Promise.all([
      lane('deferred-injected', 8, true, 17, 'deferred'),
      lane('deferred-random', 10, false, 19, 'deferred'),
      lane('never-injected', 8, true, 23, 'never'),
    ]);
    expect(lanes.reduce((n, l) => n + l.acked, 0)).toBeGreaterThan(60);
    // four torn in-place writes each (a torn prefix of an any:K kill may add more), all rolled back
    for (const l of [lanes[0], lanes[2]])
      expect(l?.recoveries.filter((m) => /rolled back/.test(m)).length).toBeGreaterThanOrEqual(4);
  }, 60_000);
});
