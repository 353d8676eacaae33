/**
 * The FCOPY service through the shared device loop and the in-process kernel-shim, on real
 * directories: the protocol's statuses, atomic delivery (nothing under the target name before
 * COMPLETE, a replaced file swapped whole), refusals, and every way a copy can end early (CANCEL,
 * a new START, a refused write, the kernel's fake CANCEL, a late reply and the reopen, a stop, a
 * crash followed by a restart's sweep).
 */
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DATA_FRAGMENT, HV_E_FAIL, HV_ERROR_ALREADY_EXISTS, HV_S_OK } from '../../../uapi/constants.js';
import { FCOPY_WRITE_SIZE, encodeFcopyMessage } from '../../../uapi/fcopy.js';
import { DeviceLoop } from '../../../daemons/common/device-loop.js';
import { memoryLogger } from '../../../daemons/common/log.js';
import { DEFAULT_CONFIG, type FcopyConfig } from '../../../daemons/fcopy/config.js';
import { FcopyService } from '../../../daemons/fcopy/service.js';
import { FileJournal, NO_JOURNAL, type TempJournal, isTempName } from '../../../daemons/fcopy/stale.js';
import { ShimBinding } from '../../../kernel-shim/binding.js';
import { FakeClock } from '../../../kernel-shim/clock.js';
import { HVUTIL_READY } from '../../../kernel-shim/drivers/util.js';
import { KernelShim } from '../../../kernel-shim/shim.js';
import { pattern } from './observe.js';
import { until } from '../../support/until.js';

