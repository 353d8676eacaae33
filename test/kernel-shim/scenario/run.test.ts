/**
 * The scenario runner against an in-process KernelShim served by the scripted daemons: every
 * command kind, faults, host-side failures, failing expectations, background steps, and the
 * recordings (deterministic JSON, compared step by step).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  HV_E_FAIL,
  HV_S_CONT,
  HV_S_OK,
  KVP_OP_GET_IP_INFO,
  KVP_OP_SET_IP_INFO,
} from '../../../uapi/constants.js';
import { type KvpIpInfo, decodeKvpRequest, encodeKvpRegister, encodeKvpReply } from '../../../uapi/kvp.js';
import { encodeVssRegister } from '../../../uapi/vss.js';
import { FakeClock } from '../../../kernel-shim/clock.js';
import type { ServiceName } from '../../../kernel-shim/device.js';
import { KernelShim } from '../../../kernel-shim/shim.js';
import type { TransportFile } from '../../../kernel-shim/transport.js';
import {
  type RecordedStep,
  type Recording,
  compareRecordings,
  formatDifferences,
  recordingToJson,
  runScenario,
} from '../../../kernel-shim/scenario/index.js';
import {
  type ScriptedDaemon,
  startFcopyDaemon,
  startKvpDaemon,
  startVssDaemon,
} from '../scripted-daemons.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function keep(d: ScriptedDaemon): ScriptedDaemon {
  cleanups.push(async () => {
    d.stop();
    await d.done;
  });
  return d;
}

/** A daemon that registers, then reads every request and never answers. */
function silentDaemon(shim: KernelShim, service: 'kvp' | 'vss'): { file: TransportFile; seen: number[] } {
  const file = shim.open(service);
  file.write(service === 'kvp' ? encodeKvpRegister() : encodeVssRegister());
  const ac = new AbortController();
  const seen: number[] = [];
  const done = (async () => {
    for (;;) {
      try {
        const msg = await file.read(65536, { signal: ac.signal });
        seen.push(msg[0] ?? -1);
      } catch {
        return;
      }
    }
  })();
  cleanups.push(async () => {
    ac.abort();
    await done;
    file.close();
  });
  return { file, seen };
}

/** A KVP daemon that knows one adapter's IP configuration and takes SET_IP_INFO. */
function ipDaemon(shim: KernelShim, adapter: KvpIpInfo, received: KvpIpInfo[]): void {
  const file = shim.open('kvp');
  file.write(encodeKvpRegister());
  const ac = new AbortController();
  const done = (async () => {
    await file.read(65536, { signal: ac.signal }); // the registration reply
    for (;;) {
      let bytes: Buffer;
      try {
        bytes = await file.read(65536, { signal: ac.signal });
      } catch {
        return;
      }
      const r = decodeKvpRequest(bytes);
      if (!r.ok) continue;
      const m = r.value;
      if (m.operation === KVP_OP_GET_IP_INFO && m.ip.adapterId.toUpperCase() === adapter.adapterId)
        file.write(encodeKvpReply({ operation: m.operation, error: HV_S_OK, ip: adapter }));
      else if (m.operation === KVP_OP_SET_IP_INFO) {
        received.push(m.ip);
        file.write(encodeKvpReply({ operation: m.operation, error: HV_S_OK }));
      } else file.write(encodeKvpReply({ operation: m.operation, error: HV_E_FAIL }));
    }
  })();
  cleanups.push(async () => {
    ac.abort();
    await done;
    file.close();
  });
}

function step(r: Recording, line: number): RecordedStep {
  const s = r.steps.find((x) => x.line === line);
  if (!s) throw new Error(`no step on line ${line}`);
  return s;
}

function failures(r: Recording): { line: number; failures: readonly string[] }[] {
  return r.steps.filter((s) => !s.ok).map((s) => ({ line: s.line, failures: s.failures }));
}

