/**
 * The VSS service through the shared device loop and the in-process kernel-shim, with a fake
 * kernel for the filesystems: what the host sees for every operation, the freeze and thaw order,
 * rollback, hooks, the marker, the watchdog, recovery at start and on reopen, and the rule that no
 * log line is written out (and no hook started) while anything is frozen.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_OK,
  VSS_OP_AUTO_RECOVER,
  VSS_OP_CREATE,
  VSS_OP_GET_DM_INFO,
} from '../../../uapi/constants.js';
import { decodeVssReply, encodeVssRegistrationReply, encodeVssRequest } from '../../../uapi/vss.js';
import { DeviceLoop } from '../../../daemons/common/device-loop.js';
import type { FrozenMarker } from '../../../daemons/vss/marker.js';
import { THAW_FAILURE_HOLD_MS, THAW_RETRY_MS, VssService } from '../../../daemons/vss/service.js';
import { ShimBinding } from '../../../kernel-shim/binding.js';
import { HVUTIL_READY } from '../../../kernel-shim/drivers/util.js';
import { KernelShim } from '../../../kernel-shim/shim.js';
import { FakeClock } from '../../../kernel-shim/clock.js';
import {
  type FakeFs,
  FakeHooks,
  FakeKernel,
  ManualTimers,
  MemoryMarker,
  Sequence,
  checkedLogger,
} from './fakes.js';
import { until } from '../../support/until.js';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

/** A typical guest: root, /boot, /home, a bind mount of /home, and things VSS must skip. */
const GUEST: FakeFs[] = [
  { mountPoint: '/', source: '/dev/sda2', device: '8:2' },
  { mountPoint: '/boot', source: '/dev/sda1', device: '8:1' },
  { mountPoint: '/boot/efi', source: '/dev/sda15', device: '8:15', fsType: 'vfat' },
  { mountPoint: '/home', source: '/dev/sdb1', device: '8:17', fsType: 'xfs' },
  { mountPoint: '/srv/home', source: '/dev/sdb1', device: '8:17', fsType: 'xfs' },
  { mountPoint: '/media/iso', source: '/dev/sr0', device: '11:0', options: 'ro' },
  { mountPoint: '/mnt/image', source: '/dev/loop0', device: '7:0', loop: true },
  { mountPoint: '/mnt/ntfs', source: '/dev/sdc1', device: '8:33', fsType: 'fuseblk' },
];

interface StartOptions {
  fs?: FakeFs[];
  hooks?: string[];
  marker?: FrozenMarker;
  corruptMarker?: string;
  watchdogMs?: number;
  clock?: FakeClock;
}

async function start(o: StartOptions = {}) {
  const seq = new Sequence();
  const kernel = new FakeKernel(seq, o.fs ?? GUEST);
  const hooks = new FakeHooks(seq, kernel, o.hooks ?? []);
  const marker = new MemoryMarker(seq, kernel);
  if (o.marker) marker.value = o.marker;
  if (o.corruptMarker) marker.corrupt = o.corruptMarker;
  const timers = new ManualTimers();
  const { logger, gate, lines } = checkedLogger(seq, kernel, true);
  // Filesystems a killed instance left frozen.
  for (const f of o.marker?.filesystems ?? []) {
    if (kernel.entries.some((e) => e.mountPoint === f.mountPoint)) kernel.freeze(f.mountPoint);
  }
  kernel.ops.length = 0;
  const service = new VssService({
    freezer: kernel,
    mountTable: () => kernel.mountTable(),
    blockDevices: kernel,
    hooks,
    marker,
    logger,
    logHold: gate,
    bootId: 'boot-1',
    timers,
    watchdogMs: o.watchdogMs ?? 600_000,
  });
  const shim = new KernelShim({ services: ['vss'], ...(o.clock ? { clock: o.clock } : {}) });
  const loop = new DeviceLoop({
    binding: new ShimBinding(shim),
    protocol: service,
    logger,
    backoff: { initialMs: 5, maxMs: 20 },
  });
  const ac = new AbortController();
  const recovered = service.recover();
  const running = recovered.then(() => loop.run(ac.signal));
  stops.push(async () => {
    ac.abort();
    await running;
    service.dispose();
  });
  const ready = () => until(() => shim.device('vss').driver.state === HVUTIL_READY);
  await ready();
  const host = shim.host.vss;
  return {
    seq,
    kernel,
    hooks,
    marker,
    timers,
    lines,
    gate,
    service,
    shim,
    host,
    loop,
    ready,
    ac,
    running,
    recovered,
  };
}