const root = mkdtempSync(join(tmpdir(), 'fcopy-service-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

let dirCount = 0;
function freshDir(): string {
  const d = join(root, `case-${++dirCount}`);
  return mkdtempSync(`${d}-`);
}

async function start(
  opts: {
    config?: Partial<FcopyConfig>;
    journal?: TempJournal;
    clock?: FakeClock;
    link?: (from: string, to: string) => Promise<void>;
  } = {},
) {
  const shim = new KernelShim({ services: ['fcopy'], ...(opts.clock ? { clock: opts.clock } : {}) });
  const logger = memoryLogger();
  const service = new FcopyService({
    config: { ...DEFAULT_CONFIG, ...opts.config },
    journal: opts.journal ?? NO_JOURNAL,
    logger,
    ...(opts.link ? { link: opts.link } : {}),
  });
  const loop = new DeviceLoop({
    binding: new ShimBinding(shim),
    protocol: service,
    logger,
    backoff: { initialMs: 1, maxMs: 5 },
  });
  const ac = new AbortController();
  const done = loop.run(ac.signal);
  const stop = async () => {
    ac.abort();
    await done;
  };
  stops.push(stop);
  await until(() => shim.device('fcopy').driver.state === HVUTIL_READY);
  return { shim, host: shim.host.fcopy, service, loop, logger, stop };
}

const names = (dir: string) => readdirSync(dir).sort();
const temps = (dir: string) => readdirSync(dir).filter(isTempName);

describe('the protocol', () => {
  it('registers, then copies: the target appears only at COMPLETE, whole, with mode 0644 whatever the umask', async () => {
    const { host, service } = await start();
    expect(service.status.kernelVersion).toBe(1);
    const dir = freshDir();
    const data = pattern(DATA_FRAGMENT * 2 + 17, 1);
    const old = process.umask(0o077);
    try {
      expect((await host.start(dir, 'f.bin', BigInt(data.length))).status).toBe(HV_S_OK);
      // Out of order is fine: positional writes.
      expect((await host.write(BigInt(DATA_FRAGMENT * 2), data.subarray(DATA_FRAGMENT * 2))).status).toBe(
        HV_S_OK,
      );
      expect(
        (await host.write(BigInt(DATA_FRAGMENT), data.subarray(DATA_FRAGMENT, DATA_FRAGMENT * 2))).status,
      ).toBe(HV_S_OK);
      expect((await host.write(0n, data.subarray(0, DATA_FRAGMENT))).status).toBe(HV_S_OK);
      expect(names(dir)).toHaveLength(1);
      const [tmp] = temps(dir);
      expect(tmp).toMatch(/^\.f\.bin\.hv-fcopy-\d+-[0-9a-f]{12}\.tmp$/);
      expect(statSync(join(dir, tmp!)).mode & 0o777).toBe(0o600);
      expect(service.status.copying).toMatchObject({ target: `${dir}/f.bin`, written: data.length });
      expect((await host.complete()).status).toBe(HV_S_OK);
    } finally {
      process.umask(old);
    }
    expect(names(dir)).toEqual(['f.bin']);
    expect(readFileSync(join(dir, 'f.bin')).equals(data)).toBe(true);
    expect(statSync(join(dir, 'f.bin')).mode & 0o777).toBe(0o644);
    expect(service.status).toMatchObject({ copying: undefined, completed: 1 });
  });

  it('a long copy logs its progress every 10 s, and its rate at the end', async () => {
    let t = 0;
    const shim = new KernelShim({ services: ['fcopy'] });
    const logger = memoryLogger();
    const service = new FcopyService({
      config: DEFAULT_CONFIG,
      journal: NO_JOURNAL,
      logger,
      now: () => (t += 4000),
    });
    const loop = new DeviceLoop({ binding: new ShimBinding(shim), protocol: service, logger });
    const ac = new AbortController();
    const done = loop.run(ac.signal);
    stops.push(async () => {
      ac.abort();
      await done;
    });
    await until(() => shim.device('fcopy').driver.state === HVUTIL_READY);
    const dir = freshDir();
    expect((await shim.host.fcopy.copyBuffer(pattern(DATA_FRAGMENT * 8, 3), dir, 'slow')).status).toBe(
      HV_S_OK,
    );
    const progress = logger.lines.filter((l) => l.msg.startsWith(`copying ${dir}/slow: `));
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]?.obj).toMatchObject({ size: DATA_FRAGMENT * 8 });
    expect(logger.lines.find((l) => l.msg.startsWith(`copied ${dir}/slow`))?.obj).toMatchObject({
      bytes: DATA_FRAGMENT * 8,
    });
  });

  it('file-mode from the configuration', async () => {
    const { host } = await start({ config: { fileMode: 0o600 } });
    const dir = freshDir();
    expect((await host.copyBuffer(Buffer.from('x'), dir, 'private')).status).toBe(HV_S_OK);
    expect(statSync(join(dir, 'private')).mode & 0o777).toBe(0o600);
  });

  it('WRITE without a copy fails; COMPLETE and CANCEL without one succeed, as upstream', async () => {
    const { host } = await start();
    expect((await host.write(0n, Buffer.from('x'))).status).toBe(HV_E_FAIL);
    expect((await host.complete()).status).toBe(HV_S_OK);
    expect((await host.cancel()).status).toBe(HV_S_OK);
  });

  it('an unknown operation and an oversized fragment get HV_E_FAIL, and the service goes on', async () => {
    const { host, logger } = await start();
    const unknown = Buffer.alloc(64);
    unknown.writeUInt32LE(7, 0);
    expect((await host.ic.request(unknown, 'op 7')).status).toBe(HV_E_FAIL);
    expect(logger.lines.some((l) => l.msg === 'Unknown operation: 7')).toBe(true);
    const dir = freshDir();
    expect((await host.start(dir, 'f', 10_000n)).status).toBe(HV_S_OK);
    const big = encodeFcopyMessage({ operation: 1, offset: 0n, data: Buffer.alloc(10) }, 'utf16le');
    big.writeUInt32LE(DATA_FRAGMENT + 1, 48); // hv_do_fcopy.size
    expect(big.length).toBe(FCOPY_WRITE_SIZE);
    expect((await host.ic.request(big, 'oversized write')).status).toBe(HV_E_FAIL);
    expect((await host.cancel()).status).toBe(HV_S_OK);
    expect((await host.copyBuffer(Buffer.from('fine'), dir, 'g')).status).toBe(HV_S_OK);
    expect(names(dir)).toEqual(['g']);
  });

  it('CREATE_PATH makes the whole path, the last component included', async () => {
    const { host } = await start();
    const dir = freshDir();
    const r = await host.copyBuffer(Buffer.from('x'), `${dir}/a/b`, 'f', { createPath: true });
    expect(r.status).toBe(HV_S_OK);
    expect(readFileSync(join(dir, 'a/b/f'), 'utf8')).toBe('x');
    expect(statSync(join(dir, 'a/b')).mode & 0o777).toBe(0o755);
  });
});

