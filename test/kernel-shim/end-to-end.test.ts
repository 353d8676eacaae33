/**
 * A daemon scripted inside the test, served through the transport, the driver state machines and
 * the VMBus ring, driven by the simulated host: KVP set/enumerate/get/delete, VSS freeze/thaw, and
 * an FCOPY copy.
 */
import { describe, expect, it } from 'vitest';
import { HV_S_CONT, HV_S_OK, KVP_POOL_EXTERNAL } from '../../uapi/constants.js';
import { KernelShim } from '../../kernel-shim/shim.js';
import { startFcopyDaemon, startKvpDaemon, startVssDaemon } from './scripted-daemons.js';

describe('end to end through ring and transport', () => {
  it('KVP: register, set, enumerate, get, delete', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    const d = startKvpDaemon(shim, pools);
    const host = shim.host.kvp;
    expect((await host.addItem('Greeting', 'héllo wörld')).status).toBe(HV_S_OK);
    expect((await host.addItem('Second', '42')).status).toBe(HV_S_OK);
    expect(pools.get(KVP_POOL_EXTERNAL)).toEqual([
      ['Greeting', 'héllo wörld'],
      ['Second', '42'],
    ]);
    const list = await host.listItems(KVP_POOL_EXTERNAL);
    expect(list.items).toEqual([
      { key: 'Greeting', value: 'héllo wörld' },
      { key: 'Second', value: '42' },
    ]);
    expect(list.endStatus).toBe(HV_S_CONT);
    expect(await host.getItem('Second')).toMatchObject({ status: HV_S_OK, value: '42' });
    expect((await host.removeItem('Greeting')).status).toBe(HV_S_OK);
    expect((await host.removeItem('Greeting')).status).toBe(HV_S_CONT);
    expect((await host.listItems(KVP_POOL_EXTERNAL)).items).toEqual([{ key: 'Second', value: '42' }]);
    expect(d.log[0]).toBe('op 100');
    expect(d.log[1]).toBe('version 3.1');
    d.stop();
    await d.done;
  });

  it('VSS: hot-backup check, freeze, thaw', async () => {
    const shim = new KernelShim({ services: ['vss'] });
    const frozen = { value: false };
    const d = startVssDaemon(shim, frozen);
    expect((await shim.host.vss.hotBackupCheck()).status).toBe(HV_S_OK);
    expect((await shim.host.vss.freeze()).status).toBe(HV_S_OK);
    expect(frozen.value).toBe(true);
    expect((await shim.host.vss.thaw()).status).toBe(HV_S_OK);
    expect(frozen.value).toBe(false);
    expect(d.log).toEqual(['version 129', 'op 2', 'op 5', 'op 6']);
    d.stop();
    await d.done;
  });

  it('FCOPY: a multi-fragment copy with a non-ASCII name', async () => {
    const shim = new KernelShim({ services: ['fcopy'] });
    const files = new Map<string, Buffer>();
    const d = startFcopyDaemon(shim, files);
    const data = Buffer.alloc(6144 * 3 + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const r = await shim.host.fcopy.copyBuffer(data, '/tmp/dir', 'fïle.bin', { overwrite: true });
    expect(r).toMatchObject({ status: HV_S_OK, step: 'complete', bytesSent: data.length });
    expect(files.get('/tmp/dir/fïle.bin')?.equals(data)).toBe(true);
    d.stop();
    await d.done;
  });
});