type Started = Awaited<ReturnType<typeof start>>;

function expectNoViolations(s: Started): void {
  expect(s.lines.filter((l) => l.whileFrozen)).toEqual([]);
  expect(s.hooks.calls.filter((c) => c.frozenAtStart > 0)).toEqual([]);
  expect(s.marker.events.filter((e) => e.frozenAtCall > 0)).toEqual([]);
}

describe('VSS service: registration and the simple operations', () => {
  it('registers with REGISTER1 and logs the kernel version', async () => {
    const s = await start();
    expect((s.shim.device('vss').driver as unknown as { registration: number }).registration).toBe(129);
    expect(s.service.kernelVersion).toBe(129);
    expect(s.lines.some((l) => l.msg === 'VSS: kernel module version: 129')).toBe(true);
  });

  it('HOT_BACKUP: success, and the flags stay as the host sent them (as upstream)', async () => {
    const s = await start();
    const r = await s.host.hotBackupCheck(0x1234);
    expect(r.status).toBe(HV_S_OK);
    expect(r.flags).toBe(0x1234);
    expect(s.lines.some((l) => l.msg === 'VSS: op=CHECK HOT BACKUP')).toBe(true);
  });

  it('GET_DM_INFO and the operations Linux does not implement are answered by the kernel', async () => {
    const s = await start();
    expect(await s.host.getDmInfo()).toMatchObject({ status: HV_S_OK, flags: 0 });
    expect((await s.host.request(VSS_OP_CREATE)).status).toBe(HV_S_OK);
    expect(s.kernel.ops).toEqual([]);
  });

  it('serves GET_DM_INFO itself (flags 0) and fails unknown operations (upstream answers success)', async () => {
    const s = await start();
    const serve = async (op: number, flags = 7) => {
      const bytes = await s.service.serve(encodeVssRequest(op, flags));
      const r = decodeVssReply(bytes ?? new Uint8Array());
      if (!r.ok) throw new Error(r.error.message);
      return r.value;
    };
    expect(await serve(VSS_OP_GET_DM_INFO)).toEqual({ error: HV_S_OK, flags: 0 });
    expect((await serve(VSS_OP_CREATE)).error).toBe(HV_E_FAIL);
    expect((await serve(VSS_OP_AUTO_RECOVER)).error).toBe(HV_E_FAIL);
    expect((await serve(9)).error).toBe(HV_E_FAIL);
    expect((await serve(200)).error).toBe(HV_E_FAIL);
    expect(s.lines.filter((l) => /^Illegal op:/.test(l.msg)).map((l) => l.msg)).toEqual([
      'Illegal op:0',
      'Illegal op:7',
      'Illegal op:9',
      'Illegal op:200',
    ]);
    // A malformed message gets an error reply, never a crash.
    const bad = decodeVssReply((await s.service.serve(Buffer.alloc(7))) ?? new Uint8Array());
    expect(bad.ok && bad.value.error).toBe(HV_E_FAIL);
    // A second registration reply is only logged.
    expect(await s.service.serve(encodeVssRegistrationReply())).toBeUndefined();
  });

  it('THAW without a FREEZE is harmless: EINVAL on every filesystem counts as success', async () => {
    const s = await start();
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expect(s.kernel.ops.map((o) => `${o.op} ${o.mountPoint} ${o.result}`)).toEqual([
      'thaw / EINVAL',
      'thaw /home EINVAL',
      'thaw /boot EINVAL',
    ]);
  });
});

