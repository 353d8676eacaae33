/** The KVP pool store against real files in temp directories. */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
  writeSync,
  appendFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpPools, type KvpPoolsOptions } from '../../../daemons/kvp/pool.js';
import { encodeRecord } from '../../../daemons/kvp/pool-file.js';
import { encodeJournal } from '../../../daemons/kvp/pool-journal.js';
import { type FileStat, type PoolIo, nodePoolIo } from '../../../daemons/kvp/pool-io.js';
import { R, fileRecords, poolPath, records, tempDir } from './pool-support.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: Partial<KvpPoolsOptions> = {}, prepare?: (dir: string) => void) {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const dir = join(t.dir, 'hyperv');
  if (prepare) {
    mkdirSync(dir, { recursive: true });
    prepare(dir);
  }
  const logger = memoryLogger();
  const store = await KvpPools.open({ dir, logger, partialGraceMs: 30, ...opts });
  cleanups.push(() => store.close());
  return { dir, store, logger, path: (n: number) => poolPath(dir, n) };
}

/** A C-daemon-like record: the strings, then non-zero garbage after each NUL. */
function cRecord(key: string, value: string): Buffer {
  const buf = Buffer.alloc(R, 0x5a);
  const k = Buffer.from(key);
  k.copy(buf);
  buf[k.length] = 0;
  const v = Buffer.from(value);
  v.copy(buf, 512);
  buf[512 + v.length] = 0;
  return buf;
}