describe('KVP steps', () => {
  it('set, modify, get, enumerate, list, delete, and the IP operations a daemon refuses', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    keep(startKvpDaemon(shim, pools));
    const r = await runScenario(
      `# wait until the daemon has registered (driver READY), at most 10 s
wait-ready kvp 10s                           expect state=READY
kvp set "Greeting" "héllo wörld"            expect HV_S_OK
kvp set Count 42 --pool 1 --type u32         expect HV_S_OK
kvp modify Second two                        expect HV_S_OK
kvp get Greeting                             expect HV_S_OK value="héllo wörld" key=Greeting
kvp get Missing                              expect HV_S_CONT value=""
kvp enumerate 0 0                            expect HV_S_OK key=Greeting
kvp enumerate external 5                     expect HV_S_CONT
kvp list 0                                   expect count=2 has=Second item.Second=two
kvp list guest                               expect count=1 item.Count~=^4
kvp list auto                                expect count=0 HV_S_CONT
kvp delete Greeting                          expect HV_S_OK
kvp delete Greeting                          expect HV_S_CONT
kvp list external --max 5                    expect count=1 has!=Greeting
kvp get-ip 00:15:5D:01:02:03                 expect HV_E_FAIL
kvp set-ip "{guid}" --ip 10.0.0.5 --subnet 255.255.255.0 --gateway 10.0.0.1 --dns 8.8.8.8 --dhcp off   expect HV_E_FAIL
`,
      { shim, baseDir: tmpdir() },
    );
    expect(failures(r)).toEqual([]);
    expect(r.summary).toEqual({ total: 16, passed: 16, failed: 0, skipped: 0, ok: true });
    expect(pools.get(0)).toEqual([['Second', 'two']]);
    // a REG_U32 value reaches the daemon as text, converted by the kernel
    expect(pools.get(1)).toEqual([['Count', '42']]);
    expect(step(r, 2)).toEqual({
      index: 0,
      line: 2,
      text: 'wait-ready kvp 10s                           expect state=READY',
      op: 'wait-ready',
      args: { service: 'kvp', timeoutMs: 10_000 },
      background: false,
      host: { state: 'READY' },
      expect: ['state=READY'],
      ok: true,
      failures: [],
      skipped: false,
    });
    expect(step(r, 6).host).toEqual({
      status: HV_S_OK,
      statusName: 'HV_S_OK (0x00000000)',
      key: 'Greeting',
      value: 'héllo wörld',
    });
    expect(step(r, 4).args).toEqual({ key: 'Count', value: '42', pool: 1, valueType: 4 });
    expect(step(r, 10).host).toEqual({
      status: HV_S_CONT,
      statusName: 'HV_S_CONT (0x80070103)',
      count: 2,
      items: [
        { key: 'Greeting', value: 'héllo wörld' },
        { key: 'Second', value: 'two' },
      ],
    });
    // a failed GET_IP_INFO: the host reads back its own request
    expect(step(r, 16).host).toMatchObject({
      status: HV_E_FAIL,
      ip: { adapterId: '00:15:5D:01:02:03', ipAddr: '' },
    });
  });

  it('get-ip and set-ip against a daemon that knows the adapter', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const adapter: KvpIpInfo = {
      adapterId: '00:15:5D:01:02:03',
      addrFamily: 1,
      dhcpEnabled: 1,
      ipAddr: '10.0.0.5;10.0.0.6',
      subNet: '255.255.255.0;255.255.255.0',
      gateWay: '10.0.0.1',
      dnsAddr: '8.8.8.8',
    };
    const received: KvpIpInfo[] = [];
    ipDaemon(shim, adapter, received);
    const r = await runScenario(
      `wait-ready kvp
kvp get-ip 00:15:5D:01:02:03   expect HV_S_OK ip.ipAddr="10.0.0.5;10.0.0.6" ip.dhcpEnabled=1 ip.gateWay=10.0.0.1 ip.addrFamily>=1
kvp get-ip 00:15:5D:FF:FF:FF   expect HV_E_FAIL
kvp set-ip "{4f8b1d3e-0c2a-4a5e-9d1b-2f6c7e8a9b0c}" --ip 192.168.1.10 --ip 192.168.1.11 --subnet 255.255.255.0 --gateway 192.168.1.1 --dns 1.1.1.1 --dhcp off --family ipv4   expect HV_S_OK`,
      { shim },
    );
    expect(failures(r)).toEqual([]);
    expect(step(r, 2).host?.ip).toEqual(adapter);
    expect(received).toEqual([
      {
        adapterId: '{4f8b1d3e-0c2a-4a5e-9d1b-2f6c7e8a9b0c}',
        addrFamily: 1,
        dhcpEnabled: 0,
        ipAddr: '192.168.1.10;192.168.1.11',
        subNet: '255.255.255.0',
        gateWay: '192.168.1.1',
        dnsAddr: '1.1.1.1',
      },
    ]);
  });
});