describe('VSS service: FREEZE and THAW', () => {
  it('freezes the eligible filesystems in table order with root last, and thaws in reverse', async () => {
    const s = await start();
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    // Skipped: vfat, read-only, loop-backed, FUSE; /srv/home is /home again (frozen once).
    expect(s.kernel.done()).toEqual(['freeze /boot', 'freeze /home', 'freeze /']);
    expect(s.service.frozenMountPoints).toEqual(['/boot', '/home', '/']);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expect(s.kernel.done().slice(3)).toEqual(['thaw /', 'thaw /home', 'thaw /boot']);
    expect(s.kernel.frozen.size).toBe(0);
    await s.service.idle();
    expectNoViolations(s);
    // The success line was logged during the freeze window, and written out after the thaw.
    const ok = s.lines.find((l) => l.msg === 'VSS: op=FREEZE: succeeded');
    const lastThaw = s.kernel.ops.at(-1)?.seq ?? 0;
    expect(ok?.seq).toBeGreaterThan(lastThaw);
    expect(ok?.obj.frozen).toEqual(['/boot', '/home', '/']);
    expect(s.lines.some((l) => l.msg === 'VSS: op=THAW: succeeded')).toBe(true);
  });

  it('holds every log line from the first FIFREEZE to the end of the thaw', async () => {
    const s = await start();
    await s.host.freeze();
    expect(s.gate.held).toBe(true);
    const before = s.lines.length;
    await s.host.hotBackupCheck();
    expect(s.lines.length).toBe(before);
    await s.host.thaw();
    expect(s.gate.held).toBe(false);
    expect(s.lines.length).toBeGreaterThan(before + 1);
    expectNoViolations(s);
  });

  it('EBUSY (already frozen) counts as success, and THAW thaws it (as upstream)', async () => {
    const s = await start();
    s.kernel.freeze('/home');
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect(s.kernel.ops.map((o) => `${o.op} ${o.mountPoint} ${o.result}`).slice(1)).toEqual([
      'freeze /boot ok',
      'freeze /home EBUSY',
      'freeze / ok',
    ]);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expect(s.kernel.frozen.size).toBe(0);
  });

  it('a second FREEZE while frozen succeeds (EBUSY) and runs no hooks and writes no marker', async () => {
    const s = await start({ hooks: ['10-db'] });
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect(s.hooks.order()).toEqual(['10-db freeze']);
    expect(s.marker.events.map((e) => e.what)).toEqual(['write']);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    await s.service.idle();
    expect(s.hooks.order()).toEqual(['10-db freeze', '10-db thaw']);
    expectNoViolations(s);
  });

  it('a filesystem that cannot be frozen (EOPNOTSUPP) is left alone instead of failing the backup', async () => {
    const s = await start({
      fs: [
        { mountPoint: '/', source: '/dev/sda2' },
        { mountPoint: '/data', source: '/dev/sdb1', fsType: 'exfat' },
      ],
    });
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect(s.service.frozenMountPoints).toEqual(['/']);
    await s.host.thaw();
    expect(s.lines.find((l) => l.msg === 'VSS: op=FREEZE: succeeded')?.obj.cannotFreeze).toEqual(['/data']);
  });

  it('a stat failure is logged and the mount is still frozen (as upstream)', async () => {
    const s = await start({ fs: [{ mountPoint: '/', source: '/dev/sda2' }] });
    s.kernel.deviceNumber = () => {
      throw Object.assign(new Error('stat /dev/sda2: ENOENT'), { code: 'ENOENT' });
    };
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect(s.kernel.done()).toEqual(['freeze /']);
    await s.host.thaw();
    expect(s.lines.some((l) => l.level === 'error' && l.msg.startsWith("Can't stat: /dev/sda2"))).toBe(true);
  });
});

describe('VSS service: partial failure', () => {
  it('thaws everything already frozen, then logs the failure, and the host gets HV_E_FAIL', async () => {
    const s = await start({
      fs: [
        { mountPoint: '/', source: '/dev/sda2' },
        { mountPoint: '/a', source: '/dev/sdb1' },
        { mountPoint: '/b', source: '/dev/sdc1', failFreeze: 'EIO' },
        { mountPoint: '/c', source: '/dev/sdd1' },
      ],
      hooks: ['10-first', '20-second'],
    });
    expect((await s.host.freeze()).status).toBe(HV_E_FAIL);
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.kernel.ops.map((o) => `${o.op} ${o.mountPoint} ${o.result}`)).toEqual([
      'freeze /a ok',
      'freeze /b EIO',
      // the rollback: what we froze first, then every other eligible filesystem (EINVAL)
      'thaw /a ok',
      'thaw / EINVAL',
      'thaw /c EINVAL',
      'thaw /b EINVAL',
    ]);
    const failed = s.lines.find((l) => l.msg === 'FREEZE of /b failed; error:5 EIO');
    expect(failed).toBeDefined();
    expect(failed?.seq).toBeGreaterThan(Math.max(...s.kernel.ops.map((o) => o.seq)));
    expect(s.lines.some((l) => l.msg === 'VSS: op=FREEZE: failed')).toBe(true);
    await s.service.idle();
    // freezefail in reverse order, no thaw hooks, marker removed.
    expect(s.hooks.order()).toEqual([
      '10-first freeze',
      '20-second freeze',
      '20-second freezefail',
      '10-first freezefail',
    ]);
    expect(s.marker.value).toBeUndefined();
    expectNoViolations(s);
    // The next backup works.
    s.kernel.entries[2] = { mountPoint: '/b', source: '/dev/sdc1' };
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
  });

  it('the root failing (frozen last) rolls back the others', async () => {
    const s = await start({
      fs: [
        { mountPoint: '/', source: '/dev/sda2', failFreeze: 'EIO' },
        { mountPoint: '/a', source: '/dev/sdb1' },
      ],
    });
    expect((await s.host.freeze()).status).toBe(HV_E_FAIL);
    expect(s.kernel.done()).toEqual(['freeze /a', 'thaw /a']);
    expect(s.lines.some((l) => l.msg === 'FREEZE of / failed; error:5 EIO')).toBe(true);
  });
});

