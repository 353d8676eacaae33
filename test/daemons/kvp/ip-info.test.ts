/** GET_IP_INFO: adapter matching by MAC, the reply fields, helpers once per request with time limits. */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isRunning } from '../../support/procs.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryLogger } from '../../../daemons/common/log.js';
import { HV_E_FAIL, HV_S_OK } from '../../../uapi/constants.js';
import {
  nodeFs,
  runCommand,
  type NetAddress,
  type NetInterface,
  type RunFn,
  type RunResult,
} from '../../../daemons/kvp/effects.js';
import {
  addressFields,
  defaultGateways,
  dhcpFlag,
  dnsLines,
  getIpInfo,
  type IpInfoDeps,
} from '../../../daemons/kvp/ip-info.js';

const tmp = mkdtempSync(join(tmpdir(), 'hv-ipinfo-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let rootCount = 0;

/** A fake /sys/class/net: name → MAC as the kernel writes it (lower case, newline). */
function sysfs(macs: Record<string, string>): string {
  const root = join(tmp, `root${rootCount++}`);
  mkdirSync(join(root, 'sys/class/net'), { recursive: true });
  writeFileSync(join(root, 'sys/class/net/bonding_masters'), 'bond0\n');
  for (const [name, mac] of Object.entries(macs)) {
    mkdirSync(join(root, 'sys/class/net', name));
    writeFileSync(join(root, 'sys/class/net', name, 'address'), `${mac}\n`);
  }
  return root;
}

const v4 = (address: string, netmask = '255.255.255.0'): NetAddress => ({
  family: 4,
  address,
  netmask,
  internal: false,
});
const v6 = (address: string, netmask = 'ffff:ffff:ffff:ffff::'): NetAddress => ({
  family: 6,
  address,
  netmask,
  internal: false,
});

interface Call {
  cmd: string;
  args: string[];
  timeoutMs: number;
}

/** A run() answering by command basename (`ip` also by -4/-6). */
function fakeRun(answers: Record<string, Partial<RunResult>>, calls: Call[]): RunFn {
  return async (cmd, args, opts) => {
    calls.push({ cmd, args: [...args], timeoutMs: opts.timeoutMs });
    const base = cmd.split('/').pop() ?? cmd;
    const key = base === 'ip' ? `ip${args[1]}` : base;
    return { stdout: '', code: 0, ...answers[key] };
  };
}

function deps(root: string, ifaces: NetInterface[], run: RunFn, over: Partial<IpInfoDeps> = {}): IpInfoDeps {
  return {
    sysRoot: root,
    scriptsDir: '/usr/libexec/hypervkvpd',
    fs: nodeFs,
    run,
    interfaces: async () => ifaces,
    logger: memoryLogger(),
    helperTimeoutMs: 5000,
    ipCommand: 'ip',
    ...over,
  };
}

const EXAMPLE_ROUTES4 =
  'default via 10.0.0.1 dev eth0 proto dhcp src 10.0.0.4 metric 100 \n' +
  '10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.4 metric 100 \n' +
  '168.63.129.16 via 10.0.0.1 dev eth0 proto dhcp src 10.0.0.4 metric 100 \n';
const EXAMPLE_ROUTES6 = 'fe80::/64 dev eth0 proto kernel metric 256 pref medium\n';

describe('GET_IP_INFO reply', () => {
  it('matches the documented example byte for byte (daemons.md §2.9)', async () => {
    const root = sysfs({ eth0: '00:15:5d:01:02:03', lo: '00:00:00:00:00:00' });
    const calls: Call[] = [];
    const run = fakeRun(
      {
        'ip-4': { stdout: EXAMPLE_ROUTES4 },
        'ip-6': { stdout: EXAMPLE_ROUTES6 },
        hv_get_dns_info: { stdout: '168.63.129.16\n' },
        hv_get_dhcp_info: { stdout: 'Enabled\n' },
      },
      calls,
    );
    const ifaces: NetInterface[] = [
      { name: 'lo', addresses: [{ family: 4, address: '127.0.0.1', netmask: '255.0.0.0', internal: true }] },
      { name: 'eth0', addresses: [v4('10.0.0.4'), v6('fe80::215:5dff:fe01:203')] },
    ];
    const r = await getIpInfo('00:15:5D:01:02:03', deps(root, ifaces, run));
    expect(r).toEqual({
      status: HV_S_OK,
      ip: {
        adapterId: '00:15:5D:01:02:03',
        addrFamily: 0x03,
        dhcpEnabled: 1,
        ipAddr: '10.0.0.4;fe80::215:5dff:fe01:203',
        subNet: '255.255.255.0;/64',
        gateWay: '10.0.0.1;',
        dnsAddr: '168.63.129.16;',
      },
    });
    // Each helper exactly once per request (upstream: once per address), argv arrays, the time limit.
    expect(calls.map((c) => [c.cmd, c.args, c.timeoutMs]).sort()).toEqual(
      [
        ['ip', ['--oneline', '-4', 'route', 'show'], 5000],
        ['ip', ['--oneline', '-6', 'route', 'show'], 5000],
        ['/usr/libexec/hypervkvpd/hv_get_dns_info', ['eth0'], 5000],
        ['/usr/libexec/hypervkvpd/hv_get_dhcp_info', ['eth0'], 5000],
      ].sort(),
    );
  });

  it('matches the interface exactly: eth1 does not take eth10 addresses', async () => {
    const root = sysfs({ eth1: '00:15:5d:00:00:01', eth10: '00:15:5d:00:00:10' });
    const calls: Call[] = [];
    const ifaces = [
      { name: 'eth1', addresses: [v4('10.1.0.1')] },
      { name: 'eth10', addresses: [v4('10.10.0.1')] },
      { name: 'eth1.100', addresses: [v4('10.100.0.1')] },
    ];
    const r = await getIpInfo('00:15:5D:00:00:01', deps(root, ifaces, fakeRun({}, calls)));
    expect(r.status).toBe(HV_S_OK);
    expect(r.ip.ipAddr).toBe('10.1.0.1');
    expect(r.ip.subNet).toBe('255.255.255.0');
    expect(calls.filter((c) => c.cmd.endsWith('hv_get_dns_info')).map((c) => c.args)).toEqual([['eth1']]);
  });

  it('skips a VF that shares the MAC but has no address (netvsc + SR-IOV)', async () => {
    // readdir order puts the VF first.
    const root = sysfs({ enP4660s1: '00:15:5d:01:02:03', eth0: '00:15:5d:01:02:03' });
    const calls: Call[] = [];
    const ifaces = [
      { name: 'eth0', addresses: [v4('10.0.0.4')] },
      { name: 'enP4660s1', addresses: [] },
    ];
    const r = await getIpInfo('00:15:5D:01:02:03', deps(root, ifaces, fakeRun({}, calls)));
    expect(r.ip.ipAddr).toBe('10.0.0.4');
    expect(new Set(calls.filter((c) => !c.cmd.endsWith('ip')).map((c) => c.args[0]))).toEqual(
      new Set(['eth0']),
    );
  });

  it('answers HV_E_FAIL when no interface has the MAC, without running helpers', async () => {
    const root = sysfs({ eth0: '00:15:5d:01:02:03' });
    const calls: Call[] = [];
    const log = memoryLogger();
    const r = await getIpInfo('00:15:5D:FF:FF:FF', deps(root, [], fakeRun({}, calls), { logger: log }));
    expect(r.status).toBe(HV_E_FAIL);
    expect(calls).toEqual([]);
    expect(log.lines.some((l) => l.level === 'warn' && /no interface has this MAC/.test(l.msg))).toBe(true);
  });

  it('answers HV_E_FAIL for an empty adapter id and when /sys/class/net is missing', async () => {
    const root = sysfs({ eth0: '' });
    expect((await getIpInfo('', deps(root, [], fakeRun({}, [])))).status).toBe(HV_E_FAIL);
    expect((await getIpInfo('00:15:5D:01:02:03', deps(join(tmp, 'none'), [], fakeRun({}, [])))).status).toBe(
      HV_E_FAIL,
    );
  });

  it('answers HV_S_OK with empty fields when the adapter has no address (as upstream)', async () => {
    const root = sysfs({ eth0: '00:15:5d:01:02:03' });
    const calls: Call[] = [];
    const r = await getIpInfo(
      '00:15:5D:01:02:03',
      deps(root, [{ name: 'eth0', addresses: [] }], fakeRun({}, calls)),
    );
    expect(r).toEqual({
      status: HV_S_OK,
      ip: {
        adapterId: '00:15:5D:01:02:03',
        addrFamily: 0,
        dhcpEnabled: 0,
        ipAddr: '',
        subNet: '',
        gateWay: '',
        dnsAddr: '',
      },
    });
    expect(calls).toEqual([]);
  });

  it('compares MACs ignoring case on both sides', async () => {
    const root = sysfs({ eth0: '00:15:5d:0a:0b:0c' });
    const r = await getIpInfo(
      '00:15:5d:0A:0b:0C',
      deps(root, [{ name: 'eth0', addresses: [v4('10.0.0.4')] }], fakeRun({}, [])),
    );
    expect(r.ip.ipAddr).toBe('10.0.0.4');
  });

  it('sets only the family bits present and ignores loopback addresses', async () => {
    const root = sysfs({ eth0: '00:15:5d:01:02:03' });
    const only6 = [{ name: 'eth0', addresses: [v6('fd00::4', 'ffff:ffff:ffff:ffff:ffff:ffff::')] }];
    const r = await getIpInfo('00:15:5D:01:02:03', deps(root, only6, fakeRun({}, [])));
    expect([r.ip.addrFamily, r.ip.ipAddr, r.ip.subNet]).toEqual([0x02, 'fd00::4', '/96']);
  });
});

describe('helpers', () => {
  const root = sysfs({ eth0: '00:15:5d:01:02:03' });
  const ifaces = [{ name: 'eth0', addresses: [v4('10.0.0.4')] }];

  it('leaves a timed-out helper field empty with a log line, the others intact', async () => {
    const log = memoryLogger();
    const run = fakeRun(
      {
        'ip-4': { stdout: EXAMPLE_ROUTES4 },
        hv_get_dns_info: { stdout: '168.63.129.16\n', code: null, timedOut: true },
        hv_get_dhcp_info: { stdout: 'Enabled\n' },
      },
      [],
    );
    const r = await getIpInfo('00:15:5D:01:02:03', deps(root, ifaces, run, { logger: log }));
    expect([r.status, r.ip.dnsAddr, r.ip.gateWay, r.ip.dhcpEnabled]).toEqual([HV_S_OK, '', '10.0.0.1;', 1]);
    expect(log.lines.some((l) => l.level === 'warn' && /hv_get_dns_info timed out/.test(l.msg))).toBe(true);
  });

  it('leaves fields empty when a helper exits non-zero or is missing', async () => {
    const log = memoryLogger();
    const run = fakeRun(
      {
        'ip-4': { stdout: EXAMPLE_ROUTES4, code: 1 },
        hv_get_dns_info: { stdout: '', code: null, error: 'ENOENT' },
        hv_get_dhcp_info: { stdout: 'Enabled\n', code: 2 },
      },
      [],
    );
    const r = await getIpInfo('00:15:5D:01:02:03', deps(root, ifaces, run, { logger: log }));
    expect([r.ip.gateWay, r.ip.dnsAddr, r.ip.dhcpEnabled]).toEqual(['', '', 0]);
    expect(log.lines.filter((l) => l.level === 'warn')).toHaveLength(3);
  });

  it('kills real helpers at the time limit (whole process group) and still answers', async () => {
    const scripts = join(tmp, 'scripts-slow');
    mkdirSync(scripts);
    const pids = join(tmp, 'slow.pids');
    writeFileSync(
      join(scripts, 'hv_get_dns_info'),
      `#!/bin/sh\necho 10.9.9.9\nsleep 30 &\necho "$$ $!" > ${pids}\nwait\n`,
    );
    writeFileSync(join(scripts, 'hv_get_dhcp_info'), '#!/bin/sh\necho Enabled\n');
    writeFileSync(
      join(scripts, 'ip'),
      `#!/bin/sh\n[ "$2" = -4 ] && echo 'default via 10.0.0.1 dev eth0'\nexit 0\n`,
    );
    for (const f of ['hv_get_dns_info', 'hv_get_dhcp_info', 'ip']) chmodSync(join(scripts, f), 0o755);
    const log = memoryLogger();
    const started = Date.now();
    const r = await getIpInfo(
      '00:15:5D:01:02:03',
      deps(root, ifaces, runCommand, {
        scriptsDir: scripts,
        ipCommand: join(scripts, 'ip'),
        helperTimeoutMs: 500,
        logger: log,
      }),
    );
    const elapsed = Date.now() - started;
    expect(elapsed).toBeLessThan(3000);
    expect([r.status, r.ip.dnsAddr, r.ip.dhcpEnabled, r.ip.gateWay]).toEqual([HV_S_OK, '', 1, '10.0.0.1;']);
    expect(log.lines.some((l) => /hv_get_dns_info timed out/.test(l.msg))).toBe(true);
    // The script and its background sleep are gone (or zombies: this machine's init may not reap).
    await new Promise((res) => setTimeout(res, 300));
    for (const pid of readFileSync(pids, 'utf8').trim().split(' ').map(Number)) {
      expect(isRunning(pid)).toBe(false);
    }
  });
});

describe('pure parts', () => {
  it('takes only default routes through the interface, multipath included', () => {
    const routes4 =
      'default via 10.0.0.1 dev eth0 proto dhcp metric 100 \n' +
      'default via 10.1.0.1 dev eth1 proto dhcp metric 101 \n' +
      'default via inet6 fe80::9 dev eth0 proto static \n' +
      'default dev ppp0 scope link \n' +
      'defaultish via 10.9.9.9 dev eth0\n' +
      '10.0.0.0/24 via 10.0.0.254 dev eth0\n';
    const routes6 =
      'default proto ra metric 1024 expires 1796sec pref medium\\\tnexthop via fe80::1 dev eth0 weight 1\\\tnexthop via fe80::2 dev eth1 weight 1 \n' +
      'default via fe80::26fc:4e00:3b:74 dev eth0 proto ra metric 100 pref medium\n' +
      'default via bogus dev eth0\n';
    expect(defaultGateways(routes4, 'eth0')).toEqual(['10.0.0.1', 'fe80::9']);
    expect(defaultGateways(routes6, 'eth0')).toEqual(['fe80::1', 'fe80::26fc:4e00:3b:74']);
    expect(defaultGateways(routes6, 'eth1')).toEqual(['fe80::2']);
    expect(defaultGateways(routes4, 'eth')).toEqual([]);
  });

  it('keeps ip_addr and sub_net aligned and cuts both at a whole element under 1024 units', () => {
    const many = Array.from({ length: 60 }, (_, i) =>
      v6(`2001:db8:aaaa:bbbb:cccc:dddd:eeee:${(i + 1).toString(16)}`),
    );
    const f = addressFields(many);
    expect(f.truncated).toBe(true);
    expect(f.ipAddr.length).toBeLessThanOrEqual(1023);
    const ips = f.ipAddr.split(';');
    expect(f.subNet.split(';')).toEqual(ips.map(() => '/64'));
    expect(ips).toEqual(many.slice(0, ips.length).map((a) => a.address));
  });

  it('formats DNS lines and the DHCP flag as upstream', () => {
    expect(dnsLines('168.63.129.16\n\n  10.0.0.2  \n')).toEqual(['168.63.129.16', '10.0.0.2']);
    expect(dhcpFlag('Enabled\n')).toBe(1);
    expect(dhcpFlag('Enabled: DHCP enabled.\n')).toBe(1);
    expect(dhcpFlag('Disabled\nEnabled\n')).toBe(0);
    expect(dhcpFlag('')).toBe(0);
  });

  it('keeps the gateway list within 511 characters, whole entries each ending in ";"', async () => {
    const root = sysfs({ eth0: '00:15:5d:01:02:03' });
    const lines = Array.from(
      { length: 40 },
      (_, i) => `default via 2001:db8::${(i + 1).toString(16)}:1 dev eth0 metric ${i}`,
    );
    const run = fakeRun({ 'ip-6': { stdout: `${lines.join('\n')}\n` } }, []);
    const r = await getIpInfo(
      '00:15:5D:01:02:03',
      deps(root, [{ name: 'eth0', addresses: [v4('10.0.0.4')] }], run),
    );
    expect(r.ip.gateWay.length).toBeLessThanOrEqual(511);
    expect(r.ip.gateWay.endsWith(';')).toBe(true);
    expect(r.ip.gateWay.split(';').slice(0, -1)).toEqual(
      Array.from(
        { length: r.ip.gateWay.split(';').length - 1 },
        (_, i) => `2001:db8::${(i + 1).toString(16)}:1`,
      ),
    );
    const kept = r.ip.gateWay.split(';').length - 1;
    expect(kept).toBeLessThan(40);
    // The next entry would not have fitted.
    expect(r.ip.gateWay.length + `2001:db8::${(kept + 1).toString(16)}:1;`.length).toBeGreaterThan(511);
  });
});
