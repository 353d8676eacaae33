/**
 * Child process of pool-crash.test.ts: a storm of set()/delete() on pool 1 of `dir`, reporting on
 * stdout (synchronously) `B <json op>` before each operation and `A` once it resolved, until killed.
 *
 *   node --import tsx pool-crash-child.ts <dir> <seed> [any:K | torn:N] [always | deferred | never]
 *
 * any:K   the K-th mutating call (pwrite, ftruncate, fdatasync) kills the process with SIGKILL
 *         itself: a pwrite first writes a random prefix of its data (a torn write), an ftruncate
 *         happens or not.
 * torn:N  the N-th in-place write of a journaled update (the pwrite right after a journal write)
 *         is torn just past the first byte where it differs from the file, then SIGKILL.
 * Without either, the parent kills it at a random moment.
 */
import { readSync } from 'node:fs';
import { writeSync } from 'node:fs';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpPools } from '../../../daemons/kvp/pool.js';
import { type PoolIo, nodePoolIo } from '../../../daemons/kvp/pool-io.js';
import type { SyncMode } from '../../../daemons/kvp/pool-sync.js';

const [dir, seedArg, crashArg = '', syncArg = 'always'] = process.argv.slice(2);
if (!dir || !seedArg) throw new Error('usage: pool-crash-child.ts <dir> <seed> [any:K | torn:N]');

let seed = Number(seedArg) >>> 0 || 1;
function random(): number {
  // xorshift32: reproducible from the seed
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 0x1_0000_0000;
}
const pick = (n: number): number => Math.floor(random() * n);

function die(): never {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

const [mode, countArg] = crashArg.split(':');
const crashAt = Number(countArg ?? 0);
let mutations = 0;
let journaledWrites = 0;
let lastWasJournal = false;
const crashNow = (): boolean => mode === 'any' && ++mutations === crashAt;

/** Write `data` up to just past its first byte that differs from the file, then die. */
function tearAndDie(fd: number, data: Buffer, position: number): never {
  const old = Buffer.alloc(data.length);
  readSync(fd, old, 0, data.length, position);
  let first = 0;
  while (first < data.length && data[first] === old[first]) first++;
  writeSync(fd, data, 0, Math.min(first + 1, data.length), position);
  die();
}

const io: PoolIo = {
  ...nodePoolIo,
  write: async (fd, data, position) => {
    const journal = data.subarray(0, 4).toString('latin1') === 'KVPJ';
    if (mode === 'torn' && lastWasJournal && !journal && ++journaledWrites === crashAt)
      tearAndDie(fd, data, position);
    lastWasJournal = journal;
    if (crashNow()) {
      const cut = pick(data.length);
      if (cut > 0) writeSync(fd, data, 0, cut, position);
      die();
    }
    return nodePoolIo.write(fd, data, position);
  },
  truncate: (fd, size) => {
    if (crashNow()) {
      if (random() < 0.5) nodePoolIo.truncate(fd, size);
      die();
    }
    nodePoolIo.truncate(fd, size);
  },
  datasync: async (fd) => {
    if (crashNow()) die();
    return nodePoolIo.datasync(fd);
  },
};

const say = (line: string): void => {
  // stdout is a non-blocking pipe: when the parent lags, retry instead of dying of EAGAIN.
  const bytes = Buffer.from(`${line}\n`);
  for (let off = 0; off < bytes.length;) {
    try {
      off += writeSync(1, bytes, off);
    } catch (e) {
      if ((e as { code?: string }).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
};

const alphabet = ['a', 'b', 'é', '€', '😀', ' ', 'z'];
function text(maxChars: number): string {
  let s = '';
  const n = pick(maxChars);
  for (let i = 0; i < n; i++) s += alphabet[pick(alphabet.length)];
  return s;
}

const sync = syncArg as SyncMode;
const store = await KvpPools.open({
  dir,
  logger: memoryLogger(),
  partialGraceMs: 20,
  io,
  sync,
  syncDelayMs: 5,
});
const keys = (await store.records(1)).map((r) => r.key);
let next = 0;
for (;;) {
  const roll = random();
  if (keys.length < 8 || roll < 0.35) {
    const key = `key-${seed.toString(36)}-${next++}`;
    const value = `${key}=${text(450)}`;
    say(`B ${JSON.stringify(['set', key, value])}`);
    await store.set(1, key, value);
    if (!keys.includes(key)) keys.push(key);
  } else if (roll < 0.8) {
    const key = keys[pick(keys.length)] as string;
    const value = `${key}:${text(450)}`;
    say(`B ${JSON.stringify(['set', key, value])}`);
    await store.set(1, key, value);
  } else {
    const at = pick(keys.length);
    const key = keys[at] as string;
    say(`B ${JSON.stringify(['delete', key])}`);
    await store.delete(1, key);
    keys.splice(at, 1);
  }
  say('A');
}