describe('VSS service: hooks', () => {
  it('runs freeze hooks in name order before the first FIFREEZE and thaw hooks in reverse after the last FITHAW', async () => {
    const s = await start({ hooks: ['10-db', '20-queue', '30-cache'] });
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    const firstFreeze = s.kernel.ops[0]?.seq ?? 0;
    expect(s.hooks.calls.every((c) => c.seq < firstFreeze)).toBe(true);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    await s.service.idle();
    const lastThaw = s.kernel.ops.at(-1)?.seq ?? 0;
    expect(s.hooks.order()).toEqual([
      '10-db freeze',
      '20-queue freeze',
      '30-cache freeze',
      '30-cache thaw',
      '20-queue thaw',
      '10-db thaw',
    ]);
    expect(s.hooks.calls.filter((c) => c.phase === 'thaw').every((c) => c.seq > lastThaw)).toBe(true);
    expectNoViolations(s);
  });

  it('a failing freeze hook fails the backup cleanly: nothing frozen, freezefail for the earlier hooks', async () => {
    const s = await start({ hooks: ['10-db', '20-queue', '30-cache'] });
    s.hooks.behaviour.set('20-queue', (phase) =>
      phase === 'freeze' ? { ok: false, exitCode: 3, output: 'queue busy\n' } : {},
    );
    expect((await s.host.freeze()).status).toBe(HV_E_FAIL);
    expect(s.kernel.ops).toEqual([]);
    expect(s.hooks.order()).toEqual(['10-db freeze', '20-queue freeze', '10-db freezefail']);
    expect(s.marker.value).toBeUndefined();
    const line = s.lines.find((l) => l.msg.startsWith('FREEZE refused by hook 20-queue'));
    expect(line?.msg).toBe('FREEZE refused by hook 20-queue: exit status 3');
    expect(s.lines.find((l) => l.msg === 'hook 20-queue freeze: exit status 3')?.obj.output).toBe(
      'queue busy',
    );
  });

  it('a hook that times out fails the backup the same way', async () => {
    const s = await start({ hooks: ['10-slow'] });
    s.hooks.behaviour.set('10-slow', () => ({
      ok: false,
      timedOut: true,
      signal: 'SIGTERM',
      exitCode: null,
    }));
    expect((await s.host.freeze()).status).toBe(HV_E_FAIL);
    expect(s.kernel.ops).toEqual([]);
    expect(s.lines.some((l) => /FREEZE refused by hook 10-slow: timed out/.test(l.msg))).toBe(true);
  });
});