describe('an existing target', () => {
  it('without OVER_WRITE: HV_ERROR_ALREADY_EXISTS at START, nothing created', async () => {
    const { host } = await start();
    const dir = freshDir();
    writeFileSync(join(dir, 'f'), 'old');
    const r = await host.copyBuffer(Buffer.from('new'), dir, 'f');
    expect(r).toMatchObject({ status: HV_ERROR_ALREADY_EXISTS, step: 'start' });
    expect(names(dir)).toEqual(['f']);
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('old');
  });

  it('with OVER_WRITE: replaced whole by rename (a new inode), keeping mode and owner', async () => {
    const { host } = await start();
    const dir = freshDir();
    writeFileSync(join(dir, 'f'), 'old');
    chownSync(join(dir, 'f'), 1234, 5678);
    chmodSync(join(dir, 'f'), 0o4751); // setuid is not carried over
    linkSync(join(dir, 'f'), join(dir, 'f-hardlink'));
    const r = await host.copyBuffer(Buffer.from('new content'), dir, 'f', { overwrite: true });
    expect(r.status).toBe(HV_S_OK);
    const st = statSync(join(dir, 'f'));
    expect({ mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }).toEqual({
      mode: 0o751,
      uid: 1234,
      gid: 5678,
    });
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('new content');
    expect(readFileSync(join(dir, 'f-hardlink'), 'utf8')).toBe('old');
    expect(names(dir)).toEqual(['f', 'f-hardlink']);
  });

  it('a target that appears during the copy is not replaced (HV_ERROR_ALREADY_EXISTS at COMPLETE)', async () => {
    const { host } = await start();
    const dir = freshDir();
    expect((await host.start(dir, 'f', 3n)).status).toBe(HV_S_OK);
    expect((await host.write(0n, Buffer.from('new'))).status).toBe(HV_S_OK);
    writeFileSync(join(dir, 'f'), 'someone else');
    expect((await host.complete()).status).toBe(HV_ERROR_ALREADY_EXISTS);
    expect(names(dir)).toEqual(['f']);
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('someone else');
  });
});

describe('odd targets and file systems', () => {
  it('a FIFO or a device as the target: refused with OVER_WRITE, never opened', async () => {
    const { host } = await start();
    const dir = freshDir();
    expect(spawnSync('mkfifo', [join(dir, 'fifo')]).status).toBe(0);
    expect((await host.copyBuffer(Buffer.from('x'), dir, 'fifo', { overwrite: true })).status).toBe(
      HV_E_FAIL,
    );
    expect((await host.copyBuffer(Buffer.from('x'), dir, 'fifo')).status).toBe(HV_ERROR_ALREADY_EXISTS);
    expect(statSync(join(dir, 'fifo')).isFIFO()).toBe(true);
    expect(names(dir)).toEqual(['fifo']);
  });

  it('no hard links (vfat): publish by rename after checking the name is free', async () => {
    const eperm = async () => {
      throw Object.assign(new Error('link: EPERM'), { code: 'EPERM' });
    };
    const { host } = await start({ link: eperm });
    const dir = freshDir();
    expect((await host.copyBuffer(Buffer.from('new'), dir, 'f')).status).toBe(HV_S_OK);
    expect(names(dir)).toEqual(['f']);
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('new');
    // A name taken during the copy is still not replaced.
    expect((await host.start(dir, 'g', 3n)).status).toBe(HV_S_OK);
    expect((await host.write(0n, Buffer.from('new'))).status).toBe(HV_S_OK);
    writeFileSync(join(dir, 'g'), 'theirs');
    expect((await host.complete()).status).toBe(HV_ERROR_ALREADY_EXISTS);
    expect(readFileSync(join(dir, 'g'), 'utf8')).toBe('theirs');
    expect(names(dir)).toEqual(['f', 'g']);
  });
});