function python(script: string): string {
  const r = spawnSync('python3', ['-c', script]);
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

describe('opening', () => {
  it('creates the directory 0755, the pool files 0644 and the journals 0600 (umask 022)', async () => {
    const old = process.umask(0o022);
    try {
      const { dir } = await setup();
      expect(statSync(dir).mode & 0o7777).toBe(0o755);
      for (let n = 0; n < 5; n++) {
        const st = statSync(poolPath(dir, n));
        expect(st.mode & 0o7777).toBe(0o644);
        expect(st.size).toBe(0);
        expect(statSync(`${poolPath(dir, n)}.journal`).mode & 0o7777).toBe(0o600);
      }
      expect(existsSync(poolPath(dir, 5))).toBe(false);
    } finally {
      process.umask(old);
    }
  });

  it('never truncates or rewrites existing files, partial records and garbage included', async () => {
    const contents = [
      Buffer.concat([cRecord('a', '1'), cRecord('b', '2'), Buffer.from('partial')]),
      Buffer.alloc(0),
      Buffer.concat([cRecord('x', 'y')]),
    ];
    const { dir, store } = await setup({}, (d) => {
      contents.forEach((c, n) => writeFileSync(poolPath(d, n), c, { mode: 0o640 }));
    });
    expect(await store.records(0)).toEqual([
      { key: 'a', value: '1' },
      { key: 'b', value: '2' },
    ]);
    contents.forEach((c, n) => {
      expect(readFileSync(poolPath(dir, n)).equals(c)).toBe(true);
      expect(statSync(poolPath(dir, n)).mode & 0o777).toBe(0o640);
    });
  });

  it('rejects pool numbers outside 0..4 with a RangeError', async () => {
    const { store } = await setup();
    for (const pool of [-1, 5, 255, 1.5, Number.NaN]) {
      await expect(store.get(pool, 'k')).rejects.toThrow(RangeError);
      await expect(store.set(pool, 'k', 'v')).rejects.toThrow(RangeError);
      await expect(store.delete(pool, 'k')).rejects.toThrow(RangeError);
      await expect(store.enumerate(pool, 0)).rejects.toThrow(RangeError);
      await expect(store.records(pool)).rejects.toThrow(RangeError);
    }
  });
});

describe('operations', () => {
  it('set, get, enumerate, records and delete, with the exact bytes on disk', async () => {
    const { store, path } = await setup();
    await store.set(1, 'alpha', 'one');
    await store.set(1, 'beta', 'twö');
    await store.set(1, 'gamma', '');
    await store.set(1, 'alpha', 'uno'); // in place, order kept
    expect(readFileSync(path(1)).equals(records(['alpha', 'uno'], ['beta', 'twö'], ['gamma', '']))).toBe(
      true,
    );
    expect(await store.get(1, 'beta')).toBe('twö');
    expect(await store.get(1, 'missing')).toBeUndefined();
    expect(await store.get(0, 'alpha')).toBeUndefined(); // pools are separate
    expect(await store.enumerate(1, 0)).toEqual({ key: 'alpha', value: 'uno' });
    expect(await store.enumerate(1, 2)).toEqual({ key: 'gamma', value: '' });
    expect(await store.enumerate(1, 3)).toBeUndefined();
    expect(await store.enumerate(1, -1)).toBeUndefined();

    expect(await store.delete(1, 'alpha')).toBe(true); // first: the others shift up, order kept
    expect(readFileSync(path(1)).equals(records(['beta', 'twö'], ['gamma', '']))).toBe(true);
    expect(await store.delete(1, 'gamma')).toBe(true); // last: one truncate
    expect(await store.delete(1, 'gamma')).toBe(false);
    expect(await store.records(1)).toEqual([{ key: 'beta', value: 'twö' }]);
    expect(readFileSync(path(1)).equals(records(['beta', 'twö']))).toBe(true);
    expect(readFileSync(`${path(1)}.journal`).length).toBe(0);
  });

  it('deletes from the middle of a long pool keeping insertion order', async () => {
    const { store, path } = await setup();
    for (let i = 0; i < 20; i++) await store.set(1, `k${i}`, `v${i}`);
    await store.delete(1, 'k3');
    await store.delete(1, 'k10');
    const keys = Array.from({ length: 20 }, (_, i) => `k${i}`).filter((k) => k !== 'k3' && k !== 'k10');
    expect((await store.records(1)).map((r) => r.key)).toEqual(keys);
    expect(fileRecords(path(1)).map(([k]) => k)).toEqual(keys);
    expect(await store.get(1, 'k19')).toBe('v19');
  });

  it('rejects over-long keys and values instead of truncating them', async () => {
    const { store, path } = await setup();
    await store.set(0, 'k'.repeat(511), 'v'.repeat(2047));
    await store.set(0, 'é'.repeat(255), '€'.repeat(682)); // 510 and 2046 bytes
    await expect(store.set(0, 'k'.repeat(512), 'v')).rejects.toThrow(RangeError);
    await expect(store.set(0, 'k'.repeat(510) + 'é', 'v')).rejects.toThrow(/512 bytes/);
    await expect(store.set(0, 'k', 'v'.repeat(2048))).rejects.toThrow(/2048 bytes/);
    await expect(store.set(0, '', 'v')).rejects.toThrow(/empty/);
    await expect(store.set(0, 'a\0b', 'v')).rejects.toThrow(/NUL/);
    expect(await store.get(0, 'k'.repeat(600))).toBeUndefined();
    expect(await store.delete(0, 'k'.repeat(600))).toBe(false);
    expect(await store.get(0, 'k'.repeat(511))).toBe('v'.repeat(2047));
    expect(statSync(path(0)).size).toBe(2 * R);
  });

  it('reads a file written by a C-daemon-like writer (garbage after the NULs) and rewrites a record zero-padded', async () => {
    const { store, path } = await setup({}, (d) => {
      writeFileSync(
        poolPath(d, 3),
        Buffer.concat([cRecord('HostName', 'hv-host'), cRecord('VirtualMachineName', 'vm1')]),
      );
    });
    expect(await store.records(3)).toEqual([
      { key: 'HostName', value: 'hv-host' },
      { key: 'VirtualMachineName', value: 'vm1' },
    ]);
    await store.set(3, 'HostName', 'h2');
    const raw = readFileSync(path(3));
    expect(raw.subarray(0, R).equals(encodeRecord('HostName', 'h2'))).toBe(true);
    expect(raw.subarray(R).equals(cRecord('VirtualMachineName', 'vm1'))).toBe(true); // untouched
  });

  it('serves concurrent calls in order', async () => {
    const { store } = await setup();
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) ops.push(store.set(2, `k${i % 7}`, `v${i}`));
    ops.push(store.delete(2, 'k0'));
    await Promise.all(ops);
    const got = await store.records(2);
    expect(got.map((r) => r.key)).toEqual(['k1', 'k2', 'k3', 'k4', 'k5', 'k6']);
    expect(await store.get(2, 'k6')).toBe('v48');
  });
});

