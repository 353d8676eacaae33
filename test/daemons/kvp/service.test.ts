/**
 * The KVP service through the shared device loop and the in-process kernel-shim: registration,
 * every operation as the host sees it, deliberate differences from upstream, and recovery from
 * hibernation, rescind/re-offer and late replies (reopen, register again, go on serving).
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_OP_SET,
  KVP_POOL_AUTO,
  KVP_POOL_GUEST,
} from '../../../uapi/constants.js';
import { EMPTY_IP_INFO, type KvpIpInfo, encodeKvpRequest } from '../../../uapi/kvp.js';
import { DeviceLoop } from '../../../daemons/common/device-loop.js';
import { memoryLogger } from '../../../daemons/common/log.js';
import { KvpService, type KvpPoolStore, UNKNOWN_VERSION } from '../../../daemons/kvp/service.js';
import { ShimBinding } from '../../../kernel-shim/binding.js';
import { HVUTIL_READY } from '../../../kernel-shim/drivers/util.js';
import { KernelShim } from '../../../kernel-shim/shim.js';
import { until } from '../../support/until.js';

/** Pools in memory, with upstream's semantics (first match, append, shift on delete). */
export function memoryPools(): KvpPoolStore & { pools: Map<number, [string, string][]> } {
  const pools = new Map<number, [string, string][]>();
  const pool = (n: number) => pools.get(n) ?? (pools.set(n, []), pools.get(n)!);
  return {
    pools,
    get: async (p, k) => pool(p).find(([key]) => key === k)?.[1],
    set: async (p, k, v) => {
      const rec = pool(p).find(([key]) => key === k);
      if (rec) rec[1] = v;
      else pool(p).push([k, v]);
    },
    delete: async (p, k) => {
      const i = pool(p).findIndex(([key]) => key === k);
      if (i < 0) return false;
      pool(p).splice(i, 1);
      return true;
    },
    enumerate: async (p, i) => {
      const rec = pool(p)[i];
      return rec ? { key: rec[0], value: rec[1] } : undefined;
    },
  };
}

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

function start(overrides: Partial<ConstructorParameters<typeof KvpService>[0]> = {}) {
  const shim = new KernelShim({ services: ['kvp'] });
  const logger = memoryLogger();
  const pools = memoryPools();
  const ipCalls: string[] = [];
  const service = new KvpService({
    pools,
    autoPool: async (index, version) =>
      index === 1
        ? { key: 'IntegrationServicesVersion', value: version }
        : index < 10
          ? { key: `Key${index}`, value: `v${index}` }
          : undefined,
    getIpInfo: async (adapterId) => {
      ipCalls.push(adapterId);
      return {
        status: HV_S_OK,
        ip: { ...EMPTY_IP_INFO, adapterId, ipAddr: '10.0.0.4', subNet: '255.255.255.0', addrFamily: 1 },
      };
    },
    setIpInfo: async (ip: KvpIpInfo) => (ip.ipAddr === 'bad' ? 0x80070057 : HV_S_OK),
    logger,
    ...overrides,
  });
  const loop = new DeviceLoop({
    binding: new ShimBinding(shim),
    protocol: service,
    logger,
    backoff: { initialMs: 5, maxMs: 20 },
  });
  const ac = new AbortController();
  const running = loop.run(ac.signal);
  stops.push(async () => {
    ac.abort();
    await running;
  });
  return { shim, service, loop, logger, pools, ipCalls };
}