describe('a copy that ends early leaves nothing and the old file untouched', () => {
  async function midway(host: Awaited<ReturnType<typeof start>>['host'], dir: string) {
    writeFileSync(join(dir, 'f'), 'old');
    expect((await host.start(dir, 'f', 100_000n, { overwrite: true })).status).toBe(HV_S_OK);
    expect((await host.write(0n, pattern(DATA_FRAGMENT, 2))).status).toBe(HV_S_OK);
    expect(temps(dir)).toHaveLength(1);
  }
  const untouched = (dir: string) => {
    expect(names(dir)).toEqual(['f']);
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('old');
  };

  it('CANCEL', async () => {
    const { host } = await start();
    const dir = freshDir();
    await midway(host, dir);
    expect((await host.cancel()).status).toBe(HV_S_OK);
    untouched(dir);
  });

  it('a new START', async () => {
    const { host, logger } = await start();
    const dir = freshDir();
    await midway(host, dir);
    expect((await host.copyBuffer(Buffer.from('other'), dir, 'g')).status).toBe(HV_S_OK);
    expect(names(dir)).toEqual(['f', 'g']);
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('old');
    expect(logger.lines.some((l) => l.msg.includes('a new START_FILE_COPY arrived'))).toBe(true);
  });

  it('a write past the announced size: refused, and the copy cannot complete', async () => {
    const { host } = await start();
    const dir = freshDir();
    await midway(host, dir);
    expect((await host.write(99_000n, Buffer.alloc(1001))).status).toBe(HV_E_FAIL);
    expect((await host.write(6144n, Buffer.alloc(10))).status).toBe(HV_E_FAIL);
    expect((await host.complete()).status).toBe(HV_E_FAIL);
    untouched(dir);
  });

  it("the kernel's fake CANCEL at hibernation, then the reopen", async () => {
    const { host, shim, loop, logger } = await start();
    const dir = freshDir();
    await midway(host, dir);
    const regs = loop.registrations;
    shim.suspend();
    shim.resume();
    await until(() => loop.registrations > regs && shim.device('fcopy').driver.state === HVUTIL_READY);
    untouched(dir);
    expect(logger.lines.some((l) => l.msg.includes('cancelled by the kernel (hibernation)'))).toBe(true);
    expect((await host.copyBuffer(Buffer.from('after'), dir, 'g')).status).toBe(HV_S_OK);
  });

  it('a late reply (the 30 s timeout) makes the daemon reopen, and the copy is dropped', async () => {
    const clock = new FakeClock();
    let release: (() => void) | undefined;
    const slow: TempJournal = {
      record: () => new Promise<void>((r) => (release = r)),
      forget: async () => {},
    };
    const { host, loop } = await start({ clock, journal: slow });
    const dir = freshDir();
    writeFileSync(join(dir, 'f'), 'old');
    const started = host.start(dir, 'f', 10n, { overwrite: true });
    await until(() => release !== undefined);
    clock.advance(30_000);
    expect((await started).status).toBe(HV_E_FAIL);
    const regs = loop.registrations;
    release?.();
    await until(() => loop.registrations > regs);
    untouched(dir);
  });

  it('a stop (SIGTERM)', async () => {
    const { host, stop } = await start();
    const dir = freshDir();
    await midway(host, dir);
    await stop();
    untouched(dir);
  });

  it('a crash: the next start sweeps the temporary away', async () => {
    const state = join(root, 'state-crash');
    const journal = (await FileJournal.open(state, memoryLogger()))!;
    const { host } = await start({ journal });
    const dir = freshDir();
    await midway(host, dir);
    // The "crash": the daemon is gone without cleaning up (its lock goes with it).
    await journal.close();
    const [tmp] = temps(dir);
    const next = (await FileJournal.open(state, memoryLogger()))!;
    expect(await next.sweep()).toEqual({ removed: [`${dir}/${tmp}`], kept: [] });
    untouched(dir);
    await next.close();
  });
});