describe('changes made by other programs', () => {
  it('sees an append by another process at the next call', async () => {
    const { store, path } = await setup();
    await store.set(1, 'ours', '1');
    python(
      `import struct,fcntl\nf=open(${JSON.stringify(path(1))},'ab')\nfcntl.flock(f,fcntl.LOCK_EX)\nf.write(struct.pack('512s2048s',b'theirs',b'2'))`,
    );
    expect(await store.get(1, 'theirs')).toBe('2');
    expect(await store.enumerate(1, 1)).toEqual({ key: 'theirs', value: '2' });
  });

  it('sees a same-size rewrite in place made right after our own write (same timestamp tick)', async () => {
    const { store, path } = await setup();
    await store.set(1, 'a', 'old');
    await store.set(1, 'b', 'x');
    for (let i = 0; i < 20; i++) {
      await store.set(1, 'a', `ours-${i}`);
      // immediately, in the same tick: another writer rewrites the record in place, same size
      const fd = openSync(path(1), 'r+');
      writeSync(fd, encodeRecord('a', `theirs-${i}`), 0, R, 0);
      closeSync(fd);
      expect(await store.get(1, 'a')).toBe(`theirs-${i}`);
    }
  });

  it('sees same-second rewrites on a filesystem with 1-second timestamps (simulated)', async () => {
    // What an old kernel or a filesystem with 1 s timestamps shows: every time a write stamps is
    // rounded down to the second; a time set explicitly with futimes is kept as set.
    const setByUs = new Set<bigint>();
    const coarse = (s: FileStat): FileStat => ({
      ...s,
      mtimeNs: setByUs.has(s.mtimeNs) ? s.mtimeNs : s.mtimeNs - (s.mtimeNs % 1_000_000_000n),
      ctimeNs: s.ctimeNs - (s.ctimeNs % 1_000_000_000n),
    });
    const io: PoolIo = {
      ...nodePoolIo,
      stat: (p) => {
        const s = nodePoolIo.stat(p);
        return s && coarse(s);
      },
      fstat: (fd) => coarse(nodePoolIo.fstat(fd)),
      setTimes: (fd, a, m) => {
        nodePoolIo.setTimes(fd, a, m);
        setByUs.add(nodePoolIo.fstat(fd).mtimeNs);
      },
    };
    const { store, path } = await setup({ io });
    const rewrite = (value: string) => {
      const fd = openSync(path(1), 'r+');
      writeSync(fd, encodeRecord('a', value), 0, R, 0);
      closeSync(fd);
    };
    await store.set(1, 'a', 'old');
    for (let i = 0; i < 10; i++) {
      await store.set(1, 'a', `ours-${i}`);
      rewrite(`theirs-${i}`); // same size, same second as our write
      expect(await store.get(1, 'a')).toBe(`theirs-${i}`);
      rewrite(`again-${i}`); // same size, same second as the re-read
      expect(await store.get(1, 'a')).toBe(`again-${i}`);
    }
  });

  it('sees a file replaced by rename, and writes to the new file afterwards', async () => {
    const { store, dir, path } = await setup();
    await store.set(1, 'old', '1');
    const tmp = join(dir, 'tmp-pool');
    writeFileSync(tmp, records(['new', '2'], ['other', '3']));
    renameSync(tmp, path(1));
    expect(await store.records(1)).toEqual([
      { key: 'new', value: '2' },
      { key: 'other', value: '3' },
    ]);
    await store.set(1, 'mine', '4');
    expect(fileRecords(path(1))).toEqual([
      ['new', '2'],
      ['other', '3'],
      ['mine', '4'],
    ]);
  });

  it('sees a truncation to zero (cloud-init at boot) and a removed file is created again', async () => {
    const { store, path } = await setup();
    await store.set(1, 'a', '1');
    writeFileSync(path(1), '');
    expect(await store.records(1)).toEqual([]);
    await store.set(1, 'b', '2');
    spawnSync('rm', [path(1)]);
    expect(await store.get(1, 'b')).toBeUndefined();
    await store.set(1, 'c', '3');
    expect(fileRecords(path(1))).toEqual([['c', '3']]);
  });

  it('does not re-read the file while nothing changed', async () => {
    let reads = 0;
    const io: PoolIo = {
      ...nodePoolIo,
      read: (fd, length, position) => {
        reads++;
        return nodePoolIo.read(fd, length, position);
      },
    };
    const { store, path } = await setup({ io });
    for (let i = 0; i < 200; i++) await store.set(1, `k${i}`, `v${i}`); // appends read nothing
    await store.set(1, 'k5', 'changed'); // an update reads back its one record
    const readsAfterWrites = reads;
    const before = store.cacheStats(1);
    for (let i = 0; i < 500; i++) {
      expect(await store.get(1, `k${i % 200}`)).toBe(i % 200 === 5 ? 'changed' : `v${i % 200}`);
      expect(await store.enumerate(1, i % 200)).toBeDefined();
    }
    expect(reads).toBe(readsAfterWrites);
    expect(store.cacheStats(1).reloads).toBe(before.reloads);
    expect(store.cacheStats(1).hits).toBe(before.hits + 1000);
    // a change by someone else: exactly one re-read
    appendFileSync(path(1), encodeRecord('ext', 'e'));
    expect(await store.get(1, 'ext')).toBe('e');
    expect(store.cacheStats(1).reloads).toBe(before.reloads + 1);
  });
});