describe('KVP service through the in-process shim', () => {
  it('registers with REGISTER1 and keeps the version for IntegrationServicesVersion', async () => {
    const { shim, service } = start();
    expect(service.version).toBe(UNKNOWN_VERSION);
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    expect(service.version).toBe('3.1');
    expect(await shim.host.kvp.enumerate(KVP_POOL_AUTO, 1)).toMatchObject({
      key: 'IntegrationServicesVersion',
      value: '3.1',
    });
  });

  it('SET, GET (the real value, unlike upstream), DELETE, ENUMERATE with HV_S_CONT past the end', async () => {
    const { shim, pools } = start();
    const h = shim.host.kvp;
    expect((await h.addItem('a', 'one')).status).toBe(HV_S_OK);
    expect((await h.addItem('b', 'two')).status).toBe(HV_S_OK);
    expect((await h.modifyItem('a', 'uno')).status).toBe(HV_S_OK);
    expect(pools.pools.get(0)).toEqual([
      ['a', 'uno'],
      ['b', 'two'],
    ]);
    expect(await h.getItem('a')).toMatchObject({ status: HV_S_OK, value: 'uno' });
    expect((await h.getItem('zz')).status).toBe(HV_S_CONT);
    expect(await h.listItems(0)).toEqual({
      items: [
        { key: 'a', value: 'uno' },
        { key: 'b', value: 'two' },
      ],
      endStatus: HV_S_CONT,
    });
    expect((await h.removeItem('a')).status).toBe(HV_S_OK);
    expect((await h.removeItem('a')).status).toBe(HV_S_CONT);
    expect((await h.addItem('g', 'guest', { pool: KVP_POOL_GUEST })).status).toBe(HV_S_OK);
    expect((await h.guestItems()).items).toEqual([{ key: 'g', value: 'guest' }]);
    expect((await h.intrinsicItems()).items).toHaveLength(10);
  });

  it('a pool out of range gets HV_E_FAIL and a log line, not a crash', async () => {
    const { shim, logger } = start();
    expect((await shim.host.kvp.addItem('k', 'v', { pool: 7 })).status).toBe(HV_E_FAIL);
    expect(logger.lines.some((l) => l.level === 'warn' && /pool 7/.test(l.msg))).toBe(true);
    expect((await shim.host.kvp.addItem('k', 'v')).status).toBe(HV_S_OK);
  });

  it('GET_IP_INFO and SET_IP_INFO go to their handlers', async () => {
    const { shim, ipCalls } = start();
    const r = await shim.host.kvp.getIpConfiguration('00:15:5D:00:00:01');
    expect(r).toMatchObject({
      status: HV_S_OK,
      ip: { ipAddr: '10.0.0.4', subNet: '255.255.255.0', addrFamily: 1 },
    });
    expect(ipCalls).toEqual(['00:15:5D:00:00:01']);
    expect(
      (await shim.host.kvp.setIpConfiguration({ ...EMPTY_IP_INFO, adapterId: '{x}', ipAddr: 'bad' })).status,
    ).toBe(0x80070057);
  });

  it('a store failure is an error status and a log line; the daemon goes on', async () => {
    const pools = memoryPools();
    const { shim, logger } = start({
      pools: { ...pools, set: async () => Promise.reject(new Error('disk on fire')) },
    });
    expect((await shim.host.kvp.addItem('k', 'v')).status).toBe(HV_E_FAIL);
    expect(logger.lines.some((l) => l.level === 'error' && /disk on fire/.test(l.msg))).toBe(true);
    expect((await shim.host.kvp.enumerate(KVP_POOL_AUTO, 0)).status).toBe(HV_S_OK);
  });

  it('a slow handler is answered with HV_E_FAIL before the kernel times out', async () => {
    const { shim } = start({ deadlineMs: 100, getIpInfo: () => new Promise(() => {}) });
    const t0 = Date.now();
    expect((await shim.host.kvp.getIpConfiguration('00:15:5D:00:00:01')).status).toBe(HV_E_FAIL);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('an unknown operation gets HV_E_FAIL (upstream answers HV_S_OK)', async () => {
    const { service } = start();
    const msg = encodeKvpRequest({ operation: KVP_OP_SET, pool: 0, key: 'k', value: 'v', valueType: 0 });
    msg[0] = 42;
    const reply = await service.serve(msg);
    expect(Buffer.from(reply!).readUInt32LE(0)).toBe(HV_E_FAIL);
  });

  it('hibernation without a request in flight: the open device goes on serving after resume', async () => {
    const { shim, loop } = start();
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    const before = loop.registrations;
    shim.suspend();
    shim.resume();
    expect((await shim.host.kvp.addItem('after', 'resume')).status).toBe(HV_S_OK);
    expect(loop.registrations).toBe(before);
  });

  it('hibernation with a request in flight: the late reply is refused (EINVAL), the daemon reopens and serves', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const { shim, loop, logger } = start({
      getIpInfo: async (adapterId) => {
        await gate;
        return { status: HV_S_OK, ip: { ...EMPTY_IP_INFO, adapterId } };
      },
    });
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    const before = loop.registrations;
    const inFlight = shim.host.kvp.getIpConfiguration('00:15:5D:00:00:01').catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50)); // the daemon has the request
    shim.suspend();
    shim.resume();
    release();
    expect(await inFlight).toMatchObject({ code: 'CHANNEL_GONE' });
    await until(() => loop.registrations > before);
    expect(logger.lines.some((l) => /refused the reply/.test(l.msg))).toBe(true);
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    expect((await shim.host.kvp.addItem('after', 'resume')).status).toBe(HV_S_OK);
  });

  it('rescind: EBADF, the daemon waits for the device, and serves again after the re-offer', async () => {
    const { shim, loop, logger } = start();
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    await shim.device('kvp').rescind(); // resolves once the daemon closed the device
    await until(() => loop.state === 'waiting');
    await new Promise((r) => setTimeout(r, 100));
    expect(logger.lines.filter((l) => /cannot open/.test(l.msg))).toHaveLength(1); // said once, not per retry
    shim.device('kvp').reoffer();
    await until(() => shim.device('kvp').driver.state === HVUTIL_READY);
    expect((await shim.host.kvp.addItem('back', 'again')).status).toBe(HV_S_OK);
  });
});