describe('VSS and FCOPY steps', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('hot-backup, freeze, thaw, dm-info and a raw request', async () => {
    dir = mkdtempSync(join(tmpdir(), 'scenario-'));
    const shim = new KernelShim({ services: ['vss'] });
    const frozen = { value: false };
    const d = keep(startVssDaemon(shim, frozen));
    const seen: boolean[] = [];
    const r = await runScenario(
      `wait-ready vss 10s
vss hot-backup                               expect HV_S_OK
vss freeze                                   expect HV_S_OK
vss thaw                                     expect HV_S_OK
vss dm-info                                  expect HV_S_OK
vss request thaw                             expect HV_S_OK`,
      { shim, baseDir: dir, onStep: (e) => e.op === 'vss freeze' && seen.push(frozen.value) },
    );
    expect(failures(r)).toEqual([]);
    expect(seen).toEqual([true]);
    expect(frozen.value).toBe(false);
    expect(step(r, 2).host).toMatchObject({ status: HV_S_OK, flags: expect.any(Number) });
    // GET_DM_INFO is answered in the kernel: the daemon never sees it
    expect(d.log).toEqual(['version 129', 'op 2', 'op 5', 'op 6', 'op 6']);
  });

  it('copy a host file, put data, and the single operations', async () => {
    dir = mkdtempSync(join(tmpdir(), 'scenario-'));
    const payload = Buffer.alloc(6144 * 2 + 10);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13) & 0xff;
    writeFileSync(join(dir, 'file.bin'), payload);
    const shim = new KernelShim({ services: ['fcopy'] });
    const files = new Map<string, Buffer>();
    const d = keep(startFcopyDaemon(shim, files));
    const r = await runScenario(
      `wait-ready fcopy
fcopy copy ./file.bin /tmp/dest file.bin --overwrite --create-path   expect HV_S_OK step=complete bytesSent=12298
fcopy put /tmp/dest "fïle two.txt" "héllo" --repeat 2000   expect HV_S_OK bytesSent=12000
fcopy put /tmp/dest raw.bin 00ff10 --hex                  expect HV_S_OK bytesSent=3
fcopy start /tmp/dest f --size 100 ; fcopy write 0 "abc" ; fcopy cancel
fcopy start /tmp/dest g --size 3 --overwrite ; fcopy write 0 414243 --hex ; fcopy complete
fcopy copy ./missing.bin /tmp/dest x   expect error=failed`,
      { shim, baseDir: dir },
    );
    expect(failures(r)).toEqual([]);
    expect(files.get('/tmp/dest/file.bin')?.equals(payload)).toBe(true);
    expect(files.get('/tmp/dest/fïle two.txt')?.toString()).toBe('héllo'.repeat(2000));
    expect([...(files.get('/tmp/dest/raw.bin') ?? [])]).toEqual([0, 255, 16]);
    expect(files.has('/tmp/dest/f')).toBe(false); // cancelled
    expect(files.get('/tmp/dest/g')?.toString()).toBe('ABC');
    expect(r.steps.filter((s) => s.line === 5).map((s) => [s.op, s.host?.status])).toEqual([
      ['fcopy start', HV_S_OK],
      ['fcopy write', HV_S_OK],
      ['fcopy cancel', HV_S_OK],
    ]);
    // the missing source is named as written, so recordings do not depend on the directory
    expect(step(r, 7).host).toEqual({
      error: 'failed',
      message: 'fcopy copy: cannot read the host file ./missing.bin: ENOENT',
    });
    expect(d.log.filter((l) => l === 'op 0')).toHaveLength(5);
  });
});