describe('damaged and unusual files', () => {
  it('ignores a trailing partial record, and drops it only when appending after it has been still', async () => {
    const { store, path, logger } = await setup({ partialGraceMs: 100 }, (d) => {
      writeFileSync(poolPath(d, 1), Buffer.concat([encodeRecord('a', '1'), Buffer.alloc(1000, 0x41)]));
    });
    expect(await store.records(1)).toEqual([{ key: 'a', value: '1' }]);
    await store.get(1, 'a');
    expect(logger.lines.filter((l) => /partial record/.test(l.msg))).toHaveLength(1);
    expect(statSync(path(1)).size).toBe(R + 1000); // reads leave it
    await store.set(1, 'b', '2');
    expect(readFileSync(path(1)).equals(records(['a', '1'], ['b', '2']))).toBe(true);
    expect(logger.lines.filter((l) => l.level === 'warn' && /dropping a partial/.test(l.msg))).toHaveLength(
      1,
    );
  });

  it('does not cut off a lockless appender that finishes its record during the grace time', async () => {
    const { store, path } = await setup({ partialGraceMs: 1000 });
    await store.set(1, 'a', '1');
    const theirs = encodeRecord('theirs', 'slow');
    appendFileSync(path(1), theirs.subarray(0, 1500)); // first half of a lockless append
    const pending = store.set(1, 'b', '2');
    await new Promise((r) => setTimeout(r, 100));
    appendFileSync(path(1), theirs.subarray(1500)); // second half
    await pending;
    expect(fileRecords(path(1))).toEqual([
      ['a', '1'],
      ['theirs', 'slow'],
      ['b', '2'],
    ]);
  });

  it('serves duplicate keys as upstream: first match for get/set/delete, all for enumerate', async () => {
    const { store, path } = await setup({}, (d) => {
      writeFileSync(poolPath(d, 0), records(['k', 'first'], ['x', '1'], ['k', 'second']));
    });
    expect(await store.get(0, 'k')).toBe('first');
    expect((await store.records(0)).length).toBe(3);
    expect(await store.enumerate(0, 2)).toEqual({ key: 'k', value: 'second' });
    await store.set(0, 'k', 'updated');
    expect(fileRecords(path(0))).toEqual([
      ['k', 'updated'],
      ['x', '1'],
      ['k', 'second'],
    ]);
    expect(await store.delete(0, 'k')).toBe(true);
    expect(await store.get(0, 'k')).toBe('second');
    expect(fileRecords(path(0))).toEqual([
      ['x', '1'],
      ['k', 'second'],
    ]);
  });

  it('skips corrupt records with one log line each, serves the rest and keeps their bytes', async () => {
    const unterminated = Buffer.alloc(R, 0x41);
    const empty = Buffer.alloc(R);
    const badValue = encodeRecord('bad', 'v€');
    badValue[513] = 0xff;
    const { store, path, logger } = await setup({}, (d) => {
      writeFileSync(
        poolPath(d, 1),
        Buffer.concat([encodeRecord('a', '1'), unterminated, empty, badValue, encodeRecord('b', '2')]),
      );
    });
    const corruptLines = () => logger.lines.filter((l) => /is not served/.test(l.msg));
    expect(await store.records(1)).toEqual([
      { key: 'a', value: '1' },
      { key: 'b', value: '2' },
    ]);
    expect(await store.enumerate(1, 1)).toEqual({ key: 'b', value: '2' });
    expect(await store.get(1, 'bad')).toBeUndefined();
    for (let i = 0; i < 20; i++) await store.get(1, 'a');
    await store.set(1, 'c', '3');
    appendFileSync(path(1), encodeRecord('d', '4')); // a foreign change: the file is re-read
    expect(await store.get(1, 'd')).toBe('4');
    await store.set(1, 'a', '1b');
    expect(await store.delete(1, 'a')).toBe(true); // shifts the corrupt records up, bytes intact
    expect(corruptLines().map((l) => l.obj.reason)).toEqual([
      'unterminated-key',
      'empty-key',
      'invalid-utf8-value',
    ]);
    const raw = readFileSync(path(1));
    expect(raw.subarray(0, R).equals(unterminated)).toBe(true);
    expect(raw.subarray(R, 2 * R).equals(empty)).toBe(true);
    expect(raw.subarray(2 * R, 3 * R).equals(badValue)).toBe(true);
    expect(await store.records(1)).toEqual([
      { key: 'b', value: '2' },
      { key: 'c', value: '3' },
      { key: 'd', value: '4' },
    ]);
    expect(corruptLines()).toHaveLength(3);
  });
});