describe('VSS service: the marker', () => {
  it('is written before the hooks and the freeze, lists the targets, and is removed after the thaw hooks', async () => {
    const s = await start({ hooks: ['10-db'] });
    await s.host.freeze();
    const write = s.marker.events[0];
    expect(write?.what).toBe('write');
    expect(write?.seq).toBeLessThan(s.hooks.calls[0]?.seq ?? 0);
    expect(s.marker.value?.filesystems.map((f) => f.mountPoint)).toEqual(['/boot', '/home', '/']);
    expect(s.marker.value?.hooks).toEqual(['10-db']);
    expect(s.marker.value?.bootId).toBe('boot-1');
    await s.host.thaw();
    await s.service.idle();
    const remove = s.marker.events.at(-1);
    expect(remove?.what).toBe('remove');
    expect(remove?.seq).toBeGreaterThan(s.hooks.calls.at(-1)?.seq ?? 0);
    expect(s.marker.value).toBeUndefined();
    expectNoViolations(s);
  });

  it('no marker, no freeze: a marker that cannot be written fails the FREEZE before anything runs', async () => {
    const s = await start({ hooks: ['10-db'] });
    s.marker.failWrite = true;
    expect((await s.host.freeze()).status).toBe(HV_E_FAIL);
    expect(s.kernel.ops).toEqual([]);
    expect(s.hooks.calls).toEqual([]);
  });

  it('stays while a thaw fails, and the thaw is retried until it works', async () => {
    const s = await start({
      fs: [
        { mountPoint: '/', source: '/dev/sda2' },
        { mountPoint: '/a', source: '/dev/sdb1', failThaw: 'EIO', failThawTimes: 1 },
      ],
      hooks: ['10-db'],
    });
    await s.host.freeze();
    expect((await s.host.thaw()).status).toBe(HV_E_FAIL);
    await s.service.idle();
    expect(s.service.frozenMountPoints).toEqual(['/a']);
    expect(s.marker.value).toBeDefined();
    expect(s.hooks.order()).toEqual(['10-db freeze']);
    expect(s.timers.fire(THAW_RETRY_MS)).toBe(1);
    await s.service.idle();
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.marker.value).toBeUndefined();
    expect(s.hooks.order()).toEqual(['10-db freeze', '10-db thaw']);
    expectNoViolations(s);
  });

  it('a thaw that keeps failing: lines stay held for a while, then the failure is written out', async () => {
    const s = await start({
      fs: [
        { mountPoint: '/', source: '/dev/sda2' },
        { mountPoint: '/a', source: '/dev/sdb1', failThaw: 'EIO' },
      ],
    });
    await s.host.freeze();
    expect((await s.host.thaw()).status).toBe(HV_E_FAIL);
    expect(s.gate.held).toBe(true);
    s.timers.clock += THAW_FAILURE_HOLD_MS;
    s.timers.fire(THAW_RETRY_MS);
    await s.service.idle();
    expect(s.gate.held).toBe(false);
    expect(s.lines.filter((l) => l.msg === 'THAW of /a failed; error:5 EIO; retrying every 5 s').length).toBe(
      2,
    );
    expect(s.timers.pending.size).toBe(1);
    expect(s.marker.value).toBeDefined();
  });
});

describe('VSS service: the freeze watchdog', () => {
  it("thaws by itself, logs it, and reports the failure at the host's next request", async () => {
    const s = await start({ hooks: ['10-db'], watchdogMs: 90_000 });
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect([...s.timers.pending.values()].map((t) => t.ms)).toEqual([90_000]);
    s.timers.fire(90_000);
    await s.service.idle();
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.hooks.order()).toEqual(['10-db freeze', '10-db thaw']);
    expect(s.marker.value).toBeUndefined();
    const line = s.lines.find((l) => l.msg.startsWith('no THAW came within 90 s'));
    expect(line?.level).toBe('error');
    // The late THAW: thawed already (EINVAL everywhere), but the host learns it failed.
    expect((await s.host.thaw()).status).toBe(HV_E_FAIL);
    // Reported once.
    expect((await s.host.hotBackupCheck()).status).toBe(HV_S_OK);
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expectNoViolations(s);
  });

  it('reports to whatever request comes next, and a THAW in time disarms it', async () => {
    const s = await start();
    await s.host.freeze();
    s.timers.fire();
    await s.service.idle();
    expect((await s.host.hotBackupCheck()).status).toBe(HV_E_FAIL);
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expect(s.timers.pending.size).toBe(0);
  });
});