describe('faults and host-side failures', () => {
  it('suspend closes the channels (channel-gone), resume brings them back', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    keep(startKvpDaemon(shim));
    const r = await runScenario(
      `wait-ready kvp
kvp set k v                 expect HV_S_OK
fault suspend
kvp get k                   expect error=channel-gone
fault resume
kvp get k                   expect HV_S_OK value=v`,
      { shim },
    );
    expect(failures(r)).toEqual([]);
    // the host's first request on a channel is NEGOTIATE; the IC client words every lost channel so
    expect(step(r, 4).host).toEqual({
      error: 'channel-gone',
      message: 'NEGOTIATE: the channel was rescinded',
    });
    expect(step(r, 3).host).toEqual({});
  });

  it('rescind and re-offer through an injected faults object (a supervisor restarting the daemon)', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    let daemon = startKvpDaemon(shim, pools);
    cleanups.push(async () => {
      daemon.stop();
      await daemon.done;
    });
    const calls: string[] = [];
    const r = await runScenario(
      `wait-ready kvp
kvp set k v                 expect HV_S_OK
fault rescind kvp
kvp get k                   expect error=channel-gone
wait-ready kvp 50ms         expect error=timeout
fault reoffer kvp
wait-ready kvp 5s
kvp get k                   expect HV_S_OK value=v`,
      {
        shim,
        faults: {
          rescind: async (s: ServiceName) => {
            calls.push(`rescind ${s}`);
            const gone = shim.device(s).rescind();
            daemon.stop(); // the daemon sees EBADF and closes the device
            await gone;
          },
          reoffer: (s: ServiceName) => {
            calls.push(`reoffer ${s}`);
            shim.device(s).reoffer();
            daemon = startKvpDaemon(shim, pools); // restarted, it opens the new node
          },
        },
      },
    );
    expect(failures(r)).toEqual([]);
    expect(calls).toEqual(['rescind kvp', 'reoffer kvp']);
    expect(step(r, 5).host).toEqual({
      state: 'DEVICE_INIT',
      error: 'timeout',
      message: 'kvp: the device is rescinded and was not offered again within 50 ms',
    });
  });

  it("the shim's own rescind waits for the daemon to close: the step's time limit ends it", async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const d = keep(startKvpDaemon(shim));
    const r = await runScenario(
      `wait-ready kvp
fault rescind kvp --timeout 100ms   expect error=timeout
fault reoffer kvp                   expect error=failed`,
      { shim },
    );
    expect(failures(r)).toEqual([]);
    expect(step(r, 2).host).toEqual({
      error: 'timeout',
      message: "fault rescind: no result within 100 ms (the step's time limit)",
    });
    expect(step(r, 3).host).toEqual({
      error: 'failed',
      message: '/dev/vmbus/hv_kvp: re-offer without a rescind',
    });
    d.stop();
    await d.done;
    await new Promise((r) => setImmediate(r));
    expect(shim.device('kvp').exists).toBe(false); // the rescind went on and ended once the daemon closed
  });

  it('no daemon: the host times out, wait-ready gives up, and an unexpected error fails the step', async () => {
    const shim = new KernelShim({ services: ['kvp', 'vss'], hostTimeoutMs: 100 });
    const r = await runScenario(
      `wait-ready vss 30ms          expect error=timeout state=DEVICE_INIT
kvp get k                    expect error=timeout
kvp get k --timeout 50ms     expect error=timeout
kvp get k                    expect HV_S_OK
wait-ready kvp 20ms
vss freeze                   expect HV_E_FAIL`,
      { shim },
    );
    expect(step(r, 1).host).toEqual({
      state: 'DEVICE_INIT',
      error: 'timeout',
      message: 'vss: no daemon registered within 30 ms (the driver is DEVICE_INIT)',
    });
    expect(step(r, 2).host).toEqual({
      error: 'timeout',
      message: 'NEGOTIATE: no reply from the guest within 100 ms',
    });
    expect(step(r, 3).host).toEqual({
      error: 'timeout',
      message: "kvp get: no result within 50 ms (the step's time limit)",
    });
    expect(failures(r)).toEqual([
      { line: 4, failures: ['the host saw error=timeout: NEGOTIATE: no reply from the guest within 100 ms'] },
      {
        line: 5,
        failures: [
          'the host saw error=timeout: kvp: no daemon registered within 20 ms (the driver is DEVICE_INIT)',
        ],
      },
    ]);
    expect(step(r, 6).host?.status).toBe(HV_E_FAIL); // without a daemon the kernel fails FREEZE itself
    expect(r.summary).toEqual({ total: 6, passed: 4, failed: 2, skipped: 0, ok: false });
  });
});