describe('journal recovery at open', () => {
  const a = encodeRecord('a', 'A'.repeat(1000));
  const b = encodeRecord('b', 'B');
  const b2 = encodeRecord('b', 'new value '.repeat(150));
  const c = encodeRecord('c', 'C');

  it('rolls back an in-place update torn by a crash', async () => {
    const torn = Buffer.concat([b2.subarray(0, 1536), b.subarray(1536)]);
    const { store, path, logger } = await setup({}, (d) => {
      writeFileSync(poolPath(d, 1), Buffer.concat([a, torn, c]));
      writeFileSync(
        `${poolPath(d, 1)}.journal`,
        encodeJournal({ kind: 'overwrite', offset: R, oldSize: 3 * R, newSize: 3 * R, before: b, after: b2 }),
      );
    });
    expect(readFileSync(path(1)).equals(Buffer.concat([a, b, c]))).toBe(true);
    expect(readFileSync(`${path(1)}.journal`).length).toBe(0);
    expect(await store.get(1, 'b')).toBe('B');
    expect(logger.lines.some((l) => /rolled back/.test(l.msg))).toBe(true);
  });

  it('finishes a delete whose truncation was lost', async () => {
    const { store, path } = await setup({}, (d) => {
      // deleting 'a': the tail [b, c] was shifted up, the file not yet cut
      writeFileSync(poolPath(d, 1), Buffer.concat([b, c, c]));
      writeFileSync(
        `${poolPath(d, 1)}.journal`,
        encodeJournal({
          kind: 'shift-delete',
          offset: 0,
          oldSize: 3 * R,
          newSize: 2 * R,
          before: Buffer.concat([a, b]),
          after: Buffer.concat([b, c]),
        }),
      );
    });
    expect(readFileSync(path(1)).equals(Buffer.concat([b, c]))).toBe(true);
    expect((await store.records(1)).map((r) => r.key)).toEqual(['b', 'c']);
  });

  it('drops a torn journal and leaves a region rewritten by someone else alone', async () => {
    const other = encodeRecord('z', 'foreign');
    const { path, logger } = await setup({}, (d) => {
      writeFileSync(poolPath(d, 1), Buffer.concat([a, b]));
      const j = encodeJournal({
        kind: 'overwrite',
        offset: R,
        oldSize: 2 * R,
        newSize: 2 * R,
        before: b,
        after: b2,
      });
      writeFileSync(`${poolPath(d, 1)}.journal`, j.subarray(0, 3000));
      writeFileSync(poolPath(d, 2), Buffer.concat([a, other]));
      writeFileSync(`${poolPath(d, 2)}.journal`, j);
    });
    expect(readFileSync(path(1)).equals(Buffer.concat([a, b]))).toBe(true);
    expect(readFileSync(path(2)).equals(Buffer.concat([a, other]))).toBe(true);
    expect(readFileSync(`${path(1)}.journal`).length).toBe(0);
    expect(readFileSync(`${path(2)}.journal`).length).toBe(0);
    expect(logger.lines.filter((l) => /unreadable journal|ignored/.test(l.msg))).toHaveLength(2);
  });
});