describe('VSS service: recovery', () => {
  const marker = (over: Partial<FrozenMarker> = {}): FrozenMarker => ({
    format: 'hv-vss-frozen',
    version: 1,
    pid: 4242,
    bootId: 'boot-1',
    writtenAt: '2026-01-01T00:00:00.000Z',
    filesystems: [
      { mountPoint: '/boot', device: '8:1', source: '/dev/sda1', fsType: 'ext4' },
      { mountPoint: '/', device: '8:2', source: '/dev/sda2', fsType: 'ext4' },
    ],
    hooks: ['10-db', '20-queue'],
    ...over,
  });

  it('at start, thaws what a killed instance left frozen (root first), runs its thaw hooks, removes the marker', async () => {
    const s = await start({ marker: marker() });
    await s.recovered;
    await s.service.idle();
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.kernel.done()).toEqual(['thaw /', 'thaw /boot']);
    expect(s.hooks.order()).toEqual(['20-queue thaw', '10-db thaw']);
    expect(s.marker.value).toBeUndefined();
    expect(
      s.lines.some((l) => l.level === 'warn' && /marker left by a previous instance \(pid 4242/.test(l.msg)),
    ).toBe(true);
    expectNoViolations(s);
  });

  it('a marker from another boot is removed without thawing or hooks', async () => {
    const s = await start({ marker: marker({ bootId: 'boot-0' }) });
    await s.recovered;
    expect(s.kernel.done().filter((o) => o.startsWith('thaw'))).toEqual([]);
    expect(s.hooks.calls).toEqual([]);
    expect(s.marker.value).toBeUndefined();
  });

  it('an unreadable marker: every eligible filesystem is thawed (EINVAL when not frozen)', async () => {
    const s = await start({ corruptMarker: 'not JSON' });
    await s.recovered;
    expect(s.kernel.ops.map((o) => o.mountPoint)).toEqual(['/', '/home', '/boot']);
    expect(s.marker.value).toBeUndefined();
  });

  it('hibernation (fake THAW) while frozen: thaw, the reply is refused, reopen, register again', async () => {
    const s = await start({ hooks: ['10-db'] });
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    const registrations = s.loop.registrations;
    s.shim.suspend();
    s.shim.resume();
    await until(() => s.loop.registrations > registrations);
    await s.ready();
    await s.service.idle();
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.hooks.order()).toEqual(['10-db freeze', '10-db thaw']);
    expect((await s.host.freeze()).status).toBe(HV_S_OK);
    expect((await s.host.thaw()).status).toBe(HV_S_OK);
    expectNoViolations(s);
  });

  it('a reply the kernel refuses while frozen (its 900 s FREEZE timeout passed): thaw first, then reopen', async () => {
    const clock = new FakeClock();
    const s = await start({ hooks: ['10-slow'], clock });
    let release = () => {};
    s.hooks.delays.set('10-slow', new Promise<void>((r) => (release = r)));
    const reply = s.host.freeze();
    await until(() => s.hooks.calls.length === 1);
    clock.advance(900_001);
    // The kernel gave up on the daemon: the host hears HV_E_FAIL from it.
    expect((await reply).status).toBe(HV_E_FAIL);
    const registrations = s.loop.registrations;
    release();
    await until(() => s.loop.registrations > registrations);
    await s.ready();
    await s.service.idle();
    expect(s.kernel.done()).toEqual([
      'freeze /boot',
      'freeze /home',
      'freeze /',
      'thaw /',
      'thaw /home',
      'thaw /boot',
    ]);
    expect(s.hooks.order()).toEqual(['10-slow freeze', '10-slow thaw']);
    const thawed = s.lines.find((l) => /^thawed before reopening the device/.test(l.msg));
    const reopen = s.lines.find((l) => /^reopening \/dev\/vmbus\/hv_vss/.test(l.msg));
    expect(thawed).toBeDefined();
    expect(reopen).toBeDefined();
    expect(s.marker.value).toBeUndefined();
    expectNoViolations(s);
  });

  it('a stop while frozen thaws before the daemon ends', async () => {
    const s = await start({ hooks: ['10-db'] });
    await s.host.freeze();
    s.ac.abort();
    await s.running;
    await s.service.idle();
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.hooks.order()).toEqual(['10-db freeze', '10-db thaw']);
    expect(s.marker.value).toBeUndefined();
    expect(s.lines.some((l) => /thawed before stopping/.test(l.msg))).toBe(true);
  });

  it('emergencyThaw (process exit) thaws synchronously and keeps the marker for the hooks', async () => {
    const s = await start({ hooks: ['10-db'] });
    await s.host.freeze();
    expect(s.service.emergencyThaw().sort()).toEqual(['/', '/boot', '/home']);
    expect(s.kernel.frozen.size).toBe(0);
    expect(s.marker.value?.hooks).toEqual(['10-db']);
    expect(s.gate.held).toBe(false);
  });
});