describe('expectations that fail', () => {
  const script = `wait-ready kvp
kvp set Greeting hello                   expect HV_S_OK
kvp get Greeting                         expect HV_E_FAIL value=bonjour
kvp list 0                               expect count>=2 has=Nope item.Greeting=hello item.Other=x
kvp get Greeting                         expect error=timeout
kvp delete Greeting                      expect HV_S_OK`;

  it('are recorded with the reason, and the run goes on', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    keep(startKvpDaemon(shim, pools));
    const r = await runScenario(script, { shim });
    expect(failures(r)).toEqual([
      { line: 3, failures: ['HV_E_FAIL: got HV_S_OK (0x00000000)', 'value=bonjour: got hello'] },
      {
        line: 4,
        failures: ['count>=2: got 1', 'has=Nope: no such key among 1 items', 'item.Other=x: no such item'],
      },
      { line: 5, failures: ['error=timeout: got a reply (HV_S_OK (0x00000000))'] },
    ]);
    expect(step(r, 6).ok).toBe(true);
    expect(pools.get(0)).toEqual([]);
  });

  it('stopOnFailure skips the rest', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const pools = new Map<number, [string, string][]>();
    keep(startKvpDaemon(shim, pools));
    const r = await runScenario(script, { shim, stopOnFailure: true });
    expect(r.steps.map((s) => [s.line, s.ok, s.skipped])).toEqual([
      [1, true, false],
      [2, true, false],
      [3, false, false],
      [4, false, true],
      [5, false, true],
      [6, false, true],
    ]);
    expect(step(r, 4).host).toBeUndefined();
    expect(r.summary).toEqual({ total: 6, passed: 2, failed: 1, skipped: 3, ok: false });
    expect(pools.get(0)).toEqual([['Greeting', 'hello']]); // the delete was not sent
  });
});

describe('background steps and time', () => {
  it('& and wait: the kernel answers a silent daemon after its 30 s, on a FakeClock that sleep moves', async () => {
    const clock = new FakeClock();
    const shim = new KernelShim({ services: ['kvp'], clock });
    const daemon = silentDaemon(shim, 'kvp');
    const order: string[] = [];
    const r = await runScenario(
      `wait-ready kvp
kvp get k   expect HV_E_FAIL &
sleep 29s
sleep 1s
wait`,
      { shim, onStep: (e) => order.push(e.op) },
    );
    expect(failures(r)).toEqual([]);
    // the GET is answered while the second sleep moves the clock past 30 s
    expect(order).toEqual(['wait-ready', 'sleep', 'kvp get', 'sleep', 'wait']);
    expect(step(r, 2)).toMatchObject({ background: true, host: { status: HV_E_FAIL } });
    expect(daemon.seen.length).toBe(2); // the registration reply and the GET
    expect(clock.now()).toBe(30_000);
  });

  it('the LKML race: FREEZE in flight when the guest suspends', async () => {
    const shim = new KernelShim({ services: ['vss'], clock: new FakeClock() });
    silentDaemon(shim, 'vss');
    const r = await runScenario(
      `wait-ready vss
vss freeze      expect error=channel-gone &
fault suspend
wait
fault resume`,
      { shim },
    );
    expect(failures(r)).toEqual([]);
    expect(step(r, 2).host).toEqual({
      error: 'channel-gone',
      message: 'VSS FREEZE: the channel was closed for hibernation',
    });
  });

  it('a custom sleep replaces real waiting', async () => {
    const shim = new KernelShim({ services: ['kvp'] });
    const slept: number[] = [];
    const r = await runScenario('sleep 10m ; sleep 200ms', { shim, sleep: (ms) => void slept.push(ms) });
    expect(r.summary.ok).toBe(true);
    expect(slept).toEqual([600_000, 200]);
  });
});

describe('recordings', () => {
  const script = `wait-ready kvp
kvp set "Greeting" "héllo wörld"   expect HV_S_OK
kvp set Count 42 --pool guest --type u32
kvp get Greeting                   expect value="héllo wörld"
kvp list 0
kvp list guest
kvp get-ip 00:15:5D:01:02:03       expect HV_E_FAIL
kvp delete Greeting`;

  async function record(prefill: [string, string][] = []): Promise<Recording> {
    const shim = new KernelShim({ services: ['kvp'] });
    const d = startKvpDaemon(shim, new Map([[0, [...prefill]]]));
    try {
      return await runScenario(script, { shim });
    } finally {
      d.stop();
      await d.done;
    }
  }

  it('two runs give byte-identical JSON', async () => {
    const a = recordingToJson(await record());
    const b = recordingToJson(await record());
    expect(a).toBe(b);
    expect(a).not.toMatch(/"(timestamp|date|durationMs|elapsedMs|startedAt)"/i);
    expect(a.endsWith('}\n')).toBe(true);
    const parsed = JSON.parse(a) as Recording;
    expect(parsed.format).toBe('hv-scenario-recording');
    expect(Object.keys(parsed.steps[1] ?? {})).toEqual([
      'index',
      'line',
      'text',
      'op',
      'args',
      'background',
      'host',
      'expect',
      'ok',
      'failures',
      'skipped',
    ]);
    expect(compareRecordings(parsed, JSON.parse(b) as Recording)).toEqual([]);
  });

  it('compareRecordings finds the steps where two daemons differ, with a readable diff', async () => {
    const ours = await record();
    const theirs = await record([['Extra', 'x']]);
    const diffs = compareRecordings(theirs, ours, { labels: ['upstream', 'ours'] });
    expect(diffs.map((d) => [d.index, d.line, d.op])).toEqual([[4, 5, 'kvp list']]);
    const d = diffs[0];
    expect(d?.changes).toEqual([
      { path: 'host.count', a: 2, b: 1 },
      { path: 'host.items[0].key', a: 'Extra', b: 'Greeting' },
      { path: 'host.items[0].value', a: 'x', b: 'héllo wörld' },
      { path: 'host.items[1]', a: { key: 'Greeting', value: 'héllo wörld' }, b: undefined },
    ]);
    expect(d?.diff).toBe(
      [
        'step 4 (line 5): kvp list 0',
        '  - upstream.host.count = 2',
        '  + ours.host.count = 1',
        '  - upstream.host.items[0].key = "Extra"',
        '  + ours.host.items[0].key = "Greeting"',
        '  - upstream.host.items[0].value = "x"',
        '  + ours.host.items[0].value = "héllo wörld"',
        '  - upstream.host.items[1] = {"key":"Greeting","value":"héllo wörld"}',
        '  + ours.host.items[1] = (absent)',
      ].join('\n'),
    );
    expect(formatDifferences(diffs)).toBe(d?.diff);
  });

  it('ignore filters leave out steps or fields', async () => {
    const a = await record([['Extra', 'x']]);
    const b = await record();
    expect(compareRecordings(a, b, { ignore: [{ op: 'kvp list' }] })).toEqual([]);
    expect(compareRecordings(a, b, { ignore: [{ line: 5 }] })).toEqual([]);
    expect(compareRecordings(a, b, { ignore: [(s) => s.index === 4] })).toEqual([]);
    expect(
      compareRecordings(a, b, { ignore: [{ op: /^kvp l/, fields: ['host.items', 'host.count'] }] }),
    ).toEqual([]);
    expect(
      compareRecordings(a, b, { ignore: [{ op: 'kvp list', fields: ['host.items'] }] }).map((d) =>
        d.changes.map((c) => c.path),
      ),
    ).toEqual([['host.count']]);
    expect(compareRecordings(a, b, { ignore: [{ op: 'kvp get' }] })).toHaveLength(1);
  });

  it('a step present on one side only, and a pass that became a failure', async () => {
    const a = await record();
    const b: Recording = {
      ...a,
      steps: a.steps
        .slice(0, -1)
        .map((s) =>
          s.line === 4
            ? { ...s, host: { ...s.host, value: 'hello' }, ok: false, failures: ['value=…: got hello'] }
            : s,
        ),
    };
    const diffs = compareRecordings(a, b);
    expect(diffs.map((d) => d.changes.map((c) => c.path))).toEqual([['ok', 'host.value'], ['']]);
    expect(diffs[1]?.diff).toBe(
      'step 7 (line 8): kvp delete Greeting\n  - a: kvp delete Greeting\n  + b: (no such step)',
    );
  });
});
